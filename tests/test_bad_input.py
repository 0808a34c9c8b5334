"""Bad input on every backend gives a clear Python exception naming the argument and the expected shape or
dtype, or a correct answer (non-contiguous, read-only, NaN/inf, empty sizes) - never a crash.
Not a correctness test of valid input (test_backends.py)."""

import numpy as np
import pytest

import rnnfast
from rnn_helpers import available_backends, make_weights, zero_grads

BACKENDS = available_backends()
T, N, D, H, L = 5, 3, 4, 6, 2


def _setup(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, D)).astype(dtype)
    ws = make_weights(rng, D, H, L, dtype)
    return rng, x, ws


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case,exc,words", [
    ("x_rank", ValueError, ["x", "(T, N, D)"]),
    ("whh_shape", ValueError, ["weight_hh_l1", "(H, H) = (6, 6)", "(6, 5)"]),
    ("wih_shape", ValueError, ["weight_ih_l0", "(H, D) = (6, 4)"]),
    ("wih1_shape", ValueError, ["weight_ih_l1", "(H, H) = (6, 6)"]),
    ("bias_shape", ValueError, ["bias_hh_l0", "(H) = (6)"]),
    ("h0_shape", ValueError, ["h0", "(L, N, H) = (2, 3, 6)"]),
    ("c_shape", ValueError, ["c", "(N, H) = (3, 6)"]),
    ("mixed_dtype", TypeError, ["weight_hh_l0", "float64"]),
    ("int_x", TypeError, ["x", "float32 or float64", "int64"]),
    ("complex_x", TypeError, ["x", "complex128"]),
    ("nonlin", ValueError, ["nonlinearity", "'tanh' or 'relu'"]),
    ("half_bias", ValueError, ["bias_ih_l0", "bias_hh_l0"]),
    ("list_x", TypeError, ["x"]),
])
def test_forward_rejects_bad_arguments(backend, case, exc, words):
    rng, x, ws = _setup()
    h0, c, act = None, None, "tanh"
    if case == "x_rank":
        x = x[0]
    elif case == "whh_shape":
        ws[1] = (ws[1][0], ws[1][1][:, :5], ws[1][2], ws[1][3])
    elif case == "wih_shape":
        ws[0] = (ws[0][0][:, :3], ws[0][1], ws[0][2], ws[0][3])
    elif case == "wih1_shape":
        ws[1] = (ws[1][0][:, :2], ws[1][1], ws[1][2], ws[1][3])
    elif case == "bias_shape":
        ws[0] = (ws[0][0], ws[0][1], ws[0][2], ws[0][3][:5])
    elif case == "h0_shape":
        h0 = np.zeros((L, N + 1, H))
    elif case == "c_shape":
        c = np.zeros((N, H + 1))
    elif case == "mixed_dtype":
        ws[0] = (ws[0][0], ws[0][1].astype(np.float32), ws[0][2], ws[0][3])
    elif case == "int_x":
        x = np.ones((T, N, D), dtype=np.int64)
    elif case == "complex_x":
        x = x.astype(np.complex128)
    elif case == "nonlin":
        act = "sigmoid"
    elif case == "half_bias":
        ws[0] = (ws[0][0], ws[0][1], ws[0][2], None)
    elif case == "list_x":
        x = x.tolist()
    with pytest.raises(exc) as ei:
        rnnfast.rnn_forward(x, h0, ws, c, act, backend=backend)
    msg = str(ei.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_rejects_bad_arguments(backend):
    rng, x, ws = _setup()
    _, _, cache = rnnfast.rnn_forward(x, None, ws, backend=backend)
    with pytest.raises(ValueError, match=r"dout must have shape \(T, N, H\) = \(5, 3, 6\)"):
        rnnfast.rnn_backward(np.zeros((T, N, H + 1)), None, cache, zero_grads(ws), backend=backend)
    with pytest.raises(ValueError, match=r"dh_n must have shape \(L, N, H\)"):
        rnnfast.rnn_backward(None, np.zeros((L + 1, N, H)), cache, zero_grads(ws), backend=backend)
    with pytest.raises(TypeError, match="dout must have dtype float64"):
        rnnfast.rnn_backward(np.zeros((T, N, H), np.float32), None, cache, zero_grads(ws), backend=backend)
    g = zero_grads(ws)
    g[1] = (g[1][0], g[1][1][:, :3].copy(), g[1][2], g[1][3])
    with pytest.raises(ValueError, match="dW_hh_l1"):
        rnnfast.rnn_backward(None, None, cache, g, backend=backend)
    g = zero_grads(ws)
    g[0][0].flags.writeable = False
    with pytest.raises(ValueError, match="dW_ih_l0 must be writeable"):
        rnnfast.rnn_backward(None, None, cache, g, backend=backend)
    with pytest.raises(TypeError, match="cache must be the RNNCache"):
        rnnfast.rnn_backward(None, None, {"hs": 1}, zero_grads(ws), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_read_only_inputs_work(backend):
    rng, x, ws = _setup()
    h0 = rng.standard_normal((L, N, H))
    ref_out, ref_hn, _ = rnnfast.rnn_forward(x, h0, ws, backend="numpy")
    xf = np.asfortranarray(x)
    xs = np.repeat(x, 2, axis=2)[:, :, ::2]        # strided view
    assert not xf.flags.c_contiguous and not xs.flags.c_contiguous
    wsf = [tuple(np.asfortranarray(a) if a is not None else None for a in w) for w in ws]
    ro = x.copy()
    ro.flags.writeable = False
    for xi, wi in ((xf, ws), (xs, ws), (ro, ws), (x, wsf)):
        out, hn, cache = rnnfast.rnn_forward(xi, h0, wi, backend=backend)
        np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(hn, ref_hn, rtol=1e-12, atol=1e-13)
        rnnfast.rnn_backward(np.ones_like(out), None, cache, zero_grads(ws), backend=backend)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_propagate(backend, bad):
    rng, x, ws = _setup()
    x[2, 1, 0] = bad
    out, hn, cache = rnnfast.rnn_forward(x, None, ws, backend=backend)
    assert np.isfinite(out[:2]).all()                  # before the bad step: untouched
    assert np.isfinite(out[:, [0, 2]]).all()           # other sequences: untouched
    if bad is np.nan:
        assert np.isnan(out[2:, 1]).all()
    dx, dh0, _ = rnnfast.rnn_backward(np.ones_like(out), None, cache, zero_grads(ws), backend=backend)
    assert np.isnan(dx[:, 1]).any() or np.isnan(dh0[:, 1]).any() or bad is np.inf


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 3, 4), (5, 0, 4), (0, 0, 4)])
def test_empty_sizes_have_defined_results(backend, shape):
    rng, _, ws = _setup()
    x = np.zeros(shape)
    Tz, Nz, _ = shape
    h0 = rng.standard_normal((L, Nz, H))
    out, hn, cache = rnnfast.rnn_forward(x, h0, ws, backend=backend)
    assert out.shape == (Tz, Nz, H)
    np.testing.assert_array_equal(hn, h0 if Tz == 0 else hn)
    dh_n = rng.standard_normal((L, Nz, H))
    g = zero_grads(ws)
    dx, dh0, _ = rnnfast.rnn_backward(np.zeros((Tz, Nz, H)), dh_n, cache, g, backend=backend)
    assert dx.shape == shape and dh0.shape == (L, Nz, H)
    if Tz == 0:
        np.testing.assert_array_equal(dh0, dh_n)
    for gg in g:
        for a in gg:
            np.testing.assert_array_equal(a, 0)


