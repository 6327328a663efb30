// The sort contract: every (token, slot) pair is its own row, grouped by local
// expert in pair order; invalid and remote ids never index anything.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kernels/kernels.hpp"
#include "reference/reference.hpp"

using namespace moekit;

namespace {

struct SortOut {
  std::vector<int32_t> offsets, sorted_pairs, pair_to_row;
  moekit_diagnostics_t diag{};
};

SortOut run_sort(const ref::Routing& r, const std::vector<int32_t>& ids) {
  SortOut o;
  const size_t pairs = r.num_tokens * r.top_k;
  // Poisoned outputs: every element must be written.
  o.offsets.assign(r.num_local_experts + 1, -7);
  o.sorted_pairs.assign(pairs, -7);
  o.pair_to_row.assign(pairs, -7);
  ref::sort_pairs(r, ids.data(), o.offsets.data(), o.sorted_pairs.data(), o.pair_to_row.data(),
                  &o.diag);
  return o;
}

// Independent statement of the contract: a stable sort of valid pairs by local
// expert, then the invalid pairs in pair order.
void expect_contract(const ref::Routing& r, const std::vector<int32_t>& ids, const SortOut& o) {
  const int64_t pairs = r.num_tokens * r.top_k;
  const int64_t first = r.ep_rank * r.num_local_experts;
  std::vector<std::pair<int64_t, int32_t>> valid;
  std::vector<int32_t> invalid;
  uint64_t bad_ids = 0, no_valid = 0, no_local = 0;
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    int64_t tok_bad = 0, tok_local = 0;
    for (int64_t s = 0; s < r.top_k; ++s) {
      const int64_t p = t * r.top_k + s, id = ids[p];
      const bool in_range = id >= 0 && id < r.num_experts;
      const bool local = in_range && id >= first && id < first + r.num_local_experts;
      tok_bad += !in_range;
      tok_local += local;
      if (local) valid.push_back({id - first, static_cast<int32_t>(p)});
      else invalid.push_back(static_cast<int32_t>(p));
    }
    bad_ids += tok_bad;
    no_valid += tok_bad == r.top_k;
    no_local += tok_local == 0;
  }
  std::stable_sort(valid.begin(), valid.end(),
                   [](auto& a, auto& b) { return a.first < b.first; });
  std::vector<int32_t> want_sorted, want_inverse(pairs, -1), want_offsets(r.num_local_experts + 1, 0);
  for (auto& v : valid) ++want_offsets[v.first + 1];
  for (int64_t e = 0; e < r.num_local_experts; ++e) want_offsets[e + 1] += want_offsets[e];
  for (size_t i = 0; i < valid.size(); ++i) {
    want_sorted.push_back(valid[i].second);
    want_inverse[valid[i].second] = static_cast<int32_t>(i);
  }
  want_sorted.insert(want_sorted.end(), invalid.begin(), invalid.end());
  EXPECT_EQ(o.offsets, want_offsets);
  EXPECT_EQ(o.sorted_pairs, want_sorted);
  EXPECT_EQ(o.pair_to_row, want_inverse);
  EXPECT_EQ(o.diag.invalid_ids, bad_ids);
  EXPECT_EQ(o.diag.tokens_without_valid_expert, no_valid);
  EXPECT_EQ(o.diag.tokens_without_local_expert, no_local);
}

ref::Routing routing(int64_t T, int64_t k, int64_t E, int64_t ep_size = 1, int64_t ep_rank = 0) {
  return ref::Routing{T, k, E, E / ep_size, ep_rank};
}

}  // namespace

TEST(Sort, DuplicateIdsEachGetTheirOwnRow) {
  auto r = routing(3, 4, 128);
  std::vector<int32_t> ids = {5, 88, 88, 65, 0, 0, 0, 0, 127, 3, 127, 3};
  SortOut o = run_sort(r, ids);
  expect_contract(r, ids, o);
  EXPECT_EQ(o.offsets[128], 12);
  for (int32_t row : o.pair_to_row) EXPECT_GE(row, 0);
}

TEST(Sort, InvalidIdsNeverGetARow) {
  auto r = routing(4, 3, 16);
  std::vector<int32_t> ids = {-1, -1, -1, 16, 1000000, 3, INT32_MIN, INT32_MAX, -5, 2, 2, 15};
  SortOut o = run_sort(r, ids);
  expect_contract(r, ids, o);
  EXPECT_EQ(o.diag.invalid_ids, 8u);
  EXPECT_EQ(o.diag.tokens_without_valid_expert, 2u);  // the -1 row and the garbage row
  EXPECT_EQ(o.offsets[16], 4);
}

