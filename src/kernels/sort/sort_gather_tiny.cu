// The sort and the gather of a tiny batch (up to kWarpRankPairs pairs) in one
// launch: the decode layer's first kernel (cuda_backend.cu).
#include "kernels/sort/sort_internal.cuh"

namespace moekit::kernels {

namespace {

using sort_detail::add_diagnostics;
using sort_detail::kSortThreads;

// Up to kWarpRankPairs pairs (T <= 4 at k = 8): every block ranks the ids in
// its first warp (32 shuffles), block 0 writes the maps, the offsets and the
// diagnostics, and block r gathers the row of rank r (launch_permute's
// work). Launched the ordinary way, it lets the next kernel start at once:
// the decode GEMM 1 that follows ranks the ids itself (DecodeRouting) and
// streams its weights while this runs, one launch earlier than after a
// separate gather.
template <class IdT, class TIn, class TOut>
__global__ void __launch_bounds__(kSortThreads) sort_gather_tiny_kernel(
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
    for (int64_t e = threadIdx.x; e <= pl.num_local; e += kSortThreads)
      expert_offsets[e] = keys_below(ranked_keys, pairs, e);
    if (diagnostics != nullptr) add_diagnostics(ids, pairs / top_k, top_k, pl, diagnostics);
  }
  const int row = static_cast<int>(blockIdx.x);
  if (row >= pairs || ranked_keys[row] >= pl.num_local) return;
  const int32_t pair = ranked_pairs[row];
  const float w = pair_weights != nullptr ? pair_weights[pair] : 1.0f;
  copy_row<kSortThreads, 4>(hidden + pair / top_k * hidden_size, rows + static_cast<int64_t>(row) * hidden_size,
                            hidden_size, pair_weights != nullptr, w);
}

}  // namespace

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
          sort_gather_tiny_kernel<IdT, TIn, TOut><<<static_cast<unsigned>(pairs), kSortThreads, 0, stream>>>(
              ids, pairs, top_k, pl, static_cast<const TIn*>(hidden), pair_weights, hidden_size,
              static_cast<TOut*>(rows), b.pairs[0], b.pair_to_row, b.expert_offsets, diagnostics);
      });
    });
  };
  if (topk_ids64 != nullptr) run(int64_t{}); else run(int32_t{});
  return cudaGetLastError();
}

}  // namespace moekit::kernels
