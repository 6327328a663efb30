// The sort and the gather of a tiny batch (up to kWarpRankPairs pairs) in one
// launch: the decode layer's first kernel (cuda_backend.cu).
#include "kernels/quant/quantize_rows.cuh"
#include "kernels/sort/sort_internal.cuh"

namespace moekit::kernels {

namespace {

using sort_detail::add_diagnostics;
using sort_detail::kSortThreads;

// Up to kWarpRankPairs pairs (T <= 4 at k = 8): every block ranks the ids in
// its first warp (32 shuffles), block 0 writes the maps, the offsets and the
// diagnostics, and block r gathers the row of rank r (launch_permute's
// work), or with kQuant gathers and quantizes it with block scales
// (launch_permute_quant's, with the same row routine, so the same bytes and
// scales). Launched the ordinary way, it lets the next kernel start at once:
// the decode GEMM 1 that follows ranks the ids itself (DecodeRouting) and
// streams its weights while this runs, one launch earlier than after a
// separate gather.
template <class IdT, class TIn, class TOut, bool kQuant>
__global__ void __launch_bounds__(kSortThreads) sort_gather_tiny_kernel(
    const IdT* __restrict__ ids, int64_t pairs, int64_t top_k, Placement pl,
    const TIn* __restrict__ hidden,          // [T, H]
    const float* __restrict__ pair_weights,  // [T*k] or null
    int64_t hidden_size,
    TOut* __restrict__ rows,                 // [T*k, H] expert order (16-bit)
    QuantRows q,                             // kQuant: e4m3 rows and their block scales instead
    int32_t* __restrict__ sorted_pairs, int32_t* __restrict__ pair_to_row,
    int32_t* __restrict__ expert_offsets, moekit_diagnostics_t* diagnostics) {
  timeline::Scope timeline_scope(timeline::kSortGatherTiny);  // MOEKIT_TIMELINE builds only
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
  if constexpr (kQuant) {
    // The row's place among its expert's rows (the sort's offsets), where
    // its scales go: column-major [groups, rows_e] from first * groups.
    const uint32_t e = ranked_keys[row];
    const int64_t first = keys_below(ranked_keys, pairs, e);
    const int64_t rows_e = keys_below(ranked_keys, pairs, e + 1) - first, groups = fp8_blocks(hidden_size);
    float* sc = q.scales + first * groups + (row - first);
    uint8_t* dst = q.out + static_cast<int64_t>(row) * hidden_size;
    // One warp step a pass, so the block's 8 warps share a row's groups
    // (16 a step) instead of 2 warps taking 8 each.
    const quant::GatherSource<TIn, 1> src{hidden, nullptr, pair_weights, top_k};
    constexpr int kWarpGroups = 2;  // groups of one warp's pass
    quant::quantize_groups(src, {hidden + pair / top_k * hidden_size, w}, hidden_size, dst, sc, rows_e,
                           kWarpGroups * (threadIdx.x / 32), groups, kWarpGroups * (kSortThreads / 32));
  } else {
    copy_row<kSortThreads, 4>(hidden + pair / top_k * hidden_size, rows + static_cast<int64_t>(row) * hidden_size,
                              hidden_size, pair_weights != nullptr, w);
  }
}

}  // namespace

cudaError_t launch_sort_gather_tiny(const int32_t* topk_ids, const int64_t* topk_ids64, int64_t num_tokens,
                                    int64_t top_k, int64_t num_experts, int64_t num_local_experts,
                                    int64_t ep_rank, const int32_t* expert_map, const SortBuffers& b,
                                    moekit_diagnostics_t* diagnostics, const int32_t** sorted_pairs,
                                    const void* hidden, moekit_dtype_t input_dtype, const float* pair_weights,
                                    int64_t hidden_size, void* rows, moekit_dtype_t compute_dtype,
                                    const QuantRows* quant, cudaStream_t stream) {
  const int64_t pairs = num_tokens * top_k;
  if (pairs < 1 || pairs > kWarpRankPairs || compute_dtype == MOEKIT_DTYPE_FP32) return cudaErrorNotSupported;
  // fp8: block scaling, the input already the 16-bit compute dtype (launch_permute_quant's condition).
  if (quant != nullptr && (quant->kind != MOEKIT_QUANT_FP8_BLOCK || input_dtype != compute_dtype))
    return cudaErrorNotSupported;
  const Placement pl{num_experts, ep_rank * num_local_experts, num_local_experts, expert_map};
  *sorted_pairs = b.pairs[0];
  bool launched = false;
  auto launch = [&](auto id_tag, auto in_tag, auto out_tag, auto quant_tag) {
    using IdT = decltype(id_tag);
    using TIn = decltype(in_tag);
    using TOut = decltype(out_tag);
    const IdT* ids = topk_ids64 != nullptr ? reinterpret_cast<const IdT*>(topk_ids64)
                                           : reinterpret_cast<const IdT*>(topk_ids);
    sort_gather_tiny_kernel<IdT, TIn, TOut, decltype(quant_tag)::value>
        <<<static_cast<unsigned>(pairs), kSortThreads, 0, stream>>>(
            ids, pairs, top_k, pl, static_cast<const TIn*>(hidden), pair_weights, hidden_size,
            static_cast<TOut*>(rows), quant != nullptr ? *quant : QuantRows{}, b.pairs[0], b.pair_to_row,
            b.expert_offsets, diagnostics);
    launched = true;
  };
  // Each instance from the tags of one lambda: choosing the quantizing one
  // by a type test across two nested generic lambdas never launched it
  // (nvcc 13.0; bench/RESULTS.md, 2026-12-04), and nothing launched is an error.
  auto run = [&](auto id_tag) {
    dispatch_dtype(compute_dtype, [&](auto out) {
      if constexpr (sizeof(out) == 2) {
        if (quant != nullptr) {  // input_dtype == compute_dtype (checked above)
          launch(id_tag, out, out, std::true_type{});
          return;
        }
        dispatch_dtype(input_dtype, [&](auto in) { launch(id_tag, in, out, std::false_type{}); });
      }
    });
  };
  if (topk_ids64 != nullptr) run(int64_t{}); else run(int32_t{});
  if (!launched) return cudaErrorNotSupported;
  return cudaGetLastError();
}

}  // namespace moekit::kernels
