// The CUDA sort against the CPU reference: offsets, both maps and the
// diagnostics must be exactly equal, at every T, k and E_local.
#include <random>

#include "gpu_util.hpp"
#include "kernels/kernels.hpp"
#include "reference/reference.hpp"

using namespace moekit;
using test::DeviceBuffer;

namespace {

struct Case {
  int64_t T, k, E, ep_size, ep_rank;
};

void check_sort(const Case& c, const std::vector<int32_t>& ids,
                kernels::SortPath path = kernels::SortPath::kAuto) {
  SCOPED_TRACE("T=" + std::to_string(c.T) + " k=" + std::to_string(c.k) + " E=" +
               std::to_string(c.E) + " ep=" + std::to_string(c.ep_rank) + "/" + std::to_string(c.ep_size) +
               " path=" + std::to_string(static_cast<int>(path)));
  const int64_t el = c.E / c.ep_size, pairs = c.T * c.k;
  ref::Routing r{c.T, c.k, c.E, el, c.ep_rank};
  std::vector<int32_t> off(el + 1), sorted(pairs), inv(pairs);
  moekit_diagnostics_t want_diag{};
  ref::sort_pairs(r, ids.data(), off.data(), sorted.data(), inv.data(), &want_diag);

  size_t temp = 0;
  CUDA_OK(kernels::sort_temp_bytes(pairs, el, &temp));
  DeviceBuffer d_ids(pairs * 4), keys0(pairs * 4), keys1(pairs * 4), vals0(pairs * 4),
      vals1(pairs * 4), cub(temp), d_off((el + 1) * 4), d_inv(pairs * 4),
      d_diag(sizeof(moekit_diagnostics_t), 0);
  if (pairs) d_ids.upload(ids.data(), pairs * 4);
  kernels::SortBuffers b{};
  b.keys[0] = static_cast<uint32_t*>(keys0.data());
  b.keys[1] = static_cast<uint32_t*>(keys1.data());
  b.pairs[0] = static_cast<int32_t*>(vals0.data());
  b.pairs[1] = static_cast<int32_t*>(vals1.data());
  b.temp = cub.data();
  b.temp_bytes = temp;
  b.expert_offsets = static_cast<int32_t*>(d_off.data());
  b.pair_to_row = static_cast<int32_t*>(d_inv.data());
  int device = 0, sms = 0;
  CUDA_OK(cudaGetDevice(&device));
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int32_t* d_sorted = nullptr;
  CUDA_OK(kernels::launch_sort(static_cast<const int32_t*>(d_ids.data()), nullptr, c.T, c.k, c.E, el,
                               c.ep_rank, nullptr, b, static_cast<moekit_diagnostics_t*>(d_diag.data()),
                               &d_sorted, {device, sms}, nullptr, path));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<int32_t> got_off(el + 1), got_sorted(pairs), got_inv(pairs);
  CUDA_OK(cudaMemcpy(got_off.data(), d_off.data(), (el + 1) * 4, cudaMemcpyDeviceToHost));
  if (pairs) {
    CUDA_OK(cudaMemcpy(got_sorted.data(), d_sorted, pairs * 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(got_inv.data(), d_inv.data(), pairs * 4, cudaMemcpyDeviceToHost));
  }
  moekit_diagnostics_t got_diag{};
  CUDA_OK(cudaMemcpy(&got_diag, d_diag.data(), sizeof(got_diag), cudaMemcpyDeviceToHost));
  ASSERT_EQ(got_off, off);
  for (int64_t i = 0; i < pairs; ++i) {
    ASSERT_EQ(got_sorted[i], sorted[i]) << "row " << i;
    ASSERT_EQ(got_inv[i], inv[i]) << "pair " << i;
  }
  EXPECT_EQ(got_diag.invalid_ids, want_diag.invalid_ids);
  EXPECT_EQ(got_diag.tokens_without_valid_expert, want_diag.tokens_without_valid_expert);
  EXPECT_EQ(got_diag.tokens_without_local_expert, want_diag.tokens_without_local_expert);
  for (const DeviceBuffer* buf : {&keys0, &keys1, &vals0, &vals1, &cub, &d_off, &d_inv, &d_diag})
    EXPECT_TRUE(buf->canaries_intact());
}

// Router-like ids with production failure modes mixed in.
std::vector<int32_t> adversarial_ids(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(c.T * c.k);
  for (int64_t t = 0; t < c.T; ++t) {
    int32_t* row = ids.data() + t * c.k;
    switch (rng() % 8) {
      case 0: std::fill(row, row + c.k, 0); break;                        // NaN-logit row
      case 1: std::fill(row, row + c.k, -1); break;                       // padding
      case 2: for (int64_t s = 0; s < c.k; ++s) row[s] = static_cast<int32_t>(rng()); break;
      case 3: for (int64_t s = 0; s < c.k; ++s) row[s] = static_cast<int32_t>(c.E - 1 - s % 2); break;
      default:
        for (int64_t s = 0; s < c.k; ++s) row[s] = static_cast<int32_t>(rng() % c.E);
    }
  }
  return ids;
}

}  // namespace

TEST(GpuSort, ThresholdsAndAdversarialRouting) {
  REQUIRE_GPU();
  for (int64_t T : {0, 1, 2, 31, 32, 33, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049,
                    4095, 4096, 4097, 8191, 8193})
    for (int64_t k : {1, 2, 8}) {
      const Case c{T, k, 128, 1, 0};
      check_sort(c, adversarial_ids(c, T * 31 + k));
      if (HasFatalFailure()) return;
    }
}

TEST(GpuSort, EveryTopKIncludingTopKEqualsE) {
  REQUIRE_GPU();
  for (int64_t k : {1, 3, 6, 9, 10, 16, 22, 32}) {
    const Case c{777, k, 72, 1, 0};
    check_sort(c, adversarial_ids(c, k));
  }
  const Case all{300, 257, 257, 1, 0};
  check_sort(all, adversarial_ids(all, 5));
}

TEST(GpuSort, ExpertCountsUpTo5000AndExpertParallel) {
  REQUIRE_GPU();
  for (int64_t E : {1, 2, 255, 256, 257, 384, 1024, 1025, 4096, 5000}) {
    const Case c{2000, 8 < E ? 8 : E, E, 1, 0};
    check_sort(c, adversarial_ids(c, E));
  }
  for (int64_t rank : {0, 3, 7}) {
    const Case c{3000, 8, 256, 8, rank};
    check_sort(c, adversarial_ids(c, 100 + rank));
  }
}

TEST(GpuSort, AllOnOneExpertLastExpertAndOnePerExpert) {
  REQUIRE_GPU();
  const Case c{5000, 4, 64, 1, 0};
  check_sort(c, std::vector<int32_t>(5000 * 4, 0));
  check_sort(c, std::vector<int32_t>(5000 * 4, 63));
  const Case one{4096, 1, 4096, 1, 0};
  std::vector<int32_t> ids(4096);
  for (int i = 0; i < 4096; ++i) ids[i] = 4095 - i;
  check_sort(one, ids);
}

TEST(GpuSort, LargeBatchesUpToAMillionTokens) {
  REQUIRE_GPU();
  for (int64_t T : {65535, 65536, 65537, 300000, 1000000}) {
    const Case c{T, 8, T == 1000000 ? 4096 : 256, 1, 0};
    check_sort(c, adversarial_ids(c, T));
    if (HasFatalFailure()) return;
  }
}

// Each implementation forced at every size it takes, around its tile and
// launch limits, gives the reference's answer exactly (kAuto above picks
// only one of them per size).
TEST(GpuSort, EveryPathGivesTheOneAnswer) {
  REQUIRE_GPU();
  using kernels::SortPath;
  for (SortPath path : {SortPath::kOneBlock, SortPath::kCounting, SortPath::kRadix})
    for (int64_t pairs : {1, 31, 33, 1023, 1024, 1025, 2047, 4096, 4097, 5000, 20481, 65535, 65536})
      for (int64_t E : {1, 7, 128, 257, 1023}) {
        if (!kernels::sort_path_fits(path, pairs, E)) continue;
        const Case c{pairs, 1, E, 1, 0};
        check_sort(c, adversarial_ids(c, pairs * 7 + E), path);
        const int64_t k = 8;
        if (pairs % k == 0) {
          const Case ck{pairs / k, k, E < k ? k : E, 1, 0};
          check_sort(ck, adversarial_ids(ck, pairs + E), path);
        }
        if (HasFatalFailure()) return;
      }
  // A whole tile (and the whole batch) on one expert, the last expert, and
  // expert parallelism on the counting path.
  const Case one{40000, 1, 300, 1, 0};
  check_sort(one, std::vector<int32_t>(40000, 0), SortPath::kCounting);
  check_sort(one, std::vector<int32_t>(40000, 299), SortPath::kCounting);
  for (int64_t rank : {0, 5}) {
    const Case ep{6000, 8, 512, 8, rank};
    check_sort(ep, adversarial_ids(ep, 300 + rank), SortPath::kCounting);
  }
  // The paths that do not fit say so.
  EXPECT_FALSE(kernels::sort_path_fits(SortPath::kCounting, 65537, 128));
  EXPECT_FALSE(kernels::sort_path_fits(SortPath::kCounting, 5000, 1024));
  EXPECT_FALSE(kernels::sort_path_fits(SortPath::kOneBlock, 4097, 128));
  EXPECT_FALSE(kernels::sort_path_fits(SortPath::kRadix, 4096, 128));
}
