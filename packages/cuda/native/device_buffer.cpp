#include "device_buffer.h"
#include <cstring>
#include <string>
#include <vector>
#include "cuda_error.h"

namespace nsa {

Napi::FunctionReference* DeviceBuffer::constructor = nullptr;

namespace {

[[noreturn]] void rethrow(Napi::Env env, const char* what, const std::exception& e) {
  throw Napi::Error::New(env, std::string("nsa_cuda.") + what + ": " + e.what());
}

// Copies device memory to the host off the JavaScript thread and resolves with an ArrayBuffer.
// The JS thread first snapshots the data into a scratch device buffer (ordered on the stream), so
// the source may be freed or overwritten right after read() returns its promise.
class DownloadWorker : public Napi::AsyncWorker {
 public:
  DownloadWorker(Napi::Env env, const void* src, size_t bytes)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), host_(bytes) {
    NSA_CUDA(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    if (bytes) {
      NSA_CUDA(cudaMallocAsync(&scratch_, bytes, addonStream()));
      NSA_CUDA(cudaMemcpyAsync(scratch_, src, bytes, cudaMemcpyDeviceToDevice, addonStream()));
    }
    NSA_CUDA(cudaEventRecord(done_, addonStream()));
  }
  ~DownloadWorker() override {
    if (done_) cudaEventDestroy(done_);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      NSA_CUDA(cudaSetDevice(0));
      NSA_CUDA(cudaEventSynchronize(done_));
      if (scratch_) {
        NSA_CUDA(cudaMemcpy(host_.data(), scratch_, host_.size(), cudaMemcpyDeviceToHost));
        NSA_CUDA(cudaFreeAsync(scratch_, addonStream()));
        scratch_ = nullptr;
      }
    } catch (const std::exception& e) {
      SetError(std::string("nsa_cuda.download: ") + e.what());
    }
  }
  void OnOK() override {
    Napi::ArrayBuffer out = Napi::ArrayBuffer::New(Env(), host_.size());
    if (!host_.empty()) std::memcpy(out.Data(), host_.data(), host_.size());
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  cudaEvent_t done_ = nullptr;
  void* scratch_ = nullptr;
  std::vector<char> host_;
};

}  // namespace

Napi::Function DeviceBuffer::Define(Napi::Env env) {
  Napi::Function fn = DefineClass(env, "DeviceBuffer",
                                  {InstanceMethod("free", &DeviceBuffer::Free), InstanceMethod("upload", &DeviceBuffer::Upload),
                                   InstanceMethod("download", &DeviceBuffer::Download),
                                   InstanceMethod("copyFrom", &DeviceBuffer::CopyFrom),
                                   InstanceMethod("copy2d", &DeviceBuffer::Copy2D), InstanceMethod("fill", &DeviceBuffer::Fill),
                                   InstanceAccessor("bytes", &DeviceBuffer::GetBytes, nullptr)});
  constructor = new Napi::FunctionReference(Napi::Persistent(fn));
  return fn;
}

// new DeviceBuffer(bytes)
DeviceBuffer::DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {
  Napi::Env env = info.Env();
  requireDevice(env, "alloc");
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "nsa_cuda.alloc: expected a byte count");
  const double want = info[0].As<Napi::Number>().DoubleValue();
  if (want < 0 || want != (double)(size_t)want) throw Napi::RangeError::New(env, "nsa_cuda.alloc: invalid byte count");
  bytes_ = (size_t)want;
  try {
    NSA_CUDA(cudaMallocAsync(&ptr_, bytes_ ? bytes_ : 16, addonStream()));
  } catch (const std::exception& e) {
    rethrow(env, "alloc", e);
  }
}

DeviceBuffer::~DeviceBuffer() { Release(); }

void DeviceBuffer::Release() {
  if (ptr_) cudaFreeAsync(ptr_, addonStream());
  ptr_ = nullptr;
}

void* DeviceBuffer::Pointer(Napi::Env env, Napi::Value value, const char* name, bool optional) {
  if (value.IsUndefined() || value.IsNull()) {
    if (optional) return nullptr;
    throw Napi::TypeError::New(env, std::string("nsa_cuda: ") + name + " is missing");
  }
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(constructor->Value()))
    throw Napi::TypeError::New(env, std::string("nsa_cuda: ") + name + " is not a DeviceBuffer");
  DeviceBuffer* buf = Unwrap(value.As<Napi::Object>());
  if (!buf->ptr_) throw Napi::Error::New(env, std::string("nsa_cuda: ") + name + " was freed");
  return buf->ptr_;
}

Napi::Value DeviceBuffer::Free(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

Napi::Value DeviceBuffer::GetBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)bytes_); }

