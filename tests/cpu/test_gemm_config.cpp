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
  return {dt, tokens * k, experts, n, depth};
}
}  // namespace

TEST(GemmConfig, DecodeStreamsWeightsAndLargerBatchesUseTiles) {
  // qwen3-30b-a3b GEMM 1: E = 128, k = 8, N = 1536, K = 2048.
  EXPECT_EQ(select_config(gemm(1, 8, 128, 1536, 2048)).kernel, GemmKernel::kDecode);
  EXPECT_EQ(select_config(gemm(64, 8, 128, 1536, 2048)).kernel, GemmKernel::kDecode);
  EXPECT_EQ(select_config(gemm(128, 8, 128, 1536, 2048)).kernel, GemmKernel::kDecode);
  // 9-24 rows per expert on experts of <= 8 MiB: decode with 32-token passes.
  EXPECT_EQ(select_config(gemm(129, 8, 128, 1536, 2048)).kernel, GemmKernel::kDecode);
  EXPECT_EQ(select_config(gemm(256, 8, 128, 1536, 2048)).kernel, GemmKernel::kDecode);
  EXPECT_EQ(select_config(gemm(256, 8, 128, 2048, 768)).kernel, GemmKernel::kDecode);
  EXPECT_EQ(select_config(gemm(257, 8, 128, 1536, 2048)).kernel, GemmKernel::kDecode);
  EXPECT_EQ(select_config(gemm(384, 8, 128, 2048, 768)).kernel, GemmKernel::kDecode);   // 24 rows
  EXPECT_NE(std::string(select_config(gemm(256, 8, 128, 1536, 2048)).reason).find("32-token"), std::string::npos);
  EXPECT_EQ(std::string(select_config(gemm(128, 8, 128, 1536, 2048)).reason).find("32-token"), std::string::npos);
  EXPECT_EQ(select_config(gemm(385, 8, 128, 1536, 2048)).kernel, GemmKernel::kPrefill);  // 25 rows
  // Not for e4m3 (it measured no faster there).
  EXPECT_EQ(select_config(gemm(256, 8, 128, 1536, 2048, MOEKIT_DTYPE_FP8_E4M3)).kernel,
            GemmKernel::kFp8Pingpong64x128);
  // 25-96 rows per expert: GEMM 1 on the prefill kernel (gather and activation fused).
  EXPECT_EQ(select_config(gemm(1024, 8, 128, 1536, 2048)).kernel, GemmKernel::kPrefill);
  EXPECT_EQ(select_config(gemm(1536, 8, 128, 1536, 2048)).kernel, GemmKernel::kPrefill);     // 96 rows
  EXPECT_EQ(select_config(gemm(1537, 8, 128, 1536, 2048)).kernel, GemmKernel::kTile64x256);  // 97 rows
  EXPECT_EQ(select_config(gemm(2048, 8, 128, 1536, 2048)).kernel, GemmKernel::kTile64x256);  // 128 rows
  EXPECT_EQ(select_config(gemm(2049, 8, 128, 1536, 2048)).kernel, GemmKernel::kTile128x256);
  EXPECT_EQ(select_config(gemm(4096, 8, 128, 1536, 2048)).kernel, GemmKernel::kTile128x256);
  // mixtral-8x7b: E = 8, k = 2: 2 rows per expert at T = 8, 16 at T = 64
  // (experts over 8 MiB: no 32-token decode).
  EXPECT_EQ(select_config(gemm(8, 2, 8, 28672, 4096)).kernel, GemmKernel::kDecode);
  EXPECT_EQ(select_config(gemm(64, 2, 8, 28672, 4096)).kernel, GemmKernel::kPrefill);
  EXPECT_EQ(select_config(gemm(16384, 2, 8, 28672, 4096)).kernel, GemmKernel::kTile128x256);
  // A narrow N keeps 128x128 tiles.
  EXPECT_EQ(select_config(gemm(4096, 8, 128, 768, 2048)).kernel, GemmKernel::kTile128x128);
}

