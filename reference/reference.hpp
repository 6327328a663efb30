// The CPU reference of every stage of the MoE layer, and the layer composed
// from them. It is also the CPU backend behind moekit_run(device = CPU), so it
// works on caller-owned buffers and allocates nothing.
//
// Rows are (token, slot) pairs: pair p = t * k + s. The sort orders the valid
// local pairs by local expert and, within an expert, by p; invalid or remote
// pairs follow in p order. GPU kernels must produce exactly these integers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/activation_math.hpp"
#include "moekit/moekit.h"

namespace moekit::ref {

struct Routing {
  int64_t num_tokens;
  int64_t top_k;
  int64_t num_experts;        // E_total
  int64_t num_local_experts;  // E_local
  int64_t ep_rank;
  const int32_t* expert_map = nullptr;  // [E_total] global -> local, or null (ranges)
};

// The layer's ids: int32 (topk_ids) or int64 (topk_ids64), read as int64.
struct Ids {
  const int32_t* i32 = nullptr;
  const int64_t* i64 = nullptr;
  Ids(const int32_t* p) : i32(p) {}  // NOLINT: int32 ids convert implicitly
  Ids(const int32_t* p32, const int64_t* p64) : i32(p32), i64(p64) {}
  int64_t operator[](int64_t i) const { return i64 != nullptr ? i64[i] : i32[i]; }
};

inline Ids ids_of(const moekit_arguments_t& a) { return {a.topk_ids, a.topk_ids64}; }

// Local expert of a global id, or -1 if the id is out of range or remote
// (moekit.h: the expert map's entry when there is a map, else the rank's range).
inline int64_t local_expert(const Routing& r, int64_t id) {
  if (id < 0 || id >= r.num_experts) return -1;
  const int64_t e = r.expert_map != nullptr ? static_cast<int64_t>(r.expert_map[id])
                                            : id - r.ep_rank * r.num_local_experts;
  return (e >= 0 && e < r.num_local_experts) ? e : -1;
}

inline Routing routing_of(const moekit_arguments_t& a) {
  const moekit_problem_t& p = a.problem;
  return {p.num_tokens, p.top_k, p.num_experts, p.num_local_experts, p.ep_rank,
          p.has_expert_map ? a.expert_map : nullptr};
}

// Stage 2. expert_offsets [E_local + 1]: rows of expert e are
// [offsets[e], offsets[e+1]); offsets[E_local] = number of valid rows.
// sorted_pairs [T*k]: row -> pair. pair_to_row [T*k]: pair -> row, -1 if invalid.
void sort_pairs(const Routing& r, Ids topk_ids, int32_t* expert_offsets,
                int32_t* sorted_pairs, int32_t* pair_to_row, moekit_diagnostics_t* diagnostics);

// Stage 3. rows [n_rows, H] = hidden[sorted_pairs[row] / k], times
// pair_weights[pair] when given (apply_router_weight_on_input), rounded to `compute`.
void permute(const void* hidden, moekit_dtype_t input_dtype, const int32_t* sorted_pairs,
             const float* pair_weights, int64_t n_rows, int64_t top_k, int64_t hidden_size,
             moekit_dtype_t compute, float* rows);

// Stages 4 and 6. c [rows, N] = a [rows, K] x w[e]^T (w [E_local, N, K]) + bias[e]
// for the rows of each expert, fp32 accumulation, rounded to weight_dtype.
// scratch: [cpu_threads(), K] floats.
void grouped_gemm(const float* a, const int32_t* expert_offsets, int64_t num_local_experts,
                  const void* w, const void* bias, moekit_dtype_t weight_dtype, int64_t n,
                  int64_t k, float* scratch, float* c);

// fp8 (moekit_quant_t): quantizes rows [n_rows, K] in place to e4m3 values
// (kept as floats) and writes their scales [n_rows, ceil(K/128)]: one per 128
// columns (FP8_BLOCK), or the row's (dynamic FP8_TENSOR) or the static scale
// in every block. Tensor scaling folds w_scale[e] of the row's expert into the
// scales, as the GPU does (static_scale: the static scale or NULL).
void quantize_rows(float* rows, int64_t n_rows, int64_t k, const moekit_quant_config_t& q,
                   const float* static_scale, const int32_t* expert_offsets,
                   int64_t num_local_experts, const float* w_scale, float* scales);

// fp8 stages 4 and 6: c = dequantized a x w[e]^T + bias[e], per moekit.h's
// block arithmetic; w is e4m3 [E_local, N, K], block w_scale [E_local,
// ceil(N/128), ceil(K/128)] (FP8_BLOCK; FP8_TENSOR's scale is already folded
// into a_scales). bias and c in `compute`. scratch: [cpu_threads(), K] floats.
void grouped_gemm_fp8(const float* a, const float* a_scales, const int32_t* expert_offsets,
                      int64_t num_local_experts, const void* w, const float* w_scale,
                      moekit_quant_t kind, const void* bias, moekit_dtype_t compute, int64_t n,
                      int64_t k, float* scratch, float* c);

// Stage 5. out [rows, I] from gemm1 [rows, N1], rounded to `compute`.
void activation(const float* gemm1, int64_t n_rows, int64_t inter, const ActivationParams& p,
                moekit_gate_up_order_t order, moekit_dtype_t compute, float* out);

// Stage 7. out [T, H] = sum over valid slots in slot order of w * y[row], fp32
// (w = 1 when topk_weights is null: weights applied on the input).
void finalize(const float* y, const int32_t* pair_to_row, const float* topk_weights,
              int64_t num_tokens, int64_t top_k, int64_t hidden_size, void* out,
              moekit_dtype_t output_dtype);

// Workspace of the composed layer (host memory), 256-byte aligned pieces.
size_t layer_workspace_bytes(const moekit_problem_t& p);

// The whole layer. Arguments are assumed valid (the API validates them).
void moe_layer(const moekit_arguments_t& args, void* workspace);

}  // namespace moekit::ref

#include "reference/parallel.hpp"
