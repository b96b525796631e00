// NSA forward in the flash-attention-2 register layout, for float16/bfloat16, G = 16 query heads
// per KV head (one m16n8k16 row tile) and Dk = Dv in {64, 128}, with saved branch outputs
// (training / prefill). A block of 4 warps takes 4 consecutive query rows of one sequence and one KV
// head; warp w owns row w's 16 heads, its Q fragments, scores and output in registers.
//   - compressed and window keys of consecutive positions almost coincide: the block loads the
//     union once per 64-key tile (cp.async, double-buffered) and each warp masks its own range;
//   - selection scores: a second pass over the compressed keys; each warp sums the probability
//     mass of its 16 heads per key (shuffles) and per selection block (fixed order), then picks
//     top-n like selectTopN (forced blocks first, ties to the lower index);
//   - selected blocks differ per row: each warp gathers its own 32-key tiles;
//   - out = g_cmp·o_cmp + g_slc·o_slc + g_win·o_win.
// nsa_forward.cu keeps the general kernel (float32, other G and head dims, decoding).
#include <algorithm>
#include <climits>
#include <vector>
#include "cuda_error.h"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "warp_attend.cuh"
#include "workspace.h"

namespace nsa {

namespace {

constexpr int kWarpsPerBlock = 4, kBlockThreads = 32 * kWarpsPerBlock;
constexpr int kSharedKeys = 64;  // block-wide tiles (compressed, window)
constexpr int kOwnKeys = 32;     // per-warp tiles (selected)
constexpr int kGroup = 16;       // query heads per KV head this kernel takes

struct RowTile {
  int s, first;  // sequence, first query index within it
};

template <int D>
struct Layout {
  static constexpr int ld = D + 8;
  static constexpr int tile = kSharedKeys * ld;  // elements of one block-wide K or V tile
  // [K0 K1 V0 V1] block-wide tiles; the same bytes hold each warp's own K/V tile later.
  __host__ __device__ static constexpr size_t tileBytes(size_t elem) { return elem * 4 * tile; }
  static size_t bytes(size_t elem, int nbMax, int n) {
    return tileBytes(elem) + sizeof(float) * kWarpsPerBlock * ((size_t)nbMax + kSharedKeys) +
           sizeof(int) * kWarpsPerBlock * ((size_t)kOwnKeys + 2 * n + 2);
  }
};
static_assert(2 * kOwnKeys * kWarpsPerBlock <= 4 * kSharedKeys, "own tiles fit in the shared tiles");

template <class T, int D>
__global__ void __launch_bounds__(kBlockThreads, 2) nsaForwardRegKernel(NSAForwardArgs a, const RowTile* tiles, int nbMax) {
  extern __shared__ __align__(16) char smemRaw[];
  using L = Layout<D>;
  constexpr int ld = L::ld;
  const NSAConfigArgs& c = a.cfg;
  T* sK = reinterpret_cast<T*>(smemRaw);  // [2][tile]
  T* sV = sK + 2 * L::tile;               // [2][tile]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g4 = lane >> 2, t4 = lane & 3;
  float* scores = reinterpret_cast<float*>(smemRaw + L::tileBytes(sizeof(T))) + warp * (nbMax + kSharedKeys);
  float* mass = scores + nbMax;  // [kSharedKeys]
  int* ownRow = reinterpret_cast<int*>(reinterpret_cast<float*>(smemRaw + L::tileBytes(sizeof(T))) +
                                       kWarpsPerBlock * (nbMax + kSharedKeys)) + warp * (kOwnKeys + 2 * c.n + 2);
  int* blk = ownRow + kOwnKeys;  // [n]
  int* pre = blk + c.n;          // [n + 1]
  int* count = pre + c.n + 1;    // [1]

  const int kvh = blockIdx.y, hq0 = kvh * kGroup;
  const RowTile tile = tiles[blockIdx.x];
  const SeqTable seq = seqTable(a.seq);
  const int qStart = seq.qStart[tile.s], qCount = seq.qStart[tile.s + 1] - qStart;
  const int kBase = seq.kBase[tile.s], cBase = seq.cBase[tile.s], pos0 = seq.pos0[tile.s];
  const int nq = min(kWarpsPerBlock, qCount - tile.first);
  const bool active = warp < nq;
  const int myIndex = tile.first + min(warp, nq - 1);  // idle warps shadow the last row, write nothing
  const int row = qStart + myIndex, pos = pos0 + myIndex;
  const int lastPos = pos0 + tile.first + nq - 1, firstPos = pos0 + tile.first;
  const float sl2 = c.scale * kLog2e;
  const T* Q = static_cast<const T*>(a.q);
  const T* gates = static_cast<const T*>(a.gates);

  // Q: the 4 rows x 16 heads are 64 consecutive-by-row slices; stage them in K buffer 1.
  copyRowsAsync<T, D, kBlockThreads>(sK + L::tile, ld, kSharedKeys, [&](int r) -> const T* {
    const int w = r / kGroup;
    return w < nq ? Q + ((size_t)(qStart + tile.first + w) * c.HQ + hq0 + r % kGroup) * D : nullptr;
  });
  cpAsyncCommit();
  cpAsyncWait<0>();
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) loadA(qf[kk], sK + L::tile, ld, min(warp, nq - 1) * kGroup, kk * 16);
  __syncthreads();

