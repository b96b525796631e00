// Small per-element kernels around the attention passes: merging key splits, applying the
// gates, the backward preprocessing (dGates and the per-row D terms) and float32 -> float16 casts.
// Each covers token rows [P.qRowLo, P.qRowHi); bindings start at token row P.rowBase.
import { NEG, NEG_HALF, enableF16, paramsStruct, type ElementType } from './common.js';

export const ELEMENTWISE_WG = 256;

const INDEX = `fn flatIndex(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * ${ELEMENTWISE_WG}u; }`;

/** Merges S key splits: out = Σ_s O_s e^{m_s - M} / Σ_s l_s e^{m_s - M}, plus the lse. */
export function combineSplitsShader(DV: number): string {
  return `${paramsStruct()}
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
const DV = ${DV}u;
${INDEX}
@compute @workgroup_size(${ELEMENTWISE_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let x = flatIndex(gid, nwg);
  let rows = (P.qRowHi - P.qRowLo) * P.HQ;
  if (x >= rows * DV) { return; }
  let row = P.qRowLo * P.HQ + x / DV;
  let c = x % DV;
  let stride = P.tokRows * P.HQ;
  var m = ${NEG};
  for (var s = 0u; s < P.splits; s++) {
    if (stats[(s * stride + row) * 2u + 1u] > 0.0) { m = max(m, stats[(s * stride + row) * 2u]); }
  }
  var l = 0.0;
  var o = 0.0;
  for (var s = 0u; s < P.splits; s++) {
    let ls = stats[(s * stride + row) * 2u + 1u];
    if (ls > 0.0) {
      let w = exp(stats[(s * stride + row) * 2u] - m);
      l += ls * w;
      o += part[(s * stride + row) * DV + c] * w;
    }
  }
  out[row * DV + c] = select(0.0, o / max(l, 1.0e-30), l > 0.0);
  if (c == 0u) { lse[row] = select(${NEG}, m + log(max(l, 1.0e-30)), l > 0.0 && m > ${NEG_HALF}); }
}
`;
}

/** Invocations of a mergeBranches workgroup (one workgroup per output row). */
export const MERGE_WG = 64;

/**
 * Decode steps: out = Σ_b gate_b · O_b where O_b merges the S[b] key splits of branch b
 * (compressed, selected, window) as combineSplitsShader does, without writing O_b or the lse.
 * One workgroup per (token, head) row: the split weights e^{m_s - M} are computed once per row in
 * workgroup memory (in parallel over splits), and the split counts are constants, so each
 * invocation's loads of the partial sums over the splits are independent and unrolled (a loop of
 * dependent global loads per element was latency-bound). Bindings are whole (rows from 0).
 */
export function mergeBranchesShader(e: ElementType, DV: number, S: readonly [number, number, number]): string {
  const total = S[0] + S[1] + S[2];
  const base = [0, S[0], S[0] + S[1]];
  const decl = [0, 1, 2]
    .map((b) => `@group(0) @binding(${2 * b + 1}) var<storage, read> part${b}: array<f32>;\n@group(0) @binding(${2 * b + 2}) var<storage, read> stats${b}: array<f32>;`)
    .join('\n');
  const loadStats = [0, 1, 2]
    .map(
      (b) => `  for (var s = lid; s < ${S[b]}u; s += WG) {
    let at = (s * stride + row) * 2u;
    sm[${base[b]}u + s] = stats${b}[at];
    sl[${base[b]}u + s] = stats${b}[at + 1u];
  }`,
    )
    .join('\n');
  const weights = [0, 1, 2]
    .map(
      (b) => `  {
    var m = ${NEG};
    for (var s = 0u; s < ${S[b]}u; s++) { if (sl[${base[b]}u + s] > 0.0) { m = max(m, sm[${base[b]}u + s]); } }
    for (var s = lid; s < ${S[b]}u; s += WG) {
      let i = ${base[b]}u + s;
      sw[i] = select(0.0, exp(sm[i] - m), sl[i] > 0.0);
    }
  }`,
    )
    .join('\n');
  const sums = [0, 1, 2]
    .map(
      (b) => `  {
    var l = 0.0;
    for (var s = 0u; s < ${S[b]}u; s++) { l += sl[${base[b]}u + s] * sw[${base[b]}u + s]; }
    scale${b} = select(0.0, f32(gates[row * 3u + ${b}u]) / max(l, 1.0e-30), l > 0.0);
  }`,
    )
    .join('\n');
  const accumulate = [0, 1, 2]
    .map(
      (b) => `    var o${b} = 0.0;
    for (var s = 0u; s < ${S[b]}u; s++) { o${b} += part${b}[(s * stride + row) * DV + c] * sw[${base[b]}u + s]; }`,
    )
    .join('\n');
  return `${enableF16(e)}${paramsStruct()}
${decl}
@group(0) @binding(7) var<storage, read> gates: array<${e}>;
@group(0) @binding(8) var<storage, read_write> out: array<${e}>;
const DV = ${DV}u;
const WG = ${MERGE_WG}u;
var<workgroup> sm: array<f32, ${total}>;
var<workgroup> sl: array<f32, ${total}>;
var<workgroup> sw: array<f32, ${total}>;
@compute @workgroup_size(${MERGE_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  let stride = P.tokRows * P.HQ;
  if (row >= stride) { return; }
${loadStats}
  workgroupBarrier();
${weights}
  workgroupBarrier();
  var scale0 = 0.0;
  var scale1 = 0.0;
  var scale2 = 0.0;
${sums}
  for (var c = lid; c < DV; c += WG) {
${accumulate}
    out[row * DV + c] = ${e}(o0 * scale0 + o1 * scale1 + o2 * scale2);
  }
}
`;
}

