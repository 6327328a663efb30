"""`torch.ops.moekit.fused_moe`: the layer as a torch.library custom op, so
torch.compile(fullgraph=True) and CUDA graphs capture it without graph breaks.

    import moekit.ops
    out = torch.ops.moekit.fused_moe(hidden, w13, w2, topk_weights, topk_ids)

The fake (meta) implementation only describes the output: [T, H] in hidden's dtype.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ._api import fused_moe as _fused_moe


@torch.library.custom_op("moekit::fused_moe", mutates_args=())
def fused_moe(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              topk_weights: torch.Tensor, topk_ids: torch.Tensor,
              w13_bias: Optional[torch.Tensor] = None, w2_bias: Optional[torch.Tensor] = None,
              expert_map: Optional[torch.Tensor] = None,
              w13_scale: Optional[torch.Tensor] = None, w2_scale: Optional[torch.Tensor] = None,
              a13_scale: Optional[torch.Tensor] = None, a2_scale: Optional[torch.Tensor] = None,
              activation: str = "swiglu", gate_up_order: str = "gate_up",
              swiglu_alpha: float = 1.0, swiglu_beta: float = 0.0,
              swiglu_limit: Optional[float] = None, ep_rank: int = 0, ep_size: int = 1,
              global_num_experts: int = 0, apply_router_weight_on_input: bool = False,
              quant: str = "none") -> torch.Tensor:
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


@fused_moe.register_fake
def _(hidden, w13, w2, topk_weights, topk_ids, w13_bias=None, w2_bias=None, expert_map=None,
      w13_scale=None, w2_scale=None, a13_scale=None, a2_scale=None, activation="swiglu",
      gate_up_order="gate_up", swiglu_alpha=1.0, swiglu_beta=0.0, swiglu_limit=None, ep_rank=0,
      ep_size=1, global_num_experts=0, apply_router_weight_on_input=False, quant="none"):
    torch._check(hidden.dim() == 2, lambda: "moekit: hidden: expected 2 dimensions [T, H]")
    return hidden.new_empty(hidden.shape)
