// The decode pair kernel's producer (decode_pair_schedule.hpp) over
// simulated CTAs: random interleavings of every CTA's producer and consumer
// steps, GEMM 1 items' completion signals that land late, a previous kernel
// that finishes late, and fewer resident CTAs than the grid (later CTAs
// start only as earlier ones exit, as when other work holds the SMs). Every
// run must end with every item consumed exactly once, each CTA's items
// rising, and no GEMM 2 stage's rows loaded before its unit was complete:
// a hang shows as a state where nothing can move.
#include <gtest/gtest.h>

#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "kernels/gemm/decode_pair_schedule.hpp"

namespace {

using moekit::kernels::pair::kEndTicket;
using moekit::kernels::pair::Producer;

struct Shape {
  int units, slices1, slices2, k1, k2, stages;
  int64_t items1() const { return int64_t{units} * slices1; }
  int64_t total() const { return items1() + int64_t{units} * slices2; }
};

struct World;

// One CTA: its producer's environment and its consumers' walk.
struct Cta {
  World* w = nullptr;
  int id = 0;
  Producer prod;
  std::vector<int64_t> slot_ticket;
  std::vector<int> slot_uses;      // times armed
  std::vector<int> slot_released;  // times the consumers released it
  std::vector<int> slot_loaded;    // times its rows were loaded
  // consumers
  int64_t c_stage = 0;  // the next stage to consume
  int64_t c_ticket = 0;
  int c_kb = 0;
  bool c_done = false;
  std::vector<int64_t> items;  // consumed, in order

