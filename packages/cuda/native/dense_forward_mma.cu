// Dense causal forward in the flash-attention-2 layout, float16/bfloat16, Dk = Dv in {64, 128}:
// a block of 4 warps takes 128 consecutive query positions of one query head; each warp keeps two
// 16-row tiles' score tiles (16 x 64) and outputs (16 x D) in registers, so every K/V fragment read
// from shared memory feeds two mma row tiles; key/value tiles of 64 rows are double-buffered in
// padded shared memory with cp.async. Used for prefill-sized
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

constexpr int kRegRows = 128;  // query rows per block

struct RegTile {
  int s, first;  // sequence, first query index within it
};

// W warps of MT row tiles (16 rows each) cover the block's 128 rows: a warp's B fragments (K, V)
// feed MT mma row tiles, so MT = 2 halves the shared-memory reads per mma.
template <int D, int W, int MT, int KT>
struct RegShape {
  static_assert(16 * W * MT == kRegRows, "warps x row tiles must cover the block");
  static constexpr int threads = 32 * W;
  static constexpr int ld = D + 8;  // 16-byte pad: ldmatrix rows fall in distinct banks
  static constexpr int tile = KT * ld;  // one K or V tile of KT keys
  static constexpr size_t bytes(size_t elem) { return elem * (size_t)(kRegRows * ld + 4 * tile); }
};

template <class T, int D, int W, int MT, int KT>
__global__ void __launch_bounds__(32 * W, 8 / W) denseForwardRegKernel(AttentionArgs a, const RegTile* tiles) {
  extern __shared__ __align__(16) char smemRaw[];
  using S = RegShape<D, W, MT, KT>;
  constexpr int ld = S::ld, NT = S::threads, kRegKeys = KT;
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

  copyRowsAsync<T, D, NT>(sQ, ld, kRegRows, [&](int r) -> const T* {
    return r < nq ? Q + ((size_t)(qStart + tile.first + r) * a.HQ + hq) * D : nullptr;
  });
  auto loadKV = [&](int kt, int buf) {
    const int k0 = kt * kRegKeys;
    copyRowsAsync<T, D, NT>(sK + buf * S::tile, ld, kRegKeys, [&](int r) -> const T* {
      return k0 + r < keys ? K + ((size_t)(kBase + k0 + r) * a.H + kvh) * D : nullptr;
    });
    copyRowsAsync<T, D, NT>(sV + buf * S::tile, ld, kRegKeys, [&](int r) -> const T* {
      return k0 + r < keys ? V + ((size_t)(kBase + k0 + r) * a.H + kvh) * D : nullptr;
    });
  };
  loadKV(0, 0);
  cpAsyncCommit();

  // Row tile m of this warp starts at row (warp * MT + m) * 16; this thread holds its rows g, g + 8,
  // at positions pos0 + 16 m and pos0 + 16 m + 8.
  const int pos0 = base + warp * MT * 16 + g;
  const float sl2 = a.scale * kLog2e;
  float o[MT][D / 8][4];
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[m][n][0] = o[m][n][1] = o[m][n][2] = o[m][n][3] = 0.f;
  float mrow[MT][2], l[MT][2];  // mrow: running max of scaled scores (log2 domain)
#pragma unroll
  for (int m = 0; m < MT; m++) mrow[m][0] = mrow[m][1] = kNegInf, l[m][0] = l[m][1] = 0.f;
  // One row tile keeps its Q fragments in registers; with two, they are re-read from shared memory.
  uint32_t qf[MT == 1 ? D / 16 : 1][4];

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
    if (MT == 1 && kt == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) loadA(qf[MT == 1 ? kk : 0], sQ, ld, warp * 16, kk * 16);
    }
    const T* k = sK + buf * S::tile;
    const T* v = sV + buf * S::tile;
    float s[MT][kRegKeys / 8][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
      for (int n = 0; n < kRegKeys / 8; n++) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      uint32_t qa[MT][4];
#pragma unroll
      for (int m = 0; m < MT; m++) {
        if (MT == 1) {
#pragma unroll
          for (int i = 0; i < 4; i++) qa[m][i] = qf[MT == 1 ? kk : 0][i];
        } else {
          loadA(qa[m], sQ, ld, (warp * MT + m) * 16, kk * 16);
        }
      }
#pragma unroll
      for (int np = 0; np < kRegKeys / 16; np++) {
        uint32_t b[4];
        loadBNK(b, k, ld, np * 16, kk * 16);
#pragma unroll
        for (int m = 0; m < MT; m++) {
          mma16816(s[m][2 * np], qa[m], b, T());
          mma16816(s[m][2 * np + 1], qa[m], b + 2, T());
        }
      }
    }
    // Causal visibility: key position kp is seen by row position p iff kp <= p. Only tiles that
    // reach past the block's first position need the test; key 0 is seen by every row, so m is
    // finite from the first tile on.
    const int k0 = kt * kRegKeys;
    const bool edge = k0 + kRegKeys - 1 > base;
    uint32_t pa[MT][kRegKeys / 16][4];
