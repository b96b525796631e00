import { BackendRegistry } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import { cudaProvider, probeCuda } from '../src/provider.js';
import { fakeAddon } from './fake-addon.js';

describe('cuda provider', () => {
  it('registers as cuda with priority 300', () => {
    expect(cudaProvider.name).toBe('cuda');
    expect(cudaProvider.priority).toBe(300);
  });

  it('reports a missing addon with the loader message', async () => {
    const probe = await probeCuda(() => ({ reason: 'the native addon nsa_cuda.node is not built' }));
    expect(probe).toEqual({ available: false, reason: 'the native addon nsa_cuda.node is not built' });
  });

  it('reports the driver or device problem from the addon', async () => {
    const addon = fakeAddon({ available: false, count: 0, reason: 'no usable NVIDIA driver: none is installed' });
    const probe = await probeCuda(() => ({ addon, reason: '/x/nsa_cuda.node' }));
    expect(probe.available).toBe(false);
    expect(probe.reason).toMatch(/no usable NVIDIA driver/);
  });

  it('is available with the device name and addon path when both are there', async () => {
    const probe = await probeCuda(() => ({ addon: fakeAddon(), reason: '/x/nsa_cuda.node' }));
    expect(probe).toEqual({ available: true, reason: 'Fake GPU (sm_90), addon /x/nsa_cuda.node' });
  });

  it('gives a precise reason on this machine, and naming it never falls back', async () => {
    const probe = await cudaProvider.probe();
    if (probe.available) return; // a GPU host: the GPU tests cover it
    expect(probe.reason).toMatch(/not built|failed to load|no usable NVIDIA driver|no CUDA device|compute capability/);
    const registry = new BackendRegistry();
    registry.register(cudaProvider);
    await expect(registry.resolve('cuda')).rejects.toThrow(probe.reason);
  });
});
