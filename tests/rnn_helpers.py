"""Shared test helpers: tolerances (in one place), random problem builders, backend lists.
Not tests themselves."""
from __future__ import annotations

import numpy as np
import pytest

import rnnfast
from rnnfast.backends import backends as _backends

# ---- tolerances, in one place ----
# float64 kernels vs the float64 reference: essentially exact up to summation order.
TOL64 = dict(rtol=1e-9, atol=1e-10)
# float32: the kernel's error against a float64 reference may be at most F32_FACTOR times the float32
# reference's own error, plus F32_ATOL (DESIGN.md 4).
F32_FACTOR = 2.0
F32_ATOL = 2e-5

CPU_AVAILABLE = _backends()["cpu"]["available"]
requires_cpu = pytest.mark.skipif(not CPU_AVAILABLE, reason=f"cpu backend missing: {_backends()['cpu']['reason']}")


def make_weights(rng, D, H, L, dtype, bias=True, scale=None):
    scale = scale if scale is not None else 1.0 / np.sqrt(H)
    ws = []
    for k in range(L):
        Dk = D if k == 0 else H
        W_ih = rng.uniform(-scale, scale, (H, Dk)).astype(dtype)
        W_hh = rng.uniform(-scale, scale, (H, H)).astype(dtype)
        b_ih = rng.uniform(-scale, scale, H).astype(dtype) if bias else None
        b_hh = rng.uniform(-scale, scale, H).astype(dtype) if bias else None
        ws.append((W_ih, W_hh, b_ih, b_hh))
    return ws


def zero_grads(weights):
    return [tuple(None if a is None else np.zeros_like(a) for a in w) for w in weights]


def cast_weights(weights, dtype):
    return [tuple(None if a is None else a.astype(dtype) for a in w) for w in weights]


def flat_grads(grads):
    return [a for g in grads for a in g if a is not None]


def run(backend, x, h0, weights, c, act, dout, dh_n):
    """Forward + backward on one backend; returns a list of every output and gradient."""
    out, h_n, cache = rnnfast.rnn_forward(x, h0, weights, c, act, True, backend=backend)
    grads = zero_grads(weights)
    dx, dh0, dc = rnnfast.rnn_backward(dout, dh_n, cache, grads, backend=backend)
    res = [out, h_n, dx, dh0] + ([dc] if dc is not None else []) + flat_grads(grads)
    return res


def assert_f32_close(got32, ref64, ref32, name=""):
    """got32 (float32 kernel) vs ref64; allowed error = F32_FACTOR * |ref32 - ref64| + F32_ATOL (elementwise max)."""
    err = np.abs(got32.astype(np.float64) - ref64)
    ref_err = np.abs(ref32.astype(np.float64) - ref64)
    bound = F32_FACTOR * ref_err.max(initial=0.0) + F32_ATOL * max(1.0, np.abs(ref64).max(initial=0.0))
    assert err.max(initial=0.0) <= bound, f"{name}: max err {err.max()} > bound {bound}"


def available_backends():
    """The CPU-side backends that can run here (cuda is tested in test_cuda.py)."""
    return [b for b in ("numpy", "cpu") if _backends()[b]["available"]]
