import type { ModelConfig } from './config.js';
import { streamOf } from './util/seed.js';

/** One learnable tensor: its name (also its checkpoint key), shape and initialisation. */
export interface ParamSpec {
  readonly name: string;
  readonly shape: readonly number[];
  /** 'ones' for norm gains, otherwise normal with this standard deviation. */
  readonly init: 'ones' | { readonly std: number };
  /** AdamW decays matrices only, not gains or position tables. */
  readonly decay: boolean;
}

/** Every parameter of the model, in a fixed order (the order of checkpoints and of updates). */
export function parameterSpecs(config: ModelConfig): ParamSpec[] {
  const { vocabSize: V, dModel: D, heads: HQ, kvHeads: H, headDim: Dh, ffnHidden: F, layers } = config;
  const matrix = (name: string, out: number, inn: number, gain = 1): ParamSpec => ({
    name,
    shape: [out, inn],
    init: { std: gain / Math.sqrt(inn) },
    decay: true,
  });
  const residualGain = 1 / Math.sqrt(2 * layers);
  const specs: ParamSpec[] = [{ name: 'embed', shape: [V, D], init: { std: 1 }, decay: false }];
  for (let i = 0; i < layers; i++) {
    const p = `layers.${i}`;
    specs.push({ name: `${p}.attnNorm`, shape: [D], init: 'ones', decay: false });
    specs.push(matrix(`${p}.attn.wq`, HQ * Dh, D));
    if (config.attention === 'nsa') {
      for (const branch of ['Cmp', 'Slc', 'Win']) {
        specs.push(matrix(`${p}.attn.wk${branch}`, H * Dh, D));
        specs.push(matrix(`${p}.attn.wv${branch}`, H * Dh, D));
      }
      const l = config.nsa.compressBlock;
      for (const which of ['phiK', 'phiV']) {
        specs.push({ name: `${p}.attn.${which}.pos`, shape: [l, Dh], init: { std: 0.1 }, decay: false });
        specs.push(matrix(`${p}.attn.${which}.w1`, config.compressorHidden, l * Dh));
        specs.push(matrix(`${p}.attn.${which}.w2`, Dh, config.compressorHidden));
      }
      specs.push(matrix(`${p}.attn.wg`, HQ * 3, D));
    } else {
      specs.push(matrix(`${p}.attn.wk`, H * Dh, D));
      specs.push(matrix(`${p}.attn.wv`, H * Dh, D));
    }
    specs.push(matrix(`${p}.attn.wo`, D, HQ * Dh, residualGain));
    specs.push({ name: `${p}.mlpNorm`, shape: [D], init: 'ones', decay: false });
    specs.push(matrix(`${p}.mlp.wGate`, F, D));
    specs.push(matrix(`${p}.mlp.wUp`, F, D));
    specs.push(matrix(`${p}.mlp.wDown`, D, F, residualGain));
  }
  specs.push({ name: 'finalNorm', shape: [D], init: 'ones', decay: false });
  specs.push(matrix('lmHead', V, D));
  return specs;
}

/** Initial values of every parameter, reproducible from the seed (each tensor has its own stream). */
export function initialValues(specs: readonly ParamSpec[], seed: number): Map<string, Float64Array> {
  const values = new Map<string, Float64Array>();
  specs.forEach((spec, index) => {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const data = new Float64Array(size);
    if (spec.init === 'ones') data.fill(1);
    else {
      const rng = streamOf(seed, 1, index);
      for (let i = 0; i < size; i++) data[i] = rng.normal() * spec.init.std;
    }
    values.set(spec.name, data);
  });
  return values;
}
