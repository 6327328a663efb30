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
  moekit_dtype_t dtype;           // bf16 or fp16 (a, w, bias and c)
  void* scratch;                  // grouped_gemm_scratch_bytes(E, sm_count) bytes, 256-aligned
  int sm_count;
  // FP8 (next): a and w become e4m3 with c in bf16, and two scale pointers
  // join here (a_scale [rows, K/128] per token and 128 columns, w_scale
  // [E, N/128, K/128]); new families instantiate CUTLASS's
  // KernelPtrArrayTmaWarpSpecializedCooperativeFP8Blockwise with the same
  // group-building kernel, which then also writes per-group scale pointers.
};

// The scratch starts with kGroupArrays per-group arrays (shapes, A, B and D
// pointers, A, B and D strides) of kGroupEntryBytes per group each, every
// array 256-byte aligned; CUTLASS's own workspace follows.
constexpr int kGroupArrays = 7;
constexpr size_t kGroupEntryBytes = 16;
inline size_t group_array_bytes(int64_t num_experts) {
  return (static_cast<size_t>(num_experts) * kGroupEntryBytes + 255) / 256 * 256;
}

// One entry per compiled family (sm90_grouped_gemm_<family>.cu). bf16 and fp16.
#define MOEKIT_DECLARE_SM90_GEMM(family)                                                  \
  cudaError_t sm90_grouped_gemm_##family(const GroupedGemmParams& p, cudaStream_t stream); \
  size_t sm90_grouped_gemm_##family##_workspace(int64_t num_experts, int sm_count);
MOEKIT_DECLARE_SM90_GEMM(swap128x16)
MOEKIT_DECLARE_SM90_GEMM(tile128x128)
MOEKIT_DECLARE_SM90_GEMM(tile128x256)
MOEKIT_DECLARE_SM90_GEMM(tile64x256)
#undef MOEKIT_DECLARE_SM90_GEMM

}  // namespace moekit::kernels
