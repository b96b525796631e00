// WGSL pieces every kernel shares: the parameter block, the work-item record and typed loads.
//
// Row-indexed bindings (queries, outputs, per-row statistics) are bound from token row
// `P.rowBase` on, so a long tensor can be processed in chunks whose bindings each stay under
// maxStorageBufferBindingSize. Key-side bindings are bound whole.

/** Storage element type of the float tensors. */
export type ElementType = 'f32' | 'f16';

/** Field order of the `Params` uniform; host code writes them in this order. */
export const PARAM_FIELDS = [
  'H',
  'HQ',
  'window',
  'cmpBlock',
  'cmpStride',
  'selBlock',
  'nSel',
  'perSplit',
  'rowBase',
  'tokRows',
  'itemBase',
  'nItems',
  'qRowLo',
  'qRowHi',
  'accum',
  'splits',
  'keyRowBase',
  'impStride',
  'scale',
] as const;

export type ParamName = (typeof PARAM_FIELDS)[number];
export type Params = Partial<Record<ParamName, number>>;

/** 16-byte multiple. */
export const PARAM_BYTES = Math.ceil((PARAM_FIELDS.length * 4) / 16) * 16;

export function packParams(params: Params): ArrayBuffer {
  const buffer = new ArrayBuffer(PARAM_BYTES);
  const u32 = new Uint32Array(buffer);
  const f32 = new Float32Array(buffer);
  PARAM_FIELDS.forEach((name, i) => {
    const value = params[name] ?? 0;
    if (name === 'scale') f32[i] = value;
    else u32[i] = value >>> 0;
  });
  return buffer;
}

export function paramsStruct(): string {
  const fields = PARAM_FIELDS.map((name) => `  ${name}: ${name === 'scale' ? 'f32' : 'u32'},`).join('\n');
  return `struct Params {\n${fields}\n}\n@group(0) @binding(0) var<uniform> P: Params;\n`;
}

/** Words per work item (see `Item`). */
export const ITEM_WORDS = 8;

/**
 * A work item: a tile of consecutive tokens of one sequence. For query-centric kernels the
 * tokens are queries; for key-centric kernels they are keys (raw or compressed).
 *  row0     global token row of the tile's first token (in the tensor that holds the tile)
 *  count    tokens in the tile
 *  pos0     position of the first token inside its sequence
 *  keyBase  global key row of the sequence's position 0 (raw keys)
 *  cmpBase  global row of the sequence's compressed block 0
 *  seqLen   tokens in the sequence (keys available; also queries for key-centric kernels)
 *  qBase    key-centric kernels: global query row of the sequence's first query
 *  qFirst   key-centric kernels: position of that query (queries are positions qFirst..seqLen-1)
 */
export const ITEM_STRUCT = `struct Item { row0: u32, count: u32, pos0: u32, keyBase: u32, cmpBase: u32, seqLen: u32, qBase: u32, qFirst: u32 }
var<workgroup> itemShared: Item;
fn loadItem(index: u32, lid: u32) -> Item {
  if (lid == 0u) {
    let b = index * 8u;
    itemShared = Item(items[b], items[b + 1u], items[b + 2u], items[b + 3u], items[b + 4u], items[b + 5u], items[b + 6u], items[b + 7u]);
  }
  return workgroupUniformLoad(&itemShared);
}
`;

/** Element type of a read-only binding of rows of `dim` values: vec4 where dim allows vector loads. */
export function storageArray(e: ElementType, dim: number): string {
  return dim % 4 === 0 ? `array<vec4<${e}>>` : `array<${e}>`;
}

export function enableF16(e: ElementType): string {
  return e === 'f16' ? 'enable f16;\n' : '';
}

/**
 * `fn name(e: u32, c4: u32) -> vec4<f32>`: four consecutive elements of `buffer` starting at
 * e + 4*c4, zero past `dim` (so head dims need not be multiples of 4). With `vector` the buffer is
 * declared as `array<vec4<E>>` (see `storageArray`) and read with one vector load.
 */
