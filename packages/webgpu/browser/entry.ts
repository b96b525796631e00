// Runs in the page: a small parity case through the browser entry (navigator.gpu) against the
// reference, bundled together. Publishes the result on window.__nsaResult.
import { compressedCount, createNSAConfig, SeededRandom, type NSAInputs } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { createWebGPUBackend, webgpuProvider } from '@nsa/webgpu';

interface Result {
  readonly ok: boolean;
  readonly adapter: string;
  readonly features: string;
  readonly errors: Record<string, number>;
  readonly message?: string;
}

function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

async function main(): Promise<Result> {
  const probe = await webgpuProvider.probe();
  if (!probe.available) return { ok: false, adapter: 'none', features: '', errors: {}, message: probe.reason };
  const gpu = await createWebGPUBackend();
  const reference = createReferenceBackend();
  const config = createNSAConfig({ compressBlock: 16, compressStride: 8, selectBlock: 32, selectCount: 4, window: 48, heads: 4, kvHeads: 2, headDimK: 16, headDimV: 8 });
  const B = 1;
  const T = 100;
  const C = compressedCount(T, config);
  const rng = new SeededRandom(11);
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv, selectCount: n } = config;
  const shapes: Record<string, number[]> = {
    q: [B, T, HQ, Dk],
    kCmp: [B, C, H, Dk],
    vCmp: [B, C, H, Dv],
    kSlc: [B, T, H, Dk],
    vSlc: [B, T, H, Dv],
    kWin: [B, T, H, Dk],
    vWin: [B, T, H, Dv],
    gates: [B, T, HQ, 3],
  };
  const values: Record<string, Float64Array> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const count = shape.reduce((a, b) => a * b, 1);
    values[name] = name === 'gates' ? rng.uniforms(count, 0.05, 1) : rng.normals(count);
  }
  const make = (be: typeof gpu | typeof reference, dt: 'float32' | 'float64') =>
    Object.fromEntries(Object.entries(values).map(([k, v]) => [k, be.tensor(v, shapes[k], dt)])) as unknown as NSAInputs;
  const mine = make(gpu, 'float32');
  const ref = make(reference, 'float64');
  const fwd = await gpu.nsaForward({ ...mine, config });
  const chosen = await fwd.blockIndices.read();
  const rFwd = await reference.nsaForward({ ...ref, config, blockIndices: reference.tensor(chosen, [B, T, H, n], 'int32') });
  const dO = rng.normals(B * T * HQ * Dv);
  const grads = await gpu.nsaBackward({ ...mine, config, forward: fwd, dOutput: gpu.tensor(dO, [B, T, HQ, Dv], 'float32') });
  const rGrads = await reference.nsaBackward({ ...ref, config, forward: rFwd, dOutput: reference.tensor(dO, [B, T, HQ, Dv], 'float64') });
  const errors: Record<string, number> = { output: relativeError(await fwd.output.read(), await rFwd.output.read()) };
  for (const name of ['dq', 'dkCmp', 'dvSlc', 'dkWin', 'dGates'] as const) errors[name] = relativeError(await grads[name].read(), await rGrads[name].read());
  const dense = await gpu.attentionForward({ q: gpu.tensor(values.q, shapes.q, 'float32'), k: gpu.tensor(values.kWin, shapes.kWin, 'float32'), v: gpu.tensor(values.vWin, shapes.vWin, 'float32') });
  const rDense = await reference.attentionForward({ q: reference.tensor(values.q, shapes.q, 'float64'), k: reference.tensor(values.kWin, shapes.kWin, 'float64'), v: reference.tensor(values.vWin, shapes.vWin, 'float64') });
  errors.dense = relativeError(await dense.output.read(), await rDense.output.read());
  const features = gpu.ctx.features;
  gpu.dispose();
  return {
    ok: Object.values(errors).every((e) => e < 1e-4),
    adapter: gpu.device,
    features: `shader-f16: ${features.f16}, subgroups: ${features.subgroups}`,
    errors,
  };
}

(globalThis as { __nsaResult?: Promise<Result> }).__nsaResult = main().catch((error: unknown) => ({
  ok: false,
  adapter: 'error',
  features: '',
  errors: {},
  message: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
}));
