import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { clipFactor, learningRate, needleBatch, streamOf, syntheticBatch, Trainer, type Batch } from '../src/index.js';
import { backend, host } from './helpers.js';
import { tinyConfig, tinyModel } from './tiny.js';

const batchAt = (step: number): Batch => needleBatch(streamOf(9, step), 2, 16);

describe('learning-rate schedule and clipping', () => {
  it('warms up linearly and decays by cosine to the floor', () => {
    const o = { peak: 1, min: 0.1, warmup: 4, total: 14 };
    expect([0, 1, 2, 3].map((s) => learningRate(s, o))).toEqual([0.25, 0.5, 0.75, 1]);
    expect(learningRate(4, o)).toBeCloseTo(1, 12);
    // halfway through the decay (step 4 + 9/2): min + (peak - min) / 2
    expect(learningRate(8.5, o)).toBeCloseTo(0.55, 12);
    expect(learningRate(13, o)).toBeCloseTo(0.1, 12);
    expect(() => learningRate(0, { ...o, min: 2 })).toThrow(/min = 2/);
  });

  it('clips the global norm', () => {
    expect(clipFactor(4, 1)).toBe(0.25);
    expect(clipFactor(0.5, 1)).toBe(1);
    expect(clipFactor(10, 0)).toBe(1);
  });
});

describe('AdamW', () => {
  it('matches a hand-computed update (bias correction, decoupled decay, gradient scale)', async () => {
    const param = backend.tensor([1, -2], [2], 'float64');
    const grad = backend.tensor([0.5, 0.25], [2], 'float64');
    const m = backend.tensor([0, 0], [2], 'float64');
    const v = backend.tensor([0, 0], [2], 'float64');
    const opts = { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.5 };
    await backend.adamw({ param, grad, m, v }, { ...opts, step: 1, gradScale: 2 });
    // step 1: m̂ = g, v̂ = g², update = g/|g| = sign(g); decay multiplies by 1 - lr*wd = 0.95
    const p1 = await host(param);
    expect(p1[0]).toBeCloseTo(1 * 0.95 - 0.1, 7);
    expect(p1[1]).toBeCloseTo(-2 * 0.95 - 0.1, 7);
    expect((await host(m))[0]).toBeCloseTo(0.1 * 1.0, 12);
    await backend.adamw({ param, grad, m, v }, { ...opts, step: 2, gradScale: 2 });
    // step 2 with the same g: m = 0.19 g, v = 0.0199 g²; m̂ = g, v̂ = g²: again sign(g)
    const p2 = await host(param);
    expect(p2[0]).toBeCloseTo((1 * 0.95 - 0.1) * 0.95 - 0.1, 7);
  });
});

describe('trainer', () => {
  it('lowers the loss on a fixed batch and is deterministic with a seed', async () => {
    const fixed = syntheticBatch(streamOf(3, 0), 2, 16);
    const run = async () => {
      const trainer = new Trainer(tinyModel(tinyConfig('nsa', { vocabSize: 128 }), 1), { steps: 12, lr: 1e-2, warmup: 2 });
      const losses: number[] = [];
      await trainer.run(() => fixed, 12, (r) => losses.push(r.loss));
      return { losses, params: await trainer.model.readParameters() };
    };
    const a = await run();
    const b = await run();
    expect(a.losses).toEqual(b.losses);
    expect([...a.params.get('lmHead')!]).toEqual([...b.params.get('lmHead')!]);
    expect(a.losses.slice(-3).reduce((x, y) => x + y)).toBeLessThan(a.losses.slice(0, 3).reduce((x, y) => x + y));
  });

  it('resuming from a checkpoint equals uninterrupted training', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'nsa-resume-'));
    const path = join(dir, 'run.safetensors');
    const straight = new Trainer(tinyModel(tinyConfig('nsa', { vocabSize: 128 }), 2), { steps: 8, lr: 5e-3 });
    await straight.run(batchAt, 8);
    const first = new Trainer(tinyModel(tinyConfig('nsa', { vocabSize: 128 }), 2), { steps: 8, lr: 5e-3 });
    await first.run(batchAt, 5);
    await first.save(path);
    const resumed = await Trainer.resume(path, backend);
    expect(resumed.step).toBe(5);
    await resumed.run(batchAt, 8);
    const want = await straight.model.readParameters();
    const got = await resumed.model.readParameters();
    for (const [name, values] of want) expect([...got.get(name)!], name).toEqual([...values]);
  });
});
