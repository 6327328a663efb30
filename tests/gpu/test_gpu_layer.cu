// The whole CUDA layer against the CPU reference (same API, device = cpu) for
// the input classes of ROBUSTNESS.md. Outputs and workspaces are poisoned and
// guarded by canaries; every run is checked row by row.
#include <algorithm>
#include <functional>
#include <random>

#include "common/fp8_cases.hpp"
#include "common/hostile_problem.hpp"
#include "common/test_util.hpp"
#include "gpu_util.hpp"
#include "reference/reference.hpp"

using namespace moekit;
using test::DeviceBuffer;
using test::DeviceLayer;
using test::make_adversarial;

namespace {

Problem problem(int64_t T, int64_t E, int64_t k, int64_t H, int64_t I,
                moekit_dtype_t dt = MOEKIT_DTYPE_BF16) {
  return test::small_problem(T, E, k, H, I, dt);  // DeviceLayer switches it to the GPU
}

double tolerance(const Problem& p) {
  return ref::oracle_tolerance(p.weight_dtype, p.input_dtype, p.output_dtype);
}

// Runs l on the GPU and checks it against the CPU reference, the canaries and
// the oracle on a few tokens; returns the GPU output.
std::vector<uint8_t> expect_gpu_matches(const ref::HostLayer& l, const std::string& what,
                                        bool oracle = true) {
  SCOPED_TRACE(what);
  DeviceLayer d(l);
  DeviceBuffer diag(sizeof(moekit_diagnostics_t), 0);
  d.args.diagnostics = static_cast<moekit_diagnostics_t*>(diag.data());
  Status s = d.run();
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint8_t> got = d.output.download();
  const Problem& p = l.problem;
  const std::vector<uint8_t> want = test::cpu_reference(l);
  EXPECT_TRUE(test::rows_match(got, want, p.num_tokens, p.hidden_size, p.output_dtype, tolerance(p)));
  EXPECT_TRUE(d.all_canaries_intact());
  if (oracle && p.num_tokens > 0) {
    std::vector<int64_t> tokens;
    for (int64_t i = 0; i < 8; ++i) tokens.push_back(i * (p.num_tokens - 1) / 7);
    const auto c = ref::check_against_oracle(l.arguments(got.data()), got.data(), tokens);
    EXPECT_EQ(c.nonfinite_mismatch, 0);
    EXPECT_LE(c.rel_frobenius, tolerance(p));
  }
  // Diagnostics equal the CPU's count.
  moekit_diagnostics_t want_diag{}, got_diag{};
  {
    std::vector<int32_t> off(p.num_local_experts + 1), a(p.num_tokens * p.top_k), b(a.size());
    ref::sort_pairs(ref::routing_of(l.arguments(nullptr)), l.topk_ids.data(), off.data(), a.data(),
                    b.data(), &want_diag);
  }
  EXPECT_EQ(cudaMemcpy(&got_diag, diag.data(), sizeof(got_diag), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got_diag.invalid_ids, want_diag.invalid_ids);
  EXPECT_EQ(got_diag.tokens_without_valid_expert, want_diag.tokens_without_valid_expert);
  EXPECT_EQ(got_diag.tokens_without_local_expert, want_diag.tokens_without_local_expert);
  return got;
}

}  // namespace

TEST(GpuLayer, EveryDtypeCombination) {
  REQUIRE_GPU();
  const moekit_dtype_t kinds[] = {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP16, MOEKIT_DTYPE_FP32};
  for (auto in : kinds)
    for (auto w : kinds)
      for (auto out : kinds) {
        Problem p = problem(37, 16, 4, 136, 72);
        p.input_dtype = in; p.weight_dtype = w; p.output_dtype = out;
        expect_gpu_matches(ref::make_random_layer(p, 1), std::string(moekit_dtype_name(in)) + "/" +
                                                             moekit_dtype_name(w) + "/" + moekit_dtype_name(out));
      }
}

// Calls f(problem, name, seed) for every activation kind x gate/up order
// (orders only for the gated kinds) x with and without biases (SwiGLU with
// biases also takes gpt-oss's clamps), on a copy of base.
template <class F>
void for_each_activation(const Problem& base, F&& f) {
  for (int act = MOEKIT_ACT_SWIGLU; act <= MOEKIT_ACT_IDENTITY; ++act)
    for (int order = 0; order < 3; ++order)
      for (int bias = 0; bias < 2; ++bias) {
        if (order > 0 && !activation_is_gated(static_cast<moekit_activation_t>(act))) continue;
        Problem p = base;
        p.activation = static_cast<moekit_activation_t>(act);
        p.gate_up_order = static_cast<moekit_gate_up_order_t>(order);
        p.has_w13_bias = p.has_w2_bias = bias;
        if (act == MOEKIT_ACT_SWIGLU && bias) { p.swiglu_alpha = 1.702f; p.swiglu_beta = 1.0f; p.swiglu_limit = 0.5f; }
        f(p, std::string(moekit_activation_name(p.activation)) + " order " + std::to_string(order) +
                 " bias " + std::to_string(bias) + " T=" + std::to_string(p.num_tokens),
          static_cast<uint64_t>(act * 10 + order));
      }
}

TEST(GpuLayer, EveryActivationOrderAndBias) {
  REQUIRE_GPU();
  // T = 29: 11 rows per expert (tiles, activation stage); T = 9: 3.4 (the
  // decode kernel, activation in its epilogue). I = 48 leaves a partial 32-
  // and 64-column slice.
  for (int64_t T : {29, 9})
    for_each_activation(problem(T, 8, 3, 64, 48), [](const Problem& p, const std::string& what,
                                                     uint64_t seed) {
      expect_gpu_matches(ref::make_random_layer(p, seed), what);
    });
}

// The decode kernel's fused activation writes what GEMM 1 followed by the
// activation stage writes, bit for bit: every kind and gate/up order, with
// and without biases, against CUTLASS swap-AB (the same MMA arithmetic)
// followed by the activation kernel. Partial slices (I = 80) and, at T = 20,
// an expert with 30 rows (two 16-token passes) beside one with 10; at T = 64
// (16 rows per expert: 32-token passes) one with 96 rows (three passes)
// beside one with 32.
TEST(GpuLayer, DecodeEpilogueActivationEqualsTheActivationStage) {
  REQUIRE_GPU();
  if (std::getenv("MOEKIT_GEMM") != nullptr)
    GTEST_SKIP() << "compares two kernel choices itself; runs without MOEKIT_GEMM";
  for (int64_t T : {1, 20, 64})
    for_each_activation(problem(T, 8, 2, 128, 80), [](const Problem& p, const std::string& what,
                                                      uint64_t seed) {
      const int64_t T = p.num_tokens;
      ref::HostLayer l = ref::make_random_layer(p, 100 + seed);
      if (T > 1)
        for (size_t i = 0; i < l.topk_ids.size(); ++i) l.topk_ids[i] = i % 4 == 3 ? 5 : 0;
      DeviceLayer d(l);
      std::string plan;
      MoeLayer::describe_plan(d.args.problem, &plan);
      ASSERT_NE(plan.find("decode"), std::string::npos) << what << ": " << plan;
      const std::vector<uint8_t> fused = test::run_forced(d, "decode");
      const std::vector<uint8_t> staged = test::run_forced(d, "swap128x16");
      size_t first = 0;
      while (first < fused.size() && fused[first] == staged[first]) ++first;
      EXPECT_EQ(first, fused.size()) << what << ": first differing byte " << first;
      EXPECT_TRUE(test::rows_match(fused, test::cpu_reference(l), T, 128, p.output_dtype,
                                   tolerance(p)))
          << what;
      });
}

// The prefill kernel, activation in its epilogue, writes what CUTLASS's
// 128x256 kernel followed by the activation stage writes, bit for bit:
// every kind and order, with and without biases; I = 200 leaves a partial
// 128-column slice, and two experts get 150 rows (two 128-row units) beside
// six with 50. GEMM 2 runs on the same kernel pair (unfused).
TEST(GpuLayer, PrefillEpilogueActivationEqualsTheActivationStage) {
  REQUIRE_GPU();
  if (std::getenv("MOEKIT_GEMM") != nullptr)
    GTEST_SKIP() << "compares two kernel choices itself; runs without MOEKIT_GEMM";
  for_each_activation(problem(300, 8, 2, 128, 200), [](const Problem& p, const std::string& what,
                                                       uint64_t seed) {
    ref::HostLayer l = ref::make_random_layer(p, 300 + seed);
    for (size_t i = 0; i < l.topk_ids.size(); ++i)
      l.topk_ids[i] = static_cast<int32_t>(i % 2 == 0 ? (i / 2) % 2 : 2 + (i / 2) % 6);
    DeviceLayer d(l);
    const std::vector<uint8_t> fused = test::run_forced(d, "prefill");
    const std::vector<uint8_t> staged = test::run_forced(d, "tile128x256");
    size_t first = 0;
    while (first < fused.size() && fused[first] == staged[first]) ++first;
    EXPECT_EQ(first, fused.size()) << what << ": first differing byte " << first;
    EXPECT_TRUE(test::rows_match(fused, test::cpu_reference(l), p.num_tokens, 128, p.output_dtype,
                                 tolerance(p)))
        << what;
    EXPECT_TRUE(d.all_canaries_intact()) << what;
  });
}

TEST(GpuLayer, ProductionFailureRoutingAtEveryThreshold) {
  REQUIRE_GPU();
  for (int64_t T : {1, 2, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097}) {
    ref::HostLayer l = ref::make_random_layer(problem(T, 64, 8, 128, 64), T);
    make_adversarial(l, T);
    expect_gpu_matches(l, "T=" + std::to_string(T));
    if (HasFailure()) return;
  }
}

TEST(GpuLayer, ProductionFailureRoutingAt300kTokens) {
  REQUIRE_GPU();
  ref::HostLayer l = ref::make_random_layer(problem(300000, 64, 8, 64, 32), 300000);
  make_adversarial(l, 3);
  expect_gpu_matches(l, "T=300000");
}

TEST(GpuLayer, OddShapesAndExpertCounts) {
  REQUIRE_GPU();
  struct S { int64_t T, E, k, H, I; };
  for (S s : {S{33, 8, 2, 2688, 704}, S{65, 257, 9, 200, 40}, S{40, 384, 22, 64, 24},
              S{70, 1100, 10, 32, 16}, S{9, 6, 6, 8, 8}, S{17, 3, 3, 24, 8}}) {
    expect_gpu_matches(ref::make_random_layer(problem(s.T, s.E, s.k, s.H, s.I), s.E),
                       "E=" + std::to_string(s.E) + " H=" + std::to_string(s.H) + " I=" + std::to_string(s.I));
  }
}

TEST(GpuLayer, ExpertParallelRanksIncludingAnEmptyRank) {
  REQUIRE_GPU();
  for (int64_t rank = 0; rank < 4; ++rank) {
    Problem p = problem(100, 32, 4, 64, 32);
    p.ep_size = 4; p.ep_rank = rank; p.num_local_experts = 8;
    ref::HostLayer l = ref::make_random_layer(p, rank);
    if (rank == 3) for (auto& id : l.topk_ids) id %= 24;  // no id reaches rank 3
    expect_gpu_matches(l, "rank " + std::to_string(rank));
  }
}

TEST(GpuLayer, RoutingSkewOneExpertLastExpertOnePerExpert) {
  REQUIRE_GPU();
  ref::HostLayer l = ref::make_random_layer(problem(600, 32, 4, 64, 32), 4);
  std::fill(l.topk_ids.begin(), l.topk_ids.end(), 0);
  expect_gpu_matches(l, "all on expert 0");
  std::fill(l.topk_ids.begin(), l.topk_ids.end(), 31);
  expect_gpu_matches(l, "all on the last expert");
  ref::HostLayer one = ref::make_random_layer(problem(128, 128, 1, 64, 32), 5);
  for (int t = 0; t < 128; ++t) one.topk_ids[t] = 127 - t;
  expect_gpu_matches(one, "one token per expert");
}

TEST(GpuLayer, NonFiniteValuesStayInTheirRow) {
  REQUIRE_GPU();
  ref::HostLayer l = ref::make_random_layer(problem(64, 16, 4, 64, 32, MOEKIT_DTYPE_FP32), 6);
  float* x = reinterpret_cast<float*>(l.hidden.data());
  x[3 * 64 + 1] = NAN;
  x[10 * 64 + 7] = INFINITY;
  l.topk_weights[20 * 4 + 2] = NAN;
  l.topk_weights[21 * 4 + 0] = -INFINITY;
  l.topk_weights[22 * 4 + 1] = 0.0f;
  l.topk_weights[23 * 4 + 3] = -7.0f;
  l.topk_ids[24 * 4 + 0] = -1;
  l.topk_weights[24 * 4 + 0] = NAN;  // NaN weight on an invalid slot: ignored
  std::vector<uint8_t> got = expect_gpu_matches(l, "non-finite");
  const float* out = reinterpret_cast<const float*>(got.data());
  for (int64_t t = 0; t < 64; ++t) {
    bool finite = true;
    for (int64_t h = 0; h < 64; ++h) finite &= std::isfinite(out[t * 64 + h]);
    EXPECT_EQ(finite, t != 3 && t != 10 && t != 20 && t != 21) << "token " << t;
  }
}

TEST(GpuLayer, IndicesPast2To31) {
  REQUIRE_GPU();
  // 320000 rows x H = 8192: row * H reaches 2.6e9 in permute, GEMM 2 and finalize.
  Problem p = problem(80000, 4, 4, 8192, 8);
  ref::HostLayer l = ref::make_random_layer(p, 7);
  expect_gpu_matches(l, "T*k*H > 2^31", false);
}

// Rows at the documented limit (MOEKIT_MAX_ROW_LENGTH = 2^24 columns): one
// expert with H at the limit and one with I at it (GEMM 1 then has 2^25
// output columns), T = 3, so every stage walks a row longer than any model's.
TEST(GpuLayer, RowsAtTheLengthLimit) {
  REQUIRE_GPU();
  constexpr int64_t kMax = MOEKIT_MAX_ROW_LENGTH;
  struct S { int64_t H, I; };
  for (S s : {S{kMax, 8}, S{8, kMax}}) {
    ref::HostLayer l = ref::make_random_layer(problem(3, 1, 1, s.H, s.I), 11);
    expect_gpu_matches(l, "H=" + std::to_string(s.H) + " I=" + std::to_string(s.I));
  }
}

// The CPU suite's hostile problems on the CUDA backend: workspace size, plan
// and argument checks return a status for each (never a crash, never a CUDA
// error left behind), an accepted problem's workspace holds a chunk's
// gathered rows (a wrapped size would be smaller), and the layer then still
// gives the right answer.
TEST(GpuLayer, HostileProblemFieldsGetAStatusNeverACrash) {
  REQUIRE_GPU();
  const ref::HostLayer l = ref::make_random_layer(problem(16, 8, 2, 32, 16), 13);
  DeviceLayer d(l);
  test::HostileProblems hostile(20261206, 10);
  int accepted = 0;
  for (int i = 0; i < 5000; ++i) {
    moekit_arguments_t a = d.args;
    moekit_problem_t& p = a.problem;
    hostile.apply(p);
    p.device = MOEKIT_DEVICE_CUDA;
    SCOPED_TRACE("iteration " + std::to_string(i) + ": " + test::sizes_of(p));
    size_t bytes = 0;
    const moekit_status_t ws = moekit_workspace_size(&p, &bytes);
    ASSERT_TRUE(ws == MOEKIT_SUCCESS || ws == MOEKIT_ERROR_INVALID_ARGUMENT) << moekit_last_error_message();
    std::string plan;
    const Status described = MoeLayer::describe_plan(p, &plan);
    ASSERT_EQ(described.code(), ws) << described.message();
    if (ws == MOEKIT_SUCCESS && p.num_tokens > 0) {
      ++accepted;
      const int64_t chunk = std::min<int64_t>(p.num_tokens, std::max<int64_t>(1, 65536 / p.top_k));
      ASSERT_GE(static_cast<long double>(bytes), static_cast<long double>(chunk) * p.top_k * p.hidden_size * 2);
    }
    const moekit_status_t ok = moekit_can_implement(&a);
    ASSERT_TRUE(ok == MOEKIT_SUCCESS || ok == MOEKIT_ERROR_INVALID_ARGUMENT) << moekit_last_error_message();
    if (ws != MOEKIT_SUCCESS) {
      ASSERT_EQ(ok, MOEKIT_ERROR_INVALID_ARGUMENT);
    }
  }
  EXPECT_GT(accepted, 100);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  expect_gpu_matches(l, "the fixture's layer after the hostile problems");
}

TEST(GpuLayer, ZeroTokensLaunchesNothing) {
  REQUIRE_GPU();
  Problem p = problem(0, 8, 2, 64, 32);
  p.device = MOEKIT_DEVICE_CUDA;
  size_t bytes = 1;
  ASSERT_TRUE(MoeLayer::workspace_size(p, &bytes).ok());
  EXPECT_EQ(bytes, 0u);
  moekit_arguments_t a{};
  a.problem = p;
  EXPECT_TRUE(MoeLayer::run(a, nullptr, 0, nullptr).ok());
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(GpuLayer, BitwiseDeterministic) {
  REQUIRE_GPU();
  ref::HostLayer l = ref::make_random_layer(problem(3000, 64, 8, 256, 128), 8);
  make_adversarial(l, 8);
  DeviceLayer d(l);
  ASSERT_TRUE(d.run().ok());
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<uint8_t> first = d.output.download();
  for (int i = 0; i < 3; ++i) {
    CUDA_OK(cudaMemset(d.output.data(), 0xFF, d.output.size()));
    ASSERT_TRUE(d.run().ok());
    CUDA_OK(cudaDeviceSynchronize());
    ASSERT_EQ(d.output.download(), first) << "run " << i;
  }
}

namespace {

// Captures one run of d (global mode: any allocation or synchronization inside
// run breaks the capture), then for each replay lets change(replay) upload new
// inputs to d and return the layer they make, replays into a poisoned output
// and compares it with the CPU reference of that layer.
void expect_graph_replays_match(DeviceLayer& d, int replays,
                                const std::function<ref::HostLayer(int)>& change) {
  const Problem& p = d.args.problem;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  Status s = d.run(stream);
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  ASSERT_TRUE(s.ok()) << s.message();
  cudaGraphExec_t exec;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < replays; ++replay) {
    const ref::HostLayer next = change(replay);
    CUDA_OK(cudaMemset(d.output.data(), 0xFF, d.output.size()));
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT_TRUE(test::rows_match(d.output.download(), test::cpu_reference(next), p.num_tokens,
                                 p.hidden_size, p.output_dtype, tolerance(p)))
        << "replay " << replay;
  }
  EXPECT_TRUE(d.all_canaries_intact());
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace

TEST(GpuLayer, GraphReplayWithNewRoutingEachTime) {
  REQUIRE_GPU();
  ref::HostLayer l = ref::make_random_layer(problem(257, 64, 8, 128, 64), 9);
  DeviceLayer d(l);
  expect_graph_replays_match(d, 4, [&](int replay) {
    ref::HostLayer next = ref::make_random_layer(l.problem, 100 + replay);
    if (replay % 2) make_adversarial(next, replay);
    next.w13 = l.w13;  // weights stay; routing and inputs change
    next.w2 = l.w2;
    d.hidden.upload(next.hidden.data(), next.hidden.size());
    d.ids.upload(next.topk_ids.data(), next.topk_ids.size() * 4);
    d.weights.upload(next.topk_weights.data(), next.topk_weights.size() * 4);
    return next;
  });
}

TEST(GpuLayer, ExpertMapAndRouterWeightOnInput) {
  REQUIRE_GPU();
  // Scattered placements (E_local of E_total global ids), adversarial ids,
  // both weight placements, decode to prefill sizes (every GEMM family).
  for (int64_t T : {1, 9, 300, 3000})
    for (int on_input = 0; on_input < 2; ++on_input) {
      Problem p = problem(T, 12, on_input ? 1 : 4, 256, 128);
      p.num_experts = 40;
      p.has_expert_map = 1;
      p.apply_router_weight_on_input = on_input;
      p.has_w13_bias = 1;
      ref::HostLayer l = ref::make_random_layer(p, T + on_input);
      make_adversarial(l, T);
      expect_gpu_matches(l, "T=" + std::to_string(T) + " weights on input " + std::to_string(on_input));
    }
}

TEST(GpuLayer, GraphReplayPicksUpANewExpertMap) {
  REQUIRE_GPU();
  // EPLB: the placement changes between replays of one captured graph.
  Problem p = problem(200, 8, 4, 128, 64);
  p.num_experts = 32;
  p.has_expert_map = 1;
  ref::HostLayer l = ref::make_random_layer(p, 41);
  DeviceLayer d(l);
  expect_graph_replays_match(d, 3, [&](int replay) {
    ref::HostLayer next = l;
    next.expert_map = ref::make_random_layer(p, 500 + replay).expert_map;
    d.expert_map.upload(next.expert_map.data(), next.expert_map.size() * 4);
    return next;
  });
}

TEST(GpuLayer, Int64IdsEqualInt32Ids) {
  REQUIRE_GPU();
  // Both sort paths (one block, and the device radix sort), values an int32
  // cast would wrap onto valid experts, and garbage.
  for (int64_t T : {37, 5000}) {
    ref::HostLayer l = ref::make_random_layer(problem(T, 16, 4, 128, 64), 17);
    make_adversarial(l, T);
    std::vector<int64_t> ids64(l.topk_ids.begin(), l.topk_ids.end());
    for (size_t i = 0; i < ids64.size(); i += 13) ids64[i] = (int64_t{1} << 32) + static_cast<int64_t>(i % 16);
    for (size_t i = 5; i < ids64.size(); i += 29) ids64[i] = -(int64_t{1} << 35);
    ref::HostLayer l32 = l;
    for (size_t i = 0; i < ids64.size(); ++i)
      l32.topk_ids[i] = (ids64[i] >= 0 && ids64[i] < 16) ? static_cast<int32_t>(ids64[i]) : -1;
    DeviceLayer want(l32);
    ASSERT_TRUE(want.run().ok());
    DeviceLayer got(l);
    DeviceBuffer d_ids64(ids64.size() * 8);
    d_ids64.upload(ids64.data(), ids64.size() * 8);
    got.args.topk_ids = nullptr;
    got.args.topk_ids64 = static_cast<const int64_t*>(d_ids64.data());
    Status s = got.run();
    ASSERT_TRUE(s.ok()) << s.message();
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(got.output.download(), want.output.download()) << "T=" << T;
    EXPECT_TRUE(got.all_canaries_intact() && d_ids64.canaries_intact());
  }
}

// Up to 32 pairs on the decode kernel the layer sorts and gathers in one
// launch and GEMM 1 ranks the ids itself (launch_sort_gather_tiny,
// DecodeRouting): the CPU's answer, and bitwise the answer of the separate
// sort and gather (CUTLASS's swap-AB GEMMs, which give the decode kernel's
// bits), for adversarial ids, expert maps, an expert-parallel rank, int64
// ids, weights on the input, fp32 input and every top-k that fits, including
// a whole row of 32 slots.
TEST(GpuLayer, TinyBatchesSortAndGatherInOneLaunch) {
  REQUIRE_GPU();
  if (std::getenv("MOEKIT_GEMM") != nullptr)
    GTEST_SKIP() << "compares two kernel choices itself; runs without MOEKIT_GEMM";
  struct Shape { int64_t T, k; };
  for (const Shape sh : {Shape{1, 1}, Shape{1, 8}, Shape{2, 2}, Shape{3, 8}, Shape{4, 8}, Shape{1, 32}, Shape{5, 6}})
    for (int variant = 0; variant < 5; ++variant) {
      Problem p = problem(sh.T, 40, sh.k, 256, 128);
      test::place_40_local_experts(p, variant == 1   ? test::Placing::kExpertMap
                                      : variant == 4 ? test::Placing::kEpRank
                                                     : test::Placing::kFirst);
      p.apply_router_weight_on_input = variant == 2 && sh.k == 1;
      if (variant == 3) p.input_dtype = MOEKIT_DTYPE_FP32;
      ref::HostLayer l = ref::make_random_layer(p, 100 * sh.T + sh.k + variant);
      make_adversarial(l, sh.T * 7 + variant);
      const std::string what = "T=" + std::to_string(sh.T) + " k=" + std::to_string(sh.k) + " variant " +
                               std::to_string(variant);
      const std::vector<uint8_t> got = expect_gpu_matches(l, what);
      DeviceLayer d(l);
      EXPECT_EQ(test::run_forced(d, "swap128x16"), got) << what;
      if (variant == 0) test::expect_int64_ids_match_int32(l, what);
      if (HasFailure()) return;
    }
}

// GEMM 1 on the prefill kernel gathers its own rows (cp.async through the
// sort's map, no gather stage; with fp8 block scaling from the input
// quantized once per token) where they need no conversion or router weight,
// and otherwise falls back to the gather stage: either way the CPU's answer
// and bitwise that of CUTLASS after the gather stage (128x256; fp8 the
// blockwise 128x128), for adversarial ids, an expert map, an expert-parallel
// rank, weights on the input and fp32 input (the fallbacks), fp16, K = 200
// (a partial last stage), fp8 per tensor (the gather stage quantizes per
// expert), two chunks, in place (every chunk reads its rows before
// finalize overwrites them), and experts whose last 128-row unit has 0, 1
// or 64 rows in its second warpgroup's half.
TEST(GpuLayer, PrefillKernelGathersItsOwnRows) {
  REQUIRE_GPU();
  if (std::getenv("MOEKIT_GEMM") != nullptr)
    GTEST_SKIP() << "compares two kernel choices itself; runs without MOEKIT_GEMM";
  enum Variant { kPlain, kMap, kRank, kOnInput, kFp32In, kFp16, kFp8Block, kFp8BlockRank, kFp8Tensor, kInPlace,
                 kFp8InPlace, kUnitEdges, kFp8UnitEdges };
  struct Case { int64_t T, k, H; Variant v; };
  for (const Case c : {Case{1, 8, 256, kPlain}, Case{33, 8, 256, kPlain}, Case{300, 8, 256, kMap},
                       Case{300, 8, 256, kRank}, Case{300, 1, 256, kOnInput}, Case{300, 8, 256, kFp32In},
                       Case{300, 8, 200, kFp16}, Case{2100, 6, 128, kPlain}, Case{300, 8, 384, kFp8Block},
                       Case{300, 8, 256, kFp8BlockRank}, Case{300, 8, 256, kFp8Tensor},
                       Case{9000, 8, 128, kInPlace}, Case{9000, 8, 128, kFp8InPlace}, Case{771, 1, 256, kUnitEdges},
                       Case{771, 1, 256, kFp8UnitEdges}}) {
    const bool fp8 = c.v == kFp8Block || c.v == kFp8BlockRank || c.v == kFp8Tensor || c.v == kFp8InPlace ||
                     c.v == kFp8UnitEdges;
    Problem p = fp8 ? test::fp8_problem(c.T, 40, c.k, c.H, 128,
                                        c.v == kFp8Tensor ? MOEKIT_QUANT_FP8_TENSOR : MOEKIT_QUANT_FP8_BLOCK)
                    : problem(c.T, 40, c.k, c.H, 128, c.v == kFp16 ? MOEKIT_DTYPE_FP16 : MOEKIT_DTYPE_BF16);
    test::place_40_local_experts(p, c.v == kMap                              ? test::Placing::kExpertMap
                                    : c.v == kRank || c.v == kFp8BlockRank ? test::Placing::kEpRank
                                                                           : test::Placing::kFirst);
    p.apply_router_weight_on_input = c.v == kOnInput;
    if (c.v == kFp32In) p.input_dtype = MOEKIT_DTYPE_FP32;
    ref::HostLayer l = ref::make_random_layer(p, 7 * c.T + c.v);
    if (c.v == kUnitEdges || c.v == kFp8UnitEdges) {
      // Experts of 64, 65, 128, 129, 192 and 193 rows: units of 128 rows
      // whose second 64 are empty, hold one row, or are full.
      const int rows[] = {64, 65, 128, 129, 192, 193};
      int64_t t = 0;
      for (int e = 0; e < 6; ++e)
        for (int r = 0; r < rows[e]; ++r) l.topk_ids[t++] = 3 * e + 1;
    } else {
      make_adversarial(l, c.T + c.v);
    }
    const std::string what = "T=" + std::to_string(c.T) + " k=" + std::to_string(c.k) + " H=" +
                             std::to_string(c.H) + " variant " + std::to_string(c.v);
    DeviceLayer d(l);
    const char* ours = fp8 ? "fp8_prefill" : "prefill";
    const std::vector<uint8_t> gathered = test::run_forced(d, ours);
    EXPECT_EQ(gathered, test::run_forced(d, fp8 ? "fp8_tile128x128" : "tile128x256")) << what;
    EXPECT_TRUE(test::rows_match(gathered, test::cpu_reference(l), p.num_tokens, p.hidden_size, p.output_dtype,
                                 fp8 ? test::kFp8RowGpuVsCpu : tolerance(p)))
        << what;
    if (c.v == kInPlace || c.v == kFp8InPlace) {  // two chunks
      d.args.output = d.hidden.data();
      EXPECT_EQ(test::run_forced(d, ours), std::vector<uint8_t>(d.output.size(), 0xFF)) << what;
      EXPECT_EQ(d.hidden.download(), gathered) << what << " in place";
    }
    EXPECT_TRUE(d.all_canaries_intact()) << what;
    if (HasFailure()) return;
  }
}

TEST(GpuLayer, InPlaceOutputEqualsOutOfPlace) {
  REQUIRE_GPU();
  // Chunked (T * k > 65536 pairs) and unchunked: every chunk reads its rows
  // before it writes them.
  for (int64_t T : {77, 9000}) {
    ref::HostLayer l = ref::make_random_layer(problem(T, 16, 8, 128, 64), 3);
    DeviceLayer d(l);
    ASSERT_TRUE(d.run().ok());
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<uint8_t> want = d.output.download();
    d.args.output = d.hidden.data();
    Status s = d.run();
    ASSERT_TRUE(s.ok()) << s.message();
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(d.hidden.download(), want) << "T=" << T;
    EXPECT_TRUE(d.all_canaries_intact());
  }
}

TEST(GpuLayer, TwoStreamsWithTheirOwnWorkspaces) {
  REQUIRE_GPU();
  ref::HostLayer la = ref::make_random_layer(problem(1500, 64, 8, 128, 64), 10);
  ref::HostLayer lb = ref::make_random_layer(problem(700, 16, 2, 256, 128, MOEKIT_DTYPE_FP16), 11);
  make_adversarial(lb, 11);
  DeviceLayer a(la), b(lb);
  cudaStream_t s1, s2;
  CUDA_OK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(a.run(s1).ok());
    ASSERT_TRUE(b.run(s2).ok());
  }
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(test::rows_match(a.output.download(), test::cpu_reference(la), 1500, 128,
                               MOEKIT_DTYPE_BF16, tolerance(la.problem)));
  EXPECT_TRUE(test::rows_match(b.output.download(), test::cpu_reference(lb), 700, 256,
                               MOEKIT_DTYPE_FP16, tolerance(lb.problem)));
  EXPECT_TRUE(a.all_canaries_intact() && b.all_canaries_intact());
  CUDA_OK(cudaStreamDestroy(s1));
  CUDA_OK(cudaStreamDestroy(s2));
}

TEST(GpuLayer, BadCallsLeaveNoErrorAndWriteNothing) {
  REQUIRE_GPU();
  ref::HostLayer l = ref::make_random_layer(problem(64, 16, 4, 64, 32), 12);
  DeviceLayer d(l);
  CUDA_OK(cudaMemset(d.output.data(), 0xFF, d.output.size()));  // also under MOEKIT_TEST_NO_POISON
  std::vector<int32_t> host_ids(l.topk_ids);
  struct Bad { const char* what; std::function<Status()> call; const char* message; };
  moekit_arguments_t host_ptr = d.args;
  host_ptr.topk_ids = host_ids.data();
  moekit_arguments_t bad_k = d.args;
  bad_k.problem.top_k = 17;
  const std::vector<Bad> bads = {
      {"host pointer", [&] { return MoeLayer::run(host_ptr, d.workspace.data(), d.workspace_bytes); },
       "topk_ids: expected device memory"},
      {"top_k > E", [&] { return MoeLayer::run(bad_k, d.workspace.data(), d.workspace_bytes); },
       "top_k: expected 1 <= top_k <= num_experts = 16, got 17"},
      {"workspace one byte short", [&] { return MoeLayer::run(d.args, d.workspace.data(), d.workspace_bytes - 1); },
       "workspace_bytes: expected at least"},
      {"null workspace", [&] { return MoeLayer::run(d.args, nullptr, d.workspace_bytes); },
       "workspace: expected a buffer of at least"},
      {"misaligned workspace", [&] {
         return MoeLayer::run(d.args, static_cast<char*>(d.workspace.data()) + 16, d.workspace_bytes); },
       "workspace: expected a 256-byte aligned pointer"},
      {"workspace overlapping the output", [&] { return MoeLayer::run(d.args, d.output.data(), d.workspace_bytes); },
       "workspace: expected memory disjoint from output"},
      {"host workspace", [&] {
         static std::vector<uint8_t> hws(1 << 26);
         void* p = hws.data() + (256 - reinterpret_cast<uintptr_t>(hws.data()) % 256) % 256;
         return MoeLayer::run(d.args, p, d.workspace_bytes); },
       "workspace: expected device memory"},
  };
  for (const Bad& b : bads) {
    SCOPED_TRACE(b.what);
    Status s = b.call();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(b.message), std::string::npos) << s.message();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    const std::vector<uint8_t> out = d.output.download();
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t v) { return v == 0xFF; }));
  }
  expect_gpu_matches(l, "good call after bad ones");
}

