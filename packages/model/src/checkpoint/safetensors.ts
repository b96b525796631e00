import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { NSAError } from '@nsa/core';

/** The safetensors dtypes this project reads and writes. */
export type SafetensorsDType = 'F64' | 'F32' | 'I32';

export interface NamedTensor {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly data: Float64Array | Float32Array | Int32Array;
}

export interface SafetensorsFile {
  readonly tensors: Map<string, NamedTensor>;
  /** The header's `__metadata__` (string to string). */
  readonly metadata: Record<string, string>;
}

const BYTES: Record<SafetensorsDType, number> = { F64: 8, F32: 4, I32: 4 };

export class SafetensorsError extends NSAError {
  constructor(message: string) {
    super('NSA_SAFETENSORS', message);
  }
}

/** Serialises tensors and metadata to the safetensors layout (8-byte header length, JSON header, data). */
export function encodeSafetensors(tensors: ReadonlyMap<string, NamedTensor>, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (size !== t.data.length) throw new SafetensorsError(`${name}: ${t.data.length} values for shape [${t.shape.join(', ')}]`);
    const bytes = size * BYTES[t.dtype];
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // Pad so the data starts 8-byte aligned (the format allows trailing spaces in the header).
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const t of tensors.values()) {
    const typed = t.dtype === 'F64' ? Float64Array.from(t.data) : t.dtype === 'F32' ? Float32Array.from(t.data) : Int32Array.from(t.data);
    // Typed arrays are little-endian on every platform Node supports.
    out.set(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength), at);
    at += typed.byteLength;
  }
  return out;
}

/** Parses a safetensors buffer, checking the header against the data. */
export function decodeSafetensors(bytes: Uint8Array, source = 'buffer'): SafetensorsFile {
  if (bytes.length < 8) throw new SafetensorsError(`${source}: too short for a safetensors file (${bytes.length} bytes)`);
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  if (headerLength > bytes.length - 8) throw new SafetensorsError(`${source}: header length ${headerLength} exceeds the file`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + headerLength)).toString('utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new SafetensorsError(`${source}: header is not valid JSON (${(error as Error).message})`);
  }
  const dataStart = 8 + headerLength;
  const tensors = new Map<string, NamedTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: offsets } = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const integers = (v: unknown, n?: number) =>
      Array.isArray(v) && (n === undefined || v.length === n) && v.every((x) => Number.isInteger(x) && x >= 0);
    if (!integers(shape) || !integers(offsets, 2)) {
      throw new SafetensorsError(`${source}: tensor ${name} has a malformed shape or data_offsets in the header`);
    }
    if (!(dtype in BYTES)) throw new SafetensorsError(`${source}: tensor ${name} has dtype ${dtype} (supported: F64, F32, I32)`);
    const d = dtype as SafetensorsDType;
    const size = shape.reduce((a, b) => a * b, 1);
    const [begin, end] = offsets;
    if (end - begin !== size * BYTES[d] || dataStart + end > bytes.length) {
      throw new SafetensorsError(`${source}: tensor ${name} [${shape.join(', ')}] ${d} has data_offsets [${begin}, ${end}] that do not fit`);
    }
    const slice = bytes.slice(dataStart + begin, dataStart + end);
    const data = d === 'F64' ? new Float64Array(slice.buffer) : d === 'F32' ? new Float32Array(slice.buffer) : new Int32Array(slice.buffer);
    tensors.set(name, { dtype: d, shape, data });
  }
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
  return { tensors, metadata };
}

/**
 * Writes atomically: the bytes go to a temporary file in the same directory, which is flushed to
 * disk and then renamed over `path`, so a crash leaves either the old file or the new one.
 */
export async function writeSafetensors(path: string, tensors: ReadonlyMap<string, NamedTensor>, metadata: Record<string, string> = {}): Promise<void> {
  const bytes = encodeSafetensors(tensors, metadata);
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const handle = await open(temporary, 'w');
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  return decodeSafetensors(new Uint8Array(await readFile(path)), path);
}
