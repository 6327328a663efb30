// moekit._C: the Python binding of the C API. It only converts: it reads each
// tensor's pointer, dtype, shape, device and layout (PyTorch tensors through
// their own attributes, anything else through DLPack or the buffer protocol,
// all without copies), checks that the shapes agree with each other, fills a
// moekit_problem_t and calls moekit_run. Every rule of the layer (dtypes,
// alignment, overlap, scales, routing) is the library's, and its messages
// come back as moekit.MoekitError.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "moekit/moekit.h"

namespace nb = nanobind;

namespace {

struct Error : std::exception {
  explicit Error(std::string m) : message(std::move(m)) {}
  const char* what() const noexcept override { return message.c_str(); }
  std::string message;
};

template <class... A>
[[noreturn]] void fail(const A&... parts) {
  std::ostringstream s;
  s << "moekit: ";
  (s << ... << parts);
  throw Error(s.str());
}

void check(moekit_status_t st) {
  if (st != MOEKIT_SUCCESS)
    fail(moekit_status_string(st), ": ", moekit_last_error_message());
}

// Element kinds the layer reads; fp8 e4m3 also arrives as uint8 (a byte view
// of a float8 tensor), which the caller's dtype choice disambiguates.
enum class Kind { kBf16, kFp16, kFp32, kFp8, kInt32, kInt64, kUint8, kOther };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kBf16: return "bfloat16";
    case Kind::kFp16: return "float16";
    case Kind::kFp32: return "float32";
    case Kind::kFp8: return "float8_e4m3fn";
    case Kind::kInt32: return "int32";
    case Kind::kInt64: return "int64";
    case Kind::kUint8: return "uint8";
    default: return "an unsupported dtype";
  }
}

Kind kind_of(nb::dlpack::dtype d) {
  using C = nb::dlpack::dtype_code;
  const auto code = static_cast<C>(d.code);
  if (d.lanes != 1) return Kind::kOther;
  if (code == C::Bfloat && d.bits == 16) return Kind::kBf16;
  if (code == C::Float && d.bits == 16) return Kind::kFp16;
  if (code == C::Float && d.bits == 32) return Kind::kFp32;
  if (code == C::Float8_E4M3FN && d.bits == 8) return Kind::kFp8;
  if (code == C::Int && d.bits == 32) return Kind::kInt32;
  if (code == C::Int && d.bits == 64) return Kind::kInt64;
  if (code == C::UInt && d.bits == 8) return Kind::kUint8;
  return Kind::kOther;
}

// One tensor argument as the library needs it.
struct View {
  const char* name = "";
  bool present = false;
  void* ptr = nullptr;
  Kind kind = Kind::kOther;
  int ndim = 0;
  int64_t shape[4] = {0, 0, 0, 0};
  int device = -1;  // -1: host memory; else the CUDA device index
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
};

