#include "tools/cli/models.hpp"

#include <algorithm>
#include <limits>

namespace moekit::cli {

const std::vector<ModelShape>& builtin_models() {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const moekit_router_config_t softmax_topk{MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_DTYPE_FP32, 1, 1, 1, 1.0f};
  const moekit_router_config_t topk_softmax{MOEKIT_ROUTER_TOPK_SOFTMAX, MOEKIT_DTYPE_FP32, 1, 1, 1, 1.0f};
  const moekit_router_config_t deepseek{MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK, MOEKIT_DTYPE_FP32, 1, 8, 4, 2.5f};
  static const std::vector<ModelShape> kModels = {
      {"qwen3-30b-a3b", 128, 8, 2048, 768, MOEKIT_ACT_SWIGLU, 1.0f, 0.0f, kInf, MOEKIT_GATE_UP, false,
       softmax_topk, "softmax top-k, renormalized"},
      {"qwen3-235b-a22b", 128, 8, 4096, 1536, MOEKIT_ACT_SWIGLU, 1.0f, 0.0f, kInf, MOEKIT_GATE_UP,
       false, softmax_topk, "softmax top-k, renormalized"},
      {"mixtral-8x7b", 8, 2, 4096, 14336, MOEKIT_ACT_SWIGLU, 1.0f, 0.0f, kInf, MOEKIT_GATE_UP, false,
       topk_softmax, "top-k then softmax over the k"},
      {"deepseek-v3", 256, 8, 7168, 2048, MOEKIT_ACT_SWIGLU, 1.0f, 0.0f, kInf, MOEKIT_GATE_UP, false,
       deepseek, "sigmoid + bias, grouped top-k (8 groups, 4 kept), x2.5"},
      {"gpt-oss-120b", 128, 4, 2880, 2880, MOEKIT_ACT_SWIGLU, 1.702f, 1.0f, 7.0f, MOEKIT_INTERLEAVED,
       true, topk_softmax, "top-k then softmax over the k"},
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