// GEMM 2 (N = H) at 129-1024 rows per expert runs 64x256 ping-pong tiles where
// GEMM 1 runs 128x256; it runs the prefill kernel at 33-80 rows only, where
// GEMM 1 does from the decode kernel's limit up to 96; for decode batches,
// narrow N or e4m3 both GEMMs choose alike.
TEST(GemmConfig, SecondGemmOfPrefillUsesPingPongTiles) {
  auto second = [](GemmProblem q) { q.gemm = 2; return select_config(q); };
  // qwen3-30b-a3b's GEMM 2 (N = 2048, K = 768) around the prefill kernel's rows.
  EXPECT_EQ(second(gemm(512, 8, 128, 2048, 768)).kernel, GemmKernel::kTile64x256);  // 32 rows
  EXPECT_EQ(second(gemm(513, 8, 128, 2048, 768)).kernel, GemmKernel::kPrefill);     // 33 rows
  EXPECT_EQ(second(gemm(1024, 8, 128, 2048, 768)).kernel, GemmKernel::kPrefill);    // 64 rows
  EXPECT_EQ(second(gemm(1280, 8, 128, 2048, 768)).kernel, GemmKernel::kPrefill);    // 80 rows
  EXPECT_EQ(second(gemm(1281, 8, 128, 2048, 768)).kernel, GemmKernel::kTile64x256); // 81 rows
  EXPECT_EQ(select_config(gemm(1281, 8, 128, 1536, 2048)).kernel, GemmKernel::kPrefill);  // its GEMM 1
  EXPECT_EQ(second(gemm(64, 2, 8, 4096, 14336)).kernel, GemmKernel::kTile64x256);  // mixtral, 16 rows
  EXPECT_EQ(second(gemm(256, 2, 8, 4096, 14336)).kernel, GemmKernel::kPrefill);    // mixtral, 64 rows
  EXPECT_EQ(second(gemm(4096, 2, 8, 4096, 14336)).kernel, GemmKernel::kTile64x256);   // mixtral
  EXPECT_EQ(second(gemm(4096, 8, 256, 7168, 2048)).kernel, GemmKernel::kTile64x256);  // deepseek-v3
  EXPECT_EQ(second(gemm(8192, 8, 256, 7168, 2048)).kernel, GemmKernel::kTile64x256);  // deepseek-v3, 256 rows
  EXPECT_EQ(second(gemm(16384, 2, 8, 4096, 14336)).kernel, GemmKernel::kTile128x256);  // 4096 rows per expert
  EXPECT_EQ(select_config(gemm(8192, 8, 256, 4096, 7168)).kernel, GemmKernel::kTile128x256);  // GEMM 1, 256 rows
  EXPECT_NE(std::string(second(gemm(4096, 8, 128, 2048, 768)).reason).find("GEMM 2"), std::string::npos);
  for (const GemmProblem& q : {gemm(1, 8, 128, 2048, 768), gemm(256, 8, 128, 2048, 768), gemm(4096, 8, 128, 768, 2048),
                               gemm(4096, 8, 128, 2048, 768, MOEKIT_DTYPE_FP8_E4M3), gemm(1024, 8, 128, 2048, 768)}) {
    GemmProblem q1 = q;
    q1.gemm = 1;
    EXPECT_EQ(second(q).kernel, select_config(q1).kernel) << q.rows << " " << q.n;
  }
}

