import { defaultRegistry, registerBackendModules, type BackendProvider } from '@nsa/core';
import { referenceProvider } from '@nsa/reference';

// Optional GPU backends: imported by a computed name so the CLI builds and runs without them.
async function optionalProvider(pkg: string, exportName: string): Promise<BackendProvider> {
  const mod = (await import(pkg)) as Record<string, unknown>;
  const provider = mod[exportName] as BackendProvider | undefined;
  if (!provider) throw new Error(`${pkg} has no export ${exportName}`);
  return provider;
}

let loaded: Promise<void> | undefined;

/** Registers every backend this CLI knows (once): reference always, cuda and webgpu if installed. */
export function loadBackends(): Promise<void> {
  loaded ??= registerBackendModules({
    reference: async () => referenceProvider,
    cuda: () => optionalProvider('@nsa/cuda', 'cudaProvider'),
    webgpu: () => optionalProvider('@nsa/webgpu', 'webgpuProvider'),
  });
  return loaded;
}

export { defaultRegistry };
