// The fp8 layer on the GPU against the CPU backend (the same quantization,
// so a tight bound) and the fp64 oracle on the dequantized weights, for both
// scaling schemes, every fp8 GEMM family, the special values of
// ROBUSTNESS.md (17), adversarial routing and batch invariance. Outputs and
// workspaces are poisoned and guarded by canaries.
#include <algorithm>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>

#include "common/fp8_cases.hpp"
#include "common/test_util.hpp"
#include "gpu_util.hpp"
#include "kernels/quant/fp8_device.cuh"

using namespace moekit;
using test::DeviceBuffer;
using test::DeviceLayer;

namespace {

// GPU vs CPU: a row within test::kFp8RowGpuVsCpu (fp8_cases.hpp), the whole
// output a third of that: whole outputs measured about 0.01 on an H200.
constexpr double kRowGpuVsCpu = test::kFp8RowGpuVsCpu;
constexpr double kAllGpuVsCpu = 0.02;

// Relative Frobenius difference over the elements finite in both.
double relative_difference(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                           int64_t n, moekit_dtype_t dt) {
  double err2 = 0, ref2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = ref::load_as_float(dt, got.data(), i), w = ref::load_as_float(dt, want.data(), i);
    if (!std::isfinite(g) || !std::isfinite(w)) continue;
    err2 += (g - w) * (g - w);
    ref2 += w * w;
  }
  return ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
}

struct Scheme {
  moekit_quant_t kind;
  bool static_scale;
  const char* name;
};
const Scheme kSchemes[] = {{MOEKIT_QUANT_FP8_BLOCK, false, "block"},
                           {MOEKIT_QUANT_FP8_TENSOR, false, "tensor dynamic"},
                           {MOEKIT_QUANT_FP8_TENSOR, true, "tensor static"}};

// Runs l on the GPU (optionally forcing a GEMM family) and checks it against
// the CPU reference, the canaries and the oracle on a few finite tokens.
std::vector<uint8_t> expect_fp8_gpu_matches(const ref::HostLayer& l, const std::string& what,
                                            const char* force = nullptr,
                                            std::vector<int64_t> oracle_tokens = {}) {
  SCOPED_TRACE(what + (force ? std::string(" MOEKIT_GEMM=") + force : std::string()));
  DeviceLayer d(l);
  if (force) setenv("MOEKIT_GEMM", force, 1);
  Status s = d.run();
  if (force) unsetenv("MOEKIT_GEMM");
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint8_t> got = d.output.download();
  const Problem& p = l.problem;
  const std::vector<uint8_t> want = test::cpu_reference(l);
  EXPECT_TRUE(test::rows_match(got, want, p.num_tokens, p.hidden_size, p.output_dtype, kRowGpuVsCpu));
  const double all = relative_difference(got, want, p.num_tokens * p.hidden_size, p.output_dtype);
  EXPECT_LE(all, kAllGpuVsCpu);
  std::printf("  %s%s: GPU vs CPU %.4f\n", what.c_str(),
              force ? (std::string(" [") + force + "]").c_str() : "", all);
  EXPECT_TRUE(d.all_canaries_intact());
  if (oracle_tokens.empty())
    for (int64_t i = 0; i < 8 && p.num_tokens > 0; ++i) oracle_tokens.push_back(i * (p.num_tokens - 1) / 7);
  const auto c = ref::check_against_oracle(l.arguments(got.data()), got.data(), oracle_tokens);
  EXPECT_EQ(c.nonfinite_mismatch, 0);
  EXPECT_LE(c.rel_frobenius, ref::oracle_tolerance(p.weight_dtype, p.input_dtype, p.output_dtype));
  return got;
}

}  // namespace

