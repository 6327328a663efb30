// Grouped GEMM family tile128x256 (> 128 rows per expert; GEMM 2 > 1024): 128 token rows x
// 256 weight rows x 64 deep, cooperative warpgroups; twice the reuse of 128x128.
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_128, cute::_256, cute::_64>,
                                 cute::Shape<cute::_1, cute::_1, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative,
                                 cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
                                 /*swap*/ false>;
}  // namespace

cudaError_t sm90_grouped_gemm_tile128x256(const GroupedGemmParams& p, cudaStream_t stream) {
  return sm90::run_any_dtype<Family>(p, stream);
}

size_t sm90_grouped_gemm_tile128x256_workspace(int64_t num_experts, int sm_count) {
  return sm90::workspace_any_dtype<Family>(num_experts, sm_count);
}

}  // namespace moekit::kernels
