import { SeededRandom } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import { ByteTokenizer, needleBatch, needleExample, syntheticBatch, syntheticDocument } from '../src/index.js';

const text = (tokens: number[]) => String.fromCharCode(...tokens);

describe('byte tokenizer', () => {
  it('round-trips any text, multi-byte UTF-8 included', () => {
    const tok = new ByteTokenizer();
    for (const s of ['', 'hello', 'naïve — 日本語 🙂', '\u0000\n\t']) {
      const ids = tok.encode(s);
      expect(ids.every((t) => t >= 0 && t < 256)).toBe(true);
      expect(tok.decode(ids)).toBe(s);
    }
    expect(tok.encode('é')).toEqual([0xc3, 0xa9]);
    expect(() => tok.decode([300])).toThrow(/token 0 is 300/);
  });
});

describe('needle task', () => {
  it('hides K=DD; at the asked depth and asks ?K= at the end', () => {
    const rng = new SeededRandom(1);
    for (const depth of [0, 0.5, 1]) {
      const ex = needleExample(rng, 64, depth);
      expect(ex.tokens.length).toBe(65);
      const s = text(ex.tokens);
      const key = s[ex.needleAt];
      expect(s.slice(ex.needleAt, ex.needleAt + 5)).toMatch(/^[A-Z]=\d\d;$/);
      expect(s.slice(-5)).toBe(`?${key}=${s.slice(ex.needleAt + 2, ex.needleAt + 4)}`);
      expect(text(ex.answer)).toBe(s.slice(ex.needleAt + 2, ex.needleAt + 4));
      // nothing else in the sequence looks like a key or a digit
      expect(s.replace(s.slice(ex.needleAt, ex.needleAt + 5), '').slice(0, -5)).toMatch(/^[a-z ]*$/);
    }
    expect(needleExample(rng, 64, 0).needleAt).toBe(0);
    expect(needleExample(rng, 64, 1).needleAt).toBe(65 - 5 - 3 - 2);
    expect(() => needleExample(rng, 6, 0.5)).toThrow(/too short/);
  });

  it('batches score only the answer tokens', () => {
    const b = needleBatch(new SeededRandom(2), 3, 32);
    expect(b.ids.length).toBe(96);
    const counted = [...b.targets].filter((t) => t >= 0);
    expect(counted.length).toBe(6);
    expect(counted.every((t) => t >= 48 && t <= 57)).toBe(true);
  });
});

describe('synthetic language', () => {
  it('defines names in a header and refers back to them, with balanced brackets', () => {
    const doc = text(syntheticDocument(new SeededRandom(3), 600));
    expect(doc.length).toBe(600);
    const header = doc.split('\n')[0];
    const names = new Map([...header.matchAll(/@(\d)=(\w+)/g)].map((m) => [m[1], m[2]]));
    expect(names.size).toBe(3);
    const refs = [...doc.slice(header.length).matchAll(/@(\d) (\w+)/g)];
    expect(refs.length).toBeGreaterThan(2);
    for (const r of refs.slice(0, -1)) expect(r[2]).toBe(names.get(r[1]));
    let depth = 0;
    for (const c of doc) {
      depth += c === '(' ? 1 : c === ')' ? -1 : 0;
      expect(depth).toBeGreaterThanOrEqual(0);
    }
    const batch = syntheticBatch(new SeededRandom(4), 2, 50);
    expect([...batch.targets.slice(0, 49)]).toEqual([...batch.ids.slice(1, 50)]);
  });
});
