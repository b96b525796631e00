// The query-centric attention step used by the NSA forward and backward kernels: a block holds up
// to RG query rows (the heads of one GQA group at one position, so all of them share every key
// fetch) and walks a list of key tiles with an online softmax.
#pragma once
#include "tile.cuh"

namespace nsa {

// Shared-memory working set of one block. Sizes are runtime values; `carve` lays it out.
template <class T>
struct AttendSmem {
  int RG, BK, Dk, Dv, ldq, ldv, ldp, lds, ldo;
  T* q;        // [RG][ldq]  queries (heads of the group)
  T* k;        // [BK][ldq]  key tile
  T* v;        // [BK][ldv]  value tile
  T* p;        // [RG][ldp]  probabilities (or dS) in T for the tensor cores
  T* dO;       // [RG][ldv]  output gradient (backward only)
  float* s;    // [RG][lds]  scores
  float* o;    // [RG][ldo]  output (forward) or dq (backward) accumulator
  float* y;    // [RG][ldo]  gated output (forward) / dP scratch (backward)
  float* m;    // [RG] running max (log2 domain)
  float* l;    // [RG] running sum
  float* alpha;// [RG]
  float* lse;  // [RG] log2-domain log-sum-exp of the branch
  float* aux;  // [RG] backward: D = g_b * (dO · o_b)
  float* gate; // [RG][3]
  int* krow;   // [BK] flat key row of each tile slot, -1 = empty
  int* kpos;   // [BK] key position (a compressed key's last token) for the causal mask
  int* rpos;   // [RG] query position of each row: key c is visible to row r iff kpos[c] <= rpos[r]
  float* pk;   // [BK] selection: probability mass per compressed key summed over the group
  int* ints;   // scratch ints (selection lists)
  float* red;  // [2 * kWarps] reduction scratch
  // Double buffers of the tile pipeline (forEachTile); k, v, krow, kpos point at the current one.
  T* kBuf[2];
  T* vBuf[2];
  int* krowBuf[2];
  int* kposBuf[2];

  __host__ __device__ static size_t bytes(int RG, int BK, int Dk, int Dv, int nInts, bool backward, bool pipelined = false) {
    const int ldq = smemStride<T>(Dk), ldv = smemStride<T>(Dv), ldp = smemStride<T>(BK);
    const int lds = BK + 4, ldo = roundUp(imax(imax(Dk, Dv), BK), 4) + 4;
    size_t b = 0;
    b += sizeof(T) * (size_t)(RG * ldq + BK * ldq + BK * ldv + RG * ldp + (backward ? RG * ldv : 0));
    if (pipelined) b += sizeof(T) * (size_t)(BK * ldq + BK * ldv) + sizeof(int) * 2 * BK + 32;
    b = (b + 15) / 16 * 16;
    b += sizeof(float) * (size_t)(RG * lds + 2 * RG * ldo + 8 * RG + BK + 2 * kWarps);
    b += sizeof(int) * (size_t)(2 * BK + RG + nInts);
    return b + 64;
  }

