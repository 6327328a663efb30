// Scalar activation formulas, shared by the CPU reference and the CUDA kernels
// so that both compute the same function (the tests hold an independent fp64
// version). fp32 in, fp32 out.
#pragma once

#include <cmath>

#include "moekit/moekit.h"

#if defined(__CUDACC__)
#define MOEKIT_HD __host__ __device__ __forceinline__
#else
#define MOEKIT_HD inline
#endif

namespace moekit {

struct ActivationParams {
  moekit_activation_t kind;
  float alpha;  // SwiGLU sigmoid slope
  float beta;   // SwiGLU offset added to up
  float limit;  // SwiGLU clamp; +inf disables it
};

MOEKIT_HD constexpr bool activation_is_gated(moekit_activation_t kind) {
  return kind == MOEKIT_ACT_SWIGLU || kind == MOEKIT_ACT_GEGLU_ERF ||
         kind == MOEKIT_ACT_GEGLU_TANH;
}

// On the device: exp on the special-function unit (__expf, a few ulp more than
// expf) and an approximate reciprocal, a third of the instructions of the
// accurate forms, for the instruction-bound activation stages. Every GPU path
// calls this one function, so the decode/prefill epilogues and the stages
// still agree bitwise; against the host's expf the difference is far below a
// bf16 or fp16 ulp. Limits stay: -inf -> 0, +inf -> 1, NaN -> NaN (1/inf is 0
// and __fdividef returns 0 only where 1 + e^-x > 2^126, i.e. sigmoid < 1e-38).
MOEKIT_HD float sigmoid_f(float x) {
#if defined(__CUDA_ARCH__)
  return __fdividef(1.0f, 1.0f + __expf(-x));
#else
  return 1.0f / (1.0f + expf(-x));
#endif
}

MOEKIT_HD float gelu_erf_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

MOEKIT_HD float gelu_tanh_f(float x) {
  const float kSqrt2OverPi = 0.79788456080286536f;
  return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

// Ungated kinds: the value of one GEMM 1 output column.
MOEKIT_HD float apply_activation(moekit_activation_t kind, float x) {
  switch (kind) {
    case MOEKIT_ACT_SILU: return x * sigmoid_f(x);
    case MOEKIT_ACT_GELU_ERF: return gelu_erf_f(x);
    case MOEKIT_ACT_GELU_TANH: return gelu_tanh_f(x);
    case MOEKIT_ACT_RELU: return x > 0.0f ? x : (x == x ? 0.0f : x);  // NaN stays NaN
    case MOEKIT_ACT_RELU2: { float r = x > 0.0f ? x : (x == x ? 0.0f : x); return r * r; }
    default: return x;  // identity
  }
}

// Gated kinds: the value from one (gate, up) pair.
MOEKIT_HD float apply_gated_activation(const ActivationParams& p, float gate, float up) {
  switch (p.kind) {
    case MOEKIT_ACT_GEGLU_ERF: return gelu_erf_f(gate) * up;
    case MOEKIT_ACT_GEGLU_TANH: return gelu_tanh_f(gate) * up;
    default: {  // SwiGLU with the gpt-oss clamps; fminf/fmaxf would turn NaN into the limit
      float g = gate > p.limit ? p.limit : gate;
      float u = up > p.limit ? p.limit : (up < -p.limit ? -p.limit : up);
      return g * sigmoid_f(p.alpha * g) * (u + p.beta);
    }
  }
}

// Column of GEMM 1's output holding gate j / up j for the given order.
MOEKIT_HD long long gate_column(moekit_gate_up_order_t order, long long j, long long inter) {
  return order == MOEKIT_INTERLEAVED ? 2 * j : (order == MOEKIT_GATE_UP ? j : inter + j);
}
MOEKIT_HD long long up_column(moekit_gate_up_order_t order, long long j, long long inter) {
  return order == MOEKIT_INTERLEAVED ? 2 * j + 1 : (order == MOEKIT_GATE_UP ? inter + j : j);
}

}  // namespace moekit
