// WGSL statements of subgroup-matrix operations ('chromium-experimental-subgroup-matrix', f16
// 16x16x16 tiles accumulated in f32), native or emulated. The emulation stands in plain WGSL for
// the builtins so a kernel's logic can run on adapters without the feature (tests only): each
// virtual 32-invocation subgroup computes its tiles in its invocation 0.

import { paramsStruct, type ElementType } from './common.js';

/** The extension, and the uniformity diagnostic turned off: kernels derive matrix offsets from the
 * subgroup index (local_invocation_index / 32), which the analysis cannot see is subgroup-uniform. */
export const MATRIX_PREAMBLE = `enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
`;

/** The opening the matrix attention kernels share: extensions, the parameters, and the item list,
 * q, k, v, output and row-statistics bindings (1-6; a kernel adds its own from 7). */
export function matrixAttentionHead(E: ElementType, emulate: boolean): string {
  return `${E === 'f16' ? 'enable f16;\n' : ''}enable subgroups;
${emulate ? '' : MATRIX_PREAMBLE}${paramsStruct()}
@group(0) @binding(1) var<storage, read> items: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<vec4<${E}>>;
@group(0) @binding(3) var<storage, read> kbuf: array<vec4<${E}>>;
@group(0) @binding(4) var<storage, read> vbuf: array<vec4<${E}>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;`;
}

/**
 * WGSL moving one KT-key tile of a matrix attention kernel between global memory, registers (kr0..,
 * vr0..: each invocation's share unrolled, so it stays in registers) and the workgroup array kv.
 * Keys: x -> (key x / DK4, vec4 column x % DK4), so a warp reads whole key rows; stored as rows of
 * stride KS. Values: per 32 invocations 16 keys x 2 vec4 columns (KB = KT / 16 groups tile
 * KT x DV4), stored transposed (stride VS), so the f16 stores land in distinct banks.
 * row(kp) is the K/V row of the tile's key offset kp; values load for the tile at kp0, up to kEnd.
 */
export function tileTransfers(E: ElementType, WG: number, nK: number, nV: number, row: (kp: string) => string) {
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const vPos = (i: number) => `let x = lid + ${i * WG}u;
      let grp = x / 32u;
      let rr = x % 16u + 16u * (grp % KB);
      let c4 = (x % 32u) / 16u + 2u * (grp / KB);`;
  return {
    loadK: (lo: string, hi: string) =>
      range(nK)
        .map(
          (i) => `    {
      let x = lid + ${i * WG}u;
      let rr = x / DK4;
      kr${i} = vec4<${E}>(0.0);
      if (x < KT * DK4 && ${lo} + rr < ${hi}) { kr${i} = kbuf[${row(`${lo} + rr`)} * DK4 + x % DK4]; }
    }`,
        )
        .join('\n'),
    storeK: range(nK)
      .map(
        (i) => `    {
      let x = lid + ${i * WG}u;
      if (x < KT * DK4) {
        let w = (x / DK4) * KS + (x % DK4) * 4u;
        kv[w] = kr${i}.x; kv[w + 1u] = kr${i}.y; kv[w + 2u] = kr${i}.z; kv[w + 3u] = kr${i}.w;
      }
    }`,
      )
      .join('\n'),
    loadV: range(nV)
      .map(
        (i) => `    {
      ${vPos(i)}
      vr${i} = vec4<${E}>(0.0);
      if (x < KT * DV4 && kp0 + rr < kEnd) { vr${i} = vbuf[${row('kp0 + rr')} * DV4 + c4]; }
    }`,
      )
      .join('\n'),
    storeV: range(nV)
      .map(
        (i) => `    {
      ${vPos(i)}
      if (x < KT * DV4) {
        let w = c4 * 4u * VS + rr;
        kv[w] = vr${i}.x; kv[w + VS] = vr${i}.y; kv[w + 2u * VS] = vr${i}.z; kv[w + 3u * VS] = vr${i}.w;
      }
    }`,
      )
      .join('\n'),
  };
}

/** Invocations per subgroup the kernels assume (lid / 32 is the subgroup index). */
export const MATRIX_SUBGROUP = 32;

export type Kind = 'left' | 'right' | 'result';

