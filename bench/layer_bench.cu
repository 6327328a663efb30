// Layer benchmark: the whole MoE layer (top-k ids -> output) on built-in model
// shapes x T, timed as CUDA-graph replays that rotate among weight copies, and
// checked against the simple CUDA-core GEMM path (MOEKIT_GEMM=simple) on the
// same inputs. Writes one JSON object per row; bench/layer_report.py adds the
// ceilings, the floors and the torch peer measured in the same call.
//   moekit_layer_bench out.jsonl [model[:T[:dtype]] ...]     (default: the sweep)
//     dtype: bf16 | fp16 | fp8_block | fp8_tensor (fp8 weights, bf16 activations)
//   moekit_layer_bench --once model T [dtype]                (one call, for ncu)
//   moekit_layer_bench --host model T [dtype]                (host µs per call, idle GPU)
//   moekit_layer_bench --timeline model T [dtype] [replays]  (kernel timeline of a call; needs a
//                                                             build with -DMOEKIT_TIMELINE=ON;
//                                                             MOEKIT_TIMELINE_DUMP=file.csv: raw records)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "bench/graph_timer.hpp"
#include "common/fp8_math.hpp"
#include "kernels/timeline.hpp"
#include "moekit/moekit.hpp"
#include "reference/dtype.hpp"
#include "tools/cli/models.hpp"

using namespace moekit;

namespace {

// Uniform in [-a, a) from a hash of the index: random-looking data made on
// the device, so a 11 GB weight tensor costs no host time.
template <class T>
__global__ void fill_uniform(T* p, int64_t n, float a, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29; x *= 0x94D049BB133111EBull; x ^= x >> 32;
    const float u = (x >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    p[i] = static_cast<T>((2.0f * u - 1.0f) * a);
  }
}

// e4m3 codes of uniform values in [-448, 448): with a scale of
// stddev * sqrt(3) / 448 they dequantize to the same distribution as fill().
__global__ void fill_e4m3(uint8_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29; x *= 0x94D049BB133111EBull; x ^= x >> 32;
    const float u = (x >> 40) * (1.0f / 16777216.0f);
    p[i] = float_to_e4m3((2.0f * u - 1.0f) * kFp8Max);
  }
}

__global__ void fill_value(float* p, int64_t n, float v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) p[i] = v;
}

int fill(void* p, moekit_dtype_t dt, int64_t n, float stddev, uint64_t seed) {
  if (dt == MOEKIT_DTYPE_FP8_E4M3) {
    fill_e4m3<<<1024, 256>>>(static_cast<uint8_t*>(p), n, seed);
    CHECK(cudaGetLastError());
    return 0;
  }
  const float a = stddev * std::sqrt(3.0f);
  if (dt == MOEKIT_DTYPE_BF16) fill_uniform<<<1024, 256>>>(static_cast<__nv_bfloat16*>(p), n, a, seed);
  else if (dt == MOEKIT_DTYPE_FP16) fill_uniform<<<1024, 256>>>(static_cast<__half*>(p), n, a, seed);
  else fill_uniform<<<1024, 256>>>(static_cast<float*>(p), n, a, seed);
  CHECK(cudaGetLastError());
  return 0;
}

struct Point {
  const cli::ModelShape* model;
  int64_t T;
  moekit_dtype_t dtype;  // of input, output (and weights unless quant)
  moekit_quant_t quant;  // fp8 weights
};

const char* point_dtype_name(const Point& p) {
  if (p.quant == MOEKIT_QUANT_FP8_BLOCK) return "fp8_block";
  if (p.quant == MOEKIT_QUANT_FP8_TENSOR) return "fp8_tensor";
  return moekit_dtype_name(p.dtype);
}

