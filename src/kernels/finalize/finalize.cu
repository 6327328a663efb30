// Finalize: out[t] = sum over t's valid slots, in slot order, of
// weight * y[row]; fp32 accumulation, every output element written exactly
// once (zeros for a token with no valid slot). Deterministic: no atomics.
#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

constexpr int kThreads = 128;

template <class TY, class TOut>
__global__ void __launch_bounds__(kThreads) finalize_kernel(
    const TY* __restrict__ y,                  // [T*k, H] expert order
    const int32_t* __restrict__ pair_to_row,   // [T*k], -1 = no row
    const float* __restrict__ topk_weights,    // [T, k]
    int64_t num_tokens, int64_t top_k, int64_t hidden_size,
    TOut* __restrict__ out) {                  // [T, H]
  const int64_t vecs = hidden_size / 8;
  for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
    for (int64_t v = threadIdx.x; v < vecs; v += kThreads) {
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t s = 0; s < top_k; ++s) {
        const int32_t row = pair_to_row[t * top_k + s];
        if (row < 0) continue;  // invalid or remote id: its weight is never read
        const float w = topk_weights[t * top_k + s];
        float x[8];
        load8(y + static_cast<int64_t>(row) * hidden_size + v * 8, x);
#pragma unroll
        for (int q = 0; q < 8; ++q) acc[q] = fmaf(w, x[q], acc[q]);
      }
      store8(out + t * hidden_size + v * 8, acc);
    }
  }
}

}  // namespace

cudaError_t launch_finalize(const void* y, moekit_dtype_t y_dtype, const int32_t* pair_to_row,
                            const float* topk_weights, int64_t num_tokens, int64_t top_k,
                            int64_t hidden_size, void* out, moekit_dtype_t output_dtype,
                            const DeviceInfo& dev, cudaStream_t stream) {
  const unsigned grid = grid_for(num_tokens, dev.sm_count, 16);
  dispatch_dtype(y_dtype, [&](auto ytag) {
    using TY = decltype(ytag);
    dispatch_dtype(output_dtype, [&](auto otag) {
      using TOut = decltype(otag);
      finalize_kernel<TY, TOut><<<grid, kThreads, 0, stream>>>(
          static_cast<const TY*>(y), pair_to_row, topk_weights, num_tokens, top_k, hidden_size,
          static_cast<TOut*>(out));
    });
  });
  return cudaGetLastError();
}

}  // namespace moekit::kernels
