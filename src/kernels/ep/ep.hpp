// Device stages of the expert-parallel layer (docs/DISTRIBUTED.md), the
// counterparts of reference/ep.cpp: a source rank's dispatch plan, and a
// destination's expansion of its received rows into (row, slot) pairs.
// Hidden rows are packed and pairs gathered with launch_permute, and the
// home rank combines with launch_finalize, so only these two are new. Not
// wired into the public API yet (no transport): the GPU suite runs them over
// simulated ranks on one GPU against the one-GPU layer.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/ep_placement.hpp"

namespace moekit::kernels {

// Which rank runs each global expert (common/ep_placement.hpp).
using EpPlacement = EpPlacementView;

// One source rank's plan for T tokens of top-k, laid out as reference/ep.hpp's
// EpPlan: destination d's send rows [row_offset[d], row_offset[d+1]) and
// returned pairs [pair_offset[d], pair_offset[d+1]).
struct EpPlanBuffers {
  int32_t* row_offset;   // [R + 1]
  int32_t* pair_offset;  // [R + 1]
  int32_t* row_token;    // [T * min(k, R)] the token of each send row
  int32_t* row_ids;      // [T * min(k, R), k] destination-local expert per slot, -1 elsewhere
  int32_t* pair_row;     // [T * k] each pair's returned row, -1 if it runs nowhere
  int32_t* counts;       // [2, R, T] scratch: rows and pairs per (destination, token)
  int32_t* positions;    // [2, R, T] scratch: their exclusive scans
  void* temp;            // cub scan temp storage, ep_plan_temp_bytes
  size_t temp_bytes;
};
cudaError_t ep_plan_temp_bytes(int64_t num_ranks, int64_t num_tokens, size_t* bytes);
cudaError_t launch_ep_plan(const int32_t* topk_ids, int64_t num_tokens, int64_t top_k,
                           const EpPlacement& placement, const EpPlanBuffers& b, cudaStream_t stream);

// A destination's received rows (every source's, in source order) with their
// k local ids [rows, k]: each valid (row, slot) pair, in (row, slot) order,
// gets pair_row_of[p] = row and pair_expert[p] = its local expert;
// *pair_count = the number of pairs.
struct EpExpandBuffers {
  int32_t* pair_row_of;  // [rows * k]
  int32_t* pair_expert;  // [rows * k]
  int32_t* pair_count;   // [1]
  int32_t* flags;        // [rows * k] scratch
  int32_t* positions;    // [rows * k] scratch
  void* temp;            // ep_expand_temp_bytes
  size_t temp_bytes;
};
cudaError_t ep_expand_temp_bytes(int64_t rows, int64_t top_k, size_t* bytes);
cudaError_t launch_ep_expand(const int32_t* row_ids, int64_t rows, int64_t top_k,
                             const EpExpandBuffers& b, cudaStream_t stream);

}  // namespace moekit::kernels
