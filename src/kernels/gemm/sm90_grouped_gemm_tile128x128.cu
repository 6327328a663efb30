// Grouped GEMM family tile128x128 (> 8 rows per expert, N < 1024): 128 token
// rows x 128 weight rows x 64 deep, cooperative warpgroups.
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_128, cute::_128, cute::_64>,
                                 cute::Shape<cute::_1, cute::_1, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative,
                                 cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
                                 /*swap*/ false>;
}  // namespace

cudaError_t sm90_grouped_gemm_tile128x128(const GroupedGemmParams& p, cudaStream_t stream) {
  return sm90::run_any_dtype<Family>(p, stream);
}

size_t sm90_grouped_gemm_tile128x128_workspace(int64_t num_experts, int sm_count) {
  return sm90::workspace_any_dtype<Family>(num_experts, sm_count);
}

}  // namespace moekit::kernels
