// Adapter and device acquisition, the limits we ask for, and the translation of every WebGPU
// failure mode (no adapter, lost device, validation, out of memory, shader compilation) into a
// precise JavaScript error.
import { NSAError } from '@nsa/core';

/** A WebGPU failure: `kind` says which (validation, out-of-memory, device-lost, internal). */
export class WebGPUError extends NSAError {
  constructor(
    readonly kind: 'validation' | 'out-of-memory' | 'device-lost' | 'internal' | 'no-adapter' | 'limit',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`NSA_WEBGPU_${kind.toUpperCase().replace(/-/g, '_')}`, message, options);
  }
}

/** A WGSL module failed to compile; `shader` names it and `messages` holds the compiler's lines. */
export class ShaderCompilationError extends NSAError {
  constructor(
    readonly shader: string,
    readonly messages: readonly string[],
  ) {
    super('NSA_WEBGPU_SHADER', `WGSL shader '${shader}' failed to compile:\n${messages.join('\n')}`);
  }
}

/** Optional features the kernels use when present. */
export interface DeviceFeatures {
  readonly f16: boolean;
  readonly subgroups: boolean;
  /** 'timestamp-query': GPU time per call can be measured (Runtime.profiler). */
  readonly timestamps: boolean;
  /** Smallest subgroup size the adapter reports (0 when unknown). */
  readonly subgroupMinSize: number;
  /** Largest subgroup size the adapter reports (0 or unset when unknown). */
  readonly subgroupMaxSize?: number;
  /**
   * 'chromium-experimental-subgroup-matrix' with an f16 16x16x16 -> f32 configuration, shader-f16 and
   * subgroups of exactly 32 invocations (Dawn offers it with allow_unsafe_apis, e.g. on NVIDIA Vulkan).
   */
  readonly subgroupMatrix: boolean;
}

export interface DeviceOptions {
  /** Use shader-f16 if the adapter has it (default true). */
  readonly f16?: boolean;
  /** Use subgroups if the adapter has it (default true). */
  readonly subgroups?: boolean;
  readonly powerPreference?: GPUPowerPreference;
  /** Use the register-tiled forward kernels (default true); false keeps the classic ones. */
  readonly tiledForward?: boolean;
  /** Pretend bindings may hold at most this many bytes (tests of the tiling path). */
  readonly maxBindingBytes?: number;
  /**
   * Use subgroup matrices for the float16 forward of the compressed and window branches where the
   * device has them (default true; env NSA_WEBGPU_MATRIX=0 turns it off).
   */
  readonly matrixForward?: boolean;
}

