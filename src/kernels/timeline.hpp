// The layer's kernel timeline (builds configured with -DMOEKIT_TIMELINE=ON
// only; everything here is absent from ordinary builds' kernels): each warp
// of every instrumented kernel appends timestamped events (its start, the
// release of its programmatic-dependent-launch wait, a GEMM consumer's first
// full stage, its end) to a device log, so one graph replay of a decode layer
// shows where its microseconds go with the kernels overlapped as they run,
// which ncu (one kernel at a time) cannot; the GEMM kernels also mark each
// item's main loop and epilogue. The host side: attach a log,
// replay, download, summarize (bench/layer_bench.cu --timeline).
#pragma once

#include <cstdint>
#include <vector>

namespace moekit::kernels::timeline {

// kItemMath / kItemStored: a GEMM consumer warp has an item's accumulators
// (its main loop is done, the epilogue starts) / has stored the item, once
// per item (decode and prefill kernels), so a report can split each item's
// time into main loop and epilogue.
enum Event : uint8_t { kStart = 0, kWait = 1, kFirstStage = 2, kEnd = 3, kItemMath = 4, kItemStored = 5 };

// What a kernel is (its START records say; a WAIT record carries kUnknown).
enum Kind : uint8_t {
  kUnknown = 0,
  kRouter,
  kSort,
  kSortGatherTiny,
  kPermute,
  kQuantize,
  kGemmDecode,
  kGemmPrefill,
  kGemmSimple,
  kActivation,
  kFinalize,
  kKinds
};
const char* kind_name(uint8_t kind);

// One event of one warp: 32 bytes.
struct Record {
  uint64_t grid;    // %gridid: one per kernel launch (graph replays included)
  uint64_t time;    // %globaltimer, ns (the same clock on every SM)
  uint32_t block;   // blockIdx.x
  uint32_t clock;   // clock() of the SM, for durations inside one warp
  uint16_t warp;    // warp of the block
  uint8_t smid;
  uint8_t kind;
  uint8_t event;
  uint8_t pad[3];
};
static_assert(sizeof(Record) == 32, "one record is 32 bytes");

// Where the kernels write, device memory: kLanes regions of `capacity`
// records each and their append counters (count[kLanes]); an SM appends to
// region smid % kLanes, so appends spread over kLanes counters instead of
// contending on one. A full region drops later records (its count keeps
// counting).
constexpr int kLanes = 32;
struct Log {
  Record* records;   // [kLanes * capacity]
  uint32_t capacity; // per region
  uint32_t* count;   // [kLanes]
};

// One launch as its records show it, times in ns relative to `origin` (the
// earliest START of the records summarized).
struct Span {
  uint64_t grid = 0;
  uint8_t kind = kUnknown;
  int warps = 0;            // warps that recorded a START
  int blocks = 0;           // distinct blocks
  int64_t first_start = 0, last_start = 0;
  int64_t first_wait = -1, median_wait = -1, last_wait = -1;  // -1: no warp waited
  int64_t first_stage = -1;                                   // -1: none recorded
  int64_t median_end = 0, last_end = 0;
};

// The launches in `records`, ordered by their first START. Records of a
// launch without a START (the log filled up) are dropped.
std::vector<Span> summarize(const std::vector<Record>& records);

// Points every instrumented translation unit's kernels at `log` (a null
// records pointer stops recording). False if a copy failed or the build has
// no timeline (MOEKIT_TIMELINE off).
bool attach(const Log& log);
bool enabled();

// Called by each instrumented translation unit at load (timeline.cuh).
using AttachFn = bool (*)(const Log&);
bool register_unit(AttachFn fn);

}  // namespace moekit::kernels::timeline
