// Key-centric dK/dV of the NSA backward in the flash-attention-2 register layout (16-bit, G = 16,
// Dk = Dv in {64, 128}): the tile plan (which keys, which slice of their query list, largest list
// first) and the stand-alone launch; the block itself is keyGradBlock (nsa_backward_keys.cuh).
#include <algorithm>
#include <cstdlib>
#include <vector>
#include "cuda_error.h"
#include "nsa_backward_keys.cuh"
#include "nsa_backward_keys_wgmma.cuh"
#include "nsa_backward_parts.h"
#include "nsa_backward_warp.cuh"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "wgmma_probe.h"
#include "workspace.h"

namespace nsa {

namespace {

// Wg: the wgmma block (keyGradBlockWg, S stage buffers, Early: its loop variant, Tma: its stage
// copies on the copy engine through maps), only where keyGradWgmmaRuns().
template <class T, int D, int W, bool Wg, int S = 2, bool Early = false, bool Tma = false>
__global__ void __launch_bounds__(32 * W, 8 / W)
    keyGradRegKernel(NSABackwardArgs a, const float* Dvals, KeyBlockArgs kb, const __grid_constant__ KeyStageMaps maps) {
  extern __shared__ __align__(16) char smemRaw[];
  if constexpr (Wg) keyGradBlockWg<T, D, W, S, Early, Tma>(a, Dvals, kb.tiles[blockIdx.x], kb, smemRaw, &maps);
  else keyGradBlock<T, D, W>(a, Dvals, kb.tiles[blockIdx.x], kb, smemRaw);
}

// Launch order of key tiles: by the query range a tile reads (kSliceQueries-row steps), so that the
// blocks running together share those Q and dO rows in L2 instead of each streaming its own from
// DRAM; selected tiles, which read scattered rows, first, largest list first. v5 launched every tile
// largest list first, which made concurrent blocks read ranges all over the sequence. H100, 64k
// (BENCHMARKS v7): the 128-key compressed launch 43.4 -> 39.6 ms (DRAM throughput 2.8 %); the grid
// shared with dq within run-to-run noise. NSA_BWD_KEY_ORDER=work restores the v5 order.
bool keysByRange() {
  const char* force = getenv("NSA_BWD_KEY_ORDER");
  return !(force && force[0] == 'w');
}

// Plans the tiles of the branches in `modes` (bit per KeyMode) with 16 W-key blocks: uploaded in
// launch order (keysByRange), with the split groups' partial buffers.
template <int D, int W>
KeyTilePlan planKeys(const NSABackwardArgs& a, const InverseIndex& index, int modes, Workspace& ws) {
  constexpr int kTileKeys = 16 * W;
  const NSAConfigArgs& c = a.fwd.cfg;
  const int S = a.fwd.seq.S;
  const int* host = a.fwd.seq.host;
  KeyTilePlan plan;
  std::vector<KeyTile> tiles;
  std::vector<int> work;   // query rows each block visits
  std::vector<int> range;  // where its query rows start (positions; selected blocks: the block's first key)
  std::vector<KeyGroup>& groups = plan.groups;
  int parts = 0;
  auto add = [&](KeyTile t, int count, bool split) {
    const int slices = split ? std::max(1, (count + kSliceQueries - 1) / kSliceQueries) : 1;
    if (slices == 1) {
      t.q0 = 0; t.q1 = 1 << 30; t.part = -1; t.group = -1;
      tiles.push_back(t);
      work.push_back(count);
      range.push_back(t.mode == kCompressed ? t.start * c.d + c.l - 1 : t.start);
      return;
    }
    const int group = (int)groups.size();
    groups.push_back({parts, slices, t.g, t.mode});
    for (int z = 0; z < slices; z++) {
      t.q0 = z * kSliceQueries; t.q1 = (z + 1) * kSliceQueries; t.part = parts + z; t.group = group;
      tiles.push_back(t);
      work.push_back(std::min(count, t.q1) - t.q0);
      range.push_back(t.mode == kCompressed ? t.start * c.d + c.l - 1 + t.q0 : t.start);
    }
    parts += slices;
  };
  int sel = 0;
  for (int s = 0; s < S; s++) {
    const int keyLen = host[3 * S + 1 + s] + host[s + 1] - host[s];
    const int nc = compressedCount(keyLen, c.l, c.d);
    const int nbs = (keyLen + c.ls - 1) / c.ls;
    for (int g = 0; g < c.H; g++) {
      for (int p = 0; (modes >> kWindow & 1) && p < keyLen; p += kTileKeys) {
        const int end = std::min(p + kTileKeys, keyLen);
        add({s, kWindow, p, end, 0, g}, std::min(keyLen, end - 1 + c.window) - p, false);
      }
      for (int i = 0; (modes >> kCompressed & 1) && i < nc; i += kTileKeys) add({s, kCompressed, i, std::min(i + kTileKeys, nc), 0, g}, keyLen - (i * c.d + c.l - 1), true);
      for (int j = 0; (modes >> kSelected & 1) && j < nbs; j++)
        for (int p = j * c.ls; p < std::min((j + 1) * c.ls, keyLen); p += kTileKeys)
          add({s, kSelected, p, std::min({p + kTileKeys, (j + 1) * c.ls, keyLen}), j, g}, index.hostTotals[(size_t)g * index.NB + sel + j],
              true);
    }
    sel += nbs;
  }
  if (tiles.empty()) return plan;
  const bool byWork = !keysByRange();
  std::vector<long long> key(tiles.size());
  for (size_t i = 0; i < tiles.size(); i++) {
    const long long w = kSliceQueries + 1 - std::min(work[i], kSliceQueries + 1);  // larger lists first
    const long long m = byWork || tiles[i].mode == kSelected ? -1 : range[i] / kSliceQueries;
    key[i] = byWork ? (1LL << 40) - work[i] : (m + 1) * (kSliceQueries + 2) + w;
  }
  std::vector<int> order(tiles.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = (int)i;
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return key[x] < key[y]; });
  std::vector<KeyTile> sorted(tiles.size());
  for (size_t i = 0; i < order.size(); i++) sorted[i] = tiles[order[i]];

