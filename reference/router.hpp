// CPU reference of the routers (see moekit_router_kind_t for the math). The
// softmax denominator is summed in the CUDA kernel's order (32 strided lane
// sums, then a butterfly), so ids and weights are bitwise identical between
// the backends.
#pragma once

#include <cstdint>

#include "moekit/moekit.h"

namespace moekit::ref {

// The router stage of a layer problem.
inline moekit_router_problem_t router_problem_of(const moekit_problem_t& p) {
  moekit_router_problem_t r{};
  r.num_tokens = p.num_tokens;
  r.num_experts = p.num_experts;
  r.top_k = p.top_k;
  r.config = p.router;
  r.device = p.device;
  return r;
}

// logits [T, E] (config.logits_dtype); correction_bias [E] or null;
// topk_ids, topk_weights [T, k].
void route(const moekit_router_problem_t& p, const void* logits, const float* correction_bias,
           int32_t* topk_ids, float* topk_weights);

}  // namespace moekit::ref