#pragma unroll
    for (int m = 0; m < MT; m++) {
      float mx[2] = {kNegInf, kNegInf};
#pragma unroll
      for (int n = 0; n < kRegKeys / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int kp = k0 + n * 8 + 2 * t4 + (e & 1);
          if (edge && kp > pos0 + 16 * m + 8 * (e >> 1)) s[m][n][e] = kNegInf;
          mx[e >> 1] = fmaxf(mx[e >> 1], s[m][n][e]);
        }
      }
      float alpha[2];
#pragma unroll
      for (int i = 0; i < 2; i++) {
        const float tileMax = quadMax(mx[i]);
        const float mNew = tileMax == kNegInf ? mrow[m][i] : fmaxf(mrow[m][i], tileMax * sl2);  // row sees none of this tile
        alpha[i] = mrow[m][i] == kNegInf ? 0.f : exp2f(mrow[m][i] - mNew);
        mrow[m][i] = mNew;
      }
      float rs[2] = {0.f, 0.f};
#pragma unroll
      for (int n = 0; n < kRegKeys / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int i = e >> 1;
          const float p = s[m][n][e] == kNegInf ? 0.f : exp2f(fmaf(s[m][n][e], sl2, -mrow[m][i]));
          s[m][n][e] = p;
          rs[i] += p;
        }
      }
#pragma unroll
      for (int i = 0; i < 2; i++) l[m][i] = l[m][i] * alpha[i] + rs[i];
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        o[m][n][0] *= alpha[0]; o[m][n][1] *= alpha[0]; o[m][n][2] *= alpha[1]; o[m][n][3] *= alpha[1];
      }
      // The probabilities' C fragments of n-tiles 2j, 2j+1 are the A fragment of key step j.
#pragma unroll
      for (int j = 0; j < kRegKeys / 16; j++) {
        pa[m][j][0] = packF2<T>(s[m][2 * j][0], s[m][2 * j][1]);
        pa[m][j][1] = packF2<T>(s[m][2 * j][2], s[m][2 * j][3]);
        pa[m][j][2] = packF2<T>(s[m][2 * j + 1][0], s[m][2 * j + 1][1]);
        pa[m][j][3] = packF2<T>(s[m][2 * j + 1][2], s[m][2 * j + 1][3]);
      }
    }
    // O += P·V, each V fragment feeding the warp's MT row tiles.
#pragma unroll
    for (int j = 0; j < kRegKeys / 16; j++) {
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t b[4];
        loadBKN(b, v, ld, j * 16, dp * 16);
#pragma unroll
        for (int m = 0; m < MT; m++) {
          mma16816(o[m][2 * dp], pa[m][j], b, T());
          mma16816(o[m][2 * dp + 1], pa[m][j], b + 2, T());
        }
      }
    }
    __syncthreads();  // the next iteration's copy overwrites the buffer read here
  }

  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int m = 0; m < MT; m++) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int r = (warp * MT + m) * 16 + g + 8 * i;
      const float lsum = quadSum(l[m][i]);
      if (r >= nq) continue;
      const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
      const size_t at = (size_t)(qStart + tile.first + r) * a.HQ + hq;
      T* dst = out + at * D + 2 * t4;