  // Walks block-wide tiles of keys first .. first + total - 1 (rows base + p of K and V; V may be
  // null), double-buffered; body(tile, first key, K tile, V tile) runs between two barriers.
  auto walkShared = [&](int first, int total, int base, const void* Kp, const void* Vp, auto&& body) {
    const int nTiles = (total + kSharedKeys - 1) / kSharedKeys;
    auto load = [&](int t, int buf) {
      const int k0 = first + t * kSharedKeys, end = first + total;
      const T* K = static_cast<const T*>(Kp);
      const T* V = static_cast<const T*>(Vp);
      copyRowsAsync<T, D, kBlockThreads>(sK + buf * L::tile, ld, kSharedKeys, [&](int r) -> const T* {
        return k0 + r < end ? K + ((size_t)(base + k0 + r) * c.H + kvh) * D : nullptr;
      });
      if (V)
        copyRowsAsync<T, D, kBlockThreads>(sV + buf * L::tile, ld, kSharedKeys, [&](int r) -> const T* {
          return k0 + r < end ? V + ((size_t)(base + k0 + r) * c.H + kvh) * D : nullptr;
        });
    };
    walkDoubleBuffered(nTiles, load, [&](int t, int buf) { body(t, first + t * kSharedKeys, sK + buf * L::tile, sV + buf * L::tile); });
  };

