// Sort: group the T*k (token, slot) pairs by local expert.
//
// One algorithm at every T (int32 or int64 ids), a stable sort of the pairs by
// key: the key of a pair is its local expert, or E_local for an invalid or remote id (so garbage
// never becomes an index); only the ceil(log2(E_local + 1)) key bits are
// sorted. Then the inverse map and the per-expert offsets are written.
// Three implementations of it, all stable and so all giving the one possible
// answer; by size:
//   up to 32 pairs (T <= 4 at k = 8): one block, one warp ranks them (a
//     stable rank is the count of smaller keys plus equal keys before);
//   up to 65536 pairs (the layer's chunk) with E_local < 1024: a counting
//     sort. Keys are small integers, so a pair's row is the count of smaller
//     keys plus the count of equal keys before it: warps rank their pairs
//     with ballots over the key bits and per-warp histograms in shared memory,
//     then add the prefix over warps, tiles and smaller keys. Up to 1024
//     pairs one block does it all in one launch; above, 1024-pair tiles in
//     two launches (count each tile's keys; rank, which overlaps the count
//     under PDL, then add the counts of earlier tiles and scatter);
//   otherwise cub::BlockRadixSort in one block up to 4096 pairs (1, 4 or
//     16 pairs per thread), or make_keys, cub::DeviceRadixSort (onesweep),
//     build_maps.
// (A tiled variant, one BlockRadixSort block per 4096-pair tile plus a scan
// of per-tile counts, measured slower than onesweep at every size on H200:
// a 4096-key block sort costs ~8 us on one SM at two blocks per SM.)
//
// Why this is fast at both ends: at T = 1 it is one launch of one block (a few
// microseconds, mostly launch latency). At T = 10^6 every pass is a coalesced
// stream over the pairs, and for E_local <= 255 the radix sort is a single
// 8-bit onesweep pass. Stability makes the row order a pure function of the input
// (pair order within an expert), so the size-based choice never changes a
// result; the tests compare both sides of every threshold with the reference
// exactly.
#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include "kernels/common.cuh"
#include "kernels/kernels.hpp"
#include "kernels/sort/sort_keys.cuh"

namespace moekit::kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxSmallItems = 16;                        // pairs per thread, one-block sort
constexpr int64_t kSmallPairs = kThreads * kMaxSmallItems;  // 4096

struct Counts {
  unsigned long long invalid_ids, no_valid, no_local;
};

struct CountsSum {
  __device__ Counts operator()(const Counts& a, const Counts& b) const {
    return {a.invalid_ids + b.invalid_ids, a.no_valid + b.no_valid, a.no_local + b.no_local};
  }
};

// Per-token counts of this block's tokens (grid-stride), added once per block.
template <class IdT>
__device__ void add_diagnostics(const IdT* __restrict__ ids, int64_t tokens, int64_t top_k,
                                const Placement& pl, moekit_diagnostics_t* diagnostics) {
  Counts c{0, 0, 0};
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t t = blockIdx.x * int64_t{kThreads} + threadIdx.x; t < tokens; t += stride) {
    int64_t invalid = 0, local = 0;
    for (int64_t s = 0; s < top_k; ++s) {
      const int64_t id = ids[t * top_k + s];
      invalid += (id < 0 || id >= pl.num_experts);
      local += local_key(id, pl) < pl.num_local;
    }
    c.invalid_ids += invalid;
    c.no_valid += (invalid == top_k);
    c.no_local += (local == 0);
  }
  using Reduce = cub::BlockReduce<Counts, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const Counts sum = Reduce(temp).Reduce(c, CountsSum());
  if (threadIdx.x == 0) {
    if (sum.invalid_ids) atomicAdd(&diagnostics->invalid_ids, sum.invalid_ids);
    if (sum.no_valid) atomicAdd(&diagnostics->tokens_without_valid_expert, sum.no_valid);
    if (sum.no_local) atomicAdd(&diagnostics->tokens_without_local_expert, sum.no_local);
  }
}

// offsets[e] = first position in sorted_keys [0, n) whose key >= e.
__device__ __forceinline__ int32_t lower_bound_key(const uint32_t* sorted_keys, int64_t n, int64_t e) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (sorted_keys[mid] < static_cast<uint32_t>(e)) lo = mid + 1; else hi = mid;
  }
  return static_cast<int32_t>(lo);
}

