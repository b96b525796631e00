import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AddonLoadError, BUILD_HINT, addonCandidates, loadAddon } from '../src/loader.js';

describe('addon loader', () => {
  it('looks for a prebuilt binary first, then the local cmake-js build', () => {
    const [prebuilt, local] = addonCandidates('/pkg', 'linux', 'x64');
    expect(prebuilt).toBe('/pkg/prebuilds/linux-x64/nsa_cuda.node');
    expect(local).toBe('/pkg/build/Release/nsa_cuda.node');
  });

  it('names every path it tried and how to build when nothing is there', () => {
    const paths = ['/nowhere/a/nsa_cuda.node', '/nowhere/b/nsa_cuda.node'];
    expect(() => loadAddon(paths)).toThrow(AddonLoadError);
    try {
      loadAddon(paths);
    } catch (error) {
      const message = (error as Error).message;
      expect(message).toContain(paths[0]);
      expect(message).toContain(paths[1]);
      expect(message).toContain(BUILD_HINT);
      expect((error as AddonLoadError).code).toBe('NSA_CUDA_ADDON');
    }
  });

  it('says that a present binary failed to load, and why', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nsa-cuda-'));
    const bogus = join(dir, 'nsa_cuda.node');
    writeFileSync(bogus, 'not a shared object');
    expect(() => loadAddon([bogus])).toThrow(/exists but failed to load/);
  });
});
