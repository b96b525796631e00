// Registry entry: priority 300 (above webgpu and reference). probe() says precisely why the backend
// cannot run: no built addon (and how to build it), no driver, no device, or a too-old GPU.
import type { BackendProbe, BackendProvider } from '@nsa/core';
import { CudaBackend } from './backend.js';
import { loadAddon } from './loader.js';
import type { NativeAddon } from './native.js';

function tryLoad(): { addon?: NativeAddon; reason: string } {
  try {
    const { addon, path } = loadAddon();
    return { addon, reason: path };
  } catch (error) {
    return { reason: error instanceof Error ? error.message : String(error) };
  }
}

export async function probeCuda(load: () => { addon?: NativeAddon; reason: string } = tryLoad): Promise<BackendProbe> {
  const { addon, reason } = load();
  if (!addon) return { available: false, reason };
  const info = addon.deviceInfo();
  return { available: info.available, reason: info.available ? `${info.reason}, addon ${reason}` : info.reason };
}

/** Creates the backend on device 0; throws with the probe's reason when it cannot. */
export async function createCudaBackend(): Promise<CudaBackend> {
  const { addon } = loadAddon();
  const info = addon.deviceInfo();
  if (!info.available) throw new Error(`cuda backend unavailable: ${info.reason}`);
  addon.init();
  return new CudaBackend(addon, info.reason);
}

export const cudaProvider: BackendProvider = {
  name: 'cuda',
  priority: 300,
  probe: () => probeCuda(),
  create: () => createCudaBackend(),
};
