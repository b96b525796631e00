import { describe, expect, it } from 'vitest';
import { Scope } from '../src/index.js';
import { host, relErr, spread } from './helpers.js';
import { randomIds, tinyConfig, tinyModel } from './tiny.js';

describe.each(['nsa', 'dense'] as const)('%s model gradients', (attention) => {
  it('match central finite differences for every parameter tensor', async () => {
    const config = tinyConfig(attention);
    const model = tinyModel(config);
    const B = 2;
    const T = 14; // 6 compressed blocks, 4 selection blocks of which 3 are chosen
    const ids = randomIds(B * T, config.vocabSize, 5);
    const targets = randomIds(B * T, config.vocabSize, 6);
    targets[3] = -1; // ignored targets must not count
    const scope = new Scope();
    const { grads } = await model.loss(ids, targets, B, T, scope, true);
    const lossAt = async () => {
      const s = new Scope();
      const r = await model.loss(ids, targets, B, T, s, false);
      s.dispose();
      return r.loss;
    };
    const h = 1e-5;
    for (const spec of model.specs) {
      const analytic = await host(grads!.get(spec.name)!);
      const param = model.params.get(spec.name)! as unknown as { data: Float64Array };
      const values = param.data;
      const picks = spread(values.length, 6);
      const numeric: number[] = [];
      for (const i of picks) {
        const saved = values[i];
        values[i] = saved + h;
        const up = await lossAt();
        values[i] = saved - h;
        const down = await lossAt();
        values[i] = saved;
        numeric.push((up - down) / (2 * h));
      }
      // A tensor whose gradient vanishes would pass trivially: require a real signal.
      expect(Math.hypot(...numeric), `${spec.name} has a zero numeric gradient`).toBeGreaterThan(1e-8);
      const err = relErr(picks.map((i) => analytic[i]), numeric);
      expect(err, `${spec.name}: analytic ${picks.map((i) => analytic[i])} vs numeric ${numeric}`).toBeLessThan(1e-5);
    }
    scope.dispose();
  });
});