std::string shape_string(const int64_t* s, int n) {
  std::string r = "[";
  for (int i = 0; i < n; ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// PyTorch tensors are read through their own C-implemented attributes, which
// costs a fraction of a DLPack export (torch's __dlpack__ is Python code).
struct Torch {
  PyTypeObject* tensor = nullptr;
  nb::object bf16, fp16, fp32, fp8, i32, i64, u8;
  bool ready = false;
  void load() {
    if (ready) return;
    PyObject* mod = PyImport_GetModule(nb::str("torch").ptr());  // only if already imported
    if (mod == nullptr) { PyErr_Clear(); return; }
    nb::object torch = nb::steal(mod);
    tensor = reinterpret_cast<PyTypeObject*>(torch.attr("Tensor").ptr());
    bf16 = torch.attr("bfloat16"); fp16 = torch.attr("float16"); fp32 = torch.attr("float32");
    fp8 = nb::getattr(torch, "float8_e4m3fn", nb::none());
    i32 = torch.attr("int32"); i64 = torch.attr("int64"); u8 = torch.attr("uint8");
    ready = true;
  }
  Kind kind(nb::handle dt) const {
    if (dt.is(bf16)) return Kind::kBf16;
    if (dt.is(fp16)) return Kind::kFp16;
    if (dt.is(fp32)) return Kind::kFp32;
    if (dt.is(fp8)) return Kind::kFp8;
    if (dt.is(i32)) return Kind::kInt32;
    if (dt.is(i64)) return Kind::kInt64;
    if (dt.is(u8)) return Kind::kUint8;
    return Kind::kOther;
  }
};
Torch g_torch;

bool is_torch_tensor(nb::handle h) {
  g_torch.load();
  return g_torch.ready && PyObject_TypeCheck(h.ptr(), g_torch.tensor);
}

// Reads one argument (None: absent). keep holds DLPack imports alive for the call.
View view_of(nb::handle h, const char* name, bool writable, std::vector<nb::object>& keep) {
  View v;
  v.name = name;
  if (h.is_none()) return v;
  v.present = true;
  if (is_torch_tensor(h)) {
    v.kind = g_torch.kind(h.attr("dtype"));
    nb::tuple shape = nb::borrow<nb::tuple>(h.attr("shape"));
    v.ndim = static_cast<int>(shape.size());
    if (v.ndim > 4) fail(name, ": expected at most 4 dimensions, got ", v.ndim);
    for (int i = 0; i < v.ndim; ++i) v.shape[i] = nb::cast<int64_t>(shape[i]);
    if (!nb::cast<bool>(h.attr("is_contiguous")()))
      fail(name, ": expected a contiguous (row-major) tensor, got strides ",
           nb::cast<std::string>(nb::str(h.attr("stride")())), "; call .contiguous() first");
    v.ptr = reinterpret_cast<void*>(nb::cast<uintptr_t>(h.attr("data_ptr")()));
    v.device = nb::cast<bool>(h.attr("is_cuda")) ? nb::cast<int>(h.attr("get_device")()) : -1;
    if (v.device < 0 && nb::cast<std::string>(nb::str(h.attr("device").attr("type"))) != "cpu")
      fail(name, ": expected a CPU or CUDA tensor, got device ",
           nb::cast<std::string>(nb::str(h.attr("device"))));
    return v;
  }
  nb::ndarray<nb::ro> a;
  if (!nb::try_cast(h, a))
    fail(name, ": expected a tensor or array (DLPack, the buffer protocol or a torch.Tensor), got ",
         nb::cast<std::string>(nb::str(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(h.ptr()))))));
  if (writable) {  // out, workspace, diagnostics: a read-only export (JAX, NumPy views) is refused
    nb::ndarray<> w;
    if (!nb::try_cast(h, w)) fail(name, ": expected a writable array, got a read-only one");
  }
  keep.push_back(nb::cast(a));
  v.kind = kind_of(a.dtype());
  v.ndim = static_cast<int>(a.ndim());
  if (v.ndim > 4) fail(name, ": expected at most 4 dimensions, got ", v.ndim);
  for (int i = 0; i < v.ndim; ++i) v.shape[i] = static_cast<int64_t>(a.shape(i));
  int64_t expect = 1;
  for (int i = v.ndim - 1; i >= 0 && v.numel() > 0; --i) {  // an empty array has no layout
    if (v.shape[i] != 1 && a.stride(i) != expect)
      fail(name, ": expected a contiguous (row-major) array, got a strided one");
    expect *= v.shape[i];
  }
  v.ptr = const_cast<void*>(a.data());
  const int type = a.device_type();
  if (type == nb::device::cpu::value || type == nb::device::cuda_host::value) v.device = -1;
  else if (type == nb::device::cuda::value || type == nb::device::cuda_managed::value) v.device = a.device_id();
  else fail(name, ": expected host or CUDA memory, got DLPack device type ", type);
  return v;
}

void expect_shape(const View& v, std::initializer_list<int64_t> want, const char* dims) {
  const int n = static_cast<int>(want.size());
  bool ok = v.ndim == n;
  int i = 0;
  for (int64_t w : want) ok = ok && v.shape[i++] == w;
  if (!ok) fail(v.name, ": expected shape ", dims, " = ", shape_string(want.begin(), n), ", got ",
                shape_string(v.shape, v.ndim));
}

