// NSA decode in the register layout (float16/bfloat16, G = 16 query heads per KV head, Dk = Dv in
// {64, 128}): two launches per step, the second chained to the first with programmatic dependent
// launch (sm_90), so its blocks start their own loads while the first still runs.
//   1. Compressed keys, split into chunks per (query, KV head) (as many as fill the GPU: two 64-key
//      tiles each at B = 1, 64k). A block's 4 warps take 16 keys each of every tile (cp.async double-buffered);
//      scores, softmax and output stay in mma fragments. Each tile also leaves, per head, the
//      probability mass of every selection block it touches, relative to the tile's own maximum
//      (no second pass over the keys). The block that finishes last for its (query, KV head) (an
//      integer counter) merges the chunks' (m, l) into the branch log-sum-exp, turns the tile masses
//      into selection scores and picks top-n (per-warp candidates, then one merge).
//   2. Selected and window tokens, split into chunks. Window blocks need nothing from launch 1:
//      they walk their keys (the last of them merges the window partials) and wait for it only
//      before merging slices of the compressed output; selected blocks wait for it before reading
//      the chosen blocks (griddepcontrol.wait). The last block merges the selected partials in
//      chunk order and writes out = g_cmp·o_cmp + g_slc·o_slc + g_win·o_win.
// Where all grids fit the GPU at once (B = 1 at the benchmark's lengths; NSA_DECODE_SPREAD), a step
// takes four chained launches instead: launch 1 keeps each compressed key's scaled scores instead of
// tile masses and has no last block; launch 1b (decodeSelectKernel) scores 128 selection blocks per
// block and leaves each block's top-n list; launch 2's selected blocks merge those lists; launch 3
// (decodeMergeKernel) merges the output, one block per head. The selection's serial chain in one
// block (~11 µs at 64k) and the last block's merge (~4.5 µs) become parallel work (BENCHMARKS.md
// "v9 — decode").
// The launches there are let in late on purpose (v10): launch 2 once launch 1 has finished (its
// window blocks beside launch 1 slowed the walk that every later launch waits for) and launch 3
// once launch 2's blocks have walked their chunks; NSA_DECODE_EARLY_WINDOW=1 and
// NSA_DECODE_LATE_TRIGGER=0 restore v9's early ones.
// Fixed merge orders and no float atomics: runs are bit-equal. Scratch and counters persist across
// calls (grow-only, stream-ordered on the addon's one stream). nsa_decode.cu keeps the general
// split-K decode (float32, other G and head dims). BENCHMARKS.md "v7 — decode" has the measurements
// (the v5 version it replaced is in git history).
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include "cuda_error.h"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "warp_attend.cuh"

namespace nsa {

namespace {

constexpr int kW = 4, kNT = 32 * kW;  // warps and threads per block
constexpr int kTile = 64;             // keys per block-wide tile
constexpr int kWarpKeys = kTile / kW; // keys per warp per tile
constexpr int kG = 16;                // query heads per KV head (one m16 row tile)
constexpr int kXld = kTile + 4;       // row stride of the scaled-score tile
constexpr int kMaxCmpChunks = 64;     // compressed chunks per (query, KV head): their weights fill sm.x
constexpr int kMaxSlcChunks = 16;     // selected chunks
constexpr int kMaxWinChunks = 16;     // window chunks
constexpr int kLaneKeys = 16;         // top-n candidates a lane keeps in registers
constexpr int kMaxBlocks = kW * 32 * kLaneKeys;  // selection blocks this decode takes (2048)
static_assert(kMaxCmpChunks * kG <= kG * kXld && kMaxSlcChunks * kG <= kG * kXld && kMaxWinChunks * kG <= kG * kXld,
              "merge weights live in sm.x");

struct FastPlan {
  int cmpChunks, winChunks, slcChunks;           // chunks per (query, KV head)
  int cmpChunkTiles, winChunkTiles, slcChunkTiles;
  int cmpTiles;  // compressed tiles of the longest row (stride of the mass buffers)
  int W;         // selection blocks one compressed tile can touch (a multiple of 4)
  int sliceAll;  // 1: every launch-2 block merges a slice of o_cmp; 0: window blocks only (they run beside launch 1)
  int selectV8;  // 1: selectFast; 0: the v7 selection (NSA_DECODE_SELECT=v7)
  int mass24;    // 1: the tile masses by the unrolled l = 2d, l' = 4d loop (the default there; NSA_DECODE_MASS24=0: the general loop)
  int spread;    // 1: the selection spread over launch 1b's blocks (decodeSelectKernel); 0: the last launch-1 block selects
  int selParts;  // spread: launch-1b blocks per (query, KV head), kNT selection blocks each
  int mergeLaunch;  // spread: 1: a fourth chained launch (decodeMergeKernel) merges the output; 0: the last launch-2 block
  int cursorStart;  // 1: a selected chunk's token cursor starts at the chunk's first block; 0: at block 0 (v9, NSA_DECODE_CURSOR=0)
  int lateTrigger;  // merge launch: 1: launch 2 lets launch 3 in once its blocks have walked their chunks; 0: at its start (v9, NSA_DECODE_LATE_TRIGGER=0)
  int earlyWindow;  // spread: 1: launch 1b lets launch 2 in at its start (v9, NSA_DECODE_EARLY_WINDOW=1: window blocks beside launch 1); 0: after its wait
  int slicePairs;   // 1: an o_cmp slice merges two elements per thread at once; 0: one (v9, NSA_DECODE_SLICE2=0)
  float *cmpPart, *winPart, *slcPart;  // [pair][chunk]: unnormalised o [16][D], then m [16], l [16]
  float *mass, *tileMax;               // [pair][tile][16][W], [pair][tile][16]
  float* scores;                       // spread: [pair][compressed key][16] scaled scores (log2 units)
  unsigned long long* cand;            // spread: [pair][selParts][n] each launch-1b block's best keys, descending, 0-padded
  float *oCmp, *oWin;                  // [pair][16][D] merged (normalised) compressed and window branches, float
  int *done1, *done2, *doneWin;        // [pair] finished-block counters, zero between launches
  unsigned long long* trace;           // [pair][kTraceSlots] %globaltimer stamps (NSA_DECODE_TRACE=1), else null
};

// NSA_DECODE_TRACE=1: when the steps of one (query, KV head) happen, from %globaltimer (ns). Slots
// start at ~0; "first" slots keep the earliest stamp (atomicMin), "last" slots the latest (stored
// complemented, atomicMin), single-writer slots the stamp itself. For measurements only.
enum TraceSlot {
  kT1Start,     // first: a launch-1 block starts
  kT1Walked,    // last: a launch-1 block has stored its chunk
  kTSelect,     // the last launch-1 block starts the selection
  kTSelected,   // ... and has written the blocks
  kT2Start,     // first: a launch-2 block starts
  kT2Waited,    // last: a selected block returns from griddepcontrol.wait
  kT2Walked,    // last: a selected block has stored its chunk
  kT2Window,    // last: a window block has merged its o_cmp slice
  kTMerge,      // the last launch-2 block starts the final merge
  kTDone,       // ... and has written the output
  kTSelScored,  // spread, last: a launch-1b block has its scores (before the ranks)
  kT2Chosen,    // spread, last: a selected block has merged the lists (knows its blocks)
  kTClock0,     // launch-1 block (0, 0): clock64 and %globaltimer when it starts ...
  kTTimer0,
  kTClock1,     // ... and when it has stored its chunk (their ratio: the SM clock during the step)
  kTTimer1,
  kTraceSlots
};
__device__ __forceinline__ unsigned long long globalTimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
// Thread 0 stamps slot s of this pair (first: earliest; last: latest; else: this stamp).
__device__ __forceinline__ void stamp(const FastPlan& p, int pair, int s, bool first, bool last) {
  if (!p.trace || threadIdx.x != 0) return;
  unsigned long long* slot = p.trace + (size_t)pair * kTraceSlots + s;
  const unsigned long long t = globalTimer();
  if (first) atomicMin(slot, t);
  else if (last) atomicMin(slot, ~t);
  else *slot = t;
}
// Block (0, 0) of launch 1, thread 0: clock64 and %globaltimer into slots at and at + 1 (the SM clock
// is their ratio between two such pairs).
__device__ __forceinline__ void stampClock(const FastPlan& p, int at) {
  if (!p.trace || threadIdx.x != 0 || blockIdx.x != 0 || blockIdx.y != 0) return;
  const unsigned long long clk = clock64();
  p.trace[at] = clk;
  p.trace[at + 1] = globalTimer();
}

template <int D>
struct FastLayout {
  static constexpr int ld = D + 8, tile = kTile * ld;
  // [K0 K1 V0 V1]; once the tiles are done, the same bytes are float scratch.
  __host__ __device__ static constexpr size_t tileBytes(size_t elem) { return elem * 4 * tile; }
  static size_t bytes(size_t elem, int n) { return tileBytes(elem) + sizeof(float) * (kG * kXld + 64) + sizeof(int) * (2 * n + 16); }
};

template <class T, int D>
struct FastSmem {
  T* k;      // [2][tile]
  T* v;      // [2][tile]
  float* x;  // [16][kXld] scaled scores of the current compressed tile; merge weights in launch 2
  float* f;  // [64] small floats
  int* i;    // [2n + 16] small ints
  __device__ explicit FastSmem(char* raw) {
    k = reinterpret_cast<T*>(raw);
    v = k + 2 * FastLayout<D>::tile;
    x = reinterpret_cast<float*>(raw + FastLayout<D>::tileBytes(sizeof(T)));
    f = x + kG * kXld;
    i = reinterpret_cast<int*>(f + 64);
  }
  __device__ float* scratch() const { return reinterpret_cast<float*>(k); }
  // V buffer 1: free until a walk issues its second tile; Q is staged there.
  __device__ T* qStage() const { return v + FastLayout<D>::tile; }
};

// Programmatic dependent launch (sm_90): the first kernel lets the second start early; the second
// waits for the whole first grid (and its memory) before reading what it wrote. No-ops elsewhere.
__device__ __forceinline__ void allowDependentLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void waitForPrimaryGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The group's 16 query rows (consecutive heads) as A fragments, staged through sm.qStage().
// meanwhile() runs while they load and may commit `After` cp.async groups of its own (the first
// key tile), which stay in flight.
template <int After, class T, int D, class Meanwhile>
__device__ void loadQ(uint32_t (&qf)[D / 16][4], const T* q, const FastSmem<T, D>& sm, Meanwhile meanwhile) {
  constexpr int ld = D + 8;
  T* stage = sm.qStage();
  copyRowsAsync<T, D, kNT>(stage, ld, kG, [&](int r) -> const T* { return q + (size_t)r * D; });
  cpAsyncCommit();
  meanwhile();
  cpAsyncWait<After>();
  __syncthreads();
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) loadA(qf[kk], stage, ld, 0, kk * 16);
  __syncthreads();
}

// Issues tile t of keys first .. end-1 (key i in row rowOf(i) of K and V) into buffer t & 1.
template <class T, int D, class RowOf>
__device__ __forceinline__ void issueTile(const FastSmem<T, D>& sm, const T* K, const T* V, int H, int g, int first, int end,
                                          RowOf& rowOf, int t) {
  constexpr int ld = D + 8, TE = FastLayout<D>::tile;
  const int k0 = first + t * kTile, buf = t & 1;
  copyRowsAsync<T, D, kNT>(sm.k + buf * TE, ld, kTile, [&](int r) -> const T* {
    return k0 + r < end ? K + ((size_t)rowOf(k0 + r) * H + g) * D : nullptr;
  });
  copyRowsAsync<T, D, kNT>(sm.v + buf * TE, ld, kTile, [&](int r) -> const T* {
    return k0 + r < end ? V + ((size_t)rowOf(k0 + r) * H + g) * D : nullptr;
  });
}

// Walks keys first .. end-1 of one branch in 64-key tiles, double-buffered; the caller has issued
// and committed tile 0 (issueTile), so the tile's latency overlaps the Q load. Iteration t issues
// tile t and computes tile t - 1 (one copy of the load code: code size is instruction-cache misses).
// With doMass, each tile's scaled scores land in sm.x and mass(first key of the tile) runs between
// two barriers before the softmax. prologue() runs once, before the second tile is issued.
// keep(s, kw) sees each warp's raw scores (keys kw .. kw + 15) before the softmax.
template <class T, int D, class RowOf, class Mass, class Prologue, class Keep>
__device__ void walkChunk(FastSmem<T, D>& sm, const uint32_t (&qf)[D / 16][4], const T* K, const T* V, int H, int g, int first,
                          int end, RowOf& rowOf, float sl2, WarpRows<D>& st, bool doMass, Mass mass, Prologue prologue, Keep keep) {
  constexpr int ld = D + 8, TE = FastLayout<D>::tile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g4 = lane >> 2, t4 = lane & 3;
  const int nTiles = end > first ? (end - first + kTile - 1) / kTile : 0;
  prologue();
#pragma unroll 1
  for (int t = 1; t <= nTiles; t++) {
    if (t < nTiles) issueTile<T, D>(sm, K, V, H, g, first, end, rowOf, t);
    cpAsyncCommit();
    cpAsyncWait<1>();  // every group but the newest: tile t - 1 has landed
    __syncthreads();
    const int buf = (t - 1) & 1, k0 = first + (t - 1) * kTile;
    const int kw = k0 + warp * kWarpKeys;  // this warp's first key
    float s[2][4];
    warpScores<T, D, kWarpKeys>(qf, sm.k + buf * TE + warp * kWarpKeys * ld, ld, s);
    keep(s, kw);
    if (doMass) {
#pragma unroll
      for (int n = 0; n < 2; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int col = n * 8 + 2 * t4 + (e & 1);
          sm.x[(g4 + 8 * (e >> 1)) * kXld + warp * kWarpKeys + col] = kw + col < end ? s[n][e] * sl2 : kNegInf;
        }
      }
      __syncthreads();
      mass(k0);
    }
    warpSoftmaxPV<T, D, 16>(s, sm.v + buf * TE + warp * kWarpKeys * ld, ld, sl2, [&](int j) { return kw + j < end; }, st);
    __syncthreads();
  }
}

