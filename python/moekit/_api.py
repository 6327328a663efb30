"""The moekit layer and router on any DLPack tensors (PyTorch, CuPy, JAX, NumPy).

Everything here converts arguments; the C++ library checks them and runs the
layer (moekit.h documents the contract).
"""

from __future__ import annotations

import atexit
import math
import threading

from . import _C

MoekitError = _C.MoekitError

ACTIVATIONS = {
    "swiglu": 0, "geglu": 1, "geglu_erf": 1, "geglu_tanh": 2, "silu": 3, "gelu": 4,
    "gelu_erf": 4, "gelu_tanh": 5, "relu": 6, "relu2": 7, "identity": 8,
}
GATE_UP_ORDERS = {"gate_up": 0, "up_gate": 1, "interleaved": 2}
ROUTERS = {"softmax_topk": 1, "topk_softmax": 2, "sigmoid_grouped_topk": 3}
QUANTS = {None: 0, "none": 0, "fp8_block": 1, "fp8_tensor": 2}
_DTYPE_CODES = {"bfloat16": 0, "float16": 1, "float32": 2, "float8_e4m3fn": 3}


def _choice(table, value, name):
    try:
        return table[value]
    except (KeyError, TypeError):
        raise MoekitError(
            f"moekit: {name}: expected one of {sorted(k for k in table if k is not None)}, got {value!r}"
        ) from None


# One C++ Config per distinct option set: a call then only copies it.
_configs: dict = {}


def _config(key):
    c = _configs.get(key)
    if c is None:
        (activation, order, alpha, beta, limit, num_experts, ep_rank, ep_size, quant, on_input,
         router, router_top_k, renormalize, num_groups, topk_groups, scaling) = key
        c = _C.Config(
            activation=_choice(ACTIVATIONS, activation, "activation"),
            gate_up_order=_choice(GATE_UP_ORDERS, order, "gate_up_order"),
            alpha=float(alpha), beta=float(beta), limit=float(limit),
            num_experts=int(num_experts), ep_rank=int(ep_rank), ep_size=int(ep_size),
            quant_kind=_choice(QUANTS, quant, "quant"), weight_on_input=bool(on_input),
            router_kind=0 if router is None else _choice(ROUTERS, router, "router"),
            router_top_k=int(router_top_k), renormalize=bool(renormalize),
            num_groups=int(num_groups), topk_groups=int(topk_groups),
            routed_scaling_factor=float(scaling))
        if len(_configs) >= 4096:  # bounded, whatever the callers vary (NaN keys never match)
            _configs.clear()
        _configs[key] = c
    return c


# ---- frameworks -----------------------------------------------------------

def _framework(x) -> str:
    m = type(x).__module__
    if m.startswith("torch"):
        return "torch"
    if m.startswith("numpy"):
        return "numpy"
    if m.startswith("cupy"):
        return "cupy"
    if m.startswith("jax"):
        return "jax"
    return "other"


def _torch():
    import torch
    return torch


def _device(x, fw):
    """-1 for host memory, else the CUDA device index."""
    if fw == "torch":
        return x.get_device() if x.is_cuda else -1
    if fw == "cupy":
        return x.device.id
    if fw == "jax":
        d = next(iter(x.devices()))
        return -1 if d.platform == "cpu" else d.id
    if hasattr(x, "__dlpack_device__"):
        kind, index = x.__dlpack_device__()
        return index if int(kind) in (2, 13) else -1
    return -1


_raw_stream = None


def _current_stream(fw, device):
    """The caller's current CUDA stream for the framework (0: legacy default)."""
    global _raw_stream
    if device < 0:
        return 0
    if fw == "torch":
        if _raw_stream is None:
            torch = _torch()
            _raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
                lambda d: torch.cuda.current_stream(d).cuda_stream)
        return _raw_stream(device)
    if fw == "cupy":
        import cupy
        return cupy.cuda.get_current_stream().ptr
    return 0


def _stream_handle(stream):
    if stream is None or isinstance(stream, int):
        return stream
    for attr in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    raise MoekitError(f"moekit: stream: expected an int handle, a torch or a cupy stream, got {stream!r}")


