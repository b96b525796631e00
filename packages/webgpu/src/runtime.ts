// Encoding work: a per-device pipeline cache (WGSL text -> compiled pipeline), temporary
// buffers freed once the GPU is done with them, and row-chunked bindings that keep every
// binding under maxStorageBufferBindingSize.
import { WebGPUError, compilePipeline, guarded, type DeviceContext } from './device.js';
import { Profiler, type FrameQueries } from './profiler.js';
import { PARAM_BYTES, packParams, type Params } from './shaders/common.js';
import { BUFFER_USAGE, createStorageBuffer } from './tensor.js';
import type { Workspace } from './workspace.js';

/** A buffer bound whole, or a byte range of one. */
export interface BufferRange {
  readonly buffer: GPUBuffer;
  readonly offset?: number;
  readonly size?: number;
}

export type BindingSource = GPUBuffer | BufferRange;

/** Token-row alignment of chunk starts: keeps every binding offset a multiple of 256 bytes. */
export const ROW_ALIGN = 256;
/** Most workgroups per grid dimension we use (the WebGPU minimum limit). */
export const MAX_GRID = 65535;

const STORAGE_USAGE = BUFFER_USAGE.STORAGE | BUFFER_USAGE.COPY_SRC | BUFFER_USAGE.COPY_DST;

/** Buffers up to this size are pooled: creating GPU buffers costs far more than a small dispatch. */
const POOL_MAX_BYTES = 64 << 20;

export class Runtime {
  readonly #pipelines = new Map<string, Promise<GPUComputePipeline>>();
  readonly #pool = new Map<string, GPUBuffer[]>();
  readonly #byParams = new Map<string, Promise<GPUComputePipeline>>();
  /** When set (and the device has 'timestamp-query'), every frame's passes are timed on the GPU. */
  profiler: Profiler | undefined;

  constructor(readonly ctx: DeviceContext) {}

  /**
   * Starts (or stops) timing every frame with timestamp queries; false when the device cannot.
   * `perDispatch` puts every dispatch in its own timed pass (per-kernel times, for profiling).
   */
  profile(on: boolean, perDispatch = false): boolean {
    if (!on || !this.ctx.features.timestamps) {
      this.profiler = undefined;
      return false;
    }
    this.profiler ??= new Profiler(this.ctx);
    this.profiler.perDispatch = perDispatch;
    return true;
  }