// Merges the 4 warps' states into one partial (unnormalised o [16][D], m [16], l [16]) in global memory.
template <int D>
__device__ void storeChunk(WarpRows<D>& st, float* scratch, float* part) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g4 = lane >> 2, t4 = lane & 3;
  float* oW = scratch;            // [4][16][D]
  float* mW = oW + kW * kG * D;   // [4][16]
  float* lW = mW + kW * kG;       // [4][16]
  float* wW = lW + kW * kG;       // [4][16]
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int r = g4 + 8 * i;
    const float l = quadSum(st.l[i]);
    if (t4 == 0) {
      mW[warp * kG + r] = st.m[i];
      lW[warp * kG + r] = l;
    }
#pragma unroll
    for (int n = 0; n < D / 8; n++) {
      oW[(warp * kG + r) * D + n * 8 + 2 * t4] = st.o[n][2 * i];
      oW[(warp * kG + r) * D + n * 8 + 2 * t4 + 1] = st.o[n][2 * i + 1];
    }
  }
  __syncthreads();
  if (threadIdx.x < kG) {
    const int r = threadIdx.x;
    float M = kNegInf;
    for (int w = 0; w < kW; w++) M = fmaxf(M, mW[w * kG + r]);
    float L = 0.f;
    for (int w = 0; w < kW; w++) {
      const float m = mW[w * kG + r];
      const float e = m == kNegInf ? 0.f : exp2f(m - M);
      wW[w * kG + r] = e;
      L += e * lW[w * kG + r];
    }
    part[kG * D + r] = M;
    part[kG * D + kG + r] = L;
  }
  __syncthreads();
  constexpr int Q = D / 4;  // float4 per row
#pragma unroll
  for (int i = 0; i < kG * Q / kNT; i++) {
    const int e4 = threadIdx.x + i * kNT, r = e4 / Q;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < kW; w++) {
      const float wt = wW[w * kG + r];
      const float4 o = reinterpret_cast<const float4*>(oW + w * kG * D)[e4];
      acc.x += wt * o.x; acc.y += wt * o.y; acc.z += wt * o.z; acc.w += wt * o.w;
    }
    reinterpret_cast<float4*>(part)[e4] = acc;
  }
}

// True in the block that finishes last among the `count` blocks of its (query, KV head) that use
// this counter; that block resets the counter and then sees every other block's partials.
__device__ bool lastToFinish(int* counter, int* flag, int count) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const bool last = atomicAdd(counter, 1) == count - 1;
    if (last) *counter = 0;
    *flag = last;
  }
  __syncthreads();
  const bool last = *flag != 0;
  if (last) __threadfence();
  return last;
}

// One set of chunk partials to merge: `count` chunks of stride cs floats starting at part.
struct Parts {
  const float* part;
  int count;
  float* w;    // [count][16] merge weights exp2(m_z - M) / L (0 for an empty chunk), or null
  float* lse;  // [16] M + log2(L) (+inf if every chunk is empty), or null
};

// Merge weights of one or two partial sets. Every (chunk, row) m and l is loaded in rounds of 4
// loads per thread, then 8 threads per row reduce: each takes chunks q, q + 8, ... in order, then
// shuffles (a fixed order). All threads call it; tmp holds 2 (x.count + y.count) 16 floats; ends
// with a barrier.
template <int D>
__device__ void mergeWeights(Parts x, Parts y, size_t cs, float* tmp) {
  const int nx = x.count * kG, total = nx + y.count * kG;
  float* tmM = tmp;
  float* tmL = tmp + total;
#pragma unroll 1
  for (int base = 0; base < total; base += 4 * kNT) {
    float m[4], l[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int it = base + threadIdx.x + i * kNT;
      m[i] = l[i] = 0.f;
      if (it < total) {
        const float* part = it < nx ? x.part : y.part;
        const int k = it < nx ? it : it - nx, z = k / kG, r = k % kG;
        m[i] = __ldcg(part + z * cs + kG * D + r);
        l[i] = __ldcg(part + z * cs + kG * D + kG + r);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int it = base + threadIdx.x + i * kNT;
      if (it < total) {
        tmM[it] = m[i];
        tmL[it] = l[i];
      }
    }
  }
  __syncthreads();
  const int r = threadIdx.x >> 3, q = threadIdx.x & 7;
#pragma unroll
  for (int set = 0; set < 2; set++) {
    const int count = set ? y.count : x.count;
    float* w = set ? y.w : x.w;
    float* lse = set ? y.lse : x.lse;
    const float* tm = tmM + (set ? nx : 0);
    const float* tl = tmL + (set ? nx : 0);
    if (count == 0) continue;
    float M = kNegInf;
    for (int z = q; z < count; z += 8) M = fmaxf(M, tm[z * kG + r]);
    M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 1));
    M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 2));
    M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 4));
    float L = 0.f;
    for (int z = q; z < count; z += 8) {
      const float mz = tm[z * kG + r];
      L += (mz == kNegInf ? 0.f : exp2f(mz - M)) * tl[z * kG + r];
    }
    L += __shfl_xor_sync(0xffffffffu, L, 1);
    L += __shfl_xor_sync(0xffffffffu, L, 2);
    L += __shfl_xor_sync(0xffffffffu, L, 4);
    const float inv = L > 0.f ? 1.f / L : 0.f;
    if (w)
      for (int z = q; z < count; z += 8) {
        const float mz = tm[z * kG + r];
        w[z * kG + r] = (mz == kNegInf ? 0.f : exp2f(mz - M)) * inv;
      }
    if (lse && q == 0) lse[r] = L > 0.f ? M + log2f(L) : INFINITY;
  }
  __syncthreads();
}

// Merged value of elements e0 and e1 (e = r * D + col) of the 16 x D output, the second where has1:
// chunks in order, 16 loads per element in flight per round (both elements' together: one L2 round
// trip per round instead of two).
template <int D>
__device__ __forceinline__ void mergedValues2(const float* part, int count, size_t cs, const float* w, int e0, int e1, bool has1,
                                              float& out0, float& out1) {
  constexpr int R = 16;
  float acc0 = 0.f, acc1 = 0.f;
#pragma unroll 1
  for (int z0 = 0; z0 < count; z0 += R) {
    float v0[R], v1[R];
#pragma unroll
    for (int u = 0; u < R; u++) {
      v0[u] = z0 + u < count ? __ldcg(part + (z0 + u) * cs + e0) : 0.f;
      v1[u] = has1 && z0 + u < count ? __ldcg(part + (z0 + u) * cs + e1) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < R; u++)
      if (z0 + u < count) {
        acc0 += w[(z0 + u) * kG + e0 / D] * v0[u];
        acc1 += w[(z0 + u) * kG + e1 / D] * v1[u];
      }
  }
  out0 = acc0;
  out1 = acc1;
}
// One element (NSA_DECODE_SLICE2=0, v9's slice merge).
template <int D>
__device__ __forceinline__ float mergedValue(const float* part, int count, size_t cs, const float* w, int e) {
  float v, unused;
  mergedValues2<D>(part, count, cs, w, e, e, false, v, unused);
  return v;
}

// Chunks z .. z+3 of the 16 x D output (this thread's float4s: element 4 (threadIdx.x + i kNT)),
// 16-byte loads; zeros past count.
template <int D>
__device__ __forceinline__ void loadRows(const float* part, int z, int count, size_t cs, float4 (&o)[4][kG * D / 4 / kNT]) {
  constexpr int PER = kG * D / 4 / kNT;
#pragma unroll
  for (int u = 0; u < 4; u++)
#pragma unroll
    for (int i = 0; i < PER; i++)
      o[u][i] = z + u < count ? __ldcg(reinterpret_cast<const float4*>(part + (z + u) * cs) + threadIdx.x + i * kNT)
                              : make_float4(0.f, 0.f, 0.f, 0.f);
}

// Adds chunks 0 .. count-1 of the 16 x D output into acc, four chunks in flight per thread, chunks
// in order. o holds chunks 0 .. 3 on entry (loadRows, issued by the caller before the merge
// weights were computed: one round of loads off the merge's path).
template <int D>
__device__ void mergeRows(const float* part, int count, size_t cs, const float* w, float4 (&acc)[kG * D / 4 / kNT],
                          float4 (&o)[4][kG * D / 4 / kNT]) {
  constexpr int Q = D / 4, PER = kG * Q / kNT;  // float4 outputs per thread
#pragma unroll
  for (int i = 0; i < PER; i++) acc[i] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 1
  for (int z = 0; z < count; z += 4) {
    if (z > 0) loadRows<D>(part, z, count, cs, o);
#pragma unroll
    for (int u = 0; u < 4; u++)
#pragma unroll
      for (int i = 0; i < PER; i++) {
        const float wz = z + u < count ? w[(z + u) * kG + (threadIdx.x + i * kNT) / Q] : 0.f;
        // Explicit fmaf: left to the compiler, whether these fuse changed with unrelated code (BENCHMARKS.md "v8.1").
        acc[i].x = fmaf(wz, o[u][i].x, acc[i].x); acc[i].y = fmaf(wz, o[u][i].y, acc[i].y);
        acc[i].z = fmaf(wz, o[u][i].z, acc[i].z); acc[i].w = fmaf(wz, o[u][i].w, acc[i].w);
      }
  }
}

