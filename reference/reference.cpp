// CPU reference of the MoE layer. Plain loops; the only concession to speed is
// the GEMM's 16 independent partial sums, which vectorize without reordering
// anything between runs (results stay deterministic).
#include "reference/reference.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/fp8_math.hpp"
#include "reference/dtype.hpp"
#include "reference/router.hpp"

namespace moekit::ref {

namespace {

size_t align256(size_t n) { return (n + 255) & ~size_t{255}; }

float dot16(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float s = 0.0f;
  for (int j = 0; j < 16; ++j) s += acc[j];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void sort_pairs(const Routing& r, Ids topk_ids, int32_t* expert_offsets,
                int32_t* sorted_pairs, int32_t* pair_to_row, moekit_diagnostics_t* diagnostics) {
  const int64_t pairs = r.num_tokens * r.top_k;
  // Counting sort: histogram, exclusive scan, stable scatter.
  std::fill(expert_offsets, expert_offsets + r.num_local_experts + 1, 0);
  for (int64_t p = 0; p < pairs; ++p) {
    int64_t e = local_expert(r, topk_ids[p]);
    if (e >= 0) ++expert_offsets[e + 1];
  }
  for (int64_t e = 0; e < r.num_local_experts; ++e) expert_offsets[e + 1] += expert_offsets[e];
  int64_t invalid_row = expert_offsets[r.num_local_experts];
  std::vector<int32_t> cursor(expert_offsets, expert_offsets + r.num_local_experts);
  for (int64_t p = 0; p < pairs; ++p) {
    int64_t e = local_expert(r, topk_ids[p]);
    if (e >= 0) {
      int32_t row = cursor[e]++;
      sorted_pairs[row] = static_cast<int32_t>(p);
      pair_to_row[p] = row;
    } else {
      sorted_pairs[invalid_row++] = static_cast<int32_t>(p);
      pair_to_row[p] = -1;
    }
  }
  if (diagnostics != nullptr) {
    for (int64_t t = 0; t < r.num_tokens; ++t) {
      int64_t invalid = 0, local = 0;
      for (int64_t s = 0; s < r.top_k; ++s) {
        const int64_t id = topk_ids[t * r.top_k + s];
        invalid += (id < 0 || id >= r.num_experts);
        local += local_expert(r, id) >= 0;
      }
      diagnostics->invalid_ids += invalid;
      diagnostics->tokens_without_valid_expert += (invalid == r.top_k);
      diagnostics->tokens_without_local_expert += (local == 0);
    }
  }
}

void permute(const void* hidden, moekit_dtype_t input_dtype, const int32_t* sorted_pairs,
             const float* pair_weights, int64_t n_rows, int64_t top_k, int64_t hidden_size,
             moekit_dtype_t compute, float* rows) {
  parallel_for(n_rows, [&](int64_t begin, int64_t end, int) {
    for (int64_t row = begin; row < end; ++row) {
      const int32_t pair = sorted_pairs[row];
      const int64_t token = pair / top_k;
      for (int64_t h = 0; h < hidden_size; ++h) {
        float x = load_as_float(input_dtype, hidden, token * hidden_size + h);
        if (pair_weights != nullptr) x *= pair_weights[pair];
        rows[row * hidden_size + h] = round_to(compute, x);
      }
    }
  });
}

void grouped_gemm(const float* a, const int32_t* expert_offsets, int64_t num_local_experts,
                  const void* w, const void* bias, moekit_dtype_t weight_dtype, int64_t n,
                  int64_t k, float* scratch, float* c) {
  // One work item = one output column of one expert: its weight row is widened
  // to fp32 once and reused for every row routed to that expert.
  parallel_for(num_local_experts * n, [&](int64_t begin, int64_t end, int thread) {
    float* wrow = scratch + static_cast<int64_t>(thread) * k;
    for (int64_t item = begin; item < end; ++item) {
      int64_t e = item / n, col = item % n;
      int64_t row0 = expert_offsets[e], row1 = expert_offsets[e + 1];
      if (row0 == row1) continue;
      int64_t wbase = (e * n + col) * k;
      for (int64_t i = 0; i < k; ++i) wrow[i] = load_as_float(weight_dtype, w, wbase + i);
      float b = bias ? load_as_float(weight_dtype, bias, e * n + col) : 0.0f;
      for (int64_t row = row0; row < row1; ++row) {
        c[row * n + col] = round_to(weight_dtype, dot16(a + row * k, wrow, k) + b);
      }
    }
  });
}

void quantize_rows(float* rows, int64_t n_rows, int64_t k, const moekit_quant_config_t& q,
                   const float* static_scale, const int32_t* expert_offsets,
                   int64_t num_local_experts, const float* w_scale, float* scales) {
  const int64_t kb = fp8_blocks(k);
  const int64_t group = q.kind == MOEKIT_QUANT_FP8_BLOCK ? kFp8Block : k;  // columns per scale
  parallel_for(n_rows, [&](int64_t begin, int64_t end, int) {
    int64_t e = 0;
    for (int64_t row = begin; row < end; ++row) {
      while (e + 1 < num_local_experts && expert_offsets[e + 1] <= row) ++e;
      float* x = rows + row * k;
      for (int64_t g0 = 0; g0 < k; g0 += group) {
        const int64_t g1 = std::min(k, g0 + group);
        float s;
        if (static_scale != nullptr) {
          s = *static_scale;
        } else {
          float amax = 0.0f;
          for (int64_t i = g0; i < g1; ++i) amax = std::max(amax, fp8_magnitude(x[i]));
          s = fp8_scale_of(amax);
        }
        for (int64_t i = g0; i < g1; ++i) x[i] = e4m3_to_float(fp8_quantize(x[i], s));
        const float stored = q.kind == MOEKIT_QUANT_FP8_TENSOR ? s * w_scale[e] : s;
        for (int64_t b = g0 / kFp8Block; b < fp8_blocks(g1); ++b) scales[row * kb + b] = stored;
      }
    }
  });
}

void grouped_gemm_fp8(const float* a, const float* a_scales, const int32_t* expert_offsets,
                      int64_t num_local_experts, const void* w, const float* w_scale,
                      moekit_quant_t kind, const void* bias, moekit_dtype_t compute, int64_t n,
                      int64_t k, float* scratch, float* c) {
  const int64_t kb = fp8_blocks(k), nb = fp8_blocks(n);
  parallel_for(num_local_experts * n, [&](int64_t begin, int64_t end, int thread) {
    float* wrow = scratch + static_cast<int64_t>(thread) * k;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t e = item / n, col = item % n;
      const int64_t row0 = expert_offsets[e], row1 = expert_offsets[e + 1];
      if (row0 == row1) continue;
      const int64_t wbase = (e * n + col) * k;
      for (int64_t i = 0; i < k; ++i) wrow[i] = load_as_float(MOEKIT_DTYPE_FP8_E4M3, w, wbase + i);
      const float b = bias ? load_as_float(compute, bias, e * n + col) : 0.0f;
      for (int64_t row = row0; row < row1; ++row) {
        float acc = 0.0f;
        for (int64_t blk = 0; blk < kb; ++blk) {
          const int64_t k0 = blk * kFp8Block, len = std::min<int64_t>(kFp8Block, k - k0);
          const float part = dot16(a + row * k + k0, wrow + k0, len);
          const float sw = kind == MOEKIT_QUANT_FP8_BLOCK ? w_scale[(e * nb + col / kFp8Block) * kb + blk]
                                                          : 1.0f;
          acc = std::fma(part, a_scales[row * kb + blk] * sw, acc);
        }
        c[row * n + col] = round_to(compute, acc + b);
      }
    }
  });
}

void activation(const float* gemm1, int64_t n_rows, int64_t inter, const ActivationParams& p,
                moekit_gate_up_order_t order, moekit_dtype_t compute, float* out) {
  const bool gated = activation_is_gated(p.kind);
  const int64_t n1 = gated ? 2 * inter : inter;
  parallel_for(n_rows, [&](int64_t begin, int64_t end, int) {
    for (int64_t row = begin; row < end; ++row) {
      const float* g = gemm1 + row * n1;
      for (int64_t j = 0; j < inter; ++j) {
        float v = gated ? apply_gated_activation(p, g[gate_column(order, j, inter)],
                                                 g[up_column(order, j, inter)])
                        : apply_activation(p.kind, g[j]);
        out[row * inter + j] = round_to(compute, v);
      }
    }
  });
}

void finalize(const float* y, const int32_t* pair_to_row, const float* topk_weights,
              int64_t num_tokens, int64_t top_k, int64_t hidden_size, void* out,
              moekit_dtype_t output_dtype) {
  parallel_for(num_tokens, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t h = 0; h < hidden_size; ++h) {
        float acc = 0.0f;
        for (int64_t s = 0; s < top_k; ++s) {
          int32_t row = pair_to_row[t * top_k + s];
          if (row >= 0)
            acc = std::fma(topk_weights != nullptr ? topk_weights[t * top_k + s] : 1.0f,
                           y[row * hidden_size + h], acc);
        }
        store_from_float(output_dtype, out, t * hidden_size + h, acc);
      }
    }
  });
}

