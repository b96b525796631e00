import {
  compressedCount,
  createNSAConfig,
  describeResolution,
  keysReadPerQuery,
  resolveBackend,
  SeededRandom,
  type Backend,
  type FloatDType,
  type NSAConfig,
  type Tensor,
} from '@nsa/core';
import { meanCompress } from '@nsa/reference';
import { checkKnownOptions, intOption, parseArgs, stringOption, UsageError } from '../args.js';
import { loadBackends } from '../backends.js';

const OPTIONS = ['backend', 'seq', 'heads', 'kv-heads', 'dim', 'dtype', 'seed', 'repeat'];

export const attentionHelp = `nsa attention [--backend auto|NAME] [--seq T] [--heads HQ] [--kv-heads H] [--dim D]
              [--dtype float64|float32|float16|bfloat16] [--seed N] [--repeat R]
  Runs NSA (paper defaults l 32, d 16, l' 64, n 16, w 512, mean compression) and dense causal
  attention on one generated input, checks both outputs are sane, and prints time and sparsity.
  Defaults: the reference runs T 4096, HQ 4, H 1, D 64 in float64; a GPU runs T 16384, HQ 64,
  H 4, D 128 in bfloat16 (or float32 where bfloat16 is missing).`;

/** The issue-2 main job: NSA against dense attention on the best backend. Returns false if a check failed. */
export async function attentionCommand(argv: readonly string[]): Promise<boolean> {
  const args = parseArgs(argv);
  checkKnownOptions(args, OPTIONS);
  await loadBackends();
  const resolved = await resolveBackend(stringOption(args, 'backend', 'auto'));
  const backend = resolved.backend;
  const onCpu = backend.name === 'reference';
  const T = intOption(args, 'seq', onCpu ? 4096 : 16384);
  const heads = intOption(args, 'heads', onCpu ? 4 : 64);
  const kvHeads = intOption(args, 'kv-heads', onCpu ? 1 : 4);
  const dim = intOption(args, 'dim', onCpu ? 64 : 128);
  const repeat = intOption(args, 'repeat', onCpu ? 1 : 5);
  const dtype = pickDType(backend, stringOption(args, 'dtype', ''));
  const config = createNSAConfig({ heads, kvHeads, headDimK: dim, headDimV: dim });

  console.log(`backend: ${describeResolution(resolved)}`);
  console.log(`device:  ${backend.device}`);
  console.log(
    `input:   B=1 T=${T} HQ=${heads} H=${kvHeads} D=${dim} ${dtype}; l=${config.compressBlock} d=${config.compressStride} ` +
      `l'=${config.selectBlock} n=${config.selectCount} w=${config.window}`,
  );
  const inputs = makeInputs(backend, config, T, dtype, intOption(args, 'seed', 1));
  try {
    const nsaTime = await timeIt(backend, repeat, async () => (await backend.nsaForward({ config, ...inputs.nsa })).dispose());
    const denseTime = await timeIt(backend, repeat, async () => (await backend.attentionForward(inputs.dense)).dispose());
    const nsa = await backend.nsaForward({ config, ...inputs.nsa });
    const dense = await backend.attentionForward(inputs.dense);
    const checks = await sanityChecks(config, T, inputs.maxAbsV, nsa.output, nsa.blockIndices, dense.output);
    nsa.dispose();
    dense.dispose();

    const reads = sparsity(config, T);
    console.log('');
    console.log('| operator      | time (ms) | keys read per query (mean) | at the last token |');
    console.log('|---------------|-----------|----------------------------|-------------------|');
    console.log(`| NSA forward   | ${fmt(nsaTime, 9)} | ${fmt(reads.nsaMean, 26)} | ${fmt(reads.nsaLast, 17)} |`);
    console.log(`| dense forward | ${fmt(denseTime, 9)} | ${fmt(reads.denseMean, 26)} | ${fmt(T, 17)} |`);
    console.log('');
    console.log(
      `sparsity: NSA reads ${(100 * (reads.nsaMean / reads.denseMean)).toFixed(1)}% of the keys dense attention reads ` +
        `(${(100 * (reads.nsaLast / T)).toFixed(1)}% at the last token); speed ratio dense/NSA = ${(denseTime / nsaTime).toFixed(2)}x` +
        (repeat > 1 ? ` (median of ${repeat})` : ''),
    );
    for (const check of checks) console.log(`check: ${check.ok ? 'ok  ' : 'FAIL'} ${check.what}`);
    return checks.every((c) => c.ok);
  } finally {
    inputs.dispose();
    backend.dispose();
  }
}

function pickDType(backend: Backend, requested: string): FloatDType {
  if (requested) {
    if (!(backend.dtypes as readonly string[]).includes(requested)) {
      throw new UsageError(`--dtype ${requested} is not supported by backend '${backend.name}' (supported: ${backend.dtypes.join(', ')})`);
    }
    return requested as FloatDType;
  }
  if (backend.name === 'reference') return 'float64';
  return backend.dtypes.includes('bfloat16') ? 'bfloat16' : 'float32';
}

