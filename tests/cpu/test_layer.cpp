// The whole layer through the public API on the CPU, against the fp64 oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/test_util.hpp"
#include "reference/oracle.hpp"

using namespace moekit;
using test::all_tokens;
using test::small_problem;

namespace {

// Runs l on the CPU and checks every token against the oracle, the canaries and
// that the status is success.
void expect_matches_oracle(const ref::HostLayer& l, const char* what) {
  SCOPED_TRACE(what);
  test::CpuRun r = test::run_cpu_layer(l);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  ASSERT_TRUE(r.output.canaries_intact());
  ASSERT_TRUE(r.workspace.canaries_intact());
  const moekit_arguments_t a = l.arguments(r.output.data());
  const auto c = ref::check_against_oracle(a, r.output.data(), all_tokens(l.problem.num_tokens));
  const double tol = ref::oracle_tolerance(l.problem.weight_dtype, l.problem.input_dtype,
                                           l.problem.output_dtype);
  EXPECT_EQ(c.nonfinite_mismatch, 0) << "first at flat index " << c.first_bad;
  EXPECT_LE(c.rel_frobenius, tol);
}

}  // namespace

TEST(Layer, EveryDtypeCombination) {
  const moekit_dtype_t kinds[] = {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP16, MOEKIT_DTYPE_FP32};
  for (auto in : kinds)
    for (auto w : kinds)
      for (auto out : kinds) {
        Problem p = small_problem(19, 8, 3, 64, 40);
        p.input_dtype = in;
        p.weight_dtype = w;
        p.output_dtype = out;
        std::string what = std::string(moekit_dtype_name(in)) + "/" + moekit_dtype_name(w) + "/" +
                           moekit_dtype_name(out);
        expect_matches_oracle(ref::make_random_layer(p, 11), what.c_str());
      }
}

TEST(Layer, EveryActivationAndGateUpOrderWithBiases) {
  for (int act = MOEKIT_ACT_SWIGLU; act <= MOEKIT_ACT_IDENTITY; ++act)
    for (int order = 0; order < 3; ++order)
      for (int bias = 0; bias < 2; ++bias) {
        Problem p = small_problem(9, 6, 2, 32, 24);
        p.activation = static_cast<moekit_activation_t>(act);
        p.gate_up_order = static_cast<moekit_gate_up_order_t>(order);
        p.has_w13_bias = p.has_w2_bias = bias;
        std::string what = std::string(moekit_activation_name(p.activation)) + " order " +
                           std::to_string(order) + " bias " + std::to_string(bias);
        expect_matches_oracle(ref::make_random_layer(p, act * 7 + order), what.c_str());
      }
}

TEST(Layer, GptOssSwigluClamps) {
  Problem p = small_problem(33, 8, 4, 64, 32, MOEKIT_DTYPE_BF16);
  p.swiglu_alpha = 1.702f;
  p.swiglu_beta = 1.0f;
  p.swiglu_limit = 0.5f;  // small limit so the clamp is active on random data
  p.gate_up_order = MOEKIT_INTERLEAVED;
  p.has_w13_bias = p.has_w2_bias = 1;
  expect_matches_oracle(ref::make_random_layer(p, 5), "gpt-oss clamps");
}

