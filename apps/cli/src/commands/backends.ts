import { defaultRegistry } from '@nsa/core';
import { loadBackends } from '../backends.js';

export const backendsHelp = `nsa backends
  Lists every backend this installation knows, in priority order, and whether it can run here.`;

/** Prints each backend with its priority and its probe's reason. */
export async function backendsCommand(): Promise<boolean> {
  await loadBackends();
  for (const { name, priority, probe } of await defaultRegistry.probeAll()) {
    console.log(`${probe.available ? 'available  ' : 'unavailable'}  ${name.padEnd(10)} priority ${String(priority).padStart(3)}  ${probe.reason}`);
  }
  return true;
}
