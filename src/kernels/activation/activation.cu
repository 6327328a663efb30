// Activation: out [rows, I] from GEMM 1's [rows, N1], eight outputs per thread
// with 16-byte loads for every gate/up order. Formulas: common/activation_math.hpp.
#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

constexpr int kThreads = 128;

// Blocks tile (row, chunk of kThreads 8-column vectors) and each thread takes
// one vector: one index division per block, not per element, and a decode
// batch (2 rows of mixtral's I = 14336) still spreads over 28 blocks.
template <class T>
__global__ void __launch_bounds__(kThreads) activation_kernel(
    const T* __restrict__ gemm1,              // [rows, N1]
    T* __restrict__ out,                      // [rows, I]
    const int32_t* __restrict__ valid_rows,   // offsets[E_local]
    int64_t inter, ActivationParams p, moekit_gate_up_order_t order) {
  const bool gated = activation_is_gated(p.kind);
  const int64_t n1 = gated ? 2 * inter : inter;
  const int64_t vecs_per_row = inter / 8;
  const int64_t chunks = (vecs_per_row + kThreads - 1) / kThreads;
  const int64_t work_items = static_cast<int64_t>(*valid_rows) * chunks;
  for (int64_t w = blockIdx.x; w < work_items; w += gridDim.x) {
    const int64_t row = w / chunks;
    const int64_t v = (w - row * chunks) * kThreads + threadIdx.x;
    if (v >= vecs_per_row) continue;
    const int64_t j0 = v * 8;
    const T* g = gemm1 + row * n1;
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
    store8(out + row * inter + j0, r);
  }
}

}  // namespace

cudaError_t launch_activation(const void* gemm1, void* out, const int32_t* valid_rows,
                              int64_t max_rows, int64_t inter, const ActivationParams& p,
                              moekit_gate_up_order_t order, moekit_dtype_t dtype,
                              const DeviceInfo& dev, cudaStream_t stream) {
  const int64_t chunks = (inter / 8 + kThreads - 1) / kThreads;
  const unsigned grid = grid_for(max_rows * chunks, dev.sm_count, 16);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    activation_kernel<T><<<grid, kThreads, 0, stream>>>(
        static_cast<const T*>(gemm1), static_cast<T*>(out), valid_rows, inter, p, order);
  });
  return cudaGetLastError();
}

}  // namespace moekit::kernels
