// GPU test helpers: guarded device buffers (canaries on both sides, poisoned
// body), a device copy of a HostLayer, and row-by-row output comparison.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "moekit/moekit.hpp"
#include "reference/dtype.hpp"
#include "reference/oracle.hpp"
#include "reference/random_layer.hpp"

#define CUDA_OK(expr)                                                                     \
  do {                                                                                    \
    cudaError_t e_ = (expr);                                                              \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorName(e_) << " "            \
                               << cudaGetErrorString(e_);                                 \
  } while (0)

#define REQUIRE_GPU()                                                                     \
  do {                                                                                    \
    if (!moekit::cuda_available())                                                        \
      GTEST_SKIP() << "no CUDA GPU of compute capability 9.0 here; GPU test skipped";     \
  } while (0)

namespace moekit::test {

// Device buffer of `bytes` with kGuard canary bytes on each side.
class DeviceBuffer {
 public:
  static constexpr size_t kGuard = 4096;
  static constexpr int kCanary = 0xA5;
  DeviceBuffer() = default;
  // fill 0xFF poisons the body (NaN in every float dtype); under
  // MOEKIT_TEST_NO_POISON the body is left unwritten so initcheck can report
  // reads of memory that nothing wrote.
  explicit DeviceBuffer(size_t bytes, int fill = 0xFF) : bytes_(bytes) {
    if (cudaMalloc(&base_, bytes + 2 * kGuard) != cudaSuccess) { base_ = nullptr; return; }
    cudaMemset(base_, kCanary, kGuard);
    cudaMemset(static_cast<char*>(base_) + kGuard + bytes, kCanary, kGuard);
    const bool skip = fill == 0xFF && std::getenv("MOEKIT_TEST_NO_POISON") != nullptr;
    if (bytes && !skip) cudaMemset(data(), fill, bytes);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(base_, o.base_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceBuffer() { if (base_) cudaFree(base_); }

  void* data() const { return base_ ? static_cast<char*>(base_) + kGuard : nullptr; }
  size_t size() const { return bytes_; }
  bool ok() const { return base_ != nullptr; }

  void upload(const void* host, size_t bytes) { cudaMemcpy(data(), host, bytes, cudaMemcpyHostToDevice); }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> h(bytes_);
    if (bytes_) cudaMemcpy(h.data(), data(), bytes_, cudaMemcpyDeviceToHost);
    return h;
  }
  bool canaries_intact() const {
    std::vector<uint8_t> g(kGuard);
    for (const char* p : {static_cast<const char*>(base_), static_cast<const char*>(base_) + kGuard + bytes_}) {
      cudaMemcpy(g.data(), p, kGuard, cudaMemcpyDeviceToHost);
      for (uint8_t b : g)
        if (b != kCanary) return false;
    }
    return true;
  }

 private:
  void* base_ = nullptr;
  size_t bytes_ = 0;
};

// Device copies of every tensor of a HostLayer, plus a poisoned output and workspace.
struct DeviceLayer {
  DeviceBuffer hidden, ids, weights, w13, w13_bias, w2, w2_bias, output, workspace;
  DeviceBuffer w13_scale, w2_scale, a13_scale, a2_scale;  // fp8 layers
  DeviceBuffer expert_map;                                // has_expert_map
  size_t workspace_bytes = 0;
  moekit_arguments_t args{};

