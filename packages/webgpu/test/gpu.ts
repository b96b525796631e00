// Test helpers: a Dawn adapter (SwiftShader on CPU-only machines), the reference oracle, and
// random inputs. When no adapter can be had, suites are skipped with the reason.
import { existsSync } from 'node:fs';
import { SeededRandom, createNSAConfig, type Backend, type FloatDType, type NSAConfig, type NSAConfigInput, type Tensor } from '@nsa/core';
import type { WebGPUBackend } from '../src/backend.js';
import { createWebGPUBackend, webgpuProvider } from '../src/node.js';
import type { DeviceOptions } from '../src/device.js';

const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
if (!process.env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER_ICD)) process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;

export const probe = await webgpuProvider.probe();

export async function gpuBackend(options?: DeviceOptions): Promise<WebGPUBackend> {
  return createWebGPUBackend(options);
}

export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return den === 0 ? (num === 0 ? 0 : Infinity) : Math.sqrt(num / den);
}

export async function read(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.read());
}

/** The suites' small NSA configuration (SwiftShader runs on the CPU), with their own head counts and dims. */
export function smallConfig(overrides: NSAConfigInput = {}): NSAConfig {
  return createNSAConfig({ compressBlock: 16, compressStride: 8, selectBlock: 32, selectCount: 4, window: 48, heads: 8, kvHeads: 2, headDimK: 16, headDimV: 12, ...overrides });
}

export const NSA_NAMES = ['q', 'kCmp', 'vCmp', 'kSlc', 'vSlc', 'kWin', 'vWin', 'gates'] as const;
export type NSAName = (typeof NSA_NAMES)[number];

/** Random NSA inputs (normal keys/queries, gates in (0.05, 1)) with their shapes. */
export function nsaInputs(config: NSAConfig, B: number, T: number, C: number, seed: number) {
  const rng = new SeededRandom(seed);
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
  const shapes: Record<NSAName, number[]> = {
    q: [B, T, HQ, Dk],
    kCmp: [B, C, H, Dk],
    vCmp: [B, C, H, Dv],
    kSlc: [B, T, H, Dk],
    vSlc: [B, T, H, Dv],
    kWin: [B, T, H, Dk],
    vWin: [B, T, H, Dv],
    gates: [B, T, HQ, 3],
  };
  const values = {} as Record<NSAName, Float64Array>;
  for (const name of NSA_NAMES) {
    const n = shapes[name].reduce((a, b) => a * b, 1);
    values[name] = name === 'gates' ? rng.uniforms(n, 0.05, 1) : rng.normals(n);
  }
  const dOutput = Float32Array.from(rng.normals(B * T * HQ * Dv));
  return { shapes, values: values as Record<NSAName, ArrayLike<number>>, dOutput };
}

/** Uploads the inputs to `backend` in `dtype`. */
export function upload(backend: Backend, inputs: ReturnType<typeof nsaInputs>, dtype: FloatDType): Record<NSAName, Tensor> {
  const out = {} as Record<NSAName, Tensor>;
  for (const name of NSA_NAMES) out[name] = backend.tensor(inputs.values[name], inputs.shapes[name], dtype);
  return out;
}