// host: time the host side of one call (the GPU idle before each), not the GPU.
// The kernels of each call of a graph of `calls` layer calls, from the
// device log of `replays` replays (timeline.hpp): per kernel of a call, the
// medians over calls and replays of its events, in µs from the call's first
// kernel start; and the graph-timed µs of a call beside it.
int print_timeline(cudaGraph_t graph, cudaStream_t stream, int calls, int replays) {
  namespace tl = kernels::timeline;
  const uint32_t capacity = 1u << 15;  // records per region (32 regions: 32 MB)
  tl::Record* records = nullptr;
  uint32_t* count = nullptr;
  CHECK(cudaMalloc(&records, size_t(capacity) * tl::kLanes * sizeof(tl::Record)));
  CHECK(cudaMalloc(&count, tl::kLanes * sizeof(uint32_t)));
  if (!tl::attach({records, capacity, count})) {
    std::fprintf(stderr, "--timeline: this build has no kernel timeline (configure with -DMOEKIT_TIMELINE=ON)\n");
    return 1;
  }
  cudaGraphExec_t exec;
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) CHECK(cudaGraphLaunch(exec, stream));  // warm-up
  std::vector<std::vector<std::vector<int64_t>>> cols;  // [kernel][field] values
  std::vector<uint8_t> kinds;
  std::vector<int> blocks;
  std::vector<int64_t> totals;
  int per_call = -1;
  for (int r = 0; r < replays; ++r) {
    CHECK(cudaStreamSynchronize(stream));
    CHECK(cudaMemset(count, 0, tl::kLanes * sizeof(uint32_t)));
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaStreamSynchronize(stream));
    uint32_t n[tl::kLanes];
    CHECK(cudaMemcpy(n, count, sizeof n, cudaMemcpyDeviceToHost));
    std::vector<tl::Record> h;
    for (int lane = 0; lane < tl::kLanes; ++lane) {
      if (n[lane] > capacity) {
        std::fprintf(stderr, "--timeline: %u records in region %d, which holds %u\n", n[lane], lane, capacity);
        return 1;
      }
      const size_t at = h.size();
      h.resize(at + n[lane]);
      CHECK(cudaMemcpy(h.data() + at, records + size_t(lane) * capacity, size_t(n[lane]) * sizeof(tl::Record),
                       cudaMemcpyDeviceToHost));
    }
    const std::vector<tl::Span> spans = tl::summarize(h);
    // MOEKIT_TIMELINE_DUMP=file: every record of the last replay as CSV,
    // for analysis off the GPU machine (per-CTA tails, SMs, stage arrivals).
    if (const char* dump = std::getenv("MOEKIT_TIMELINE_DUMP"); dump != nullptr && r == replays - 1) {
      if (FILE* f = std::fopen(dump, "w")) {
        uint64_t t0 = UINT64_MAX;
        for (const tl::Record& x : h) t0 = std::min<uint64_t>(t0, x.time);
        std::fprintf(f, "grid,kind,event,block,warp,smid,ns,clock\n");
        for (const tl::Record& x : h)
          std::fprintf(f, "%llu,%s,%d,%u,%u,%u,%llu,%u\n", (unsigned long long)x.grid, tl::kind_name(x.kind),
                       int(x.event), x.block, unsigned(x.warp), unsigned(x.smid), (unsigned long long)(x.time - t0),
                       x.clock);
        std::fclose(f);
      }
    }
    if (spans.empty() || spans.size() % calls != 0) {
      std::fprintf(stderr, "--timeline: %zu launches recorded for %d calls\n", spans.size(), calls);
      return 1;
    }
    for (const tl::Span& sp : spans)  // the log's own consistency: a warp's events in order
      if (sp.kind == tl::kUnknown || (sp.first_wait >= 0 && sp.first_wait < sp.first_start) ||
          sp.last_end < sp.first_start)
        std::fprintf(stderr, "--timeline: inconsistent launch %llu (%s): start %lld wait %lld end %lld\n",
                     (unsigned long long)sp.grid, tl::kind_name(sp.kind), (long long)sp.first_start,
                     (long long)sp.first_wait, (long long)sp.last_end);
    if (per_call < 0) {
      per_call = int(spans.size()) / calls;
      cols.assign(per_call, std::vector<std::vector<int64_t>>(7));
      for (int i = 0; i < per_call; ++i) { kinds.push_back(spans[i].kind); blocks.push_back(spans[i].blocks); }
    }
    for (int c = 0; c < calls; ++c) {
      const int64_t o = spans[size_t(c) * per_call].first_start;
      auto rel = [o](int64_t t) { return t < 0 ? int64_t(-1) : t - o; };
      int64_t end = 0;
      for (int i = 0; i < per_call; ++i) {
        const tl::Span& s = spans[size_t(c) * per_call + i];
        const int64_t v[7] = {rel(s.first_start), rel(s.last_start), rel(s.first_wait), rel(s.median_wait),
                              rel(s.first_stage), rel(s.median_end), rel(s.last_end)};
        for (int f = 0; f < 7; ++f) cols[i][f].push_back(v[f]);
        end = std::max(end, rel(s.last_end));
      }
      totals.push_back(end);
    }
  }
  CHECK(cudaGraphExecDestroy(exec));
  tl::attach({nullptr, 0, nullptr});
  cudaFree(records);
  cudaFree(count);
  auto med = [](std::vector<int64_t> v) {
    std::sort(v.begin(), v.end());
    char b[32];
    if (v.empty() || v[v.size() / 2] < 0) return std::string("-");
    std::snprintf(b, sizeof b, "%.2f", double(v[v.size() / 2]) / 1000.0);
    return std::string(b);
  };
  std::printf("kernel timeline, µs from the call's first kernel start (medians of %d calls x %d replays; "
              "%%globaltimer, whose tick may be 1 µs on some drivers):\n", calls, replays);
  std::printf("| # | kernel | blocks | first start | last start | first wait release | median wait release | "
              "first stage in | median end | last end |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (int i = 0; i < per_call; ++i)
    std::printf("| %d | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", i, tl::kind_name(kinds[i]), blocks[i],
                med(cols[i][0]).c_str(), med(cols[i][1]).c_str(), med(cols[i][2]).c_str(), med(cols[i][3]).c_str(),
                med(cols[i][4]).c_str(), med(cols[i][5]).c_str(), med(cols[i][6]).c_str());
  std::printf("call, first start to last end: %s µs\n", med(totals).c_str());
  return 0;
}

