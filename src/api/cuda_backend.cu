// The CUDA backend: workspace layout, device and pointer checks, and the
// launch sequence sort -> permute -> GEMM 1 -> activation -> GEMM 2 -> finalize.
// Everything here is host code; kernels live in src/kernels/<stage>/.
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <initializer_list>
#include <utility>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "api/backend.hpp"
#include "api/validate.hpp"
#include "kernels/gemm/gemm_config.hpp"
#include "kernels/gemm/grouped_gemm_sm90.hpp"
#include "kernels/kernels.hpp"
#include "common/fp8_math.hpp"
#include "reference/dtype.hpp"

namespace moekit::detail {

namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Large batches run in chunks of at most this many (token, slot) pairs, one
// after the other in the same workspace, so the workspace has an upper bound
// at any T (moekit.h states the formula). 65,536 pairs is 8,192 tokens at
// top-8 (256 rows per expert for E = 256: the GEMMs are compute-bound well
// before that) and 32,768 at top-2, vLLM's chunk. Every token's arithmetic is
// independent of the chunking, so results are identical.
constexpr int64_t kMaxChunkPairs = 65536;
int64_t chunk_tokens(const Problem& p) {
  const int64_t per_chunk = std::max<int64_t>(1, kMaxChunkPairs / p.top_k);
  return std::min(p.num_tokens, per_chunk);
}

// Byte offsets of every buffer in the workspace. The expert-ordered row
// buffers are contiguous [rows, K] matrices and expert_offsets is int32
// [E_local + 1], the form a grouped GEMM with device-side problem sizes takes.
struct CudaLayout {
  size_t routed_ids, routed_weights;  // [T*k] each, when the layer routes itself
  size_t keys[2], pairs[2];  // [T*k] radix sort double buffers
  size_t temp, sort_temp_bytes;
  size_t expert_offsets;     // [E_local + 1]
  size_t pair_to_row;        // [T*k]
  size_t rows;               // [T*k, H]  gathered input; later GEMM 2's output
  size_t gemm1;              // [T*k, N1]
  size_t act;                // [T*k, I]
  size_t scales;             // fp8: activation scales of one GEMM's input, [T*k, ceil(max(H, I)/128)]
  size_t ones;               // fp8 per tensor: the weight-scale block of ones
  size_t gemm_scratch;       // per-group GEMM arguments and CUTLASS workspace
  size_t gemm_scratch_bytes;
  size_t total;
};

Status cuda_status(cudaError_t e, const char* what) {
  cudaGetLastError();  // launch-configuration errors are not sticky; clear them
  return error(MOEKIT_ERROR_CUDA, what, " failed: ", cudaGetErrorName(e), " (",
               cudaGetErrorString(e), ")");
}

// FP8_TENSOR's stand-in weight scales: one [ceil(N/128), ceil(K/128)] block of
// ones, large enough for either GEMM (the real scale is folded into the rows').
int64_t ones_count(const Problem& p) {
  const int64_t n1 = gemm1_columns(p), h = p.hidden_size, i = p.intermediate_size;
  return std::max(fp8_blocks(n1) * fp8_blocks(h), fp8_blocks(h) * fp8_blocks(i));
}

// The layout of one chunk (chunk_tokens(p) tokens); every chunk reuses it.
Status make_layout(const Problem& p, const kernels::DeviceInfo& dev, CudaLayout* l) {
  const size_t pairs = static_cast<size_t>(chunk_tokens(p) * p.top_k);
  const size_t cb = ref::dtype_size(ref::compute_dtype(p));  // fp8 rows fit in these buffers
  if (cudaError_t e = kernels::sort_temp_bytes(static_cast<int64_t>(pairs), p.num_local_experts,
                                               &l->sort_temp_bytes);
      e != cudaSuccess)
    return cuda_status(e, "sort scratch size query");
  size_t at = 0;
  auto take = [&](size_t bytes) { size_t here = at; at += align_up(bytes); return here; };
  const bool routed = p.router.kind != MOEKIT_ROUTER_NONE;
  l->routed_ids = take(routed ? pairs * sizeof(int32_t) : 0);
  l->routed_weights = take(routed ? pairs * sizeof(float) : 0);
  for (int i = 0; i < 2; ++i) l->keys[i] = take(pairs * sizeof(uint32_t));
  for (int i = 0; i < 2; ++i) l->pairs[i] = take(pairs * sizeof(int32_t));
  l->temp = take(l->sort_temp_bytes);
  l->expert_offsets = take((p.num_local_experts + 1) * sizeof(int32_t));
  l->pair_to_row = take(pairs * sizeof(int32_t));
  l->rows = take(pairs * p.hidden_size * cb);
  l->gemm1 = take(pairs * gemm1_columns(p) * cb);
  l->act = take(pairs * p.intermediate_size * cb);
  const bool quant = p.quant.kind != MOEKIT_QUANT_NONE;
  l->scales = take(quant ? pairs * fp8_blocks(std::max(p.hidden_size, p.intermediate_size)) * 4 : 0);
  l->ones = take(p.quant.kind == MOEKIT_QUANT_FP8_TENSOR ? ones_count(p) * 4 : 0);
  l->gemm_scratch_bytes = kernels::grouped_gemm_scratch_bytes(p.num_local_experts, dev.sm_count);
  l->gemm_scratch = take(l->gemm_scratch_bytes);
  l->total = at;
  return Status();
}

// Per-device facts, read once: a query per call would cost host time and is
// unwelcome inside stream capture.
constexpr int kMaxDevices = 64;
std::array<std::atomic<int>, kMaxDevices> g_sm_count{};   // 0 = not read yet
std::array<std::atomic<int>, kMaxDevices> g_cc{};         // major * 10 + minor

Status current_device(kernels::DeviceInfo* info) {
  int dev = -1, count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return error(MOEKIT_ERROR_NO_DEVICE, "device: expected a CUDA GPU, found none; use device = cpu");
  }
  if (cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return cuda_status(e, "cudaGetDevice");
  if (dev < 0 || dev >= kMaxDevices)
    return error(MOEKIT_ERROR_NOT_SUPPORTED, "device: expected a device index below ", kMaxDevices,
                 ", got ", dev);
  if (g_sm_count[dev].load(std::memory_order_acquire) == 0) {
    int sms = 0, major = 0, minor = 0;
    if (cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev); e != cudaSuccess)
      return cuda_status(e, "cudaDeviceGetAttribute");
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    g_cc[dev].store(major * 10 + minor, std::memory_order_relaxed);
    g_sm_count[dev].store(sms, std::memory_order_release);
  }
  const int cc = g_cc[dev].load(std::memory_order_relaxed);
  if (cc != 90)
    return error(MOEKIT_ERROR_NO_DEVICE,
                 "device: expected a GPU of compute capability 9.0 (moekit is built for sm_90a), "
                 "got ", cc / 10, ".", cc % 10, " on device ", dev);
  info->device = dev;
  info->sm_count = g_sm_count[dev].load(std::memory_order_relaxed);
  return Status();
}

