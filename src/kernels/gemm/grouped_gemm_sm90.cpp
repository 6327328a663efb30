// Dispatch to the compiled sm90 grouped GEMM families (host code only).
#include "kernels/gemm/grouped_gemm_sm90.hpp"

#include <algorithm>

namespace moekit::kernels {

size_t grouped_gemm_scratch_bytes(int64_t num_experts, int sm_count) {
  const size_t cutlass_ws = std::max({sm90_grouped_gemm_swap128x16_workspace(num_experts, sm_count),
                                      sm90_grouped_gemm_tile128x128_workspace(num_experts, sm_count),
                                      sm90_grouped_gemm_tile128x256_workspace(num_experts, sm_count),
                                      sm90_grouped_gemm_tile64x256_workspace(num_experts, sm_count),
                                      sm90_grouped_gemm_fp8_swap128x16_workspace(num_experts, sm_count),
                                      sm90_grouped_gemm_fp8_tile128x128_workspace(num_experts, sm_count),
                                      sm90_grouped_gemm_fp8_pingpong64x128_workspace(num_experts, sm_count),
                                      sm90_grouped_gemm_fp8_tile128x128_1x2_workspace(num_experts, sm_count)});
  return kGroupArrays * group_array_bytes(num_experts) + (cutlass_ws + 255) / 256 * 256;
}

cudaError_t launch_grouped_gemm_sm90(GemmKernel kernel, const GroupedGemmParams& p,
                                     cudaStream_t stream) {
  if (p.gather_pairs != nullptr) return cudaErrorNotSupported;  // the prefill kernel's form only
  switch (kernel) {
    case GemmKernel::kSwap128x16: return sm90_grouped_gemm_swap128x16(p, stream);
    case GemmKernel::kTile128x128: return sm90_grouped_gemm_tile128x128(p, stream);
    case GemmKernel::kTile128x256: return sm90_grouped_gemm_tile128x256(p, stream);
    case GemmKernel::kTile64x256: return sm90_grouped_gemm_tile64x256(p, stream);
    case GemmKernel::kFp8Swap128x16: return sm90_grouped_gemm_fp8_swap128x16(p, stream);
    case GemmKernel::kFp8Tile128x128: return sm90_grouped_gemm_fp8_tile128x128(p, stream);
    case GemmKernel::kFp8Pingpong64x128: return sm90_grouped_gemm_fp8_pingpong64x128(p, stream);
    case GemmKernel::kFp8Tile128x128Cluster1x2: return sm90_grouped_gemm_fp8_tile128x128_1x2(p, stream);
    case GemmKernel::kSimple:
    case GemmKernel::kDecode:
    case GemmKernel::kFp8Decode:
    case GemmKernel::kPrefill:
    case GemmKernel::kFp8Prefill: break;  // not CUTLASS families: launch_hand_written_gemm
  }
  return cudaErrorNotSupported;
}

bool gemm_kernel_is_hand_written(GemmKernel kernel) {
  return kernel == GemmKernel::kDecode || kernel == GemmKernel::kFp8Decode ||
         kernel == GemmKernel::kPrefill || kernel == GemmKernel::kFp8Prefill;
}

cudaError_t launch_hand_written_gemm(GemmKernel kernel, const GroupedGemmParams& p,
                                     int64_t rows_capacity, cudaStream_t stream,
                                     const FusedActivation* fuse, int pass_tokens,
                                     const DecodeRouting& route) {
  switch (kernel) {
    case GemmKernel::kDecode:
    case GemmKernel::kFp8Decode: return decode_grouped_gemm(p, rows_capacity, stream, fuse, pass_tokens, route);
    case GemmKernel::kPrefill:
    case GemmKernel::kFp8Prefill:
      if (route.pairs > 0) break;  // it reads expert_offsets before its wait
      return prefill_grouped_gemm(p, rows_capacity, stream, fuse);
    default: break;
  }
  return cudaErrorNotSupported;
}

}  // namespace moekit::kernels
