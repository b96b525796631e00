// Node-API entry of nsa_cuda.node. Operators enqueue their kernels on the addon's stream and return
// at once; `synchronize()` resolves (off the JavaScript thread) when the queued work has finished.
// Every CUDA failure becomes a JS Error whose message starts with "nsa_cuda.<call>:".
#include <napi.h>
#include <cuda_runtime.h>
#include <string>
#include <vector>
#include "cuda_error.h"
#include "device_buffer.h"
#include "ops.h"

namespace nsa {

namespace {

cudaStream_t gStream = nullptr;
bool gReady = false;
std::vector<cudaEvent_t> gEvents;

std::string describeDeviceError(cudaError_t status) {
  switch (status) {
    case cudaErrorNoDevice:
      return "no CUDA device: the NVIDIA driver is loaded but sees no GPU (check CUDA_VISIBLE_DEVICES and nvidia-smi)";
    case cudaErrorInsufficientDriver:
      return "no usable NVIDIA driver: none is installed, or it is older than this addon's CUDA 13.0 runtime "
             "(install driver >= 580; nvidia-smi shows the version)";
    default:
      return std::string("CUDA device query failed: ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
  }
}

int num(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("nsa_cuda: field ") + key + " must be a number");
  return v.As<Napi::Number>().Int32Value();
}
float fnum(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("nsa_cuda: field ") + key + " must be a number");
  return v.As<Napi::Number>().FloatValue();
}
void* ptr(const Napi::Object& o, const char* key, bool optional = false) {
  return DeviceBuffer::Pointer(o.Env(), o.Get(key), key, optional);
}

SeqArgs seqArgs(const Napi::Object& o) {
  Napi::Value v = o.Get("seq");
  if (!v.IsObject()) throw Napi::TypeError::New(o.Env(), "nsa_cuda: seq is missing");
  Napi::Object s = v.As<Napi::Object>();
  Napi::Value host = s.Get("host");
  if (!host.IsTypedArray() || host.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(o.Env(), "nsa_cuda: seq.host must be an Int32Array");
  SeqArgs a;
  a.table = static_cast<const int*>(ptr(s, "table"));
  a.host = host.As<Napi::Int32Array>().Data();
  a.S = num(s, "S");
  a.rows = num(s, "rows");
  a.maxKeys = num(s, "maxKeys");
  return a;
}

DType dtypeOf(const Napi::Object& o) {
  const int d = num(o, "dtype");
  if (d < 0 || d > 2) throw Napi::TypeError::New(o.Env(), "nsa_cuda: dtype must be 0 (f32), 1 (f16) or 2 (bf16)");
  return static_cast<DType>(d);
}

NSAForwardArgs nsaArgs(const Napi::Object& o) {
  NSAForwardArgs a{};
  a.dtype = dtypeOf(o);
  Napi::Object c = o.Get("cfg").As<Napi::Object>();
  a.cfg = {num(c, "l"), num(c, "d"), num(c, "ls"), num(c, "n"), num(c, "initialBlocks"), num(c, "localBlocks"), num(c, "window"),
           num(c, "HQ"), num(c, "H"), num(c, "Dk"), num(c, "Dv"), fnum(c, "scale")};
  a.seq = seqArgs(o);
  a.q = ptr(o, "q");
  a.kCmp = ptr(o, "kCmp");
  a.vCmp = ptr(o, "vCmp");
  a.kSlc = ptr(o, "kSlc");
  a.vSlc = ptr(o, "vSlc");
  a.kWin = ptr(o, "kWin");
  a.vWin = ptr(o, "vWin");
  a.gates = ptr(o, "gates");
  a.out = ptr(o, "out", true);
  a.oCmp = ptr(o, "oCmp");
  a.oSlc = ptr(o, "oSlc", true);
  a.oWin = ptr(o, "oWin", true);
  a.lse = static_cast<float*>(ptr(o, "lse", true));
  a.blockIn = static_cast<const int*>(ptr(o, "blockIn", true));
  a.blockOut = static_cast<int*>(ptr(o, "blockOut", true));
  return a;
}

AttentionArgs attnArgs(const Napi::Object& o) {
  AttentionArgs a{};
  a.dtype = dtypeOf(o);
  a.seq = seqArgs(o);
  a.HQ = num(o, "HQ");
  a.H = num(o, "H");
  a.Dk = num(o, "Dk");
  a.Dv = num(o, "Dv");
  a.scale = fnum(o, "scale");
  a.q = ptr(o, "q");
  a.k = ptr(o, "k");
  a.v = ptr(o, "v");
  a.out = ptr(o, "out");
  a.lse = static_cast<float*>(ptr(o, "lse", true));
  return a;
}

// Runs `body`, turning any failure into a JS error that names the call.
template <class F>
Napi::Value guarded(const Napi::CallbackInfo& info, const char* name, F body) {
  Napi::Env env = info.Env();
  requireDevice(env, name);
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, std::string("nsa_cuda.") + name + ": expected an argument object");
  try {
    body(info[0].As<Napi::Object>());
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("nsa_cuda.") + name + ": " + e.what());
  }
  return env.Undefined();
}

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  out.Set("driverVersion", driver);
  out.Set("runtimeVersion", runtime);
  if (status != cudaSuccess || count == 0) {
    cudaGetLastError();
    out.Set("available", false);
    out.Set("count", 0);
    out.Set("reason", describeDeviceError(status == cudaSuccess ? cudaErrorNoDevice : status));
    return out;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    out.Set("available", false);
    out.Set("count", count);
    out.Set("reason", "cudaGetDeviceProperties failed for device 0");
    return out;
  }
  out.Set("available", prop.major >= 8);
  out.Set("count", count);
  out.Set("name", std::string(prop.name));
  out.Set("major", prop.major);
  out.Set("minor", prop.minor);
  out.Set("multiprocessors", prop.multiProcessorCount);
  out.Set("memoryBytes", (double)prop.totalGlobalMem);
  out.Set("reason", prop.major >= 8 ? std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ")"
                                     : std::string(prop.name) + " has compute capability " + std::to_string(prop.major) + "." +
                                           std::to_string(prop.minor) + "; this addon is built for sm_80 and sm_90");
  return out;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (gReady) return env.Undefined();
  try {
    NSA_CUDA(cudaSetDevice(0));
    NSA_CUDA(cudaStreamCreateWithFlags(&gStream, cudaStreamNonBlocking));
    // Keep freed pool memory for reuse instead of returning it to the driver at every sync.
    cudaMemPool_t pool;
    NSA_CUDA(cudaDeviceGetDefaultMemPool(&pool, 0));
    uint64_t threshold = UINT64_MAX;
    NSA_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("nsa_cuda.init: ") + e.what());
  }
  gReady = true;
  return env.Undefined();
}

