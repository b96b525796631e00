import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CheckpointMismatchError,
  createModelConfig,
  decodeSafetensors,
  encodeSafetensors,
  loadCheckpoint,
  readSafetensors,
  saveCheckpoint,
  writeSafetensors,
  type NamedTensor,
} from '../src/index.js';
import { backend } from './helpers.js';
import { randomIds, tinyConfig, tinyModel } from './tiny.js';

const tempDir = () => mkdtemp(join(tmpdir(), 'nsa-ckpt-'));

describe('safetensors', () => {
  it('round-trips F64/F32/I32 tensors and metadata in the standard layout', async () => {
    const tensors = new Map<string, NamedTensor>([
      ['a', { dtype: 'F64', shape: [2, 2], data: Float64Array.from([1, 2.5, -3, 1e-300]) }],
      ['b', { dtype: 'F32', shape: [3], data: Float32Array.from([0.5, 1, 2]) }],
      ['c', { dtype: 'I32', shape: [1], data: Int32Array.from([-7]) }],
    ]);
    const bytes = encodeSafetensors(tensors, { note: 'hi' });
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + headerLength) % 8).toBe(0);
    const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + headerLength)).toString()) as Record<string, { data_offsets: number[] }>;
    expect(header.a.data_offsets).toEqual([0, 32]);
    expect(header.b.data_offsets).toEqual([32, 44]);
    const back = decodeSafetensors(bytes);
    expect(back.metadata).toEqual({ note: 'hi' });
    expect([...back.tensors.get('a')!.data]).toEqual([1, 2.5, -3, 1e-300]);
    expect(back.tensors.get('b')!.dtype).toBe('F32');
    expect([...back.tensors.get('c')!.data]).toEqual([-7]);
  });

  it('writes atomically: no temporary file is left and a failed write keeps the old file', async () => {
    const dir = await tempDir();
    const path = join(dir, 'x.safetensors');
    const one = new Map<string, NamedTensor>([['w', { dtype: 'F64', shape: [1], data: Float64Array.from([1]) }]]);
    await writeSafetensors(path, one);
    const bad = new Map<string, NamedTensor>([['w', { dtype: 'F64', shape: [2], data: Float64Array.from([1]) }]]);
    await expect(writeSafetensors(path, bad)).rejects.toThrow(/1 values for shape \[2\]/);
    expect(await readdir(dir)).toEqual(['x.safetensors']);
    expect([...(await readSafetensors(path)).tensors.get('w')!.data]).toEqual([1]);
    await expect(writeSafetensors(join(dir, 'missing-dir', 'y.safetensors'), one)).rejects.toThrow();
    expect(await readdir(dir)).toEqual(['x.safetensors']);
  });

  it('rejects truncated files precisely', async () => {
    const bytes = encodeSafetensors(new Map([['w', { dtype: 'F64', shape: [4], data: new Float64Array(4) } as NamedTensor]]));
    expect(() => decodeSafetensors(bytes.subarray(0, bytes.length - 8), 'cut')).toThrow(/cut: tensor w \[4\] F64 has data_offsets \[0, 32\] that do not fit/);
    const header = Buffer.from(JSON.stringify({ w: { dtype: 'F64', shape: 'x', data_offsets: [0, 8] } }));
    const malformed = new Uint8Array(8 + header.length + 8);
    new DataView(malformed.buffer).setBigUint64(0, BigInt(header.length), true);
    malformed.set(header, 8);
    expect(() => decodeSafetensors(malformed, 'odd')).toThrow(/odd: tensor w has a malformed shape or data_offsets/);
  });
});

describe('model checkpoints', () => {
  it('round-trip weights and config: the loaded model computes the same logits', async () => {
    const dir = await tempDir();
    const path = join(dir, 'm.safetensors');
    const model = tinyModel(tinyConfig('nsa'), 4);
    await saveCheckpoint(path, model);
    const { model: loaded, training } = await loadCheckpoint(path, backend);
    expect(training).toBeUndefined();
    expect(loaded.config).toEqual(model.config);
    const ids = randomIds(12, 11, 1);
    expect([...(await loaded.logits(ids, 1, 12))]).toEqual([...(await model.logits(ids, 1, 12))]);
  });

  it('say precisely which names, shapes, dtypes and config fields do not match', async () => {
    const dir = await tempDir();
    const path = join(dir, 'm.safetensors');
    await saveCheckpoint(path, tinyModel(tinyConfig('nsa'), 4));
    const file = await readSafetensors(path);
    const tensors = new Map(file.tensors);
    tensors.delete('layers.0.attn.wq');
    tensors.set('lmHead', { dtype: 'F64', shape: [11, 4], data: new Float64Array(44) });
    tensors.set('finalNorm', { dtype: 'I32', shape: [8], data: new Int32Array(8) });
    tensors.set('extra', { dtype: 'F64', shape: [1], data: new Float64Array(1) });
    const broken = join(dir, 'broken.safetensors');
    await writeSafetensors(broken, tensors, file.metadata);
    const error = await loadCheckpoint(broken, backend).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CheckpointMismatchError);
    expect((error as CheckpointMismatchError).problems).toEqual([
      'missing tensor layers.0.attn.wq (expected [8, 8] F64)',
      'tensor finalNorm has dtype I32, expected F64 or F32',
      'tensor lmHead has shape [11, 4], expected [11, 8]',
      'unexpected tensor extra',
    ]);
    const other = createModelConfig({ ...tinyConfig('nsa'), dModel: 16 });
    const mismatch = await loadCheckpoint(path, backend, other).catch((e: unknown) => e);
    expect((mismatch as Error).message).toMatch(/config.dModel is 8 in the checkpoint, expected 16/);
    await writeFile(join(dir, 'junk'), 'not a checkpoint at all');
    await expect(loadCheckpoint(join(dir, 'junk'), backend)).rejects.toThrow(/header length/);
    expect((await readFile(path)).length).toBeGreaterThan(0);
  });
});