  plan.partial = parts ? ws.alloc<float>((size_t)parts * kTileKeys * 2 * D) : nullptr;
  plan.groupRows = groups.empty() ? nullptr : ws.alloc<int>(groups.size() * kTileKeys);
  plan.tiles = ws.upload(sorted);
  plan.count = (int)sorted.size();
  return plan;
}

template <class T, int D, int W>
void launchPlan(const NSABackwardArgs& a, const float* Dvals, const InverseIndex& index, const KeyTilePlan& plan, Workspace& ws,
                cudaStream_t stream) {
  if (plan.count == 0) return;
  KeyBlockArgs kb{plan.tiles, index.starts, index.totals, index.list, index.NB, plan.partial, plan.groupRows};
  setKeySwitches(kb);
  const KeyStageMaps maps = keyStageMaps(a);
  auto launch = [&](auto kernel, size_t bytes) {
    NSA_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    kernel<<<(unsigned)plan.count, 32 * W, bytes, stream>>>(a, Dvals, kb, maps);
    NSA_LAUNCHED("keyGradRegKernel");
  };
  // 128-key blocks: the Early loop (kb.early; its stage copies by TMA where maps.on, with
  // NSA_BWD_KEY_RING=3 into three stage buffers: two stages' copies in flight), else with
  // NSA_BWD_KEY_RING=3 three stage buffers (they hold one block per SM either way).
  if constexpr (W >= 8) {
    if (keyGradWgmmaRuns() && kb.early && maps.on && kb.ring3)
      return launch(keyGradRegKernel<T, D, W, true, 3, true, true>, KeyWgLayout<D, W, 3>::bytes());
    if (keyGradWgmmaRuns() && kb.early && maps.on) return launch(keyGradRegKernel<T, D, W, true, 2, true, true>, KeyWgLayout<D, W>::bytes());
    if (keyGradWgmmaRuns() && kb.early) return launch(keyGradRegKernel<T, D, W, true, 2, true>, KeyWgLayout<D, W>::bytes());
    if (keyGradWgmmaRuns() && kb.ring3) return launch(keyGradRegKernel<T, D, W, true, 3>, KeyWgLayout<D, W, 3>::bytes());
  }
  if (keyGradWgmmaRuns()) launch(keyGradRegKernel<T, D, W, true>, KeyWgLayout<D, W>::bytes());
  else launch(keyGradRegKernel<T, D, W, false>, KeyLayout<D, W>::bytes(sizeof(T)));
}

// Plans and launches the tiles of the branches in `modes` with W-warp blocks, then the reduce.
template <class T, int D, int W>
void launchKeys(const NSABackwardArgs& a, const float* Dvals, const InverseIndex& index, int modes, Workspace& ws,
                cudaStream_t stream) {
  const KeyTilePlan plan = planKeys<D, W>(a, index, modes, ws);
  launchPlan<T, D, W>(a, Dvals, index, plan, ws, stream);
  reduceKeyPartials(a, plan.groups, plan.partial, plan.groupRows, 16 * W, ws, stream);
}

// Compressed tiles see long query lists: 128-key blocks halve the Q/dO traffic per key, which pays
// once there are many of them (H100: 64k faster, 8k-32k not: fewer, longer blocks leave a tail).
// Window tiles join them there (wideModes); selection blocks (64 keys) keep 64-key blocks.
// NSA_BWD_WIDE_KEYS=0/1 forces the choice (tests cover both paths on small inputs).
bool wideCompressedTiles(const NSABackwardArgs& a) {
  const char* force = getenv("NSA_BWD_WIDE_KEYS");
  if (force && (force[0] == '0' || force[0] == '1')) return force[0] == '1';
  const NSAConfigArgs& c = a.fwd.cfg;
  const int S = a.fwd.seq.S;
  const int* host = a.fwd.seq.host;
  long blocks = 0;
  for (int s = 0; s < S; s++) {
    const int keyLen = host[3 * S + 1 + s] + host[s + 1] - host[s];
    const int nc = compressedCount(keyLen, c.l, c.d);
    for (int i = 0; i < nc; i += 128) blocks += (keyLen - (i * c.d + c.l - 1) + kSliceQueries - 1) / kSliceQueries;
  }
  int device = 0, sms = 132;
  if (cudaGetDevice(&device) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return blocks * c.H >= 16L * sms;
}

// Where the 128-key compressed blocks run, window tiles take 128 keys in that launch too: their
// w + 127 query rows are read once per 128 keys instead of w + 63 per 64 (H100 64k: window blocks
// 11.5 -> 6.3 ms, forward+backward -3 ms; BENCHMARKS.md backward v9). NSA_BWD_WIDE_WINDOW=0: 64 keys.
int wideModes() {
  const char* env = getenv("NSA_BWD_WIDE_WINDOW");
  return 1 << kCompressed | (env && env[0] == '0' ? 0 : 1 << kWindow);
}

template <class T, int D>
void launchAll(const NSABackwardArgs& a, const float* Dvals, const InverseIndex& index, Workspace& ws, cudaStream_t stream) {
  if (!wideCompressedTiles(a)) {
    launchKeys<T, D, 4>(a, Dvals, index, 1 << kWindow | 1 << kCompressed | 1 << kSelected, ws, stream);
    return;
  }
  const int wide = wideModes();
  launchKeys<T, D, 8>(a, Dvals, index, wide, ws, stream);
  launchKeys<T, D, 4>(a, Dvals, index, (1 << kWindow | 1 << kSelected) & ~wide, ws, stream);
}

template <class T, int D>
KeyTilePlan planShared(const NSABackwardArgs& a, const float* Dvals, const InverseIndex& index, Workspace& ws, cudaStream_t stream) {
  if (!wideCompressedTiles(a)) return planKeys<D, 4>(a, index, 1 << kWindow | 1 << kCompressed | 1 << kSelected, ws);
  const int wide = wideModes();
  launchKeys<T, D, 8>(a, Dvals, index, wide, ws, stream);
  return planKeys<D, 4>(a, index, (1 << kWindow | 1 << kSelected) & ~wide, ws);
}

}  // namespace

// NSA_BWD_KEY_DEFER=0: the wgmma key blocks read a stage's scalars just before its products (v9).
bool keyGradDefer() {
  const char* env = getenv("NSA_BWD_KEY_DEFER");
  return !(env && env[0] == '0');
}

void setKeySwitches(KeyBlockArgs& kb) {
  auto on = [](const char* name) {
    const char* env = getenv(name);
    return !(env && env[0] == '0');
  };
  kb.defer = keyGradDefer();
  kb.prefetch = on("NSA_BWD_KEY_PREFETCH");
  const char* skip = getenv("NSA_BWD_KEY_SKIP");
  kb.skip = skip && skip[0] == '1';
  const char* ring = getenv("NSA_BWD_KEY_RING");
  kb.ring3 = ring && ring[0] == '3';
  // NSA_BWD_KEY_EARLY: 0 nowhere, 1 the 128-key blocks only, else both (2).
  const char* early = getenv("NSA_BWD_KEY_EARLY");
  kb.early = early && (early[0] == '0' || early[0] == '1') ? early[0] - '0' : 2;
}

KeyStageMaps keyStageMaps(const NSABackwardArgs& a) {
  KeyStageMaps maps{};
  const NSAForwardArgs& f = a.fwd;
  if (!keyGradWgmmaRuns() || f.dtype == DType::F32 || f.cfg.Dk != f.cfg.Dv || f.cfg.Dk % 64 || f.cfg.HQ % kBwdGroup || f.seq.rows == 0)
    return maps;
  const char* ringEnv = getenv("NSA_BWD_DQ_RING_TMA");
  if (!(ringEnv && ringEnv[0] == '0')) {
    const int S = f.seq.S;
    const int* h = f.seq.host;
    int keyRows = 0;
    for (int s = 0; s < S; s++) keyRows = std::max(keyRows, h[S + 1 + s] + h[3 * S + 1 + s] + h[s + 1] - h[s]);  // kBase + keys
    const bool f16 = f.dtype == DType::F16;
    maps.onRing = keyRows > 0 && encodeKeyMap(&maps.ks, f.kSlc, f16, keyRows, f.cfg.H, f.cfg.Dk, kRingChunk) &&
                  encodeKeyMap(&maps.vs, f.vSlc, f16, keyRows, f.cfg.H, f.cfg.Dk, kRingChunk);
  }
  const char* env = getenv("NSA_BWD_KEY_TMA");
  if (env && env[0] == '0') return maps;
  const TensorMapEncode encode = tensorMapEncoder();
  const int D = f.cfg.Dk, HQ = f.cfg.HQ;
  auto map = [&](CUtensorMap* m, const void* base, int boxRows = 1) {
    if (!encode || reinterpret_cast<uintptr_t>(base) % 16) return false;
    const cuuint64_t dims[3] = {(cuuint64_t)D, (cuuint64_t)HQ, (cuuint64_t)f.seq.rows};
    const cuuint64_t strides[2] = {(cuuint64_t)D * 2, (cuuint64_t)HQ * D * 2};  // bytes, of dims 1 and 2
    const cuuint32_t box[3] = {64, kBwdGroup, (cuuint32_t)boxRows}, elementStrides[3] = {1, 1, 1};
    return encode(m, f.dtype == DType::F16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(base), dims,
                  strides, box, elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
  };
  maps.on = map(&maps.q, f.q) && map(&maps.dO, a.dOut);
  // NSA_BWD_KEY_TMA4=0: every stage row by its own copies (cbwd5's path); =1: 4-row boxes in window
  // and compressed stages only; default 2: in selected stages too where their rows run
  const char* env4 = getenv("NSA_BWD_KEY_TMA4");
  const int want4 = env4 && (env4[0] == '0' || env4[0] == '1') ? env4[0] - '0' : 2;
  maps.on4 = want4 && maps.on && map(&maps.q4, f.q, kStageRows) && map(&maps.dO4, a.dOut, kStageRows) ? want4 : 0;
  return maps;
}

bool keyGradWgmmaRuns() {
  const char* env = getenv("NSA_BWD_WGMMA");
  if (env && env[0] == '0') return false;
  return wgmmaRuns();
}

KeyTilePlan keyGradRegistersPlan(const NSABackwardArgs& a, const float* D, const InverseIndex& index, Workspace& ws,
                                 cudaStream_t stream) {
  const bool f16 = a.fwd.dtype == DType::F16;
  if (a.fwd.cfg.Dk == 64) return f16 ? planShared<__half, 64>(a, D, index, ws, stream) : planShared<__nv_bfloat16, 64>(a, D, index, ws, stream);
  return f16 ? planShared<__half, 128>(a, D, index, ws, stream) : planShared<__nv_bfloat16, 128>(a, D, index, ws, stream);
}

void keyGradRegistersFinish(const NSABackwardArgs& a, const KeyTilePlan& plan, Workspace& ws, cudaStream_t stream) {
  reduceKeyPartials(a, plan.groups, plan.partial, plan.groupRows, 64, ws, stream);
}

void keyGradRegisters(const NSABackwardArgs& a, const float* D, const InverseIndex& index, Workspace& ws, cudaStream_t stream) {
  const bool f16 = a.fwd.dtype == DType::F16;
  if (a.fwd.cfg.Dk == 64) f16 ? launchAll<__half, 64>(a, D, index, ws, stream) : launchAll<__nv_bfloat16, 64>(a, D, index, ws, stream);
  else f16 ? launchAll<__half, 128>(a, D, index, ws, stream) : launchAll<__nv_bfloat16, 128>(a, D, index, ws, stream);
}

}  // namespace nsa
