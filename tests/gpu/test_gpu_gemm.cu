// The sm90 grouped GEMM families against the simple CUDA-core grouped GEMM
// (the oracle), on random expert offsets with empty experts, odd N and K,
// with and without bias. Rows past the valid ones must stay untouched.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gpu_util.hpp"
#include "kernels/gemm/grouped_gemm_sm90.hpp"
#include "common/fp8_math.hpp"
#include "kernels/kernels.hpp"

using namespace moekit;
using test::DeviceBuffer;

namespace {

struct Case {
  int64_t experts, n, k, rows;  // rows: buffer rows; the valid ones are a random prefix
  bool bias;
  int64_t last_expert_rows = -1;  // >= 0: every valid row on the last expert, this many
};

// Expert row counts: random, with empty experts, one heavy expert and some
// rows left invalid at the end (as the sort leaves them).
std::vector<int32_t> random_offsets(int64_t experts, int64_t rows, std::mt19937_64& rng) {
  const int64_t valid = rows - static_cast<int64_t>(rng() % (rows / 8 + 1));
  std::vector<int64_t> cuts(experts - 1);
  for (auto& c : cuts) c = static_cast<int64_t>(rng() % (valid + 1));
  if (experts > 2) cuts[0] = cuts[1];  // an empty expert
  std::sort(cuts.begin(), cuts.end());
  std::vector<int32_t> off(experts + 1);
  off[0] = 0;
  for (int64_t e = 1; e < experts; ++e) off[e] = static_cast<int32_t>(cuts[e - 1]);
  off[experts] = static_cast<int32_t>(valid);
  return off;
}

// A CUTLASS family, or a hand-written kernel (which bounds its loads by rows).
cudaError_t launch_family(kernels::GemmKernel kernel, const kernels::GroupedGemmParams& p, int64_t rows) {
  return kernels::gemm_kernel_is_hand_written(kernel) ? kernels::launch_hand_written_gemm(kernel, p, rows, nullptr)
                                                      : kernels::launch_grouped_gemm_sm90(kernel, p, nullptr);
}

void check_family(kernels::GemmKernel kernel, moekit_dtype_t dt, const Case& c, uint64_t seed) {
  SCOPED_TRACE(std::string(kernels::gemm_kernel_name(kernel)) + " " + moekit_dtype_name(dt) +
               " E=" + std::to_string(c.experts) + " N=" + std::to_string(c.n) + " K=" +
               std::to_string(c.k) + " rows=" + std::to_string(c.rows) + (c.bias ? " bias" : ""));
  std::mt19937_64 rng(seed);
  const size_t b = ref::dtype_size(dt);
  std::vector<uint8_t> a(c.rows * c.k * b), w(c.experts * c.n * c.k * b), bias(c.experts * c.n * b);
  ref::fill_random(dt, a.data(), c.rows * c.k, 1.0f, seed + 1);
  ref::fill_random(dt, w.data(), c.experts * c.n * c.k, 1.0f / std::sqrt(float(c.k)), seed + 2);
  ref::fill_random(dt, bias.data(), c.experts * c.n, 0.5f, seed + 3);
  std::vector<int32_t> off = random_offsets(c.experts, c.rows, rng);
  if (c.last_expert_rows >= 0) {
    std::fill(off.begin(), off.end(), 0);
    off[c.experts] = static_cast<int32_t>(c.last_expert_rows);
  }

  DeviceBuffer da(a.size()), dw(w.size()), dbias(bias.size()), doff(off.size() * 4);
  // got: a byte pattern the GEMM never writes, set even under
  // MOEKIT_TEST_NO_POISON, so rows past the valid ones can be checked.
  constexpr int kUnwritten = 0xFE;
  DeviceBuffer want(c.rows * c.n * b, kUnwritten), got(c.rows * c.n * b, kUnwritten);
  int dev = 0, sms = 0;
  CUDA_OK(cudaGetDevice(&dev));
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  DeviceBuffer scratch(kernels::grouped_gemm_scratch_bytes(c.experts, sms));
  da.upload(a.data(), a.size());
  dw.upload(w.data(), w.size());
  dbias.upload(bias.data(), bias.size());
  doff.upload(off.data(), off.size() * 4);
  const auto* offsets = static_cast<const int32_t*>(doff.data());
  const void* bias_ptr = c.bias ? dbias.data() : nullptr;

  CUDA_OK(kernels::launch_grouped_gemm(da.data(), offsets, c.experts, dw.data(), bias_ptr,
                                       want.data(), c.rows, c.n, c.k, dt, {dev, sms}, nullptr));
  const kernels::GroupedGemmParams p{da.data(), offsets, static_cast<int>(c.experts), dw.data(),
                                     bias_ptr, got.data(), c.n, c.k, dt, scratch.data(), sms};
  CUDA_OK(launch_family(kernel, p, c.rows));
  CUDA_OK(cudaDeviceSynchronize());

  const std::vector<uint8_t> g = got.download(), r = want.download();
  const int64_t valid = off[c.experts];
  // Different fp32 summation orders round to the same bf16/fp16 value almost
  // always; a wrong expert, row or column is off by O(1).
  const double tol = dt == MOEKIT_DTYPE_BF16 ? 4e-3 : 1e-3;
  EXPECT_TRUE(test::rows_match(g, r, valid, c.n, dt, tol));
  for (size_t i = valid * c.n * b; i < g.size(); ++i)
    if (g[i] != kUnwritten) {
      ADD_FAILURE() << "byte " << i << " past the valid rows (" << valid << ") was written";
      break;
    }
  EXPECT_TRUE(got.canaries_intact());
  EXPECT_TRUE(scratch.canaries_intact());
}

const kernels::GemmKernel kFamilies[] = {kernels::GemmKernel::kSwap128x16,
                                         kernels::GemmKernel::kTile128x128,
                                         kernels::GemmKernel::kTile128x256,
                                         kernels::GemmKernel::kTile64x256,
                                         kernels::GemmKernel::kDecode,
                                         kernels::GemmKernel::kPrefill};

}  // namespace

