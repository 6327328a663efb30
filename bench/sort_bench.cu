// Sort-stage benchmark: median µs of kernels::launch_sort (keys, CUB radix
// sort, maps) as CUDA graph replays after warm-up, from T = 1 to 10^6.
//   moekit_sort_bench [out.jsonl]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/kernels.hpp"
#include "bench/graph_timer.hpp"
#include "moekit/moekit.hpp"


int main(int argc, char** argv) {
  if (!moekit::cuda_available()) {
    std::fprintf(stderr, "moekit_sort_bench: no CUDA GPU of compute capability 9.0; nothing to time\n");
    return 0;
  }
  FILE* json = argc > 1 ? std::fopen(argv[1], "w") : nullptr;
  int device = 0, sms = 0;
  CHECK(cudaGetDevice(&device));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::printf("| T | k | E_local | sort µs | pairs/µs |\n|---|---|---|---|---|\n");
  for (int64_t E : {128, 256}) {
    for (int64_t T : {1, 8, 64, 256, 1024, 4096, 16384, 65536, 262144, 1000000}) {
      const int64_t k = 8, pairs = T * k;
      std::vector<int32_t> ids(pairs);
      std::mt19937 rng(static_cast<uint32_t>(T));
      for (auto& id : ids) id = static_cast<int32_t>(rng() % E);
      size_t temp = 0;
      CHECK(moekit::kernels::sort_temp_bytes(pairs, E, &temp));
      int32_t *d_ids, *vals0, *vals1, *offsets, *inverse;
      uint32_t *keys0, *keys1;
      void* cub;
      CHECK(cudaMalloc(&d_ids, pairs * 4));
      CHECK(cudaMalloc(&keys0, pairs * 4));
      CHECK(cudaMalloc(&keys1, pairs * 4));
      CHECK(cudaMalloc(&vals0, pairs * 4));
      CHECK(cudaMalloc(&vals1, pairs * 4));
      CHECK(cudaMalloc(&inverse, pairs * 4));
      CHECK(cudaMalloc(&offsets, (E + 1) * 4));
      CHECK(cudaMalloc(&cub, temp));
      CHECK(cudaMemcpy(d_ids, ids.data(), pairs * 4, cudaMemcpyHostToDevice));
      moekit::kernels::SortBuffers b{{keys0, keys1}, {vals0, vals1}, cub, temp, offsets, inverse};
      const int32_t* sorted = nullptr;
      cudaGraph_t graph;
      CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
      CHECK(moekit::kernels::launch_sort(d_ids, nullptr, T, k, E, E, 0, nullptr, b, nullptr, &sorted, {device, sms}, stream));
      CHECK(cudaStreamEndCapture(stream, &graph));
      const float median = moekit::bench::median_replay_us(graph, stream);
      if (median < 0) { std::fprintf(stderr, "timing failed\n"); return 1; }
      std::printf("| %lld | %lld | %lld | %.2f | %.0f |\n", (long long)T, (long long)k, (long long)E,
                  median, pairs / median);
      if (json)
        std::fprintf(json, "{\"T\": %lld, \"k\": %lld, \"E_local\": %lld, \"sort_us\": %.3f}\n",
                     (long long)T, (long long)k, (long long)E, median);
      for (void* p : {(void*)d_ids, (void*)keys0, (void*)keys1, (void*)vals0, (void*)vals1,
                      (void*)inverse, (void*)offsets, cub})
        CHECK(cudaFree(p));
    }
  }
  if (json) std::fclose(json);
  return 0;
}
