// Host side of the kernel timeline (timeline.hpp): the registry of
// instrumented translation units, and the summary of a downloaded log.
#include "kernels/timeline.hpp"

#include <algorithm>
#include <map>
#include <mutex>

#ifndef MOEKIT_TIMELINE
#define MOEKIT_TIMELINE 0
#endif

namespace moekit::kernels::timeline {

namespace {

struct Registry {
  std::mutex mutex;
  std::vector<AttachFn> units;
};
Registry& registry() {
  static Registry r;  // constructed on first use: units register from static initializers
  return r;
}

int64_t median(std::vector<int64_t> v) {
  if (v.empty()) return -1;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

}  // namespace

const char* kind_name(uint8_t kind) {
  switch (kind) {
    case kRouter: return "router";
    case kSort: return "sort";
    case kSortGatherTiny: return "sort+gather (tiny)";
    case kPermute: return "gather";
    case kQuantize: return "quantize";
    case kGemmDecode: return "decode GEMM";
    case kGemmPrefill: return "prefill GEMM";
    case kGemmSimple: return "simple GEMM";
    case kActivation: return "activation";
    case kFinalize: return "finalize";
    default: return "?";
  }
}

bool register_unit(AttachFn fn) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.units.push_back(fn);
  return true;
}

bool enabled() { return MOEKIT_TIMELINE != 0; }

bool attach(const Log& log) {
  if (!enabled()) return false;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  bool ok = !r.units.empty();
  for (AttachFn fn : r.units) ok = fn(log) && ok;
  return ok;
}

std::vector<Span> summarize(const std::vector<Record>& records) {
  // A warp may record an event more than once (a warp-specialized kernel's
  // producer warp: its idle lanes reach the final wait and the end before
  // lane 0 has streamed the last stage), so each warp counts with its
  // first WAIT and its last END.
  struct Acc {
    Span span;
    bool started = false;
    std::map<uint64_t, int64_t> wait_of, end_of;  // (block, warp) -> time
    std::vector<uint32_t> blocks;
    int64_t first_start = 0, last_start = 0, first_stage = -1, last_end = 0;
  };
  std::map<uint64_t, Acc> by_grid;
  bool any = false;
  int64_t origin = 0;
  for (const Record& r : records)
    if (r.event == kStart && (!any || static_cast<int64_t>(r.time) < origin)) {
      origin = static_cast<int64_t>(r.time);
      any = true;
    }
  for (const Record& r : records) {
    Acc& a = by_grid[r.grid];
    const int64_t t = static_cast<int64_t>(r.time) - origin;
    switch (r.event) {
      case kStart:
        if (!a.started || t < a.first_start) a.first_start = t;
        if (!a.started || t > a.last_start) a.last_start = t;
        a.started = true;
        a.span.kind = r.kind;
        ++a.span.warps;
        a.blocks.push_back(r.block);
        break;
      case kWait: {
        const uint64_t w = uint64_t{r.block} << 16 | r.warp;
        auto it = a.wait_of.find(w);
        if (it == a.wait_of.end()) a.wait_of.emplace(w, t); else it->second = std::min(it->second, t);
        break;
      }
      case kFirstStage:
        if (a.first_stage < 0 || t < a.first_stage) a.first_stage = t;
        break;
      case kEnd: {
        const uint64_t w = uint64_t{r.block} << 16 | r.warp;
        auto it = a.end_of.find(w);
        if (it == a.end_of.end()) a.end_of.emplace(w, t); else it->second = std::max(it->second, t);
        a.last_end = std::max(a.last_end, t);
        break;
      }
      default: break;
    }
  }
  std::vector<Span> spans;
  for (auto& [grid, a] : by_grid) {
    if (!a.started) continue;
    Span s = a.span;
    s.grid = grid;
    std::sort(a.blocks.begin(), a.blocks.end());
    s.blocks = static_cast<int>(std::unique(a.blocks.begin(), a.blocks.end()) - a.blocks.begin());
    s.first_start = a.first_start;
    s.last_start = a.last_start;
    std::vector<int64_t> waits, ends;
    for (const auto& [w, t] : a.wait_of) waits.push_back(t);
    for (const auto& [w, t] : a.end_of) ends.push_back(t);
    if (!waits.empty()) {
      s.first_wait = *std::min_element(waits.begin(), waits.end());
      s.last_wait = *std::max_element(waits.begin(), waits.end());
      s.median_wait = median(waits);
    }
    s.first_stage = a.first_stage;
    s.median_end = ends.empty() ? a.last_start : median(ends);
    s.last_end = ends.empty() ? a.last_start : a.last_end;
    spans.push_back(s);
  }
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) {
    return x.first_start != y.first_start ? x.first_start < y.first_start : x.grid < y.grid;
  });
  return spans;
}

}  // namespace moekit::kernels::timeline
