export { CudaBackend } from './backend.js';
export { CudaNSACache } from './cache.js';
export { CudaTensor } from './tensor.js';
export { cudaProvider, createCudaBackend, probeCuda } from './provider.js';
export { AddonLoadError, addonCandidates, loadAddon, BUILD_HINT } from './loader.js';
export type { DeviceInfo } from './native.js';
