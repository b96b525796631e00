// Dense causal forward on Hopper warpgroup mma (wgmma, sm_90a), float16/bfloat16, Dk = Dv in {64, 128}.
// A block of two warpgroups takes 128 consecutive query positions of one query head (64 rows per
// warpgroup, one m64 tile); key/value tiles of 128 keys sit in shared memory in wgmma's 128-byte
// swizzled layout (wgmma.cuh) in a 3-slot ring, filled by the copy engine (Tma, below) or with cp.async by
// all threads (how far ahead: Early, below).
// Q (A of Q·Kᵀ) and P (A of P·V) stay in registers. Each step overlaps the tensor cores with the
// softmax: it issues S_j = Q·K_jᵀ and O += P_{j-1}·V_{j-1} together, waits for S_j only, runs the
// softmax of S_j while P_{j-1}·V_{j-1} runs, then waits for it and rescales O (flash-attention-3's
// intra-warpgroup pipelining, without a producer warpgroup). Causal masking only on the tiles that
// reach past a warp's first position. dense_forward_mma.cu (mma.sync) stays the path for other
// devices and NSA_DENSE_WGMMA=0.
// Barrier placement (Early, the default): K runs two tiles ahead and V one, both requested in the
// middle of step j after a barrier that runs while P_{j-1}·V_{j-1} is still on the tensor cores, so
// S_{j+1} issues right after P_j is packed; the same three slots suffice (K_{j+2} takes K_{j-1}'s half,
// V_{j+1} takes V_{j-2}'s). NSA_DENSE_FWD_EARLY=0 keeps the kernel before: K_j and V_j one tile ahead,
// one barrier at the top of each step.
// Tma (the default where the tensor maps can be made; NSA_DENSE_FWD_TMA=0 runs Early's cp.async ring):
// one thread requests K_{j+1} and V_j at the top of step j (TMA, 128-byte swizzle), an mbarrier per K / V
// half says it landed, and every thread arrives on a second mbarrier once it is done with a half, so the
// loop has no block-wide barrier and issues no copy instructions (32k: 37.8 -> 29.5 ms, BENCHMARKS.md).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "cuda_error.h"
#include "dense_wgmma.h"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "tma.cuh"
#include "warp_tile.cuh"
#include "wgmma.cuh"
#include "wgmma_probe.h"
#include "workspace.h"

