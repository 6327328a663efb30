// Helpers shared by the CPU and GPU test suites.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "moekit/moekit.hpp"
#include "reference/dtype.hpp"
#include "reference/random_layer.hpp"

namespace moekit::test {

// A small problem on the CPU with every field set.
inline Problem small_problem(int64_t T = 16, int64_t E = 8, int64_t k = 2, int64_t H = 32,
                             int64_t I = 16, moekit_dtype_t dt = MOEKIT_DTYPE_FP32) {
  Problem p = default_problem();
  p.num_tokens = T;
  p.num_experts = p.num_local_experts = E;
  p.top_k = k;
  p.hidden_size = H;
  p.intermediate_size = I;
  p.input_dtype = p.weight_dtype = p.output_dtype = dt;
  p.device = MOEKIT_DEVICE_CPU;
  return p;
}

// The given experts' slices, in that order, of a tensor laid out per expert
// ([E, ...]: weights, biases, scales); empty stays empty.
template <class V>
V slice_experts(const V& all, int64_t E, const std::vector<int64_t>& experts) {
  V out;
  if (all.empty()) return out;
  const size_t per = all.size() / E;
  for (int64_t e : experts) out.insert(out.end(), all.begin() + e * per, all.begin() + (e + 1) * per);
  return out;
}

// 0, 1, ..., T - 1: every token, for oracle checks.
inline std::vector<int64_t> all_tokens(int64_t T) {
  std::vector<int64_t> t(T);
  for (int64_t i = 0; i < T; ++i) t[i] = i;
  return t;
}

// Host buffer with a 256-byte aligned body and canary bytes on both sides.
class GuardedBuffer {
 public:
  static constexpr size_t kGuard = 256;
  static constexpr uint8_t kCanary = 0xA5;
  explicit GuardedBuffer(size_t bytes, uint8_t fill = 0xFF)
      : bytes_(bytes), store_(bytes + 2 * kGuard + 256) {
    uintptr_t base = reinterpret_cast<uintptr_t>(store_.data()) + kGuard;
    offset_ = kGuard + (256 - base % 256) % 256;
    std::memset(store_.data(), kCanary, store_.size());
    std::memset(data(), fill, bytes_);
  }
  uint8_t* data() { return store_.data() + offset_; }
  const uint8_t* data() const { return store_.data() + offset_; }
  size_t size() const { return bytes_; }
  bool canaries_intact() const {
    for (size_t i = 0; i < offset_; ++i)
      if (store_[i] != kCanary) return false;
    for (size_t i = offset_ + bytes_; i < store_.size(); ++i)
      if (store_[i] != kCanary) return false;
    return true;
  }

 private:
  size_t bytes_;
  std::vector<uint8_t> store_;
  size_t offset_ = 0;
};

// Runs the layer on the CPU into a poisoned, guarded output; returns status.
struct CpuRun {
  Status status;
  GuardedBuffer output;
  GuardedBuffer workspace;
};

// edit (optional) changes the arguments before the run (an expert map, say).
inline CpuRun run_cpu_layer(const ref::HostLayer& l, moekit_diagnostics_t* diag = nullptr,
                            const std::function<void(moekit_arguments_t&)>& edit = nullptr) {
  const Problem& p = l.problem;
  size_t ws = 0;
  Status s = MoeLayer::workspace_size(p, &ws);
  CpuRun r{s, GuardedBuffer(p.num_tokens * p.hidden_size * ref::dtype_size(p.output_dtype)),
           GuardedBuffer(ws)};
  if (!s) return r;
  moekit_arguments_t a = l.arguments(r.output.data());
  a.diagnostics = diag;
  if (edit) edit(a);
  r.status = MoeLayer::run(a, r.workspace.data(), ws);
  return r;
}

}  // namespace moekit::test
