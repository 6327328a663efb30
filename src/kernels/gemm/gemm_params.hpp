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
};

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
