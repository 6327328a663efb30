// The distributed layer's data path on the host (reference/ep.hpp).
#include "reference/ep.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "reference/dtype.hpp"

namespace moekit::ref {

std::vector<int64_t> EpPlacement::experts_of(int64_t r) const {
  std::vector<int64_t> by_local;
  for (int64_t g = 0; g < num_experts; ++g) {
    if (owner_of(g) != r) continue;
    const int64_t e = local_of(g);
    if (e >= static_cast<int64_t>(by_local.size())) by_local.resize(e + 1, -1);
    by_local[e] = g;
  }
  return by_local;
}

EpPlacement EpPlacement::contiguous(int64_t num_experts, int64_t num_ranks) {
  EpPlacement pl;
  pl.num_experts = num_experts;
  pl.num_ranks = num_ranks;
  pl.local_experts = num_experts / num_ranks;
  return pl;
}

EpPlan ep_plan(const EpPlacement& pl, int64_t num_tokens, int64_t top_k, Ids topk_ids) {
  const int64_t R = pl.num_ranks, T = num_tokens, k = top_k;
  EpPlan plan;
  plan.row_offset.assign(R + 1, 0);
  plan.pair_offset.assign(R + 1, 0);
  plan.pair_row.assign(T * k, -1);
  // Counts per destination (what the device plan's flag scans produce).
  std::vector<int64_t> rows(R, 0), pairs(R, 0);
  std::vector<char> hit(R);
  for (int64_t t = 0; t < T; ++t) {
    std::fill(hit.begin(), hit.end(), 0);
    for (int64_t s = 0; s < k; ++s) {
      const int64_t d = pl.owner_of(topk_ids[t * k + s]);
      if (d < 0) continue;
      ++pairs[d];
      if (!hit[d]) { hit[d] = 1; ++rows[d]; }
    }
  }
  for (int64_t d = 0; d < R; ++d) {
    plan.row_offset[d + 1] = plan.row_offset[d] + rows[d];
    plan.pair_offset[d + 1] = plan.pair_offset[d] + pairs[d];
  }
  plan.row_token.assign(plan.row_offset[R], -1);
  plan.row_ids.assign(plan.row_offset[R] * k, -1);
  // Fill in token order: rows ascending per destination, pairs in (token, slot) order.
  std::vector<int64_t> next_row(plan.row_offset.begin(), plan.row_offset.end() - 1);
  std::vector<int64_t> next_pair(plan.pair_offset.begin(), plan.pair_offset.end() - 1);
  std::vector<int64_t> row_of(R);
  for (int64_t t = 0; t < T; ++t) {
    std::fill(row_of.begin(), row_of.end(), -1);
    for (int64_t s = 0; s < k; ++s) {
      const int64_t g = topk_ids[t * k + s];
      const int64_t d = pl.owner_of(g);
      if (d < 0) continue;
      if (row_of[d] < 0) {
        row_of[d] = next_row[d]++;
        plan.row_token[row_of[d]] = static_cast<int32_t>(t);
      }
      plan.row_ids[row_of[d] * k + s] = static_cast<int32_t>(pl.local_of(g));
      plan.pair_row[t * k + s] = static_cast<int32_t>(next_pair[d]++);
    }
  }
  return plan;
}

namespace {

// The pairs routed to one rank, as a top-1 batch on its local experts.
struct ExpertBatch {
  std::vector<uint8_t> hidden;       // [pairs, H] input dtype
  std::vector<int32_t> ids;          // [pairs] local expert
  std::vector<float> weights;        // [pairs] 1, or the router weight when it applies on the input
  std::vector<int64_t> from_offset;  // [R + 1] the pairs of each source rank
};

}  // namespace

Status ep_layer(const EpPlacement& pl, const std::vector<EpRank>& ranks,
                std::vector<std::vector<uint8_t>>* outputs, int64_t capacity,
                std::vector<int64_t>* dropped_rows) {
  const int64_t R = pl.num_ranks;
  if (static_cast<int64_t>(ranks.size()) != R)
    return Status(MOEKIT_ERROR_INVALID_ARGUMENT, "ep_layer: expected one EpRank per rank");
  if (capacity < 0) return Status(MOEKIT_ERROR_INVALID_ARGUMENT, "ep_layer: expected capacity >= 0");
  std::vector<EpPlan> plans(R);
  for (int64_t r = 0; r < R; ++r) {
    const moekit_problem_t& p = ranks[r].problem;
    plans[r] = ep_plan(pl, p.num_tokens, p.top_k, ranks[r].topk_ids);
  }
  // The rows each source sends each destination: its first `capacity`
  // (rows are in token order, so the dropped ones are the last tokens).
  auto sent_rows = [&](int64_t src, int64_t d) {
    const int64_t n = plans[src].row_offset[d + 1] - plans[src].row_offset[d];
    return capacity > 0 ? std::min(n, capacity) : n;
  };
  if (dropped_rows != nullptr) {
    dropped_rows->assign(R, 0);
    for (int64_t src = 0; src < R; ++src)
      for (int64_t d = 0; d < R; ++d)
        (*dropped_rows)[src] += plans[src].row_offset[d + 1] - plans[src].row_offset[d] - sent_rows(src, d);
  }
  // Dispatch (exchange 1): destination d receives, from each source in rank
  // order, its send rows, and expands each into its pairs on d.
  std::vector<ExpertBatch> batches(R);
  for (int64_t d = 0; d < R; ++d) {
    ExpertBatch& b = batches[d];
    b.from_offset.assign(R + 1, 0);
    for (int64_t src = 0; src < R; ++src) {
      const EpRank& in = ranks[src];
      const moekit_problem_t& p = in.problem;
      const EpPlan& plan = plans[src];
      const size_t row_bytes = p.hidden_size * dtype_size(p.input_dtype);
      for (int64_t row = plan.row_offset[d]; row < plan.row_offset[d] + sent_rows(src, d); ++row) {
        const int64_t t = plan.row_token[row];
        for (int64_t s = 0; s < p.top_k; ++s) {
          const int32_t e = plan.row_ids[row * p.top_k + s];
          if (e < 0) continue;
          const auto* src_row = static_cast<const uint8_t*>(in.hidden) + t * row_bytes;
          b.hidden.insert(b.hidden.end(), src_row, src_row + row_bytes);
          b.ids.push_back(e);
          b.weights.push_back(p.apply_router_weight_on_input ? in.topk_weights[t * p.top_k + s] : 1.0f);
        }
      }
      b.from_offset[src + 1] = static_cast<int64_t>(b.ids.size());
    }
  }
  // Experts: each pair's row alone (the layer is batch-invariant), rounded
  // to the compute dtype as GEMM 2 stores it; weight 1 makes finalize's
  // fp32 sum of one slot that row exactly.
  std::vector<std::vector<uint8_t>> expert_rows(R);
  for (int64_t d = 0; d < R; ++d) {
    const EpRank& in = ranks[d];
    const ExpertBatch& b = batches[d];
    moekit_problem_t q = in.problem;
    q.num_tokens = static_cast<int64_t>(b.ids.size());
    q.top_k = 1;
    q.num_experts = q.num_local_experts;
    q.ep_rank = 0;
    q.ep_size = 1;
    q.has_expert_map = 0;
    q.router.kind = MOEKIT_ROUTER_NONE;
    q.output_dtype = compute_dtype(in.problem);
    q.device = MOEKIT_DEVICE_CPU;
    expert_rows[d].assign(q.num_tokens * q.hidden_size * dtype_size(q.output_dtype), 0);
    if (q.num_tokens == 0) continue;
    moekit_arguments_t a{};
    a.problem = q;
    a.hidden = b.hidden.data();
    a.topk_ids = b.ids.data();
    a.topk_weights = b.weights.data();
    a.w13 = in.w13;
    a.w13_bias = in.w13_bias;
    a.w2 = in.w2;
    a.w2_bias = in.w2_bias;
    a.w13_scale = in.w13_scale;
    a.w2_scale = in.w2_scale;
    a.a13_scale = in.a13_scale;
    a.a2_scale = in.a2_scale;
    a.output = expert_rows[d].data();
    size_t ws_bytes = 0;
    if (Status s = MoeLayer::workspace_size(q, &ws_bytes); !s) return s;
    std::vector<uint8_t> ws(ws_bytes + 256);
    void* ws_aligned = ws.data() + (256 - reinterpret_cast<uintptr_t>(ws.data()) % 256) % 256;
    if (Status s = MoeLayer::run(a, ws_aligned, ws_bytes); !s) return s;
  }
  // Return (exchange 2) and combine: the home rank's return buffer is, per
  // destination in rank order, that destination's rows of its pairs, which
  // is the order the plan's pair_row counts in; finalize sums them slot by
  // slot with the home rank's own weights.
  outputs->assign(R, {});
  for (int64_t r = 0; r < R; ++r) {
    const EpRank& in = ranks[r];
    const moekit_problem_t& p = in.problem;
    const EpPlan& plan = plans[r];
    const moekit_dtype_t cd = compute_dtype(p);
    std::vector<float> y(plan.pair_offset[R] * p.hidden_size);
    for (int64_t d = 0; d < R; ++d) {
      const ExpertBatch& b = batches[d];
      const int64_t n = b.from_offset[r + 1] - b.from_offset[r];
      for (int64_t i = 0; i < n * p.hidden_size; ++i)
        y[plan.pair_offset[d] * p.hidden_size + i] =
            load_as_float(cd, expert_rows[d].data(), b.from_offset[r] * p.hidden_size + i);
    }
    // Tokens with a row past a destination's capacity: no partial sum, the
    // whole row NaN (their pairs there were never computed).
    std::vector<int32_t> pair_row = plan.pair_row;
    std::vector<char> dropped(p.num_tokens, 0);
    for (int64_t d = 0; d < R; ++d)
      for (int64_t row = plan.row_offset[d] + sent_rows(r, d); row < plan.row_offset[d + 1]; ++row)
        dropped[plan.row_token[row]] = 1;
    for (int64_t t = 0; t < p.num_tokens; ++t)
      if (dropped[t])
        for (int64_t s = 0; s < p.top_k; ++s) pair_row[t * p.top_k + s] = -1;
    (*outputs)[r].assign(p.num_tokens * p.hidden_size * dtype_size(p.output_dtype), 0);
    finalize(y.data(), pair_row.data(), p.apply_router_weight_on_input ? nullptr : in.topk_weights,
             p.num_tokens, p.top_k, p.hidden_size, (*outputs)[r].data(), p.output_dtype);
    for (int64_t t = 0; t < p.num_tokens; ++t)
      if (dropped[t])
        for (int64_t i = 0; i < p.hidden_size; ++i)
          store_from_float(p.output_dtype, (*outputs)[r].data(), t * p.hidden_size + i, std::nanf(""));
  }
  return Status();
}

}  // namespace moekit::ref
