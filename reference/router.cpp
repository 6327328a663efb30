#include "reference/router.hpp"

#include <vector>

#include "common/router_math.hpp"
#include "reference/dtype.hpp"
#include "reference/parallel.hpp"

namespace moekit::ref {

namespace {

constexpr int kLanes = 32;  // the CUDA kernel's warp

// Index of the best key in [begin, end) with stride `step`, ties to the lower
// index; -1 if every key is removed.
int64_t argmax_key(const std::vector<uint32_t>& keys, int64_t begin, int64_t end) {
  int64_t best = -1;
  for (int64_t i = begin; i < end; ++i)
    if (keys[i] != kKeyRemoved && (best < 0 || keys[i] > keys[best])) best = i;
  return best;
}

// Sum of f(i) over [0, n) in the order a warp reduces it.
template <class F>
float warp_order_sum(int64_t n, F&& f) {
  float lane[kLanes] = {};
  for (int l = 0; l < kLanes; ++l)
    for (int64_t i = l; i < n; i += kLanes) lane[l] += f(i);
  for (int off = kLanes / 2; off > 0; off /= 2) {
    float next[kLanes];
    for (int l = 0; l < kLanes; ++l) next[l] = lane[l] + lane[l ^ off];
    std::copy(next, next + kLanes, lane);
  }
  return lane[0];
}

void route_token(const moekit_router_problem_t& p, const float* x, const float* bias,
                 int32_t* ids, float* weights, std::vector<uint32_t>& keys,
                 std::vector<uint32_t>& group_keys) {
  const moekit_router_config_t& c = p.config;
  const int64_t E = p.num_experts, k = p.top_k;
  const bool sigmoid = c.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK;
  float m = -3.402823466e38f;
  for (int64_t i = 0; i < E; ++i) {
    if (sigmoid) {
      keys[i] = rank_key(sigmoid_det(router_clean(x[i])) + (bias ? bias[i] : 0.0f));
    } else {
      keys[i] = rank_key(x[i]);
      m = std::max(m, router_clean(x[i]));
    }
  }
  if (sigmoid && c.num_groups > 1) {
    const int64_t G = c.num_groups, gs = E / G;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t a = argmax_key(keys, g * gs, (g + 1) * gs);
      float score = key_value(keys[a]);
      if (gs > 1) {
        const uint32_t saved = keys[a];
        keys[a] = kKeyRemoved;
        score = score + key_value(keys[argmax_key(keys, g * gs, (g + 1) * gs)]);
        keys[a] = saved;
      }
      group_keys[g] = rank_key(score);
    }
    for (int64_t r = 0; r < c.topk_groups; ++r) group_keys[argmax_key(group_keys, 0, G)] = kKeyRemoved;
    for (int64_t i = 0; i < E; ++i)
      if (group_keys[i / gs] != kKeyRemoved) keys[i] = kKeyRemoved;  // group not kept
  }
  for (int64_t s = 0; s < k; ++s) {
    const int64_t w = argmax_key(keys, 0, E);
    ids[s] = static_cast<int32_t>(w);
    keys[w] = kKeyRemoved;
  }
  // Weights, in slot order.
  float total = 0.0f;
  if (c.kind == MOEKIT_ROUTER_SOFTMAX_TOPK) {
    const float sum = warp_order_sum(E, [&](int64_t i) { return exp_det(router_clean(x[i]) - m); });
    for (int64_t s = 0; s < k; ++s) total += weights[s] = exp_det(router_clean(x[ids[s]]) - m) / sum;
    if (c.renormalize)
      for (int64_t s = 0; s < k; ++s) weights[s] = weights[s] / total;
  } else if (c.kind == MOEKIT_ROUTER_TOPK_SOFTMAX) {
    const float top = router_clean(x[ids[0]]);
    for (int64_t s = 0; s < k; ++s) total += weights[s] = exp_det(router_clean(x[ids[s]]) - top);
    for (int64_t s = 0; s < k; ++s) weights[s] = weights[s] / total;
  } else {
    for (int64_t s = 0; s < k; ++s) total += weights[s] = sigmoid_det(router_clean(x[ids[s]]));
    if (c.renormalize)
      for (int64_t s = 0; s < k; ++s) weights[s] = weights[s] / (total + 1e-20f);
  }
  for (int64_t s = 0; s < k; ++s) weights[s] = weights[s] * c.routed_scaling_factor;
}

}  // namespace

void route(const moekit_router_problem_t& p, const void* logits, const float* correction_bias,
           int32_t* topk_ids, float* topk_weights) {
  const int64_t E = p.num_experts, k = p.top_k;
  const bool with_bias = p.config.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK;
  parallel_for(p.num_tokens, [&](int64_t t0, int64_t t1, int) {
    std::vector<float> x(E);
    std::vector<uint32_t> keys(E), group_keys(std::max<int64_t>(1, p.config.num_groups));
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = 0; i < E; ++i) x[i] = load_as_float(p.config.logits_dtype, logits, t * E + i);
      route_token(p, x.data(), with_bias ? correction_bias : nullptr, topk_ids + t * k,
                  topk_weights + t * k, keys, group_keys);
    }
  });
}

}  // namespace moekit::ref
