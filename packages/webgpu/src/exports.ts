// What both entry points export besides their own GPU access.
export { WebGPUBackend, createWebGPUBackendFrom } from './backend.js';
export { WebGPUNSACache } from './decode.js';
export { ShaderCompilationError, WebGPUError, type DeviceFeatures, type DeviceOptions } from './device.js';
export { createWebGPUProvider } from './provider.js';
export { WebGPUTensor } from './tensor.js';