TEST(GpuGemm, EveryFamilyMatchesTheSimpleGemm) {
  REQUIRE_GPU();
  const Case cases[] = {
      {8, 72, 136, 37, true},       // N and K below one tile
      {16, 200, 264, 700, false},   // partial tiles in N, M and K
      {5, 1536, 2048, 3000, true},  // a real GEMM 1 (qwen3), heavy groups
      {1, 704, 2688, 1100, true},   // one expert, H = 2688, I = 352 x 2
      {130, 136, 72, 260, false},   // more experts than the 128-thread setup block
  };
  uint64_t seed = 1;
  for (auto kernel : kFamilies)
    for (auto dt : {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP16})
      for (const Case& c : cases) check_family(kernel, dt, c, seed++);
}

TEST(GpuGemm, AllRowsOnTheLastExpertOneRowAndNoValidRows) {
  REQUIRE_GPU();
  for (auto kernel : kFamilies) {
    check_family(kernel, MOEKIT_DTYPE_BF16, {4, 128, 128, 300, false, 300}, 77);
    check_family(kernel, MOEKIT_DTYPE_BF16, {4, 128, 128, 8, true, 1}, 78);
    check_family(kernel, MOEKIT_DTYPE_FP16, {3, 64, 64, 8, true, 0}, 79);
  }
}

