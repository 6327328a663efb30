/*
 * moekit C API: one Mixture-of-Experts layer (sort, permute, grouped GEMM 1,
 * activation, grouped GEMM 2, finalize) as a single operator.
 *
 * Usage (two-phase, CUB style):
 *   moekit_problem_t p; moekit_problem_init(&p); ...set shapes...
 *   size_t bytes; moekit_workspace_size(&p, &bytes);   // ahead of time
 *   moekit_arguments_t a = {p, hidden, ids, weights, w13, w2, ...};
 *   moekit_run(&a, workspace, bytes, stream);            // never allocates
 *
 * Contract (see also DESIGN.md):
 *   - Each (token, slot) pair of topk_ids is its own row, so a token that picks
 *     the same expert twice gets that expert's output twice, each times its own
 *     weight. The result does not depend on T.
 *   - An id owned by another expert-parallel rank contributes nothing. An id
 *     outside [0, num_experts) (-1 padding, garbage) contributes nothing and is
 *     never used as an index; it is counted into the optional diagnostics.
 *   - out[t] = sum over valid slots s, in slot order, of
 *       topk_weights[t, s] * expert_out(ids[t, s], hidden[t])
 *     in fp32, written once. A token with no valid local slot gets zeros.
 *     With apply_router_weight_on_input the weight scales the input instead:
 *       out[t] = sum over valid slots s of expert_out(ids[t, s], w[t, s] * hidden[t])
 *     (vLLM's option of that name, used with top-1 routers such as Llama 4's).
 *     The product uses IEEE math: a weight of 0 times an Inf/NaN expert output
 *     is NaN. A NaN/Inf in one token's input or weights stays in that token's row.
 *   - Intermediates are rounded to the compute dtype (the weight dtype; the
 *     input dtype with fp8 weights) at fixed points: the gathered input, the
 *     GEMM 1 output, the activation output and the GEMM 2 output; every
 *     accumulation is fp32. With fp8 weights the gathered input and the
 *     activation output are then quantized (see moekit_quant_t).
 *   - num_tokens = 0 is valid: success, nothing is launched.
 *   - Every invalid argument is reported synchronously by moekit_can_implement
 *     and moekit_run, with a message naming the argument (moekit_last_error_message).
 *     A rejected call touches no memory and leaves no CUDA error behind.
 *   - moekit_run never allocates, never synchronizes the host, runs on the
 *     caller's stream and can be captured in a CUDA graph.
 *   - Deterministic: the same inputs give bitwise-identical outputs.
 *
 * Layouts (all row-major and contiguous):
 *   hidden        [T, H]            input_dtype
 *   topk_ids      [T, k]            int32, global expert ids (or topk_ids64: int64)
 *   topk_weights  [T, k]            fp32
 *   w13           [E_local, N1, H]  weight_dtype; N1 = 2I for gated activations
 *                                   (SwiGLU, GeGLU), I otherwise
 *   w13_bias      [E_local, N1]     weight_dtype (input_dtype with fp8 weights), optional
 *   w2            [E_local, H, I]   weight_dtype
 *   w2_bias       [E_local, H]      weight_dtype (input_dtype with fp8 weights), optional
 *   output        [T, H]            output_dtype; may be exactly hidden (in place,
 *                                   same dtype), any other overlap is an error
 *   expert_map    [E_total]         int32, optional (see below)
 * This rank owns global experts [ep_rank * E_local, (ep_rank + 1) * E_local),
 * or, with an expert map (vLLM's expert_map), the global ids whose map entry is
 * a local expert index: id g runs local expert expert_map[g] when that is in
 * [0, E_local); any other entry (-1 by convention) means another rank owns g,
 * so it contributes nothing, like a remote id. The map is read on the device,
 * so a new placement (EPLB) takes effect in a replayed CUDA graph; several ids
 * may map to one local expert.
 */
#ifndef MOEKIT_MOEKIT_H_
#define MOEKIT_MOEKIT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MOEKIT_API __declspec(dllexport)
#else
#define MOEKIT_API __attribute__((visibility("default")))
#endif

#define MOEKIT_VERSION_MAJOR 0
#define MOEKIT_VERSION_MINOR 1
#define MOEKIT_VERSION_PATCH 0

