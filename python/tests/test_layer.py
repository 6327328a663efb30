"""moekit's Python package on the CPU backend (NumPy, and torch CPU tensors where torch
is installed): the layer against a NumPy float64 reference, every rejection path, the
workspace rules and the router. Runs in CI; the GPU suite is test_gpu.py."""

import math

import numpy as np
import pytest

import moekit
from reference import adversarial_ids, moe, random_layer, rel_error

ACTS = ["swiglu", "geglu", "geglu_tanh", "silu", "gelu", "gelu_tanh", "relu", "relu2", "identity"]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_import_and_version():
    assert moekit.__version__ == "0.1.0"
    assert isinstance(moekit.cuda_available(), bool)
    assert issubclass(moekit.MoekitError, ValueError)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("order", ["gate_up", "up_gate", "interleaved"])
def test_every_activation_and_order_with_biases(rng, activation, order):
    gated = activation in ("swiglu", "geglu", "geglu_tanh")
    T, H, I, E, k = 13, 32, 16, 5, 3
    hidden, w13, w2, w, ids = random_layer(rng, T, H, I, E, k, gated)
    b13 = (0.1 * rng.standard_normal(w13.shape[:2])).astype(np.float32)
    b2 = (0.1 * rng.standard_normal((E, H))).astype(np.float32)
    out = moekit.fused_moe(hidden, w13, w2, w, ids, activation=activation, gate_up_order=order,
                           w13_bias=b13, w2_bias=b2)
    want = moe(hidden, w13, w2, w, ids, activation=activation, order=order, w13_bias=b13,
               w2_bias=b2)
    assert out.shape == (T, H) and out.dtype == np.float32
    assert rel_error(out, want) < 1e-5


@pytest.mark.parametrize("T", [1, 7, 300])
def test_adversarial_routing_int64_ids_and_fp16(rng, T):
    H, I, E, k = 32, 16, 6, 4
    hidden, w13, w2, w, ids = random_layer(rng, T, H, I, E, k)
    ids = adversarial_ids(ids, E, rng).astype(np.int64)
    ids[0, -1] = 2**32 + 1  # wraps to 1 if truncated: must stay invalid
    ids[-1, 0] = -(2**40)
    want = moe(hidden, w13, w2, w, ids)
    out = moekit.fused_moe(hidden, w13, w2, w, ids)
    assert rel_error(out, want) < 1e-5
    h16, w13_16, w2_16 = hidden.astype(np.float16), w13.astype(np.float16), w2.astype(np.float16)
    out16 = moekit.fused_moe(h16, w13_16, w2_16, w, ids)
    assert out16.dtype == np.float16
    assert rel_error(out16, moe(h16, w13_16, w2_16, w, ids)) < 1e-2


def test_gpt_oss_swiglu_clamps(rng):
    hidden, w13, w2, w, ids = random_layer(rng, 9, 32, 16, 4, 2)
    out = moekit.fused_moe(hidden, w13, w2, w, ids, gate_up_order="interleaved",
                           swiglu_alpha=1.702, swiglu_beta=1.0, swiglu_limit=0.5)
    want = moe(hidden, w13, w2, w, ids, order="interleaved", alpha=1.702, beta=1.0, limit=0.5)
    assert rel_error(out, want) < 1e-5


def test_expert_parallel_rank_and_expert_map(rng):
    T, H, I, El, k = 21, 32, 16, 3, 2
    hidden, w13, w2, w, ids = random_layer(rng, T, H, I, 12, k)
    # Rank 2 of 4 owns global experts 6..8.
    out = moekit.fused_moe(hidden, w13[:El], w2[:El], w, ids, ep_rank=2, ep_size=4)
    want = moe(hidden, w13[:El], w2[:El], w, ids, local=lambda g: g - 6 if 6 <= g < 9 else -1)
    assert rel_error(out, want) < 1e-5
    # A scattered map: globals 10, 1, 4 -> locals 0, 1, 2; 99 and -5 are not local.
    emap = np.full(12, -1, np.int32)
    emap[[10, 1, 4, 7, 8]] = [0, 1, 2, 99, -5]
    out = moekit.fused_moe(hidden, w13[:El], w2[:El], w, ids, expert_map=emap)
    local = lambda g: int(emap[g]) if 0 <= g < 12 and 0 <= emap[g] < El else -1  # noqa: E731
    assert rel_error(out, moe(hidden, w13[:El], w2[:El], w, ids, local=local)) < 1e-5
    # int64 maps are accepted too.
    out64 = moekit.fused_moe(hidden, w13[:El], w2[:El], w, ids, expert_map=emap.astype(np.int64))
    np.testing.assert_array_equal(out64, out)


