// The harness must be able to fail: a backend that perturbs the reference's output is caught.
import { describe, expect, it } from 'vitest';
import { createReferenceBackend } from '@nsa/reference';
import type { Backend, NSAForwardArgs } from '@nsa/core';
import { attentionCases, nsaCases, nsaParity, attentionParity, relativeError } from './src/index.js';

describe('parity harness', () => {
  it('passes the reference against itself in float32 and float16', async () => {
    const backend = createReferenceBackend();
    const c = nsaCases('ci', ['float32']).find((x) => x.name.startsWith('B=3'))!;
    const rows = await nsaParity(backend, c);
    expect(rows.filter((r) => !r.ok)).toEqual([]);
    const d = nsaCases('ci', ['float16']).find((x) => x.name.startsWith('decode'))!;
    expect((await nsaParity(backend, d)).filter((r) => !r.ok)).toEqual([]);
    const a = attentionCases('ci', ['float32'])[0];
    expect((await attentionParity(backend, a)).filter((r) => !r.ok)).toEqual([]);
  });

  it('catches a backend whose output is slightly wrong', async () => {
    const honest = createReferenceBackend();
    const nsaForward = async (args: NSAForwardArgs) => {
      const result = await honest.nsaForward(args);
      const data = (result.output as unknown as { data: Float64Array }).data;
      data[0] += 1; // one wrong element
      return result;
    };
    const skewed = new Proxy(honest, {
      get(target, prop) {
        if (prop === 'nsaForward') return nsaForward;
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as Backend;
    const c = nsaCases('ci', ['float32']).find((x) => x.name.startsWith('B=3'))!;
    const rows = await nsaParity(skewed, c);
    expect(rows.find((r) => r.quantity === 'output')?.ok).toBe(false);
  });

  it('treats NaN as failure and compares all-zero references absolutely', () => {
    expect(relativeError([Number.NaN], [1])).toBe(Infinity);
    expect(relativeError([0, 0], [0, 0])).toBe(0);
    expect(relativeError([3, 4], [0, 0])).toBe(5);
  });
});