TEST(Layer, AdversarialRoutingAtSeveralBatchSizes) {
  for (int64_t T : {1, 2, 255, 256, 257, 300}) {
    Problem p = small_problem(T, 16, 4, 32, 16, MOEKIT_DTYPE_BF16);
    ref::HostLayer l = ref::make_random_layer(p, T);
    for (int64_t t = 0; t < T; ++t) {
      int32_t* ids = l.topk_ids.data() + t * 4;
      switch (t % 5) {
        case 0: std::fill(ids, ids + 4, 0); break;                      // [0, 0, 0, 0]
        case 1: std::fill(ids, ids + 4, -1); break;                     // padding row
        case 2: ids[0] = 5; ids[1] = 9; ids[2] = 9; ids[3] = 5; break;  // duplicates
        case 3: ids[1] = 16; ids[2] = INT32_MIN; ids[3] = 1 << 30; break;  // garbage
        default: break;                                                 // router output
      }
    }
    moekit_diagnostics_t diag{};
    test::CpuRun r = test::run_cpu_layer(l, &diag);
    ASSERT_TRUE(r.status.ok()) << r.status.message();
    const auto c = ref::check_against_oracle(l.arguments(r.output.data()), r.output.data(),
                                             all_tokens(T));
    EXPECT_EQ(c.nonfinite_mismatch, 0) << "T=" << T;
    EXPECT_LE(c.rel_frobenius, ref::oracle_tolerance(p.weight_dtype, p.input_dtype, p.output_dtype));
    // Padding rows are exact zeros.
    for (int64_t t = 1; t < T; t += 5)
      for (int64_t h = 0; h < p.hidden_size; ++h)
        ASSERT_EQ(ref::load_as_float(p.output_dtype, r.output.data(), t * p.hidden_size + h), 0.0f);
    const uint64_t pad_rows = (T + 3) / 5, garbage_rows = (T + 1) / 5;
    EXPECT_EQ(diag.tokens_without_valid_expert, pad_rows);
    EXPECT_EQ(diag.invalid_ids, pad_rows * 4 + garbage_rows * 3);
  }
}

TEST(Layer, ExpertParallelRanksSumToTheWholeLayer) {
  Problem p = small_problem(40, 16, 4, 32, 16, MOEKIT_DTYPE_FP32);
  ref::HostLayer whole = ref::make_random_layer(p, 3);
  test::CpuRun full = test::run_cpu_layer(whole);
  ASSERT_TRUE(full.status.ok());
  std::vector<double> sum(p.num_tokens * p.hidden_size, 0.0);
  const int64_t ep = 4, el = 4, n1 = 2 * p.intermediate_size;
  for (int64_t rank = 0; rank < ep; ++rank) {
    ref::HostLayer part = whole;
    part.problem.ep_size = ep;
    part.problem.ep_rank = rank;
    part.problem.num_local_experts = el;
    const size_t w13_slice = el * n1 * p.hidden_size * 4, w2_slice = el * p.hidden_size * p.intermediate_size * 4;
    part.w13.assign(whole.w13.begin() + rank * w13_slice, whole.w13.begin() + (rank + 1) * w13_slice);
    part.w2.assign(whole.w2.begin() + rank * w2_slice, whole.w2.begin() + (rank + 1) * w2_slice);
    test::CpuRun r = test::run_cpu_layer(part);
    ASSERT_TRUE(r.status.ok()) << r.status.message();
    const float* o = reinterpret_cast<const float*>(r.output.data());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += o[i];
  }
  const float* f = reinterpret_cast<const float*>(full.output.data());
  for (size_t i = 0; i < sum.size(); ++i) ASSERT_NEAR(sum[i], f[i], 1e-5 * (1 + std::fabs(f[i]))) << i;
}

TEST(Layer, NonFiniteInputsAndWeightsStayInTheirRow) {
  Problem p = small_problem(12, 8, 3, 32, 16, MOEKIT_DTYPE_FP32);
  ref::HostLayer l = ref::make_random_layer(p, 9);
  float* x = reinterpret_cast<float*>(l.hidden.data());
  x[3 * 32 + 5] = NAN;
  x[6 * 32 + 1] = INFINITY;
  l.topk_weights[8 * 3 + 1] = NAN;
  l.topk_weights[9 * 3 + 0] = -INFINITY;
  l.topk_weights[10 * 3 + 2] = 0.0f;
  l.topk_weights[11 * 3 + 0] = -3.5f;  // negative, and the row no longer sums to 1
  test::CpuRun r = test::run_cpu_layer(l);
  ASSERT_TRUE(r.status.ok());
  const float* out = reinterpret_cast<const float*>(r.output.data());
  for (int64_t t = 0; t < 12; ++t) {
    bool finite = true;
    for (int64_t h = 0; h < 32; ++h) finite &= std::isfinite(out[t * 32 + h]);
    EXPECT_EQ(finite, t != 3 && t != 6 && t != 8 && t != 9) << "token " << t;
  }
  const auto c = ref::check_against_oracle(l.arguments(r.output.data()), r.output.data(), all_tokens(12));
  EXPECT_EQ(c.nonfinite_mismatch, 0);
  EXPECT_LE(c.rel_frobenius, 1e-5);
}

