// Grouped GEMM family tile128x256: moderate groups with wide N: 128 token rows x 256 weight rows, twice the reuse of 128x128 for the same M waste.
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_128, cute::_256, cute::_64>,
                                 cute::Shape<cute::_1, cute::_1, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative, cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
                                 /*swap*/ false>;
}  // namespace

cudaError_t sm90_grouped_gemm_tile128x256(const GroupedGemmParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case MOEKIT_DTYPE_BF16: return sm90::run<Family<cutlass::bfloat16_t>>(p, stream);
    case MOEKIT_DTYPE_FP16: return sm90::run<Family<cutlass::half_t>>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

size_t sm90_grouped_gemm_tile128x256_workspace(int64_t num_experts, int sm_count) {
  const size_t b = sm90::workspace_bytes<Family<cutlass::bfloat16_t>>(num_experts, sm_count);
  const size_t h = sm90::workspace_bytes<Family<cutlass::half_t>>(num_experts, sm_count);
  return b > h ? b : h;
}

}  // namespace moekit::kernels
