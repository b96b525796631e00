import { BackendUnavailableError, type Backend, type BackendProvider } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { describe, expect, it } from 'vitest';
import { createModel, describeModelBackend, resolveModelBackend } from '../src/index.js';

/** A backend with the NSA operator but no dense ops, like the GPU backends today. */
function operatorOnly(name: string): Backend {
  const ref = createReferenceBackend();
  return {
    name,
    device: 'fake GPU',
    dtypes: ['float32'],
    tensor: ref.tensor.bind(ref),
    nsaForward: ref.nsaForward.bind(ref),
    nsaBackward: ref.nsaBackward.bind(ref),
    createNSACache: ref.createNSACache.bind(ref),
    nsaDecode: ref.nsaDecode.bind(ref),
    attentionForward: ref.attentionForward.bind(ref),
    attentionBackward: ref.attentionBackward.bind(ref),
    synchronize: ref.synchronize.bind(ref),
    dispose: () => undefined,
  };
}

const provider = (name: string, priority: number, available: boolean, make: () => Backend): BackendProvider => ({
  name,
  priority,
  probe: async () => ({ available, reason: available ? `${name} ok` : `no ${name} device` }),
  create: async () => make(),
});

describe('model backend resolution', () => {
  it("'auto' skips backends without dense ops or a device, and says why", async () => {
    const r = await resolveModelBackend('auto', {
      loaders: {
        cuda: async () => provider('cuda', 300, true, () => operatorOnly('cuda')),
        webgpu: async () => provider('webgpu', 200, false, () => operatorOnly('webgpu')),
        broken: async () => {
          throw new Error("Cannot find package '@nsa/broken'");
        },
      },
    });
    expect(r.name).toBe('reference');
    expect(r.skipped.find((s) => s.name === 'cuda')?.reason).toMatch(/^has no dense ops yet \(missing matmul, reshape/);
    expect(r.skipped.find((s) => s.name === 'webgpu')?.reason).toBe('no webgpu device');
    expect(r.skipped.find((s) => s.name === 'broken')?.reason).toMatch(/could not be loaded.*@nsa\/broken/);
    expect(describeModelBackend(r)).toMatch(/^reference \(highest-priority backend with dense ops/);
  });

  it('a named backend without dense ops or unavailable is an error with the reason, never a fallback', async () => {
    const loaders = {
      cuda: async () => provider('cuda', 300, true, () => operatorOnly('cuda')),
      webgpu: async () => provider('webgpu', 200, false, () => operatorOnly('webgpu')),
    };
    await expect(resolveModelBackend('cuda', { loaders })).rejects.toThrow(/backend 'cuda' has no dense ops yet/);
    await expect(resolveModelBackend('webgpu', { loaders })).rejects.toThrow(BackendUnavailableError);
    await expect(resolveModelBackend('nope', { loaders })).rejects.toThrow(/no such backend/);
    expect((await resolveModelBackend('reference', { loaders })).name).toBe('reference');
  });

  it('createModel reports the backend it got and picks float64 on the reference', async () => {
    const { model, resolution } = await createModel({ backend: 'auto', config: { dModel: 16, headDim: 4, ffnHidden: 16 }, seed: 1 });
    expect(resolution.name).toBe('reference');
    expect(model.dtype).toBe('float64');
    expect(model.backend).toBe(resolution.backend);
  });
});
