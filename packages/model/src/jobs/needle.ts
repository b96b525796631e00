import type { ModelBackend } from '@nsa/core';
import { describeModelBackend } from '../backend.js';
import { saveCheckpoint } from '../checkpoint/checkpoint.js';
import type { ModelConfigInput } from '../config.js';
import { createModel } from '../create.js';
import { needleBatch } from '../data/needle.js';
import { needleAccuracy } from '../data/needle-eval.js';
import { ProgressReporter, type ProgressOutput } from '../train/progress.js';
import { Trainer } from '../train/trainer.js';
import { streamOf } from '../util/seed.js';

export interface NeedleJobOptions {
  /** 'auto' (default), a backend name or instance. */
  readonly backend?: string | ModelBackend;
  readonly steps?: number;
  readonly seed?: number;
  readonly batchSize?: number;
  readonly lr?: number;
  /** Context lengths to train on; step s uses trainLengths[s % n]. */
  readonly trainLengths?: readonly number[];
  /** Grid rows. */
  readonly evalLengths?: readonly number[];
  /** Grid columns (needle depth, 0 = start of the context, 1 = end). */
  readonly depths?: readonly number[];
  /** Examples per grid cell. */
  readonly evalExamples?: number;
  readonly config?: ModelConfigInput;
  /** Where to save the trained model (safetensors). */
  readonly out?: string;
  readonly output?: ProgressOutput;
}

export interface NeedleJobResult {
  readonly backend: string;
  readonly backendDescription: string;
  readonly parameters: number;
  readonly steps: number;
  /** Mean training loss of the last 10% of steps. */
  readonly finalLoss: number;
  readonly lengths: readonly number[];
  readonly depths: readonly number[];
  /** accuracy[i][j]: lengths[i] x depths[j], in [0, 1]. */
  readonly accuracy: number[][];
  readonly trainSeconds: number;
  readonly totalSeconds: number;
  /** CPU time of this process during the job (user + system), a load-independent measure. */
  readonly cpuSeconds: number;
}

/** The settings of the README's main job, sized to finish within 10 minutes on 2 CPU cores. */
export const NEEDLE_JOB_DEFAULTS = {
  steps: 1000,
  seed: 1,
  batchSize: 8,
  lr: 6e-3,
  trainLengths: [64, 96, 128, 192],
  evalLengths: [64, 128, 192, 256],
  depths: [0, 0.25, 0.5, 0.75, 1],
  evalExamples: 20,
  config: {
    dModel: 32,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    headDim: 8,
    ffnHidden: 64,
    compressorHidden: 32,
    nsa: { compressBlock: 8, compressStride: 4, selectBlock: 16, selectCount: 4, initialBlocks: 1, localBlocks: 2, window: 16 },
  } satisfies ModelConfigInput,
};

/** Formats the accuracy grid like the paper's needle figure: rows are context lengths, columns depths. */
export function formatNeedleGrid(lengths: readonly number[], depths: readonly number[], accuracy: number[][]): string {
  const head = ['length \\ depth', ...depths.map((d) => `${Math.round(d * 100)}%`)];
  const rows = lengths.map((len, i) => [String(len), ...accuracy[i].map((a) => `${Math.round(a * 100)}%`)]);
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

/**
 * The main job: train a small NSA model on the needle task on the best backend, then print the
 * retrieval-accuracy grid over context lengths x needle depths, the time taken and the backend.
 */
export async function runNeedleJob(options: NeedleJobOptions = {}): Promise<NeedleJobResult> {
  const started = performance.now();
  const cpuStarted = process.cpuUsage();
  const o = { ...NEEDLE_JOB_DEFAULTS, ...options };
  const out = options.output ?? process.stdout;
  const { model, resolution } = await createModel({ backend: o.backend ?? 'auto', config: o.config, seed: o.seed });
  out.write(`backend: ${describeModelBackend(resolution)}\n`);
  out.write(
    `model: NSA transformer, ${model.parameterCount} parameters (d_model ${model.config.dModel}, ${model.config.layers} layers, ` +
      `${model.config.heads} heads); training ${o.steps} steps of ${o.batchSize} sequences at lengths ${o.trainLengths.join('/')}\n`,
  );
  const trainer = new Trainer(model, { steps: o.steps, lr: o.lr, warmup: Math.max(1, Math.floor(o.steps * 0.05)) });
  const reporter = new ProgressReporter(o.steps, out, 50, 'needle');
  const losses: number[] = [];
  await trainer.run(
    (step) => needleBatch(streamOf(o.seed, 2, step), o.batchSize, o.trainLengths[step % o.trainLengths.length]),
    o.steps,
    (r) => {
      losses.push(r.loss);
      reporter.update(r);
    },
  );
  const trainSeconds = (performance.now() - started) / 1000;
  const tail = losses.slice(-Math.max(1, Math.floor(losses.length / 10)));
  const finalLoss = tail.reduce((a, b) => a + b, 0) / tail.length;
  if (o.out) {
    await saveCheckpoint(o.out, model);
    out.write(`checkpoint: ${o.out}\n`);
  }
  const accuracy: number[][] = [];
  for (const length of o.evalLengths) {
    const row: number[] = [];
    for (const depth of o.depths) row.push(await needleAccuracy(model, length, depth, o.evalExamples, o.seed + 1000));
    accuracy.push(row);
  }
  const totalSeconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuStarted);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  out.write(`\nneedle retrieval accuracy (${o.evalExamples} examples per cell, greedy, exact 2-digit value):\n`);
  out.write(formatNeedleGrid(o.evalLengths, o.depths, accuracy) + '\n');
  out.write(
    `final training loss ${finalLoss.toFixed(4)}; trained in ${trainSeconds.toFixed(1)} s, total ${totalSeconds.toFixed(1)} s ` +
      `(${cpuSeconds.toFixed(1)} s of CPU) on ${resolution.name} (${resolution.backend.device})\n`,
  );
  trainer.dispose();
  model.dispose();
  return {
    backend: resolution.name,
    backendDescription: describeModelBackend(resolution),
    parameters: model.parameterCount,
    steps: o.steps,
    finalLoss,
    lengths: o.evalLengths,
    depths: o.depths,
    accuracy,
    trainSeconds,
    totalSeconds,
    cpuSeconds,
  };
}