// A block's selection key: score bits (scores are >= 0, so their bits order like the values), then
// ~index, so the largest key is the best score at the lowest index; 0 = no candidate.
__device__ __forceinline__ unsigned long long blockKey(float score, int j) {
  return ((unsigned long long)__float_as_uint(score) << 32) | (unsigned)~j;
}

__device__ __forceinline__ unsigned long long warpMaxKey(unsigned long long k) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long other = __shfl_xor_sync(0xffffffffu, k, o);
    k = other > k ? other : k;
  }
  return k;
}

// A lane's candidate keys sorted in place, largest first (bitonic network over registers).
__device__ __forceinline__ void sortDescending(unsigned long long (&v)[kLaneKeys]) {
#pragma unroll
  for (int k = 2; k <= kLaneKeys; k <<= 1)
#pragma unroll
    for (int h = k >> 1; h > 0; h >>= 1)
#pragma unroll
      for (int i = 0; i < kLaneKeys; i++) {
        const int m = i ^ h;
        if (m > i) {
          const unsigned long long x = v[i], y = v[m];
          const bool swap = ((i & k) == 0) ? x < y : x > y;
          v[i] = swap ? y : x;
          v[m] = swap ? x : y;
        }
      }
}

// The lane whose head (v[0], its largest key) is the warp's best drops it (keys are unique: one lane).
__device__ __forceinline__ void popIfBest(unsigned long long (&v)[kLaneKeys], unsigned long long best) {
  if (best != 0ull && v[0] == best) {
#pragma unroll
    for (int u = 0; u + 1 < kLaneKeys; u++) v[u] = v[u + 1];
    v[kLaneKeys - 1] = 0ull;
  }
}

// Top-n over blocks 0 .. nb-1 (cur = nb - 1): forced initial and local blocks, then the highest
// scores, ties to the lower index (as selectTopN). Each warp takes the best `rest` keys of its
// slice (nb <= kMaxBlocks: a lane keeps its <= 16 sorted in registers and the warp pops the
// largest head `rest` times);
// then each of the 4 x rest candidates finds its rank among them. Writes out[0 .. n) ascending,
// padded with -1. sc is clobbered.
__device__ void topN(float* sc, int nb, int cur, const NSAConfigArgs& c, unsigned long long* cand, int* chosen, int* misc, int* out) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  auto forced = [&](int j) { return j < c.initialBlocks || j > cur - c.localBlocks; };
  if (threadIdx.x == 0) {
    int count = 0;
    for (int j = 0; j < c.initialBlocks && j < nb; j++) chosen[count++] = j;
    for (int j = max(c.initialBlocks, cur - c.localBlocks + 1); j <= cur; j++) chosen[count++] = j;
    misc[0] = count;
  }
  __syncthreads();
  const int fixed = misc[0], rest = max(0, min(c.n, nb) - fixed);
  const int per = (nb + kW - 1) / kW, lo = warp * per, hi = min(nb, lo + per);
  unsigned long long v[kLaneKeys];
#pragma unroll
  for (int u = 0; u < kLaneKeys; u++) {
    const int j = lo + lane + 32 * u;
    v[u] = j < hi && !forced(j) ? blockKey(sc[j], j) : 0ull;
  }
  sortDescending(v);
  for (int k = 0; k < rest; k++) {
    const unsigned long long best = warpMaxKey(v[0]);
    popIfBest(v, best);
    if (lane == 0) cand[warp * rest + k] = best;
  }
  __syncthreads();
  // Keys are unique: a candidate's rank among all candidates is its place in the top-n.
  for (int q = threadIdx.x; q < kW * rest; q += kNT) {
    const unsigned long long key = cand[q];
    int rank = 0;
    for (int o = 0; o < kW * rest; o++) rank += cand[o] > key;
    if (key != 0ull && rank < rest) chosen[fixed + rank] = (int)~(unsigned)key;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int count = min(c.n, fixed + rest);
    for (int i = 1; i < count; i++) {
      const int v = chosen[i];
      int k = i - 1;
      while (k >= 0 && chosen[k] > v) { chosen[k + 1] = chosen[k]; k--; }
      chosen[k + 1] = v;
    }
    for (int i = 0; i < c.n; i++) out[i] = i < count ? chosen[i] : -1;
  }
}

// Selection v8 (the default; NSA_DECODE_SELECT=v7 keeps topN above and the item loop in the kernel):
// the same scores, bit for bit, with fewer serial steps in the one block that runs it.
//   1. One round of loads: every chunk's (m, l) (8 threads per head), the tile maxima and the first
//      mass rows, all in flight together.
//   2. The branch log-sum-exp per head (the order mergeWeights uses), then f[t][r] = exp2(mt - lse)
//      once per (tile, head) into shared memory.
//   3. ct[t][jj] = sum_r mass[t][r][jj] f[t][r] in head order: a pair of lanes takes heads 0-7 and
//      8-15 of four slots, the second continuing the first's sums (a shuffle), so every sum runs in
//      v7's order; the next rows load while these are summed.
//   4. Block scores straight into 64-bit keys in registers (block j = thread + 128 u); per warp, the
//      best `rest` by a per-lane sort and `rest` pops of two warp max-reductions (redux.sync, one
//      instruction each) instead of five 64-bit shuffle rounds.
//   5. Each of the 4 x rest candidates' rank among them; the ascending output is placed by counting,
//      in parallel (forced initial blocks, the selected ones, forced local blocks).
constexpr int kStatChunks = kMaxCmpChunks / 8;  // chunks per thread in the lse: 8 threads per head
constexpr int kPreTileMax = 8;                  // tile maxima per thread in the first round (64 tiles)
constexpr int kHalfBatch = 3;                   // half rows (8 heads x 4 slots) in flight per thread

__device__ __forceinline__ bool isForced(int j, int cur, const NSAConfigArgs& c) {
  return j < c.initialBlocks || j > cur - c.localBlocks;
}

// part: this pair's chunk partials (stride cs, m and l at statOff); out: this pair's n block indices.
__device__ void selectFast(const FastPlan& p, const NSAConfigArgs& c, const RowInfo& ri, int pair, const float* part, size_t cs,
                           size_t statOff, float* scratch, float* lseSm, int* out) {
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int tiles = (ri.nc + kTile - 1) / kTile, W = p.W, W4 = W / 4, nb = ri.cur + 1, halves = tiles * W4 * 2;
  const float* tileMax = p.tileMax + (size_t)pair * p.cmpTiles * kG;  // [tile][16]
  const float* mass = p.mass + (size_t)pair * p.cmpTiles * kG * W;    // [tile][16][W]
  // 1. Chunk statistics, tile maxima, the first half rows.
  const int r = tid >> 3, q = tid & 7;
  float cm[kStatChunks], cl[kStatChunks];
#pragma unroll
  for (int k = 0; k < kStatChunks; k++) {
    const int z = q + 8 * k;
    cm[k] = z < p.cmpChunks ? __ldcg(part + z * cs + statOff + r) : kNegInf;
    cl[k] = z < p.cmpChunks ? __ldcg(part + z * cs + statOff + kG + r) : 0.f;
  }
  float tm[kPreTileMax];
#pragma unroll
  for (int u = 0; u < kPreTileMax; u++) {
    const int e = tid + kNT * u;
    tm[u] = e < tiles * kG ? __ldcg(tileMax + e) : 0.f;
  }
  // Half row h: item h / 2 = (tile t, slots 4 q4 .. 4 q4 + 3), heads 8 (h & 1) .. + 7. Lanes 2i and
  // 2i + 1 hold the two halves of one item (kNT is even).
  float4 hv[kHalfBatch][8];
  auto loadHalf = [&](float4 (&dst)[8], int h) {
    if (h >= halves) return;
    const int item = h >> 1, t = item / W4, q4 = item % W4;
    const float4* m4 = reinterpret_cast<const float4*>(mass + ((size_t)t * kG + (h & 1) * 8) * W) + q4;
#pragma unroll
    for (int i = 0; i < 8; i++) dst[i] = __ldcg(m4 + i * W4);
  };
#pragma unroll
  for (int b = 0; b < kHalfBatch; b++) loadHalf(hv[b], tid + kNT * b);
  // 2. lse per head: chunks q, q + 8, ... in order, then a fixed shuffle tree (as mergeWeights).
  float M = kNegInf;
#pragma unroll
  for (int k = 0; k < kStatChunks; k++) M = fmaxf(M, cm[k]);
  M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 1));
  M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 2));
  M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 4));
  float L = 0.f;
#pragma unroll
  for (int k = 0; k < kStatChunks; k++) L += (cm[k] == kNegInf ? 0.f : exp2f(cm[k] - M)) * cl[k];
  L += __shfl_xor_sync(0xffffffffu, L, 1);
  L += __shfl_xor_sync(0xffffffffu, L, 2);
  L += __shfl_xor_sync(0xffffffffu, L, 4);
  if (q == 0) lseSm[r] = L > 0.f ? M + log2f(L) : INFINITY;
  __syncthreads();
  float* ct = scratch;                   // [tiles][W]
  float* f = ct + (size_t)tiles * W;     // [tiles][16]
#pragma unroll
  for (int u = 0; u < kPreTileMax; u++) {
    const int e = tid + kNT * u;
    if (e < tiles * kG) f[e] = exp2f(tm[u] - lseSm[e % kG]);
  }
  for (int e = tid + kNT * kPreTileMax; e < tiles * kG; e += kNT) f[e] = exp2f(__ldcg(tileMax + e) - lseSm[e % kG]);
  __syncthreads();
  // 3. Tile contributions; batch k0's rows are summed while batch k0 + 1's load.
  const int hh = tid & 1;
#pragma unroll 1
  for (int k0 = 0; k0 * kNT < halves; k0 += kHalfBatch) {
#pragma unroll
    for (int b = 0; b < kHalfBatch; b++) {
      const int h = tid + kNT * (k0 + b);
      const int item = h >> 1, t = item / W4, q4 = item % W4;
      const bool live = h < halves;  // the same for both lanes of a pair (halves is even)
      const float* ft = f + (size_t)t * kG;
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
      if (live && hh == 0) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
          const float fv = ft[i];
          acc.x += hv[b][i].x * fv; acc.y += hv[b][i].y * fv; acc.z += hv[b][i].z * fv; acc.w += hv[b][i].w * fv;
        }
      }
      acc.x = __shfl_xor_sync(0xffffffffu, acc.x, 1);
      acc.y = __shfl_xor_sync(0xffffffffu, acc.y, 1);
      acc.z = __shfl_xor_sync(0xffffffffu, acc.z, 1);
      acc.w = __shfl_xor_sync(0xffffffffu, acc.w, 1);
      if (live && hh == 1) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
          const float fv = ft[8 + i];
          acc.x += hv[b][i].x * fv; acc.y += hv[b][i].y * fv; acc.z += hv[b][i].z * fv; acc.w += hv[b][i].w * fv;
        }
        reinterpret_cast<float4*>(ct + (size_t)t * W)[q4] = acc;
      }
      loadHalf(hv[b], tid + kNT * (k0 + kHalfBatch + b));
    }
  }
  __syncthreads();
  // 4. Scores (the tiles holding block j's keys, in tile order) as keys; forced blocks take no key.
  const int perCmp = c.l / c.d, perSel = c.ls / c.d;
  unsigned long long v[kLaneKeys];
