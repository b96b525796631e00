import { describe, expect, it } from 'vitest';
import { BackendRegistry, BackendUnavailableError, describeResolution, type Backend, type BackendProvider } from '../src/index.js';

function provider(name: string, priority: number, available: boolean, reason: string, createFails = false): BackendProvider {
  return {
    name,
    priority,
    probe: async () => ({ available, reason }),
    create: async () => {
      if (createFails) throw new Error('driver exploded');
      return { name } as Backend;
    },
  };
}

describe('BackendRegistry', () => {
  it('auto picks the highest-priority available backend and says why it skipped the others', async () => {
    const registry = new BackendRegistry();
    registry.register(provider('reference', 100, true, 'always available'));
    registry.register(provider('cuda', 300, false, 'no CUDA device'));
    registry.register(provider('webgpu', 200, true, 'adapter: SwiftShader'));
    const resolved = await registry.resolve('auto');
    expect(resolved.name).toBe('webgpu');
    expect(resolved.reason).toMatch(/highest-priority available backend; adapter: SwiftShader/);
    expect(resolved.skipped).toEqual([
      { name: 'cuda', reason: 'no CUDA device' },
      { name: 'reference', reason: 'lower priority than webgpu' },
    ]);
    expect(describeResolution(resolved)).toMatch(/^webgpu \(.*\); skipped cuda: no CUDA device; reference: lower priority/);
  });

  it('falls through a backend whose create fails and records why', async () => {
    const registry = new BackendRegistry();
    registry.register(provider('reference', 100, true, 'always available'));
    registry.register(provider('cuda', 300, true, 'H100', true));
    const resolved = await registry.resolve();
    expect(resolved.name).toBe('reference');
    expect(resolved.skipped[0]).toEqual({ name: 'cuda', reason: 'probe passed but create failed: driver exploded' });
  });

  it('a probe that throws counts as unavailable', async () => {
    const registry = new BackendRegistry();
    registry.register({ ...provider('webgpu', 200, true, ''), probe: async () => Promise.reject(new Error('no adapter')) });
    registry.register(provider('reference', 100, true, 'always available'));
    const resolved = await registry.resolve();
    expect(resolved.skipped).toEqual([{ name: 'webgpu', reason: 'probe failed: no adapter' }]);
  });

  it('a named unavailable backend throws with its reason, never falls back', async () => {
    const registry = new BackendRegistry();
    registry.register(provider('reference', 100, true, 'always available'));
    registry.register(provider('cuda', 300, false, 'no CUDA device'));
    await expect(registry.resolve('cuda')).rejects.toThrow(BackendUnavailableError);
    await expect(registry.resolve('cuda')).rejects.toThrow("backend 'cuda' is not available: no CUDA device");
    await expect(registry.resolve('tpu')).rejects.toThrow(/no such backend is registered \(registered: cuda, reference\)/);
  });

  it('a named available backend is used even when a higher one exists', async () => {
    const registry = new BackendRegistry();
    registry.register(provider('reference', 100, true, 'always available'));
    registry.register(provider('cuda', 300, true, 'H100'));
    const resolved = await registry.resolve('reference');
    expect(resolved.name).toBe('reference');
    expect(resolved.skipped).toEqual([{ name: 'cuda', reason: 'not requested (H100)' }]);
  });

  it('with nothing available, the error lists every reason', async () => {
    const registry = new BackendRegistry();
    registry.register(provider('cuda', 300, false, 'no CUDA device'));
    await expect(registry.resolve()).rejects.toThrow('no NSA backend is available: cuda: no CUDA device');
  });
});

describe('registerBackendModules', () => {
  it('registers loaded providers and explains the ones that fail to load', async () => {
    const { registerBackendModules } = await import('../src/index.js');
    const registry = new BackendRegistry();
    await registerBackendModules(
      {
        reference: async () => provider('reference', 100, true, 'always available'),
        cuda: async () => {
          throw new Error("Cannot find package '@nsa/cuda'\nmore lines");
        },
      },
      registry,
    );
    const resolved = await registry.resolve();
    expect(resolved.name).toBe('reference');
    expect(resolved.skipped).toEqual([{ name: 'cuda', reason: "its package could not be loaded (Cannot find package '@nsa/cuda')" }]);
    await expect(registry.resolve('cuda')).rejects.toThrow(
      "backend 'cuda' is not available: its package could not be loaded (Cannot find package '@nsa/cuda')",
    );
  });
});