int run_point(const Point& pt, FILE* json, bool once, bool host = false, int timeline_replays = 0) {
  const cli::ModelShape& m = *pt.model;
  const int64_t T = pt.T, E = m.num_experts, k = m.top_k, H = m.hidden, I = m.inter;
  const int64_t N1 = 2 * I;
  const moekit_dtype_t dt = pt.dtype;
  const bool fp8 = pt.quant != MOEKIT_QUANT_NONE;
  const moekit_dtype_t wdt = fp8 ? MOEKIT_DTYPE_FP8_E4M3 : dt;
  const size_t b = 2, wb = fp8 ? 1 : 2;  // activation and weight element bytes
  const bool block = pt.quant == MOEKIT_QUANT_FP8_BLOCK;
  const int64_t s13 = block ? E * fp8_blocks(N1) * fp8_blocks(H) : E;  // scales per copy
  const int64_t s2 = block ? E * fp8_blocks(H) * fp8_blocks(I) : E;
  const size_t scale_bytes = fp8 ? size_t(s13 + s2) * 4 : 0;
  const size_t w_bytes = size_t(E) * (N1 * H + H * I) * wb + scale_bytes;
  const int copies = once ? 1 : std::max(1, std::min(4, int(3e9 / double(w_bytes))));

  Problem p = default_problem();
  p.num_tokens = T; p.hidden_size = H; p.intermediate_size = I;
  p.num_experts = p.num_local_experts = E; p.top_k = k;
  p.input_dtype = p.weight_dtype = p.output_dtype = dt;
  if (fp8) {
    p.weight_dtype = MOEKIT_DTYPE_FP8_E4M3;
    p.quant = {pt.quant, 0};
  }
  p.activation = m.activation;
  p.swiglu_alpha = m.swiglu_alpha; p.swiglu_beta = m.swiglu_beta; p.swiglu_limit = m.swiglu_limit;
  p.gate_up_order = m.gate_up_order;

  std::vector<void*> w13(copies), w2(copies);
  std::vector<float*> w13_scale(copies, nullptr), w2_scale(copies, nullptr);
  void *hidden, *out, *ref_out, *logits, *ws;
  int32_t* ids;
  float* weights;
  for (int c = 0; c < copies; ++c) {
    CHECK(cudaMalloc(&w13[c], size_t(E) * N1 * H * wb));
    CHECK(cudaMalloc(&w2[c], size_t(E) * H * I * wb));
    if (fill(w13[c], wdt, E * N1 * H, 1.0f / std::sqrt(float(H)), 11 + c)) return 1;
    if (fill(w2[c], wdt, E * H * I, 1.0f / std::sqrt(float(I)), 23 + c)) return 1;
    if (fp8) {  // every block's scale = its amax / 448, as a checkpoint's would be
      CHECK(cudaMalloc(&w13_scale[c], s13 * 4));
      CHECK(cudaMalloc(&w2_scale[c], s2 * 4));
      fill_value<<<256, 256>>>(w13_scale[c], s13, std::sqrt(3.0f / float(H)) / kFp8Max);
      fill_value<<<256, 256>>>(w2_scale[c], s2, std::sqrt(3.0f / float(I)) / kFp8Max);
      CHECK(cudaGetLastError());
    }
  }
  CHECK(cudaMalloc(&hidden, T * H * b));
  CHECK(cudaMalloc(&out, T * H * b));
  CHECK(cudaMalloc(&ref_out, T * H * b));
  CHECK(cudaMalloc(&logits, T * E * 4));
  CHECK(cudaMalloc(&ids, T * k * 4));
  CHECK(cudaMalloc(&weights, T * k * 4));
  if (fill(hidden, dt, T * H, 1.0f, 5)) return 1;
  if (fill(logits, MOEKIT_DTYPE_FP32, T * E, 2.0f, 7)) return 1;

  // Routing as PEERS.md measured it: softmax top-k of random logits, renormalized.
  RouterArguments r{};
  r.problem = default_router_problem();
  r.problem.num_tokens = T; r.problem.num_experts = E; r.problem.top_k = k;
  r.logits = logits; r.topk_ids = ids; r.topk_weights = weights;
  if (Status s = Router::run(r); !s) { std::fprintf(stderr, "router: %s\n", s.message().c_str()); return 1; }

  // Setup ran on the legacy stream; the layer runs on a non-blocking one.
  CHECK(cudaDeviceSynchronize());
  size_t ws_bytes = 0;
  if (Status s = MoeLayer::workspace_size(p, &ws_bytes); !s) { std::fprintf(stderr, "%s\n", s.message().c_str()); return 1; }
  CHECK(cudaMalloc(&ws, ws_bytes));
  Arguments a{};
  a.problem = p;
  a.hidden = hidden; a.topk_ids = ids; a.topk_weights = weights;
  a.w13 = w13[0]; a.w2 = w2[0]; a.output = out;
  a.w13_scale = w13_scale[0]; a.w2_scale = w2_scale[0];
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::string plan;
  MoeLayer::describe_plan(p, &plan);

  if (once) {
    if (Status s = MoeLayer::run(a, ws, ws_bytes, stream); !s) { std::fprintf(stderr, "%s\n", s.message().c_str()); return 1; }
    CHECK(cudaStreamSynchronize(stream));
    std::printf("%s T=%lld: one layer call done (%s)\n", m.name, (long long)T, plan.c_str());
    if (!host) return 0;
    // Median host µs of each entry point, issued to an idle GPU.
    auto host_us = [&](auto&& call) {
      std::vector<double> t;
      for (int i = 0; i < 600; ++i) {
        cudaStreamSynchronize(stream);
        const auto t0 = std::chrono::steady_clock::now();
        call();
        t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(t.begin() + 100, t.end());
      return t[100 + (t.size() - 100) / 2];  // after 100 warm-up calls
    };
    size_t bytes = 0;
    const double ci = host_us([&] { (void)MoeLayer::can_implement(a); });
    const double wsz = host_us([&] { (void)MoeLayer::workspace_size(p, &bytes); });
    const double run = host_us([&] { (void)MoeLayer::run(a, ws, ws_bytes, stream); });
    CHECK(cudaStreamSynchronize(stream));
    std::printf("host us %s T=%lld: can_implement %.2f workspace_size %.2f run %.2f\n", m.name,
                (long long)T, ci, wsz, run);
    return 0;
  }

  // Reference: the same layer on the simple GEMM; output poisoned first.
  CHECK(cudaMemsetAsync(ref_out, 0xFF, T * H * b, stream));
  CHECK(cudaMemsetAsync(out, 0xFF, T * H * b, stream));
  const char* prev = std::getenv("MOEKIT_GEMM");
  const std::string forced = prev ? prev : "";
  setenv("MOEKIT_GEMM", "simple", 1);
  Arguments ra = a;
  ra.output = ref_out;
  Status s = MoeLayer::run(ra, ws, ws_bytes, stream);
  if (prev) setenv("MOEKIT_GEMM", forced.c_str(), 1); else unsetenv("MOEKIT_GEMM");
  if (!s) { std::fprintf(stderr, "%s\n", s.message().c_str()); return 1; }
  if (!(s = MoeLayer::run(a, ws, ws_bytes, stream))) { std::fprintf(stderr, "%s\n", s.message().c_str()); return 1; }
  CHECK(cudaStreamSynchronize(stream));
  std::vector<uint8_t> got(T * H * b), want(T * H * b);
  CHECK(cudaMemcpy(got.data(), out, got.size(), cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(want.data(), ref_out, want.size(), cudaMemcpyDeviceToHost));
  double err2 = 0, ref2 = 0;
  int64_t nonfinite = 0;
  for (int64_t i = 0; i < T * H; ++i) {
    const double g = ref::load_as_float(dt, got.data(), i), w = ref::load_as_float(dt, want.data(), i);
    if (!std::isfinite(g) || !std::isfinite(w)) { ++nonfinite; continue; }
    err2 += (g - w) * (g - w);
    ref2 += w * w;
  }
  const double relerr = std::sqrt(err2 / std::max(ref2, 1e-300));

  // Distinct experts the batch touches: the weight bytes a perfect kernel reads.
  std::vector<int32_t> h_ids(T * k);
  CHECK(cudaMemcpy(h_ids.data(), ids, h_ids.size() * 4, cudaMemcpyDeviceToHost));
  const std::set<int32_t> touched(h_ids.begin(), h_ids.end());
  const double touched_bytes = double(touched.size()) * double(w_bytes) / double(E);
  const double act_bytes = 2.0 * T * H * b + T * k * 8.0;
  const double flops = 2.0 * T * k * 3.0 * H * I;

  // Graph of 2 * copies calls, each on the next weight copy.
  const int calls = 2 * copies;
  cudaGraph_t graph;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  for (int c = 0; c < calls; ++c) {
    a.w13 = w13[c % copies];
    a.w2 = w2[c % copies];
    a.w13_scale = w13_scale[c % copies];
    a.w2_scale = w2_scale[c % copies];
    if (Status st = MoeLayer::run(a, ws, ws_bytes, stream); !st) {
      std::fprintf(stderr, "%s\n", st.message().c_str());
      cudaStreamEndCapture(stream, &graph);
      return 1;
    }
  }
  CHECK(cudaStreamEndCapture(stream, &graph));
  if (timeline_replays > 0) {
    cudaGraph_t copy;
    CHECK(cudaGraphClone(&copy, graph));
    if (print_timeline(copy, stream, calls, timeline_replays)) return 1;
    cudaGraphDestroy(copy);
  }
  const float us = bench::median_replay_us(graph, stream, 3, 20) / calls;
  if (us < 0) { std::fprintf(stderr, "graph replay failed\n"); return 1; }

  const char* dn = point_dtype_name(pt);
  std::printf("| %s | %lld | %s | %.1f | %.1f | %.5f | %s |\n", m.name, (long long)T, dn, us,
              flops / us * 1e-6, relerr, plan.c_str());
  std::fflush(stdout);
  if (json) {
    std::string esc;
    for (char ch : plan) { if (ch == '"' || ch == '\\') esc += '\\'; esc += ch; }
    std::fprintf(json,
                 "{\"shape\": \"%s\", \"T\": %lld, \"dtype\": \"%s\", \"moekit_us\": %.2f, "
                 "\"flops\": %.6e, \"touched_weight_bytes\": %.6e, \"activation_bytes\": %.6e, "
                 "\"experts_touched\": %zu, \"relerr_vs_simple_gemm\": %.6f, \"nonfinite\": %lld, "
                 "\"weight_copies\": %d, \"config\": \"%s\"}\n",
                 m.name, (long long)T, dn, us, flops, touched_bytes, act_bytes, touched.size(), relerr,
                 (long long)nonfinite, copies, esc.c_str());
    std::fflush(json);
  }
  for (int c = 0; c < copies; ++c) {
    cudaFree(w13[c]); cudaFree(w2[c]); cudaFree(w13_scale[c]); cudaFree(w2_scale[c]);
  }
  for (void* q : {hidden, out, ref_out, logits, ws}) cudaFree(q);
  cudaFree(ids);
  cudaFree(weights);
  CHECK(cudaStreamDestroy(stream));
  return 0;
}

// bf16 | fp16 | fp8_block | fp8_tensor (fp8: bf16 activations).
Point parse_point(const cli::ModelShape* m, int64_t T, const std::string& s) {
  if (s == "fp8_block" || s == "fp8-block") return {m, T, MOEKIT_DTYPE_BF16, MOEKIT_QUANT_FP8_BLOCK};
  if (s == "fp8_tensor" || s == "fp8-tensor") return {m, T, MOEKIT_DTYPE_BF16, MOEKIT_QUANT_FP8_TENSOR};
  return {m, T, s == "fp16" ? MOEKIT_DTYPE_FP16 : MOEKIT_DTYPE_BF16, MOEKIT_QUANT_NONE};
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda_available()) {
    std::fprintf(stderr, "moekit_layer_bench: no CUDA GPU of compute capability 9.0; nothing to time\n");
    return 0;
  }
  if (argc >= 4 && std::string(argv[1]) == "--timeline") {
    const cli::ModelShape* m = cli::find_model(argv[2]);
    if (!m) { std::fprintf(stderr, "unknown model %s\n", argv[2]); return 2; }
    const int replays = argc > 5 ? std::max(1, std::atoi(argv[5])) : 10;
    return run_point(parse_point(m, std::atoll(argv[3]), argc > 4 ? argv[4] : "bf16"), nullptr, false, false,
                     replays);
  }
  if (argc >= 4 && (std::string(argv[1]) == "--once" || std::string(argv[1]) == "--host")) {
    const cli::ModelShape* m = cli::find_model(argv[2]);
    if (!m) { std::fprintf(stderr, "unknown model %s\n", argv[2]); return 2; }
    return run_point(parse_point(m, std::atoll(argv[3]), argc > 4 ? argv[4] : "bf16"), nullptr, true,
                     std::string(argv[1]) == "--host");
  }
  FILE* json = argc > 1 ? std::fopen(argv[1], "w") : nullptr;
  std::vector<Point> points;
  for (int i = 2; i < argc; ++i) {  // model[:T[:dtype]]
    std::string s = argv[i], name = s.substr(0, s.find(':'));
    const cli::ModelShape* m = cli::find_model(name);
    if (!m) { std::fprintf(stderr, "unknown model %s\n", name.c_str()); return 2; }
    const size_t c1 = s.find(':');
    if (c1 == std::string::npos) { points.push_back(parse_point(m, -1, "bf16")); continue; }
    const size_t c2 = s.find(':', c1 + 1);
    points.push_back(parse_point(m, std::atoll(s.substr(c1 + 1, c2 - c1 - 1).c_str()),
                                 c2 == std::string::npos ? "bf16" : s.substr(c2 + 1)));
  }
  if (points.empty())
    for (const char* name : {"qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v3"}) points.push_back(parse_point(cli::find_model(name), -1, "bf16"));
  std::vector<Point> sweep;
  for (const Point& p : points) {
    if (p.T > 0) { sweep.push_back(p); continue; }
    const bool deepseek = std::string(p.model->name) == "deepseek-v3";
    for (int64_t T : {1, 8, 64, 256, 257, 1024, 4096, 16384})
      if (!(deepseek && T > 4096)) sweep.push_back({p.model, T, p.dtype, p.quant});
  }
  std::printf("| shape | T | dtype | moekit µs | TFLOP/s | rel err vs simple GEMM | plan |\n|---|---|---|---|---|---|---|\n");
  for (const Point& p : sweep)
    if (run_point(p, json, false)) return 1;
  if (json) std::fclose(json);
  return 0;
}