// The whole sort in one block for pairs <= kThreads * kItems: keys, a stable
// block radix sort, then maps and offsets from the sorted keys in shared memory.
template <int kItems, class IdT>
__global__ void __launch_bounds__(kThreads) sort_small_kernel(
    const IdT* __restrict__ ids, int64_t pairs, int64_t top_k, Placement pl, int bits,
    int32_t* __restrict__ sorted_pairs,
    int32_t* __restrict__ pair_to_row, int32_t* __restrict__ expert_offsets,
    moekit_diagnostics_t* diagnostics) {
  pdl_launch_dependents();  // the gather may launch now; it waits for this kernel's maps
  using BlockSort = cub::BlockRadixSort<uint32_t, kThreads, kItems, int32_t>;
  __shared__ union {
    typename BlockSort::TempStorage sort;
    uint32_t sorted_keys[kThreads * kItems];
  } smem;
  uint32_t keys[kItems];
  int32_t vals[kItems];
#pragma unroll
  for (int i = 0; i < kItems; ++i) {  // blocked: thread t holds [t*items, (t+1)*items)
    const int p = threadIdx.x * kItems + i;
    // Padding keys have every sorted bit set: they follow all real pairs
    // (after sentinel keys too, by stability, as they come last).
    keys[i] = p < pairs ? local_key(ids[p], pl) : 0xffffffffu;
    vals[i] = p;
  }
  if (kItems == 1 && pairs <= kWarpRankPairs) {
    // Up to 32 pairs (T <= 4 at k = 8): warp 0 ranks them directly, a stable
    // rank being the count of smaller keys plus equal keys before it, and
    // thread t takes the pair of rank t, as after the block sort (a third of
    // the radix sort's time, which at T = 1 is the layer's first step). Real
    // keys are below 2^bits and padding keys above, as the radix sort sees them.
    __shared__ int32_t ranked_vals[32];
    if (threadIdx.x < 32) {
      const int rank = warp_stable_rank(keys[0]);
      smem.sorted_keys[rank] = keys[0];
      ranked_vals[rank] = vals[0];
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      keys[0] = smem.sorted_keys[threadIdx.x];
      vals[0] = ranked_vals[threadIdx.x];
    }
  } else {
    BlockSort(smem.sort).Sort(keys, vals, 0, bits);
  }
  __syncthreads();  // the temp storage becomes sorted_keys
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int q = threadIdx.x * kItems + i;
    if (q < pairs) {
      smem.sorted_keys[q] = keys[i];
      sorted_pairs[q] = vals[i];
      pair_to_row[vals[i]] = keys[i] < pl.num_local ? q : -1;
    }
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e <= pl.num_local; e += kThreads)
    expert_offsets[e] = lower_bound_key(smem.sorted_keys, pairs, e);
  if (diagnostics != nullptr) add_diagnostics(ids, pairs / top_k, top_k, pl, diagnostics);
}

// ---- counting sort ------------------------------------------------------------
// Keys are < bins = E_local + 1 <= kCountMaxBins. A block takes a tile of
// kCountTile pairs; each warp takes kCountRounds * 32 consecutive pairs of
// it, 32 a round, so pair order is (warp, round, lane) order. Up to one
// tile, that block is the whole sort (one launch); above, two launches
// (count_keys_kernel, then rank_scatter_kernel). Tiles stay small because
// one block ranks slowly (sort bench, H200, a first version: 4096 pairs in
// one block took 13 us, 8192 pairs in four blocks and two launches 10.5).
constexpr int kCountTile = 1024;
constexpr int kCountWarps = kThreads / 32;
constexpr int kCountRounds = kCountTile / kThreads;  // 4 pairs a thread
constexpr int kCountMaxBins = 1024;
constexpr int64_t kCountMaxPairs = 65536;            // the layer's chunk (cuda_backend.cu)
constexpr int kCountBinsPerThread = kCountMaxBins / kThreads;

int64_t count_tiles(int64_t pairs) { return (pairs + kCountTile - 1) / kCountTile; }

__device__ __forceinline__ int64_t count_pair(int r) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  return static_cast<int64_t>(blockIdx.x) * kCountTile + warp * (kCountRounds * 32) + r * 32 + lane;
}