/** A device plus what we learned about it. */
export interface DeviceContext {
  readonly device: GPUDevice;
  readonly features: DeviceFeatures;
  readonly limits: {
    readonly maxStorageBufferBindingSize: number;
    readonly maxBufferSize: number;
    readonly maxComputeWorkgroupStorageSize: number;
    readonly maxComputeInvocationsPerWorkgroup: number;
    readonly maxComputeWorkgroupsPerDimension: number;
    readonly minStorageBufferOffsetAlignment: number;
    readonly maxStorageBuffersPerShaderStage: number;
  };
  /** A CPU implementation (SwiftShader, llvmpipe): its shader compiler is slow on large unrolled tiles. */
  readonly software: boolean;
  /** Whether forward passes use the register-tiled kernels. */
  tiledForward: boolean;
  /** Whether selection's top-n rounds reduce through subgroups (when the adapter has them). */
  subgroupTopN: boolean;
  /** Whether decode steps merge the three branches' key splits and the gates in one pass. */
  mergedDecode: boolean;
  /** Whether one-query decode steps run the four-dispatch kernels of decode-step.ts (else the forward's passes). */
  singleQueryDecode: boolean;
  /**
   * Whether those kernels make the block choice inside the selected attend's workgroups (one dispatch
   * fewer; unmeasured, so off unless env NSA_WEBGPU_DECODE_FUSED=1).
   */
  decodeFused: boolean;
  /**
   * Their block choice: 'wide' splits each KV head's candidates over several workgroups and the
   * selected attend takes the final top-n (used for at most 16 sequences x KV heads); 'single' one
   * workgroup per KV head (env NSA_WEBGPU_DECODE_CHOICE=single).
   */
  decodeChoice: 'wide' | 'single';
  /**
   * With the wide block choice: dispatch 1 reads the compressed keys only (scores, stats, candidate
   * sums, probabilities) and the compressed values' P·V runs in extra workgroups of the block
   * choice's dispatch, off the critical path. Off until timed on the H100 (env NSA_WEBGPU_DECODE_SPLIT=1).
   */
  decodeSplit: boolean;
  /**
   * Experiments (bench/profile.mjs --decodeVariants): keys per chunk, block-choice workgroup size and
   * candidates per wide block-choice workgroup of those kernels.
   */
  decodeTiles?: {
    KC?: number;
    selectWG?: number;
    choiceCands?: number;
    /**
     * Dispatch 1 on wide chunks (shaders/decode-wide.ts): keys per chunk (at most), workgroup size,
     * register tiles, values through the keys' tile even where both tiles fit.
     */
    cw?: { KC?: number; WG?: number; rh?: number; rk?: number; oh?: number; oc?: number; shared?: boolean };
  };
  /** Query tokens per workgroup of the fused selection pass (training calls), where it fits; 1 is the previous kernel. */
  selectionTokens: number;
  /**
   * Wide tiles of the fused selection pass (shaders/selection.ts, SelectionKernel.wide) at G = 16,
   * where they fit: blocks per invocation (JB, default 4), key columns per stage (DS, vec4, default 8),
   * invocations per token and blocks (HG, default 2: 8 heads each), ahead (next stage's keys into registers). false:
   * the previous register tile; env NSA_WEBGPU_SELECTION_WIDE=0 (or a JSON object of these settings).
   */
  selectionWide: false | { JB?: number; DS?: number; HG?: number; ahead?: boolean };
  /** Whether float16 training forwards run the compressed and window branches on subgroup matrices (when the device has them). */
  matrixForward: boolean;
  /** Where the matrix forward keeps O between key tiles (see MatrixForwardKernel.accumulate); env NSA_WEBGPU_MATRIX_ACCUMULATE. */
  matrixAccumulate: 'matrix' | 'rows';
  /**
   * Code generation of the matrix kernels (default all on): prefetch and interior of the matrix forward
   * (MatrixForwardKernel), selection the matrix selection's prefetch (SelectionKernel.matrixPrefetch),
   * selected the selected branch on matrices (shaders/subgroup-matrix-selected.ts; false: the tiled
   * kernel, also env NSA_WEBGPU_MATRIX_SELECTED=0). env NSA_WEBGPU_MATRIX_KERNEL=previous turns all off.
   */
  matrixKernel?: { prefetch?: boolean; interior?: boolean; selection?: boolean; selected?: boolean };
  /** How the matrix forward stages and reads key/value tiles (see MatrixForwardKernel.rightMajor); env NSA_WEBGPU_MATRIX_RIGHT=row. */
  matrixRightMajor: 'column' | 'row';
  /** Whether the fused selection pass of float16 training calls takes its scores from subgroup matrices; env NSA_WEBGPU_MATRIX_SELECTION=0 turns it off. */
  matrixSelection: boolean;
  /** Tests only: run the subgroup-matrix kernels with plain-WGSL stand-ins for the matrix builtins (adapters without the feature). */
  matrixEmulation: boolean;
  /**
   * Tile experiments (bench/profile.mjs): rows per invocation (RM), keys per tile (KT), invocations per
   * row group (NKG) and rows per workgroup (rows) of a branch's tiled forward; any override also turns
   * off the 64-row tiles of the compressed and window branches (tiling.ts, WIDE_TILES).
   */
  tileOverride?: Partial<Record<'window' | 'causal' | 'compressed' | 'selected', { RM?: number; KT?: number; NKG?: number; rows?: number }>>;
  /**
   * Code generation of the tiled forward: batchLoads false (default on) gives the previous tile loads
   * (one global load per loop iteration; selection's key chunks too), vecP false (default on) the scalar
   * P of P x V; prefetch loads the next K tile and the current V tile into registers while the current
   * tile is multiplied (default on for the dense causal forward only, where it was faster; tiling.ts).
   */
  tiledKernel?: { batchLoads?: boolean; vecP?: boolean; prefetch?: boolean };
  /** e.g. "NVIDIA H100 80GB HBM3 (vulkan)". */
  readonly description: string;
  /** Set once the device is lost; every later call throws it. */
  lost: WebGPUError | undefined;
}

