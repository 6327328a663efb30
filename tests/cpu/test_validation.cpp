// Every rejection at the API boundary: the status, a message naming the
// argument with what was expected and given, and no write to any buffer.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>

#include "common/hostile_problem.hpp"
#include "common/test_util.hpp"

using namespace moekit;

namespace {

struct Case {
  const char* name;
  std::function<void(moekit_arguments_t&)> mutate;
  moekit_status_t code;
  const char* message;  // must appear in the error text
};

class Fixture {
 public:
  Fixture() : layer_(ref::make_random_layer(test::small_problem(16, 8, 2, 32, 16), 1)),
              out_(16 * 32 * 4) {
    args_ = layer_.arguments(out_.data());
    MoeLayer::workspace_size(args_.problem, &ws_bytes_);
    ws_ = std::make_unique<test::GuardedBuffer>(ws_bytes_, 0xEE);
  }
  moekit_arguments_t args_;
  ref::HostLayer layer_;
  test::GuardedBuffer out_;
  size_t ws_bytes_ = 0;
  std::unique_ptr<test::GuardedBuffer> ws_;
};

const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<Case> cases() {
  const auto kInv = MOEKIT_ERROR_INVALID_ARGUMENT;
  return {
      {"negative tokens", [](auto& a) { a.problem.num_tokens = -1; }, kInv, "num_tokens: expected >= 0, got -1"},
      {"H not multiple of 8", [](auto& a) { a.problem.hidden_size = 511; }, kInv,
       "hidden_size: expected a positive multiple of 8 (every row must be 16-byte aligned), got 511"},
      {"H zero", [](auto& a) { a.problem.hidden_size = 0; }, kInv, "hidden_size: expected a positive multiple of 8"},
      {"I not multiple of 8", [](auto& a) { a.problem.intermediate_size = 700; }, kInv,
       "intermediate_size: expected a positive multiple of 8"},
      {"H above the row limit", [](auto& a) { a.problem.hidden_size = MOEKIT_MAX_ROW_LENGTH + 8; }, kInv,
       "hidden_size: expected at most 16777216 (2^24: a row's offsets stay in int32 arithmetic), got 16777224"},
      // 2^62 would wrap every byte size computed from it (T * H * 4 = 2^68).
      {"H 2^62", [](auto& a) { a.problem.hidden_size = int64_t{1} << 62; }, kInv, "hidden_size: expected at most"},
      {"I above the row limit", [](auto& a) { a.problem.intermediate_size = int64_t{1} << 40; }, kInv,
       "intermediate_size: expected at most 16777216"},
      {"weights past 2^62 bytes", [](auto& a) {
         a.problem.num_experts = a.problem.num_local_experts = 2147483647;
         a.problem.hidden_size = a.problem.intermediate_size = MOEKIT_MAX_ROW_LENGTH; }, kInv,
       "num_local_experts: expected the weights (num_local_experts * N1 * hidden_size elements) to fit in "
       "2^62 bytes, got 2147483647 * 33554432 * 16777216"},
      {"no experts", [](auto& a) { a.problem.num_experts = 0; }, kInv, "num_experts: expected 1 <= num_experts"},
      {"too many experts", [](auto& a) { a.problem.num_experts = 1ll << 32; }, kInv, "(int32 ids)"},
      {"ep_size 0", [](auto& a) { a.problem.ep_size = 0; }, kInv, "ep_size: expected >= 1, got 0"},
      {"ep_rank out of range", [](auto& a) { a.problem.ep_rank = 1; }, kInv,
       "ep_rank: expected 0 <= ep_rank < ep_size = 1, got 1"},
      {"E not divisible by ep", [](auto& a) { a.problem.ep_size = 3; }, kInv,
       "num_experts: expected a multiple of ep_size = 3, got 8"},
      {"E_local mismatch", [](auto& a) { a.problem.num_local_experts = 4; }, kInv,
       "num_local_experts: expected num_experts / ep_size = 8 / 1 = 8, got 4"},
      {"top_k > E", [](auto& a) { a.problem.top_k = 9; }, kInv, "top_k: expected 1 <= top_k <= num_experts = 8, got 9"},
      {"top_k 0", [](auto& a) { a.problem.top_k = 0; }, kInv, "top_k: expected 1 <= top_k"},
      {"T*k overflow", [](auto& a) { a.problem.num_tokens = 1ll << 31; }, kInv,
       "num_tokens: expected num_tokens * top_k <= 2147483647 (int32 row ids), got 2147483648 * 2"},
      {"input dtype", [](auto& a) { a.problem.input_dtype = static_cast<moekit_dtype_t>(9); }, kInv,
       "input_dtype: expected one of bf16, fp16, fp32, got 9"},
      {"weight dtype", [](auto& a) { a.problem.weight_dtype = static_cast<moekit_dtype_t>(-1); }, kInv,
       "weight_dtype: expected one of bf16, fp16, fp32, got -1"},
      {"output dtype", [](auto& a) { a.problem.output_dtype = static_cast<moekit_dtype_t>(3); }, kInv,
       "output_dtype: expected one of bf16, fp16, fp32, got 3"},
      {"activation", [](auto& a) { a.problem.activation = static_cast<moekit_activation_t>(42); }, kInv,
       "activation: expected one of swiglu"},
      {"gate_up_order", [](auto& a) { a.problem.gate_up_order = static_cast<moekit_gate_up_order_t>(5); }, kInv,
       "gate_up_order: expected gate_up (0), up_gate (1) or interleaved (2), got 5"},
      {"swiglu alpha NaN", [](auto& a) { a.problem.swiglu_alpha = kNaN; }, kInv, "swiglu_alpha: expected a finite number"},
      {"swiglu beta inf", [](auto& a) { a.problem.swiglu_beta = INFINITY; }, kInv, "swiglu_beta: expected a finite number"},
      {"swiglu limit", [](auto& a) { a.problem.swiglu_limit = -1.0f; }, kInv,
       "swiglu_limit: expected > 0 (+inf disables the clamp), got -1"},
      {"has_w13_bias", [](auto& a) { a.problem.has_w13_bias = 2; }, kInv, "has_w13_bias: expected 0 or 1, got 2"},
      {"has_w2_bias", [](auto& a) { a.problem.has_w2_bias = -1; }, kInv, "has_w2_bias: expected 0 or 1, got -1"},
      {"device", [](auto& a) { a.problem.device = static_cast<moekit_device_t>(7); }, kInv,
       "device: expected cpu (0) or cuda (1), got 7"},
      {"null hidden", [](auto& a) { a.hidden = nullptr; }, kInv, "hidden: expected a pointer to 2048 bytes, got NULL"},
      {"null ids", [](auto& a) { a.topk_ids = nullptr; }, kInv, "topk_ids: expected a pointer to 128 bytes, got NULL"},
      {"null weights", [](auto& a) { a.topk_weights = nullptr; }, kInv, "topk_weights: expected a pointer"},
      {"null w13", [](auto& a) { a.w13 = nullptr; }, kInv, "w13: expected a pointer"},
      {"null w2", [](auto& a) { a.w2 = nullptr; }, kInv, "w2: expected a pointer"},
      {"null output", [](auto& a) { a.output = nullptr; }, kInv, "output: expected a pointer"},
      {"missing bias", [](auto& a) { a.problem.has_w13_bias = 1; }, kInv, "w13_bias: expected a pointer"},
      {"unexpected bias", [](auto& a) { a.w2_bias = a.w2; }, kInv,
       "w2_bias: expected NULL (has_w2_bias is 0), got a pointer"},
      {"misaligned hidden", [](auto& a) { a.hidden = static_cast<const char*>(a.hidden) + 2; }, kInv,
       "hidden: expected a 16-byte aligned pointer"},
      {"misaligned ids", [](auto& a) { a.topk_ids = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(a.topk_ids) + 1); },
       kInv, "topk_ids: expected a 4-byte aligned pointer"},
      {"misaligned w2", [](auto& a) { a.w2 = static_cast<const char*>(a.w2) + 8; }, kInv,
       "w2: expected a 16-byte aligned pointer"},
      {"misaligned output", [](auto& a) { a.output = static_cast<char*>(a.output) + 4; }, kInv,
       "output: expected a 16-byte aligned pointer"},
      {"misaligned diagnostics", [](auto& a) { a.diagnostics = reinterpret_cast<moekit_diagnostics_t*>(static_cast<char*>(a.output) + 4); }, kInv,
       "diagnostics: expected a 8-byte aligned pointer"},
      // Exactly hidden is in place (allowed); a shifted view overlaps.
      {"output overlaps hidden", [](auto& a) { a.output = const_cast<char*>(static_cast<const char*>(a.hidden)) + 16; }, kInv,
       "output: expected memory disjoint from hidden, got overlapping ranges"},
      {"output aliases w13", [](auto& a) { a.output = const_cast<void*>(a.w13); }, kInv,
       "output: expected memory disjoint from w13"},
  };
}

}  // namespace

