// Host launchers of every CUDA stage. Each returns the cudaError_t of its
// launches (CUB style); the backend turns errors into Status messages.
//
// Row conventions (identical to reference/reference.hpp): pair p = t * k + s;
// rows [offsets[e], offsets[e+1]) belong to local expert e, in pair order;
// offsets[E_local] = valid rows; rows past it are invalid pairs.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/activation_math.hpp"
#include "moekit/moekit.h"

namespace moekit::kernels {

struct DeviceInfo {
  int device;
  int sm_count;
};

// ---- sort ------------------------------------------------------------------
struct SortBuffers {
  uint32_t* keys[2];        // [T*k] each: local expert, E_local for invalid
  int32_t* pairs[2];        // [T*k] each: pair index; sorted result in one of them
  void* temp;               // scratch of the sort path (sort_temp_bytes)
  size_t temp_bytes;
  int32_t* expert_offsets;  // [E_local + 1]
  int32_t* pair_to_row;     // [T*k]: row of pair p, -1 if invalid
};

// Where the global experts live: [first, first + num_local), or the expert
// map's entry for each global id (anything outside [0, num_local): remote).
// sort_keys.cuh turns an id into its local expert with it.
struct Placement {
  int64_t num_experts, first, num_local;
  const int32_t* map;  // [num_experts] or null
};

// Bits that hold keys in [0, E_local] (E_local is the invalid sentinel).
int sort_key_bits(int64_t num_local_experts);
// Scratch (SortBuffers::temp) for any path that can take this many pairs.
cudaError_t sort_temp_bytes(int64_t pairs, int64_t num_local_experts, size_t* bytes);

// Batches of at most this many (token, slot) pairs are ranked by one warp
// (sort_keys.cuh): the sort's one-block path and launch_sort_gather_tiny.
constexpr int64_t kWarpRankPairs = 32;

// The sort's implementations (sort.cu says how each works). All give the same
// answer; kAuto picks by size: one block up to 32 pairs, counting up to 65536
// pairs with E_local < 1024 (one launch up to 1024 pairs, two above), else
// one-block radix up to 4096 pairs and device radix above. Forcing one is for
// tests and benchmarks (radix only above 4096 pairs); launch_sort returns
// cudaErrorNotSupported where it does not fit.
enum class SortPath { kAuto, kOneBlock, kCounting, kRadix };
bool sort_path_fits(SortPath path, int64_t pairs, int64_t num_local_experts);

// Local experts: [ep_rank * E_local, +E_local) of the global ids, or
// expert_map[id] where given (moekit.h). On success *sorted_pairs points at
// whichever of pairs[0/1] holds the row->pair map.
// Ids are int32 (topk_ids) or int64 (topk_ids64, when not null).
cudaError_t launch_sort(const int32_t* topk_ids, const int64_t* topk_ids64, int64_t num_tokens, int64_t top_k,
                        int64_t num_experts, int64_t num_local_experts, int64_t ep_rank,
                        const int32_t* expert_map, const SortBuffers& b,
                        moekit_diagnostics_t* diagnostics, const int32_t** sorted_pairs,
                        const DeviceInfo& dev, cudaStream_t stream, SortPath path = SortPath::kAuto);

// The sort and the gather (launch_permute's work, maps written) of a batch
// of at most 32 pairs in one launch, launched the ordinary way so the next
// kernel may start at once: a decode GEMM 1 after it must take the offsets
// from DecodeRouting (grouped_gemm_sm90.hpp), not from expert_offsets before
// its PDL wait. compute_dtype bf16 or fp16; cudaErrorNotSupported otherwise
// or above 32 pairs. With quant (fp8 block scaling only; input_dtype must be
// the compute dtype), the rows are quantized as launch_permute_quant does
// (rows unused; quant->expert_offsets is not read: the offsets come from the
// ranking). Per-tensor scaling measured no faster this way (bench/RESULTS.md).
struct QuantRows;
cudaError_t launch_sort_gather_tiny(const int32_t* topk_ids, const int64_t* topk_ids64, int64_t num_tokens,
                                    int64_t top_k, int64_t num_experts, int64_t num_local_experts,
                                    int64_t ep_rank, const int32_t* expert_map, const SortBuffers& b,
                                    moekit_diagnostics_t* diagnostics, const int32_t** sorted_pairs,
                                    const void* hidden, moekit_dtype_t input_dtype, const float* pair_weights,
                                    int64_t hidden_size, void* rows, moekit_dtype_t compute_dtype,
                                    const QuantRows* quant, cudaStream_t stream);

// ---- permute ---------------------------------------------------------------
// rows [T*k, H] compute dtype <- hidden [T, H] input dtype, for rows < offsets[E_local].
// pair_weights [T*k] or null: each row is scaled by its pair's weight (fp32
// product, then rounded: apply_router_weight_on_input). maps_written: every
// one of the max_rows entries of sorted_pairs is written (the layer's sort
// writes all T*k, invalid pairs last), so a block may read its first entry
// beside the row count, one round trip fewer at decode; pass false for maps
// written only up to the row count.
cudaError_t launch_permute(const void* hidden, moekit_dtype_t input_dtype,
                           const int32_t* sorted_pairs, const float* pair_weights,
                           const int32_t* valid_rows,
                           int64_t max_rows, int64_t top_k, int64_t hidden_size,
                           void* rows, moekit_dtype_t compute_dtype, const DeviceInfo& dev,
                           cudaStream_t stream, bool maps_written = false);

// ---- fp8 quantization (quant/quantize.cu) ------------------------------------
// Where a quantizing stage writes: e4m3 rows [rows, K] and their scales, for
// every valid row (rows < expert_offsets[E]). Scales: per expert e, a
// column-major [ceil(K/128), rows_e] block at scales + offsets[e] * ceil(K/128);
// with FP8_TENSOR every block of a row holds its scale times w_scale[e].
struct QuantRows {
  const int32_t* expert_offsets;  // [E + 1]; null: one group of all max_rows rows (num_experts 1,
                                  // FP8_BLOCK only)
  int num_experts;
  moekit_quant_t kind;
  const float* static_scale;      // FP8_TENSOR static scale [1], or null (dynamic)
  const float* w_scale;           // FP8_TENSOR: [E] weight scales folded into the row scales
  uint8_t* out;
  float* scales;
};

// GEMM 1's input: gather hidden rows into expert order and quantize them.
// dtype: hidden's (and the compute) dtype, bf16 or fp16. sorted_pairs must
// hold max_rows written entries, as the layer's sort writes (the first
// row's pair is read beside the offsets, launch_permute's maps_written).
cudaError_t launch_permute_quant(const void* hidden, moekit_dtype_t dtype,
                                 const int32_t* sorted_pairs, const float* pair_weights,
                                 int64_t top_k, int64_t hidden_size,
                                 const QuantRows& q, int64_t max_rows, const DeviceInfo& dev,
                                 cudaStream_t stream);

// GEMM 2's input: the activation of gemm1 [rows, N1] (compute dtype),
// rounded to the compute dtype, then quantized.
cudaError_t launch_activation_quant(const void* gemm1, moekit_dtype_t dtype, int64_t inter,
                                    const ActivationParams& p, moekit_gate_up_order_t order,
                                    const QuantRows& q, int64_t max_rows, const DeviceInfo& dev,
                                    cudaStream_t stream);

// rows [rows, K] already in the compute dtype (bf16 or fp16), quantized as is.
cudaError_t launch_quantize_rows(const void* rows, moekit_dtype_t dtype, int64_t k, const QuantRows& q,
                                 int64_t max_rows, const DeviceInfo& dev, cudaStream_t stream);

// out[0, count) = 1.0f (per-tensor scaling's stand-in weight scales).
cudaError_t fill_ones(float* out, int64_t count, cudaStream_t stream);

// ---- grouped GEMM ----------------------------------------------------------
// c [rows, N] = a [rows, K] x w[e]^T + bias[e] for each expert's rows; all in
// `dtype`, fp32 accumulation. w [E_local, N, K], bias [E_local, N] or null.
cudaError_t launch_grouped_gemm(const void* a, const int32_t* expert_offsets,
                                int64_t num_local_experts, const void* w, const void* bias,
                                void* c, int64_t max_rows, int64_t n, int64_t k,
                                moekit_dtype_t dtype, const DeviceInfo& dev, cudaStream_t stream);

// The same with e4m3 a and w and fp32 block scales (moekit.h's arithmetic):
// a_scale as QuantRows lays it out; w_scale [E, ceil(N/128), ceil(K/128)] at
// w_scale + e * w_scale_stride (stride 0: one block of scales for all
// experts). bias and c in `dtype` (bf16 or fp16).
cudaError_t launch_grouped_gemm_fp8(const void* a, const float* a_scale,
                                    const int32_t* expert_offsets, int64_t num_local_experts,
                                    const void* w, const float* w_scale, int64_t w_scale_stride,
                                    const void* bias, void* c, int64_t max_rows, int64_t n,
                                    int64_t k, moekit_dtype_t dtype, const DeviceInfo& dev,
                                    cudaStream_t stream);

// ---- activation ------------------------------------------------------------
// out [rows, I] <- gemm1 [rows, N1], for rows < *valid_rows.
cudaError_t launch_activation(const void* gemm1, void* out, const int32_t* valid_rows,
                              int64_t max_rows, int64_t inter, const ActivationParams& p,
                              moekit_gate_up_order_t order, moekit_dtype_t dtype,
                              const DeviceInfo& dev, cudaStream_t stream);

// ---- finalize --------------------------------------------------------------
// out [T, H] = sum over valid slots, in slot order, of weight * y[row], fp32.
// topk_weights null: every valid slot has weight 1 (weights applied on the input).
// Launched with programmatic dependent launch, it waits only for the kernel
// before it (y's producer) and reads pair_to_row and topk_weights before that
// wait: they must come from at least two kernels back on the stream, or from
// before a copy or other non-kernel operation (the layer's sort, the caller).
cudaError_t launch_finalize(const void* y, moekit_dtype_t y_dtype, const int32_t* pair_to_row,
                            const float* topk_weights, int64_t num_tokens, int64_t top_k,
                            int64_t hidden_size, void* out, moekit_dtype_t output_dtype,
                            const DeviceInfo& dev, cudaStream_t stream);

// ---- router ----------------------------------------------------------------
cudaError_t launch_router(const void* logits, const float* correction_bias, int64_t num_tokens,
                          int64_t num_experts, int64_t top_k, const moekit_router_config_t& c,
                          int32_t* topk_ids, float* topk_weights, const DeviceInfo& dev,
                          cudaStream_t stream);

}  // namespace moekit::kernels
