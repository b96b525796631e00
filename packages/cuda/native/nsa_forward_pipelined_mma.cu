// NSA forward v6 (pipelined selected branch), for float16/bfloat16, G = 16 query heads per KV head
// (one m16n8k16 row tile) and Dk = Dv in {64, 128}, with saved branch outputs (training / prefill).
// The block shape is v4's (nsa_forward_mma.cu): 4 warps take 4 consecutive query rows of one
// sequence and one KV head; warp w owns row w's 16 heads, its Q fragments, scores and output in
// registers; compressed and window keys are loaded once per block (union of the 4 rows' ranges,
// double-buffered 64-key tiles) and each warp masks its own range. What differs from v4:
//   - selected branch: each warp walks its blocks in 16-key chunks that never cross a block (rows
//     are contiguous: no per-key index search) through its own 2-stage cp.async ring, so the next
//     chunk's gather overlaps this chunk's mma; v4 waited for every 32-key gather;
//   - selection mass: the 16 heads' probabilities per key are summed with a reduce-scatter over the
//     8 row groups (14 shuffles per 64-key tile instead of 48), two stores per thread;
//   - selection blocks from the masses in one step per block where l = 2d and l' = 4d;
//   - opt-in (NSA_FWD_COMMON=1): selected blocks every warp of the block chose (the forced initial and
//     local ones at least, when the rows share their current block) are read once into the
//     block-wide tiles, each warp masking keys past its position; the rings take the rest. It pays
//     only when neighbouring positions choose alike; on random inputs it measured slower.
// NSA_FWD_V4=1 runs the v4 kernel instead (A/B); NSA_FWD_SKIP=<bits> leaves out work for timing the
// branches' shares only (1: selection scores, 2: selected branch, 4: window; outputs then wrong).
// On sm_90a builds running on compute capability 9.0 the compressed branch, the selection scores and
// the window branch go through wgmma (see nsaForwardPipeKernel's Wg; NSA_FWD_WGMMA=0 keeps v6).
// v9 (Wg only): the blocks every row of a block is forced to choose (initial, and the local ones when
// the rows share their current block) are read once per block on wgmma before the rings run, in
// 8-row blocks (NSA_FWD_FORCED=0 or NSA_FWD_WARPS=4 run v7: 4 rows, the rings take every block).
// v11: in 8-row blocks the two warpgroups issue their wgmma groups in turns (WgTurns;
// NSA_FWD_PINGPONG=0: at once, v9), and the gated sum loads all it re-reads before its first store
// (NSA_FWD_GATE_BATCH=0: v9's loop, one L2 round trip per 8 columns).
// v12: top-n keeps each lane's best two blocks instead of rescanning every score per round
// (NSA_FWD_TOPN=0: v11's top-n). NSA_FWD_RING=3 (opt-in trial, outputs bit-equal, no faster): a
// third ring stage in 8-row blocks, behind the tile region where the block scores were.
// v13 (8-row blocks): after top-n warpgroup 0 walks its rows' window and then their selected blocks,
// warpgroup 1 the other way round, so one's window walk (tensor cores) runs under the other's
// gathers (L2); each reads its own rows' forced blocks. NSA_FWD_SPLIT=0: v12 (the window output is
// then kept in registers for the gated sum; v13 reads it back from oWin).
// v14: the selected rings' chunks unpadded and swizzled (chunkAt, warp_tile.cuh), as dq's rings: the
// padded rows (D + 8 elements) put every other row's 16-byte gathers 16 bytes off a 32-byte sector,
// which costs L2 sectors (ncu, H100, 64k: 240 -> 170 GB of L2 traffic, 53.7 -> 49.1 ms). Same
// arithmetic in the same order (bit-equal); NSA_FWD_RING_SWIZZLE=0: padded rows (v13).
// v15 (8-row blocks): the compressed branch walks 128-key tiles (one barrier, one Q·Kᵀ and one P·V
// group per 128 keys; NSA_FWD_CMP_TILE=64: v14's 64-key tiles), and each warp sorts its chosen
// blocks by rank across its lanes instead of by insertion in lane 0 (same list; NSA_FWD_SORT=0:
// v14's sort). Tried (run of 02:36 UTC 2026-11-23): the selection scores in 256-key tiles, 4
// slices per wait: 48.76 / 49.01 ms at 64k against 47.88 with 128-key tiles; not kept.
// v16 (wgmma kernels): the compressed branch's and the selection scores' full tiles are loaded by
// TMA (tma.cuh: one thread, a few bulk tensor copies per tile, an mbarrier per buffer) instead of
// every thread's cp.async; NSA_FWD_TMA=0: cp.async (v15).
// v17 (wgmma kernels, swizzled rings): each warp's full 16-key ring chunks are gathered by TMA too
// (lane 0: a few bulk tensor copies, an mbarrier per ring stage; a chunk with fewer visible keys
// still by cp.async, which zeroes its rows past them); NSA_FWD_TMA=1: the rings by cp.async (v16).
// Measured (H100, bf16, B=1 HQ=64 H=4 D=128, paper defaults, one call at 02:45 UTC 2026-11-23,
// alternating processes): forward 64k 45.85 / 45.93 ms against 48.95 / 49.12 for v14's binary, 16k
// 7.15 / 7.22 against 7.64 / 7.75; outputs bit-equal to NSA_FWD_TMA=1 / 0. Tried after it (v18, not
// kept): the split walks' full window / forced tiles by TMA as well; that binary ran 47.10 / 47.15 ms
// at 64k (its NSA_FWD_TMA=2, this code's path: 48.00 / 48.03): the 8-row D = 128 kernel sits at 255
// registers with ~72 bytes of spill stores, and its speed moves with the register allocation.
// v19 (cfwd4): where no A/B switch is set, the 8-row wgmma kernel is launched as a lean
// instantiation (template argument Lean = 1) compiled with the default path only: every flag past
// NSA_FWD_SKIP's bits is a known zero there and TMA known on, so it carries none of the older
// paths (NSA_FWD_LEAN=0: the kernel with all of them behind run-time flags, v17's). Same arithmetic
// in the same order (bit-equal at 16k / 64k). Measured (H100, bf16, B=1 HQ=64 H=4 D=128, paper
// defaults, one call at 03:34 UTC 2026-11-23, alternating processes, two rounds): forward 64k
// 44.55 / 44.58 ms against 45.81 / 45.86 (LEAN=0, same binary) and 46.10 / 45.96 (the lead's v17
// binary), 16k 7.07 against 7.25 / 7.28; NSA_FWD_SKIP=1 / 2: 32.34 / 28.81 ms (selection scores
// ~12.2 ms, selected branch ~15.7 ms). ptxas: 255 registers in every 8-row D = 128 variant; spill
// stores 72 bytes (LEAN=0), 136 (1). Tried in the same call, kept opt-in: LEAN=2 (1 + v18's TMA for
// the split walks' full window / forced tiles) 48.63 / 48.54 ms; LEAN=3 / 4 (1 / 2 with the split
// flag left run-time: 76 / 0 bytes of spills) 44.78 / 44.74 and 47.68 / 47.56 ms: the spill
// counts do not predict the speed, and v18's TMA loses on its own.
// LEAN=5 (1 + the selection scores' block sums from registers by shuffles, no mass-buffer round
// trip; bit-equal), second call at 03:43 UTC: 64k 44.47 / 44.40 ms against 44.67 / 44.44 (LEAN=1) and
// 45.76 / 45.52 (LEAN=0), 16k 7.10 against 7.08: within the noise, opt-in.
// v20 (cfwd5; the lean kernel, NSA_FWD_LEAN=12, the default): ncu of v19 at 64k (05:24 UTC 2026-11-23:
// 44.5 ms, 35 % of issue slots used, 1/3 of the warp samples "wait" stalls) showed three latency
// chains. (a) Masks: the per-key predicates of the compressed / window / forced softmax and of the
// selection mass stayed live through the exponentials, so each key's FFMA, MUFU and FADD issued in
// turn, each waiting on the one before; now a masked key's score (exponent) is a -inf select and every
// exponential runs (groupSoftmax's Sel, addMass). (b) The selection-score walk met at a __syncthreads
// per 128-key tile (both warpgroups' mass work before the next Q·Kᵀ); it now loads its K-only tiles
// into four buffers of the tile region, two tiles ahead, and only the turns order the warpgroups.
// (c) The compressed walk's (and the split walks') next-tile copies were issued before this tile's
// Q·Kᵀ, delaying warp 0 and with it both turns; now after it. (d) The compressed walk met at a
// __syncthreads per tile too: its K and V now complete separate mbarriers and the turns alone keep
// the two buffers safe (see kCmpFlow), so one warpgroup's softmax runs under the other's products
// across tiles. (e) A tile (slice) every key of which the warp's rows see skips the mask work
// (groupSoftmax's Full, addMass): most tiles. Same arithmetic in the same order (bit-equal to
// LEAN=0 / 1 at 16k and 64k). No spills at D = 128 (v19: 136 bytes). H100, bf16, B=1 HQ=64 H=4
// D=128, paper defaults, alternating processes, call of 06:12 UTC: 64k 36.60 / 36.37 ms against
// 37.12 / 37.01 (LEAN=11: (a)-(d)), 37.92 / 37.97 (LEAN=9: (a)-(c)), 43.91 / 43.93 (LEAN=1, v19, same
// binary) and 44.74 / 43.80 (run 25's binary); 16k 6.31 against 6.34 / 6.40 / 7.12 / 7.09; forward +
// backward 64k 118.42 / 118.54 against 126.76 / 126.83. Call of 06:04: LEAN=11 36.56 / 36.76, 9
// 37.51 / 37.61, 7 ((a), (b)) 38.57 / 38.29. Call of 05:41: LEAN=6 ((a) only) 40.73 / 40.67 against
// 44.40 / 44.46 for LEAN=1. Tried, no faster, not kept: the rings' softmax
// with select masks too (38.69 / 39.17 against 38.58 / 38.74 for 7, 05:41), the rings' 16-key scores
// in two mma chains (37.96 / 38.25 against 38.29 / 37.94 for 9, 05:53; another summation order).
// v21 (session 14; NSA_FWD_LEAN=13): ncu of v20 at 64k counted 322 M of 1,317 M global sectors
// as excess, all from the epilogue: each thread stored its branch outputs as 4-byte pairs straight from the
// MMA fragment (8 rows x 16 bytes per warp store) and the gated sum read them back the same way. A quad
// transpose (quadTranspose: four shfl.xor) gives each lane 8 consecutive columns, so every branch output,
// out and the gated sum's loads go in 16-byte pieces of whole sectors (57.7 M excess sectors left). Each lane
// reads back what it wrote, the same expression per element: bit-equal to v20. H100, bf16, B=1 HQ=64 H=4
// D=128, paper defaults, alternating processes: 64k 35.08-35.36 ms against 35.95-36.43 for LEAN=12 (v20) in
// the same calls; ncu 34.80 against 35.84 ms. Tried after it and slower (branch h-cepi): lazy rescaling
// (35.56-35.69 against 35.08-35.36) and the gated sum from shared-memory copies (36.91-37.34 against
// 35.37-35.89; 210 KB of shared memory left less L1).
// v25 (session 15; NSA_FWD_LEAN=22): phase stamps per block (now NSA_FWD_LEAN=28,
// scripts/forward-stamps.py) put top-n at 7.6k-13.1k cycles of each 8-row block at 64k, ~10k of them
// fixed whatever the number of candidates, on both warpgroups' paths. Its 13 rounds each reduced
// (score, index) pairs over the warp in five steps of two shuffles; now two redux.sync (a max of
// order-preserving keys, then the lowest index among the maxima), and the split walks' first tiles
// are requested after top-n instead of during it. The same blocks in the same order: bit-equal to
// v21. H100, bf16, B=1 HQ=64 H=4 D=128, paper defaults, alternating processes in three calls: 64k
// 34.51-34.66 ms against 35.06-35.35 for v21; 16k 5.92-5.96 against 6.07-6.15. Tried in the same
// calls and slower (not kept): the compressed walk's first K tile requested before Q's wait (Q staged
// in the V buffers), the score walk's first tiles under the compressed walk's last, warpgroup 0's
// forced pair under its window's last tile (each alone: 35.48-35.55, 35.67-35.80, 39.64-39.66 ms
// against 35.50-35.63 for v21; the last spilled 28 bytes); a used-up lane's blocks rescanned by the
// whole warp (34.66-34.78 against 34.51-34.65), also with the sort's rank loop unrolled (35.09-35.11).
// v26 (session 15; NSA_FWD_LEAN=27, the default): the gated sum (~4k cycles per block by the stamps)
// re-reads the compressed output, stored ~100 µs earlier at 64k, and phase 0's output, with the ring
// gathers' bytes through L2 in between. At the start of split phase 1 lane 0 of each warp requests
// both into L2 again (cp.async.bulk.prefetch.L2, 4 KB each at D = 128). Bit-equal; ptxas spills 24
// bytes at D = 128.
// One call, alternating processes: 64k 34.56-34.61 ms against 34.67-34.68 for v25, 16k 5.94 against
// 6.00. (Per-lane prefetch.global.L2::evict_last of the same lines spilled 20 bytes; not run.)
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <vector>
#include "cuda_error.h"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "tma.cuh"
#include "warp_attend.cuh"
#include "wgmma.cuh"
#include "wgmma_probe.h"
#include "workspace.h"