TEST(Validation, EveryRejectionNamesTheArgumentAndTouchesNothing) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    Fixture f;
    moekit_arguments_t a = f.args_;
    c.mutate(a);
    std::vector<uint8_t> out_before(f.out_.data(), f.out_.data() + f.out_.size());
    std::vector<uint8_t> ws_before(f.ws_->data(), f.ws_->data() + f.ws_->size());
    for (const Status& s : {MoeLayer::can_implement(a), MoeLayer::run(a, f.ws_->data(), f.ws_bytes_)}) {
      EXPECT_EQ(s.code(), c.code);
      EXPECT_NE(s.message().find(c.message), std::string::npos)
          << "message was: " << s.message() << "\nexpected to contain: " << c.message;
    }
    // The C API reports the same, through moekit_last_error_message.
    EXPECT_EQ(moekit_run(&a, f.ws_->data(), f.ws_bytes_, nullptr), c.code);
    EXPECT_NE(std::string(moekit_last_error_message()).find(c.message), std::string::npos);
    EXPECT_EQ(0, std::memcmp(out_before.data(), f.out_.data(), out_before.size()));
    EXPECT_EQ(0, std::memcmp(ws_before.data(), f.ws_->data(), ws_before.size()));
    EXPECT_TRUE(f.out_.canaries_intact());
    // The next good call works.
    EXPECT_TRUE(MoeLayer::run(f.args_, f.ws_->data(), f.ws_bytes_).ok());
  }
}