def _empty(fw, like, shape, dtype_name, device):
    """A new array of the input's framework (JAX: a CuPy or NumPy buffer, see _to_jax)."""
    if fw == "torch":
        torch = _torch()
        return torch.empty(shape, dtype=getattr(torch, dtype_name), device=like.device)
    if fw == "jax" and device < 0:
        fw = "numpy"
    if fw in ("cupy", "jax"):
        try:
            import cupy
        except ImportError:
            raise MoekitError("moekit: out: JAX arrays are immutable; pass out= (and workspace=) "
                              "buffers or install CuPy for moekit to allocate them") from None
        with cupy.cuda.Device(device):
            return cupy.empty(shape, dtype=_np_dtype(dtype_name))
    import numpy as np
    return np.empty(shape, dtype=_np_dtype(dtype_name))


def _np_dtype(name):
    if name == "bfloat16":
        try:
            import ml_dtypes
            return ml_dtypes.bfloat16
        except ImportError:
            raise MoekitError("moekit: bfloat16 arrays outside PyTorch need the ml_dtypes package") from None
    import numpy as np
    return np.dtype(name)


def _dtype_name(x, fw) -> str:
    if fw == "torch":
        return str(x.dtype).replace("torch.", "")
    return str(x.dtype)


def _to_jax(x):
    import jax
    return jax.dlpack.from_dlpack(x) if _framework(x) == "cupy" else jax.numpy.asarray(x)


def _as_int32_ids(x, fw, bound):
    """An int64 expert map as int32 without wrapping: anything outside [-1, bound] becomes
    -1 or bound, which the layer treats as "not local", as it was."""
    if fw == "torch":
        torch = _torch()
        if x.dtype is torch.int64:
            return torch.clamp(x, -1, bound).to(torch.int32)
        return x  # int32, or a dtype the library names as wrong
    name = _dtype_name(x, fw)
    if name == "int32" or name == "None":
        return x
    if name != "int64":
        return x  # the library names the wrong dtype
    if fw == "torch":
        torch = _torch()
        return torch.clamp(x, -1, bound).to(torch.int32)
    return x.clip(-1, bound).astype("int32")


def _as_float32(x, fw):
    if x is None:
        return x
    if fw == "torch":
        torch = _torch()
        return x.float() if x.dtype in (torch.bfloat16, torch.float16, torch.float64) else x
    if _dtype_name(x, fw) == "float32":
        return x
    if _dtype_name(x, fw) not in ("bfloat16", "float16", "float64"):
        return x  # the library names the wrong dtype
    if fw == "torch":
        return x.float()
    return x.astype("float32")


# ---- workspaces -----------------------------------------------------------

_workspaces: dict = {}
_lock = threading.Lock()


def _aligned(buf, nbytes, fw):
    """A 256-byte aligned view of nbytes inside buf (allocated 256 bytes larger)."""
    if fw == "torch":
        ptr = buf.data_ptr()
    elif fw == "cupy":
        ptr = buf.data.ptr
    else:
        ptr = buf.ctypes.data
    off = (-ptr) % 256
    return buf[off:off + nbytes]


def _new_workspace(fw, like, nbytes, device):
    if fw == "torch":
        torch = _torch()
        buf = torch.empty(nbytes + 256, dtype=torch.uint8, device=like.device)
    elif fw in ("cupy", "jax") and device >= 0:
        buf = _empty("cupy", like, (nbytes + 256,), "uint8", device)
        fw = "cupy"
    else:
        import numpy as np
        buf = np.empty(nbytes + 256, dtype=np.uint8)
        fw = "numpy"
    return _aligned(buf, nbytes, fw)


def _capturing(fw, device):
    if fw != "torch" or device < 0:
        return False
    return _torch()._C._cuda_isCurrentStreamCapturing()