namespace nsa {

namespace {

constexpr int kSharedKeys = 64;  // block-wide tiles (compressed, window)
constexpr int kChunk = kRingChunk;  // per-warp selected chunks (2 or 3 stages of K and V)
constexpr int kGroup = 16;       // query heads per KV head this kernel takes

// Phase stamps (NSA_FWD_LEAN=28: v26 with stamps, a diagnostic): thread 0 of each warpgroup in KV
// head 0's first 8192 blocks writes clock64 at its phase boundaries (slots 1-12), %globaltimer at
// its start and end (0, 13) and its SM (14); NSA_FWD_STAMPS_FILE=<path> writes the launch's stamps
// there (scripts/forward-stamps.py reads them).
constexpr int kStampBlocks = 8192, kStampSlots = 16;
__device__ unsigned long long fwdStamps[kStampBlocks][2][kStampSlots];

// Bits of the kernel's flags beyond NSA_FWD_SKIP's 1 / 2 / 4 and launch's 8 / 16.
constexpr int kFlagNoPingPong = 32;  // NSA_FWD_PINGPONG=0: both warpgroups issue their wgmmas at once (v9)
constexpr int kFlagGateInterleaved = 64;  // NSA_FWD_GATE_BATCH=0: the gated sum's loads between its stores (v9)
constexpr int kFlagV11TopN = 128;         // NSA_FWD_TOPN=0: v11's top-n (rescans every score each round; the unused list)
constexpr int kFlagRing3 = 256;           // NSA_FWD_RING=3: the per-warp rings have a third stage
constexpr int kFlagNoSplit = 512;         // NSA_FWD_SPLIT=0: both warpgroups walk the window together after the selected blocks (v12)
constexpr int kFlagInsertionSort = 2048;  // NSA_FWD_SORT=0: lane 0 sorts the chosen blocks by insertion (v14)
constexpr int kFlagCmp64 = 1024;          // NSA_FWD_CMP_TILE=64: the compressed branch in 64-key tiles in 8-row blocks too (v14)

struct RowTile {
  int s, first;  // sequence, first query index within it
};

// Transposes a 4 x 4 matrix of words across the four lanes of a quad (lanes 4g .. 4g + 3): lane t
// holds row t in w and gets column t back. In an MMA fragment lane t holds columns 8n + 2t, 8n + 2t + 1
// of a row for every n; after this, for the four n = 4m + j, lane t holds all eight columns of
// n = 4m + t: 16 contiguous bytes, so a warp's stores and loads of a row cover whole sectors.
__device__ __forceinline__ void quadTranspose(uint32_t (&w)[4], int t) {
  const bool low = t < 2;  // swap the off-diagonal 2 x 2 blocks with lane t ^ 2
  uint32_t x0 = __shfl_xor_sync(0xffffffffu, low ? w[2] : w[0], 2);
  uint32_t x1 = __shfl_xor_sync(0xffffffffu, low ? w[3] : w[1], 2);
  if (low) { w[2] = x0; w[3] = x1; } else { w[0] = x0; w[1] = x1; }
  const bool even = !(t & 1);  // then transpose each 2 x 2 block with lane t ^ 1
  x0 = __shfl_xor_sync(0xffffffffu, even ? w[1] : w[0], 1);
  x1 = __shfl_xor_sync(0xffffffffu, even ? w[3] : w[2], 1);
  if (even) { w[1] = x0; w[3] = x1; } else { w[0] = x0; w[2] = x1; }
}

// W warps per block (W query rows): 4 (two blocks per SM) or 8 (one; the default with the forced walk).
template <int D, int W>
struct Layout {
  // mbarriers behind the lists (8-byte aligned): the two TMA tile buffers', then two ring stages' per warp,
  // + 4 (the first two: the compressed walk's V buffers in Lean >= 11; v18's split-walk pairs held all
  // four), + 4 for the score walk's four K buffers (Lean >= 7)
  static constexpr int kBarriers = 2 + 2 * W + 4 + 4;
  static constexpr size_t kBarrierBytes = 8 * kBarriers + 8;
  static constexpr int ld = D + 8;
  static constexpr int tile = kSharedKeys * ld;  // elements of one block-wide K or V tile
  // [K0 K1 V0 V1] block-wide tiles; the same bytes hold each warp's ring (4 * kChunk rows) later,
  // and the block's W * 16 Q rows (from K1 on) at the start.
  static constexpr int rows = 4 * kSharedKeys > W * 4 * kChunk ? 4 * kSharedKeys : W * 4 * kChunk;
  static_assert(W * kGroup <= rows - kSharedKeys, "Q rows fit behind K0");
  __host__ __device__ static constexpr size_t tileBytes(size_t elem) { return elem * rows * ld; }
  // Bytes of one warp's third ring stage (K and V of one chunk), held behind the tile region.
  __host__ __device__ static constexpr size_t stage3Bytes(size_t elem) { return elem * 2 * kChunk * ld; }
  // Floats behind the tiles, before the int lists: each warp's block scores and mass buffer, which
  // with `ring3` also hold the warps' third ring stages once top-n is done (whichever is larger).
  __host__ __device__ static constexpr size_t scoreFloats(size_t elem, int nbMax, bool ring3) {
    return ring3 && W * stage3Bytes(elem) / sizeof(float) > (size_t)W * (nbMax + kSharedKeys) ? W * stage3Bytes(elem) / sizeof(float)
                                                                                              : (size_t)W * (nbMax + kSharedKeys);
  }
  static size_t bytes(size_t elem, int nbMax, int n, bool ring3 = false) {
    return tileBytes(elem) + sizeof(float) * scoreFloats(elem, nbMax, ring3) + sizeof(int) * W * (2 * (size_t)n + 2) +
           sizeof(int) * ((size_t)n + 1) + kBarrierBytes;
  }
};

// One reduce-scatter step over lanes xor x: v[0 .. 2H) becomes the sums of the half this lane keeps
// (the upper one when `upper`), in v[0 .. H).
template <int H>
__device__ __forceinline__ void scatterHalf(float (&v)[16], bool upper, int x) {
#pragma unroll
  for (int i = 0; i < H; i++) {
    const float send = upper ? v[i] : v[i + H], keep = upper ? v[i + H] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, x);
  }
}

// ---- warpgroup (wgmma) steps: the block's 4 warps x 16 heads = the 64 rows of one m64 tile ----
// Compressed key / value tiles of kSharedKeys rows sit in shared memory in wgmma's swizzled layout
// (wgmma.cuh), so the tensor cores read them through descriptors; Q (A of Q·Kᵀ) and P (A of P·V)
// stay in registers in the same fragment layout as the mma.sync path, so scores and outputs land in
// the same per-warp fragments and the per-warp softmax / head-mass code carries over.
constexpr int kSwRowBytes = 128;  // one 64-element region row

// Copies R rows of D elements (row r at src + r * stride; rows from `valid` on are zeroed) into a
// swizzled tile at shared address dst (1024-byte aligned) with 16-byte cp.async. All NT threads
// take part; a thread keeps one chunk column and rows 8 apart, so its swizzle is fixed.
// tid: this thread's index among the NT that copy (threadIdx.x for the whole block).
template <class T, int D, int NT, int R>
__device__ __forceinline__ void copyTileSwizzled(uint32_t dst, const T* src, size_t stride, int valid, int tid = threadIdx.x) {
  constexpr int per = D / 8, step = NT / per;  // 16-byte chunks per row; rows per pass
  static_assert(NT % per == 0 && step % 8 == 0, "whole rows, and a fixed row % 8 per thread");
  const int c = tid % per, r0 = tid / per;
  const T* p = src + (size_t)r0 * stride + c * 8;
  uint32_t d = dst + wg::swizzledChunk(R, r0, c);
#pragma unroll
  for (int r = r0; r < R; r += step, p += step * stride, d += step * kSwRowBytes) {
    if (r < valid) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(p));
    else asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(d), "r"(0));
  }
}

// Issue order of the two warpgroups' wgmma groups in an 8-warp block (flash-attention 3's ping-pong):
// warpgroup 0 issues a group, then 1, then 0 again, so the tensor cores finish one warpgroup's group
// before the other's and its softmax / mass work runs under the other's matrix work. Without it both
// issue at once (the block walks its tiles in step, one barrier per tile), both wait for both, and
// then both run the exponentials together while the tensor cores idle. Named barriers 1 and 2
// (0 is __syncthreads): warpgroup g waits on 1 + g before it issues and arrives on 2 - g after. A walk
// opens (warpgroup 1 gives 0 the first turn) and closes (0 takes 1's last hand-back), so the barriers
// are balanced; between the two, both warpgroups issue the same number of groups. Off (4-warp blocks,
// NSA_FWD_PINGPONG=0): every call does nothing.
struct WgTurns {
  bool on;
  int wg;  // this thread's warpgroup, 0 or 1
  __device__ __forceinline__ static void barSync(int id) { asm volatile("bar.sync %0, 256;\n" ::"r"(id) : "memory"); }
  __device__ __forceinline__ static void barArrive(int id) { asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory"); }
  __device__ __forceinline__ void open() const { if (on && wg == 1) barArrive(1); }
  __device__ __forceinline__ void take() const { if (on) barSync(1 + wg); }
  __device__ __forceinline__ void pass() const { if (on) barArrive(2 - wg); }
  __device__ __forceinline__ void close() const { if (on && wg == 0) barSync(1); }
};

// s[h] = Q·Kᵀ (unscaled) of this warp's 16 rows (A fragments qf) against keys 64h .. 64h+63 of the
// swizzled R-row tile at shared address kTile, h < H: one wgmma group of the warpgroup, waited for.
// afterIssue() runs once the group is issued and the turn passed, before the wait.
struct NoHook {
  __device__ __forceinline__ void operator()() const {}
};
template <class T, int D, int R, int H, class Hook = NoHook>
__device__ __forceinline__ void groupScores(const uint32_t (&qf)[D / 16][4], uint32_t kTile, float (&s)[H][8][4], const WgTurns& turns,
                                            Hook afterIssue = Hook()) {
  static_assert(kSharedKeys == 64 && H * 64 <= R, "m64n64 wgmmas over 64-key slices of the tile");
#pragma unroll
  for (int h = 0; h < H; h++) {
#pragma unroll
    for (int n = 0; n < 8; n++) s[h][n][0] = s[h][n][1] = s[h][n][2] = s[h][n][3] = 0.f;
    wg::fenceOperands(s[h]);
  }
  turns.take();
  wg::fence();
#pragma unroll
  for (int h = 0; h < H; h++)
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)  // features 16kk .. 16kk+15: region kk / 4, 32 bytes per step in it
      wg::mma64x64<false>(s[h], qf[kk], wg::descSw128(kTile + (kk >> 2) * R * kSwRowBytes + h * 64 * kSwRowBytes + (kk & 3) * 32), T());
  wg::commit();
  turns.pass();
  afterIssue();
  wg::wait<0>();
#pragma unroll
  for (int h = 0; h < H; h++) wg::fenceOperands(s[h]);
}

// P (probabilities in s, the m16n8 accumulator layout) packed as the A fragments of P·V: pa[j] holds keys
// 16j .. 16j+15.
template <class T, int NK>
__device__ __forceinline__ void packProbabilities(const float (&s)[NK / 8][4], uint32_t (&pa)[NK / 16][4]) {
#pragma unroll
  for (int j = 0; j < NK / 16; j++) {
    pa[j][0] = packF2<T>(s[2 * j][0], s[2 * j][1]);
    pa[j][1] = packF2<T>(s[2 * j][2], s[2 * j][3]);
    pa[j][2] = packF2<T>(s[2 * j + 1][0], s[2 * j + 1][1]);
    pa[j][3] = packF2<T>(s[2 * j + 1][2], s[2 * j + 1][3]);
  }
}

// The online-softmax step of warpSoftmaxPV (warp_attend.cuh) on scores s: updates the running max /
// sum, rescales O and leaves P packed as the A fragments of P·V (pa[j]: keys 16j .. 16j+15). Unlike
// there, a warp that sees no key of the tile still goes on, with P = 0: the P·V wgmma that follows
// takes every warp of the warpgroup.
// NK: keys in s (kSharedKeys, or 2 * kSharedKeys for the compressed branch's 128-key tiles, v15).
// Sel (v20): masked keys take a -inf score (one select per element) and every exponential runs,
// instead of a predicate per key around the max and the exponential: with the predicates live across
// the walk (bit masks in one register, in ncu's SASS of v19) the compiler issued each key's
// FFMA / MUFU / FADD in turn, each waiting on the one before (fixed-latency and MUFU stalls: ~1/3 of
// the kernel's warp samples at 64k). Same values in the same order: exp2(-inf) = 0 stands for the 0
// of a masked key, and max is exact in any order (bit-equal).
// Full (Sel only; v20's part (e), NSA_FWD_LEAN=12): where every key of the tile is visible to the warp's rows
// (visible must be an interval of keys: its two ends decide), no mask work at all; same values.
template <class T, int D, int NK = kSharedKeys, bool Sel = false, bool Full = false, class Visible>
__device__ __forceinline__ void groupSoftmax(float (&s)[NK / 8][4], float sl2, Visible visible, WarpRows<D>& st,
                                             uint32_t (&pa)[NK / 16][4]) {
  const int t4 = threadIdx.x & 3;
  if constexpr (Sel) {
    float mx[2][4];  // four partial maxima per row (independent chains)
#pragma unroll
    for (int c = 0; c < 4; c++) mx[0][c] = mx[1][c] = kNegInf;
    bool any = false;
    if (Full && __all_sync(0xffffffffu, visible(0) && visible(NK - 1))) {
      any = true;
#pragma unroll
      for (int n = 0; n < NK / 8; n++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
          mx[0][n & 3] = fmaxf(mx[0][n & 3], s[n][e]);
          mx[1][n & 3] = fmaxf(mx[1][n & 3], s[n][2 + e]);
        }
      }
    } else {
#pragma unroll
      for (int n = 0; n < NK / 8; n++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const bool v = visible(n * 8 + 2 * t4 + e);
          any |= v;
          s[n][e] = v ? s[n][e] : kNegInf;
          s[n][2 + e] = v ? s[n][2 + e] : kNegInf;
          mx[0][n & 3] = fmaxf(mx[0][n & 3], s[n][e]);
          mx[1][n & 3] = fmaxf(mx[1][n & 3], s[n][2 + e]);
        }
      }
    }
    if (__any_sync(0xffffffffu, any)) {
      float alpha[2], mArg[2];
#pragma unroll
      for (int i = 0; i < 2; i++) {
        const float tileMax = quadMax(fmaxf(fmaxf(mx[i][0], mx[i][1]), fmaxf(mx[i][2], mx[i][3]))) * sl2;
        const float mNew = st.m[i] == kNegInf ? tileMax : fmaxf(st.m[i], tileMax);
        alpha[i] = st.m[i] == kNegInf ? 0.f : exp2f(st.m[i] - mNew);
        st.m[i] = mNew;
        mArg[i] = mNew == kNegInf ? 0.f : mNew;  // a row with nothing visible yet: exp2(-inf - 0) = 0, not NaN
      }
      float rs[2] = {0.f, 0.f};
#pragma unroll
      for (int n = 0; n < NK / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int i = e >> 1;
          const float p = exp2f(fmaf(s[n][e], sl2, -mArg[i]));
          s[n][e] = p;
          rs[i] += p;
        }
      }
      st.carry(alpha, rs);
    } else {
#pragma unroll
      for (int n = 0; n < NK / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    }
    packProbabilities<T, NK>(s, pa);
    return;
  }
  bool vis[NK / 8][2];
  float mx[2] = {kNegInf, kNegInf};
  bool any = false;
