// Dense causal forward in the flash-attention-2 layout, float16/bfloat16, Dk = Dv in {64, 128}:
// a block of 8 warps takes 128 consecutive query positions of one query head; each warp keeps its
// 16 rows' Q fragments, the 16 x 64 score tile and the 16 x D output in registers; key/value tiles
// of 64 rows are double-buffered in padded shared memory with cp.async. Used for prefill-sized
// inputs (a sequence of >= 64 queries); dense_attention.cu keeps the general path (float32, other
// head dims, decoding with split-K).
#include <algorithm>
#include <vector>
#include "cuda_error.h"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "warp_tile.cuh"
#include "workspace.h"

namespace nsa {

namespace {

constexpr int kRegWarps = 8, kRegThreads = 32 * kRegWarps;
constexpr int kRegRows = 16 * kRegWarps;  // query rows per block
constexpr int kRegKeys = 64;              // keys per tile

struct RegTile {
  int s, first;  // sequence, first query index within it
};

template <int D>
struct RegSmem {
  static constexpr int ld = D + 8;  // 16-byte pad: ldmatrix rows fall in distinct banks
  static constexpr int tile = kRegKeys * ld;
  static constexpr size_t bytes(size_t elem) { return elem * (size_t)(kRegRows * ld + 4 * tile); }
};

template <class T, int D>
__global__ void __launch_bounds__(kRegThreads, 1) denseForwardRegKernel(AttentionArgs a, const RegTile* tiles) {
  extern __shared__ __align__(16) char smemRaw[];
  using S = RegSmem<D>;
  constexpr int ld = S::ld;
  T* sQ = reinterpret_cast<T*>(smemRaw);
  T* sK = sQ + kRegRows * ld;       // [2][keys][ld]
  T* sV = sK + 2 * S::tile;         // [2][keys][ld]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int hq = blockIdx.y, kvh = hq / (a.HQ / a.H);
  const RegTile tile = tiles[blockIdx.x];
  const SeqTable st = seqTable(a.seq);
  const int qStart = st.qStart[tile.s], qCount = st.qStart[tile.s + 1] - qStart;
  const int kBase = st.kBase[tile.s], base = st.pos0[tile.s] + tile.first;  // position of row 0
  const int nq = min(kRegRows, qCount - tile.first);
  const int keys = base + nq;  // keys 0 .. last row's position
  const int nTiles = (keys + kRegKeys - 1) / kRegKeys;
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);

  copyRowsAsync<T, D, kRegThreads>(sQ, ld, kRegRows, [&](int r) -> const T* {
    return r < nq ? Q + ((size_t)(qStart + tile.first + r) * a.HQ + hq) * D : nullptr;
  });
  auto loadKV = [&](int kt, int buf) {
    const int k0 = kt * kRegKeys;
    copyRowsAsync<T, D, kRegThreads>(sK + buf * S::tile, ld, kRegKeys, [&](int r) -> const T* {
      return k0 + r < keys ? K + ((size_t)(kBase + k0 + r) * a.H + kvh) * D : nullptr;
    });
    copyRowsAsync<T, D, kRegThreads>(sV + buf * S::tile, ld, kRegKeys, [&](int r) -> const T* {
      return k0 + r < keys ? V + ((size_t)(kBase + k0 + r) * a.H + kvh) * D : nullptr;
    });
  };
  loadKV(0, 0);
  cpAsyncCommit();

  const int row0 = warp * 16 + g;               // this thread's rows: row0 and row0 + 8
  const int pos[2] = {base + row0, base + row0 + 8};
  const float sl2 = a.scale * kLog2e;
  uint32_t qf[D / 16][4];
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};  // m: running max of scaled scores (log2 domain)

  for (int kt = 0; kt < nTiles; kt++) {
    const int buf = kt & 1;
    if (kt + 1 < nTiles) {
      loadKV(kt + 1, buf ^ 1);
      cpAsyncCommit();
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) loadA(qf[kk], sQ, ld, warp * 16, kk * 16);
    }
    const T* k = sK + buf * S::tile;
    const T* v = sV + buf * S::tile;
    float s[kRegKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kRegKeys / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
      for (int np = 0; np < kRegKeys / 16; np++) {
        uint32_t b[4];
        loadBNK(b, k, ld, np * 16, kk * 16);
        mma16816(s[2 * np], qf[kk], b, T());
        mma16816(s[2 * np + 1], qf[kk], b + 2, T());
      }
    }
    // Causal visibility: key position kp is seen by row position p iff kp <= p. Only tiles that
    // reach past the block's first position need the test; key 0 is seen by every row, so m is
    // finite from the first tile on.
    const int k0 = kt * kRegKeys;
    const bool edge = k0 + kRegKeys - 1 > base;
    float mx[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int n = 0; n < kRegKeys / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int kp = k0 + n * 8 + 2 * t4 + (e & 1);
        if (edge && kp > pos[e >> 1]) s[n][e] = kNegInf;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const float tileMax = quadMax(mx[i]);
      const float mNew = tileMax == kNegInf ? m[i] : fmaxf(m[i], tileMax * sl2);  // row sees none of this tile
      alpha[i] = m[i] == kNegInf ? 0.f : exp2f(m[i] - mNew);
      m[i] = mNew;
    }
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < kRegKeys / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int i = e >> 1;
        const float p = s[n][e] == kNegInf ? 0.f : exp2f(fmaf(s[n][e], sl2, -m[i]));
        s[n][e] = p;
        rs[i] += p;
      }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) l[i] = l[i] * alpha[i] + rs[i];
