// Grouped GEMM for decode batches (a few rows per expert), written by hand
// because no library kernel fits: the CUTLASS ptr-array kernels spend about
// 9 µs per launch on set-up (tensor-map rewrites, pipeline fill, epilogue
// store) before and after streaming the weights, which is most of a T = 1
// layer (bench/RESULTS.md). Here each warp streams 16 weight rows of one
// expert, with its token rows, through its own cp.async pipeline in shared
// memory (kStages x 64 k, 16-byte copies) into mma.sync m16n8k16 via ldmatrix
// (weights on the M side, up to 8 token rows on N: swap-AB), and writes D^T
// back as row-major D. No global load sits between two mma's.
//
// Arithmetic is that of the wgmma kernels: one fp32 accumulator per output,
// K in ascending chunks of 16 in natural order (a partial last chunk is
// zero-filled, as TMA does), bias added in fp32, one rounding. The GPU suite
// checks that a token's row is bitwise the same whichever kernel ran.
//
// Status (H200, 2026-11-27): correct and bitwise equal to the wgmma kernels,
// but slower than CUTLASS swap-AB at every decode point (qwen3 T = 1: 66 vs
// 45 µs per layer), so select_config does not pick it; MOEKIT_GEMM=decode
// runs it. bench/RESULTS.md has its versions and what ncu showed.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/common.cuh"
#include "kernels/gemm/grouped_gemm_sm90.hpp"

namespace moekit::kernels {

namespace {

constexpr int kWarps = 4;              // warps per block, independent of each other
constexpr int kRowsPerWarp = 16;       // mma M: weight rows (output columns)
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;
constexpr int kTokens = 8;             // mma N: token rows per pass
constexpr int kStageK = 64;            // K per pipeline stage: 16 weight + 8 token rows x 128 B
constexpr int kStages = 6;             // 12 KB of weights in flight per warp
constexpr int kSmemRow = kStageK + 8;  // +16 B a row: ldmatrix's 8 rows hit distinct banks
constexpr int kStageRows = kRowsPerWarp + kTokens;  // weights, then the token rows
constexpr int kStageElems = kStageRows * kSmemRow;
constexpr int kSmemBytes = kWarps * kStages * kStageElems * 2;  // 82,944

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

__device__ __forceinline__ void cp_async_16(uint32_t smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem));
}