// The pointer must be usable by kernels on `device`.
Status check_pointer(const char* name, const void* ptr, int device) {
  if (ptr == nullptr) return Status();
  cudaPointerAttributes attr{};
  cudaError_t e = cudaPointerGetAttributes(&attr, ptr);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return error(MOEKIT_ERROR_INVALID_ARGUMENT, name, ": expected device memory, got a pointer "
                 "the CUDA runtime does not know (", cudaGetErrorName(e), ")");
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice:
      if (attr.device != device)
        return error(MOEKIT_ERROR_INVALID_ARGUMENT, name, ": expected memory of the current device ",
                     device, ", got memory of device ", attr.device);
      return Status();
    case cudaMemoryTypeManaged: return Status();
    case cudaMemoryTypeHost:
      if (attr.devicePointer == ptr) return Status();  // pinned and mapped at the same address
      return error(MOEKIT_ERROR_INVALID_ARGUMENT, name,
                   ": expected device memory, got pinned host memory not mapped at this address");
    default:
      return error(MOEKIT_ERROR_INVALID_ARGUMENT, name,
                   ": expected device memory (device = cuda), got host memory");
  }
}

}  // namespace

bool cuda_backend_available() {
  kernels::DeviceInfo info{};
  return current_device(&info).ok();
}

Status cuda_workspace_size(const Problem& p, size_t* bytes) {
  *bytes = 0;
  kernels::DeviceInfo info{};
  if (Status s = current_device(&info); !s) return s;
  if (p.num_tokens == 0) return Status();
  CudaLayout l{};
  if (Status s = make_layout(p, info, &l); !s) return s;
  *bytes = l.total;
  return Status();
}