#pragma unroll
  for (int u = 0; u < kLaneKeys; u++) {
    const int j = tid + kNT * u;
    v[u] = 0ull;
    if (j < nb && !isForced(j, ri.cur, c)) {
      float s = 0.f;
      const int kLo = max(0, j * perSel - perCmp + 1), kHi = min(ri.nc - 1, (j + 1) * perSel - 1);
      for (int t = kLo / kTile; kLo <= kHi && t <= kHi / kTile; t++) s += ct[(size_t)t * W + j - (t * kTile) / perSel];
      v[u] = blockKey(s, j);
    }
  }
  const int a0 = min(c.initialBlocks, nb), b0 = max(c.initialBlocks, ri.cur - c.localBlocks + 1);
  const int fixed = a0 + max(0, ri.cur - b0 + 1), rest = max(0, min(c.n, nb) - fixed), count = fixed + rest;
  auto* cand = reinterpret_cast<unsigned long long*>(f + roundUp(tiles * kG, 2));  // [4][rest]
  int* sel = reinterpret_cast<int*>(cand + kW * rest);                              // [rest]
  sortDescending(v);  // per lane
  // The warp's best `rest`: the largest head, by the high word and then the low word among the
  // lanes holding that high word (keys are unique: one lane pops).
#pragma unroll 1
  for (int k = 0; k < rest; k++) {
    const unsigned hiMine = (unsigned)(v[0] >> 32);
    const unsigned hi = __reduce_max_sync(0xffffffffu, hiMine);
    const unsigned lo = __reduce_max_sync(0xffffffffu, hiMine == hi ? (unsigned)v[0] : 0u);
    const unsigned long long best = ((unsigned long long)hi << 32) | lo;
    popIfBest(v, best);
    if (lane == 0) cand[warp * rest + k] = best;
  }
  __syncthreads();
  // 5. A candidate's rank among all candidates is its place in the top `rest`.
  for (int qq = tid; qq < kW * rest; qq += kNT) {
    const unsigned long long key = cand[qq];
    int rank = 0;
    for (int o = 0; o < kW * rest; o++) rank += cand[o] > key;
    if (key != 0ull && rank < rest) sel[rank] = (int)~(unsigned)key;
  }
  __syncthreads();
  // Ascending: initial blocks 0 .. a0-1, the selected ones (all between), local blocks b0 .. cur.
  for (int i = tid; i < c.n; i += kNT) {
    if (i < a0) out[i] = i;
    else if (i >= a0 + rest && i < count) out[i] = b0 + (i - a0 - rest);
    else if (i >= count) out[i] = -1;
  }
  if (tid < rest) {
    const int j = sel[tid];
    int pos = 0;
    for (int k = 0; k < rest; k++) pos += sel[k] < j;
    out[a0 + pos] = j;
  }
}

// Launch 1: grid (pairs, cmpChunks).
template <class T, int D>
__global__ void __launch_bounds__(kNT, 3) decodeCmpKernel(NSAForwardArgs a, FastPlan p) {
  allowDependentLaunch();  // launches 1b and 2 wait for this whole grid before they read anything written here
  extern __shared__ __align__(16) char raw[];
  FastSmem<T, D> sm(raw);
  const NSAConfigArgs& c = a.cfg;
  const int pair = blockIdx.x, row = pair / c.H, g = pair % c.H, zz = blockIdx.y;
  stamp(p, pair, kT1Start, true, false);
  stampClock(p, kTClock0);
  const float sl2 = c.scale * kLog2e;
  const size_t head0 = (size_t)row * c.HQ + (size_t)g * kG;  // flat (row, head) of the group's first head
  const size_t cs = (size_t)kG * D + 2 * kG;
  const T* K = static_cast<const T*>(a.kCmp);
  const T* V = static_cast<const T*>(a.vCmp);
  uint32_t qf[D / 16][4];
  RowInfo ri{};
  int first = 0, end = 0;
  auto rowOf = [&](int i) { return ri.cBase + i; };
  loadQ<1>(qf, static_cast<const T*>(a.q) + head0 * D, sm, [&] {
    ri = rowInfo(a, row);
    first = zz * p.cmpChunkTiles * kTile;
    end = min(ri.nc, first + p.cmpChunkTiles * kTile);
    if (end > first) issueTile<T, D>(sm, K, V, c.H, g, first, end, rowOf, 0);
    cpAsyncCommit();
  });
  WarpRows<D> st;
  st.reset();
  const int perCmp = c.l / c.d, perSel = c.ls / c.d;
  // Per head r: the tile's maximum mt and, for each selection block j it touches,
  // the sum over its keys i of overlap(i, j) * exp2(x[r][i] - mt).
  auto mass = [&](int i0) {
    const int r = threadIdx.x >> 3, part8 = threadIdx.x & 7;
    float* xr = sm.x + r * kXld;
    float mt = kNegInf;
#pragma unroll
    for (int u = 0; u < 8; u++) mt = fmaxf(mt, xr[part8 * 8 + u]);
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 4));
#pragma unroll
    for (int u = 0; u < 8; u++) {
      const float x = xr[part8 * 8 + u];
      xr[part8 * 8 + u] = x == kNegInf ? 0.f : exp2f(x - mt);
    }
    __syncwarp();
    const int i1 = min(ri.nc, i0 + kTile) - 1, tg = i0 / kTile;
    const int jLo = i0 / perSel, jHi = min(ri.cur, (i1 + perCmp - 1) / perSel);
    float* outM = p.mass + (((size_t)pair * p.cmpTiles + tg) * kG + r) * p.W;
    if (p.mass24) {
      // l = 2d, l' = 4d (the paper's): block jLo + jj takes the tile's keys 4 jj - 1 .. 4 jj + 3 with
      // overlaps 1, 2, 2, 2, 1 (W = 20). The general loop's terms in its order, unrolled: the same sums.
#pragma unroll
      for (int k = 0; k < 3; k++) {
        const int jj = part8 + 8 * k;
        if (jj >= 20) break;
        float acc = 0.f;
        if (jLo + jj <= jHi) {
#pragma unroll
          for (int u = -1; u <= 3; u++) {
            const int li = 4 * jj + u;
            if (li >= 0 && i0 + li <= i1) acc += (u == -1 || u == 3 ? 1.f : 2.f) * xr[li];
          }
        }
        outM[jj] = acc;
      }
    } else {
      for (int jj = part8; jj < p.W; jj += 8) {
        const int j = jLo + jj;
        float acc = 0.f;
        if (j <= jHi) {
          const int iFirst = max(i0, j * perSel - perCmp + 1), iLast = min(i1, (j + 1) * perSel - 1);
          for (int i = iFirst; i <= iLast; i++) {
            const int w = min(i + perCmp, (j + 1) * perSel) - max(i, j * perSel);
            acc += (float)w * xr[i - i0];
          }
        }
        outM[jj] = acc;
      }
    }
    if (part8 == 0) p.tileMax[((size_t)pair * p.cmpTiles + tg) * kG + r] = mt;
  };
  // Spread selection: launch 1b needs each key's scaled scores (x[key][head]), no masses and no last block.
  float* xOut = p.spread ? p.scores + (size_t)pair * p.cmpTiles * kTile * kG : nullptr;
  auto keepScores = [&](const float (&s)[2][4], int kw) {
    if (!xOut) return;
    const int lane = threadIdx.x & 31, g4 = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int n = 0; n < 2; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = kw + n * 8 + 2 * t4 + (e & 1);
        if (key < end) xOut[(size_t)key * kG + g4 + 8 * (e >> 1)] = s[n][e] * sl2;
      }
  };
  walkChunk<T, D>(sm, qf, K, V, c.H, g, first, end, rowOf, sl2, st, !a.blockIn && !p.spread, mass, [] {}, keepScores);
  storeChunk<D>(st, sm.scratch(), p.cmpPart + ((size_t)pair * p.cmpChunks + zz) * cs);
  stamp(p, pair, kT1Walked, false, true);
  stampClock(p, kTClock1);
  if (p.spread) return;
  if (!lastToFinish(p.done1 + pair, sm.i, gridDim.y)) return;
  stamp(p, pair, kTSelect, false, false);
  auto selected = [&] {
    if (!p.trace) return;
    __syncthreads();
    stamp(p, pair, kTSelected, false, false);
  };

  // Last block of this (query, KV head): the selection (the branch outputs are merged in launch 2).
  const size_t at = ((size_t)row * c.H + g) * c.n;
  if (a.blockIn) {
    for (int k = threadIdx.x; k < c.n; k += kNT) a.blockOut[at + k] = a.blockIn[at + k];
    selected();
    return;
  }
  if (p.selectV8) {
    selectFast(p, c, ri, pair, p.cmpPart + (size_t)pair * p.cmpChunks * cs, cs, (size_t)kG * D, sm.scratch(), sm.f,
               a.blockOut + at);
    selected();
    return;
  }
  // Each tile's contribution to the blocks it touches: ct[t][jj] = sum_r mass[t][r][jj] * exp2(mt[t][r] - lse[r]).
  // The masses need no lse: this thread's first item loads while mergeWeights finds lse.
  const int tiles = (ri.nc + kTile - 1) / kTile, W4 = p.W / 4, nb = ri.cur + 1, items = tiles * W4;
  float4 mt[4], m[kG];
  auto loadItem = [&](int item) {
    const int t = item / W4, q4 = item % W4;
    const size_t tile = (size_t)pair * p.cmpTiles + t;
    const float4* mt4 = reinterpret_cast<const float4*>(p.tileMax + tile * kG);
    const float4* m4 = reinterpret_cast<const float4*>(p.mass + tile * kG * p.W) + q4;
#pragma unroll
    for (int i = 0; i < 4; i++) mt[i] = __ldcg(mt4 + i);
#pragma unroll
    for (int r = 0; r < kG; r++) m[r] = __ldcg(m4 + r * W4);
  };
  if ((int)threadIdx.x < items) loadItem(threadIdx.x);
  float* lse = sm.f;  // [16]
  mergeWeights<D>({p.cmpPart + (size_t)pair * p.cmpChunks * cs, p.cmpChunks, nullptr, lse}, {nullptr, 0, nullptr, nullptr}, cs,
                  sm.scratch());
  float* ct = sm.scratch();          // [tiles][W]
  float* sc = ct + (size_t)tiles * p.W;  // [nb]
  for (int item = threadIdx.x; item < items; item += kNT) {
    if (item != (int)threadIdx.x) loadItem(item);
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int r = 0; r < kG; r++) {
      const float4 t4 = mt[r / 4];
      const float f = exp2f((r % 4 == 0 ? t4.x : r % 4 == 1 ? t4.y : r % 4 == 2 ? t4.z : t4.w) - lse[r]);
      acc.x += m[r].x * f; acc.y += m[r].y * f; acc.z += m[r].z * f; acc.w += m[r].w * f;
    }
    reinterpret_cast<float4*>(ct + (size_t)(item / W4) * p.W)[item % W4] = acc;
  }
  __syncthreads();
  // Block j's score: the contributions of the tiles holding its keys, in tile order.
  for (int j = threadIdx.x; j < nb; j += kNT) {
    float s = 0.f;
    const int kLo = max(0, j * perSel - perCmp + 1), kHi = min(ri.nc - 1, (j + 1) * perSel - 1);
    for (int t = kLo / kTile; kLo <= kHi && t <= kHi / kTile; t++) s += ct[(size_t)t * p.W + j - (t * kTile) / perSel];
    sc[j] = s;
  }
  __syncthreads();
  auto* cand = reinterpret_cast<unsigned long long*>(sc + roundUp(nb, 2));  // [4][rest]
  int* chosen = reinterpret_cast<int*>(cand + kW * c.n);
  topN(sc, nb, ri.cur, c, cand, chosen, sm.i + 1, a.blockOut + at);
  selected();
}

