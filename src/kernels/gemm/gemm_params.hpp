// The contract between the layer and the CUTLASS sm90 grouped GEMM families:
// a plain params struct and one launcher per family. No CUTLASS and no
// config enum here, so a change to select_config rebuilds no CUTLASS file.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "moekit/moekit.h"

namespace moekit::kernels {

// One MoE GEMM: for every local expert e with rows [offsets[e], offsets[e+1]),
//   c[rows, N] = a[rows, K] x w[e]^T + bias[e]     (fp32 accumulation)
// The group shapes are built on the device from expert_offsets, so no host
// sync is needed and the launch can be captured in a CUDA graph.
struct GroupedGemmParams {
  const void* a;                  // [rows, K] rows in expert order
  const int32_t* expert_offsets;  // [E + 1] on the device
  int num_experts;                // E (groups)
  const void* w;                  // [E, N, K] K contiguous
  const void* bias;               // [E, N] or null
  void* c;                        // [rows, N]
  int64_t n, k;
  moekit_dtype_t dtype;           // bf16 or fp16: bias and c (and a, w unless fp8)
  void* scratch;                  // grouped_gemm_scratch_bytes(E, sm_count) bytes, 256-aligned
  int sm_count;
  // fp8 block-scaled GEMMs (the fp8 families; null for the others): a and w
  // are e4m3 and
  //   c = sum over 128-deep blocks b of (a_b . w_b) * (a_scale * w_scale) + bias.
  // a_scale: per expert a column-major [ceil(K/128), rows_e] block at
  // a_scale + offsets[e] * ceil(K/128) (kernels::QuantRows writes it);
  // w_scale: [ceil(N/128), ceil(K/128)] per expert at w_scale + e * w_scale_stride.
  // Per-tensor scaling folds the weight scale into a_scale and passes a block
  // of ones with stride 0, which the group-building kernel fills
  // (w_scale_ones_count floats; 0 when w_scale holds real scales).
  const float* a_scale;
  const float* w_scale;
  int64_t w_scale_stride;
  float* w_scale_ones;
  int64_t w_scale_ones_count;
  // Gathered rows (the prefill kernel; every other kernel declines): row i
  // of the GEMM's A is row gather_pairs[i] / gather_top_k of a, the layer's
  // [T, K] input (e4m3 with block scales: quantized once per token, a_scale
  // then one column-major [ceil(K/128), T] block, QuantRows without
  // offsets), so the gather stage does not run. gather_pairs is the sort's
  // row -> (token, slot) pair map; null: a holds the rows in expert order.
  const int32_t* gather_pairs = nullptr;
  int64_t gather_top_k = 0;
};

// The scratch starts with kGroupArrays per-group arrays (shapes, A, B and D
// pointers, A, B and D strides, A and B scale pointers) of kGroupEntryBytes
// per group each, every array 256-byte aligned; CUTLASS's own workspace follows.
constexpr int kGroupArrays = 9;
constexpr size_t kGroupEntryBytes = 16;
inline size_t group_array_bytes(int64_t num_experts) {
  return (static_cast<size_t>(num_experts) * kGroupEntryBytes + 255) / 256 * 256;
}

// One entry per compiled family (sm90_grouped_gemm_<family>.cu): bf16 and
// fp16 operands, or (fp8_*) e4m3 operands with bf16 or fp16 output.
#define MOEKIT_DECLARE_SM90_GEMM(family)                                                  \
  cudaError_t sm90_grouped_gemm_##family(const GroupedGemmParams& p, cudaStream_t stream); \
  size_t sm90_grouped_gemm_##family##_workspace(int64_t num_experts, int sm_count);
MOEKIT_DECLARE_SM90_GEMM(swap128x16)
MOEKIT_DECLARE_SM90_GEMM(tile128x128)
MOEKIT_DECLARE_SM90_GEMM(tile128x256)
MOEKIT_DECLARE_SM90_GEMM(tile64x256)
MOEKIT_DECLARE_SM90_GEMM(fp8_swap128x16)
MOEKIT_DECLARE_SM90_GEMM(fp8_tile128x128)
MOEKIT_DECLARE_SM90_GEMM(fp8_pingpong64x128)
MOEKIT_DECLARE_SM90_GEMM(fp8_tile128x128_1x2)
#undef MOEKIT_DECLARE_SM90_GEMM

}  // namespace moekit::kernels
