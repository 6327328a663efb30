"""Host overhead of moekit's Python call (µs per call, outside CUDA graphs) next to the
layer's GPU time at T = 1, on qwen3-30b-a3b's shape; prints one JSON line.

Host time: perf_counter around one call issued to an idle GPU (synchronize before each),
median of 500 after warm-up, for each entry point and for the binding alone, the entry
points interleaved call by call. A last
check issues the call behind 2 ms of queued GPU work: it must return long before that
work ends, or the call synchronizes. GPU time: CUDA graph replays timed with events,
median of 200 after warm-up."""

import json
import statistics
import sys
import time

import torch

import moekit
import moekit._api as api
import moekit.ops  # noqa: F401
from moekit.vllm import fused_experts


def host_us(fns, rounds=600):
    """Median host µs of each fn, interleaved round by round so that drift of a
    noisy host affects every entry point alike."""
    samples = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if r >= 100:
                samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) * 1e6 for name, v in samples.items()}


def main():
    T, H, I, E, k = 1, 2048, 768, 128, 8
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(T, H, generator=g, device="cuda").bfloat16()
    w13 = (torch.randn(E, 2 * I, H, generator=g, device="cuda") / 45).bfloat16()
    w2 = (torch.randn(E, H, I, generator=g, device="cuda") / 28).bfloat16()
    w, ids = torch.topk(torch.rand(T, E, generator=g, device="cuda"), k)
    ids32, ids64 = ids.int(), ids.long()
    out = torch.empty_like(x)
    for _ in range(20):
        moekit.fused_moe(x, w13, w2, w, ids32, out=out)
    torch.cuda.synchronize()
    cfg = api._config(("swiglu", "gate_up", 1.0, 0.0, float("inf"), None or 0, 0, 1, None, False,
                       None, 0, True, 1, 1, 1.0))
    ws = torch.empty(moekit.workspace_size(T, H, I, E, k), dtype=torch.uint8, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    res = {"gpu": torch.cuda.get_device_name(), "shape": "qwen3-30b-a3b", "T": T}
    res.update(host_us({
        "binding_only_us": lambda: moekit._C.run_layer(
            cfg, x, w13, w2, w, ids32, out, ws, stream, None, None, None, None, None, None,
            None, None, None, None),
        "fused_moe_us": lambda: moekit.fused_moe(x, w13, w2, w, ids32, out=out),
        "fused_moe_alloc_out_us": lambda: moekit.fused_moe(x, w13, w2, w, ids32),
        "vllm_fused_experts_int32_ids_us": lambda: fused_experts(x, w13, w2, w, ids32),
        "vllm_fused_experts_int64_ids_us": lambda: fused_experts(x, w13, w2, w, ids64),
        "torch_ops_moekit_fused_moe_us": lambda: torch.ops.moekit.fused_moe(x, w13, w2, w, ids32),
        "torch_empty_like_us": lambda: torch.empty_like(x),
        "torch_clamp_to_int32_us": lambda: torch.clamp(ids64, -1, E).to(torch.int32),
    }))
    # No host synchronization: the call returns while 2 ms of earlier GPU work still runs.
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000)
    t0 = time.perf_counter()
    moekit.fused_moe(x, w13, w2, w, ids32, out=out)
    res["call_behind_2ms_of_gpu_work_us"] = (time.perf_counter() - t0) * 1e6
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        moekit.fused_moe(x, w13, w2, w, ids32, out=out)
    for _ in range(20):
        graph.replay()
    times = []
    for _ in range(200):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
    res["layer_gpu_us_graph_replay"] = statistics.median(times)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}))


if __name__ == "__main__":
    sys.exit(main())
