// Grouped GEMM family tile64x256: 16-64 rows per expert, 64 token rows x 256 weight rows per tile, two tiles in flight per CTA (ping-pong warpgroups).
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_64, cute::_256, cute::_64>,
                                 cute::Shape<cute::_1, cute::_1, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong, cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong,
                                 /*swap*/ false>;
}  // namespace

cudaError_t sm90_grouped_gemm_tile64x256(const GroupedGemmParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case MOEKIT_DTYPE_BF16: return sm90::run<Family<cutlass::bfloat16_t>>(p, stream);
    case MOEKIT_DTYPE_FP16: return sm90::run<Family<cutlass::half_t>>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

size_t sm90_grouped_gemm_tile64x256_workspace(int64_t num_experts, int sm_count) {
  const size_t b = sm90::workspace_bytes<Family<cutlass::bfloat16_t>>(num_experts, sm_count);
  const size_t h = sm90::workspace_bytes<Family<cutlass::half_t>>(num_experts, sm_count);
  return b > h ? b : h;
}

}  // namespace moekit::kernels
