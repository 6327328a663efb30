"""vLLM's `fused_experts`, on moekit: switch an engine's MoE layer with one import.

    from moekit.vllm import fused_experts

Same names, layouts and semantics as vllm.model_executor.layers.fused_moe.fused_experts:
w1 [E, 2I, H] with the gate rows first (w13 = [w1; w3]), w2 [E, H, I], topk_ids int32 or
int64, topk_weights float32, activation strings, expert_map (global -> local index, -1 for
other ranks' experts), router weights on the input, in place. Differences, all deliberate:
- ids that are -1, out of range or mapped to -1 contribute nothing (never an index);
- per-tensor fp8 with dynamic activation scales quantizes each token on its own (vLLM:
  one scale for the whole batch), which keeps a token's output independent of the batch.
Options moekit cannot honour raise MoekitError; none is ignored.
"""

from __future__ import annotations

import math

import torch

from ._api import MoekitError, fused_moe

# vLLM activation name -> (moekit activation, gate/up order, alpha, beta, limit).
_ACTIVATIONS = {
    "silu": ("swiglu", "gate_up", 1.0, 0.0, math.inf),
    "gelu": ("geglu", "gate_up", 1.0, 0.0, math.inf),
    "gelu_tanh": ("geglu_tanh", "gate_up", 1.0, 0.0, math.inf),
    "swigluoai": ("swiglu", "interleaved", 1.702, 1.0, 7.0),
    "silu_no_mul": ("silu", "gate_up", 1.0, 0.0, math.inf),
    "gelu_no_mul": ("gelu", "gate_up", 1.0, 0.0, math.inf),
    "relu2_no_mul": ("relu2", "gate_up", 1.0, 0.0, math.inf),
}


def _activation(activation):
    name = getattr(activation, "value", activation)  # vLLM's MoEActivation enum or a string
    try:
        return _ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise MoekitError(f"moekit: activation: expected one of {sorted(_ACTIVATIONS)}, "
                          f"got {activation!r}") from None


def _quant(quant_config, w1):
    """(quant kind, w1_scale, w2_scale, a1_scale, a2_scale, w1_bias, w2_bias) of a vLLM
    FusedMoEQuantConfig (read by attribute, so vLLM need not be installed)."""
    if quant_config is None:
        return None, None, None, None, None, None, None
    get = lambda name: getattr(quant_config, name, None)  # noqa: E731
    w1_bias, w2_bias = get("w1_bias"), get("w2_bias")
    for name in ("w1_zp", "w2_zp", "a1_gscale", "a2_gscale", "g1_alphas", "g2_alphas"):
        if get(name) is not None:
            raise MoekitError(f"moekit: quant_config.{name}: not supported (fp8 e4m3 block or "
                              "per-tensor scales only)")
    qd = get("quant_dtype")
    if qd is None:
        if get("weight_quant_dtype") is not None or w1.dtype not in (torch.bfloat16, torch.float16,
                                                                    torch.float32):
            raise MoekitError("moekit: quant_config: weight-only quantization (w8a16, w4a16, ...) "
                              "is not supported")
        return None, None, None, None, None, w1_bias, w2_bias
    if qd != torch.float8_e4m3fn:
        raise MoekitError(f"moekit: quant_config.quant_dtype: expected torch.float8_e4m3fn, got {qd!r}")
    block = get("block_shape")
    if block is not None:
        if list(block) != [128, 128]:
            raise MoekitError(f"moekit: quant_config.block_shape: expected [128, 128], got {list(block)}")
        if get("a1_scale") is not None or get("a2_scale") is not None:
            raise MoekitError("moekit: quant_config: block scaling quantizes activations "
                              "dynamically; expected a1_scale = a2_scale = None")
        kind = "fp8_block"
    else:
        if get("per_out_ch_quant"):
            raise MoekitError("moekit: quant_config.per_out_ch_quant: per-channel weight scales "
                              "are not supported (per-tensor or 128x128 blocks)")
        kind = "fp8_tensor"
    return (kind, get("w1_scale"), get("w2_scale"), get("a1_scale"), get("a2_scale"), w1_bias,
            w2_bias)


def fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, inplace=False, activation="silu",
                  apply_router_weight_on_input=False, global_num_experts=-1, expert_map=None,
                  quant_config=None, allow_deep_gemm=False,
                  allow_cutlass_block_scaled_grouped_gemm=False):
    """vLLM's fused_experts on moekit; returns the [T, H] output (hidden_states when inplace).
    allow_* select vLLM backends and have no effect here."""
    act, order, alpha, beta, limit = _activation(activation)
    if apply_router_weight_on_input and topk_ids.shape[-1] != 1:
        # As vLLM: the weight scales the input only for top-1 routing (moekit.fused_moe
        # itself allows any k).
        raise MoekitError("moekit: apply_router_weight_on_input: expected top-k 1, got top-k "
                          f"{topk_ids.shape[-1]}")
    kind, w1_scale, w2_scale, a1_scale, a2_scale, w1_bias, w2_bias = _quant(quant_config, w1)
    if expert_map is not None:
        num_experts = expert_map.numel() if global_num_experts in (-1, None) else global_num_experts
    else:
        # Without a map the ids index w1 directly; ids past it contribute nothing.
        num_experts = w1.shape[0]
    return fused_moe(
        hidden_states, w1, w2, topk_weights, topk_ids, activation=act, gate_up_order=order,
        swiglu_alpha=alpha, swiglu_beta=beta, swiglu_limit=limit, w13_bias=w1_bias,
        w2_bias=w2_bias, global_num_experts=num_experts, expert_map=expert_map,
        apply_router_weight_on_input=apply_router_weight_on_input, quant=kind,
        w13_scale=w1_scale, w2_scale=w2_scale, a13_scale=a1_scale, a2_scale=a2_scale,
        out=hidden_states if inplace else None)
