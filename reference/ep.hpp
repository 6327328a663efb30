// Expert parallelism on the host: the data path of the distributed layer
// (docs/DISTRIBUTED.md) over R ranks simulated in one process, with the
// exchanges as copies. It is the reference the device kernels and the NCCL
// transport will be tested against, and it shows the design's claim on the
// CPU: every rank's output equals the one-GPU layer on the gathered batch,
// bit for bit, because each (token, slot) pair's expert row is computed
// alone (the layer is batch-invariant) and summed at its home rank in slot
// order by the same finalize.
#pragma once

#include <cstdint>
#include <vector>

#include "common/ep_placement.hpp"
#include "moekit/moekit.hpp"
#include "reference/reference.hpp"

namespace moekit::ref {

// Which rank runs each global expert, and as which of its local experts.
struct EpPlacement {
  int64_t num_experts = 0;     // E_total
  int64_t num_ranks = 1;       // R
  int64_t local_experts = 0;   // E_local: contiguous ranges when owner is empty
  std::vector<int32_t> owner;  // [E_total] rank, or -1 (nowhere); empty: id / E_local
  std::vector<int32_t> local;  // [E_total] the expert's index on its owner (with owner)
  // The owner of global id g, or -1 for ids that run nowhere (negative,
  // >= E_total, or unowned); local_of is then meaningless. The rule is
  // common/ep_placement.hpp's, which the device plan uses too.
  EpPlacementView view() const {
    return {num_experts, num_ranks, local_experts, owner.empty() ? nullptr : owner.data(),
            owner.empty() ? nullptr : local.data()};
  }
  int64_t owner_of(int64_t g) const { return ep_owner_of(view(), g); }
  int64_t local_of(int64_t g) const { return ep_local_of(view(), g); }
  // The global ids of rank r's experts, in local order.
  std::vector<int64_t> experts_of(int64_t r) const;
  // E_total experts in R contiguous ranges of E_total / R.
  static EpPlacement contiguous(int64_t num_experts, int64_t num_ranks);
};

// One source rank's dispatch (docs/DISTRIBUTED.md, step 1). Destination d's
// send rows are [row_offset[d], row_offset[d+1]): the tokens with a slot on
// d, ascending, each sent once; its returned rows, one per (token, slot)
// pair on d in (token, slot) order, are [pair_offset[d], pair_offset[d+1])
// of the concatenated return buffer.
struct EpPlan {
  std::vector<int64_t> row_offset;   // [R + 1]
  std::vector<int64_t> pair_offset;  // [R + 1]
  std::vector<int32_t> row_token;    // [rows] the source token of each send row
  std::vector<int32_t> row_ids;      // [rows, k] destination-local expert per slot, -1 elsewhere
  std::vector<int32_t> pair_row;     // [T*k] returned row of each pair, -1 if it runs nowhere
};
EpPlan ep_plan(const EpPlacement& placement, int64_t num_tokens, int64_t top_k, Ids topk_ids);

// One rank's share: its tokens and its local experts' weights. problem is the
// rank's view (num_tokens its T, num_experts E_total, num_local_experts its
// experts, ids global); ep_rank / ep_size / expert_map / router are not used.
struct EpRank {
  moekit_problem_t problem;
  const void* hidden;           // [T, H]
  const int32_t* topk_ids;      // [T, k] global ids
  const float* topk_weights;    // [T, k]
  const void* w13;              // [E_local, N1, H]
  const void* w13_bias;         // [E_local, N1] or null
  const void* w2;               // [E_local, H, I]
  const void* w2_bias;          // [E_local, H] or null
  const float* w13_scale;       // fp8 weights, as moekit.h lays them out; else null
  const float* w2_scale;
  const float* a13_scale;       // static activation scales, or null
  const float* a2_scale;
};

// Runs the distributed layer: outputs[r] = rank r's [T_r, H] in its output
// dtype. Each rank's experts run on the CPU backend, over the pairs routed to
// it as top-1 tokens of weight 1 (their router weight when weights apply on
// the input), in (source rank, token, slot) order.
// capacity > 0 is graph mode's fixed size (docs/DISTRIBUTED.md): a source
// sends a destination at most `capacity` rows, its first ones (tokens
// ascending); a token whose row to some destination is past that is dropped
// there, and its whole output row is NaN (defined and visible, never a
// silently partial sum). dropped_rows[r] (when given) = the rows source r
// could not send. capacity = 0: no limit.
Status ep_layer(const EpPlacement& placement, const std::vector<EpRank>& ranks,
                std::vector<std::vector<uint8_t>>* outputs, int64_t capacity = 0,
                std::vector<int64_t>* dropped_rows = nullptr);

}  // namespace moekit::ref