const WANTED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
] as const;

/** Requests an adapter and a device with the adapter's own limits (not the defaults). */
export async function acquireDevice(gpu: GPU | undefined, options: DeviceOptions = {}): Promise<DeviceContext> {
  if (!gpu) throw new WebGPUError('no-adapter', 'WebGPU is not available here (no GPU object: navigator.gpu is undefined)');
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference ?? 'high-performance' });
  } catch (error) {
    throw new WebGPUError('no-adapter', `requestAdapter failed: ${messageOf(error)}`, { cause: error });
  }
  if (!adapter) throw new WebGPUError('no-adapter', 'no WebGPU adapter: requestAdapter() returned null (no usable GPU or driver)');
  const f16 = (options.f16 ?? true) && adapter.features.has('shader-f16');
  const subgroups = (options.subgroups ?? true) && adapter.features.has('subgroups');
  const requiredFeatures: GPUFeatureName[] = [];
  if (f16) requiredFeatures.push('shader-f16');
  if (subgroups) requiredFeatures.push('subgroups' as GPUFeatureName);
  const timestamps = adapter.features.has('timestamp-query');
  if (timestamps) requiredFeatures.push('timestamp-query');
  const subgroupMatrix = f16 && subgroups && hasMatrixConfig(adapter);
  if (subgroupMatrix) requiredFeatures.push(SUBGROUP_MATRIX as GPUFeatureName);
  const requiredLimits: Record<string, number> = {};
  for (const name of WANTED_LIMITS) requiredLimits[name] = adapter.limits[name];
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  } catch (error) {
    throw new WebGPUError('no-adapter', `requestDevice failed: ${messageOf(error)}`, { cause: error });
  }
  const info = adapter.info;
  const name = [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ') || 'unknown adapter';
  const lim = device.limits;
  const subgroupMinSize = Number((info as { subgroupMinSize?: number } | undefined)?.subgroupMinSize ?? 0);
  const subgroupMaxSize = Number((info as { subgroupMaxSize?: number } | undefined)?.subgroupMaxSize ?? 0);
  const bindingCap = options.maxBindingBytes ?? Infinity;
  const ctx: DeviceContext = {
    device,
    features: { f16, subgroups, timestamps, subgroupMinSize, subgroupMaxSize, subgroupMatrix },
    tiledForward: options.tiledForward ?? true,
    matrixForward: options.matrixForward ?? envValue('NSA_WEBGPU_MATRIX') !== '0',
    matrixEmulation: false,
    matrixAccumulate: envValue('NSA_WEBGPU_MATRIX_ACCUMULATE') === 'rows' ? 'rows' : 'matrix',
    matrixRightMajor: envValue('NSA_WEBGPU_MATRIX_RIGHT') === 'row' ? 'row' : 'column',
    matrixSelection: envValue('NSA_WEBGPU_MATRIX_SELECTION') !== '0',
    matrixKernel:
      envValue('NSA_WEBGPU_MATRIX_KERNEL') === 'previous'
        ? { prefetch: false, interior: false, selection: false, selected: false }
        : envValue('NSA_WEBGPU_MATRIX_SELECTED') === '0'
          ? { selected: false }
          : undefined,
    subgroupTopN: true,
    mergedDecode: true,
    singleQueryDecode: true,
    decodeFused: envValue('NSA_WEBGPU_DECODE_FUSED') === '1',
    decodeChoice: envValue('NSA_WEBGPU_DECODE_CHOICE') === 'single' ? 'single' : 'wide',
    decodeSplit: envValue('NSA_WEBGPU_DECODE_SPLIT') === '1',
    selectionTokens: 2,
    selectionWide: selectionWideSetting(envValue('NSA_WEBGPU_SELECTION_WIDE')),
    software: /swiftshader|llvmpipe|lavapipe/i.test(name) || Boolean((info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter),
    limits: {
      maxStorageBufferBindingSize: Math.min(lim.maxStorageBufferBindingSize, bindingCap),
      maxBufferSize: lim.maxBufferSize,
      maxComputeWorkgroupStorageSize: lim.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: lim.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupsPerDimension: lim.maxComputeWorkgroupsPerDimension,
      minStorageBufferOffsetAlignment: lim.minStorageBufferOffsetAlignment,
      maxStorageBuffersPerShaderStage: lim.maxStorageBuffersPerShaderStage,
    },
    description: `${name}${f16 ? ', shader-f16' : ''}${subgroups ? `, subgroups (min size ${subgroupMinSize || 'unknown'})` : ''}${timestamps ? ', timestamp-query' : ''}${subgroupMatrix ? ', subgroup-matrix' : ''}`,
    lost: undefined,
  };
  void device.lost.then((info) => {
    ctx.lost = new WebGPUError('device-lost', `WebGPU device lost (${info.reason}): ${info.message}`);
  });
  return ctx;
}

const SUBGROUP_MATRIX = 'chromium-experimental-subgroup-matrix';

/** The adapter offers subgroup matrices with f16 16x16x16 -> f32 tiles, in subgroups of exactly 32 invocations. */
function hasMatrixConfig(adapter: GPUAdapter): boolean {
  if (!adapter.features.has(SUBGROUP_MATRIX)) return false;
  const info = adapter.info as unknown as {
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
    subgroupMatrixConfigs?: Iterable<{ componentType: string; resultComponentType: string; M: number; N: number; K: number }>;
  };
  if (info.subgroupMinSize !== 32 || info.subgroupMaxSize !== 32) return false;
  return [...(info.subgroupMatrixConfigs ?? [])].some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16);
}

