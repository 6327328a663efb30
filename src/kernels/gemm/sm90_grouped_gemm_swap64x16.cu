// Grouped GEMM family swap64x16: decode, weights on the M side in 64-row slices, two tiles in flight per CTA (ping-pong warpgroups), so more SMs stream weights at once.
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_64, cute::_16, cute::_128>,
                                 cute::Shape<cute::_1, cute::_1, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong, cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong,
                                 /*swap*/ true>;
}  // namespace

cudaError_t sm90_grouped_gemm_swap64x16(const GroupedGemmParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case MOEKIT_DTYPE_BF16: return sm90::run<Family<cutlass::bfloat16_t>>(p, stream);
    case MOEKIT_DTYPE_FP16: return sm90::run<Family<cutlass::half_t>>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

size_t sm90_grouped_gemm_swap64x16_workspace(int64_t num_experts, int sm_count) {
  const size_t b = sm90::workspace_bytes<Family<cutlass::bfloat16_t>>(num_experts, sm_count);
  const size_t h = sm90::workspace_bytes<Family<cutlass::half_t>>(num_experts, sm_count);
  return b > h ? b : h;
}

}  // namespace moekit::kernels