TEST(Layer, ZeroTokensSucceedsWithoutTouchingAnything) {
  Problem p = small_problem(0);
  size_t ws = 123;
  ASSERT_TRUE(MoeLayer::workspace_size(p, &ws).ok());
  EXPECT_EQ(ws, 0u);
  moekit_arguments_t a{};
  a.problem = p;  // every pointer NULL, as an empty framework tensor may be
  EXPECT_TRUE(MoeLayer::run(a, nullptr, 0).ok());
}

TEST(Layer, BitwiseDeterministicAndWorkspaceReuseAcrossShapes) {
  Problem big = small_problem(64, 16, 4, 64, 32, MOEKIT_DTYPE_BF16);
  Problem small = small_problem(3, 4, 4, 16, 8, MOEKIT_DTYPE_BF16);
  ref::HostLayer lb = ref::make_random_layer(big, 1), ls = ref::make_random_layer(small, 2);
  size_t ws_big = 0;
  ASSERT_TRUE(MoeLayer::workspace_size(big, &ws_big).ok());
  test::GuardedBuffer ws(ws_big);
  auto run = [&](const ref::HostLayer& l) {
    std::vector<uint8_t> out(l.problem.num_tokens * l.problem.hidden_size * 2, 0xFF);
    EXPECT_TRUE(MoeLayer::run(l.arguments(out.data()), ws.data(), ws_big).ok());
    return out;
  };
  auto first = run(lb);
  auto small_out = run(ls);
  auto second = run(lb);
  EXPECT_EQ(first, second);
  test::CpuRun fresh_small = test::run_cpu_layer(ls);
  EXPECT_EQ(0, std::memcmp(small_out.data(), fresh_small.output.data(), small_out.size()));
  EXPECT_TRUE(ws.canaries_intact());
}

TEST(Layer, HundredsOfRandomConfigurationsInOneProcess) {
  std::mt19937 rng(2026);
  auto pick = [&](std::initializer_list<int64_t> v) { return *(v.begin() + rng() % v.size()); };
  for (int iter = 0; iter < 150; ++iter) {
    const int64_t E = pick({1, 3, 8, 72, 257});
    const int64_t k = std::min<int64_t>(E, pick({1, 2, 3, 6, 9, 10}));
    Problem p = small_problem(pick({0, 1, 2, 7, 33, 257}), E, k, pick({8, 16, 40}), pick({8, 24}),
                              static_cast<moekit_dtype_t>(rng() % 3));
    p.activation = static_cast<moekit_activation_t>(rng() % 9);
    p.gate_up_order = static_cast<moekit_gate_up_order_t>(rng() % 3);
    p.has_w13_bias = rng() % 2;
    p.has_w2_bias = rng() % 2;
    if (E % 2 == 0 && rng() % 2) {
      p.ep_size = 2;
      p.ep_rank = rng() % 2;
      p.num_local_experts = E / 2;
    }
    ref::HostLayer l = ref::make_random_layer(p, iter);
    for (auto& id : l.topk_ids)
      if (rng() % 10 == 0) id = static_cast<int32_t>(rng() % 3 == 0 ? -1 : rng());
    expect_matches_oracle(l, ("config " + std::to_string(iter)).c_str());
    if (HasFailure()) break;
  }
}

