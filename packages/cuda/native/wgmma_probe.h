// Whether the loaded device code has Hopper wgmma (wgmma_probe.cu).
#pragma once

namespace nsa {

// True where the running device code was built for sm_90a (the only target that emits wgmma) on a
// compute-capability 9.0 device; cached per device. Every source is built for the same architectures,
// so one probe answers for all the wgmma kernels (NSA forward and backward, dense).
bool wgmmaRuns();

}  // namespace nsa