#pragma unroll
  for (int n = 0; n < NK / 8; n++) {
#pragma unroll
    for (int e = 0; e < 2; e++) {
      vis[n][e] = visible(n * 8 + 2 * t4 + e);
      any |= vis[n][e];
      if (vis[n][e]) {
        mx[0] = fmaxf(mx[0], s[n][e]);
        mx[1] = fmaxf(mx[1], s[n][2 + e]);
      }
    }
  }
  if (__any_sync(0xffffffffu, any)) {
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const float tileMax = quadMax(mx[i]) * sl2;
      const float mNew = st.m[i] == kNegInf ? tileMax : fmaxf(st.m[i], tileMax);
      alpha[i] = st.m[i] == kNegInf ? 0.f : exp2f(st.m[i] - mNew);
      st.m[i] = mNew;
    }
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < NK / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int i = e >> 1;
        const float p = vis[n][e & 1] ? exp2f(fmaf(s[n][e], sl2, -st.m[i])) : 0.f;
        s[n][e] = p;
        rs[i] += p;
      }
    }
    st.carry(alpha, rs);
  } else {
#pragma unroll
    for (int n = 0; n < NK / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
  }
  packProbabilities<T, NK>(s, pa);
}

// O[:, 64dn ..] as one m64n64 accumulator (8 column tiles of the warp's fragment).
template <int D>
__device__ __forceinline__ float (&oPart(WarpRows<D>& st, int dn))[8][4] {
  return *reinterpret_cast<float(*)[8][4]>(&st.o[8 * dn][0]);
}
// Issues O += P·V (P from groupSoftmax, V the swizzled NK-row tile at vTile) as one group;
// afterIssue() runs once it is issued and the turn passed.
template <class T, int D, int NK = kSharedKeys, class Hook = NoHook>
__device__ __forceinline__ void issuePV(const uint32_t (&pa)[NK / 16][4], uint32_t vTile, WarpRows<D>& st, const WgTurns& turns,
                                        Hook afterIssue = Hook()) {
#pragma unroll
  for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(oPart(st, dn));
  turns.take();
  wg::fence();
#pragma unroll
  for (int j = 0; j < NK / 16; j++)  // keys 16j .. 16j+15: rows 16j.. of each 64-feature region
#pragma unroll
    for (int dn = 0; dn < D / 64; dn++)
      wg::mma64x64<true>(oPart(st, dn), pa[j], wg::descSw128(vTile + dn * NK * kSwRowBytes + j * 16 * kSwRowBytes), T());
  wg::commit();
  turns.pass();
  afterIssue();
}
template <int D>
__device__ __forceinline__ void fenceO(WarpRows<D>& st) {
#pragma unroll
  for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(oPart(st, dn));
}

