import { createWebGPUBackend } from '/work/main/packages/webgpu/src/node.ts';
import { attentionShader } from '/work/main/packages/webgpu/src/shaders/attention.ts';
import { dkdvShader } from '/work/main/packages/webgpu/src/shaders/dkdv.ts';
const be = await createWebGPUBackend();
const rt = (s: string) => s.replace(/c < DK4;/g, 'c < min(DK4, P.nItems + DK4);').replace(/c < DV4;/g, 'c < min(DV4, P.nItems + DV4);').replace(/kk < KT;/g, 'kk < min(KT, P.nItems + KT);').replace(/i < CELLS;/g, 'i < min(CELLS, P.nItems + CELLS);').replace(/r < R; r\+\+/g, 'r < min(R, P.nItems + R); r++');
let n = 0;
for (const variant of ['const', 'runtime', 'const']) {
  const f = attentionShader({ kind: 'forward', mode: 'window', e: 'f32', G: 4, GC: 4, TQB: 4, DK: 64, DV: 64, KT: 32, WG: 128, split: false }) + `\n// ${n++}`;
  const d = dkdvShader({ mode: 'window', e: 'f32', G: 4, GC: 4, TQB: 4, DK: 64, DV: 64, KT: 16, WG: 128 }) + `\n// ${n++}`;
  for (const [name, code] of [['fwd', f], ['dkdv', d]]) {
    const t0 = performance.now();
    await be.rt.pipeline(name + variant, variant === 'runtime' ? rt(code) : code);
    console.log(variant, name, (performance.now() - t0).toFixed(0), 'ms');
  }
}
be.dispose();