  const size_t oAt = ((size_t)row * c.HQ + hq0) * D;  // this warp's 16 heads
  // Stores a finished branch: normalised output (T) and log2-domain lse of both rows of the thread.
  auto store = [&](WarpRows<D>& st, int branch, void* dst, float* oFloat) {
    float lse[2], inv[2];
    st.finish(lse, inv);
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int r = g4 + 8 * i;
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        const float x = st.o[n][2 * i] * inv[i], y = st.o[n][2 * i + 1] * inv[i];
        if (oFloat) { oFloat[n * 4 + 2 * i] = x; oFloat[n * 4 + 2 * i + 1] = y; }
        if (active) *reinterpret_cast<uint32_t*>(static_cast<T*>(dst) + oAt + (size_t)r * D + n * 8 + 2 * t4) = packF2<T>(x, y);
      }
      if (active && t4 == 0) a.lse[((size_t)row * c.HQ + hq0 + r) * 3 + branch] = lse[i];
    }
  };

  // ---- compressed branch: keys 0 .. nc(pos) - 1 ----
  const int nc = compressedCount(pos + 1, c.l, c.d), ncAll = compressedCount(lastPos + 1, c.l, c.d);
  WarpRows<D> st;
  st.reset();
  walkShared(0, ncAll, cBase, a.kCmp, a.vCmp, [&](int, int k0, const T* k, const T* v) {
    warpAttend<T, D, kSharedKeys>(qf, k, v, ld, sl2, [&](int j) { return k0 + j < nc; }, st);
  });
  float cmpLse[2];
  {
    float inv[2];
    st.finish(cmpLse, inv);
  }
  store(st, 0, a.oCmp, nullptr);

  // ---- selection scores and top-n ----
  const int cur = pos / c.ls, nb = cur + 1;
  const bool select = a.blockIn == nullptr;
  if (select) {
    for (int j = lane; j < nb; j += 32) scores[j] = 0.f;
    __syncwarp();
    const int perCmp = c.l / c.d, perSel = c.ls / c.d;
    walkShared(0, ncAll, cBase, a.kCmp, nullptr, [&](int, int i0, const T* k, const T*) {
      float s[kSharedKeys / 8][4];
      warpScores<T, D, kSharedKeys>(qf, k, ld, s);
      // Probability mass per key over the 16 heads: rows g and g+8 here, then across g (lanes).
#pragma unroll
      for (int n = 0; n < kSharedKeys / 8; n++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const bool vis = i0 + n * 8 + 2 * t4 + e < nc;
          float p = vis ? exp2f(fmaf(s[n][e], sl2, -cmpLse[0])) + exp2f(fmaf(s[n][2 + e], sl2, -cmpLse[1])) : 0.f;
          p += __shfl_xor_sync(0xffffffffu, p, 4);
          p += __shfl_xor_sync(0xffffffffu, p, 8);
          p += __shfl_xor_sync(0xffffffffu, p, 16);
          if (g4 == 0) mass[n * 8 + 2 * t4 + e] = p;
        }
      }
      __syncwarp();
      const int i1 = min(nc, i0 + kSharedKeys) - 1;
      if (i1 >= i0) {
        const int jLo = i0 / perSel, jHi = min(cur, (i1 + perCmp - 1) / perSel);
        for (int j = jLo + lane; j <= jHi; j += 32) {
          const int iFirst = max(i0, j * perSel - perCmp + 1), iLast = min(i1, (j + 1) * perSel - 1);
          float acc = 0.f;
          for (int i = iFirst; i <= iLast; i++) {
            const int w = min(i + perCmp, (j + 1) * perSel) - max(i, j * perSel);
            acc += (float)w * mass[i - i0];
          }
          scores[j] += acc;
        }
      }
      __syncwarp();
    });
    // Forced blocks, then the highest scores (chosen ones marked -2 so they never win again).
    if (lane == 0) {
      int k = 0;
      for (int j = 0; j < c.initialBlocks && j < nb; j++) { scores[j] = -2.f; blk[k++] = j; }
      for (int j = max(0, cur - c.localBlocks + 1); j <= cur; j++)
        if (scores[j] != -2.f) { scores[j] = -2.f; blk[k++] = j; }
      *count = k;
    }
    __syncwarp();
    const int want = min(c.n, nb);
    for (int k = *count; k < want; k++) {
      float best = -1.f;
      int bestJ = INT_MAX;
      for (int j = lane; j < nb; j += 32)
        if (scores[j] > best) { best = scores[j]; bestJ = j; }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int oj = __shfl_xor_sync(0xffffffffu, bestJ, o);
        if (ob > best || (ob == best && oj < bestJ)) { best = ob; bestJ = oj; }
      }
      if (lane == 0) { scores[bestJ] = -2.f; blk[k] = bestJ; }
      __syncwarp();
    }
    const int chosen = max(*count, want);  // forced blocks may exceed n, as in selectTopN
    if (lane == 0) {
      for (int i = 1; i < chosen; i++) {
        const int v = blk[i];
        int k = i - 1;
        while (k >= 0 && blk[k] > v) { blk[k + 1] = blk[k]; k--; }
        blk[k + 1] = v;
      }
      for (int i = chosen; i < c.n; i++) blk[i] = -1;
    }
  } else {
    for (int k = lane; k < c.n; k += 32) blk[k] = a.blockIn[((size_t)row * c.H + kvh) * c.n + k];
  }
  __syncwarp();
  if (active) for (int k = lane; k < c.n; k += 32) a.blockOut[((size_t)row * c.H + kvh) * c.n + k] = blk[k];
  if (lane == 0) {
    int total = 0;
    for (int k = 0; k < c.n; k++) {
      pre[k] = total;
      const int j = blk[k];
      total += (j >= 0 && j <= cur) ? min(c.ls, pos - j * c.ls + 1) : 0;
    }
    pre[c.n] = total;
  }
  __syncthreads();  // every warp is done with the block-wide tiles: they become per-warp tiles

  // ---- selected branch: this warp's own 32-key tiles ----
  const int slcTokens = pre[c.n];
  T* ownK = sK + warp * 2 * kOwnKeys * ld;
  T* ownV = ownK + kOwnKeys * ld;
  const T* Ks = static_cast<const T*>(a.kSlc);
  const T* Vs = static_cast<const T*>(a.vSlc);
  st.reset();
  for (int e0 = 0; e0 < slcTokens; e0 += kOwnKeys) {
    {
      const int e = e0 + lane;
      int kr = -1;
      if (e < slcTokens) {
        int k = 0;
        while (pre[k + 1] <= e) k++;
        kr = kBase + blk[k] * c.ls + (e - pre[k]);
      }
      ownRow[lane] = kr;
    }
    __syncwarp();
    constexpr int per = D / 8;  // 16-byte chunks per row
    for (int x = lane; x < kOwnKeys * per; x += 32) {
      const int r = x / per, col = (x % per) * 8;
      const int kr = ownRow[r];
      T* dk = ownK + r * ld + col;
      T* dv = ownV + r * ld + col;
      if (kr >= 0) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smemAddr(dk)), "l"(Ks + ((size_t)kr * c.H + kvh) * D + col));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smemAddr(dv)), "l"(Vs + ((size_t)kr * c.H + kvh) * D + col));
      } else {
        *reinterpret_cast<uint4*>(dk) = make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(dv) = make_uint4(0, 0, 0, 0);
      }
    }
    cpAsyncCommit();
    cpAsyncWait<0>();
    __syncwarp();
    warpAttend<T, D, kOwnKeys>(qf, ownK, ownV, ld, sl2, [&](int j) { return e0 + j < slcTokens; }, st);
    __syncwarp();
  }
  store(st, 1, a.oSlc, nullptr);
  __syncthreads();  // own tiles become block-wide tiles again

  // ---- window branch: keys ws(pos) .. pos; the block walks ws(first row) .. last row ----
  const int ws = max(0, pos - c.window + 1), wsAll = max(0, firstPos - c.window + 1);
  st.reset();
  walkShared(wsAll, lastPos - wsAll + 1, kBase, a.kWin, a.vWin, [&](int, int k0, const T* k, const T* v) {
    warpAttend<T, D, kSharedKeys>(qf, k, v, ld, sl2, [&](int j) { return k0 + j >= ws && k0 + j <= pos; }, st);
  });
  float win[D / 8 * 4];
  store(st, 2, a.oWin, win);

  // ---- gated sum (this thread re-reads the branch outputs it stored itself) ----
  if (!active) return;
  const T* oCmp = static_cast<const T*>(a.oCmp);
  const T* oSlc = static_cast<const T*>(a.oSlc);
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int r = g4 + 8 * i;
    const size_t gAt = ((size_t)row * c.HQ + hq0 + r) * 3;
    const float gc = toF(gates[gAt]), gs = toF(gates[gAt + 1]), gw = toF(gates[gAt + 2]);
