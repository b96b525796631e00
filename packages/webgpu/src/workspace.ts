// Persistent encoding state for calls that repeat with the same shape (decode steps): uniform,
// upload and scratch buffers live in numbered slots that outlive the call, so the bind groups that
// name them can be cached and a repeated step creates no GPU object at all.
//
// Reusing a slot in the next call is safe without waiting: queue.writeBuffer and submits execute
// in queue order, so the next call's writes land after the previous call's dispatches ran.
import type { DeviceContext } from './device.js';
import { BUFFER_USAGE } from './tensor.js';

const SCRATCH_USAGE = BUFFER_USAGE.STORAGE | BUFFER_USAGE.COPY_SRC | BUFFER_USAGE.COPY_DST;
const UPLOAD_USAGE = BUFFER_USAGE.STORAGE | BUFFER_USAGE.COPY_DST;
const UNIFORM_USAGE = BUFFER_USAGE.UNIFORM | BUFFER_USAGE.COPY_DST;
/** Bind groups kept at most; the cache is cleared past this (shapes that keep changing). */
const MAX_BIND_GROUPS = 1024;

export class Workspace {
  readonly #uniforms: GPUBuffer[] = [];
  readonly #uploads: GPUBuffer[] = [];
  readonly #scratch: GPUBuffer[] = [];
  readonly #groups = new Map<string, GPUBindGroup>();
  readonly #ids = new WeakMap<object, number>();
  #nextId = 1;
  /** Frame signatures whose encoding already passed validation once. */
  readonly trusted = new Set<string>();
  /** An error reported by the device for a call that did not wait for it; thrown by the next call. */
  failure: Error | undefined;
  #disposed = false;

  constructor(readonly ctx: DeviceContext) {}

  id(object: object): number {
    let id = this.#ids.get(object);
    if (id === undefined) {
      id = this.#nextId++;
      this.#ids.set(object, id);
    }
    return id;
  }

  uniform(slot: number, bytes: number, label: string): GPUBuffer {
    return this.#slot(this.#uniforms, slot, bytes, UNIFORM_USAGE, label);
  }

  upload(slot: number, bytes: number, label: string): GPUBuffer {
    return this.#slot(this.#uploads, slot, bytes, UPLOAD_USAGE, label);
  }

  scratch(slot: number, bytes: number, label: string): GPUBuffer {
    return this.#slot(this.#scratch, slot, bytes, SCRATCH_USAGE, label);
  }

  /** The cached bind group for these entries of `pipeline`'s group 0, created on first use. */
  bindGroup(pipeline: GPUComputePipeline, entries: readonly GPUBindGroupEntry[], label: string): { group: GPUBindGroup; key: string } {
    let key = `${this.id(pipeline)}`;
    for (const e of entries) {
      const r = e.resource as GPUBufferBinding;
      key += `|${this.id(r.buffer)}:${r.offset ?? 0}:${r.size ?? -1}`;
    }
    let group = this.#groups.get(key);
    if (!group) {
      if (this.#groups.size >= MAX_BIND_GROUPS) this.#groups.clear();
      group = this.ctx.device.createBindGroup({ label, layout: pipeline.getBindGroupLayout(0), entries });
      this.#groups.set(key, group);
    }
    return { group, key };
  }

  #slot(list: GPUBuffer[], slot: number, bytes: number, usage: number, label: string): GPUBuffer {
    if (this.#disposed) throw new Error('workspace used after dispose()');
    const have = list[slot];
    if (have && have.size >= bytes) return have;
    // Grow to the next power of two so a slowly growing call (a longer context) reallocates rarely.
    const size = Math.max(256, 2 ** Math.ceil(Math.log2(Math.max(1, bytes))));
    have?.destroy();
    const buffer = this.ctx.device.createBuffer({ label: `workspace ${label}`, size, usage });
    list[slot] = buffer;
    return buffer;
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const b of [...this.#uniforms, ...this.#uploads, ...this.#scratch]) b?.destroy();
    this.#groups.clear();
  }
}