/* The largest hidden_size and intermediate_size (2^24; models use up to
 * ~2^15): a row's element and byte offsets stay in int32 arithmetic. A shape
 * whose weights ([E_local, N1, H], [E_local, H, I]) would pass 2^62 bytes is
 * rejected too, so no size the library computes can wrap. */
#define MOEKIT_MAX_ROW_LENGTH 16777216

/* The enums below are 4 bytes in C and C++. In C++ their underlying type is
 * fixed to int32_t, so whatever int32 a caller stores in one (a garbage dtype,
 * a kind from a newer header) is a value of the type, and the validation that
 * rejects it with MOEKIT_ERROR_INVALID_ARGUMENT is defined behaviour rather
 * than a load of an out-of-range enum. */
#ifdef __cplusplus
#define MOEKIT_ENUM(name) enum name : int32_t
#else
#define MOEKIT_ENUM(name) enum name
#endif

typedef MOEKIT_ENUM(moekit_status) {
  MOEKIT_SUCCESS = 0,
  MOEKIT_ERROR_INVALID_ARGUMENT = 1, /* a shape, dtype, pointer or size is wrong */
  MOEKIT_ERROR_NOT_SUPPORTED = 2,    /* valid, but this backend cannot run it */
  MOEKIT_ERROR_WORKSPACE = 3,        /* workspace null, too small or misaligned */
  MOEKIT_ERROR_CUDA = 4,             /* a CUDA runtime call failed */
  MOEKIT_ERROR_NO_DEVICE = 5,        /* device = CUDA but no usable GPU */
  MOEKIT_ERROR_INTERNAL = 6
} moekit_status_t;

typedef MOEKIT_ENUM(moekit_dtype) {
  MOEKIT_DTYPE_BF16 = 0,
  MOEKIT_DTYPE_FP16 = 1,
  MOEKIT_DTYPE_FP32 = 2,
  MOEKIT_DTYPE_FP8_E4M3 = 3  /* weight_dtype only, with quant.kind != NONE */
} moekit_dtype_t;

/* Quantized weights (weight_dtype = FP8_E4M3). The layer quantizes its own
 * activations (the gathered input before GEMM 1, the activation output before
 * GEMM 2) to e4m3 with fp32 scales; input, intermediates and output stay in
 * 16-bit. Arithmetic (identical on the CPU and CUDA backends up to the order
 * of the fp32 sums inside one 128-deep block):
 *   activation group g of a row (128 columns for FP8_BLOCK, the whole row for
 *   dynamic FP8_TENSOR): amax = max |x| (NaN ignored); s = amax / 448;
 *   q = e4m3(x * (1/s)) (x / s where 1/s overflows fp32, for s below about
 *   3e-39), rounded to nearest and saturated to +-448 (a finite x
 *   never becomes Inf or NaN; an Inf or NaN x becomes NaN); a group with
 *   amax = 0 gets s = 0 and q = 0 (exact zeros, no 0/0). Static FP8_TENSOR
 *   scales use s = the given scale (values beyond 448 s saturate).
 *   GEMM: for each 128-deep block b of K,
 *     acc = fma(sum_b(q_a * q_w), s_a[b] * s_w[b], acc)
 *   then out = round(acc + bias). FP8_TENSOR uses s_w = w_scale[e] for every b.
 * So a NaN or Inf in one token's input stays in that token's rows, and scales
 * from 1e-30 to 1e+30 give finite results wherever the exact result is finite
 * in fp32 (the product s_a * s_w can underflow to 0 only when the exact
 * output is below fp32's range too). */
typedef MOEKIT_ENUM(moekit_quant) {
  MOEKIT_QUANT_NONE = 0,
  MOEKIT_QUANT_FP8_BLOCK = 1,  /* DeepSeek-V3 style: one fp32 scale per 128x128 block of
                                  each weight matrix, activations per token per 128 columns */
  MOEKIT_QUANT_FP8_TENSOR = 2  /* one fp32 scale per expert and weight matrix; activations
                                  per token (dynamic) or one static scale per GEMM */
} moekit_quant_t;

typedef struct moekit_quant_config {
  moekit_quant_t kind;
  int32_t static_activation_scale; /* FP8_TENSOR: 1 = a13_scale / a2_scale are given; 0 = dynamic */
} moekit_quant_config_t;

