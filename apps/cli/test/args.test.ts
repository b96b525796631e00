import { describe, expect, it } from 'vitest';
import { checkKnownOptions, intOption, parseArgs, stringOption, UsageError } from '../src/args.js';

describe('parseArgs', () => {
  it('reads positional words, --name value, --name=value and flags', () => {
    const args = parseArgs(['run', '--seq', '128', '--dtype=float32', '--verbose']);
    expect(args.positional).toEqual(['run']);
    expect(intOption(args, 'seq', 1)).toBe(128);
    expect(stringOption(args, 'dtype', 'x')).toBe('float32');
    expect(args.options.get('verbose')).toBe(true);
    expect(intOption(args, 'heads', 7)).toBe(7);
  });

  it('names the bad option', () => {
    expect(() => intOption(parseArgs(['--seq', '-3']), 'seq', 1)).toThrow(UsageError);
    expect(() => intOption(parseArgs(['--seq', 'ten']), 'seq', 1)).toThrow('--seq must be a positive integer (got ten)');
    expect(() => stringOption(parseArgs(['--backend']), 'backend', 'auto')).toThrow('--backend needs a value');
    expect(() => checkKnownOptions(parseArgs(['--sequence', '3']), ['seq'])).toThrow('unknown option --sequence (known: --seq)');
  });
});
