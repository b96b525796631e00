import type { Backend } from './backend.js';
import { BackendUnavailableError, NSAError } from './errors.js';

/** Whether a backend can run here, and why (or why not). */
export interface BackendProbe {
  readonly available: boolean;
  readonly reason: string;
}

/** How a backend package makes itself known; the registry never imports backends itself. */
export interface BackendProvider {
  readonly name: string;
  /** Higher wins under 'auto' (cuda 300 > webgpu 200 > reference 100). */
  readonly priority: number;
  probe(): Promise<BackendProbe>;
  create(): Promise<Backend>;
}

/** The result of `resolveBackend`: which backend, why, and why each other one was not taken. */
export interface ResolvedBackend {
  readonly backend: Backend;
  readonly name: string;
  readonly reason: string;
  readonly skipped: readonly { readonly name: string; readonly reason: string }[];
}

/** Formats a resolution for people: "reference (…); skipped cuda: no CUDA device". */
export function describeResolution(resolved: ResolvedBackend): string {
  const skipped = resolved.skipped.map((s) => `${s.name}: ${s.reason}`).join('; ');
  return `${resolved.name} (${resolved.reason})${skipped ? `; skipped ${skipped}` : ''}`;
}

export class BackendRegistry {
  readonly #providers = new Map<string, BackendProvider>();

  /** Adds or replaces the provider of that name. */
  register(provider: BackendProvider): void {
    this.#providers.set(provider.name, provider);
  }

  /** Providers, highest priority first. */
  list(): BackendProvider[] {
    return [...this.#providers.values()].sort((a, b) => b.priority - a.priority);
  }

  /** Probes every provider, highest priority first; a probe that throws counts as unavailable. */
  async probeAll(): Promise<{ name: string; priority: number; probe: BackendProbe }[]> {
    return Promise.all(this.list().map(async (p) => ({ name: p.name, priority: p.priority, probe: await safeProbe(p) })));
  }

  /**
   * 'auto' takes the highest-priority available backend; a name takes that backend or throws
   * `BackendUnavailableError` with its reason. It never silently falls back.
   */
  async resolve(choice: string = 'auto'): Promise<ResolvedBackend> {
    if (choice !== 'auto') {
      const provider = this.#providers.get(choice);
      if (!provider) {
        const known = this.list().map((p) => p.name);
        throw new BackendUnavailableError(choice, `no such backend is registered (registered: ${known.join(', ') || 'none'})`);
      }
      const probe = await safeProbe(provider);
      if (!probe.available) throw new BackendUnavailableError(choice, probe.reason);
      const backend = await createOrExplain(provider);
      const others = (await this.probeAll()).filter((p) => p.name !== choice);
      return {
        backend,
        name: choice,
        reason: `requested by name; ${probe.reason}`,
        skipped: others.map((p) => ({ name: p.name, reason: `not requested (${p.probe.reason})` })),
      };
    }
    const skipped: { name: string; reason: string }[] = [];
    for (const provider of this.list()) {
      const probe = await safeProbe(provider);
      if (!probe.available) {
        skipped.push({ name: provider.name, reason: probe.reason });
        continue;
      }
      let backend: Backend;
      try {
        backend = await provider.create();
      } catch (error) {
        skipped.push({ name: provider.name, reason: `probe passed but create failed: ${messageOf(error)}` });
        continue;
      }
      for (const p of this.list().filter((other) => other.priority < provider.priority)) {
        const lower = await safeProbe(p);
        skipped.push({ name: p.name, reason: lower.available ? `lower priority than ${provider.name}` : lower.reason });
      }
      return { backend, name: provider.name, reason: `highest-priority available backend; ${probe.reason}`, skipped };
    }
    throw new NSAError(
      'NSA_NO_BACKEND',
      `no NSA backend is available: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ') || 'none registered'}`,
    );
  }
}

async function safeProbe(provider: BackendProvider): Promise<BackendProbe> {
  try {
    return await provider.probe();
  } catch (error) {
    return { available: false, reason: `probe failed: ${messageOf(error)}` };
  }
}

async function createOrExplain(provider: BackendProvider): Promise<Backend> {
  try {
    return await provider.create();
  } catch (error) {
    throw new BackendUnavailableError(provider.name, `create failed: ${messageOf(error)}`);
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The process-wide registry that backends add themselves to. */
export const defaultRegistry = new BackendRegistry();

export function registerBackend(provider: BackendProvider): void {
  defaultRegistry.register(provider);
}

export function resolveBackend(choice: string = 'auto'): Promise<ResolvedBackend> {
  return defaultRegistry.resolve(choice);
}

/**
 * Registers backend packages that may or may not be installed. Keys are backend names, values
 * load that package's provider (the caller's own dynamic import, so the package resolves from
 * the caller's dependencies). A package that fails to load becomes an unavailable entry whose
 * reason says why, so `resolveBackend` can report it.
 */
export async function registerBackendModules(
  loaders: Readonly<Record<string, () => Promise<BackendProvider>>>,
  registry: BackendRegistry = defaultRegistry,
): Promise<void> {
  await Promise.all(
    Object.entries(loaders).map(async ([name, load]) => {
      try {
        registry.register(await load());
      } catch (error) {
        const reason = `its package could not be loaded (${messageOf(error).split('\n')[0]})`;
        registry.register({
          name,
          priority: 0,
          probe: async () => ({ available: false, reason }),
          create: async () => {
            throw new BackendUnavailableError(name, reason);
          },
        });
      }
    }),
  );
}
