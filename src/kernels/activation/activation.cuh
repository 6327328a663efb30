// Eight activation outputs of one GEMM 1 row, with 16-byte loads for every
// gate/up order; shared by the activation stage and the fp8 activation-quantize
// stage so both compute the same values. Formulas: common/activation_math.hpp.
#pragma once

#include "common/activation_math.hpp"
#include "kernels/common.cuh"

namespace moekit::kernels {

// r[q] = activation of output column j0 + q, from g = one row of GEMM 1's [rows, N1].
template <class T>
__device__ __forceinline__ void activation8(const T* g, int64_t j0, int64_t inter,
                                            const ActivationParams& p,
                                            moekit_gate_up_order_t order, float (&r)[8]) {
  if (!activation_is_gated(p.kind)) {
    load8(g + j0, r);
#pragma unroll
    for (int q = 0; q < 8; ++q) r[q] = apply_activation(p.kind, r[q]);
    return;
  }
  float gate[8], up[8];
  if (order == MOEKIT_INTERLEAVED) {  // 16 consecutive values hold 8 (gate, up) pairs
    float lo[8], hi[8];
    load8(g + 2 * j0, lo);
    load8(g + 2 * j0 + 8, hi);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      gate[q] = lo[2 * q]; up[q] = lo[2 * q + 1];
      gate[q + 4] = hi[2 * q]; up[q + 4] = hi[2 * q + 1];
    }
  } else {
    load8(g + gate_column(order, j0, inter), gate);
    load8(g + up_column(order, j0, inter), up);
  }
#pragma unroll
  for (int q = 0; q < 8; ++q) r[q] = apply_gated_activation(p, gate[q], up[q]);
}

}  // namespace moekit::kernels