TEST(GemmConfig, BoundariesOfRowsPerExpertAndN) {
  for (int64_t rows : {0, 1, 8}) EXPECT_EQ(select_config(gemm(rows, 1, 1, 64, 64)).kernel, GemmKernel::kDecode) << rows;
  // More experts than the decode kernel keeps in shared memory: swap-AB.
  const int64_t e = moekit::kernels::kDecodeMaxExperts;
  EXPECT_EQ(select_config(gemm(8 * e, 1, e, 64, 64)).kernel, GemmKernel::kDecode);
  EXPECT_EQ(select_config(gemm(8 * e, 1, e + 1, 64, 64)).kernel, GemmKernel::kSwap128x16);
  // 9-24 rows per expert: decode on experts of <= 8 MiB, tiles above.
  for (int64_t rows : {9, 16, 24}) EXPECT_EQ(select_config(gemm(rows, 1, 1, 1016, 64)).kernel, GemmKernel::kDecode) << rows;
  EXPECT_EQ(select_config(gemm(24, 1, 1, 4096, 1024)).kernel, GemmKernel::kDecode);   // exactly 8 MiB
  EXPECT_EQ(select_config(gemm(16, 1, 1, 4104, 1024)).kernel, GemmKernel::kPrefill);  // over
  for (int64_t rows : {25, 1 << 20}) EXPECT_EQ(select_config(gemm(rows, 1, 1, 1016, 64)).kernel, GemmKernel::kTile128x128) << rows;
  for (int64_t rows : {25, 64, 96}) EXPECT_EQ(select_config(gemm(rows, 1, 1, 1024, 64)).kernel, GemmKernel::kPrefill) << rows;
  // 97-128 rows: 64-row tiles (about half the experts of a 128-row mean would spill into a second 128-row tile).
  for (int64_t rows : {97, 128}) EXPECT_EQ(select_config(gemm(rows, 1, 1, 1024, 64)).kernel, GemmKernel::kTile64x256) << rows;
  // More experts than the prefill kernel keeps in shared memory: 64-row tiles.
  const int64_t pe = moekit::kernels::kPrefillMaxExperts;
  EXPECT_EQ(select_config(gemm(64 * pe, 1, pe, 1024, 64)).kernel, GemmKernel::kPrefill);
  EXPECT_EQ(select_config(gemm(64 * pe, 1, pe + 1, 1024, 64)).kernel, GemmKernel::kTile64x256);
  for (int64_t rows : {129, 1 << 20}) EXPECT_EQ(select_config(gemm(rows, 1, 1, 1024, 64)).kernel, GemmKernel::kTile128x256) << rows;
  // Rounded up: 49 rows over 2 experts is 25 per expert.
  EXPECT_EQ(select_config(gemm(48, 1, 2, 64, 64)).kernel, GemmKernel::kDecode);
  EXPECT_EQ(select_config(gemm(49, 1, 2, 64, 64)).kernel, GemmKernel::kTile128x128);
}

TEST(GemmConfig, SimplePathForFp32AndUnalignedShapes) {
  EXPECT_EQ(select_config(gemm(64, 8, 128, 1536, 2048, MOEKIT_DTYPE_FP32)).kernel, GemmKernel::kSimple);
  EXPECT_EQ(select_config(gemm(64, 8, 128, 1536, 2048, MOEKIT_DTYPE_FP16)).kernel, GemmKernel::kDecode);
  EXPECT_EQ(select_config(gemm(64, 8, 128, 1532, 2048)).kernel, GemmKernel::kSimple);
  EXPECT_EQ(select_config(gemm(64, 8, 128, 1536, 2044)).kernel, GemmKernel::kSimple);
}

TEST(GemmConfig, EveryChoiceNamesItselfAndSaysWhy) {
  for (int64_t rows : {1, 40, 200, 5000})
    for (auto dt : {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP32}) {
      const auto c = select_config(gemm(rows, 1, 1, 2048, 64, dt));
      EXPECT_GT(std::string(c.reason).size(), 20u);
      EXPECT_NE(std::string(moekit::kernels::gemm_kernel_name(c.kernel)), "unknown");
    }
}