namespace {

// fp8 block-scaled families against the simple kernel's fp8 form: random
// e4m3 operands, random positive scales in QuantRows' layout (activations)
// and [E, N/128, K/128] (weights), or per tensor: a block of ones with
// stride 0 that the sm90 kernel's set-up fills (poisoned before).
void check_fp8_family(kernels::GemmKernel kernel, moekit_dtype_t out_dt, const Case& c,
                      bool per_tensor, uint64_t seed) {
  SCOPED_TRACE(std::string(kernels::gemm_kernel_name(kernel)) + " fp8 -> " +
               moekit_dtype_name(out_dt) + (per_tensor ? " per tensor" : " block") + " E=" +
               std::to_string(c.experts) + " N=" + std::to_string(c.n) + " K=" +
               std::to_string(c.k) + " rows=" + std::to_string(c.rows));
  std::mt19937_64 rng(seed);
  const size_t b = ref::dtype_size(out_dt);
  const int64_t kb = fp8_blocks(c.k), nb = fp8_blocks(c.n);
  std::vector<uint8_t> a(c.rows * c.k), w(c.experts * c.n * c.k), bias(c.experts * c.n * b);
  ref::fill_random(MOEKIT_DTYPE_FP8_E4M3, a.data(), c.rows * c.k, 100.0f, seed + 1);
  ref::fill_random(MOEKIT_DTYPE_FP8_E4M3, w.data(), c.experts * c.n * c.k, 100.0f, seed + 2);
  ref::fill_random(out_dt, bias.data(), c.experts * c.n, 0.5f, seed + 3);
  std::uniform_real_distribution<float> scale(1e-4f, 1e-3f);
  std::vector<float> a_scale(c.rows * kb), w_scale(per_tensor ? nb * kb : c.experts * nb * kb);
  for (float& s : a_scale) s = scale(rng);
  for (float& s : w_scale) s = per_tensor ? 1.0f : scale(rng);
  std::vector<int32_t> off = random_offsets(c.experts, c.rows, rng);

  DeviceBuffer da(a.size()), dw(w.size()), dbias(bias.size()), doff(off.size() * 4);
  DeviceBuffer dsa(a_scale.size() * 4), dsw(w_scale.size() * 4), ones(nb * kb * 4);
  constexpr int kUnwritten = 0xFE;
  DeviceBuffer want(c.rows * c.n * b, kUnwritten), got(c.rows * c.n * b, kUnwritten);
  int dev = 0, sms = 0;
  CUDA_OK(cudaGetDevice(&dev));
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  DeviceBuffer scratch(kernels::grouped_gemm_scratch_bytes(c.experts, sms));
  da.upload(a.data(), a.size());
  dw.upload(w.data(), w.size());
  dbias.upload(bias.data(), bias.size());
  doff.upload(off.data(), off.size() * 4);
  dsa.upload(a_scale.data(), a_scale.size() * 4);
  dsw.upload(w_scale.data(), w_scale.size() * 4);
  const auto* offsets = static_cast<const int32_t*>(doff.data());
  const auto* sa = static_cast<const float*>(dsa.data());
  const auto* sw = static_cast<const float*>(dsw.data());
  const int64_t stride = per_tensor ? 0 : nb * kb;

  CUDA_OK(kernels::launch_grouped_gemm_fp8(da.data(), sa, offsets, c.experts, dw.data(), sw, stride,
                                           dbias.data(), want.data(), c.rows, c.n, c.k, out_dt,
                                           {dev, sms}, nullptr));
  auto* ones_ptr = static_cast<float*>(ones.data());  // poisoned: NaN until filled
  const kernels::GroupedGemmParams p{da.data(), offsets, static_cast<int>(c.experts), dw.data(),
                                     dbias.data(), got.data(), c.n, c.k, out_dt, scratch.data(), sms,
                                     sa, per_tensor ? ones_ptr : sw, stride,
                                     per_tensor ? ones_ptr : nullptr, per_tensor ? nb * kb : 0};
  CUDA_OK(launch_family(kernel, p, c.rows));
  CUDA_OK(cudaDeviceSynchronize());

  const std::vector<uint8_t> g = got.download(), r = want.download();
  const int64_t valid = off[c.experts];
  EXPECT_TRUE(test::rows_match(g, r, valid, c.n, out_dt, out_dt == MOEKIT_DTYPE_BF16 ? 4e-3 : 1e-3));
  for (size_t i = valid * c.n * b; i < g.size(); ++i)
    if (g[i] != kUnwritten) {
      ADD_FAILURE() << "byte " << i << " past the valid rows (" << valid << ") was written";
      break;
    }
  EXPECT_TRUE(got.canaries_intact());
  EXPECT_TRUE(scratch.canaries_intact());
  EXPECT_TRUE(ones.canaries_intact());
}

const kernels::GemmKernel kFp8Families[] = {kernels::GemmKernel::kFp8Swap128x16,
                                            kernels::GemmKernel::kFp8Tile128x128,
                                            kernels::GemmKernel::kFp8Pingpong64x128,
                                            kernels::GemmKernel::kFp8Decode,
                                            kernels::GemmKernel::kFp8Prefill,
                                            kernels::GemmKernel::kFp8Tile128x128Cluster1x2};

}  // namespace

