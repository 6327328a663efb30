// Runs a tiny layer on the CPU through the installed C++ API.
#include <moekit/moekit.hpp>

#include <cstdio>
#include <vector>

int main() {
  moekit::Problem p = moekit::default_problem();
  p.device = MOEKIT_DEVICE_CPU;
  p.num_tokens = 2;
  p.hidden_size = 8;
  p.intermediate_size = 8;
  p.num_experts = p.num_local_experts = 2;
  p.top_k = 1;
  p.input_dtype = p.weight_dtype = p.output_dtype = MOEKIT_DTYPE_FP32;
  p.activation = MOEKIT_ACT_IDENTITY;
  // Identity experts scaled by e + 1: out = w * (e + 1)^2 * x.
  std::vector<float> x(16, 1.0f), w13(2 * 8 * 8, 0.0f), w2(2 * 8 * 8, 0.0f), out(16, -1.0f);
  for (int e = 0; e < 2; ++e)
    for (int i = 0; i < 8; ++i) w13[(e * 8 + i) * 8 + i] = w2[(e * 8 + i) * 8 + i] = e + 1.0f;
  int32_t ids[2] = {1, 0};
  float weights[2] = {0.5f, 2.0f};
  moekit::Arguments a{};
  a.problem = p;
  a.hidden = x.data(); a.topk_ids = ids; a.topk_weights = weights;
  a.w13 = w13.data(); a.w2 = w2.data(); a.output = out.data();
  size_t bytes = 0;
  moekit::Status s = moekit::MoeLayer::workspace_size(p, &bytes);
  alignas(256) static unsigned char ws[1 << 16];
  if (s) s = bytes <= sizeof(ws) ? moekit::MoeLayer::run(a, ws, bytes)
                                 : moekit::Status(MOEKIT_ERROR_WORKSPACE, "too big");
  if (!s) { std::printf("FAIL: %s\n", s.message().c_str()); return 1; }
  if (out[0] != 2.0f || out[8] != 2.0f) { std::printf("FAIL: %g %g\n", out[0], out[8]); return 1; }
  std::printf("consumer_cpp OK\n");
  return 0;
}
