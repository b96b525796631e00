// Fills device memory with reproducible normal random values (counter-based hash + Box-Muller),
// so benchmarks at 64k tokens need not upload gigabytes from JavaScript.
#include "cuda_error.h"
#include "ops.h"
#include "tile.cuh"

namespace nsa {

namespace {

__device__ __forceinline__ uint32_t hash32(uint32_t x) {
  x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
  return x;
}

template <class T>
__global__ void randomNormalKernel(T* dst, size_t n, uint32_t seed, float stddev, float mean) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t a = hash32((uint32_t)i * 2u + 1u ^ hash32(seed + (uint32_t)(i >> 31)));
  const uint32_t b = hash32(a ^ 0x9e3779b9U);
  const float u1 = ((a >> 8) + 1) * (1.0f / 16777217.0f), u2 = (b >> 8) * (1.0f / 16777216.0f);
  const float z = sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
  dst[i] = fromF<T>(mean + stddev * z);
}

}  // namespace

void randomNormal(DType dtype, void* dst, size_t n, uint32_t seed, float stddev, float mean, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned blocks = (unsigned)((n + 255) / 256);
  switch (dtype) {
    case DType::F32: randomNormalKernel<float><<<blocks, 256, 0, stream>>>(static_cast<float*>(dst), n, seed, stddev, mean); break;
    case DType::F16: randomNormalKernel<__half><<<blocks, 256, 0, stream>>>(static_cast<__half*>(dst), n, seed, stddev, mean); break;
    case DType::BF16:
      randomNormalKernel<__nv_bfloat16><<<blocks, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), n, seed, stddev, mean);
      break;
  }
  NSA_LAUNCHED("randomNormalKernel");
}

}  // namespace nsa
