// Problems with hostile fields, for the tests that every call on them returns
// a status and never crashes: each field of a layer or router problem is, one
// time in `one_in`, replaced by a value from a set of int64 / int32 extremes,
// values around the library's limits, garbage enums and non-finite floats.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>

#include "moekit/moekit.h"

namespace moekit::test {

// "T 16 H 32 I 16 E 8/8 k 2": the sizes of p, for a test's trace.
inline std::string sizes_of(const moekit_problem_t& p) {
  return "T " + std::to_string(p.num_tokens) + " H " + std::to_string(p.hidden_size) + " I " +
         std::to_string(p.intermediate_size) + " E " + std::to_string(p.num_experts) + "/" +
         std::to_string(p.num_local_experts) + " k " + std::to_string(p.top_k);
}

class HostileProblems {
 public:
  HostileProblems(uint64_t seed, int one_in) : rng_(seed), one_in_(one_in) {}

  // Replaces some of p's fields (p.device included: a caller that tests one
  // backend sets it back).
  void apply(moekit_problem_t& p) {
    for (int64_t* field : {&p.num_tokens, &p.hidden_size, &p.intermediate_size, &p.num_experts,
                           &p.num_local_experts, &p.ep_rank, &p.ep_size, &p.top_k})
      maybe(*field);
    maybe(p.input_dtype);
    maybe(p.weight_dtype);
    maybe(p.output_dtype);
    maybe(p.activation);
    maybe(p.gate_up_order);
    maybe(p.device);
    maybe(p.quant.kind);
    for (int32_t* field : {&p.has_w13_bias, &p.has_w2_bias, &p.quant.static_activation_scale,
                           &p.apply_router_weight_on_input, &p.has_expert_map})
      maybe(*field);
    for (float* field : {&p.swiglu_alpha, &p.swiglu_beta, &p.swiglu_limit}) maybe(*field);
    apply(p.router);
  }
  void apply(moekit_router_problem_t& p) {
    for (int64_t* field : {&p.num_tokens, &p.num_experts, &p.top_k}) maybe(*field);
    maybe(p.device);
    apply(p.config);
  }
  void apply(moekit_router_config_t& c) {
    maybe(c.kind);
    maybe(c.logits_dtype);
    for (int32_t* field : {&c.renormalize, &c.num_groups, &c.topk_groups}) maybe(*field);
    maybe(c.routed_scaling_factor);
  }

 private:
  static constexpr int64_t kInts[] = {std::numeric_limits<int64_t>::min(), -(int64_t{1} << 40), -1, 0, 1, 2, 3, 4,
                                      7, 8, 16, 64, 128, 4096, 6144, 6145, MOEKIT_MAX_ROW_LENGTH,
                                      MOEKIT_MAX_ROW_LENGTH + 8, 2147483647, int64_t{1} << 31, int64_t{1} << 32,
                                      int64_t{1} << 62, std::numeric_limits<int64_t>::max()};
  static constexpr int32_t kEnums[] = {std::numeric_limits<int32_t>::min(), -1, 0, 1, 2, 3, 4, 8, 9, 255,
                                       std::numeric_limits<int32_t>::max()};
  static constexpr float kFloats[] = {std::numeric_limits<float>::quiet_NaN(), -INFINITY, INFINITY, -1.0f,
                                      0.0f, 1.0f, 1.702f, 2.5f, 1e30f};

  // int64 fields from kInts, floats from kFloats, int32 fields and enums from kEnums.
  template <class F>
  void maybe(F& field) {
    if (rng_() % one_in_ != 0) return;
    if constexpr (std::is_same_v<F, int64_t>)
      field = pick(kInts);
    else if constexpr (std::is_same_v<F, float>)
      field = pick(kFloats);
    else
      field = static_cast<F>(pick(kEnums));
  }
  template <class V, size_t N>
  V pick(const V (&set)[N]) {
    return set[rng_() % N];
  }

  std::mt19937_64 rng_;
  uint64_t one_in_;
};

}  // namespace moekit::test
