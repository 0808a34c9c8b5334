"""Property-based tests (hypothesis) of the array API: random shapes including zeros, every array layout
(C, F, strided, negative strides, read-only, unaligned, broadcast, big-endian), NaN/inf and bad arguments.
Each call on the cpu backend equals the NumPy reference, or raises a TypeError/ValueError naming the
argument, and a failed call changes nothing. Not the fixed-case tests (test_backends.py, test_gated.py)."""
from __future__ import annotations

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rnnfast  # noqa: E402
import rnnfast.functional as F  # noqa: E402

if not rnnfast.backends()["cpu"]["available"]:
    pytest.skip("cpu backend missing", allow_module_level=True)

FAST = settings(max_examples=int(os.environ.get("RNNFAST_PROPERTY_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)
LAYOUTS = ("C", "F", "strided", "negative", "readonly", "unaligned", "broadcast", "bigendian")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _tol(dt):
    return dict(rtol=2e-4, atol=2e-5) if dt == np.float32 else dict(rtol=1e-10, atol=1e-12)


def relayout(a, how):
    """An array with a's values (shape and dtype kind/size) in another memory layout."""
    if a.ndim == 0 or a.size == 0:
        return a.copy()
    if how == "C":
        return np.ascontiguousarray(a)
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided":
        big = np.zeros((a.shape[0] * 2,) + a.shape[1:], a.dtype)
        big[::2] = a
        return big[::2]
    if how == "negative":
        return np.ascontiguousarray(a[::-1])[::-1]
    if how == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if how == "unaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        b = buf[1:].view(a.dtype).reshape(a.shape)
        b[...] = a
        return b
    if how == "bigendian":
        return a.astype(a.dtype.newbyteorder(">"))
    if how == "broadcast":   # only where every row is equal: broadcast the first row along axis 0
        if (a == a[:1]).all():
            return np.broadcast_to(a[:1], a.shape)
        return a
    raise ValueError(how)


@st.composite
def problems(draw, cells=("rnn", "lstm", "gru")):
    cell = draw(st.sampled_from(cells))
    dt = draw(st.sampled_from([np.float32, np.float64]))
    T, N = draw(st.integers(0, 5)), draw(st.integers(0, 3))
    D, H, L = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 2))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    const_rows = draw(st.booleans())       # equal rows so "broadcast" layouts apply
    x = rng.standard_normal((T, N, D)).astype(dt)
    if const_rows and T > 0:
        x[:] = x[:1]
    weights = []
    for k in range(L):
        Dk = D if k == 0 else H
        w = [rng.uniform(-0.5, 0.5, (G * H, Dk)).astype(dt), rng.uniform(-0.5, 0.5, (G * H, H)).astype(dt)]
        if const_rows:
            w[1][:] = w[1][:1]
        w += [rng.uniform(-0.5, 0.5, G * H).astype(dt), rng.uniform(-0.5, 0.5, G * H).astype(dt)] if bias \
            else [None, None]
        weights.append(tuple(w))
    h0 = rng.standard_normal((L, N, H)).astype(dt) if draw(st.booleans()) else None
    c0 = rng.standard_normal((L, N, H)).astype(dt) if cell == "lstm" and draw(st.booleans()) else None
    layouts = draw(st.lists(st.sampled_from(LAYOUTS), min_size=4 + 4 * L, max_size=4 + 4 * L))
    return dict(cell=cell, dt=dt, x=x, weights=weights, h0=h0, c0=c0, layouts=layouts, rng=rng)


def _forward(cell, x, h0, c0, weights, backend, need_cache=True):
    if cell == "rnn":
        out, h_n, cache = F.rnn_forward(x, h0, weights, need_cache=need_cache, backend=backend)
        return (out, h_n), cache
    if cell == "lstm":
        out, h_n, c_n, cache = F.lstm_forward(x, h0, c0, weights, need_cache=need_cache, backend=backend)
        return (out, h_n, c_n), cache
    out, h_n, cache = F.gru_forward(x, h0, weights, need_cache=need_cache, backend=backend)
    return (out, h_n), cache


def _backward(cell, dout, cache, grads, backend):
    if cell == "rnn":
        return F.rnn_backward(dout, None, cache, grads, backend=backend)[:2]
    if cell == "lstm":
        return F.lstm_backward(dout, None, None, cache, grads, backend=backend)
    return F.gru_backward(dout, None, cache, grads, backend=backend)


def _relaid(p):
    lay = iter(p["layouts"])
    x = relayout(p["x"], next(lay))
    h0 = None if p["h0"] is None else relayout(p["h0"], next(lay))
    c0 = None if p["c0"] is None else relayout(p["c0"], next(lay))
    weights = [tuple(None if a is None else relayout(a, next(lay)) for a in w) for w in p["weights"]]
    return x, h0, c0, weights


@FAST
@given(problems())
def test_forward_backward_equal_reference_in_every_layout(p):
    cell, dt = p["cell"], p["dt"]
    ref, rcache = _forward(cell, p["x"], p["h0"], p["c0"], p["weights"], "numpy")
    x, h0, c0, weights = _relaid(p)
    originals = [a.copy() for a in (x, h0, c0) if a is not None]
    got, gcache = _forward(cell, x, h0, c0, weights, "cpu")
    for a, b in zip(got, ref):
        assert a.shape == b.shape and a.dtype == np.dtype(dt)
        np.testing.assert_allclose(a, b, **_tol(dt))
    for a, b in zip([a for a in (x, h0, c0) if a is not None], originals):
        np.testing.assert_array_equal(a, b)           # inputs are never written
    dout = p["rng"].standard_normal(ref[0].shape).astype(dt)
    rg = [tuple(None if a is None else np.zeros_like(a) for a in w) for w in p["weights"]]
    gg = [tuple(None if a is None else np.zeros_like(a) for a in w) for w in p["weights"]]
    rd = _backward(cell, dout, rcache, rg, "numpy")
    gd = _backward(cell, relayout(dout, p["layouts"][0]), gcache, gg, "cpu")
    for a, b in zip(gd, rd):
        np.testing.assert_allclose(a, b, **_tol(dt))
    for wr, wg in zip(rg, gg):
        for a, b in zip(wr, wg):
            if a is not None:
                np.testing.assert_allclose(b, a, **_tol(dt))


@FAST
@given(problems(), st.sampled_from([np.nan, np.inf, -np.inf]), st.integers(0, 10 ** 6))
def test_nonfinite_inputs_propagate_as_in_the_reference(p, bad, where):
    x = p["x"].copy()
    if x.size == 0:
        return
    x.flat[where % x.size] = bad
    ref, _ = _forward(p["cell"], x, p["h0"], p["c0"], p["weights"], "numpy", need_cache=False)
    got, _ = _forward(p["cell"], x, p["h0"], p["c0"], p["weights"], "cpu", need_cache=False)
    with np.errstate(invalid="ignore"):
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            fin = np.isfinite(b)
            np.testing.assert_allclose(a[fin], b[fin], **_tol(p["dt"]))


BAD_FORWARD = ["x_list", "x_int", "x_rank", "x_complex", "w_shape", "w_dtype", "w_type", "h0_shape",
               "h0_dtype", "bias_half", "weights_none", "weights_dict", "w_tuple_len"]


def _break_forward(p, how):
    """(x, h0, weights, the argument name the error must contain)."""
    x, h0, w = p["x"], p["h0"], [list(t) for t in p["weights"]]
    L, N, H = len(w), x.shape[1], w[0][1].shape[1]
    if how == "x_list":
        return x.tolist(), h0, w, "x"
    if how == "x_int":
        return x.astype(np.int32), h0, w, "x"
    if how == "x_rank":
        return x[0], h0, w, "x"
    if how == "x_complex":
        return x.astype(np.complex64), h0, w, "x"
    if how == "w_shape":
        w[-1][1] = np.zeros((w[-1][1].shape[0], H + 1), x.dtype)
        return x, h0, w, f"weight_hh_l{L - 1}"
    if how == "w_dtype":
        w[0][0] = w[0][0].astype(np.float16)
        return x, h0, w, "weight_ih_l0"
    if how == "w_type":
        w[0][0] = "weights"
        return x, h0, w, "weight_ih_l0"
    if how == "h0_shape":
        return x, np.zeros((L + 1, N, H), x.dtype), w, "h0"
    if how == "h0_dtype":
        return x, np.zeros((L, N, H), np.int64), w, "h0"
    if how == "bias_half":
        w[0][2] = np.zeros(w[0][1].shape[0], x.dtype)
        w[0][3] = None
        return x, h0, w, "bias"
    if how == "weights_none":
        return x, h0, None, "weights"
    if how == "weights_dict":
        return x, h0, {"weight_ih_l0": w[0][0]}, "weights"
    if how == "w_tuple_len":
        w[0] = w[0][:3]
        return x, h0, w, "weights[0]"
    raise ValueError(how)


@FAST
@given(problems(), st.sampled_from(BAD_FORWARD), st.sampled_from(["numpy", "cpu"]))
def test_bad_forward_arguments_raise_naming_them(p, how, backend):
    x, h0, w, name = _break_forward(p, how)
    if how == "bias_half" and p["weights"][0][2] is None and len(p["weights"]) > 1:
        name = "bias"
    c0 = p["c0"]
    with pytest.raises((TypeError, ValueError)) as e:
        _forward(p["cell"], x, h0, c0, w, backend)
    assert name in str(e.value), (how, str(e.value))
    assert "incompatible function arguments" not in str(e.value)


BAD_BACKWARD = ["dout_shape", "dout_dtype", "grads_none", "grads_short", "grad_shape", "grad_readonly",
                "grad_dtype", "grad_bigendian"]


@FAST
@given(problems(), st.sampled_from(BAD_BACKWARD), st.sampled_from(["numpy", "cpu"]))
def test_failed_backward_changes_nothing(p, how, backend):
    cell, dt = p["cell"], p["dt"]
    (out, *_), cache = _forward(cell, p["x"], p["h0"], p["c0"], p["weights"], backend)
    dout = p["rng"].standard_normal(out.shape).astype(dt)
    grads = [[None if a is None else p["rng"].standard_normal(a.shape).astype(dt) for a in w]
             for w in p["weights"]]
    name = {"dout_shape": "dout", "dout_dtype": "dout", "grads_none": "grads", "grads_short": "grads",
            "grad_shape": "dW_hh_l0", "grad_readonly": "dW_ih_l0", "grad_dtype": "dW_ih_l0",
            "grad_bigendian": "dW_ih_l0"}[how]
    if how == "dout_shape":
        dout = dout[:, :, :-1]
    elif how == "dout_dtype":
        dout = dout.astype(np.float16)
    elif how == "grad_shape":
        grads[0][1] = grads[0][1][:, :-1].copy()
    elif how == "grad_readonly":
        grads[0][0].flags.writeable = False
    elif how == "grad_dtype":
        grads[0][0] = grads[0][0].astype(np.float16)
    elif how == "grad_bigendian":
        if backend == "numpy":
            return                  # NumPy accumulates into a big-endian array correctly
        grads[0][0] = grads[0][0].astype(grads[0][0].dtype.newbyteorder(">"))
    before = [[None if a is None else a.copy() for a in w] for w in grads]
    arg = None if how == "grads_none" else grads[:-1] if how == "grads_short" else [tuple(w) for w in grads]
    with pytest.raises((TypeError, ValueError)) as e:
        _backward(cell, dout, cache, arg, backend)
    assert name in str(e.value), (how, str(e.value))
    for wb, wa in zip(before, grads):
        for b, a in zip(wb, wa):
            if b is not None:
                np.testing.assert_array_equal(a, b)
