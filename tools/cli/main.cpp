// moekit: run, check and benchmark one MoE layer on a named model shape.
// Options are parsed by CLI11 and JSON is written by nlohmann-json.
#include <cuda_runtime.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/activation_math.hpp"
#include "moekit/moekit.hpp"
#include "reference/dtype.hpp"
#include "reference/oracle.hpp"
#include "reference/random_layer.hpp"
#include "tools/cli/models.hpp"

namespace {

using moekit::cli::ModelShape;

constexpr int kExitFail = 1, kExitUsage = 2, kExitResources = 3;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// The layer every command runs: a built-in shape with overrides.
struct Options {
  std::string model = "qwen3-30b-a3b";
  int64_t tokens = 64;
  std::vector<int64_t> sweep;  // bench: the batch sizes
  std::string dtype = "bf16";
  std::string device = "auto";
  uint64_t seed = 0;
  int64_t experts = -1, top_k = -1, hidden = -1, inter = -1, ep_size = 1, ep_rank = 0;
  std::string activation;
  int64_t iters = -1, check_tokens = -1;
  std::string json;  // path of the JSON report, empty for none
};

struct UsageError {
  std::string message;
};

// "expected an integer >= lo, got '...'" for integer options.
CLI::Validator at_least(int64_t lo) {
  return CLI::Validator(
      [lo](std::string& v) -> std::string {
        char* end = nullptr;
        errno = 0;
        const long long x = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || errno == ERANGE || x < lo)
          return "expected an integer >= " + std::to_string(lo) + ", got '" + v + "'";
        return std::string();
      },
      "INT>=" + std::to_string(lo));
}

void add_layer_options(CLI::App* cmd, Options& o) {
  std::vector<std::string> activations;
  for (int a = MOEKIT_ACT_SWIGLU; a <= MOEKIT_ACT_IDENTITY; ++a)
    activations.emplace_back(moekit_activation_name(static_cast<moekit_activation_t>(a)));
  cmd->add_option("--model", o.model, "built-in shape (see `moekit models`)")->capture_default_str();
  cmd->add_option("--dtype", o.dtype,
                  "bf16 | fp16 | fp32 for input, weights and output, or fp8-block | fp8-tensor: "
                  "e4m3 weights with 128x128 block (DeepSeek-V3 style) or per-expert scales, bf16 "
                  "input and output")
      ->check(CLI::IsMember({"bf16", "fp16", "fp32", "fp8-block", "fp8-tensor"}))
      ->capture_default_str();
  cmd->add_option("--device", o.device, "auto | cpu | cuda (auto: cuda when a GPU is usable)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "seed of weights, inputs and router logits")->capture_default_str();
  cmd->add_option("--experts", o.experts, "override the number of experts")->check(at_least(1));
  cmd->add_option("--top-k", o.top_k, "override experts per token")->check(at_least(1));
  cmd->add_option("--hidden", o.hidden, "override the hidden size (a multiple of 8)")->check(at_least(1));
  cmd->add_option("--inter", o.inter, "override the expert intermediate size (a multiple of 8)")
      ->check(at_least(1));
  cmd->add_option("--ep-size", o.ep_size, "expert-parallel size: this process holds E / N experts")
      ->check(at_least(1))
      ->capture_default_str();
  cmd->add_option("--ep-rank", o.ep_rank, "expert-parallel rank")->check(at_least(0))->capture_default_str();
  cmd->add_option("--activation", o.activation, "the model's own unless given")->check(CLI::IsMember(activations));
  cmd->add_option("--iters", o.iters, "timed repetitions (default 20 on cuda, 1 on cpu)")->check(at_least(1));
  cmd->add_option("--check-tokens", o.check_tokens, "tokens sampled for the oracle check (default: adaptive)")
      ->check(at_least(0));
  cmd->add_option("--json", o.json, "also write the results to this JSON file");
}

double host_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kb = 0;
  while (f >> key >> kb) {
    if (key == "MemAvailable:") return kb * 1024.0;
    f.ignore(256, '\n');
  }
  return 1e18;  // unknown: do not refuse
}

