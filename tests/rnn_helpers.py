"""Shared test helpers: random problem builders, backend lists (tolerances: tolerances.py, re-exported).
Not tests themselves."""
from __future__ import annotations

import numpy as np
import pytest

import rnnfast
from rnnfast.backends import backends as _backends
from tolerances import F32_ATOL, F32_FACTOR, TOL64, assert_f32_close  # noqa: F401  (re-exported)

# tolerances live in tolerances.py; re-exported here for the tests that import them from rnn_helpers

CPU_AVAILABLE = _backends()["cpu"]["available"]
requires_cpu = pytest.mark.skipif(not CPU_AVAILABLE, reason=f"cpu backend missing: {_backends()['cpu']['reason']}")

# Every kernel build; the kernel tests take conftest.py's `isa` fixture and run once per ISA (the generic
# build too); an ISA this CPU lacks is skipped with the reason, never silently dropped.
ISAS = ("generic", "avx2", "avx512")



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


def available_backends():
    """The CPU-side backends that can run here (cuda is tested in test_cuda.py)."""
    return [b for b in ("numpy", "cpu") if _backends()[b]["available"]]
