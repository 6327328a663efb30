// select_config: the one place that picks a grouped GEMM kernel.
#include "kernels/gemm/gemm_config.hpp"

#include <cstring>

namespace moekit::kernels {

const char* gemm_kernel_name(GemmKernel k) {
  switch (k) {
    case GemmKernel::kSimple: return "simple (CUDA cores)";
    case GemmKernel::kSwap128x16: return "sm90 swap-AB 128x16x128";
    case GemmKernel::kSwap128x64: return "sm90 swap-AB 128x64x128";
    case GemmKernel::kTile128x128: return "sm90 128x128x64";
    case GemmKernel::kTile256x128: return "sm90 256x128x64";
    case GemmKernel::kSwap64x16: return "sm90 swap-AB 64x16x128 ping-pong";
    case GemmKernel::kTile128x256: return "sm90 128x256x64";
  }
  return "unknown";
}

bool gemm_kernel_from_name(const char* name, GemmKernel* out) {
  static const struct { const char* name; GemmKernel kernel; } kNames[] = {
      {"simple", GemmKernel::kSimple},           {"swap128x16", GemmKernel::kSwap128x16},
      {"swap64x16", GemmKernel::kSwap64x16},     {"swap128x64", GemmKernel::kSwap128x64},
      {"tile128x128", GemmKernel::kTile128x128}, {"tile128x256", GemmKernel::kTile128x256},
      {"tile256x128", GemmKernel::kTile256x128}};
  for (const auto& n : kNames)
    if (std::strcmp(name, n.name) == 0) { *out = n.kernel; return true; }
  return false;
}

GemmConfig select_config(const GemmProblem& p) {
  if (p.dtype != MOEKIT_DTYPE_BF16 && p.dtype != MOEKIT_DTYPE_FP16)
    return {GemmKernel::kSimple, "fp32 weights: no tensor-core kernel is compiled for fp32"};
  if (p.n % 8 != 0 || p.k % 8 != 0)
    return {GemmKernel::kSimple, "N or K not a multiple of 8: TMA needs 16-byte rows"};
  if (p.n > (int64_t{1} << 30) || p.k > (int64_t{1} << 30) || p.rows > (int64_t{1} << 31) - 1)
    return {GemmKernel::kSimple, "a dimension beyond CUTLASS's int32 group shape"};
  // Rows per expert if the router spreads the pairs evenly; skewed batches
  // still run correctly on any kernel, this only picks the tile.
  const int64_t experts = p.num_experts > 0 ? p.num_experts : 1;
  const int64_t rows_per_expert = (p.rows + experts - 1) / experts;
  if (rows_per_expert <= 16)
    return {GemmKernel::kSwap128x16,
            "<= 16 rows per expert: weight rows fill wgmma's M side, tokens its 16-wide N side; "
            "every CTA streams its own 128-row weight slice (memory-bound)"};
  if (rows_per_expert <= 64)
    return {GemmKernel::kSwap128x64,
            "17-64 rows per expert: swap-AB with a 64-wide token side, so a 64-row group reads "
            "each weight tile once"};
  if (rows_per_expert <= 384)
    return {GemmKernel::kTile128x128,
            "65-384 rows per expert: 128x128 tiles waste at most half a tile per group"};
  return {GemmKernel::kTile256x128,
          "> 384 rows per expert: 256x128 tiles, the most reuse per loaded byte (compute-bound)"};
}

}  // namespace moekit::kernels
