// `WebGPUBackend`: the Backend interface of @nsa/core on one WebGPU device. Inputs are checked
// with core's validators before anything is dispatched.
import {
  NSAShapeError,
  UnsupportedError,
  checkAttention,
  checkAttentionBackward,
  checkNSABackward,
  checkNSACacheOptions,
  checkNSADecode,
  checkNSAForward,
  mapNSAInputs,
  type AttentionArgs,
  type AttentionBackwardArgs,
  type AttentionForwardResult,
  type AttentionGradients,
  type Backend,
  type DType,
  type FloatDType,
  type NSABackwardArgs,
  type NSACache,
  type NSACacheOptions,
  type NSADecodeArgs,
  type NSADecodeResult,
  type NSAForwardArgs,
  type NSAForwardResult,
  type NSAGradients,
  type Tensor,
} from '@nsa/core';
import { WebGPUNSACache } from './decode.js';
import { prepareDecodeStep } from './decode-step.js';
import { WebGPUAttentionSaved, attentionGeometry, attentionSequences, encodeAttentionBackward, encodeAttentionForward } from './dense-attention.js';
import { acquireDevice, type DeviceContext, type DeviceOptions } from './device.js';
import { encodeNSABackward } from './nsa-backward.js';
import { WebGPUNSASaved, encodeNSAForward, forwardSequences, geometryOf, prepareNSAForward } from './nsa-forward.js';
import { Runtime, runRepeated } from './runtime.js';
import type { ElementType } from './shaders/common.js';
import { BACKEND_NAME, WebGPUTensor, gpuTensor, paddedBytes } from './tensor.js';

function elementType(dtype: FloatDType): ElementType {
  return dtype === 'float16' ? 'f16' : 'f32';
}

function buf(t: Tensor): GPUBuffer {
  return gpuTensor(t).buffer;
}

export class WebGPUBackend implements Backend {
  readonly name = BACKEND_NAME;
  readonly device: string;
  readonly dtypes: readonly FloatDType[];
  readonly rt: Runtime;

  constructor(readonly ctx: DeviceContext) {
    this.device = ctx.description;
    this.dtypes = ctx.features.f16 ? ['float32', 'float16'] : ['float32'];
    this.rt = new Runtime(ctx);
  }

  tensor(values: ArrayLike<number>, shape: readonly number[], dtype: DType): Tensor {
    if (dtype !== 'int32' && !(this.dtypes as readonly string[]).includes(dtype)) {
      throw new UnsupportedError(`backend 'webgpu' on ${this.device} does not store ${dtype} (supported: ${this.dtypes.join(', ')}, int32)`);
    }
    return WebGPUTensor.fromValues(this.ctx, values, shape, dtype);
  }

