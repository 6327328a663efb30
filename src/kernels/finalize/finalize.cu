// Finalize: out[t] = sum over t's valid slots, in slot order, of
// weight * y[row]; fp32 accumulation, every output element written exactly
// once (zeros for a token with no valid slot). Deterministic: no atomics.
#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

constexpr int kThreads = 128;

// Slots in groups of kBatch: the group's rows are loaded before any is used
// (independent loads in flight), then summed in slot order, so the result is
// the same as one slot at a time, whatever kBatch is. 4 with many tokens
// (registers, occupancy: bandwidth-bound), kFewTokensBatch with at most a
// work item a block (decode: each group of slots is a dependent round trip).
constexpr int kManyTokensBatch = 4;
constexpr int kFewTokensBatch = 8;

template <class TY, class TOut, int kBatch>
__global__ void __launch_bounds__(kThreads) finalize_kernel(
    const TY* __restrict__ y,                  // [T*k, H] expert order
    const int32_t* __restrict__ pair_to_row,   // [T*k], -1 = no row
    const float* __restrict__ topk_weights,    // [T, k], or null: weight 1
    int64_t num_tokens, int64_t top_k, int64_t hidden_size,
    TOut* __restrict__ out) {                  // [T, H]
  timeline::Scope timeline_scope(timeline::kFinalize);  // MOEKIT_TIMELINE builds only
  // One thread per 8 columns of one token; blocks tile (token, column block),
  // so a single decode token still spreads over H / 1024 blocks.
  const int64_t vecs = hidden_size / 8;
  const int64_t col_blocks = (vecs + kThreads - 1) / kThreads;
  const int64_t items = num_tokens * col_blocks;
  // An invalid or remote id's weight is never read.
  int32_t row[kBatch];
  float w[kBatch];
  auto load_slots = [&](int64_t t, int64_t s0) {
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int64_t s = s0 + j;
      row[j] = s < top_k ? pair_to_row[t * top_k + s] : -1;
      w[j] = row[j] >= 0 && topk_weights != nullptr ? topk_weights[t * top_k + s] : 1.0f;
    }
  };
  // The first item's first slots are read before the wait: pair_to_row comes
  // from the sort and the weights from the caller or the router, all two or
  // more kernels back, so finished when this kernel starts (every layer
  // kernel calls pdl_launch_dependents() only after its own pdl_wait(), as
  // decode_gemm.cu relies on). At decode that takes a dependent load off the
  // layer's last kernel.
  int64_t work = blockIdx.x;
  if (work < items) load_slots(work / col_blocks, 0);
  pdl_wait();  // GEMM 2's output
  pdl_launch_dependents();
  for (; work < items; work += gridDim.x) {
    const int64_t t = work / col_blocks;
    const int64_t v = (work % col_blocks) * kThreads + threadIdx.x;
    const bool in_row = v < vecs;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t s0 = 0; s0 < top_k; s0 += kBatch) {
      if (s0 > 0 || work != blockIdx.x) load_slots(t, s0);
      float x[kBatch][8];
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        if (row[j] >= 0 && in_row) load8(y + static_cast<int64_t>(row[j]) * hidden_size + v * 8, x[j]);
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        if (row[j] < 0) continue;
#pragma unroll
        for (int q = 0; q < 8; ++q) acc[q] = fmaf(w[j], x[j][q], acc[q]);
      }
    }
    if (in_row) store8(out + t * hidden_size + v * 8, acc);
  }
}

}  // namespace

cudaError_t launch_finalize(const void* y, moekit_dtype_t y_dtype, const int32_t* pair_to_row,
                            const float* topk_weights, int64_t num_tokens, int64_t top_k,
                            int64_t hidden_size, void* out, moekit_dtype_t output_dtype,
                            const DeviceInfo& dev, cudaStream_t stream) {
  const int64_t col_blocks = (hidden_size / 8 + kThreads - 1) / kThreads;
  const int64_t items = num_tokens * col_blocks;
  const unsigned grid = grid_for(items, dev.sm_count, 16);
  const bool few = items <= grid;  // one work item a block at most
  cudaError_t e = cudaSuccess;
  dispatch_dtype(y_dtype, [&](auto ytag) {
    using TY = decltype(ytag);
    dispatch_dtype(output_dtype, [&](auto otag) {
      using TOut = decltype(otag);
      e = launch_pdl(few ? finalize_kernel<TY, TOut, kFewTokensBatch> : finalize_kernel<TY, TOut, kManyTokensBatch>,
                     grid, kThreads, 0, stream, static_cast<const TY*>(y), pair_to_row, topk_weights,
                     num_tokens, top_k, hidden_size, static_cast<TOut*>(out));
    });
  });
  return e != cudaSuccess ? e : cudaGetLastError();
}

}  // namespace moekit::kernels