// The lanes of the warp whose key equals this lane's: one ballot per key
// bit (keys < 2^bits) and one for the past-the-end sentinel, as CUB's
// block radix ranking matches digits.
__device__ __forceinline__ unsigned warp_peers(uint32_t key, int bits) {
  const bool valid = key != 0xffffffffu;
  const unsigned v = __ballot_sync(0xffffffffu, valid);
  unsigned peers = valid ? v : ~v;
  for (int i = 0; i < bits; ++i) {
    const bool bit = (key >> i) & 1u;
    const unsigned b = __ballot_sync(0xffffffffu, bit);
    peers &= bit ? b : ~b;
  }
  return peers;
}

// The thread's keys, every id load issued before the first is used (the
// rounds' shared-memory updates would otherwise order one load a round);
// 0xffffffff past the last pair.
template <class IdT>
__device__ __forceinline__ void load_keys(const IdT* __restrict__ ids, int64_t pairs, const Placement& pl,
                                          uint32_t (&keys)[kCountRounds]) {
  IdT id[kCountRounds];
#pragma unroll
  for (int r = 0; r < kCountRounds; ++r) {
    const int64_t p = count_pair(r);
    id[r] = p < pairs ? ids[p] : IdT{-1};
  }
#pragma unroll
  for (int r = 0; r < kCountRounds; ++r) keys[r] = count_pair(r) < pairs ? local_key(id[r], pl) : 0xffffffffu;
}

// counts [tiles, bins]: how many of tile t's pairs have key b. A warp's equal
// keys are added by one lane (one shared atomic a key a round, so a tile of
// one repeated expert does not serialize 2048 atomics).
template <class IdT>
__global__ void __launch_bounds__(kThreads) count_keys_kernel(
    const IdT* __restrict__ ids, int64_t pairs, int64_t top_k, Placement pl, int bins, int bits,
    int32_t* __restrict__ counts, moekit_diagnostics_t* diagnostics) {
  pdl_launch_dependents();  // launched the ordinary way: the ranking kernel may start ranking now
  __shared__ int32_t hist[kCountMaxBins];
  for (int b = threadIdx.x; b < bins; b += kThreads) hist[b] = 0;
  __syncthreads();
  const unsigned lane_lt = (1u << (threadIdx.x % 32)) - 1;
  uint32_t keys[kCountRounds];
  load_keys(ids, pairs, pl, keys);
#pragma unroll
  for (int r = 0; r < kCountRounds; ++r) {
    const unsigned peers = warp_peers(keys[r], bits);
    if (keys[r] != 0xffffffffu && (peers & lane_lt) == 0) atomicAdd(&hist[keys[r]], __popc(peers));
  }
  __syncthreads();
  for (int b = threadIdx.x; b < bins; b += kThreads)
    counts[static_cast<int64_t>(blockIdx.x) * bins + b] = hist[b];
  if (diagnostics != nullptr) add_diagnostics(ids, pairs / top_k, top_k, pl, diagnostics);
}