#pragma unroll
    for (int n = 0; n < D / 8; n++) {
      const size_t at = oAt + (size_t)r * D + n * 8 + 2 * t4;
      const float x = gc * toF(oCmp[at]) + gs * toF(oSlc[at]) + gw * win[n * 4 + 2 * i];
      const float y = gc * toF(oCmp[at + 1]) + gs * toF(oSlc[at + 1]) + gw * win[n * 4 + 2 * i + 1];
      *reinterpret_cast<uint32_t*>(out + at) = packF2<T>(x, y);
    }
  }
}

template <class T, int D>
void launch(const NSAForwardArgs& a, cudaStream_t stream) {
  std::vector<RowTile> tiles;
  const int S = a.seq.S;
  for (int s = 0; s < S; s++)
    for (int f = 0; f < a.seq.host[s + 1] - a.seq.host[s]; f += kWarpsPerBlock) tiles.push_back({s, f});
  // Latest positions first: they have the most compressed keys.
  std::stable_sort(tiles.begin(), tiles.end(), [&](const RowTile& x, const RowTile& y) {
    return x.first + a.seq.host[3 * S + 1 + x.s] > y.first + a.seq.host[3 * S + 1 + y.s];
  });
  const int nbMax = (a.seq.maxKeys + a.cfg.ls - 1) / a.cfg.ls + 1;
  const size_t bytes = Layout<D>::bytes(sizeof(T), nbMax, a.cfg.n);
  if (bytes > 200 * 1024) throw std::runtime_error("nsaForward: sequence too long for the selection scores in shared memory");
  Workspace ws(stream);
  const RowTile* dTiles = ws.upload(tiles);
  NSA_CUDA(cudaFuncSetAttribute(nsaForwardRegKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  nsaForwardRegKernel<T, D><<<dim3((unsigned)tiles.size(), a.cfg.H), kBlockThreads, bytes, stream>>>(a, dTiles, nbMax);
  NSA_LAUNCHED("nsaForwardRegKernel");
}

}  // namespace

bool nsaForwardRegisters(const NSAForwardArgs& a, cudaStream_t stream) {
  const NSAConfigArgs& c = a.cfg;
  if (a.dtype == DType::F32 || c.HQ != kGroup * c.H || c.Dk != c.Dv || (c.Dk != 64 && c.Dk != 128)) return false;
  if (!a.oSlc || !a.oWin || !a.lse || a.seq.rows == 0) return false;
  // Per-warp tiles, the mass buffer and the block-sum loop assume these (paper defaults satisfy them).
  if (c.l % c.d || c.ls % c.d || c.n > 64) return false;
  const int nbMax = (a.seq.maxKeys + c.ls - 1) / c.ls + 1;
  if (Layout<128>::bytes(2, nbMax, c.n) > 200 * 1024) return false;
  const bool f16 = a.dtype == DType::F16;
  if (c.Dk == 64) f16 ? launch<__half, 64>(a, stream) : launch<__nv_bfloat16, 64>(a, stream);
  else f16 ? launch<__half, 128>(a, stream) : launch<__nv_bfloat16, 128>(a, stream);
  return true;
}

}  // namespace nsa