namespace {

struct CpuLayout {
  size_t routed_ids, routed_weights;  // [T*k] each, when the layer routes itself
  size_t offsets, sorted_pairs, pair_to_row, rows, gemm1, act, scratch, scales, total;
};

CpuLayout cpu_layout(const moekit_problem_t& p) {
  const size_t pairs = static_cast<size_t>(p.num_tokens * p.top_k);
  const size_t n1 = activation_is_gated(p.activation) ? 2 * p.intermediate_size
                                                       : p.intermediate_size;
  CpuLayout l{};
  size_t at = 0;
  auto take = [&](size_t bytes) { size_t here = at; at += align256(bytes); return here; };
  const bool routed = p.router.kind != MOEKIT_ROUTER_NONE;
  l.routed_ids = take(routed ? sizeof(int32_t) * pairs : 0);
  l.routed_weights = take(routed ? sizeof(float) * pairs : 0);
  l.offsets = take(sizeof(int32_t) * (p.num_local_experts + 1));
  l.sorted_pairs = take(sizeof(int32_t) * pairs);
  l.pair_to_row = take(sizeof(int32_t) * pairs);
  l.rows = take(sizeof(float) * pairs * p.hidden_size);  // also GEMM 2's output
  l.gemm1 = take(sizeof(float) * pairs * n1);
  l.act = take(sizeof(float) * pairs * p.intermediate_size);
  l.scratch = take(sizeof(float) * cpu_threads() *
                   std::max(p.hidden_size, p.intermediate_size));
  const bool quant = p.quant.kind != MOEKIT_QUANT_NONE;
  l.scales = take(quant ? sizeof(float) * pairs *
                              fp8_blocks(std::max(p.hidden_size, p.intermediate_size)) : 0);
  l.total = at;
  return l;
}

}  // namespace