namespace nsa {

namespace {

constexpr int kRows = 128;      // query rows per block: 2 warpgroups x 64
constexpr int kKeys = 128;      // keys per K / V tile
constexpr int kStages = 3;      // ring slots of K and V tiles (which tile goes where: Early, above)
constexpr int kThreads = 256;
constexpr int kSwRowBytes = 128;  // one 64-element row of a swizzled region

struct WgTile {
  int s, first;  // sequence, first query index within it
};

template <int D>
struct WgShape {
  static constexpr int tileBytes = kKeys * D * 2;  // one swizzled K or V tile
  static constexpr int slotBytes = 2 * tileBytes;  // K then V
  // + the TMA path's mbarriers (K / V landed, K / V released, one each per slot) + alignment slack
  static constexpr size_t bytes = (size_t)kStages * slotBytes + 4 * 8 * kStages + 1024;
  static_assert((size_t)kRows * (D + 8) * 2 <= (size_t)slotBytes, "the padded Q tile fits one slot");
};

// K and V [keyRows][H][D] as tensor maps in kKeys-row boxes of 64 features (the Tma path).
struct FwdMaps {
  CUtensorMap k, v;
};


// Keeps the compiler from reusing P's registers while a wgmma may still read them.
__device__ __forceinline__ void fenceA(uint32_t (&pa)[kKeys / 16][4]) {
#pragma unroll
  for (int j = 0; j < kKeys / 16; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) asm volatile("" : "+r"(pa[j][e])::"memory");
}

// Tma (with Early): the copy engine fills the ring (one thread requests a tile; mbarriers say when a K or
// V tile has landed and when every thread is done with one), so no block-wide barrier in the loop.
template <class T, int D, bool Early, bool Wide, bool Tma = false>
__global__ void __launch_bounds__(kThreads, 1) denseForwardWgmmaKernel(AttentionArgs a, const WgTile* tiles, const __grid_constant__ FwdMaps maps) {
  using S = WgShape<D>;
  static_assert(!Tma || Early, "the TMA ring keeps Early's tile order");
  extern __shared__ __align__(16) char smemAll[];
  char* smem = smemAll + ((1024u - (smemAddr(smemAll) & 1023u)) & 1023u);  // swizzled tiles: 1024-byte aligned
  const uint32_t ring = smemAddr(smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int hq = blockIdx.y, kvh = hq / (a.HQ / a.H);
  const WgTile tile = tiles[blockIdx.x];
  const SeqTable st = seqTable(a.seq);
  const int qStart = st.qStart[tile.s], qCount = st.qStart[tile.s + 1] - qStart;
  const int kBase = st.kBase[tile.s], base = st.pos0[tile.s] + tile.first;  // position of row 0
  const int nq = min(kRows, qCount - tile.first);
  const int keys = base + nq;  // keys 0 .. last row's position
  const int nTiles = (keys + kKeys - 1) / kKeys;
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  const size_t kvStride = (size_t)a.H * D;

  auto loadHalf = [&](const T* X, int t, int half) {  // K (half 0) or V (half 1) of tile t into ring slot t % 3
    const int k0 = t * kKeys, valid = min(kKeys, keys - k0);
    const uint32_t slot = ring + (t % kStages) * S::slotBytes + half * S::tileBytes;
    wg::copyRowsSwizzled<T, D, kThreads, kKeys>(slot, X + ((size_t)(kBase + k0) * a.H + kvh) * D, kvStride, valid);
  };
  auto load = [&](int t) {
    loadHalf(K, t, 0);
    loadHalf(V, t, 1);
  };
  // Tma: kFull / vFull[slot] (tile landed), kFree / vFree[slot] (every thread done with it) at bar.
  const uint32_t bar = ring + kStages * S::slotBytes;
  auto kFull = [&](int t) { return bar + 8 * (t % kStages); };
  auto vFull = [&](int t) { return bar + 8 * (kStages + t % kStages); };
  auto kFree = [&](int t) { return bar + 8 * (2 * kStages + t % kStages); };
  auto vFree = [&](int t) { return bar + 8 * (3 * kStages + t % kStages); };
  // Keys past the last position read later rows (or zeros past the tensor): finite, and masked (P = 0).
  auto request = [&](int t, int half) {  // K (half 0) or V (half 1) of tile t, by one thread
    const uint32_t b = half ? vFull(t) : kFull(t);
    tma::arriveExpect(b, S::tileBytes);
    tma::loadTile<D, kKeys, kKeys>(ring + (t % kStages) * S::slotBytes + half * S::tileBytes, half ? &maps.v : &maps.k, kvh, kBase + t * kKeys, b);
  };
  // Q (padded rows for ldmatrix) in slot 2, which tile 2 takes only after every thread has its fragments.
  constexpr int ldq = D + 8;
  T* sQ = reinterpret_cast<T*>(smem + 2 * S::slotBytes);
  copyRowsAsync<T, D, kThreads>(sQ, ldq, kRows, [&](int r) -> const T* {
    return r < nq ? Q + ((size_t)(qStart + tile.first + r) * a.HQ + hq) * D : nullptr;
  });
  if constexpr (Tma) {
    if (threadIdx.x == 0) {
      for (int i = 0; i < 4 * kStages; i++) tma::initBarrier(bar + 8 * i, i < 2 * kStages ? 1 : kThreads);
      tma::fenceInit();
      request(0, 0);
      request(0, 1);
      if (nTiles > 1) request(1, 0);
    }
    cpAsyncCommit();
    cpAsyncWait<0>();  // Q
  } else if constexpr (Early) {
    loadHalf(K, 0, 0);
    cpAsyncCommit();
    if (nTiles > 1) loadHalf(K, 1, 0);
    loadHalf(V, 0, 1);
    cpAsyncCommit();
    cpAsyncWait<1>();  // Q and K_0
  } else {
    load(0);
    cpAsyncCommit();
    cpAsyncWait<0>();
  }
  wg::fenceProxyAsync();
  __syncthreads();

  // Warp w holds rows 16w .. 16w+15 of the block (warpgroup w / 4's m64 tile); this thread rows g, g + 8.
  const int row0 = 16 * warp;
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) loadA(qf[kk], sQ, ldq, row0, kk * 16);
  if constexpr (Tma) __syncthreads();  // every thread has its Q fragments: slot 2 may take tile 2
  const int pos[2] = {base + row0 + g, base + row0 + g + 8};
  const float sl2 = a.scale * kLog2e;

  float o[D / 64][8][4];  // O[:, 64dn ..]: one m64n64 accumulator per 64 features
#pragma unroll
  for (int dn = 0; dn < D / 64; dn++)
#pragma unroll
    for (int n = 0; n < 8; n++) o[dn][n][0] = o[dn][n][1] = o[dn][n][2] = o[dn][n][3] = 0.f;
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};  // m: running max of scaled scores (log2 domain)
  float s[2][8][4];          // S of keys 64h .. 64h+63 of the tile
  uint32_t pa[kKeys / 16][4];  // P as A fragments: pa[j] = keys 16j .. 16j+15