TEST(Sort, OtherRanksIdsContributeNothing) {
  auto r = routing(4, 2, 16, 4, 2);  // this rank owns experts [8, 12)
  std::vector<int32_t> ids = {0, 8, 11, 12, 7, 15, 9, 9};
  SortOut o = run_sort(r, ids);
  expect_contract(r, ids, o);
  EXPECT_EQ(o.offsets, (std::vector<int32_t>{0, 1, 3, 3, 4}));
  EXPECT_EQ(o.diag.tokens_without_local_expert, 1u);
  EXPECT_EQ(o.diag.invalid_ids, 0u);
}

TEST(Sort, RankThatReceivesNothing) {
  auto r = routing(5, 2, 16, 2, 1);
  std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7, 0, 0};
  SortOut o = run_sort(r, ids);
  expect_contract(r, ids, o);
  EXPECT_EQ(o.offsets.back(), 0);
}

TEST(Sort, ZeroTokens) {
  auto r = routing(0, 8, 64);
  SortOut o = run_sort(r, {});
  expect_contract(r, {}, o);
  EXPECT_EQ(o.offsets.back(), 0);
}

TEST(Sort, TopKEqualsE) {
  auto r = routing(3, 6, 6);
  std::vector<int32_t> ids = {5, 4, 3, 2, 1, 0, 0, 1, 2, 3, 4, 5, 2, 2, 2, 2, 2, 2};
  expect_contract(r, ids, run_sort(r, ids));
}

TEST(Sort, AllTokensOnOneExpertAndOnlyTheLast) {
  for (int32_t target : {0, 63}) {
    auto r = routing(300, 8, 64);
    std::vector<int32_t> ids(300 * 8, target);
    SortOut o = run_sort(r, ids);
    expect_contract(r, ids, o);
    EXPECT_EQ(o.offsets[target + 1] - o.offsets[target], 2400);
  }
}

TEST(Sort, ExactlyOneTokenPerExpert) {
  auto r = routing(257, 1, 257);
  std::vector<int32_t> ids(257);
  for (int i = 0; i < 257; ++i) ids[i] = 256 - i;
  SortOut o = run_sort(r, ids);
  expect_contract(r, ids, o);
  for (int e = 0; e < 257; ++e) EXPECT_EQ(o.offsets[e], e);
}

TEST(Sort, RandomMixturesAroundThresholds) {
  std::mt19937 rng(1234);
  for (int64_t T : {1, 255, 256, 257, 1023, 1024, 1025, 4097}) {
    for (int64_t k : {1, 3, 6, 9, 22}) {
      for (int64_t E : {72, 257, 1100}) {
        if (k > E) continue;
        auto r = routing(T, k, E);
        std::vector<int32_t> ids(T * k);
        std::uniform_int_distribution<int32_t> id(-3, static_cast<int32_t>(E) + 3);
        for (auto& v : ids) v = (rng() % 7 == 0) ? static_cast<int32_t>(rng()) : id(rng);
        expect_contract(r, ids, run_sort(r, ids));
      }
    }
  }
}

// Which of the CUDA sort's implementations take which sizes (host code; the
// GPU suite checks each one's answer): one block up to 4096 pairs, counting up
// to 65536 pairs with E_local < 1024, radix above 4096 pairs; the counting
// sort's scratch is one int32 count per tile of 1024 pairs and key.
TEST(SortPaths, EachPathTakesTheSizesItCan) {
  using kernels::SortPath;
  using kernels::sort_path_fits;
  EXPECT_TRUE(sort_path_fits(SortPath::kOneBlock, 4096, 5000));
  EXPECT_FALSE(sort_path_fits(SortPath::kOneBlock, 4097, 128));
  EXPECT_TRUE(sort_path_fits(SortPath::kCounting, 1, 1));
  EXPECT_TRUE(sort_path_fits(SortPath::kCounting, 65536, 1023));
  EXPECT_FALSE(sort_path_fits(SortPath::kCounting, 65537, 128));
  EXPECT_FALSE(sort_path_fits(SortPath::kCounting, 5000, 1024));
  EXPECT_FALSE(sort_path_fits(SortPath::kRadix, 4096, 128));
  EXPECT_TRUE(sort_path_fits(SortPath::kRadix, 4097, 128));
  for (int64_t pairs : {0, 1, 32, 1024, 1025, 4096, 1 << 20}) EXPECT_TRUE(sort_path_fits(SortPath::kAuto, pairs, 300));
  size_t bytes = 1;
  EXPECT_EQ(kernels::sort_temp_bytes(1024, 128, &bytes), cudaSuccess);  // one tile: one launch, no counts
  EXPECT_EQ(bytes, 0u);
  EXPECT_EQ(kernels::sort_temp_bytes(2049, 128, &bytes), cudaSuccess);  // three tiles of 129 keys
  EXPECT_EQ(bytes, 3u * 129 * 4);
}
