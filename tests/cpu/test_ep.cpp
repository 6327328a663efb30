// The distributed layer's data path (reference/ep.hpp, docs/DISTRIBUTED.md)
// on simulated ranks: every rank's output equals the one-GPU layer on the
// gathered batch bit for bit, on the routing classes issue 10 lists (all to
// one rank, empty ranks, -1 / garbage / duplicate ids, a rank nobody picks,
// different T per rank, scattered placement, NaN in one token, weights on
// the input, fp8 weights), and the plan's integers are checked directly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/fp8_cases.hpp"
#include "common/test_util.hpp"
#include "reference/ep.hpp"

using namespace moekit;

namespace {

// A global layer split over ranks: tokens [begin_r, begin_r + T_r) are rank
// r's, and each rank holds the experts the placement gives it.
struct Split {
  ref::EpPlacement placement;
  std::vector<int64_t> tokens;  // T_r
};

// Runs g (E_total experts, all tokens) on the CPU backend and split over the
// ranks through ref::ep_layer; expects every rank's rows bitwise equal. With
// a capacity, a token whose row to some rank is past it (counted here from
// the routing, not from the plan) must be NaN throughout instead, and each
// rank's dropped rows must be reported.
void expect_ep_equals_one_layer(const ref::HostLayer& g, const Split& sp, const std::string& what,
                                int64_t capacity = 0) {
  SCOPED_TRACE(what);
  const Problem& p = g.problem;
  const int64_t R = sp.placement.num_ranks, E = p.num_experts, H = p.hidden_size, k = p.top_k;
  ASSERT_EQ(std::accumulate(sp.tokens.begin(), sp.tokens.end(), int64_t{0}), p.num_tokens);
  // The one layer holds every expert; an id the placement puts nowhere
  // contributes nothing there either.
  ref::HostLayer whole = g;
  for (int32_t& id : whole.topk_ids)
    if (sp.placement.owner_of(id) < 0) id = -1;
  test::CpuRun one = test::run_cpu_layer(whole);
  ASSERT_TRUE(one.status.ok()) << one.status.message();

  // Each rank's experts in local order, and its share of every tensor.
  struct Share {
    std::vector<uint8_t> w13, w13_bias, w2, w2_bias;
    std::vector<float> w13_scale, w2_scale;
  };
  std::vector<Share> shares(R);
  std::vector<ref::EpRank> ranks(R);
  const size_t in_row = H * ref::dtype_size(p.input_dtype);
  int64_t begin = 0;
  for (int64_t r = 0; r < R; ++r) {
    const std::vector<int64_t> experts = sp.placement.experts_of(r);
    Share& s = shares[r];
    s.w13 = test::slice_experts(g.w13, E, experts);
    s.w2 = test::slice_experts(g.w2, E, experts);
    s.w13_bias = test::slice_experts(g.w13_bias, E, experts);
    s.w2_bias = test::slice_experts(g.w2_bias, E, experts);
    s.w13_scale = test::slice_experts(g.w13_scale, E, experts);
    s.w2_scale = test::slice_experts(g.w2_scale, E, experts);
    ref::EpRank& rk = ranks[r];
    rk.problem = p;
    rk.problem.num_tokens = sp.tokens[r];
    rk.problem.num_local_experts = static_cast<int64_t>(experts.size());
    rk.hidden = g.hidden.data() + begin * in_row;
    rk.topk_ids = g.topk_ids.data() + begin * k;
    rk.topk_weights = g.topk_weights.data() + begin * k;
    rk.w13 = s.w13.data();
    rk.w2 = s.w2.data();
    rk.w13_bias = p.has_w13_bias ? s.w13_bias.data() : nullptr;
    rk.w2_bias = p.has_w2_bias ? s.w2_bias.data() : nullptr;
    rk.w13_scale = s.w13_scale.empty() ? nullptr : s.w13_scale.data();
    rk.w2_scale = s.w2_scale.empty() ? nullptr : s.w2_scale.data();
    rk.a13_scale = p.quant.static_activation_scale ? g.a13_scale.data() : nullptr;
    rk.a2_scale = p.quant.static_activation_scale ? g.a2_scale.data() : nullptr;
    begin += sp.tokens[r];
  }
  std::vector<std::vector<uint8_t>> outs;
  std::vector<int64_t> dropped_rows;
  const Status s = ref::ep_layer(sp.placement, ranks, &outs, capacity, &dropped_rows);
  ASSERT_TRUE(s.ok()) << s.message();
  const size_t out_row = H * ref::dtype_size(p.output_dtype);
  begin = 0;
  for (int64_t r = 0; r < R; ++r) {
    ASSERT_EQ(outs[r].size(), sp.tokens[r] * out_row) << "rank " << r;
    // Which of rank r's tokens lost a row: the (capacity+1)-th and later
    // tokens with a slot on a destination, in token order.
    std::vector<char> lost(sp.tokens[r], 0);
    std::vector<int64_t> sent(R, 0);
    int64_t lost_rows = 0;
    for (int64_t t = 0; t < sp.tokens[r]; ++t) {
      std::vector<char> on(R, 0);
      for (int64_t slot = 0; slot < k; ++slot) {
        const int64_t d = sp.placement.owner_of(g.topk_ids[(begin + t) * k + slot]);
        if (d >= 0) on[d] = 1;
      }
      for (int64_t d = 0; d < R; ++d)
        if (on[d] && capacity > 0 && sent[d]++ >= capacity) {
          lost[t] = 1;
          ++lost_rows;
        }
    }
    EXPECT_EQ(dropped_rows[r], lost_rows) << "rank " << r;
    const uint8_t* want = one.output.data() + begin * out_row;
    for (int64_t t = 0; t < sp.tokens[r]; ++t) {
      if (lost[t]) {
        for (int64_t i = 0; i < H; ++i)
          if (!std::isnan(ref::load_as_float(p.output_dtype, outs[r].data(), t * H + i))) {
            ADD_FAILURE() << "rank " << r << " token " << t << " lost a row past the capacity but element " << i
                          << " is not NaN";
            break;
          }
        continue;
      }
      if (std::memcmp(outs[r].data() + t * out_row, want + t * out_row, out_row) != 0) {
        ADD_FAILURE() << "rank " << r << " token " << t << " (global " << begin + t
                      << ") differs from the one-layer output";
        break;
      }
    }
    begin += sp.tokens[r];
  }
}

Split even_split(int64_t T, int64_t E, int64_t R) {
  Split sp{ref::EpPlacement::contiguous(E, R), std::vector<int64_t>(R, T / R)};
  sp.tokens[R - 1] += T - (T / R) * R;
  return sp;
}

}  // namespace

