export * from './cases.js';
export * from './compare.js';
export * from './inputs.js';
export * from './parity.js';
export * from './selection-check.js';
export * from './backends.js';
