// Scalar pieces of the routers, shared by the CPU reference and the CUDA
// kernels and built so both give bitwise-identical results: every multiply-add
// is an explicit fmaf (nvcc would otherwise contract a*b+c and the host would
// not), and exp is a fixed polynomial rather than the platform's expf. The
// expert ids therefore match exactly between CPU and GPU, also for the
// sigmoid router whose ranking key is sigmoid(x) + bias.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/activation_math.hpp"  // MOEKIT_HD

namespace moekit {

// Largest E a router takes: the CUDA kernel keeps a token's keys in shared memory.
constexpr int64_t kRouterMaxExperts = 6144;

MOEKIT_HD uint32_t float_as_u32(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; std::memcpy(&u, &f, 4); return u;
#endif
}
MOEKIT_HD float u32_as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; std::memcpy(&f, &u, 4); return f;
#endif
}

// A logit made safe for arithmetic: NaN -> -FLT_MAX (it never wins), +-Inf ->
// +-FLT_MAX (so max - max is 0, not NaN, and +Inf entries share the mass).
MOEKIT_HD float router_clean(float x) {
  const float kMax = 3.402823466e38f;
  return x != x ? -kMax : (x > kMax ? kMax : (x < -kMax ? -kMax : x));
}

// e^x, |error| < 2 ulp on the range that matters, identical on host and device.
MOEKIT_HD float exp_det(float x) {
  if (x != x) return x;
  if (x < -103.9720840454f) return 0.0f;
  if (x > 88.72283935546875f) return u32_as_float(0x7f800000u);
  const float n = rintf(x * 1.44269504088896341f);      // round(x / ln2)
  float r = fmaf(-n, 0.693145751953125f, x);              // ln2 split in two parts
  r = fmaf(-n, 1.428606765330187045e-06f, r);
  // e^r on |r| <= ln2/2: Taylor to degree 7 (error ~ 2e-9 relative).
  float p = 1.0f / 5040.0f;
  p = fmaf(p, r, 1.0f / 720.0f);
  p = fmaf(p, r, 1.0f / 120.0f);
  p = fmaf(p, r, 1.0f / 24.0f);
  p = fmaf(p, r, 1.0f / 6.0f);
  p = fmaf(p, r, 0.5f);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  // Scale by 2^n in two exact steps so subnormal results stay right.
  const int ni = static_cast<int>(n);
  const int a = ni / 2, b = ni - a;
  return p * u32_as_float(static_cast<uint32_t>(a + 127) << 23) *
         u32_as_float(static_cast<uint32_t>(b + 127) << 23);
}

MOEKIT_HD float sigmoid_det(float x) { return 1.0f / (1.0f + exp_det(-x)); }

// Total order of floats as unsigned keys, larger = better: removed (0) < NaN (1)
// < -Inf < ... < +Inf. Ties between equal keys go to the lower expert id.
constexpr uint32_t kKeyRemoved = 0;
MOEKIT_HD uint32_t rank_key(float x) {
  if (x != x) return 1u;
  const uint32_t u = float_as_u32(x == 0.0f ? 0.0f : x);  // -0 ties with +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // -Inf -> 0x007fffff > 1
}

// Inverse of rank_key (NaN keys decode to a quiet NaN, -0 to +0).
MOEKIT_HD float key_value(uint32_t key) {
  if (key == 1u) return u32_as_float(0x7fc00000u);
  return u32_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

}  // namespace moekit
