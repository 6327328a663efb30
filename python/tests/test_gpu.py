"""moekit's Python package on the GPU (tools/gpu-check runs it): torch tensors against a
torch reference on the built-in model shapes, fp8, CuPy and JAX through DLPack, CUDA graph
capture and replay with new routing, torch.compile, two streams, and moekit.vllm's
fused_experts against vLLM's semantics on adversarial routing. Skips without a GPU."""

import math

import numpy as np
import pytest

import moekit

torch = pytest.importorskip("torch")
if not (torch.cuda.is_available() and moekit.cuda_available()):
    pytest.skip("no CUDA GPU of compute capability 9.0 here; GPU tests skipped",
                allow_module_level=True)

import moekit.ops  # noqa: E402,F401
from moekit.vllm import fused_experts  # noqa: E402

DEV = "cuda"


def gen(seed):
    return torch.Generator(device=DEV).manual_seed(seed)


def make_layer(T, H, I, E, k, *, seed=0, dtype=torch.bfloat16, gated=True, bias=False,
               num_ids=None):
    g = gen(seed)
    n1 = 2 * I if gated else I
    x = torch.randn(T, H, generator=g, device=DEV).to(dtype)
    w13 = (torch.randn(E, n1, H, generator=g, device=DEV) / math.sqrt(H)).to(dtype)
    w2 = (torch.randn(E, H, I, generator=g, device=DEV) / math.sqrt(I)).to(dtype)
    logits = torch.randn(T, num_ids or E, generator=g, device=DEV)
    w, ids = torch.topk(torch.softmax(logits, -1), k, dim=-1)
    w = w / w.sum(-1, keepdim=True)
    b13 = (0.1 * torch.randn(E, n1, generator=g, device=DEV)).to(dtype) if bias else None
    b2 = (0.1 * torch.randn(E, H, generator=g, device=DEV)).to(dtype) if bias else None
    return x, w13, w2, w.float().contiguous(), ids.to(torch.int32), b13, b2


def adversarial(ids, E):
    """[0]*k rows, -1 padding, duplicates, garbage; every class at T > 256 too."""
    ids = ids.clone()
    T, k = ids.shape
    r = torch.arange(T, device=ids.device)
    ids[r % 5 == 0] = 0
    ids[r % 5 == 1] = -1
    if k > 1:
        ids[r % 5 == 2, 1] = ids[r % 5 == 2, 0]
    ids[r % 5 == 3, 0] = E + 7
    return ids


def act_ref(h, I, activation, order, alpha=1.0, beta=0.0, limit=math.inf):
    if activation in ("swiglu", "geglu"):
        if order == "gate_up":
            g_, u = h[:, :I], h[:, I:]
        elif order == "up_gate":
            u, g_ = h[:, :I], h[:, I:]
        else:
            g_, u = h[:, 0::2], h[:, 1::2]
        if activation == "geglu":
            return torch.nn.functional.gelu(g_) * u
        g_ = g_.clamp(max=limit)
        return g_ * torch.sigmoid(alpha * g_) * (u.clamp(-limit, limit) + beta)
    return {"silu": torch.nn.functional.silu, "relu2": lambda v: torch.relu(v) ** 2,
            "gelu": torch.nn.functional.gelu}[activation](h)


def torch_ref(x, w13, w2, w, ids, *, activation="swiglu", order="gate_up", alpha=1.0, beta=0.0,
              limit=math.inf, b13=None, b2=None, local=None, on_input=False, dequant=None):
    """fp32 reference; local: [E_total] global -> local (-1 elsewhere) or None (ids index w13)."""
    E, H, I = w2.shape
    if dequant is not None:
        w13, w2 = dequant
    out = torch.zeros(x.shape[0], H, dtype=torch.float32, device=x.device)
    ids = ids.long()
    if local is None:
        loc = torch.where((ids >= 0) & (ids < E), ids, -1)
    else:
        inr = (ids >= 0) & (ids < local.numel())
        loc = torch.where(inr, local.long()[ids.clamp(0, local.numel() - 1)], -1)
        loc = torch.where((loc >= 0) & (loc < E), loc, -1)
    xf = x.float()
    for e in torch.unique(loc).tolist():
        if e < 0:
            continue
        t, s = torch.nonzero(loc == e, as_tuple=True)
        a = xf[t] * (w[t, s, None] if on_input else 1.0)
        h = a @ w13[e].float().T + (0 if b13 is None else b13[e].float())
        y = act_ref(h, I, activation, order, alpha, beta, limit) @ w2[e].float().T
        y = y + (0 if b2 is None else b2[e].float())
        out.index_add_(0, t, y if on_input else y * w[t, s, None])
    return out


