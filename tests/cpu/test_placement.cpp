// Expert maps (vLLM's expert_map), router weights applied on the input, and
// in-place output, on the CPU backend: each against an equivalent layer
// without the feature (bitwise) and against the fp64 oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/test_util.hpp"
#include "reference/oracle.hpp"

using namespace moekit;
using test::all_tokens;
using test::small_problem;

namespace {

void expect_bitwise_equal(const test::CpuRun& a, const test::CpuRun& b) {
  ASSERT_EQ(a.output.size(), b.output.size());
  EXPECT_EQ(std::memcmp(a.output.data(), b.output.data(), a.output.size()), 0);
}

// Global -> local map for E_total = 12 on a rank holding 4 experts in
// scattered order, plus entries that are not local indices (-1, 4, -7, 99):
// those ids must contribute nothing.
std::vector<int32_t> scattered_map() {
  return {-1, 2, -1, -1, 0, 4, -1, 3, -7, 1, 99, -1};
}

}  // namespace

TEST(ExpertMap, EqualsTheLayerWithExpandedWeights) {
  const int64_t E = 12, El = 4, T = 37, k = 3, H = 32, I = 16;
  const std::vector<int32_t> map = scattered_map();
  for (auto dt : {MOEKIT_DTYPE_FP32, MOEKIT_DTYPE_BF16}) {
    Problem p = small_problem(T, El, k, H, I, dt);
    p.num_experts = E;
    p.has_expert_map = 1;
    p.has_w13_bias = p.has_w2_bias = 1;
    ref::HostLayer l = ref::make_random_layer(p, 21);
    // Adversarial ids: every global id, -1, garbage, duplicates.
    for (int64_t i = 0; i < T * k; ++i) l.topk_ids[i] = static_cast<int32_t>((i * 7) % (E + 3)) - 1;
    l.topk_ids[5] = l.topk_ids[4];
    l.topk_ids[6] = 1 << 30;

    moekit_diagnostics_t diag{};
    test::CpuRun got = test::run_cpu_layer(l, &diag, [&](moekit_arguments_t& a) { a.expert_map = map.data(); });
    ASSERT_TRUE(got.status.ok()) << got.status.message();
    ASSERT_TRUE(got.output.canaries_intact());

    // The same layer with one expert per global id (weights copied from the
    // mapped local expert) and remote ids replaced by -1.
    Problem q = p;
    q.has_expert_map = 0;
    q.num_local_experts = E;
    ref::HostLayer full = ref::make_random_layer(q, 22);
    full.hidden = l.hidden;
    full.topk_weights = l.topk_weights;
    full.topk_ids = l.topk_ids;
    const size_t b = ref::dtype_size(dt), n1 = 2 * I;
    for (int64_t g = 0; g < E; ++g) {
      const int32_t e = map[g];
      if (e < 0 || e >= El) continue;
      std::memcpy(&full.w13[g * n1 * H * b], &l.w13[e * n1 * H * b], n1 * H * b);
      std::memcpy(&full.w2[g * H * I * b], &l.w2[e * H * I * b], H * I * b);
      std::memcpy(&full.w13_bias[g * n1 * b], &l.w13_bias[e * n1 * b], n1 * b);
      std::memcpy(&full.w2_bias[g * H * b], &l.w2_bias[e * H * b], H * b);
    }
    for (int32_t& id : full.topk_ids)
      if (id >= 0 && id < E && (map[id] < 0 || map[id] >= El)) id = -1;
    test::CpuRun want = test::run_cpu_layer(full);
    ASSERT_TRUE(want.status.ok()) << want.status.message();
    expect_bitwise_equal(got, want);

    moekit_arguments_t a = l.arguments(got.output.data());
    a.expert_map = map.data();
    const auto c = ref::check_against_oracle(a, got.output.data(), all_tokens(T));
    EXPECT_EQ(c.nonfinite_mismatch, 0);
    EXPECT_LE(c.rel_frobenius, ref::oracle_tolerance(dt, dt, dt));

    // Diagnostics: ids outside [0, E) are invalid; a mapped-away id is remote.
    int64_t invalid = 0, no_local = 0;
    for (int64_t t = 0; t < T; ++t) {
      int64_t local = 0;
      for (int64_t s = 0; s < k; ++s) {
        const int32_t id = l.topk_ids[t * k + s];
        invalid += id < 0 || id >= E;
        local += id >= 0 && id < E && map[id] >= 0 && map[id] < El;
      }
      no_local += local == 0;
    }
    EXPECT_EQ(diag.invalid_ids, static_cast<unsigned long long>(invalid));
    EXPECT_EQ(diag.tokens_without_local_expert, static_cast<unsigned long long>(no_local));
  }
}

