// Times the reference backend's NSA forward and backward against its own dense causal attention
// (the baseline, measured in the same run) with the paper's hyper-parameters.
//   npx tsx --conditions=@nsa/source bench/reference-bench.ts [--T 1024,4096] [--no-dense]
import os from 'node:os';
import { createNSAConfig, compressedCount, visibleCompressed, windowStart, type NSAConfig } from '@nsa/core';
import {
  attentionBackwardHost,
  attentionForwardHost,
  nsaBackwardHost,
  nsaForwardHost,
  type NSAHostInputs,
} from '../src/index.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const lengths = (arg('--T') ?? '1024,4096').split(',').map(Number);
const withDense = !process.argv.includes('--no-dense');

function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

function fill(size: number, rand: () => number): Float64Array {
  const out = new Float64Array(size);
  for (let i = 0; i < size; i++) out[i] = rand();
  return out;
}

/** Runs fn once; returns its result and the process CPU time it took in ms (wall time is kept too). */
function time<T>(fn: () => T): [T, number] {
  const wall = performance.now();
  const cpu = process.cpuUsage();
  const result = fn();
  const used = process.cpuUsage(cpu);
  wallMs.push(performance.now() - wall);
  return [result, (used.user + used.system) / 1000];
}
const wallMs: number[] = [];

/** Keys every query head reads (compressed + selected tokens + window), summed over queries. */
function keysRead(config: NSAConfig, T: number, blockIndices: Int32Array): number {
  const { kvHeads: H, heads: HQ, selectCount: n, selectBlock: ls } = config;
  let total = 0;
  for (let t = 0; t < T; t++) {
    for (let g = 0; g < H; g++) {
      let keys = visibleCompressed(t, config) + (t - windowStart(t, config) + 1);
      for (let k = 0; k < n; k++) {
        const j = blockIndices[(t * H + g) * n + k];
        if (j >= 0) keys += Math.min((j + 1) * ls, t + 1) - j * ls;
      }
      total += keys * (HQ / H);
    }
  }
  return total;
}

const config = createNSAConfig({ heads: 16, kvHeads: 1, headDimK: 64, headDimV: 64 });
const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
console.log(`reference backend, float64, B = 1, HQ = ${HQ}, H = ${H}, Dk = ${Dk}, Dv = ${Dv}, l 32, d 16, l' 64, n 16, w 512`);
console.log(`machine: ${os.cpus()[0]?.model ?? 'unknown CPU'} x ${os.cpus().length}, Node ${process.version}; single-threaded`);
console.log('Times are process CPU seconds of one run (robust when other work shares the cores); wall seconds in brackets.');
console.log('GFLOP/s counts 2(Dk+Dv) per key read in forward and 2.5x that in backward (the usual convention).\n');

const rows: string[][] = [];
for (const T of lengths) {
  const rand = random(T);
  const C = compressedCount(T, config);
  const x: NSAHostInputs = {
    q: fill(T * HQ * Dk, rand),
    kCmp: fill(C * H * Dk, rand),
    vCmp: fill(C * H * Dv, rand),
    kSlc: fill(T * H * Dk, rand),
    vSlc: fill(T * H * Dv, rand),
    kWin: fill(T * H * Dk, rand),
    vWin: fill(T * H * Dv, rand),
    gates: fill(T * HQ * 3, rand).map((v) => v + 0.5),
  };
  const dOut = fill(T * HQ * Dv, rand);
  const [fwd, fMs] = time(() => nsaForwardHost(x, config, { B: 1, T }));
  const [, bMs] = time(() => nsaBackwardHost(x, config, { B: 1, T, blockIndices: fwd.blockIndices, lse: fwd.lse, dOutput: dOut }));
  const flop = keysRead(config, T, fwd.blockIndices) * 2 * (Dk + Dv);
  let denseF = NaN;
  let denseB = NaN;
  if (withDense) {
    const shape = { B: 1, TQ: T, Tk: T, HQ, H, Dk, Dv };
    const [dense, dfMs] = time(() => attentionForwardHost(x.q, x.kWin, x.vWin, shape));
    const [, dbMs] = time(() => attentionBackwardHost(x.q, x.kWin, x.vWin, dOut, shape, dense.lse));
    denseF = dfMs;
    denseB = dbMs;
  }
  const ratio = (a: number, b: number) => (Number.isNaN(b) ? '-' : `${(b / a).toFixed(2)}x`);
  const walls = wallMs.splice(0);
  const fmt = (ms: number, wall?: number) => (Number.isNaN(ms) ? '-' : `${(ms / 1000).toFixed(2)} (${((wall ?? 0) / 1000).toFixed(2)})`);
  rows.push([
    String(T),
    fmt(fMs, walls[0]),
    ((flop / fMs) * 1e-6).toFixed(2),
    fmt(bMs, walls[1]),
    ((2.5 * flop) / bMs * 1e-6).toFixed(2),
    fmt(denseF, walls[2]),
    fmt(denseB, walls[3]),
    ratio(fMs, denseF),
    ratio(bMs, denseB),
  ]);
}

const header = ['T', 'NSA fwd s', 'fwd GFLOP/s', 'NSA bwd s', 'bwd GFLOP/s', 'dense fwd s', 'dense bwd s', 'fwd speedup vs dense', 'bwd speedup vs dense'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padStart(widths[i])).join(' | ')} |`;
console.log(line(header));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const r of rows) console.log(line(r));
