// The wgmma probe: a one-thread kernel stores whether its own code was built with wgmma, which tells
// which of the fat binary's images the driver loaded (sm_90a on compute capability 9.0, else another).
#include "cuda_error.h"
#include "wgmma.cuh"
#include "wgmma_probe.h"

namespace nsa {

namespace {
__device__ int gWgmmaProbe;
__global__ void wgmmaProbeKernel() { gWgmmaProbe = NSA_WGMMA_DEVICE; }
}  // namespace

bool wgmmaRuns() {
  static signed char known[64] = {};  // per device: 0 unknown, 1 yes, 2 no
  int dev = 0;
  NSA_CUDA(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) return false;
  if (known[dev] == 0) {
    int major = 0, minor = 0;
    NSA_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    NSA_CUDA(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    int yes = 0;
    if (major == 9 && minor == 0) {
      wgmmaProbeKernel<<<1, 1>>>();
      NSA_LAUNCHED("wgmmaProbeKernel");
      NSA_CUDA(cudaMemcpyFromSymbol(&yes, gWgmmaProbe, sizeof(int)));
    }
    known[dev] = yes ? 1 : 2;
  }
  return known[dev] == 1;
}

}  // namespace nsa