// groupSoftmax, then P·V on the warpgroup, waited for.
template <class T, int D, int NK = kSharedKeys, bool Sel = false, bool Full = false, class Visible>
__device__ __forceinline__ void groupSoftmaxPV(float (&s)[NK / 8][4], uint32_t vTile, float sl2, Visible visible,
                                               WarpRows<D>& st, const WgTurns& turns) {
  uint32_t pa[NK / 16][4];
  groupSoftmax<T, D, NK, Sel, Full>(s, sl2, visible, st, pa);
  issuePV<T, D, NK>(pa, vTile, st, turns);
  wg::wait<0>();
  fenceO(st);
}
// Wg: compressed branch, selection scores and window branch through wgmma (sm_90a; W a multiple of
// 4), Q's A fragments in registers; otherwise mma.sync everywhere (v6). Tried and measured slower (BENCHMARKS.md
// v7): Q in shared memory (an SS wgmma) to free registers for software-pipelining tile t+1's Q·Kᵀ
// under tile t's softmax, and that pipelining with Q in registers.
// Swz: the selected rings' chunks unpadded and swizzled (v14; false: padded rows, v13). A template
// argument, not a flag: at run time both layouts in one kernel took the 8-warp D = 128 kernel past
// 255 registers (spills), where v13 has 254.
// Lean (cfwd4; 8-row wgmma blocks with swizzled rings, both TMA maps on, no A/B flag set): > 0
// compiles the default path only: the flags past NSA_FWD_SKIP's bits are known zeros (split on,
// no forced block-wide walk, no common list, no third stage, no v11 top-n / v14 sort / v9 gate
// loop, 128-key compressed tiles) and TMA is known on, so the kernel carries none of the
// alternatives' code or registers. Same arithmetic in the same order as Lean = 0 (bit-equal).
// (v18's Lean = 2 / 4, TMA for the split walks' full window / forced tiles, and 3 / 4, the split
// flag left a run-time one, measured slower and were removed.)
template <class T, int D, int W, bool Wg, bool Swz, int Lean = 0>
__global__ void __launch_bounds__(32 * W, 8 / W)
    nsaForwardPipeKernel(NSAForwardArgs a, const RowTile* tiles, int nbMax, int skip, const __grid_constant__ TmaMaps maps) {
  static_assert(Lean == 0 || (Wg && W == 8 && Swz), "lean kernels: 8-row wgmma blocks, swizzled rings");
  if constexpr (Lean > 0) skip = (skip & 7) | 8;  // only NSA_FWD_SKIP's bits stay run-time
  constexpr bool kSel = Lean >= 6;                     // v20 (a): masks as selects (groupSoftmax's Sel, addMass)
  constexpr bool kScoreRing = Lean >= 7;               // v20 (b): the score walk through four K buffers (below)
  constexpr bool kLateLoads = Lean >= 9;               // v20 (c): next tiles requested after this tile's Q·Kᵀ issue (below)
  constexpr bool kCmpFlow = Lean >= 11;                // v20 (d): the compressed walk without a block barrier per tile (below)
  constexpr bool kFull = Lean >= 12;                   // v20 (e): no mask work on fully visible tiles (groupSoftmax's Full, addMass)
  constexpr bool kCoalesced = Lean >= 13;              // v21: branch outputs and the gated sum in 16-byte pieces (store, below)
  constexpr bool kTopN25 = Lean >= 22;                 // v25: top-n's rounds by redux.sync, the split walks' first tiles after it (below)
  constexpr bool kOutPrefetch = Lean >= 27;           // v26: the gated sum's older branch outputs back into L2 at split phase 1 (below)
  constexpr bool kStamps = Lean == 28;                 // v26 with phase stamps (fwdStamps; diagnostic)
  auto stamp = [&](int slot, bool global = false) {
    if constexpr (kStamps) {
      if ((threadIdx.x & 127) == 0 && blockIdx.y == 0 && blockIdx.x < kStampBlocks) {
        unsigned long long v;
        if (global) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(v));
        else v = clock64();
        fwdStamps[blockIdx.x][threadIdx.x >> 7][slot] = v;
        if (slot == 0) {
          unsigned sm;
          asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
          fwdStamps[blockIdx.x][threadIdx.x >> 7][14] = sm;
        }
      }
    }
  };
  stamp(0, true);
  stamp(1);
  extern __shared__ __align__(16) char smemAll[];
  // wgmma's swizzled tiles need 1024-byte alignment (the launch adds the slack).
  char* smemRaw = smemAll + (Wg ? (1024u - (smemAddr(smemAll) & 1023u)) & 1023u : 0u);
  using L = Layout<D, W>;
  static_assert(!Wg || W % 4 == 0, "whole warpgroups");
  constexpr int kWarpsPerBlock = W, kBlockThreads = 32 * W;
  constexpr int ld = L::ld;
  const NSAConfigArgs& c = a.cfg;
  T* sK = reinterpret_cast<T*>(smemRaw);  // [2][tile]
  T* sV = sK + 2 * L::tile;               // [2][tile]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g4 = lane >> 2, t4 = lane & 3;
  const bool ring3 = skip & kFlagRing3;
  float* scoreBase = reinterpret_cast<float*>(smemRaw + L::tileBytes(sizeof(T)));
  float* scores = scoreBase + warp * (nbMax + kSharedKeys);
  float* mass = scores + nbMax;  // [kSharedKeys]
  int* lists = reinterpret_cast<int*>(scoreBase + L::scoreFloats(sizeof(T), nbMax, ring3));
  int* blk = lists + warp * (2 * c.n + 2);  // [n]
  int* len = blk + c.n;        // [n] tokens of each chosen block this row sees
  int* count = len + c.n;      // [1]
  // Block-wide: the chosen blocks every warp of the block reads ([0] = how many, then the blocks).
  int* common = lists + W * (2 * c.n + 2);
  // v16: the compressed branch's and the selection scores' full tiles come by TMA (tma.cuh), each
  // tile buffer with its mbarrier; tmaPhase bit b = the parity buffer b's next load completes.
  const uint32_t tmaBar = (smemAddr(common + c.n + 1) + 7u) & ~7u;
  const bool tmaOn = Wg && (Lean > 0 || maps.on);
  uint32_t tmaPhase = 0;
  if (tmaOn && threadIdx.x == 0) {
    for (int b = 0; b < L::kBarriers; b++) tma::initBarrier(tmaBar + 8 * b, 1);
    tma::fenceInit();
  }

  const int kvh = blockIdx.y, hq0 = kvh * kGroup;
  // tiles == nullptr: one sequence, block b takes its (gridDim.x - 1 - b)-th tile (latest positions first).
  const RowTile tile = tiles ? tiles[blockIdx.x] : RowTile{0, ((int)gridDim.x - 1 - (int)blockIdx.x) * kWarpsPerBlock};
  const SeqTable seq = seqTable(a.seq);
  const int qStart = seq.qStart[tile.s], qCount = seq.qStart[tile.s + 1] - qStart;
  const int kBase = seq.kBase[tile.s], cBase = seq.cBase[tile.s], pos0 = seq.pos0[tile.s];
  const int nq = min(kWarpsPerBlock, qCount - tile.first);
  const bool active = warp < nq;
  const int myIndex = tile.first + min(warp, nq - 1);  // idle warps shadow the last row, write nothing
  const int row = qStart + myIndex, pos = pos0 + myIndex;
  const int lastPos = pos0 + tile.first + nq - 1, firstPos = pos0 + tile.first;
  const float sl2 = c.scale * kLog2e;
  const WgTurns turns{Wg && W == 8 && !(skip & kFlagNoPingPong), warp / 4};
  const T* Q = static_cast<const T*>(a.q);
  const T* gates = static_cast<const T*>(a.gates);

  // Q: the W rows x 16 heads are W * 16 consecutive-by-row slices; stage them from K buffer 1 on.
  copyRowsAsync<T, D, kBlockThreads>(sK + L::tile, ld, W * kGroup, [&](int r) -> const T* {
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

  // Walks nTiles block-wide tiles, tile t = keys range(t).x .. range(t).y - 1 (at most kSharedKeys;
  // rows base + p of K and V; V may be null), double-buffered; body(tile, first key, K tile, V tile)
  // runs between two barriers.
  // mode = std::integral_constant<int, R>: R = 0, padded kSharedKeys-key tiles (sK, sV: mma.sync);
  // R > 0, R-key tiles in wgmma's swizzled layout (K buffers at 0 and 1, V buffers at 2 and 3 tiles
  // of R * D elements; V for R = kSharedKeys, or 2 * kSharedKeys in 8-row blocks), one barrier per tile; the body gets the
  // tiles' addresses as T*.
  // viaTma: K and V are maps.k / maps.v (the compressed keys); their full tiles load by TMA when on.
  auto walkTiles = [&](auto mode, int nTiles, auto&& range, int base, const void* Kp, const void* Vp, auto&& body, bool viaTma = false) {
    constexpr int R = decltype(mode)::value;
    const T* K = static_cast<const T*>(Kp);
    const T* V = static_cast<const T*>(Vp);
    if constexpr (R > 0) {
      static_assert(4 * kSharedKeys * D * 2 <= L::rows * L::ld * 2 && 2 * R * D * 2 <= L::rows * L::ld * 2, "tiles fit");
      constexpr int tileBytes = R * D * 2;
      const uint32_t at = smemAddr(smemRaw);
      // A tile of R keys by TMA (a last, shorter tile by cp.async: its rows past the keys must be zeros).
      auto byTma = [&](int t) {
        const int2 kr = range(t);
        return tmaOn && viaTma && kr.y - kr.x == R;
      };
      auto load = [&](int t, int buf) {
        const int2 kr = range(t);
        if (byTma(t)) {
          if (threadIdx.x == 0) {
            const uint32_t bar = tmaBar + 8 * buf;
            tma::arriveExpect(bar, (V ? 2 : 1) * tileBytes);
            tma::loadTile<D, R>(at + buf * tileBytes, &maps.k, kvh, base + kr.x, bar);
            if (V) tma::loadTile<D, R>(at + (2 + buf) * tileBytes, &maps.v, kvh, base + kr.x, bar);
          }
          return;
        }
        const size_t first = ((size_t)(base + kr.x) * c.H + kvh) * D, stride = (size_t)c.H * D;
        copyTileSwizzled<T, D, kBlockThreads, R>(at + buf * tileBytes, K + first, stride, kr.y - kr.x);
        if (V) copyTileSwizzled<T, D, kBlockThreads, R>(at + (2 + buf) * tileBytes, V + first, stride, kr.y - kr.x);
      };
      if (nTiles > 0) load(0, 0);
      cpAsyncCommit();
      turns.open();  // every body issues its wgmma groups in turns
      for (int t = 0; t < nTiles; t++) {
        const int buf = t & 1;
        cpAsyncWait<0>();           // tile t has landed
        if (byTma(t)) {
          tma::wait(tmaBar + 8 * buf, (tmaPhase >> buf) & 1u);
          tmaPhase ^= 1u << buf;
        }
        wg::fenceProxyAsync();      // this thread's tile writes, before the tensor cores read them
        __syncthreads();            // ... and everyone's; every warp is done with tile t - 1's buffers
        if (t + 1 < nTiles) load(t + 1, buf ^ 1);
        cpAsyncCommit();
        body(t, range(t).x, reinterpret_cast<T*>(smemRaw + buf * tileBytes), reinterpret_cast<T*>(smemRaw + (2 + buf) * tileBytes));
      }
      turns.close();
      __syncthreads();
      return;
    }
    auto load = [&](int t, int buf) {
      const int2 kr = range(t);
      const int k0 = kr.x, end = kr.y;
      copyRowsAsync<T, D, kBlockThreads>(sK + buf * L::tile, ld, kSharedKeys, [&](int r) -> const T* {
        return k0 + r < end ? K + ((size_t)(base + k0 + r) * c.H + kvh) * D : nullptr;
      });
      if (V)
        copyRowsAsync<T, D, kBlockThreads>(sV + buf * L::tile, ld, kSharedKeys, [&](int r) -> const T* {
          return k0 + r < end ? V + ((size_t)(base + k0 + r) * c.H + kvh) * D : nullptr;
        });
    };
    walkDoubleBuffered(nTiles, load, [&](int t, int buf) { body(t, range(t).x, sK + buf * L::tile, sV + buf * L::tile); });
  };
  // Keys first .. first + total - 1 in consecutive tiles (of R keys, kSharedKeys when R = 0).
  auto walkShared = [&](auto mode, int first, int total, int base, const void* Kp, const void* Vp, auto&& body, bool viaTma = false) {
    constexpr int R = decltype(mode)::value, keys = R > 0 ? R : kSharedKeys;
    walkTiles(mode, (total + keys - 1) / keys, [&](int t) { return make_int2(first + t * keys, min(first + total, first + (t + 1) * keys)); },
              base, Kp, Vp, body, viaTma);
  };

  const size_t oAt = ((size_t)row * c.HQ + hq0) * D;  // this warp's 16 heads
  // Stores a finished branch: normalised output (T) and log2-domain lse of both rows of the thread.
  auto store = [&](WarpRows<D>& st, int branch, void* dst, float* oFloat) {
    float lse[2], inv[2];
    st.finish(lse, inv);
    if constexpr (kCoalesced) {
      // v21: each row's 8-column pieces by quad transposes, one 16-byte store per lane and piece
      // (fragment-layout 4-byte stores fill half of each 32-byte sector they touch: ncu, 64k).
#pragma unroll
      for (int i = 0; i < 2; i++) {
        const int r = g4 + 8 * i;
#pragma unroll
        for (int m = 0; m < D / 32; m++) {
          uint32_t w[4];
#pragma unroll
          for (int j = 0; j < 4; j++) {
            const int n = 4 * m + j;
            const float x = st.o[n][2 * i] * inv[i], y = st.o[n][2 * i + 1] * inv[i];
            if (oFloat) { oFloat[n * 4 + 2 * i] = x; oFloat[n * 4 + 2 * i + 1] = y; }
            w[j] = packF2<T>(x, y);
          }
          quadTranspose(w, t4);
          if (active) *reinterpret_cast<uint4*>(static_cast<T*>(dst) + oAt + (size_t)r * D + (4 * m + t4) * 8) = make_uint4(w[0], w[1], w[2], w[3]);
        }
        if (active && t4 == 0) a.lse[((size_t)row * c.HQ + hq0 + r) * 3 + branch] = lse[i];
      }
    } else {
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
    }
  };

  stamp(2);
  // ---- compressed branch: keys 0 .. nc(pos) - 1 ----
  const int nc = compressedCount(pos + 1, c.l, c.d), ncAll = compressedCount(lastPos + 1, c.l, c.d);
  WarpRows<D> st;
  st.reset();
  // v15 (8-row wgmma blocks): 128-key compressed tiles, K and V double-buffered in the tile region
  // (4 x 32 KB at D = 128): one barrier, one Q·Kᵀ group and one P·V group per 128 keys instead of
  // per 64, so half the block-wide waits and turns, and twice the bytes in flight per load.
  // 4-warp blocks keep 64-key tiles (their tile region holds 64 KB at D = 128).
  constexpr bool kCmp128Fits = Wg && W == 8 && 4 * 2 * kSharedKeys * D * 2 <= L::tileBytes(2);
  if constexpr (kLateLoads) {
    // v20 (Lean >= 9): thread 0 requests tile t + 1 (K and V, all by TMA: rows past the tensor's end
    // read as zeros, rows past a row's keys get P = 0) once its warpgroup has issued tile t's Q·Kᵀ,
    // instead of before it: in v19 the eight bulk copies' issue delayed warp 0, so warpgroup 0's
    // turn and with it warpgroup 1's (ncu, 64k: the turn wait before Q·Kᵀ ~1/8 of the walk's warp
    // samples). The __syncthreads at the top of tile t still frees tile t - 1's buffers.
    constexpr int R = 2 * kSharedKeys, kTile = R * D * 2;
    const uint32_t at = smemAddr(smemRaw);
    const int nTiles = (ncAll + R - 1) / R;
    auto load = [&](int t) {
      const int buf = t & 1;
      const uint32_t bar = tmaBar + 8 * buf;
      tma::arriveExpect(bar, 2 * kTile);
      tma::loadTile<D, R>(at + buf * kTile, &maps.k, kvh, cBase + t * R, bar);
      tma::loadTile<D, R>(at + (2 + buf) * kTile, &maps.v, kvh, cBase + t * R, bar);
    };
    wg::fenceProxyAsync();  // the Q rows' generic accesses of these bytes, before the copy engine writes them
    __syncthreads();
    if constexpr (kCmpFlow) {
      // v20 (d), Lean >= 11: K and V of a tile complete separate mbarriers (K on the tile barriers, V on two of
      // the spare ones), and no block barrier separates the tiles: thread 0 requests K(t + 1) after
      // its warpgroup issued Q·Kᵀ(t) and V(t + 1) after it issued P·V(t). The turns make both safe:
      // warpgroup 0 takes the turn for Q·Kᵀ(t) only after warpgroup 1 issued P·V(t - 1), i.e. after
      // its Q·Kᵀ(t - 1) finished reading K(t - 1); and the turn for P·V(t) only after warpgroup 1
      // issued Q·Kᵀ(t), i.e. after its P·V(t - 1) finished reading V(t - 1). So one warpgroup's
      // softmax runs under the other's products across tiles too, not only within one.
      const uint32_t vBar = tmaBar + 8 * (2 + 2 * W);  // + 8 * buffer
      uint32_t vPhase = 0;
      auto loadK = [&](int t) {
        const uint32_t bar = tmaBar + 8 * (t & 1);
        tma::arriveExpect(bar, kTile);
        tma::loadTile<D, R>(at + (t & 1) * kTile, &maps.k, kvh, cBase + t * R, bar);
      };
      auto loadV = [&](int t) {
        const uint32_t bar = vBar + 8 * (t & 1);
        tma::arriveExpect(bar, kTile);
        tma::loadTile<D, R>(at + (2 + (t & 1)) * kTile, &maps.v, kvh, cBase + t * R, bar);
      };
      if (threadIdx.x == 0 && nTiles > 0) {
        loadK(0);
        loadV(0);
      }
      turns.open();
      for (int t = 0; t < nTiles; t++) {
        const int buf = t & 1;
        tma::wait(tmaBar + 8 * buf, (tmaPhase >> buf) & 1u);
        tmaPhase ^= 1u << buf;
        float s[2][kSharedKeys / 8][4];
        groupScores<T, D, R, 2>(qf, at + buf * kTile, s, turns, [&]() {
          if (threadIdx.x == 0 && t + 1 < nTiles) loadK(t + 1);
        });
        const int k0 = t * R;
        uint32_t pa[R / 16][4];
        groupSoftmax<T, D, R, kSel, kFull>(reinterpret_cast<float(&)[R / 8][4]>(s), sl2, [&](int j) { return k0 + j < nc; }, st, pa);
        tma::wait(vBar + 8 * buf, (vPhase >> buf) & 1u);
        vPhase ^= 1u << buf;
        issuePV<T, D, R>(pa, at + (2 + buf) * kTile, st, turns, [&]() {
          if (threadIdx.x == 0 && t + 1 < nTiles) loadV(t + 1);
        });
        wg::wait<0>();
        fenceO(st);
      }
      turns.close();
      __syncthreads();
    } else {
      if (threadIdx.x == 0 && nTiles > 0) load(0);
      turns.open();
      for (int t = 0; t < nTiles; t++) {
        const int buf = t & 1;
        tma::wait(tmaBar + 8 * buf, (tmaPhase >> buf) & 1u);
        tmaPhase ^= 1u << buf;
        __syncthreads();  // every warp is done with tile t - 1's buffers
        float s[2][kSharedKeys / 8][4];
        groupScores<T, D, R, 2>(qf, at + buf * kTile, s, turns, [&]() {
          if (threadIdx.x == 0 && t + 1 < nTiles) load(t + 1);
        });
        const int k0 = t * R;
        groupSoftmaxPV<T, D, R, kSel>(reinterpret_cast<float(&)[R / 8][4]>(s), at + (2 + buf) * kTile, sl2, [&](int j) { return k0 + j < nc; },
                                      st, turns);
      }
      turns.close();
      __syncthreads();
    }
  } else if (kCmp128Fits && !(skip & kFlagCmp64)) {
    if constexpr (kCmp128Fits) {
      walkShared(std::integral_constant<int, 2 * kSharedKeys>(), 0, ncAll, cBase, a.kCmp, a.vCmp, [&](int, int k0, const T* k, const T* v) {
        float s[2][kSharedKeys / 8][4];  // keys 64h + 8n + ..: as one [16][4] array, key 8n' + ..
        groupScores<T, D, 2 * kSharedKeys, 2>(qf, smemAddr(k), s, turns);
        groupSoftmaxPV<T, D, 2 * kSharedKeys, kSel>(reinterpret_cast<float(&)[2 * kSharedKeys / 8][4]>(s), smemAddr(v), sl2,
                                              [&](int j) { return k0 + j < nc; }, st, turns);
      }, true);
    }
  } else
  walkShared(std::integral_constant<int, Wg ? kSharedKeys : 0>(), 0, ncAll, cBase, a.kCmp, a.vCmp, [&](int, int k0, const T* k, const T* v) {
    if constexpr (Wg) {
      float s[1][kSharedKeys / 8][4];
      groupScores<T, D, kSharedKeys, 1>(qf, smemAddr(k), s, turns);
      groupSoftmaxPV<T, D>(s[0], smemAddr(v), sl2, [&](int j) { return k0 + j < nc; }, st, turns);
    } else {
      warpAttend<T, D, kSharedKeys>(qf, k, v, ld, sl2, [&](int j) { return k0 + j < nc; }, st);
    }
  }, true);
  float cmpLse[2];
  {
    float inv[2];
    st.finish(cmpLse, inv);
  }
  store(st, 0, a.oCmp, nullptr);

  stamp(3);
  // ---- selection scores and top-n ----
  const int cur = pos / c.ls, nb = cur + 1;
  const bool select = a.blockIn == nullptr;

  // The forced blocks (Wg, the default; v9): every row of the block chose the initial blocks and,
  // when the rows share their current block, the same local blocks: keys [0, aEnd) and
  // [bStart, lastPos] of kSlc / vSlc. The block reads them once, in swizzled 64-key tiles walked on
  // wgmma (as the window branch), each warp masking keys past its position; the per-warp rings skip
  // them. Their first tiles are loaded before top-n, which hides the loads. The selected branch is
  // bound by L2 bytes (BENCHMARKS.md v6): a row's 3 forced blocks of 16 are read once per block.
  // Not with supplied blockIndices (nothing is forced there) nor NSA_FWD_COMMON=1 (the common walk below).
  const int cur0 = firstPos / c.ls;
  // v13 split (below): each warpgroup walks its own rows' forced blocks instead.
  const bool split = Wg && W == 8 && (skip & 8) && !(skip & kFlagNoSplit);
  const bool forced = Wg && !split && select && (skip & 8) && !(skip & (2 | 16)) && cur0 == lastPos / c.ls;
  const int nbInit = min(c.initialBlocks, cur0 + 1), localFirst = max(0, cur0 - c.localBlocks + 1);
  const int aEnd = min(nbInit * c.ls, lastPos + 1);
  const int bStart = c.localBlocks > 0 ? max(localFirst * c.ls, aEnd) : lastPos + 1;
  const int aTiles = (aEnd + kSharedKeys - 1) / kSharedKeys;
  const int forcedTiles = forced ? aTiles + (lastPos + 1 - bStart + kSharedKeys - 1) / kSharedKeys : 0;
  auto forcedRange = [&](int t) {
    if (t < aTiles) return make_int2(t * kSharedKeys, min(aEnd, (t + 1) * kSharedKeys));
    const int x = bStart + (t - aTiles) * kSharedKeys;
    return make_int2(x, min(lastPos + 1, x + kSharedKeys));
  };
  // kForcedPairs (K, V) tile pairs fit the tile region (2 for 4 warps, 4 for 8); tile t takes pair t % kForcedPairs.
  constexpr int kForcedTile = kSharedKeys * D * 2;
  constexpr int kForcedPairs = L::tileBytes(2) / (2 * kForcedTile) >= 4 ? 4 : 2;
  static_assert(L::tileBytes(2) >= 2 * 2 * kForcedTile, "two pairs at least");
  auto loadForced = [&](int t) {
    const int2 kr = forcedRange(t);
    const size_t first = ((size_t)(kBase + kr.x) * c.H + kvh) * D, stride = (size_t)c.H * D;
    const uint32_t at = smemAddr(smemRaw) + 2 * (t % kForcedPairs) * kForcedTile;
    copyTileSwizzled<T, D, kBlockThreads, kSharedKeys>(at, static_cast<const T*>(a.kSlc) + first, stride, kr.y - kr.x);
    copyTileSwizzled<T, D, kBlockThreads, kSharedKeys>(at + kForcedTile, static_cast<const T*>(a.vSlc) + first, stride, kr.y - kr.x);
  };

  // v13 split (8-row wgmma blocks without the common walk; NSA_FWD_SPLIT=0 runs v12): after top-n
  // the two warpgroups part. Warpgroup 0 walks its 4 rows' window, then their selected blocks;
  // warpgroup 1 the selected blocks first, then the window. The selected blocks' gathers are bound
  // by L2 (BENCHMARKS.md v11, forward v12), the window walk by the tensor cores and exponentials, so
  // each warpgroup's window runs under the other's gathers instead of after them. Each warpgroup
  // reads its own rows' forced blocks and window into its half of the tile region (which its rings
  // take), loading with its 128 threads behind named barrier 3 + wg; window tiles start where the
  // block-wide walk's do, so a row sees the same keys in the same tiles.
  const int wg = warp / 4;
  const int wgFirst = pos0 + tile.first + min(4 * wg, nq - 1), wgLast = pos0 + tile.first + min(4 * wg + 3, nq - 1);
  const int wCur0 = wgFirst / c.ls;
  const bool wForced = split && select && !(skip & (2 | 16)) && wCur0 == wgLast / c.ls;
  const int wNbInit = min(c.initialBlocks, wCur0 + 1), wLocalFirst = max(0, wCur0 - c.localBlocks + 1);
  const int wAEnd = min(wNbInit * c.ls, wgLast + 1);
  const int wBStart = c.localBlocks > 0 ? max(wLocalFirst * c.ls, wAEnd) : wgLast + 1;
  const int wATiles = (wAEnd + kSharedKeys - 1) / kSharedKeys;
  const int wForcedTiles = wForced ? wATiles + (wgLast + 1 - wBStart + kSharedKeys - 1) / kSharedKeys : 0;
  auto wForcedRange = [&](int t) {
    if (t < wATiles) return make_int2(t * kSharedKeys, min(wAEnd, (t + 1) * kSharedKeys));
    const int x = wBStart + (t - wATiles) * kSharedKeys;
    return make_int2(x, min(wgLast + 1, x + kSharedKeys));
  };
  const int wsBlock = max(0, firstPos - c.window + 1), wsWg = max(0, wgFirst - c.window + 1);
  const int wWinFrom = wsBlock + (wsWg - wsBlock) / kSharedKeys * kSharedKeys;
  const int wWinTiles = (skip & 4) ? 0 : (wgLast + 1 - wWinFrom + kSharedKeys - 1) / kSharedKeys;
  auto wWinRange = [&](int t) {
    const int x = wWinFrom + t * kSharedKeys;
    return make_int2(x, min(wgLast + 1, x + kSharedKeys));
  };
  constexpr int kPairBytes = 2 * kSharedKeys * D * 2;  // a K and a V tile of kSharedKeys rows (16-bit T)
  constexpr int kHalfBytes = L::rows / 2 * ld * 2;     // a warpgroup's half of the tile region: its 4 rings
  static_assert(W != 8 || (2 * kPairBytes <= kHalfBytes && kHalfBytes % 1024 == 0), "two tile pairs in each half");
  const uint32_t half = smemAddr(smemRaw) + wg * kHalfBytes;
  auto wgSync = [&]() { asm volatile("bar.sync %0, 128;\n" ::"r"(3 + wg) : "memory"); };
  // A 64-key pair by cp.async with the warpgroup's 128 threads (rows past the keys zeroed). (v18's
  // TMA for full pairs lost twice, BENCHMARKS.md v17 / v19; removed.)
  auto wgLoad = [&](int2 kr, int buf, const void* Kp, const void* Vp) {
    const size_t first = ((size_t)(kBase + kr.x) * c.H + kvh) * D, stride = (size_t)c.H * D;
    const uint32_t at = half + buf * kPairBytes;
    const int tid = threadIdx.x & 127;
    copyTileSwizzled<T, D, 128, kSharedKeys>(at, static_cast<const T*>(Kp) + first, stride, kr.y - kr.x, tid);
    copyTileSwizzled<T, D, 128, kSharedKeys>(at + kPairBytes / 2, static_cast<const T*>(Vp) + first, stride, kr.y - kr.x, tid);
  };
  // Walks nTiles K / V tile pairs (tile t = keys range(t)) through this warpgroup's half,
  // double-buffered, on wgmma without turns; tile 0 was requested before top-n when preloaded.
  const WgTurns solo{false, wg};
  auto wgWalk = [&](int nTiles, auto&& range, const void* Kp, const void* Vp, bool preloaded, auto&& visible) {
    if (!preloaded && nTiles > 0) wgLoad(range(0), 0, Kp, Vp);
    cpAsyncCommit();
    for (int t = 0; t < nTiles; t++) {
      const int buf = t & 1;
      cpAsyncWait<0>();  // tile t has landed
      wg::fenceProxyAsync();  // this thread's tile writes, before the tensor cores read them
      wgSync();               // ... and the warpgroup's; it is done with tile t - 1's pair
      // v20 (Lean >= 9): the next pair's copies issue under this tile's Q·Kᵀ instead of before it.
      auto next = [&]() {
        if (t + 1 < nTiles) wgLoad(range(t + 1), buf ^ 1, Kp, Vp);
        cpAsyncCommit();
      };
      if constexpr (!kLateLoads) next();
      const int2 kr = range(t);
      const uint32_t at = half + buf * kPairBytes;
      float sc[1][kSharedKeys / 8][4];
      if constexpr (kLateLoads) groupScores<T, D, kSharedKeys, 1>(qf, at, sc, solo, next);
      else groupScores<T, D, kSharedKeys, 1>(qf, at, sc, solo);
      // Rows from kr.y on are zeros, never visible: a forced tile ends where the initial blocks do (< 64 keys when l' = 32).
      groupSoftmaxPV<T, D, kSharedKeys, kSel, kFull>(sc[0], at + kPairBytes / 2, sl2,
                                                     [&](int j) { return kr.x + j < kr.y && visible(kr.x + j); }, st, solo);
    }
    wgSync();  // the warpgroup is done with its half
  };
  // The window of this warp's row on its warpgroup's rows' tiles, stored.
  auto wgWindow = [&](bool preloaded) {
    if constexpr (Wg && W == 8) {
      st.reset();
      const int ws = max(0, pos - c.window + 1);
      wgWalk(wWinTiles, wWinRange, a.kWin, a.vWin, preloaded, [&](int key) { return key >= ws && key <= pos; });
      store(st, 2, a.oWin, nullptr);
    }
  };

  if (select) {
    for (int j = lane; j < nb; j += 32) scores[j] = 0.f;
    __syncwarp();
    if (!(skip & 1)) {
      const int perCmp = c.l / c.d, perSel = c.ls / c.d;
      // Adds the selection mass of keys i0 .. i0 + 63 (scores s, a 64-key slice) to the block scores.
      auto addMass = [&](int i0, float (&s)[kSharedKeys / 8][4]) {
        // Probability mass per key over the 16 heads: rows g and g+8 here, then a reduce-scatter over
        // the 8 row groups (lanes xor 16, 8, 4), each step keeping half of the values: afterwards this
        // thread holds keys g*8 + 2t + {0, 1}, summed in a fixed order.
        static_assert(kSharedKeys == 64, "the reduce-scatter below is written for 64-key tiles");
        float v[16];  // [n * 2 + e]
        if (kFull && i0 + kSharedKeys <= nc) {  // every key of the slice visible (nc: this warp's row): no masks
#pragma unroll
          for (int n = 0; n < kSharedKeys / 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++)
              v[2 * n + e] = exp2f(fmaf(s[n][e], sl2, -cmpLse[0])) + exp2f(fmaf(s[n][2 + e], sl2, -cmpLse[1]));
        } else
#pragma unroll
        for (int n = 0; n < kSharedKeys / 8; n++) {
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const bool vis = i0 + n * 8 + 2 * t4 + e < nc;
            if constexpr (kSel) {  // v20: a masked key's exponent is -inf (exp2 = 0): no predicate around the exponentials
              const float x0 = fmaf(s[n][e], sl2, -cmpLse[0]), x1 = fmaf(s[n][2 + e], sl2, -cmpLse[1]);
              v[2 * n + e] = exp2f(vis ? x0 : kNegInf) + exp2f(vis ? x1 : kNegInf);
            } else {
              v[2 * n + e] = vis ? exp2f(fmaf(s[n][e], sl2, -cmpLse[0])) + exp2f(fmaf(s[n][2 + e], sl2, -cmpLse[1])) : 0.f;
            }
          }
        }
        scatterHalf<8>(v, g4 & 4, 16);
        scatterHalf<4>(v, g4 & 2, 8);
        scatterHalf<2>(v, g4 & 1, 4);
        const int i1 = min(nc, i0 + kSharedKeys) - 1;
        if (Lean == 5 && perCmp == 2 && perSel == 4) {
          // Lean = 5: the block sums below from the reduce-scatter's registers by shuffles (key k sits
          // in lane k / 2, v[k % 2]) instead of through the mass buffer and a __syncwarp; the same
          // values in the same expression, so bit-equal.
          const float m0 = __shfl_sync(0xffffffffu, v[0], 2 * lane & 31), m1 = __shfl_sync(0xffffffffu, v[1], 2 * lane & 31);
          const float m2 = __shfl_sync(0xffffffffu, v[0], (2 * lane + 1) & 31), m3 = __shfl_sync(0xffffffffu, v[1], (2 * lane + 1) & 31);
          const float mp = __shfl_sync(0xffffffffu, v[1], (2 * lane - 1) & 31);
          const int j = i0 / 4 + lane;
          if (i1 >= i0 && lane <= kSharedKeys / 4 && j <= cur) {
            float acc = lane > 0 ? mp : 0.f;
            if (lane < kSharedKeys / 4) acc += 2.f * (m0 + m1 + m2) + m3;
            scores[j] += acc;
          }
          __syncwarp();
          return;
        }
        mass[g4 * 8 + 2 * t4] = v[0];
        mass[g4 * 8 + 2 * t4 + 1] = v[1];
        __syncwarp();
        if (i1 >= i0 && perCmp == 2 && perSel == 4) {
          // l = 2d, l' = 4d (the paper's and the tests' ratios): block j takes keys 4j .. 4j+2 twice
          // and keys 4j-1, 4j+3 once; lane b takes tile block b (lane 16: key 63 into the next block).
          const int j = i0 / 4 + lane;
          if (lane <= kSharedKeys / 4 && j <= cur) {
            const int b = 4 * lane;
            float acc = b > 0 ? mass[b - 1] : 0.f;
            if (lane < kSharedKeys / 4) acc += 2.f * (mass[b] + mass[b + 1] + mass[b + 2]) + mass[b + 3];
            scores[j] += acc;
          }
        } else if (i1 >= i0) {
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
      };
      if constexpr (kScoreRing) {
        // v20 (Lean >= 7): the score walk needs K only, so the tile region holds four 128-key K tiles
        // (the V buffers are free): thread 0 requests tile t + 2 by TMA while the block works on t, and
        // no block-wide barrier separates the tiles. v19 met at a __syncthreads per tile, so both
        // warpgroups finished their mass work before either issued the next Q·Kᵀ and the tensor cores
        // idled through it (ncu, 64k: that barrier, the turn and the wgmma waits ~1/5 of the walk's
        // warp samples). Now the turns alone order the warpgroups, as flash-attention 3's ping-pong:
        // one's Q·Kᵀ runs under the other's mass work. Buffer reuse: thread 0 loads into tile t - 2's
        // buffer only after its warpgroup took the turn for tile t, which warpgroup 1 passes after
        // issuing t - 1, i.e. after waiting for its own t - 2 group. The last, shorter tile comes by
        // TMA as well (rows past the tensor's end read as zeros; rows past this row's keys are masked).
        constexpr int R = 2 * kSharedKeys, kTile = R * D * 2, kBufs = 4;
        static_assert(kBufs * kTile <= L::tileBytes(2), "four K tiles fit the tile region");
        const uint32_t at = smemAddr(smemRaw), bar0 = tmaBar + 8 * (2 + 2 * W + 4);
        const int nTiles = (ncAll + R - 1) / R;
        auto load = [&](int t) {
          const uint32_t bar = bar0 + 8 * (t % kBufs);
          tma::arriveExpect(bar, kTile);
          tma::loadTile<D, R>(at + (t % kBufs) * kTile, &maps.k, kvh, cBase + t * R, bar);
        };
        if (threadIdx.x == 0)
          for (int t = 0; t < min(2, nTiles); t++) load(t);
        uint32_t phase = 0;  // bit b: the parity buffer b's next tile completes
        turns.open();
        for (int t = 0; t < nTiles; t++) {
          const int b = t % kBufs;
          tma::wait(bar0 + 8 * b, (phase >> b) & 1u);
          phase ^= 1u << b;
          float s[2][kSharedKeys / 8][4];
          groupScores<T, D, R, 2>(qf, at + b * kTile, s, turns, [&]() {
            if (threadIdx.x == 0 && t + 2 < nTiles) load(t + 2);
          });
          addMass(t * R, s[0]);
          addMass(t * R + kSharedKeys, s[1]);
        }
        turns.close();
        __syncthreads();
      } else if constexpr (Wg) {  // 128-key tiles (the compressed output registers are free here): 2 slices per wait
        walkShared(std::integral_constant<int, 2 * kSharedKeys>(), 0, ncAll, cBase, a.kCmp, nullptr, [&](int, int i0, const T* k, const T*) {
          float s[2][kSharedKeys / 8][4];
          groupScores<T, D, 2 * kSharedKeys, 2>(qf, smemAddr(k), s, turns);
          addMass(i0, s[0]);
          addMass(i0 + kSharedKeys, s[1]);
        }, true);
      } else {
        walkShared(std::integral_constant<int, 0>(), 0, ncAll, cBase, a.kCmp, nullptr, [&](int, int i0, const T* k, const T*) {
          float s[kSharedKeys / 8][4];
          warpScores<T, D, kSharedKeys>(qf, k, ld, s);
          addMass(i0, s);
        });
      }
    }
    stamp(4);
    // The tile buffers are free: the forced blocks' / split walks' first tiles load during top-n; in
    // v25 after it, so their cp.async issue no longer competes with top-n's shuffles and shared-memory
    // reads (alone: 34.98-35.15 ms at 64k against 35.06-35.20 for v21, session 15's call 3).
    auto firstTiles = [&]() {
      if constexpr (Wg) {
        if (forced) {
          for (int t = 0; t < min(kForcedPairs, forcedTiles); t++) loadForced(t);
          cpAsyncCommit();
        }
        if constexpr (W == 8) {
          if (split) {  // each warpgroup's first tile: window (warpgroup 0) or forced blocks (1)
            if (wg == 0 && wWinTiles > 0) wgLoad(wWinRange(0), 0, a.kWin, a.vWin);
            if (wg == 1 && wForcedTiles > 0) wgLoad(wForcedRange(0), 0, a.kSlc, a.vSlc);
            cpAsyncCommit();
          }
        }
      }
    };
    if (!kTopN25) firstTiles();
    stamp(5);
    // Forced blocks, then the highest scores (chosen ones marked -2 so they never win again).
    if (lane == 0) {
      int k = 0;
      for (int j = 0; j < c.initialBlocks && j < nb; j++) { scores[j] = -2.f; blk[k++] = j; }
      for (int j = max(0, cur - c.localBlocks + 1); j <= cur; j++)
        if (scores[j] != -2.f) { scores[j] = -2.f; blk[k++] = j; }
      *count = k;
    }
    __syncwarp();
    stamp(6);
    const int want = min(c.n, nb);
    // The warp's best of (score, lowest index) pairs: lanes' candidates in, the winner in every lane.
    auto warpBest = [&](float& best, int& bestJ) {
      if constexpr (kTopN25) {
        // v25: two redux.sync instead of five rounds of two shuffles each (stamps at 64k: top-n's
        // rounds took 7.6k-13.1k cycles per block, now 4.5k-10.0k). Candidates are block masses >= +0
        // or -1 (none): key = bits + 1 orders them as the float compare does (0 for none), and the
        // lowest index wins a tie, so the same blocks in the same order.
        const unsigned key = best >= 0.f ? __float_as_uint(best) + 1u : 0u;
        const unsigned top = __reduce_max_sync(0xffffffffu, key);
        bestJ = __reduce_min_sync(0xffffffffu, key == top ? bestJ : INT_MAX);
        best = top ? __uint_as_float(top - 1u) : -1.f;
      } else {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
          const float ob = __shfl_xor_sync(0xffffffffu, best, o);
          const int oj = __shfl_xor_sync(0xffffffffu, bestJ, o);
          if (ob > best || (ob == best && oj < bestJ)) { best = ob; bestJ = oj; }
        }
      }
    };
    if (!(skip & kFlagV11TopN)) {
      // v12: each lane keeps the best two of its own blocks (j = lane mod 32; by score, then lowest
      // index), so a round is one warp reduction: the winning lane moves its second up, and rescans
      // its blocks only when its second was already used. v11 rescanned all nb scores in each of the
      // n - forced rounds (with the lists below, 8.5 % of the kernel's warp samples at 64k). Same
      // blocks in the same order: a lane's blocks are scanned in index order with strict compares.
      float b1, b2;
      int j1, j2;
      auto scan = [&]() {
        b1 = b2 = -1.f;  // chosen blocks hold -2: never taken again
        j1 = j2 = INT_MAX;
        for (int j = lane; j < nb; j += 32) {
          const float v = scores[j];
          if (v > b1) { b2 = b1; j2 = j1; b1 = v; j1 = j; }
          else if (v > b2) { b2 = v; j2 = j; }
        }
      };
      scan();
      bool known2 = true;  // (b2, j2) is this lane's second best
      for (int k = *count; k < want; k++) {
        float best = b1;
        int bestJ = j1;
        warpBest(best, bestJ);
        if (lane == 0) blk[k] = bestJ;
        if (j1 == bestJ && bestJ != INT_MAX) {  // this lane's block won
          scores[bestJ] = -2.f;
          if (known2) { b1 = b2; j1 = j2; known2 = false; }
          else { scan(); known2 = true; }
        }
      }
      __syncwarp();
    } else {
      for (int k = *count; k < want; k++) {
        float best = -1.f;
        int bestJ = INT_MAX;
        for (int j = lane; j < nb; j += 32)
          if (scores[j] > best) { best = scores[j]; bestJ = j; }
        warpBest(best, bestJ);
        if (lane == 0) { scores[bestJ] = -2.f; blk[k] = bestJ; }
        __syncwarp();
      }
    }
    stamp(7);
    const int chosen = max(*count, want);  // forced blocks may exceed n, as in selectTopN
    if (!(skip & kFlagInsertionSort) && chosen <= 64) {
      // v15: ascending order by rank, lane k placing block k (and k + 32): its rank is the number of
      // smaller blocks (earlier equal ones too, were there any). v14's insertion sort in lane 0 was a
      // chain of dependent shared-memory round trips (~2 % of the kernel's warp samples at 64k).
      int v[2], rank[2] = {0, 0};
#pragma unroll
      for (int r = 0; r < 2; r++) v[r] = lane + 32 * r < chosen ? blk[lane + 32 * r] : INT_MAX;
      for (int q = 0; q < chosen; q++) {
        const int b = blk[q];
#pragma unroll
        for (int r = 0; r < 2; r++) rank[r] += b < v[r] || (b == v[r] && q < lane + 32 * r);
      }
      __syncwarp();
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const int k = lane + 32 * r;
        if (k < chosen) blk[rank[r]] = v[r];
        else if (k < c.n) blk[k] = -1;
      }
    } else if (lane == 0) {
      for (int i = 1; i < chosen; i++) {
        const int v = blk[i];
        int k = i - 1;
        while (k >= 0 && blk[k] > v) { blk[k + 1] = blk[k]; k--; }
        blk[k + 1] = v;
      }
      for (int i = chosen; i < c.n; i++) blk[i] = -1;
    }
    stamp(8);
    if (kTopN25) firstTiles();
  } else {
    for (int k = lane; k < c.n; k += 32) blk[k] = a.blockIn[((size_t)row * c.H + kvh) * c.n + k];
  }
  __syncwarp();
  if (active) for (int k = lane; k < c.n; k += 32) a.blockOut[((size_t)row * c.H + kvh) * c.n + k] = blk[k];
  for (int k = lane; k < c.n; k += 32) {
    const int j = blk[k];
    len[k] = (j >= 0 && j <= cur) ? min(c.ls, pos - j * c.ls + 1) : 0;
  }
  stamp(9);
  // Split: no block-wide step follows (no common list), so the warpgroups need not meet here.
  if (split) __syncwarp();
  else __syncthreads();

  // ---- selected branch, part 1: blocks every warp chose (the forced ones at least), read once ----
  // Warp 0 lists them (each block once, from its first occurrence); every warp then takes its first
  // occurrence of each out of its own list (len 0) and masks keys past its position in the walk.
  const int* blk0 = blk - warp * (2 * c.n + 2);  // warp 0's lists; warp w's sit w * (2n + 2) further
  st.reset();
  // Only NSA_FWD_COMMON=1 walks the list (nCommon below): otherwise warp 0 does not build it (v11 built
  // it in every block while the other warps waited, and dropped it).
  if (!split && warp == 0 && (!(skip & (2 | 8)) || (skip & kFlagV11TopN))) {
    int listed = 0;
    for (int r0 = 0; r0 < c.n; r0 += 32) {  // whole-warp rounds (ballot)
      const int k = r0 + lane;
      bool all = k < c.n && len[k] > 0;
      const int j = all ? blk[k] : -1;
      for (int q = 0; q < k && all; q++) all = blk[q] != j || len[q] == 0;  // first occurrence only
      for (int w = 1; w < W && all; w++) {
        const int* bw = blk0 + w * (2 * c.n + 2);
        bool found = false;
        for (int q = 0; q < c.n; q++) found |= bw[q] == j && bw[c.n + q] > 0;
        all = found;
      }
      const unsigned mask = __ballot_sync(0xffffffffu, all);
      if (all) common[1 + listed + __popc(mask & ((1u << lane) - 1))] = j;
      listed += __popc(mask);
    }
    if (lane == 0) common[0] = listed;
  }
  if (!split) __syncthreads();
  const int nCommon = (skip & (2 | 8)) ? 0 : common[0];
  bool drop[2] = {false, false};  // c.n <= 64