TEST(GpuFp8, LayerMatchesTheCpuReferenceOnEveryFamily) {
  REQUIRE_GPU();
  struct Shape { int64_t T, E, k, H, I; };
  const Shape shapes[] = {
      {1, 8, 2, 256, 128},     // decode: swap-AB
      {7, 16, 4, 208, 80},     // partial scale blocks in N and K
      {300, 8, 2, 512, 256},   // 75 rows per expert: 128x128 tiles
      {64, 130, 8, 128, 64},   // many experts, many empty
      {40, 1100, 4, 128, 64},  // more experts than the quantizing stages cache
  };
  int seed = 1;
  for (const Scheme& sc : kSchemes)
    for (const Shape& sh : shapes) {
      Problem p = test::fp8_problem(sh.T, sh.E, sh.k, sh.H, sh.I, sc.kind, sc.static_scale);
      p.activation = seed % 3 == 0 ? MOEKIT_ACT_GELU_TANH : MOEKIT_ACT_SWIGLU;
      p.gate_up_order = static_cast<moekit_gate_up_order_t>(seed % 3);
      p.has_w13_bias = p.has_w2_bias = seed % 2;
      p.input_dtype = seed % 4 == 1 ? MOEKIT_DTYPE_FP16 : MOEKIT_DTYPE_BF16;
      p.output_dtype = seed % 5 == 2 ? MOEKIT_DTYPE_FP32 : p.input_dtype;
      const ref::HostLayer l = ref::make_random_layer(p, 500 + seed++);
      const std::string what = std::string(sc.name) + " T=" + std::to_string(sh.T) + " E=" +
                               std::to_string(sh.E) + " H=" + std::to_string(sh.H) + " I=" +
                               std::to_string(sh.I);
      for (const char* force : {static_cast<const char*>(nullptr), "fp8_decode", "fp8_prefill",
                                "fp8_swap128x16", "fp8_tile128x128", "fp8_tile128x128_1x2",
                                "fp8_pingpong64x128", "simple"})
        expect_fp8_gpu_matches(l, what, force);
    }
}

namespace {

struct SameBytesShape { int64_t T, E, k, H, I; bool bias, fp16, skew, special; };

// The layer's output bytes with kernel `ours` forced equal those with the
// CUTLASS family `theirs` forced, for both schemes over `shapes`: what lets
// select_config pick either by batch size (batch invariance). plan_has: what
// the unforced plan must name (null: no check).
void expect_same_bytes(const std::vector<SameBytesShape>& shapes, const char* ours, const char* theirs,
                       const char* plan_has) {
  int seed = 0;
  for (const Scheme& sc : kSchemes)
    for (const SameBytesShape& sh : shapes) {
      Problem p = test::fp8_problem(sh.T, sh.E, sh.k, sh.H, sh.I, sc.kind, sc.static_scale);
      p.has_w13_bias = p.has_w2_bias = sh.bias;
      if (sh.fp16) p.input_dtype = p.output_dtype = MOEKIT_DTYPE_FP16;
      p.gate_up_order = static_cast<moekit_gate_up_order_t>(seed++ % 3);
      ref::HostLayer l = ref::make_random_layer(p, 900 + seed);
      if (sh.skew)
        for (size_t i = 0; i < l.topk_ids.size(); ++i) l.topk_ids[i] = i % 4 == 3 ? 5 : 0;
      if (sh.special) {
        test::set_special_tokens(l);
        if (!sc.static_scale) test::set_extreme_weight_scales(l);
      }
      const std::string what = std::string(ours) + " vs " + theirs + " " + sc.name + " T=" +
                               std::to_string(sh.T) + " E=" + std::to_string(sh.E) + " H=" +
                               std::to_string(sh.H) + " I=" + std::to_string(sh.I);
      DeviceLayer d(l);
      if (plan_has != nullptr) {
        std::string plan;
        MoeLayer::describe_plan(d.args.problem, &plan);
        ASSERT_NE(plan.find(plan_has), std::string::npos) << what << ": " << plan;
      }
      const std::vector<uint8_t> mine = test::run_forced(d, ours);
      const std::vector<uint8_t> cutlass = test::run_forced(d, theirs);
      size_t first = 0;
      while (first < mine.size() && mine[first] == cutlass[first]) ++first;
      EXPECT_EQ(first, mine.size()) << what << ": first differing byte " << first << " of "
                                    << mine.size();
      EXPECT_TRUE(d.all_canaries_intact()) << what;
    }
}

}  // namespace

