// Split-K partial results: a block that saw only part of the keys stores its row maximum m (log2
// domain), sum l and unnormalised output o; mergePartials combines them in split order.
#pragma once
#include "attend.cuh"

namespace nsa {

// partial layout: [split][rowHead][Dv + 2] = m, l, o[Dv]
template <class T>
__device__ void storePartial(const AttendSmem<T>& sm, int nr, float* partial, size_t rowHead0, int Dv) {
  for (int r = threadIdx.x; r < nr; r += blockDim.x) {
    partial[(rowHead0 + r) * (Dv + 2)] = sm.m[r];
    partial[(rowHead0 + r) * (Dv + 2) + 1] = sm.l[r];
  }
  for (int e = threadIdx.x; e < nr * Dv; e += blockDim.x) {
    const int r = e / Dv, c = e % Dv;
    partial[(rowHead0 + r) * (Dv + 2) + 2 + c] = sm.o[r * sm.ldo + c];
  }
}

// One warp merges `splits` partials of one (row, head) with stride `stride` between splits and
// returns column c's normalised value via `emit(c, value)`; lse gets m + log2(l) (+inf if empty).
template <class Emit>
__device__ void mergePartials(const float* partial, int splits, size_t stride, int Dv, float* lse, Emit emit) {
  const int lane = threadIdx.x & 31;
  float m = kNegInf;
  for (int z = 0; z < splits; z++) m = fmaxf(m, partial[z * stride]);
  float l = 0.f;
  for (int z = 0; z < splits; z++) {
    const float mz = partial[z * stride];
    if (mz != kNegInf) l += partial[z * stride + 1] * exp2f(mz - m);
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
  for (int c = lane; c < Dv; c += 32) {
    float acc = 0.f;
    for (int z = 0; z < splits; z++) {
      const float mz = partial[z * stride];
      if (mz != kNegInf) acc += partial[z * stride + 2 + c] * exp2f(mz - m);
    }
    emit(c, acc * inv);
  }
  if (lse && lane == 0) *lse = l > 0.f ? m + log2f(l) : INFINITY;
}

}  // namespace nsa