  auto issueScores = [&](int t) {  // S = Q·K_tᵀ as one group (the caller fences and commits)
    const uint32_t kTile = ring + (t % kStages) * S::slotBytes;
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++)  // features 16kk..: region kk / 4, 32 bytes per step in it
        wg::mma64x64Acc<false>(s[h], qf[kk], wg::descSw128(kTile + (kk >> 2) * kKeys * kSwRowBytes + h * 64 * kSwRowBytes + (kk & 3) * 32),
                               !Early || kk > 0, T());  // Early: the first k-step overwrites S (no zeroing)
  };
  auto issuePV = [&](int t) {  // O += P·V_t as one group
    const uint32_t vTile = ring + (t % kStages) * S::slotBytes + S::tileBytes;
    if constexpr (Wide && D == 128) {  // one m64n128k16 per 16 keys over both 64-feature regions
#pragma unroll
      for (int j = 0; j < kKeys / 16; j++)
        wg::mma64x128<true>(reinterpret_cast<float(&)[16][4]>(o), pa[j], wg::descSw128Mn(vTile + j * 16 * kSwRowBytes, kKeys * kSwRowBytes), T());
    } else {
#pragma unroll
      for (int j = 0; j < kKeys / 16; j++)  // keys 16j..: rows 16j.. of each 64-feature region
#pragma unroll
        for (int dn = 0; dn < D / 64; dn++)
          wg::mma64x64<true>(o[dn], pa[j], wg::descSw128(vTile + dn * kKeys * kSwRowBytes + j * 16 * kSwRowBytes), T());
    }
  };
  auto zeroScores = [&]() {
#pragma unroll
    for (int h = 0; h < 2; h++) {
#pragma unroll
      for (int n = 0; n < 8; n++) s[h][n][0] = s[h][n][1] = s[h][n][2] = s[h][n][3] = 0.f;
      wg::fenceOperands(s[h]);
    }
  };
  // Softmax of tile t's scores in place (s becomes P, unpacked): new running max, alpha, row sums.
  // Key 0 is in tile 0 and every row sees it, so m is finite from the first tile on.
  auto softmax = [&](int t, float (&alpha)[2]) {
    const int k0 = t * kKeys;
    if (k0 + kKeys - 1 > base + row0) {  // the tile reaches past this warp's first position
#pragma unroll
      for (int h = 0; h < 2; h++)
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
          for (int e = 0; e < 4; e++)
            if (k0 + 64 * h + 8 * n + 2 * t4 + (e & 1) > pos[e >> 1]) s[h][n][e] = kNegInf;
    }
    float mx[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
      for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[h][n][e]);
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const float mNew = fmaxf(m[i], quadMax(mx[i]) * sl2);
      alpha[i] = exp2f(m[i] - mNew);  // 0 on the first tile (m = -inf)
      m[i] = mNew;
    }
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
      for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const float p = exp2f(fmaf(s[h][n][e], sl2, -m[e >> 1]));  // masked (-inf): 0
          s[h][n][e] = p;
          rs[e >> 1] += p;
        }