  void init(World* world, int cta);
  int64_t claim();
  bool slot_free(int slot, uint32_t parity);
  void arm(int slot, int64_t ticket, int kb);
  void arm_end(int slot);
  int64_t ticket_at(int slot) { return slot_ticket[slot]; }
  bool wait_previous();
  bool unit_ready(int64_t ticket);
  void load(int slot, int64_t ticket, int kb);
  bool consume();  // one consumer step; whether it moved
};

struct World {
  Shape s;
  std::mt19937_64 rng;
  int64_t ticket = 0;
  bool previous_done = false;
  std::vector<int> unit_done;           // GEMM 1 items of each unit signalled
  std::deque<int> pending;              // signals on their way (units)
  std::vector<int> consumed;            // per item
  std::string failure;
  int unit_of(int64_t t) const {
    return static_cast<int>(t < s.items1() ? t / s.slices1 : (t - s.items1()) / s.slices2);
  }
  void fail(const std::string& why) {
    if (failure.empty()) failure = why;
  }
};

void Cta::init(World* world, int cta) {
  w = world;
  id = cta;
  const Shape& s = w->s;
  prod.items1 = s.items1();
  prod.total = s.total();
  prod.k_stages1 = s.k1;
  prod.k_stages2 = s.k2;
  prod.stages = s.stages;
  slot_ticket.assign(s.stages, -2);
  slot_uses.assign(s.stages, 0);
  slot_released.assign(s.stages, 0);
  slot_loaded.assign(s.stages, 0);
}

int64_t Cta::claim() { return w->ticket++; }

bool Cta::slot_free(int slot, uint32_t parity) {
  // The producer asks for the release of the slot's previous use.
  if (parity != static_cast<uint32_t>((slot_uses[slot] - 1) & 1)) w->fail("wrong parity for slot");
  return slot_released[slot] >= slot_uses[slot];
}

void Cta::arm(int slot, int64_t ticket, int kb) {
  if (slot_released[slot] < slot_uses[slot]) w->fail("armed a slot still in use");
  if (ticket < 0 || ticket >= w->s.total()) w->fail("armed a ticket out of range");
  if (kb < 0 || kb >= prod.k_stages(ticket)) w->fail("armed a stage out of range");
  slot_ticket[slot] = ticket;
  ++slot_uses[slot];
}

void Cta::arm_end(int slot) {
  if (slot_released[slot] < slot_uses[slot]) w->fail("armed the end in a slot still in use");
  slot_ticket[slot] = kEndTicket;
  ++slot_uses[slot];
  ++slot_loaded[slot];  // the end slot carries no rows
}

bool Cta::wait_previous() { return w->previous_done; }

bool Cta::unit_ready(int64_t ticket) {
  if (ticket < w->s.items1()) w->fail("asked a GEMM 1 ticket's unit");
  return w->unit_done[w->unit_of(ticket)] == w->s.slices1;
}

void Cta::load(int slot, int64_t ticket, int kb) {
  if (slot_ticket[slot] != ticket) w->fail("rows loaded for another ticket than the slot's");
  if (slot_loaded[slot] != slot_uses[slot] - 1) w->fail("rows loaded twice or before arming");
  if (ticket < w->s.items1() && !w->previous_done) w->fail("GEMM 1 rows before the previous kernel");
  if (ticket >= w->s.items1() && w->unit_done[w->unit_of(ticket)] != w->s.slices1)
    w->fail("GEMM 2 rows before their unit was complete");
  (void)kb;
  ++slot_loaded[slot];
}

bool Cta::consume() {
  if (c_done) return false;
  const int stages = w->s.stages;
  const int slot = static_cast<int>(c_stage % stages);
  const int use = static_cast<int>(c_stage / stages) + 1;  // the slot's use this stage is
  if (slot_uses[slot] < use || slot_loaded[slot] < use) return false;  // not full yet
  if (c_kb == 0) {
    c_ticket = slot_ticket[slot];
    if (c_ticket == kEndTicket) {
      c_done = true;
      return true;
    }
    if (!items.empty() && c_ticket <= items.back()) w->fail("a CTA's items do not rise");
    items.push_back(c_ticket);
  } else if (slot_ticket[slot] != c_ticket) {
    w->fail("an item's stages are not consecutive");
  }
  ++slot_released[slot];
  ++c_stage;
  if (++c_kb == prod.k_stages(c_ticket)) {
    c_kb = 0;
    ++w->consumed[c_ticket];
    if (c_ticket < w->s.items1()) w->pending.push_back(w->unit_of(c_ticket));  // lands later
  }
  return true;
}

// Runs a grid of `grid` CTAs with at most `resident` at once over shape s;
// returns "" or what went wrong.
std::string run(const Shape& s, int grid, int resident, uint64_t seed) {
  World w;
  w.s = s;
  w.rng.seed(seed);
  w.unit_done.assign(s.units, 0);
  w.consumed.assign(s.total(), 0);
  std::vector<Cta> ctas(grid);
  std::vector<int> running;
  int next_start = 0, exited = 0;
  auto start = [&](int id) {
    Cta& c = ctas[id];
    c.init(&w, id);
    c.prod.start(c);
    running.push_back(id);
  };
  while (next_start < grid && static_cast<int>(running.size()) < resident) start(next_start++);
  int64_t steps = 0, idle = 0;
  while (exited < grid) {
    if (!w.failure.empty()) return w.failure;
    if (++steps > 50'000'000) return "too many steps";
    const uint64_t r = w.rng();
    bool moved = false;
    if (!w.previous_done && r % 64 == 0) {
      w.previous_done = true;
      moved = true;
    } else if (!w.pending.empty() && r % 5 == 0) {
      ++w.unit_done[w.pending.front()];
      w.pending.pop_front();
      moved = true;
    } else if (!running.empty()) {
      const size_t pick = (r >> 8) % running.size();
      Cta& c = ctas[running[pick]];
      moved = (r >> 40) % 2 == 0 ? c.prod.step(c) : c.consume();
      if (c.c_done && c.prod.done()) {
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(pick));
        ++exited;
        if (next_start < grid) start(next_start++);
        moved = true;
      }
    }
    idle = moved ? 0 : idle + 1;
    if (idle > 100'000) {
      // Nothing moved for long: is any move possible at all?
      bool can = !w.previous_done || !w.pending.empty();
      for (int id : running)  // real steps: a move found is a move made
        can = can || ctas[id].prod.step(ctas[id]) || ctas[id].consume();
      if (!can) return "hang: nothing can move with " + std::to_string(grid - exited) + " CTAs left";
      idle = 0;
    }
  }
  for (int64_t t = 0; t < s.total(); ++t)
    if (w.consumed[t] != 1) return "item " + std::to_string(t) + " consumed " + std::to_string(w.consumed[t]) + " times";
  return w.failure;
}

