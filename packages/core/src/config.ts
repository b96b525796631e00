import { NSAConfigError } from './errors.js';

/**
 * The NSA operator's hyper-parameters (NSA-SPEC.md). Paper symbols in brackets.
 * Use `createNSAConfig` to fill defaults and validate.
 */
export interface NSAConfig {
  /** [l] tokens summarised by one compressed block. Paper: 32. */
  readonly compressBlock: number;
  /** [d] stride between compressed blocks; divides compressBlock and selectBlock. Paper: 16. */
  readonly compressStride: number;
  /** [l'] tokens per selection block; >= compressBlock. Paper: 64. */
  readonly selectBlock: number;
  /** [n] selection blocks per query, forced ones included. Paper: 16. */
  readonly selectCount: number;
  /** Leading blocks always selected. Paper: 1. */
  readonly initialBlocks: number;
  /** Blocks ending at the query's own block, always selected. Paper: 2. */
  readonly localBlocks: number;
  /** [w] sliding-window length, the query token included. Paper: 512. */
  readonly window: number;
  /** [HQ] query heads. Paper: 64. */
  readonly heads: number;
  /** [H] key/value heads; divides heads. Paper: 4. */
  readonly kvHeads: number;
  /** [Dk] query/key head dimension. Paper: 192. */
  readonly headDimK: number;
  /** [Dv] value head dimension. Paper: 128. */
  readonly headDimV: number;
  /** Softmax scale; defaults to 1/sqrt(headDimK). */
  readonly scale: number;
}

export type NSAConfigInput = Partial<NSAConfig>;

/** The paper's hyper-parameters (Yuan et al. 2025, section 4). */
export const PAPER_DEFAULTS = Object.freeze({
  compressBlock: 32,
  compressStride: 16,
  selectBlock: 64,
  selectCount: 16,
  initialBlocks: 1,
  localBlocks: 2,
  window: 512,
  heads: 64,
  kvHeads: 4,
  headDimK: 192,
  headDimV: 128,
});

const POSITIVE_INT_FIELDS = [
  'compressBlock',
  'compressStride',
  'selectBlock',
  'selectCount',
  'window',
  'heads',
  'kvHeads',
  'headDimK',
  'headDimV',
] as const;

/** Fills paper defaults, checks every rule of the spec and returns a frozen config. */
export function createNSAConfig(input: NSAConfigInput = {}): NSAConfig {
  const known = new Set<string>([...Object.keys(PAPER_DEFAULTS), 'scale']);
  for (const key of Object.keys(input)) {
    if (!known.has(key)) throw new NSAConfigError(key, (input as Record<string, unknown>)[key], 'unknown field');
  }
  const merged = { ...PAPER_DEFAULTS, ...dropUndefined(input) };
  for (const field of POSITIVE_INT_FIELDS) checkInt(field, merged[field], 1);
  checkInt('initialBlocks', merged.initialBlocks, 0);
  checkInt('localBlocks', merged.localBlocks, 0);
  const { compressBlock: l, compressStride: d, selectBlock: ls } = merged;
  if (l % d !== 0) {
    throw new NSAConfigError('compressStride', d, `must divide compressBlock (${l}) (spec: d | l)`);
  }
  if (ls % d !== 0) {
    throw new NSAConfigError('compressStride', d, `must divide selectBlock (${ls}) (spec: d | l')`);
  }
  if (l > ls) {
    throw new NSAConfigError('compressBlock', l, `must be <= selectBlock (${ls}) (spec: l <= l')`);
  }
  const forced = merged.initialBlocks + merged.localBlocks;
  if (merged.selectCount < forced) {
    throw new NSAConfigError(
      'selectCount',
      merged.selectCount,
      `must be >= initialBlocks + localBlocks (${merged.initialBlocks} + ${merged.localBlocks} = ${forced})`,
    );
  }
  if (merged.heads % merged.kvHeads !== 0) {
    throw new NSAConfigError('heads', merged.heads, `must be a multiple of kvHeads (${merged.kvHeads})`);
  }
  const scale = merged.scale ?? 1 / Math.sqrt(merged.headDimK);
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0) {
    throw new NSAConfigError('scale', scale, 'must be a finite number > 0');
  }
  return Object.freeze({ ...merged, scale });
}

/** Query heads per key/value head (G). */
export function groupSize(config: NSAConfig): number {
  return config.heads / config.kvHeads;
}

function checkInt(field: string, value: unknown, min: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new NSAConfigError(field, value, min === 0 ? 'must be an integer >= 0' : 'must be a positive integer');
  }
}

function dropUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
