import {
  createNSAConfig,
  SeededRandom,
  roundToDType,
  type Backend,
  type FloatDType,
  type NSAConfig,
  type Tensor,
} from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import type { AttentionCase, NSACase } from './cases.js';
import { relativeError, tolerance } from './compare.js';
import { nsaValues, randomBlockIndices, type NSAHostValues } from './inputs.js';
import { selectionMismatch } from './selection-check.js';

/** One compared quantity of one case. */
export interface ParityRow {
  readonly case: string;
  readonly quantity: string;
  readonly error: number;
  readonly tolerance: number;
  readonly ok: boolean;
}

const reference = createReferenceBackend();

/** Everything made on one backend for one case, disposed together. */
class Scope {
  readonly tensors: { dispose(): void }[] = [];
  constructor(readonly backend: Backend) {}
  tensor(values: ArrayLike<number>, shape: number[], dtype: FloatDType | 'int32'): Tensor {
    const t = this.backend.tensor(values, shape, dtype);
    this.tensors.push(t);
    return t;
  }
  keep<T extends { dispose(): void }>(value: T): T {
    this.tensors.push(value);
    return value;
  }
  dispose(): void {
    for (const t of this.tensors.splice(0)) t.dispose();
  }
}

async function host(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.read());
}

function row(name: string, quantity: string, error: number, dtype: FloatDType): ParityRow {
  const tol = tolerance(dtype);
  return { case: name, quantity, error, tolerance: tol, ok: error < tol };
}

function upload(scope: Scope, v: NSAHostValues, config: NSAConfig, B: number, T: number, dtype: FloatDType) {
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
  return {
    q: scope.tensor(v.q, [B, T, HQ, Dk], dtype),
    kCmp: scope.tensor(v.kCmp, [B, v.C, H, Dk], dtype),
    vCmp: scope.tensor(v.vCmp, [B, v.C, H, Dv], dtype),
    kSlc: scope.tensor(v.kSlc, [B, T, H, Dk], dtype),
    vSlc: scope.tensor(v.vSlc, [B, T, H, Dv], dtype),
    kWin: scope.tensor(v.kWin, [B, T, H, Dk], dtype),
    vWin: scope.tensor(v.vWin, [B, T, H, Dv], dtype),
    gates: scope.tensor(v.gates, [B, T, HQ, 3], dtype),
  };
}

const GRADIENTS = ['dq', 'dkCmp', 'dvCmp', 'dkSlc', 'dvSlc', 'dkWin', 'dvWin', 'dGates'] as const;

/**
 * Runs one NSA case on `target` and on the float64 reference with the same (rounded) inputs.
 * The attention math is compared with the target's block choice fed to the reference; the block
 * choice itself is compared through the chosen selection scores.
 */
