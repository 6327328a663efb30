// Fused routers: logits [T, E] -> topk_ids, topk_weights in one launch.
//
// One warp per token. The warp turns the token's logits into ranking keys in
// shared memory (rank_key: NaN below every number), then picks the k experts
// by k rounds of a warp argmax (ties to the lower id), removing each winner,
// so the ids are distinct by construction whatever the logits. Lane 0 writes
// ids and weights in slot order. Every float step mirrors reference/router.cpp
// (same exp, same reduction order), so results equal the CPU bit for bit.
#include <cfloat>

#include "common/router_math.hpp"
#include "kernels/common.cuh"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

namespace {

constexpr int kWarp = 32;
constexpr size_t kSmemBudget = 48 * 1024;  // no opt-in needed

struct Best {
  uint32_t key;
  int32_t index;
};

__device__ __forceinline__ bool better(const Best& a, const Best& b) {
  return a.key > b.key || (a.key == b.key && a.index < b.index);
}

// Best key over [begin, end) by this lane's strided scan, then across the warp.
__device__ __forceinline__ Best warp_argmax(const uint32_t* keys, int begin, int end, int lane) {
  Best b{kKeyRemoved, INT32_MAX};
  for (int i = begin + lane; i < end; i += kWarp)
    if (keys[i] > b.key) b = {keys[i], i};  // strictly greater: the lane's lowest index wins ties
#pragma unroll
  for (int off = kWarp / 2; off > 0; off /= 2) {
    Best o{__shfl_xor_sync(0xffffffffu, b.key, off), __shfl_xor_sync(0xffffffffu, b.index, off)};
    if (better(o, b)) b = o;
  }
  return b;
}

__device__ __forceinline__ float key_value(uint32_t key) {
  if (key == 1u) return __uint_as_float(0x7fc00000u);
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

template <class T>
__global__ void router_kernel(const T* __restrict__ logits,          // [T, E]
                              const float* __restrict__ bias,        // [E] or null
                              int64_t num_tokens, int num_experts, int top_k,
                              moekit_router_config_t c,
                              int32_t* __restrict__ topk_ids,        // [T, k]
                              float* __restrict__ topk_weights) {    // [T, k]
  extern __shared__ uint32_t smem[];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  const int E = num_experts;
  const int G = c.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK ? c.num_groups : 1;
  uint32_t* keys = smem + static_cast<size_t>(warp) * (E + G);  // [E]
  uint32_t* group_keys = keys + E;                               // [G]
  const bool sigmoid = c.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK;

  for (int64_t t = static_cast<int64_t>(blockIdx.x) * warps + warp; t < num_tokens;
       t += static_cast<int64_t>(gridDim.x) * warps) {
    const T* x = logits + t * E;
    float m = -FLT_MAX;
    for (int i = lane; i < E; i += kWarp) {
      const float v = to_float(x[i]);
      if (sigmoid) {
        keys[i] = rank_key(sigmoid_det(router_clean(v)) + (bias ? bias[i] : 0.0f));
      } else {
        keys[i] = rank_key(v);
        m = fmaxf(m, router_clean(v));
      }
    }
#pragma unroll
    for (int off = kWarp / 2; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    __syncwarp();

    if (sigmoid && G > 1) {
      const int gs = E / G;
      for (int g = lane; g < G; g += kWarp) {  // one lane scores a group
        int a = -1;
        for (int i = g * gs; i < (g + 1) * gs; ++i)
          if (a < 0 || keys[i] > keys[a]) a = i;
        float score = key_value(keys[a]);
        if (gs > 1) {
          int b = -1;
          for (int i = g * gs; i < (g + 1) * gs; ++i)
            if (i != a && (b < 0 || keys[i] > keys[b])) b = i;
          score = score + key_value(keys[b]);
        }
        group_keys[g] = rank_key(score);
      }
      __syncwarp();
      for (int r = 0; r < c.topk_groups; ++r) {
        const Best w = warp_argmax(group_keys, 0, G, lane);
        __syncwarp();  // every lane's scan is done before the winner is removed
        if (lane == 0 && w.index < G) group_keys[w.index] = kKeyRemoved;  // removed = kept group
        __syncwarp();
      }
      for (int i = lane; i < E; i += kWarp)
        if (group_keys[i / gs] != kKeyRemoved) keys[i] = kKeyRemoved;
      __syncwarp();
    }

    int32_t* ids = topk_ids + t * top_k;
    float* weights = topk_weights + t * top_k;
    for (int s = 0; s < top_k; ++s) {
      const Best w = warp_argmax(keys, 0, E, lane);
      __syncwarp();  // every lane's scan is done before the winner is removed
      // Validation guarantees k live keys; the bound only keeps a bad call from indexing.
      if (lane == 0) {
        ids[s] = w.index < E ? w.index : 0;
        if (w.index < E) keys[w.index] = kKeyRemoved;
      }
      __syncwarp();
    }

    float sum = 0.0f;  // softmax denominator, in the order reference/router.cpp models
    if (c.kind == MOEKIT_ROUTER_SOFTMAX_TOPK) {
      for (int i = lane; i < E; i += kWarp) sum += exp_det(router_clean(to_float(x[i])) - m);
#pragma unroll
      for (int off = kWarp / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    }
    if (lane == 0) {
      float total = 0.0f;
      if (c.kind == MOEKIT_ROUTER_SOFTMAX_TOPK) {
        for (int s = 0; s < top_k; ++s)
          total += weights[s] = exp_det(router_clean(to_float(x[ids[s]])) - m) / sum;
        if (c.renormalize)
          for (int s = 0; s < top_k; ++s) weights[s] = weights[s] / total;
      } else if (c.kind == MOEKIT_ROUTER_TOPK_SOFTMAX) {
        const float top = router_clean(to_float(x[ids[0]]));
        for (int s = 0; s < top_k; ++s)
          total += weights[s] = exp_det(router_clean(to_float(x[ids[s]])) - top);
        for (int s = 0; s < top_k; ++s) weights[s] = weights[s] / total;
      } else {
        for (int s = 0; s < top_k; ++s)
          total += weights[s] = sigmoid_det(router_clean(to_float(x[ids[s]])));
        if (c.renormalize)
          for (int s = 0; s < top_k; ++s) weights[s] = weights[s] / (total + 1e-20f);
      }
      for (int s = 0; s < top_k; ++s) weights[s] = weights[s] * c.routed_scaling_factor;
    }
    __syncwarp();
  }
}

}  // namespace

static_assert(2 * kRouterMaxExperts * sizeof(uint32_t) <= kSmemBudget,
              "one warp's keys and group keys must fit the shared-memory budget");

cudaError_t launch_router(const void* logits, const float* correction_bias, int64_t num_tokens,
                          int64_t num_experts, int64_t top_k, const moekit_router_config_t& c,
                          int32_t* topk_ids, float* topk_weights, const DeviceInfo& dev,
                          cudaStream_t stream) {
  const int G = c.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK ? c.num_groups : 1;
  const size_t per_warp = (num_experts + G) * sizeof(uint32_t);
  int warps = static_cast<int>(kSmemBudget / per_warp);
  warps = warps < 1 ? 1 : (warps > 4 ? 4 : warps);
  const unsigned grid = grid_for((num_tokens + warps - 1) / warps, dev.sm_count, 16);
  const float* bias = c.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK ? correction_bias : nullptr;
  dispatch_dtype(c.logits_dtype, [&](auto tag) {
    using T = decltype(tag);
    router_kernel<T><<<grid, warps * kWarp, warps * per_warp, stream>>>(
        static_cast<const T*>(logits), bias, num_tokens, static_cast<int>(num_experts),
        static_cast<int>(top_k), c, topk_ids, topk_weights);
  });
  return cudaGetLastError();
}

}  // namespace moekit::kernels
