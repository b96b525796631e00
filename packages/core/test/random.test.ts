import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../src/index.js';

describe('SeededRandom', () => {
  it('repeats a sequence for a seed and differs across seeds', () => {
    const a = new SeededRandom(7).normals(16);
    expect(new SeededRandom(7).normals(16)).toEqual(a);
    expect(new SeededRandom(8).normals(16)).not.toEqual(a);
  });

  it('draws plausible uniform and normal moments', () => {
    const r = new SeededRandom(1);
    const u = r.uniforms(20000);
    const n = r.normals(20000);
    const mean = (x: Float64Array) => x.reduce((s, v) => s + v, 0) / x.length;
    expect(Math.min(...u)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...u)).toBeLessThan(1);
    expect(mean(u)).toBeCloseTo(0.5, 1);
    expect(mean(n)).toBeCloseTo(0, 1);
    expect(mean(n.map((v) => v * v))).toBeCloseTo(1, 1);
    for (let i = 0; i < 100; i++) expect(r.int(5)).toBeLessThan(5);
  });
});
