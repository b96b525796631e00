// NSA decode with split-K, for steps whose (query, KV head) pairs are too few to fill the GPU
// (batch 1 or 16, one new token): the compressed keys, selected blocks and window are spread over
// many blocks whose partial softmax results are merged in a fixed order (deterministic).
//   1. cmp partials over chunks of compressed keys -> merge: o_cmp, lse_cmp
//   2. selection-score partials over the same chunks (probabilities from lse_cmp), per split
//   3. per (query, KV head): sum the partial scores in split order, top-n (or the caller's blocks)
//   4. selected-block and window partials, one branch per block
//   5. merge both branches and the gated sum
#include <algorithm>
#include <cstdlib>
#include <string>
#include "cuda_error.h"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "split_k.cuh"
#include "workspace.h"

namespace nsa {

namespace {

struct DecodePlan {
  int RG, BK, cmpSplits, slcSplits, winSplits, nbMax;
  size_t rowsHeads;
};

// Stage 1 (scores = false) and stage 2 (scores = true) over this block's chunk of compressed keys.
template <class T>
__global__ void __launch_bounds__(kThreads) cmpKernel(NSAForwardArgs a, DecodePlan p, float* partial, const float* lseCmp,
                                                      float* scorePart, bool scores) {
  extern __shared__ __align__(16) char smemRaw[];
  const NSAConfigArgs& c = a.cfg;
  const int G = c.HQ / c.H, row = blockIdx.x, g = blockIdx.y, z = blockIdx.z, BK = p.BK;
  AttendSmem<T> sm;
  sm.carve(smemRaw, p.RG, BK, c.Dk, c.Dv, false, true);
  const RowInfo ri = rowInfo(a, row);
  const int tiles = (ri.nc + BK - 1) / BK, per = (tiles + p.cmpSplits - 1) / p.cmpSplits;
  const int t0 = min(tiles, z * per), t1 = min(tiles, t0 + per);
  const int hq0 = g * G;
  const float sl2 = c.scale * kLog2e;
  for (int r = threadIdx.x; r < p.RG; r += blockDim.x) sm.rpos[r] = 0;
  for (int j = threadIdx.x; j < BK; j += blockDim.x) sm.kposBuf[0][j] = sm.kposBuf[1][j] = 0;
  loadHeads<T>(sm.q, sm.ldq, p.RG, G, static_cast<const T*>(a.q), (size_t)row * c.HQ * c.Dk, hq0, c.Dk);
  auto fill = [&](int t, int* krow, int*) {
    for (int j = threadIdx.x; j < BK; j += blockDim.x) {
      const int i = (t0 + t) * BK + j;
      krow[j] = i < ri.nc ? ri.cBase + i : -1;
    }
  };
  const T* K = static_cast<const T*>(a.kCmp);
  const T* V = static_cast<const T*>(a.vCmp);
  if (!scores) {
    beginBranch(sm);
    forEachTile(sm, t1 - t0, K, V, c.H, g, true, fill, [&] { attendTile(sm, G, sl2); });
    __syncthreads();
    storePartial(sm, G, partial + (size_t)z * p.rowsHeads * (c.Dv + 2), (size_t)row * c.HQ + hq0, c.Dv);
    return;
  }
  const int perCmp = c.l / c.d, perSel = c.ls / c.d;
  float* part = scorePart + (((size_t)z * a.seq.rows + row) * c.H + g) * p.nbMax;
  for (int r = threadIdx.x; r < G; r += blockDim.x) sm.lse[r] = lseCmp[(size_t)row * c.HQ + hq0 + r];
  int tile = t0 - 1;
  forEachTile(sm, t1 - t0, K, V, c.H, g, false, fill, [&] {
    tile++;
    tileScores(sm);
    __syncthreads();
    for (int j = threadIdx.x; j < BK; j += blockDim.x) {
      float mass = 0.f;
      if (sm.krow[j] >= 0)
        for (int r = 0; r < G; r++) mass += exp2f(sm.s[r * sm.lds + j] * sl2 - sm.lse[r]);
      sm.pk[j] = mass;
    }
    __syncthreads();
    const int i0 = tile * BK, i1 = min(ri.nc, i0 + BK) - 1;
    const int jLo = i0 / perSel, jHi = min(ri.cur, (i1 + perCmp - 1) / perSel);
    for (int j = jLo + threadIdx.x; j <= jHi; j += blockDim.x) {
      const int iFirst = max(i0, j * perSel - perCmp + 1), iLast = min(i1, (j + 1) * perSel - 1);
      float acc = 0.f;
      for (int i = iFirst; i <= iLast; i++) {
        const int w = min(i + perCmp, (j + 1) * perSel) - max(i, j * perSel);
        acc += (float)w * sm.pk[i - i0];
      }
      part[j] += acc;  // tiles of one block run in order; the buffer starts at zero
    }
    __syncthreads();
  });
}

template <class T>
__global__ void combineCmpKernel(const float* partial, DecodePlan p, int Dv, T* oCmp, float* lseCmp) {
  const size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (w >= p.rowsHeads) return;
  mergePartials(partial + w * (Dv + 2), p.cmpSplits, p.rowsHeads * (Dv + 2), Dv, lseCmp + w,
                [&](int col, float v) { oCmp[w * Dv + col] = fromF<T>(v); });
}

// Stage 3: one block per (query, KV head).
__global__ void __launch_bounds__(kThreads) selectKernel(NSAForwardArgs a, DecodePlan p, const float* scorePart) {
  extern __shared__ __align__(16) char smemRaw[];
  const NSAConfigArgs& c = a.cfg;
  const int row = blockIdx.x, g = blockIdx.y;
  float* scores = reinterpret_cast<float*>(smemRaw);
  int* chosen = reinterpret_cast<int*>(scores + p.nbMax);
  int* blk = chosen + p.nbMax;
  int* misc = blk + c.n;
  float* red = reinterpret_cast<float*>(misc + 4);
  const RowInfo ri = rowInfo(a, row);
  const size_t at = ((size_t)row * c.H + g) * c.n;
  if (a.blockIn) {
    for (int k = threadIdx.x; k < c.n; k += blockDim.x) a.blockOut[at + k] = a.blockIn[at + k];
    return;
  }
  const int nb = ri.cur + 1;
  for (int j = threadIdx.x; j < nb; j += blockDim.x) {
    float s = 0.f;
    for (int z = 0; z < p.cmpSplits; z++) s += scorePart[(((size_t)z * a.seq.rows + row) * c.H + g) * p.nbMax + j];
    scores[j] = s;
    chosen[j] = 0;
  }
  __syncthreads();
  selectTopN(scores, chosen, blk, misc, nb, ri.cur, c.n, c.initialBlocks, c.localBlocks, red);
  __syncthreads();
  for (int k = threadIdx.x; k < c.n; k += blockDim.x) a.blockOut[at + k] = blk[k];
}

// Stage 4: blocks z < slcSplits take chunks of the selected tokens, the others chunks of the window.
template <class T>
__global__ void __launch_bounds__(kThreads) slcWinKernel(NSAForwardArgs a, DecodePlan p, float* partial) {
  extern __shared__ __align__(16) char smemRaw[];
  const NSAConfigArgs& c = a.cfg;
  const int G = c.HQ / c.H, row = blockIdx.x, g = blockIdx.y, z = blockIdx.z, BK = p.BK;
  AttendSmem<T> sm;
  sm.carve(smemRaw, p.RG, BK, c.Dk, c.Dv, false, true);
  int* blk = sm.ints;
  int* pre = blk + c.n;
  const RowInfo ri = rowInfo(a, row);
  const bool slc = z < p.slcSplits;
  const int splits = slc ? p.slcSplits : p.winSplits, zz = slc ? z : z - p.slcSplits;
  for (int k = threadIdx.x; k < c.n; k += blockDim.x) blk[k] = a.blockOut[((size_t)row * c.H + g) * c.n + k];
  for (int r = threadIdx.x; r < p.RG; r += blockDim.x) sm.rpos[r] = 0;
  for (int j = threadIdx.x; j < BK; j += blockDim.x) sm.kposBuf[0][j] = sm.kposBuf[1][j] = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (int k = 0; k < c.n; k++) {
      pre[k] = total;
      const int j = blk[k];
      total += (j >= 0 && j <= ri.cur) ? min(c.ls, ri.pos - j * c.ls + 1) : 0;
    }
    pre[c.n] = total;
  }
  __syncthreads();
  const int ws = max(0, ri.pos - c.window + 1);
  const int tokens = slc ? pre[c.n] : ri.pos - ws + 1;
  const int tiles = (tokens + BK - 1) / BK, per = (tiles + splits - 1) / splits;
  const int t0 = min(tiles, zz * per), t1 = min(tiles, t0 + per);
  const int hq0 = g * G;
  loadHeads<T>(sm.q, sm.ldq, p.RG, G, static_cast<const T*>(a.q), (size_t)row * c.HQ * c.Dk, hq0, c.Dk);
  beginBranch(sm);
  auto fill = [&](int t, int* krow, int*) {
    for (int j = threadIdx.x; j < BK; j += blockDim.x) {
      const int e = (t0 + t) * BK + j;
      int kr = -1;
      if (e < tokens) {
        if (slc) {
          int k = 0;
          while (pre[k + 1] <= e) k++;
          kr = ri.kBase + blk[k] * c.ls + (e - pre[k]);
        } else {
          kr = ri.kBase + ws + e;
        }
      }
      krow[j] = kr;
    }
  };
  const T* K = static_cast<const T*>(slc ? a.kSlc : a.kWin);
  const T* V = static_cast<const T*>(slc ? a.vSlc : a.vWin);
  const float sl2 = c.scale * kLog2e;
  forEachTile(sm, t1 - t0, K, V, c.H, g, true, fill, [&] { attendTile(sm, G, sl2); });
  __syncthreads();
  storePartial(sm, G, partial + (size_t)z * p.rowsHeads * (c.Dv + 2), (size_t)row * c.HQ + hq0, c.Dv);
}

// Stage 5: one warp per (query, head).
template <class T>
__global__ void finalKernel(NSAForwardArgs a, DecodePlan p, const float* partial) {
  const size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (w >= p.rowsHeads) return;
  const int Dv = a.cfg.Dv;
  const size_t stride = p.rowsHeads * (Dv + 2);
  const T* gates = static_cast<const T*>(a.gates);
  const float gc = toF(gates[w * 3]), gs = toF(gates[w * 3 + 1]), gw = toF(gates[w * 3 + 2]);
  const T* oCmp = static_cast<const T*>(a.oCmp);
  T* out = static_cast<T*>(a.out);
  // Each lane owns columns lane, lane + 32, ... (Dv <= 256: at most 8).
  float acc[8];
  mergePartials(partial + w * (Dv + 2), p.slcSplits, stride, Dv, nullptr, [&](int col, float v) { acc[col >> 5] = gs * v; });
  mergePartials(partial + (size_t)p.slcSplits * stride + w * (Dv + 2), p.winSplits, stride, Dv, nullptr,
                [&](int col, float v) { acc[col >> 5] += gw * v; });
  for (int col = threadIdx.x & 31; col < Dv; col += 32) out[w * Dv + col] = fromF<T>(acc[col >> 5] + gc * toF(oCmp[w * Dv + col]));
}

template <class T>
void launchDecode(const NSAForwardArgs& a, int smCount, cudaStream_t stream) {
  const NSAConfigArgs& c = a.cfg;
  const int G = c.HQ / c.H, rows = a.seq.rows;
  DecodePlan p;
  p.BK = sizeof(T) == 4 ? 32 : 64;
  p.RG = roundUp(G, 16);
  p.nbMax = (a.seq.maxKeys + c.ls - 1) / c.ls + 1;
  p.rowsHeads = (size_t)rows * c.HQ;
  const int pairs = rows * c.H;
  const int want = std::max(1, 4 * smCount / pairs);
  const int cmpTiles = (compressedCount(a.seq.maxKeys, c.l, c.d) + p.BK - 1) / p.BK;
  p.cmpSplits = std::max(1, std::min(want, cmpTiles));
  p.slcSplits = std::max(1, std::min(want, (c.n * c.ls + p.BK - 1) / p.BK));
  p.winSplits = std::max(1, std::min(want, (c.window + p.BK - 1) / p.BK));
  const size_t smem = AttendSmem<T>::bytes(p.RG, p.BK, c.Dk, c.Dv, 2 * c.n + 8, false, true);
  Workspace ws(stream);
  float* cmpPart = ws.alloc<float>((size_t)p.cmpSplits * p.rowsHeads * (c.Dv + 2));
  float* lseCmp = ws.alloc<float>(p.rowsHeads);
  NSA_CUDA(cudaFuncSetAttribute(cmpKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  NSA_CUDA(cudaFuncSetAttribute(slcWinKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  cmpKernel<T><<<dim3(rows, c.H, p.cmpSplits), kThreads, smem, stream>>>(a, p, cmpPart, nullptr, nullptr, false);
  NSA_LAUNCHED("nsa decode cmpKernel");
  const unsigned warpsBlocks = (unsigned)((p.rowsHeads * 32 + 255) / 256);
  combineCmpKernel<T><<<warpsBlocks, 256, 0, stream>>>(cmpPart, p, c.Dv, static_cast<T*>(a.oCmp), lseCmp);
  NSA_LAUNCHED("nsa decode combineCmpKernel");
  if (!a.blockIn) {
    const size_t scoreCount = (size_t)p.cmpSplits * pairs * p.nbMax;
    float* scorePart = ws.alloc<float>(scoreCount);
    NSA_CUDA(cudaMemsetAsync(scorePart, 0, scoreCount * sizeof(float), stream));
    cmpKernel<T><<<dim3(rows, c.H, p.cmpSplits), kThreads, smem, stream>>>(a, p, nullptr, lseCmp, scorePart, true);
    NSA_LAUNCHED("nsa decode cmpKernel (scores)");
    const size_t selSmem = sizeof(float) * 2 * p.nbMax + sizeof(int) * (c.n + 4) + sizeof(float) * 2 * kWarps + 64;
    NSA_CUDA(cudaFuncSetAttribute(selectKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)selSmem));
    selectKernel<<<dim3(rows, c.H), kThreads, selSmem, stream>>>(a, p, scorePart);
  } else {
    selectKernel<<<dim3(rows, c.H), kThreads, 64, stream>>>(a, p, nullptr);
  }
  NSA_LAUNCHED("nsa decode selectKernel");
  float* bPart = ws.alloc<float>((size_t)(p.slcSplits + p.winSplits) * p.rowsHeads * (c.Dv + 2));
  slcWinKernel<T><<<dim3(rows, c.H, p.slcSplits + p.winSplits), kThreads, smem, stream>>>(a, p, bPart);
  NSA_LAUNCHED("nsa decode slcWinKernel");
  finalKernel<T><<<warpsBlocks, 256, 0, stream>>>(a, p, bPart);
  NSA_LAUNCHED("nsa decode finalKernel");
}

}  // namespace

// Register-layout decode for 16-bit, G = 16, Dk = Dv in {64, 128} (nsa_decode_mma.cu; pdl chains
// its two launches).
bool nsaDecodeRegisters(const NSAForwardArgs& a, int sms, bool pdl, cudaStream_t stream);

namespace {
// Read once per process (the addon uses device 0): a decode step is tens of microseconds, so
// per-call device queries and environment lookups show in its time.
struct DecodeDevice {
  int sms = 0;
  bool pdl = false;  // programmatic dependent launch: compute capability 9.0+, unless NSA_DECODE_PDL=0
  DecodeDevice() {
    int dev = 0, major = 0;
    NSA_CUDA(cudaGetDevice(&dev));
    NSA_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    NSA_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    const char* pdlEnv = std::getenv("NSA_DECODE_PDL");
    pdl = major >= 9 && !(pdlEnv && std::string(pdlEnv) == "0");
  }
};
}  // namespace

bool nsaDecodeSplit(const NSAForwardArgs& a, cudaStream_t stream) {
  static const DecodeDevice device;
  const int sms = device.sms;
  const int G = a.cfg.HQ / a.cfg.H;
  // Worth it only when (query, KV head) pairs leave most multiprocessors idle; G <= 64 keeps the
  // whole group in one block, as selection needs.
  if (a.lse || a.oSlc || a.oWin || G > 64 || a.seq.rows * a.cfg.H >= 2 * sms) return false;
  if (nsaDecodeRegisters(a, sms, device.pdl, stream)) return true;
  // The whole group must fit one block's shared memory (large G with Dk, Dv near 256 does not).
  const int RG = roundUp(G, 16), BK = a.dtype == DType::F32 ? 32 : 64, nInts = 2 * a.cfg.n + 8;
  const size_t smem = a.dtype == DType::F32 ? AttendSmem<float>::bytes(RG, BK, a.cfg.Dk, a.cfg.Dv, nInts, false, true)
                                            : AttendSmem<__half>::bytes(RG, BK, a.cfg.Dk, a.cfg.Dv, nInts, false, true);
  if (smem > 220 * 1024) return false;
  switch (a.dtype) {
    case DType::F32: launchDecode<float>(a, sms, stream); break;
    case DType::F16: launchDecode<__half>(a, sms, stream); break;
    case DType::BF16: launchDecode<__nv_bfloat16>(a, sms, stream); break;
  }
  return true;
}

}  // namespace nsa
