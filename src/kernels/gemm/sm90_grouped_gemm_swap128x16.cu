// Grouped GEMM family swap128x16 (decode, <= 8 rows per expert): swap-AB,
// 128 weight rows x 16 token rows x 128 deep, cooperative warpgroups.
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_128, cute::_16, cute::_128>,
                                 cute::Shape<cute::_1, cute::_1, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative,
                                 cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
                                 /*swap*/ true>;
}  // namespace

cudaError_t sm90_grouped_gemm_swap128x16(const GroupedGemmParams& p, cudaStream_t stream) {
  return sm90::run_any_dtype<Family>(p, stream);
}

size_t sm90_grouped_gemm_swap128x16_workspace(int64_t num_experts, int sm_count) {
  return sm90::workspace_any_dtype<Family>(num_experts, sm_count);
}

}  // namespace moekit::kernels