void expect_kind(const View& v, std::initializer_list<Kind> kinds) {
  for (Kind k : kinds)
    if (v.kind == k) return;
  std::string names;
  for (Kind k : kinds) names += (names.empty() ? "" : " or ") + std::string(kind_name(k));
  fail(v.name, ": expected dtype ", names, ", got ", kind_name(v.kind));
}

moekit_dtype_t float_dtype(const View& v) {
  expect_kind(v, {Kind::kBf16, Kind::kFp16, Kind::kFp32});
  return v.kind == Kind::kBf16 ? MOEKIT_DTYPE_BF16 : v.kind == Kind::kFp16 ? MOEKIT_DTYPE_FP16 : MOEKIT_DTYPE_FP32;
}

// The layer's options that do not come from tensor shapes (Python caches one
// per distinct option set, so a call only copies it).
struct Config {
  moekit_problem_t problem;
  Config() { moekit_problem_init(&problem); }
};

struct Workspace {
  void* ptr = nullptr;
  size_t bytes = 0;
};

// A workspace argument: an array, or a provider get(nbytes, allocate) -> array
// (or None when it has no buffer that large and allocate is false). The
// provider is asked to allocate only after the library accepted the call, so
// a rejected call allocates nothing; a call that fits the cached buffer is
// validated once, by moekit_run.
Workspace workspace_of(nb::handle ws, size_t need, int device, const moekit_arguments_t& a,
                       std::vector<nb::object>& keep) {
  if (need == 0) return {};
  nb::object arr = nb::borrow(ws);
  if (!ws.is_none() && PyCallable_Check(ws.ptr()) && !is_torch_tensor(ws)) {
    arr = ws(need, false);
    if (arr.is_none()) {
      check(moekit_can_implement(&a));
      arr = ws(need, true);
    }
  }
  View v = view_of(arr, "workspace", true, keep);
  if (!v.present) fail("workspace: expected a buffer of at least ", need, " bytes, got None");
  if (v.device != device)
    fail("workspace: expected memory on the layer's device (", device < 0 ? std::string("cpu") : "cuda:" + std::to_string(device),
         "), got ", v.device < 0 ? std::string("cpu") : "cuda:" + std::to_string(v.device));
  int item = v.kind == Kind::kFp32 || v.kind == Kind::kInt32 ? 4 : v.kind == Kind::kInt64 ? 8
           : v.kind == Kind::kBf16 || v.kind == Kind::kFp16 ? 2 : 1;
  return {v.ptr, static_cast<size_t>(v.numel()) * item};
}