def rel(got, want):
    """Relative Frobenius error over want's finite entries (absolute where want is all zero:
    e.g. a token none of whose experts is on this rank)."""
    got = got.float()
    ok = torch.isfinite(want)
    err = torch.linalg.norm(got[ok] - want[ok]).item()
    norm = torch.linalg.norm(want[ok]).item()
    return err / norm if norm > 0 else err


# Built-in model shapes (moekit run --model), fewer experts where memory needs it.
MODELS = {
    "qwen3-30b-a3b": dict(H=2048, I=768, E=128, k=8),
    "mixtral-8x7b": dict(H=4096, I=14336, E=8, k=2),
    "deepseek-v3 (32 of 256 experts)": dict(H=7168, I=2048, E=32, k=8, num_ids=256),
    "gpt-oss-120b": dict(H=2880, I=2880, E=128, k=4, oss=True),
}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("T", [1, 64, 1000])
def test_model_shapes_against_torch(model, T):
    m = MODELS[model]
    oss = m.get("oss", False)
    x, w13, w2, w, ids, b13, b2 = make_layer(T, m["H"], m["I"], m["E"], m["k"], seed=T,
                                             bias=oss, num_ids=m.get("num_ids"))
    opts = dict(gate_up_order="interleaved", swiglu_alpha=1.702, swiglu_beta=1.0,
                swiglu_limit=7.0) if oss else {}
    kw = dict(ep_rank=0, ep_size=m["num_ids"] // m["E"]) if "num_ids" in m else {}
    out = moekit.fused_moe(x, w13, w2, w, ids, w13_bias=b13, w2_bias=b2, **opts, **kw)
    torch.cuda.synchronize()
    want = torch_ref(x, w13, w2, w, ids, b13=b13, b2=b2,
                     **({"order": "interleaved", "alpha": 1.702, "beta": 1.0, "limit": 7.0}
                        if oss else {}))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    assert rel(out, want) < 0.02


@pytest.mark.parametrize("T", [3, 300])
def test_fp16_and_every_activation(T):
    for act, gated in (("swiglu", True), ("geglu", True), ("silu", False), ("relu2", False),
                       ("gelu", False)):
        x, w13, w2, w, ids, _, _ = make_layer(T, 256, 128, 16, 4, seed=7, dtype=torch.float16,
                                              gated=gated)
        out = moekit.fused_moe(x, w13, w2, w, ids, activation=act)
        assert rel(out, torch_ref(x, w13, w2, w, ids, activation=act)) < 0.02, act


def quantize_fp8_block(w):
    """[E, N, K] -> e4m3 weights and [E, ceil(N/128), ceil(K/128)] scales (amax / 448)."""
    E, N, K = w.shape
    nb, kb = -(-N // 128), -(-K // 128)
    pad = torch.zeros(E, nb * 128, kb * 128, device=w.device)
    pad[:, :N, :K] = w.float()
    blocks = pad.view(E, nb, 128, kb, 128)
    scale = blocks.abs().amax(dim=(2, 4)) / 448.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = (blocks / scale[:, :, None, :, None]).to(torch.float8_e4m3fn)
    deq = (q.float() * scale[:, :, None, :, None]).view(E, nb * 128, kb * 128)[:, :N, :K]
    return q.view(E, nb * 128, kb * 128)[:, :N, :K].contiguous(), scale.contiguous(), deq


@pytest.mark.parametrize("T", [1, 200, 3000])
def test_fp8_block_and_the_vllm_quant_config(T):
    x, w13, w2, w, ids, _, _ = make_layer(T, 1024, 512, 16, 4, seed=3)
    q13, s13, d13 = quantize_fp8_block(w13)
    q2, s2, d2 = quantize_fp8_block(w2)
    ids = adversarial(ids, 16)
    out = moekit.fused_moe(x, q13, q2, w, ids, quant="fp8_block", w13_scale=s13, w2_scale=s2)
    want = torch_ref(x, w13, w2, w, ids, dequant=(d13, d2))
    assert rel(out, want) < 0.06

    class QuantConfig:  # the attributes of vLLM's FusedMoEQuantConfig that moekit reads
        quant_dtype = torch.float8_e4m3fn
        block_shape = [128, 128]
        per_act_token_quant = False
        per_out_ch_quant = False
        w1_scale, w2_scale, a1_scale, a2_scale = s13, s2, None, None
    torch.testing.assert_close(fused_experts(x, q13, q2, w, ids.long(), quant_config=QuantConfig()),
                               out, rtol=0, atol=0)
    QuantConfig.block_shape = [64, 64]
    with pytest.raises(moekit.MoekitError, match="block_shape: expected"):
        fused_experts(x, q13, q2, w, ids, quant_config=QuantConfig())


def test_cupy_and_jax_through_dlpack():
    cupy = pytest.importorskip("cupy")
    x, w13, w2, w, ids, _, _ = make_layer(77, 256, 128, 8, 2, seed=11, dtype=torch.float16)
    want = moekit.fused_moe(x, w13, w2, w, ids)
    torch.cuda.synchronize()
    cx, c13, c2, cw, cids = (cupy.from_dlpack(t) for t in (x, w13, w2, w, ids))
    got = moekit.fused_moe(cx, c13, c2, cw, cids)
    assert isinstance(got, cupy.ndarray)
    cupy.cuda.get_current_stream().synchronize()
    assert torch.equal(torch.from_dlpack(got), want)
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jx, j13, j2, jw, jids = (jnp.from_dlpack(t) for t in (x, w13, w2, w, ids))
    jgot = moekit.fused_moe(jx, j13, j2, jw, jids)
    assert isinstance(jgot, jax.Array)
    assert np.array_equal(np.asarray(jgot), want.cpu().numpy())


@pytest.mark.parametrize("explicit_workspace", [False, True])
def test_cuda_graph_replay_with_new_routing(explicit_workspace):
    T, H, I, E, k = 300, 512, 256, 32, 8
    x, w13, w2, w, ids, _, _ = make_layer(T, H, I, E, k, seed=1)
    ws = None
    if explicit_workspace:
        n = moekit.workspace_size(T, H, I, E, k)
        ws = torch.empty(n, dtype=torch.uint8, device=DEV)
    out = torch.empty_like(x)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the graph
        moekit.fused_moe(x, w13, w2, w, ids, out=out, workspace=ws)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        moekit.fused_moe(x, w13, w2, w, ids, out=out, workspace=ws)
    for replay in range(4):
        nx, _, _, nw, nids, _, _ = make_layer(T, H, I, E, k, seed=100 + replay)
        if replay % 2:
            nids = adversarial(nids, E)
        x.copy_(nx)
        w.copy_(nw)
        ids.copy_(nids)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert rel(out, torch_ref(x, w13, w2, w, ids)) < 0.02, replay


def test_torch_compile_fullgraph_and_opcheck():
    x, w13, w2, w, ids, _, _ = make_layer(65, 256, 128, 8, 2, seed=5)

    def layer(x, w13, w2, w, ids):
        return torch.ops.moekit.fused_moe(x * 2.0, w13, w2, w, ids) + 1.0

    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(x, w13, w2, w, ids), layer(x, w13, w2, w, ids), rtol=0,
                               atol=0)
    torch.library.opcheck(torch.ops.moekit.fused_moe.default, (x, w13, w2, w, ids))


def test_two_streams():
    a = make_layer(500, 512, 256, 16, 4, seed=21)
    b = make_layer(700, 512, 256, 16, 4, seed=22)
    want_a = moekit.fused_moe(*a[:5])
    want_b = moekit.fused_moe(*b[:5])
    torch.cuda.synchronize()
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    outs = []
    for _ in range(5):
        with torch.cuda.stream(s1):
            oa = moekit.fused_moe(*a[:5])
        with torch.cuda.stream(s2):
            ob = moekit.fused_moe(*b[:5])
        outs.append((oa, ob))
    torch.cuda.synchronize()
    for oa, ob in outs:
        assert torch.equal(oa, want_a) and torch.equal(ob, want_b)


@pytest.mark.parametrize("T", [5, 257, 3000])
def test_vllm_fused_experts_semantics_on_adversarial_routing(T):
    E, H, I, k = 16, 512, 256, 4
    x, w1, w2, w, ids, _, _ = make_layer(T, H, I, E, k, seed=T)
    ids = adversarial(ids, E).long()  # vLLM's routers return int64
    want = torch_ref(x, w1, w2, w, ids)
    got = fused_experts(x, w1, w2, w, ids)
    assert torch.equal(got, moekit.fused_moe(x, w1, w2, w, ids))
    assert rel(got, want) < 0.02
    # inplace writes hidden_states and returns it
    y = x.clone()
    assert fused_experts(y, w1, w2, w, ids, inplace=True) is y
    assert torch.equal(y, got)
    # expert_map: this rank holds 16 of 64 global experts, scattered; -1 elsewhere
    gmap = torch.full((64,), -1, dtype=torch.int32, device=DEV)
    gmap[torch.randperm(64, generator=gen(1), device=DEV)[:E]] = torch.arange(E, dtype=torch.int32,
                                                                              device=DEV)
    gids = torch.randint(-1, 70, (T, k), generator=gen(2), device=DEV)
    got = fused_experts(x, w1, w2, w, gids, global_num_experts=64, expert_map=gmap)
    assert rel(got, torch_ref(x, w1, w2, w, gids, local=gmap)) < 0.02
    # swigluoai: interleaved gate/up, alpha 1.702, limit 7, (up + 1); biases in quant_config
    _, _, _, _, _, b1, b2 = make_layer(T, H, I, E, k, seed=9, bias=True)

    class Biases:
        quant_dtype = None
        w1_bias, w2_bias = b1, b2
    got = fused_experts(x, w1, w2, w, ids, activation="swigluoai", quant_config=Biases())
    want = torch_ref(x, w1, w2, w, ids, order="interleaved", alpha=1.702, beta=1.0, limit=7.0,
                     b13=b1, b2=b2)
    assert rel(got, want) < 0.02
    # top-1 with the router weight on the input (Llama 4)
    w1_, ids1 = w[:, :1].contiguous(), ids[:, :1].contiguous()
    got = fused_experts(x, w1, w2, w1_, ids1, apply_router_weight_on_input=True)
    assert rel(got, torch_ref(x, w1, w2, w1_, ids1, on_input=True)) < 0.02
    with pytest.raises(moekit.MoekitError, match="apply_router_weight_on_input: expected top-k 1"):
        fused_experts(x, w1, w2, w, ids, apply_router_weight_on_input=True)
    with pytest.raises(moekit.MoekitError, match="activation: expected one of"):
        fused_experts(x, w1, w2, w, ids, activation="tanh")


def test_rejections_raise_and_leave_no_cuda_error():
    x, w13, w2, w, ids, _, _ = make_layer(9, 256, 128, 8, 2)
    out = torch.full_like(x, float("nan"))
    with pytest.raises(moekit.MoekitError, match="w2: expected memory on hidden's device"):
        moekit.fused_moe(x, w13, w2.cpu(), w, ids, out=out)
    with pytest.raises(moekit.MoekitError, match="hidden: expected a contiguous"):
        moekit.fused_moe(x.t(), w13, w2, w, ids, out=out)
    torch.cuda.synchronize()
    assert torch.isnan(out).all()
    assert moekit.fused_moe(x, w13, w2, w, ids).isfinite().all()