TEST(GpuLayer, HundredsOfRandomConfigurationsSharingOneWorkspace) {
  REQUIRE_GPU();
  std::mt19937 rng(77);
  auto pick = [&](std::initializer_list<int64_t> v) { return *(v.begin() + rng() % v.size()); };
  DeviceBuffer shared_ws(size_t{512} << 20);
  for (int iter = 0; iter < 200; ++iter) {
    const int64_t E = pick({1, 2, 8, 64, 72, 257});
    const int64_t k = std::min<int64_t>(E, pick({1, 2, 3, 6, 8, 9}));
    Problem p = problem(pick({1, 3, 64, 255, 257, 1000}), E, k, pick({8, 64, 136, 512}),
                        pick({8, 40, 64, 256}), static_cast<moekit_dtype_t>(rng() % 3));
    p.output_dtype = static_cast<moekit_dtype_t>(rng() % 3);
    p.activation = static_cast<moekit_activation_t>(rng() % 9);
    p.gate_up_order = static_cast<moekit_gate_up_order_t>(rng() % 3);
    p.has_w13_bias = rng() % 2;
    p.has_w2_bias = rng() % 2;
    if (E % 2 == 0 && rng() % 3 == 0) { p.ep_size = 2; p.ep_rank = rng() % 2; p.num_local_experts = E / 2; }
    ref::HostLayer l = ref::make_random_layer(p, iter);
    if (rng() % 2) make_adversarial(l, iter);
    DeviceLayer d(l);
    ASSERT_LE(d.workspace_bytes, shared_ws.size());
    Status s = MoeLayer::run(d.args, shared_ws.data(), d.workspace_bytes);
    ASSERT_TRUE(s.ok()) << s.message();
    CUDA_OK(cudaDeviceSynchronize());
    ASSERT_TRUE(test::rows_match(d.output.download(), test::cpu_reference(l), p.num_tokens,
                                 p.hidden_size, p.output_dtype, tolerance(p)))
        << "config " << iter;
    ASSERT_TRUE(d.all_canaries_intact() && shared_ws.canaries_intact()) << "config " << iter;
  }
}

