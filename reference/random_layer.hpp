// Random MoE layers on the host, for the CLI and the tests: weights scaled by
// 1/sqrt(fan-in), N(0,1)-like inputs, and a softmax top-k router. Deterministic
// in the seed, whatever the thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "moekit/moekit.h"

namespace moekit::ref {

// n values of dtype d, uniform with mean 0 and standard deviation `stddev`.
void fill_random(moekit_dtype_t d, void* dst, int64_t n, float stddev, uint64_t seed);

struct HostLayer {
  moekit_problem_t problem;
  std::vector<uint8_t> hidden, w13, w13_bias, w2, w2_bias;  // raw dtype bytes
  std::vector<uint8_t> router_logits;                       // [T, E_total] logits dtype
  std::vector<float> correction_bias;                       // [E_total], grouped router
  std::vector<int32_t> topk_ids;    // [T, k]: the router's output on router_logits
  std::vector<float> topk_weights;  // [T, k]
  // fp8 weights (problem.quant.kind != NONE): scales as moekit.h lays them out.
  std::vector<float> w13_scale, w2_scale, a13_scale, a2_scale;
  // [E_total] global -> local expert when problem.has_expert_map (a shuffled
  // placement of the E_local experts, -1 elsewhere).
  std::vector<int32_t> expert_map;

  // Arguments over these buffers, writing to `output`: routed from the logits
  // when problem.router.kind != NONE, else from topk_ids / topk_weights.
  moekit_arguments_t arguments(void* output) const;
  // The same layer fed topk_ids / topk_weights directly (router.kind = NONE).
  moekit_arguments_t unrouted_arguments(void* output) const;
};

// Allocates and fills every tensor of problem p (host memory). Router logits
// are random; ids and weights come from problem.router (softmax top-k,
// renormalized, when the layer has no router of its own). With fp8 weights:
// quantize_layer of the same layer in the compute dtype.
HostLayer make_random_layer(const moekit_problem_t& p, uint64_t seed);

// The same layer with its weights quantized to fp8 e4m3 by q (the problem's
// quant and weight dtype change; inputs, routing and biases are shared):
// block scales = amax / 448 of each 128x128 block (FP8_BLOCK) or of each
// expert's matrix (FP8_TENSOR), 1 for an all-zero block. Static activation
// scales, when asked for, are max |hidden| / 448 for GEMM 1 and 16 / 448 for
// GEMM 2 (SwiGLU outputs of random layers stay well below 16).
HostLayer quantize_layer(const HostLayer& layer, const moekit_quant_config_t& q);

// Bytes of the weights, biases and weight scales of p: what must fit in memory.
uint64_t weight_bytes(const moekit_problem_t& p);

}  // namespace moekit::ref