/* Gated kinds read N1 = 2I columns of GEMM 1 (gate and up); the rest read I. */
typedef MOEKIT_ENUM(moekit_activation) {
  MOEKIT_ACT_SWIGLU = 0,     /* silu_a(min(g, limit)) * (clamp(u, -limit, limit) + beta),
                                silu_a(x) = x * sigmoid(alpha * x); alpha=1, beta=0,
                                limit=inf is plain SwiGLU; gpt-oss uses 1.702, 1, 7 */
  MOEKIT_ACT_GEGLU_ERF = 1,  /* gelu_erf(g) * u */
  MOEKIT_ACT_GEGLU_TANH = 2, /* gelu_tanh(g) * u */
  MOEKIT_ACT_SILU = 3,       /* x * sigmoid(x) */
  MOEKIT_ACT_GELU_ERF = 4,
  MOEKIT_ACT_GELU_TANH = 5,
  MOEKIT_ACT_RELU = 6,
  MOEKIT_ACT_RELU2 = 7,      /* relu(x)^2 */
  MOEKIT_ACT_IDENTITY = 8
} moekit_activation_t;

/* Where gate and up live among the N1 = 2I rows of w13 (gated kinds only). */
typedef MOEKIT_ENUM(moekit_gate_up_order) {
  MOEKIT_GATE_UP = 0,     /* rows [0, I) gate, [I, 2I) up: vLLM/SGLang w13 = [w1; w3] */
  MOEKIT_UP_GATE = 1,     /* rows [0, I) up, [I, 2I) gate: TensorRT-LLM/FlashInfer */
  MOEKIT_INTERLEAVED = 2  /* row 2j gate j, row 2j+1 up j: gpt-oss checkpoints */
} moekit_gate_up_order_t;

typedef MOEKIT_ENUM(moekit_device) {
  MOEKIT_DEVICE_CPU = 0,  /* pointers are host memory; stream is ignored */
  MOEKIT_DEVICE_CUDA = 1  /* pointers are device memory on the current device */
} moekit_device_t;

/* Routers: logits [T, E] -> topk_ids [T, k] int32, topk_weights [T, k] fp32.
 * Contract (all kinds): the k ids of a token are distinct and in [0, E), also
 * for NaN, +-Inf, all-equal and all-negative logits; ranking is by value with
 * NaN below every number and ties to the lower id; weights are finite;
 * results are deterministic and identical between the CPU and CUDA backends.
 * For weights, NaN logits count as -FLT_MAX and +-Inf as +-FLT_MAX (so +Inf
 * entries share the softmax mass and an all-NaN row is uniform). */
typedef MOEKIT_ENUM(moekit_router_kind) {
  MOEKIT_ROUTER_NONE = 0,          /* layer only: topk_ids/topk_weights are given */
  MOEKIT_ROUTER_SOFTMAX_TOPK = 1,  /* softmax over E, top-k, optionally renormalized
                                      over the k (Qwen3, DeepSeek-V2) */
  MOEKIT_ROUTER_TOPK_SOFTMAX = 2,  /* top-k logits, softmax over the k (Mixtral, gpt-oss) */
  MOEKIT_ROUTER_SIGMOID_GROUPED_TOPK = 3
  /* DeepSeek-V3: s = sigmoid(logit); experts ranked by s + correction_bias;
   * groups of E / num_groups experts scored by the sum of their top two;
   * the best topk_groups groups kept; top-k among their experts; weights are
   * the selected s, divided by (their sum + 1e-20) if renormalize. */
} moekit_router_kind_t;

typedef struct moekit_router_config {
  moekit_router_kind_t kind;
  moekit_dtype_t logits_dtype;
  int32_t renormalize;          /* 0 or 1 */
  int32_t num_groups;           /* grouped kind: n_group (E % n_group == 0); else 1 */
  int32_t topk_groups;          /* grouped kind: topk_group <= n_group; else 1 */
  float routed_scaling_factor;  /* every kind: weights are multiplied by it (default 1) */
} moekit_router_config_t;

typedef struct moekit_router_problem {
  int64_t num_tokens;   /* T >= 0 */
  int64_t num_experts;  /* E, 1..8192 */
  int64_t top_k;        /* 1 <= k <= E (grouped: k <= topk_groups * E / num_groups) */
  moekit_router_config_t config;
  moekit_device_t device;
} moekit_router_problem_t;

