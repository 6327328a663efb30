"""Torch baselines for the routers, timed like bench/router_bench.cu (CUDA graph
replays of R calls over R rotating logits buffers, median of 30), merged with
its JSON lines into one markdown table.

    python3 bench/router_torch.py moekit.jsonl > table.md
"""
import json
import sys

import torch


def softmax_topk(x, k):  # Qwen3 / vLLM fused_topk reference in torch
    p = torch.softmax(x.float(), dim=-1)
    w, i = torch.topk(p, k, dim=-1)
    return i.int(), w / w.sum(dim=-1, keepdim=True)


def topk_softmax(x, k):  # Mixtral
    v, i = torch.topk(x.float(), k, dim=-1)
    return i.int(), torch.softmax(v, dim=-1)


def grouped_sigmoid(x, k, bias, n_group=8, topk_group=4, scale=2.5):  # DeepSeek-V3, as vLLM's torch grouped_topk
    s = x.float().sigmoid()
    sc = s + bias
    t, e = sc.shape
    g = sc.view(t, n_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
    gi = torch.topk(g, topk_group, dim=-1, sorted=False)[1]
    mask = torch.zeros_like(g).scatter_(1, gi, 1).unsqueeze(-1).expand(t, n_group, e // n_group).reshape(t, e)
    i = torch.topk(sc.masked_fill(mask == 0, float("-inf")), k, dim=-1)[1]
    w = s.gather(1, i)
    return i.int(), w / (w.sum(dim=-1, keepdim=True) + 1e-20) * scale


def time_torch(fn, bufs):
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            for b in bufs:
                fn(b)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for b in bufs:
            fn(b)
    for _ in range(5):
        graph.replay()
    times = []
    for _ in range(30):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        graph.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1000.0 / len(bufs))
    times.sort()
    return times[len(times) // 2]


def main():
    rows = [json.loads(line) for line in open(sys.argv[1])]
    print(f"Router medians, µs per call, {rows[0]['gpu']} (CUDA graph replays, rotating buffers)\n")
    print("| model | T | E | k | logits | moekit µs | torch µs | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        dt = torch.bfloat16 if r["logits_dtype"] == "bf16" else torch.float32
        bufs = [torch.randn(r["T"], r["E"], device="cuda", dtype=dt) for _ in range(r["rotating_buffers"])]
        k = r["k"]
        if r["kind"] == 1:
            fn = lambda x: softmax_topk(x, k)
        elif r["kind"] == 2:
            fn = lambda x: topk_softmax(x, k)
        else:
            bias = torch.zeros(r["E"], device="cuda")
            fn = lambda x: grouped_sigmoid(x, k, bias)
        t = time_torch(fn, bufs)
        print(f"| {r['model']} | {r['T']} | {r['E']} | {k} | {r['logits_dtype']} | "
              f"{r['moekit_us']:.2f} | {t:.2f} | {t / r['moekit_us']:.1f}x |")


if __name__ == "__main__":
    main()