TEST(ExpertParallelReference, PlanListsEachTokenOncePerRankInTokenAndSlotOrder) {
  // 8 experts on 4 ranks (2 each), top-3; token 1 has two slots on rank 0,
  // token 2 only ids that run nowhere.
  const ref::EpPlacement pl = ref::EpPlacement::contiguous(8, 4);
  const std::vector<int32_t> ids = {0, 5, 7,    // ranks 0, 2, 3
                                    1, 0, 6,    // rank 0 twice, rank 3
                                    -1, 8, 99,  // nowhere
                                    4, 4, 2};   // rank 2 twice (a duplicate), rank 1
  const ref::EpPlan plan = ref::ep_plan(pl, 4, 3, ids.data());
  EXPECT_EQ(plan.row_offset, (std::vector<int64_t>{0, 2, 3, 5, 7}));
  EXPECT_EQ(plan.pair_offset, (std::vector<int64_t>{0, 3, 4, 7, 9}));
  EXPECT_EQ(plan.row_token, (std::vector<int32_t>{0, 1, 3, 0, 3, 0, 1}));
  EXPECT_EQ(plan.row_ids, (std::vector<int32_t>{0, -1, -1,  1, 0, -1,     // rank 0: tokens 0, 1
                                                -1, -1, 0,                 // rank 1: token 3
                                                -1, 1, -1,  0, 0, -1,      // rank 2: tokens 0, 3
                                                -1, -1, 1,  -1, -1, 0}));  // rank 3: tokens 0, 1
  EXPECT_EQ(plan.pair_row, (std::vector<int32_t>{0, 4, 7,  1, 2, 8,  -1, -1, -1,  5, 6, 3}));
  // No tokens: empty lists, offsets all zero.
  const ref::EpPlan none = ref::ep_plan(pl, 0, 3, ids.data());
  EXPECT_EQ(none.row_offset, (std::vector<int64_t>(5, 0)));
  EXPECT_TRUE(none.row_token.empty() && none.pair_row.empty());
}

TEST(ExpertParallelReference, EveryRankEqualsTheOneLayerOnRandomRouting) {
  for (auto dt : {MOEKIT_DTYPE_FP32, MOEKIT_DTYPE_BF16})
    for (int64_t R : {2, 4}) {
      Problem p = test::small_problem(61, 16, 4, 64, 32, dt);
      p.has_w13_bias = p.has_w2_bias = R == 4;
      p.gate_up_order = R == 4 ? MOEKIT_INTERLEAVED : MOEKIT_GATE_UP;
      const ref::HostLayer g = ref::make_random_layer(p, 10 + R);
      expect_ep_equals_one_layer(g, even_split(61, 16, R),
                                 std::string(moekit_dtype_name(dt)) + " R=" + std::to_string(R));
    }
}

