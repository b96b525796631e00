// Every CUDA status becomes a C++ exception that names the call; addon.cpp turns it into a JS Error.
#pragma once
#include <cuda_runtime.h>
#include <stdexcept>
#include <string>

namespace nsa {

struct CudaError : std::runtime_error {
  CudaError(const std::string& call, cudaError_t status)
      : std::runtime_error(call + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")"),
        status(status) {}
  cudaError_t status;
};

inline void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) throw CudaError(call, status);
}

}  // namespace nsa

#define NSA_CUDA(call) ::nsa::check((call), #call)
// After a kernel launch: configuration errors surface here, execution errors at the next sync.
#define NSA_LAUNCHED(name) ::nsa::check(cudaGetLastError(), "launch of " name)
