// select_config: the one place that picks a grouped GEMM kernel.
#include "kernels/gemm/gemm_config.hpp"

#include <cstring>

namespace moekit::kernels {

const char* gemm_kernel_name(GemmKernel k) {
  switch (k) {
    case GemmKernel::kSimple: return "simple (CUDA cores)";
    case GemmKernel::kSwap128x16: return "sm90 swap-AB 128x16x128";
    case GemmKernel::kTile128x128: return "sm90 128x128x64";
    case GemmKernel::kTile128x256: return "sm90 128x256x64";
    case GemmKernel::kTile64x256: return "sm90 64x256x64 ping-pong";
    case GemmKernel::kDecode: return "decode TMA + mma.sync swap-AB 64x16x64";
    case GemmKernel::kFp8Swap128x16: return "sm90 fp8 block-scaled swap-AB 128x16x128";
    case GemmKernel::kFp8Tile128x128: return "sm90 fp8 block-scaled 128x128x128";
    case GemmKernel::kFp8Pingpong64x128: return "sm90 fp8 block-scaled 64x128x128 ping-pong";
    case GemmKernel::kFp8Decode: return "fp8 block-scaled decode TMA + wgmma swap-AB 64x16x128";
    case GemmKernel::kPrefill: return "prefill TMA + wgmma 128x256x64";
    case GemmKernel::kFp8Prefill: return "fp8 block-scaled prefill TMA + wgmma 128x128x128, overlapped promotion";
    case GemmKernel::kFp8Tile128x128Cluster1x2: return "sm90 fp8 block-scaled 128x128x128, cluster 1x2";
  }
  return "unknown";
}

bool gemm_kernel_from_name(const char* name, GemmKernel* out) {
  static const struct { const char* name; GemmKernel kernel; } kNames[] = {
      {"simple", GemmKernel::kSimple},
      {"swap128x16", GemmKernel::kSwap128x16},
      {"tile128x128", GemmKernel::kTile128x128},
      {"tile128x256", GemmKernel::kTile128x256},
      {"tile64x256", GemmKernel::kTile64x256},
      {"decode", GemmKernel::kDecode},
      {"fp8_swap128x16", GemmKernel::kFp8Swap128x16},
      {"fp8_tile128x128", GemmKernel::kFp8Tile128x128},
      {"fp8_pingpong64x128", GemmKernel::kFp8Pingpong64x128},
      {"fp8_decode", GemmKernel::kFp8Decode},
      {"prefill", GemmKernel::kPrefill},
      {"fp8_prefill", GemmKernel::kFp8Prefill},
      {"fp8_tile128x128_1x2", GemmKernel::kFp8Tile128x128Cluster1x2}};
  for (const auto& n : kNames)
    if (std::strcmp(name, n.name) == 0) { *out = n.kernel; return true; }
  return false;
}

bool gemm_kernel_runs_fp8(GemmKernel k) {
  return k == GemmKernel::kSimple || k == GemmKernel::kFp8Swap128x16 ||
         k == GemmKernel::kFp8Tile128x128 || k == GemmKernel::kFp8Pingpong64x128 ||
         k == GemmKernel::kFp8Decode || k == GemmKernel::kFp8Prefill ||
         k == GemmKernel::kFp8Tile128x128Cluster1x2;
}
bool gemm_kernel_runs_16bit(GemmKernel k) {
  return k == GemmKernel::kSimple || !gemm_kernel_runs_fp8(k);
}

int decode_ring_stages(int64_t n, int64_t k, int elem_bytes, int pass_tokens) {
  const int slots = n * k * elem_bytes <= kDecodeSmallExpertBytes ? kDecodeSmallExpertStages : kDecodeMaxStages;
  return slots * decode_slot_bytes(16) / decode_slot_bytes(pass_tokens);
}

int decode_pass_tokens(int64_t rows_per_expert) { return rows_per_expert <= 8 ? 16 : 32; }

namespace {

// The decode kernels' reasons, each with the ring decode_ring_stages picks.
#define MOEKIT_DECODE_WHY                                                                        \
  "<= 8 rows per expert: weight streaming, weight rows on the MMA's M side and tokens on its N " \
  "side, no per-group set-up, weights prefetched under the previous kernel"
#define MOEKIT_FP8_DECODE_WHY                                                                   \
  "fp8, <= 8 rows per expert: weight streaming, weight rows on the MMA's M side, one stage per " \
  "128-deep scale block, no per-group set-up, weights prefetched under the previous kernel"
#define MOEKIT_SMALL_RING "; experts of <= 8 MiB: 6 stages, 3 CTAs per SM"
#define MOEKIT_FULL_RING "; experts over 8 MiB: 9 stages, 2 CTAs per SM"
// 16-bit only, small experts only (select_config).
#define MOEKIT_DECODE32_WHY                                                                          \
  "9-24 rows per expert, experts of <= 8 MiB: weight streaming in 32-token passes, so most "        \
  "experts stream their weights once and the passes of one run side by side; 5 stages, 3 CTAs per SM"
GemmConfig decode_config(GemmKernel kernel, const GemmProblem& p, int64_t rows_per_expert) {
  const bool fp8 = kernel == GemmKernel::kFp8Decode;
  const bool small = decode_ring_stages(p.n, p.k, fp8 ? 1 : 2) == kDecodeSmallExpertStages;
  const int tokens = decode_pass_tokens(rows_per_expert);
  if (fp8)
    return {kernel, small ? MOEKIT_FP8_DECODE_WHY MOEKIT_SMALL_RING : MOEKIT_FP8_DECODE_WHY MOEKIT_FULL_RING,
            tokens};
  if (tokens == 32) return {kernel, MOEKIT_DECODE32_WHY, tokens};
  return {kernel, small ? MOEKIT_DECODE_WHY MOEKIT_SMALL_RING : MOEKIT_DECODE_WHY MOEKIT_FULL_RING, tokens};
}
#undef MOEKIT_DECODE_WHY
#undef MOEKIT_FP8_DECODE_WHY
#undef MOEKIT_SMALL_RING
#undef MOEKIT_FULL_RING
#undef MOEKIT_DECODE32_WHY

GemmConfig select_fp8(const GemmProblem& p, int64_t rows_per_expert) {
  if (p.n % 16 != 0 || p.k % 16 != 0)
    return {GemmKernel::kSimple, "fp8: N or K not a multiple of 16: TMA needs 16-byte rows"};
  // H200 layer sweeps, 2026-11-27 (bench/RESULTS.md), fp8 block scaling:
  // ping-pong 64x128 beat cooperative 128x128 at 16-32 rows per expert
  // (qwen3 T=256: 223 vs 264 us; deepseek-v3 T=1024: 3187 vs 3751) and lost
  // above 128 (mixtral T=4096: 4299 vs 3533; qwen3 T=4096: 953 vs 909).
  // The decode kernel on e4m3 replaced swap-AB 128x16 there, as in 16 bits
  // (measurements in bench/RESULTS.md, 2026-12-02).
  if (rows_per_expert <= 8 && p.num_experts <= kDecodeMaxExperts)
    return decode_config(GemmKernel::kFp8Decode, p, rows_per_expert);
  if (rows_per_expert <= 8)
    return {GemmKernel::kFp8Swap128x16,
            "fp8, <= 8 rows per expert, more experts than the decode kernel holds: swap-AB, "
            "weight rows on wgmma's M side, one weight scale per 128x128 tile and one "
            "activation scale per token column"};
  if (rows_per_expert <= 64)
    return {GemmKernel::kFp8Pingpong64x128,
            "fp8, 9-64 rows per expert: 64-row tiles, two warpgroups in ping-pong so one's "
            "scale promotion overlaps the other's wgmmas"};
  // Clusters of two CTAs along N (the row tile multicast to both) won at
  // 128 rows per expert and tied above (H200, 2026-12-02, layer us, forced
  // 128x128 vs 1x2 clusters, two calls: deepseek-v3 T=4096 5399 / 5371 vs
  // 5149 / 5207, T=1024 3571 / 3580 vs 3247 / 3232; qwen3 T=4096 703 / 704
  // vs 700 / 703; mixtral T=4096 3289 vs 3276). Along M (the weight tile
  // multicast) lost everywhere (deepseek-v3 T=4096 6430, qwen3 758), and
  // so did both cluster shapes of the 16-bit 128x256 kernel.
  return {GemmKernel::kFp8Tile128x128Cluster1x2,
          "fp8, > 64 rows per expert: 128x128x128 tiles, one k-tile per scale block, clusters "
          "of 2 along N sharing the row tile (TMA multicast)"};
}

}  // namespace

GemmConfig select_config(const GemmProblem& p) {
  const int64_t experts = p.num_experts > 0 ? p.num_experts : 1;
  if (p.n > (int64_t{1} << 30) || p.k > (int64_t{1} << 30) || p.rows > (int64_t{1} << 31) - 1)
    return {GemmKernel::kSimple, "a dimension beyond CUTLASS's int32 group shape"};
  if (p.dtype == MOEKIT_DTYPE_FP8_E4M3) return select_fp8(p, (p.rows + experts - 1) / experts);
  if (p.dtype != MOEKIT_DTYPE_BF16 && p.dtype != MOEKIT_DTYPE_FP16)
    return {GemmKernel::kSimple, "fp32 weights: no tensor-core kernel is compiled for fp32"};
  if (p.n % 8 != 0 || p.k % 8 != 0)
    return {GemmKernel::kSimple, "N or K not a multiple of 8: TMA needs 16-byte rows"};
  // Rows per expert if the router spreads the pairs evenly; skewed batches
  // still run correctly on any kernel, this only picks the tile.
  const int64_t rows_per_expert = (p.rows + experts - 1) / experts;
  // Layer sweeps, 2026-11-27 (bench/RESULTS.md): swap-AB won at 1-2 rows per
  // expert (H100 mixtral T=8: 846 vs 921 us) and tied at 4-8 (H200 qwen3
  // T=64: 308 vs 310); 64x256 won from 16 to 64 rows (H200 mixtral T=64:
  // 689 vs 768 for 128x256; qwen3 T=1024: 409 vs 415) and 128x256 above
  // (H100 mixtral T=4096: 590 vs 529 TFLOP/s for 256x128).
  // The decode kernel (TMA + mma.sync, no per-group set-up, weights streamed
  // before the previous kernel ends) replaced swap-AB 128x16 there (H200,
  // 2026-12-01, layer us, decode vs swap-AB, same call: qwen3 T=1 35.0 vs
  // 43.8, T=8 145.3 vs 153.6, T=64 298.0 vs 312.0, mixtral T=1 181.0 vs
  // 209.8, deepseek-v3 T=1 185.3 vs 192.7; deepseek-v3 T=64 and 256, at the
  // copy floor either way, within 1.2%). Above 8 rows it re-streams weights
  // per 16 tokens and loses (mixtral T=64: 898 vs 689 for 64x256).
  // With 32-token passes it wins at 9-24 rows where the experts are small
  // (H200, 2026-12-03, layer us, 64x256 vs decode: qwen3 T=256 335.8 vs
  // 327.1, T=257 337.2 vs 328.4) and loses elsewhere: large experts, whose
  // passes do not run side by side (mixtral T=64 687 vs 716), more rows
  // (qwen3 T=512 360 vs 469), and e4m3 (qwen3 T=256 208.1 vs 210.5).
  // Up to 24 rows, not 16 (H200, 2026-12-04, layer us, 64x256 vs decode, same
  // call: qwen3 T=257 330.1 vs 319.8, T=288 336.1 vs 326.0, T=320 337.8 vs
  // 328.3, T=384 (24 rows) 341.8 vs 333.1, T=448 (28 rows) 346.3 vs 389.8):
  // an expert streams its weights a second time only above 32 rows.
  if (experts <= kDecodeMaxExperts &&
      (rows_per_expert <= 8 || (rows_per_expert <= kDecode32MaxRows && p.n * p.k * 2 <= kDecodeSmallExpertBytes)))
    return decode_config(GemmKernel::kDecode, p, rows_per_expert);
  if (rows_per_expert <= 8)
    return {GemmKernel::kSwap128x16,
            "<= 8 rows per expert, more experts than the decode kernel holds: swap-AB, weight "
            "rows on wgmma's M side and tokens on its 16-wide N side"};
  if (p.n < 1024)
    return {GemmKernel::kTile128x128,
            "> 8 rows per expert, N < 1024: 128x128 tiles keep enough CTAs busy on a narrow N"};
  // The hand-written prefill kernel (128x256 tiles) where a 128-row tile
  // holds each expert's rows: GEMM 1 gathers its own rows and applies the
  // activation in its epilogue, so the layer runs neither stage, and GEMM 2
  // at 33-64 rows keeps an expert in one tile where 64-row tiles spill about
  // half of them into a second (at 65-80 both pad an expert to 128 rows:
  // mixtral T=257 (65 rows) 753.1 / 714.0 with GEMM 2 on it, qwen3 T=1280
  // (80) 388.3 / 387.5). H200, 2026-12-05, layer us, three rounds,
  // defaults (64x256 both) / GEMM 1 on prefill / both on prefill:
  // qwen3 T=512 (32 rows) 354.2 / 337.5 / 334.9, T=1024 391.8 / 368.1 /
  // 365.2, T=1536 (96) 427.7 / 393.6 / 395.8; mixtral T=64 (16) 710.8 /
  // 695.9 / 691.7, T=256 (64) 789.2 / 754.7 / 715.0, T=384 (96) 766.9 /
  // 739.8 / 733.1; deepseek-v3 T=768 (24) 5604 / 5422 / 5373, T=2048 (64)
  // 5997 / 5799 / 5836, T=3072 (96) 6469 / 6297 / 6333. At 128 rows, where
  // about half the experts spill into a second 128-row tile, GEMM 1 on it
  // tied (qwen3 T=2048 482.6 / 475.2) or lost (mixtral T=512 952 / 1096);
  // GEMM 2 on it lost at 96 rows and above (qwen3 T=1536 / 1792 / 2048,
  // deepseek-v3 T=3072). Not for e4m3: the fp8 prefill kernel lost at every point.
  if (experts <= kPrefillMaxExperts && p.gemm == 1 && rows_per_expert <= kPrefillGemm1MaxRows)
    return {GemmKernel::kPrefill,
            "GEMM 1, up to 96 rows per expert (a 128-row tile holds an expert's rows and their "
            "scatter): the prefill kernel, 128x256 tiles, which gathers its rows and applies the "
            "activation in its epilogue, so the layer runs neither stage"};
  if (experts <= kPrefillMaxExperts && p.gemm == 2 && rows_per_expert >= kPrefillGemm2MinRows &&
      rows_per_expert <= kPrefillGemm2MaxRows)
    return {GemmKernel::kPrefill,
            "GEMM 2, 33-80 rows per expert: the prefill kernel's 128-row tiles hold each expert in one "
            "tile, where near 64 rows about half of them would spill into a second 64-row tile"};
  // 65-128 rows per expert: 64-row tiles as well. Routed rows
  // scatter around their mean (about +-11 at 128 for random routing), so
  // about half the experts spill into a second, nearly empty 128-row tile
  // (a third more tensor-core work in all), where 64-row tiles pad half as
  // much. H200, 2026-12-03, layer us, GEMM 1 on 64x256 vs 128x256, same
  // call, two calls: mixtral T=512 917.9 / 920.9 vs 989.3 / 962.3,
  // deepseek-v3 T=4096 7436 / 7118 vs 7521 / 7260, T=3072 (96 rows) 6494 vs
  // 6588, qwen3 T=2048 501.3 / 498.6 vs 509.0 / 503.2; at 192 and 256 rows
  // it tied or lost (mixtral T=768 1080.8 vs 1071.0, T=1024 1410.0 vs
  // 1404.6, qwen3 T=3072 627.9 vs 622.4).
  if (rows_per_expert <= 128)
    return {GemmKernel::kTile64x256,
            rows_per_expert <= 64
                ? "9-64 rows per expert where neither the decode nor the prefill kernel is chosen: 64-row "
                  "tiles waste little of wgmma's M side, two in flight per CTA (ping-pong)"
                : "65-128 rows per expert, N >= 1024: 64-row ping-pong tiles, since about half the experts "
                  "of a 128-row mean would spill into a second, nearly empty 128-row tile"};
  // GEMM 2 above 128 rows per expert: the 64x256 ping-pong tiles won where
  // 128x256 won for GEMM 1 (H200, 2026-12-03, layer us, GEMM 2 alone forced,
  // same call: mixtral T=4096 4709 vs 4592, deepseek-v3 T=4096 7345 vs 7247,
  // qwen3 T=4096 776 vs 769, T=16384 2907 vs 2911; GEMM 1 on 64x256 tied or
  // lost: qwen3 T=16384 2939). A second call: mixtral T=4096 4636 vs 4697,
  // deepseek-v3 7248 vs 7362, but mixtral T=16384 (4096 rows per expert)
  // 18932 vs 18479: so up to 1024 rows per expert only.
  if (p.gemm == 2 && rows_per_expert <= 1024)
    return {GemmKernel::kTile64x256,
            "GEMM 2, 129-1024 rows per expert, N >= 1024: 64x256 ping-pong tiles, one warpgroup's "
            "epilogue under the other's mainloop (beat 128x256 by 1-2.5% on mixtral and deepseek-v3 prefill)"};
  return {GemmKernel::kTile128x256,
          "> 128 rows per expert (GEMM 2: > 1024), N >= 1024: 128x256 tiles, twice the reuse of 128x128 "
          "(590-640 TFLOP/s on mixtral prefill, H100)"};
}

bool gemm1_gathers_rows(GemmKernel kernel, moekit_quant_t quant, bool weights_on_input,
                        bool input_in_compute_dtype) {
  if (weights_on_input || !input_in_compute_dtype) return false;
  if (quant == MOEKIT_QUANT_NONE) return kernel == GemmKernel::kPrefill;
  return quant == MOEKIT_QUANT_FP8_BLOCK && kernel == GemmKernel::kFp8Prefill;
}

}  // namespace moekit::kernels
