// Grouped GEMM for decode batches (a few rows per expert), written by hand
// because no library kernel fits: the CUTLASS ptr-array kernels spend about
// 10 µs per launch on set-up (tensor-map rewrites, pipeline fill, epilogue
// store) before and after streaming the weights, which is most of a T = 1
// layer (bench/RESULTS.md). This kernel has none of that: each warp streams 16
// weight rows of one expert straight from global memory into mma.sync
// m16n8k16 (weights on the M side, up to 8 token rows on N: swap-AB), with
// many independent loads in flight, and writes D^T back as row-major D.
//
// Status: correct and bitwise equal to the wgmma kernels (GPU suite, 2026-11-27,
// H200), but not selected: this first version loads 4-byte fragments straight
// from global memory and ran the layer 2x slower than CUTLASS swap-AB (qwen3
// T = 1: 96 vs 45 us). Next: 16-byte loads through shared memory (cp.async)
// and ldmatrix, several k-steps in flight. Reachable with MOEKIT_GEMM=decode.
//
// Arithmetic is that of the wgmma kernels: one fp32 accumulator per output,
// K in ascending chunks of 16 (a partial last chunk is zero-filled, as TMA
// does), bias added in fp32, one rounding. The GPU suite checks that a token's
// row is bitwise the same whichever kernel ran (batch invariance).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/common.cuh"
#include "kernels/gemm/grouped_gemm_sm90.hpp"

namespace moekit::kernels {

namespace {

constexpr int kWarps = 4;              // warps per block
constexpr int kRowsPerWarp = 16;       // mma M: weight rows (output columns)
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;
constexpr int kTokens = 8;             // mma N: token rows per pass

template <class T> struct MmaType;
template <> struct MmaType<__nv_bfloat16> { static constexpr bool kBf16 = true; };
template <> struct MmaType<__half> { static constexpr bool kBf16 = false; };

template <class T>
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4],
                                            const uint32_t (&b)[2]) {
  if constexpr (MmaType<T>::kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// Two consecutive 16-bit elements (4-byte aligned: K and k are even).
template <class T>
__device__ __forceinline__ uint32_t load_pair(const T* p) {
  return __ldg(reinterpret_cast<const unsigned int*>(p));
}

template <class T>
__global__ void __launch_bounds__(32 * kWarps) decode_gemm_kernel(
    const T* __restrict__ a,                // [rows, K] expert order
    const int32_t* __restrict__ offsets,    // [E + 1]
    const T* __restrict__ w,                // [E, N, K]
    const T* __restrict__ bias,             // [E, N] or null
    T* __restrict__ c,                      // [rows, N]
    int n, int k, int row_blocks) {
  const int e = blockIdx.x / row_blocks;
  const int begin = offsets[e], end = offsets[e + 1];
  if (begin >= end) return;
  const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int row0 = (blockIdx.x % row_blocks) * kRowsPerBlock + (threadIdx.x / 32) * kRowsPerWarp;
  if (row0 >= n) return;
  // The thread's two weight rows; a row past N (N % 16 == 8) reads row N-1
  // and its results are never stored.
  const int r_lo = row0 + g, r_hi = row0 + g + 8;
  const T* we = w + static_cast<int64_t>(e) * n * k;
  const T* w_lo = we + static_cast<int64_t>(r_lo < n ? r_lo : n - 1) * k;
  const T* w_hi = we + static_cast<int64_t>(r_hi < n ? r_hi : n - 1) * k;
  const T* bias_e = bias ? bias + static_cast<int64_t>(e) * n : nullptr;
  const int k_full = k / 16 * 16;

  for (int t0 = begin; t0 < end; t0 += kTokens) {
    const int tok = t0 + g < end ? t0 + g : end - 1;  // B column g; extra columns are discarded
    const T* x = a + static_cast<int64_t>(tok) * k;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 8
    for (int k0 = 0; k0 < k_full; k0 += 16) {
      const int kk = k0 + 2 * q;
      const uint32_t af[4] = {load_pair(w_lo + kk), load_pair(w_hi + kk), load_pair(w_lo + kk + 8),
                              load_pair(w_hi + kk + 8)};
      const uint32_t bf[2] = {load_pair(x + kk), load_pair(x + kk + 8)};
      mma_16x8x16<T>(acc, af, bf);
    }
    if (k_full < k) {  // K % 16 == 8: the upper half of the last chunk is zero
      const int kk = k_full + 2 * q;
      const uint32_t af[4] = {load_pair(w_lo + kk), load_pair(w_hi + kk), 0u, 0u};
      const uint32_t bf[2] = {load_pair(x + kk), 0u};
      mma_16x8x16<T>(acc, af, bf);
    }
    // D^T fragment: acc[0..1] at weight row r_lo, tokens t0 + 2q, +1; acc[2..3] at r_hi.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = i < 2 ? r_lo : r_hi;
      const int t = t0 + 2 * q + (i & 1);
      if (r >= n || t >= end) continue;
      const float b = bias_e ? to_float(bias_e[r]) : 0.0f;
      c[static_cast<int64_t>(t) * n + r] = from_float<T>(acc[i] + b);
    }
  }
}

}  // namespace

cudaError_t decode_grouped_gemm(const GroupedGemmParams& p, cudaStream_t stream) {
  if (p.n % 8 != 0 || p.k % 8 != 0 || p.n > (1 << 30) || p.k > (1 << 30)) return cudaErrorNotSupported;
  const int row_blocks = static_cast<int>((p.n + kRowsPerBlock - 1) / kRowsPerBlock);
  const int64_t blocks = static_cast<int64_t>(p.num_experts) * row_blocks;
  if (blocks > 0x7fffffff) return cudaErrorNotSupported;
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    decode_gemm_kernel<T><<<static_cast<unsigned>(blocks), 32 * kWarps, 0, stream>>>(
        static_cast<const T*>(p.a), p.expert_offsets, static_cast<const T*>(p.w),
        static_cast<const T*>(p.bias), static_cast<T*>(p.c), static_cast<int>(p.n),
        static_cast<int>(p.k), row_blocks);
  };
  switch (p.dtype) {
    case MOEKIT_DTYPE_BF16: launch(__nv_bfloat16{}); break;
    case MOEKIT_DTYPE_FP16: launch(__half{}); break;
    default: return cudaErrorNotSupported;
  }
  return cudaGetLastError();
}

}  // namespace moekit::kernels
