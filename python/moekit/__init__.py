"""moekit: the Mixture-of-Experts layer of LLM inference (sort, gather, grouped GEMMs,
activation, weighted combine) as one call, on NVIDIA Hopper GPUs (and a CPU reference path).

    import moekit
    out = moekit.fused_moe(hidden, w13, w2, topk_weights, topk_ids)

Tensors come from any DLPack producer (PyTorch, CuPy, JAX, NumPy) without copies;
the call runs on the caller's current CUDA stream and never synchronizes.
`moekit.vllm.fused_experts` takes vLLM's arguments; `import moekit.ops` registers
`torch.ops.moekit.fused_moe` for torch.compile and CUDA graphs.
"""

from ._C import MoekitError, cuda_available
from ._C import version as _version
from ._api import (ACTIVATIONS, GATE_UP_ORDERS, QUANTS, ROUTERS, fused_moe, release_workspaces,
                   reserve_workspace, route, workspace_size)

__version__ = _version()

__all__ = [
    "ACTIVATIONS", "GATE_UP_ORDERS", "QUANTS", "ROUTERS", "MoekitError", "cuda_available",
    "fused_moe", "release_workspaces", "reserve_workspace", "route", "workspace_size",
]