#pragma unroll
    for (int i = 0; i < 2; i++) l[i] = l[i] * alpha[i] + rs[i];
  };
  auto packP = [&]() {  // the C fragments of n-tiles 2jj, 2jj+1 of slice h are the A fragment of key step 4h + jj
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
      for (int jj = 0; jj < 4; jj++) {
        uint32_t(&p)[4] = pa[4 * h + jj];
        p[0] = packF2<T>(s[h][2 * jj][0], s[h][2 * jj][1]);
        p[1] = packF2<T>(s[h][2 * jj][2], s[h][2 * jj][3]);
        p[2] = packF2<T>(s[h][2 * jj + 1][0], s[h][2 * jj + 1][1]);
        p[3] = packF2<T>(s[h][2 * jj + 1][2], s[h][2 * jj + 1][3]);
      }
  };

  auto rescale = [&](const float (&alpha)[2]) {
#pragma unroll
    for (int dn = 0; dn < D / 64; dn++) {
      wg::fenceOperands(o[dn]);
#pragma unroll
      for (int n = 0; n < 8; n++) {
        o[dn][n][0] *= alpha[0]; o[dn][n][1] *= alpha[0]; o[dn][n][2] *= alpha[1]; o[dn][n][3] *= alpha[1];
      }
    }
  };

  // The Tma and Early loops' step t: S_t issued, then P_{t-1}·V_{t-1} behind it; returns once S_t is done.
  auto issueStep = [&](int t) {
#pragma unroll
    for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(o[dn]);
    wg::fence();
    issueScores(t);
    wg::commit();
    if (t > 0) {
      issuePV(t - 1);
      wg::commit();
      wg::wait<1>();  // S_t is done; P_{t-1}·V_{t-1} may still run
    } else {
      wg::wait<0>();
    }
  };

  if constexpr (Tma) {
    zeroScores();  // defined values for the first (overwriting) k-step
    for (int t = 0; t < nTiles; t++) {
      // Before step t's products (no wgmma in flight): K_{t+1} into K_{t-2}'s half (released in step t - 2's
      // middle) and V_t into V_{t-3}'s (released at the end of step t - 2) once every thread is done with
      // those; tile 2 takes slot 2's Q, free since the barrier after the fragment loads. Every thread waits
      // (a wait in one thread only makes ptxas serialise wgmma, C7520).
      if (t >= 1) {
        if (t + 1 < nTiles && t >= 2) tma::waitSpin(kFree(t - 2), ((t - 2) / kStages) & 1);
        if (t >= 3) tma::waitSpin(vFree(t - 3), ((t - 3) / kStages) & 1);
        if (threadIdx.x == 0) {
          if (t + 1 < nTiles) request(t + 1, 0);
          request(t, 1);
        }
      }
      tma::waitSpin(kFull(t), (t / kStages) & 1);  // K_t has landed
      if (t > 0) tma::waitSpin(vFull(t - 1), ((t - 1) / kStages) & 1);  // V_{t-1} too
      issueStep(t);
      tma::arrive(kFree(t));  // this thread is done with K_t
      wg::fenceOperands(s[0]);
      wg::fenceOperands(s[1]);
      float alpha[2];
      softmax(t, alpha);
      wg::wait<0>();
      if (t > 0) tma::arrive(vFree(t - 1));  // ... and with V_{t-1}
      fenceA(pa);
      rescale(alpha);  // tile 0: O is zero and alpha 0
      packP();
    }
  } else if constexpr (Early) {
    zeroScores();  // defined values for the first (overwriting) k-step
    for (int t = 0; t < nTiles; t++) {
      issueStep(t);
      wg::fenceOperands(s[0]);
      wg::fenceOperands(s[1]);
      float alpha[2];
      softmax(t, alpha);
      cpAsyncWait<0>();       // K_{t+1} and V_t have landed (this thread's copies)
      wg::fenceProxyAsync();  // ... visible to the tensor cores
      __syncthreads();        // ... and everyone's; every warpgroup is done with K_t (and Q's rows in slot 2) and V_{t-2}
      if (t + 2 < nTiles) loadHalf(K, t + 2, 0);
      if (t + 1 < nTiles) loadHalf(V, t + 1, 1);
      cpAsyncCommit();
      wg::wait<0>();
      fenceA(pa);
      rescale(alpha);  // tile 0: O is zero and alpha 0
      packP();
    }
  } else {
  // Tile 0: scores, softmax, P (O is still zero: nothing to rescale).
  if (nTiles > 1) load(1);
  cpAsyncCommit();
  zeroScores();
  wg::fence();
  issueScores(0);
  wg::commit();
  wg::wait<0>();
  wg::fenceOperands(s[0]);
  wg::fenceOperands(s[1]);
  {
    float alpha[2];
    softmax(0, alpha);
  }
  packP();

  for (int t = 1; t < nTiles; t++) {
    cpAsyncWait<0>();        // tile t has landed (this thread's copies)
    wg::fenceProxyAsync();   // ... visible to the tensor cores
    __syncthreads();         // ... and everyone's; every warpgroup is done with tile t - 2 (its slot is refilled now)
    if (t + 1 < nTiles) load(t + 1);
    cpAsyncCommit();
    zeroScores();
#pragma unroll
    for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(o[dn]);
    wg::fence();
    issueScores(t);
    wg::commit();
    issuePV(t - 1);
    wg::commit();
    wg::wait<1>();  // S_t is done; P_{t-1}·V_{t-1} may still run
    wg::fenceOperands(s[0]);
    wg::fenceOperands(s[1]);
    float alpha[2];
    softmax(t, alpha);
    wg::wait<0>();
    fenceA(pa);
    rescale(alpha);
    packP();
  }
  }
  if constexpr (Tma) tma::waitSpin(vFull(nTiles - 1), ((nTiles - 1) / kStages) & 1);  // the last V has landed