export async function nsaParity(target: Backend, c: NSACase, seed = 1): Promise<ParityRow[]> {
  const config = createNSAConfig(c.config);
  const { B, T, dtype, cuSeqlens } = c;
  const v = nsaValues(config, B, T, dtype, seed, cuSeqlens);
  const mine = new Scope(target);
  const ref = new Scope(reference);
  const rows: ParityRow[] = [];
  try {
    const tIn = upload(mine, v, config, B, T, dtype);
    const rIn = upload(ref, v, config, B, T, 'float64');
    const idxShape = [B, T, config.kvHeads, config.selectCount];
    const supplied = c.suppliedBlockIndices ? randomBlockIndices(config, B, T, seed + 1, cuSeqlens) : undefined;
    const tFwd = mine.keep(
      await target.nsaForward({ config, ...tIn, cuSeqlens, blockIndices: supplied && mine.tensor(supplied, idxShape, 'int32') }),
    );
    const chosen = await tFwd.blockIndices.read();
    if (supplied) {
      rows.push(row(c.name, 'blockIndices echo', supplied.every((x, i) => x === chosen[i]) ? 0 : Infinity, dtype));
    } else {
      const own = mine.keep(await reference.nsaForward({ config, ...rIn, cuSeqlens }));
      const refChoice = await own.blockIndices.read();
      const mismatch = selectionMismatch(config, v.q, v.kCmp, B, T, v.C, chosen, refChoice, cuSeqlens);
      rows.push(row(c.name, `selection (${mismatch.rowsDiffering}/${mismatch.rows} rows differ)`, mismatch.worst, dtype));
    }
    const rFwd = ref.keep(await reference.nsaForward({ config, ...rIn, cuSeqlens, blockIndices: ref.tensor(chosen, idxShape, 'int32') }));
    rows.push(row(c.name, 'output', relativeError(await host(tFwd.output), await host(rFwd.output)), dtype));

    const tGrad = mine.keep(
      await target.nsaBackward({ config, ...tIn, cuSeqlens, forward: tFwd, dOutput: mine.tensor(v.dOutput, [B, T, config.heads, config.headDimV], dtype) }),
    );
    const rGrad = ref.keep(
      await reference.nsaBackward({ config, ...rIn, cuSeqlens, forward: rFwd, dOutput: ref.tensor(v.dOutput, [B, T, config.heads, config.headDimV], 'float64') }),
    );
    for (const name of GRADIENTS) {
      rows.push(row(c.name, name, relativeError(await host(tGrad[name]), await host(rGrad[name])), dtype));
    }
    if (c.decode) rows.push(...(await decodeParity(target, c, config, v)));
  } finally {
    mine.dispose();
    ref.dispose();
  }
  return rows;
}

/** Fills both caches with the first `prefix` tokens, then decodes the rest in steps. */
async function decodeParity(target: Backend, c: NSACase, config: NSAConfig, v: NSAHostValues): Promise<ParityRow[]> {
  const { B, T, dtype } = c;
  const { prefix, steps } = c.decode!;
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
  const mine = new Scope(target);
  const ref = new Scope(reference);
  const rows: ParityRow[] = [];
  const slice = (x: Float64Array, from: number, to: number, width: number) => {
    const out = new Float64Array(B * (to - from) * width);
    for (let b = 0; b < B; b++) out.set(x.subarray((b * T + from) * width, (b * T + to) * width), b * (to - from) * width);
    return out;
  };
  const cmpSlice = (x: Float64Array, from: number, to: number, width: number) => {
    const out = new Float64Array(B * (to - from) * width);
    for (let b = 0; b < B; b++) out.set(x.subarray((b * v.C + from) * width, (b * v.C + to) * width), b * (to - from) * width);
    return out;
  };
  try {
    const caches = [
      { s: mine, backend: target, dt: dtype as FloatDType },
      { s: ref, backend: reference, dt: 'float64' as FloatDType },
    ].map(({ s, backend, dt }) => ({ s, backend, dt, cache: s.keep(backend.createNSACache({ config, batch: B, dtype: dt, capacity: T })) }));
    let length = 0;
    let compressed = 0;
    const grow = async (to: number) => {
      const cTo = Math.max(0, Math.floor((to - config.compressBlock) / config.compressStride) + 1);
      for (const { s, cache, dt } of caches) {
        const n = to - length;
        await cache.append({
          kSlc: s.tensor(slice(v.kSlc, length, to, H * Dk), [B, n, H, Dk], dt),
          vSlc: s.tensor(slice(v.vSlc, length, to, H * Dv), [B, n, H, Dv], dt),
          kWin: s.tensor(slice(v.kWin, length, to, H * Dk), [B, n, H, Dk], dt),
          vWin: s.tensor(slice(v.vWin, length, to, H * Dv), [B, n, H, Dv], dt),
        });
        if (cTo > compressed) {
          await cache.appendCompressed({
            kCmp: s.tensor(cmpSlice(v.kCmp, compressed, cTo, H * Dk), [B, cTo - compressed, H, Dk], dt),
            vCmp: s.tensor(cmpSlice(v.vCmp, compressed, cTo, H * Dv), [B, cTo - compressed, H, Dv], dt),
          });
        }
      }
      length = to;
      compressed = cTo;
    };
    await grow(prefix);
    let worst = 0;
    for (const step of steps) {
      if (length + step > T) break;
      const from = length;
      await grow(length + step);
      const q = slice(v.q, from, length, HQ * Dk);
      const gates = slice(v.gates, from, length, HQ * 3);
      const tOut = mine.keep(
        await target.nsaDecode({ cache: caches[0].cache, q: mine.tensor(q, [B, step, HQ, Dk], dtype), gates: mine.tensor(gates, [B, step, HQ, 3], dtype) }),
      );
      const chosen = await tOut.blockIndices.read();
      const rOut = ref.keep(
        await reference.nsaDecode({
          cache: caches[1].cache,
          q: ref.tensor(q, [B, step, HQ, Dk], 'float64'),
          gates: ref.tensor(gates, [B, step, HQ, 3], 'float64'),
          blockIndices: ref.tensor(chosen, [B, step, H, config.selectCount], 'int32'),
        }),
      );
      worst = Math.max(worst, relativeError(await host(tOut.output), await host(rOut.output)));
    }
    rows.push(row(c.name, `decode output (${steps.length} steps from ${prefix})`, worst, dtype));
  } finally {
    mine.dispose();
    ref.dispose();
  }
  return rows;
}