template <class T>
__global__ void __launch_bounds__(32 * kWarps) decode_gemm_kernel(
    const T* __restrict__ a,                // [rows, K] expert order
    const int32_t* __restrict__ offsets,    // [E + 1]
    const T* __restrict__ w,                // [E, N, K]
    const T* __restrict__ bias,             // [E, N] or null
    T* __restrict__ c,                      // [rows, N]
    int n, int k, int row_blocks) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int e = blockIdx.x / row_blocks;
  const int begin = offsets[e], end = offsets[e + 1];
  if (begin >= end) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int row0 = (blockIdx.x % row_blocks) * kRowsPerBlock + warp * kRowsPerWarp;
  if (row0 >= n) return;
  const T* we = w + static_cast<int64_t>(e) * n * k;  // [N, K]
  const T* bias_e = bias ? bias + static_cast<int64_t>(e) * n : nullptr;
  // (kStages, 16 rows, kSmemRow) for this warp.
  const uint32_t smem = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) +
                        warp * kStages * kStageElems * 2;
  const int stages_k = (k + kStageK - 1) / kStageK;

  int t0 = begin;  // first token row of the current pass
  // Stage s <- weight rows row0..row0+15 and token rows t0..t0+7, k in
  // [kb * 64, kb * 64 + 64): 192 16-byte pieces, 6 a lane. Pieces past K are
  // zero-filled; rows past N or past the expert's tokens repeat the last one
  // (their results are never stored).
  auto load_stage = [&](int s, int kb) {
#pragma unroll
    for (int i = 0; i < kStageRows * 8 / 32; ++i) {
      const int piece = lane + 32 * i, r = piece / 8, kk = kb * kStageK + (piece % 8) * 8;
      const T* row_ptr;
      if (r < kRowsPerWarp) {
        row_ptr = we + static_cast<int64_t>(row0 + r < n ? row0 + r : n - 1) * k;
      } else {
        const int t = t0 + r - kRowsPerWarp;
        row_ptr = a + static_cast<int64_t>(t < end ? t : end - 1) * k;
      }
      cp_async_16(smem + (s * kStageElems + r * kSmemRow + (piece % 8) * 8) * 2,
                  row_ptr + (kk < k ? kk : 0), kk < k ? 16 : 0);
    }
  };

  for (; t0 < end; t0 += kTokens) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < stages_k) load_stage(s, s);
      cp_async_commit();
    }
    for (int kb = 0; kb < stages_k; ++kb) {
      const int next = kb + kStages - 1;
      if (next < stages_k) load_stage(next % kStages, next);
      cp_async_commit();
      cp_async_wait<kStages - 1>();
      __syncwarp();
      const uint32_t stage = smem + (kb % kStages) * kStageElems * 2;
#pragma unroll
      for (int kk = 0; kk < kStageK; kk += 16) {
        const int k0 = kb * kStageK + kk;
        if (k0 >= k) break;
        uint32_t af[4], bf[2];
        // A: weight rows 0-15 at k and k + 8; B: token rows 0-7 at k and k + 8.
        ldmatrix_x4(af, stage + ((lane % 16) * kSmemRow + kk + (lane / 16) * 8) * 2);
        ldmatrix_x2(bf, stage + ((kRowsPerWarp + lane % 8) * kSmemRow + kk + (lane / 8 % 2) * 8) * 2);
        mma_16x8x16<T>(acc, af, bf);
      }
      __syncwarp();  // every lane is done with this stage before it is refilled
    }
    cp_async_wait<0>();
    __syncwarp();
    // D^T fragment: acc[0..1] at weight row row0 + g, tokens t0 + 2q, +1; acc[2..3] at row + 8.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = row0 + g + (i < 2 ? 0 : 8);
      const int t = t0 + 2 * q + (i & 1);
      if (r >= n || t >= end) continue;
      const float b = bias_e ? to_float(bias_e[r]) : 0.0f;
      c[static_cast<int64_t>(t) * n + r] = from_float<T>(acc[i] + b);
    }
  }
}

}  // namespace

cudaError_t decode_grouped_gemm(const GroupedGemmParams& p, cudaStream_t stream) {
  if (p.a_scale != nullptr) return cudaErrorNotSupported;  // 16-bit operands only
  if (p.n % 8 != 0 || p.k % 8 != 0 || p.n > (1 << 30) || p.k > (1 << 30)) return cudaErrorNotSupported;
  const int row_blocks = static_cast<int>((p.n + kRowsPerBlock - 1) / kRowsPerBlock);
  const int64_t blocks = static_cast<int64_t>(p.num_experts) * row_blocks;
  if (blocks > 0x7fffffff) return cudaErrorNotSupported;
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    // Above 48 KB of shared memory needs an opt-in, once per kernel.
    static const cudaError_t opt_in = cudaFuncSetAttribute(
        decode_gemm_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    if (opt_in != cudaSuccess) return opt_in;
    decode_gemm_kernel<T><<<static_cast<unsigned>(blocks), 32 * kWarps, kSmemBytes, stream>>>(
        static_cast<const T*>(p.a), p.expert_offsets, static_cast<const T*>(p.w),
        static_cast<const T*>(p.bias), static_cast<T*>(p.c), static_cast<int>(p.n),
        static_cast<int>(p.k), row_blocks);
    return cudaGetLastError();
  };
  switch (p.dtype) {
    case MOEKIT_DTYPE_BF16: return launch(__nv_bfloat16{});
    case MOEKIT_DTYPE_FP16: return launch(__half{});
    default: return cudaErrorNotSupported;
  }
}

}  // namespace moekit::kernels