export function load4(name: string, buffer: string, dim: number, vector = false): string {
  if (vector) {
    if (dim % 4 !== 0) throw new Error(`${name}: vector loads need a dim that is a multiple of 4, not ${dim}`);
    // One 16-byte (f32) or 8-byte (f16) load: e is a multiple of 4 since dim is.
    return `fn ${name}(e: u32, c4: u32) -> vec4<f32> {
  return vec4<f32>(${buffer}[e / 4u + c4]);
}
`;
  }
  if (dim % 4 === 0) {
    return `fn ${name}(e: u32, c4: u32) -> vec4<f32> {
  let i = e + c4 * 4u;
  return vec4<f32>(f32(${buffer}[i]), f32(${buffer}[i + 1u]), f32(${buffer}[i + 2u]), f32(${buffer}[i + 3u]));
}
`;
  }
  return `fn ${name}(e: u32, c4: u32) -> vec4<f32> {
  var r = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) {
    if (c4 * 4u + j < ${dim}u) { r[j] = f32(${buffer}[e + c4 * 4u + j]); }
  }
  return r;
}
`;
}

/** Statement storing vec4 `value` at e + 4*c4 into `buffer` of element type `type`, clipped at `dim`. */
export function store4(buffer: string, e: string, c4: string, value: string, dim: number, type: string): string {
  if (dim % 4 === 0) {
    return `{ let w = ${value}; let at = ${e} + ${c4} * 4u;
      ${buffer}[at] = ${type}(w.x); ${buffer}[at + 1u] = ${type}(w.y); ${buffer}[at + 2u] = ${type}(w.z); ${buffer}[at + 3u] = ${type}(w.w); }`;
  }
  return `{ let w = ${value};
      for (var j = 0u; j < 4u; j++) { if (${c4} * 4u + j < ${dim}u) { ${buffer}[${e} + ${c4} * 4u + j] = ${type}(w[j]); } } }`;
}

/** Finite sentinel for "no score": WGSL code never relies on inf or NaN arithmetic. */
export const NEG = '-1.0e30';
/** Scores above this are real. */
export const NEG_HALF = '-5.0e29';

/** Branch kinds: which keys a query at position p sees. */
export type Mode = 'window' | 'causal' | 'compressed' | 'selected';

/** WGSL: [lo, hi) of the key positions a query at position p sees (range modes). */
export function keyRangeFns(mode: Mode): string {
  switch (mode) {
    case 'window':
      return `fn keyLo(p: u32) -> u32 { return select(0u, p + 1u - P.window, p + 1u > P.window); }
fn keyHi(p: u32) -> u32 { return p + 1u; }
`;
    case 'causal':
    case 'selected':
      return `fn keyLo(p: u32) -> u32 { return 0u; }
fn keyHi(p: u32) -> u32 { return p + 1u; }
`;
    case 'compressed':
      return `fn keyLo(p: u32) -> u32 { return 0u; }
fn keyHi(p: u32) -> u32 { return select(0u, (p + 1u - P.cmpBlock) / P.cmpStride + 1u, p + 1u >= P.cmpBlock); }
`;
  }
}

/**
 * The start of a row-tile kernel's `main`: its work item `it`, KV head `kvh` and head chunk `hc`
 * (from wid.y), `split` (wid.z), and the tile's `rows` query rows, scaled, into `qs` at index
 * `slot` (WGSL over x, the flat vec4 index, and r = x / DK4). Needs rowValid, loadQ, G, GC, DK,
 * DK4 and WG in the kernel.
 */
export function rowTileStart(rows: string, slot: string): string {
  return `  let it = loadItem(P.itemBase + wid.x, lid);
  let nhc = (G + GC - 1u) / GC;
  let kvh = wid.y / nhc;
  let hc = wid.y % nhc;
  let split = wid.z;
  for (var x = lid; x < ${rows} * DK4; x += WG) {
    let r = x / DK4;
    var val = vec4<f32>(0.0);
    if (rowValid(r, it, hc)) {
      let e = ((it.row0 + r / GC - P.rowBase) * P.HQ + kvh * G + hc * GC + r % GC) * DK;
      val = loadQ(e, x % DK4) * P.scale;
    }
    qs[${slot}] = val;
  }`;
}