// The decode kernel (wgmma m64n16k32) writes the bytes CUTLASS's wgmma
// swap-AB kernel writes, for both schemes: partial scale blocks in N and K,
// biases, fp16 output, an expert with two 16-token passes beside one with a
// few rows, many experts, and the special values with extreme weight scales;
// and the same with 32-token passes.
TEST(GpuFp8, DecodeKernelWritesTheBytesOfCutlassSwapAB) {
  REQUIRE_GPU();
  if (std::getenv("MOEKIT_GEMM") != nullptr)
    GTEST_SKIP() << "compares two kernel choices itself; runs without MOEKIT_GEMM";
  expect_same_bytes({{1, 8, 2, 256, 128, false, false, false, false},
                     {7, 16, 4, 208, 80, true, false, false, false},   // partial scale blocks in N and K
                     {20, 8, 2, 384, 256, true, true, true, false},    // 30 rows on one expert, 10 on another
                     {5, 130, 8, 128, 64, false, false, false, false}, // many experts, most empty
                     {20, 8, 3, 256, 128, false, false, false, true}}, // zero, NaN, Inf, huge, denormal tokens
                    "fp8_decode", "fp8_swap128x16", "fp8 block-scaled decode");
  // 32-token passes (above 8 rows per expert; wgmma m64n32k32): 120 rows on
  // one expert (four passes, the last partial) and 40 on another, and random
  // routing at 15 rows per expert.
  expect_same_bytes({{80, 8, 2, 384, 256, true, true, true, false},
                     {60, 16, 4, 256, 128, false, false, false, false},
                     {80, 8, 2, 256, 128, false, false, true, true}},
                    "fp8_decode", "fp8_swap128x16", nullptr);
}

// The prefill kernel (two partial accumulators, promotion overlapped) writes
// the bytes of CUTLASS's cooperative blockwise 128x128 kernel: odd and even
// block counts, partial blocks in N and K, experts of several 128-row units
// beside small ones, many experts, the special values.
TEST(GpuFp8, PrefillKernelWritesTheBytesOfCutlass128x128) {
  REQUIRE_GPU();
  if (std::getenv("MOEKIT_GEMM") != nullptr)
    GTEST_SKIP() << "compares two kernel choices itself; runs without MOEKIT_GEMM";
  expect_same_bytes({{300, 8, 2, 256, 128, false, false, false, false},
                     {257, 16, 4, 208, 80, true, false, false, false},   // partial blocks, K of 2 blocks
                     {300, 8, 2, 384, 256, true, true, true, false},     // 450 rows on one expert, 150 on another
                     {400, 130, 8, 128, 64, false, false, false, false}, // many experts
                     {200, 8, 3, 640, 384, false, false, false, true}},  // special values, 5 and 3 blocks
                    "fp8_prefill", "fp8_tile128x128", nullptr);
}

// Rows longer than one pass of the quantizing stages' widest block (1024
// lanes x 8 columns) at decode, where per-tensor scaling takes a block per
// row: the activation rows (I = 8336) take two steps a lane, the second
// partial; the gather's (H = 2064) one, in a block of 288 lanes. The row's
// amax must span every step and warp.
TEST(GpuFp8, LongRowsAtDecode) {
  REQUIRE_GPU();
  int seed = 0;
  for (const Scheme& sc : kSchemes)
    for (int64_t T : {1, 3}) {
      Problem p = test::fp8_problem(T, 4, 2, 2064, 8336, sc.kind, sc.static_scale);
      p.gate_up_order = static_cast<moekit_gate_up_order_t>(seed % 3);
      ref::HostLayer l = ref::make_random_layer(p, 1300 + seed++);
      // One large value late in token 0's hidden row: its dynamic scale must
      // come from it (a static scale saturates it, by design).
      if (!sc.static_scale) ref::store_from_float(p.input_dtype, l.hidden.data(), 2000, 10.0f);
      expect_fp8_gpu_matches(l, std::string(sc.name) + " T=" + std::to_string(T) + " H=2064 I=8336");
    }
}

