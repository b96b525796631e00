// NSA forward, fused: one block per (query position, KV head) holds every query head of the GQA
// group, so each compressed, selected and window key is fetched once for the whole group.
//   1. compressed branch: online softmax over the c(t) visible compressed keys;
//   2. selection scores: a second pass over the same keys turns the now-normalised probabilities
//      into per-selection-block mass (geometric overlap), summed over the group, in shared memory;
//      top-n with forced blocks, ties to the lower index (no T x C matrix in global memory);
//   3. selected-block and sliding-window branches; 4. gated sum.
// Decoding uses the same kernel: queries sit at pos0 .. of a longer cache.
#include "attend.cuh"
#include "cuda_error.h"
#include "nsa_kernels.cuh"
#include "ops.h"

namespace nsa {

namespace {

template <class T>
__global__ void __launch_bounds__(kThreads) nsaForwardKernel(NSAForwardArgs a, int RG, int BK, int nbMax) {
  extern __shared__ __align__(16) char smemRaw[];
  const NSAConfigArgs& c = a.cfg;
  const int G = c.HQ / c.H;
  AttendSmem<T> sm;
  sm.carve(smemRaw, RG, BK, c.Dk, c.Dv, false, true);
  float* scores = reinterpret_cast<float*>(sm.ints);  // [nbMax]
  int* chosen = sm.ints + nbMax;                      // [nbMax] flags
  int* blk = chosen + nbMax;                          // [n] selected blocks, ascending
  int* pre = blk + c.n;                               // [n + 1] token prefix over blk
  int* misc = pre + c.n + 1;                          // [4]

  const int row = blockIdx.x, g = blockIdx.y;
  const SeqTable st = seqTable(a.seq);
  const int s = seqOfRow(st, row);
  const int pos = st.pos0[s] + row - st.qStart[s];
  const int kBase = st.kBase[s], cBase = st.cBase[s];
  const float sl2 = c.scale * kLog2e;
  const int cur = pos / c.ls, nb = cur + 1;
  const int nc = compressedCount(pos + 1, c.l, c.d);
  const bool select = a.blockIn == nullptr;
  const T* Q = static_cast<const T*>(a.q);
  const T* gates = static_cast<const T*>(a.gates);
  const size_t qRow = (size_t)row * c.HQ * c.Dk, oRow = (size_t)row * c.HQ * c.Dv;

  if (select) for (int j = threadIdx.x; j < nb; j += blockDim.x) { scores[j] = 0.f; chosen[j] = 0; }
  // Every tile below lists exactly the keys this position may see, so the per-row mask is trivial.
  for (int r = threadIdx.x; r < RG; r += blockDim.x) sm.rpos[r] = 0;
  for (int j = threadIdx.x; j < BK; j += blockDim.x) sm.kposBuf[0][j] = sm.kposBuf[1][j] = 0;

  // ---- compressed branch and selection scores, head chunk by head chunk ----
  const int cmpTiles = (nc + BK - 1) / BK;
  for (int h0 = 0; h0 < G; h0 += RG) {
    const int nr = min(RG, G - h0), hq0 = g * G + h0;
    loadHeads<T>(sm.q, sm.ldq, RG, nr, Q, qRow, hq0, c.Dk);
    beginBranch(sm);
    const T* Kc = static_cast<const T*>(a.kCmp);
    const T* Vc = static_cast<const T*>(a.vCmp);
    auto fillCmp = [&](int tile, int* krow, int*) {
      for (int j = threadIdx.x; j < BK; j += blockDim.x) {
        const int i = tile * BK + j;
        krow[j] = i < nc ? cBase + i : -1;
      }
    };
    forEachTile(sm, cmpTiles, Kc, Vc, c.H, g, true, fillCmp, [&] { attendTile(sm, nr, sl2); });
    endBranch(sm);
    storeBranch<T>(sm, nr, static_cast<T*>(a.oCmp), oRow, hq0, c.Dv);
    if (a.lse) for (int r = threadIdx.x; r < nr; r += blockDim.x) a.lse[((size_t)row * c.HQ + hq0 + r) * 3 + 0] = sm.lse[r];
    if (select) {
      const int perCmp = c.l / c.d, perSel = c.ls / c.d;
      int tile = -1;
      forEachTile(sm, cmpTiles, Kc, Vc, c.H, g, false, fillCmp, [&] {
        tile++;
        tileScores(sm);
        __syncthreads();
        // Probability mass of each compressed key, summed over the group's heads in a fixed order.
        for (int j = threadIdx.x; j < BK; j += blockDim.x) {
          float mass = 0.f;
          if (sm.krow[j] >= 0)
            for (int r = 0; r < nr; r++) mass += exp2f(sm.s[r * sm.lds + j] * sl2 - sm.lse[r]);
          sm.pk[j] = mass;
        }
        __syncthreads();
        const int i0 = tile * BK, i1 = min(nc, i0 + BK) - 1;
        const int jLo = i0 / perSel, jHi = min(cur, (i1 + perCmp - 1) / perSel);
        for (int j = jLo + threadIdx.x; j <= jHi; j += blockDim.x) {
          const int iFirst = max(i0, j * perSel - perCmp + 1), iLast = min(i1, (j + 1) * perSel - 1);
          float acc = 0.f;
          for (int i = iFirst; i <= iLast; i++) {
            const int w = min(i + perCmp, (j + 1) * perSel) - max(i, j * perSel);
            acc += (float)w * sm.pk[i - i0];
          }
          scores[j] += acc;
        }
        __syncthreads();
      });
    }
    __syncthreads();
  }

  // ---- top-n selection (or the caller's blocks) ----
  if (select) {
    selectTopN(scores, chosen, blk, misc, nb, cur, c.n, c.initialBlocks, c.localBlocks, sm.red);
    __syncthreads();
    for (int k = threadIdx.x; k < c.n; k += blockDim.x) a.blockOut[((size_t)row * c.H + g) * c.n + k] = blk[k];
  } else {
    for (int k = threadIdx.x; k < c.n; k += blockDim.x) {
      const int j = a.blockIn[((size_t)row * c.H + g) * c.n + k];
      blk[k] = j;
      a.blockOut[((size_t)row * c.H + g) * c.n + k] = j;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (int k = 0; k < c.n; k++) {
      pre[k] = total;
      const int j = blk[k];
      total += (j >= 0 && j <= cur) ? min(c.ls, pos - j * c.ls + 1) : 0;
    }
    pre[c.n] = total;
  }
  __syncthreads();
  const int slcTokens = pre[c.n];
  const int ws = max(0, pos - c.window + 1), winTokens = pos - ws + 1;

  // ---- selected and window branches, gated sum ----
  for (int h0 = 0; h0 < G; h0 += RG) {
    const int nr = min(RG, G - h0), hq0 = g * G + h0;
    loadHeads<T>(sm.q, sm.ldq, RG, nr, Q, qRow, hq0, c.Dk);
    for (int r = threadIdx.x; r < RG * 3; r += blockDim.x)
      sm.gate[r] = r < nr * 3 ? toF(gates[((size_t)row * c.HQ + hq0) * 3 + r]) : 0.f;
    for (int branch = 1; branch <= 2; branch++) {
      beginBranch(sm);
      const int tokens = branch == 1 ? slcTokens : winTokens;
      const T* K = static_cast<const T*>(branch == 1 ? a.kSlc : a.kWin);
      const T* V = static_cast<const T*>(branch == 1 ? a.vSlc : a.vWin);
      auto fillBranch = [&](int tile, int* krow, int*) {
        for (int j = threadIdx.x; j < BK; j += blockDim.x) {
          const int e = tile * BK + j;
          int kr = -1;
          if (e < tokens) {
            if (branch == 1) {
              int k = 0;
              while (pre[k + 1] <= e) k++;
              kr = kBase + blk[k] * c.ls + (e - pre[k]);
            } else {
              kr = kBase + ws + e;
            }
          }
          krow[j] = kr;
        }
      };
      forEachTile(sm, (tokens + BK - 1) / BK, K, V, c.H, g, true, fillBranch, [&] { attendTile(sm, nr, sl2); });
      endBranch(sm);
      void* saved = branch == 1 ? a.oSlc : a.oWin;
      if (saved) storeBranch<T>(sm, nr, static_cast<T*>(saved), oRow, hq0, c.Dv);
      if (a.lse) for (int r = threadIdx.x; r < nr; r += blockDim.x) a.lse[((size_t)row * c.HQ + hq0 + r) * 3 + branch] = sm.lse[r];
      // y accumulates the gated sum in float: y = g_slc * o_slc, then += g_win * o_win.
      for (int e = threadIdx.x; e < nr * c.Dv; e += blockDim.x) {
        const int r = e / c.Dv, col = e % c.Dv;
        const float v = sm.gate[r * 3 + branch] * sm.o[r * sm.ldo + col];
        sm.y[r * sm.ldo + col] = branch == 1 ? v : sm.y[r * sm.ldo + col] + v;
      }
      __syncthreads();
    }
    const T* oCmp = static_cast<const T*>(a.oCmp);
    T* out = static_cast<T*>(a.out);
    for (int e = threadIdx.x; e < nr * c.Dv; e += blockDim.x) {
      const int r = e / c.Dv, col = e % c.Dv;
      const size_t at = oRow + (size_t)(hq0 + r) * c.Dv + col;
      out[at] = fromF<T>(sm.y[r * sm.ldo + col] + sm.gate[r * 3] * toF(oCmp[at]));
    }
    __syncthreads();
  }
}

template <class T>
void launchForward(const NSAForwardArgs& a, cudaStream_t stream) {
  const int G = a.cfg.HQ / a.cfg.H;
  const int BK = sizeof(T) == 4 ? 32 : 64;
  const int nbMax = (a.seq.maxKeys + a.cfg.ls - 1) / a.cfg.ls + 1;
  const int nInts = 2 * nbMax + 2 * a.cfg.n + 8;
  int RG = 0;
  size_t bytes = 0;
  for (int cand : {64, 32, 16}) {
    if (cand > roundUp(G, 16)) continue;
    bytes = AttendSmem<T>::bytes(cand, BK, a.cfg.Dk, a.cfg.Dv, nInts, false, true);
    RG = cand;
    if (bytes <= 200 * 1024) break;
  }
  if (bytes > 220 * 1024) throw std::runtime_error("nsaForward: head dims too large for shared memory");
  NSA_CUDA(cudaFuncSetAttribute(nsaForwardKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  dim3 grid(a.seq.rows, a.cfg.H);
  if (a.seq.rows == 0) return;
  nsaForwardKernel<T><<<grid, kThreads, bytes, stream>>>(a, RG, BK, nbMax);
  NSA_LAUNCHED("nsaForwardKernel");
}

}  // namespace

// nsa_forward_pipelined_mma.cu: v6 of the 16-bit G = 16 forward (false = not taken, or NSA_FWD_V4=1).
bool nsaForwardPipelined(const NSAForwardArgs& a, cudaStream_t stream);

void nsaForward(const NSAForwardArgs& a, cudaStream_t stream) {
  if (nsaDecodeSplit(a, stream)) return;
  if (nsaForwardPipelined(a, stream)) return;  // 16-bit, G = 16, D 64/128: nsa_forward_pipelined_mma.cu
  if (nsaForwardRegisters(a, stream)) return;  // the same shapes, v4: nsa_forward_mma.cu
  switch (a.dtype) {
    case DType::F32: return launchForward<float>(a, stream);
    case DType::F16: return launchForward<__half>(a, stream);
    case DType::BF16: return launchForward<__nv_bfloat16>(a, stream);
  }
}

}  // namespace nsa
