// The browser proof: bundle browser/entry.ts for the browser (esbuild fails on any Node import),
// serve it from localhost, and run it in headless Chromium with WebGPU (SwiftShader without a GPU).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CHROMIUM = process.env.NSA_CHROMIUM ?? '/usr/bin/chromium';

export interface BrowserResult {
  readonly ok: boolean;
  readonly adapter: string;
  readonly features: string;
  readonly errors: Record<string, number>;
  readonly message?: string;
  /** Node built-ins the bundle reached (must be none). */
  readonly nodeImports: readonly string[];
}

export async function bundleBrowserEntry(): Promise<{ code: string; nodeImports: string[] }> {
  const esbuild = await import('esbuild');
  const nodeImports: string[] = [];
  const result = await esbuild.build({
    entryPoints: [fileURLToPath(new URL('./entry.ts', import.meta.url))],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    conditions: ['@nsa/source', 'browser'],
    logLevel: 'silent',
    plugins: [
      {
        name: 'no-node-builtins',
        setup(build) {
          build.onResolve({ filter: /^(node:|fs$|path$|os$|url$|module$|webgpu$)/ }, (args) => {
            nodeImports.push(`${args.path} (from ${args.importer})`);
            return { path: args.path, external: true };
          });
        },
      },
    ],
  });
  return { code: result.outputFiles[0].text, nodeImports };
}

export async function runBrowserParity(timeoutMs = 300_000): Promise<BrowserResult> {
  const { code, nodeImports } = await bundleBrowserEntry();
  const page = '<!doctype html><meta charset="utf-8"><title>nsa webgpu</title><script type="module" src="/entry.js"></script>';
  const server = createServer((req, res) => {
    if (req.url === '/entry.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(code);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(page);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const profile = mkdtempSync(join(tmpdir(), 'nsa-chromium-'));
  const { chromium } = await import('playwright-core');
  // A persistent context on a fresh, throw-away profile (playwright's form of --user-data-dir).
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--headless',
      '--enable-unsafe-webgpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
  try {
    const tab = browser.pages()[0] ?? (await browser.newPage());
    await tab.goto(`http://127.0.0.1:${port}/`);
    await tab.waitForFunction(() => (globalThis as { __nsaResult?: unknown }).__nsaResult !== undefined, undefined, { timeout: timeoutMs });
    const result = (await tab.evaluate(() => (globalThis as { __nsaResult?: Promise<unknown> }).__nsaResult, undefined)) as Omit<BrowserResult, 'nodeImports'>;
    return { ...result, nodeImports };
  } finally {
    await browser.close();
    server.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

export function chromiumAvailable(): boolean {
  return existsSync(CHROMIUM);
}
