import type { BackendProvider } from '@nsa/core';
import { createReferenceBackend } from './backend.js';

/** Registers nothing by itself: consumers call `registerBackend(referenceProvider)`. */
export const referenceProvider: BackendProvider = {
  name: 'reference',
  priority: 100,
  probe: async () => ({ available: true, reason: 'pure TypeScript, always available' }),
  create: async () => createReferenceBackend(),
};
