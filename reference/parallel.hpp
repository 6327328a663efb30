// parallel_for: static contiguous chunks, so results never depend on timing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace moekit::ref {

inline int cpu_threads() {
  unsigned hw = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(hw == 0 ? 1u : hw, 1u, 64u));
}

template <class F>
void parallel_for(int64_t n, F&& body) {
  if (n <= 0) return;
  int64_t threads = std::min<int64_t>(cpu_threads(), n);
  if (threads == 1) { body(int64_t{0}, n, 0); return; }
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (int64_t t = 1; t < threads; ++t) {
    pool.emplace_back([&, t] { body(n * t / threads, n * (t + 1) / threads, static_cast<int>(t)); });
  }
  body(0, n / threads, 0);
  for (auto& th : pool) th.join();
}

}  // namespace moekit::ref