@pytest.mark.parametrize("k", [1, 2])
def test_router_weight_on_input(rng, k):
    hidden, w13, w2, w, ids = random_layer(rng, 17, 32, 16, 4, k)
    out = moekit.fused_moe(hidden, w13, w2, w, ids, apply_router_weight_on_input=True)
    want = moe(hidden, w13, w2, w, ids, weight_on_input=True)
    assert rel_error(out, want) < 1e-5
    assert rel_error(out, moe(hidden, w13, w2, w, ids)) > 1e-3


def test_in_place_and_given_out(rng):
    hidden, w13, w2, w, ids = random_layer(rng, 11, 32, 16, 4, 2)
    want = moekit.fused_moe(hidden, w13, w2, w, ids)
    out = np.full_like(hidden, np.nan)
    got = moekit.fused_moe(hidden, w13, w2, w, ids, out=out)
    assert got is out
    np.testing.assert_array_equal(out, want)
    h = hidden.copy()
    got = moekit.fused_moe(h, w13, w2, w, ids, out=h)
    assert got is h
    np.testing.assert_array_equal(h, want)


def test_explicit_workspace_and_its_size(rng):
    hidden, w13, w2, w, ids = random_layer(rng, 40, 32, 16, 4, 2)
    need = moekit.workspace_size(40, 32, 16, 4, 2, dtype="float32", device="cpu")
    assert need > 0
    assert moekit.workspace_size(400, 32, 16, 4, 2, dtype="float32", device="cpu") > need
    store = np.zeros(need + 256, np.uint8)
    off = (-store.ctypes.data) % 256
    ws = store[off:off + need]
    out = moekit.fused_moe(hidden, w13, w2, w, ids, workspace=ws)
    np.testing.assert_array_equal(out, moekit.fused_moe(hidden, w13, w2, w, ids))
    poisoned = np.full_like(hidden, np.nan)
    with pytest.raises(moekit.MoekitError, match="workspace_bytes: expected at least"):
        moekit.fused_moe(hidden, w13, w2, w, ids, workspace=ws[:need - 1], out=poisoned)
    assert np.isnan(poisoned).all()
    with pytest.raises(moekit.MoekitError, match="workspace: expected a 256-byte aligned pointer"):
        moekit.fused_moe(hidden, w13, w2, w, ids, workspace=store[off + 8:off + 8 + need],
                         out=poisoned)
    assert np.isnan(poisoned).all()


def test_read_only_output_is_refused(rng):
    hidden, w13, w2, w, ids = random_layer(rng, 5, 32, 16, 4, 2)
    out = np.full_like(hidden, np.nan)
    out.flags.writeable = False
    with pytest.raises(moekit.MoekitError, match="out: expected a writable array"):
        moekit.fused_moe(hidden, w13, w2, w, ids, out=out)
    assert np.isnan(out).all()
    hidden.flags.writeable = False  # inputs may be read-only
    assert np.isfinite(moekit.fused_moe(hidden, w13, w2, w, ids)).all()


def test_managed_workspace_grows_once_and_reserve_presizes(rng):
    moekit.release_workspaces()
    hidden, w13, w2, w, ids = random_layer(rng, 300, 32, 16, 4, 2)
    moekit.reserve_workspace(300, 32, 16, 4, 2, like=hidden, dtype="float32")
    (buf,) = moekit._api._workspaces.values()
    for T in (1, 77, 300):  # smaller and equal batches reuse the reserved buffer
        moekit.fused_moe(hidden[:T].copy(), w13, w2, w[:T].copy(), ids[:T].copy())
        assert next(iter(moekit._api._workspaces.values())) is buf
    big = random_layer(rng, 900, 32, 16, 4, 2)
    want = moe(*big)
    assert rel_error(moekit.fused_moe(*big), want) < 1e-5  # grows for a larger batch
    assert next(iter(moekit._api._workspaces.values())) is not buf
    assert len(moekit._api._workspaces) == 1


