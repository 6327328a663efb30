// fp8 e4m3 (the "fn" variant: no Inf, NaN = 0x7f / 0xff, max 448) and the
// activation quantization of moekit.h, shared by the CPU reference and the
// CUDA kernels so that both produce the same bytes. Plain integer and IEEE
// float operations only (no conversion intrinsics, no flush to zero).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MOEKIT_FP8_HD __host__ __device__ __forceinline__
#else
#define MOEKIT_FP8_HD inline
#endif

namespace moekit {

constexpr float kFp8Max = 448.0f;  // largest finite e4m3
constexpr int kFp8Block = 128;     // quantization block along K (and N for weights)

MOEKIT_FP8_HD uint32_t fp8_float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
MOEKIT_FP8_HD float fp8_bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, saturate to +-448 (Inf too); NaN -> 0x7f with its sign.
MOEKIT_FP8_HD uint8_t float_to_e4m3(float f) {
  const uint32_t u = fp8_float_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7fu);
  const float af = fp8_bits_float(a);
  if (af >= kFp8Max) return static_cast<uint8_t>(sign | 0x7eu);
  if (af < 0.015625f) {  // below 2^-6: subnormal steps of 2^-9 (8 rounds up to 2^-6, code 8)
    const float q = af * 512.0f;                       // exact: a power-of-two scale
    const float r = (q + 8388608.0f) - 8388608.0f;     // round half to even, 0 <= q < 8
    return static_cast<uint8_t>(sign | static_cast<uint32_t>(r));
  }
  const uint32_t r = a + 0x7ffffu + ((a >> 20) & 1u);  // round the 20 dropped bits to even
  uint32_t code = (((r >> 23) - 120u) << 3) | ((r >> 20) & 7u);  // exponent bias 127 -> 7
  if (code > 0x7eu) code = 0x7eu;
  return static_cast<uint8_t>(sign | code);
}

MOEKIT_FP8_HD float e4m3_to_float(uint8_t c) {
  const uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24;
  const uint32_t e = (c >> 3) & 15u, m = c & 7u;
  if (e == 15u && m == 7u) return fp8_bits_float(sign | 0x7fc00000u);
  if (e == 0u) {
    const float v = static_cast<float>(m) * 0.001953125f;  // m * 2^-9, exact
    return sign ? -v : v;
  }
  return fp8_bits_float(sign | ((e + 120u) << 23) | (m << 20));
}

// The scale of a group whose largest magnitude (NaN ignored) is amax.
MOEKIT_FP8_HD float fp8_scale_of(float amax) { return amax / kFp8Max; }

// x / s before e4m3 rounding, as x * inv with inv = 1 / s (one multiply per
// value, as vLLM's quantization kernels do) while 1 / s is finite, else x / s
// (a group with amax below about 1e-36). s = 0 (an all-zero group) gives
// x * 0: exact zeros, and a NaN stays NaN.
MOEKIT_FP8_HD float fp8_inverse(float s) { return 1.0f / s; }
MOEKIT_FP8_HD float fp8_scaled(float x, float s, float inv) {
  if (s == 0.0f) return x * 0.0f;
  return inv <= 3.40282347e38f ? x * inv : x / s;
}

MOEKIT_FP8_HD bool fp8_is_inf(float x) {
  return (fp8_float_bits(x) & 0x7fffffffu) == 0x7f800000u;
}

// x quantized with scale s. A NaN or Inf input becomes NaN (e4m3 has no Inf),
// so it stays in its row even with a static scale; a finite x beyond 448 * s
// saturates to +-448.
MOEKIT_FP8_HD uint8_t fp8_quantize(float x, float s) {
  if (fp8_is_inf(x)) return static_cast<uint8_t>(((fp8_float_bits(x) >> 24) & 0x80u) | 0x7fu);
  return float_to_e4m3(fp8_scaled(x, s, fp8_inverse(s)));
}

// Magnitude for amax: NaN counts as 0 so that one NaN does not poison the
// scale of its group's other values (the NaN itself still quantizes to NaN).
MOEKIT_FP8_HD float fp8_magnitude(float x) {
  const float a = x < 0.0f ? -x : x;
  return a == a ? a : 0.0f;
}

MOEKIT_FP8_HD int64_t fp8_blocks(int64_t n) { return (n + kFp8Block - 1) / kFp8Block; }

}  // namespace moekit
