// A decode step: TQ queries at positions Tk - TQ .. Tk - 1 against a cache of Tk tokens. The same
// engine as the full forward, with each batch row's queries as one segment of the cache.
import type { NSAConfig } from '@nsa/core';
import type { CacheStore } from './decode-cache.js';
import { checkLength } from './host-inputs.js';
import { runForward, type NSAHostForward } from './nsa-forward.js';
import { decodeSegments } from './segments.js';

export interface DecodeHostArgs {
  readonly config: NSAConfig;
  /** Cache storage: raw [B, capacity, H, D], compressed [B, compressedCapacity, H, D]. */
  readonly store: CacheStore;
  readonly batch: number;
  readonly capacity: number;
  readonly compressedCapacity: number;
  /** Cached tokens; the caller has appended compressedCount(Tk) compressed blocks. */
  readonly length: number;
  /** [B, TQ, HQ, Dk]. */
  readonly q: Float64Array;
  /** [B, TQ, HQ, 3]. */
  readonly gates: Float64Array;
  readonly TQ: number;
  /** int32 [B, TQ, H, n], optional. */
  readonly blockIndices?: Int32Array;
}

export function nsaDecodeHost(args: DecodeHostArgs): NSAHostForward {
  const { config, store, batch: B, TQ } = args;
  const n = config.selectCount;
  checkLength('q', args.q, [B, TQ, config.heads, config.headDimK]);
  checkLength('gates', args.gates, [B, TQ, config.heads, 3]);
  if (args.blockIndices) checkLength('blockIndices', args.blockIndices, [B, TQ, config.kvHeads, n]);
  return runForward({
    config,
    inputs: { ...store, q: args.q, gates: args.gates },
    segments: decodeSegments(B, TQ, args.length, args.capacity, args.compressedCapacity),
    qRows: B * TQ,
    blockIndices: args.blockIndices ? args.blockIndices.slice() : new Int32Array(B * TQ * config.kvHeads * n),
    blocksGiven: args.blockIndices !== undefined,
  });
}
