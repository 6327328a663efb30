// Grouped GEMM family tile64x256 (9-128 rows per expert; GEMM 2 up to 1024): 64 token rows x 256
// weight rows x 64 deep, two tiles in flight per CTA (ping-pong warpgroups).
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_64, cute::_256, cute::_64>,
                                 cute::Shape<cute::_1, cute::_1, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong,
                                 cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong,
                                 /*swap*/ false>;
}  // namespace

cudaError_t sm90_grouped_gemm_tile64x256(const GroupedGemmParams& p, cudaStream_t stream) {
  return sm90::run_any_dtype<Family>(p, stream);
}

size_t sm90_grouped_gemm_tile64x256_workspace(int64_t num_experts, int sm_count) {
  return sm90::workspace_any_dtype<Family>(num_experts, sm_count);
}

}  // namespace moekit::kernels
