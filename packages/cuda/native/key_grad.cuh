// Key-centric gradient step: a block owns one tile of BK keys of one KV head and visits every query
// row that sees them (64 rows at a time: several positions x the group's heads), accumulating dK and
// dV in shared memory. Each key's gradient is written by exactly one block, in a fixed order, so
// the result is deterministic without atomics.
#pragma once
#include "attend.cuh"

namespace nsa {

// Picks (rows per step, keys per tile) that fit shared memory: 64 x 64 where possible.
template <class T> struct KeyGradSmem;
template <class T>
inline void keyGradShape(int Dk, int Dv, int* R, int* BK, size_t* bytes);

template <class T>
struct KeyGradSmem {
  int R, BK, Dk, Dv, ldq, ldv, ldp, lds, ldk, ldvv;
  T *k, *v, *q, *dO, *pT, *dsT;
  float *s, *dp, *dK, *dV;
  float *lse, *D, *gate;
  int *krow, *kpos, *rpos, *rrow, *rhead;

  static size_t bytes(int R, int BK, int Dk, int Dv) {
    const int ldq = smemStride<T>(Dk), ldv = smemStride<T>(Dv), ldp = smemStride<T>(BK);
    size_t b = sizeof(T) * (size_t)(BK * ldq + BK * ldv + R * ldq + R * ldv + 2 * R * ldp);
    b = (b + 15) / 16 * 16;
    b += sizeof(float) * (size_t)(2 * R * (BK + 4) + BK * (Dk + 4) + BK * (Dv + 4) + 3 * R);
    b += sizeof(int) * (size_t)(2 * BK + 3 * R);
    return b + 64;
  }
  __device__ void carve(char* base, int R_, int BK_, int Dk_, int Dv_) {
    R = R_; BK = BK_; Dk = Dk_; Dv = Dv_;
    ldq = smemStride<T>(Dk); ldv = smemStride<T>(Dv); ldp = smemStride<T>(BK);
    lds = BK + 4; ldk = Dk + 4; ldvv = Dv + 4;
    T* t = reinterpret_cast<T*>(base);
    k = t; t += BK * ldq; v = t; t += BK * ldv; q = t; t += R * ldq; dO = t; t += R * ldv;
    pT = t; t += R * ldp; dsT = t; t += R * ldp;
    size_t off = (reinterpret_cast<char*>(t) - base + 15) / 16 * 16;
    float* f = reinterpret_cast<float*>(base + off);
    s = f; f += R * lds; dp = f; f += R * lds; dK = f; f += BK * ldk; dV = f; f += BK * ldvv;
    lse = f; f += R; D = f; f += R; gate = f; f += R;
    int* i = reinterpret_cast<int*>(f);
    krow = i; i += BK; kpos = i; i += BK; rpos = i; i += R; rrow = i; i += R; rhead = i;
  }
};

template <class T>
inline void keyGradShape(int Dk, int Dv, int* R, int* BK, size_t* bytes) {
  const int shapes[5][2] = {{64, 64}, {64, 32}, {32, 32}, {32, 16}, {16, 16}};
  for (const auto& sh : shapes) {
    *R = sh[0]; *BK = sh[1];
    *bytes = KeyGradSmem<T>::bytes(*R, *BK, Dk, Dv);
    if (*bytes <= 200 * 1024) return;
  }
}

// The per-row inputs of one step: q row, dO row, the branch's lse (log2 domain), D = g * (dO · o)
// and gate g. Rows with rrow < 0 are padding.
struct RowSource {
  const void* q;
  const void* dO;
  const float* lse;    // lse[(row * HQ + h) * lseStride + lseOffset]
  int lseStride, lseOffset;
  const float* D;      // same indexing as lse
  const void* gates;   // gates[(row * HQ + h) * 3 + gateIndex], null = 1
  int gateIndex;
  int HQ;
};

template <class T>
__device__ void keyGradBegin(KeyGradSmem<T>& sm) {
  for (int e = threadIdx.x; e < sm.BK * sm.ldk; e += blockDim.x) sm.dK[e] = 0.f;
  for (int e = threadIdx.x; e < sm.BK * sm.ldvv; e += blockDim.x) sm.dV[e] = 0.f;
}

// One step over the rows already described by rrow/rhead/rpos (keys loaded, krow/kpos set).
// sl2 = scale * log2(e). Visibility: krow[c] >= 0, kpos[c] <= rpos[r] and kpos[c] > rpos[r] - window.
template <class T>
__device__ void keyGradStep(KeyGradSmem<T>& sm, const RowSource& src, float sl2, int window) {
  const T* Q = static_cast<const T*>(src.q);
  const T* dO = static_cast<const T*>(src.dO);
  const T* gates = static_cast<const T*>(src.gates);
  gatherRows<T>(sm.q, sm.ldq, sm.R, sm.Dk, [&](int r) -> const T* {
    const int row = sm.rrow[r];
    return row >= 0 ? Q + ((size_t)row * src.HQ + sm.rhead[r]) * sm.Dk : nullptr;
  });
  gatherRows<T>(sm.dO, sm.ldv, sm.R, sm.Dv, [&](int r) -> const T* {
    const int row = sm.rrow[r];
    return row >= 0 ? dO + ((size_t)row * src.HQ + sm.rhead[r]) * sm.Dv : nullptr;
  });
  for (int r = threadIdx.x; r < sm.R; r += blockDim.x) {
    const int row = sm.rrow[r];
    if (row >= 0) {
      const size_t at = ((size_t)row * src.HQ + sm.rhead[r]);
      sm.lse[r] = src.lse[at * src.lseStride + src.lseOffset];
      sm.D[r] = src.D[at * src.lseStride + src.lseOffset];
      sm.gate[r] = gates ? toF(gates[at * 3 + src.gateIndex]) : 1.f;
    } else {
      sm.lse[r] = INFINITY; sm.D[r] = 0.f; sm.gate[r] = 0.f;
    }
  }
  __syncthreads();
  smemGemm<T, ALayout::Row, BLayout::NK>(sm.R, sm.BK, sm.Dk, sm.q, sm.ldq, sm.k, sm.ldq, sm.s, sm.lds, false);
  smemGemm<T, ALayout::Row, BLayout::NK>(sm.R, sm.BK, sm.Dv, sm.dO, sm.ldv, sm.v, sm.ldv, sm.dp, sm.lds, false);
  __syncthreads();
  for (int e = threadIdx.x; e < sm.R * sm.BK; e += blockDim.x) {
    const int r = e / sm.BK, c = e % sm.BK;
    const bool visible = sm.rrow[r] >= 0 && sm.krow[c] >= 0 && sm.kpos[c] <= sm.rpos[r] && sm.kpos[c] > sm.rpos[r] - window;
    const float p = visible ? exp2f(sm.s[r * sm.lds + c] * sl2 - sm.lse[r]) : 0.f;
    const float g = sm.gate[r];
    sm.pT[r * sm.ldp + c] = fromF<T>(g * p);
    sm.dsT[r * sm.ldp + c] = fromF<T>(p * (g * sm.dp[r * sm.lds + c] - sm.D[r]));
  }
  __syncthreads();
  // dV += (g P)ᵀ dO ; dK += dSᵀ Q  (scale applied at the end)
  smemGemm<T, ALayout::Col, BLayout::KN>(sm.BK, sm.Dv, sm.R, sm.pT, sm.ldp, sm.dO, sm.ldv, sm.dV, sm.ldvv, true);
  smemGemm<T, ALayout::Col, BLayout::KN>(sm.BK, sm.Dk, sm.R, sm.dsT, sm.ldp, sm.q, sm.ldq, sm.dK, sm.ldk, true);
  __syncthreads();
}

// Writes the tile's dK (times scale) and dV to rows krow of dKout/dVout ([rows][H][D]) for head g.
template <class T>
__device__ void keyGradEnd(KeyGradSmem<T>& sm, void* dKout, void* dVout, int H, int g, float scale) {
  T* dk = static_cast<T*>(dKout);
  T* dv = static_cast<T*>(dVout);
  for (int e = threadIdx.x; e < sm.BK * sm.Dk; e += blockDim.x) {
    const int c = e / sm.Dk, d = e % sm.Dk;
    if (sm.krow[c] >= 0) dk[((size_t)sm.krow[c] * H + g) * sm.Dk + d] = fromF<T>(sm.dK[c * sm.ldk + d] * scale);
  }
  for (int e = threadIdx.x; e < sm.BK * sm.Dv; e += blockDim.x) {
    const int c = e / sm.Dv, d = e % sm.Dv;
    if (sm.krow[c] >= 0) dv[((size_t)sm.krow[c] * H + g) * sm.Dv + d] = fromF<T>(sm.dV[c * sm.ldvv + d]);
  }
}

// Loads the key tile (rows krow, set by the caller, then synchronised).
template <class T>
__device__ void keyGradLoad(KeyGradSmem<T>& sm, const void* K, const void* V, int H, int g) {
  const T* Kt = static_cast<const T*>(K);
  const T* Vt = static_cast<const T*>(V);
  gatherRows<T>(sm.k, sm.ldq, sm.BK, sm.Dk, [&](int c) -> const T* {
    return sm.krow[c] >= 0 ? Kt + ((size_t)sm.krow[c] * H + g) * sm.Dk : nullptr;
  });
  gatherRows<T>(sm.v, sm.ldv, sm.BK, sm.Dv, [&](int c) -> const T* {
    return sm.krow[c] >= 0 ? Vt + ((size_t)sm.krow[c] * H + g) * sm.Dv : nullptr;
  });
}

}  // namespace nsa
