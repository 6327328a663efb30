// Built-in model shapes for `moekit run`, and the roofline floor of a layer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moekit/moekit.h"

namespace moekit::cli {

struct ModelShape {
  const char* name;
  int64_t num_experts, top_k, hidden, inter;
  moekit_activation_t activation;
  float swiglu_alpha, swiglu_beta, swiglu_limit;
  moekit_gate_up_order_t gate_up_order;
  bool biases;
  moekit_router_config_t router;  // the model's own router, run as the layer's first stage
  const char* router_name;
};

const std::vector<ModelShape>& builtin_models();
const ModelShape* find_model(const std::string& name);

// Measured ceilings of the lent GPUs (PEERS.md): copy bandwidth and bf16 matmul rate.
struct Ceiling {
  const char* gpu;
  double bytes_per_s;
  double flops_per_s;
};
const std::vector<Ceiling>& gpu_ceilings();

// max(bytes of touched experts' weights + activations / bandwidth, flops / rate).
double floor_seconds(const Ceiling& c, double bytes, double flops);

}  // namespace moekit::cli