// Rows at the documented limit (MOEKIT_MAX_ROW_LENGTH): 2^17 scale blocks a
// row of the input (H) or of the activation (I) with block scaling, one
// amax over 2^24 values a row with dynamic per-tensor scaling.
TEST(GpuFp8, RowsAtTheLengthLimit) {
  REQUIRE_GPU();
  constexpr int64_t kMax = MOEKIT_MAX_ROW_LENGTH;
  for (const Scheme& sc : {kSchemes[0], kSchemes[1]})
    for (const auto& [H, I] : {std::pair<int64_t, int64_t>{kMax, 16}, {16, kMax}}) {
      ref::HostLayer l = ref::make_random_layer(test::fp8_problem(3, 1, 1, H, I, sc.kind, sc.static_scale), 12);
      expect_fp8_gpu_matches(l, std::string(sc.name) + " H=" + std::to_string(H) + " I=" + std::to_string(I));
    }
}

TEST(GpuFp8, SpecialValuesStayFiniteAndInTheirRows) {
  REQUIRE_GPU();
  for (const Scheme& sc : kSchemes) {
    for (int64_t T : {20, 200}) {  // swap-AB and 128x128
      Problem p = test::fp8_problem(T, 8, 3, 256, 128, sc.kind, sc.static_scale);
      ref::HostLayer l = ref::make_random_layer(p, 21 + T);
      test::set_special_tokens(l);
      // A static scale is calibrated for the layer: extreme weight scales would
    // saturate GEMM 2's input by design, so they run with dynamic scales only.
    if (!sc.static_scale) test::set_extreme_weight_scales(l);
      test::route_to_first_experts(l);
      // Oracle on the finite tokens; a static scale saturates the huge and
      // the +-448 tokens by design, so those are left to the CPU comparison.
      std::vector<int64_t> finite;
      for (int64_t t = 0; t < T; ++t) {
        if (t == test::kNanToken || t == test::kInfToken || t == test::kDenormalToken) continue;
        if (sc.static_scale && (t == test::kHugeToken || t == test::kMaxToken)) continue;
        finite.push_back(t);
      }
      const std::vector<uint8_t> got =
          expect_fp8_gpu_matches(l, std::string(sc.name) + " special T=" + std::to_string(T), nullptr, finite);
      const int64_t H = p.hidden_size;
      int64_t nan_row = 0, inf_row = 0;
      for (int64_t h = 0; h < H; ++h) {
        EXPECT_EQ(ref::load_as_float(p.output_dtype, got.data(), test::kZeroToken * H + h), 0.0f);
        nan_row += !std::isfinite(ref::load_as_float(p.output_dtype, got.data(), test::kNanToken * H + h));
        inf_row += !std::isfinite(ref::load_as_float(p.output_dtype, got.data(), test::kInfToken * H + h));
      }
      EXPECT_GT(nan_row, 0);
      EXPECT_GT(inf_row, 0);
    }
  }
}

TEST(GpuFp8, AdversarialRouting) {
  REQUIRE_GPU();
  for (const Scheme& sc : kSchemes) {
    Problem p = test::fp8_problem(333, 16, 4, 256, 128, sc.kind, sc.static_scale);
    ref::HostLayer l = ref::make_random_layer(p, 77);
    std::mt19937_64 rng(9);
    for (int64_t t = 0; t < p.num_tokens; ++t) {
      int32_t* ids = l.topk_ids.data() + t * p.top_k;
      switch (rng() % 5) {
        case 0: std::fill(ids, ids + p.top_k, 0); break;                     // every slot on expert 0
        case 1: std::fill(ids, ids + p.top_k, -1); break;                    // padding
        case 2: ids[1] = ids[0]; break;                                      // a duplicate
        case 3: ids[2] = static_cast<int32_t>(p.num_experts + rng() % 99); break;  // garbage
        default: break;
      }
    }
    expect_fp8_gpu_matches(l, std::string(sc.name) + " adversarial");
    // Expert parallelism: rank 1 of 4 owns experts 4..7.
    Problem q = p;
    q.ep_size = 4;
    q.ep_rank = 1;
    q.num_local_experts = 4;
    ref::HostLayer r = ref::make_random_layer(q, 78);
    r.topk_ids = l.topk_ids;
    expect_fp8_gpu_matches(r, std::string(sc.name) + " ep rank 1 of 4");
    // A scattered expert map (6 of the 16 experts here) with the router
    // weights on the input (vLLM's Llama 4 fp8 path), top-1.
    Problem m = test::fp8_problem(333, 6, 1, 256, 128, sc.kind, sc.static_scale);
    m.num_experts = 16;
    m.has_expert_map = 1;
    m.apply_router_weight_on_input = 1;
    ref::HostLayer ml = ref::make_random_layer(m, 79);
    for (int64_t t = 0; t < m.num_tokens; ++t) ml.topk_ids[t] = l.topk_ids[t * p.top_k];
    expect_fp8_gpu_matches(ml, std::string(sc.name) + " expert map, weights on the input");
  }
}

