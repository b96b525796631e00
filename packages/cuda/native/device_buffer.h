// A JavaScript handle to device memory (stream-ordered allocation). JS owns it: `free()` releases it
// at once (after queued work), and a forgotten handle is released when it is garbage collected.
#pragma once
#include <napi.h>
#include <cuda_runtime.h>

namespace nsa {

// The addon's one CUDA stream: every kernel, copy and allocation is ordered on it.
cudaStream_t addonStream();
// Throws a JS error naming `what` unless a device was initialised.
void requireDevice(Napi::Env env, const char* what);

class DeviceBuffer : public Napi::ObjectWrap<DeviceBuffer> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::FunctionReference* constructor;
  explicit DeviceBuffer(const Napi::CallbackInfo& info);
  ~DeviceBuffer() override;

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  // Unwraps `value` (a DeviceBuffer, or null/undefined -> nullptr); throws a JS error naming `name`.
  static void* Pointer(Napi::Env env, Napi::Value value, const char* name, bool optional = false);

 private:
  Napi::Value Free(const Napi::CallbackInfo& info);
  Napi::Value Upload(const Napi::CallbackInfo& info);
  Napi::Value Download(const Napi::CallbackInfo& info);
  Napi::Value CopyFrom(const Napi::CallbackInfo& info);
  Napi::Value Copy2D(const Napi::CallbackInfo& info);
  Napi::Value Fill(const Napi::CallbackInfo& info);
  Napi::Value GetBytes(const Napi::CallbackInfo& info);
  void Release();

  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace nsa
