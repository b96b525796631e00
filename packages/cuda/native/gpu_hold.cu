// Keeps the stream's GPU busy for a given time. Benchmarks queue their calls behind it, so the
// events around each call time the GPU's work back to back and not the host's pace of enqueuing
// (a decode step's kernels can take less time than the host needs to launch them).
#include "cuda_error.h"
#include "ops.h"

namespace nsa {

namespace {

__global__ void holdKernel(unsigned long long nanoseconds) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < nanoseconds);
}

}  // namespace

void holdGpu(double microseconds, cudaStream_t stream) {
  if (!(microseconds > 0)) return;
  holdKernel<<<1, 1, 0, stream>>>((unsigned long long)(microseconds * 1e3));
  NSA_LAUNCHED("holdKernel");
}

}  // namespace nsa