// A tiny fp8 batch (at most 32 pairs) on the decode kernel: with block
// scales it is sorted, gathered and quantized in one launch
// (launch_sort_gather_tiny) and GEMM 1 ranks the ids itself; per tensor it
// takes the separate stages. Either way the CPU's answer, and bitwise the
// answer of the separate sort and gather-quantize stages (forced CUTLASS
// swap-AB, whose bytes the decode kernel writes), for each scheme,
// adversarial ids, an expert map, an expert-parallel rank, int64 ids,
// weights on the input, fp16, partial scale groups in H and I, a whole row
// of 32 slots, and the special values with extreme weight scales.
TEST(GpuFp8, TinyBatchesQuantizeInTheSortsLaunch) {
  REQUIRE_GPU();
  if (std::getenv("MOEKIT_GEMM") != nullptr)
    GTEST_SKIP() << "compares two kernel choices itself; runs without MOEKIT_GEMM";
  struct Shape { int64_t T, k, H; };
  const Shape shapes[] = {{1, 1, 256}, {1, 8, 2064}, {2, 3, 208}, {4, 8, 512}, {1, 32, 384}, {6, 5, 1040}};
  int seed = 0;
  for (const Scheme& sc : kSchemes)
    for (const Shape& sh : shapes)
      for (int variant = 0; variant < 5; ++variant) {
        Problem p = test::fp8_problem(sh.T, 40, sh.k, sh.H, 192, sc.kind, sc.static_scale);
        test::place_40_local_experts(p, variant == 1   ? test::Placing::kExpertMap
                                        : variant == 2 ? test::Placing::kEpRank
                                                       : test::Placing::kFirst);
        p.apply_router_weight_on_input = variant == 3 && sh.k == 1;
        if (variant == 3) p.input_dtype = p.output_dtype = MOEKIT_DTYPE_FP16;
        p.has_w13_bias = p.has_w2_bias = variant == 4;
        p.gate_up_order = static_cast<moekit_gate_up_order_t>(seed % 3);
        ref::HostLayer l = ref::make_random_layer(p, 1700 + seed++);
        std::vector<int64_t> oracle;
        if (sh.T >= test::kSpecialTokens) {
          test::set_special_tokens(l);
          // Extreme weight scales (up to 1e+30) overflow an fp16 output by design.
          if (!sc.static_scale && p.output_dtype != MOEKIT_DTYPE_FP16) test::set_extreme_weight_scales(l);
          // As in SpecialValuesStayFiniteAndInTheirRows; in fp16 the huge
          // token (x 1e8) is already Inf on the input, and the +-448 token's
          // GEMM 1 outputs pass fp16's 65504, so its fp16 intermediate is Inf
          // where the fp64 oracle, which rounds nothing, stays finite (H200,
          // 2026-12-05: the CPU reference and the GPU agree on that row).
          const bool fp16 = p.input_dtype == MOEKIT_DTYPE_FP16;
          for (int64_t t = 0; t < sh.T; ++t)
            if (t != test::kNanToken && t != test::kInfToken && t != test::kDenormalToken &&
                !((sc.static_scale || fp16) && (t == test::kHugeToken || t == test::kMaxToken)))
              oracle.push_back(t);
        } else if (variant != 4) {
          test::make_adversarial(l, 31 * seed + sh.T);
        }
        const std::string what = std::string(sc.name) + " T=" + std::to_string(sh.T) + " k=" +
                                 std::to_string(sh.k) + " H=" + std::to_string(sh.H) + " variant " +
                                 std::to_string(variant);
        DeviceLayer d(l);
        std::string plan;
        MoeLayer::describe_plan(d.args.problem, &plan);
        ASSERT_NE(plan.find("gemm1 fp8 block-scaled decode"), std::string::npos) << what << ": " << plan;
        const std::vector<uint8_t> got = expect_fp8_gpu_matches(l, what, nullptr, oracle);
        EXPECT_EQ(test::run_forced(d, "fp8_swap128x16"), got) << what;
        if (variant == 0) test::expect_int64_ids_match_int32(l, what);
        if (HasFailure()) return;
      }
}

