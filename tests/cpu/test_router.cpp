// The CPU router against an independent fp64 naive router, on random and
// adversarial logits, and every router rejection.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <set>

#include "common/hostile_problem.hpp"
#include "common/router_cases.hpp"
#include "common/router_math.hpp"
#include "reference/router.hpp"

using namespace moekit;
using test::make_router_case;
using test::router_problem;

namespace {

// Ranking order of the contract: NaN below every number, ties to the lower id.
bool ranks_before(double a, int64_t ia, double b, int64_t ib) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(b) && (!std::isnan(a) || ia < ib);
  return a > b || (a == b && ia < ib);
}

double clean(double x) {
  const double kMax = 3.402823466e38;
  return std::isnan(x) ? -kMax : std::clamp(x, -kMax, kMax);
}

struct Naive {
  std::vector<int64_t> ids;
  std::vector<double> weights;
  std::vector<double> score;  // the ranking value of every expert (sigmoid kind)
  std::vector<bool> allowed;  // experts in kept groups
};

Naive naive_route(const RouterProblem& p, const double* x, const float* bias) {
  const int64_t E = p.num_experts, k = p.top_k;
  const auto& c = p.config;
  Naive n;
  n.allowed.assign(E, true);
  std::vector<double> rank(E);
  if (c.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK) {
    n.score.resize(E);
    for (int64_t i = 0; i < E; ++i) n.score[i] = rank[i] = 1.0 / (1.0 + std::exp(-clean(x[i]))) + bias[i];
    const int64_t G = c.num_groups, gs = E / G;
    if (G > 1) {
      std::vector<std::pair<double, int64_t>> groups;
      for (int64_t g = 0; g < G; ++g) {
        std::vector<double> v(rank.begin() + g * gs, rank.begin() + (g + 1) * gs);
        std::sort(v.begin(), v.end(), std::greater<>());
        groups.push_back({gs > 1 ? v[0] + v[1] : v[0], g});
      }
      std::stable_sort(groups.begin(), groups.end(), [](auto& a, auto& b) {
        return ranks_before(a.first, a.second, b.first, b.second);
      });
      std::vector<bool> kept(G, false);
      for (int64_t r = 0; r < c.topk_groups; ++r) kept[groups[r].second] = true;
      for (int64_t i = 0; i < E; ++i) n.allowed[i] = kept[i / gs];
    }
  } else {
    for (int64_t i = 0; i < E; ++i) rank[i] = x[i];
  }
  std::vector<int64_t> order;
  for (int64_t i = 0; i < E; ++i) if (n.allowed[i]) order.push_back(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return ranks_before(rank[a], a, rank[b], b); });
  n.ids.assign(order.begin(), order.begin() + k);
  double m = -INFINITY, sum = 0, total = 0;
  for (int64_t i = 0; i < E; ++i) m = std::max(m, clean(x[i]));
  if (c.kind == MOEKIT_ROUTER_SOFTMAX_TOPK) {
    for (int64_t i = 0; i < E; ++i) sum += std::exp(clean(x[i]) - m);
    for (int64_t id : n.ids) n.weights.push_back(std::exp(clean(x[id]) - m) / sum);
  } else if (c.kind == MOEKIT_ROUTER_TOPK_SOFTMAX) {
    const double top = clean(x[n.ids[0]]);
    for (int64_t id : n.ids) n.weights.push_back(std::exp(clean(x[id]) - top));
  } else {
    for (int64_t id : n.ids) n.weights.push_back(1.0 / (1.0 + std::exp(-clean(x[id]))));
  }
  for (double w : n.weights) total += w;
  const bool renorm = c.kind == MOEKIT_ROUTER_TOPK_SOFTMAX || c.renormalize;
  for (double& w : n.weights)
    w = (renorm ? w / (total + (c.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK ? 1e-20 : 0.0)) : w) *
        c.routed_scaling_factor;
  return n;
}