// moekit.h: "The result does not depend on T." One token's row is bitwise the
// same at every batch size, whichever GEMM kernel each T selects (the TMA +
// mma.sync decode kernel at small T, in 16-token passes and at T = 64 (16
// rows per expert) in 32-token passes; the prefill kernel for GEMM 1 at
// T = 128, 200 and 257 (32, 50 and 65 rows per expert), which gathers its
// rows, and for GEMM 2 at T = 200 and 257; 64x256 and 128x256 tiles above, and
// CUTLASS swap-AB 128x16, forced at T = 1 and 7) and across chunks
// (T = 20000 at top-4 runs as two chunks of 16384 and 3616 tokens).
TEST(GpuLayer, BatchInvariantRowAtEveryT) {
  REQUIRE_GPU();
  for (auto dt : {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP16}) {
    const int64_t H = 1024, I = 512, k = 4;  // N >= 1024: GEMM 1 reaches 128x256 tiles, GEMM 2 64x256
    const ref::HostLayer base = ref::make_random_layer(problem(1, 16, k, H, I, dt), 31);
    std::vector<uint8_t> first;
    for (int64_t T : {1, 7, 64, 128, 200, 257, 385, 1025, 4097, 20000}) {
      ref::HostLayer l = ref::make_random_layer(problem(T, 16, k, H, I, dt), 32 + T);
      l.w13 = base.w13;
      l.w2 = base.w2;
      const int64_t pos = T / 2, b = ref::dtype_size(dt);
      std::copy_n(base.hidden.begin(), H * b, l.hidden.begin() + pos * H * b);
      std::copy_n(base.topk_ids.begin(), k, l.topk_ids.begin() + pos * k);
      std::copy_n(base.topk_weights.begin(), k, l.topk_weights.begin() + pos * k);
      DeviceLayer d(l);
      Status s = d.run();
      ASSERT_TRUE(s.ok()) << s.message();
      CUDA_OK(cudaDeviceSynchronize());
      const std::vector<uint8_t> out = d.output.download();
      std::vector<uint8_t> row(out.begin() + pos * H * b, out.begin() + (pos + 1) * H * b);
      std::string plan;
      MoeLayer::describe_plan(d.args.problem, &plan);
      if (first.empty()) {
        first = row;
        const std::vector<uint8_t> want = test::cpu_reference(l);
        EXPECT_TRUE(test::rows_match(row, std::vector<uint8_t>(want.begin() + pos * H * b,
                                                               want.begin() + (pos + 1) * H * b),
                                     1, H, dt, tolerance(l.problem)));
      }
      EXPECT_EQ(row, first) << moekit_dtype_name(dt) << " T=" << T << ": " << plan;
      if (T == 64 && std::getenv("MOEKIT_GEMM") == nullptr)  // (a forced kernel runs every T)
        EXPECT_NE(plan.find("32-token"), std::string::npos) << plan;
      if (T == 200 && std::getenv("MOEKIT_GEMM") == nullptr)  // both GEMMs, GEMM 1 gathering
        EXPECT_TRUE(plan.find("gemm1 prefill") != std::string::npos &&
                    plan.find("gemm2 prefill") != std::string::npos && plan.find("gathers its rows") != std::string::npos)
            << plan;
      if (T <= 7) {  // CUTLASS's wgmma swap-AB kernel gives the same bits as mma.sync
        const std::vector<uint8_t> again = test::run_forced(d, "swap128x16");
        EXPECT_TRUE(std::equal(again.begin() + pos * H * b, again.begin() + (pos + 1) * H * b,
                               first.begin()))
            << moekit_dtype_name(dt) << " T=" << T << " on swap-AB 128x16";
      }
    }
  }
}