namespace {

// l takes base's weights and scales (static scales are part of the layer,
// not the batch) and, as its token pos, base's token 0: its hidden row
// (row_bytes), ids and weights (k each).
void place_token(const ref::HostLayer& base, int64_t pos, int64_t row_bytes, int64_t k, ref::HostLayer& l) {
  l.w13 = base.w13;
  l.w2 = base.w2;
  l.w13_scale = base.w13_scale;
  l.w2_scale = base.w2_scale;
  l.a13_scale = base.a13_scale;
  l.a2_scale = base.a2_scale;
  std::copy_n(base.hidden.begin(), row_bytes, l.hidden.begin() + pos * row_bytes);
  std::copy_n(base.topk_ids.begin(), k, l.topk_ids.begin() + pos * k);
  std::copy_n(base.topk_weights.begin(), k, l.topk_weights.begin() + pos * k);
}

}  // namespace

TEST(GpuFp8, BatchInvariantRowAtEveryT) {
  REQUIRE_GPU();
  for (const Scheme& sc : kSchemes) {
    const int64_t H = 512, I = 256, k = 4, E = 16;
    const ref::HostLayer base = ref::make_random_layer(test::fp8_problem(1, E, k, H, I, sc.kind, sc.static_scale), 31);
    std::vector<uint8_t> first;
    for (int64_t T : {1, 7, 64, 257, 1025, 4097}) {
      ref::HostLayer l = ref::make_random_layer(test::fp8_problem(T, E, k, H, I, sc.kind, sc.static_scale), 32 + T);
      const int64_t pos = T / 2, b = 2;
      place_token(base, pos, H * b, k, l);
      DeviceLayer d(l);
      Status s = d.run();
      ASSERT_TRUE(s.ok()) << s.message();
      CUDA_OK(cudaDeviceSynchronize());
      const std::vector<uint8_t> out = d.output.download();
      std::vector<uint8_t> row(out.begin() + pos * H * b, out.begin() + (pos + 1) * H * b);
      std::string plan;
      MoeLayer::describe_plan(d.args.problem, &plan);
      if (first.empty()) first = row;
      EXPECT_EQ(row, first) << sc.name << " T=" << T << ": " << plan;
      if (T <= 7) {  // CUTLASS's wgmma swap-AB kernel gives the decode kernel's bits
        const std::vector<uint8_t> again = test::run_forced(d, "fp8_swap128x16");
        EXPECT_TRUE(std::equal(again.begin() + pos * H * b, again.begin() + (pos + 1) * H * b,
                               first.begin()))
            << sc.name << " T=" << T << " on fp8 swap-AB 128x16";
      }
    }
  }
}

// Per-tensor scaling quantizes GEMM 2's input rows in one pass with the
// values held in registers in the block-a-row form (decode) and walks each
// row twice in the warp-a-row form (8000 rows: the warp form on any GPU of
// up to 250 SMs), for a row of one and of several steps a lane (I = 384
// and 1152, partial last steps). One token's row is the same bytes at T = 1
// and 2000, and both batches match the CPU.
TEST(GpuFp8, PerTensorRowsHeldOrWalkedGiveOneAnswer) {
  REQUIRE_GPU();
  const int64_t H = 128, k = 4, E = 8;
  int seed = 0;
  for (const Scheme& sc : kSchemes) {
    if (sc.kind != MOEKIT_QUANT_FP8_TENSOR) continue;
    for (int64_t I : {384, 1152}) {
      const ref::HostLayer base = ref::make_random_layer(test::fp8_problem(1, E, k, H, I, sc.kind, sc.static_scale), 1400 + seed);
      std::vector<uint8_t> first;
      for (int64_t T : {1, 2000}) {
        ref::HostLayer l = ref::make_random_layer(test::fp8_problem(T, E, k, H, I, sc.kind, sc.static_scale), 1500 + seed++);
        const int64_t pos = T / 3, b = 2;
        place_token(base, pos, H * b, k, l);
        const std::string what = std::string(sc.name) + " T=" + std::to_string(T) + " I=" + std::to_string(I);
        const std::vector<uint8_t> out = expect_fp8_gpu_matches(l, what);
        std::vector<uint8_t> row(out.begin() + pos * H * b, out.begin() + (pos + 1) * H * b);
        if (first.empty()) first = row;
        EXPECT_EQ(row, first) << what;
      }
    }
  }
}