  explicit DeviceLayer(const ref::HostLayer& l) {
    moekit_problem_t p = l.problem;
    p.device = MOEKIT_DEVICE_CUDA;
    auto up = [](DeviceBuffer& b, const void* src, size_t n) {
      b = DeviceBuffer(n);
      if (n) b.upload(src, n);
    };
    up(hidden, l.hidden.data(), l.hidden.size());
    up(ids, l.topk_ids.data(), l.topk_ids.size() * 4);
    up(weights, l.topk_weights.data(), l.topk_weights.size() * 4);
    up(w13, l.w13.data(), l.w13.size());
    up(w2, l.w2.data(), l.w2.size());
    if (p.has_w13_bias) up(w13_bias, l.w13_bias.data(), l.w13_bias.size());
    if (p.has_w2_bias) up(w2_bias, l.w2_bias.data(), l.w2_bias.size());
    up(w13_scale, l.w13_scale.data(), l.w13_scale.size() * 4);
    up(w2_scale, l.w2_scale.data(), l.w2_scale.size() * 4);
    up(a13_scale, l.a13_scale.data(), l.a13_scale.size() * 4);
    up(a2_scale, l.a2_scale.data(), l.a2_scale.size() * 4);
    up(expert_map, l.expert_map.data(), l.expert_map.size() * 4);
    output = DeviceBuffer(p.num_tokens * p.hidden_size * ref::dtype_size(p.output_dtype));
    MoeLayer::workspace_size(p, &workspace_bytes);
    workspace = DeviceBuffer(workspace_bytes);
    args.problem = p;
    args.hidden = hidden.data();
    args.topk_ids = static_cast<const int32_t*>(ids.data());
    args.topk_weights = static_cast<const float*>(weights.data());
    args.w13 = w13.data();
    args.w2 = w2.data();
    args.w13_bias = p.has_w13_bias ? w13_bias.data() : nullptr;
    args.w2_bias = p.has_w2_bias ? w2_bias.data() : nullptr;
    args.output = output.data();
    if (p.has_expert_map) args.expert_map = static_cast<const int32_t*>(expert_map.data());
    if (p.quant.kind != MOEKIT_QUANT_NONE) {
      args.w13_scale = static_cast<const float*>(w13_scale.data());
      args.w2_scale = static_cast<const float*>(w2_scale.data());
      if (p.quant.static_activation_scale) {
        args.a13_scale = static_cast<const float*>(a13_scale.data());
        args.a2_scale = static_cast<const float*>(a2_scale.data());
      }
    }
  }
  Status run(cudaStream_t stream = nullptr) {
    return MoeLayer::run(args, workspace.data(), workspace_bytes, stream);
  }
  bool all_canaries_intact() const {
    for (const DeviceBuffer* b : {&hidden, &ids, &weights, &w13, &w13_bias, &w2, &w2_bias, &output,
                                  &workspace, &w13_scale, &w2_scale, &a13_scale, &a2_scale, &expert_map})
      if (b->ok() && !b->canaries_intact()) return false;
    return true;
  }
};

// Production failure modes, by token: [0]*k, -1 padding, duplicates, garbage.
inline void make_adversarial(ref::HostLayer& l, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t k = l.problem.top_k, E = l.problem.num_experts;
  for (int64_t t = 0; t < l.problem.num_tokens; ++t) {
    int32_t* ids = l.topk_ids.data() + t * k;
    switch (rng() % 6) {
      case 0: std::fill(ids, ids + k, 0); break;
      case 1: std::fill(ids, ids + k, -1); break;
      case 2: for (int64_t s = 1; s < k; s += 2) ids[s] = ids[s - 1]; break;
      case 3: for (int64_t s = 0; s < k; s += 2) ids[s] = static_cast<int32_t>(rng() % 2 ? rng() : E + rng() % 9); break;
      default: break;
    }
  }
}

// The layer's output with the environment variable `name` set to value
// (null: unset) for this one run (output poisoned first). The caller's own
// setting comes back afterwards (a sanitizer run forces MOEKIT_GEMM=simple
// for the whole suite), so later tests keep it.
inline std::vector<uint8_t> run_with_env(DeviceLayer& d, const char* name, const char* value) {
  const char* before = std::getenv(name);
  const std::string saved = before != nullptr ? before : "";
  if (value != nullptr) setenv(name, value, 1); else unsetenv(name);
  EXPECT_EQ(cudaMemset(d.output.data(), 0xFF, d.output.size()), cudaSuccess);
  const Status s = d.run();
  if (before != nullptr) setenv(name, saved.c_str(), 1); else unsetenv(name);
  EXPECT_TRUE(s.ok()) << name << "=" << (value ? value : "(unset)") << ": " << s.message();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << name;
  return d.output.download();
}

// The layer's output with MOEKIT_GEMM=kernel for this one run.
inline std::vector<uint8_t> run_forced(DeviceLayer& d, const char* kernel) {
  return run_with_env(d, "MOEKIT_GEMM", kernel);
}

// Where a problem's 40 local experts sit among the global ids: [0, 40), or
// scattered over 48 global ids by an expert map, or expert-parallel rank 2
// of 4 (global ids [80, 120) of 160).
enum class Placing { kFirst, kExpertMap, kEpRank };
inline void place_40_local_experts(Problem& p, Placing how) {
  if (how == Placing::kExpertMap) {
    p.num_experts = 48;
    p.has_expert_map = 1;
  } else if (how == Placing::kEpRank) {
    p.num_experts = 160;
    p.ep_size = 4;
    p.ep_rank = 2;
  }
}

// l run with int64 ids, the first one beyond int32 (an invalid id), gives
// bitwise the output of its int32 ids with that id -1.
inline void expect_int64_ids_match_int32(const ref::HostLayer& l, const std::string& what) {
  std::vector<int64_t> ids64(l.topk_ids.begin(), l.topk_ids.end());
  ids64[0] = (int64_t{1} << 33) + 3;
  ref::HostLayer l32 = l;
  l32.topk_ids[0] = -1;
  DeviceLayer want(l32), d64(l);
  DeviceBuffer d_ids64(ids64.size() * 8);
  d_ids64.upload(ids64.data(), ids64.size() * 8);
  d64.args.topk_ids = nullptr;
  d64.args.topk_ids64 = static_cast<const int64_t*>(d_ids64.data());
  ASSERT_TRUE(want.run().ok()) << what;
  ASSERT_TRUE(d64.run().ok()) << what;
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(d64.output.download(), want.output.download()) << what;
  EXPECT_TRUE(d64.all_canaries_intact() && d_ids64.canaries_intact()) << what;
}

// The CPU reference output of l (the CPU backend of the same API).
inline std::vector<uint8_t> cpu_reference(const ref::HostLayer& l) {
  ref::HostLayer c = l;
  c.problem.device = MOEKIT_DEVICE_CPU;
  size_t ws = 0;
  MoeLayer::workspace_size(c.problem, &ws);
  std::vector<uint8_t> ws_store(ws + 256);
  void* wsp = ws_store.data() + (256 - reinterpret_cast<uintptr_t>(ws_store.data()) % 256) % 256;
  std::vector<uint8_t> out(c.problem.num_tokens * c.problem.hidden_size *
                           ref::dtype_size(c.problem.output_dtype));
  Status s = MoeLayer::run(c.arguments(out.data()), wsp, ws);
  EXPECT_TRUE(s.ok()) << s.message();
  return out;
}

// Row by row: finiteness identical; each finite row within `tol` relative
// error of the reference row (rows of exact zeros must be exact zeros).
inline ::testing::AssertionResult rows_match(const std::vector<uint8_t>& got,
                                             const std::vector<uint8_t>& want, int64_t tokens,
                                             int64_t hidden, moekit_dtype_t dtype, double tol) {
  for (int64_t t = 0; t < tokens; ++t) {
    double err2 = 0, ref2 = 0;
    for (int64_t h = 0; h < hidden; ++h) {
      const float g = ref::load_as_float(dtype, got.data(), t * hidden + h);
      const float w = ref::load_as_float(dtype, want.data(), t * hidden + h);
      if (std::isfinite(g) != std::isfinite(w))
        return ::testing::AssertionFailure() << "token " << t << " col " << h << ": got " << g
                                             << ", reference " << w << " (finiteness differs)";
      if (!std::isfinite(w)) continue;
      err2 += double(g - w) * (g - w);
      ref2 += double(w) * w;
    }
    if (ref2 == 0.0 ? err2 != 0.0 : std::sqrt(err2 / ref2) > tol) {
      const float g0 = ref::load_as_float(dtype, got.data(), t * hidden);
      const float w0 = ref::load_as_float(dtype, want.data(), t * hidden);
      return ::testing::AssertionFailure()
             << "token " << t << ": row relative error " << std::sqrt(err2 / (ref2 > 0 ? ref2 : 1))
             << " > " << tol << " (col 0: got " << g0 << ", reference " << w0 << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace moekit::test
