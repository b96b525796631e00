import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatNeedleGrid, loadCheckpoint, runNeedleJob } from '../src/index.js';
import { backend } from './helpers.js';

describe('needle job', () => {
  it('runs end to end at tiny size: trains, saves, prints the grid, time and backend', async () => {
    let printed = '';
    const out = join(await mkdtemp(join(tmpdir(), 'nsa-needle-')), 'needle.safetensors');
    const result = await runNeedleJob({
      steps: 4,
      batchSize: 2,
      trainLengths: [32],
      evalLengths: [32, 48],
      depths: [0, 1],
      evalExamples: 2,
      config: { dModel: 16, headDim: 4, ffnHidden: 16, compressorHidden: 8 },
      out,
      output: { write: (s: string) => (printed += s) },
    });
    expect(result.backend).toBe('reference');
    expect(result.accuracy).toHaveLength(2);
    expect(result.accuracy.flat().every((a) => a >= 0 && a <= 1)).toBe(true);
    expect(Number.isFinite(result.finalLoss)).toBe(true);
    expect(printed).toMatch(/^backend: reference/);
    expect(printed).toContain('needle step 4/4');
    expect(printed).toContain(formatNeedleGrid([32, 48], [0, 1], result.accuracy));
    expect(printed).toMatch(/total [\d.]+ s \([\d.]+ s of CPU\) on reference/);
    expect(result.cpuSeconds).toBeGreaterThan(0);
    const { model } = await loadCheckpoint(out, backend);
    expect(model.config.dModel).toBe(16);
  });

  it('formats the grid with lengths as rows and depths as columns', () => {
    expect(formatNeedleGrid([64, 128], [0, 0.5], [[1, 0.5], [0.25, 0]])).toBe(
      ['length \\ depth    0%  50%', '            64  100%  50%', '           128   25%   0%'].join('\n'),
    );
  });
});
