// Stage-by-stage checks of the CPU reference against fp64 formulas written
// here, independently of src/common/activation_math.hpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "reference/dtype.hpp"
#include "reference/reference.hpp"

using namespace moekit;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double gelu_e(double x) { return 0.5 * x * (1.0 + std::erf(x * M_SQRT1_2)); }
double gelu_t(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

double expected(const ActivationParams& p, double g, double u) {
  switch (p.kind) {
    case MOEKIT_ACT_SWIGLU: {
      double gc = std::min<double>(g, p.limit), uc = std::clamp<double>(u, -p.limit, p.limit);
      return gc * sig(p.alpha * gc) * (uc + p.beta);
    }
    case MOEKIT_ACT_GEGLU_ERF: return gelu_e(g) * u;
    case MOEKIT_ACT_GEGLU_TANH: return gelu_t(g) * u;
    case MOEKIT_ACT_SILU: return g * sig(g);
    case MOEKIT_ACT_GELU_ERF: return gelu_e(g);
    case MOEKIT_ACT_GELU_TANH: return gelu_t(g);
    case MOEKIT_ACT_RELU: return g > 0 ? g : 0.0;
    case MOEKIT_ACT_RELU2: return g > 0 ? g * g : 0.0;
    default: return g;
  }
}

}  // namespace

class ActivationTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(ActivationTest, MatchesFp64FormulaForEveryGateUpOrder) {
  const auto kind = static_cast<moekit_activation_t>(std::get<0>(GetParam()));
  const auto order = static_cast<moekit_gate_up_order_t>(std::get<1>(GetParam()));
  const bool gated = activation_is_gated(kind);
  const int64_t rows = 7, I = 24, n1 = gated ? 2 * I : I;
  std::vector<ActivationParams> params = {{kind, 1.0f, 0.0f, kInf}};
  if (kind == MOEKIT_ACT_SWIGLU) params.push_back({kind, 1.702f, 1.0f, 7.0f});
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-12.0f, 12.0f);
  for (const ActivationParams& p : params) {
    std::vector<float> g1(rows * n1), out(rows * I, NAN);
    for (auto& v : g1) v = dist(rng);
    ref::activation(g1.data(), rows, I, p, order, MOEKIT_DTYPE_FP32, out.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < I; ++j) {
        double g, u = 0;
        const float* row = g1.data() + r * n1;
        if (!gated) g = row[j];
        else if (order == MOEKIT_GATE_UP) { g = row[j]; u = row[I + j]; }
        else if (order == MOEKIT_UP_GATE) { u = row[j]; g = row[I + j]; }
        else { g = row[2 * j]; u = row[2 * j + 1]; }
        const double want = expected(p, g, u);
        ASSERT_NEAR(out[r * I + j], want, 2e-6 * std::max(1.0, std::fabs(want)))
            << "row " << r << " col " << j << " gate " << g << " up " << u;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllKinds, ActivationTest,
                         ::testing::Combine(::testing::Range(0, 9), ::testing::Range(0, 3)));

TEST(Activation, SwigluClampKeepsNaN) {
  ActivationParams p{MOEKIT_ACT_SWIGLU, 1.702f, 1.0f, 7.0f};
  EXPECT_TRUE(std::isnan(apply_gated_activation(p, NAN, 1.0f)));
  EXPECT_TRUE(std::isnan(apply_gated_activation(p, 1.0f, NAN)));
  EXPECT_TRUE(std::isnan(apply_activation(MOEKIT_ACT_RELU, NAN)));
  // The clamp bounds +Inf: gpt-oss's limit makes a finite result.
  EXPECT_TRUE(std::isfinite(apply_gated_activation(p, kInf, kInf)));
}

TEST(Permute, GathersAndRoundsToComputeDtype) {
  const int64_t T = 5, k = 2, H = 8;
  std::vector<float> hidden(T * H);
  for (int64_t i = 0; i < T * H; ++i) hidden[i] = 1.0f + i * (1.0f / 3.0f);
  std::vector<int32_t> sorted_pairs = {9, 0, 4, 5};
  std::vector<float> rows(4 * H, NAN);
  ref::permute(hidden.data(), MOEKIT_DTYPE_FP32, sorted_pairs.data(), nullptr, 4, k, H, MOEKIT_DTYPE_BF16,
               rows.data());
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t h = 0; h < H; ++h)
      EXPECT_EQ(rows[r * H + h], ref::round_to(MOEKIT_DTYPE_BF16, hidden[(sorted_pairs[r] / k) * H + h]));
}

TEST(GroupedGemm, EachSegmentUsesItsExpertAndBias) {
  const int64_t E = 3, N = 5, K = 37;
  std::vector<int32_t> offsets = {0, 2, 2, 6};  // expert 1 empty
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> a(6 * K), w(E * N * K), bias(E * N), c(6 * N, NAN);
  for (auto* v : {&a, &w, &bias}) for (auto& x : *v) x = d(rng);
  std::vector<float> scratch(ref::cpu_threads() * K);
  ref::grouped_gemm(a.data(), offsets.data(), E, w.data(), bias.data(), MOEKIT_DTYPE_FP32, N, K,
                    scratch.data(), c.data());
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r)
      for (int64_t n = 0; n < N; ++n) {
        double acc = bias[e * N + n];
        for (int64_t kk = 0; kk < K; ++kk) acc += double(a[r * K + kk]) * w[(e * N + n) * K + kk];
        EXPECT_NEAR(c[r * N + n], acc, 1e-5) << e << " " << r << " " << n;
      }
}

TEST(Finalize, WeightedSumInSlotOrderAndZerosForEmptyTokens) {
  const int64_t T = 3, k = 3, H = 8;
  std::vector<float> y(4 * H);
  for (int64_t i = 0; i < 4 * H; ++i) y[i] = float(i % 11) - 3.0f;
  std::vector<int32_t> pair_to_row = {2, -1, 0, -1, -1, -1, 1, 3, 1};
  std::vector<float> w = {0.5f, NAN, -2.0f, 1.0f, 1.0f, 1.0f, 0.25f, 0.0f, 4.0f};
  std::vector<float> out(T * H, NAN);
  ref::finalize(y.data(), pair_to_row.data(), w.data(), T, k, H, out.data(), MOEKIT_DTYPE_FP32);
  for (int64_t h = 0; h < H; ++h) {
    EXPECT_FLOAT_EQ(out[h], 0.5f * y[2 * H + h] - 2.0f * y[h]);  // NaN weight of slot -1 ignored
    EXPECT_EQ(out[H + h], 0.0f);
    EXPECT_FLOAT_EQ(out[2 * H + h], 0.25f * y[H + h] + 0.0f * y[3 * H + h] + 4.0f * y[H + h]);
  }
}