// The layer: fills the problem from the tensors, then moekit_run.
void run_layer(const Config& cfg, nb::handle hidden_h, nb::handle w13_h, nb::handle w2_h,
               nb::handle topk_weights_h, nb::handle topk_ids_h, nb::handle out_h,
               nb::handle workspace_h, uintptr_t stream, nb::handle router_logits_h,
               nb::handle correction_bias_h, nb::handle w13_bias_h, nb::handle w2_bias_h,
               nb::handle w13_scale_h, nb::handle w2_scale_h, nb::handle a13_scale_h,
               nb::handle a2_scale_h, nb::handle expert_map_h, nb::handle diagnostics_h) {
  std::vector<nb::object> keep;
  moekit_problem_t p = cfg.problem;
  const View hidden = view_of(hidden_h, "hidden", false, keep);
  const View w13 = view_of(w13_h, "w13", false, keep);
  const View w2 = view_of(w2_h, "w2", false, keep);
  const View out = view_of(out_h, "out", true, keep);
  const View ids = view_of(topk_ids_h, "topk_ids", false, keep);
  const View weights = view_of(topk_weights_h, "topk_weights", false, keep);
  const View logits = view_of(router_logits_h, "router_logits", false, keep);
  const View bias = view_of(correction_bias_h, "correction_bias", false, keep);
  const View b13 = view_of(w13_bias_h, "w13_bias", false, keep);
  const View b2 = view_of(w2_bias_h, "w2_bias", false, keep);
  const View s13 = view_of(w13_scale_h, "w13_scale", false, keep);
  const View s2 = view_of(w2_scale_h, "w2_scale", false, keep);
  const View sa13 = view_of(a13_scale_h, "a13_scale", false, keep);
  const View sa2 = view_of(a2_scale_h, "a2_scale", false, keep);
  const View map = view_of(expert_map_h, "expert_map", false, keep);
  const View diag = view_of(diagnostics_h, "diagnostics", true, keep);
  if (!hidden.present || !w13.present || !w2.present || !out.present)
    fail("hidden, w13, w2 and out are required");

  // Shapes: hidden [T, H], w13 [E_local, N1, H], w2 [E_local, H, I].
  if (hidden.ndim != 2) fail("hidden: expected 2 dimensions [T, H], got ", shape_string(hidden.shape, hidden.ndim));
  if (w13.ndim != 3) fail("w13: expected 3 dimensions [E_local, N1, H], got ", shape_string(w13.shape, w13.ndim));
  if (w2.ndim != 3) fail("w2: expected 3 dimensions [E_local, H, I], got ", shape_string(w2.shape, w2.ndim));
  const bool gated = p.activation == MOEKIT_ACT_SWIGLU || p.activation == MOEKIT_ACT_GEGLU_ERF ||
                     p.activation == MOEKIT_ACT_GEGLU_TANH;
  // I from w13 (N1 = 2I for gated activations); w2 must agree.
  const int64_t T = hidden.shape[0], H = hidden.shape[1], E = w13.shape[0], N1 = w13.shape[1];
  if (gated && N1 % 2 != 0)
    fail("w13: expected 2 * I rows per expert (gate and up) for a gated activation, got ", N1);
  const int64_t I = gated ? N1 / 2 : N1;
  p.num_tokens = T;
  p.hidden_size = H;
  p.intermediate_size = I;
  p.num_local_experts = E;
  p.input_dtype = float_dtype(hidden);
  const bool fp8 = p.quant.kind != MOEKIT_QUANT_NONE;
  if (fp8) {
    expect_kind(w13, {Kind::kFp8, Kind::kUint8});
    expect_kind(w2, {Kind::kFp8, Kind::kUint8});
    p.weight_dtype = MOEKIT_DTYPE_FP8_E4M3;
  } else {
    p.weight_dtype = float_dtype(w13);
    if (float_dtype(w2) != p.weight_dtype)
      fail("w2: expected the dtype of w13 (", kind_name(w13.kind), "), got ", kind_name(w2.kind));
  }
  expect_shape(w13, {E, gated ? 2 * I : I, H}, gated ? "[E_local, 2 * I, H]" : "[E_local, I, H]");
  expect_shape(w2, {E, H, I}, "[E_local, H, I]");
  expect_shape(out, {T, H}, "[T, H]");
  p.output_dtype = float_dtype(out);

  const bool routed = logits.present;
  p.router.kind = routed ? cfg.problem.router.kind : MOEKIT_ROUTER_NONE;
  if (routed && p.router.kind == MOEKIT_ROUTER_NONE) fail("router_logits: given, but no router kind chosen");
  if (map.present) {
    expect_kind(map, {Kind::kInt32});
    if (map.ndim != 1) fail("expert_map: expected 1 dimension [E_total], got ", shape_string(map.shape, map.ndim));
    p.has_expert_map = 1;
  }
  // E_total: given, else the map's length, the logits' width, or E_local * ep_size.
  if (p.num_experts <= 0)
    p.num_experts = map.present ? map.shape[0] : routed ? logits.shape[logits.ndim - 1] : E * p.ep_size;
  if (map.present) expect_shape(map, {p.num_experts}, "[E_total]");
  if (routed) {
    p.router.logits_dtype = float_dtype(logits);
    expect_shape(logits, {T, p.num_experts}, "[T, E_total]");
    if (ids.present || weights.present) fail("topk_ids / topk_weights: expected None when the layer routes itself");
    if (bias.present) {
      expect_kind(bias, {Kind::kFp32});
      expect_shape(bias, {p.num_experts}, "[E_total]");
    }
  } else {
    if (!ids.present || !weights.present) fail("topk_ids and topk_weights are required without router_logits");
    expect_kind(ids, {Kind::kInt32, Kind::kInt64});  // int64: topk_ids64, no conversion
    expect_kind(weights, {Kind::kFp32});
    if (ids.ndim != 2) fail("topk_ids: expected 2 dimensions [T, k], got ", shape_string(ids.shape, ids.ndim));
    p.top_k = ids.shape[1];
    expect_shape(ids, {T, p.top_k}, "[T, k]");
    expect_shape(weights, {T, p.top_k}, "[T, k]");
  }
  const moekit_dtype_t compute = fp8 ? p.input_dtype : p.weight_dtype;
  if (b13.present) {
    p.has_w13_bias = 1;
    if (float_dtype(b13) != compute) fail("w13_bias: expected the compute dtype ", moekit_dtype_name(compute), ", got ", kind_name(b13.kind));
    expect_shape(b13, {E, gated ? 2 * I : I}, "[E_local, N1]");
  }
  if (b2.present) {
    p.has_w2_bias = 1;
    if (float_dtype(b2) != compute) fail("w2_bias: expected the compute dtype ", moekit_dtype_name(compute), ", got ", kind_name(b2.kind));
    expect_shape(b2, {E, H}, "[E_local, H]");
  }
  auto blocks = [](int64_t n) { return (n + 127) / 128; };
  for (const View* s : {&s13, &s2, &sa13, &sa2})
    if (s->present) expect_kind(*s, {Kind::kFp32});
  if (p.quant.kind == MOEKIT_QUANT_FP8_BLOCK) {
    if (s13.present) expect_shape(s13, {E, blocks(gated ? 2 * I : I), blocks(H)}, "[E_local, ceil(N1/128), ceil(H/128)]");
    if (s2.present) expect_shape(s2, {E, blocks(H), blocks(I)}, "[E_local, ceil(H/128), ceil(I/128)]");
  } else if (p.quant.kind == MOEKIT_QUANT_FP8_TENSOR) {
    // One scale per expert: [E_local], [E_local, 1] or [E_local, 1, 1].
    for (const View* s : {&s13, &s2})
      if (s->present && (s->numel() != E || s->shape[0] != E))
        fail(s->name, ": expected one scale per local expert, shape [E_local] = [", E, "], got ", shape_string(s->shape, s->ndim));
  }
  for (const View* s : {&sa13, &sa2})
    if (s->present && s->numel() != 1) fail(s->name, ": expected one scale, got shape ", shape_string(s->shape, s->ndim));
  p.quant.static_activation_scale = (sa13.present || sa2.present) ? 1 : 0;

  // Device: every tensor in one memory space (the library checks CUDA
  // pointers against the current device).
  p.device = hidden.device < 0 ? MOEKIT_DEVICE_CPU : MOEKIT_DEVICE_CUDA;
  for (const View* v : {&w13, &w2, &out, &ids, &weights, &logits, &bias, &b13, &b2, &s13, &s2, &sa13, &sa2, &map, &diag})
    if (v->present && v->device != hidden.device)
      fail(v->name, ": expected memory on hidden's device (", hidden.device < 0 ? std::string("cpu") : "cuda:" + std::to_string(hidden.device),
           "), got ", v->device < 0 ? std::string("cpu") : "cuda:" + std::to_string(v->device));
  if (diag.present && (diag.kind != Kind::kInt64 || diag.numel() != 4))
    fail("diagnostics: expected 4 int64 counters, got ", kind_name(diag.kind), " ", shape_string(diag.shape, diag.ndim));

  moekit_arguments_t a{};
  a.problem = p;
  a.hidden = hidden.ptr;
  if (ids.kind == Kind::kInt64) a.topk_ids64 = static_cast<const int64_t*>(ids.ptr);
  else a.topk_ids = static_cast<const int32_t*>(ids.ptr);
  a.topk_weights = static_cast<const float*>(weights.ptr);
  a.w13 = w13.ptr;
  a.w13_bias = b13.ptr;
  a.w2 = w2.ptr;
  a.w2_bias = b2.ptr;
  a.output = out.ptr;
  a.diagnostics = static_cast<moekit_diagnostics_t*>(diag.ptr);
  a.router_logits = logits.ptr;
  a.router_correction_bias = static_cast<const float*>(bias.ptr);
  a.w13_scale = static_cast<const float*>(s13.ptr);
  a.w2_scale = static_cast<const float*>(s2.ptr);
  a.a13_scale = static_cast<const float*>(sa13.ptr);
  a.a2_scale = static_cast<const float*>(sa2.ptr);
  a.expert_map = static_cast<const int32_t*>(map.ptr);
  size_t need = 0;
  check(moekit_workspace_size(&p, &need));
  const Workspace ws = workspace_of(workspace_h, need, hidden.device, a, keep);
  check(moekit_run(&a, ws.ptr, ws.bytes, reinterpret_cast<void*>(stream)));
}