def test_zero_tokens(rng):
    hidden, w13, w2, w, ids = random_layer(rng, 0, 32, 16, 4, 2)
    out = moekit.fused_moe(hidden, w13, w2, w, ids)
    assert out.shape == (0, 32)


def _rejections(hidden, w13, w2, w, ids):
    f32 = np.float32
    return [
        ("w2 shape", dict(w2=w2[:, :, :8].copy()), "w2: expected shape [E_local, H, I]"),
        ("w13 rank", dict(w13=w13[0]), "w13: expected 3 dimensions"),
        ("hidden dtype", dict(hidden=hidden.astype(np.int16)), "hidden: expected dtype"),
        ("hidden strided", dict(hidden=np.repeat(hidden, 2, axis=1)[:, ::2]), "hidden: expected a contiguous"),
        ("ids dtype", dict(topk_ids=ids.astype(f32)), "topk_ids: expected dtype int32"),
        ("ids shape", dict(topk_ids=ids[:, :1].copy()), "topk_weights: expected shape [T, k]"),
        ("ids rows", dict(topk_ids=ids[:-1].copy()), "topk_ids: expected shape [T, k]"),
        ("weights missing", dict(topk_weights=None), "topk_ids and topk_weights are required"),
        ("weights dtype", dict(topk_weights=w.astype(np.int32)), "topk_weights: expected dtype float32"),
        ("w2 dtype", dict(w2=w2.astype(np.float16)), "w2: expected the dtype of w13"),
        ("activation", dict(activation="swish"), "activation: expected one of"),
        ("order", dict(gate_up_order="gate_first"), "gate_up_order: expected one of"),
        ("quant", dict(quant="int4"), "quant: expected one of"),
        ("fp8 without fp8 weights", dict(quant="fp8_block"), "w13: expected dtype float8_e4m3fn or uint8"),
        ("limit", dict(swiglu_limit=0.0), "swiglu_limit: expected > 0"),
        ("alpha", dict(swiglu_alpha=math.nan), "swiglu_alpha: expected a finite number"),
        ("ep rank", dict(ep_rank=4, ep_size=4), "ep_rank: expected 0 <= ep_rank < ep_size"),
        ("global experts", dict(global_num_experts=7), "num_local_experts: expected num_experts / ep_size"),
        ("map length", dict(expert_map=np.zeros(3, np.int32), global_num_experts=4), "expert_map: expected shape [E_total]"),
        ("map dtype", dict(expert_map=np.zeros(4, np.float32)), "expert_map: expected dtype int32"),
        ("bias shape", dict(w13_bias=np.zeros((4, 3), f32)), "w13_bias: expected shape [E_local, N1]"),
        ("bias dtype", dict(w2_bias=np.zeros((4, 32), np.float16)), "w2_bias: expected the compute dtype"),
        ("not an array", dict(hidden="hello"), "hidden: expected a tensor or array"),
        ("top_k past E", dict(topk_ids=np.zeros((hidden.shape[0], 5), np.int32),
                              topk_weights=np.zeros((hidden.shape[0], 5), f32)), "top_k: expected 1 <= top_k <= num_experts"),
        ("scale without fp8", dict(w13_scale=np.ones(4, f32)), "w13_scale: expected NULL"),
        ("stream object", dict(stream="s"), "stream: expected an int handle"),
        ("router without logits", dict(router="softmax_topk", top_k=2, topk_ids=None, topk_weights=None),
         "topk_ids and topk_weights are required"),
    ]