typedef struct moekit_router_arguments {
  moekit_router_problem_t problem;
  const void* logits;            /* [T, E] config.logits_dtype */
  const float* correction_bias;  /* [E] fp32, grouped kind only, optional (NULL = 0) */
  int32_t* topk_ids;             /* [T, k] out */
  float* topk_weights;           /* [T, k] out */
} moekit_router_arguments_t;

typedef struct moekit_problem {
  int64_t num_tokens;        /* T >= 0 */
  int64_t hidden_size;       /* H, a multiple of 8, <= MOEKIT_MAX_ROW_LENGTH */
  int64_t intermediate_size; /* I, a multiple of 8, <= MOEKIT_MAX_ROW_LENGTH */
  int64_t num_experts;       /* E_total >= 1 */
  int64_t num_local_experts; /* E_local = E_total / ep_size */
  int64_t ep_rank;           /* 0 <= ep_rank < ep_size */
  int64_t ep_size;           /* >= 1 */
  int64_t top_k;             /* 1 <= k <= E_total */
  moekit_dtype_t input_dtype;
  moekit_dtype_t weight_dtype; /* also the dtype of every intermediate */
  moekit_dtype_t output_dtype;
  moekit_activation_t activation;
  float swiglu_alpha;        /* SwiGLU only; default 1 */
  float swiglu_beta;         /* SwiGLU only; default 0 */
  float swiglu_limit;        /* SwiGLU only; > 0, default +inf (no clamp) */
  moekit_gate_up_order_t gate_up_order;
  int32_t has_w13_bias;      /* 0 or 1 */
  int32_t has_w2_bias;       /* 0 or 1 */
  moekit_device_t device;
  /* Optional first stage: with router.kind != NONE the layer routes from
   * router_logits [T, E_total] itself (ids and weights live in the workspace)
   * and topk_ids / topk_weights must be NULL. */
  moekit_router_config_t router;
  /* Quantized weights (see moekit_quant_t); kind NONE by default. With fp8
   * weights the compute dtype (intermediates, biases) is input_dtype, which
   * must be bf16 or fp16, and H and I must be multiples of 16. */
  moekit_quant_config_t quant;
  /* 1: scale each (token, slot) input row by its routing weight before GEMM 1
   * (rounded to the compute dtype after the fp32 product) and sum the expert
   * outputs unweighted; 0 (default): weight the outputs. */
  int32_t apply_router_weight_on_input;
  /* 1: arguments.expert_map gives the placement (then num_local_experts may be
   * any value in [1, num_experts] and ep_rank / ep_size are not used to place
   * experts); 0 (default): contiguous ranges by ep_rank. */
  int32_t has_expert_map;
} moekit_problem_t;

/* Device-side counters, added to by every run that is given them; the caller
 * zeroes them when it wants. Reading them needs no synchronization of moekit. */
typedef struct moekit_diagnostics {
  unsigned long long invalid_ids;                 /* ids outside [0, E_total) */
  unsigned long long tokens_without_valid_expert; /* every slot's id invalid */
  unsigned long long tokens_without_local_expert; /* no slot on this rank */
  unsigned long long reserved;
} moekit_diagnostics_t;

