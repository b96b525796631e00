import { describe, expect, it } from 'vitest';
import { DisposedTensorError, disposeAll } from '../src/index.js';
import { FakeTensor } from './fake-tensor.js';

describe('TensorBase', () => {
  it('knows its size and freezes its shape', () => {
    const t = new FakeTensor([2, 3]);
    expect(t.size).toBe(6);
    expect(Object.isFrozen(t.shape)).toBe(true);
  });

  it('disposes once and then refuses reads', async () => {
    const t = new FakeTensor([2]);
    expect((await t.read()).length).toBe(2);
    t.dispose();
    t.dispose();
    expect(t.released).toBe(1);
    expect(t.disposed).toBe(true);
    expect(() => t.read()).toThrow(DisposedTensorError);
    expect(() => t.assertLive('q')).toThrow(/q \[2\] float32 was used after dispose/);
  });

  it('supports `using` through Symbol.dispose', () => {
    const t = new FakeTensor([1]);
    {
      using _scoped = t;
    }
    expect(t.disposed).toBe(true);
  });

  it('disposeAll walks lists and records', () => {
    const a = new FakeTensor([1]);
    const b = new FakeTensor([1]);
    disposeAll({ a, b, c: undefined });
    expect(a.disposed && b.disposed).toBe(true);
    const c = new FakeTensor([1]);
    disposeAll([c, undefined]);
    expect(c.disposed).toBe(true);
  });
});