#pragma unroll
  for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(o[dn]);
  wg::fence();
  issuePV(nTiles - 1);
  wg::commit();
  wg::wait<0>();
  fenceA(pa);
#pragma unroll
  for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(o[dn]);

  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int r = row0 + g + 8 * i;
    const float lsum = quadSum(l[i]);
    if (r >= nq) continue;
    const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
    const size_t at = (size_t)(qStart + tile.first + r) * a.HQ + hq;
    T* dst = out + at * D + 2 * t4;
#pragma unroll
    for (int dn = 0; dn < D / 64; dn++)
#pragma unroll
      for (int n = 0; n < 8; n++)
        *reinterpret_cast<uint32_t*>(dst + dn * 64 + n * 8) = packF2<T>(o[dn][n][2 * i] * inv, o[dn][n][2 * i + 1] * inv);
    if (a.lse && t4 == 0) a.lse[at] = lsum > 0.f ? m[i] + log2f(lsum) : INFINITY;
  }
}

template <class T, int D, bool Early, bool Wide, bool Tma = false>
void launchKernel(const AttentionArgs& a, const WgTile* dTiles, int nTiles, const FwdMaps& maps, cudaStream_t stream) {
  const size_t bytes = WgShape<D>::bytes;
  auto kernel = denseForwardWgmmaKernel<T, D, Early, Wide, Tma>;
  NSA_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  kernel<<<dim3((unsigned)nTiles, a.HQ), kThreads, bytes, stream>>>(a, dTiles, maps);
  NSA_LAUNCHED("denseForwardWgmmaKernel");
}

