import {
  BackendRegistry,
  hasDenseOps,
  missingDenseOps,
  NSAError,
  registerBackendModules,
  UnsupportedError,
  type Backend,
  type BackendProvider,
  type ModelBackend,
} from '@nsa/core';
import { referenceProvider } from '@nsa/reference';

/** Which backend the model got, why, and why each other one was not taken. */
export interface ModelBackendResolution {
  readonly backend: ModelBackend;
  readonly name: string;
  readonly reason: string;
  readonly skipped: readonly { readonly name: string; readonly reason: string }[];
}

export function describeModelBackend(r: ModelBackendResolution): string {
  const skipped = r.skipped.map((s) => `${s.name}: ${s.reason}`).join('; ');
  return `${r.name} (${r.reason})${skipped ? `; skipped ${skipped}` : ''}`;
}

function isProvider(value: unknown): value is BackendProvider {
  const p = value as BackendProvider;
  return typeof p === 'object' && p !== null && typeof p.name === 'string' && typeof p.probe === 'function' && typeof p.create === 'function';
}

/** The provider a backend package exports (`<name>Provider`, else the first provider-shaped export). */
export function providerFromModule(module: Record<string, unknown>, name: string): BackendProvider {
  const named = module[`${name}Provider`];
  if (isProvider(named)) return named;
  const any = Object.values(module).find(isProvider);
  if (!any) throw new NSAError('NSA_NO_PROVIDER', `the package exports no backend provider`);
  return any;
}

// A specifier held in a variable keeps TypeScript and bundlers from requiring the optional packages.
const importOptional = (specifier: string): Promise<Record<string, unknown>> => import(specifier) as Promise<Record<string, unknown>>;

/** The GPU backends, optional packages found at runtime; a missing one becomes a skipped entry. */
export const OPTIONAL_BACKEND_LOADERS: Readonly<Record<string, () => Promise<BackendProvider>>> = {
  cuda: async () => providerFromModule(await importOptional('@nsa/cuda'), 'cuda'),
  webgpu: async () => providerFromModule(await importOptional('@nsa/webgpu'), 'webgpu'),
};

export interface ResolveModelBackendOptions {
  /** Backend packages to try besides the reference (default: OPTIONAL_BACKEND_LOADERS). */
  readonly loaders?: Readonly<Record<string, () => Promise<BackendProvider>>>;
}

/**
 * 'auto' takes the highest-priority available backend that implements the dense ops, and says why
 * every other one was skipped; a name takes that backend or throws with the reason. Never a silent
 * fallback.
 */
export async function resolveModelBackend(
  choice: string = 'auto',
  options: ResolveModelBackendOptions = {},
): Promise<ModelBackendResolution> {
  const registry = new BackendRegistry();
  registry.register(referenceProvider);
  await registerBackendModules(options.loaders ?? OPTIONAL_BACKEND_LOADERS, registry);
  if (choice !== 'auto') {
    const resolved = await registry.resolve(choice);
    const backend = withDenseOps(resolved.backend);
    return { backend, name: resolved.name, reason: resolved.reason, skipped: resolved.skipped };
  }
  const skipped: { name: string; reason: string }[] = [];
  for (const provider of registry.list()) {
    const probe = await provider.probe().catch((e: unknown) => ({ available: false, reason: `probe failed: ${String(e)}` }));
    if (!probe.available) {
      skipped.push({ name: provider.name, reason: probe.reason });
      continue;
    }
    let backend: Backend;
    try {
      backend = await provider.create();
    } catch (error) {
      skipped.push({ name: provider.name, reason: `create failed: ${(error as Error).message}` });
      continue;
    }
    if (!hasDenseOps(backend)) {
      skipped.push({ name: provider.name, reason: `has no dense ops yet (missing ${missingDenseOps(backend).join(', ')})` });
      backend.dispose();
      continue;
    }
    for (const p of registry.list().filter((other) => other.priority < provider.priority)) {
      const other = await p.probe().catch(() => ({ available: false, reason: 'probe failed' }));
      skipped.push({ name: p.name, reason: other.available ? `lower priority than ${provider.name}` : other.reason });
    }
    return { backend, name: provider.name, reason: `highest-priority backend with dense ops; ${probe.reason}`, skipped };
  }
  throw new NSAError('NSA_NO_BACKEND', `no backend can run the model: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

function withDenseOps(backend: Backend): ModelBackend {
  if (hasDenseOps(backend)) return backend;
  const missing = missingDenseOps(backend);
  backend.dispose();
  throw new UnsupportedError(`backend '${backend.name}' has no dense ops yet (missing ${missing.join(', ')}), so it cannot run the model`);
}