#pragma unroll
  for (int r = 0; r < 2 && nCommon > 0; r++) {
    const int k = lane + 32 * r;
    if (k >= c.n) break;
    bool first = len[k] > 0;
    for (int q = 0; q < k && first; q++) first = blk[q] != blk[k] || len[q] == 0;
    bool isCommon = false;
    for (int q = 0; q < nCommon; q++) isCommon |= common[1 + q] == blk[k];
    drop[r] = first && isCommon;
  }
  __syncwarp();
#pragma unroll
  for (int r = 0; r < 2; r++)
    if (drop[r]) len[lane + 32 * r] = 0;
  if (nCommon > 0) {
    const int keysTile = kSharedKeys;
    auto span = [&](int j) { return min(c.ls, lastPos - j * c.ls + 1); };  // keys some row sees
    int nTiles = 0;
    for (int q = 0; q < nCommon; q++) nTiles += (span(common[1 + q]) + keysTile - 1) / keysTile;
    auto range = [&](int t) {
      for (int q = 0;; q++) {
        const int j = common[1 + q], sp = span(j), nt = (sp + keysTile - 1) / keysTile;
        if (t < nt || q == nCommon - 1) return make_int2(j * c.ls + t * keysTile, j * c.ls + sp);
        t -= nt;
      }
    };
    walkTiles(std::integral_constant<int, 0>(), nTiles, range, kBase, a.kSlc, a.vSlc, [&](int t, int k0, const T* k, const T* v) {
      const int end = range(t).y;
      warpAttend<T, D, kSharedKeys>(qf, k, v, ld, sl2, [&](int jj) { return k0 + jj < end && k0 + jj <= pos; }, st);
    });
  }
  if constexpr (Wg) {
    // ---- selected branch, part 1 (Wg, the default; v9): the forced blocks, read once per block ----
    if (forced) {
      for (int k = lane; k < c.n; k += 32) {
        const int j = blk[k];
        if (j >= 0 && (j < nbInit || (c.localBlocks > 0 && j >= localFirst && j <= cur0))) len[k] = 0;
      }
      __syncwarp();
      turns.open();
      for (int t = 0; t < forcedTiles; t++) {
        cpAsyncWait<0>();       // tile t has landed
        wg::fenceProxyAsync();  // this thread's tile writes, before the tensor cores read them
        __syncthreads();        // ... and everyone's; every warp is done with tile t - 1's pair
        if (t >= 1 && t + kForcedPairs - 1 < forcedTiles) loadForced(t + kForcedPairs - 1);
        cpAsyncCommit();
        const int2 kr = forcedRange(t);
        const uint32_t at = smemAddr(smemRaw) + 2 * (t % kForcedPairs) * kForcedTile;
        float sc[1][kSharedKeys / 8][4];
        groupScores<T, D, kSharedKeys, 1>(qf, at, sc, turns);
        groupSoftmaxPV<T, D>(sc[0], at + kForcedTile, sl2, [&](int j) { return kr.x + j < kr.y && kr.x + j <= pos; }, st, turns);
      }
      turns.close();
    }
  }
  if (!split) __syncthreads();  // every warp is done with the block-wide tiles: they become per-warp rings

  // ---- selected branch: this warp's own 16-key chunks, 2- or 3-stage ring ----
  // Chunk (k, off) = keys blk[k]*l' + off .. + 15 of chosen block k, the first len[k] - off of them
  // visible. Stage s of the ring: K rows at ring + 2s*kChunk*cld (s < 2; stage 2, with ring3, is the
  // warp's slot behind the tile region), V rows kChunk*cld after them.
  // ring3 (NSA_FWD_RING=3): a third stage keeps two chunks' gathers in flight while one is computed.
  // In v11's profile a third of the warp samples were in this loop, 12 % on the wait for the gathers
  // (L2), but the third stage measured no faster (run C1).
  // Swizzled rings (the default; NSA_FWD_RING_SWIZZLE=0: padded rows, v13): chunks of kChunk x D
  // unpadded (chunkAt), so each row's 16-byte gathers land 32-byte aligned like their source. Each
  // group of 4 warps keeps its padded rings' start (a warpgroup's half of the tile region in
  // 8-row blocks), 1024-byte aligned on Wg; the third stages likewise from scoreBase.
  constexpr int cld = Swz ? D : ld;  // a chunk row's elements
  T* ring = sK + warp / 4 * 16 * kChunk * ld + warp % 4 * 4 * kChunk * cld;
  T* ring2 = reinterpret_cast<T*>(scoreBase) + warp * 2 * kChunk * cld;
  // Not with split: its warpgroups do not meet after top-n, and the third stages lie over other warps' block scores.
  const bool stage3 = ring3 && !split;
  const int nStages = stage3 ? 3 : 2;
  // v17: full chunks by TMA (two stages only; the third stage's slot is not 1024-byte aligned).
  const bool tmaRings = Swz && tmaOn && (Lean > 0 || maps.onSlc) && !stage3;
  const uint32_t ringBar = tmaBar + 16 + 16 * warp;  // + 8 * stage
  uint32_t ringPhase = 0;                            // bit s: the parity stage s's next chunk completes
  const T* Ks = static_cast<const T*>(a.kSlc);
  const T* Vs = static_cast<const T*>(a.vSlc);
  auto firstFrom = [&](int k) {  // next chosen block with visible tokens, from k on (c.n = none)
    while (k < c.n && len[k] == 0) k++;
    return k;
  };
  auto stageAt = [&](int stage) { return stage < 2 ? ring + 2 * stage * kChunk * cld : ring2; };
  auto gather = [&](int k, int off, int stage) {
    T* dk = stageAt(stage);
    T* dv = dk + kChunk * cld;
    constexpr int per = D / 8;  // 16-byte pieces per row; a lane keeps one column
    const int col = (lane % per) * 8, rem = len[k] - off;
    const size_t k0 = (size_t)kBase + (size_t)blk[k] * c.ls + off;
    if (tmaRings && rem >= kChunk) {
      if (lane == 0) {  // the chunk layout (chunkAt) is TMA's 128-byte swizzle of 16-row boxes
        const uint32_t bar = ringBar + 8 * stage;
        wg::fenceProxyAsync();  // the warp's reads of this stage (ldmatrix) before the copy engine writes it
        tma::arriveExpect(bar, 2 * kChunk * D * sizeof(T));
        tma::loadTile<D, kChunk, kChunk>(smemAddr(dk), &maps.ks, kvh, (int)k0, bar);
        tma::loadTile<D, kChunk, kChunk>(smemAddr(dv), &maps.vs, kvh, (int)k0, bar);
      }
      return;
    }
#pragma unroll
    for (int r = lane / per; r < kChunk; r += 32 / per) {
      T* pk = const_cast<T*>(chunkAt<T, Swz>(dk, ld, r, col));
      T* pv = const_cast<T*>(chunkAt<T, Swz>(dv, ld, r, col));
      if (r < rem) {
        const size_t at = ((k0 + r) * c.H + kvh) * D + col;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smemAddr(pk)), "l"(Ks + at));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smemAddr(pv)), "l"(Vs + at));
      } else {  // zero rows: P is 0 there, and 0 * stale bits could be NaN
        *reinterpret_cast<uint4*>(pk) = make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(pv) = make_uint4(0, 0, 0, 0);
      }
    }
  };
  auto advance = [&](int& k, int& off) {  // the chunk after (k, off)
    off += kChunk;
    if (off >= len[k]) { k = firstFrom(k + 1); off = 0; }
  };
  // The rings: chunk (k, off) is computed next; (gk, goff) is gathered next, nStages - 1 chunks
  // ahead. Every step commits one cp.async group (empty past the last chunk), so the wait below
  // counts chunks.
  auto rings = [&]() {
    int k = (skip & 2) ? c.n : firstFrom(0), off = 0, gk = k, goff = 0;
    auto issue = [&](int stage) {
      if (gk < c.n) {
        gather(gk, goff, stage);
        advance(gk, goff);
      }
      cpAsyncCommit();
    };
    for (int s = 0; s + 1 < nStages; s++) issue(s);
    for (int stage = 0; k < c.n; stage = stage + 1 == nStages ? 0 : stage + 1) {
      issue(stage == 0 ? nStages - 1 : stage - 1);  // the stage computed in the step before
      if (stage3) cpAsyncWait<2>();
      else cpAsyncWait<1>();
      const int rem = len[k] - off;
      if (tmaRings && rem >= kChunk) {
        tma::wait(ringBar + 8 * stage, (ringPhase >> stage) & 1u);
        ringPhase ^= 1u << stage;
      }
      __syncwarp();
      const T* ck = stageAt(stage);
      warpAttend<T, D, kChunk, Swz>(qf, ck, ck + kChunk * cld, ld, sl2, [&](int j) { return j < rem; }, st);
      __syncwarp();  // the next gather overwrites this stage
      advance(k, off);
    }
  };
  float win[D / 8 * 4];
  if constexpr (Wg && W == 8) {
    if (split) {
      for (int ph = 0; ph < 2; ph++) {
        // v26: the gated sum re-reads the compressed output and phase 0's, which the ring gathers have
        // likely pushed out of L2 by then, so lane 0 asks for them again (a bulk prefetch per output).
        if (kOutPrefetch && ph == 1 && active && lane == 0) {
#if NSA_WGMMA_DEVICE
          constexpr int kBytes = kGroup * D * (int)sizeof(T);  // this warp's 16 heads, contiguous
          asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(static_cast<const T*>(a.oCmp) + oAt), "r"(kBytes) : "memory");
          asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(static_cast<const T*>(wg == 0 ? a.oWin : a.oSlc) + oAt), "r"(kBytes)
                       : "memory");
#endif
        }
        if ((ph == 0) == (wg == 0)) {  // window: keys ws(pos) .. pos
          wgWindow(ph == 0 && select);
        } else {  // selected: the forced blocks of the warpgroup's rows, then the rings
          st.reset();
          if (wForced) {
            for (int k = lane; k < c.n; k += 32) {
              const int j = blk[k];
              if (j >= 0 && (j < wNbInit || (c.localBlocks > 0 && j >= wLocalFirst && j <= wCur0))) len[k] = 0;
            }
            __syncwarp();
          }
          wgWalk(wForcedTiles, wForcedRange, a.kSlc, a.vSlc, ph == 0 && select, [&](int key) { return key <= pos; });
          rings();
          store(st, 1, a.oSlc, nullptr);
          wgSync();  // the rings' bytes become the window's tiles
        }
        stamp(10 + ph);
      }
      if (active && !kCoalesced) {  // the gated sum below takes the window output back from oWin (v21: in 16-byte pieces)
        const T* oWin = static_cast<const T*>(a.oWin);
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
          for (int n = 0; n < D / 8; n++) {
            const size_t at = oAt + (size_t)(g4 + 8 * i) * D + n * 8 + 2 * t4;
            win[n * 4 + 2 * i] = toF(oWin[at]);
            win[n * 4 + 2 * i + 1] = toF(oWin[at + 1]);
          }
      }
    }
  }
  if (!split) {
    rings();
    store(st, 1, a.oSlc, nullptr);
    __syncthreads();  // own tiles become block-wide tiles again

    // ---- window branch: keys ws(pos) .. pos; the block walks ws(first row) .. last row ----
    const int ws = max(0, pos - c.window + 1), wsAll = max(0, firstPos - c.window + 1);
    st.reset();
    // (Wg: on wgmma as the compressed branch, the block's tiles in the swizzled layout.)
    if (!(skip & 4))
      walkShared(std::integral_constant<int, Wg ? kSharedKeys : 0>(), wsAll, lastPos - wsAll + 1, kBase, a.kWin, a.vWin, [&](int, int k0, const T* k, const T* v) {
        auto visible = [&](int j) { return k0 + j >= ws && k0 + j <= pos; };
        if constexpr (Wg) {
          float s[1][kSharedKeys / 8][4];
          groupScores<T, D, kSharedKeys, 1>(qf, smemAddr(k), s, turns);
          groupSoftmaxPV<T, D>(s[0], smemAddr(v), sl2, visible, st, turns);
        } else {
          warpAttend<T, D, kSharedKeys>(qf, k, v, ld, sl2, visible, st);
        }
      });
    store(st, 2, a.oWin, win);
  }

  // ---- gated sum (this thread re-reads the branch outputs it stored itself) ----
  if (!active) return;
  const T* oCmp = static_cast<const T*>(a.oCmp);
  const T* oSlc = static_cast<const T*>(a.oSlc);
  T* out = static_cast<T*>(a.out);
  if constexpr (kCoalesced) {
    // v21: in the 16-byte pieces the branch stores wrote (this lane reads back what it stored). The
    // window output comes from oWin (split) or from win by the same quad transposes (as floats); the
    // same expression per element as below, so bit-equal.
    static_assert(D % 32 == 0, "whole quads of 8-column pieces");
    const T* oWin = static_cast<const T*>(a.oWin);
    uint4 cw[2][D / 32], sw[2][D / 32], ww[2][D / 32];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int m = 0; m < D / 32; m++) {
        const size_t at = oAt + (size_t)(g4 + 8 * i) * D + (4 * m + t4) * 8;
        cw[i][m] = *reinterpret_cast<const uint4*>(oCmp + at);
        sw[i][m] = *reinterpret_cast<const uint4*>(oSlc + at);
        if (split) ww[i][m] = *reinterpret_cast<const uint4*>(oWin + at);
      }
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int r = g4 + 8 * i;
      const size_t gAt = ((size_t)row * c.HQ + hq0 + r) * 3;
      const float gc = toF(gates[gAt]), gs = toF(gates[gAt + 1]), gw = toF(gates[gAt + 2]);
