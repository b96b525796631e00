// Node entry: WebGPU through Dawn (the npm `webgpu` package).
import type { BackendProvider } from '@nsa/core';
import { WebGPUBackend, createWebGPUBackendFrom } from './backend.js';
import type { DeviceOptions } from './device.js';
import { createWebGPUProvider } from './provider.js';

export * from './exports.js';

let gpuPromise: Promise<GPU> | undefined;

/** Loads Dawn once and installs its WebGPU globals (GPUBufferUsage, ...) for this process. */
export function nodeGPU(): Promise<GPU> {
  gpuPromise ??= import('webgpu').then(({ create, globals }) => {
    Object.assign(globalThis, globals);
    return create([]);
  });
  return gpuPromise;
}

/** A backend on the best adapter Dawn finds. */
export async function createWebGPUBackend(options?: DeviceOptions): Promise<WebGPUBackend> {
  return createWebGPUBackendFrom(await nodeGPU(), options);
}

export const webgpuProvider: BackendProvider = createWebGPUProvider(nodeGPU);
