// NSA vs dense attention at equal steps: the same model size, seed, data and schedule, only the
// attention differs. `npx tsx --conditions=@nsa/source scripts/compare-attention.ts [needle|synthetic] [steps]`
import {
  createModel,
  NEEDLE_JOB_DEFAULTS,
  needleBatch,
  streamOf,
  syntheticBatch,
  Trainer,
  type AttentionKind,
  type Batch,
} from '../src/index.js';

const task = process.argv[2] ?? 'needle';
const steps = Number(process.argv[3] ?? NEEDLE_JOB_DEFAULTS.steps);
const every = Math.max(1, Math.floor(steps / 6));
const { seed, batchSize, lr, trainLengths, config } = NEEDLE_JOB_DEFAULTS;

function batchAt(step: number): Batch {
  const length = trainLengths[step % trainLengths.length];
  const rng = streamOf(seed, 2, step);
  return task === 'needle' ? needleBatch(rng, batchSize, length) : syntheticBatch(rng, batchSize, length);
}

async function train(attention: AttentionKind): Promise<{ curve: number[]; seconds: number }> {
  const { model } = await createModel({ backend: 'auto', config: { ...config, attention }, seed });
  const trainer = new Trainer(model, { steps, lr, warmup: Math.max(1, Math.floor(steps * 0.05)) });
  const losses: number[] = [];
  const started = performance.now();
  await trainer.run(batchAt, steps, (r) => losses.push(r.loss));
  const curve: number[] = [];
  for (let end = every; end <= steps; end += every) {
    const window = losses.slice(end - every, end);
    curve.push(window.reduce((a, b) => a + b, 0) / window.length);
  }
  return { curve, seconds: (performance.now() - started) / 1000 };
}

const nsa = await train('nsa');
const dense = await train('dense');
console.log(`task ${task}, ${steps} steps, batch ${batchSize}, lengths ${trainLengths.join('/')}, seed ${seed}`);
console.log('steps        NSA loss  dense loss   (mean training loss over the steps in the window)');
nsa.curve.forEach((l, i) => {
  console.log(`${String(i * every + 1).padStart(4)}-${String((i + 1) * every).padEnd(4)}  ${l.toFixed(4).padStart(9)}  ${dense.curve[i].toFixed(4).padStart(10)}`);
});
console.log(`time: NSA ${nsa.seconds.toFixed(1)} s, dense ${dense.seconds.toFixed(1)} s`);