def _workspace_provider(fw, like, device, stream):
    """get(nbytes, allocate) for the library: one cached buffer per (device, stream),
    grown (never shrunk) when a larger batch needs more; without allocate it
    returns None rather than allocate (the binding asks again once the call is
    known to be valid). While a CUDA graph is being captured a call gets a
    buffer of its own from the graph's pool instead, so captured graphs never
    share the eager cache."""
    if _capturing(fw, device):
        return lambda nbytes, allocate: (_new_workspace(fw, like, nbytes, device)
                                         if allocate else None)
    key = (fw if fw != "jax" else "cupy", device, stream)

    def get(nbytes, allocate):
        ws = _workspaces.get(key)
        if ws is None or _nbytes(ws) < nbytes:
            if not allocate:
                return None
            with _lock:
                # Grow by at least 1.5x so a slowly growing batch does not reallocate each time.
                old = 0 if ws is None else _nbytes(ws)
                ws = _new_workspace(fw, like, max(nbytes, old + old // 2), device)
                _workspaces[key] = ws
        return ws
    return get


def _nbytes(buf):
    n = buf.nbytes
    return n() if callable(n) else n


def release_workspaces():
    """Drops every cached workspace (the memory goes back to its framework)."""
    _workspaces.clear()


# Cached configs and buffers go before the interpreter tears the extension down.
atexit.register(lambda: (_workspaces.clear(), _configs.clear()))


# ---- the layer --------------------------------------------------------------

def fused_moe(hidden, w13, w2, topk_weights=None, topk_ids=None, *, activation="swiglu",
              gate_up_order="gate_up", swiglu_alpha=1.0, swiglu_beta=0.0, swiglu_limit=math.inf,
              w13_bias=None, w2_bias=None, ep_rank=0, ep_size=1, global_num_experts=None,
              expert_map=None, apply_router_weight_on_input=False, quant=None, w13_scale=None,
              w2_scale=None, a13_scale=None, a2_scale=None, router_logits=None, router=None,
              top_k=None, renormalize=True, num_groups=1, topk_groups=1,
              routed_scaling_factor=1.0, correction_bias=None, out=None, out_dtype=None,
              workspace=None, stream=None, diagnostics=None):
    """One MoE layer: out[t] = sum over t's valid slots of w[t, s] * expert(ids[t, s], hidden[t]).

    hidden [T, H]; w13 [E_local, 2I, H] (I for non-gated activations); w2 [E_local, H, I];
    topk_weights [T, k] and topk_ids [T, k] (int32 or int64, read as given),
    or router_logits [T, E] with router= "softmax_topk" | "topk_softmax" |
    "sigmoid_grouped_topk" and top_k. Options mirror moekit.h: activation "swiglu",
    "geglu", "geglu_tanh", "silu", "gelu", "gelu_tanh", "relu", "relu2", "identity";
    gate_up_order "gate_up" (vLLM), "up_gate" (FlashInfer), "interleaved" (gpt-oss);
    expert parallel ranks (ep_rank, ep_size) or an expert_map [E_total] (global -> local
    index, -1 elsewhere); fp8 weights with quant="fp8_block" | "fp8_tensor" and their scales.
    Ids that are -1, out of range or another rank's contribute nothing.

    Runs on the caller's current stream (torch, CuPy) or `stream`; never synchronizes.
    out: written and returned (may be hidden itself: in place); else allocated like
    hidden. workspace: a buffer of at least workspace_size(...) bytes, else a cached
    one per device and stream is used and grown as needed.
    """
    fw = _framework(hidden)
    if fw == "jax":
        for x in (hidden, w13, w2, topk_weights, topk_ids, router_logits):
            if x is not None:
                x.block_until_ready()
    device = _device(hidden, fw)
    if global_num_experts is None:
        global_num_experts = 0
    if expert_map is not None:
        expert_map = _as_int32_ids(expert_map, _framework(expert_map), w13.shape[0])
    topk_weights = _as_float32(topk_weights, fw)
    key = (activation, gate_up_order, swiglu_alpha, swiglu_beta, swiglu_limit,
           global_num_experts, ep_rank, ep_size, quant, apply_router_weight_on_input, router,
           top_k or 0, renormalize, num_groups, topk_groups, routed_scaling_factor)
    cfg = _config(key)
    jax_out = False
    if out is None:
        jax_out = fw == "jax"
        out = _empty(fw, hidden, (hidden.shape[0], hidden.shape[1]),
                     out_dtype or _dtype_name(hidden, fw), device)
    s = _stream_handle(stream)
    if s is None:
        s = _current_stream(fw, device)
    if workspace is None:
        workspace = _workspace_provider(fw, hidden, device, s)
    _C.run_layer(cfg, hidden, w13, w2, topk_weights, topk_ids, out, workspace, s, router_logits,
                 correction_bias, w13_bias, w2_bias, w13_scale, w2_scale, a13_scale, a2_scale,
                 expert_map, diagnostics)
    return _to_jax(out) if jax_out else out


def workspace_size(num_tokens, hidden_size, intermediate_size, num_local_experts, top_k, *,
                   dtype="bfloat16", weight_dtype=None, out_dtype=None, activation="swiglu",
                   num_experts=None, ep_size=1, quant=None, router=None, device="cuda"):
    """Bytes of workspace a layer of these shapes needs at num_tokens (the size at the
    largest batch covers every smaller one): allocate it before capturing a CUDA
    graph and pass it as workspace=."""
    key = (activation, "gate_up", 1.0, 0.0, math.inf, int(num_experts or 0), 0, int(ep_size),
           quant, False, router, int(top_k), True, 1, 1, 1.0)
    wd = weight_dtype or ("float8_e4m3fn" if quant else dtype)
    return _C.workspace_size(_config(key), int(num_tokens), int(hidden_size),
                             int(intermediate_size), int(num_local_experts), int(top_k),
                             _choice(_DTYPE_CODES, dtype, "dtype"),
                             _choice(_DTYPE_CODES, wd, "weight_dtype"),
                             _choice(_DTYPE_CODES, out_dtype or dtype, "out_dtype"),
                             str(device).startswith("cuda"))


def route(logits, top_k, *, kind="softmax_topk", renormalize=True, num_groups=1, topk_groups=1,
          routed_scaling_factor=1.0, correction_bias=None, topk_ids=None, topk_weights=None,
          stream=None):
    """Router alone: logits [T, E] -> (topk_ids [T, k] int32, topk_weights [T, k] float32).
    Ids are distinct and in range for every input, NaN and Inf included (moekit.h)."""
    fw = _framework(logits)
    device = _device(logits, fw)
    T = logits.shape[0]
    if topk_ids is None:
        topk_ids = _empty(fw, logits, (T, top_k), "int32", device)
    if topk_weights is None:
        topk_weights = _empty(fw, logits, (T, top_k), "float32", device)
    s = _stream_handle(stream)
    if s is None:
        s = _current_stream(fw, device)
    _C.route(_choice(ROUTERS, kind, "kind"), int(top_k), bool(renormalize), int(num_groups),
             int(topk_groups), float(routed_scaling_factor), logits, correction_bias, topk_ids,
             topk_weights, s)
    if fw == "jax":
        return _to_jax(topk_ids), _to_jax(topk_weights)
    return topk_ids, topk_weights


def reserve_workspace(num_tokens, hidden_size, intermediate_size, num_local_experts, top_k, *,
                      like, stream=None, **options):
    """Grows the cached workspace of like's device and the current (or given) stream to
    cover num_tokens, so later calls, captured or not, never allocate for it."""
    fw = _framework(like)
    device = _device(like, fw)
    nbytes = workspace_size(num_tokens, hidden_size, intermediate_size, num_local_experts, top_k,
                            device="cuda" if device >= 0 else "cpu", **options)
    s = _stream_handle(stream)
    if s is None:
        s = _current_stream(fw, device)
    key = (fw if fw != "jax" else "cupy", device, s)
    ws = _workspaces.get(key)
    if ws is None or _nbytes(ws) < nbytes:
        _workspaces[key] = _new_workspace(fw, like, nbytes, device)
    return nbytes
