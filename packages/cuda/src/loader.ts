// Finds nsa_cuda.node: a prebuilt binary first, then the local cmake-js build; says exactly what
// is missing and how to fix it when neither is there.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NSAError } from '@nsa/core';
import type { NativeAddon } from './native.js';

/** The package root (one level above src/ or dist/). */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Where the loader looks, in order. */
export function addonCandidates(root: string = packageRoot, platform: string = process.platform, arch: string = process.arch): string[] {
  return [join(root, 'prebuilds', `${platform}-${arch}`, 'nsa_cuda.node'), join(root, 'build', 'Release', 'nsa_cuda.node')];
}

/** The addon is not there, or it is there and fails to load. */
export class AddonLoadError extends NSAError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('NSA_CUDA_ADDON', message, options);
  }
}

export const BUILD_HINT =
  'build it with `pnpm --filter @nsa/cuda build:native` (needs the CUDA toolkit with nvcc >= 12.8, cmake >= 3.18 and a C++17 compiler)';

let cached: { addon: NativeAddon; path: string } | undefined;

/** Loads the addon once; throws AddonLoadError naming every path tried. */
export function loadAddon(paths?: string[]): { addon: NativeAddon; path: string } {
  if (!paths && cached) return { addon: cached.addon, path: cached.path };
  const candidates = paths ?? addonCandidates();
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new AddonLoadError(
      `the native addon nsa_cuda.node is not built for ${process.platform}-${process.arch}: looked for ${candidates.join(' and ')}; ${BUILD_HINT}`,
    );
  }
  const require = createRequire(import.meta.url);
  let addon: NativeAddon;
  try {
    addon = require(found) as NativeAddon;
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new AddonLoadError(`the native addon ${found} exists but failed to load (${why}); rebuild it: ${BUILD_HINT}`, { cause: error });
  }
  if (!paths) cached = { addon, path: found };
  return { addon, path: found };
}