// The forced blocks of a row and how many places remain for the highest scores: output order is
// initial blocks 0 .. a0-1, the `rest` chosen ones (all between), local blocks b0 .. cur, then -1.
struct SelectCounts {
  int a0, b0, rest, count;
};
__device__ __forceinline__ SelectCounts selectCounts(const RowInfo& ri, const NSAConfigArgs& c) {
  const int nb = ri.cur + 1;
  SelectCounts k;
  k.a0 = min(c.initialBlocks, nb);
  k.b0 = max(c.initialBlocks, ri.cur - c.localBlocks + 1);
  const int fixed = k.a0 + max(0, ri.cur - k.b0 + 1);
  k.rest = max(0, min(c.n, nb) - fixed);
  k.count = fixed + k.rest;
  return k;
}

constexpr int kPreKeys = 5;  // compressed keys per selection block loaded up front (l' + l - d = 5 d: the paper's)

// Launch 1b, the spread selection: grid (pairs, selParts), chained to launch 1. Block s scores
// selection blocks j = kNT s .. kNT s + kNT - 1, Split threads per block j (each 16 / Split heads),
// from launch 1's chunk statistics (the branch log-sum-exp per head) and scaled scores:
// S[j] = sum over the keys i it overlaps, in key order, of overlap(i, j) * P[i], where P[i] sums
// exp2(x[i][h] - lse[h]) over each thread's heads in order, then over the Split threads (a fixed
// shuffle tree). The block leaves its best `rest` keys (blockKey: score, then the lower index) at
// their ranks in p.cand[pair][s], the other places 0; launch 2 takes the global top `rest` from
// these lists. Why: one block's serial selection (v8: ~11 µs at 64k) becomes kNT blocks' worth per block.
template <int D, int Split>
__global__ void __launch_bounds__(kNT * Split) decodeSelectKernel(NSAForwardArgs a, FastPlan p) {
  constexpr int NT = kNT * Split, H4 = 4 / Split;  // threads; float4 (4 heads) per thread and key
  constexpr int PerHead = NT / kG, Chunks = kMaxCmpChunks / PerHead;  // lse: threads per head, chunks per thread
  // Launch 2's window blocks need nothing from here; earlyWindow = 0 holds them back until launch 1
  // has finished (beside it they slow its walk, the longer path).
  if (p.earlyWindow) allowDependentLaunch();
  __shared__ float lseSm[kG];
  __shared__ unsigned long long keys[kNT];
  const NSAConfigArgs& c = a.cfg;
  const int pair = blockIdx.x, row = pair / c.H, s = blockIdx.y, tid = threadIdx.x, part = tid % Split;
  const RowInfo ri = rowInfo(a, row);
  const int perCmp = c.l / c.d, perSel = c.ls / c.d, nKeys = perSel + perCmp - 1;
  const int j = s * kNT + tid / Split;
  const bool live = j <= ri.cur && !isForced(j, ri.cur, c);
  const int kLo = max(0, j * perSel - perCmp + 1), kHi = live ? min(ri.nc - 1, (j + 1) * perSel - 1) : -1;
  const size_t cs = (size_t)kG * D + 2 * kG;
  const float* stat = p.cmpPart + (size_t)pair * p.cmpChunks * cs + (size_t)kG * D;  // chunk z: m at z cs, l at z cs + 16
  // 4 float4 per key; this thread's heads start at float4 part * H4.
  const float4* x4 = reinterpret_cast<const float4*>(p.scores + (size_t)pair * p.cmpTiles * kTile * kG) + part * H4;
  waitForPrimaryGrid();  // launch 1's partials and scores
  if (!p.earlyWindow) allowDependentLaunch();
  stamp(p, pair, kTSelect, false, true);
  // One round of loads: every chunk's (m, l) (PerHead threads per head) and this thread's first keys.
  const int r = tid / PerHead, q = tid % PerHead;
  float cm[Chunks], cl[Chunks];
#pragma unroll
  for (int k = 0; k < Chunks; k++) {
    const int z = q + PerHead * k;
    cm[k] = z < p.cmpChunks ? __ldcg(stat + z * cs + r) : kNegInf;
    cl[k] = z < p.cmpChunks ? __ldcg(stat + z * cs + kG + r) : 0.f;
  }
  float4 xv[kPreKeys][H4];
#pragma unroll
  for (int u = 0; u < kPreKeys; u++)
#pragma unroll
    for (int h4 = 0; h4 < H4; h4++)
      xv[u][h4] = kLo + u <= kHi ? __ldcg(x4 + (size_t)(kLo + u) * 4 + h4) : make_float4(0.f, 0.f, 0.f, 0.f);
  // lse per head: chunks q, q + PerHead, ... in order, then a fixed shuffle tree.
  float M = kNegInf;
#pragma unroll
  for (int k = 0; k < Chunks; k++) M = fmaxf(M, cm[k]);
#pragma unroll
  for (int o = 1; o < PerHead; o <<= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
  float L = 0.f;
#pragma unroll
  for (int k = 0; k < Chunks; k++) L += (cm[k] == kNegInf ? 0.f : exp2f(cm[k] - M)) * cl[k];
#pragma unroll
  for (int o = 1; o < PerHead; o <<= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
  if (q == 0) lseSm[r] = L > 0.f ? M + log2f(L) : INFINITY;
  __syncthreads();
  float lse[4 * H4];
#pragma unroll
  for (int h = 0; h < 4 * H4; h++) lse[h] = lseSm[part * 4 * H4 + h];
  // Key i's probability summed over this thread's heads in order, then over the Split threads.
  // Every lane runs the shuffles (the Split threads of a block j share kLo and kHi).
  auto keyMass = [&](const float4 (&x)[H4], bool use) {
    float sum = 0.f;
#pragma unroll
    for (int h4 = 0; h4 < H4; h4++) {
      sum += exp2f(x[h4].x - lse[4 * h4]);
      sum += exp2f(x[h4].y - lse[4 * h4 + 1]);
      sum += exp2f(x[h4].z - lse[4 * h4 + 2]);
      sum += exp2f(x[h4].w - lse[4 * h4 + 3]);
    }
    sum = use ? sum : 0.f;
#pragma unroll
    for (int o = 1; o < Split; o <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    return sum;
  };
  auto overlap = [&](int i) { return (float)(min(i + perCmp, (j + 1) * perSel) - max(i, j * perSel)); };
  float score = 0.f;
#pragma unroll
  for (int u = 0; u < kPreKeys; u++) {
    const float m = keyMass(xv[u], kLo + u <= kHi);
    if (kLo + u <= kHi) score = fmaf(overlap(kLo + u), m, score);
  }
#pragma unroll 1
  for (int u = kPreKeys; u < nKeys; u++) {  // configurations with more keys per selection block (uniform bound)
    const int i = kLo + u;
    float4 x[H4];
#pragma unroll
    for (int h4 = 0; h4 < H4; h4++) x[h4] = i <= kHi ? __ldcg(x4 + (size_t)i * 4 + h4) : make_float4(0.f, 0.f, 0.f, 0.f);
    const float m = keyMass(x, i <= kHi);
    if (i <= kHi) score = fmaf(overlap(i), m, score);
  }
  const unsigned long long key = live ? blockKey(score, j) : 0ull;
  stamp(p, pair, kTSelScored, false, true);
  if (part == 0) keys[tid / Split] = key;
  const int count = __syncthreads_count(part == 0 && key != 0ull);
  // Keys are unique: a key's rank among this block's is its place in the list. The Split threads of
  // a block j count over kNT / Split keys each.
  const int rest = selectCounts(ri, c).rest;
  unsigned long long* out = p.cand + ((size_t)pair * p.selParts + s) * c.n;
  int rank = 0;
  if (key != 0ull) {
    const unsigned long long* mine = keys + part * (kNT / Split);
#pragma unroll 8
    for (int o = 0; o < kNT / Split; o++) rank += mine[o] > key;
  }
#pragma unroll
  for (int o = 1; o < Split; o <<= 1) rank += __shfl_xor_sync(0xffffffffu, rank, o);
  if (part == 0 && key != 0ull && rank < rest) out[rank] = key;
  if (tid >= count && tid < rest) out[tid] = 0ull;
  if (p.trace) {
    __syncthreads();
    stamp(p, pair, kTSelected, false, true);
  }
}

// Spread selection, in each selected block of launch 2: the global top `rest` of launch 1b's lists
// (a key's rank among all of them is its place), then blk[0 .. n) ascending and -1-padded.
// ck: scratch for selParts * rest keys and rest ints. All threads call it; ends with a barrier.
__device__ void mergeCandidates(const FastPlan& p, const NSAConfigArgs& c, const RowInfo& ri, int pair,
                                unsigned long long* ck, int* blk) {
  const SelectCounts k = selectCounts(ri, c);
  const int total = p.selParts * k.rest;
  int* sel = reinterpret_cast<int*>(ck + total);
  const unsigned long long* src = p.cand + (size_t)pair * p.selParts * c.n;
  for (int i = threadIdx.x; i < total; i += kNT) ck[i] = __ldcg(src + (size_t)(i / k.rest) * c.n + i % k.rest);
  __syncthreads();
  for (int i = threadIdx.x; i < total; i += kNT) {
    const unsigned long long key = ck[i];
    if (key == 0ull) continue;
    int rank = 0;
#pragma unroll 8
    for (int o = 0; o < total; o++) rank += ck[o] > key;
    if (rank < k.rest) sel[rank] = (int)~(unsigned)key;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < c.n; i += kNT) {
    if (i < k.a0) blk[i] = i;
    else if (i >= k.a0 + k.rest && i < k.count) blk[i] = k.b0 + (i - k.a0 - k.rest);
    else if (i >= k.count) blk[i] = -1;
  }
  if ((int)threadIdx.x < k.rest) {
    const int j = sel[threadIdx.x];
    int pos = 0;
    for (int o = 0; o < k.rest; o++) pos += sel[o] < j;
    blk[k.a0 + pos] = j;
  }
  __syncthreads();
}


// Launch 2: grid (pairs, slcChunks + winChunks); chained to launch 1 (programmatic dependent launch).
// Blocks z < slcChunks walk chunks of the selected tokens, the others chunks of the window. The
// compressed output is merged in slices: by the window blocks alone when they can run beside
// launch 1 (they have nothing else to wait for), else by every block (selected blocks while their
// first tile loads). The last block merges the selected partials and gates.
template <class T, int D>
__global__ void __launch_bounds__(kNT) decodeSlcWinKernel(NSAForwardArgs a, FastPlan p) {
  extern __shared__ __align__(16) char raw[];
  FastSmem<T, D> sm(raw);
  const NSAConfigArgs& c = a.cfg;
  const int pair = blockIdx.x, row = pair / c.H, g = pair % c.H, z = blockIdx.y;
  const bool slc = z < p.slcChunks;
  const int zz = slc ? z : z - p.slcChunks;
  // Launch 3 waits for this whole grid; lateTrigger lets it in only once every block has walked its
  // chunk (launched at this grid's start, its blocks waiting beside launches 1b and 2 made the 64k
  // B=1 step ~1 µs slower in the held benchmark: BENCHMARKS.md, helper cdec).
  if (p.mergeLaunch && !p.lateTrigger) allowDependentLaunch();
  stamp(p, pair, kT2Start, true, false);
  const float sl2 = c.scale * kLog2e;
  const size_t head0 = (size_t)row * c.HQ + (size_t)g * kG;
  const size_t cs = (size_t)kG * D + 2 * kG;
  int* blk = sm.i + 8;   // [n]
  int* pre = blk + c.n;  // [n + 1] token prefix over blk
  const T* K = static_cast<const T*>(slc ? a.kSlc : a.kWin);
  const T* V = static_cast<const T*>(slc ? a.vSlc : a.vWin);
  uint32_t qf[D / 16][4];
  RowInfo ri{};
  int first = 0, end = 0, ws = 0;
  // Selected tokens come in ascending order within each tile copy: a cursor over blk, restarted at
  // kFirst (a block whose tokens start at or before the chunk's first token: the cursor does not
  // walk the blocks of earlier chunks, one dependent shared load each) when e goes back. Window
  // token e is row kBase + ws + e.
  int k = 0, kFirst = 0;
  auto rowOf = [&](int e) {
    if (!slc) return ri.kBase + ws + e;
    if (e < pre[k]) k = kFirst;
    while (pre[k + 1] <= e) k++;
    return ri.kBase + blk[k] * c.ls + (e - pre[k]);
  };
  loadQ<1>(qf, static_cast<const T*>(a.q) + head0 * D, sm, [&] {
    ri = rowInfo(a, row);
    int tokens;
    if (slc) {
      waitForPrimaryGrid();  // the chosen blocks come from launch 1 (spread: launch 1b's lists)
      stamp(p, pair, kT2Waited, false, true);
      if (p.spread) {
        // K buffer 1 is free until the walk issues its second tile.
        mergeCandidates(p, c, ri, pair, reinterpret_cast<unsigned long long*>(sm.k + FastLayout<D>::tile), blk);
        stamp(p, pair, kT2Chosen, false, true);
        if (zz == 0)
          for (int i = threadIdx.x; i < c.n; i += kNT) a.blockOut[(size_t)pair * c.n + i] = blk[i];
      }
      // Warp 0 reads the n <= 64 chosen blocks (two per lane) and scans their token counts.
      const int chunkFirst = zz * p.slcChunkTiles * kTile;
      if (threadIdx.x < 32) {
        const int lane = threadIdx.x;
        const int* chosen = a.blockOut + ((size_t)row * c.H + g) * c.n;
        int len[2], total = 0, below = 0;
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int j = lane + 32 * h;
          const int b = j < c.n ? (p.spread ? blk[j] : __ldcg(chosen + j)) : -1;
          if (j < c.n) blk[j] = b;
          len[h] = (b >= 0 && b <= ri.cur) ? min(c.ls, ri.pos - b * c.ls + 1) : 0;
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
          int inc = len[h];
#pragma unroll
          for (int o = 1; o < 32; o <<= 1) {
            const int other = __shfl_up_sync(0xffffffffu, inc, o);
            if (lane >= o) inc += other;
          }
          const int j = lane + 32 * h;
          if (j < c.n) pre[j + 1] = total + inc;
          // pre is nondecreasing: the number of j + 1 in 1 .. n-1 with pre[j + 1] <= chunkFirst is the
          // last such index, the cursor's start (0 if none).
          below += __popc(__ballot_sync(0xffffffffu, j + 1 < c.n && total + inc <= chunkFirst));
          total += __shfl_sync(0xffffffffu, inc, 31);
        }
        if (lane == 0) {
          pre[0] = 0;
          sm.i[2] = below;
        }
      }
      __syncthreads();
      tokens = pre[c.n];
      k = kFirst = p.cursorStart ? sm.i[2] : 0;
    } else {
      ws = max(0, ri.pos - c.window + 1);
      tokens = ri.pos - ws + 1;
    }
    const int chunkTiles = slc ? p.slcChunkTiles : p.winChunkTiles;
    first = zz * chunkTiles * kTile;
    end = min(tokens, first + chunkTiles * kTile);
    if (end > first) issueTile<T, D>(sm, K, V, c.H, g, first, end, rowOf, 0);
    cpAsyncCommit();
  });
  WarpRows<D> st;
  st.reset();
  const float* cmpPart = p.cmpPart + (size_t)pair * p.cmpChunks * cs;
  // Slice z of the compressed output; weights in sm.x, K buffer 1 as the weights' scratch (free
  // until the walk issues its second tile). Ends with a barrier.
  auto mergeSlice = [&] {
    float* wC = sm.x;  // [cmpChunks][16]
    mergeWeights<D>({cmpPart, p.cmpChunks, wC, nullptr}, {nullptr, 0, nullptr, nullptr}, cs,
                    reinterpret_cast<float*>(sm.k + FastLayout<D>::tile));
    const int slices = p.sliceAll ? gridDim.y : p.winChunks, slice = p.sliceAll ? z : zz;
    const int per = (kG * D + slices - 1) / slices, e0 = slice * per, e1 = min(kG * D, e0 + per);
    T* oCmpOut = static_cast<T*>(a.oCmp);
    if (p.slicePairs) {
      // Two elements per thread per pass, their loads together (NSA_DECODE_SLICE2=0: one at a time, v9).
      for (int e = e0 + threadIdx.x; e < e1; e += 2 * kNT) {
        const int f = e + kNT;
        const bool hasF = f < e1;
        float oc, of;
        mergedValues2<D>(cmpPart, p.cmpChunks, cs, wC, e, hasF ? f : e, hasF, oc, of);
        p.oCmp[(size_t)pair * kG * D + e] = oc;
        oCmpOut[head0 * D + e] = fromF<T>(oc);
        if (hasF) {
          p.oCmp[(size_t)pair * kG * D + f] = of;
          oCmpOut[head0 * D + f] = fromF<T>(of);
        }
      }
    } else {
      for (int e = e0 + threadIdx.x; e < e1; e += kNT) {
        const float oc = mergedValue<D>(cmpPart, p.cmpChunks, cs, wC, e);
        p.oCmp[(size_t)pair * kG * D + e] = oc;
        oCmpOut[head0 * D + e] = fromF<T>(oc);
      }
    }
    __syncthreads();
  };
  if (slc) {
    walkChunk<T, D>(sm, qf, K, V, c.H, g, first, end, rowOf, sl2, st, false, [](int) {}, [&] {
      if (p.sliceAll) mergeSlice();
    }, [](const float(&)[2][4], int) {});
    if (p.mergeLaunch && p.lateTrigger) allowDependentLaunch();
    storeChunk<D>(st, sm.scratch(), p.slcPart + ((size_t)pair * p.slcChunks + zz) * cs);
    stamp(p, pair, kT2Walked, false, true);
  } else {
    walkChunk<T, D>(sm, qf, K, V, c.H, g, first, end, rowOf, sl2, st, false, [](int) {}, [] {}, [](const float(&)[2][4], int) {});
    if (p.mergeLaunch && p.lateTrigger) allowDependentLaunch();
    storeChunk<D>(st, sm.scratch(), p.winPart + ((size_t)pair * p.winChunks + zz) * cs);
    // The last window block merges the window (off the selected blocks' path: at B = 1 it runs
    // while the selection does; beside launch 1 with NSA_DECODE_EARLY_WINDOW=1 or without the spread).
    if (lastToFinish(p.doneWin + pair, sm.i, p.winChunks)) {
      const float* winPart = p.winPart + (size_t)pair * p.winChunks * cs;
      constexpr int PER = kG * D / 4 / kNT;
      float4 rows[4][PER];
      loadRows<D>(winPart, 0, p.winChunks, cs, rows);
      mergeWeights<D>({winPart, p.winChunks, sm.x, nullptr}, {nullptr, 0, nullptr, nullptr}, cs, sm.scratch());
      float4 ow[PER];
      mergeRows<D>(winPart, p.winChunks, cs, sm.x, ow, rows);
#pragma unroll
      for (int i = 0; i < PER; i++) reinterpret_cast<float4*>(p.oWin + (size_t)pair * kG * D)[threadIdx.x + i * kNT] = ow[i];
    }
    __syncthreads();       // storeChunk's and the window merge's shared memory overlap the slice merge's
    waitForPrimaryGrid();  // the compressed partials come from launch 1
    mergeSlice();
    stamp(p, pair, kT2Window, false, true);
  }
  if (p.mergeLaunch) return;  // launch 3 merges
  if (!lastToFinish(p.done2 + pair, sm.i, gridDim.y)) return;
  stamp(p, pair, kTMerge, false, false);

  float* wS = sm.x;  // [slcChunks][16]
  const float* slcPart = p.slcPart + (size_t)pair * p.slcChunks * cs;
  // The gates, o_cmp, o_win and the first four selected partials need no merge weights: their loads
  // fly with mergeWeights'.
  constexpr int PER = kG * D / 4 / kNT;
  const T* gates = static_cast<const T*>(a.gates);
  const float* oC = p.oCmp + (size_t)pair * kG * D;
  const float* oW = p.oWin + (size_t)pair * kG * D;
  float4 oc[PER], ow[PER];
  float gc[PER], gs[PER], gw[PER];
#pragma unroll
  for (int i = 0; i < PER; i++) {
    const int e = 4 * (threadIdx.x + i * kNT), r = e / D;
    const size_t gAt = (head0 + r) * 3;
    gc[i] = toF(gates[gAt]);
    gs[i] = toF(gates[gAt + 1]);
    gw[i] = toF(gates[gAt + 2]);
    oc[i] = __ldcg(reinterpret_cast<const float4*>(oC + e));
    ow[i] = __ldcg(reinterpret_cast<const float4*>(oW + e));
  }
  float4 rows[4][PER];
  loadRows<D>(slcPart, 0, p.slcChunks, cs, rows);
  mergeWeights<D>({slcPart, p.slcChunks, wS, nullptr}, {nullptr, 0, nullptr, nullptr}, cs, sm.scratch());
  float4 os[PER];
  mergeRows<D>(slcPart, p.slcChunks, cs, wS, os, rows);
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int i = 0; i < PER; i++) {
    T* o = out + head0 * D + 4 * (threadIdx.x + i * kNT);
    o[0] = fromF<T>(gs[i] * os[i].x + gw[i] * ow[i].x + gc[i] * oc[i].x);
    o[1] = fromF<T>(gs[i] * os[i].y + gw[i] * ow[i].y + gc[i] * oc[i].y);
    o[2] = fromF<T>(gs[i] * os[i].z + gw[i] * ow[i].z + gc[i] * oc[i].z);
    o[3] = fromF<T>(gs[i] * os[i].w + gw[i] * ow[i].w + gc[i] * oc[i].w);
  }
  if (p.trace) {
    __syncthreads();
    stamp(p, pair, kTDone, false, false);
  }
}

// Launch 3 (spread, the default there): grid (pairs, 16), chained to launch 2. Block r merges head
// r's selected partials and writes out = g_cmp·o_cmp + g_slc·o_slc + g_win·o_win for that head,
// with mergeWeights' and mergeRows' operations in their order. The compiler fuses the last sum's
// products in another order than in the last-block merge, so outputs can differ from it in the last
// bit (same blocks; both pass parity). Why: that merge (4-5 µs at 64k B = 1: one block loading every
// partial in rounds, after a counter) becomes one round of loads per head, spread over 16 blocks.
template <class T, int D>
__global__ void __launch_bounds__(kNT) decodeMergeKernel(NSAForwardArgs a, FastPlan p) {
  constexpr int Q = D / 4;         // float4 per head row
  constexpr int Groups = kNT / Q;  // thread t loads column t % Q of chunks t / Q, t / Q + Groups, ...
  constexpr int PerThread = kMaxSlcChunks / Groups;
  static_assert(kMaxSlcChunks % Groups == 0 && kMaxSlcChunks <= 16, "chunk loads per thread; (m, l) of two chunks per lane");
  __shared__ float4 rowsSm[kMaxSlcChunks][Q];
  __shared__ float wSm[kMaxSlcChunks];
  const NSAConfigArgs& c = a.cfg;
  const int pair = blockIdx.x, row = pair / c.H, g = pair % c.H, r = blockIdx.y, tid = threadIdx.x;
  const size_t head = (size_t)row * c.HQ + (size_t)g * kG + r;
  const size_t cs = (size_t)kG * D + 2 * kG;
  const int count = p.slcChunks, col = tid % Q, grp = tid / Q;
  const float* slcPart = p.slcPart + (size_t)pair * count * cs;
  waitForPrimaryGrid();  // the partials, o_cmp and o_win come from launch 2 (and through it from launches 1 and 1b)
  stamp(p, pair, kTMerge, true, false);
  // One round of loads: the chunks' (m, l) of row r (warp 0, lane q: chunks q and q + 8), the row's
  // partials, o_cmp, o_win and gates.
  float m[2], l[2];
#pragma unroll
  for (int k = 0; k < 2; k++) {
    const int zq = (tid & 7) + 8 * k;
    const bool in = tid < 32 && zq < count;
    m[k] = in ? __ldcg(slcPart + zq * cs + kG * D + r) : kNegInf;
    l[k] = in ? __ldcg(slcPart + zq * cs + kG * D + kG + r) : 0.f;
  }
  float4 v[PerThread];
#pragma unroll
  for (int k = 0; k < PerThread; k++) {
    const int zk = grp + Groups * k;
    v[k] = zk < count ? __ldcg(reinterpret_cast<const float4*>(slcPart + zk * cs + r * D) + col) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float4 oc = make_float4(0.f, 0.f, 0.f, 0.f), ow = oc;
  float gc = 0.f, gs = 0.f, gw = 0.f;
  if (tid < Q) {
    oc = __ldcg(reinterpret_cast<const float4*>(p.oCmp + (size_t)pair * kG * D + r * D) + col);
    ow = __ldcg(reinterpret_cast<const float4*>(p.oWin + (size_t)pair * kG * D + r * D) + col);
    const T* gates = static_cast<const T*>(a.gates) + head * 3;
    gc = toF(gates[0]);
    gs = toF(gates[1]);
    gw = toF(gates[2]);
  }
#pragma unroll
  for (int k = 0; k < PerThread; k++)
    if (grp + Groups * k < count) rowsSm[grp + Groups * k][col] = v[k];
  // Merge weights as mergeWeights computes them for row r (8 lanes, chunks q, q + 8, ..., fixed shuffles).
  if (tid < 32) {
    const int q = tid & 7;
    float M = kNegInf;
#pragma unroll
    for (int k = 0; k < 2; k++)
      if (q + 8 * k < count) M = fmaxf(M, m[k]);
    M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 1));
    M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 2));
    M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, 4));
    float L = 0.f;
