// Sort: group the T*k (token, slot) pairs by local expert.
//
// One algorithm at every T: (1) one pass writes a key per pair (its local
// expert, or E_local for an invalid/remote id, so garbage never becomes an
// index) and the pair index as value; (2) CUB's stable LSD radix sort over only
// the ceil(log2(E_local + 1)) key bits; (3) one pass writes the inverse map and
// the per-expert offsets (each a binary search over the sorted keys).
//
// Why this is fast at both ends: at T = 1 it is three small launches (CUB
// dispatches its single-tile kernel below a few thousand items) and no host
// work beyond the launches. At T = 10^6 every pass is a coalesced stream over
// the pairs, and for E_local <= 255 the radix sort is a single 8-bit onesweep
// pass. Stability makes the row order a pure function of the input (pair order
// within an expert), so CUB's internal path choice never changes a result.
#include <cub/block/block_reduce.cuh>
#include <cub/device/device_radix_sort.cuh>

#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

constexpr int kThreads = 256;

struct Counts {
  unsigned long long invalid_ids, no_valid, no_local;
};

struct CountsSum {
  __device__ Counts operator()(const Counts& a, const Counts& b) const {
    return {a.invalid_ids + b.invalid_ids, a.no_valid + b.no_valid, a.no_local + b.no_local};
  }
};

__device__ __forceinline__ uint32_t local_key(int32_t id, int64_t num_experts, int64_t first,
                                              int64_t num_local) {
  // int64 arithmetic: id - first cannot overflow, and no id outside
  // [0, num_experts) ever reaches the subtraction's result.
  const int64_t e = static_cast<int64_t>(id) - first;
  const bool ok = id >= 0 && id < num_experts && e >= 0 && e < num_local;
  return ok ? static_cast<uint32_t>(e) : static_cast<uint32_t>(num_local);
}

// keys [T*k], pairs [T*k]; diagnostics per token when requested.
__global__ void __launch_bounds__(kThreads) make_keys_kernel(
    const int32_t* __restrict__ ids, int64_t pairs, int64_t top_k, int64_t num_experts,
    int64_t first, int64_t num_local, uint32_t* __restrict__ keys, int32_t* __restrict__ vals,
    moekit_diagnostics_t* diagnostics) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t p = blockIdx.x * int64_t{kThreads} + threadIdx.x; p < pairs; p += stride) {
    keys[p] = local_key(ids[p], num_experts, first, num_local);
    vals[p] = static_cast<int32_t>(p);
  }
  if (diagnostics == nullptr) return;  // uniform across the grid
  Counts c{0, 0, 0};
  const int64_t tokens = pairs / top_k;
  for (int64_t t = blockIdx.x * int64_t{kThreads} + threadIdx.x; t < tokens; t += stride) {
    int64_t invalid = 0, local = 0;
    for (int64_t s = 0; s < top_k; ++s) {
      const int32_t id = ids[t * top_k + s];
      invalid += (id < 0 || id >= num_experts);
      local += local_key(id, num_experts, first, num_local) < num_local;
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

// pair_to_row [T*k] and expert_offsets [E_local + 1] from the sorted keys.
__global__ void __launch_bounds__(kThreads) build_maps_kernel(
    const uint32_t* __restrict__ sorted_keys, const int32_t* __restrict__ sorted_pairs,
    int64_t pairs, int64_t num_local, int32_t* __restrict__ pair_to_row,
    int32_t* __restrict__ expert_offsets) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t work = pairs > num_local + 1 ? pairs : num_local + 1;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < work; i += stride) {
    if (i < pairs) {
      const int32_t row = sorted_keys[i] < num_local ? static_cast<int32_t>(i) : -1;
      pair_to_row[sorted_pairs[i]] = row;
    }
    if (i <= num_local) {  // offsets[e] = first row whose key >= e
      int64_t lo = 0, hi = pairs;
      while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (sorted_keys[mid] < static_cast<uint32_t>(i)) lo = mid + 1; else hi = mid;
      }
      expert_offsets[i] = static_cast<int32_t>(lo);
    }
  }
}

}  // namespace

int sort_key_bits(int64_t num_local_experts) {
  int bits = 1;
  while ((int64_t{1} << bits) <= num_local_experts) ++bits;  // keys reach E_local itself
  return bits;
}

cudaError_t sort_temp_bytes(int64_t pairs, int64_t num_local_experts, size_t* bytes) {
  cub::DoubleBuffer<uint32_t> keys(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> vals(nullptr, nullptr);
  *bytes = 0;
  return cub::DeviceRadixSort::SortPairs(nullptr, *bytes, keys, vals, static_cast<int>(pairs), 0,
                                         sort_key_bits(num_local_experts));
}

cudaError_t launch_sort(const int32_t* topk_ids, int64_t num_tokens, int64_t top_k,
                        int64_t num_experts, int64_t num_local_experts, int64_t ep_rank,
                        const SortBuffers& b, moekit_diagnostics_t* diagnostics,
                        const int32_t** sorted_pairs, const DeviceInfo& dev, cudaStream_t stream) {
  const int64_t pairs = num_tokens * top_k;
  const int64_t first = ep_rank * num_local_experts;
  make_keys_kernel<<<grid_for((pairs + kThreads - 1) / kThreads, dev.sm_count), kThreads, 0,
                     stream>>>(topk_ids, pairs, top_k, num_experts, first, num_local_experts,
                               b.keys[0], b.pairs[0], diagnostics);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;

  cub::DoubleBuffer<uint32_t> keys(b.keys[0], b.keys[1]);
  cub::DoubleBuffer<int32_t> vals(b.pairs[0], b.pairs[1]);
  size_t temp_bytes = b.cub_temp_bytes;
  if (cudaError_t e = cub::DeviceRadixSort::SortPairs(b.cub_temp, temp_bytes, keys, vals,
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

}  // namespace moekit::kernels
