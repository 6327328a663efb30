// Device-side e4m3 encoding: the hardware conversion (cvt.rn.satfinite.e4m3x2:
// round to nearest even, saturate to +-448, NaN stays NaN), which gives the
// same bytes as float_to_e4m3 of common/fp8_math.hpp (a GPU test sweeps both),
// plus the Inf-to-NaN rule of fp8_quantize, at about one instruction a value.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

#include "common/fp8_math.hpp"

namespace moekit::kernels {

// Two values already divided by their scale -> two e4m3 bytes (a in the low byte).
__device__ __forceinline__ uint32_t e4m3x2(float a, float b) {
  return static_cast<uint32_t>(__nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3));
}

// fp8_quantize of 8 values sharing scale s (inv = 1 / s), packed in 8 bytes.
// The scale's cases (zero, 1 / s finite or not) are decided once for the 8
// values, so the common case is one multiply a value. kInfCheck: apply the
// Inf-to-NaN rule to each value; a scale computed from the values' own amax
// needs no check (an Inf makes amax and s Inf and inv 0, and Inf * 0 is
// already NaN), a given (static) scale does.
template <bool kInfCheck = true>
__device__ __forceinline__ uint2 quantize8(const float (&v)[8], float s, float inv) {
  float y[8];
  if (s != 0.0f && inv <= 3.40282347e38f) {
#pragma unroll
    for (int i = 0; i < 8; ++i) y[i] = v[i] * inv;
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) y[i] = fp8_scaled(v[i], s, inv);
  }
  if constexpr (kInfCheck) {
#pragma unroll
    for (int i = 0; i < 8; ++i)
      if (fp8_is_inf(v[i])) y[i] = __int_as_float(0x7fc00000);  // Inf input: NaN, not 448
  }
  return make_uint2(e4m3x2(y[0], y[1]) | (e4m3x2(y[2], y[3]) << 16),
                    e4m3x2(y[4], y[5]) | (e4m3x2(y[6], y[7]) << 16));
}

}  // namespace moekit::kernels
