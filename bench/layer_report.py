#!/usr/bin/env python3
"""Completes a layer-benchmark run on the GPU machine, in the same call:
measures the ceilings (1 GiB device copy, bf16 8192^3 matmul, fp8 8192^3
torch._scaled_mm), times the
torch._grouped_mm pipeline peer on every (shape, T) of moekit_layer_bench's
rows, adds vLLM's Triton figures for the same GPU from bench/peers/, and
writes bench/results-style JSON, a markdown table and a roofline plot.

  python3 bench/layer_report.py rows.jsonl out_dir
  python3 bench/layer_report.py --plot results.json out_dir   (the plot alone, from a results JSON)
"""
import datetime
import json
import math
import os
import subprocess
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # --plot needs neither
    torch = F = None

MODELS = {  # E, k, H, I (tools/cli/models.cpp)
    "qwen3-30b-a3b": (128, 8, 2048, 768),
    "mixtral-8x7b": (8, 2, 4096, 14336),
    "deepseek-v3": (256, 8, 7168, 2048),
}


def median_graph_us(fn, calls, reps=20, warmup=3):
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn(0)  # eager warm-up outside the graph (kernel selection, caches)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=stream):
        for c in range(calls):
            fn(c)
    for _ in range(warmup):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1000.0 / calls)
    times.sort()
    return times[len(times) // 2]


def ceilings():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    t = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); b.copy_(a); e1.record(); e1.synchronize()
        t.append(e0.elapsed_time(e1) / 1000.0)
    copy = 2 * n / sorted(t)[len(t) // 2]
    del a, b
    m = 8192
    x = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        x @ y
    torch.cuda.synchronize()
    t = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); x @ y; e1.record(); e1.synchronize()
        t.append(e0.elapsed_time(e1) / 1000.0)
    rate = 2 * m ** 3 / sorted(t)[len(t) // 2]
    # fp8 e4m3 x e4m3 -> bf16, unit scales (PEERS.md's fp8 ceiling).
    xf, yf = x.to(torch.float8_e4m3fn), y.to(torch.float8_e4m3fn)
    one = torch.ones((), device="cuda", dtype=torch.float32)
    mm8 = lambda: torch._scaled_mm(xf, yf.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    for _ in range(3):
        mm8()
    torch.cuda.synchronize()
    t = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); mm8(); e1.record(); e1.synchronize()
        t.append(e0.elapsed_time(e1) / 1000.0)
    fp8_rate = 2 * m ** 3 / sorted(t)[len(t) // 2]
    del x, y, xf, yf
    torch.cuda.empty_cache()
    return copy, rate, fp8_rate


def torch_peer_us(shape, T, dtype):
    """PEERS.md's torch pipeline: argsort by expert, int32 offsets, gather,
    torch._grouped_mm, silu*mul, torch._grouped_mm, weighted index_add_."""
    E, k, H, I = MODELS[shape]
    dt = torch.bfloat16 if dtype == "bf16" else torch.float16
    w_bytes = E * (2 * I * H + H * I) * 2
    copies = max(1, min(4, int(3e9 / w_bytes)))
    w13 = [torch.empty(E, 2 * I, H, device="cuda", dtype=dt).uniform_(-1, 1) / math.sqrt(H) for _ in range(copies)]
    w2 = [torch.empty(E, H, I, device="cuda", dtype=dt).uniform_(-1, 1) / math.sqrt(I) for _ in range(copies)]
    x = torch.randn(T, H, device="cuda", dtype=dt)
    logits = torch.randn(T, E, device="cuda", dtype=torch.float32)
    wts, ids = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
    wts = wts / wts.sum(-1, keepdim=True)
    ids = ids.to(torch.int32)
    ones = torch.ones(T * k, device="cuda", dtype=torch.int32)

    def layer(c):
        flat = ids.flatten()
        order = torch.argsort(flat, stable=True)
        counts = torch.zeros(E, device="cuda", dtype=torch.int32).index_add_(0, flat, ones)
        offs = torch.cumsum(counts, 0, dtype=torch.int32)
        tok = order // k
        h = torch._grouped_mm(x[tok], w13[c % copies].transpose(1, 2), offs=offs)
        a = F.silu(h[:, :I]) * h[:, I:]
        y = torch._grouped_mm(a, w2[c % copies].transpose(1, 2), offs=offs)
        y = y.float() * wts.flatten()[order].unsqueeze(1)
        out = torch.zeros(T, H, device="cuda", dtype=torch.float32).index_add_(0, tok, y)
        return out.to(dt)

    us = median_graph_us(layer, 2 * copies)
    del w13, w2
    torch.cuda.empty_cache()
    return us


def torch_fp8_peer_us(shape, T):
    """The torch pipeline above with fp8 GEMMs: torch._scaled_grouped_mm with
    e4m3 weights scaled per expert and output column, activations quantized
    per row in torch (amax / 448) before each GEMM (torchtitan's rowwise fp8
    MoE; torch has no 128x128 block-scaled grouped GEMM)."""
    E, k, H, I = MODELS[shape]
    w_bytes = E * (2 * I * H + H * I)
    copies = max(1, min(4, int(3e9 / w_bytes)))
    f8 = torch.float8_e4m3fn

    def quant_weight(n, kk):  # [E, n, kk] -> e4m3 [E, n, kk], scale [E, n]
        w = torch.empty(E, n, kk, device="cuda", dtype=torch.bfloat16).uniform_(-1, 1) / math.sqrt(kk)
        s = w.abs().amax(dim=2).float().clamp(min=1e-12) / 448.0
        return (w.float() / s.unsqueeze(2)).to(f8), s

    def quant_rows(x):  # [rows, K] bf16 -> e4m3, scale [rows]
        s = x.abs().amax(dim=1).float().clamp(min=1e-12) / 448.0
        return (x.float() / s.unsqueeze(1)).to(f8), s

    w13 = [quant_weight(2 * I, H) for _ in range(copies)]
    w2 = [quant_weight(H, I) for _ in range(copies)]
    x = torch.randn(T, H, device="cuda", dtype=torch.bfloat16)
    logits = torch.randn(T, E, device="cuda", dtype=torch.float32)
    wts, ids = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
    wts = wts / wts.sum(-1, keepdim=True)
    ids = ids.to(torch.int32)
    ones = torch.ones(T * k, device="cuda", dtype=torch.int32)

    def layer(c):
        flat = ids.flatten()
        order = torch.argsort(flat, stable=True)
        counts = torch.zeros(E, device="cuda", dtype=torch.int32).index_add_(0, flat, ones)
        offs = torch.cumsum(counts, 0, dtype=torch.int32)
        tok = order // k
        q13, s13 = w13[c % copies]
        q2, s2 = w2[c % copies]
        xq, xs = quant_rows(x[tok])
        h = torch._scaled_grouped_mm(xq, q13.transpose(1, 2), xs, s13, offs=offs, out_dtype=torch.bfloat16)
        a = F.silu(h[:, :I]) * h[:, I:]
        aq, as_ = quant_rows(a)
        y = torch._scaled_grouped_mm(aq, q2.transpose(1, 2), as_, s2, offs=offs, out_dtype=torch.bfloat16)
        y = y.float() * wts.flatten()[order].unsqueeze(1)
        out = torch.zeros(T, H, device="cuda", dtype=torch.float32).index_add_(0, tok, y)
        return out.to(torch.bfloat16)

    us = median_graph_us(layer, 2 * copies)
    del w13, w2
    torch.cuda.empty_cache()
    return us


def vllm_rows(gpu_name):
    here = os.path.dirname(os.path.abspath(__file__))
    tag = "H200" if "H200" in gpu_name else "H100"
    path = os.path.join(here, "peers", f"vllm-triton-and-torch-{tag}-2026-11-26.json")
    if not os.path.exists(path):
        return {}
    rows = json.load(open(path))["rows"]
    return {(r["shape"], r["T"]): r for r in rows}


def peer_worker(points):
    """Child process: time the torch peer on each point, one JSON line each.
    A device-side failure poisons a CUDA context, so the parent restarts a
    child after the failed point instead of losing the rest."""
    for shape, T, dtype in points:
        us = torch_fp8_peer_us(shape, T) if dtype == "fp8" else torch_peer_us(shape, T, dtype)
        print(json.dumps({"key": [shape, T, dtype], "us": us}), flush=True)


def torch_peers(keys):
    done, todo = {}, list(keys)
    while todo:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--peer", json.dumps(todo)],
                              capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                d = json.loads(line)
                done[tuple(d["key"])] = d["us"]
        todo = [k for k in todo if k not in done]
        if todo:  # the first point left failed: record why, skip it
            err = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"torch peer {todo[0]}: {err}", file=sys.stderr)
            done[todo[0]] = None
            todo = todo[1:]
    return done


def plot(rows, copy_bw, bf16_rate, fp8_rate, gpu, date, out_dir):
    """The roofline plot of a run's rows (PNG beside its JSON)."""
    name = gpu.replace(" ", "-")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 5.5))
        xs = [10 ** (i / 20) for i in range(-20, 100)]
        ax.plot(xs, [min(bf16_rate, x * copy_bw) / 1e12 for x in xs], "k-", lw=1, label="bf16 roofline (measured)")
        if any(r["dtype"].startswith("fp8") for r in rows):
            ax.plot(xs, [min(fp8_rate, x * copy_bw) / 1e12 for x in xs], "k--", lw=1, label="fp8 roofline (measured)")
        for label, key, marker, want_fp8 in (("moekit", None, "o", False), ("torch._grouped_mm", "torch_grouped_mm_us", "s", False),
                                             ("vLLM Triton", "vllm_triton_us", "^", False),
                                             ("moekit fp8", None, "D", True), ("vLLM Triton fp8 block", "vllm_triton_us", "v", True)):
            pts = []
            for r in rows:
                if r["dtype"].startswith("fp8") != want_fp8:
                    continue
                us = r["moekit_us"] if key is None else r["peers"][key]
                if us:
                    ai = r["flops"] / (r["touched_weight_bytes"] + r["activation_bytes"])
                    pts.append((ai, r["flops"] / us * 1e-6))
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label, alpha=0.8)
        ax.set_xscale("log"); ax.set_yscale("log")
        ax.set_xlabel("FLOP per byte (touched weights + activations)"); ax.set_ylabel("TFLOP/s")
        ax.set_title(f"MoE layer, bf16 and fp8: {gpu}, {date}")
        ax.legend(); ax.grid(True, which="both", alpha=0.3)
        fig.savefig(os.path.join(out_dir, f"roofline-{name}-{date}.png"), dpi=110, bbox_inches="tight")
    except Exception as e:
        print(f"plot skipped: {e}", file=sys.stderr)