// Ranks the tile's pairs, then scatters them:
//   row = (pairs of smaller keys) + (key's pairs in earlier tiles)
//       + (key's pairs in earlier warps of this tile) + (rank in the warp).
// Block 0 also writes expert_offsets (the smaller-key counts).
// kWholeBatch: one block holds every pair, its own histogram is the whole
// count, so it needs no counts and is the sort's only launch (ordinary, so
// the gather may launch at once and wait for it); otherwise it is launched
// with PDL after count_keys_kernel and waits for its counts after ranking.
template <class IdT, bool kWholeBatch>
__global__ void __launch_bounds__(kThreads) rank_scatter_kernel(
    const IdT* __restrict__ ids, int64_t pairs, int64_t top_k, Placement pl, int bins, int bits, int tiles,
    const int32_t* __restrict__ counts, int32_t* __restrict__ sorted_pairs,
    int32_t* __restrict__ pair_to_row, int32_t* __restrict__ expert_offsets,
    moekit_diagnostics_t* diagnostics) {
  if constexpr (kWholeBatch) pdl_launch_dependents();
  using Scan = cub::BlockScan<int32_t, kThreads>;
  __shared__ int32_t warp_hist[kCountWarps][kCountMaxBins];  // counts, then exclusive prefix over warps
  __shared__ int32_t base[kCountMaxBins];                     // row of the key's first pair of this tile
  __shared__ int32_t total[kCountMaxBins];                    // the key's pairs in every tile
  __shared__ typename Scan::TempStorage scan;
  for (int b = threadIdx.x; b < bins; b += kThreads)
#pragma unroll
    for (int w = 0; w < kCountWarps; ++w) warp_hist[w][b] = 0;
  __syncthreads();
  // The ids were complete before the sort's first kernel started (launched
  // the ordinary way), so ranking overlaps count_keys_kernel.
  const int warp = threadIdx.x / 32;
  const unsigned lane_lt = (1u << (threadIdx.x % 32)) - 1;
  uint32_t keys[kCountRounds];
  int32_t ranks[kCountRounds];
  load_keys(ids, pairs, pl, keys);
#pragma unroll
  for (int r = 0; r < kCountRounds; ++r) {
    const unsigned peers = warp_peers(keys[r], bits);
    const int before = keys[r] != 0xffffffffu ? warp_hist[warp][keys[r]] : 0;
    __syncwarp();
    if (keys[r] != 0xffffffffu && (peers & lane_lt) == 0) warp_hist[warp][keys[r]] = before + __popc(peers);
    __syncwarp();
    ranks[r] = before + __popc(peers & lane_lt);
  }
  __syncthreads();
  if constexpr (!kWholeBatch) {
    pdl_wait();  // the tiles' counts
    pdl_launch_dependents();
  }
  // Per key (a thread a key, so each thread reads at most ceil(bins / 256)
  // columns of the counts): the prefix over this tile's warps, the key's
  // pairs in earlier tiles and in all tiles.
  for (int b = threadIdx.x; b < bins; b += kThreads) {
    int32_t run = 0;
#pragma unroll
    for (int w = 0; w < kCountWarps; ++w) {
      const int32_t c = warp_hist[w][b];
      warp_hist[w][b] = run;
      run += c;
    }
    int32_t earlier = 0, all = run;
    if constexpr (!kWholeBatch) {
      all = 0;
#pragma unroll 8
      for (int t = 0; t < tiles; ++t) {
        const int32_t c = __ldg(counts + static_cast<int64_t>(t) * bins + b);
        earlier += t < static_cast<int>(blockIdx.x) ? c : 0;
        all += c;
      }
    }
    base[b] = earlier;
    total[b] = all;
  }
  __syncthreads();
  // Then the scan over keys, blocked: thread t holds keys [4t, 4t + 4).
  int32_t totals[kCountBinsPerThread], starts[kCountBinsPerThread];
#pragma unroll
  for (int j = 0; j < kCountBinsPerThread; ++j) {
    const int b = threadIdx.x * kCountBinsPerThread + j;
    totals[j] = b < bins ? total[b] : 0;
  }
  Scan(scan).ExclusiveSum(totals, starts);
#pragma unroll
  for (int j = 0; j < kCountBinsPerThread; ++j) {
    const int b = threadIdx.x * kCountBinsPerThread + j;
    if (b < bins) {
      base[b] += starts[j];
      if (blockIdx.x == 0) expert_offsets[b] = starts[j];  // bins = E_local + 1 entries
    }
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < kCountRounds; ++r) {
    if (keys[r] == 0xffffffffu) continue;
    const int64_t p = count_pair(r);
    const int32_t row = base[keys[r]] + warp_hist[warp][keys[r]] + ranks[r];
    sorted_pairs[row] = static_cast<int32_t>(p);
    pair_to_row[p] = keys[r] < pl.num_local ? row : -1;
  }
  if constexpr (kWholeBatch)
    if (diagnostics != nullptr) add_diagnostics(ids, pairs / top_k, top_k, pl, diagnostics);
}

