#include "reference/random_layer.hpp"

#include <algorithm>
#include <random>
#include <cmath>
#include <numeric>

#include "common/activation_math.hpp"
#include "reference/dtype.hpp"
#include "reference/parallel.hpp"
#include "reference/router.hpp"

namespace moekit::ref {

namespace {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

void fill_random(moekit_dtype_t d, void* dst, int64_t n, float stddev, uint64_t seed) {
  // Fixed-size blocks with their own streams: the values do not depend on how
  // the blocks are spread over threads.
  constexpr int64_t kBlock = 1 << 16;
  const float scale = stddev * std::sqrt(3.0f) / 2147483648.0f;  // uniform(-sqrt3, sqrt3) * stddev
  parallel_for((n + kBlock - 1) / kBlock, [&](int64_t b0, int64_t b1, int) {
    for (int64_t b = b0; b < b1; ++b) {
      uint64_t s = seed * 0x632be59bd9b4e019ull + static_cast<uint64_t>(b);
      const int64_t end = std::min(n, (b + 1) * kBlock);
      for (int64_t i = b * kBlock; i < end; ++i) {
        const int32_t r = static_cast<int32_t>(splitmix64(s) >> 32);
        store_from_float(d, dst, i, static_cast<float>(r) * scale);
      }
    }
  });
}

moekit_arguments_t HostLayer::arguments(void* output) const {
  moekit_arguments_t a = unrouted_arguments(output);
  if (problem.router.kind == MOEKIT_ROUTER_NONE) return a;
  a.problem.router = problem.router;
  a.topk_ids = nullptr;
  a.topk_weights = nullptr;
  a.router_logits = router_logits.data();
  a.router_correction_bias =
      problem.router.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK ? correction_bias.data() : nullptr;
  return a;
}

moekit_arguments_t HostLayer::unrouted_arguments(void* output) const {
  moekit_arguments_t a{};
  a.problem = problem;
  a.problem.router.kind = MOEKIT_ROUTER_NONE;
  a.hidden = hidden.data();
  a.topk_ids = topk_ids.data();
  a.topk_weights = topk_weights.data();
  a.w13 = w13.data();
  a.w13_bias = problem.has_w13_bias ? w13_bias.data() : nullptr;
  a.w2 = w2.data();
  a.w2_bias = problem.has_w2_bias ? w2_bias.data() : nullptr;
  a.output = output;
  if (problem.has_expert_map) a.expert_map = expert_map.data();
  if (problem.quant.kind != MOEKIT_QUANT_NONE) {
    a.w13_scale = w13_scale.data();
    a.w2_scale = w2_scale.data();
    if (problem.quant.static_activation_scale) {
      a.a13_scale = a13_scale.data();
      a.a2_scale = a2_scale.data();
    }
  }
  return a;
}

namespace {

// w [E, N, K] in `from` -> e4m3 bytes and scales (block or per expert).
void quantize_weights(const std::vector<uint8_t>& w, moekit_dtype_t from, int64_t E, int64_t n,
                      int64_t k, moekit_quant_t kind, std::vector<uint8_t>* q,
                      std::vector<float>* scales) {
  const bool block = kind == MOEKIT_QUANT_FP8_BLOCK;
  const int64_t bn = block ? kFp8Block : n, bk = block ? kFp8Block : k;  // block shape
  const int64_t nb = (n + bn - 1) / bn, kb = (k + bk - 1) / bk;
  q->assign(E * n * k, 0);
  scales->assign(E * nb * kb, 1.0f);
  parallel_for(E * nb * kb, [&](int64_t begin, int64_t end, int) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t e = blk / (nb * kb), r0 = (blk / kb) % nb * bn, c0 = blk % kb * bk;
      const int64_t r1 = std::min(n, r0 + bn), c1 = std::min(k, c0 + bk);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          amax = std::max(amax, fp8_magnitude(load_as_float(from, w.data(), (e * n + r) * k + c)));
      const float s = amax > 0.0f ? fp8_scale_of(amax) : 1.0f;
      (*scales)[blk] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t i = (e * n + r) * k + c;
          (*q)[i] = fp8_quantize(load_as_float(from, w.data(), i), s);
        }
    }
  });
}

}  // namespace

