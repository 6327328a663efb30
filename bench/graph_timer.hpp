// Timing helpers shared by the benchmarks: checked CUDA calls, and the median
// time of a captured graph's replays after warm-up.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <vector>

// In main-like functions returning int: print the failed call and return 1.
#define CHECK(expr)                                                                         \
  do {                                                                                      \
    cudaError_t e_ = (expr);                                                                \
    if (e_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "%s failed at %s:%d: %s\n", #expr, __FILE__, __LINE__,          \
                   cudaGetErrorString(e_));                                                 \
      return 1;                                                                             \
    }                                                                                       \
  } while (0)

namespace moekit::bench {

// Median µs of one replay of `graph` over `reps` timed replays after `warmup`;
// destroys the graph. Returns a negative value if a CUDA call failed.
inline float median_replay_us(cudaGraph_t graph, cudaStream_t stream, int warmup = 5, int reps = 30) {
  cudaGraphExec_t exec;
  cudaEvent_t e0, e1;
  if (cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) return -1.0f;
  bool ok = cudaEventCreate(&e0) == cudaSuccess && cudaEventCreate(&e1) == cudaSuccess;
  for (int i = 0; ok && i < warmup; ++i) ok = cudaGraphLaunch(exec, stream) == cudaSuccess;
  std::vector<float> us;
  for (int i = 0; ok && i < reps; ++i) {
    float ms = 0;
    ok = cudaEventRecord(e0, stream) == cudaSuccess && cudaGraphLaunch(exec, stream) == cudaSuccess &&
         cudaEventRecord(e1, stream) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess &&
         cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess;
    us.push_back(ms * 1000.0f);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  if (!ok) return -1.0f;
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace moekit::bench