// ---- the sort and the gather of a tiny batch in one launch --------------------
// Up to kWarpRankPairs pairs (T <= 4 at k = 8): every block ranks the ids in
// its first warp (32 shuffles), block 0 writes the maps, the offsets and the
// diagnostics, and block r gathers the row of rank r (launch_permute's
// work). Launched the ordinary way, it lets the next kernel start at once:
// the decode GEMM 1 that follows ranks the ids itself (DecodeRouting) and
// streams its weights while this runs, one launch earlier than after a
// separate gather.
template <class IdT, class TIn, class TOut>
__global__ void __launch_bounds__(kThreads) sort_gather_tiny_kernel(
    const IdT* __restrict__ ids, int64_t pairs, int64_t top_k, Placement pl,
    const TIn* __restrict__ hidden,          // [T, H]
    const float* __restrict__ pair_weights,  // [T*k] or null
    int64_t hidden_size,
    TOut* __restrict__ rows,                 // [T*k, H] expert order
    int32_t* __restrict__ sorted_pairs, int32_t* __restrict__ pair_to_row,
    int32_t* __restrict__ expert_offsets, moekit_diagnostics_t* diagnostics) {
  pdl_launch_dependents();
  __shared__ uint32_t ranked_keys[kWarpRankPairs];
  __shared__ int32_t ranked_pairs[kWarpRankPairs];
  if (threadIdx.x < 32) {
    const int lane = static_cast<int>(threadIdx.x);
    const uint32_t key = lane < pairs ? local_key(ids[lane], pl) : 0xffffffffu;
    const int rank = warp_stable_rank(key);
    ranked_keys[rank] = key;
    ranked_pairs[rank] = lane;
    if (blockIdx.x == 0 && lane < pairs) {
      sorted_pairs[rank] = lane;
      pair_to_row[lane] = key < pl.num_local ? rank : -1;
    }
  }
  __syncthreads();
  if (blockIdx.x == 0) {
    for (int64_t e = threadIdx.x; e <= pl.num_local; e += kThreads) {
      int32_t below = 0;  // the first row of key >= e in the ranked keys
      for (int j = 0; j < pairs; ++j) below += ranked_keys[j] < static_cast<uint64_t>(e);
      expert_offsets[e] = below;
    }
    if (diagnostics != nullptr) add_diagnostics(ids, pairs / top_k, top_k, pl, diagnostics);
  }
  const int row = static_cast<int>(blockIdx.x);
  if (row >= pairs || ranked_keys[row] >= pl.num_local) return;
  const int32_t pair = ranked_pairs[row];
  const float w = pair_weights != nullptr ? pair_weights[pair] : 1.0f;
  copy_row<kThreads, 4>(hidden + pair / top_k * hidden_size, rows + static_cast<int64_t>(row) * hidden_size,
                        hidden_size, pair_weights != nullptr, w);
}

// keys [T*k], pairs [T*k]; diagnostics per token when requested.
template <class IdT>
__global__ void __launch_bounds__(kThreads) make_keys_kernel(
    const IdT* __restrict__ ids, int64_t pairs, int64_t top_k, Placement pl,
    uint32_t* __restrict__ keys, int32_t* __restrict__ vals,
    moekit_diagnostics_t* diagnostics) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t p = blockIdx.x * int64_t{kThreads} + threadIdx.x; p < pairs; p += stride) {
    keys[p] = local_key(ids[p], pl);
    vals[p] = static_cast<int32_t>(p);
  }
  if (diagnostics != nullptr) add_diagnostics(ids, pairs / top_k, top_k, pl, diagnostics);
}

// pair_to_row [T*k] and expert_offsets [E_local + 1] from the sorted keys.
__global__ void __launch_bounds__(kThreads) build_maps_kernel(
    const uint32_t* __restrict__ sorted_keys, const int32_t* __restrict__ sorted_pairs,
    int64_t pairs, int64_t num_local, int32_t* __restrict__ pair_to_row,
    int32_t* __restrict__ expert_offsets) {
  pdl_launch_dependents();  // as in sort_small_kernel
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t work = pairs > num_local + 1 ? pairs : num_local + 1;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < work; i += stride) {
    if (i < pairs) {
      const int32_t row = sorted_keys[i] < num_local ? static_cast<int32_t>(i) : -1;
      pair_to_row[sorted_pairs[i]] = row;
    }
    if (i <= num_local) expert_offsets[i] = lower_bound_key(sorted_keys, pairs, i);
  }
}

}  // namespace

int sort_key_bits(int64_t num_local_experts) {
  int bits = 1;
  while ((int64_t{1} << bits) <= num_local_experts) ++bits;  // keys reach E_local itself
  return bits;
}

