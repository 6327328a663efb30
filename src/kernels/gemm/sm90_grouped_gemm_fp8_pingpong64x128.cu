// Grouped GEMM family fp8_pingpong64x128 (fp8 block scaling): e4m3 operands,
// 64 token rows x 128 weight rows x 128 deep, two consumer warpgroups on
// different tiles (ping-pong), so one warpgroup's per-block scale promotion
// (wait for its wgmmas, scale, add) overlaps the other's tensor-core work;
// bf16 or fp16 output.
#include "kernels/gemm/sm90_grouped_gemm.cuh"

namespace moekit::kernels {
namespace {
template <class Element>
using Family = sm90::GroupedGemm<Element, cute::Shape<cute::_64, cute::_128, cute::_128>,
                                 cute::Shape<cute::_1, cute::_1, cute::_1>,
                                 cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpongFP8Blockwise,
                                 cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong,
                                 /*swap*/ false, cutlass::float_e4m3_t, /*block scaled*/ true>;
}  // namespace

cudaError_t sm90_grouped_gemm_fp8_pingpong64x128(const GroupedGemmParams& p, cudaStream_t stream) {
  return sm90::run_any_dtype<Family>(p, stream);
}

size_t sm90_grouped_gemm_fp8_pingpong64x128_workspace(int64_t num_experts, int sm_count) {
  return sm90::workspace_any_dtype<Family>(num_experts, sm_count);
}

}  // namespace moekit::kernels