HostLayer quantize_layer(const HostLayer& layer, const moekit_quant_config_t& q) {
  HostLayer out = layer;
  moekit_problem_t& p = out.problem;
  const moekit_dtype_t from = layer.problem.weight_dtype;
  p.quant = q;
  p.weight_dtype = MOEKIT_DTYPE_FP8_E4M3;
  const int64_t H = p.hidden_size, I = p.intermediate_size, E = p.num_local_experts;
  const int64_t n1 = activation_is_gated(p.activation) ? 2 * I : I;
  quantize_weights(layer.w13, from, E, n1, H, q.kind, &out.w13, &out.w13_scale);
  quantize_weights(layer.w2, from, E, H, I, q.kind, &out.w2, &out.w2_scale);
  if (q.static_activation_scale) {
    float amax = 0.0f;
    for (int64_t i = 0; i < p.num_tokens * H; ++i)
      amax = std::max(amax, fp8_magnitude(load_as_float(p.input_dtype, layer.hidden.data(), i)));
    out.a13_scale = {amax > 0.0f ? fp8_scale_of(amax) : 1.0f};
    out.a2_scale = {fp8_scale_of(16.0f)};
  }
  return out;
}

uint64_t weight_bytes(const moekit_problem_t& p) {
  const uint64_t n1 = activation_is_gated(p.activation) ? 2 * p.intermediate_size
                                                         : p.intermediate_size;
  const uint64_t weights = n1 * p.hidden_size + p.hidden_size * p.intermediate_size;
  const uint64_t biases = (p.has_w13_bias ? n1 : 0) + (p.has_w2_bias ? p.hidden_size : 0);
  const uint64_t scales = weight_scale_count(p, n1, p.hidden_size) +
                          weight_scale_count(p, p.hidden_size, p.intermediate_size);
  return p.num_local_experts * (weights * dtype_size(p.weight_dtype) +
                                biases * dtype_size(compute_dtype(p))) + scales * 4;
}

HostLayer make_random_layer(const moekit_problem_t& p, uint64_t seed) {
  if (p.quant.kind != MOEKIT_QUANT_NONE) {
    moekit_problem_t dense = p;
    dense.quant = {MOEKIT_QUANT_NONE, 0};
    dense.weight_dtype = compute_dtype(p);
    return quantize_layer(make_random_layer(dense, seed), p.quant);
  }
  HostLayer l;
  l.problem = p;
  const int64_t T = p.num_tokens, H = p.hidden_size, I = p.intermediate_size;
  const int64_t E = p.num_local_experts, k = p.top_k;
  const int64_t n1 = activation_is_gated(p.activation) ? 2 * I : I;
  const size_t wb = dtype_size(p.weight_dtype);
  l.hidden.resize(T * H * dtype_size(p.input_dtype));
  l.w13.resize(E * n1 * H * wb);
  l.w2.resize(E * H * I * wb);
  fill_random(p.input_dtype, l.hidden.data(), T * H, 1.0f, seed + 1);
  fill_random(p.weight_dtype, l.w13.data(), E * n1 * H, 1.0f / std::sqrt(float(H)), seed + 2);
  fill_random(p.weight_dtype, l.w2.data(), E * H * I, 1.0f / std::sqrt(float(I)), seed + 3);
  if (p.has_w13_bias) {
    l.w13_bias.resize(E * n1 * wb);
    fill_random(p.weight_dtype, l.w13_bias.data(), E * n1, 0.1f, seed + 4);
  }
  if (p.has_w2_bias) {
    l.w2_bias.resize(E * H * wb);
    fill_random(p.weight_dtype, l.w2_bias.data(), E * H, 0.1f, seed + 5);
  }
  moekit_router_problem_t rp = router_problem_of(p);
  if (p.router.kind == MOEKIT_ROUTER_NONE)
    rp.config = {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_DTYPE_FP32, 1, 1, 1, 1.0f};
  l.router_logits.resize(T * p.num_experts * dtype_size(rp.config.logits_dtype));
  fill_random(rp.config.logits_dtype, l.router_logits.data(), T * p.num_experts, 1.0f, seed + 6);
  if (rp.config.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK) {
    l.correction_bias.resize(p.num_experts);
    fill_random(MOEKIT_DTYPE_FP32, l.correction_bias.data(), p.num_experts, 0.05f, seed + 7);
  }
  l.topk_ids.resize(T * k);
  l.topk_weights.resize(T * k);
  route(rp, l.router_logits.data(), l.correction_bias.empty() ? nullptr : l.correction_bias.data(),
        l.topk_ids.data(), l.topk_weights.data());
  if (p.has_expert_map) {
    // Scattered placement: the local experts sit at shuffled global ids in
    // shuffled local order; every other id is another rank's (-1).
    std::vector<int32_t> globals(p.num_experts);
    for (int64_t g = 0; g < p.num_experts; ++g) globals[g] = static_cast<int32_t>(g);
    std::mt19937_64 rng(seed + 8);
    std::shuffle(globals.begin(), globals.end(), rng);
    l.expert_map.assign(p.num_experts, -1);
    for (int64_t e = 0; e < E; ++e) l.expert_map[globals[e]] = static_cast<int32_t>(E - 1 - e);
  }
  return l;
}

}  // namespace moekit::ref
