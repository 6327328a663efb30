// Grouped GEMM, simple and correct: c[rows, N] = a[rows, K] x w[e]^T + bias[e]
// over the expert-sorted rows, fp32 accumulation on CUDA cores. Expert offsets
// are read on the device, so it needs no host sync and can be graph-captured.
// It is the correctness baseline (and fallback) of the CUTLASS sm90 grouped
// GEMMs, for 16-bit and fp32 operands and for e4m3 with block scales.
//
// Tiling: a block owns BM consecutive rows (over all experts) and BN columns.
// A row tile can straddle experts; the block walks its expert segments, each
// with that expert's weights, so every row is computed with the right expert
// and no row of another segment is written.
#include "common/fp8_math.hpp"
#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16;  // 64x64 tile, 16-deep K slices
constexpr int kThreads = 256;                // 16x16 threads, 4x4 outputs each
constexpr int kMaxGridY = 65535;

__device__ __forceinline__ float load_value(uint8_t v) { return e4m3_to_float(v); }
template <class T>
__device__ __forceinline__ float load_value(T v) { return to_float(v); }

// Block scales of the fp8 form (unused otherwise); see launch_grouped_gemm_fp8.
struct Scales {
  const float* a;    // per expert: column-major [kb, rows_e] at a + offsets[e] * kb
  const float* w;    // [E, ceil(N/128), kb] at w + e * w_stride
  int64_t w_stride;
};

// TA: the element of a and w (T, or uint8_t e4m3 with kScaled); T: bias and c.
template <class TA, class T, bool kScaled>
__global__ void __launch_bounds__(kThreads) grouped_gemm_nt_kernel(
    const TA* __restrict__ a,                // [rows, K] expert order
    const int32_t* __restrict__ offsets,     // [E + 1]
    int num_experts,
    const TA* __restrict__ w,                // [E, N, K]
    const T* __restrict__ bias,              // [E, N] or null
    T* __restrict__ c,                       // [rows, N]
    int64_t n, int64_t k, Scales scales) {
  timeline::Scope timeline_scope(timeline::kGemmSimple);  // MOEKIT_TIMELINE builds only
  __shared__ float as[kBK][kBM + 4];  // (BK, BM): k-major, padded against bank conflicts
  __shared__ float ws[kBK][kBN + 4];  // (BK, BN)
  const int64_t valid = offsets[num_experts];
  const int64_t tile_begin = static_cast<int64_t>(blockIdx.x) * kBM;
  if (tile_begin >= valid) return;
  const int64_t tile_end = tile_begin + kBM < valid ? tile_begin + kBM : valid;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t kb = fp8_blocks(k);

  for (int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN; n0 < n;
       n0 += static_cast<int64_t>(gridDim.y) * kBN) {
    for (int64_t seg_begin = tile_begin; seg_begin < tile_end;) {
      const int e = expert_of_row(offsets, num_experts, seg_begin);
      const int64_t seg_end = offsets[e + 1] < tile_end ? offsets[e + 1] : tile_end;
      const TA* we = w + static_cast<int64_t>(e) * n * k;

      float acc[4][4] = {}, part[4][4] = {};
      for (int64_t k0 = 0; k0 < k; k0 += kBK) {
#pragma unroll
        for (int i = 0; i < (kBM * kBK) / kThreads; ++i) {
          const int idx = threadIdx.x + i * kThreads, r = idx / kBK, kk = idx % kBK;
          const int64_t row = tile_begin + r, kg = k0 + kk;
          as[kk][r] = (row >= seg_begin && row < seg_end && kg < k) ? load_value(a[row * k + kg]) : 0.0f;
          const int64_t col = n0 + r;  // kBN == kBM: the same index walks the weight tile
          ws[kk][r] = (col < n && kg < k) ? load_value(we[col * k + kg]) : 0.0f;
        }
        __syncthreads();
        float (&sum)[4][4] = kScaled ? part : acc;
#pragma unroll
        for (int kk = 0; kk < kBK; ++kk) {
          float ar[4], wr[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) { ar[i] = as[kk][ty + 16 * i]; wr[i] = ws[kk][tx + 16 * i]; }
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) sum[i][j] = fmaf(ar[i], wr[j], sum[i][j]);
        }
        __syncthreads();
        if constexpr (kScaled) {
          // End of a 128-deep block: acc += part * (a scale * w scale), as the sm90 kernels do.
          if ((k0 + kBK) % kFp8Block == 0 || k0 + kBK >= k) {
            const int64_t blk = k0 / kFp8Block, first = offsets[e], rows_e = offsets[e + 1] - first;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              const int64_t row = tile_begin + ty + 16 * i;
              const bool row_ok = row >= seg_begin && row < seg_end;
              const float sa = row_ok ? scales.a[first * kb + blk * rows_e + (row - first)] : 0.0f;
#pragma unroll
              for (int j = 0; j < 4; ++j) {
                const int64_t col = n0 + tx + 16 * j;
                const float sw = col < n ? scales.w[e * scales.w_stride + (col / kFp8Block) * kb + blk] : 0.0f;
                acc[i][j] = fmaf(part[i][j], sa * sw, acc[i][j]);
                part[i][j] = 0.0f;
              }
            }
          }
        }
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

dim3 gemm_grid(int64_t max_rows, int64_t n) {
  static_assert(kBM == kBN, "the tile loader walks A and W tiles with one index");
  const int64_t row_tiles = (max_rows + kBM - 1) / kBM;
  const int64_t col_tiles = (n + kBN - 1) / kBN;
  return dim3(static_cast<unsigned>(row_tiles),
              static_cast<unsigned>(col_tiles < kMaxGridY ? col_tiles : kMaxGridY));
}

}  // namespace

cudaError_t launch_grouped_gemm(const void* a, const int32_t* expert_offsets,
                                int64_t num_local_experts, const void* w, const void* bias,
                                void* c, int64_t max_rows, int64_t n, int64_t k,
                                moekit_dtype_t dtype, const DeviceInfo&, cudaStream_t stream) {
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    grouped_gemm_nt_kernel<T, T, false><<<gemm_grid(max_rows, n), kThreads, 0, stream>>>(
        static_cast<const T*>(a), expert_offsets, static_cast<int>(num_local_experts),
        static_cast<const T*>(w), static_cast<const T*>(bias), static_cast<T*>(c), n, k, Scales{});
  });
  return cudaGetLastError();
}

cudaError_t launch_grouped_gemm_fp8(const void* a, const float* a_scale,
                                    const int32_t* expert_offsets, int64_t num_local_experts,
                                    const void* w, const float* w_scale, int64_t w_scale_stride,
                                    const void* bias, void* c, int64_t max_rows, int64_t n,
                                    int64_t k, moekit_dtype_t dtype, const DeviceInfo&,
                                    cudaStream_t stream) {
  cudaError_t e = cudaErrorNotSupported;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (sizeof(T) == 2) {
      grouped_gemm_nt_kernel<uint8_t, T, true><<<gemm_grid(max_rows, n), kThreads, 0, stream>>>(
          static_cast<const uint8_t*>(a), expert_offsets, static_cast<int>(num_local_experts),
          static_cast<const uint8_t*>(w), static_cast<const T*>(bias), static_cast<T*>(c), n, k,
          Scales{a_scale, w_scale, w_scale_stride});
      e = cudaGetLastError();
    }
  });
  return e;
}

}  // namespace moekit::kernels
