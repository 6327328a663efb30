// Grouped GEMM family fp8_swap128x16 (fp8 block scaling, decode, <= 8 rows
// per expert): swap-AB, 128 weight rows x 16 token rows x 128 deep, e4m3
// operands, one weight scale per tile and one activation scale per token
// row, cooperative warpgroups, bf16 or fp16 output.
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_128, cute::_16, cute::_128>,
                                 cute::Shape<cute::_1, cute::_1, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperativeFP8Blockwise,
                                 cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
                                 /*swap*/ true, cutlass::float_e4m3_t, /*block scaled*/ true>;
}  // namespace

cudaError_t sm90_grouped_gemm_fp8_swap128x16(const GroupedGemmParams& p, cudaStream_t stream) {
  return sm90::run_any_dtype<Family>(p, stream);
}

size_t sm90_grouped_gemm_fp8_swap128x16_workspace(int64_t num_experts, int sm_count) {
  return sm90::workspace_any_dtype<Family>(num_experts, sm_count);
}

}  // namespace moekit::kernels