TEST(DecodePairSchedule, EveryItemOnceAndNoHangWhateverIsResident) {
  const Shape shapes[] = {
      {1, 1, 1, 1, 1, 2},    // one item each
      {8, 24, 32, 32, 12, 6},  // qwen3 T=1 bf16: 192 + 256 items
      {8, 24, 32, 16, 6, 5},   // qwen3 T=1 fp8 block
      {3, 2, 5, 1, 7, 3},    // items shorter than the ring and longer
      {5, 7, 3, 9, 2, 9},
      {2, 1, 1, 3, 3, 4},
  };
  uint64_t seed = 1;
  for (const Shape& s : shapes) {
    const int grids[] = {1, 2, 5, static_cast<int>(s.total()), static_cast<int>(s.total()) + 3};
    for (int grid : grids) {
      // All resident, some, and one at a time (the others wait for SMs).
      const int residents[] = {grid, (grid + 1) / 2, 1};
      for (int resident : residents)
        for (int rep = 0; rep < 3; ++rep, ++seed)
          EXPECT_EQ(run(s, grid, resident, seed), "")
              << "units " << s.units << " slices " << s.slices1 << "/" << s.slices2 << " stages " << s.k1 << "/"
              << s.k2 << " ring " << s.stages << " grid " << grid << " resident " << resident << " seed " << seed;
    }
  }
}

TEST(DecodePairSchedule, RandomShapes) {
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    Shape s{1 + static_cast<int>(rng() % 6), 1 + static_cast<int>(rng() % 5), 1 + static_cast<int>(rng() % 5),
            1 + static_cast<int>(rng() % 10), 1 + static_cast<int>(rng() % 10), 2 + static_cast<int>(rng() % 8)};
    const int grid = 1 + static_cast<int>(rng() % 12);
    const int resident = 1 + static_cast<int>(rng() % grid);
    EXPECT_EQ(run(s, grid, resident, 1000 + i), "") << "case " << i;
  }
}

// With a static assignment in place of tickets the same producer stalls, so
// the simulation above can see a hang. One unit of two GEMM 1 items
// (tickets 0, 1) and two GEMM 2 items (2, 3) on a grid of 2: statically CTA
// 0 takes items 0 and 2, CTA 1 items 1 and 3. With only CTA 0 resident, its
// item 2 waits for item 1, which is CTA 1's, and nothing can move.
TEST(DecodePairSchedule, TheSimulationCatchesAStaticAssignmentHang) {
  Shape s{1, 2, 2, 1, 1, 2};
  World w;
  w.s = s;
  w.unit_done.assign(1, 0);
  w.consumed.assign(s.total(), 0);
  w.previous_done = true;
  Cta c;  // CTA 0, alone
  c.init(&w, 0);
  // A static claim: 0, then 2, then past the end.
  int64_t statics[] = {0, 2, 99};
  int k = 0;
  struct Env {
    Cta& c;
    int64_t* statics;
    int& k;
    int64_t claim() { return statics[k++]; }
    bool slot_free(int slot, uint32_t parity) { return c.slot_free(slot, parity); }
    void arm(int slot, int64_t t, int kb) { c.arm(slot, t, kb); }
    void arm_end(int slot) { c.arm_end(slot); }
    int64_t ticket_at(int slot) { return c.ticket_at(slot); }
    bool wait_previous() { return c.wait_previous(); }
    bool unit_ready(int64_t t) { return c.unit_ready(t); }
    void load(int slot, int64_t t, int kb) { c.load(slot, t, kb); }
  } env{c, statics, k};
  c.prod.start(env);
  bool moved = true;
  for (int i = 0; i < 1000 && moved; ++i) {
    moved = c.prod.step(env) || c.consume();
    while (!w.pending.empty()) {
      ++w.unit_done[w.pending.front()];
      w.pending.pop_front();
      moved = true;
    }
  }
  EXPECT_FALSE(moved) << "a static assignment should have stalled";
  EXPECT_FALSE(c.c_done);
  EXPECT_EQ(w.unit_done[0], 1);  // only CTA 0's GEMM 1 item: the unit never completes
}

}  // namespace
