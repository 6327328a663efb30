"""A NumPy float64 reference of the moekit layer (moekit.h's formulas), written
independently of the library, for the pytest suites."""

import math

import numpy as np

_erf = np.vectorize(math.erf)


def gelu_erf(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x, alpha=1.0):
    return x / (1.0 + np.exp(-alpha * x))


GATED = {"swiglu", "geglu", "geglu_tanh"}


def activate(h, inter, activation, order, alpha=1.0, beta=0.0, limit=math.inf):
    if activation not in GATED:
        f = {"silu": silu, "gelu": gelu_erf, "gelu_tanh": gelu_tanh,
             "relu": lambda v: np.maximum(v, 0.0), "relu2": lambda v: np.maximum(v, 0.0) ** 2,
             "identity": lambda v: v}[activation]
        return f(h)
    if order == "gate_up":
        g, u = h[:inter], h[inter:]
    elif order == "up_gate":
        u, g = h[:inter], h[inter:]
    else:
        g, u = h[0::2], h[1::2]
    if activation == "swiglu":
        g = np.minimum(g, limit)
        return silu(g, alpha) * (np.clip(u, -limit, limit) + beta)
    return (gelu_erf(g) if activation == "geglu" else gelu_tanh(g)) * u


def moe(hidden, w13, w2, weights, ids, *, activation="swiglu", order="gate_up", alpha=1.0,
        beta=0.0, limit=math.inf, w13_bias=None, w2_bias=None, local=None,
        weight_on_input=False):
    """local(id) -> local expert index or -1 (default: ids in [0, E_local))."""
    hidden, w13, w2 = (np.asarray(a, dtype=np.float64) for a in (hidden, w13, w2))
    T, H = hidden.shape
    E, _, inter = w2.shape
    if local is None:
        local = lambda g: g if 0 <= g < E else -1  # noqa: E731
    out = np.zeros((T, H))
    for t in range(T):
        for s in range(ids.shape[1]):
            e = local(int(ids[t, s]))
            if e < 0:
                continue
            w = float(weights[t, s])
            x = hidden[t] * (w if weight_on_input else 1.0)
            h = w13[e] @ x + (0.0 if w13_bias is None else np.asarray(w13_bias[e], np.float64))
            a = activate(h, inter, activation, order, alpha, beta, limit)
            y = w2[e] @ a + (0.0 if w2_bias is None else np.asarray(w2_bias[e], np.float64))
            out[t] += y if weight_on_input else w * y
    return out


def rel_error(got, want):
    got = np.asarray(got, dtype=np.float64)
    return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)


def random_layer(rng, T, H, I, E, k, gated=True, dtype=np.float32):
    n1 = 2 * I if gated else I
    hidden = rng.standard_normal((T, H)).astype(dtype)
    w13 = (rng.standard_normal((E, n1, H)) / math.sqrt(H)).astype(dtype)
    w2 = (rng.standard_normal((E, H, I)) / math.sqrt(I)).astype(dtype)
    weights = rng.random((T, k)).astype(np.float32)
    ids = rng.integers(0, E, (T, k)).astype(np.int32)
    return hidden, w13, w2, weights, ids


def adversarial_ids(ids, E, rng):
    """The production failure modes: all-zero rows, -1 padding, duplicates, garbage."""
    ids = ids.copy()
    T, k = ids.shape
    for t in range(T):
        c = t % 5
        if c == 0:
            ids[t] = 0
        elif c == 1:
            ids[t] = -1
        elif c == 2 and k > 1:
            ids[t, 1] = ids[t, 0]
        elif c == 3:
            ids[t, 0] = E + int(rng.integers(0, 1000))
    return ids