/** out = Σ_b gate_b * O_b over NB branches (NB = 1: a plain cast, no gates). */
export function gateCombineShader(e: ElementType, DV: number, NB: 1 | 3): string {
  const branches = NB === 3 ? ['o0', 'o1', 'o2'] : ['o0'];
  const decl = branches.map((b, i) => `@group(0) @binding(${i + 1}) var<storage, read> ${b}: array<f32>;`).join('\n');
  const gates = NB === 3 ? `@group(0) @binding(4) var<storage, read> gates: array<${e}>;\n` : '';
  const outBinding = NB === 3 ? 5 : 2;
  const sum =
    NB === 3
      ? `let g = (row - P.rowBase * P.HQ) * 3u;
  let v = f32(gates[g]) * o0[x0] + f32(gates[g + 1u]) * o1[x0] + f32(gates[g + 2u]) * o2[x0];`
      : 'let v = o0[x0];';
  return `${enableF16(e)}${paramsStruct()}
${decl}
${gates}@group(0) @binding(${outBinding}) var<storage, read_write> out: array<${e}>;
const DV = ${DV}u;
${INDEX}
@compute @workgroup_size(${ELEMENTWISE_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let x = flatIndex(gid, nwg);
  let rows = (P.qRowHi - P.qRowLo) * P.HQ;
  if (x >= rows * DV) { return; }
  let row = P.qRowLo * P.HQ + x / DV;
  let x0 = (row - P.rowBase * P.HQ) * DV + x % DV;
  ${sum}
  out[x0] = ${e}(v);
}
`;
}

/**
 * Backward preprocessing per (token, head): dot_b = dO · O_b; dGates = dot (NB = 3); and for
 * each branch the pair (g_b, g_b * dot_b) that the dq and dk/dv passes read.
 */
export function backwardPrepShader(e: ElementType, DV: number, NB: 1 | 3): string {
  const branches = NB === 3 ? ['o0', 'o1', 'o2'] : ['o0'];
  let binding = 1;
  const decl: string[] = [`@group(0) @binding(${binding++}) var<storage, read> dout: array<${e}>;`];
  for (const b of branches) decl.push(`@group(0) @binding(${binding++}) var<storage, read> ${b}: array<f32>;`);
  if (NB === 3) decl.push(`@group(0) @binding(${binding++}) var<storage, read> gates: array<${e}>;`);
  for (let i = 0; i < NB; i++) decl.push(`@group(0) @binding(${binding++}) var<storage, read_write> gd${i}: array<f32>;`);
  if (NB === 3) decl.push(`@group(0) @binding(${binding++}) var<storage, read_write> dgates: array<${e}>;`);
  const body = branches
    .map((b, i) => {
      const gate = NB === 3 ? `f32(gates[r * 3u + ${i}u])` : '1.0';
      return `  {
    var d = 0.0;
    for (var c = 0u; c < DV; c++) { d += f32(dout[r * DV + c]) * ${b}[r * DV + c]; }
    let g = ${gate};
    gd${i}[r * 2u] = g;
    gd${i}[r * 2u + 1u] = g * d;
${NB === 3 ? `    dgates[r * 3u + ${i}u] = ${e}(d);` : ''}
  }`;
    })
    .join('\n');
  return `${enableF16(e)}${paramsStruct()}
${decl.join('\n')}
const DV = ${DV}u;
${INDEX}
@compute @workgroup_size(${ELEMENTWISE_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let x = flatIndex(gid, nwg);
  let rows = (P.qRowHi - P.qRowLo) * P.HQ;
  if (x >= rows) { return; }
  let r = (P.qRowLo - P.rowBase) * P.HQ + x;
${body}
}
`;
}

/** out[i] = E(src[i]) for i < P.nItems (flat, no row structure). */
export function castShader(e: ElementType): string {
  return `${enableF16(e)}${paramsStruct()}
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<${e}>;
${INDEX}
@compute @workgroup_size(${ELEMENTWISE_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let x = flatIndex(gid, nwg);
  if (x >= P.nItems) { return; }
  out[x] = ${e}(src[x]);
}
`;
}