// upload(typedArray, offsetBytes = 0): host -> device, ordered on the stream (pageable copy).
Napi::Value DeviceBuffer::Upload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ptr_) throw Napi::Error::New(env, "nsa_cuda.upload: buffer was freed");
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "nsa_cuda.upload: expected a typed array");
  Napi::TypedArray arr = info[0].As<Napi::TypedArray>();
  const size_t offset = info.Length() > 1 ? (size_t)info[1].As<Napi::Number>().DoubleValue() : 0;
  const size_t n = arr.ByteLength();
  if (offset + n > bytes_) throw Napi::RangeError::New(env, "nsa_cuda.upload: data does not fit the buffer");
  const char* src = static_cast<const char*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
  try {
    if (n) NSA_CUDA(cudaMemcpyAsync(static_cast<char*>(ptr_) + offset, src, n, cudaMemcpyHostToDevice, addonStream()));
    // A pageable source is staged before cudaMemcpyAsync returns, so the array may change now.
  } catch (const std::exception& e) {
    rethrow(env, "upload", e);
  }
  return env.Undefined();
}

// download(bytes = all): Promise<ArrayBuffer>, waits off the JavaScript thread.
Napi::Value DeviceBuffer::Download(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ptr_) throw Napi::Error::New(env, "nsa_cuda.download: buffer was freed");
  const size_t n = info.Length() > 0 && info[0].IsNumber() ? (size_t)info[0].As<Napi::Number>().DoubleValue() : bytes_;
  if (n > bytes_) throw Napi::RangeError::New(env, "nsa_cuda.download: more bytes than the buffer holds");
  DownloadWorker* worker = nullptr;
  try {
    worker = new DownloadWorker(env, ptr_, n);
  } catch (const std::exception& e) {
    rethrow(env, "download", e);
  }
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

// copyFrom(src, dstOffset, srcOffset, bytes): device -> device.
Napi::Value DeviceBuffer::CopyFrom(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  void* src = Pointer(env, info[0], "copyFrom source");
  DeviceBuffer* s = Unwrap(info[0].As<Napi::Object>());
  const size_t dstOff = (size_t)info[1].As<Napi::Number>().DoubleValue();
  const size_t srcOff = (size_t)info[2].As<Napi::Number>().DoubleValue();
  const size_t n = (size_t)info[3].As<Napi::Number>().DoubleValue();
  if (!ptr_ || dstOff + n > bytes_ || srcOff + n > s->bytes_) throw Napi::RangeError::New(env, "nsa_cuda.copyFrom: out of range");
  try {
    if (n)
      NSA_CUDA(cudaMemcpyAsync(static_cast<char*>(ptr_) + dstOff, static_cast<char*>(src) + srcOff, n, cudaMemcpyDeviceToDevice,
                               addonStream()));
  } catch (const std::exception& e) {
    rethrow(env, "copyFrom", e);
  }
  return env.Undefined();
}

// copy2d(src, dstOffset, dstPitch, srcOffset, srcPitch, widthBytes, rows): strided device copy
// (cache appends: B rows of t tokens into B rows of capacity tokens).
Napi::Value DeviceBuffer::Copy2D(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  void* src = Pointer(env, info[0], "copy2d source");
  DeviceBuffer* s = Unwrap(info[0].As<Napi::Object>());
  auto num = [&](int i) { return (size_t)info[i].As<Napi::Number>().DoubleValue(); };
  const size_t dstOff = num(1), dstPitch = num(2), srcOff = num(3), srcPitch = num(4), width = num(5), rows = num(6);
  if (rows == 0 || width == 0) return env.Undefined();
  if (!ptr_ || dstOff + (rows - 1) * dstPitch + width > bytes_ || srcOff + (rows - 1) * srcPitch + width > s->bytes_)
    throw Napi::RangeError::New(env, "nsa_cuda.copy2d: out of range");
  try {
    NSA_CUDA(cudaMemcpy2DAsync(static_cast<char*>(ptr_) + dstOff, dstPitch, static_cast<char*>(src) + srcOff, srcPitch, width, rows,
                               cudaMemcpyDeviceToDevice, addonStream()));
  } catch (const std::exception& e) {
    rethrow(env, "copy2d", e);
  }
  return env.Undefined();
}

// fill(byte): memset.
Napi::Value DeviceBuffer::Fill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ptr_) throw Napi::Error::New(env, "nsa_cuda.fill: buffer was freed");
  const int value = info.Length() > 0 ? info[0].As<Napi::Number>().Int32Value() : 0;
  try {
    NSA_CUDA(cudaMemsetAsync(ptr_, value, bytes_, addonStream()));
  } catch (const std::exception& e) {
    rethrow(env, "fill", e);
  }
  return env.Undefined();
}

}  // namespace nsa