TEST(Validation, WorkspaceErrors) {
  Fixture f;
  Status s = MoeLayer::run(f.args_, nullptr, f.ws_bytes_);
  EXPECT_EQ(s.code(), MOEKIT_ERROR_WORKSPACE);
  EXPECT_NE(s.message().find("workspace: expected a buffer of at least " + std::to_string(f.ws_bytes_) +
                             " bytes for num_tokens = 16, got NULL"), std::string::npos) << s.message();
  s = MoeLayer::run(f.args_, f.ws_->data(), f.ws_bytes_ - 1);
  EXPECT_EQ(s.code(), MOEKIT_ERROR_WORKSPACE);
  EXPECT_NE(s.message().find("workspace_bytes: expected at least " + std::to_string(f.ws_bytes_) +
                             " for num_tokens = 16, got " + std::to_string(f.ws_bytes_ - 1)),
            std::string::npos) << s.message();
  s = MoeLayer::run(f.args_, f.ws_->data() + 16, f.ws_bytes_);
  EXPECT_EQ(s.code(), MOEKIT_ERROR_WORKSPACE);
  EXPECT_NE(s.message().find("workspace: expected a 256-byte aligned pointer"), std::string::npos);
  // A workspace that starts at the output: the output sits at the front of
  // a buffer that also holds the workspace's extent, so output is the one
  // tensor it overlaps whatever the heap put next to the fixture's buffers.
  test::GuardedBuffer shared(f.out_.size() + f.ws_bytes_);
  moekit_arguments_t a = f.args_;
  a.output = shared.data();
  s = MoeLayer::run(a, shared.data(), f.ws_bytes_);
  EXPECT_EQ(s.code(), MOEKIT_ERROR_WORKSPACE);
  EXPECT_NE(s.message().find("workspace: expected memory disjoint from output"), std::string::npos)
      << s.message();
  EXPECT_TRUE(MoeLayer::run(f.args_, f.ws_->data(), f.ws_bytes_).ok());
}