TEST(GemmConfig, OverrideNames) {
  GemmKernel k{};
  EXPECT_TRUE(moekit::kernels::gemm_kernel_from_name("simple", &k));
  EXPECT_EQ(k, GemmKernel::kSimple);
  EXPECT_TRUE(moekit::kernels::gemm_kernel_from_name("tile128x256", &k));
  EXPECT_EQ(k, GemmKernel::kTile128x256);
  EXPECT_TRUE(moekit::kernels::gemm_kernel_from_name("decode", &k));
  EXPECT_EQ(k, GemmKernel::kDecode);
  EXPECT_TRUE(moekit::kernels::gemm_kernel_from_name("tile64x256", &k));
  EXPECT_EQ(k, GemmKernel::kTile64x256);
  EXPECT_TRUE(moekit::kernels::gemm_kernel_from_name("fp8_decode", &k));
  EXPECT_EQ(k, GemmKernel::kFp8Decode);
  EXPECT_TRUE(moekit::kernels::gemm_kernel_from_name("prefill", &k));
  EXPECT_EQ(k, GemmKernel::kPrefill);
  EXPECT_TRUE(moekit::kernels::gemm_kernel_from_name("fp8_prefill", &k));
  EXPECT_EQ(k, GemmKernel::kFp8Prefill);
  EXPECT_TRUE(moekit::kernels::gemm_kernel_runs_fp8(GemmKernel::kFp8Prefill));
  EXPECT_FALSE(moekit::kernels::gemm_kernel_runs_fp8(GemmKernel::kPrefill));
  EXPECT_TRUE(moekit::kernels::gemm_kernel_from_name("fp8_tile128x128_1x2", &k));
  EXPECT_EQ(k, GemmKernel::kFp8Tile128x128Cluster1x2);
  EXPECT_TRUE(moekit::kernels::gemm_kernel_runs_fp8(GemmKernel::kFp8Tile128x128Cluster1x2));
  EXPECT_FALSE(moekit::kernels::gemm_kernel_from_name("tile128x256_2x1", &k));  // dropped: lost everywhere
  EXPECT_FALSE(moekit::kernels::gemm_kernel_from_name("tile999", &k));
}

TEST(GemmConfig, Fp8UsesTheBlockScaledFamiliesOnly) {
  const auto fp8 = MOEKIT_DTYPE_FP8_E4M3;
  // deepseek-v3 GEMM 1: E = 256, k = 8, N = 4096, K = 7168.
  EXPECT_EQ(select_config(gemm(1, 8, 256, 4096, 7168, fp8)).kernel, GemmKernel::kFp8Decode);
  EXPECT_EQ(select_config(gemm(256, 8, 256, 4096, 7168, fp8)).kernel, GemmKernel::kFp8Decode);
  // More experts than the decode kernel holds: CUTLASS swap-AB.
  EXPECT_EQ(select_config(gemm(1, 8, 2048, 4096, 7168, fp8)).kernel, GemmKernel::kFp8Swap128x16);
  EXPECT_EQ(select_config(gemm(257, 8, 256, 4096, 7168, fp8)).kernel, GemmKernel::kFp8Pingpong64x128);
  EXPECT_EQ(select_config(gemm(2048, 8, 256, 4096, 7168, fp8)).kernel, GemmKernel::kFp8Pingpong64x128);
  EXPECT_EQ(select_config(gemm(2049, 8, 256, 4096, 7168, fp8)).kernel, GemmKernel::kFp8Tile128x128Cluster1x2);
  // Narrow N makes no difference to fp8 (one 128x128 tile family).
  EXPECT_EQ(select_config(gemm(4096, 8, 128, 768, 2048, fp8)).kernel, GemmKernel::kFp8Tile128x128Cluster1x2);
  // TMA needs 16-byte rows: 16 e4m3 values.
  EXPECT_EQ(select_config(gemm(4096, 8, 128, 1544, 2048, fp8)).kernel, GemmKernel::kSimple);
  EXPECT_EQ(select_config(gemm(4096, 8, 128, 1536, 2056, fp8)).kernel, GemmKernel::kSimple);
  for (int64_t T : {1, 64, 300, 5000}) {
    const GemmKernel k = select_config(gemm(T, 8, 128, 1536, 2048, fp8)).kernel;
    EXPECT_TRUE(moekit::kernels::gemm_kernel_runs_fp8(k)) << T;
    EXPECT_TRUE(k == GemmKernel::kSimple || !moekit::kernels::gemm_kernel_runs_16bit(k)) << T;
  }
  for (int64_t T : {1, 64, 300, 5000})
    EXPECT_TRUE(moekit::kernels::gemm_kernel_runs_16bit(select_config(gemm(T, 8, 128, 1536, 2048)).kernel));
}

