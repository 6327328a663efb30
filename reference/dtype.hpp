// Host conversions between fp32 and the 16-bit storage types, round to nearest
// even, NaN preserved. Plain C++ so the reference needs no CUDA headers.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/fp8_math.hpp"
#include "moekit/moekit.h"

namespace moekit::ref {

inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_fp16(float f) {
  uint32_t u = float_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: Inf
  if (a < 0x38800000u) {  // below 2^-14: subnormal half (or zero)
    // a's value = m * 2^(e-150); half subnormal unit is 2^-24. Shift with RNE.
    if (a < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25 rounds to 0
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;  // e in [102, 112] -> shift 14..24
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u);  // RNE on the 13 dropped bits
  return static_cast<uint16_t>(sign | ((r - 0x38000000u) >> 13));
}

inline float fp16_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return bits_float(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    if (m == 0) return bits_float(sign);
    float v = static_cast<float>(m) * (1.0f / 16777216.0f);  // m * 2^-24, exact
    return sign ? -v : v;
  }
  return bits_float(sign | ((e + 112) << 23) | (m << 13));
}

inline size_t dtype_size(moekit_dtype_t d) {
  return d == MOEKIT_DTYPE_FP32 ? 4 : d == MOEKIT_DTYPE_FP8_E4M3 ? 1 : 2;
}

inline float load_as_float(moekit_dtype_t d, const void* p, int64_t i) {
  switch (d) {
    case MOEKIT_DTYPE_BF16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case MOEKIT_DTYPE_FP16: return fp16_to_float(static_cast<const uint16_t*>(p)[i]);
    case MOEKIT_DTYPE_FP8_E4M3: return e4m3_to_float(static_cast<const uint8_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

inline void store_from_float(moekit_dtype_t d, void* p, int64_t i, float v) {
  switch (d) {
    case MOEKIT_DTYPE_BF16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
    case MOEKIT_DTYPE_FP16: static_cast<uint16_t*>(p)[i] = float_to_fp16(v); break;
    case MOEKIT_DTYPE_FP8_E4M3: static_cast<uint8_t*>(p)[i] = float_to_e4m3(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

// The value v takes once stored in dtype d.
inline float round_to(moekit_dtype_t d, float v) {
  switch (d) {
    case MOEKIT_DTYPE_BF16: return bf16_to_float(float_to_bf16(v));
    case MOEKIT_DTYPE_FP16: return fp16_to_float(float_to_fp16(v));
    case MOEKIT_DTYPE_FP8_E4M3: return e4m3_to_float(float_to_e4m3(v));
    default: return v;
  }
}

// The dtype of the intermediates and biases: the weights' own, or the input's
// when the weights are fp8.
inline moekit_dtype_t compute_dtype(const moekit_problem_t& p) {
  return p.quant.kind != MOEKIT_QUANT_NONE ? p.input_dtype : p.weight_dtype;
}

// Floats in one weight scale tensor: [E, ceil(n/128), ceil(k/128)] for block
// scaling, [E] per tensor, 0 without quantization.
inline int64_t weight_scale_count(const moekit_problem_t& p, int64_t n, int64_t k) {
  switch (p.quant.kind) {
    case MOEKIT_QUANT_FP8_BLOCK: return p.num_local_experts * fp8_blocks(n) * fp8_blocks(k);
    case MOEKIT_QUANT_FP8_TENSOR: return p.num_local_experts;
    default: return 0;
  }
}

}  // namespace moekit::ref