TEST(Validation, NullStructPointersInTheCApi) {
  EXPECT_EQ(moekit_run(nullptr, nullptr, 0, nullptr), MOEKIT_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(moekit_last_error_message(), "args: expected a pointer, got NULL");
  size_t bytes = 0;
  EXPECT_EQ(moekit_workspace_size(nullptr, &bytes), MOEKIT_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(moekit_last_error_message(), "problem: expected a pointer, got NULL");
  moekit_problem_t p;
  moekit_problem_init(&p);
  EXPECT_EQ(moekit_workspace_size(&p, nullptr), MOEKIT_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(moekit_last_error_message(), "bytes: expected a pointer, got NULL");
  EXPECT_EQ(moekit_can_implement(nullptr), MOEKIT_ERROR_INVALID_ARGUMENT);
}

TEST(Validation, CApiSuccessClearsTheMessage) {
  Fixture f;
  EXPECT_EQ(moekit_run(nullptr, nullptr, 0, nullptr), MOEKIT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(moekit_run(&f.args_, f.ws_->data(), f.ws_bytes_, nullptr), MOEKIT_SUCCESS);
  EXPECT_STREQ(moekit_last_error_message(), "");
  EXPECT_STREQ(moekit_status_string(MOEKIT_ERROR_WORKSPACE), "bad workspace");
}

TEST(Validation, CudaDeviceWithoutAGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present; covered by the GPU suite";
  Problem p = test::small_problem();
  p.device = MOEKIT_DEVICE_CUDA;
  size_t bytes = 0;
  Status s = MoeLayer::workspace_size(p, &bytes);
  EXPECT_EQ(s.code(), MOEKIT_ERROR_NO_DEVICE);
  EXPECT_NE(s.message().find("device: expected a CUDA GPU"), std::string::npos) << s.message();
}

// The row limit itself is accepted, with a workspace that holds its rows.
TEST(Validation, RowsAtTheLengthLimitAreAccepted) {
  for (const auto& [H, I] : {std::pair<int64_t, int64_t>{MOEKIT_MAX_ROW_LENGTH, 8}, {8, MOEKIT_MAX_ROW_LENGTH}}) {
    Problem p = test::small_problem(3, 1, 1, H, I);
    size_t bytes = 0;
    const Status s = MoeLayer::workspace_size(p, &bytes);
    EXPECT_TRUE(s.ok()) << s.message();
    EXPECT_GE(bytes, size_t{3} * (H + 2 * I) * 4);  // the gathered rows and GEMM 1's output, fp32
  }
}

// Every field of the problem from a set of hostile values (the int64 and
// int32 extremes, values around the limits, garbage enums, NaN): each call
// returns a status and never crashes, and where a CPU workspace size comes
// back it covers the gathered rows, T * k * H fp32 values (a wrapped product
// would be smaller). The sanitizer build (`cmake --preset sanitize`) runs this
// under ASan and UBSan, where a signed overflow or a bad enum load fails it.
TEST(Validation, HostileProblemFieldsGetAStatusNeverACrash) {
  test::HostileProblems hostile(20261205, 10);
  Fixture f;
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    moekit_arguments_t a = f.args_;
    moekit_problem_t& p = a.problem;
    hostile.apply(p);
    p.device = MOEKIT_DEVICE_CPU;  // CUDA: GpuLayer.HostileProblemFieldsGetAStatusNeverACrash
    SCOPED_TRACE("iteration " + std::to_string(i) + ": " + test::sizes_of(p));
    size_t bytes = 0;
    const moekit_status_t ws = moekit_workspace_size(&p, &bytes);
    ASSERT_TRUE(ws == MOEKIT_SUCCESS || ws == MOEKIT_ERROR_INVALID_ARGUMENT) << moekit_last_error_message();
    if (ws == MOEKIT_SUCCESS) {
      ++accepted;
      const long double rows = static_cast<long double>(p.num_tokens) * p.top_k * p.hidden_size * 4;
      ASSERT_GE(static_cast<long double>(bytes), rows);
    }
    // The fixture's pointers: right for its own shape only, so a changed
    // shape is either rejected or (sizes that shrank) accepted; nothing runs.
    const moekit_status_t ok = moekit_can_implement(&a);
    ASSERT_TRUE(ok == MOEKIT_SUCCESS || ok == MOEKIT_ERROR_INVALID_ARGUMENT) << moekit_last_error_message();
    if (ws != MOEKIT_SUCCESS) {
      ASSERT_EQ(ok, MOEKIT_ERROR_INVALID_ARGUMENT);
    }
  }
  EXPECT_GT(accepted, 500);  // the valid problems among them were accepted
}