/** NSA_WEBGPU_SELECTION_WIDE: '0' the previous selection tiles, a JSON object the wide tiles' settings (experiments). */
function selectionWideSetting(value: string | undefined): DeviceContext['selectionWide'] {
  if (value === '0') return false;
  return value?.trim().startsWith('{') ? (JSON.parse(value) as DeviceContext['selectionWide']) : {};
}

/** An environment variable where there is a process (Node); undefined in browsers. */
function envValue(name: string): string | undefined {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
}

/**
 * Runs `encode` inside validation, out-of-memory and internal error scopes, submits, and throws
 * the first error as a WebGPUError naming `what`.
 */
export async function guarded<T>(ctx: DeviceContext, what: string, encode: () => T): Promise<T> {
  if (ctx.lost) throw ctx.lost;
  const { device } = ctx;
  device.pushErrorScope('internal');
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let outcome: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    outcome = { ok: true, value: encode() };
  } catch (error) {
    outcome = { ok: false, error };
  }
  // Always pop all three scopes, so a thrown error cannot leave them on the device's stack.
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  const internal = await device.popErrorScope();
  if (!outcome.ok) throw outcome.error;
  if (ctx.lost) throw ctx.lost;
  if (oom) throw new WebGPUError('out-of-memory', `${what}: GPU out of memory: ${oom.message}`);
  if (validation) throw new WebGPUError('validation', `${what}: WebGPU validation error: ${validation.message}`);
  if (internal) throw new WebGPUError('internal', `${what}: WebGPU internal error: ${internal.message}`);
  return outcome.value;
}

/** Compiles a WGSL module and its compute pipeline; a compile error names the shader. */
export async function compilePipeline(ctx: DeviceContext, name: string, code: string): Promise<GPUComputePipeline> {
  if (ctx.lost) throw ctx.lost;
  const { device } = ctx;
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ label: name, code });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  const scoped = await device.popErrorScope();
  if (errors.length > 0) {
    throw new ShaderCompilationError(
      name,
      errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}${lineOf(code, m.lineNum)}`),
    );
  }
  if (scoped) throw new ShaderCompilationError(name, [scoped.message]);
  device.pushErrorScope('validation');
  let pipeline: GPUComputePipeline;
  try {
    pipeline = await device.createComputePipelineAsync({ label: name, layout: 'auto', compute: { module, entryPoint: 'main' } });
  } catch (error) {
    await device.popErrorScope();
    throw new ShaderCompilationError(name, [messageOf(error)]);
  }
  const pipelineError = await device.popErrorScope();
  if (pipelineError) throw new ShaderCompilationError(name, [pipelineError.message]);
  return pipeline;
}

function lineOf(code: string, line: number): string {
  const text = code.split('\n')[line - 1];
  return text === undefined ? '' : `\n    ${text.trim()}`;
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
