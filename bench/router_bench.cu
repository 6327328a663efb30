// Router benchmark: median time per call of moekit's fused routers, measured
// as CUDA graph replays of R calls over R rotating logits buffers (more than
// L2 holds at large T), after warm-up. Writes JSON lines for bench/router_torch.py.
//   moekit_router_bench [out.jsonl]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/graph_timer.hpp"
#include "moekit/moekit.hpp"
#include "reference/random_layer.hpp"


struct Case {
  const char* model;
  moekit_router_config_t config;
  int64_t experts, top_k;
};

int main(int argc, char** argv) {
  if (!moekit::cuda_available()) {
    std::fprintf(stderr, "moekit_router_bench: no CUDA GPU of compute capability 9.0; nothing to time\n");
    return 0;
  }
  FILE* json = argc > 1 ? std::fopen(argv[1], "w") : nullptr;
  const Case cases[] = {
      {"qwen3-30b-a3b", {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_DTYPE_BF16, 1, 1, 1, 1.0f}, 128, 8},
      {"mixtral-8x7b", {MOEKIT_ROUTER_TOPK_SOFTMAX, MOEKIT_DTYPE_BF16, 1, 1, 1, 1.0f}, 8, 2},
      {"deepseek-v3", {MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK, MOEKIT_DTYPE_FP32, 1, 8, 4, 2.5f}, 256, 8},
  };
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::printf("| model | T | E | k | moekit router µs |\n|---|---|---|---|---|\n");
  for (const Case& c : cases) {
    for (int64_t T : {1, 64, 1024, 16384, 65536}) {
      const size_t bytes = T * c.experts * (c.config.logits_dtype == MOEKIT_DTYPE_FP32 ? 4 : 2);
      const int R = static_cast<int>(std::clamp<size_t>((size_t{256} << 20) / bytes, 4, 32));
      std::vector<void*> logits(R);
      std::vector<uint8_t> host(bytes);
      for (int r = 0; r < R; ++r) {
        moekit::ref::fill_random(c.config.logits_dtype, host.data(), T * c.experts, 1.0f, r + 1);
        CHECK(cudaMalloc(&logits[r], bytes));
        CHECK(cudaMemcpy(logits[r], host.data(), bytes, cudaMemcpyHostToDevice));
      }
      float* bias = nullptr;
      int32_t* ids = nullptr;
      float* weights = nullptr;
      CHECK(cudaMalloc(&bias, c.experts * 4));
      CHECK(cudaMemset(bias, 0, c.experts * 4));
      CHECK(cudaMalloc(&ids, T * c.top_k * 4));
      CHECK(cudaMalloc(&weights, T * c.top_k * 4));
      moekit::RouterArguments a{};
      a.problem = moekit::default_router_problem();
      a.problem.num_tokens = T;
      a.problem.num_experts = c.experts;
      a.problem.top_k = c.top_k;
      a.problem.config = c.config;
      a.correction_bias = c.config.kind == MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK ? bias : nullptr;
      a.topk_ids = ids;
      a.topk_weights = weights;
      cudaGraph_t graph;
      CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
      for (int r = 0; r < R; ++r) {
        a.logits = logits[r];
        moekit::Status s = moekit::Router::run(a, stream);
        if (!s) { std::fprintf(stderr, "router: %s\n", s.message().c_str()); return 1; }
      }
      CHECK(cudaStreamEndCapture(stream, &graph));
      const float median = moekit::bench::median_replay_us(graph, stream) / R;
      if (median < 0) { std::fprintf(stderr, "timing failed\n"); return 1; }
      std::printf("| %s | %lld | %lld | %lld | %.2f |\n", c.model, (long long)T, (long long)c.experts,
                  (long long)c.top_k, median);
      if (json)
        std::fprintf(json, "{\"gpu\": \"%s\", \"model\": \"%s\", \"kind\": %d, \"T\": %lld, \"E\": %lld, "
                     "\"k\": %lld, \"logits_dtype\": \"%s\", \"rotating_buffers\": %d, \"moekit_us\": %.3f}\n",
                     prop.name, c.model, c.config.kind, (long long)T, (long long)c.experts,
                     (long long)c.top_k, moekit_dtype_name(c.config.logits_dtype), R, median);
      for (void* p : logits) CHECK(cudaFree(p));
      CHECK(cudaFree(bias));
      CHECK(cudaFree(ids));
      CHECK(cudaFree(weights));
    }
  }
  if (json) std::fclose(json);
  return 0;
}