void check_case(const test::RouterCase& rc) {
  SCOPED_TRACE(rc.name);
  const RouterProblem& p = rc.problem;
  const int64_t T = p.num_tokens, E = p.num_experts, k = p.top_k;
  std::vector<int32_t> ids(T * k, -7);
  std::vector<float> w(T * k, NAN);
  RouterArguments a{p, rc.logits.data(), rc.bias.empty() ? nullptr : rc.bias.data(), ids.data(), w.data()};
  Status s = Router::run(a);
  ASSERT_TRUE(s.ok()) << s.message();
  std::vector<double> x(E);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < E; ++i) x[i] = ref::load_as_float(p.config.logits_dtype, rc.logits.data(), t * E + i);
    const Naive n = naive_route(p, x.data(), rc.bias.data());
    std::set<int32_t> distinct(ids.begin() + t * k, ids.begin() + (t + 1) * k);
    ASSERT_EQ(distinct.size(), static_cast<size_t>(k)) << "token " << t;
    for (int64_t s2 = 0; s2 < k; ++s2) {
      const int32_t id = ids[t * k + s2];
      ASSERT_TRUE(id >= 0 && id < E) << "token " << t;
      ASSERT_TRUE(std::isfinite(w[t * k + s2])) << "token " << t << " slot " << s2;
      if (p.config.kind != MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK) {
        ASSERT_EQ(id, n.ids[s2]) << "token " << t << " slot " << s2;
        const double want = n.weights[s2];
        ASSERT_NEAR(w[t * k + s2], want, 2e-6 * std::max(1.0, std::fabs(want))) << "token " << t;
      } else {
        // fp32 and fp64 sigmoids may order near-ties differently: check that
        // every chosen expert is in a kept group and outranks (within 1e-6)
        // every expert left out, and that exact ties went to the lower id.
        ASSERT_TRUE(n.allowed[id]) << "token " << t << ": expert " << id << " in a dropped group";
        for (int64_t j = 0; j < E; ++j) {
          if (!n.allowed[j] || distinct.count(static_cast<int32_t>(j))) continue;
          ASSERT_GE(n.score[id], n.score[j] - 1e-6) << "token " << t << " chose " << id << " over " << j;
          if (n.score[id] == n.score[j]) {
            ASSERT_LT(id, j) << "token " << t;
          }
        }
      }
    }
    if (p.config.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK) {  // weights of the chosen ids
      double total = 0;
      for (int64_t s2 = 0; s2 < k; ++s2) total += 1.0 / (1.0 + std::exp(-clean(x[ids[t * k + s2]])));
      for (int64_t s2 = 0; s2 < k; ++s2) {
        const double sg = 1.0 / (1.0 + std::exp(-clean(x[ids[t * k + s2]])));
        const double want = (p.config.renormalize ? sg / (total + 1e-20) : sg) * p.config.routed_scaling_factor;
        ASSERT_NEAR(w[t * k + s2], want, 2e-6 * std::max(1.0, want)) << "token " << t;
      }
    }
  }
}

}  // namespace

TEST(Router, EveryKindOnRandomAndAdversarialLogits) {
  for (auto kind : {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_ROUTER_TOPK_SOFTMAX, MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK})
    for (int64_t T : {1, 255, 256, 257})
      for (auto [E, k] : {std::pair<int64_t, int64_t>{8, 2}, {64, 6}, {128, 8}, {256, 8}, {512, 32}, {72, 9}})
        for (bool adversarial : {false, true}) {
          check_case(make_router_case(router_problem(kind, T, E, k), adversarial, T * E + k));
          if (HasFatalFailure()) return;
        }
}

TEST(Router, SixteenBitLogits) {
  for (auto dt : {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP16})
    for (auto kind : {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_ROUTER_TOPK_SOFTMAX, MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK})
      check_case(make_router_case(router_problem(kind, 300, 128, 8, dt), true, 3));
}

TEST(Router, AllNaNRowGivesTheLowestIdsAndFiniteWeights) {
  for (auto kind : {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_ROUTER_TOPK_SOFTMAX, MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK}) {
    RouterProblem p = router_problem(kind, 1, 64, 8);
    std::vector<float> logits(64, NAN), bias(64, 0.0f), w(8);
    std::vector<int32_t> ids(8);
    ASSERT_TRUE(Router::run({p, logits.data(), kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK ? bias.data() : nullptr,
                             ids.data(), w.data()}).ok());
    for (int s = 0; s < 8; ++s) {
      EXPECT_EQ(ids[s], s);
      EXPECT_TRUE(std::isfinite(w[s]));
    }
    if (kind == MOEKIT_ROUTER_TOPK_SOFTMAX) {
      EXPECT_FLOAT_EQ(w[0], 1.0f / 8);
    }
  }
}