#pragma unroll
    for (int k = 0; k < 2; k++) {
      const float mz = m[k];
      if (q + 8 * k < count) L += (mz == kNegInf ? 0.f : exp2f(mz - M)) * l[k];
    }
    L += __shfl_xor_sync(0xffffffffu, L, 1);
    L += __shfl_xor_sync(0xffffffffu, L, 2);
    L += __shfl_xor_sync(0xffffffffu, L, 4);
    const float inv = L > 0.f ? 1.f / L : 0.f;
#pragma unroll
    for (int k = 0; k < 2; k++) {
      const float mz = m[k];
      if (tid < 8 && q + 8 * k < count) wSm[q + 8 * k] = (mz == kNegInf ? 0.f : exp2f(mz - M)) * inv;
    }
  }
  __syncthreads();
  if (tid < Q) {
    // mergeRows' multiply-adds in chunk order, its zero-weight padding to a multiple of 4 included.
    float4 os = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int z = 0; z < roundUp(count, 4); z++) {
      const float wz = z < count ? wSm[z] : 0.f;
      const float4 o = z < count ? rowsSm[z][col] : make_float4(0.f, 0.f, 0.f, 0.f);
      os.x = fmaf(wz, o.x, os.x); os.y = fmaf(wz, o.y, os.y);
      os.z = fmaf(wz, o.z, os.z); os.w = fmaf(wz, o.w, os.w);
    }
    T* o = static_cast<T*>(a.out) + head * D + 4 * col;
    o[0] = fromF<T>(gs * os.x + gw * ow.x + gc * oc.x);
    o[1] = fromF<T>(gs * os.y + gw * ow.y + gc * oc.y);
    o[2] = fromF<T>(gs * os.z + gw * ow.z + gc * oc.z);
    o[3] = fromF<T>(gs * os.w + gw * ow.w + gc * oc.w);
  }
  if (p.trace) {
    __syncthreads();
    stamp(p, pair, kTDone, false, true);
  }
}

