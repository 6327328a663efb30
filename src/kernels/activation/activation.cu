// Activation: out [rows, I] from GEMM 1's [rows, N1], eight outputs per thread
// with 16-byte loads for every gate/up order. Formulas: common/activation_math.hpp.
#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

constexpr int kWarps = 8;  // one warp per row, 8 rows per block

// One warp per row and lanes over the row's 8-column vectors: no per-element
// index division, and each lane keeps several 16-byte loads in flight.
template <class T>
__global__ void __launch_bounds__(32 * kWarps) activation_kernel(
    const T* __restrict__ gemm1,              // [rows, N1]
    T* __restrict__ out,                      // [rows, I]
    const int32_t* __restrict__ valid_rows,   // offsets[E_local]
    int64_t inter, ActivationParams p, moekit_gate_up_order_t order) {
  const bool gated = activation_is_gated(p.kind);
  const int64_t n1 = gated ? 2 * inter : inter;
  const int vecs_per_row = static_cast<int>(inter / 8);
  const int64_t rows = *valid_rows;
  const int lane = threadIdx.x % 32;
  for (int64_t row = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const T* g = gemm1 + row * n1;
    T* o = out + row * inter;
#pragma unroll 4
    for (int v = lane; v < vecs_per_row; v += 32) {
      const int64_t j0 = static_cast<int64_t>(v) * 8;
      float r[8];
      if (!gated) {
        load8(g + j0, r);
#pragma unroll
        for (int q = 0; q < 8; ++q) r[q] = apply_activation(p.kind, r[q]);
      } else {
        float gate[8], up[8];
        if (order == MOEKIT_INTERLEAVED) {  // 16 consecutive values hold 8 (gate, up) pairs
          float lo[8], hi[8];
          load8(g + 2 * j0, lo);
          load8(g + 2 * j0 + 8, hi);
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            gate[q] = lo[2 * q]; up[q] = lo[2 * q + 1];
            gate[q + 4] = hi[2 * q]; up[q + 4] = hi[2 * q + 1];
          }
        } else {
          load8(g + gate_column(order, j0, inter), gate);
          load8(g + up_column(order, j0, inter), up);
        }
#pragma unroll
        for (int q = 0; q < 8; ++q) r[q] = apply_gated_activation(p, gate[q], up[q]);
      }
      store8(o + j0, r);
    }
  }
}

}  // namespace

cudaError_t launch_activation(const void* gemm1, void* out, const int32_t* valid_rows,
                              int64_t max_rows, int64_t inter, const ActivationParams& p,
                              moekit_gate_up_order_t order, moekit_dtype_t dtype,
                              const DeviceInfo& dev, cudaStream_t stream) {
  const unsigned grid = grid_for((max_rows + kWarps - 1) / kWarps, dev.sm_count);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    activation_kernel<T><<<grid, 32 * kWarps, 0, stream>>>(
        static_cast<const T*>(gemm1), static_cast<T*>(out), valid_rows, inter, p, order);
  });
  return cudaGetLastError();
}

}  // namespace moekit::kernels