bool sort_path_fits(SortPath path, int64_t pairs, int64_t num_local_experts) {
  switch (path) {
    case SortPath::kAuto: return true;
    case SortPath::kRadix: return pairs > kSmallPairs;  // its scratch is sized above the one-block path
    case SortPath::kOneBlock: return pairs <= kSmallPairs;
    case SortPath::kCounting: return pairs <= kCountMaxPairs && num_local_experts < kCountMaxBins;
  }
  return false;
}

cudaError_t sort_temp_bytes(int64_t pairs, int64_t num_local_experts, size_t* bytes) {
  // Every path that can take this many pairs may be forced (tests, the sort
  // bench), so the scratch covers each: the counting sort's per-tile counts
  // and, above the one-block size, CUB's temp storage.
  *bytes = 0;
  if (pairs <= 0) return cudaSuccess;
  if (pairs > kCountTile && sort_path_fits(SortPath::kCounting, pairs, num_local_experts))
    *bytes = static_cast<size_t>(count_tiles(pairs) * (num_local_experts + 1)) * sizeof(int32_t);
  if (pairs <= kSmallPairs) return cudaSuccess;
  cub::DoubleBuffer<uint32_t> keys(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> vals(nullptr, nullptr);
  size_t radix = 0;
  const cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, radix, keys, vals, static_cast<int>(pairs), 0,
                                                        sort_key_bits(num_local_experts));
  *bytes = *bytes > radix ? *bytes : radix;
  return e;
}