template <class T, int D>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  std::vector<WgTile> tiles;
  const int nSeq = a.seq.S;
  for (int s = 0; s < nSeq; s++)
    for (int f = 0; f < a.seq.host[s + 1] - a.seq.host[s]; f += kRows) tiles.push_back({s, f});
  // Latest positions first: they have the most keys, so the tail of the grid is short.
  std::stable_sort(tiles.begin(), tiles.end(), [&](const WgTile& x, const WgTile& y) {
    return x.first + a.seq.host[3 * nSeq + 1 + x.s] > y.first + a.seq.host[3 * nSeq + 1 + y.s];
  });
  Workspace ws(stream);
  const WgTile* dTiles = ws.upload(tiles);
  const char* env = getenv("NSA_DENSE_FWD_EARLY");  // =0: the barrier at the top of each step (the kernel before)
  const char* wide = getenv("NSA_DENSE_WIDE");  // =0: D = 128's P·V as two m64n64k16 per 16 keys
  // NSA_DENSE_FWD_TMA=0: the ring filled by cp.async (the kernel before); else the copy engine where the
  // maps can be made.
  const char* tmaEnv = getenv("NSA_DENSE_FWD_TMA");
  FwdMaps maps;
  std::memset(&maps, 0, sizeof maps);
  bool tma = false;
  if (!(tmaEnv && tmaEnv[0] == '0') && !(env && env[0] == '0')) {
    const int* h = a.seq.host;
    int keyRows = 0;  // rows of K and V that the sequences' keys reach
    for (int s = 0; s < nSeq; s++) keyRows = std::max(keyRows, h[nSeq + 1 + s] + h[3 * nSeq + 1 + s] + h[s + 1] - h[s]);
    const bool f16 = a.dtype == DType::F16;
    tma = keyRows > 0 && encodeKeyMap(&maps.k, a.k, f16, keyRows, a.H, D, kKeys) && encodeKeyMap(&maps.v, a.v, f16, keyRows, a.H, D, kKeys);
  }
  const bool wideOn = D == 128 && !(wide && wide[0] == '0');
  if (env && env[0] == '0') launchKernel<T, D, false, false>(a, dTiles, (int)tiles.size(), maps, stream);
  else if (tma && wideOn) launchKernel<T, D, true, D == 128, true>(a, dTiles, (int)tiles.size(), maps, stream);
  else if (tma && D == 64) launchKernel<T, D, true, false, D == 64>(a, dTiles, (int)tiles.size(), maps, stream);
  else if (wideOn) launchKernel<T, D, true, D == 128>(a, dTiles, (int)tiles.size(), maps, stream);
  else launchKernel<T, D, true, false>(a, dTiles, (int)tiles.size(), maps, stream);
}

}  // namespace

bool denseWgmmaRuns() {
  if (!wgmmaRuns()) return false;
  int dev = 0, smem = 0;
  NSA_CUDA(cudaGetDevice(&dev));
  NSA_CUDA(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return (size_t)smem >= WgShape<128>::bytes;
}

bool denseForwardWgmma(const AttentionArgs& a, cudaStream_t stream) {
  const char* env = getenv("NSA_DENSE_WGMMA");
  if (env && env[0] == '0') return false;
  if (a.dtype == DType::F32 || a.Dk != a.Dv || (a.Dk != 64 && a.Dk != 128) || a.seq.rows == 0) return false;
  if (!denseWgmmaRuns()) return false;
  const bool f16 = a.dtype == DType::F16;
  if (a.Dk == 64) f16 ? launch<__half, 64>(a, stream) : launch<__nv_bfloat16, 64>(a, stream);
  else f16 ? launch<__half, 128>(a, stream) : launch<__nv_bfloat16, 128>(a, stream);
  return true;
}

}  // namespace nsa