/** Dense causal attention forward and backward (TQ <= Tk) against the reference. */
export async function attentionParity(target: Backend, c: AttentionCase, seed = 1): Promise<ParityRow[]> {
  const rng = new SeededRandom(seed);
  const { B, TQ, Tk, heads: HQ, kvHeads: H, Dk, Dv, dtype, cuSeqlens } = c;
  const draw = (count: number) => rng.normals(count).map((x) => roundToDType(x, dtype));
  const values = { q: draw(B * TQ * HQ * Dk), k: draw(B * Tk * H * Dk), v: draw(B * Tk * H * Dv), dO: draw(B * TQ * HQ * Dv) };
  const mine = new Scope(target);
  const ref = new Scope(reference);
  try {
    const make = (s: Scope, dt: FloatDType) => ({
      q: s.tensor(values.q, [B, TQ, HQ, Dk], dt),
      k: s.tensor(values.k, [B, Tk, H, Dk], dt),
      v: s.tensor(values.v, [B, Tk, H, Dv], dt),
      cuSeqlens,
    });
    const tIn = make(mine, dtype);
    const rIn = make(ref, 'float64');
    const tFwd = mine.keep(await target.attentionForward(tIn));
    const rFwd = ref.keep(await reference.attentionForward(rIn));
    const rows = [row(c.name, 'output', relativeError(await host(tFwd.output), await host(rFwd.output)), dtype)];
    if (TQ === Tk) {
      const tGrad = mine.keep(await target.attentionBackward({ ...tIn, forward: tFwd, dOutput: mine.tensor(values.dO, [B, TQ, HQ, Dv], dtype) }));
      const rGrad = ref.keep(await reference.attentionBackward({ ...rIn, forward: rFwd, dOutput: ref.tensor(values.dO, [B, TQ, HQ, Dv], 'float64') }));
      for (const name of ['dq', 'dk', 'dv'] as const) {
        rows.push(row(c.name, name, relativeError(await host(tGrad[name]), await host(rGrad[name])), dtype));
      }
    }
    return rows;
  } finally {
    mine.dispose();
    ref.dispose();
  }
}

/** A markdown table of parity rows. */
export function formatParity(rows: readonly ParityRow[]): string {
  const lines = ['| case | quantity | rel. L2 error | tolerance | ok |', '|---|---|---|---|---|'];
  for (const r of rows) lines.push(`| ${r.case} | ${r.quantity} | ${r.error.toExponential(2)} | ${r.tolerance.toExponential(0)} | ${r.ok ? 'yes' : 'NO'} |`);
  return lines.join('\n');
}
