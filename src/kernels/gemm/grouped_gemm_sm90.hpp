// Plain launcher of the CUTLASS sm90 grouped GEMMs. No CUTLASS or CUDA
// template here: each kernel family is instantiated in its own
// sm90_grouped_gemm_<family>.cu so a config change rebuilds one file.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/gemm/gemm_config.hpp"
#include "common/activation_math.hpp"
#include "kernels/gemm/gemm_params.hpp"
#include "kernels/kernels.hpp"

namespace moekit::kernels {

// Bytes of scratch any sm90 kernel needs for E groups on a GPU of sm_count SMs:
// per-group shapes, pointers and strides, plus CUTLASS's own workspace
// (per-SM TMA descriptors). Independent of T and of the kernel chosen.
size_t grouped_gemm_scratch_bytes(int64_t num_experts, int sm_count);

// Launches config.kernel (a CUTLASS family: never kSimple or kDecode).
// cudaErrorNotSupported if the kernel cannot take the problem (caller falls
// back to the simple GEMM).
cudaError_t launch_grouped_gemm_sm90(GemmKernel kernel, const GroupedGemmParams& p,
                                     cudaStream_t stream);

// GEMM 1's activation, fused into the decode kernel's epilogue: p.c is then
// the activation's [rows, inter] output (what the activation stage would
// write, bit for bit) and GEMM 1's own [rows, N1] output is never stored.
struct FusedActivation {
  ActivationParams params;
  moekit_gate_up_order_t order;
  int64_t inter;  // I; p.n must be 2I for the gated kinds, I otherwise
};

// The ids of a batch of at most 32 pairs (the sort's placement of them),
// for a decode GEMM 1 launched right after launch_sort_gather_tiny: it ranks
// them itself instead of reading expert_offsets before its PDL wait, which
// only a sort two or more kernels back allows. pairs = 0: not given.
struct DecodeRouting {
  const int32_t* ids;    // [T*k] int32, or null with ids64
  const int64_t* ids64;  // [T*k] int64, or null
  int64_t pairs;
  Placement pl;          // the layer's (kernels.hpp)
};

// The hand-written decode kernel (decode_gemm.cu): TMA-fed mma.sync swap-AB
// for experts with a few rows, no per-group set-up, launched with
// programmatic dependent launch. Needs no scratch. 16-bit operands, or e4m3
// with block scales when p.a_scale is set (the fp8_decode family; per-tensor
// scaling's block of ones is not read). rows_capacity: the rows p.a and p.c
// hold (T*k), the bound of its loads. cudaErrorNotSupported if it cannot
// take the problem (more than kDecodeMaxExperts experts, N not a multiple of
// 8, rows of K not a multiple of 16 bytes, misaligned operands, fuse with
// e4m3 operands).
// It reads expert_offsets and the weights before its griddepcontrol.wait, so
// they must be complete before the previous kernel on the stream starts
// (the layer's sort runs two or more kernels earlier; see decode_gemm.cu),
// or, with a route, the route's ids and map instead of expert_offsets.
// pass_tokens: token rows per pass (16 or 32, GemmConfig::pass_tokens), or 0
// for decode_pass_tokens of rows_capacity / p.num_experts. route (pairs > 0):
// the offsets come from ranking its ids (DecodeRouting).
cudaError_t decode_grouped_gemm(const GroupedGemmParams& p, int64_t rows_capacity,
                                cudaStream_t stream, const FusedActivation* fuse = nullptr,
                                int pass_tokens = 0, const DecodeRouting& route = {});

// The hand-written prefill kernel (prefill_gemm.cu): TMA + wgmma, 128 rows x
// 256 columns (e4m3 with block scales: 128 x 128, the promotion of one block
// overlapping the next block's wgmmas), the expert as a TMA coordinate (no
// per-group set-up), PDL. Same contract as decode_grouped_gemm (up to
// kPrefillMaxExperts experts), including the fused activation for 16-bit
// operands.
cudaError_t prefill_grouped_gemm(const GroupedGemmParams& p, int64_t rows_capacity,
                                 cudaStream_t stream, const FusedActivation* fuse = nullptr);

// The kernels above (decode, prefill, their fp8 forms) through one entry:
// cudaErrorNotSupported for any other kernel or a problem it cannot take.
bool gemm_kernel_is_hand_written(GemmKernel kernel);
// pass_tokens and route: the decode kernels' (decode_grouped_gemm); a route
// with pairs > 0 makes every other kernel decline.
cudaError_t launch_hand_written_gemm(GemmKernel kernel, const GroupedGemmParams& p,
                                     int64_t rows_capacity, cudaStream_t stream,
                                     const FusedActivation* fuse = nullptr, int pass_tokens = 0,
                                     const DecodeRouting& route = {});

}  // namespace moekit::kernels
