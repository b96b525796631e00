import { describe, expect, it } from 'vitest';
import { ProgressReporter, type StepReport } from '../src/index.js';

const report = (step: number): StepReport => ({ step, loss: 2 / step, lr: 1e-3, gradNorm: 1, tokens: 100, seconds: 0.5 });

describe('progress reporting', () => {
  it('redraws one bar line on a TTY', () => {
    let text = '';
    const r = new ProgressReporter(4, { isTTY: true, write: (s: string) => (text += s) }, 2);
    for (let s = 1; s <= 4; s++) r.update(report(s));
    expect(text.split('\r').length).toBe(5);
    expect(text).toContain('[######..................] step 1/4 loss 2.0000');
    expect(text).toContain('200 tok/s');
    expect(text.endsWith('\n')).toBe(true);
  });

  it('prints plain lines on the first, every n-th and last step otherwise', () => {
    const lines: string[] = [];
    const r = new ProgressReporter(5, { isTTY: false, write: (s: string) => lines.push(s) }, 2, 'job');
    for (let s = 1; s <= 5; s++) r.update(report(s));
    expect(lines.map((l) => l.split(' ').slice(0, 3).join(' '))).toEqual(['job step 1/5', 'job step 2/5', 'job step 4/5', 'job step 5/5']);
    expect(lines.every((l) => !l.includes('\r') && l.endsWith('\n'))).toBe(true);
  });
});