namespace {

// The kernels' encoding (hardware cvt + the Inf rule) for value i of x with scale s[i].
__global__ void encode_kernel(const float* x, const float* s, int64_t n, uint8_t* out) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  if (i + 8 > n) return;
  float v[8];
  for (int j = 0; j < 8; ++j) v[j] = x[i + j];
  const uint2 q = kernels::quantize8(v, s[i], fp8_inverse(s[i]));
  for (int j = 0; j < 4; ++j) {
    out[i + j] = static_cast<uint8_t>(q.x >> (8 * j));
    out[i + 4 + j] = static_cast<uint8_t>(q.y >> (8 * j));
  }
}

}  // namespace

// The GPU's hardware e4m3 conversion gives the bytes of the host's
// float_to_e4m3 (the CPU reference) on a sweep of float bit patterns, every
// e4m3 rounding midpoint and its neighbours, and the special values, with
// scales from 0 through denormal to huge.
TEST(GpuFp8, DeviceEncodingMatchesTheHostReference) {
  REQUIRE_GPU();
  std::vector<float> x, s;
  auto add8 = [&](const float (&v)[8], float scale) {
    for (float f : v) { x.push_back(f); s.push_back(scale); }
  };
  for (uint64_t b = 0; b < (1ull << 32); b += 4099 * 8) {  // strided bit patterns, 8 per scale
    float v[8];
    for (int j = 0; j < 8; ++j) v[j] = ref::bits_float(static_cast<uint32_t>(b + j * 4099));
    add8(v, 1.0f);
  }
  for (int c = 0; c < 126; ++c) {  // midpoints between consecutive positive codes, +-1 ulp
    const float lo = e4m3_to_float(static_cast<uint8_t>(c)), hi = e4m3_to_float(static_cast<uint8_t>(c + 1));
    const float mid = 0.5f * (lo + hi);
    const float v[8] = {mid, -mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f),
                        -std::nextafter(mid, 0.0f), lo, hi, -hi};
    add8(v, 1.0f);
  }
  const float kInf = std::numeric_limits<float>::infinity(), kNaN = std::numeric_limits<float>::quiet_NaN();
  const float specials[8] = {kInf, -kInf, kNaN, 0.0f, -0.0f, 449.0f, 3e38f, 1e-45f};
  for (float scale : {0.0f, 1e-45f, 1e-39f, 1e-30f, 0.0123f, 1.0f, 7.5f, 1e30f}) add8(specials, scale);
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(-500.0f, 500.0f), e(-40.0f, 40.0f);
  for (int i = 0; i < 1 << 14; ++i) {
    float v[8];
    for (float& f : v) f = u(rng);
    add8(v, std::pow(10.0f, e(rng)));
  }
  const int64_t n = static_cast<int64_t>(x.size());
  DeviceBuffer dx(n * 4), ds(n * 4), dout(n);
  dx.upload(x.data(), n * 4);
  ds.upload(s.data(), n * 4);
  encode_kernel<<<static_cast<unsigned>((n / 8 + 255) / 256), 256>>>(
      static_cast<const float*>(dx.data()), static_cast<const float*>(ds.data()), n,
      static_cast<uint8_t*>(dout.data()));
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<uint8_t> got = dout.download();
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t want = fp8_quantize(x[i], s[i]);
    const bool both_nan = (got[i] & 0x7f) == 0x7f && (want & 0x7f) == 0x7f;  // NaN's sign is free
    if (got[i] != want && !both_nan && bad++ < 10)
      ADD_FAILURE() << "x=" << x[i] << " s=" << s[i] << ": GPU 0x" << std::hex << int(got[i])
                    << ", host 0x" << int(want) << std::dec;
  }
  EXPECT_EQ(bad, 0) << "of " << n << " values";
}

