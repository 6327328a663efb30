// The kernel timeline's host summary (src/kernels/timeline.hpp): launches
// grouped by grid id, ordered by their first start, times relative to the
// earliest start, medians over warps (each with its first wait and last
// end), and launches without a START dropped.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/timeline.hpp"

using namespace moekit::kernels::timeline;

namespace {

Record rec(uint64_t grid, uint8_t kind, uint8_t event, uint64_t time, uint32_t block = 0, uint16_t warp = 0) {
  Record r{};
  r.grid = grid;
  r.kind = kind;
  r.event = event;
  r.time = time;
  r.block = block;
  r.warp = warp;
  return r;
}

}  // namespace

TEST(Timeline, SummarizesLaunchesInStartOrder) {
  const std::vector<Record> records = {
      // The decode GEMM (grid 7) starts under the sort (grid 9) and waits for it.
      rec(7, kGemmDecode, kStart, 1200, 0, 0), rec(7, kGemmDecode, kStart, 1250, 1, 0),
      rec(7, kGemmDecode, kStart, 1300, 1, 1), rec(7, kUnknown, kWait, 1500, 0, 0),
      rec(7, kUnknown, kWait, 1700, 1, 0), rec(7, kUnknown, kWait, 1600, 1, 1),
      rec(7, kGemmDecode, kFirstStage, 1650, 1, 1), rec(7, kGemmDecode, kEnd, 3000, 0, 0),
      rec(7, kGemmDecode, kEnd, 2000, 1, 0), rec(7, kGemmDecode, kEnd, 2500, 1, 1),
      // A warp's repeated WAIT and END (a producer warp's idle lanes, then lane 0): its first and last count.
      rec(7, kUnknown, kWait, 2900, 1, 1), rec(7, kGemmDecode, kEnd, 2200, 1, 1),
      rec(9, kSort, kStart, 1000), rec(9, kSort, kEnd, 1400),
      // A launch whose START records were dropped (full log): left out.
      rec(11, kUnknown, kWait, 900), rec(11, kFinalize, kEnd, 5000),
  };
  const std::vector<Span> spans = summarize(records);
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0].grid, 9u);
  EXPECT_EQ(spans[0].kind, kSort);
  EXPECT_EQ(spans[0].first_start, 0);
  EXPECT_EQ(spans[0].first_wait, -1);
  EXPECT_EQ(spans[0].last_end, 400);
  const Span& g = spans[1];
  EXPECT_EQ(g.grid, 7u);
  EXPECT_EQ(g.kind, kGemmDecode);
  EXPECT_EQ(g.warps, 3);
  EXPECT_EQ(g.blocks, 2);
  EXPECT_EQ(g.first_start, 200);
  EXPECT_EQ(g.last_start, 300);
  EXPECT_EQ(g.first_wait, 500);
  EXPECT_EQ(g.median_wait, 600);
  EXPECT_EQ(g.last_wait, 700);
  EXPECT_EQ(g.first_stage, 650);
  EXPECT_EQ(g.median_end, 1500);
  EXPECT_EQ(g.last_end, 2000);
  EXPECT_TRUE(summarize({}).empty());
}

// Ordinary builds carry no timeline: attaching a log reports it.
TEST(Timeline, OrdinaryBuildsHaveNone) {
  if (enabled()) GTEST_SKIP() << "a MOEKIT_TIMELINE build: the GPU runs (layer_bench --timeline) check it";
  EXPECT_FALSE(attach({nullptr, 0, nullptr}));
}