typedef struct moekit_arguments {
  moekit_problem_t problem;
  const void* hidden;          /* [T, H] input_dtype */
  const int32_t* topk_ids;     /* [T, k] */
  const float* topk_weights;   /* [T, k] */
  const void* w13;             /* [E_local, N1, H] weight_dtype */
  const void* w13_bias;        /* [E_local, N1] or NULL */
  const void* w2;              /* [E_local, H, I] weight_dtype */
  const void* w2_bias;         /* [E_local, H] or NULL */
  void* output;                /* [T, H] output_dtype */
  moekit_diagnostics_t* diagnostics; /* optional, same memory space as the rest */
  const void* router_logits;           /* [T, E_total], when problem.router.kind != NONE */
  const float* router_correction_bias; /* [E_total] fp32 or NULL (grouped router) */
  /* fp8 weight scales, fp32, required when quant.kind != NONE:
   *   FP8_BLOCK:  w13_scale [E_local, ceil(N1/128), ceil(H/128)]
   *               w2_scale  [E_local, ceil(H/128), ceil(I/128)]
   *   FP8_TENSOR: w13_scale [E_local], w2_scale [E_local]
   * Static activation scales (FP8_TENSOR with static_activation_scale = 1, else
   * NULL): a13_scale [1] for GEMM 1's input, a2_scale [1] for GEMM 2's.
   * Every scale must be finite and > 0. The CPU backend checks them; the CUDA
   * backend cannot without a host sync, so there a bad scale is not reported
   * and only affects the rows of the experts (or GEMM) it belongs to. */
  const float* w13_scale;
  const float* w2_scale;
  const float* a13_scale;
  const float* a2_scale;
  /* [E_total] int32 global -> local expert (-1: another rank), when
   * problem.has_expert_map = 1, else NULL. Same memory space as the rest. */
  const int32_t* expert_map;
  /* [T, k] int64 ids instead of topk_ids (PyTorch's default index type):
   * give exactly one of the two when the layer does not route itself. Any id
   * outside [0, num_experts), those beyond int32 included, contributes nothing. */
  const int64_t* topk_ids64;
} moekit_arguments_t;

/* Fills p with defaults: ep_size 1, SwiGLU(1, 0, inf), GATE_UP, bf16, CUDA. */
MOEKIT_API void moekit_problem_init(moekit_problem_t* p);

/* MOEKIT_SUCCESS if moekit_run would accept args (workspace aside). */
MOEKIT_API moekit_status_t moekit_can_implement(const moekit_arguments_t* args);

/* Bytes of workspace for problem p; depends on T, so query per batch size.
 * CUDA: the layer runs in chunks of C = min(T, max(1, 65536 / k)) tokens that
 * reuse one workspace (identical results), so with P = C * k pairs, b the
 * weight dtype's size and N1 = 2I (gated) or I, the size is at most
 *   P * (b * (H + N1 + I) + 28) + [router] P * 8 + sort scratch (the larger of
 *   cub::DeviceRadixSort's temp storage for P pairs and 4 * ceil(P / 1024) * (E_local + 1))
 *   + E_local * 144 + (GEMM descriptors: about 1 KiB per SM) + 256 per buffer
 *   + with fp8 weights: P * 4 * ceil(max(H, I) / 128) (activation scales; b is then
 *     the input dtype's size) and, per tensor, 4 * ceil(max(N1, I) / 128) * ceil(max(H, I) / 128),
 * which is bounded at every T: e.g. 1.8 GB for H = 7168, I = 2048, k = 8 in bf16.
 * The CPU backend needs one such workspace for all T tokens, plus a scratch
 * row of 4 * max(H, I) bytes per host thread (std::thread::hardware_concurrency,
 * 1 to 64), so query it on the machine that runs the layer. */
MOEKIT_API moekit_status_t moekit_workspace_size(const moekit_problem_t* p, size_t* bytes);

/* Runs the layer. workspace must be 256-byte aligned, in the problem's memory
 * space, and at least moekit_workspace_size bytes. stream is a cudaStream_t
 * (NULL: the legacy default stream); ignored on the CPU. */
MOEKIT_API moekit_status_t moekit_run(const moekit_arguments_t* args, void* workspace,
                                      size_t workspace_bytes, void* stream);

/* Fills p with defaults: no router in a layer; for a standalone router use
 * moekit_router_problem_init (softmax top-k, renormalized, fp32 logits, CUDA). */
MOEKIT_API void moekit_router_problem_init(moekit_router_problem_t* p);
MOEKIT_API moekit_status_t moekit_router_can_implement(const moekit_router_arguments_t* args);
/* Runs the router alone; it needs no workspace. */
MOEKIT_API moekit_status_t moekit_router_run(const moekit_router_arguments_t* args, void* stream);

/* The message of this thread's last failed call ("" if none). */
MOEKIT_API const char* moekit_last_error_message(void);
MOEKIT_API const char* moekit_status_string(moekit_status_t status);
MOEKIT_API const char* moekit_dtype_name(moekit_dtype_t dtype);
MOEKIT_API const char* moekit_activation_name(moekit_activation_t activation);

/* 1 if the CUDA backend can run here (a GPU of compute capability 9.0). */
MOEKIT_API int moekit_cuda_available(void);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* MOEKIT_MOEKIT_H_ */