#pragma unroll
      for (int m = 0; m < D / 32; m++) {
        float wx[4], wy[4];  // the window's columns 2k, 2k + 1 of this lane's piece
        if (split) {
          const uint32_t wp[4] = {ww[i][m].x, ww[i][m].y, ww[i][m].z, ww[i][m].w};
#pragma unroll
          for (int k = 0; k < 4; k++) {
            wx[k] = toF(reinterpret_cast<const T*>(&wp[k])[0]);
            wy[k] = toF(reinterpret_cast<const T*>(&wp[k])[1]);
          }
        } else {
          uint32_t ex[4], ey[4];
#pragma unroll
          for (int j = 0; j < 4; j++) {
            ex[j] = __float_as_uint(win[(4 * m + j) * 4 + 2 * i]);
            ey[j] = __float_as_uint(win[(4 * m + j) * 4 + 2 * i + 1]);
          }
          quadTranspose(ex, t4);
          quadTranspose(ey, t4);
#pragma unroll
          for (int k = 0; k < 4; k++) { wx[k] = __uint_as_float(ex[k]); wy[k] = __uint_as_float(ey[k]); }
        }
        const uint32_t cp[4] = {cw[i][m].x, cw[i][m].y, cw[i][m].z, cw[i][m].w};
        const uint32_t sp[4] = {sw[i][m].x, sw[i][m].y, sw[i][m].z, sw[i][m].w};
        uint32_t o[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
          const T* cv = reinterpret_cast<const T*>(&cp[k]);
          const T* sv = reinterpret_cast<const T*>(&sp[k]);
          const float x = gc * toF(cv[0]) + gs * toF(sv[0]) + gw * wx[k];
          const float y = gc * toF(cv[1]) + gs * toF(sv[1]) + gw * wy[k];
          o[k] = packF2<T>(x, y);
        }
        *reinterpret_cast<uint4*>(out + oAt + (size_t)r * D + (4 * m + t4) * 8) = make_uint4(o[0], o[1], o[2], o[3]);
      }
    }
    stamp(12);
    stamp(13, true);
    return;
  }
  if (!(skip & kFlagGateInterleaved)) {
    // Every load first: for the compiler the stores to out may alias the branch outputs, so a load
    // after a store waits for it, and v9's loop (below) paid one L2 round trip per 8 columns: ~7 %
    // of the kernel's warp time at 64k (ncu source counters, BENCHMARKS.md v11).
    struct alignas(4) Pair { T x, y; };
    Pair cw[2][D / 8], sw[2][D / 8];
    float gate[2][3];
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int r = g4 + 8 * i;
      const size_t gAt = ((size_t)row * c.HQ + hq0 + r) * 3;
#pragma unroll
      for (int b = 0; b < 3; b++) gate[i][b] = toF(gates[gAt + b]);
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        const size_t at = oAt + (size_t)r * D + n * 8 + 2 * t4;
        cw[i][n] = *reinterpret_cast<const Pair*>(oCmp + at);
        sw[i][n] = *reinterpret_cast<const Pair*>(oSlc + at);
      }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int r = g4 + 8 * i;
      const float gc = gate[i][0], gs = gate[i][1], gw = gate[i][2];
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        const size_t at = oAt + (size_t)r * D + n * 8 + 2 * t4;
        const float x = gc * toF(cw[i][n].x) + gs * toF(sw[i][n].x) + gw * win[n * 4 + 2 * i];
        const float y = gc * toF(cw[i][n].y) + gs * toF(sw[i][n].y) + gw * win[n * 4 + 2 * i + 1];
        *reinterpret_cast<uint32_t*>(out + at) = packF2<T>(x, y);
      }
    }
    return;
  }
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

