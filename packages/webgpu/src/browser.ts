// Browser entry: WebGPU through navigator.gpu. Imports no Node module.
import type { BackendProvider } from '@nsa/core';
import { WebGPUBackend, createWebGPUBackendFrom } from './backend.js';
import type { DeviceOptions } from './device.js';
import { createWebGPUProvider } from './provider.js';

export * from './exports.js';

function browserGPU(): Promise<GPU | undefined> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  return Promise.resolve(nav?.gpu);
}

/** A backend on the adapter navigator.gpu offers. */
export async function createWebGPUBackend(options?: DeviceOptions): Promise<WebGPUBackend> {
  return createWebGPUBackendFrom(await browserGPU(), options);
}

export const webgpuProvider: BackendProvider = createWebGPUProvider(browserGPU);
