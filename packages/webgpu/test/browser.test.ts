// The browser entry in a real browser: headless Chromium with WebGPU runs a small NSA + dense
// parity case against the reference, and the bundle reaches no Node module.
import { describe, expect, it } from 'vitest';
import { CHROMIUM, bundleBrowserEntry, chromiumAvailable, runBrowserParity } from '../browser/harness.js';

describe('browser bundle', () => {
  it('the browser entry imports no Node module', async () => {
    const { nodeImports, code } = await bundleBrowserEntry();
    expect(nodeImports).toEqual([]);
    expect(code).toContain('navigator');
  });
});

const available = chromiumAvailable();
describe.skipIf(!available)(`headless Chromium parity${available ? '' : ` (skipped: no Chromium at ${CHROMIUM})`}`, () => {
  it('NSA forward/backward and dense attention match the reference through navigator.gpu', async (ctx) => {
    const result = await runBrowserParity();
    if (result.adapter === 'none') ctx.skip(`no WebGPU adapter in Chromium: ${result.message}`);
    console.log(`browser adapter: ${result.adapter} (${result.features}); errors ${JSON.stringify(result.errors)}`);
    expect(result.message).toBeUndefined();
    expect(result.ok).toBe(true);
  });
});
