// The registry entry: probes for an adapter (with the precise reason when there is none) and
// creates a WebGPUBackend. The entry points pass in how to reach the platform's GPU object.
import type { BackendProvider } from '@nsa/core';
import { WebGPUBackend } from './backend.js';
import { acquireDevice, messageOf, type DeviceOptions } from './device.js';

export function createWebGPUProvider(getGPU: () => Promise<GPU | undefined>, options?: DeviceOptions): BackendProvider {
  return {
    name: 'webgpu',
    priority: 200,
    async probe() {
      let gpu: GPU | undefined;
      try {
        gpu = await getGPU();
      } catch (error) {
        return { available: false, reason: `WebGPU could not be loaded: ${messageOf(error)}` };
      }
      if (!gpu) return { available: false, reason: 'WebGPU is not available here (navigator.gpu is undefined)' };
      try {
        const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
        if (!adapter) return { available: false, reason: 'no WebGPU adapter: requestAdapter() returned null (no usable GPU or driver)' };
        const info = adapter.info;
        const name = [info?.vendor, info?.architecture, info?.description].filter(Boolean).join(' ') || 'unknown adapter';
        const f16 = adapter.features.has('shader-f16') ? 'shader-f16' : 'no shader-f16';
        return { available: true, reason: `WebGPU adapter ${name} (${f16})` };
      } catch (error) {
        return { available: false, reason: `requestAdapter failed: ${messageOf(error)}` };
      }
    },
    async create() {
      return new WebGPUBackend(await acquireDevice(await getGPU(), options));
    },
  };
}
