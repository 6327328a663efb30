// Router inputs shared by the CPU and GPU router tests: random and adversarial
// logits (NaN rows, partial NaN, +-Inf, ties, all equal, huge magnitudes).
#pragma once

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "moekit/moekit.hpp"
#include "reference/dtype.hpp"

namespace moekit::test {

struct RouterCase {
  RouterProblem problem;
  std::vector<uint8_t> logits;  // [T, E] in problem.config.logits_dtype
  std::vector<float> bias;      // [E], grouped kind
  std::string name;
};

inline RouterProblem router_problem(moekit_router_kind_t kind, int64_t T, int64_t E, int64_t k,
                                    moekit_dtype_t dt = MOEKIT_DTYPE_FP32) {
  RouterProblem p = default_router_problem();
  p.num_tokens = T;
  p.num_experts = E;
  p.top_k = k;
  p.config.kind = kind;
  p.config.logits_dtype = dt;
  p.device = MOEKIT_DEVICE_CPU;
  if (kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK) {
    p.config.num_groups = E % 8 == 0 && E >= 16 ? 8 : 1;
    p.config.topk_groups = p.config.num_groups > 1 ? 4 : 1;
    p.config.routed_scaling_factor = 2.5f;
    if (k > p.config.topk_groups * (E / p.config.num_groups)) p.config.topk_groups = p.config.num_groups;
  }
  return p;
}

// Row kinds: 0 random, 1 all NaN, 2 partial NaN, 3 +-Inf mixed, 4 all equal,
// 5 all negative, 6 huge magnitudes, 7 integer ties.
inline float adversarial_value(int row_kind, int64_t e, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 2.0f);
  const float kNaN = std::numeric_limits<float>::quiet_NaN(), kInf = INFINITY;
  switch (row_kind) {
    case 1: return kNaN;
    case 2: return rng() % 3 == 0 ? kNaN : n(rng);
    case 3: { int r = rng() % 5; return r == 0 ? kInf : r == 1 ? -kInf : r == 2 ? kNaN : n(rng); }
    case 4: return 0.25f;
    case 5: return -100.0f - std::fabs(n(rng));
    case 6: { int r = rng() % 3; return r == 0 ? 3.0e38f : r == 1 ? -3.0e38f : n(rng) * 1e30f; }
    case 7: return static_cast<float>(rng() % 3);
    default: (void)e; return n(rng);
  }
}

inline RouterCase make_router_case(const RouterProblem& p, bool adversarial, uint64_t seed) {
  RouterCase c{p, {}, {}, ""};
  std::mt19937 rng(static_cast<uint32_t>(seed));
  const int64_t T = p.num_tokens, E = p.num_experts;
  c.logits.resize(T * E * ref::dtype_size(p.config.logits_dtype));
  for (int64_t t = 0; t < T; ++t) {
    const int kind = adversarial ? static_cast<int>(t % 8) : 0;
    for (int64_t e = 0; e < E; ++e)
      ref::store_from_float(p.config.logits_dtype, c.logits.data(), t * E + e,
                            adversarial_value(kind, e, rng));
  }
  if (p.config.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK) {
    std::normal_distribution<float> n(0.0f, 0.05f);
    c.bias.resize(E);
    for (auto& b : c.bias) b = n(rng);
  }
  c.name = std::string(adversarial ? "adversarial" : "random") + " kind " +
           std::to_string(p.config.kind) + " T=" + std::to_string(T) + " E=" + std::to_string(E) +
           " k=" + std::to_string(p.top_k) + " dtype " + moekit_dtype_name(p.config.logits_dtype);
  return c;
}

}  // namespace moekit::test
