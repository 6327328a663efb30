// Fused routers: logits [T, E] -> topk_ids, topk_weights in one launch.
//
// One warp per token. The warp turns the token's logits into ranking keys in
// shared memory (rank_key: NaN below every number), then picks the k experts
// by k rounds of a warp argmax (ties to the lower id), removing each winner,
// so the ids are distinct by construction whatever the logits. Each lane keeps
// the best of its own slots; a round is two warp reductions, and only the
// winner's lane rescans. Winners stay
// in shared memory; weights are computed one lane per slot and written
// coalesced; only the slot-order total is a serial sum, as in the reference. Every float step mirrors reference/router.cpp
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

// This lane's best key among indices begin + lane, begin + lane + 32, ... < end
// (lane-strided ownership: in the selection rounds a lane only ever reads and
// writes its own slots), ties to the lower index.
__device__ __forceinline__ Best lane_best(const uint32_t* keys, int begin, int end, int lane) {
  Best b{kKeyRemoved, INT32_MAX};
  for (int i = begin + lane; i < end; i += kWarp)
    if (keys[i] > b.key) b = {keys[i], i};  // strictly greater: the lane's lowest index wins ties
  return b;
}

// The warp's best (largest key, then lowest index) from every lane's best:
// two single-instruction reductions instead of a shuffle tree.
__device__ __forceinline__ Best warp_pick(const Best& mine) {
  const uint32_t top = __reduce_max_sync(0xffffffffu, mine.key);
  const uint32_t index = __reduce_min_sync(
      0xffffffffu, mine.key == top ? static_cast<uint32_t>(mine.index) : 0xffffffffu);
  return {top, static_cast<int32_t>(index)};
}

template <class T>
__global__ void router_kernel(const T* __restrict__ logits,          // [T, E]
                              const float* __restrict__ bias,        // [E] or null
                              int64_t num_tokens, int num_experts, int top_k,
                              moekit_router_config_t c,
                              int32_t* __restrict__ topk_ids,        // [T, k]
                              float* __restrict__ topk_weights) {    // [T, k]
  timeline::Scope timeline_scope(timeline::kRouter);  // MOEKIT_TIMELINE builds only
  extern __shared__ uint32_t smem[];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  const int E = num_experts;
  const bool sigmoid = c.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK;
  const int G = sigmoid ? c.num_groups : 1;
  uint32_t* keys = smem + static_cast<size_t>(warp) * (E + G + 2 * top_k);  // [E]
  uint32_t* group_keys = keys + E;                                           // [G]
  int32_t* win_id = reinterpret_cast<int32_t*>(group_keys + G);              // [k]
  float* win_w = reinterpret_cast<float*>(win_id + top_k);                  // [k]

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

    float sum = 0.0f;  // softmax denominator from the keys (they decode to the logits)
    if (c.kind == MOEKIT_ROUTER_SOFTMAX_TOPK) {
      for (int i = lane; i < E; i += kWarp) sum += exp_det(router_clean(key_value(keys[i])) - m);
#pragma unroll
      for (int off = kWarp / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    }

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
      Best mine = lane_best(group_keys, 0, G, lane);
      for (int r = 0; r < c.topk_groups; ++r) {
        const Best w = warp_pick(mine);
        if (w.index < G && w.index % kWarp == lane) {  // the owner removes it: kept group
          group_keys[w.index] = kKeyRemoved;
          mine = lane_best(group_keys, 0, G, lane);
        }
      }
      __syncwarp();
      for (int i = lane; i < E; i += kWarp)
        if (group_keys[i / gs] != kKeyRemoved) keys[i] = kKeyRemoved;
      __syncwarp();
    }

    Best mine = lane_best(keys, 0, E, lane);
    for (int s = 0; s < top_k; ++s) {
      const Best w = warp_pick(mine);
      // Validation guarantees k live keys; the bound only keeps a bad call from indexing.
      const bool live = w.index < E;
      if (lane == 0) {
        win_id[s] = live ? w.index : 0;
        win_w[s] = __uint_as_float(w.key);  // the winner's key, decoded below
      }
      if (live && w.index % kWarp == lane) {  // only the owner rescans its slots
        keys[w.index] = kKeyRemoved;
        mine = lane_best(keys, 0, E, lane);
      }
    }
    __syncwarp();

    // Unnormalized weights, one lane per slot, in reference/router.cpp's formulas.
    const float top = router_clean(key_value(__float_as_uint(win_w[0])));
    __syncwarp();
    for (int s = lane; s < top_k; s += kWarp) {
      const float v = router_clean(key_value(__float_as_uint(win_w[s])));
      float w;
      if (c.kind == MOEKIT_ROUTER_SOFTMAX_TOPK) w = exp_det(v - m) / sum;
      else if (c.kind == MOEKIT_ROUTER_TOPK_SOFTMAX) w = exp_det(v - top);
      else w = sigmoid_det(router_clean(to_float(x[win_id[s]])));  // the key held s + bias
      win_w[s] = w;
    }
    __syncwarp();
    // The total in slot order, as the reference sums it.
    float total = 0.0f;
    const bool normalize = c.kind == MOEKIT_ROUTER_TOPK_SOFTMAX || c.renormalize;
    if (normalize && lane == 0)
      for (int s = 0; s < top_k; ++s) total += win_w[s];
    total = __shfl_sync(0xffffffffu, total, 0);
    if (sigmoid) total = total + 1e-20f;
    for (int s = lane; s < top_k; s += kWarp) {
      const float w = normalize ? win_w[s] / total : win_w[s];
      topk_ids[t * top_k + s] = win_id[s];
      topk_weights[t * top_k + s] = w * c.routed_scaling_factor;
    }
    __syncwarp();
  }
}

}  // namespace

// One warp's worst case: E keys, G <= E group keys, 2k <= 2E winner slots.
constexpr size_t kMaxWarpSmem = 4 * kRouterMaxExperts * sizeof(uint32_t);
static_assert(kMaxWarpSmem <= 227 * 1024, "a warp's router state must fit one Hopper SM");

cudaError_t launch_router(const void* logits, const float* correction_bias, int64_t num_tokens,
                          int64_t num_experts, int64_t top_k, const moekit_router_config_t& c,
                          int32_t* topk_ids, float* topk_weights, const DeviceInfo& dev,
                          cudaStream_t stream) {
  const int G = c.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK ? c.num_groups : 1;
  const size_t per_warp = (num_experts + G + 2 * top_k) * sizeof(uint32_t);
  int warps = static_cast<int>(kSmemBudget / per_warp);
  warps = warps < 1 ? 1 : (warps > 4 ? 4 : warps);
  const unsigned grid = grid_for((num_tokens + warps - 1) / warps, dev.sm_count, 16);
  const float* bias = c.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK ? correction_bias : nullptr;
  cudaError_t attr = cudaSuccess;
  dispatch_dtype(c.logits_dtype, [&](auto tag) {
    using T = decltype(tag);
    if (per_warp > kSmemBudget)  // only for thousands of experts with large k or groups
      attr = cudaFuncSetAttribute(router_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(per_warp));
    if (attr != cudaSuccess) return;
    router_kernel<T><<<grid, warps * kWarp, warps * per_warp, stream>>>(
        static_cast<const T*>(logits), bias, num_tokens, static_cast<int>(num_experts),
        static_cast<int>(top_k), c, topk_ids, topk_weights);
  });
  return attr != cudaSuccess ? attr : cudaGetLastError();
}

}  // namespace moekit::kernels