class SyncWorker : public Napi::AsyncWorker {
 public:
  explicit SyncWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {
    NSA_CUDA(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    NSA_CUDA(cudaEventRecord(event_, gStream));
  }
  ~SyncWorker() override { cudaEventDestroy(event_); }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    const cudaError_t status = cudaEventSynchronize(event_);
    if (status != cudaSuccess) SetError(CudaError("nsa_cuda.synchronize: cudaEventSynchronize", status).what());
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  cudaEvent_t event_ = nullptr;
};

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireDevice(env, "synchronize");
  SyncWorker* w = nullptr;
  try {
    w = new SyncWorker(env);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("nsa_cuda.synchronize: ") + e.what());
  }
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// Timing events for benchmarks: recordEvent() -> id; elapsedMs(a, b) after synchronize().
Napi::Value RecordEvent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireDevice(env, "recordEvent");
  cudaEvent_t ev;
  try {
    NSA_CUDA(cudaEventCreate(&ev));
    NSA_CUDA(cudaEventRecord(ev, gStream));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("nsa_cuda.recordEvent: ") + e.what());
  }
  gEvents.push_back(ev);
  return Napi::Number::New(env, (double)(gEvents.size() - 1));
}

Napi::Value ElapsedMs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t a = (size_t)info[0].As<Napi::Number>().Int64Value(), b = (size_t)info[1].As<Napi::Number>().Int64Value();
  if (a >= gEvents.size() || b >= gEvents.size()) throw Napi::RangeError::New(env, "nsa_cuda.elapsedMs: unknown event");
  float ms = 0.f;
  try {
    NSA_CUDA(cudaEventElapsedTime(&ms, gEvents[a], gEvents[b]));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("nsa_cuda.elapsedMs: ") + e.what());
  }
  return Napi::Number::New(env, ms);
}

Napi::Value ClearEvents(const Napi::CallbackInfo& info) {
  for (cudaEvent_t ev : gEvents) cudaEventDestroy(ev);
  gEvents.clear();
  return info.Env().Undefined();
}

Napi::Value NsaForward(const Napi::CallbackInfo& info) {
  return guarded(info, "nsaForward", [](const Napi::Object& o) { nsaForward(nsaArgs(o), gStream); });
}