size_t workspace_size(const Config& cfg, int64_t T, int64_t H, int64_t I, int64_t E_local,
                      int64_t top_k, int input_dtype, int weight_dtype, int output_dtype, bool cuda) {
  moekit_problem_t p = cfg.problem;
  p.num_tokens = T;
  p.hidden_size = H;
  p.intermediate_size = I;
  p.num_local_experts = E_local;
  if (p.num_experts <= 0) p.num_experts = E_local * p.ep_size;
  if (p.router.kind == MOEKIT_ROUTER_NONE) p.top_k = top_k;
  p.input_dtype = static_cast<moekit_dtype_t>(input_dtype);
  p.weight_dtype = static_cast<moekit_dtype_t>(weight_dtype);
  p.output_dtype = static_cast<moekit_dtype_t>(output_dtype);
  p.device = cuda ? MOEKIT_DEVICE_CUDA : MOEKIT_DEVICE_CPU;
  size_t bytes = 0;
  check(moekit_workspace_size(&p, &bytes));
  return bytes;
}

void route(int kind, int64_t top_k, bool renormalize, int64_t num_groups, int64_t topk_groups,
           float routed_scaling_factor, nb::handle logits_h, nb::handle correction_bias_h,
           nb::handle ids_h, nb::handle weights_h, uintptr_t stream) {
  std::vector<nb::object> keep;
  const View logits = view_of(logits_h, "logits", false, keep);
  const View bias = view_of(correction_bias_h, "correction_bias", false, keep);
  const View ids = view_of(ids_h, "topk_ids", true, keep);
  const View weights = view_of(weights_h, "topk_weights", true, keep);
  if (!logits.present || logits.ndim != 2) fail("logits: expected 2 dimensions [T, E]");
  moekit_router_problem_t p;
  moekit_router_problem_init(&p);
  p.num_tokens = logits.shape[0];
  p.num_experts = logits.shape[1];
  p.top_k = top_k;
  p.config = {static_cast<moekit_router_kind_t>(kind), float_dtype(logits), renormalize ? 1 : 0,
              static_cast<int32_t>(num_groups), static_cast<int32_t>(topk_groups), routed_scaling_factor};
  p.device = logits.device < 0 ? MOEKIT_DEVICE_CPU : MOEKIT_DEVICE_CUDA;
  expect_kind(ids, {Kind::kInt32});
  expect_kind(weights, {Kind::kFp32});
  expect_shape(ids, {p.num_tokens, top_k}, "[T, k]");
  expect_shape(weights, {p.num_tokens, top_k}, "[T, k]");
  if (bias.present) {
    expect_kind(bias, {Kind::kFp32});
    expect_shape(bias, {p.num_experts}, "[E]");
  }
  for (const View* v : {&bias, &ids, &weights})
    if (v->present && v->device != logits.device) fail(v->name, ": expected memory on the logits' device");
  moekit_router_arguments_t a{p, logits.ptr, static_cast<const float*>(bias.ptr),
                              static_cast<int32_t*>(ids.ptr), static_cast<float*>(weights.ptr)};
  check(moekit_router_can_implement(&a));
  check(moekit_router_run(&a, reinterpret_cast<void*>(stream)));
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "moekit C API binding (see the moekit package for the Python interface)";
  nb::exception<Error>(m, "MoekitError", PyExc_ValueError);

  nb::class_<Config>(m, "Config")
      .def("__init__",
           [](Config* c, int activation, int gate_up_order, float alpha, float beta, float limit,
              int64_t num_experts, int64_t ep_rank, int64_t ep_size, int quant_kind,
              bool weight_on_input, int router_kind, int64_t router_top_k, bool renormalize,
              int64_t num_groups, int64_t topk_groups, float routed_scaling_factor) {
             new (c) Config();
             moekit_problem_t& p = c->problem;
             p.activation = static_cast<moekit_activation_t>(activation);
             p.gate_up_order = static_cast<moekit_gate_up_order_t>(gate_up_order);
             p.swiglu_alpha = alpha;
             p.swiglu_beta = beta;
             p.swiglu_limit = limit;
             p.num_experts = num_experts;
             p.ep_rank = ep_rank;
             p.ep_size = ep_size;
             p.quant.kind = static_cast<moekit_quant_t>(quant_kind);
             p.apply_router_weight_on_input = weight_on_input ? 1 : 0;
             p.router = {static_cast<moekit_router_kind_t>(router_kind), MOEKIT_DTYPE_FP32,
                         renormalize ? 1 : 0, static_cast<int32_t>(num_groups),
                         static_cast<int32_t>(topk_groups), routed_scaling_factor};
             p.top_k = router_top_k;
           },
           nb::arg("activation"), nb::arg("gate_up_order"), nb::arg("alpha"), nb::arg("beta"),
           nb::arg("limit"), nb::arg("num_experts"), nb::arg("ep_rank"), nb::arg("ep_size"),
           nb::arg("quant_kind"), nb::arg("weight_on_input"), nb::arg("router_kind"),
           nb::arg("router_top_k"), nb::arg("renormalize"), nb::arg("num_groups"),
           nb::arg("topk_groups"), nb::arg("routed_scaling_factor"));

  m.def("run_layer", &run_layer, nb::arg("config"), nb::arg("hidden"), nb::arg("w13"), nb::arg("w2"),
        nb::arg("topk_weights").none(), nb::arg("topk_ids").none(), nb::arg("out"),
        nb::arg("workspace").none(), nb::arg("stream"), nb::arg("router_logits").none(),
        nb::arg("correction_bias").none(), nb::arg("w13_bias").none(), nb::arg("w2_bias").none(),
        nb::arg("w13_scale").none(), nb::arg("w2_scale").none(), nb::arg("a13_scale").none(),
        nb::arg("a2_scale").none(), nb::arg("expert_map").none(), nb::arg("diagnostics").none());
  m.def("workspace_size", &workspace_size, nb::arg("config"), nb::arg("num_tokens"),
        nb::arg("hidden_size"), nb::arg("intermediate_size"), nb::arg("num_local_experts"),
        nb::arg("top_k"), nb::arg("input_dtype"), nb::arg("weight_dtype"), nb::arg("output_dtype"),
        nb::arg("cuda"));
  m.def("route", &route, nb::arg("kind"), nb::arg("top_k"), nb::arg("renormalize"),
        nb::arg("num_groups"), nb::arg("topk_groups"), nb::arg("routed_scaling_factor"),
        nb::arg("logits"), nb::arg("correction_bias").none(), nb::arg("topk_ids"),
        nb::arg("topk_weights"), nb::arg("stream"));
  m.def("cuda_available", [] { return moekit_cuda_available() != 0; });
  m.def("version", [] {
    return std::to_string(MOEKIT_VERSION_MAJOR) + "." + std::to_string(MOEKIT_VERSION_MINOR) + "." +
           std::to_string(MOEKIT_VERSION_PATCH);
  });
}