TEST(GpuGemm, EveryFp8FamilyMatchesTheSimpleGemm) {
  REQUIRE_GPU();
  const Case cases[] = {
      {8, 80, 144, 37, true},        // N and K below one tile, K a partial scale block
      {16, 208, 272, 700, false},    // partial tiles and scale blocks in N, M and K
      {5, 1536, 2048, 3000, true},   // a real GEMM 1 (qwen3), heavy groups
      {130, 144, 80, 260, false},    // more experts than the 128-thread setup block
  };
  uint64_t seed = 1000;
  for (auto kernel : kFp8Families)
    for (auto dt : {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP16})
      for (const Case& c : cases)
        for (bool per_tensor : {false, true}) check_fp8_family(kernel, dt, c, per_tensor, seed++);
}

TEST(GpuGemm, Fp8FamiliesDeclineSixteenBitOperandsAndTheOtherWayRound) {
  REQUIRE_GPU();
  int dev = 0, sms = 0;
  CUDA_OK(cudaGetDevice(&dev));
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  DeviceBuffer scratch(kernels::grouped_gemm_scratch_bytes(4, sms)), buf(1 << 16), off(64, 0);
  kernels::GroupedGemmParams p{buf.data(), static_cast<const int32_t*>(off.data()), 4, buf.data(),
                               nullptr, buf.data(), 128, 128, MOEKIT_DTYPE_BF16, scratch.data(), sms};
  EXPECT_EQ(kernels::launch_grouped_gemm_sm90(kernels::GemmKernel::kFp8Tile128x128, p, nullptr),
            cudaErrorNotSupported);
  p.a_scale = static_cast<const float*>(buf.data());
  p.w_scale = static_cast<const float*>(buf.data());
  EXPECT_EQ(kernels::launch_grouped_gemm_sm90(kernels::GemmKernel::kTile128x128, p, nullptr),
            cudaErrorNotSupported);
  // The hand-written kernels take both forms and fuse the activation in both
  // (nothing below launches: every call is one they decline). e4m3 with
  // split gate/up halves: the decode kernel needs I % 16 == 0 (a warp's 16
  // weight rows in one 128-row scale block).
  const kernels::FusedActivation fuse72{{MOEKIT_ACT_SWIGLU, 1.0f, 0.0f, 0.0f}, MOEKIT_GATE_UP, 72};
  p.n = 144;
  EXPECT_EQ(kernels::decode_grouped_gemm(p, 64, nullptr, &fuse72), cudaErrorNotSupported);
  p.n = 128;
  // Gathered rows: the prefill kernel only, and with e4m3 only with block
  // scales (per-tensor scaling's stand-in ones: w_scale_ones).
  p.gather_pairs = static_cast<const int32_t*>(off.data());
  p.gather_top_k = 1;
  EXPECT_EQ(kernels::decode_grouped_gemm(p, 64, nullptr, nullptr), cudaErrorNotSupported);
  EXPECT_EQ(kernels::launch_grouped_gemm_sm90(kernels::GemmKernel::kFp8Tile128x128, p, nullptr),
            cudaErrorNotSupported);
  p.w_scale_ones = static_cast<float*>(buf.data());
  p.w_scale_ones_count = 4;
  EXPECT_EQ(kernels::prefill_grouped_gemm(p, 64, nullptr, nullptr), cudaErrorNotSupported);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}
