// select_config: the grouped GEMM kernel for each kind of batch, and the
// reason it gives. Pure host code, so it is pinned down here on the CPU.
#include <gtest/gtest.h>

#include <string>

#include "kernels/gemm/gemm_config.hpp"

using moekit::kernels::GemmKernel;
using moekit::kernels::GemmProblem;
using moekit::kernels::select_config;

namespace {
GemmProblem gemm(int64_t tokens, int64_t k, int64_t experts, int64_t n, int64_t depth,
                 moekit_dtype_t dt = MOEKIT_DTYPE_BF16) {
  return {dt, tokens * k, experts, n, depth, 132};
}
}  // namespace

TEST(GemmConfig, DecodeSwapsOperandsAndPrefillUsesLargeTiles) {
  // qwen3-30b-a3b GEMM 1: E = 128, k = 8, N = 1536, K = 2048.
  EXPECT_EQ(select_config(gemm(1, 8, 128, 1536, 2048)).kernel, GemmKernel::kSwap128x16);
  EXPECT_EQ(select_config(gemm(256, 8, 128, 1536, 2048)).kernel, GemmKernel::kSwap128x16);
  EXPECT_EQ(select_config(gemm(257, 8, 128, 1536, 2048)).kernel, GemmKernel::kSwap128x64);
  EXPECT_EQ(select_config(gemm(1024, 8, 128, 1536, 2048)).kernel, GemmKernel::kSwap128x64);
  EXPECT_EQ(select_config(gemm(4096, 8, 128, 1536, 2048)).kernel, GemmKernel::kTile128x128);
  EXPECT_EQ(select_config(gemm(8192, 8, 128, 1536, 2048)).kernel, GemmKernel::kTile256x128);
  // mixtral-8x7b: E = 8, k = 2: 64 rows per expert at T = 256.
  EXPECT_EQ(select_config(gemm(1, 2, 8, 28672, 4096)).kernel, GemmKernel::kSwap128x16);
  EXPECT_EQ(select_config(gemm(256, 2, 8, 28672, 4096)).kernel, GemmKernel::kSwap128x64);
  EXPECT_EQ(select_config(gemm(1024, 2, 8, 28672, 4096)).kernel, GemmKernel::kTile128x128);
  EXPECT_EQ(select_config(gemm(4096, 2, 8, 28672, 4096)).kernel, GemmKernel::kTile256x128);
}

TEST(GemmConfig, BoundariesOfRowsPerExpert) {
  for (int64_t rows : {0, 1, 16}) EXPECT_EQ(select_config(gemm(rows, 1, 1, 64, 64)).kernel, GemmKernel::kSwap128x16) << rows;
  for (int64_t rows : {17, 64}) EXPECT_EQ(select_config(gemm(rows, 1, 1, 64, 64)).kernel, GemmKernel::kSwap128x64) << rows;
  for (int64_t rows : {65, 384}) EXPECT_EQ(select_config(gemm(rows, 1, 1, 64, 64)).kernel, GemmKernel::kTile128x128) << rows;
  for (int64_t rows : {385, 1 << 20}) EXPECT_EQ(select_config(gemm(rows, 1, 1, 64, 64)).kernel, GemmKernel::kTile256x128) << rows;
  // Rounded up: 17 rows over 2 experts is 9 per expert.
  EXPECT_EQ(select_config(gemm(17, 1, 2, 64, 64)).kernel, GemmKernel::kSwap128x16);
  EXPECT_EQ(select_config(gemm(33, 1, 2, 64, 64)).kernel, GemmKernel::kSwap128x64);
}

TEST(GemmConfig, SimplePathForFp32AndUnalignedShapes) {
  EXPECT_EQ(select_config(gemm(64, 8, 128, 1536, 2048, MOEKIT_DTYPE_FP32)).kernel, GemmKernel::kSimple);
  EXPECT_EQ(select_config(gemm(64, 8, 128, 1536, 2048, MOEKIT_DTYPE_FP16)).kernel, GemmKernel::kSwap128x16);
  EXPECT_EQ(select_config(gemm(64, 8, 128, 1532, 2048)).kernel, GemmKernel::kSimple);
  EXPECT_EQ(select_config(gemm(64, 8, 128, 1536, 2044)).kernel, GemmKernel::kSimple);
}

TEST(GemmConfig, EveryChoiceNamesItselfAndSaysWhy) {
  for (int64_t rows : {1, 40, 200, 5000})
    for (auto dt : {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP32}) {
      const auto c = select_config(gemm(rows, 1, 1, 64, 64, dt));
      EXPECT_GT(std::string(c.reason).size(), 20u);
      EXPECT_NE(std::string(moekit::kernels::gemm_kernel_name(c.kernel)), "unknown");
    }
}
