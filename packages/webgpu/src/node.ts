// Node entry: WebGPU through Dawn (the npm `webgpu` package).
import type { BackendProvider } from '@nsa/core';
import { WebGPUBackend, createWebGPUBackendFrom } from './backend.js';
import type { DeviceOptions } from './device.js';
import { createWebGPUProvider } from './provider.js';

export * from './exports.js';

let gpuPromise: Promise<GPU> | undefined;

/**
 * Dawn options from NSA_WEBGPU_DAWN_OPTIONS (whitespace-separated), e.g.
 * `enable-dawn-features=vulkan_enable_f16_on_nvidia disable-dawn-features=timestamp_quantization`:
 * Dawn blocks shader-f16 on NVIDIA's Vulkan driver unless that toggle is on, and quantizes
 * timestamps unless told not to.
 */
export function dawnOptions(): string[] {
  return (process.env.NSA_WEBGPU_DAWN_OPTIONS ?? '').split(/\s+/).filter(Boolean);
}

/** Loads Dawn once and installs its WebGPU globals (GPUBufferUsage, ...) for this process. */
export function nodeGPU(): Promise<GPU> {
  gpuPromise ??= import('webgpu').then(({ create, globals }) => {
    Object.assign(globalThis, globals);
    return create(dawnOptions());
  });
  return gpuPromise;
}

/** A backend on the best adapter Dawn finds. */
export async function createWebGPUBackend(options?: DeviceOptions): Promise<WebGPUBackend> {
  return createWebGPUBackendFrom(await nodeGPU(), options);
}

export const webgpuProvider: BackendProvider = createWebGPUProvider(nodeGPU);
