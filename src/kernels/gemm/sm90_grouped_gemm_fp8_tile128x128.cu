// Grouped GEMM family fp8_tile128x128 (fp8 block scaling, > 8 rows per
// expert): e4m3 operands, 128 token rows x 128 weight rows x 128 deep (one
// scale block per k-tile), cooperative warpgroups, bf16 or fp16 output.
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_128, cute::_128, cute::_128>,
                                 cute::Shape<cute::_1, cute::_1, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperativeFP8Blockwise,
                                 cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
                                 /*swap*/ false, cutlass::float_e4m3_t, /*block scaled*/ true>;
}  // namespace

cudaError_t sm90_grouped_gemm_fp8_tile128x128(const GroupedGemmParams& p, cudaStream_t stream) {
  return sm90::run_any_dtype<Family>(p, stream);
}

size_t sm90_grouped_gemm_fp8_tile128x128_workspace(int64_t num_experts, int sm_count) {
  return sm90::workspace_any_dtype<Family>(num_experts, sm_count);
}

}  // namespace moekit::kernels
