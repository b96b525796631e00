/** Parsed `--name value` / `--flag` options and the positional words. */
export interface ParsedArgs {
  readonly positional: string[];
  readonly options: Map<string, string | true>;
}

export class UsageError extends Error {}

export function parseArgs(argv: readonly string[]): ParsedArgs {
  const positional: string[] = [];
  const options = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i];
    if (!word.startsWith('--')) {
      positional.push(word);
      continue;
    }
    const [name, inline] = word.slice(2).split('=', 2);
    if (inline !== undefined) options.set(name, inline);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) options.set(name, argv[++i]);
    else options.set(name, true);
  }
  return { positional, options };
}

/** Reads a positive integer option, or the default. */
export function intOption(args: ParsedArgs, name: string, fallback: number): number {
  const raw = args.options.get(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (raw === true || !Number.isInteger(value) || value < 1) {
    throw new UsageError(`--${name} must be a positive integer (got ${raw === true ? 'no value' : raw})`);
  }
  return value;
}

/** Reads a string option, or the default. */
export function stringOption(args: ParsedArgs, name: string, fallback: string): string {
  const raw = args.options.get(name);
  if (raw === undefined) return fallback;
  if (raw === true) throw new UsageError(`--${name} needs a value`);
  return raw;
}

/** Rejects options the command does not know, so typos are not silently ignored. */
export function checkKnownOptions(args: ParsedArgs, known: readonly string[]): void {
  for (const name of args.options.keys()) {
    if (!known.includes(name)) throw new UsageError(`unknown option --${name} (known: ${known.map((k) => `--${k}`).join(', ')})`);
  }
}
