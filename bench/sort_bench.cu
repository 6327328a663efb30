// Sort-stage benchmark: median µs of kernels::launch_sort as CUDA graph
// replays after warm-up, from T = 1 to 10^6: the path it picks, and each of
// its implementations (one block, counting, radix) forced where it fits.
//   moekit_sort_bench [out.jsonl]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.hpp"
#include "bench/graph_timer.hpp"
#include "moekit/moekit.hpp"

// A table cell: the time, or "-" where the path does not take the size.
static std::string cell(float us) {
  char buf[16];
  if (us < 0) return "-";
  std::snprintf(buf, sizeof buf, "%.2f", us);
  return buf;
}

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
  using moekit::kernels::SortPath;
  std::printf("| T | k | E_local | sort µs | pairs/µs | one block µs | counting µs | radix µs |\n"
              "|---|---|---|---|---|---|---|---|\n");
  for (int64_t E : {128, 256}) {
    for (int64_t T : {1, 8, 64, 256, 384, 512, 1024, 4096, 8192, 16384, 65536, 262144, 1000000}) {
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
      float us[4] = {-1, -1, -1, -1};  // auto, one block, counting, radix
      const SortPath paths[4] = {SortPath::kAuto, SortPath::kOneBlock, SortPath::kCounting, SortPath::kRadix};
      for (int i = 0; i < 4; ++i) {
        if (!moekit::kernels::sort_path_fits(paths[i], pairs, E)) continue;
        const int32_t* sorted = nullptr;
        cudaGraph_t graph;
        CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        CHECK(moekit::kernels::launch_sort(d_ids, nullptr, T, k, E, E, 0, nullptr, b, nullptr, &sorted,
                                           {device, sms}, stream, paths[i]));
        CHECK(cudaStreamEndCapture(stream, &graph));
        us[i] = moekit::bench::median_replay_us(graph, stream);
        if (us[i] < 0) { std::fprintf(stderr, "timing failed\n"); return 1; }
      }
      std::printf("| %lld | %lld | %lld | %.2f | %.0f | %s | %s | %s |\n", (long long)T, (long long)k,
                  (long long)E, us[0], pairs / us[0], cell(us[1]).c_str(), cell(us[2]).c_str(), cell(us[3]).c_str());
      if (json)
        std::fprintf(json,
                     "{\"T\": %lld, \"k\": %lld, \"E_local\": %lld, \"sort_us\": %.3f, \"one_block_us\": %.3f, "
                     "\"counting_us\": %.3f, \"radix_us\": %.3f}\n",
                     (long long)T, (long long)k, (long long)E, us[0], us[1], us[2], us[3]);
      for (void* p : {(void*)d_ids, (void*)keys0, (void*)keys1, (void*)vals0, (void*)vals1,
                      (void*)inverse, (void*)offsets, cub})
        CHECK(cudaFree(p));
    }
  }
  if (json) std::fclose(json);
  return 0;
}