/**
 * WGSL statements of the matrix operations, native or emulated. Matrices are named; emulated, a
 * name is a slot (M_<name>) of a private array of row-major 16 x 16 f32 tiles, so no tile is passed
 * by value (software compilers take minutes over by-value 256-element arrays).
 */
export function matrixOps(emulate: boolean, names: readonly string[], loads: Readonly<Record<string, string>>, stores: readonly string[]) {
  const type: Record<Kind, string> = {
    left: 'subgroup_matrix_left<f16, 16, 16>',
    right: 'subgroup_matrix_right<f16, 16, 16>',
    result: 'subgroup_matrix_result<f32, 16, 16>',
  };
  if (!emulate) {
    const load = (kind: Kind, buf: string, off: string, colMajor: boolean, stride: string) => `subgroupMatrixLoad<${type[kind]}>(&${buf}, ${off}, ${colMajor}, ${stride})`;
    return {
      declare: (name: string, kind: Kind) => `var ${name} = ${type[kind]}();`,
      load: (dst: string, kind: Kind, buf: string, off: string, stride: string) => `${dst} = ${load(kind, buf, off, false, stride)};`,
      zero: (dst: string) => `${dst} = ${type.result}();`,
      mmaFrom: (a: string, buf: string, off: string, colMajor: boolean, stride: string, c: string) =>
        `${c} = subgroupMatrixMultiplyAccumulate(${a}, ${load('right', buf, off, colMajor, stride)}, ${c});`,
      store: (buf: string, off: string, x: string, stride: string) => `subgroupMatrixStore(&${buf}, ${off}, ${x}, false, ${stride});`,
      decls: '',
    };
  }
  // Elements past the array read as NaN, so a kernel whose tiles leave their array fails its
  // tests; only invocation 0 of a virtual subgroup computes and stores.
  const slots = [...names, 'tmp'];
  const load = (buf: string, size: string) => `fn emuLoad_${buf}(dst: u32, off: u32, colMajor: bool, stride: u32) {
  if (!emuOn) { return; }
  let last = ${size} - 1u;
  for (var r = 0u; r < 16u; r++) {
    for (var c = 0u; c < 16u; c++) {
      let i = select(off + r * stride + c, off + c * stride + r, colMajor);
      mats[dst][r * 16u + c] = select(f32(${buf}[min(i, last)]), bitcast<f32>(nanBits), i > last);
    }
  }
}
`;
  return {
    declare: () => '',
    load: (dst: string, _kind: Kind, buf: string, off: string, stride: string) => `emuLoad_${buf}(M_${dst}, ${off}, false, ${stride});`,
    zero: (dst: string) => `emuZero(M_${dst});`,
    mmaFrom: (a: string, buf: string, off: string, colMajor: boolean, stride: string, c: string) =>
      `emuLoad_${buf}(M_tmp, ${off}, ${colMajor}, ${stride}); emuMma(M_${a}, M_tmp, M_${c});`,
    store: (buf: string, off: string, x: string, stride: string) => `emuStore_${buf}(${off}, M_${x}, ${stride});`,
    decls: `var<private> emuOn: bool;
var<private> nanBits = 0x7fc00000u;
var<private> mats: array<array<f32, 256>, ${slots.length}>;
${slots.map((n, i) => `const M_${n} = ${i}u;`).join('\n')}
${Object.entries(loads).map(([buf, size]) => load(buf, size)).join('')}
fn emuZero(dst: u32) {
  for (var i = 0u; i < 256u; i++) { mats[dst][i] = 0.0; }
}
fn emuMma(a: u32, b: u32, dst: u32) {
  if (!emuOn) { return; }
  for (var r = 0u; r < 16u; r++) {
    for (var c = 0u; c < 16u; c++) {
      var s = mats[dst][r * 16u + c];
      for (var k = 0u; k < 16u; k++) { s = fma(mats[a][r * 16u + k], mats[b][k * 16u + c], s); }
      mats[dst][r * 16u + c] = s;
    }
  }
}
${stores.map((buf) => `fn emuStore_${buf}(off: u32, src: u32, stride: u32) {
  if (!emuOn) { return; }
  for (var r = 0u; r < 16u; r++) {
    for (var c = 0u; c < 16u; c++) { ${buf}[off + r * stride + c] = mats[src][r * 16u + c]; }
  }
}
`).join('')}`,
  };
}
