import { afterEach, describe, expect, it, vi } from 'vitest';
import { attentionCommand } from '../src/commands/attention.js';
import { backendsCommand } from '../src/commands/backends.js';

afterEach(() => vi.restoreAllMocks());

function capture(): string[] {
  const lines: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...parts: unknown[]) => void lines.push(parts.join(' ')));
  return lines;
}

describe('nsa attention', () => {
  it('runs NSA and dense attention on the reference and reports time, sparsity and the backend', async () => {
    const lines = capture();
    const ok = await attentionCommand(['--backend', 'reference', '--seq', '640', '--heads', '2', '--dim', '16']);
    const text = lines.join('\n');
    expect(ok).toBe(true);
    expect(text).toMatch(/^backend: reference \(requested by name/m);
    expect(text).toMatch(/\| NSA forward +\| +[\d.]+ \|/);
    expect(text).toMatch(/\| dense forward +\| +[\d.]+ \|/);
    expect(text).toMatch(/sparsity: NSA reads [\d.]+% of the keys dense attention reads/);
    expect(text).not.toMatch(/FAIL/);
    expect(text.match(/check: ok/g)).toHaveLength(4);
  });

  it('rejects a dtype the backend does not have and an unknown backend', async () => {
    capture();
    await expect(attentionCommand(['--backend', 'reference', '--dtype', 'int8'])).rejects.toThrow(/--dtype int8 is not supported/);
    await expect(attentionCommand(['--backend', 'tpu'])).rejects.toThrow(/backend 'tpu' is not available: no such backend/);
  });
});

describe('nsa backends', () => {
  it('lists the reference as available', async () => {
    const lines = capture();
    await backendsCommand();
    expect(lines.join('\n')).toMatch(/available +reference +priority 100/);
  });
});