size_t layer_workspace_bytes(const moekit_problem_t& p) { return cpu_layout(p).total; }

void moe_layer(const moekit_arguments_t& args, void* workspace) {
  const moekit_problem_t& p = args.problem;
  if (p.num_tokens == 0) return;
  const CpuLayout l = cpu_layout(p);
  char* ws = static_cast<char*>(workspace);
  auto* offsets = reinterpret_cast<int32_t*>(ws + l.offsets);          // [E_local + 1]
  auto* sorted_pairs = reinterpret_cast<int32_t*>(ws + l.sorted_pairs);  // [T*k]
  auto* pair_to_row = reinterpret_cast<int32_t*>(ws + l.pair_to_row);    // [T*k]
  auto* rows = reinterpret_cast<float*>(ws + l.rows);                    // [T*k, H]
  auto* gemm1 = reinterpret_cast<float*>(ws + l.gemm1);                  // [T*k, N1]
  auto* act = reinterpret_cast<float*>(ws + l.act);                      // [T*k, I]
  auto* scratch = reinterpret_cast<float*>(ws + l.scratch);              // [threads, max(H, I)]

  Ids topk_ids = ids_of(args);                    // [T, k]
  const float* topk_weights = args.topk_weights;  // [T, k]
  if (p.router.kind != MOEKIT_ROUTER_NONE) {
    auto* ids = reinterpret_cast<int32_t*>(ws + l.routed_ids);
    auto* weights = reinterpret_cast<float*>(ws + l.routed_weights);
    route(router_problem_of(p), args.router_logits, args.router_correction_bias, ids, weights);
    topk_ids = ids;
    topk_weights = weights;
  }
  sort_pairs(routing_of(args), topk_ids, offsets, sorted_pairs, pair_to_row, args.diagnostics);
  const int64_t n_rows = offsets[p.num_local_experts];
  const int64_t n1 = activation_is_gated(p.activation) ? 2 * p.intermediate_size
                                                        : p.intermediate_size;
  const ActivationParams ap{p.activation, p.swiglu_alpha, p.swiglu_beta, p.swiglu_limit};

  const moekit_dtype_t cd = compute_dtype(p);
  const bool quant = p.quant.kind != MOEKIT_QUANT_NONE;
  auto* scales = reinterpret_cast<float*>(ws + l.scales);  // fp8: [T*k, ceil(max(H, I)/128)]
  // One GEMM: the plain one, or the fp8 one after quantizing its input rows.
  auto gemm = [&](float* a, int64_t k, const void* w, const float* w_scale, const float* a_scale,
                  const void* bias, int64_t n, float* c) {
    if (!quant) {
      grouped_gemm(a, offsets, p.num_local_experts, w, bias, cd, n, k, scratch, c);
      return;
    }
    quantize_rows(a, n_rows, k, p.quant, a_scale, offsets, p.num_local_experts, w_scale, scales);
    grouped_gemm_fp8(a, scales, offsets, p.num_local_experts, w, w_scale, p.quant.kind, bias, cd,
                     n, k, scratch, c);
  };

  // Router weights on the input scale the gathered rows and leave finalize unweighted.
  const bool on_input = p.apply_router_weight_on_input != 0;
  permute(args.hidden, p.input_dtype, sorted_pairs, on_input ? topk_weights : nullptr, n_rows,
          p.top_k, p.hidden_size, cd, rows);
  gemm(rows, p.hidden_size, args.w13, args.w13_scale, args.a13_scale, args.w13_bias, n1, gemm1);
  activation(gemm1, n_rows, p.intermediate_size, ap, p.gate_up_order, cd, act);
  float* y = rows;  // the gathered input is dead after GEMM 1
  gemm(act, p.intermediate_size, args.w2, args.w2_scale, args.a2_scale, args.w2_bias,
       p.hidden_size, y);
  finalize(y, pair_to_row, on_input ? nullptr : topk_weights, p.num_tokens, p.top_k, p.hidden_size, args.output,
           p.output_dtype);
}

}  // namespace moekit::ref
