/* global process */
// Shared by dq-variants.mjs, key-variants.mjs and key-boxes.mjs: one backward's gradients under a set of
// env switches (the backward reads them on every call), which gradients differ from another set bit for
// bit, and the random NSA problem the key-block checks run on.
import { SeededRandom, compressedCount } from '@nsa/core';

export const gradientNames = ['dq', 'dkCmp', 'dvCmp', 'dkSlc', 'dvSlc', 'dkWin', 'dvWin', 'dGates'];

/** The gradients (gradientNames order) of `backend.nsaBackward(args)` with `cleared` unset, then `env` set. */
export async function gradientsUnder(backend, args, env, cleared) {
  for (const k of cleared) delete process.env[k];
  Object.assign(process.env, env);
  const grads = await backend.nsaBackward(args);
  const got = await Promise.all(gradientNames.map((n) => grads[n].read()));
  grads.dispose();
  return got;
}

/** The names of the gradients whose bytes differ between two gradientsUnder results. */
export function differingGradients(base, got) {
  return gradientNames.filter((n, k) => {
    const a = new Uint8Array(base[k].buffer), b = new Uint8Array(got[k].buffer);
    return !(a.length === b.length && a.every((x, i) => x === b[i]));
  });
}

/**
 * Random NSA inputs for `config` (B sequences of T tokens, seeded), their forward and an output gradient:
 * `{ inputs, forward, dOutput }`. Gates are uniform in [0, 1), everything else standard normal.
 */
export async function randomProblem(backend, config, B, T, dtype, seed) {
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
  const C = compressedCount(T, config), rng = new SeededRandom(seed);
  const t = (shape, lo) => backend.tensor(lo === undefined ? rng.normals(shape.reduce((a, b) => a * b, 1)) : rng.uniforms(shape.reduce((a, b) => a * b, 1), lo, 1), shape, dtype);
  const inputs = {
    q: t([B, T, HQ, Dk]), kCmp: t([B, C, H, Dk]), vCmp: t([B, C, H, Dv]), kSlc: t([B, T, H, Dk]), vSlc: t([B, T, H, Dv]),
    kWin: t([B, T, H, Dk]), vWin: t([B, T, H, Dv]), gates: t([B, T, HQ, 3], 0),
  };
  const dOutput = t([B, T, HQ, Dv]);
  const forward = await backend.nsaForward({ config, ...inputs });
  return { inputs, forward, dOutput };
}
