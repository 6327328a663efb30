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
//     sort (sort_counting.cu). Keys are small integers, so a pair's row is
//     the count of smaller keys plus the count of equal keys before it:
//     warps rank their pairs with ballots over the key bits and per-warp
//     histograms in shared memory, then add the prefix over warps, tiles and
//     smaller keys. Up to 1024 pairs one block does it all in one launch;
//     above, 1024-pair tiles in two launches (count each tile's keys; rank,
//     which overlaps the count under PDL, then add the counts of earlier
//     tiles and scatter);
//   otherwise cub::BlockRadixSort in one block up to 4096 pairs (1, 4 or
//     16 pairs per thread), or make_keys, cub::DeviceRadixSort (onesweep),
//     build_maps.
// (An earlier tiled variant, one BlockRadixSort block per 4096-pair tile plus
// a scan of per-tile counts, measured slower than onesweep at every size on
// H200: a 4096-key block sort costs ~8 us on one SM at two blocks per SM. The
// counting sort sorts nothing within a tile, and beats onesweep 3-4x.)
//
// Why this is fast at both ends: at T = 1 it is one launch of one block (a few
// microseconds, mostly launch latency). At T = 10^6 every pass is a coalesced
// stream over the pairs, and for E_local <= 255 the radix sort is a single
// 8-bit onesweep pass. Stability makes the row order a pure function of the input
// (pair order within an expert), so the size-based choice never changes a
// result; the tests compare both sides of every threshold with the reference
// exactly.
#include <cub/block/block_radix_sort.cuh>
#include <cub/device/device_radix_sort.cuh>

#include "kernels/sort/sort_internal.cuh"

namespace moekit::kernels {

namespace {

using namespace sort_detail;
constexpr int kThreads = kSortThreads;
constexpr int kMaxSmallItems = 16;                        // pairs per thread, one-block sort
constexpr int64_t kSmallPairs = kThreads * kMaxSmallItems;  // 4096

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
  timeline::Scope timeline_scope(timeline::kSort);  // MOEKIT_TIMELINE builds only
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

// keys [T*k], pairs [T*k]; diagnostics per token when requested.
template <class IdT>
__global__ void __launch_bounds__(kThreads) make_keys_kernel(
    const IdT* __restrict__ ids, int64_t pairs, int64_t top_k, Placement pl,
    uint32_t* __restrict__ keys, int32_t* __restrict__ vals,
    moekit_diagnostics_t* diagnostics) {
  timeline::Scope timeline_scope(timeline::kSort);  // MOEKIT_TIMELINE builds only
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
  timeline::Scope timeline_scope(timeline::kSort);  // MOEKIT_TIMELINE builds only
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
    *sorted_pairs = b.pairs[0];
    return sort_detail::launch_counting_sort(topk_ids, pairs, top_k, pl, b, diagnostics, stream);
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

}  // namespace moekit::kernels