TEST(Layer, RoutesFromLogitsLikeTheRouterStage) {
  const moekit_router_config_t configs[] = {
      {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_DTYPE_FP32, 1, 1, 1, 1.0f},
      {MOEKIT_ROUTER_TOPK_SOFTMAX, MOEKIT_DTYPE_BF16, 1, 1, 1, 1.0f},
      {MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK, MOEKIT_DTYPE_FP32, 1, 8, 4, 2.5f}};
  for (const auto& rc : configs) {
    Problem p = small_problem(70, 64, 8, 32, 16, MOEKIT_DTYPE_BF16);
    p.router = rc;
    p.ep_size = 2;
    p.ep_rank = 1;
    p.num_local_experts = 32;
    ref::HostLayer l = ref::make_random_layer(p, rc.kind);
    test::CpuRun routed = test::run_cpu_layer(l);  // logits in
    ASSERT_TRUE(routed.status.ok()) << routed.status.message();
    std::vector<uint8_t> direct(routed.output.size(), 0xFF);
    size_t ws = 0;
    ASSERT_TRUE(MoeLayer::workspace_size(l.unrouted_arguments(nullptr).problem, &ws).ok());
    test::GuardedBuffer wsb(ws);
    ASSERT_TRUE(MoeLayer::run(l.unrouted_arguments(direct.data()), wsb.data(), ws).ok());
    EXPECT_EQ(0, std::memcmp(direct.data(), routed.output.data(), direct.size())) << "router kind " << rc.kind;
    const auto c = ref::check_against_oracle(l.unrouted_arguments(routed.output.data()),
                                             routed.output.data(), all_tokens(70));
    EXPECT_LE(c.rel_frobenius, ref::oracle_tolerance(p.weight_dtype, p.input_dtype, p.output_dtype));
  }
}

TEST(Layer, RouterArgumentRejections) {
  Problem p = small_problem(4, 16, 2, 32, 16);
  p.router = {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_DTYPE_FP32, 1, 1, 1, 1.0f};
  ref::HostLayer l = ref::make_random_layer(p, 1);
  std::vector<float> out(4 * 32);
  size_t ws = 0;
  ASSERT_TRUE(MoeLayer::workspace_size(p, &ws).ok());
  test::GuardedBuffer wsb(ws);
  moekit_arguments_t a = l.arguments(out.data());
  a.topk_ids = l.topk_ids.data();
  Status s = MoeLayer::run(a, wsb.data(), ws);
  EXPECT_NE(s.message().find("topk_ids: expected NULL (the layer routes itself"), std::string::npos) << s.message();
  a = l.arguments(out.data());
  a.router_logits = nullptr;
  s = MoeLayer::run(a, wsb.data(), ws);
  EXPECT_NE(s.message().find("router_logits: expected a pointer"), std::string::npos) << s.message();
  a = l.arguments(out.data());
  a.router_correction_bias = l.topk_weights.data();
  s = MoeLayer::run(a, wsb.data(), ws);
  EXPECT_NE(s.message().find("router_correction_bias: expected NULL (router.kind is not sigmoid_grouped_topk)"),
            std::string::npos) << s.message();
  a = l.unrouted_arguments(out.data());
  a.router_logits = l.router_logits.data();
  s = MoeLayer::run(a, wsb.data(), ws);
  EXPECT_NE(s.message().find("router_logits: expected NULL (router.kind is none)"), std::string::npos) << s.message();
  a = l.arguments(out.data());
  a.problem.router.num_groups = 3;
  s = MoeLayer::run(a, wsb.data(), ws);
  EXPECT_NE(s.message().find("router.num_groups/topk_groups: expected 1/1"), std::string::npos) << s.message();
  EXPECT_TRUE(MoeLayer::run(l.arguments(out.data()), wsb.data(), ws).ok());
}
