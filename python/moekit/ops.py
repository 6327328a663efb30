"""`torch.ops.moekit.fused_moe`: the layer as a torch.library custom op, so
torch.compile(fullgraph=True) and CUDA graphs capture it without graph breaks.

    import moekit.ops
    out = torch.ops.moekit.fused_moe(hidden, w13, w2, topk_weights, topk_ids)

Registered straight on the dispatcher (a schema, CPU and CUDA kernels and a fake
kernel) rather than through the torch.library.custom_op decorator, whose
Python wrapping costs tens of microseconds per call. The fake implementation
only describes the output: [T, H] in hidden's dtype.
"""

from __future__ import annotations

import math

import torch

from ._api import fused_moe as _fused_moe

SCHEMA = (
    "fused_moe(Tensor hidden, Tensor w13, Tensor w2, Tensor topk_weights, Tensor topk_ids, "
    "Tensor? w13_bias=None, Tensor? w2_bias=None, Tensor? expert_map=None, "
    "Tensor? w13_scale=None, Tensor? w2_scale=None, Tensor? a13_scale=None, "
    "Tensor? a2_scale=None, str activation='swiglu', str gate_up_order='gate_up', "
    "float swiglu_alpha=1.0, float swiglu_beta=0.0, float? swiglu_limit=None, int ep_rank=0, "
    "int ep_size=1, int global_num_experts=0, bool apply_router_weight_on_input=False, "
    "str quant='none') -> Tensor")

_lib = torch.library.Library("moekit", "DEF")
_lib.define(SCHEMA)


def _kernel(hidden, w13, w2, topk_weights, topk_ids, w13_bias=None, w2_bias=None,
            expert_map=None, w13_scale=None, w2_scale=None, a13_scale=None, a2_scale=None,
            activation="swiglu", gate_up_order="gate_up", swiglu_alpha=1.0, swiglu_beta=0.0,
            swiglu_limit=None, ep_rank=0, ep_size=1, global_num_experts=0,
            apply_router_weight_on_input=False, quant="none"):
    """moekit.fused_moe on torch tensors (swiglu_limit None: no clamp)."""
    return _fused_moe(
        hidden, w13, w2, topk_weights, topk_ids, activation=activation,
        gate_up_order=gate_up_order, swiglu_alpha=swiglu_alpha, swiglu_beta=swiglu_beta,
        swiglu_limit=math.inf if swiglu_limit is None else swiglu_limit, w13_bias=w13_bias,
        w2_bias=w2_bias, ep_rank=ep_rank, ep_size=ep_size,
        global_num_experts=global_num_experts or None, expert_map=expert_map,
        apply_router_weight_on_input=apply_router_weight_on_input,
        quant=None if quant == "none" else quant, w13_scale=w13_scale, w2_scale=w2_scale,
        a13_scale=a13_scale, a2_scale=a2_scale)


_lib.impl("fused_moe", _kernel, "CPU")
_lib.impl("fused_moe", _kernel, "CUDA")


@torch.library.register_fake("moekit::fused_moe")
def _fake(hidden, w13, w2, topk_weights, topk_ids, w13_bias=None, w2_bias=None, expert_map=None,
          w13_scale=None, w2_scale=None, a13_scale=None, a2_scale=None, activation="swiglu",
          gate_up_order="gate_up", swiglu_alpha=1.0, swiglu_beta=0.0, swiglu_limit=None,
          ep_rank=0, ep_size=1, global_num_experts=0, apply_router_weight_on_input=False,
          quant="none"):
    torch._check(hidden.dim() == 2, lambda: "moekit: hidden: expected 2 dimensions [T, H]")
    return hidden.new_empty(hidden.shape)


fused_moe = torch.ops.moekit.fused_moe