// The decode kernel's ring: 6 stages at three CTAs per SM for experts of at
// most 8 MiB (N x K x element bytes), the full ring for larger ones; the
// reason says which.
TEST(GemmConfig, DecodeRingBySizeOfTheExpert) {
  using moekit::kernels::decode_ring_stages;
  const int small = moekit::kernels::kDecodeSmallExpertStages, full = moekit::kernels::kDecodeMaxStages;
  // qwen3-30b-a3b: GEMM 1 1536 x 2048, GEMM 2 2048 x 768, in both operand kinds.
  EXPECT_EQ(decode_ring_stages(1536, 2048, 2), small);
  EXPECT_EQ(decode_ring_stages(2048, 768, 2), small);
  EXPECT_EQ(decode_ring_stages(1536, 2048, 1), small);
  // deepseek-v3 (4096 x 7168, 7168 x 2048) and mixtral (28672 x 4096) in fp8 and bf16.
  EXPECT_EQ(decode_ring_stages(7168, 2048, 1), full);
  EXPECT_EQ(decode_ring_stages(4096, 7168, 1), full);
  EXPECT_EQ(decode_ring_stages(28672, 4096, 2), full);
  // The boundary: exactly 8 MiB is small, one more row is not.
  EXPECT_EQ(decode_ring_stages(2048, 2048, 2), small);
  EXPECT_EQ(decode_ring_stages(2049, 2048, 2), full);
  EXPECT_EQ(decode_ring_stages(4096, 2048, 1), small);
  EXPECT_EQ(decode_ring_stages(4104, 2048, 1), full);
  // 32-token passes: 12 KB slots, the same ring bytes in 5 and 7 of them.
  EXPECT_EQ(decode_ring_stages(1536, 2048, 2, 32), 5);
  EXPECT_EQ(decode_ring_stages(28672, 4096, 2, 32), 7);
  EXPECT_EQ(decode_ring_stages(1536, 2048, 2, 16), small);
  const std::string qwen = select_config(gemm(1, 8, 128, 1536, 2048)).reason;
  const std::string mixtral = select_config(gemm(8, 2, 8, 28672, 4096)).reason;
  const std::string qwen_fp8 = select_config(gemm(1, 8, 128, 1536, 2048, MOEKIT_DTYPE_FP8_E4M3)).reason;
  const std::string deepseek_fp8 = select_config(gemm(1, 8, 256, 4096, 7168, MOEKIT_DTYPE_FP8_E4M3)).reason;
  EXPECT_NE(qwen.find("6 stages, 3 CTAs per SM"), std::string::npos) << qwen;
  EXPECT_NE(qwen_fp8.find("6 stages, 3 CTAs per SM"), std::string::npos) << qwen_fp8;
  EXPECT_NE(mixtral.find("9 stages, 2 CTAs per SM"), std::string::npos) << mixtral;
  EXPECT_NE(deepseek_fp8.find("9 stages, 2 CTAs per SM"), std::string::npos) << deepseek_fp8;
}

// Token rows per decode pass: 16 up to 8 rows per expert, 32 above.
TEST(GemmConfig, DecodePassTokensByRowsPerExpert) {
  using moekit::kernels::decode_pass_tokens;
  EXPECT_EQ(decode_pass_tokens(1), 16);
  EXPECT_EQ(decode_pass_tokens(8), 16);
  EXPECT_EQ(decode_pass_tokens(9), 32);
  EXPECT_EQ(decode_pass_tokens(32), 32);
  EXPECT_EQ(decode_pass_tokens(1000), 32);
}