Napi::Value NsaBackward(const Napi::CallbackInfo& info) {
  return guarded(info, "nsaBackward", [](const Napi::Object& o) {
    NSABackwardArgs a{};
    a.fwd = nsaArgs(o);
    a.dOut = ptr(o, "dOut");
    a.dq = ptr(o, "dq");
    a.dkCmp = ptr(o, "dkCmp");
    a.dvCmp = ptr(o, "dvCmp");
    a.dkSlc = ptr(o, "dkSlc");
    a.dvSlc = ptr(o, "dvSlc");
    a.dkWin = ptr(o, "dkWin");
    a.dvWin = ptr(o, "dvWin");
    a.dGates = ptr(o, "dGates");
    a.blocks = static_cast<const int*>(ptr(o, "blocks"));
    if (!a.fwd.lse || !a.fwd.oSlc || !a.fwd.oWin) throw std::runtime_error("the forward's saved lse/oSlc/oWin are required");
    nsaBackward(a, gStream);
  });
}

Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  return guarded(info, "attentionForward", [](const Napi::Object& o) { attentionForward(attnArgs(o), gStream); });
}

Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  return guarded(info, "attentionBackward", [](const Napi::Object& o) {
    AttentionBackwardArgs b{};
    b.fwd = attnArgs(o);
    if (!b.fwd.lse) throw std::runtime_error("the forward's lse is required");
    b.dOut = ptr(o, "dOut");
    b.dq = ptr(o, "dq");
    b.dk = ptr(o, "dk");
    b.dv = ptr(o, "dv");
    attentionBackward(b, gStream);
  });
}

// meanCompress({dtype, x, out, B, T, H, D, l, d})
Napi::Value MeanCompress(const Napi::CallbackInfo& info) {
  return guarded(info, "meanCompress", [](const Napi::Object& o) {
    meanCompress(dtypeOf(o), ptr(o, "x"), ptr(o, "out"), num(o, "B"), num(o, "T"), num(o, "H"), num(o, "D"), num(o, "l"), num(o, "d"),
                 gStream);
  });
}

// convert({dtype, src, dst, n, toF32}): float32 <-> dtype on the device.
Napi::Value Convert(const Napi::CallbackInfo& info) {
  return guarded(info, "convert", [](const Napi::Object& o) {
    const size_t n = (size_t)o.Get("n").As<Napi::Number>().DoubleValue();
    if (o.Get("toF32").ToBoolean())
      convertToF32(dtypeOf(o), ptr(o, "src"), static_cast<float*>(ptr(o, "dst")), n, gStream);
    else
      convertFromF32(dtypeOf(o), static_cast<const float*>(ptr(o, "src")), ptr(o, "dst"), n, gStream);
  });
}

// randomNormal({dtype, dst, n, seed, stddev = 1, mean = 0})
Napi::Value RandomNormal(const Napi::CallbackInfo& info) {
  return guarded(info, "randomNormal", [](const Napi::Object& o) {
    const size_t n = (size_t)o.Get("n").As<Napi::Number>().DoubleValue();
    const float stddev = o.Has("stddev") ? fnum(o, "stddev") : 1.f;
    const float mean = o.Has("mean") ? fnum(o, "mean") : 0.f;
    randomNormal(dtypeOf(o), ptr(o, "dst"), n, (uint32_t)num(o, "seed"), stddev, mean, gStream);
  });
}

// holdGpu({us}): keeps the GPU busy for `us` microseconds, so that calls queued after it run back to
// back and their events time the GPU, not the host's enqueuing (benchmarks).
Napi::Value HoldGpu(const Napi::CallbackInfo& info) {
  return guarded(info, "holdGpu", [](const Napi::Object& o) {
    const double us = o.Get("us").ToNumber().DoubleValue();
    if (!(us >= 0 && us <= 1e7)) throw std::runtime_error("us must be a number of microseconds in [0, 1e7]");
    holdGpu(us, gStream);
  });
}

}  // namespace

cudaStream_t addonStream() { return gStream; }

void requireDevice(Napi::Env env, const char* what) {
  if (!gReady) throw Napi::Error::New(env, std::string("nsa_cuda.") + what + ": call init() first (no CUDA device initialised)");
}

Napi::Object Module(Napi::Env env, Napi::Object exports) {
  exports.Set("DeviceBuffer", DeviceBuffer::Define(env));
  exports.Set("deviceInfo", Napi::Function::New(env, DeviceInfo));
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize));
  exports.Set("recordEvent", Napi::Function::New(env, RecordEvent));
  exports.Set("elapsedMs", Napi::Function::New(env, ElapsedMs));
  exports.Set("clearEvents", Napi::Function::New(env, ClearEvents));
  exports.Set("nsaForward", Napi::Function::New(env, NsaForward));
  exports.Set("nsaBackward", Napi::Function::New(env, NsaBackward));
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward));
  exports.Set("meanCompress", Napi::Function::New(env, MeanCompress));
  exports.Set("convert", Napi::Function::New(env, Convert));
  exports.Set("randomNormal", Napi::Function::New(env, RandomNormal));
  exports.Set("holdGpu", Napi::Function::New(env, HoldGpu));
  return exports;
}

}  // namespace nsa

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return nsa::Module(env, exports); }

NODE_API_MODULE(nsa_cuda, InitAddon)
