// Host-side entry points of the kernels, shared by the Node-API layer (addon.cpp) and the .cu files.
// Every pointer is device memory; every launch goes to `stream`; errors are thrown as CudaError.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace nsa {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// Sequences: see SeqTable in tile.cuh. `table` is one device int buffer holding
// qStart[S+1], kBase[S], cBase[S], pos0[S], selBase[S+1] (selection-block offsets, backward only).
struct SeqArgs {
  const int* table;  // device copy
  const int* host;   // host copy (tile tables are built from it)
  int S;
  int rows;       // query rows in all
  int maxKeys;    // longest key length of any sequence (positions 0 .. maxKeys-1)
};

struct NSAConfigArgs {
  int l, d, ls, n, initialBlocks, localBlocks, window;
  int HQ, H, Dk, Dv;
  float scale;
};

struct NSAForwardArgs {
  DType dtype;
  NSAConfigArgs cfg;
  SeqArgs seq;
  const void *q, *kCmp, *vCmp, *kSlc, *vSlc, *kWin, *vWin, *gates;
  void* out;
  void *oCmp, *oSlc, *oWin;  // per-branch outputs [rows][HQ][Dv]; oSlc/oWin may be null (decode)
  float* lse;                // [rows][HQ][3] log2-domain, may be null (decode)
  const int* blockIn;        // caller's blocks [rows][H][n] or null
  int* blockOut;             // [rows][H][n]
};

struct NSABackwardArgs {
  NSAForwardArgs fwd;        // the same inputs; out unused
  const void* dOut;
  void *dq, *dkCmp, *dvCmp, *dkSlc, *dvSlc, *dkWin, *dvWin, *dGates;
  const int* blocks;         // the forward's blockOut
  int keyRows;               // rows of the raw key tensors (= rows for training)
  int cmpRows;               // rows of kCmp
};

struct AttentionArgs {
  DType dtype;
  SeqArgs seq;
  int HQ, H, Dk, Dv;
  float scale;
  const void *q, *k, *v;
  void* out;
  float* lse;                // [rows][HQ] or null
};

struct AttentionBackwardArgs {
  AttentionArgs fwd;
  const void* dOut;
  void *dq, *dk, *dv;
  int keyRows;
};

void nsaForward(const NSAForwardArgs& a, cudaStream_t stream);
void nsaBackward(const NSABackwardArgs& a, cudaStream_t stream);
// Split-K decode path of nsaForward (no saved outputs, too few rows to fill the GPU); false = not taken.
bool nsaDecodeSplit(const NSAForwardArgs& a, cudaStream_t stream);
// Register-resident (flash-attention-2 layout) NSA forward for 16-bit, G = 16, D in {64, 128}; false = not taken.
bool nsaForwardRegisters(const NSAForwardArgs& a, cudaStream_t stream);
// Register-resident (flash-attention-2 layout) NSA backward for 16-bit, G = 16, Dk = Dv in {64, 128}
// (training rows: every sequence starts at position 0); false = not taken.
bool nsaBackwardRegisters(const NSABackwardArgs& a, cudaStream_t stream);
void attentionForward(const AttentionArgs& a, cudaStream_t stream);
// Register-resident (flash-attention-2 layout) dense forward for 16-bit prefill shapes; false = not taken.
bool denseForwardRegisters(const AttentionArgs& a, cudaStream_t stream);
// Hopper wgmma dense forward (sm_90a build on compute capability 9.0, 16-bit, Dk = Dv in {64, 128});
// false = not taken (NSA_DENSE_WGMMA=0 turns it off). denseForwardRegisters tries it first.
bool denseForwardWgmma(const AttentionArgs& a, cudaStream_t stream);
void attentionBackward(const AttentionBackwardArgs& a, cudaStream_t stream);
// Register-resident (flash-attention-2 layout) dense backward for 16-bit, Dk = Dv in {64, 128}; false = not taken.
bool denseBackwardRegisters(const AttentionBackwardArgs& b, cudaStream_t stream);
// Mean compressor: out[b, i, h, :] = mean of x[b, i*d .. i*d+l-1, h, :]; x [B, T, H, D], out [B, C, H, D].
void meanCompress(DType dtype, const void* x, void* out, int B, int T, int H, int D, int l, int d, cudaStream_t stream);
// Fills n elements with mean + stddev * N(0, 1), reproducible from seed (benchmarks).
void randomNormal(DType dtype, void* dst, size_t n, uint32_t seed, float stddev, float mean, cudaStream_t stream);

// Benchmarks: a one-thread kernel that keeps the stream busy for `microseconds` (gpu_hold.cu).
void holdGpu(double microseconds, cudaStream_t stream);
// Converts n elements between float32 and dtype on the device.
void convertFromF32(DType dtype, const float* src, void* dst, size_t n, cudaStream_t stream);
void convertToF32(DType dtype, const void* src, float* dst, size_t n, cudaStream_t stream);

}  // namespace nsa