// The workspace stops growing at the chunk size (65536 pairs), whatever T.
TEST(GpuLayer, WorkspaceIsBoundedAtAnyBatchSize) {
  REQUIRE_GPU();
  for (int64_t k : {1, 2, 8}) {
    Problem p = problem(1, 256, k, 7168, 2048);
    p.device = MOEKIT_DEVICE_CUDA;
    size_t at_chunk = 0, huge = 0, below = 0;
    p.num_tokens = 65536 / k;
    ASSERT_TRUE(MoeLayer::workspace_size(p, &at_chunk).ok());
    p.num_tokens = 65536 / k - 1;
    ASSERT_TRUE(MoeLayer::workspace_size(p, &below).ok());
    p.num_tokens = 40000000;
    ASSERT_TRUE(MoeLayer::workspace_size(p, &huge).ok());
    EXPECT_EQ(huge, at_chunk) << "k=" << k;
    EXPECT_LT(below, at_chunk) << "k=" << k;
    // moekit.h's bound: P * (2 * (H + 2I + I) + 28) + 256 per buffer + small terms.
    const double P = 65536, bound = P * (2.0 * (7168 + 4096 + 2048) + 28) + 64 * 1024 * 1024;
    EXPECT_LT(double(huge), bound) << "k=" << k;
  }
}