  __device__ void carve(char* base, int RG_, int BK_, int Dk_, int Dv_, bool backward, bool pipelined = false) {
    RG = RG_; BK = BK_; Dk = Dk_; Dv = Dv_;
    ldq = smemStride<T>(Dk); ldv = smemStride<T>(Dv); ldp = smemStride<T>(BK);
    lds = BK + 4; ldo = roundUp(imax(imax(Dk, Dv), BK), 4) + 4;
    T* t = reinterpret_cast<T*>(base);
    q = t; t += RG * ldq;
    k = t; t += BK * ldq;
    v = t; t += BK * ldv;
    p = t; t += RG * ldp;
    dO = t; if (backward) t += RG * ldv;
    kBuf[0] = k; vBuf[0] = v; kBuf[1] = k; vBuf[1] = v;
    if (pipelined) { kBuf[1] = t; t += BK * ldq; vBuf[1] = t; t += BK * ldv; }
    size_t off = (reinterpret_cast<char*>(t) - base + 15) / 16 * 16;
    float* f = reinterpret_cast<float*>(base + off);
    s = f; f += RG * lds;
    o = f; f += RG * ldo;
    y = f; f += RG * ldo;
    m = f; f += RG; l = f; f += RG; alpha = f; f += RG; lse = f; f += RG; aux = f; f += RG;
    gate = f; f += 3 * RG;
    pk = f; f += BK;
    red = f; f += 2 * kWarps;
    krow = reinterpret_cast<int*>(f);
    kpos = krow + BK;
    rpos = kpos + BK;
    ints = rpos + RG;
    krowBuf[0] = krow; kposBuf[0] = kpos; krowBuf[1] = krow; kposBuf[1] = kpos;
    if (pipelined) { krowBuf[1] = ints; kposBuf[1] = ints + BK; ints += 2 * BK; }
  }
};

// Loads the current tile's keys and values (rows named by sm.krow) for KV head g.
template <class T>
__device__ __forceinline__ void loadKV(AttendSmem<T>& sm, const T* K, const T* V, int H, int g, bool withV = true) {
  const size_t kStride = (size_t)H * sm.Dk, vStride = (size_t)H * sm.Dv;
  gatherRows<T>(sm.k, sm.ldq, sm.BK, sm.Dk, [&](int r) -> const T* {
    const int kr = sm.krow[r];
    return kr >= 0 ? K + kr * kStride + (size_t)g * sm.Dk : nullptr;
  });
  if (withV) {
    gatherRows<T>(sm.v, sm.ldv, sm.BK, sm.Dv, [&](int r) -> const T* {
      const int kr = sm.krow[r];
      return kr >= 0 ? V + kr * vStride + (size_t)g * sm.Dv : nullptr;
    });
  }
}

// s = q · kᵀ for the tile (unscaled).
template <class T>
__device__ __forceinline__ void tileScores(AttendSmem<T>& sm) {
  smemGemm<T, ALayout::Row, BLayout::NK>(sm.RG, sm.BK, sm.Dk, sm.q, sm.ldq, sm.k, sm.ldq, sm.s, sm.lds, false);
}

template <class T>
__device__ __forceinline__ void beginBranch(AttendSmem<T>& sm) {
  for (int e = threadIdx.x; e < sm.RG * sm.ldo; e += blockDim.x) sm.o[e] = 0.f;
  for (int r = threadIdx.x; r < sm.RG; r += blockDim.x) {
    sm.m[r] = kNegInf;
    sm.l[r] = 0.f;
  }
}

// One online-softmax step over the tile already in shared memory (krow set, K/V loaded).
// Rows >= nr are padding. sl2 = scale * log2(e).
template <class T>
__device__ void attendTile(AttendSmem<T>& sm, int nr, float sl2) {
  tileScores(sm);
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int r = warp; r < sm.RG; r += kWarps) {
    float* srow = sm.s + r * sm.lds;
    float mx = kNegInf;
    for (int c = lane; c < sm.BK; c += 32) {
      const float x = (r < nr && sm.krow[c] >= 0 && sm.kpos[c] <= sm.rpos[r]) ? srow[c] * sl2 : kNegInf;
      srow[c] = x;
      mx = fmaxf(mx, x);
    }
    mx = warpMax(mx);
    const float mOld = sm.m[r], mNew = fmaxf(mOld, mx);
    float sum = 0.f;
    T* prow = sm.p + r * sm.ldp;
    for (int c = lane; c < sm.BK; c += 32) {
      const float x = srow[c];
      const float pv = x == kNegInf ? 0.f : exp2f(x - mNew);
      prow[c] = fromF<T>(pv);
      sum += pv;
    }
    sum = warpSum(sum);
    if (lane == 0) {
      const float a = mOld == kNegInf ? 0.f : exp2f(mOld - mNew);
      sm.alpha[r] = a;
      sm.m[r] = mNew;
      sm.l[r] = sm.l[r] * a + sum;
    }
  }
  __syncthreads();
  // o = alpha * o + P·V (the rescale rides on the accumulator load).
  smemGemm<T, ALayout::Row, BLayout::KN>(sm.RG, sm.Dv, sm.BK, sm.p, sm.ldp, sm.v, sm.ldv, sm.o, sm.ldo, true, sm.alpha);
  __syncthreads();
}

