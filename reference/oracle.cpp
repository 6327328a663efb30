#include "reference/oracle.hpp"

#include <algorithm>
#include <cmath>

#include "reference/dtype.hpp"
#include "reference/reference.hpp"

namespace moekit::ref {

namespace {

double act_fp64(const moekit_problem_t& p, double gate, double up) {
  auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  auto gelu_erf = [](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); };
  auto gelu_tanh = [](double x) {
    return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  };
  auto relu = [](double x) { return std::isnan(x) ? x : std::max(x, 0.0); };
  switch (p.activation) {
    case MOEKIT_ACT_SWIGLU: {
      double lim = p.swiglu_limit;
      double g = std::isnan(gate) ? gate : std::min(gate, lim);
      double u = std::isnan(up) ? up : std::clamp(up, -lim, lim);
      return g * sigmoid(p.swiglu_alpha * g) * (u + p.swiglu_beta);
    }
    case MOEKIT_ACT_GEGLU_ERF: return gelu_erf(gate) * up;
    case MOEKIT_ACT_GEGLU_TANH: return gelu_tanh(gate) * up;
    case MOEKIT_ACT_SILU: return gate * sigmoid(gate);
    case MOEKIT_ACT_GELU_ERF: return gelu_erf(gate);
    case MOEKIT_ACT_GELU_TANH: return gelu_tanh(gate);
    case MOEKIT_ACT_RELU: return relu(gate);
    case MOEKIT_ACT_RELU2: return relu(gate) * relu(gate);
    default: return gate;
  }
}

bool gated(moekit_activation_t a) {
  return a == MOEKIT_ACT_SWIGLU || a == MOEKIT_ACT_GEGLU_ERF || a == MOEKIT_ACT_GEGLU_TANH;
}

}  // namespace

void oracle_token(const moekit_arguments_t& a, int64_t t, double* out) {
  const moekit_problem_t& p = a.problem;
  const int64_t H = p.hidden_size, I = p.intermediate_size;
  const int64_t N1 = gated(p.activation) ? 2 * I : I;
  const moekit_dtype_t wd = p.weight_dtype, bd = compute_dtype(p);
  // Weight (e, n, k) of an [E, N, K] matrix, dequantized exactly when fp8.
  auto weight = [&](const void* w, const float* scale, int64_t n_dim, int64_t k_dim, int64_t e,
                    int64_t n, int64_t k) {
    const double v = load_as_float(wd, w, (e * n_dim + n) * k_dim + k);
    switch (p.quant.kind) {
      case MOEKIT_QUANT_FP8_BLOCK:
        return v * scale[(e * fp8_blocks(n_dim) + n / kFp8Block) * fp8_blocks(k_dim) + k / kFp8Block];
      case MOEKIT_QUANT_FP8_TENSOR: return v * scale[e];
      default: return v;
    }
  };
  std::fill(out, out + H, 0.0);
  std::vector<double> x(H), h1(N1), act(I);
  for (int64_t h = 0; h < H; ++h) x[h] = load_as_float(p.input_dtype, a.hidden, t * H + h);
  for (int64_t s = 0; s < p.top_k; ++s) {
    const int64_t e = local_expert(routing_of(a), ids_of(a)[t * p.top_k + s]);
    if (e < 0) continue;
    // Router weight on the input or on the output (moekit.h).
    const double w = a.topk_weights[t * p.top_k + s];
    const double w_in = p.apply_router_weight_on_input ? w : 1.0;
    const double w_out = p.apply_router_weight_on_input ? 1.0 : w;
    for (int64_t n = 0; n < N1; ++n) {
      double acc = a.w13_bias ? load_as_float(bd, a.w13_bias, e * N1 + n) : 0.0;
      for (int64_t h = 0; h < H; ++h) acc += w_in * x[h] * weight(a.w13, a.w13_scale, N1, H, e, n, h);
      h1[n] = acc;
    }
    for (int64_t j = 0; j < I; ++j) {
      double gate, up = 0.0;
      if (!gated(p.activation)) {
        gate = h1[j];
      } else if (p.gate_up_order == MOEKIT_INTERLEAVED) {
        gate = h1[2 * j]; up = h1[2 * j + 1];
      } else if (p.gate_up_order == MOEKIT_GATE_UP) {
        gate = h1[j]; up = h1[I + j];
      } else {
        up = h1[j]; gate = h1[I + j];
      }
      act[j] = act_fp64(p, gate, up);
    }
    for (int64_t h = 0; h < H; ++h) {
      double acc = a.w2_bias ? load_as_float(bd, a.w2_bias, e * H + h) : 0.0;
      for (int64_t j = 0; j < I; ++j) acc += act[j] * weight(a.w2, a.w2_scale, H, I, e, h, j);
      out[h] += w_out * acc;
    }
  }
}

OracleCheck check_against_oracle(const moekit_arguments_t& a, const void* got,
                                 const std::vector<int64_t>& tokens) {
  const int64_t H = a.problem.hidden_size;
  OracleCheck c{0.0, 0.0, -1, 0};
  double err2 = 0.0, ref2 = 0.0;
  std::vector<double> ref(H);
  int64_t flat = 0;
  for (int64_t t : tokens) {
    oracle_token(a, t, ref.data());
    for (int64_t h = 0; h < H; ++h, ++flat) {
      const double g = load_as_float(a.problem.output_dtype, got, t * H + h);
      const bool rf = std::isfinite(ref[h]), gf = std::isfinite(g);
      if (rf != gf) {
        ++c.nonfinite_mismatch;
        if (c.first_bad < 0) c.first_bad = flat;
        continue;
      }
      if (!rf) continue;  // both non-finite: the contract lets NaN/Inf stay in its row
      const double d = g - ref[h];
      err2 += d * d;
      ref2 += ref[h] * ref[h];
      c.max_abs_error = std::max(c.max_abs_error, std::fabs(d));
    }
  }
  c.rel_frobenius = ref2 > 0.0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  return c;
}

double oracle_tolerance(moekit_dtype_t weight_dtype, moekit_dtype_t input_dtype,
                        moekit_dtype_t output_dtype) {
  // fp8: the oracle uses the dequantized weights and unquantized activations,
  // so the bound covers e4m3 activations (3 mantissa bits: up to 6% per value,
  // about 0.03-0.045 relative Frobenius on random data, PEERS.md). A wrong
  // scale, block or expert is off by O(1).
  if (weight_dtype == MOEKIT_DTYPE_FP8_E4M3) return 0.08;
  // Each rounding to a 16-bit type adds ~2^-9 (bf16) or ~2^-12 (fp16) relative
  // noise; four roundings plus the output land near 0.004 for bf16 (PEERS.md).
  // The bound is 4x that, and still far below a wrong row or map (~1).
  auto eps = [](moekit_dtype_t d) {
    return d == MOEKIT_DTYPE_BF16 ? 4e-3 : d == MOEKIT_DTYPE_FP16 ? 5e-4 : 1e-5;
  };
  return 4.0 * std::max({eps(weight_dtype), eps(input_dtype), eps(output_dtype)});
}

}  // namespace moekit::ref
