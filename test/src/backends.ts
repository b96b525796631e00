import { BackendRegistry, registerBackendModules, type BackendProvider } from '@nsa/core';

// The GPU backends under test, imported by a computed name so this suite runs where they are absent.
async function optionalProvider(pkg: string, exportName: string): Promise<BackendProvider> {
  const mod = (await import(pkg)) as Record<string, unknown>;
  const provider = mod[exportName] as BackendProvider | undefined;
  if (!provider) throw new Error(`${pkg} has no export ${exportName}`);
  return provider;
}

/** Every backend the parity suite checks against the reference (the reference itself is the oracle). */
export async function backendsUnderTest(): Promise<BackendRegistry> {
  const registry = new BackendRegistry();
  await registerBackendModules(
    {
      cuda: () => optionalProvider('@nsa/cuda', 'cudaProvider'),
      webgpu: () => optionalProvider('@nsa/webgpu', 'webgpuProvider'),
    },
    registry,
  );
  return registry;
}