// Grow-only device buffer for one kind of per-call scratch: the addon enqueues everything on one
// stream, so a buffer reused by the next call is stream-ordered after this one's kernels.
template <class X>
X* grownBuffer(X*& buf, size_t& size, size_t count, bool zero, cudaStream_t stream) {
  if (count > size) {
    if (buf) NSA_CUDA(cudaFreeAsync(buf, stream));
    NSA_CUDA(cudaMallocAsync(reinterpret_cast<void**>(&buf), sizeof(X) * count, stream));
    if (zero) NSA_CUDA(cudaMemsetAsync(buf, 0, sizeof(X) * count, stream));
    size = count;
  }
  return buf;
}

// Finished-block counters: zeroed once, reset by the last block of every launch.
int* doneCounters(size_t count, cudaStream_t stream) {
  static int* buf = nullptr;
  static size_t size = 0;
  return grownBuffer(buf, size, count, true, stream);
}
float* scratchFloats(size_t count, cudaStream_t stream) {
  static float* buf = nullptr;
  static size_t size = 0;
  return grownBuffer(buf, size, count, false, stream);
}

unsigned long long* candidateKeys(size_t count, cudaStream_t stream) {
  static unsigned long long* buf = nullptr;
  static size_t size = 0;
  return grownBuffer(buf, size, count, false, stream);
}
unsigned long long* traceStamps(size_t count, cudaStream_t stream) {
  static unsigned long long* buf = nullptr;
  static size_t size = 0;
  return grownBuffer(buf, size, count, false, stream);
}
// NSA_DECODE_TRACE=1: every 64th call waits for its step and prints pair 0's stamps (µs after the
// first launch-1 block started) to stderr.
void printTrace(const unsigned long long* trace, int pairs, bool spread, bool mergeLaunch, cudaStream_t stream) {
  static int calls = 0;
  if (++calls % 64 != 0) return;
  unsigned long long t[kTraceSlots];
  NSA_CUDA(cudaMemcpyAsync(t, trace, sizeof t, cudaMemcpyDeviceToHost, stream));
  NSA_CUDA(cudaStreamSynchronize(stream));
  auto at = [&](int s, bool last) {
    const unsigned long long v = last ? ~t[s] : t[s];
    return v == ~0ull || v == 0ull ? -1.0 : (double)(long long)(v - t[kT1Start]) / 1e3;
  };
  // Spread: the selection's stamps are launch 1b's latest block past its wait and latest block done;
  // with launch 3, the final merge's are its first block past the wait and its latest block done.
  std::fprintf(stderr,
               "decode trace (pairs %d; pair 0, µs): launch-1 chunks stored %.2f, selection%s %.2f..%.2f; launch 2 first block %.2f, "
               "selected blocks past the wait %.2f, stored %.2f, window slices %.2f; final merge %.2f..%.2f\n",
               pairs, at(kT1Walked, true), spread ? " (launch 1b)" : "", at(kTSelect, spread), at(kTSelected, spread), at(kT2Start, false), at(kT2Waited, true),
               at(kT2Walked, true), at(kT2Window, true), at(kTMerge, false), at(kTDone, mergeLaunch));
  if (spread)
    std::fprintf(stderr, "decode trace, spread (pair 0, µs): launch-1b scores %.2f; selected blocks know their blocks %.2f\n",
                 at(kTSelScored, true), at(kT2Chosen, true));
  // The SM clock of launch-1 block (0, 0) over its walk (clock64 cycles per %globaltimer ns).
  const double ns = (double)(long long)(t[kTTimer1] - t[kTTimer0]), cycles = (double)(long long)(t[kTClock1] - t[kTClock0]);
  std::fprintf(stderr, "decode trace, SM clock: %.0f MHz over %.2f µs\n", ns > 0 ? 1e3 * cycles / ns : -1.0, ns / 1e3);
}

int ceilDiv(int x, int y) { return (x + y - 1) / y; }
// Selection blocks a 64-key compressed tile can touch, rounded up to a multiple of 4 (float4 rows).
int selectionSpan(int perCmp, int perSel) { return roundUp((kTile + perCmp - 2) / perSel + 2, 4); }
// Tiles per chunk for branches of tilesA and tilesB tiles (chunks of one length, at most capA and
// capB of them): the least waves x (tiles + 1) + chunks / 16, in tile times (a block's Q load and
// partial store cost about a tile; every 16 chunks add a round of loads to the merges), ties to
// longer chunks. slots = resident blocks on the GPU.
int chunkTiles(int tilesA, int capA, int tilesB, int capB, int pairs, int slots) {
  int best = std::max(tilesA, tilesB);
  double bestCost = 1e30;
  for (int t = best; t >= 1; t--) {
    const int chunks = ceilDiv(tilesA, t) + (tilesB ? ceilDiv(tilesB, t) : 0);
    if (ceilDiv(tilesA, t) > capA || (tilesB && ceilDiv(tilesB, t) > capB)) break;
    const long waves = ((long)pairs * chunks + slots - 1) / slots;
    const double cost = (double)waves * (t + 1) + chunks / 16.0;
    if (cost < bestCost) bestCost = cost, best = t;
  }
  return best;
}
// envInt's fallback for "not set" where any value may be set.
constexpr int kUnset = INT_MIN;
int envInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// Per kernel pair (template instance): shared-memory opt-in and resident blocks per SM, for the
// bytes the last call needed.
template <class T, int D>
struct KernelFacts {
  size_t bytes = 0;
  int perSm1 = 1, perSm2 = 1;
  void update(size_t need) {
    if (need == bytes) return;
    NSA_CUDA(cudaFuncSetAttribute(decodeCmpKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need));
    NSA_CUDA(cudaFuncSetAttribute(decodeSlcWinKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need));
    NSA_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm1, decodeCmpKernel<T, D>, kNT, need));
    NSA_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm2, decodeSlcWinKernel<T, D>, kNT, need));
    perSm1 = std::max(1, perSm1);
    perSm2 = std::max(1, perSm2);
    bytes = need;
  }
};