// fp8 block-scaled decode: GEMM 1 (decode kernel) applies the activation in
// its epilogue and a plain quantize stage takes the 16-bit result, where
// the activation-quantize stage would take GEMM 1's output. The bytes must be
// those of the stages (GEMM 1 forced onto CUTLASS swap-AB, which writes the
// decode kernel's bits and no activation): every gated kind and gate/up order
// and a plain activation, biases, fp16, partial scale groups in H and I,
// I % 32 == 16 (the gate half's last 32-row slice half full, and up rows
// straddling a 128-row scale block), tiny batches (the sort's launch
// quantizes the input), an expert map and an EP rank, and the special values
// with extreme weight scales; and the CPU reference.
TEST(GpuFp8, DecodeEpilogueActivationWritesTheStagesBytes) {
  REQUIRE_GPU();
  if (std::getenv("MOEKIT_GEMM") != nullptr || std::getenv("MOEKIT_GEMM1") != nullptr)
    GTEST_SKIP() << "compares two kernels itself; runs without MOEKIT_GEMM and MOEKIT_GEMM1";
  struct Case {
    int64_t T, k, H, I;
    moekit_activation_t act;
    bool bias, fp16, special;
    test::Placing placing;
  };
  const Case cases[] = {
      {1, 2, 256, 128, MOEKIT_ACT_SWIGLU, false, false, false, test::Placing::kFirst},         // tiny
      {3, 8, 208, 80, MOEKIT_ACT_GEGLU_TANH, true, false, false, test::Placing::kExpertMap},   // tiny, partial groups
      {7, 4, 384, 256, MOEKIT_ACT_GELU_TANH, true, true, false, test::Placing::kFirst},        // not gated, fp16
      {20, 3, 256, 128, MOEKIT_ACT_SWIGLU, false, false, true, test::Placing::kFirst},         // special values
      {3, 2, 256, 208, MOEKIT_ACT_SWIGLU, false, false, false, test::Placing::kFirst},         // I % 32 == 16
      {30, 4, 512, 336, MOEKIT_ACT_GEGLU_ERF, true, false, false, test::Placing::kEpRank},     // EP rank, 3 groups of I
  };
  int seed = 0;
  for (const Case& c : cases)
    for (int order = 0; order < 3; ++order) {
      Problem p = test::fp8_problem(c.T, 40, c.k, c.H, c.I, MOEKIT_QUANT_FP8_BLOCK, false);
      test::place_40_local_experts(p, c.placing);
      p.activation = c.act;
      p.gate_up_order = static_cast<moekit_gate_up_order_t>(order);
      p.has_w13_bias = p.has_w2_bias = c.bias;
      if (c.fp16) p.input_dtype = p.output_dtype = MOEKIT_DTYPE_FP16;
      ref::HostLayer l = ref::make_random_layer(p, 2100 + seed++);
      if (c.special) {
        test::set_special_tokens(l);
        test::set_extreme_weight_scales(l);
      }
      const std::string what = std::string(moekit_activation_name(c.act)) + " order " + std::to_string(order) +
                                " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) + " I=" + std::to_string(c.I);
      SCOPED_TRACE(what);
      DeviceLayer d(l);
      std::string plan;
      MoeLayer::describe_plan(d.args.problem, &plan);
      ASSERT_NE(plan.find("gemm1 fp8 block-scaled decode"), std::string::npos) << plan;
      const std::vector<uint8_t> stages = test::run_with_env(d, "MOEKIT_GEMM1", "fp8_swap128x16");
      const std::vector<uint8_t> fused = test::run_with_env(d, "MOEKIT_GEMM1", nullptr);
      size_t first = 0;
      while (first < fused.size() && fused[first] == stages[first]) ++first;
      EXPECT_EQ(first, fused.size()) << "first differing byte " << first << " of " << fused.size();
      EXPECT_TRUE(d.all_canaries_intact());
      if (!c.special) expect_fp8_gpu_matches(l, what);  // and the CPU reference and the oracle
    }
}