// The decode kernels get their pass size from the plan, which counts rows
// per expert as select_config does. Under expert parallelism the plan's rows
// are the rank's share (T*k*E_local/E), so the launcher's own count
// (T*k / E_local) would differ: deepseek-v3 on 4 ranks at T = 128 is 4 rows
// per local expert (16-token passes), where 1024 pairs over 64 local
// experts would be 16 (32-token passes).
TEST(GemmConfig, DecodeKernelsCarryThePassSizeOfTheirRowCount) {
  const int64_t ep_rows = 128 * 8 * 64 / 256;
  EXPECT_EQ(select_config({MOEKIT_DTYPE_BF16, ep_rows, 64, 4096, 7168}).pass_tokens, 16);
  EXPECT_EQ(select_config({MOEKIT_DTYPE_FP8_E4M3, ep_rows, 64, 4096, 7168}).pass_tokens, 16);
  // qwen3-30b-a3b: 8 rows per expert at T = 128, 16 at T = 256 (small experts).
  EXPECT_EQ(select_config(gemm(128, 8, 128, 1536, 2048)).pass_tokens, 16);
  EXPECT_EQ(select_config(gemm(256, 8, 128, 1536, 2048)).pass_tokens, 32);
  EXPECT_EQ(select_config(gemm(128, 8, 128, 1536, 2048, MOEKIT_DTYPE_FP8_E4M3)).pass_tokens, 16);
  // Kernels that are not the decode kernel carry none.
  for (const GemmProblem& q : {gemm(385, 8, 128, 1536, 2048), gemm(4096, 8, 128, 1536, 2048),
                               gemm(256, 8, 128, 1536, 2048, MOEKIT_DTYPE_FP8_E4M3), gemm(8, 1, 1, 64, 64, MOEKIT_DTYPE_FP32)}) {
    const auto c = select_config(q);
    EXPECT_NE(c.kernel, GemmKernel::kDecode);
    EXPECT_EQ(c.pass_tokens, 0) << moekit::kernels::gemm_kernel_name(c.kernel);
  }
}

// GEMM 1 gathers its own rows on the prefill kernels only, and only where
// a row is the input row as it is: no conversion, no router weight, and for
// e4m3 a block-scaled quantization that does not depend on the expert.
TEST(GemmConfig, OnlyThePrefillKernelsGatherTheirOwnRows) {
  using moekit::kernels::gemm1_gathers_rows;
  EXPECT_TRUE(gemm1_gathers_rows(GemmKernel::kPrefill, MOEKIT_QUANT_NONE, false, true));
  EXPECT_TRUE(gemm1_gathers_rows(GemmKernel::kFp8Prefill, MOEKIT_QUANT_FP8_BLOCK, false, true));
  // The router weight scales the gathered rows; an fp32 input is converted.
  EXPECT_FALSE(gemm1_gathers_rows(GemmKernel::kPrefill, MOEKIT_QUANT_NONE, true, true));
  EXPECT_FALSE(gemm1_gathers_rows(GemmKernel::kPrefill, MOEKIT_QUANT_NONE, false, false));
  EXPECT_FALSE(gemm1_gathers_rows(GemmKernel::kFp8Prefill, MOEKIT_QUANT_FP8_BLOCK, true, true));
  EXPECT_FALSE(gemm1_gathers_rows(GemmKernel::kFp8Prefill, MOEKIT_QUANT_FP8_BLOCK, false, false));
  // Per-tensor scaling folds each expert's weight scale into its rows' scales.
  EXPECT_FALSE(gemm1_gathers_rows(GemmKernel::kFp8Prefill, MOEKIT_QUANT_FP8_TENSOR, false, true));
  // A kernel of the other operand kind, and every other kernel.
  EXPECT_FALSE(gemm1_gathers_rows(GemmKernel::kPrefill, MOEKIT_QUANT_FP8_BLOCK, false, true));
  EXPECT_FALSE(gemm1_gathers_rows(GemmKernel::kFp8Prefill, MOEKIT_QUANT_NONE, false, true));
  for (GemmKernel k : {GemmKernel::kSimple, GemmKernel::kDecode, GemmKernel::kFp8Decode, GemmKernel::kTile128x256,
                       GemmKernel::kTile64x256, GemmKernel::kSwap128x16, GemmKernel::kFp8Tile128x128})
    for (moekit_quant_t q : {MOEKIT_QUANT_NONE, MOEKIT_QUANT_FP8_BLOCK})
      EXPECT_FALSE(gemm1_gathers_rows(k, q, false, true)) << moekit::kernels::gemm_kernel_name(k);
}
