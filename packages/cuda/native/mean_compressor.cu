// The parameter-free `mean` compressor (NSA-SPEC.md, branch 1) and dtype conversions.
#include "cuda_error.h"
#include "ops.h"
#include "tile.cuh"

namespace nsa {

namespace {

template <class T>
__global__ void meanCompressKernel(const T* x, T* out, int B, int T_, int C, int H, int D, int l, int d) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  const size_t total = (size_t)B * C * H * D;
  if (idx >= total) return;
  const int col = idx % D;
  const int h = (idx / D) % H;
  const int i = (idx / ((size_t)D * H)) % C;
  const int b = idx / ((size_t)D * H * C);
  const T* src = x + (((size_t)b * T_ + (size_t)i * d) * H + h) * D + col;
  float acc = 0.f;
  for (int t = 0; t < l; t++) acc += toF(src[(size_t)t * H * D]);
  out[idx] = fromF<T>(acc / l);
}

template <class T>
__global__ void fromF32Kernel(const float* src, T* dst, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = fromF<T>(src[i]);
}

template <class T>
__global__ void toF32Kernel(const T* src, float* dst, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = toF(src[i]);
}

template <class T>
void launchMean(const void* x, void* out, int B, int T_, int H, int D, int l, int d, cudaStream_t stream) {
  const int C = T_ >= l ? (T_ - l) / d + 1 : 0;
  const size_t total = (size_t)B * C * H * D;
  if (total == 0) return;
  meanCompressKernel<T><<<(unsigned)((total + 255) / 256), 256, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(out), B,
                                                                            T_, C, H, D, l, d);
  NSA_LAUNCHED("meanCompressKernel");
}

}  // namespace

void meanCompress(DType dtype, const void* x, void* out, int B, int T_, int H, int D, int l, int d, cudaStream_t stream) {
  switch (dtype) {
    case DType::F32: return launchMean<float>(x, out, B, T_, H, D, l, d, stream);
    case DType::F16: return launchMean<__half>(x, out, B, T_, H, D, l, d, stream);
    case DType::BF16: return launchMean<__nv_bfloat16>(x, out, B, T_, H, D, l, d, stream);
  }
}

void convertFromF32(DType dtype, const float* src, void* dst, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned blocks = (unsigned)((n + 255) / 256);
  switch (dtype) {
    case DType::F32: NSA_CUDA(cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyDeviceToDevice, stream)); return;
    case DType::F16: fromF32Kernel<__half><<<blocks, 256, 0, stream>>>(src, static_cast<__half*>(dst), n); break;
    case DType::BF16: fromF32Kernel<__nv_bfloat16><<<blocks, 256, 0, stream>>>(src, static_cast<__nv_bfloat16*>(dst), n); break;
  }
  NSA_LAUNCHED("fromF32Kernel");
}

void convertToF32(DType dtype, const void* src, float* dst, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned blocks = (unsigned)((n + 255) / 256);
  switch (dtype) {
    case DType::F32: NSA_CUDA(cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyDeviceToDevice, stream)); return;
    case DType::F16: toF32Kernel<__half><<<blocks, 256, 0, stream>>>(static_cast<const __half*>(src), dst, n); break;
    case DType::BF16: toF32Kernel<__nv_bfloat16><<<blocks, 256, 0, stream>>>(static_cast<const __nv_bfloat16*>(src), dst, n); break;
  }
  NSA_LAUNCHED("toF32Kernel");
}

}  // namespace nsa
