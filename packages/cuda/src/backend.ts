// CudaBackend: the Backend interface over nsa_cuda.node. Every input is checked with @nsa/core's
// validation before any native call; results stay on the GPU as CudaTensor handles.
import {
  UnsupportedError,
  checkAttention,
  checkAttentionBackward,
  checkNSABackward,
  checkNSADecode,
  checkNSAForward,
  disposeAll,
  encode,
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
  type NSAConfig,
  type NSADecodeArgs,
  type NSADecodeResult,
  type NSAForwardArgs,
  type NSAForwardResult,
  type NSAGradients,
  type NSASaved,
  type Tensor,
} from '@nsa/core';
import { CudaNSACache } from './cache.js';
import { DTYPE_CODE, type DeviceBuffer, type NativeAddon, type NativeNSAConfig, type NativeSeq } from './native.js';
import { buildSeq, trainingSeq, type SeqLayout } from './seq.js';
import { CudaTensor } from './tensor.js';

const NAME = 'cuda';
const DTYPES: readonly FloatDType[] = ['float32', 'float16', 'bfloat16'];

/** What the NSA backward needs from the forward: per-branch outputs and log-sum-exps. */
class NSASavedState implements NSASaved {
  readonly backend = NAME;
  constructor(
    readonly oCmp: CudaTensor,
    readonly oSlc: CudaTensor,
    readonly oWin: CudaTensor,
    readonly lse: CudaTensor,
  ) {}
  dispose(): void {
    disposeAll([this.oCmp, this.oSlc, this.oWin, this.lse]);
  }
}

class AttentionSaved implements NSASaved {
  readonly backend = NAME;
  constructor(readonly lse: CudaTensor) {}
  dispose(): void {
    this.lse.dispose();
  }
}

function buf(t: Tensor): DeviceBuffer {
  return (t as CudaTensor).buffer;
}


export function nativeConfig(config: NSAConfig): NativeNSAConfig {
  return {
    l: config.compressBlock,
    d: config.compressStride,
    ls: config.selectBlock,
    n: config.selectCount,
    initialBlocks: config.initialBlocks,
    localBlocks: config.localBlocks,
    window: config.window,
    HQ: config.heads,
    H: config.kvHeads,
    Dk: config.headDimK,
    Dv: config.headDimV,
    scale: config.scale,
  };
}

export class CudaBackend implements Backend {
  readonly name = NAME;
  readonly dtypes = DTYPES;
  #disposed = false;

  constructor(
    readonly addon: NativeAddon,
    readonly device: string,
  ) {}

  tensor(values: ArrayLike<number>, shape: readonly number[], dtype: DType): CudaTensor {
    this.#live();
    if (dtype === 'float64') throw new UnsupportedError(`backend 'cuda' does not store float64 (use float32, float16 or bfloat16)`);
    const t = new CudaTensor(this.addon, shape, dtype);
    if (values.length !== t.size) {
      t.dispose();
      throw new UnsupportedError(`tensor(): ${values.length} values for shape [${shape.join(', ')}] (${t.size} elements)`);
    }
    t.buffer.upload(encode(values, dtype));
    return t;
  }

  /** An uninitialised device tensor (internal: outputs). */
  empty(shape: readonly number[], dtype: DType): CudaTensor {
    return new CudaTensor(this.addon, shape, dtype);
  }

  /** Uploads a sequence table; the caller frees `table` after queuing its work. */
  seq(layout: SeqLayout): NativeSeq {
    const table = new this.addon.DeviceBuffer(layout.host.byteLength);
    table.upload(layout.host);
    return { table, host: layout.host, S: layout.S, rows: layout.rows, maxKeys: layout.maxKeys };
  }