#define CLI_CUDA(expr)                                                                     \
  do {                                                                                     \
    cudaError_t e_ = (expr);                                                               \
    if (e_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "moekit: %s failed at %s:%d: %s\n", #expr, __FILE__, __LINE__, \
                   cudaGetErrorString(e_));                                                \
      std::exit(kExitFail);                                                                \
    }                                                                                      \
  } while (0)

template <class T>
T* to_device(const std::vector<T>& v) {
  if (v.empty()) return nullptr;
  T* d = nullptr;
  CLI_CUDA(cudaMalloc(&d, v.size() * sizeof(T)));
  CLI_CUDA(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Runs the layer on the GPU; returns the output bytes and fills times (s).
std::vector<uint8_t> run_cuda(const moekit::ref::HostLayer& l, int64_t iters,
                              std::vector<double>* times) {
  const moekit_problem_t& p = l.problem;
  const size_t out_bytes = p.num_tokens * p.hidden_size * moekit::ref::dtype_size(p.output_dtype);
  moekit_arguments_t a = l.arguments(nullptr);  // routed from logits when the model has a router
  const bool routed = p.router.kind != MOEKIT_ROUTER_NONE;
  a.problem.device = MOEKIT_DEVICE_CUDA;
  a.hidden = to_device(l.hidden);
  a.topk_ids = routed ? nullptr : to_device(l.topk_ids);
  a.topk_weights = routed ? nullptr : to_device(l.topk_weights);
  a.router_logits = routed ? to_device(l.router_logits) : nullptr;
  a.router_correction_bias = a.router_correction_bias ? to_device(l.correction_bias) : nullptr;
  a.w13 = to_device(l.w13);
  a.w2 = to_device(l.w2);
  a.w13_bias = p.has_w13_bias ? to_device(l.w13_bias) : nullptr;
  a.w2_bias = p.has_w2_bias ? to_device(l.w2_bias) : nullptr;
  a.w13_scale = to_device(l.w13_scale);
  a.w2_scale = to_device(l.w2_scale);
  a.a13_scale = to_device(l.a13_scale);
  a.a2_scale = to_device(l.a2_scale);
  void* out = nullptr;
  if (out_bytes) CLI_CUDA(cudaMalloc(&out, out_bytes));
  a.output = out;
  size_t ws_bytes = 0;
  moekit::Status s = moekit::MoeLayer::workspace_size(p, &ws_bytes);
  void* ws = nullptr;
  if (s && ws_bytes) CLI_CUDA(cudaMalloc(&ws, ws_bytes));
  cudaStream_t stream;
  CLI_CUDA(cudaStreamCreate(&stream));
  cudaEvent_t e0, e1;
  CLI_CUDA(cudaEventCreate(&e0));
  CLI_CUDA(cudaEventCreate(&e1));
  if (s) s = moekit::MoeLayer::run(a, ws, ws_bytes, stream);  // warm-up
  for (int64_t i = 0; s && i < iters; ++i) {
    CLI_CUDA(cudaEventRecord(e0, stream));
    s = moekit::MoeLayer::run(a, ws, ws_bytes, stream);
    CLI_CUDA(cudaEventRecord(e1, stream));
    CLI_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    CLI_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    times->push_back(ms * 1e-3);
  }
  if (!s) {
    std::fprintf(stderr, "moekit: run failed: %s\n", s.message().c_str());
    std::exit(kExitFail);
  }
  CLI_CUDA(cudaStreamSynchronize(stream));
  std::vector<uint8_t> host(out_bytes);
  if (out_bytes) CLI_CUDA(cudaMemcpy(host.data(), out, out_bytes, cudaMemcpyDeviceToHost));
  for (const void* ptr : {a.hidden, static_cast<const void*>(a.topk_ids),
                          static_cast<const void*>(a.topk_weights), a.w13, a.w2, a.w13_bias,
                          a.w2_bias, a.router_logits, static_cast<const void*>(a.router_correction_bias),
                          static_cast<const void*>(a.w13_scale), static_cast<const void*>(a.w2_scale),
                          static_cast<const void*>(a.a13_scale), static_cast<const void*>(a.a2_scale),
                          static_cast<const void*>(out), static_cast<const void*>(ws)})
    CLI_CUDA(cudaFree(const_cast<void*>(ptr)));
  CLI_CUDA(cudaStreamDestroy(stream));
  return host;
}

std::vector<uint8_t> run_cpu(const moekit::ref::HostLayer& l, int64_t iters,
                             std::vector<double>* times) {
  const moekit_problem_t& p = l.problem;
  std::vector<uint8_t> out(p.num_tokens * p.hidden_size * moekit::ref::dtype_size(p.output_dtype));
  size_t ws_bytes = 0;
  moekit::Status s = moekit::MoeLayer::workspace_size(p, &ws_bytes);
  // 256-byte aligned host workspace, as the API asks.
  std::vector<uint8_t> ws_store(ws_bytes + 256);
  void* ws = ws_store.data() + (256 - reinterpret_cast<uintptr_t>(ws_store.data()) % 256) % 256;
  const moekit_arguments_t a = l.arguments(out.data());
  for (int64_t i = 0; s && i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    s = moekit::MoeLayer::run(a, ws, ws_bytes);
    times->push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  if (!s) {
    std::fprintf(stderr, "moekit: run failed: %s\n", s.message().c_str());
    std::exit(kExitFail);
  }
  return out;
}

int cmd_models() {
  std::printf("%-16s %6s %4s %7s %7s  %-10s %s\n", "model", "E", "k", "H", "I", "activation", "router");
  for (const ModelShape& m : moekit::cli::builtin_models())
    std::printf("%-16s %6lld %4lld %7lld %7lld  %-10s %s\n", m.name, (long long)m.num_experts,
                (long long)m.top_k, (long long)m.hidden, (long long)m.inter,
                moekit_activation_name(m.activation), m.router_name);
  return 0;
}

// The random layer of a point, and for fp8 the bf16 layer it was quantized
// from (its weights give the error against the unquantized layer).
struct PointLayer {
  moekit::ref::HostLayer dense, layer;
  bool made = false;
};

// One layer at T = tokens: set up, run, check against the oracle, time.
// Prints the `run` report when verbose; fills row with the same facts.
// Returns the exit code (0 PASS, 1 FAIL, 2 bad argument, 3 too big).
// shared (bench): one layer made for made_tokens >= tokens on the first call
// and reused by later ones through its first `tokens` tokens. The random
// inputs are prefix-consistent (fill_random draws value i from its block's
// own stream; routing is per token), so a point sees the same layer as when
// made for its own T, and the weights are generated once per sweep (22 GB for
// deepseek-v3 in bf16) instead of once per T.
int run_point(const Options& o, int64_t tokens, bool verbose, nlohmann::json* row,
              PointLayer* shared = nullptr, int64_t made_tokens = 0) {
  const ModelShape* m = moekit::cli::find_model(o.model);
  if (m == nullptr) {
    std::string names;
    for (const ModelShape& x : moekit::cli::builtin_models()) names += std::string(" ") + x.name;
    throw UsageError{"--model: unknown model '" + o.model + "'; built-in:" + names};
  }
  moekit_problem_t p = moekit::default_problem();
  p.num_tokens = tokens;
  p.num_experts = o.experts > 0 ? o.experts : m->num_experts;
  p.top_k = o.top_k > 0 ? o.top_k : m->top_k;
  p.hidden_size = o.hidden > 0 ? o.hidden : m->hidden;
  p.intermediate_size = o.inter > 0 ? o.inter : m->inter;
  p.ep_size = o.ep_size;
  p.ep_rank = o.ep_rank;
  p.num_local_experts = p.num_experts / std::max<int64_t>(1, p.ep_size);
  const bool fp8 = o.dtype == "fp8-block" || o.dtype == "fp8-tensor";
  p.input_dtype = p.weight_dtype = p.output_dtype =
      o.dtype == "fp16" ? MOEKIT_DTYPE_FP16 : o.dtype == "fp32" ? MOEKIT_DTYPE_FP32 : MOEKIT_DTYPE_BF16;
  p.activation = m->activation;
  for (int a = MOEKIT_ACT_SWIGLU; a <= MOEKIT_ACT_IDENTITY; ++a)
    if (o.activation == moekit_activation_name(static_cast<moekit_activation_t>(a)))
      p.activation = static_cast<moekit_activation_t>(a);
  p.swiglu_alpha = m->swiglu_alpha;
  p.swiglu_beta = m->swiglu_beta;
  p.swiglu_limit = m->swiglu_limit;
  p.gate_up_order = m->gate_up_order;
  p.has_w13_bias = p.has_w2_bias = m->biases ? 1 : 0;
  p.router = m->router;  // the layer routes from logits with the model's router
  if (fp8) {
    p.weight_dtype = MOEKIT_DTYPE_FP8_E4M3;
    p.quant = {o.dtype == "fp8-block" ? MOEKIT_QUANT_FP8_BLOCK : MOEKIT_QUANT_FP8_TENSOR, 0};
  }

  bool cuda = o.device == "cuda" || (o.device == "auto" && moekit::cuda_available());
  if (o.device == "cuda" && !moekit::cuda_available()) {
    std::fprintf(stderr, "moekit: --device cuda: no usable CUDA GPU here; use --device cpu\n");
    return kExitResources;
  }
  p.device = cuda ? MOEKIT_DEVICE_CUDA : MOEKIT_DEVICE_CPU;
  size_t ws_bytes = 0;
  if (moekit::Status s = moekit::MoeLayer::workspace_size(p, &ws_bytes); !s) {
    std::fprintf(stderr, "moekit: %s\n", s.message().c_str());
    return kExitUsage;
  }

  PointLayer own;
  PointLayer& pl = shared != nullptr ? *shared : own;
  // The problem the layer is made for (its T may exceed this point's), and
  // its workspace: what must fit.
  moekit_problem_t make_p = p;
  make_p.num_tokens = shared != nullptr ? std::max(made_tokens, tokens) : tokens;
  const int64_t make_tokens = make_p.num_tokens;
  size_t make_ws_bytes = ws_bytes;
  if (make_tokens != tokens) {
    if (moekit::Status s = moekit::MoeLayer::workspace_size(make_p, &make_ws_bytes); !s) {
      std::fprintf(stderr, "moekit: %s\n", s.message().c_str());
      return kExitUsage;
    }
  }

  // Refuse shapes that do not fit before allocating anything (checked when
  // the layer is made; a reused one already fits).
  const double wbytes = static_cast<double>(moekit::ref::weight_bytes(p));
  const double token_io_bytes = static_cast<double>(p.hidden_size) *
                                (moekit::ref::dtype_size(p.input_dtype) + moekit::ref::dtype_size(p.output_dtype));
  const double io_bytes = token_io_bytes * p.num_tokens;
  const double make_io_bytes = token_io_bytes * make_tokens;
  const double logit_bytes = 4.0 * make_tokens * p.num_experts;
  // fp8 layers are made from a bf16 copy (twice the fp8 bytes), kept for the error report.
  const double dense_bytes = p.quant.kind != MOEKIT_QUANT_NONE ? 2.0 * wbytes : 0.0;
  const double host_need = wbytes + dense_bytes + make_io_bytes + (cuda ? 0.0 : make_ws_bytes) + logit_bytes;
  const double host_have = host_available_bytes();
  double dev_have = 1e18;
  if (cuda) {
    size_t free_b = 0, total_b = 0;
    CLI_CUDA(cudaMemGetInfo(&free_b, &total_b));
    dev_have = static_cast<double>(free_b);
  }
  const double dev_need = cuda ? wbytes + make_io_bytes + make_ws_bytes + logit_bytes : 0.0;
  if (!pl.made && (host_need > 0.9 * host_have || dev_need > 0.95 * dev_have)) {
    const bool host_short = host_need > 0.9 * host_have;
    std::fprintf(stderr,
                 "moekit: %s at T=%lld needs %.1f GiB of %s memory (weights %.1f GiB for %lld local "
                 "experts), but %.1f GiB is available.\n"
                 "        Hold fewer experts with --ep-size N (this process keeps E/N of them), or\n"
                 "        use --experts, --hidden or --inter, or fewer --tokens.\n",
                 m->name, (long long)make_tokens, (host_short ? host_need : dev_need) / kGiB,
                 host_short ? "host" : "GPU", wbytes / kGiB, (long long)p.num_local_experts,
                 (host_short ? host_have : dev_have) / kGiB);
    return kExitResources;
  }

  std::string device_name = "cpu";
  if (cuda) {
    cudaDeviceProp prop{};
    CLI_CUDA(cudaGetDeviceProperties(&prop, 0));
    device_name = std::string("cuda (") + prop.name + ")";
  }
  if (verbose) {
    std::printf("model     %s: E=%lld (local %lld, ep rank %lld of %lld) k=%lld H=%lld I=%lld %s %s%s\n",
                m->name, (long long)p.num_experts, (long long)p.num_local_experts,
                (long long)p.ep_rank, (long long)p.ep_size, (long long)p.top_k,
                (long long)p.hidden_size, (long long)p.intermediate_size,
                moekit_dtype_name(p.weight_dtype), moekit_activation_name(p.activation),
                p.has_w13_bias ? " +bias" : "");
    std::printf("batch     T=%lld tokens, seed %llu, router (fused first stage): %s\n",
                (long long)p.num_tokens, (unsigned long long)o.seed, m->router_name);
    std::printf("device    %s, weights %.2f GiB, workspace %.1f MiB\n", device_name.c_str(),
                wbytes / kGiB, ws_bytes / 1048576.0);
    std::fflush(stdout);
  }

  // fp8: the same random layer in bf16, quantized; its bf16 weights give the
  // error against the unquantized layer (reported, not part of the check).
  if (!pl.made) {
    if (p.quant.kind != MOEKIT_QUANT_NONE) {
      moekit_problem_t dp = make_p;
      dp.quant = {MOEKIT_QUANT_NONE, 0};
      dp.weight_dtype = moekit::ref::compute_dtype(p);
      pl.dense = moekit::ref::make_random_layer(dp, o.seed);
      pl.layer = moekit::ref::quantize_layer(pl.dense, p.quant);
    } else {
      pl.layer = moekit::ref::make_random_layer(make_p, o.seed);
    }
    pl.made = true;
  }
  // This point's first `tokens` tokens (arguments() and the oracle read
  // problem.num_tokens; the buffers may be longer).
  pl.layer.problem.num_tokens = tokens;
  pl.dense.problem.num_tokens = tokens;
  const moekit::ref::HostLayer& layer = pl.layer;
  const moekit::ref::HostLayer& dense = pl.dense;
  const int64_t iters = o.iters > 0 ? o.iters : (cuda ? 20 : 1);
  std::vector<double> times;
  std::vector<uint8_t> out = cuda ? run_cuda(layer, iters, &times) : run_cpu(layer, iters, &times);

  // Oracle on evenly spread tokens; fewer for big experts to bound its cost.
  const int64_t N1 = moekit::activation_is_gated(p.activation) ? 2 * p.intermediate_size
                                                              : p.intermediate_size;
  const double oracle_flops_per_token = 2.0 * p.top_k * p.hidden_size * (N1 + p.intermediate_size);
  int64_t samples = o.check_tokens >= 0
                        ? o.check_tokens
                        : std::clamp<int64_t>(static_cast<int64_t>(3e9 / oracle_flops_per_token), 4, 64);
  samples = std::min(samples, p.num_tokens);
  std::vector<int64_t> sampled;
  for (int64_t i = 0; i < samples; ++i) sampled.push_back(i * p.num_tokens / samples);
  if (samples > 0 && sampled.back() != p.num_tokens - 1) sampled.back() = p.num_tokens - 1;
  // The oracle takes the ids and weights of the CPU router, which equal the
  // CUDA router's bit for bit.
  const moekit_arguments_t host_args = layer.unrouted_arguments(out.data());
  bool pass = true;
  nlohmann::json check = {{"sampled_tokens", samples}};
  if (samples > 0) {
    const auto c = moekit::ref::check_against_oracle(host_args, out.data(), sampled);
    const double tol = moekit::ref::oracle_tolerance(p.weight_dtype, p.input_dtype, p.output_dtype);
    pass = c.rel_frobenius <= tol && c.nonfinite_mismatch == 0;
    check.update({{"rel_error", c.rel_frobenius}, {"tolerance", tol}, {"max_abs_error", c.max_abs_error},
                  {"nonfinite_mismatches", c.nonfinite_mismatch}});
    if (verbose)
      std::printf("check     %s: relative error %.2e (tolerance %.1e), max abs %.2e, %lld non-finite "
                  "mismatches, on %lld sampled tokens vs the fp64 oracle\n",
                  pass ? "PASS" : "FAIL", c.rel_frobenius, tol, c.max_abs_error,
                  (long long)c.nonfinite_mismatch, (long long)samples);
    if (p.quant.kind != MOEKIT_QUANT_NONE) {
      const auto d = moekit::ref::check_against_oracle(dense.unrouted_arguments(out.data()),
                                                       out.data(), sampled);
      check["rel_error_vs_unquantized"] = d.rel_frobenius;
      if (verbose)
        std::printf("fp8       relative error %.2e against the unquantized (%s) weights; the check "
                    "above uses the dequantized weights\n",
                    d.rel_frobenius, moekit_dtype_name(dense.problem.weight_dtype));
    }
  } else if (verbose) {
    std::printf("check     PASS: T=0, nothing to compute\n");
  }
  check["pass"] = pass;

  // Roofline: distinct local experts touched, valid rows.
  std::vector<char> touched(p.num_local_experts, 0);
  int64_t rows = 0;
  for (int64_t i = 0; i < p.num_tokens * p.top_k; ++i) {
    const int32_t id = layer.topk_ids[i];
    int64_t e = static_cast<int64_t>(id) - p.ep_rank * p.num_local_experts;
    if (id >= 0 && id < p.num_experts && e >= 0 && e < p.num_local_experts) {
      touched[e] = 1;
      ++rows;
    }
  }
  const int64_t n_touched = std::count(touched.begin(), touched.end(), 1);
  const double bytes = wbytes / p.num_local_experts * n_touched + io_bytes;
  const double flops = 2.0 * rows * p.hidden_size * (N1 + p.intermediate_size);
  const double us = times.empty() ? 0.0 : median(times) * 1e6;
  std::string plan;
  if (!moekit::MoeLayer::describe_plan(p, &plan).ok()) plan.clear();
  nlohmann::json floors = nlohmann::json::object();
  for (const auto& c : moekit::cli::gpu_ceilings())
    floors[c.gpu] = moekit::cli::floor_seconds(c, bytes, flops) * 1e6;
  if (verbose) {
    if (!times.empty())
      std::printf("time      %.1f us (median of %zu, %s)\n", us, times.size(),
                  cuda ? "CUDA events" : "wall clock");
    std::printf("floor     %.2f GFLOP, %.3f GiB of %lld touched experts:", flops * 1e-9, bytes / kGiB,
                (long long)n_touched);
    for (const auto& c : moekit::cli::gpu_ceilings())
      std::printf(" %s %.1f us", c.gpu, floors[c.gpu].get<double>());
    std::printf("\n");
    if (!plan.empty()) std::printf("config    %s\n", plan.c_str());
  }
  *row = {{"model", m->name},
          {"T", p.num_tokens},
          {"dtype", o.dtype},
          {"device", device_name},
          {"experts", p.num_experts},
          {"local_experts", p.num_local_experts},
          {"top_k", p.top_k},
          {"hidden", p.hidden_size},
          {"inter", p.intermediate_size},
          {"activation", moekit_activation_name(p.activation)},
          {"us", us},
          {"iters", times.size()},
          {"timer", cuda ? "cuda events" : "wall clock"},
          {"gflop", flops * 1e-9},
          {"touched_experts", n_touched},
          {"touched_gib", bytes / kGiB},
          {"floor_us", floors},
          {"tflops", us > 0 ? flops / us * 1e-6 : 0.0},
          {"config", plan},
          {"check", check}};
  return pass ? 0 : kExitFail;
}

bool write_json(const std::string& path, const nlohmann::json& j) {
  if (path.empty()) return true;
  std::ofstream f(path);
  f << j.dump(2) << "\n";
  if (!f) std::fprintf(stderr, "moekit: --json: cannot write %s\n", path.c_str());
  return static_cast<bool>(f);
}

int cmd_run(const Options& o) {
  nlohmann::json row;
  const int rc = run_point(o, o.tokens, true, &row);
  if (rc > kExitFail) return rc;  // nothing ran
  return write_json(o.json, row) ? rc : kExitFail;
}

// The layer at every T of the sweep: one table row and one JSON row each.
int cmd_bench(Options o) {
  const bool cuda = o.device == "cuda" || (o.device == "auto" && moekit::cuda_available());
  if (o.sweep.empty()) {
    // The issue-7 sweep on a GPU; small batches on the CPU, where T = 4096 of
    // a real shape takes minutes.
    o.sweep = cuda ? std::vector<int64_t>{1, 8, 64, 256, 257, 1024, 4096, 16384}
                   : std::vector<int64_t>{1, 8, 64};
  }
  nlohmann::json report = {{"model", o.model}, {"dtype", o.dtype}, {"seed", o.seed},
                           {"rows", nlohmann::json::array()}};
  std::printf("| model | T | dtype | us | floor H100 us | floor H200 us | TFLOP/s | check | config |\n"
              "|---|---|---|---|---|---|---|---|---|\n");
  int worst = 0;
  PointLayer shared;  // made once, for the largest T
  const int64_t largest = *std::max_element(o.sweep.begin(), o.sweep.end());
  for (int64_t t : o.sweep) {
    nlohmann::json row;
    const int rc = run_point(o, t, false, &row, &shared, largest);
    if (rc > kExitFail) return rc;  // a bad argument or a shape that does not fit
    worst = std::max(worst, rc);
    const auto& f = row["floor_us"];
    std::printf("| %s | %lld | %s | %.1f | %.1f | %.1f | %.1f | %s %.2e | %s |\n", o.model.c_str(),
                (long long)t, o.dtype.c_str(), row["us"].get<double>(),
                f.value("H100", 0.0), f.value("H200", 0.0), row["tflops"].get<double>(),
                row["check"]["pass"].get<bool>() ? "PASS" : "FAIL",
                row["check"].value("rel_error", 0.0), row["config"].get<std::string>().c_str());
    std::fflush(stdout);
    report["rows"].push_back(row);
  }
  if (!report["rows"].empty()) report["device"] = report["rows"][0]["device"];
  return write_json(o.json, report) ? worst : kExitFail;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"moekit: run, check and benchmark one MoE layer on a built-in model shape"};
  app.require_subcommand(1);
  CLI::App* run = app.add_subcommand(
      "run", "run one MoE layer on a model shape, check it against an fp64 oracle on sampled "
             "tokens, time it and print the roofline floor and the kernels chosen");
  add_layer_options(run, o);
  run->add_option("--tokens", o.tokens, "batch size (0 is valid)")->check(at_least(0))->capture_default_str();
  CLI::App* bench = app.add_subcommand(
      "bench", "run, check and time the layer at each batch size of a sweep: a table, and "
               "with --json one row per batch size");
  add_layer_options(bench, o);
  bench->add_option("--tokens", o.sweep,
                    "batch sizes, comma-separated (default 1,8,64,256,257,1024,4096,16384 on a "
                    "GPU, 1,8,64 on the CPU)")
      ->delimiter(',')
      ->check(at_least(0));
  CLI::App* models = app.add_subcommand("models", "list the built-in model shapes");
  // A first word that names no command is a usage error of its own.
  if (argc >= 2 && argv[1][0] != '-') {
    const std::string cmd = argv[1];
    if (cmd == "help") {
      std::fputs(app.help().c_str(), stdout);
      return 0;
    }
    if (cmd != "run" && cmd != "bench" && cmd != "models") {
      std::fprintf(stderr, "moekit: unknown command '%s'; commands: run, bench, models, help\n"
                           "Try 'moekit --help'.\n", cmd.c_str());
      return kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message and the usage
    return kExitUsage;
  }
  try {
    if (models->parsed()) return cmd_models();
    if (run->parsed()) return cmd_run(o);
    if (bench->parsed()) return cmd_bench(o);
    return kExitUsage;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "moekit: %s\nTry 'moekit --help'.\n", e.message.c_str());
    return kExitUsage;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "moekit: out of host memory; try a smaller --tokens or --ep-size\n");
    return kExitResources;
  }
}