Status cuda_check_arguments(const Arguments& a, const void* workspace) {
  kernels::DeviceInfo info{};
  if (Status s = current_device(&info); !s) return s;  // cached after the first call
  const std::pair<const char*, const void*> ptrs[] = {
      {"hidden", a.hidden},   {"topk_ids", a.topk_ids}, {"topk_ids64", a.topk_ids64},
      {"topk_weights", a.topk_weights},
      {"w13", a.w13},         {"w13_bias", a.w13_bias}, {"w2", a.w2},
      {"w2_bias", a.w2_bias}, {"diagnostics", a.diagnostics}, {"output", a.output},
      {"w13_scale", a.w13_scale}, {"w2_scale", a.w2_scale}, {"a13_scale", a.a13_scale},
      {"a2_scale", a.a2_scale},
      {"expert_map", a.expert_map},
      {"router_logits", a.router_logits}, {"router_correction_bias", a.router_correction_bias},
      {"workspace", workspace}};
  for (const auto& [name, ptr] : ptrs)
    if (Status s = check_pointer(name, ptr, info.device); !s) return s;
  return Status();
}

namespace {

// The kernel each GEMM of a chunk runs, from the rows a balanced router
// would give each local expert.
struct LayerPlan {
  kernels::GemmConfig gemm1, gemm2;
  bool gemm1_gathers;  // GEMM 1 gathers its own rows (gemm1_gathers_rows), no gather stage
  int64_t chunk_tokens, chunks;
};

LayerPlan plan_layer(const Problem& p) {
  LayerPlan plan{};
  plan.chunk_tokens = chunk_tokens(p);
  plan.chunks = plan.chunk_tokens == 0 ? 0 : (p.num_tokens + plan.chunk_tokens - 1) / plan.chunk_tokens;
  // Local rows of a chunk: its pairs times the share of experts this rank owns.
  const int64_t rows = plan.chunk_tokens * p.top_k * p.num_local_experts / p.num_experts;
  plan.gemm1 = kernels::select_config({p.weight_dtype, rows, p.num_local_experts, gemm1_columns(p),
                                       p.hidden_size});
  plan.gemm2 = kernels::select_config({p.weight_dtype, rows, p.num_local_experts, p.hidden_size,
                                       p.intermediate_size, 2});
  // MOEKIT_GEMM=<family> forces one kernel for both GEMMs (where it can run):
  // "simple" is the CUDA-core oracle the benchmark and the GPU suite compare
  // the fast path with; the others are for tuning, as are MOEKIT_GEMM1 and
  // MOEKIT_GEMM2, which force one GEMM (after MOEKIT_GEMM). Unknown names are
  // ignored, and so is a family of the other operand kind (fp8 vs 16-bit).
  const bool fp8 = p.quant.kind != MOEKIT_QUANT_NONE;
  auto force = [fp8](const char* var, const char* reason, std::initializer_list<kernels::GemmConfig*> gemms) {
    kernels::GemmKernel forced{};
    const char* name = std::getenv(var);
    if (name == nullptr || !kernels::gemm_kernel_from_name(name, &forced) ||
        !(fp8 ? kernels::gemm_kernel_runs_fp8(forced) : kernels::gemm_kernel_runs_16bit(forced)))
      return;
    for (kernels::GemmConfig* g : gemms)
      if (g->kernel != kernels::GemmKernel::kSimple || forced == kernels::GemmKernel::kSimple)
        *g = {forced, reason};
  };
  force("MOEKIT_GEMM", "forced by MOEKIT_GEMM", {&plan.gemm1, &plan.gemm2});
  force("MOEKIT_GEMM1", "forced by MOEKIT_GEMM1", {&plan.gemm1});
  force("MOEKIT_GEMM2", "forced by MOEKIT_GEMM2", {&plan.gemm2});
  plan.gemm1_gathers = kernels::gemm1_gathers_rows(plan.gemm1.kernel, p.quant.kind, p.apply_router_weight_on_input,
                                                   p.input_dtype == ref::compute_dtype(p));
  return plan;
}

bool print_config_requested() {
  static const bool on = std::getenv("MOEKIT_PRINT_CONFIG") != nullptr;
  return on;
}

// The block scales of one fp8 GEMM (all null for 16-bit operands).
struct GemmScales {
  const float* a;              // QuantRows layout
  const float* w;              // [E, ceil(N/128), ceil(K/128)], or the ones block
  int64_t w_stride;            // floats per expert in w; 0 for the ones block
  float* ones;                 // per tensor: the block to fill with ones, else null
  int64_t ones_count;
};

// One grouped GEMM: the chosen sm90 kernel, or the simple one. With fuse
// (GEMM 1), a kernel that can apply the activation in its epilogue (the
// hand-written decode and prefill kernels) writes the activation to act_out and sets *activated;
// otherwise (or if it declines the activation: e4m3 split halves whose I it
// cannot take) c gets the GEMM's output and the caller runs the activation.
// gather_pairs (GEMM 1 on the prefill kernel, a the layer's input rows):
// cudaErrorNotSupported if the kernel declines, with nothing launched, and
// no fallback here: the caller then gathers the rows and calls again.
cudaError_t grouped_gemm(const kernels::GemmConfig& cfg, const void* a, const int32_t* offsets,
                         int64_t experts, const void* w, const void* bias, void* c,
                         int64_t max_rows, int64_t n, int64_t k, moekit_dtype_t dtype,
                         const GemmScales& sc, void* scratch, const kernels::DeviceInfo& dev,
                         cudaStream_t stream, const kernels::FusedActivation* fuse = nullptr,
                         void* act_out = nullptr, bool* activated = nullptr,
                         const kernels::DecodeRouting& route = {},
                         const int32_t* gather_pairs = nullptr, int64_t top_k = 0) {
  if (cfg.kernel != kernels::GemmKernel::kSimple) {
    kernels::GroupedGemmParams gp{a,     offsets, static_cast<int>(experts), w,   bias,
                                  c,     n,       k,    dtype,  scratch,
                                  dev.sm_count, sc.a, sc.w, sc.w_stride, sc.ones,
                                  sc.ones ? sc.ones_count : 0, gather_pairs, top_k};
    cudaError_t e;
    if (kernels::gemm_kernel_is_hand_written(cfg.kernel)) {
      kernels::GroupedGemmParams fused = gp;
      if (fuse != nullptr) fused.c = act_out;
      e = kernels::launch_hand_written_gemm(cfg.kernel, fused, max_rows, stream, fuse, cfg.pass_tokens, route);
      if (e == cudaSuccess && fuse != nullptr)
        *activated = true;
      else if (e == cudaErrorNotSupported && fuse != nullptr)  // the activation declined: the GEMM alone,
        e = kernels::launch_hand_written_gemm(cfg.kernel, gp, max_rows, stream, nullptr, cfg.pass_tokens,
                                              route);  // and the activation stage after it
    } else {
      e = kernels::launch_grouped_gemm_sm90(cfg.kernel, gp, stream);
    }
    if (e != cudaErrorNotSupported) return e;  // else declined: the simple kernel takes it
  }
  // ... unless the rows are the kernel's to gather, which it does not do.
  if (gather_pairs != nullptr) return cudaErrorNotSupported;
  if (sc.a == nullptr)
    return kernels::launch_grouped_gemm(a, offsets, experts, w, bias, c, max_rows, n, k, dtype,
                                        dev, stream);
  if (sc.ones != nullptr) {  // the sm90 kernel that would have filled them declined or was not chosen
    if (cudaError_t e = kernels::fill_ones(sc.ones, sc.ones_count, stream); e != cudaSuccess) return e;
  }
  return kernels::launch_grouped_gemm_fp8(a, sc.a, offsets, experts, w, sc.w, sc.w_stride, bias, c,
                                          max_rows, n, k, dtype, dev, stream);
}

std::string describe(const LayerPlan& plan) {
  return "gemm1 " + std::string(kernels::gemm_kernel_name(plan.gemm1.kernel)) + " (" + plan.gemm1.reason +
         (plan.gemm1_gathers ? "; gathers its rows" : "") + "); gemm2 " +
         kernels::gemm_kernel_name(plan.gemm2.kernel) + " (" + plan.gemm2.reason + "); " +
         std::to_string(plan.chunks) + " chunk(s) of " + std::to_string(plan.chunk_tokens) + " tokens";
}

}  // namespace