  #empty(shape: readonly number[], dtype: DType, label: string): WebGPUTensor {
    return WebGPUTensor.empty(this.ctx, shape, dtype, label);
  }

  async nsaForward(args: NSAForwardArgs): Promise<NSAForwardResult> {
    const dims = checkNSAForward(args, BACKEND_NAME, this.dtypes);
    const { B, T, HQ, H, Dv, n, dtype } = dims;
    const geo = geometryOf(args.config, dims, B * T, elementType(dtype));
    const output = this.#empty([B, T, HQ, Dv], dtype, 'nsa output');
    const blockIndices = this.#empty([B, T, H, n], 'int32', 'blockIndices');
    try {
      const saved = await encodeNSAForward(
        this.rt,
        geo,
        forwardSequences(dims),
        {
          ...mapNSAInputs(args, buf),
          given: args.blockIndices ? buf(args.blockIndices) : undefined,
          blocks: blockIndices.buffer,
          out: output.buffer,
        },
        'nsaForward',
      );
      return {
        output,
        blockIndices,
        saved,
        dispose() {
          output.dispose();
          blockIndices.dispose();
          saved.dispose();
        },
      };
    } catch (error) {
      output.dispose();
      blockIndices.dispose();
      throw error;
    }
  }

  async nsaBackward(args: NSABackwardArgs): Promise<NSAGradients> {
    const dims = checkNSABackward(args, BACKEND_NAME, this.dtypes);
    const saved = args.forward.saved;
    if (!(saved instanceof WebGPUNSASaved) || saved.disposed) {
      throw new NSAShapeError('forward.saved is not a live webgpu forward result (was it disposed?)');
    }
    const { B, T, C, HQ, H, Dk, Dv, dtype } = dims;
    const geo = geometryOf(args.config, dims, B * T, elementType(dtype));
    const made: WebGPUTensor[] = [];
    const grad = (shape: number[], name: string) => {
      const t = this.#empty(shape, dtype, name);
      made.push(t);
      return t;
    };
    try {
      const dq = grad([B, T, HQ, Dk], 'dq');
      const dkCmp = grad([B, C, H, Dk], 'dkCmp');
      const dvCmp = grad([B, C, H, Dv], 'dvCmp');
      const dkSlc = grad([B, T, H, Dk], 'dkSlc');
      const dvSlc = grad([B, T, H, Dv], 'dvSlc');
      const dkWin = grad([B, T, H, Dk], 'dkWin');
      const dvWin = grad([B, T, H, Dv], 'dvWin');
      const dGates = grad([B, T, HQ, 3], 'dGates');
      await encodeNSABackward(
        this.rt,
        geo,
        forwardSequences(dims),
        {
          ...mapNSAInputs(args, buf),
          blocks: buf(args.forward.blockIndices),
          dOut: buf(args.dOutput),
        },
        saved,
        {
          dq: dq.buffer,
          dkCmp: dkCmp.buffer,
          dvCmp: dvCmp.buffer,
          dkSlc: dkSlc.buffer,
          dvSlc: dvSlc.buffer,
          dkWin: dkWin.buffer,
          dvWin: dvWin.buffer,
          dGates: dGates.buffer,
        },
        { q: dq.size, kCmp: dkCmp.size, vCmp: dvCmp.size, k: dkSlc.size, v: dvSlc.size },
        'nsaBackward',
      );
      return {
        dq,
        dkCmp,
        dvCmp,
        dkSlc,
        dvSlc,
        dkWin,
        dvWin,
        dGates,
        dispose() {
          made.forEach((t) => t.dispose());
        },
      };
    } catch (error) {
      made.forEach((t) => t.dispose());
      throw error;
    }
  }

  createNSACache(options: NSACacheOptions): NSACache {
    return new WebGPUNSACache(this.ctx, options, checkNSACacheOptions(options, BACKEND_NAME, this.dtypes));
  }

  async nsaDecode(args: NSADecodeArgs): Promise<NSADecodeResult> {
    const dims = checkNSADecode(args, BACKEND_NAME);
    const cache = args.cache;
    if (!(cache instanceof WebGPUNSACache) || cache.disposed) throw new NSAShapeError('cache is not a live webgpu NSA cache');
    const { B, TQ, HQ, H, Dk, Dv, n, dtype } = dims;
    const geo = geometryOf(cache.config, dims, B * TQ, elementType(dtype));
    const given = args.blockIndices !== undefined;
    const encode = (await prepareDecodeStep(this.rt, geo, cache, TQ, given)) ?? (await prepareNSAForward(this.rt, geo, cache.sequences(TQ), given, true));
    const output = this.#empty([B, TQ, HQ, Dv], dtype, 'decode output');
    const blockIndices = this.#empty([B, TQ, H, n], 'int32', 'decode blockIndices');
    const es = dtype === 'float16' ? 2 : 4;
    const rows = B * TQ * HQ;
    try {
      // Inputs are copied into the cache's workspace and results copied out, so every buffer the
      // kernels bind belongs to the workspace and a repeated step reuses its bind groups.
      await runRepeated(this.rt, cache.workspace, 'nsaDecode', (frame) => {
        const stage = (src: GPUBuffer | undefined, bytes: number, label: string) => {
          const dst = frame.scratch(paddedBytes(bytes), label);
          if (src) frame.copy(src, 0, dst, 0, paddedBytes(bytes));
          return dst;
        };
        const q = stage(buf(args.q), rows * Dk * es, 'q');
        const gates = stage(buf(args.gates), rows * 3 * es, 'gates');
        const blocks = stage(args.blockIndices ? buf(args.blockIndices) : undefined, B * TQ * H * n * 4, 'blocks');
        const out = stage(undefined, rows * Dv * es, 'output');
        const outputs = [0, 1, 2].map((b) => frame.scratch(rows * Dv * 4, `branch ${b} output`));
        const lse = [0, 1, 2].map((b) => frame.scratch(rows * 4, `branch ${b} lse`));
        encode(frame, { q, ...cache.compressed, ...cache.raw, gates, blocks, out }, outputs, lse);
        frame.copy(out, 0, output.buffer, 0, paddedBytes(rows * Dv * es));
        frame.copy(blocks, 0, blockIndices.buffer, 0, B * TQ * H * n * 4);
      });
    } catch (error) {
      output.dispose();
      blockIndices.dispose();
      throw error;
    }
    return {
      output,
      blockIndices,
      dispose() {
        output.dispose();
        blockIndices.dispose();
      },
    };
  }

  async attentionForward(args: AttentionArgs): Promise<AttentionForwardResult> {
    const dims = checkAttention(args, BACKEND_NAME, this.dtypes);
    const output = this.#empty([dims.B, dims.TQ, dims.HQ, dims.Dv], dims.dtype, 'attention output');
    try {
      const saved = await encodeAttentionForward(this.rt, attentionGeometry(dims, elementType(dims.dtype)), attentionSequences(dims), {
        q: buf(args.q),
        k: buf(args.k),
        v: buf(args.v),
        out: output.buffer,
      });
      return {
        output,
        saved,
        dispose() {
          output.dispose();
          saved.dispose();
        },
      };
    } catch (error) {
      output.dispose();
      throw error;
    }
  }

  async attentionBackward(args: AttentionBackwardArgs): Promise<AttentionGradients> {
    const dims = checkAttentionBackward(args, BACKEND_NAME, this.dtypes);
    const saved = args.forward.saved;
    if (!(saved instanceof WebGPUAttentionSaved)) throw new NSAShapeError('forward.saved is not a webgpu attention result');
    const made = [
      this.#empty(args.q.shape, dims.dtype, 'dq'),
      this.#empty(args.k.shape, dims.dtype, 'dk'),
      this.#empty(args.v.shape, dims.dtype, 'dv'),
    ];
    const [dq, dk, dv] = made;
    try {
      await encodeAttentionBackward(
        this.rt,
        attentionGeometry(dims, elementType(dims.dtype)),
        attentionSequences(dims),
        { q: buf(args.q), k: buf(args.k), v: buf(args.v), dOut: buf(args.dOutput) },
        saved,
        { dq: dq.buffer, dk: dk.buffer, dv: dv.buffer },
        { q: dq.size, k: dk.size, v: dv.size },
      );
    } catch (error) {
      made.forEach((t) => t.dispose());
      throw error;
    }
    return {
      dq,
      dk,
      dv,
      dispose() {
        made.forEach((t) => t.dispose());
      },
    };
  }

  async synchronize(): Promise<void> {
    if (this.ctx.lost) throw this.ctx.lost;
    await this.ctx.device.queue.onSubmittedWorkDone();
    if (this.ctx.lost) throw this.ctx.lost;
  }

  dispose(): void {
    this.ctx.device.destroy();
  }
}

/** Creates a backend on the adapter `gpu` offers. */
export async function createWebGPUBackendFrom(gpu: GPU | undefined, options?: DeviceOptions): Promise<WebGPUBackend> {
  return new WebGPUBackend(await acquireDevice(gpu, options));
}
