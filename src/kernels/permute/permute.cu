// Permute: gather each valid row's token into expert order, converting the
// input dtype to the compute (weight) dtype (times the pair's router weight
// with apply_router_weight_on_input). One block per row, 16-byte
// accesses; rows past offsets[E_local] (invalid pairs) are never touched.
#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

// 128 threads a row, one load in flight each: 64 threads with 4 loads in
// flight (copy_row<64, 4>) measured slower here (ncu, H200, 2026-12-04:
// qwen3 T=4096 53.1 vs 50.5 us, deepseek-v3 T=4096 239 vs 212).
constexpr int kThreads = 128;

template <class TIn, class TOut>
__global__ void __launch_bounds__(kThreads) permute_kernel(
    const TIn* __restrict__ hidden,            // [T, H]
    const int32_t* __restrict__ sorted_pairs,  // [T*k] row -> pair
    const float* __restrict__ pair_weights,    // [T*k] or null
    const int32_t* __restrict__ valid_rows,    // offsets[E_local]
    int64_t written_rows,                      // entries of sorted_pairs known written
    int64_t top_k, int64_t hidden_size,
    TOut* __restrict__ rows) {                 // [T*k, H] expert order
  timeline::Scope timeline_scope(timeline::kPermute);  // MOEKIT_TIMELINE builds only
  pdl_wait();  // the sort's maps
  pdl_launch_dependents();
  // The first row's pair is loaded beside the row count (one round trip
  // fewer at decode) where the map is written past the row count
  // (launch_permute's maps_written): the load then stays in bounds and reads
  // written memory even for a row that turns out invalid.
  const int64_t first = blockIdx.x;
  const int32_t first_pair = first < written_rows ? sorted_pairs[first] : 0;
  const int64_t n = *valid_rows;
  for (int64_t row = first; row < n; row += gridDim.x) {
    const int32_t pair = row == first && first < written_rows ? first_pair : sorted_pairs[row];
    const float w = pair_weights != nullptr ? pair_weights[pair] : 1.0f;
    copy_row<kThreads, 1>(hidden + pair / top_k * hidden_size, rows + row * hidden_size, hidden_size,
                          pair_weights != nullptr, w);
  }
}

}  // namespace

cudaError_t launch_permute(const void* hidden, moekit_dtype_t input_dtype,
                           const int32_t* sorted_pairs, const float* pair_weights,
                           const int32_t* valid_rows,
                           int64_t max_rows, int64_t top_k, int64_t hidden_size, void* rows,
                           moekit_dtype_t compute_dtype, const DeviceInfo& dev,
                           cudaStream_t stream, bool maps_written) {
  const unsigned grid = grid_for(max_rows, dev.sm_count, 16);
  cudaError_t e = cudaSuccess;
  dispatch_dtype(input_dtype, [&](auto in) {
    using TIn = decltype(in);
    dispatch_dtype(compute_dtype, [&](auto out) {
      using TOut = decltype(out);
      e = launch_pdl(permute_kernel<TIn, TOut>, grid, kThreads, 0, stream,
                     static_cast<const TIn*>(hidden), sorted_pairs, pair_weights, valid_rows,
                     maps_written ? max_rows : int64_t{0}, top_k, hidden_size, static_cast<TOut*>(rows));
    });
  });
  return e != cudaSuccess ? e : cudaGetLastError();
}

}  // namespace moekit::kernels
