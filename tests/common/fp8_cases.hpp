// fp8 layers with the special values of ROBUSTNESS.md (17), shared by the CPU
// and GPU tests: zero, NaN, Inf, huge, denormal and exactly +-448 activations,
// and weight scales from 1e-30 to 1e+30 ("dead" experts at 1e-23 included).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/fp8_math.hpp"
#include "common/test_util.hpp"
#include "reference/dtype.hpp"
#include "reference/random_layer.hpp"

namespace moekit::test {

// fp8 layers, GPU vs CPU: both quantize the same values the same way; they
// differ in the summation inside a 128-deep block (wgmma's fp8 accumulation
// vs fp32 on the host), which moves a GEMM 1 output by one bf16 step now and
// then, and such a value's activation by one e4m3 step (6-12%) when it sits
// near a rounding midpoint (about 1 in 30). Measured on an H200: rows up to
// 0.038. A row is allowed half an e4m3 step on average; a wrong row, scale
// or expert is off by O(1).
constexpr double kFp8RowGpuVsCpu = 0.06;

inline Problem fp8_problem(int64_t T, int64_t E, int64_t k, int64_t H, int64_t I,
                           moekit_quant_t kind, bool static_scale = false) {
  Problem p = small_problem(T, E, k, H, I, MOEKIT_DTYPE_BF16);
  p.quant = {kind, static_scale ? 1 : 0};
  p.weight_dtype = MOEKIT_DTYPE_FP8_E4M3;
  return p;
}

// Token rows with special values (row t of hidden, bf16). Tokens: 0 all
// zero, 1 one NaN, 2 one +Inf, 3 huge (x 1e8), 4 a block of +-448 exactly,
// 5 denormal (1e-39). The other tokens stay random.
enum SpecialToken : int64_t {
  kZeroToken = 0, kNanToken = 1, kInfToken = 2, kHugeToken = 3, kMaxToken = 4, kDenormalToken = 5,
  kSpecialTokens = 6
};

inline void set_special_tokens(ref::HostLayer& l) {
  const Problem& p = l.problem;
  const int64_t H = p.hidden_size;
  auto set = [&](int64_t t, int64_t h, float v) {
    ref::store_from_float(p.input_dtype, l.hidden.data(), t * H + h, v);
  };
  auto get = [&](int64_t t, int64_t h) { return ref::load_as_float(p.input_dtype, l.hidden.data(), t * H + h); };
  for (int64_t h = 0; h < H; ++h) {
    set(kZeroToken, h, 0.0f);
    set(kHugeToken, h, get(kHugeToken, h) * 1e8f);
    set(kDenormalToken, h, (h % 2 ? 1e-39f : -1e-39f) * (1 + h % 3));
  }
  set(kNanToken, H / 3, std::numeric_limits<float>::quiet_NaN());
  set(kInfToken, H / 2, std::numeric_limits<float>::infinity());
  for (int64_t h = 0; h < std::min<int64_t>(H, kFp8Block); ++h) set(kMaxToken, h, h % 2 ? 448.0f : -448.0f);
}

// Weight scales spanning 1e-30 to 1e+30 on the first experts (block or per
// tensor scales alike), the fp8 codes unchanged: expert 0 dead (w13 and w2
// x 1e-23), expert 1 w13 x 1e-10 and w2 x 1e+20 (a normal result from
// extreme scales), expert 2 w13 x 1e-30 and w2 x 1e+30 (the activation
// underflows: zeros), expert 3 w13 x 1e+4 and w2 x 1e-12; expert 4's w13
// codes all zero.
inline void set_extreme_weight_scales(ref::HostLayer& l) {
  const Problem& p = l.problem;
  const int64_t E = p.num_local_experts;
  const int64_t per13 = static_cast<int64_t>(l.w13_scale.size()) / E;
  const int64_t per2 = static_cast<int64_t>(l.w2_scale.size()) / E;
  const float f13[] = {1e-23f, 1e-10f, 1e-30f, 1e4f}, f2[] = {1e-23f, 1e20f, 1e30f, 1e-12f};
  for (int64_t e = 0; e < std::min<int64_t>(E, 4); ++e) {
    for (int64_t i = 0; i < per13; ++i) l.w13_scale[e * per13 + i] *= f13[e];
    for (int64_t i = 0; i < per2; ++i) l.w2_scale[e * per2 + i] *= f2[e];
  }
  if (E > 4) {
    const int64_t per = static_cast<int64_t>(l.w13.size()) / E;
    std::fill(l.w13.begin() + 4 * per, l.w13.begin() + 5 * per, 0);
  }
}

// Routes every token to experts 0..k-1 cyclically shifted, so each special
// expert sees the special tokens.
inline void route_to_first_experts(ref::HostLayer& l) {
  const Problem& p = l.problem;
  for (int64_t t = 0; t < p.num_tokens; ++t)
    for (int64_t s = 0; s < p.top_k; ++s)
      l.topk_ids[t * p.top_k + s] = static_cast<int32_t>((t + s) % std::min<int64_t>(p.num_experts, 6));
}

}  // namespace moekit::test