  /** Compiles once per (name, code); concurrent callers share the promise. */
  pipeline(name: string, code: string): Promise<GPUComputePipeline> {
    const key = `${name}\n${code}`;
    let entry = this.#pipelines.get(key);
    if (!entry) {
      entry = compilePipeline(this.ctx, name, code);
      entry.catch(() => this.#pipelines.delete(key));
      this.#pipelines.set(key, entry);
    }
    return entry;
  }

  /**
   * The pipeline of `shader(params)`, generating the WGSL only the first time these params are
   * seen: repeated calls (decode steps) skip building and hashing the shader text.
   */
  pipelineOf<K extends object>(name: string, params: K, shader: (params: K) => string): Promise<GPUComputePipeline> {
    const key = `${name}\n${JSON.stringify(params)}`;
    let entry = this.#byParams.get(key);
    if (!entry) {
      entry = this.pipeline(name, shader(params));
      entry.catch(() => this.#byParams.delete(key));
      this.#byParams.set(key, entry);
    }
    return entry;
  }

  /** Checks that a buffer bound whole fits in one binding. */
  checkWhole(name: string, bytes: number): void {
    const limit = this.ctx.limits.maxStorageBufferBindingSize;
    if (bytes > limit) {
      throw new WebGPUError(
        'limit',
        `${name} is ${bytes} bytes but this device binds at most ${limit} bytes (maxStorageBufferBindingSize); use fewer tokens or heads per call`,
      );
    }
  }

  /** Token-row chunks [lo, hi) of [0, rows) with lo aligned, each under the binding limit. */
  rowChunks(rows: number, bytesPerRow: number): [number, number][] {
    const limit = this.ctx.limits.maxStorageBufferBindingSize;
    const per = Math.floor(limit / Math.max(1, bytesPerRow) / ROW_ALIGN) * ROW_ALIGN;
    if (per < ROW_ALIGN && rows > per) {
      throw new WebGPUError('limit', `one chunk of ${ROW_ALIGN} token rows (${ROW_ALIGN * bytesPerRow} bytes) exceeds maxStorageBufferBindingSize ${limit}`);
    }
    const chunks: [number, number][] = [];
    const step = Math.max(per, ROW_ALIGN);
    for (let lo = 0; lo < rows; lo += step) chunks.push([lo, Math.min(rows, lo + step)]);
    if (chunks.length === 0) chunks.push([0, 0]);
    return chunks;
  }

  /** Whether [lo, hi) rows of bytesPerRow fit one binding. */
  fits(lo: number, hi: number, bytesPerRow: number): boolean {
    return (hi - lo) * bytesPerRow <= this.ctx.limits.maxStorageBufferBindingSize;
  }

  /** A buffer of at least `bytes` (a power-of-two bucket), reused once the GPU is done with it. */
  acquire(bytes: number, usage: number, label: string): GPUBuffer {
    if (this.ctx.lost) throw this.ctx.lost;
    const size = Math.max(256, 2 ** Math.ceil(Math.log2(Math.max(1, bytes))));
    if (size > POOL_MAX_BYTES) {
      if (usage === STORAGE_USAGE) return createStorageBuffer(this.ctx, bytes, label);
      return this.ctx.device.createBuffer({ label, size: Math.ceil(bytes / 16) * 16, usage });
    }
    const free = this.#pool.get(`${usage}:${size}`);
    return free?.pop() ?? this.ctx.device.createBuffer({ label, size, usage });
  }

  /** Returns buffers to the pool (or destroys those too large to keep). */
  release(buffers: readonly GPUBuffer[]): void {
    for (const buffer of buffers) {
      if (buffer.size > POOL_MAX_BYTES || this.ctx.lost) {
        buffer.destroy();
        continue;
      }
      const key = `${buffer.usage}:${buffer.size}`;
      const free = this.#pool.get(key) ?? [];
      free.push(buffer);
      this.#pool.set(key, free);
    }
  }

  /** Starts an encoding frame; with a workspace its buffers and bind groups persist across calls. */
  frame(label: string, workspace?: Workspace): Frame {
    return new Frame(this, label, workspace);
  }
}

/** Rows [lo, hi) of a row-major buffer with bytesPerRow bytes per token row. */
export function rowRange(buffer: GPUBuffer, bytesPerRow: number, lo: number, hi: number): BufferRange {
  const offset = lo * bytesPerRow;
  const size = Math.max(4, Math.ceil(((hi - lo) * bytesPerRow) / 4) * 4);
  return { buffer, offset, size: Math.min(size, buffer.size - offset) };
}

/**
 * One command encoder with one compute pass; temporaries are released after the GPU finishes.
 * With a workspace, uniforms, uploads and scratch come from its numbered slots (in encoding order)
 * and bind groups from its cache; `signature` then names the exact sequence of dispatches.
 */
export class Frame {
  readonly encoder: GPUCommandEncoder;
  #pass: GPUComputePassEncoder | undefined;
  readonly #temps: GPUBuffer[] = [];
  readonly #queries: FrameQueries | undefined;
  #uniforms = 0;
  #uploads = 0;
  #scratch = 0;
  #signature = '';

  constructor(
    readonly rt: Runtime,
    readonly label: string,
    readonly workspace?: Workspace,
  ) {
    this.encoder = rt.ctx.device.createCommandEncoder({ label });
    this.#queries = rt.profiler?.acquire();
  }

  get signature(): string {
    return this.#signature;
  }

  get pass(): GPUComputePassEncoder {
    return this.#passFor(this.label);
  }

  #passFor(label: string): GPUComputePassEncoder {
    this.#pass ??= this.encoder.beginComputePass({ label: this.label, timestampWrites: this.#queries?.next(label) });
    return this.#pass;
  }

  /** A storage scratch buffer (not zeroed) that lives until this frame's work completes. */
  scratch(bytes: number, label: string): GPUBuffer {
    if (this.workspace) return this.workspace.scratch(this.#scratch++, bytes, label);
    const buffer = this.rt.acquire(bytes, STORAGE_USAGE, `${this.label}: ${label}`);
    this.#temps.push(buffer);
    return buffer;
  }

  /** A read-only storage buffer holding `data`, released with the frame. */
  upload(data: Uint32Array | Int32Array, label: string): GPUBuffer {
    const buffer = this.workspace
      ? this.workspace.upload(this.#uploads++, data.byteLength, label)
      : this.rt.acquire(data.byteLength, BUFFER_USAGE.STORAGE | BUFFER_USAGE.COPY_DST, `${this.label}: ${label}`);
    this.rt.ctx.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    if (!this.workspace) this.#temps.push(buffer);
    return buffer;
  }

  /** Records one dispatch: params uniform at binding 0, then `bindings` at 1.. in order. */
  dispatch(pipeline: GPUComputePipeline, params: Params, bindings: readonly BindingSource[], grid: readonly [number, number?, number?]): void {
    const [x, y = 1, z = 1] = grid;
    if (x === 0 || y === 0 || z === 0) return;
    for (const [name, value] of [['x', x], ['y', y], ['z', z]] as const) {
      if (value > MAX_GRID) throw new WebGPUError('limit', `${this.label}: grid ${name} = ${value} exceeds ${MAX_GRID} workgroups`);
    }
    const device = this.rt.ctx.device;
    const ws = this.workspace;
    const uniform = ws
      ? ws.uniform(this.#uniforms++, PARAM_BYTES, 'params')
      : this.rt.acquire(PARAM_BYTES, BUFFER_USAGE.UNIFORM | BUFFER_USAGE.COPY_DST, `${this.label}: params`);
    device.queue.writeBuffer(uniform, 0, packParams(params));
    if (!ws) this.#temps.push(uniform);
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: uniform, size: PARAM_BYTES } }];
    bindings.forEach((source, i) => {
      const range: BufferRange = 'buffer' in source ? source : { buffer: source };
      entries.push({ binding: i + 1, resource: { buffer: range.buffer, offset: range.offset ?? 0, size: range.size } });
    });
    let group: GPUBindGroup;
    if (ws) {
      const cached = ws.bindGroup(pipeline, entries, this.label);
      group = cached.group;
      this.#signature += `${cached.key}@${x},${y},${z};`;
    } else {
      group = device.createBindGroup({ label: this.label, layout: pipeline.getBindGroupLayout(0), entries });
    }
    if (this.#queries?.profiler.perDispatch) this.endPass();
    const pass = this.#passFor(pipeline.label || this.label);
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(x, y, z);
  }

  /** A 1-D element count as a 2-D grid of workgroups of `wg` threads. */
  static grid1d(count: number, wg: number): [number, number] {
    const groups = Math.max(1, Math.ceil(count / wg));
    const x = Math.min(groups, MAX_GRID);
    return [x, Math.ceil(groups / x)];
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.endPass();
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
    // Copies name no buffer: decode steps copy caller tensors in and fresh outputs out, whose sizes
    // the shape checks already fixed.
    if (this.workspace) this.#signature += `copy ${srcOffset}>${dstOffset}:${bytes};`;
  }

  endPass(): void {
    this.#pass?.end();
    this.#pass = undefined;
  }

  /** Ends the pass, submits, and schedules the temporaries' release. */
  submit(): void {
    this.endPass();
    const device = this.rt.ctx.device;
    this.#queries?.resolve(this.encoder);
    device.queue.submit([this.encoder.finish()]);
    if (this.#queries) this.#queries.profiler.collect(this.#queries, this.label);
    const temps = this.#temps.splice(0);
    if (temps.length === 0) return;
    void device.queue.onSubmittedWorkDone().then(
      () => this.rt.release(temps),
      () => temps.forEach((b) => b.destroy()),
    );
  }

  /** Drops temporaries of a frame that will not be submitted. */
  abandon(): void {
    this.#pass?.end();
    this.#pass = undefined;
    this.rt.release(this.#temps.splice(0));
    if (this.#queries) this.#queries.profiler.collect(Object.assign(this.#queries, { passes: 0 }), this.label);
  }
}

/** Encodes with `build` inside error scopes and submits; errors name `what`. */
export async function run(rt: Runtime, what: string, build: (frame: Frame) => void): Promise<void> {
  await guarded(rt.ctx, what, () => {
    const frame = rt.frame(what);
    try {
      build(frame);
    } catch (error) {
      frame.abandon();
      throw error;
    }
    frame.submit();
  });
}

/**
 * Like `run`, for calls that repeat (decode steps) on a workspace. The first call of each exact
 * dispatch sequence waits for its error scopes as `run` does; a repeat of a sequence that already
 * passed validation does not wait (nothing in it is new), so the call returns right after submit.
 * Should the device still report an error for such a call, the next call on the workspace throws it.
 */
export async function runRepeated(rt: Runtime, workspace: Workspace, what: string, build: (frame: Frame) => void): Promise<void> {
  const ctx = rt.ctx;
  if (ctx.lost) throw ctx.lost;
  if (workspace.failure) {
    const failure = workspace.failure;
    workspace.failure = undefined;
    throw failure;
  }
  const { device } = ctx;
  device.pushErrorScope('internal');
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let signature = '';
  let thrown: { error: unknown } | undefined;
  const frame = rt.frame(what, workspace);
  try {
    build(frame);
    signature = frame.signature;
    frame.submit();
  } catch (error) {
    frame.abandon();
    thrown = { error };
  }
  const scopes = Promise.all([device.popErrorScope(), device.popErrorScope(), device.popErrorScope()]);
  const toError = ([validation, oom, internal]: (GPUError | null)[]): WebGPUError | undefined => {
    if (ctx.lost) return ctx.lost;
    if (oom) return new WebGPUError('out-of-memory', `${what}: GPU out of memory: ${oom.message}`);
    if (validation) return new WebGPUError('validation', `${what}: WebGPU validation error: ${validation.message}`);
    if (internal) return new WebGPUError('internal', `${what}: WebGPU internal error: ${internal.message}`);
    return undefined;
  };
  if (!thrown && workspace.trusted.has(signature)) {
    void scopes.then(
      (errors) => {
        workspace.failure ??= toError(errors);
      },
      (error: unknown) => {
        workspace.failure ??= error instanceof Error ? error : new WebGPUError('internal', `${what}: ${String(error)}`);
      },
    );
    return;
  }
  const error = toError(await scopes);
  if (thrown) throw thrown.error;
  if (error) throw error;
  workspace.trusted.add(signature);
}