// Normalises o by l and stores the branch's log2-domain log-sum-exp (+inf for an empty key set,
// so that exp2(s - lse) = 0 in the backward pass and an empty branch yields exactly zero).
template <class T>
__device__ void endBranch(AttendSmem<T>& sm) {
  for (int r = threadIdx.x; r < sm.RG; r += blockDim.x) {
    const float l = sm.l[r];
    sm.lse[r] = l > 0.f ? sm.m[r] + log2f(l) : INFINITY;
    sm.alpha[r] = l > 0.f ? 1.f / l : 0.f;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < sm.RG * sm.Dv; e += blockDim.x) {
    const int r = e / sm.Dv, c = e % sm.Dv;
    sm.o[r * sm.ldo + c] *= sm.alpha[r];
  }
  __syncthreads();
}

// Loads RG rows of `src` ([rows][heads][D]) for heads h0 .. h0+nr-1 of one flat row; padding is zero.
template <class T>
__device__ __forceinline__ void loadHeads(T* dst, int ld, int RG, int nr, const T* src, size_t rowOffset, int h0, int D) {
  gatherRows<T>(dst, ld, RG, D, [&](int r) -> const T* {
    return r < nr ? src + rowOffset + (size_t)(h0 + r) * D : nullptr;
  });
}

// Walks `tiles` key tiles with a two-stage pipeline: while `body` works on tile t, tile t + 1's
// keys (and values) are already on their way into the other buffer (cp.async). fill(t, krow, kpos)
// names the tile's key rows (threads j < BK each set krow[j], kpos[j]). body must end with a
// __syncthreads. Needs a pipelined AttendSmem and 16-byte rows; otherwise loads synchronously.
template <class T, class Fill, class Body>
__device__ void forEachTile(AttendSmem<T>& sm, int tiles, const T* K, const T* V, int H, int g, bool withV, Fill fill, Body body) {
  if (tiles <= 0) return;
  constexpr int VEC = 16 / sizeof(T);
  // cp.async needs 16-byte rows on both sides (float32 rows are padded by one word: no).
  const bool async = sm.kBuf[1] != sm.kBuf[0] && sm.Dk % VEC == 0 && sm.Dv % VEC == 0 &&
                     (sm.ldq * sizeof(T)) % 16 == 0 && (sm.ldv * sizeof(T)) % 16 == 0;
  const size_t kStride = (size_t)H * sm.Dk, vStride = (size_t)H * sm.Dv;
  auto issue = [&](int b) {
    const int* kr = sm.krowBuf[b];
    gatherRowsAsync<T>(sm.kBuf[b], sm.ldq, sm.BK, sm.Dk, [&](int r) -> const T* {
      return kr[r] >= 0 ? K + kr[r] * kStride + (size_t)g * sm.Dk : nullptr;
    });
    if (withV)
      gatherRowsAsync<T>(sm.vBuf[b], sm.ldv, sm.BK, sm.Dv, [&](int r) -> const T* {
        return kr[r] >= 0 ? V + kr[r] * vStride + (size_t)g * sm.Dv : nullptr;
      });
    cpAsyncCommit();
  };
  if (!async) {
    for (int t = 0; t < tiles; t++) {
      __syncthreads();
      fill(t, sm.krowBuf[0], sm.kposBuf[0]);
      __syncthreads();
      sm.k = sm.kBuf[0]; sm.v = sm.vBuf[0]; sm.krow = sm.krowBuf[0]; sm.kpos = sm.kposBuf[0];
      loadKV(sm, K, V, H, g, withV);
      __syncthreads();
      body();
    }
    return;
  }
  __syncthreads();
  fill(0, sm.krowBuf[0], sm.kposBuf[0]);
  __syncthreads();
  issue(0);
  int cur = 0;
  for (int t = 0; t < tiles; t++) {
    const int nxt = cur ^ 1;
    if (t + 1 < tiles) {
      fill(t + 1, sm.krowBuf[nxt], sm.kposBuf[nxt]);
      __syncthreads();
      issue(nxt);
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
    sm.k = sm.kBuf[cur]; sm.v = sm.vBuf[cur]; sm.krow = sm.krowBuf[cur]; sm.kpos = sm.kposBuf[cur];
    body();
    cur = nxt;
  }
}

}  // namespace nsa
