// Row quantization to e4m3 with block scales, shared by the stages that
// produce a GEMM's fp8 input rows (quantize.cu: the gather and the
// activation) and the tiny batch's sort-and-gather launch
// (sort_gather_tiny.cu), so every path writes the same bytes and scales for a
// row. Lanes take 8 columns (one 16-byte load) each; a half-warp covers one
// 128-column scale group.
#pragma once

#include <cstdint>

#include "common/fp8_math.hpp"
#include "kernels/common.cuh"
#include "kernels/quant/fp8_device.cuh"

namespace moekit::kernels::quant {

constexpr int kLaneCols = 8;                          // columns per lane: one 16-byte load
constexpr int kGroupLanes = kFp8Block / kLaneCols;    // 16 lanes per 128-column group

// Row values of GEMM 1's input: the token's hidden row (already the compute
// dtype), or with router weights on the input its product with the pair's
// weight, rounded to the compute dtype as in the unquantized layer.
template <class T, int kStepsInFlight = 4>
struct GatherSource {
  static constexpr int kSteps = kStepsInFlight;  // warp steps whose loads are in flight together
  static constexpr int kHeldSteps = 0;  // per tensor: the second pass loads the values again (cheap)
  const T* hidden;             // [T, H]
  const int32_t* sorted_pairs; // row -> pair
  const float* pair_weights;   // [T*k] or null
  int64_t top_k;
  struct Row {
    const T* src;
    float weight;
  };
  __device__ Row row(int64_t row, int64_t k) const {
    const int32_t pair = __ldg(sorted_pairs + row);
    return {hidden + static_cast<int64_t>(pair / top_k) * k,
            pair_weights != nullptr ? __ldg(pair_weights + pair) : 1.0f};
  }
  __device__ void values(const Row& r, int64_t col, float (&v)[8]) const {
    load8(r.src + col, v);
    if (pair_weights != nullptr)
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] = to_float(from_float<T>(v[i] * r.weight));
  }
};

// Max over the lanes of each half-warp (width 16) or of the whole warp.
template <int kWidth>
__device__ __forceinline__ float lanes_max(float v) {
#pragma unroll
  for (int o = kWidth / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The max of fp8_magnitude over v: fmaxf returns the other operand for a
// NaN, so a NaN counts as 0, and |x| is a free operand modifier (one
// instruction a value).
__device__ __forceinline__ float amax8(const float (&v)[8]) {
  float a = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) a = fmaxf(a, fabsf(v[i]));
  return a;
}

// Block scaling of one row's groups g0, g0 + 1, ... below g_end for
// g0 = g_first, g_first + g_step, ... by one warp: two groups a warp step
// (a half-warp each) and Source::kSteps steps' loads issued before any
// reduction (memory parallelism). Each group's scale is its own amax / 448,
// written to sc[g * rows_e] (the GEMM's column-major layout).
template <class Source>
__device__ __forceinline__ void quantize_groups(const Source& src, const typename Source::Row& in, int64_t k,
                                                uint8_t* dst, float* sc, int64_t rows_e, int64_t g_first,
                                                int64_t g_end, int64_t g_step) {
  constexpr int kSteps = Source::kSteps;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int half = lane / kGroupLanes, sub = lane % kGroupLanes;  // group slot, lane in group
  for (int64_t g0 = g_first; g0 < g_end; g0 += g_step) {
    float v[kSteps][8];
    bool in_row[kSteps];
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const int64_t g = g0 + 2 * j + half, col = g * kFp8Block + sub * kLaneCols;
      in_row[j] = g < g_end && col < k;  // k % 16 == 0: 8 columns all in or all out
#pragma unroll
      for (int i = 0; i < 8; ++i) v[j][i] = 0.0f;
      if (in_row[j]) src.values(in, col, v[j]);
    }
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const int64_t g = g0 + 2 * j + half, col = g * kFp8Block + sub * kLaneCols;
      const float s = fp8_scale_of(lanes_max<kGroupLanes>(amax8(v[j])));
      if (in_row[j]) *reinterpret_cast<uint2*>(dst + col) = quantize8<false>(v[j], s, fp8_inverse(s));
      if (sub == 0 && g < g_end) sc[g * rows_e] = s;
    }
  }
}

}  // namespace moekit::kernels::quant
