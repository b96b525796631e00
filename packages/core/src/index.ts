export * from './errors.js';
export * from './config.js';
export * from './dtype.js';
export * from './shapes.js';
export * from './tensor.js';
export * from './backend.js';
export * from './validate.js';
export * from './registry.js';
