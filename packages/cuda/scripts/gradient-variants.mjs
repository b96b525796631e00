/* global process */
// Shared by dq-variants.mjs and key-variants.mjs: one backward's gradients under a set of env switches
// (the backward reads them on every call), and which gradients differ from another set bit for bit.
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