def test_every_rejection_names_the_argument_and_writes_nothing(rng):
    hidden, w13, w2, w, ids = random_layer(rng, 6, 32, 16, 4, 2)
    base = dict(hidden=hidden, w13=w13, w2=w2, topk_weights=w, topk_ids=ids)
    moekit.release_workspaces()
    for name, change, message in _rejections(hidden, w13, w2, w, ids):
        args = dict(base)
        kwargs = {key: change.pop(key) for key in list(change) if key not in base}
        args.update(change)
        out = np.full_like(hidden, np.nan)
        with pytest.raises(moekit.MoekitError) as err:
            moekit.fused_moe(args.pop("hidden"), args.pop("w13"), args.pop("w2"), out=out,
                             **args, **kwargs)
        assert message in str(err.value), f"{name}: {err.value}"
        assert np.isnan(out).all(), name
        assert not moekit._api._workspaces, f"{name}: a rejected call allocated a workspace"
        # The next good call works.
    np.testing.assert_array_equal(moekit.fused_moe(hidden, w13, w2, w, ids),
                                  moekit.fused_moe(hidden, w13, w2, w, ids))


def test_layer_routes_itself(rng):
    T, E, k = 19, 8, 2
    hidden, w13, w2, _, _ = random_layer(rng, T, 32, 16, E, k)
    logits = rng.standard_normal((T, E)).astype(np.float32)
    out = moekit.fused_moe(hidden, w13, w2, router_logits=logits, router="softmax_topk", top_k=k)
    ids, w = moekit.route(logits, k)
    np.testing.assert_array_equal(out, moekit.fused_moe(hidden, w13, w2, w, ids))


def test_router_matches_numpy_and_survives_nan(rng):
    T, E, k = 33, 16, 4
    logits = rng.standard_normal((T, E)).astype(np.float32)
    logits[3] = np.nan
    logits[4, 5] = np.inf
    ids, w = moekit.route(logits, k, kind="softmax_topk", renormalize=True)
    assert ids.dtype == np.int32 and w.dtype == np.float32
    for t in range(T):
        assert len(set(ids[t])) == k and all(0 <= i < E for i in ids[t])
        assert np.isfinite(w[t]).all()
    p = np.exp(logits[0] - logits[0].max())
    top = np.argsort(-p, kind="stable")[:k]
    np.testing.assert_array_equal(ids[0], top)
    np.testing.assert_allclose(w[0], p[top] / p[top].sum(), rtol=1e-5)
    with pytest.raises(moekit.MoekitError, match="top_k: expected 1 <= top_k <= num_experts"):
        moekit.route(logits, E + 1)


# ---- torch CPU tensors (skipped where torch is not installed) ----------------

def test_torch_cpu_tensors_vllm_entry_and_custom_op():
    torch = pytest.importorskip("torch")
    import moekit.ops  # noqa: F401
    from moekit.vllm import fused_experts
    g = torch.Generator().manual_seed(5)
    T, H, I, E, k = 37, 64, 32, 8, 2
    x = torch.randn(T, H, generator=g, dtype=torch.float32).to(torch.bfloat16)
    w1 = (torch.randn(E, 2 * I, H, generator=g) / 8).to(torch.bfloat16)
    w2 = (torch.randn(E, H, I, generator=g) / 6).to(torch.bfloat16)
    w = torch.rand(T, k, generator=g)
    ids = torch.randint(0, E, (T, k), generator=g)  # int64, as vLLM's router returns
    ids[0] = -1
    ids[1, 1] = ids[1, 0]
    ids[2, 0] = 2**33
    out = moekit.fused_moe(x, w1, w2, w, ids)
    want = moe(x.float().numpy(), w1.float().numpy(), w2.float().numpy(), w.numpy(), ids.numpy())
    assert rel_error(out.float().numpy(), want) < 2e-2
    assert torch.equal(fused_experts(x, w1, w2, w, ids), out)
    assert torch.equal(torch.ops.moekit.fused_moe(x, w1, w2, w, ids), out)
    y = x.clone()
    assert fused_experts(y, w1, w2, w, ids, inplace=True) is y
    assert torch.equal(y, out)
    torch.library.opcheck(torch.ops.moekit.fused_moe.default, (x, w1, w2, w, ids.to(torch.int32)))