#pragma unroll
    for (int n = 0; n < D / 8; n++) {
      o[n][0] *= alpha[0]; o[n][1] *= alpha[0]; o[n][2] *= alpha[1]; o[n][3] *= alpha[1];
    }
    // P·V: the probabilities' C fragments of n-tiles 2j, 2j+1 are the A fragment of key step j.
#pragma unroll
    for (int j = 0; j < kRegKeys / 16; j++) {
      uint32_t pa[4];
      pa[0] = packF2<T>(s[2 * j][0], s[2 * j][1]);
      pa[1] = packF2<T>(s[2 * j][2], s[2 * j][3]);
      pa[2] = packF2<T>(s[2 * j + 1][0], s[2 * j + 1][1]);
      pa[3] = packF2<T>(s[2 * j + 1][2], s[2 * j + 1][3]);
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t b[4];
        loadBKN(b, v, ld, j * 16, dp * 16);
        mma16816(o[2 * dp], pa, b, T());
        mma16816(o[2 * dp + 1], pa, b + 2, T());
      }
    }
    __syncthreads();  // the next iteration's copy overwrites the buffer read here
  }

  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int r = row0 + 8 * i;
    const float lsum = quadSum(l[i]);
    if (r >= nq) continue;
    const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
    const size_t at = (size_t)(qStart + tile.first + r) * a.HQ + hq;
    T* dst = out + at * D + 2 * t4;
#pragma unroll
    for (int n = 0; n < D / 8; n++)
      *reinterpret_cast<uint32_t*>(dst + n * 8) = packF2<T>(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    if (a.lse && t4 == 0) a.lse[at] = lsum > 0.f ? m[i] + log2f(lsum) : INFINITY;
  }
}

template <class T, int D>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  std::vector<RegTile> tiles;
  const int S = a.seq.S;
  for (int s = 0; s < S; s++)
    for (int f = 0; f < a.seq.host[s + 1] - a.seq.host[s]; f += kRegRows) tiles.push_back({s, f});
  // Latest positions first: they have the most keys, so the tail of the grid is short.
  std::stable_sort(tiles.begin(), tiles.end(), [&](const RegTile& x, const RegTile& y) {
    return x.first + a.seq.host[3 * S + 1 + x.s] > y.first + a.seq.host[3 * S + 1 + y.s];
  });
  Workspace ws(stream);
  const RegTile* dTiles = ws.upload(tiles);
  const size_t bytes = RegSmem<D>::bytes(sizeof(T));
  NSA_CUDA(cudaFuncSetAttribute(denseForwardRegKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  denseForwardRegKernel<T, D><<<dim3((unsigned)tiles.size(), a.HQ), kRegThreads, bytes, stream>>>(a, dTiles);
  NSA_LAUNCHED("denseForwardRegKernel");
}

template <class T>
bool launchTyped(const AttentionArgs& a, cudaStream_t stream) {
  if (a.Dk == 64) return launch<T, 64>(a, stream), true;
  if (a.Dk == 128) return launch<T, 128>(a, stream), true;
  return false;
}

}  // namespace

bool denseForwardRegisters(const AttentionArgs& a, cudaStream_t stream) {
  if (a.dtype == DType::F32 || a.Dk != a.Dv || a.seq.rows == 0) return false;
  int maxQ = 0;
  for (int s = 0; s < a.seq.S; s++) maxQ = std::max(maxQ, a.seq.host[s + 1] - a.seq.host[s]);
  if (maxQ < kRegRows) return false;  // decoding-sized: the split-K path fills the GPU better
  return a.dtype == DType::F16 ? launchTyped<__half>(a, stream) : launchTyped<__nv_bfloat16>(a, stream);
}

}  // namespace nsa
