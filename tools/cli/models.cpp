#include "tools/cli/models.hpp"

#include <algorithm>
#include <limits>

namespace moekit::cli {

const std::vector<ModelShape>& builtin_models() {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  static const std::vector<ModelShape> kModels = {
      {"qwen3-30b-a3b", 128, 8, 2048, 768, MOEKIT_ACT_SWIGLU, 1.0f, 0.0f, kInf, MOEKIT_GATE_UP, false,
       "softmax top-k, renormalized"},
      {"qwen3-235b-a22b", 128, 8, 4096, 1536, MOEKIT_ACT_SWIGLU, 1.0f, 0.0f, kInf, MOEKIT_GATE_UP,
       false, "softmax top-k, renormalized"},
      {"mixtral-8x7b", 8, 2, 4096, 14336, MOEKIT_ACT_SWIGLU, 1.0f, 0.0f, kInf, MOEKIT_GATE_UP, false,
       "top-k then softmax over the k"},
      {"deepseek-v3", 256, 8, 7168, 2048, MOEKIT_ACT_SWIGLU, 1.0f, 0.0f, kInf, MOEKIT_GATE_UP, false,
       "grouped sigmoid top-k (8 groups, 4 kept), scaled by 2.5"},
      {"gpt-oss-120b", 128, 4, 2880, 2880, MOEKIT_ACT_SWIGLU, 1.702f, 1.0f, 7.0f, MOEKIT_INTERLEAVED,
       true, "top-k then softmax over the k"},
  };
  return kModels;
}

const ModelShape* find_model(const std::string& name) {
  for (const ModelShape& m : builtin_models())
    if (name == m.name) return &m;
  return nullptr;
}

const std::vector<Ceiling>& gpu_ceilings() {
  static const std::vector<Ceiling> kCeilings = {
      {"H100", 3.01e12, 803e12},
      {"H200", 4.26e12, 806e12},
  };
  return kCeilings;
}

double floor_seconds(const Ceiling& c, double bytes, double flops) {
  return std::max(bytes / c.bytes_per_s, flops / c.flops_per_s);
}

}  // namespace moekit::cli