  async nsaForward(args: NSAForwardArgs): Promise<NSAForwardResult> {
    this.#live();
    const dims = checkNSAForward(args, NAME, DTYPES);
    const { B, T, HQ, H, Dv, n, dtype } = dims;
    const seq = this.seq(trainingSeq(B, T, args.config, dims.varlen));
    const output = this.empty([B, T, HQ, Dv], dtype);
    const blockIndices = this.empty([B, T, H, n], 'int32');
    const saved = new NSASavedState(
      this.empty([B, T, HQ, Dv], dtype),
      this.empty([B, T, HQ, Dv], dtype),
      this.empty([B, T, HQ, Dv], dtype),
      this.empty([B, T, HQ, 3], 'float32'),
    );
    try {
      this.addon.nsaForward({
        dtype: DTYPE_CODE[dtype as keyof typeof DTYPE_CODE],
        cfg: nativeConfig(args.config),
        seq,
        ...mapNSAInputs(args, buf),
        out: output.buffer,
        oCmp: saved.oCmp.buffer,
        oSlc: saved.oSlc.buffer,
        oWin: saved.oWin.buffer,
        lse: saved.lse.buffer,
        blockIn: args.blockIndices ? buf(args.blockIndices) : undefined,
        blockOut: blockIndices.buffer,
      });
      await this.addon.synchronize();
    } catch (error) {
      disposeAll([output, blockIndices, saved]);
      throw error;
    } finally {
      seq.table.free();
    }
    return {
      output,
      blockIndices,
      saved,
      dispose: () => disposeAll([output, blockIndices, saved]),
    };
  }

  async nsaBackward(args: NSABackwardArgs): Promise<NSAGradients> {
    this.#live();
    const dims = checkNSABackward(args, NAME, DTYPES);
    const saved = args.forward.saved as NSASavedState;
    if (!(saved instanceof NSASavedState)) throw new UnsupportedError('nsaBackward: forward.saved is not from this backend');
    const { B, T, HQ, dtype } = dims;
    const seq = this.seq(trainingSeq(B, T, args.config, dims.varlen));
    const like = (t: Tensor) => this.empty(t.shape, dtype);
    const grads = {
      dq: like(args.q),
      dkCmp: like(args.kCmp),
      dvCmp: like(args.vCmp),
      dkSlc: like(args.kSlc),
      dvSlc: like(args.vSlc),
      dkWin: like(args.kWin),
      dvWin: like(args.vWin),
      dGates: this.empty([B, T, HQ, 3], dtype),
    };
    try {
      this.addon.nsaBackward({
        dtype: DTYPE_CODE[dtype as keyof typeof DTYPE_CODE],
        cfg: nativeConfig(args.config),
        seq,
        ...mapNSAInputs(args, buf),
        out: buf(args.forward.output),
        oCmp: saved.oCmp.buffer,
        oSlc: saved.oSlc.buffer,
        oWin: saved.oWin.buffer,
        lse: saved.lse.buffer,
        blockOut: buf(args.forward.blockIndices),
        blocks: buf(args.forward.blockIndices),
        dOut: buf(args.dOutput),
        dq: grads.dq.buffer,
        dkCmp: grads.dkCmp.buffer,
        dvCmp: grads.dvCmp.buffer,
        dkSlc: grads.dkSlc.buffer,
        dvSlc: grads.dvSlc.buffer,
        dkWin: grads.dkWin.buffer,
        dvWin: grads.dvWin.buffer,
        dGates: grads.dGates.buffer,
      });
      await this.addon.synchronize();
    } catch (error) {
      disposeAll(grads);
      throw error;
    } finally {
      seq.table.free();
    }
    return { ...grads, dispose: () => disposeAll(grads) };
  }

  createNSACache(options: NSACacheOptions): NSACache {
    this.#live();
    return new CudaNSACache(this, options);
  }

  async nsaDecode(args: NSADecodeArgs): Promise<NSADecodeResult> {
    this.#live();
    const dims = checkNSADecode(args, NAME);
    const cache = args.cache as CudaNSACache;
    if (!(cache instanceof CudaNSACache)) throw new UnsupportedError('nsaDecode: cache is not from this backend');
    const { B, TQ, Tk, HQ, H, Dv, n, dtype } = dims;
    const range = Array.from({ length: B }, (_, b) => b);
    const seq = this.seq(
      buildSeq(
        {
          queries: range.map(() => TQ),
          keyBase: range.map((b) => b * cache.capacity),
          cmpBase: range.map((b) => b * cache.compressedCapacity),
          pos0: range.map(() => Tk - TQ),
        },
        cache.config.selectBlock,
      ),
    );
    const output = this.empty([B, TQ, HQ, Dv], dtype);
    const blockIndices = this.empty([B, TQ, H, n], 'int32');
    const oCmp = this.empty([B, TQ, HQ, Dv], dtype);
    try {
      this.addon.nsaForward({
        dtype: DTYPE_CODE[dtype as keyof typeof DTYPE_CODE],
        cfg: nativeConfig(cache.config),
        seq,
        q: buf(args.q),
        ...cache.buffers(),
        gates: buf(args.gates),
        out: output.buffer,
        oCmp: oCmp.buffer,
        blockIn: args.blockIndices ? buf(args.blockIndices) : undefined,
        blockOut: blockIndices.buffer,
      });
      await this.addon.synchronize();
    } catch (error) {
      disposeAll([output, blockIndices]);
      throw error;
    } finally {
      seq.table.free();
      oCmp.dispose();
    }
    return { output, blockIndices, dispose: () => disposeAll([output, blockIndices]) };
  }