TEST(Router, InfinitiesAndNaNRankAsDocumented) {
  RouterProblem p = router_problem(MOEKIT_ROUTER_SOFTMAX_TOPK, 1, 6, 6);
  std::vector<float> logits = {NAN, -INFINITY, 1.0f, INFINITY, -INFINITY, INFINITY}, w(6);
  std::vector<int32_t> ids(6);
  ASSERT_TRUE(Router::run({p, logits.data(), nullptr, ids.data(), w.data()}).ok());
  EXPECT_EQ(ids, (std::vector<int32_t>{3, 5, 2, 1, 4, 0}));
  EXPECT_FLOAT_EQ(w[0], 0.5f);  // the two +Inf share the mass
  EXPECT_FLOAT_EQ(w[1], 0.5f);
  EXPECT_EQ(w[2], 0.0f);
}

TEST(Router, ZeroTokensAndDeterminism) {
  RouterProblem p = router_problem(MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK, 0, 256, 8);
  EXPECT_TRUE(Router::run({p, nullptr, nullptr, nullptr, nullptr}).ok());
  auto c = make_router_case(router_problem(MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK, 100, 256, 8), true, 1);
  std::vector<int32_t> a(800), b(800);
  std::vector<float> wa(800), wb(800);
  ASSERT_TRUE(Router::run({c.problem, c.logits.data(), c.bias.data(), a.data(), wa.data()}).ok());
  ASSERT_TRUE(Router::run({c.problem, c.logits.data(), c.bias.data(), b.data(), wb.data()}).ok());
  EXPECT_EQ(a, b);
  EXPECT_EQ(0, std::memcmp(wa.data(), wb.data(), 800 * 4));
}

TEST(Router, ExpDetIsAccurate) {
  for (float x = -103.0f; x < 88.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    ASSERT_NEAR(exp_det(x), want, 4e-7 * want + 1e-44) << x;
  }
  EXPECT_EQ(exp_det(-INFINITY), 0.0f);
  EXPECT_EQ(exp_det(INFINITY), INFINITY);
  EXPECT_TRUE(std::isnan(exp_det(NAN)));
}

