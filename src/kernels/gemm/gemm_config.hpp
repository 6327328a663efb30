// Grouped GEMM configuration: which kernel runs one MoE GEMM, and why.
// Pure host code with no CUDA or CUTLASS types, so the choice is unit-tested
// on the CPU and the rest of the library sees kernels only through the plain
// launcher in grouped_gemm_sm90.hpp.
#pragma once

#include <cstdint>

#include "moekit/moekit.h"

namespace moekit::kernels {

// The compiled sm90 kernel families. "Swap" kernels compute D^T = W x A^T:
// the expert's weight rows fill the 128-wide wgmma M side and the few token
// rows the narrow N side, so a decode batch wastes no tensor-core rows and
// every CTA streams a distinct slice of weights.
enum class GemmKernel : int {
  kSimple = 0,           // CUDA-core fallback (fp32, or no sm90 kernel fits)
  kSwap128x16 = 1,       // <= 16 rows per expert on average
  kSwap128x64 = 2,       // <= 64
  kTile128x128 = 3,      // moderate groups (a few hundred rows)
  kTile256x128 = 4,      // large groups (prefill of few, big experts)
  kSwap64x16 = 5,        // decode, 64-row weight slices, ping-pong warpgroups
  kTile128x256 = 6,      // moderate groups, wide N
};
constexpr int kNumGemmKernels = 7;

// The kernel of a short name ("swap128x16", "tile256x128", "simple"), for the
// MOEKIT_GEMM override; false if the name is unknown.
bool gemm_kernel_from_name(const char* name, GemmKernel* out);

const char* gemm_kernel_name(GemmKernel k);

// What the choice may depend on. Deliberately absent: anything that changes a
// row's arithmetic with T. Every kernel here accumulates K in the same order
// (one fp32 accumulator per output, K ascending, no split), so the choice may
// follow the batch size without breaking batch invariance.
struct GemmProblem {
  moekit_dtype_t dtype;       // A, W and D element type
  int64_t rows;               // rows over all experts (T*k upper bound)
  int64_t num_experts;        // local experts (groups)
  int64_t n;                  // output columns
  int64_t k;                  // reduction depth
  int sm_count;
};

struct GemmConfig {
  GemmKernel kernel;
  const char* reason;  // one line, printed when MOEKIT_PRINT_CONFIG is set
};

GemmConfig select_config(const GemmProblem& p);

}  // namespace moekit::kernels