template <class T, int D>
void launchFast(const NSAForwardArgs& a, int sms, bool pdl, cudaStream_t stream) {
  const NSAConfigArgs& c = a.cfg;
  const int pairs = a.seq.rows * c.H;
  static KernelFacts<T, D> facts;
  const size_t bytes = FastLayout<D>::bytes(sizeof(T), c.n);
  facts.update(bytes);
  FastPlan p{};
  const int tilesC = std::max(1, ceilDiv(compressedCount(a.seq.maxKeys, c.l, c.d), kTile));
  const int tilesW = std::max(1, ceilDiv(c.window, kTile));
  const int tilesS = std::max(1, ceilDiv(c.n * c.ls, kTile));
  // Launch 1: compressed chunks (two tiles each at B = 1, 64k on an H100: 128 blocks). Launch 2:
  // selected and window tiles in chunks of one length. NSA_DECODE_CMP_TILES and NSA_DECODE_SW_TILES
  // force the chunk lengths (A/B runs).
  // Environment switches are read once per process: a B=1 step's host time is close to its GPU time.
  static const int cmpTilesEnv = envInt("NSA_DECODE_CMP_TILES", kUnset), swTilesEnv = envInt("NSA_DECODE_SW_TILES", kUnset);
  static const bool mass24Env = envInt("NSA_DECODE_MASS24", 1) == 1;
  const int t1 = chunkTiles(tilesC, kMaxCmpChunks, 0, 0, pairs, facts.perSm1 * sms);
  p.cmpChunkTiles = std::max(ceilDiv(tilesC, kMaxCmpChunks), cmpTilesEnv != kUnset ? cmpTilesEnv : t1);
  p.cmpChunks = ceilDiv(tilesC, p.cmpChunkTiles);
  const int t2 = std::max({ceilDiv(tilesS, kMaxSlcChunks), ceilDiv(tilesW, kMaxWinChunks),
                          swTilesEnv != kUnset ? swTilesEnv : chunkTiles(tilesS, kMaxSlcChunks, tilesW, kMaxWinChunks, pairs, facts.perSm2 * sms)});
  p.slcChunkTiles = p.winChunkTiles = t2;
  p.slcChunks = ceilDiv(tilesS, t2);
  p.winChunks = ceilDiv(tilesW, t2);
  p.cmpTiles = tilesC;
  p.W = selectionSpan(c.l / c.d, c.ls / c.d);
  // Selection v8 unless NSA_DECODE_SELECT=v7, where its scratch (tile contributions, f, candidates) fits the tile bytes.
  static const bool v7Selection = [] {
    const char* v = std::getenv("NSA_DECODE_SELECT");
    return v && std::string(v) == "v7";
  }();
  const size_t v8Scratch = sizeof(float) * (size_t)tilesC * (p.W + kG) + (sizeof(unsigned long long) * kW + sizeof(int)) * c.n + 16;
  p.selectV8 = !v7Selection && v8Scratch <= FastLayout<D>::tileBytes(sizeof(T));
  p.mass24 = mass24Env && c.l == 2 * c.d && c.ls == 4 * c.d && p.W == 20;
  p.sliceAll = !(pdl && (long)pairs * (p.cmpChunks + p.slcChunks + p.winChunks) <= (long)facts.perSm1 * sms);
  // The spread selection (launch 1b, decodeSelectKernel): kNT selection blocks per launch-1b block, over
  // the blocks that can be chosen (0 .. nb - localBlocks - 1). NSA_DECODE_SPREAD=1 (default): where
  // all three grids fit on the GPU at once, chained (then a 64k B=1 step's selection runs beside
  // nothing else); 2: wherever launch 2's scratch holds the lists; 0: never (the last launch-1 block
  // selects, v8 / v7).
  static const int spreadEnv = envInt("NSA_DECODE_SPREAD", 1);
  const int nbAll = a.seq.maxKeys > 0 ? (a.seq.maxKeys - 1) / c.ls + 1 : 0;
  p.selParts = std::max(1, ceilDiv(std::max(0, nbAll - c.localBlocks), kNT));
  const bool listsFit = (size_t)p.selParts * c.n * sizeof(unsigned long long) + sizeof(int) * c.n <= FastLayout<D>::tile * sizeof(T);
  const long resident = (long)pairs * (p.cmpChunks + p.selParts + p.slcChunks + p.winChunks + kG);
  p.spread = !a.blockIn && listsFit &&
             (spreadEnv == 2 || (spreadEnv == 1 && pdl && resident <= (long)std::min(facts.perSm1, facts.perSm2) * sms));
  // With the spread selection, a fourth chained launch merges the output (NSA_DECODE_MERGE_LAUNCH=0:
  // the last launch-2 block, as without it).
  static const bool mergeEnv = envInt("NSA_DECODE_MERGE_LAUNCH", 1) == 1;
  p.mergeLaunch = p.spread && mergeEnv;
  static const bool cursorEnv = envInt("NSA_DECODE_CURSOR", 1) == 1;
  p.cursorStart = cursorEnv;
  static const bool lateTriggerEnv = envInt("NSA_DECODE_LATE_TRIGGER", 1) == 1;
  p.lateTrigger = lateTriggerEnv;
  static const bool earlyWindowEnv = envInt("NSA_DECODE_EARLY_WINDOW", 0) == 1;
  p.earlyWindow = earlyWindowEnv;
  static const bool sliceEnv = envInt("NSA_DECODE_SLICE2", 1) == 1;
  p.slicePairs = sliceEnv;
  const size_t cs = (size_t)kG * D + 2 * kG;
  const size_t scoreFloats = p.spread ? (size_t)tilesC * kTile * kG : 0;
  const size_t floats =
      (size_t)pairs * ((p.cmpChunks + p.winChunks + p.slcChunks) * cs + (size_t)tilesC * kG * (p.W + 1) + 2 * kG * D + scoreFloats);
  float* f = scratchFloats(floats, stream);
  p.cmpPart = f; f += (size_t)pairs * p.cmpChunks * cs;
  p.winPart = f; f += (size_t)pairs * p.winChunks * cs;
  p.slcPart = f; f += (size_t)pairs * p.slcChunks * cs;
  p.mass = f; f += (size_t)pairs * tilesC * kG * p.W;
  p.tileMax = f; f += (size_t)pairs * tilesC * kG;
  p.oCmp = f; f += (size_t)pairs * kG * D;
  p.oWin = f; f += (size_t)pairs * kG * D;
  if (p.spread) {
    p.scores = f;
    p.cand = candidateKeys((size_t)pairs * p.selParts * c.n, stream);
  }
  p.done1 = doneCounters(3 * (size_t)pairs, stream);
  p.done2 = p.done1 + pairs;
  p.doneWin = p.done2 + pairs;
  static const bool trace = envInt("NSA_DECODE_TRACE", 0) == 1;
  if (trace) {
    p.trace = traceStamps((size_t)pairs * kTraceSlots, stream);
    NSA_CUDA(cudaMemsetAsync(p.trace, 0xff, sizeof(unsigned long long) * pairs * kTraceSlots, stream));
  }
  decodeCmpKernel<T, D><<<dim3(pairs, p.cmpChunks), kNT, bytes, stream>>>(a, p);
  NSA_LAUNCHED("nsa decode decodeCmpKernel");
  cudaLaunchConfig_t cfg{};
  cfg.blockDim = dim3(kNT);
  cfg.stream = stream;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = pdl ? 1 : 0;
  if (p.spread) {
    // NSA_DECODE_SPREAD_SPLIT=1 / 2 (default) / 4: threads per selection block (blocks of 128 x that).
    static const int splitEnv = envInt("NSA_DECODE_SPREAD_SPLIT", 2);
    static const int split = splitEnv == 1 || splitEnv == 4 ? splitEnv : 2;
    cfg.gridDim = dim3(pairs, p.selParts);
    cfg.blockDim = dim3(kNT * split);
    cfg.dynamicSmemBytes = 0;
    NSA_CUDA(cudaLaunchKernelEx(&cfg, split == 1 ? decodeSelectKernel<D, 1> : split == 4 ? decodeSelectKernel<D, 4> : decodeSelectKernel<D, 2>, a, p));
    NSA_LAUNCHED("nsa decode decodeSelectKernel");
    cfg.blockDim = dim3(kNT);
  }
  cfg.gridDim = dim3(pairs, p.slcChunks + p.winChunks);
  cfg.dynamicSmemBytes = bytes;
  NSA_CUDA(cudaLaunchKernelEx(&cfg, decodeSlcWinKernel<T, D>, a, p));
  NSA_LAUNCHED("nsa decode decodeSlcWinKernel");
  if (p.mergeLaunch) {
    cfg.gridDim = dim3(pairs, kG);
    cfg.dynamicSmemBytes = 0;
    NSA_CUDA(cudaLaunchKernelEx(&cfg, decodeMergeKernel<T, D>, a, p));
    NSA_LAUNCHED("nsa decode decodeMergeKernel");
  }
  if (trace) printTrace(p.trace, pairs, p.spread, p.mergeLaunch, stream);
}

}  // namespace

// Register-layout decode; false = not taken (the caller has checked the split-K conditions).
// pdl: chain the second launch to the first (sm_90 and newer).
bool nsaDecodeRegisters(const NSAForwardArgs& a, int sms, bool pdl, cudaStream_t stream) {
  const NSAConfigArgs& c = a.cfg;
  if (a.dtype == DType::F32 || c.HQ != kG * c.H || c.Dk != c.Dv || (c.Dk != 64 && c.Dk != 128)) return false;
  if (a.seq.rows == 0 || c.l % c.d || c.ls % c.d || c.n > 64 || c.n < 1) return false;
  // Top-n keeps each lane's candidates in registers (nb <= kMaxBlocks) and the selection's scratch
  // (tile contributions, block scores, candidates) lives in the tile bytes: longer caches take the
  // general decode.
  const int nbMax = (a.seq.maxKeys + c.ls - 1) / c.ls + 1;
  if (nbMax > kMaxBlocks) return false;
  const int tilesC = ceilDiv(compressedCount(a.seq.maxKeys, c.l, c.d), kTile);
  const size_t scratch = sizeof(float) * ((size_t)tilesC * selectionSpan(c.l / c.d, c.ls / c.d) + nbMax + 2 * kW * c.n + c.n) + 64;
  if (scratch > (c.Dk == 64 ? FastLayout<64>::tileBytes(2) : FastLayout<128>::tileBytes(2))) return false;
  const bool f16 = a.dtype == DType::F16;
  if (c.Dk == 64) f16 ? launchFast<__half, 64>(a, sms, pdl, stream) : launchFast<__nv_bfloat16, 64>(a, sms, pdl, stream);
  else f16 ? launchFast<__half, 128>(a, sms, pdl, stream) : launchFast<__nv_bfloat16, 128>(a, sms, pdl, stream);
  return true;
}

}  // namespace nsa