namespace {

template <class IdT>
cudaError_t sort_ids(const IdT* topk_ids, int64_t num_tokens, int64_t top_k, int64_t num_experts,
                     int64_t num_local_experts, int64_t ep_rank, const int32_t* expert_map,
                     const SortBuffers& b, moekit_diagnostics_t* diagnostics,
                     const int32_t** sorted_pairs, const DeviceInfo& dev, cudaStream_t stream,
                     SortPath path) {
  const int64_t pairs = num_tokens * top_k;
  const Placement pl{num_experts, ep_rank * num_local_experts, num_local_experts, expert_map};
  if (!sort_path_fits(path, pairs, num_local_experts)) return cudaErrorNotSupported;
  if (path == SortPath::kAuto)
    path = pairs <= kWarpRankPairs                                       ? SortPath::kOneBlock
           : sort_path_fits(SortPath::kCounting, pairs, num_local_experts) ? SortPath::kCounting
           : pairs <= kSmallPairs                                          ? SortPath::kOneBlock
                                                                          : SortPath::kRadix;
  if (pairs == 0) path = SortPath::kOneBlock;  // offsets only
  if (path == SortPath::kCounting) {
    const int bins = static_cast<int>(num_local_experts + 1), bits = sort_key_bits(num_local_experts);
    *sorted_pairs = b.pairs[0];
    if (pairs <= kCountTile) {  // one tile: one block, one launch
      rank_scatter_kernel<IdT, true><<<1, kThreads, 0, stream>>>(topk_ids, pairs, top_k, pl, bins, bits, 1, nullptr,
                                                                 b.pairs[0], b.pair_to_row, b.expert_offsets,
                                                                 diagnostics);
      return cudaGetLastError();
    }
    const int64_t tiles = count_tiles(pairs);
    if (b.temp_bytes < static_cast<size_t>(tiles * bins) * sizeof(int32_t)) return cudaErrorInvalidValue;
    int32_t* counts = static_cast<int32_t*>(b.temp);  // [tiles, bins]
    count_keys_kernel<IdT><<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(
        topk_ids, pairs, top_k, pl, bins, bits, counts, diagnostics);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    return launch_pdl(rank_scatter_kernel<IdT, false>, dim3(static_cast<unsigned>(tiles)), dim3(kThreads), 0,
                      stream, topk_ids, pairs, top_k, pl, bins, bits, static_cast<int>(tiles),
                      static_cast<const int32_t*>(counts), b.pairs[0], b.pair_to_row, b.expert_offsets,
                      static_cast<moekit_diagnostics_t*>(nullptr));
  }
  if (path == SortPath::kOneBlock) {  // the smallest block that holds every pair
    auto kernel = pairs <= kThreads       ? sort_small_kernel<1, IdT>
                  : pairs <= 4 * kThreads ? sort_small_kernel<4, IdT>
                                          : sort_small_kernel<kMaxSmallItems, IdT>;
    kernel<<<1, kThreads, 0, stream>>>(topk_ids, pairs, top_k, pl, sort_key_bits(num_local_experts),
                                       b.pairs[0], b.pair_to_row,
                                       b.expert_offsets, diagnostics);
    *sorted_pairs = b.pairs[0];
    return cudaGetLastError();
  }
  make_keys_kernel<IdT><<<grid_for((pairs + kThreads - 1) / kThreads, dev.sm_count), kThreads, 0,
                     stream>>>(topk_ids, pairs, top_k, pl, b.keys[0], b.pairs[0], diagnostics);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;

  cub::DoubleBuffer<uint32_t> keys(b.keys[0], b.keys[1]);
  cub::DoubleBuffer<int32_t> vals(b.pairs[0], b.pairs[1]);
  size_t temp_bytes = b.temp_bytes;
  if (cudaError_t e = cub::DeviceRadixSort::SortPairs(b.temp, temp_bytes, keys, vals,
                                                      static_cast<int>(pairs), 0,
                                                      sort_key_bits(num_local_experts), stream);
      e != cudaSuccess)
    return e;
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;

  const int64_t work = pairs > num_local_experts + 1 ? pairs : num_local_experts + 1;
  build_maps_kernel<<<grid_for((work + kThreads - 1) / kThreads, dev.sm_count), kThreads, 0,
                      stream>>>(keys.Current(), vals.Current(), pairs, num_local_experts,
                                b.pair_to_row, b.expert_offsets);
  *sorted_pairs = vals.Current();
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_sort(const int32_t* topk_ids, const int64_t* topk_ids64, int64_t num_tokens,
                        int64_t top_k, int64_t num_experts, int64_t num_local_experts, int64_t ep_rank,
                        const int32_t* expert_map, const SortBuffers& b,
                        moekit_diagnostics_t* diagnostics, const int32_t** sorted_pairs,
                        const DeviceInfo& dev, cudaStream_t stream, SortPath path) {
  if (topk_ids64 != nullptr)
    return sort_ids(topk_ids64, num_tokens, top_k, num_experts, num_local_experts, ep_rank,
                    expert_map, b, diagnostics, sorted_pairs, dev, stream, path);
  return sort_ids(topk_ids, num_tokens, top_k, num_experts, num_local_experts, ep_rank, expert_map,
                  b, diagnostics, sorted_pairs, dev, stream, path);
}

cudaError_t launch_sort_gather_tiny(const int32_t* topk_ids, const int64_t* topk_ids64, int64_t num_tokens,
                                    int64_t top_k, int64_t num_experts, int64_t num_local_experts,
                                    int64_t ep_rank, const int32_t* expert_map, const SortBuffers& b,
                                    moekit_diagnostics_t* diagnostics, const int32_t** sorted_pairs,
                                    const void* hidden, moekit_dtype_t input_dtype, const float* pair_weights,
                                    int64_t hidden_size, void* rows, moekit_dtype_t compute_dtype,
                                    cudaStream_t stream) {
  const int64_t pairs = num_tokens * top_k;
  if (pairs < 1 || pairs > kWarpRankPairs || compute_dtype == MOEKIT_DTYPE_FP32) return cudaErrorNotSupported;
  const Placement pl{num_experts, ep_rank * num_local_experts, num_local_experts, expert_map};
  *sorted_pairs = b.pairs[0];
  auto run = [&](auto id_tag) {
    using IdT = decltype(id_tag);
    const IdT* ids = topk_ids64 != nullptr ? reinterpret_cast<const IdT*>(topk_ids64)
                                           : reinterpret_cast<const IdT*>(topk_ids);
    dispatch_dtype(input_dtype, [&](auto in) {
      using TIn = decltype(in);
      dispatch_dtype(compute_dtype, [&](auto out) {
        using TOut = decltype(out);
        if constexpr (sizeof(TOut) == 2)
          sort_gather_tiny_kernel<IdT, TIn, TOut><<<static_cast<unsigned>(pairs), kThreads, 0, stream>>>(
              ids, pairs, top_k, pl, static_cast<const TIn*>(hidden), pair_weights, hidden_size,
              static_cast<TOut*>(rows), b.pairs[0], b.pair_to_row, b.expert_offsets, diagnostics);
      });
    });
  };
  if (topk_ids64 != nullptr) run(int64_t{}); else run(int32_t{});
  return cudaGetLastError();
}

}  // namespace moekit::kernels
