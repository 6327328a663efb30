#include "api/validate.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common/activation_math.hpp"
#include "common/router_math.hpp"
#include "reference/dtype.hpp"

namespace moekit::detail {

using ref::dtype_size;

const char* dtype_name(moekit_dtype_t d) {
  switch (d) {
    case MOEKIT_DTYPE_BF16: return "bf16";
    case MOEKIT_DTYPE_FP16: return "fp16";
    case MOEKIT_DTYPE_FP32: return "fp32";
    case MOEKIT_DTYPE_FP8_E4M3: return "fp8_e4m3";
  }
  return "unknown";
}

int64_t gemm1_columns(const Problem& p) {
  return activation_is_gated(p.activation) ? 2 * p.intermediate_size : p.intermediate_size;
}

namespace {

constexpr size_t kTensorAlign = 16;  // 16-byte vector loads and stores
constexpr size_t kWorkspaceAlign = 256;
constexpr int64_t kMaxRowLength = MOEKIT_MAX_ROW_LENGTH;

bool valid_dtype(moekit_dtype_t d) {
  return d == MOEKIT_DTYPE_BF16 || d == MOEKIT_DTYPE_FP16 || d == MOEKIT_DTYPE_FP32;
}

Status check_dtype(const char* name, moekit_dtype_t d) {
  if (valid_dtype(d)) return Status();
  return error(MOEKIT_ERROR_INVALID_ARGUMENT, name, ": expected one of bf16, fp16, fp32, got ",
               static_cast<int>(d));
}

Status check_row_length(const char* name, int64_t v) {
  if (v <= 0 || v % 8 != 0)
    return error(MOEKIT_ERROR_INVALID_ARGUMENT, name,
                 ": expected a positive multiple of 8 (every row must be 16-byte aligned), got ", v);
  if (v > kMaxRowLength)
    return error(MOEKIT_ERROR_INVALID_ARGUMENT, name, ": expected at most ", kMaxRowLength,
                 " (2^24: a row's offsets stay in int32 arithmetic), got ", v);
  return Status();
}

// a * b * c <= limit, for positive factors, without overflowing.
bool product_at_most(int64_t a, int64_t b, int64_t c, int64_t limit) {
  return a <= limit / b && a * b <= limit / c;
}

// Every tensor's byte size must be a number the overlap checks and the
// kernels' int64 offsets can hold. With H, I <= 2^24, T * k < 2^31 and a
// router's E <= kRouterMaxExperts, only the weights (up to 4 bytes an
// element) can pass 2^62 bytes, and w13 ([E_local, N1, H]) first: N1 >= I
// makes w2 ([E_local, H, I]) no larger.
Status check_weight_sizes(const Problem& p) {
  constexpr int64_t kMaxElements = (int64_t{1} << 62) / 4;
  const int64_t n1 = gemm1_columns(p);
  if (!product_at_most(p.num_local_experts, n1, p.hidden_size, kMaxElements))
    return error(MOEKIT_ERROR_INVALID_ARGUMENT,
                 "num_local_experts: expected the weights (num_local_experts * N1 * hidden_size "
                 "elements) to fit in 2^62 bytes, got ", p.num_local_experts, " * ", n1, " * ",
                 p.hidden_size);
  return Status();
}

struct Region {
  const char* name;
  const void* ptr;
  size_t bytes;
  size_t align;
  bool required;   // must be non-NULL
  bool forbidden;  // must be NULL (a bias whose has_ flag is 0)
};

bool overlaps(const Region& a, const Region& b) {
  if (!a.ptr || !b.ptr || a.bytes == 0 || b.bytes == 0) return false;
  auto a0 = reinterpret_cast<uintptr_t>(a.ptr), b0 = reinterpret_cast<uintptr_t>(b.ptr);
  return a0 < b0 + b.bytes && b0 < a0 + a.bytes;
}

std::vector<Region> regions(const Arguments& a) {
  const Problem& p = a.problem;
  const size_t T = p.num_tokens, H = p.hidden_size, I = p.intermediate_size, k = p.top_k;
  const size_t E = p.num_local_experts, N1 = gemm1_columns(p), wb = dtype_size(p.weight_dtype);
  const size_t bb = dtype_size(ref::compute_dtype(p));  // bias element
  const bool routed = p.router.kind != MOEKIT_ROUTER_NONE;
  const bool quant = p.quant.kind != MOEKIT_QUANT_NONE;
  const bool static_act = quant && p.quant.static_activation_scale == 1;
  const size_t w13s = ref::weight_scale_count(p, N1, H) * 4, w2s = ref::weight_scale_count(p, H, I) * 4;
  return {
      {"hidden", a.hidden, T * H * dtype_size(p.input_dtype), kTensorAlign, true, false},
      {"topk_ids", a.topk_ids, T * k * 4, 4, !routed && a.topk_ids64 == nullptr, routed},
      {"topk_ids64", a.topk_ids64, T * k * 8, 8, false, routed},
      {"topk_weights", a.topk_weights, T * k * 4, 4, !routed, routed},
      {"router_logits", a.router_logits, T * static_cast<size_t>(p.num_experts) * dtype_size(p.router.logits_dtype),
       dtype_size(p.router.logits_dtype), routed, !routed},
      {"router_correction_bias", a.router_correction_bias, static_cast<size_t>(p.num_experts) * 4, 4, false,
       p.router.kind != MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK},
      {"w13", a.w13, E * N1 * H * wb, kTensorAlign, true, false},
      {"w13_bias", a.w13_bias, E * N1 * bb, kTensorAlign, p.has_w13_bias != 0,
       p.has_w13_bias == 0},
      {"w2", a.w2, E * H * I * wb, kTensorAlign, true, false},
      {"w2_bias", a.w2_bias, E * H * bb, kTensorAlign, p.has_w2_bias != 0, p.has_w2_bias == 0},
      {"w13_scale", a.w13_scale, w13s, 4, quant, !quant},
      {"w2_scale", a.w2_scale, w2s, 4, quant, !quant},
      {"a13_scale", a.a13_scale, 4, 4, static_act, !static_act},
      {"a2_scale", a.a2_scale, 4, 4, static_act, !static_act},
      {"expert_map", a.expert_map, static_cast<size_t>(p.num_experts) * 4, 4, p.has_expert_map != 0,
       p.has_expert_map == 0},
      {"diagnostics", a.diagnostics, sizeof(moekit_diagnostics_t), 8, false, false},
      {"output", a.output, T * H * dtype_size(p.output_dtype), kTensorAlign, true, false},
  };
}

// top_k within [1, E] and T * k addressable by int32 row ids.
Status check_top_k_and_pairs(int64_t num_tokens, int64_t num_experts, int64_t top_k) {
  const auto kInvalid = MOEKIT_ERROR_INVALID_ARGUMENT;
  if (top_k < 1 || top_k > num_experts)
    return error(kInvalid, "top_k: expected 1 <= top_k <= num_experts = ", num_experts,
                 ", got ", top_k);
  if (num_tokens > std::numeric_limits<int32_t>::max() / top_k)
    return error(kInvalid, "num_tokens: expected num_tokens * top_k <= 2147483647 (int32 row ids), got ",
                 num_tokens, " * ", top_k);
  return Status();
}

const char* forbidden_reason(const std::string& name) {
  if (name == "w13_bias") return "has_w13_bias is 0";
  if (name == "w2_bias") return "has_w2_bias is 0";
  if (name == "topk_ids" || name == "topk_ids64" || name == "topk_weights")
    return "the layer routes itself: router.kind is not none";
  if (name == "router_logits") return "router.kind is none";
  if (name == "w13_scale" || name == "w2_scale") return "quant.kind is none";
  if (name == "expert_map") return "has_expert_map is 0";
  if (name == "a13_scale" || name == "a2_scale")
    return "activation scales are dynamic: quant.static_activation_scale is 0";
  return "router.kind is not sigmoid_grouped_topk";
}

Status validate_quant(const Problem& p) {
  const auto kInvalid = MOEKIT_ERROR_INVALID_ARGUMENT;
  const moekit_quant_config_t& q = p.quant;
  if (q.kind < MOEKIT_QUANT_NONE || q.kind > MOEKIT_QUANT_FP8_TENSOR)
    return error(kInvalid, "quant.kind: expected none (0), fp8_block (1) or fp8_tensor (2), got ",
                 static_cast<int>(q.kind));
  if (q.static_activation_scale != 0 && q.static_activation_scale != 1)
    return error(kInvalid, "quant.static_activation_scale: expected 0 or 1, got ",
                 q.static_activation_scale);
  if (q.kind == MOEKIT_QUANT_NONE) {
    if (p.weight_dtype == MOEKIT_DTYPE_FP8_E4M3)
      return error(kInvalid, "weight_dtype: fp8_e4m3 needs quant.kind fp8_block or fp8_tensor "
                   "(the weight scales), got quant.kind none");
    if (q.static_activation_scale != 0)
      return error(kInvalid, "quant.static_activation_scale: expected 0 when quant.kind is none, got 1");
    return Status();
  }
  if (p.weight_dtype != MOEKIT_DTYPE_FP8_E4M3)
    return error(kInvalid, "weight_dtype: expected fp8_e4m3 with quant.kind ",
                 q.kind == MOEKIT_QUANT_FP8_BLOCK ? "fp8_block" : "fp8_tensor", ", got ",
                 dtype_name(p.weight_dtype));
  if (p.input_dtype != MOEKIT_DTYPE_BF16 && p.input_dtype != MOEKIT_DTYPE_FP16)
    return error(kInvalid, "input_dtype: expected bf16 or fp16 with fp8 weights (it is the "
                 "compute dtype of the intermediates), got ", dtype_name(p.input_dtype));
  if (q.kind == MOEKIT_QUANT_FP8_BLOCK && q.static_activation_scale != 0)
    return error(kInvalid, "quant.static_activation_scale: expected 0 with fp8_block (activations "
                 "are scaled per token and 128 columns), got 1");
  if (p.hidden_size % 16 != 0)
    return error(kInvalid, "hidden_size: expected a multiple of 16 with fp8 weights (16-byte rows), got ",
                 p.hidden_size);
  if (p.intermediate_size % 16 != 0)
    return error(kInvalid, "intermediate_size: expected a multiple of 16 with fp8 weights "
                 "(16-byte rows), got ", p.intermediate_size);
  return Status();
}

}  // namespace

Status validate_host_scales(const Arguments& a) {
  const Problem& p = a.problem;
  if (p.quant.kind == MOEKIT_QUANT_NONE || p.num_tokens == 0) return Status();
  const int64_t N1 = gemm1_columns(p);
  const struct { const char* name; const float* v; int64_t n; } scales[] = {
      {"w13_scale", a.w13_scale, ref::weight_scale_count(p, N1, p.hidden_size)},
      {"w2_scale", a.w2_scale, ref::weight_scale_count(p, p.hidden_size, p.intermediate_size)},
      {"a13_scale", a.a13_scale, a.a13_scale ? 1 : 0},
      {"a2_scale", a.a2_scale, a.a2_scale ? 1 : 0}};
  for (const auto& s : scales)
    for (int64_t i = 0; i < s.n; ++i)
      if (!(std::isfinite(s.v[i]) && s.v[i] > 0.0f))
        return error(MOEKIT_ERROR_INVALID_ARGUMENT, s.name, ": expected finite scales > 0, got ",
                     s.v[i], " at index ", i);
  return Status();
}

Status validate_router_config(const moekit_router_config_t& c, int64_t num_experts,
                              int64_t top_k, const char* prefix) {
  const auto kInvalid = MOEKIT_ERROR_INVALID_ARGUMENT;
  if (c.kind < MOEKIT_ROUTER_SOFTMAX_TOPK || c.kind > MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK)
    return error(kInvalid, prefix, "kind: expected softmax_topk (1), topk_softmax (2) or "
                 "sigmoid_grouped_topk (3), got ", static_cast<int>(c.kind));
  if (Status s = check_dtype((std::string(prefix) + "logits_dtype").c_str(), c.logits_dtype); !s) return s;
  if (num_experts > kRouterMaxExperts)
    return error(kInvalid, prefix, "num_experts: expected at most ", kRouterMaxExperts,
                 " for a router, got ", num_experts);
  if (c.renormalize != 0 && c.renormalize != 1)
    return error(kInvalid, prefix, "renormalize: expected 0 or 1, got ", c.renormalize);
  if (!std::isfinite(c.routed_scaling_factor))
    return error(kInvalid, prefix, "routed_scaling_factor: expected a finite number, got ",
                 c.routed_scaling_factor);
  if (c.kind != MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK) {
    if (c.num_groups != 1 || c.topk_groups != 1)
      return error(kInvalid, prefix, "num_groups/topk_groups: expected 1/1 for an ungrouped router, got ",
                   c.num_groups, "/", c.topk_groups);
    return Status();
  }
  if (c.num_groups < 1 || num_experts % c.num_groups != 0)
    return error(kInvalid, prefix, "num_groups: expected a divisor of num_experts = ", num_experts,
                 ", got ", c.num_groups);
  if (c.topk_groups < 1 || c.topk_groups > c.num_groups)
    return error(kInvalid, prefix, "topk_groups: expected 1 <= topk_groups <= num_groups = ",
                 c.num_groups, ", got ", c.topk_groups);
  const int64_t reachable = c.topk_groups * (num_experts / c.num_groups);
  if (top_k > reachable)
    return error(kInvalid, prefix, "top_k: expected at most topk_groups * num_experts / num_groups = ",
                 reachable, " experts in the kept groups, got ", top_k);
  return Status();
}

Status validate_router_arguments(const RouterArguments& a) {
  const auto kInvalid = MOEKIT_ERROR_INVALID_ARGUMENT;
  const RouterProblem& p = a.problem;
  if (p.device != MOEKIT_DEVICE_CPU && p.device != MOEKIT_DEVICE_CUDA)
    return error(kInvalid, "device: expected cpu (0) or cuda (1), got ", static_cast<int>(p.device));
  if (p.num_tokens < 0) return error(kInvalid, "num_tokens: expected >= 0, got ", p.num_tokens);
  if (p.num_experts < 1)
    return error(kInvalid, "num_experts: expected >= 1, got ", p.num_experts);
  if (Status s = check_top_k_and_pairs(p.num_tokens, p.num_experts, p.top_k); !s) return s;
  if (Status s = validate_router_config(p.config, p.num_experts, p.top_k, ""); !s) return s;
  if (a.correction_bias && p.config.kind != MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK)
    return error(kInvalid, "correction_bias: expected NULL for a router other than sigmoid_grouped_topk, got a pointer");
  if (p.num_tokens == 0) return Status();
  const size_t T = p.num_tokens, E = p.num_experts, k = p.top_k;
  const Region rs[] = {
      {"logits", a.logits, T * E * dtype_size(p.config.logits_dtype), dtype_size(p.config.logits_dtype), true, false},
      {"correction_bias", a.correction_bias, E * 4, 4, false, false},
      {"topk_ids", a.topk_ids, T * k * 4, 4, true, false},
      {"topk_weights", a.topk_weights, T * k * 4, 4, true, false},
  };
  for (const Region& r : rs) {
    if (r.required && r.ptr == nullptr)
      return error(kInvalid, r.name, ": expected a pointer to ", r.bytes, " bytes, got NULL");
    if (r.ptr && reinterpret_cast<uintptr_t>(r.ptr) % r.align != 0)
      return error(kInvalid, r.name, ": expected a ", r.align, "-byte aligned pointer, got ", r.ptr);
  }
  for (int out = 2; out < 4; ++out)
    for (int in = 0; in < 4; ++in)
      if (in != out && overlaps(rs[out], rs[in]))
        return error(kInvalid, rs[out].name, ": expected memory disjoint from ", rs[in].name,
                     ", got overlapping ranges");
  return Status();
}

Status validate_problem(const Problem& p) {
  using E = Status;
  const auto kInvalid = MOEKIT_ERROR_INVALID_ARGUMENT;
  if (p.device != MOEKIT_DEVICE_CPU && p.device != MOEKIT_DEVICE_CUDA)
    return error(kInvalid, "device: expected cpu (0) or cuda (1), got ", static_cast<int>(p.device));
  if (p.num_tokens < 0) return error(kInvalid, "num_tokens: expected >= 0, got ", p.num_tokens);
  if (E s = check_row_length("hidden_size", p.hidden_size); !s) return s;
  if (E s = check_row_length("intermediate_size", p.intermediate_size); !s) return s;
  if (p.num_experts < 1 || p.num_experts > std::numeric_limits<int32_t>::max())
    return error(kInvalid, "num_experts: expected 1 <= num_experts <= 2147483647 (int32 ids), got ",
                 p.num_experts);
  if (p.ep_size < 1) return error(kInvalid, "ep_size: expected >= 1, got ", p.ep_size);
  if (p.ep_rank < 0 || p.ep_rank >= p.ep_size)
    return error(kInvalid, "ep_rank: expected 0 <= ep_rank < ep_size = ", p.ep_size, ", got ",
                 p.ep_rank);
  if (p.has_expert_map != 0 && p.has_expert_map != 1)
    return error(kInvalid, "has_expert_map: expected 0 or 1, got ", p.has_expert_map);
  if (p.has_expert_map) {
    // The map places the experts: any local count up to the global one.
    if (p.num_local_experts < 1 || p.num_local_experts > p.num_experts)
      return error(kInvalid, "num_local_experts: expected 1 <= num_local_experts <= num_experts = ",
                   p.num_experts, " with an expert map, got ", p.num_local_experts);
  } else {
    if (p.num_experts % p.ep_size != 0)
      return error(kInvalid, "num_experts: expected a multiple of ep_size = ", p.ep_size, ", got ",
                   p.num_experts);
    if (p.num_local_experts != p.num_experts / p.ep_size)
      return error(kInvalid, "num_local_experts: expected num_experts / ep_size = ", p.num_experts,
                   " / ", p.ep_size, " = ", p.num_experts / p.ep_size, ", got ",
                   p.num_local_experts);
  }
  if (p.apply_router_weight_on_input != 0 && p.apply_router_weight_on_input != 1)
    return error(kInvalid, "apply_router_weight_on_input: expected 0 or 1, got ",
                 p.apply_router_weight_on_input);
  if (E s = check_top_k_and_pairs(p.num_tokens, p.num_experts, p.top_k); !s) return s;
  if (E s = check_dtype("input_dtype", p.input_dtype); !s) return s;
  if (p.weight_dtype != MOEKIT_DTYPE_FP8_E4M3)
    if (E s = check_dtype("weight_dtype", p.weight_dtype); !s) return s;
  if (E s = check_dtype("output_dtype", p.output_dtype); !s) return s;
  if (E s = validate_quant(p); !s) return s;
  if (p.activation < MOEKIT_ACT_SWIGLU || p.activation > MOEKIT_ACT_IDENTITY)
    return error(kInvalid,
                 "activation: expected one of swiglu, geglu_erf, geglu_tanh, silu, gelu_erf, "
                 "gelu_tanh, relu, relu2, identity (0..8), got ",
                 static_cast<int>(p.activation));
  if (p.gate_up_order != MOEKIT_GATE_UP && p.gate_up_order != MOEKIT_UP_GATE &&
      p.gate_up_order != MOEKIT_INTERLEAVED)
    return error(kInvalid, "gate_up_order: expected gate_up (0), up_gate (1) or interleaved (2), got ",
                 static_cast<int>(p.gate_up_order));
  if (!std::isfinite(p.swiglu_alpha))
    return error(kInvalid, "swiglu_alpha: expected a finite number, got ", p.swiglu_alpha);
  if (!std::isfinite(p.swiglu_beta))
    return error(kInvalid, "swiglu_beta: expected a finite number, got ", p.swiglu_beta);
  if (!(p.swiglu_limit > 0.0f))
    return error(kInvalid, "swiglu_limit: expected > 0 (+inf disables the clamp), got ",
                 p.swiglu_limit);
  if (p.has_w13_bias != 0 && p.has_w13_bias != 1)
    return error(kInvalid, "has_w13_bias: expected 0 or 1, got ", p.has_w13_bias);
  if (p.has_w2_bias != 0 && p.has_w2_bias != 1)
    return error(kInvalid, "has_w2_bias: expected 0 or 1, got ", p.has_w2_bias);
  if (E s = check_weight_sizes(p); !s) return s;
  if (p.router.kind != MOEKIT_ROUTER_NONE)
    return validate_router_config(p.router, p.num_experts, p.top_k, "router.");
  return Status();
}

Status validate_arguments(const Arguments& a) {
  if (Status s = validate_problem(a.problem); !s) return s;
  const Problem& p = a.problem;
  if (p.num_tokens == 0) return Status();  // nothing is read or written
  const auto kInvalid = MOEKIT_ERROR_INVALID_ARGUMENT;
  const std::vector<Region> rs = regions(a);
  if (a.topk_ids != nullptr && a.topk_ids64 != nullptr && p.router.kind == MOEKIT_ROUTER_NONE)
    return error(kInvalid, "topk_ids64: expected NULL when topk_ids (int32) is given: pass the ids once");
  for (const Region& r : rs) {
    if (r.required && r.ptr == nullptr)
      return error(kInvalid, r.name, ": expected a pointer to ", r.bytes, " bytes, got NULL");
    if (r.forbidden && r.ptr != nullptr)
      return error(kInvalid, r.name, ": expected NULL (", forbidden_reason(r.name), "), got a pointer");
    if (r.ptr && reinterpret_cast<uintptr_t>(r.ptr) % r.align != 0)
      return error(kInvalid, r.name, ": expected a ", r.align, "-byte aligned pointer, got ",
                   r.ptr);
  }
  const Region& out = rs.back();
  for (size_t i = 0; i + 1 < rs.size(); ++i) {
    // In place: every chunk reads its tokens' hidden rows before it writes
    // their output rows, so exactly the hidden tensor may be the output.
    const bool in_place = i == 0 && out.ptr == rs[0].ptr && out.bytes == rs[0].bytes;
    if (!in_place && overlaps(out, rs[i]))
      return error(kInvalid, "output: expected memory disjoint from ", rs[i].name,
                   ", got overlapping ranges");
  }
  return Status();
}

Status validate_workspace(const Arguments& a, const void* workspace, size_t workspace_bytes,
                          size_t required) {
  if (required == 0) return Status();
  const auto kWs = MOEKIT_ERROR_WORKSPACE;
  if (workspace == nullptr)
    return error(kWs, "workspace: expected a buffer of at least ", required, " bytes for num_tokens = ",
                 a.problem.num_tokens, ", got NULL");
  if (workspace_bytes < required)
    return error(kWs, "workspace_bytes: expected at least ", required, " for num_tokens = ",
                 a.problem.num_tokens, ", got ", workspace_bytes);
  if (reinterpret_cast<uintptr_t>(workspace) % kWorkspaceAlign != 0)
    return error(kWs, "workspace: expected a ", kWorkspaceAlign, "-byte aligned pointer, got ",
                 workspace);
  const Region ws{"workspace", workspace, required, kWorkspaceAlign, true, false};
  for (const Region& r : regions(a)) {
    if (overlaps(ws, r))
      return error(kWs, "workspace: expected memory disjoint from ", r.name,
                   ", got overlapping ranges");
  }
  return Status();
}

}  // namespace moekit::detail
