// GPU time per call from timestamp queries (the adapter's 'timestamp-query' feature): every
// compute pass of a profiled frame writes a timestamp at its start and end; the frame's GPU time
// is the sum of its passes' durations (copies between passes are not counted).
import type { DeviceContext } from './device.js';
import { BUFFER_USAGE } from './tensor.js';

const QUERY_RESOLVE = 0x200;
/** Passes one frame can time. */
const MAX_PASSES = 64;

export interface GPUTiming {
  readonly label: string;
  /** Sum of the frame's compute-pass durations, milliseconds. */
  readonly ms: number;
  readonly passes: number;
  /** Each pass's duration and the label of its (first) dispatch, in order. */
  readonly parts: readonly { readonly label: string; readonly ms: number }[];
}

export class Profiler {
  readonly #free: { set: GPUQuerySet; resolve: GPUBuffer; read: GPUBuffer }[] = [];
  readonly #pending = new Set<Promise<void>>();
  /** Finished measurements, oldest first; the caller empties it. */
  readonly timings: GPUTiming[] = [];
  /**
   * Every dispatch in its own compute pass, so `parts` times each kernel (profiling only: the
   * extra passes cost a little GPU time of their own).
   */
  perDispatch = false;

  constructor(readonly ctx: DeviceContext) {}

  /** Query slots for one frame. */
  acquire(): FrameQueries {
    const device = this.ctx.device;
    const slot = this.#free.pop() ?? {
      set: device.createQuerySet({ type: 'timestamp', count: 2 * MAX_PASSES }),
      resolve: device.createBuffer({ size: 16 * MAX_PASSES, usage: QUERY_RESOLVE | BUFFER_USAGE.COPY_SRC }),
      read: device.createBuffer({ size: 16 * MAX_PASSES, usage: BUFFER_USAGE.MAP_READ | BUFFER_USAGE.COPY_DST }),
    };
    return new FrameQueries(this, slot);
  }

  /** Reads the frame's timestamps once the GPU is done with it. */
  collect(queries: FrameQueries, label: string): void {
    const { slot, passes, labels } = queries;
    if (passes === 0) {
      this.#free.push(slot);
      return;
    }
    const done = slot.read
      .mapAsync(0x1, 0, 16 * passes)
      .then(() => {
        const t = new BigUint64Array(slot.read.getMappedRange(0, 16 * passes).slice(0));
        slot.read.unmap();
        const parts = labels.slice(0, passes).map((name, p) => ({ label: name, ms: t[2 * p + 1] > t[2 * p] ? Number(t[2 * p + 1] - t[2 * p]) / 1e6 : 0 }));
        this.timings.push({ label, ms: parts.reduce((a, x) => a + x.ms, 0), passes, parts });
        this.#free.push(slot);
      })
      .catch(() => {
        slot.set.destroy();
        slot.resolve.destroy();
        slot.read.destroy();
      });
    this.#pending.add(done);
    void done.finally(() => this.#pending.delete(done));
  }

  /** Waits for every outstanding readback. */
  async flush(): Promise<void> {
    await Promise.all([...this.#pending]);
  }
}

/** The timestamp slots of one frame. */
export class FrameQueries {
  passes = 0;
  /** Label of each timed pass. */
  readonly labels: string[] = [];
  constructor(
    readonly profiler: Profiler,
    readonly slot: { set: GPUQuerySet; resolve: GPUBuffer; read: GPUBuffer },
  ) {}

  /** timestampWrites for the next pass, or undefined once the frame's slots are used up. */
  next(label: string): GPUComputePassTimestampWrites | undefined {
    if (this.passes >= MAX_PASSES) return undefined;
    const i = this.passes++;
    this.labels.push(label);
    return { querySet: this.slot.set, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  /** Records the resolve and the copy to the readable buffer at the end of the frame's encoder. */
  resolve(encoder: GPUCommandEncoder): void {
    if (this.passes === 0) return;
    encoder.resolveQuerySet(this.slot.set, 0, 2 * this.passes, this.slot.resolve, 0);
    encoder.copyBufferToBuffer(this.slot.resolve, 0, this.slot.read, 0, 16 * this.passes);
  }
}