TEST(ExpertParallelReference, AdversarialRoutingAcrossRanks) {
  const int64_t E = 16, k = 4, R = 4;
  Problem p = test::small_problem(80, E, k, 64, 32, MOEKIT_DTYPE_BF16);
  ref::HostLayer g = ref::make_random_layer(p, 3);
  // Every token of every rank on rank 2's experts.
  {
    ref::HostLayer l = g;
    for (int64_t i = 0; i < 80 * k; ++i) l.topk_ids[i] = static_cast<int32_t>(8 + i % 4);
    expect_ep_equals_one_layer(l, even_split(80, E, R), "all to one rank");
  }
  // -1, garbage and duplicate ids; rank 3's experts never picked.
  {
    ref::HostLayer l = g;
    std::mt19937_64 rng(5);
    for (int64_t i = 0; i < 80 * k; ++i) {
      int32_t id = static_cast<int32_t>(rng() % 12);  // experts 0..11: rank 3 (12..15) unused
      switch (rng() % 6) {
        case 0: id = -1; break;
        case 1: id = static_cast<int32_t>(E + rng() % 50); break;
        case 2: id = i % k ? l.topk_ids[i - 1] : id; break;  // a duplicate of the previous slot
        case 3: id = -static_cast<int32_t>(rng() % 1000) - 2; break;
        default: break;
      }
      l.topk_ids[i] = id;
    }
    expect_ep_equals_one_layer(l, even_split(80, E, R), "invalid, garbage, duplicates, an unpicked rank");
  }
  // T different on every rank, including empty ranks.
  {
    Split sp{ref::EpPlacement::contiguous(E, R), {0, 37, 1, 42}};
    expect_ep_equals_one_layer(g, sp, "T = 0, 37, 1, 42");
    Split all_empty{ref::EpPlacement::contiguous(E, R), {0, 0, 0, 0}};
    Problem q = p;
    q.num_tokens = 0;
    expect_ep_equals_one_layer(ref::make_random_layer(q, 4), all_empty, "every rank T = 0");
  }
  // NaN in one token's input stays in that token's row on its home rank.
  {
    ref::HostLayer l = g;
    ref::store_from_float(p.input_dtype, l.hidden.data(), 45 * p.hidden_size + 3, std::nanf(""));
    expect_ep_equals_one_layer(l, even_split(80, E, R), "NaN in token 45");
  }
}

TEST(ExpertParallelReference, ScatteredPlacementWeightsOnTheInputAndFp8) {
  const int64_t E = 12, R = 3;
  // Experts dealt out of order (EPLB-like), one expert placed nowhere.
  ref::EpPlacement pl;
  pl.num_experts = E;
  pl.num_ranks = R;
  pl.owner = {2, 0, 1, 1, 0, 2, -1, 0, 2, 1, 0, 1};
  pl.local.assign(E, -1);
  std::vector<int32_t> next(R, 0);
  for (int64_t e = E - 1; e >= 0; --e)
    if (pl.owner[e] >= 0) pl.local[e] = next[pl.owner[e]]++;
  Problem p = test::small_problem(50, E, 3, 64, 32, MOEKIT_DTYPE_BF16);
  expect_ep_equals_one_layer(ref::make_random_layer(p, 7), Split{pl, {20, 5, 25}}, "scattered placement");
  // Router weights on the input (top-1, as vLLM allows).
  Problem w = test::small_problem(50, E, 1, 64, 32, MOEKIT_DTYPE_BF16);
  w.apply_router_weight_on_input = 1;
  expect_ep_equals_one_layer(ref::make_random_layer(w, 8), Split{pl, {10, 30, 10}}, "weights on the input");
  // fp8 weights, both schemes (block scales cut per expert like the weights).
  for (moekit_quant_t kind : {MOEKIT_QUANT_FP8_BLOCK, MOEKIT_QUANT_FP8_TENSOR}) {
    const Problem f = test::fp8_problem(48, E, 3, 256, 128, kind);
    expect_ep_equals_one_layer(ref::make_random_layer(f, 9), Split{pl, {16, 16, 16}},
                               kind == MOEKIT_QUANT_FP8_BLOCK ? "fp8 block" : "fp8 per tensor");
  }
}

// Graph mode's fixed capacity (rows one rank sends another per call): at
// exactly the rows routing needs nothing is lost and every rank equals the
// one layer; one row under, the last token to the full rank comes back NaN
// throughout (never a partial sum) and is counted; far under, with random
// routing, every token that lost a row is NaN and every other token exact.
TEST(ExpertParallelReference, CapacityFullOneOverAndFarUnder) {
  const int64_t E = 16, k = 4, R = 4;
  Problem p = test::small_problem(80, E, k, 64, 32, MOEKIT_DTYPE_BF16);
  ref::HostLayer all_to_two = ref::make_random_layer(p, 11);
  for (int64_t i = 0; i < 80 * k; ++i) all_to_two.topk_ids[i] = static_cast<int32_t>(8 + i % 4);
  const Split sp{ref::EpPlacement::contiguous(E, R), {20, 25, 15, 20}};
  expect_ep_equals_one_layer(all_to_two, sp, "capacity exactly full (25)", 25);
  expect_ep_equals_one_layer(all_to_two, sp, "capacity one under the largest rank (24)", 24);
  for (auto dt : {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP32}) {
    Problem q = test::small_problem(61, E, k, 64, 32, dt);
    expect_ep_equals_one_layer(ref::make_random_layer(q, 12), even_split(61, E, R), "random routing, capacity 6", 6);
  }
}
