// Grouped GEMM, simple and correct: c[rows, N] = a[rows, K] x w[e]^T + bias[e]
// over the expert-sorted rows, fp32 accumulation on CUDA cores. Expert offsets
// are read on the device, so it needs no host sync and can be graph-captured.
// It is the correctness baseline the CUTLASS sm90 grouped GEMM will replace.
//
// Tiling: a block owns BM consecutive rows (over all experts) and BN columns.
// A row tile can straddle experts; the block walks its expert segments, each
// with that expert's weights, so every row is computed with the right expert
// and no row of another segment is written.
#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16;  // 64x64 tile, 16-deep K slices
constexpr int kThreads = 256;                // 16x16 threads, 4x4 outputs each
constexpr int kMaxGridY = 65535;

template <class T>
__global__ void __launch_bounds__(kThreads) grouped_gemm_nt_kernel(
    const T* __restrict__ a,                 // [rows, K] expert order
    const int32_t* __restrict__ offsets,     // [E + 1]
    int num_experts,
    const T* __restrict__ w,                 // [E, N, K]
    const T* __restrict__ bias,              // [E, N] or null
    T* __restrict__ c,                       // [rows, N]
    int64_t n, int64_t k) {
  __shared__ float as[kBK][kBM + 4];  // (BK, BM): k-major, padded against bank conflicts
  __shared__ float ws[kBK][kBN + 4];  // (BK, BN)
  const int64_t valid = offsets[num_experts];
  const int64_t tile_begin = static_cast<int64_t>(blockIdx.x) * kBM;
  if (tile_begin >= valid) return;
  const int64_t tile_end = tile_begin + kBM < valid ? tile_begin + kBM : valid;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

  for (int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN; n0 < n;
       n0 += static_cast<int64_t>(gridDim.y) * kBN) {
    for (int64_t seg_begin = tile_begin; seg_begin < tile_end;) {
      // The expert of row seg_begin: the last e with offsets[e] <= seg_begin.
      int lo = 0, hi = num_experts - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= seg_begin) lo = mid; else hi = mid - 1;
      }
      const int e = lo;
      const int64_t seg_end = offsets[e + 1] < tile_end ? offsets[e + 1] : tile_end;
      const T* we = w + static_cast<int64_t>(e) * n * k;

      float acc[4][4] = {};
      for (int64_t k0 = 0; k0 < k; k0 += kBK) {
#pragma unroll
        for (int i = 0; i < (kBM * kBK) / kThreads; ++i) {
          const int idx = threadIdx.x + i * kThreads, r = idx / kBK, kk = idx % kBK;
          const int64_t row = tile_begin + r, kg = k0 + kk;
          as[kk][r] = (row >= seg_begin && row < seg_end && kg < k) ? to_float(a[row * k + kg]) : 0.0f;
          const int64_t col = n0 + r;  // kBN == kBM: the same index walks the weight tile
          ws[kk][r] = (col < n && kg < k) ? to_float(we[col * k + kg]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kBK; ++kk) {
          float ar[4], wr[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) { ar[i] = as[kk][ty + 16 * i]; wr[i] = ws[kk][tx + 16 * i]; }
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(ar[i], wr[j], acc[i][j]);
        }
        __syncthreads();
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t row = tile_begin + ty + 16 * i;
        if (row < seg_begin || row >= seg_end) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int64_t col = n0 + tx + 16 * j;
          if (col >= n) continue;
          const float b = bias ? to_float(bias[static_cast<int64_t>(e) * n + col]) : 0.0f;
          c[row * n + col] = from_float<T>(acc[i][j] + b);
        }
      }
      seg_begin = seg_end;
    }
  }
}

}  // namespace

cudaError_t launch_grouped_gemm(const void* a, const int32_t* expert_offsets,
                                int64_t num_local_experts, const void* w, const void* bias,
                                void* c, int64_t max_rows, int64_t n, int64_t k,
                                moekit_dtype_t dtype, const DeviceInfo&, cudaStream_t stream) {
  static_assert(kBM == kBN, "the tile loader walks A and W tiles with one index");
  const int64_t row_tiles = (max_rows + kBM - 1) / kBM;
  const int64_t col_tiles = (n + kBN - 1) / kBN;
  const dim3 grid(static_cast<unsigned>(row_tiles),
                  static_cast<unsigned>(col_tiles < kMaxGridY ? col_tiles : kMaxGridY));
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    grouped_gemm_nt_kernel<T><<<grid, kThreads, 0, stream>>>(
        static_cast<const T*>(a), expert_offsets, static_cast<int>(num_local_experts),
        static_cast<const T*>(w), static_cast<const T*>(bias), static_cast<T*>(c), n, k);
  });
  return cudaGetLastError();
}

}  // namespace moekit::kernels
