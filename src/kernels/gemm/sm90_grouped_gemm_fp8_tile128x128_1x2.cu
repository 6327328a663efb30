// Grouped GEMM family fp8_tile128x128_1x2: fp8_tile128x128 in clusters
// of 2 CTAs along N, the row tile multicast to both.
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_128, cute::_128, cute::_128>,
                                 cute::Shape<cute::_1, cute::_2, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperativeFP8Blockwise,
                                 cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
                                 /*swap*/ false, cutlass::float_e4m3_t, /*block scaled*/ true>;
}  // namespace

cudaError_t sm90_grouped_gemm_fp8_tile128x128_1x2(const GroupedGemmParams& p, cudaStream_t stream) {
  return sm90::run_any_dtype<Family>(p, stream);
}

size_t sm90_grouped_gemm_fp8_tile128x128_1x2_workspace(int64_t num_experts, int sm_count) {
  return sm90::workspace_any_dtype<Family>(num_experts, sm_count);
}

}  // namespace moekit::kernels