std::string cuda_describe_plan(const Problem& p) { return describe(plan_layer(p)); }

Status cuda_run(const Arguments& a, void* workspace, size_t workspace_bytes,
                CUstream_st* stream_handle) {
  const Problem& p = a.problem;
  kernels::DeviceInfo dev{};
  if (Status s = current_device(&dev); !s) return s;
  if (p.num_tokens == 0) return validate_workspace(a, workspace, workspace_bytes, 0);
  CudaLayout l{};
  if (Status s = make_layout(p, dev, &l); !s) return s;
  if (Status s = validate_workspace(a, workspace, workspace_bytes, l.total); !s) return s;
  if (Status s = cuda_check_arguments(a, workspace); !s) return s;
  cudaStream_t stream = stream_handle;
  char* ws = static_cast<char*>(workspace);
  auto at = [&](size_t off) { return static_cast<void*>(ws + off); };
  const LayerPlan plan = plan_layer(p);
  if (print_config_requested())
    std::fprintf(stderr, "moekit: T=%lld %s\n", static_cast<long long>(p.num_tokens),
                 describe(plan).c_str());

  kernels::SortBuffers sb{};
  for (int i = 0; i < 2; ++i) {
    sb.keys[i] = static_cast<uint32_t*>(at(l.keys[i]));
    sb.pairs[i] = static_cast<int32_t*>(at(l.pairs[i]));
  }
  sb.temp = at(l.temp);
  sb.temp_bytes = l.sort_temp_bytes;
  sb.expert_offsets = static_cast<int32_t*>(at(l.expert_offsets));
  sb.pair_to_row = static_cast<int32_t*>(at(l.pair_to_row));
  const int32_t* valid_rows = sb.expert_offsets + p.num_local_experts;  // device scalar

  const int64_t n1 = gemm1_columns(p);
  const moekit_dtype_t cd = ref::compute_dtype(p);
  const bool fp8 = p.quant.kind != MOEKIT_QUANT_NONE;
  const bool per_tensor = p.quant.kind == MOEKIT_QUANT_FP8_TENSOR;
  auto* scales = static_cast<float*>(at(l.scales));
  auto* ones = static_cast<float*>(at(l.ones));
  // fp8: each GEMM's block scales (the activation scales its input stage writes).
  auto gemm_scales = [&](const float* w_scale, int64_t n, int64_t k) {
    if (!fp8) return GemmScales{};
    if (per_tensor) return GemmScales{scales, ones, 0, ones, ones_count(p)};
    return GemmScales{scales, w_scale, fp8_blocks(n) * fp8_blocks(k), nullptr, 0};
  };
  const GemmScales sc1 = gemm_scales(a.w13_scale, n1, p.hidden_size);
  const GemmScales sc2 = gemm_scales(a.w2_scale, p.hidden_size, p.intermediate_size);
  void* rows = at(l.rows);    // [chunk*k, H]
  void* gemm1 = at(l.gemm1);  // [chunk*k, N1]
  void* act = at(l.act);      // [chunk*k, I]
  void* y = rows;             // GEMM 2 output reuses the gathered input
  void* scratch = at(l.gemm_scratch);
  const size_t in_bytes = ref::dtype_size(p.input_dtype), out_bytes = ref::dtype_size(p.output_dtype);
  const size_t logit_bytes = ref::dtype_size(p.router.logits_dtype);

  for (int64_t t0 = 0; t0 < p.num_tokens; t0 += plan.chunk_tokens) {
    const int64_t T = std::min(plan.chunk_tokens, p.num_tokens - t0);
    const int64_t max_rows = T * p.top_k;
    const void* hidden = static_cast<const char*>(a.hidden) + t0 * p.hidden_size * in_bytes;  // [T, H]
    void* output = static_cast<char*>(a.output) + t0 * p.hidden_size * out_bytes;             // [T, H]
    const int32_t* topk_ids = a.topk_ids ? a.topk_ids + t0 * p.top_k : nullptr;               // [T, k]
    const int64_t* topk_ids64 = a.topk_ids64 ? a.topk_ids64 + t0 * p.top_k : nullptr;         // [T, k]
    const float* topk_weights = a.topk_weights ? a.topk_weights + t0 * p.top_k : nullptr;     // [T, k]
    cudaError_t e = cudaSuccess;
    if (p.router.kind != MOEKIT_ROUTER_NONE) {
      auto* ids = static_cast<int32_t*>(at(l.routed_ids));
      auto* weights = static_cast<float*>(at(l.routed_weights));
      const void* logits = static_cast<const char*>(a.router_logits) + t0 * p.num_experts * logit_bytes;
      e = kernels::launch_router(logits, a.router_correction_bias, T, p.num_experts, p.top_k,
                                 p.router, ids, weights, dev, stream);
      if (e != cudaSuccess) return cuda_status(e, "router");
      topk_ids = ids;
      topk_ids64 = nullptr;
      topk_weights = weights;
    }
    // Router weights on the input scale the gathered rows; finalize then sums
    // the expert outputs unweighted (a null weight pointer).
    const float* input_weights = p.apply_router_weight_on_input ? topk_weights : nullptr;
    const float* output_weights = p.apply_router_weight_on_input ? nullptr : topk_weights;
    const int32_t* sorted_pairs = nullptr;
    // fp8: GEMM 1's input rows are quantized as they are gathered, GEMM 2's
    // as the activation produces them (same buffers, one byte per value).
    auto quant_rows = [&](const float* static_scale, const float* w_scale, void* out) {
      return kernels::QuantRows{sb.expert_offsets, static_cast<int>(p.num_local_experts),
                                p.quant.kind, static_scale, w_scale, static_cast<uint8_t*>(out),
                                scales};
    };
    const kernels::QuantRows gather_quant = quant_rows(a.a13_scale, a.w13_scale, rows);
    // A tiny batch on the decode kernel: the sort and the gather (fp8 block
    // scaling: and its quantization) in one launch, and GEMM 1 ranks the ids
    // itself, so it streams its weights from the layer's first kernel on (one
    // launch fewer). Per-tensor scaling keeps the separate stages: its row
    // amax made the fused launch no faster (bench/RESULTS.md, 2026-12-04).
    const bool tiny = max_rows <= kernels::kWarpRankPairs &&
                      (fp8 ? p.quant.kind == MOEKIT_QUANT_FP8_BLOCK &&
                                 plan.gemm1.kernel == kernels::GemmKernel::kFp8Decode
                           : plan.gemm1.kernel == kernels::GemmKernel::kDecode);
    // GEMM 1 on the prefill kernel gathers its rows itself (cp.async through
    // the sort's map; no gather stage, no [T*k, H] round trip) where they
    // need no conversion and no router weight; with fp8 block scaling from
    // the input quantized once per token (a token's 1x128 groups are the
    // same in every expert's copy, so are its bytes and scales). If GEMM 1
    // declines, the gather stage runs and GEMM 1 is called again (never at
    // tiny batches: those are the decode kernel's).
    auto gather = [&] {
      return fp8 ? kernels::launch_permute_quant(hidden, p.input_dtype, sorted_pairs, input_weights, p.top_k,
                                                 p.hidden_size, gather_quant, max_rows, dev, stream)
                 : kernels::launch_permute(hidden, p.input_dtype, sorted_pairs, input_weights, valid_rows,
                                           max_rows, p.top_k, p.hidden_size, rows, cd, dev, stream,
                                           /*maps_written=*/true);
    };
    kernels::DecodeRouting route{};
    if (tiny) {
      e = kernels::launch_sort_gather_tiny(topk_ids, topk_ids64, T, p.top_k, p.num_experts, p.num_local_experts,
                                           p.ep_rank, a.expert_map, sb, a.diagnostics, &sorted_pairs, hidden,
                                           p.input_dtype, input_weights, p.hidden_size, rows, cd,
                                           fp8 ? &gather_quant : nullptr, stream);
      if (e != cudaSuccess) return cuda_status(e, "sort and gather");
      route = {topk_ids, topk_ids64, max_rows,
               {p.num_experts, p.ep_rank * p.num_local_experts, p.num_local_experts, a.expert_map}};
    } else {
      e = kernels::launch_sort(topk_ids, topk_ids64, T, p.top_k, p.num_experts, p.num_local_experts, p.ep_rank,
                               a.expert_map, sb, a.diagnostics, &sorted_pairs, dev, stream);
      if (e != cudaSuccess) return cuda_status(e, "sort");
      if (!plan.gemm1_gathers)
        e = gather();
      else if (fp8)  // the input's T rows, quantized in place of the gathered T * k
        e = kernels::launch_quantize_rows(hidden, cd, p.hidden_size,
                                          kernels::QuantRows{nullptr, 1, p.quant.kind, nullptr, nullptr,
                                                             static_cast<uint8_t*>(rows), scales},
                                          T, dev, stream);
    }
    if (e != cudaSuccess) return cuda_status(e, "permute");
    const ActivationParams ap{p.activation, p.swiglu_alpha, p.swiglu_beta, p.swiglu_limit};
    // The decode and prefill kernels run the activation in their epilogue
    // and write act directly (one launch and GEMM 1's [rows, N1] round trip
    // fewer). fp8: that 16-bit activation is what the activation-quantize
    // stage would quantize, so a plain quantize stage takes it (half the
    // bytes read, the same launches); otherwise that stage quantizes GEMM
    // 1's output.
    const kernels::FusedActivation fuse{ap, p.gate_up_order, p.intermediate_size};
    bool activated = false;
    auto run_gemm1 = [&](bool gathering) {
      return grouped_gemm(plan.gemm1, gathering && !fp8 ? hidden : rows, sb.expert_offsets, p.num_local_experts, a.w13,
                          a.w13_bias, gemm1, max_rows, n1, p.hidden_size, cd, sc1, scratch, dev, stream, &fuse,
                          act, &activated, route, gathering ? sorted_pairs : nullptr, p.top_k);
    };
    e = run_gemm1(plan.gemm1_gathers);
    if (e == cudaErrorNotSupported && plan.gemm1_gathers) {
      e = gather();
      if (e != cudaSuccess) return cuda_status(e, "permute");
      e = run_gemm1(false);
    }
    if (e != cudaSuccess) return cuda_status(e, "grouped GEMM 1");
    const void* gemm2_a = act;
    if (fp8 && activated) {  // act: the 16-bit activation; its e4m3 rows go to gemm1's buffer
      e = kernels::launch_quantize_rows(act, cd, p.intermediate_size, quant_rows(a.a2_scale, a.w2_scale, gemm1),
                                        max_rows, dev, stream);
      if (e != cudaSuccess) return cuda_status(e, "activation quantize");
      gemm2_a = gemm1;
    } else if (!activated) {
      if (fp8)
        e = kernels::launch_activation_quant(gemm1, cd, p.intermediate_size, ap, p.gate_up_order,
                                             quant_rows(a.a2_scale, a.w2_scale, act), max_rows, dev,
                                             stream);
      else
        e = kernels::launch_activation(gemm1, act, valid_rows, max_rows, p.intermediate_size, ap,
                                       p.gate_up_order, cd, dev, stream);
      if (e != cudaSuccess) return cuda_status(e, "activation");
    }
    e = grouped_gemm(plan.gemm2, gemm2_a, sb.expert_offsets, p.num_local_experts, a.w2, a.w2_bias, y,
                     max_rows, p.hidden_size, p.intermediate_size, cd, sc2, scratch, dev, stream);
    if (e != cudaSuccess) return cuda_status(e, "grouped GEMM 2");
    e = kernels::launch_finalize(y, cd, sb.pair_to_row, output_weights, T, p.top_k, p.hidden_size,
                                 output, p.output_dtype, dev, stream);
    if (e != cudaSuccess) return cuda_status(e, "finalize");
  }
  return Status();
}

Status cuda_check_router_arguments(const RouterArguments& a) {
  kernels::DeviceInfo info{};
  if (Status s = current_device(&info); !s) return s;
  const std::pair<const char*, const void*> ptrs[] = {{"logits", a.logits},
                                                      {"correction_bias", a.correction_bias},
                                                      {"topk_ids", a.topk_ids},
                                                      {"topk_weights", a.topk_weights}};
  for (const auto& [name, ptr] : ptrs)
    if (Status s = check_pointer(name, ptr, info.device); !s) return s;
  return Status();
}

Status cuda_router_run(const RouterArguments& a, CUstream_st* stream) {
  kernels::DeviceInfo dev{};
  if (Status s = current_device(&dev); !s) return s;
  const RouterProblem& p = a.problem;
  cudaError_t e = kernels::launch_router(a.logits, a.correction_bias, p.num_tokens, p.num_experts,
                                         p.top_k, p.config, a.topk_ids, a.topk_weights, dev, stream);
  return e == cudaSuccess ? Status() : cuda_status(e, "router");
}

}  // namespace moekit::detail