/** Random q, shared k/v for the selection and window branches, mean-compressed kCmp/vCmp, sigmoid gates. */
function makeInputs(backend: Backend, config: NSAConfig, T: number, dtype: FloatDType, seed: number) {
  const rng = new SeededRandom(seed);
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
  const q = rng.normals(T * HQ * Dk);
  const k = rng.normals(T * H * Dk);
  const v = rng.normals(T * H * Dv);
  const gates = rng.normals(T * HQ * 3).map((x) => 1 / (1 + Math.exp(-x)));
  const C = compressedCount(T, config);
  const tensors: Tensor[] = [];
  const make = (values: ArrayLike<number>, shape: number[]) => {
    const t = backend.tensor(values, shape, dtype);
    tensors.push(t);
    return t;
  };
  const qT = make(q, [1, T, HQ, Dk]);
  const kT = make(k, [1, T, H, Dk]);
  const vT = make(v, [1, T, H, Dv]);
  const nsa = {
    q: qT,
    kSlc: kT,
    vSlc: vT,
    kWin: kT,
    vWin: vT,
    kCmp: make(meanCompress(k, config, { B: 1, T, H, D: Dk }), [1, C, H, Dk]),
    vCmp: make(meanCompress(v, config, { B: 1, T, H, D: Dv }), [1, C, H, Dv]),
    gates: make(gates, [1, T, HQ, 3]),
  };
  let maxAbsV = 0;
  for (const x of v) maxAbsV = Math.max(maxAbsV, Math.abs(x));
  return { nsa, dense: { q: qT, k: kT, v: vT }, maxAbsV, dispose: () => tensors.forEach((t) => t.dispose()) };
}

async function sanityChecks(
  config: NSAConfig,
  T: number,
  maxAbsV: number,
  nsaOut: Tensor,
  blockIndices: Tensor,
  denseOut: Tensor,
): Promise<{ ok: boolean; what: string }[]> {
  const o = await nsaOut.read();
  const d = await denseOut.read();
  const idx = await blockIndices.read();
  const slack = 1.02; // low-precision rounding of the inputs
  const maxAbs = (a: ArrayLike<number>) => {
    let m = 0;
    for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
    return m;
  };
  const finite = (a: ArrayLike<number>) => Array.prototype.every.call(a, Number.isFinite) as boolean;
  return [
    { ok: finite(o) && finite(d), what: 'every output is finite' },
    { ok: maxAbs(o) <= 3 * maxAbsV * slack, what: `|NSA output| <= 3 * max|v| (gated sum of three convex combinations): ${maxAbs(o).toFixed(3)} <= ${(3 * maxAbsV).toFixed(3)}` },
    { ok: maxAbs(d) <= maxAbsV * slack, what: `|dense output| <= max|v| (convex combination): ${maxAbs(d).toFixed(3)} <= ${maxAbsV.toFixed(3)}` },
    { ok: blockIndicesValid(idx, config, T), what: 'block indices are causal, ascending, -1 padded, include the forced blocks' },
  ];
}

function blockIndicesValid(idx: ArrayLike<number>, config: NSAConfig, T: number): boolean {
  const n = config.selectCount;
  const H = config.kvHeads;
  for (let t = 0; t < T; t++) {
    const current = Math.floor(t / config.selectBlock);
    const expected = Math.min(n, current + 1);
    for (let h = 0; h < H; h++) {
      const row = Array.from({ length: n }, (_, s) => idx[(t * H + h) * n + s]);
      const chosen = row.filter((j) => j >= 0);
      if (chosen.length !== expected || row.slice(expected).some((j) => j !== -1)) return false;
      if (chosen.some((j, s) => j > current || (s > 0 && j <= chosen[s - 1]))) return false;
      if (config.initialBlocks > 0 && chosen[0] !== 0) return false;
      if (config.localBlocks > 0 && chosen[chosen.length - 1] !== current) return false;
    }
  }
  return true;
}

function sparsity(config: NSAConfig, T: number) {
  let nsa = 0;
  let dense = 0;
  for (let t = 0; t < T; t++) {
    const r = keysReadPerQuery(t, config);
    nsa += r.compressed + r.selected + r.window;
    dense += t + 1;
  }
  const last = keysReadPerQuery(T - 1, config);
  return { nsaMean: nsa / T, denseMean: dense / T, nsaLast: last.compressed + last.selected + last.window };
}

async function timeIt(backend: Backend, repeat: number, run: () => Promise<void>): Promise<number> {
  if (repeat > 1) await run(); // warm-up: kernel compilation, allocations
  await backend.synchronize();
  const times: number[] = [];
  for (let i = 0; i < repeat; i++) {
    const start = performance.now();
    await run();
    await backend.synchronize();
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

function fmt(value: number, width: number): string {
  const text = value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
  return text.padStart(width);
}