template <class T, int D, int W, bool Wg>
void launch(const NSAForwardArgs& a, cudaStream_t stream) {
  constexpr int kWarpsPerBlock = W, kBlockThreads = 32 * W;
  std::vector<RowTile> tiles;
  const int S = a.seq.S;
  // Latest positions first: they have the most compressed keys. One sequence: the kernel takes its
  // tiles from the last by block index, so the host neither sorts nor uploads a list (at 64k the
  // stable sort alone took ~0.17 ms a call on the build machine; the GPU waited for this launch).
  // NSA_FWD_TILE_LIST=1: the sorted list for one sequence too (the previous host path, for A/B).
  const char* listEnv = getenv("NSA_FWD_TILE_LIST");
  const bool byIndex = S == 1 && !(listEnv && listEnv[0] == '1');
  int nTiles = 0;
  if (byIndex) {
    nTiles = (a.seq.host[1] - a.seq.host[0] + kWarpsPerBlock - 1) / kWarpsPerBlock;
  } else {
    for (int s = 0; s < S; s++)
      for (int f = 0; f < a.seq.host[s + 1] - a.seq.host[s]; f += kWarpsPerBlock) tiles.push_back({s, f});
    std::stable_sort(tiles.begin(), tiles.end(), [&](const RowTile& x, const RowTile& y) {
      return x.first + a.seq.host[3 * S + 1 + x.s] > y.first + a.seq.host[3 * S + 1 + y.s];
    });
    nTiles = (int)tiles.size();
  }
  const int nbMax = (a.seq.maxKeys + a.cfg.ls - 1) / a.cfg.ls + 1;
  // NSA_FWD_RING=3: a third stage for the rings in 8-warp blocks (one per SM, so the shared memory is
  // there; 4-warp blocks would lose their second block per SM) where it fits the 227 KB a block may
  // have. Opt-in: with two gathers in flight per warp instead of one the forward was no faster
  // (52.07 vs 51.93 ms at 64k, run C1), so the selected branch is not bound by each warp's wait.
  const char* ringEnv = getenv("NSA_FWD_RING");
  const bool ring3 = W == 8 && ringEnv && ringEnv[0] == '3' &&
                     Layout<D, W>::bytes(sizeof(T), nbMax, a.cfg.n, true) + (Wg ? 1024 : 0) <= 227 * 1024;
  const size_t bytes = Layout<D, W>::bytes(sizeof(T), nbMax, a.cfg.n, ring3) + (Wg ? 1024 : 0);
  if (bytes > (ring3 ? 227 : 200) * 1024) throw std::runtime_error("nsaForward: sequence too long for the selection scores in shared memory");
  Workspace ws(stream);
  const RowTile* dTiles = byIndex ? nullptr : ws.upload(tiles);
  // NSA_FWD_RING_SWIZZLE=0: the rings' chunks in padded rows (v13), for A/B.
  const char* ringSwz = getenv("NSA_FWD_RING_SWIZZLE");
  const bool swz = !(ringSwz && ringSwz[0] == '0');
  const char* skip = getenv("NSA_FWD_SKIP");
  // The shared walk of commonly chosen blocks is opt-in: on the benchmark's random inputs neighbours
  // share only the forced blocks, and the extra block-wide phase measured slower (BENCHMARKS.md v6).
  const char* shareCommon = getenv("NSA_FWD_COMMON");
  // The forced walk runs with 8-warp blocks; with 4-warp blocks it measured slower than the rings
  // alone (BENCHMARKS.md v9), so those take it only with NSA_FWD_FORCED=1. NSA_FWD_FORCED=0 gives
  // every selected block to the per-warp rings (v7's selected branch, for A/B).
  const char* forcedEnv = getenv("NSA_FWD_FORCED");
  const bool forcedOff = forcedEnv ? forcedEnv[0] == '0' : W < 8;
  // NSA_FWD_PINGPONG=0 / NSA_FWD_GATE_BATCH=0 run v9's wgmma issue order / gated-sum loop (for A/B).
  const char* pingPong = getenv("NSA_FWD_PINGPONG");
  const char* gateBatch = getenv("NSA_FWD_GATE_BATCH");
  // NSA_FWD_TOPN=0: v11's top-n (every round rescans all scores; warp 0 builds the common list even
  // where nothing walks it), for A/B.
  const char* topN = getenv("NSA_FWD_TOPN");
  // NSA_FWD_SPLIT=0: v12's order (both warpgroups: selected blocks, then the window), for A/B.
  const char* splitEnv = getenv("NSA_FWD_SPLIT");
  // NSA_FWD_CMP_TILE=64: the compressed branch in 64-key tiles in 8-row blocks (v14), for A/B.
  const char* cmpTile = getenv("NSA_FWD_CMP_TILE");
  // NSA_FWD_SORT=0: lane 0 sorts each row's chosen blocks by insertion (v14), for A/B.
  const char* sortEnv = getenv("NSA_FWD_SORT");
  const int flags = (skip ? atoi(skip) : 0) | (shareCommon && shareCommon[0] == '1' ? 0 : 8) | (forcedOff ? 16 : 0) |
                    (pingPong && pingPong[0] == '0' ? kFlagNoPingPong : 0) | (gateBatch && gateBatch[0] == '0' ? kFlagGateInterleaved : 0) |
                    (topN && topN[0] == '0' ? kFlagV11TopN : 0) | (ring3 ? kFlagRing3 : 0) |
                    (splitEnv && splitEnv[0] == '0' ? kFlagNoSplit : 0) | (cmpTile && atoi(cmpTile) == 64 ? kFlagCmp64 : 0) |
                    (sortEnv && sortEnv[0] == '0' ? kFlagInsertionSort : 0);
  // v16: TMA maps of the compressed keys and values (wgmma kernels; NSA_FWD_TMA=0: cp.async, v15). Their
  // rows: as far as any sequence's compressed keys reach.
  // v17: and of the selected keys and values for the rings (NSA_FWD_TMA=1: not these, v16), their rows
  // as far as any sequence's keys reach.
  // NSA_FWD_LEAN=12 (default): v20; 1: v19's lean kernel; 6 / 7 / 9 / 11: v20's parts (a) / (a), (b) /
  // (a)-(c) / (a)-(d) (see the top of the file); 5: v19 + shuffled block sums (opt-in);
  // NSA_FWD_LEAN=0: the kernel with every path behind run-time flags (v17's binary, for A/B);
  // NSA_FWD_LEAN=2 / 3 / 4 (v18's slower trial levels) are no longer built: like any other value they
  // run the all-flags kernel.
  const char* leanEnv = getenv("NSA_FWD_LEAN");
  // NSA_FWD_LEAN=27 (default): v26, v25 with the gated sum's older branch outputs prefetched into L2;
  // 28: v26 with phase stamps (NSA_FWD_STAMPS_FILE, diagnostic); 22: v25, v21 with top-n's rounds by
  // redux.sync and the split walks' first tiles requested after top-n; 13: v21, v20 with the branch
  // outputs and the gated sum in 16-byte pieces. 13 and up need 16-byte aligned outputs (else v20).
  // Levels 14-21 and 23-26 (trials of sessions 14 and 15, BENCHMARKS.md) are not built: like any
  // other value they run the all-flags kernel.
  const bool outAligned = ((uintptr_t)a.out | (uintptr_t)a.oCmp | (uintptr_t)a.oSlc | (uintptr_t)a.oWin) % 16 == 0;
  int leanWanted = leanEnv ? atoi(leanEnv) : 27;
  if (leanWanted >= 13 && !outAligned) leanWanted = 12;
  TmaMaps maps{};
  const char* tmaEnv = getenv("NSA_FWD_TMA");
  if (Wg && !(tmaEnv && tmaEnv[0] == '0')) {
    const int* h = a.seq.host;
    int cmpRows = 0, keyRows = 0;
    for (int s = 0; s < S; s++) {
      const int keys = h[3 * S + 1 + s] + h[s + 1] - h[s];  // pos0 + queries: the keys up to the last position
      cmpRows = std::max(cmpRows, h[2 * S + 1 + s] + compressedCount(keys, a.cfg.l, a.cfg.d));
      keyRows = std::max(keyRows, h[S + 1 + s] + keys);
    }
    const bool f16 = a.dtype == DType::F16;
    maps.on = cmpRows > 0 && encodeKeyMap(&maps.k, a.kCmp, f16, cmpRows, a.cfg.H, D, kTmaRows) &&
              encodeKeyMap(&maps.v, a.vCmp, f16, cmpRows, a.cfg.H, D, kTmaRows);
    maps.onSlc = maps.on && !(tmaEnv && tmaEnv[0] == '1') && keyRows > 0 && encodeKeyMap(&maps.ks, a.kSlc, f16, keyRows, a.cfg.H, D, kChunk) &&
                 encodeKeyMap(&maps.vs, a.vSlc, f16, keyRows, a.cfg.H, D, kChunk);
  }
  // Lean kernels (cfwd4) where the run takes the default path: 8-row wgmma blocks, swizzled rings,
  // TMA on for the compressed and selected keys, no A/B flag beyond NSA_FWD_SKIP's bits.
  const bool leanFits = Wg && W == 8 && swz && maps.on && maps.onSlc && (flags & ~7) == 8;
  auto kernel = swz ? nsaForwardPipeKernel<T, D, W, Wg, true> : nsaForwardPipeKernel<T, D, W, Wg, false>;
  if constexpr (Wg && W == 8) {
    if (leanFits && leanWanted == 1) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 1>;
    if (leanFits && leanWanted == 5) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 5>;
    if (leanFits && leanWanted == 6) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 6>;
    if (leanFits && leanWanted == 7) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 7>;
    if (leanFits && leanWanted == 9) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 9>;
    if (leanFits && leanWanted == 11) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 11>;
    if (leanFits && leanWanted == 12) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 12>;
    if (leanFits && leanWanted == 13) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 13>;
    if (leanFits && leanWanted == 22) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 22>;
    if (leanFits && leanWanted == 27) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 27>;
    if (leanFits && leanWanted == 28) kernel = nsaForwardPipeKernel<T, D, W, Wg, true, 28>;
  }
  NSA_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  kernel<<<dim3((unsigned)nTiles, a.cfg.H), kBlockThreads, bytes, stream>>>(a, dTiles, nbMax, flags, maps);
  NSA_LAUNCHED("nsaForwardPipeKernel");
  const char* stampsFile = getenv("NSA_FWD_STAMPS_FILE");
  if (stampsFile && leanFits && leanWanted == 28) {
    std::vector<unsigned long long> host(sizeof(fwdStamps) / 8);
    NSA_CUDA(cudaStreamSynchronize(stream));
    NSA_CUDA(cudaMemcpyFromSymbol(host.data(), fwdStamps, sizeof(fwdStamps)));
    FILE* f = fopen(stampsFile, "wb");
    if (!f || fwrite(host.data(), 8, host.size(), f) != host.size()) fprintf(stderr, "NSA_FWD_STAMPS_FILE: cannot write %s\n", stampsFile);
    if (f) fclose(f);
  }
}

}  // namespace

