// Scratch device memory for one operator call, stream-ordered: allocations come from the CUDA
// memory pool (cudaMallocAsync) and go back to it when the Workspace leaves scope, after the work
// queued so far on the stream.
#pragma once
#include <cuda_runtime.h>
#include <vector>
#include "cuda_error.h"

namespace nsa {

class Workspace {
 public:
  explicit Workspace(cudaStream_t stream) : stream_(stream) {}
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() {
    for (void* p : blocks_) cudaFreeAsync(p, stream_);
  }
  template <class T>
  T* alloc(size_t count) {
    void* p = nullptr;
    NSA_CUDA(cudaMallocAsync(&p, sizeof(T) * (count ? count : 1), stream_));
    blocks_.push_back(p);
    return static_cast<T*>(p);
  }
  // Copies a host vector to new device memory (pageable source: staged before the call returns).
  template <class T>
  T* upload(const std::vector<T>& v) {
    T* p = alloc<T>(v.size());
    if (!v.empty()) NSA_CUDA(cudaMemcpyAsync(p, v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice, stream_));
    return p;
  }

 private:
  cudaStream_t stream_;
  std::vector<void*> blocks_;
};

}  // namespace nsa