TEST(ExpertMap, ContiguousMapEqualsTheRankRange) {
  // ep_rank 2 of 4 over 16 experts, as a range and as a map.
  Problem p = small_problem(29, 4, 4, 32, 16, MOEKIT_DTYPE_BF16);
  p.num_experts = 16;
  p.ep_size = 4;
  p.ep_rank = 2;
  ref::HostLayer l = ref::make_random_layer(p, 5);
  test::CpuRun ranged = test::run_cpu_layer(l);
  ASSERT_TRUE(ranged.status.ok()) << ranged.status.message();
  std::vector<int32_t> map(16, -1);
  for (int e = 0; e < 4; ++e) map[8 + e] = e;
  ref::HostLayer m = l;
  m.problem.has_expert_map = 1;
  test::CpuRun mapped = test::run_cpu_layer(m, nullptr, [&](moekit_arguments_t& a) { a.expert_map = map.data(); });
  ASSERT_TRUE(mapped.status.ok()) << mapped.status.message();
  expect_bitwise_equal(ranged, mapped);
}

TEST(ExpertMap, Rejections) {
  Problem p = small_problem(4, 4, 2, 32, 16);
  p.num_experts = 8;
  p.has_expert_map = 1;
  ref::HostLayer l = ref::make_random_layer(p, 1);
  const std::vector<int32_t> map(8, 0);
  struct Case {
    const char* what;
    std::function<void(moekit_arguments_t&)> edit;
    const char* message;
  };
  const Case cases[] = {
      {"null map", [](moekit_arguments_t& a) { a.expert_map = nullptr; }, "expert_map: expected a pointer"},
      {"map without the flag",
       [&](moekit_arguments_t& a) { a.expert_map = map.data(); a.problem.has_expert_map = 0; },
       "num_local_experts: expected num_experts / ep_size"},
      {"flag 2", [&](moekit_arguments_t& a) { a.expert_map = map.data(); a.problem.has_expert_map = 2; },
       "has_expert_map: expected 0 or 1"},
      {"more local than global",
       [&](moekit_arguments_t& a) { a.expert_map = map.data(); a.problem.num_local_experts = 9; },
       "num_local_experts: expected 1 <= num_local_experts <= num_experts"},
      {"misaligned map",
       [&](moekit_arguments_t& a) { a.expert_map = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(map.data()) + 2); },
       "expert_map: expected a 4-byte aligned pointer"},
      {"weight flag 3", [&](moekit_arguments_t& a) { a.expert_map = map.data(); a.problem.apply_router_weight_on_input = 3; },
       "apply_router_weight_on_input: expected 0 or 1"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    test::CpuRun r = test::run_cpu_layer(l, nullptr, c.edit);
    EXPECT_EQ(r.status.code(), MOEKIT_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(r.status.message().find(c.message), std::string::npos) << r.status.message();
    // A rejected call writes nothing: the output keeps its poison.
    for (size_t i = 0; i < r.output.size(); ++i) ASSERT_EQ(r.output.data()[i], 0xFF);
  }
  // A map with the flag 0 and an even split is a named error too.
  Problem q = small_problem(4, 8, 2, 32, 16);
  ref::HostLayer lq = ref::make_random_layer(q, 1);
  test::CpuRun r = test::run_cpu_layer(lq, nullptr, [&](moekit_arguments_t& a) { a.expert_map = map.data(); });
  EXPECT_EQ(r.status.code(), MOEKIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(r.status.message().find("expert_map: expected NULL (has_expert_map is 0)"), std::string::npos)
      << r.status.message();
}

TEST(RouterWeightOnInput, EqualsScaledInputWithUnitWeights) {
  for (auto dt : {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP32})
    for (int64_t k : {1, 3}) {
      Problem p = small_problem(23, 6, k, 32, 16, dt);
      p.apply_router_weight_on_input = 1;
      ref::HostLayer l = ref::make_random_layer(p, 9);
      for (int64_t i = 0; i < p.num_tokens * k; ++i) l.topk_weights[i] = 0.25f + 0.37f * (i % 5);
      l.topk_ids[3] = -1;  // an invalid slot stays out of both
      test::CpuRun got = test::run_cpu_layer(l);
      ASSERT_TRUE(got.status.ok()) << got.status.message();

      // k = 1: the same as scaling the hidden rows (fp32 product, rounded)
      // and summing with weight 1.
      if (k == 1) {
        ref::HostLayer s = l;
        s.problem.apply_router_weight_on_input = 0;
        for (int64_t t = 0; t < p.num_tokens; ++t)
          for (int64_t h = 0; h < p.hidden_size; ++h) {
            const int64_t i = t * p.hidden_size + h;
            ref::store_from_float(dt, s.hidden.data(), i,
                                  ref::load_as_float(dt, l.hidden.data(), i) * l.topk_weights[t]);
          }
        for (float& w : s.topk_weights) w = 1.0f;
        test::CpuRun want = test::run_cpu_layer(s);
        ASSERT_TRUE(want.status.ok());
        expect_bitwise_equal(got, want);
      }
      const moekit_arguments_t a = l.arguments(got.output.data());
      const auto c = ref::check_against_oracle(a, got.output.data(), all_tokens(p.num_tokens));
      EXPECT_EQ(c.nonfinite_mismatch, 0);
      EXPECT_LE(c.rel_frobenius, ref::oracle_tolerance(dt, dt, dt));
      // And it differs from weighting the outputs (the expert is nonlinear).
      ref::HostLayer o = l;
      o.problem.apply_router_weight_on_input = 0;
      test::CpuRun out_weighted = test::run_cpu_layer(o);
      EXPECT_NE(std::memcmp(got.output.data(), out_weighted.output.data(), got.output.size()), 0);
    }
}

TEST(InPlace, OutputMayBeExactlyTheInput) {
  Problem p = small_problem(31, 8, 2, 32, 16, MOEKIT_DTYPE_BF16);
  ref::HostLayer l = ref::make_random_layer(p, 3);
  test::CpuRun want = test::run_cpu_layer(l);
  ASSERT_TRUE(want.status.ok());
  ref::HostLayer in_place = l;
  size_t ws = 0;
  ASSERT_TRUE(MoeLayer::workspace_size(p, &ws).ok());
  test::GuardedBuffer workspace(ws);
  moekit_arguments_t a = in_place.arguments(in_place.hidden.data());
  Status s = MoeLayer::run(a, workspace.data(), ws);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(std::memcmp(in_place.hidden.data(), want.output.data(), want.output.size()), 0);

  // Any other overlap with the input is an error that writes nothing.
  ref::HostLayer shifted = l;
  a = shifted.arguments(shifted.hidden.data() + 16);  // 16 bytes into the input
  s = MoeLayer::run(a, workspace.data(), ws);
  EXPECT_EQ(s.code(), MOEKIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(s.message().find("output: expected memory disjoint from hidden"), std::string::npos) << s.message();
  EXPECT_EQ(shifted.hidden, l.hidden);
  // Exactly the input but another dtype (other size) is not in place either.
  ref::HostLayer wider = l;
  wider.problem.output_dtype = MOEKIT_DTYPE_FP32;
  a = wider.arguments(wider.hidden.data());
  s = MoeLayer::run(a, workspace.data(), ws);
  EXPECT_EQ(s.code(), MOEKIT_ERROR_INVALID_ARGUMENT);
}

TEST(Int64Ids, EqualInt32IdsWithOutOfRangeValuesInvalid) {
  Problem p = small_problem(45, 6, 3, 32, 16, MOEKIT_DTYPE_BF16);
  ref::HostLayer l = ref::make_random_layer(p, 13);
  std::vector<int64_t> ids64(l.topk_ids.begin(), l.topk_ids.end());
  // Values an int32 cast would wrap onto valid experts, and other garbage.
  ids64[0] = (int64_t{1} << 32) + 1;
  ids64[4] = -(int64_t{1} << 40);
  ids64[7] = int64_t{1} << 62;
  ids64[9] = -1;
  ids64[10] = ids64[11];  // a duplicate
  ref::HostLayer l32 = l;
  for (size_t i = 0; i < ids64.size(); ++i)
    l32.topk_ids[i] = (ids64[i] >= 0 && ids64[i] < p.num_experts) ? static_cast<int32_t>(ids64[i]) : -1;
  moekit_diagnostics_t d64{}, d32{};
  test::CpuRun got = test::run_cpu_layer(l, &d64, [&](moekit_arguments_t& a) {
    a.topk_ids = nullptr;
    a.topk_ids64 = ids64.data();
  });
  ASSERT_TRUE(got.status.ok()) << got.status.message();
  test::CpuRun want = test::run_cpu_layer(l32, &d32);
  ASSERT_TRUE(want.status.ok());
  expect_bitwise_equal(got, want);
  EXPECT_EQ(d64.invalid_ids, d32.invalid_ids);
  EXPECT_EQ(d64.tokens_without_valid_expert, d32.tokens_without_valid_expert);

  // Both kinds at once, a misaligned int64 pointer, int64 ids with a router: named errors.
  const struct {
    const char* what;
    std::function<void(moekit_arguments_t&)> edit;
    const char* message;
  } cases[] = {
      {"both", [&](moekit_arguments_t& a) { a.topk_ids64 = ids64.data(); },
       "topk_ids64: expected NULL when topk_ids (int32) is given"},
      {"misaligned", [&](moekit_arguments_t& a) {
         a.topk_ids = nullptr;
         a.topk_ids64 = reinterpret_cast<const int64_t*>(reinterpret_cast<const char*>(ids64.data()) + 4);
       }, "topk_ids64: expected a 8-byte aligned pointer"},
      {"neither", [&](moekit_arguments_t& a) { a.topk_ids = nullptr; }, "topk_ids: expected a pointer"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    test::CpuRun r = test::run_cpu_layer(l, nullptr, c.edit);
    EXPECT_EQ(r.status.code(), MOEKIT_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(r.status.message().find(c.message), std::string::npos) << r.status.message();
    for (size_t i = 0; i < r.output.size(); ++i) ASSERT_EQ(r.output.data()[i], 0xFF);
  }
}