TensorMapEncode tensorMapEncoder() {
  static const TensorMapEncode encode = []() -> TensorMapEncode {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();  // not sticky: clear it
      return nullptr;
    }
    return reinterpret_cast<TensorMapEncode>(fn);
  }();
  return encode;
}

bool encodeKeyMap(CUtensorMap* map, const void* base, bool f16, int rows, int H, int D, int boxRows) {
  const TensorMapEncode encode = tensorMapEncoder();
  if (!encode || reinterpret_cast<uintptr_t>(base) % 16) return false;
  const cuuint64_t dims[3] = {(cuuint64_t)D, (cuuint64_t)H, (cuuint64_t)rows};
  const cuuint64_t strides[2] = {(cuuint64_t)D * 2, (cuuint64_t)H * D * 2};  // bytes, of dims 1 and 2
  const cuuint32_t box[3] = {64, 1, (cuuint32_t)boxRows}, elementStrides[3] = {1, 1, 1};
  return encode(map, f16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(base), dims, strides, box,
                elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

bool nsaForwardPipelined(const NSAForwardArgs& a, cudaStream_t stream) {
  const NSAConfigArgs& c = a.cfg;
  const char* v4 = getenv("NSA_FWD_V4");
  if (v4 && v4[0] == '1') return false;
  if (a.dtype == DType::F32 || c.HQ != kGroup * c.H || c.Dk != c.Dv || (c.Dk != 64 && c.Dk != 128)) return false;
  if (!a.oSlc || !a.oWin || !a.lse || a.seq.rows == 0) return false;
  // Per-warp tiles, the mass buffer and the block-sum loop assume these (paper defaults satisfy them).
  if (c.l % c.d || c.ls % c.d || c.n > 64) return false;
  const int nbMax = (a.seq.maxKeys + c.ls - 1) / c.ls + 1;
  if (Layout<128, 4>::bytes(2, nbMax, c.n) > 200 * 1024) return false;
  const bool f16 = a.dtype == DType::F16;
  // The compressed branch and the selection scores on wgmma where the running code has it (sm_90a
  // build on a compute-capability 9.0 device); NSA_FWD_WGMMA=0 keeps v6's mma.sync everywhere.
  // 8-warp blocks (two warpgroups, 8 positions) share each compressed tile and forced block among 8
  // rows: the default where the forced walk can run (faster there, BENCHMARKS.md v9; slower without
  // it). NSA_FWD_WARPS=4 / 8 force either; NSA_FWD_WARPS=4 alone runs v7.
  const char* wgEnv = getenv("NSA_FWD_WGMMA");
  const size_t wgBytes = Layout<128, 4>::bytes(2, nbMax, c.n) + 1024;
  if (!(wgEnv && wgEnv[0] == '0') && wgBytes <= 200 * 1024 && wgmmaRuns()) {
    const char* warps = getenv("NSA_FWD_WARPS");
    const char* forcedEnv = getenv("NSA_FWD_FORCED");
    const char* commonEnv = getenv("NSA_FWD_COMMON");
    const bool forcedWalk = a.blockIn == nullptr && !(forcedEnv && forcedEnv[0] == '0') && !(commonEnv && commonEnv[0] == '1');
    const int warpsWanted = warps ? atoi(warps) : (forcedWalk ? 8 : 4);
    const bool two = warpsWanted == 8 && Layout<128, 8>::bytes(2, nbMax, c.n) + 1024 <= 200 * 1024;
    if (c.Dk == 64) {
      if (two) f16 ? launch<__half, 64, 8, true>(a, stream) : launch<__nv_bfloat16, 64, 8, true>(a, stream);
      else f16 ? launch<__half, 64, 4, true>(a, stream) : launch<__nv_bfloat16, 64, 4, true>(a, stream);
    } else {
      if (two) f16 ? launch<__half, 128, 8, true>(a, stream) : launch<__nv_bfloat16, 128, 8, true>(a, stream);
      else f16 ? launch<__half, 128, 4, true>(a, stream) : launch<__nv_bfloat16, 128, 4, true>(a, stream);
    }
    return true;
  }
  if (c.Dk == 64) f16 ? launch<__half, 64, 4, false>(a, stream) : launch<__nv_bfloat16, 64, 4, false>(a, stream);
  else f16 ? launch<__half, 128, 4, false>(a, stream) : launch<__nv_bfloat16, 128, 4, false>(a, stream);
  return true;
}

}  // namespace nsa
