// Grouped GEMM configuration: which kernel runs one MoE GEMM, and why.
// Pure host code with no CUDA or CUTLASS types, so the choice is unit-tested
// on the CPU and the rest of the library sees kernels only through the plain
// launcher in grouped_gemm_sm90.hpp.
#pragma once

#include <cstdint>

#include "moekit/moekit.h"

namespace moekit::kernels {

// The compiled sm90 kernel families (one .cu each). "Swap" computes
// D^T = W x A^T: the expert's weight rows fill the 128-wide wgmma M side and
// the few token rows its narrow N side, so a decode batch wastes no
// tensor-core rows. Families that lost at every point of the H100/H200
// sweeps (bench/RESULTS.md, 2026-11-27) were dropped: swap-AB 128x64 and
// 64x16 ping-pong, and 256x128 (128x256 beat it by 10-70%); so were 2-CTA
// clusters of 128x256 (along M or N) and of fp8 128x128 along M (2026-12-02).
// fp8 128x128 without clusters stays as the bitwise reference of fp8_prefill.
enum class GemmKernel : int {
  kSimple = 0,       // CUDA-core fallback (fp32, or no sm90 kernel fits)
  kSwap128x16 = 1,   // <= 8 rows per expert when E > kDecodeMaxExperts
  kTile128x128 = 2,  // > 8 rows per expert, N < 1024
  kTile128x256 = 3,  // > 64 rows per expert, N >= 1024
  kTile64x256 = 4,   // 9-64 rows per expert, N >= 1024 (ping-pong)
  kDecode = 5,       // TMA + mma.sync weight streaming, no set-up, PDL (decode_gemm.cu)
  kFp8Swap128x16 = 6,   // fp8 block-scaled, <= 8 rows per expert when E > kDecodeMaxExperts
  kFp8Tile128x128 = 7,  // fp8 block-scaled, > 8 rows per expert
  kFp8Pingpong64x128 = 8,  // fp8 block-scaled, ping-pong
  kFp8Decode = 9,       // the decode kernel on e4m3 operands with block scales
  kPrefill = 10,        // TMA + wgmma 128x256, expert as a TMA coordinate, PDL (prefill_gemm.cu)
  kFp8Prefill = 11,     // the prefill kernel on e4m3 operands with block scales, 128x128
  kFp8Tile128x128Cluster1x2 = 12,  // fp8 block-scaled 128x128, 2-CTA clusters along N (> 64 rows)
};
constexpr int kNumGemmKernels = 13;

// The decode kernel keeps every expert's offsets and first work unit in
// shared memory (8 bytes an expert) beside its 60-90 KB pipeline.
constexpr int64_t kDecodeMaxExperts = 1024;

// The decode kernel's ring of TMA stages (10 KB each) for one GEMM: 6 slots
// at three CTAs per SM for experts of at most kDecodeSmallExpertBytes
// (N x K x element bytes), else kDecodeMaxStages at two. Small experts end
// their items quickly and gain from the third consumer; large ones already
// stream at the copy rate with two CTAs and lose with three (H200
// measurements in decode_gemm.cu and bench/RESULTS.md, 2026-12-03).
constexpr int kDecodeMaxStages = 9;
constexpr int kDecodeSmallExpertStages = 6;
constexpr int64_t kDecodeSmallExpertBytes = int64_t{8} << 20;
// Bytes of one ring slot: a box of 64 weight rows and one of the pass's
// token rows, 128 bytes of k each (10 KB at 16 tokens, 12 KB at 32).
constexpr int decode_slot_bytes(int pass_tokens) { return (64 + pass_tokens) * 128; }
// With 32-token passes (decode_pass_tokens) the rings hold the same bytes in
// fewer slots (5 and 7).
int decode_ring_stages(int64_t n, int64_t k, int elem_bytes, int pass_tokens = 16);
// Token rows per pass of the decode kernel: 16 at up to 8 rows per expert,
// 32 above, so an expert of 9-32 rows streams its weights once.
int decode_pass_tokens(int64_t rows_per_expert);
// 16-bit experts of at most kDecodeSmallExpertBytes stay on the decode kernel
// (32-token passes) up to this many rows per expert: with random routing few
// experts then pass 32 rows, and those that do stream their weights twice.
constexpr int64_t kDecode32MaxRows = 24;
// The prefill kernel keeps the same 8 bytes an expert beside its 192 KB pipeline.
constexpr int64_t kPrefillMaxExperts = 1024;
// 16-bit rows per expert where select_config picks the prefill kernel (past
// the decode kernel's rows): GEMM 1 up to 96 (an expert's rows, mean plus
// about three standard deviations of random routing, in one 128-row tile);
// GEMM 2 from 33 to 80.
constexpr int64_t kPrefillGemm1MaxRows = 96;
constexpr int64_t kPrefillGemm2MinRows = 33;
constexpr int64_t kPrefillGemm2MaxRows = 80;

// Whether kernel k takes e4m3 operands with block scales (the fp8 families and
// the simple kernel, which has both forms).
bool gemm_kernel_runs_fp8(GemmKernel k);
bool gemm_kernel_runs_16bit(GemmKernel k);

// The kernel of a short name ("swap128x16", "tile128x256", "simple"), for the
// MOEKIT_GEMM override; false if the name is unknown.
bool gemm_kernel_from_name(const char* name, GemmKernel* out);

const char* gemm_kernel_name(GemmKernel k);

// What the choice may depend on. Deliberately absent: anything that changes a
// row's arithmetic with T. Every kernel here accumulates K in the same order
// (one fp32 accumulator per output, K ascending, no split), so the choice may
// follow the batch size without breaking batch invariance.
struct GemmProblem {
  moekit_dtype_t dtype;       // A and W element type (FP8_E4M3: block-scaled, D 16-bit)
  int64_t rows;               // rows over all experts (T*k upper bound)
  int64_t num_experts;        // local experts (groups)
  int64_t n;                  // output columns
  int64_t k;                  // reduction depth
  int gemm = 1;               // 1: the gate/up GEMM, 2: the down GEMM (N = H)
};

struct GemmConfig {
  GemmKernel kernel;
  const char* reason;  // one line, printed when MOEKIT_PRINT_CONFIG is set
  // The decode kernels' token rows per pass (decode_pass_tokens of the rows
  // per expert counted here, which under expert parallelism is the rank's
  // share, not rows / local experts); 0 for the other kernels, and for a
  // forced kernel, whose launcher then counts rows / local experts itself.
  int pass_tokens = 0;
};

GemmConfig select_config(const GemmProblem& p);

// Whether GEMM 1 on `kernel` gathers its own rows from the layer's input
// (GroupedGemmParams::gather_pairs), so the layer runs no gather stage: the
// prefill kernels only, when the rows need no conversion (the input already
// in the compute dtype) and no router weight (not applied on the input), and
// for e4m3 with block scales only (per-tensor scaling folds each expert's
// weight scale into its rows' scales, so a token's quantized row differs by
// expert). The layer falls back to the gather stage if the kernel declines.
bool gemm1_gathers_rows(GemmKernel kernel, moekit_quant_t quant, bool weights_on_input,
                        bool input_in_compute_dtype);

}  // namespace moekit::kernels
