// The sort's counting path (sort.cu says when it runs): keys are expert ids,
// so a pair's row is the count of smaller keys plus the count of equal keys
// before it. Warps rank their pairs with ballots over the key bits and
// per-warp histograms in shared memory, then add the prefix over warps,
// tiles and smaller keys. Stable, so it gives the other paths' answer.
#include "kernels/sort/sort_internal.cuh"

#include <cub/block/block_scan.cuh>

namespace moekit::kernels::sort_detail {

namespace {

// Keys are < bins = E_local + 1 <= kCountMaxBins. A block takes a tile of
// kCountTile pairs; each warp takes kCountRounds * 32 consecutive pairs of
// it, 32 a round, so pair order is (warp, round, lane) order. Up to one
// tile, that block is the whole sort (one launch); above, two launches
// (count_keys_kernel, then rank_scatter_kernel). Tiles stay small because
// one block ranks slowly (sort bench, H200, a first version: 4096 pairs in
// one block took 13 us, 8192 pairs in four blocks and two launches 10.5).
constexpr int kThreads = kSortThreads;
constexpr int kCountWarps = kThreads / 32;
constexpr int kCountRounds = kCountTile / kThreads;  // 4 pairs a thread
constexpr int kCountBinsPerThread = kCountMaxBins / kThreads;

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
  timeline::Scope timeline_scope(timeline::kSort);  // MOEKIT_TIMELINE builds only
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
  timeline::Scope timeline_scope(timeline::kSort);  // MOEKIT_TIMELINE builds only
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

}  // namespace

template <class IdT>
cudaError_t launch_counting_sort(const IdT* ids, int64_t pairs, int64_t top_k, const Placement& pl,
                                 const SortBuffers& b, moekit_diagnostics_t* diagnostics, cudaStream_t stream) {
  const int bins = static_cast<int>(pl.num_local + 1), bits = sort_key_bits(pl.num_local);
  if (pairs <= kCountTile) {  // one tile: one block, one launch
    rank_scatter_kernel<IdT, true><<<1, kThreads, 0, stream>>>(ids, pairs, top_k, pl, bins, bits, 1, nullptr,
                                                               b.pairs[0], b.pair_to_row, b.expert_offsets,
                                                               diagnostics);
    return cudaGetLastError();
  }
  const int64_t tiles = count_tiles(pairs);
  if (b.temp_bytes < static_cast<size_t>(tiles * bins) * sizeof(int32_t)) return cudaErrorInvalidValue;
  int32_t* counts = static_cast<int32_t*>(b.temp);  // [tiles, bins]
  count_keys_kernel<IdT><<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(ids, pairs, top_k, pl, bins, bits,
                                                                               counts, diagnostics);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  return launch_pdl(rank_scatter_kernel<IdT, false>, dim3(static_cast<unsigned>(tiles)), dim3(kThreads), 0, stream,
                    ids, pairs, top_k, pl, bins, bits, static_cast<int>(tiles), static_cast<const int32_t*>(counts),
                    b.pairs[0], b.pair_to_row, b.expert_offsets, static_cast<moekit_diagnostics_t*>(nullptr));
}

template cudaError_t launch_counting_sort<int32_t>(const int32_t*, int64_t, int64_t, const Placement&,
                                                   const SortBuffers&, moekit_diagnostics_t*, cudaStream_t);
template cudaError_t launch_counting_sort<int64_t>(const int64_t*, int64_t, int64_t, const Placement&,
                                                   const SortBuffers&, moekit_diagnostics_t*, cudaStream_t);

}  // namespace moekit::kernels::sort_detail