  async attentionForward(args: AttentionArgs): Promise<AttentionForwardResult> {
    this.#live();
    const dims = checkAttention(args, NAME, DTYPES);
    const seq = this.seq(attentionSeq(dims));
    const output = this.empty([dims.B, dims.TQ, dims.HQ, dims.Dv], dims.dtype);
    const saved = new AttentionSaved(this.empty([dims.B, dims.TQ, dims.HQ], 'float32'));
    try {
      this.addon.attentionForward({
        dtype: DTYPE_CODE[dims.dtype as keyof typeof DTYPE_CODE],
        seq,
        HQ: dims.HQ,
        H: dims.H,
        Dk: dims.Dk,
        Dv: dims.Dv,
        scale: dims.scale,
        q: buf(args.q),
        k: buf(args.k),
        v: buf(args.v),
        out: output.buffer,
        lse: saved.lse.buffer,
      });
      await this.addon.synchronize();
    } catch (error) {
      disposeAll([output, saved]);
      throw error;
    } finally {
      seq.table.free();
    }
    return { output, saved, dispose: () => disposeAll([output, saved]) };
  }

  async attentionBackward(args: AttentionBackwardArgs): Promise<AttentionGradients> {
    this.#live();
    const dims = checkAttentionBackward(args, NAME, DTYPES);
    const saved = args.forward.saved as AttentionSaved;
    if (!(saved instanceof AttentionSaved)) throw new UnsupportedError('attentionBackward: forward.saved is not from this backend');
    const seq = this.seq(attentionSeq(dims));
    const grads = {
      dq: this.empty(args.q.shape, dims.dtype),
      dk: this.empty(args.k.shape, dims.dtype),
      dv: this.empty(args.v.shape, dims.dtype),
    };
    try {
      // Keys before the first query (TQ < Tk) are seen by every query: the key-centric kernel
      // covers them too, so every dk/dv row is written.
      this.addon.attentionBackward({
        dtype: DTYPE_CODE[dims.dtype as keyof typeof DTYPE_CODE],
        seq,
        HQ: dims.HQ,
        H: dims.H,
        Dk: dims.Dk,
        Dv: dims.Dv,
        scale: dims.scale,
        q: buf(args.q),
        k: buf(args.k),
        v: buf(args.v),
        out: buf(args.forward.output),
        lse: saved.lse.buffer,
        dOut: buf(args.dOutput),
        dq: grads.dq.buffer,
        dk: grads.dk.buffer,
        dv: grads.dv.buffer,
      });
      await this.addon.synchronize();
    } catch (error) {
      disposeAll(grads);
      throw error;
    } finally {
      seq.table.free();
    }
    return { ...grads, dispose: () => disposeAll(grads) };
  }

  async synchronize(): Promise<void> {
    this.#live();
    await this.addon.synchronize();
  }

  dispose(): void {
    this.#disposed = true;
  }

  #live(): void {
    if (this.#disposed) throw new UnsupportedError('the cuda backend was disposed');
  }
}

function attentionSeq(dims: { B: number; TQ: number; Tk: number; varlen?: { tokenOffsets: Int32Array } }): SeqLayout {
  if (dims.varlen) {
    const off = dims.varlen.tokenOffsets;
    const S = off.length - 1;
    const queries: number[] = [];
    const base: number[] = [];
    for (let s = 0; s < S; s++) {
      queries.push(off[s + 1] - off[s]);
      base.push(off[s]);
    }
    return buildSeq({ queries, keyBase: base, cmpBase: base.map(() => 0), pos0: base.map(() => 0) }, 1 << 30);
  }
  const range = Array.from({ length: dims.B }, (_, b) => b);
  return buildSeq(
    {
      queries: range.map(() => dims.TQ),
      keyBase: range.map((b) => b * dims.Tk),
      cmpBase: range.map(() => 0),
      pos0: range.map(() => dims.Tk - dims.TQ),
    },
    1 << 30,
  );
}