TEST(Router, Rejections) {
  std::vector<float> logits(64 * 4, 0.0f), w(64 * 8), bias(64);
  std::vector<int32_t> ids(64 * 8);
  struct Bad { const char* name; std::function<void(RouterArguments&)> mutate; const char* message; };
  const std::vector<Bad> bads = {
      {"k > E", [](auto& a) { a.problem.top_k = 65; }, "top_k: expected 1 <= top_k <= num_experts = 64, got 65"},
      {"kind", [](auto& a) { a.problem.config.kind = static_cast<moekit_router_kind_t>(9); }, "kind: expected softmax_topk (1)"},
      {"none", [](auto& a) { a.problem.config.kind = MOEKIT_ROUTER_NONE; }, "kind: expected softmax_topk (1)"},
      {"dtype", [](auto& a) { a.problem.config.logits_dtype = static_cast<moekit_dtype_t>(5); }, "logits_dtype: expected one of bf16, fp16, fp32, got 5"},
      {"E too big", [](auto& a) { a.problem.num_experts = 7000; a.problem.num_tokens = 1; }, "num_experts: expected at most 6144 for a router, got 7000"},
      {"renormalize", [](auto& a) { a.problem.config.renormalize = 2; }, "renormalize: expected 0 or 1, got 2"},
      {"scale", [](auto& a) { a.problem.config.routed_scaling_factor = NAN; }, "routed_scaling_factor: expected a finite number"},
      {"groups on softmax", [](auto& a) { a.problem.config.num_groups = 8; }, "num_groups/topk_groups: expected 1/1 for an ungrouped router, got 8/1"},
      {"groups not dividing", [](auto& a) { a.problem.config.kind = MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK; a.problem.config.num_groups = 7; },
       "num_groups: expected a divisor of num_experts = 64, got 7"},
      {"topk_groups", [](auto& a) { a.problem.config.kind = MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK; a.problem.config.num_groups = 8; a.problem.config.topk_groups = 9; },
       "topk_groups: expected 1 <= topk_groups <= num_groups = 8, got 9"},
      {"k beyond kept groups", [](auto& a) { a.problem.config.kind = MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK; a.problem.config.num_groups = 16; a.problem.config.topk_groups = 1; },
       "top_k: expected at most topk_groups * num_experts / num_groups = 4 experts in the kept groups, got 8"},
      {"bias on softmax", [&](auto& a) { a.correction_bias = bias.data(); }, "correction_bias: expected NULL"},
      {"null logits", [](auto& a) { a.logits = nullptr; }, "logits: expected a pointer"},
      {"null ids", [](auto& a) { a.topk_ids = nullptr; }, "topk_ids: expected a pointer"},
      {"misaligned weights", [](auto& a) { a.topk_weights = reinterpret_cast<float*>(reinterpret_cast<char*>(a.topk_weights) + 2); }, "topk_weights: expected a 4-byte aligned pointer"},
      {"ids alias logits", [&](auto& a) { a.topk_ids = reinterpret_cast<int32_t*>(logits.data()); }, "topk_ids: expected memory disjoint from logits"},
  };
  for (const Bad& b : bads) {
    SCOPED_TRACE(b.name);
    RouterArguments a{router_problem(MOEKIT_ROUTER_SOFTMAX_TOPK, 4, 64, 8), logits.data(), nullptr, ids.data(), w.data()};
    b.mutate(a);
    std::fill(ids.begin(), ids.end(), -3);
    Status s = Router::run(a);
    EXPECT_EQ(s.code(), MOEKIT_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(s.message().find(b.message), std::string::npos) << s.message();
    EXPECT_EQ(moekit_router_run(&a, nullptr), MOEKIT_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(std::all_of(ids.begin(), ids.end(), [](int32_t v) { return v == -3; }));
  }
}

// Every field of a router problem from a set of hostile values: each call
// returns a status, never crashes (the sanitizer build runs this under ASan
// and UBSan), and an accepted problem that fits the buffers routes by the
// contract: k distinct ids in [0, E) and finite weights per token.
TEST(Router, HostileFieldsGetAStatusAndAcceptedOnesKeepTheContract) {
  constexpr int64_t kMaxT = 4, kMaxE = 64, kMaxK = 8;  // what the buffers hold
  std::vector<float> logits(kMaxT * kMaxE), w(kMaxT * kMaxK), bias(kMaxE);
  std::vector<int32_t> ids(kMaxT * kMaxK);
  std::mt19937_64 rng(20261205);
  std::uniform_real_distribution<float> value(-4.0f, 4.0f);
  test::HostileProblems hostile(20261207, 6);
  int routed = 0;
  for (int i = 0; i < 20000; ++i) {
    const auto kind = static_cast<moekit_router_kind_t>(1 + rng() % 3);
    RouterArguments a{router_problem(kind, 1 + rng() % kMaxT, 8 * (1 + rng() % (kMaxE / 8)), 1 + rng() % kMaxK),
                      logits.data(), nullptr, ids.data(), w.data()};
    RouterProblem& p = a.problem;
    if (p.top_k > p.num_experts) p.top_k = p.num_experts;
    if (kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK && rng() % 2) a.correction_bias = bias.data();
    hostile.apply(p);
    p.device = MOEKIT_DEVICE_CPU;
    SCOPED_TRACE(testing::Message() << "iteration " << i << ": T " << p.num_tokens << " E " << p.num_experts
                                    << " k " << p.top_k << " kind " << static_cast<int>(p.config.kind));
    const moekit_status_t s = moekit_router_can_implement(&a);
    ASSERT_TRUE(s == MOEKIT_SUCCESS || s == MOEKIT_ERROR_INVALID_ARGUMENT) << moekit_last_error_message();
    if (s != MOEKIT_SUCCESS || p.num_tokens > kMaxT || p.num_experts > kMaxE || p.top_k > kMaxK) continue;
    for (float& v : logits) v = value(rng);
    for (float& v : bias) v = value(rng);
    ASSERT_EQ(moekit_router_run(&a, nullptr), MOEKIT_SUCCESS) << moekit_last_error_message();
    ++routed;
    for (int64_t t = 0; t < p.num_tokens; ++t) {
      std::set<int32_t> seen;
      for (int64_t j = 0; j < p.top_k; ++j) {
        const int32_t id = ids[t * p.top_k + j];
        ASSERT_TRUE(id >= 0 && id < p.num_experts && seen.insert(id).second) << "token " << t << " id " << id;
        ASSERT_TRUE(std::isfinite(w[t * p.top_k + j]));
      }
    }
  }
  EXPECT_GT(routed, 1000);
}
