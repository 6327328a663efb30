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

// Softmax over logits [T, E] (fp32), top-k (ties to the lower id, NaN lowest),
// weights optionally renormalized to sum 1 over the k.
void route_softmax_topk(const float* logits, int64_t num_tokens, int64_t num_experts,
                        int64_t top_k, bool renormalize, int32_t* topk_ids, float* topk_weights);

struct HostLayer {
  moekit_problem_t problem;
  std::vector<uint8_t> hidden, w13, w13_bias, w2, w2_bias;  // raw dtype bytes
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_weights;

  // Arguments over these buffers, writing to `output`.
  moekit_arguments_t arguments(void* output) const;
};

// Allocates and fills every tensor of problem p (host memory), routing with a
// softmax top-k router over random logits.
HostLayer make_random_layer(const moekit_problem_t& p, uint64_t seed);

// Bytes of the weights (and biases) of p: what must fit in memory.
uint64_t weight_bytes(const moekit_problem_t& p);

}  // namespace moekit::ref