#pragma unroll
      for (int n = 0; n < D / 8; n++)
        *reinterpret_cast<uint32_t*>(dst + n * 8) = packF2<T>(o[m][n][2 * i] * inv, o[m][n][2 * i + 1] * inv);
      if (a.lse && t4 == 0) a.lse[at] = lsum > 0.f ? mrow[m][i] + log2f(lsum) : INFINITY;
    }
  }
}

template <class T, int D, int W, int MT, int KT>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  using S = RegShape<D, W, MT, KT>;
  std::vector<RegTile> tiles;
  const int nSeq = a.seq.S;
  for (int s = 0; s < nSeq; s++)
    for (int f = 0; f < a.seq.host[s + 1] - a.seq.host[s]; f += kRegRows) tiles.push_back({s, f});
  // Latest positions first: they have the most keys, so the tail of the grid is short.
  std::stable_sort(tiles.begin(), tiles.end(), [&](const RegTile& x, const RegTile& y) {
    return x.first + a.seq.host[3 * nSeq + 1 + x.s] > y.first + a.seq.host[3 * nSeq + 1 + y.s];
  });
  Workspace ws(stream);
  const RegTile* dTiles = ws.upload(tiles);
  const size_t bytes = S::bytes(sizeof(T));
  NSA_CUDA(cudaFuncSetAttribute(denseForwardRegKernel<T, D, W, MT, KT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  denseForwardRegKernel<T, D, W, MT, KT><<<dim3((unsigned)tiles.size(), a.HQ), S::threads, bytes, stream>>>(a, dTiles);
  NSA_LAUNCHED("denseForwardRegKernel");
}

// 4 warps x 2 row tiles x 64-key tiles, 2 blocks per SM (H100, BENCHMARKS.md v5: 64k 279 -> 247 ms
// against 8 warps x 1 row tile; 48-key tiles 255 ms). At D = 128 ptxas reports 255 registers and a
// 60-byte spill, which costs less than the saved shared-memory reads. Where two such blocks do not
// fit one multiprocessor's shared memory (e.g. sm_80's 164 KB), 8 warps x 1 row tile.
template <class T, int D>
void launchShape(const AttentionArgs& a, cudaStream_t stream) {
  static int smemPerSM = 0;
  if (!smemPerSM) {
    int dev = 0;
    NSA_CUDA(cudaGetDevice(&dev));
    NSA_CUDA(cudaDeviceGetAttribute(&smemPerSM, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  }
  if ((size_t)smemPerSM >= 2 * (RegShape<D, 4, 2, 64>::bytes(sizeof(T)) + 1024)) return launch<T, D, 4, 2, 64>(a, stream);
  launch<T, D, 8, 1, 64>(a, stream);
}

template <class T>
bool launchTyped(const AttentionArgs& a, cudaStream_t stream) {
  if (a.Dk == 64) return launchShape<T, 64>(a, stream), true;
  if (a.Dk == 128) return launchShape<T, 128>(a, stream), true;
  return false;
}

}  // namespace

bool denseForwardRegisters(const AttentionArgs& a, cudaStream_t stream) {
  if (a.dtype == DType::F32 || a.Dk != a.Dv || a.seq.rows == 0) return false;
  int maxQ = 0;
  for (int s = 0; s < a.seq.S; s++) maxQ = std::max(maxQ, a.seq.host[s + 1] - a.seq.host[s]);
  if (maxQ < kRegRows) return false;  // decoding-sized: the split-K path fills the GPU better
  if (denseForwardWgmma(a, stream)) return true;  // Hopper: dense_forward_wgmma.cu
  return a.dtype == DType::F16 ? launchTyped<__half>(a, stream) : launchTyped<__nv_bfloat16>(a, stream);
}

}  // namespace nsa
