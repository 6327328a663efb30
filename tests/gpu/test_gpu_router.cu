// The CUDA routers against the CPU router: ids and weights bitwise equal, on
// random and adversarial logits, at the batch sizes around every threshold.
#include "common/router_cases.hpp"
#include "gpu_util.hpp"
#include "reference/router.hpp"

using namespace moekit;
using test::DeviceBuffer;

namespace {

void check_gpu_router(const test::RouterCase& rc) {
  SCOPED_TRACE(rc.name);
  const RouterProblem& p = rc.problem;
  const int64_t T = p.num_tokens, k = p.top_k;
  std::vector<int32_t> want_ids(T * k);
  std::vector<float> want_w(T * k);
  ref::route(p, rc.logits.data(), rc.bias.empty() ? nullptr : rc.bias.data(), want_ids.data(), want_w.data());

  DeviceBuffer logits(rc.logits.size()), bias(rc.bias.size() * 4), ids(T * k * 4), w(T * k * 4);
  if (!rc.logits.empty()) logits.upload(rc.logits.data(), rc.logits.size());
  if (!rc.bias.empty()) bias.upload(rc.bias.data(), rc.bias.size() * 4);
  RouterArguments a{p, logits.data(), rc.bias.empty() ? nullptr : static_cast<const float*>(bias.data()),
                    static_cast<int32_t*>(ids.data()), static_cast<float*>(w.data())};
  a.problem.device = MOEKIT_DEVICE_CUDA;
  Status s = Router::run(a);
  ASSERT_TRUE(s.ok()) << s.message();
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<uint8_t> got_ids = ids.download(), got_w = w.download();
  for (int64_t i = 0; i < T * k; ++i) {
    int32_t id;
    float wt;
    std::memcpy(&id, got_ids.data() + 4 * i, 4);
    std::memcpy(&wt, got_w.data() + 4 * i, 4);
    ASSERT_EQ(id, want_ids[i]) << "token " << i / k << " slot " << i % k;
    ASSERT_EQ(std::memcmp(&wt, &want_w[i], 4), 0)
        << "token " << i / k << " slot " << i % k << ": got " << wt << ", CPU " << want_w[i];
  }
  EXPECT_TRUE(ids.canaries_intact() && w.canaries_intact());
}

}  // namespace

TEST(GpuRouter, EveryKindAndDtypeAroundThresholds) {
  REQUIRE_GPU();
  for (auto kind : {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_ROUTER_TOPK_SOFTMAX, MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK})
    for (auto dt : {MOEKIT_DTYPE_FP32, MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP16})
      for (int64_t T : {0, 1, 255, 256, 257, 65536})
        for (bool adversarial : {false, true}) {
          check_gpu_router(test::make_router_case(test::router_problem(kind, T, 256, 8, dt), adversarial, T + kind));
          if (HasFatalFailure()) return;
        }
}

TEST(GpuRouter, ExpertCountsAndTopK) {
  REQUIRE_GPU();
  for (auto kind : {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_ROUTER_TOPK_SOFTMAX, MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK})
    for (auto [E, k] : {std::pair<int64_t, int64_t>{1, 1}, {8, 2}, {72, 9}, {128, 8}, {160, 10},
                        {384, 22}, {512, 32}, {1024, 32}, {6144, 32}, {64, 64}})
      for (bool adversarial : {false, true}) {
        check_gpu_router(test::make_router_case(test::router_problem(kind, 999, E, k), adversarial, E + k));
        if (HasFatalFailure()) return;
      }
}

TEST(GpuRouter, TopKEqualsEAtTheLargestE) {
  REQUIRE_GPU();  // the most shared memory a warp takes: past the 48 KiB default
  for (auto kind : {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_ROUTER_TOPK_SOFTMAX, MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK})
    check_gpu_router(test::make_router_case(test::router_problem(kind, 3, 6144, 6144), true, 1));
}

TEST(GpuRouter, RoutedLayerMatchesTheCpu) {
  REQUIRE_GPU();
  const moekit_router_config_t configs[] = {
      {MOEKIT_ROUTER_SOFTMAX_TOPK, MOEKIT_DTYPE_BF16, 1, 1, 1, 1.0f},
      {MOEKIT_ROUTER_TOPK_SOFTMAX, MOEKIT_DTYPE_FP32, 1, 1, 1, 1.0f},
      {MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK, MOEKIT_DTYPE_FP32, 1, 8, 4, 2.5f}};
  for (const auto& c : configs) {
    Problem p = default_problem();
    p.num_tokens = 513;
    p.num_experts = 256;
    p.ep_size = 4;
    p.ep_rank = 2;
    p.num_local_experts = 64;
    p.top_k = 8;
    p.hidden_size = 128;
    p.intermediate_size = 64;
    p.router = c;
    ref::HostLayer l = ref::make_random_layer(p, c.kind);
    test::DeviceLayer d(l);  // ids/weights uploaded but unused: the layer routes itself
    DeviceBuffer logits(l.router_logits.size()), bias(l.correction_bias.size() * 4);
    logits.upload(l.router_logits.data(), l.router_logits.size());
    if (!l.correction_bias.empty()) bias.upload(l.correction_bias.data(), l.correction_bias.size() * 4);
    d.args.topk_ids = nullptr;
    d.args.topk_weights = nullptr;
    d.args.router_logits = logits.data();
    d.args.router_correction_bias = l.correction_bias.empty() ? nullptr : static_cast<const float*>(bias.data());
    Status s = d.run();
    ASSERT_TRUE(s.ok()) << s.message();
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_TRUE(test::rows_match(d.output.download(), test::cpu_reference(l), p.num_tokens,
                                 p.hidden_size, p.output_dtype,
                                 ref::oracle_tolerance(p.weight_dtype, p.input_dtype, p.output_dtype)))
        << "router kind " << c.kind;
    EXPECT_TRUE(d.all_canaries_intact());
  }
}
