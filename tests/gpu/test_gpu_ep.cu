// The expert-parallel device stages (src/kernels/ep) over ranks simulated on
// one GPU, the exchanges as device copies (the loopback transport of
// docs/DISTRIBUTED.md): the plan equals reference/ep.cpp's integers exactly,
// and the whole data path (plan, pack, exchange, expand, the layer on each
// rank's pairs, return, finalize) gives every rank the one-GPU layer's rows
// of the gathered batch, bit for bit. The NCCL transport is not here yet.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "gpu_util.hpp"
#include "kernels/ep/ep.hpp"
#include "kernels/kernels.hpp"
#include "reference/ep.hpp"

using namespace moekit;
using test::DeviceBuffer;
using test::DeviceLayer;

namespace {

struct DevicePlacement {
  DeviceBuffer owner, local;
  kernels::EpPlacement view{};
  explicit DevicePlacement(const ref::EpPlacement& pl) {
    view = pl.view();  // then the device copies of its maps
    if (!pl.owner.empty()) {
      owner = DeviceBuffer(pl.owner.size() * 4);
      owner.upload(pl.owner.data(), pl.owner.size() * 4);
      local = DeviceBuffer(pl.local.size() * 4);
      local.upload(pl.local.data(), pl.local.size() * 4);
      view.owner = static_cast<const int32_t*>(owner.data());
      view.local = static_cast<const int32_t*>(local.data());
    }
  }
};

template <class T>
std::vector<T> download_as(const DeviceBuffer& b, int64_t n) {
  std::vector<T> v(n);
  if (n > 0) EXPECT_EQ(cudaMemcpy(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

// One rank's plan on the device.
struct DevicePlan {
  int64_t T, k, R, max_rows;
  DeviceBuffer row_offset, pair_offset, row_token, row_ids, pair_row, counts, positions, temp;
  DevicePlan(int64_t T_, int64_t k_, int64_t R_)
      : T(T_), k(k_), R(R_), max_rows(T_ * std::min(k_, R_)),
        row_offset((R_ + 1) * 4), pair_offset((R_ + 1) * 4), row_token(std::max<int64_t>(1, max_rows) * 4),
        row_ids(std::max<int64_t>(1, max_rows * k_) * 4), pair_row(std::max<int64_t>(1, T_ * k_) * 4),
        counts(std::max<int64_t>(1, 2 * R_ * T_) * 4), positions(std::max<int64_t>(1, 2 * R_ * T_) * 4) {
    size_t bytes = 0;
    EXPECT_EQ(kernels::ep_plan_temp_bytes(R, T, &bytes), cudaSuccess);
    temp = DeviceBuffer(std::max<size_t>(bytes, 1));
  }
  kernels::EpPlanBuffers view() {
    return {static_cast<int32_t*>(row_offset.data()), static_cast<int32_t*>(pair_offset.data()),
            static_cast<int32_t*>(row_token.data()),  static_cast<int32_t*>(row_ids.data()),
            static_cast<int32_t*>(pair_row.data()),   static_cast<int32_t*>(counts.data()),
            static_cast<int32_t*>(positions.data()),  temp.data(), temp.size()};
  }
};

// Routing for R ranks of T_r tokens: random ids with -1, garbage and duplicates.
std::vector<int32_t> adversarial_ids(int64_t T, int64_t k, int64_t E, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(T * k);
  for (int64_t i = 0; i < T * k; ++i) {
    int32_t id = static_cast<int32_t>(rng() % E);
    switch (rng() % 8) {
      case 0: id = -1; break;
      case 1: id = static_cast<int32_t>(E + rng() % 100); break;
      case 2: id = i % k ? ids[i - 1] : id; break;
      default: break;
    }
    ids[i] = id;
  }
  return ids;
}

ref::EpPlacement scattered(int64_t E, int64_t R, uint64_t seed) {
  ref::EpPlacement pl;
  pl.num_experts = E;
  pl.num_ranks = R;
  pl.owner.assign(E, -1);
  pl.local.assign(E, -1);
  std::vector<int32_t> order(E);
  for (int64_t e = 0; e < E; ++e) order[e] = static_cast<int32_t>(e);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int32_t> next(R, 0);
  for (int64_t i = 0; i + 1 < E; ++i) {  // the last one placed nowhere
    const int32_t e = order[i];
    pl.owner[e] = static_cast<int32_t>(i % R);
    pl.local[e] = next[i % R]++;
  }
  return pl;
}

// Runs the data path for layer g split into ranks of `tokens` under pl and
// compares every rank's rows with the one-GPU layer's, bitwise.
void expect_loopback_equals_one_gpu(const ref::HostLayer& g, const ref::EpPlacement& pl,
                                    const std::vector<int64_t>& tokens, const std::string& what) {
  SCOPED_TRACE(what);
  const Problem& p = g.problem;
  const int64_t R = pl.num_ranks, E = p.num_experts, H = p.hidden_size, k = p.top_k;
  int dev = 0, sms = 0;
  CUDA_OK(cudaGetDevice(&dev));
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const kernels::DeviceInfo info{dev, sms};
  const moekit_dtype_t cd = ref::compute_dtype(p);
  const size_t in_b = ref::dtype_size(p.input_dtype), cd_b = ref::dtype_size(cd), out_b = ref::dtype_size(p.output_dtype);

  // The one-GPU layer on the gathered batch (ids placed nowhere count as invalid there too).
  ref::HostLayer whole = g;
  for (int32_t& id : whole.topk_ids)
    if (pl.owner_of(id) < 0) id = -1;
  DeviceLayer one(whole);
  Status s = one.run();
  ASSERT_TRUE(s.ok()) << s.message();
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<uint8_t> want = one.output.download();

  DevicePlacement dpl(pl);
  // Plan and pack on every rank.
  std::vector<DevicePlan> plans;
  std::vector<DeviceBuffer> hidden, ids, weights, send;
  std::vector<std::vector<int32_t>> row_off(R), pair_off(R);
  int64_t begin = 0;
  for (int64_t r = 0; r < R; ++r) {
    const int64_t T = tokens[r];
    plans.emplace_back(T, k, R);
    hidden.emplace_back(std::max<int64_t>(1, T * H) * in_b);
    ids.emplace_back(std::max<int64_t>(1, T * k) * 4);
    weights.emplace_back(std::max<int64_t>(1, T * k) * 4);
    if (T > 0) {
      hidden[r].upload(g.hidden.data() + begin * H * in_b, T * H * in_b);
      ids[r].upload(g.topk_ids.data() + begin * k, T * k * 4);
      weights[r].upload(g.topk_weights.data() + begin * k, T * k * 4);
    }
    CUDA_OK(kernels::launch_ep_plan(static_cast<const int32_t*>(ids[r].data()), T, k, dpl.view,
                                    plans[r].view(), nullptr));
    send.emplace_back(std::max<int64_t>(1, plans[r].max_rows * H) * cd_b);
    CUDA_OK(kernels::launch_permute(hidden[r].data(), p.input_dtype,
                                    static_cast<const int32_t*>(plans[r].row_token.data()), nullptr,
                                    static_cast<const int32_t*>(plans[r].row_offset.data()) + R,
                                    plans[r].max_rows, 1, H, send[r].data(), cd, info, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    row_off[r] = download_as<int32_t>(plans[r].row_offset, R + 1);
    pair_off[r] = download_as<int32_t>(plans[r].pair_offset, R + 1);
    // The device plan is the reference's.
    const ref::EpPlan want_plan = ref::ep_plan(pl, T, k, g.topk_ids.data() + begin * k);
    EXPECT_EQ(std::vector<int64_t>(row_off[r].begin(), row_off[r].end()), want_plan.row_offset) << "rank " << r;
    EXPECT_EQ(std::vector<int64_t>(pair_off[r].begin(), pair_off[r].end()), want_plan.pair_offset) << "rank " << r;
    const int64_t rows = row_off[r][R];
    EXPECT_EQ(download_as<int32_t>(plans[r].row_token, rows), want_plan.row_token) << "rank " << r;
    EXPECT_EQ(download_as<int32_t>(plans[r].row_ids, rows * k), want_plan.row_ids) << "rank " << r;
    EXPECT_EQ(download_as<int32_t>(plans[r].pair_row, T * k), want_plan.pair_row) << "rank " << r;
    begin += T;
  }
  if (::testing::Test::HasFailure()) return;

  // Exchange 1, expand, experts, on every destination.
  std::vector<DeviceBuffer> expert_out(R);
  std::vector<std::vector<int64_t>> from(R, std::vector<int64_t>(R + 1, 0));  // pairs from each source
  for (int64_t d = 0; d < R; ++d) {
    int64_t rows = 0;
    for (int64_t src = 0; src < R; ++src) rows += row_off[src][d + 1] - row_off[src][d];
    DeviceBuffer recv(std::max<int64_t>(1, rows * H) * cd_b), recv_ids(std::max<int64_t>(1, rows * k) * 4);
    int64_t at = 0;
    for (int64_t src = 0; src < R; ++src) {
      const int64_t n = row_off[src][d + 1] - row_off[src][d];
      if (n > 0) {
        CUDA_OK(cudaMemcpy(static_cast<char*>(recv.data()) + at * H * cd_b,
                           static_cast<const char*>(send[src].data()) + row_off[src][d] * H * cd_b, n * H * cd_b,
                           cudaMemcpyDeviceToDevice));
        CUDA_OK(cudaMemcpy(static_cast<int32_t*>(recv_ids.data()) + at * k,
                           static_cast<const int32_t*>(plans[src].row_ids.data()) + row_off[src][d] * k,
                           n * k * 4, cudaMemcpyDeviceToDevice));
      }
      at += n;
      from[d][src + 1] = from[d][src] + (pair_off[src][d + 1] - pair_off[src][d]);
    }
    size_t temp_bytes = 0;
    CUDA_OK(kernels::ep_expand_temp_bytes(rows, k, &temp_bytes));
    const int64_t cap = std::max<int64_t>(1, rows * k);
    DeviceBuffer row_of(cap * 4), expert(cap * 4), count(4), flags(cap * 4), pos(cap * 4),
        temp(std::max<size_t>(1, temp_bytes));
    CUDA_OK(kernels::launch_ep_expand(static_cast<const int32_t*>(recv_ids.data()), rows, k,
                                      {static_cast<int32_t*>(row_of.data()), static_cast<int32_t*>(expert.data()),
                                       static_cast<int32_t*>(count.data()), static_cast<int32_t*>(flags.data()),
                                       static_cast<int32_t*>(pos.data()), temp.data(), temp.size()},
                                      nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const int64_t pairs = download_as<int32_t>(count, 1)[0];
    EXPECT_EQ(pairs, from[d][R]) << "destination " << d;
    // The pairs' rows as top-1 tokens of weight 1 on d's experts.
    DeviceBuffer pair_hidden(std::max<int64_t>(1, pairs * H) * cd_b);
    CUDA_OK(kernels::launch_permute(recv.data(), cd, static_cast<const int32_t*>(row_of.data()), nullptr,
                                    static_cast<const int32_t*>(count.data()), std::max<int64_t>(1, pairs), 1, H,
                                    pair_hidden.data(), cd, info, nullptr));
    const std::vector<int64_t> experts = pl.experts_of(d);
    ref::HostLayer local;
    local.problem = p;
    local.problem.num_tokens = pairs;
    local.problem.top_k = 1;
    local.problem.num_experts = local.problem.num_local_experts = static_cast<int64_t>(experts.size());
    local.problem.input_dtype = local.problem.output_dtype = cd;
    local.w13 = test::slice_experts(g.w13, E, experts);
    local.w2 = test::slice_experts(g.w2, E, experts);
    local.w13_bias = test::slice_experts(g.w13_bias, E, experts);
    local.w2_bias = test::slice_experts(g.w2_bias, E, experts);
    local.hidden.assign(std::max<int64_t>(1, pairs * H) * cd_b, 0);
    local.topk_ids = download_as<int32_t>(expert, pairs);
    local.topk_weights.assign(pairs, 1.0f);
    DeviceLayer layer(local);
    if (pairs > 0)
      CUDA_OK(cudaMemcpy(layer.hidden.data(), pair_hidden.data(), pairs * H * cd_b, cudaMemcpyDeviceToDevice));
    if (pairs > 0) {
      s = layer.run();
      ASSERT_TRUE(s.ok()) << "destination " << d << ": " << s.message();
    }
    CUDA_OK(cudaDeviceSynchronize());
    expert_out[d] = DeviceBuffer(std::max<int64_t>(1, pairs * H) * cd_b);
    if (pairs > 0)
      CUDA_OK(cudaMemcpy(expert_out[d].data(), layer.output.data(), pairs * H * cd_b, cudaMemcpyDeviceToDevice));
  }

  // Exchange 2 and combine on every home rank.
  begin = 0;
  for (int64_t r = 0; r < R; ++r) {
    const int64_t T = tokens[r];
    DeviceBuffer ret(std::max<int64_t>(1, pair_off[r][R] * H) * cd_b), out(std::max<int64_t>(1, T * H) * out_b);
    for (int64_t d = 0; d < R; ++d) {
      const int64_t n = from[d][r + 1] - from[d][r];
      if (n > 0)
        CUDA_OK(cudaMemcpy(static_cast<char*>(ret.data()) + pair_off[r][d] * H * cd_b,
                           static_cast<const char*>(expert_out[d].data()) + from[d][r] * H * cd_b, n * H * cd_b,
                           cudaMemcpyDeviceToDevice));
    }
    if (T > 0) {
      CUDA_OK(kernels::launch_finalize(ret.data(), cd, static_cast<const int32_t*>(plans[r].pair_row.data()),
                                       static_cast<const float*>(weights[r].data()), T, k, H, out.data(),
                                       p.output_dtype, info, nullptr));
      CUDA_OK(cudaDeviceSynchronize());
      const std::vector<uint8_t> got = out.download();
      for (int64_t t = 0; t < T; ++t)
        if (!std::equal(got.begin() + t * H * out_b, got.begin() + (t + 1) * H * out_b,
                        want.begin() + (begin + t) * H * out_b)) {
          ADD_FAILURE() << "rank " << r << " token " << t << " (global " << begin + t
                        << ") differs from the one-GPU layer";
          break;
        }
    }
    begin += T;
  }
}

}  // namespace

TEST(GpuExpertParallel, LoopbackRanksEqualTheOneGpuLayer) {
  REQUIRE_GPU();
  const int64_t E = 16, k = 4, H = 256, I = 128;
  for (auto dt : {MOEKIT_DTYPE_BF16, MOEKIT_DTYPE_FP16}) {
    Problem p = test::small_problem(96, E, k, H, I, dt);
    p.has_w13_bias = p.has_w2_bias = dt == MOEKIT_DTYPE_FP16;
    ref::HostLayer g = ref::make_random_layer(p, 40);
    expect_loopback_equals_one_gpu(g, ref::EpPlacement::contiguous(E, 4), {24, 24, 24, 24},
                                   std::string(moekit_dtype_name(dt)) + " R=4 even");
    g.topk_ids = adversarial_ids(96, k, E, 41);
    expect_loopback_equals_one_gpu(g, ref::EpPlacement::contiguous(E, 2), {0, 96}, "R=2, rank 0 empty, adversarial ids");
    for (int64_t i = 0; i < 96 * k; ++i) g.topk_ids[i] = static_cast<int32_t>(12 + i % 4);
    expect_loopback_equals_one_gpu(g, ref::EpPlacement::contiguous(E, 4), {50, 1, 0, 45}, "all to rank 3, T = 50, 1, 0, 45");
    g.topk_ids = adversarial_ids(96, k, E, 42);
    expect_loopback_equals_one_gpu(g, scattered(E, 3, 43), {30, 36, 30}, "scattered placement R=3");
  }
  // Every rank empty.
  Problem q = test::small_problem(0, E, k, H, I, MOEKIT_DTYPE_BF16);
  expect_loopback_equals_one_gpu(ref::make_random_layer(q, 44), ref::EpPlacement::contiguous(E, 4), {0, 0, 0, 0}, "all T = 0");
}
