// What the sort's kernel files (sort.cu, sort_counting.cu, sort_gather_tiny.cu)
// share: the block size, the diagnostics count and the counting sort's limits
// and launcher. Included by those files only.
#pragma once

#include <cub/block/block_reduce.cuh>

#include "kernels/common.cuh"
#include "kernels/kernels.hpp"
#include "kernels/sort/sort_keys.cuh"

namespace moekit::kernels::sort_detail {

constexpr int kSortThreads = 256;

// The counting sort (sort_counting.cu): tiles of kCountTile pairs, keys
// below kCountMaxBins (E_local + 1), at most kCountMaxPairs pairs (the
// layer's chunk, cuda_backend.cu).
constexpr int kCountTile = 1024;
constexpr int kCountMaxBins = 1024;
constexpr int64_t kCountMaxPairs = 65536;
inline int64_t count_tiles(int64_t pairs) { return (pairs + kCountTile - 1) / kCountTile; }

// Sorts pairs <= kCountMaxPairs with E_local + 1 <= kCountMaxBins into
// b.pairs[0], b.pair_to_row and b.expert_offsets (b.temp: count_tiles(pairs)
// * (E_local + 1) int32 above one tile). Instantiated for int32 and int64 ids.
template <class IdT>
cudaError_t launch_counting_sort(const IdT* ids, int64_t pairs, int64_t top_k, const Placement& pl,
                                 const SortBuffers& b, moekit_diagnostics_t* diagnostics, cudaStream_t stream);

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
__device__ __forceinline__ void add_diagnostics(const IdT* __restrict__ ids, int64_t tokens, int64_t top_k,
                                                const Placement& pl, moekit_diagnostics_t* diagnostics) {
  Counts c{0, 0, 0};
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kSortThreads;
  for (int64_t t = blockIdx.x * int64_t{kSortThreads} + threadIdx.x; t < tokens; t += stride) {
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
  using Reduce = cub::BlockReduce<Counts, kSortThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const Counts sum = Reduce(temp).Reduce(c, CountsSum());
  if (threadIdx.x == 0) {
    if (sum.invalid_ids) atomicAdd(&diagnostics->invalid_ids, sum.invalid_ids);
    if (sum.no_valid) atomicAdd(&diagnostics->tokens_without_valid_expert, sum.no_valid);
    if (sum.no_local) atomicAdd(&diagnostics->tokens_without_local_expert, sum.no_local);
  }
}

}  // namespace moekit::kernels::sort_detail
