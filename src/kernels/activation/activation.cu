// Activation: out [rows, I] from GEMM 1's [rows, N1], eight outputs per thread
// with 16-byte loads for every gate/up order (activation8, activation.cuh).
#include "kernels/activation/activation.cuh"
#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

constexpr int kThreads = 256;

// One thread per 8-column vector of the [rows, I] output, over a flat index.
// Index is 32-bit where rows * I / 8 < 2^31 (every chunk of the layer, up to
// I = 2^18): the per-element division is then a cheap 32-bit one, while every
// thread of every block has work (a row-per-block mapping idles a quarter of
// its threads at I = 768).
template <class T, class Index>
__global__ void __launch_bounds__(kThreads) activation_kernel(
    const T* __restrict__ gemm1,              // [rows, N1]
    T* __restrict__ out,                      // [rows, I]
    const int32_t* __restrict__ valid_rows,   // offsets[E_local]
    int64_t inter, ActivationParams p, moekit_gate_up_order_t order) {
  timeline::Scope timeline_scope(timeline::kActivation);  // MOEKIT_TIMELINE builds only
  pdl_wait();  // GEMM 1's output
  pdl_launch_dependents();
  const bool gated = activation_is_gated(p.kind);
  const int64_t n1 = gated ? 2 * inter : inter;
  const Index vecs_per_row = static_cast<Index>(inter / 8);
  const Index total = static_cast<Index>(*valid_rows) * vecs_per_row;
  const Index stride = static_cast<Index>(gridDim.x) * kThreads;
  for (Index i = static_cast<Index>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const Index row_i = i / vecs_per_row;
    const int64_t row = row_i, j0 = static_cast<int64_t>(i - row_i * vecs_per_row) * 8;
    float r[8];
    activation8(gemm1 + row * n1, j0, inter, p, order, r);
    store8(out + row * inter + j0, r);
  }
}

}  // namespace

cudaError_t launch_activation(const void* gemm1, void* out, const int32_t* valid_rows,
                              int64_t max_rows, int64_t inter, const ActivationParams& p,
                              moekit_gate_up_order_t order, moekit_dtype_t dtype,
                              const DeviceInfo& dev, cudaStream_t stream) {
  const int64_t work = max_rows * (inter / 8);
  const unsigned grid = grid_for((work + kThreads - 1) / kThreads, dev.sm_count);
  cudaError_t e = cudaSuccess;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto* in = static_cast<const T*>(gemm1);
    auto* o = static_cast<T*>(out);
    if (work < (int64_t{1} << 31))  // i + stride then stays below 2^32
      e = launch_pdl(activation_kernel<T, uint32_t>, grid, kThreads, 0, stream, in, o, valid_rows,
                     inter, p, order);
    else
      e = launch_pdl(activation_kernel<T, int64_t>, grid, kThreads, 0, stream, in, o, valid_rows,
                     inter, p, order);
  });
  return e != cudaSuccess ? e : cudaGetLastError();
}

}  // namespace moekit::kernels