def main():
    if sys.argv[1] == "--peer":
        peer_worker([tuple(k) for k in json.loads(sys.argv[2])])
        return
    if sys.argv[1] == "--plot":  # redraw from a results JSON, anywhere matplotlib is
        doc = json.load(open(sys.argv[2]))
        c = doc["ceilings"]
        plot(doc["rows"], c["copy_TBps"] * 1e12, c["bf16_TFLOPs"] * 1e12, c.get("fp8_TFLOPs", 0) * 1e12, doc["gpu"],
             doc["date"], sys.argv[3])
        return
    rows_path, out_dir = sys.argv[1], sys.argv[2]
    rows = [json.loads(line) for line in open(rows_path) if line.strip()]
    gpu = torch.cuda.get_device_name()
    copy_bw, bf16_rate, fp8_rate = ceilings()
    vllm = vllm_rows(gpu)
    keys = []  # the peer in bf16 (the dtype PEERS.md measured it in), and its fp8 form
    peer_key = lambda r: (r["shape"], r["T"], "fp8" if r["dtype"].startswith("fp8") else r["dtype"])
    for r in rows:
        key = peer_key(r)
        if key not in keys and key[2] in ("bf16", "fp8"):
            keys.append(key)
    peer_cache = torch_peers(keys)
    for r in rows:
        key = peer_key(r)
        fp8 = r["dtype"].startswith("fp8")
        rate = fp8_rate if fp8 else bf16_rate  # the dense rate of the operand type
        mem_s = (r["touched_weight_bytes"] + r["activation_bytes"]) / copy_bw
        cmp_s = r["flops"] / rate
        r["floor_us"] = max(round(max(mem_s, cmp_s) * 1e6, 2), 1e-3)
        r["floor_bound"] = "memory" if mem_s >= cmp_s else "compute"
        r["x_floor"] = round(r["moekit_us"] / r["floor_us"], 3)
        r["tflops"] = round(r["flops"] / r["moekit_us"] * 1e-6, 1)
        r["frac_bf16_rate"] = round(r["flops"] / (r["moekit_us"] * 1e-6) / bf16_rate, 3)
        r["frac_dense_rate"] = round(r["flops"] / (r["moekit_us"] * 1e-6) / rate, 3)
        r["weight_TBps"] = round(r["touched_weight_bytes"] / (r["moekit_us"] * 1e-6) / 1e12, 3)
        v = vllm.get((r["shape"], r["T"])) if r["dtype"] in ("bf16", "fp8_block") else None
        if fp8:  # vLLM's Triton fp8 block kernel (PEERS.md); torch: the rowwise fp8 pipeline
            r["peers"] = {"torch_grouped_mm_us": None if peer_cache.get(key) is None else round(peer_cache[key], 2),
                          "vllm_triton_us": v.get("fp8_triton_graph_us") if v else None,
                          "torch_grouped_mm_us_peers_md": None}
            continue
        r["peers"] = {
            "torch_grouped_mm_us": None if peer_cache.get(key) is None else round(peer_cache[key], 2),
            "vllm_triton_us": v["triton_gemms_graph_us"] if v else None,
            "torch_grouped_mm_us_peers_md": v["gmm_graph_us"] if v else None,
        }
    date = datetime.date.today().isoformat()
    doc = {"gpu": gpu, "date": date,
           "ceilings": {"copy_TBps": round(copy_bw / 1e12, 3), "bf16_TFLOPs": round(bf16_rate / 1e12, 1),
                        "fp8_TFLOPs": round(fp8_rate / 1e12, 1)},
           "rows": rows}
    name = gpu.replace(" ", "-")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}-{date}.json"), "w") as f:
        json.dump(doc, f, indent=1)

    lines = [f"{gpu}, {date}: copy {copy_bw / 1e12:.2f} TB/s, bf16 matmul {bf16_rate / 1e12:.0f} TFLOP/s, "
             f"fp8 matmul {fp8_rate / 1e12:.0f} TFLOP/s",
             "",
             "| shape | T | dtype | moekit µs | floor µs | x floor | TFLOP/s (x rate) | weights TB/s | torch µs | vLLM µs | rel err | gemm1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["peers"]
        g1 = r["config"].split(" (")[0].replace("gemm1 ", "")
        fmt = lambda v: "-" if v is None else f"{v:.0f}"
        lines.append(f"| {r['shape']} | {r['T']} | {r['dtype']} | {r['moekit_us']:.1f} | {r['floor_us']:.1f} | "
                     f"{r['x_floor']:.2f} | {r['tflops']:.0f} ({r['frac_dense_rate']:.2f}) | {r['weight_TBps']:.2f} | {fmt(p['torch_grouped_mm_us'])} | "
                     f"{fmt(p['vllm_triton_us'])} | {r['relerr_vs_simple_gemm']:.4f} | {g1} |")
    table = "\n".join(lines)
    open(os.path.join(out_dir, "layer_table.md"), "w").write(table + "\n")
    print(table)

    plot(rows, copy_bw, bf16_rate, fp8_rate, gpu, date, out_dir)


if __name__ == "__main__":
    main()