def test_sizes_beyond_32_bit_blas_dimensions_are_rejected_clearly():
    if "cpu" not in BACKENDS:
        pytest.skip("cpu backend missing")
    x = np.broadcast_to(np.float32(0), (1, 1, 2**31))   # no memory behind it
    ws = make_weights(np.random.default_rng(0), 1, 4, 1, np.float32)
    with pytest.raises(ValueError, match="D = 2147483648 exceeds"):
        rnnfast.rnn_forward(x, None, ws, backend="cpu")


def test_unknown_backend_name_and_env_var(monkeypatch):
    rng, x, ws = _setup()
    with pytest.raises(ValueError, match="backend must be one of"):
        rnnfast.rnn_forward(x, None, ws, backend="tpu")
    monkeypatch.setenv("RNNFAST_BACKEND", "gpu9")
    with pytest.raises(ValueError, match="RNNFAST_BACKEND must be one of"):
        rnnfast.rnn_forward(x, None, ws)


def test_unavailable_backend_says_why():
    info = rnnfast.backends()
    missing = [k for k, v in info.items() if not v["available"]]
    if not missing:
        pytest.skip("every backend is available here")
    rng, x, ws = _setup()
    with pytest.raises(RuntimeError, match=f"backend '{missing[0]}' is not available: .+"):
        rnnfast.rnn_forward(x, None, ws, backend=missing[0])


def test_env_var_selects_backend(monkeypatch):
    import sys
    B = sys.modules["rnnfast.backends"]
    monkeypatch.setenv("RNNFAST_BACKEND", "numpy")
    assert B.resolve(None) == "numpy"
    assert B.resolve("cpu" if "cpu" in BACKENDS else "numpy") in BACKENDS   # explicit beats the env var
    monkeypatch.delenv("RNNFAST_BACKEND")
    assert B.resolve(None) == ("cpu" if "cpu" in BACKENDS else "numpy")
