"""LSTM and GRU: the NumPy reference proven by central differences (float64), the C++ kernels against the
reference on odd shapes (float32 and float64, both recurrence paths), PyTorch parity of the layers
(nn.LSTM / nn.GRU state dicts, outputs, final states, every gradient), bad input and layer bookkeeping.
Not lengths or bidirectional (test_bidir_lengths.py)."""
import functools

import numpy as np
import pytest

import rnnfast
import rnnfast.functional as F
from rnnfast import reference as R
from gated_helpers import make_weights, run_cell, zero_grads
from rnn_helpers import requires_cpu
from tolerances import FD_GATED, HAND, TOL64, TORCH32_DX, TORCH32_GRAD, TORCH32_OUT, assert_f32_close

CELLS = ["lstm", "gru"]


# ---- the reference, by central differences ----

def _loss(cell, x, h0, c0, ws, dout, dh_n, dc_n, dcs):
    if cell == "lstm":
        out, h_n, c_n, cache = R.lstm_forward(x, h0, c0, ws)
        return (out * dout).sum() + (h_n * dh_n).sum() + (c_n * dc_n).sum() + (cache.cs * dcs).sum()
    out, h_n, _ = R.gru_forward(x, h0, ws)
    return (out * dout).sum() + (h_n * dh_n).sum()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_reference_matches_finite_differences(cell, bias):
    rng = np.random.default_rng(11 + bias)
    T, N, D, H, L = 3, 2, 3, 4, 2
    x = rng.standard_normal((T, N, D))
    h0, c0 = rng.standard_normal((L, N, H)) * 0.5, rng.standard_normal((L, N, H)) * 0.5
    ws = make_weights(rng, cell, D, H, L, np.float64, bias=bias, scale=0.6)
    dout, dh_n, dc_n = rng.standard_normal((T, N, H)), rng.standard_normal((L, N, H)), rng.standard_normal((L, N, H))
    dcs = rng.standard_normal((L, T, N, H))
    g = zero_grads(ws)
    if cell == "lstm":
        *_, cache = R.lstm_forward(x, h0, c0, ws)
        dx, dh0, dc0 = R.lstm_backward(dout, dh_n, dc_n, cache, g, dcs)
        pairs = [(x, dx), (h0, dh0), (c0, dc0)]
    else:
        *_, cache = R.gru_forward(x, h0, ws)
        dx, dh0 = R.gru_backward(dout, dh_n, cache, g)
        pairs = [(x, dx), (h0, dh0)]
    pairs += [(w, gw) for wt, gt in zip(ws, g) for w, gw in zip(wt, gt) if w is not None]
    eps = 1e-6
    for a, ga in pairs:
        num = np.empty_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            lp = _loss(cell, x, h0, c0, ws, dout, dh_n, dc_n, dcs)
            a[idx] = old - eps
            lm = _loss(cell, x, h0, c0, ws, dout, dh_n, dc_n, dcs)
            a[idx] = old
            num[idx] = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(ga, num, **FD_GATED)


def test_reference_step_by_hand():
    """One LSTM and one GRU step with H = 1, D = 1 computed by hand."""
    s = lambda v: 1 / (1 + np.exp(-v))   # noqa: E731
    x, h, c = np.array([[0.5]]), np.array([[-0.3]]), np.array([[0.2]])
    W_ih, W_hh = np.array([[0.1], [0.2], [0.3], [0.4]]), np.array([[-0.5], [0.6], [-0.7], [0.8]])
    b = np.array([0.01, 0.02, 0.03, 0.04])
    a = [0.1 * 0.5 - 0.5 * -0.3 + 0.02, 0.2 * 0.5 + 0.6 * -0.3 + 0.04, 0.3 * 0.5 - 0.7 * -0.3 + 0.06,
         0.4 * 0.5 + 0.8 * -0.3 + 0.08]
    i, f, g, o = s(a[0]), s(a[1]), np.tanh(a[2]), s(a[3])
    c1 = f * 0.2 + i * g
    h1, c1_, _ = R.lstm_step_forward(x, h, c, W_ih, W_hh, b, b)
    np.testing.assert_allclose(c1_[0, 0], c1, **HAND)
    np.testing.assert_allclose(h1[0, 0], o * np.tanh(c1), **HAND)
    W_ih3, W_hh3, b3 = W_ih[:3], W_hh[:3], b[:3]
    r = s(0.1 * 0.5 + 0.01 - 0.5 * -0.3 + 0.01)
    z = s(0.2 * 0.5 + 0.02 + 0.6 * -0.3 + 0.02)
    n = np.tanh(0.3 * 0.5 + 0.03 + r * (-0.7 * -0.3 + 0.03))
    hg, _, _ = R.gru_step_forward(x, h, W_ih3, W_hh3, b3, b3)
    np.testing.assert_allclose(hg[0, 0], (1 - z) * n + z * -0.3, **HAND)


# ---- the C++ kernels against the reference ----

SHAPES = [  # (T, N, D, H, L)
    (1, 1, 1, 1, 1), (7, 3, 5, 31, 2), (64, 1, 65, 128, 1), (7, 32, 5, 257, 1), (1, 3, 65, 33, 2),
    (64, 32, 1, 31, 2), (7, 1, 65, 257, 1),
]


def _problem(seed, cell, T, N, D, H, L, dtype, bias, with_h0, with_d):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, D))
    h0 = rng.standard_normal((L, N, H)) * 0.5 if with_h0 else None
    c0 = rng.standard_normal((L, N, H)) * 0.5 if with_h0 else None
    ws = make_weights(rng, cell, D, H, L, np.float64, bias=bias)
    dout = rng.standard_normal((T, N, H))
    dh_n = rng.standard_normal((L, N, H)) if with_d else None
    dc_n = rng.standard_normal((L, N, H)) if with_d else None
    cast = lambda a: None if a is None else a.astype(dtype)   # noqa: E731
    states = (cast(h0), cast(c0)) if cell == "lstm" else (cast(h0),)
    douts = (cast(dout), cast(dh_n), cast(dc_n)) if cell == "lstm" else (cast(dout), cast(dh_n))
    return cast(x), states, [tuple(cast(a) for a in w) for w in ws], douts


@functools.lru_cache(maxsize=None)
def _case(cell, i):
    """Problem i for `cell` and its NumPy-reference results in float64 and float32, computed once and shared
    by the three recurrence paths (the reference does not depend on the path)."""
    bias, with_h0, with_d = i % 2 == 0, i % 3 != 2, i % 4 != 3
    args64 = _problem(i, cell, *SHAPES[i], np.float64, bias, with_h0, with_d)
    args32 = _problem(i, cell, *SHAPES[i], np.float32, bias, with_h0, with_d)
    return args64, run_cell(cell, "numpy", *args64), args32, run_cell(cell, "numpy", *args32)


@requires_cpu
@pytest.mark.parametrize("path", ["matvec", "blas", "auto"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-N{}-D{}-H{}-L{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_cpu_matches_reference(cell, shape, path, isa):
    """cpu vs numpy, forward and every gradient, float64 (tight) and float32 (the float32 rule of
    docs/design.md), in every kernel build (ISA) this CPU runs, with each recurrence path forced:
    small-batch matrix-vector kernels, a BLAS GEMM per step and the automatic choice."""
    from rnnfast import _C
    args64, ref64, args32, ref32 = _case(cell, SHAPES.index(shape))
    old = _C.recurrence()
    _C.set_recurrence(path)
    try:
        got64 = run_cell(cell, "cpu", *args64)
        for j, (g, r) in enumerate(zip(got64, ref64)):
            assert g.dtype == np.float64
            np.testing.assert_allclose(g, r, **TOL64, err_msg=f"float64 output {j}")
        got32 = run_cell(cell, "cpu", *args32)
        for j, (g, r64, r32) in enumerate(zip(got32, ref64, ref32)):
            assert g.dtype == np.float32
            assert_f32_close(g, r64, r32, name=f"float32 output {j}")
    finally:
        _C.set_recurrence(old)


@requires_cpu
@pytest.mark.parametrize("cell", CELLS)
def test_cache_crosses_backends_and_inference_matches(cell):
    """The cache is a contract: forward on one backend, backward on the other. Inference (no cache) gives
    the same outputs as a training forward."""
    x, states, ws, douts = _problem(3, cell, 5, 2, 4, 9, 3, np.float64, True, True, True)
    base = run_cell(cell, "numpy", x, states, ws, douts)
    fwd = F.lstm_forward if cell == "lstm" else F.gru_forward
    bwd = F.lstm_backward if cell == "lstm" else F.gru_backward
    for a, b in (("cpu", "numpy"), ("numpy", "cpu")):
        res = fwd(x, *states, ws, True, a)
        g = zero_grads(ws)
        back = bwd(*douts, res[-1], g, b)
        got = list(res[:-1]) + list(back) + [t for gt in g for t in gt]
        for j, (u, v) in enumerate(zip(got, base)):
            np.testing.assert_allclose(u, v, **TOL64, err_msg=f"{a}->{b} output {j}")
        inf = fwd(x, *states, ws, False, a)
        assert inf[-1] is None
        for u, v in zip(inf[:-1], res[:-1]):
            np.testing.assert_allclose(u, v, **TOL64)


# ---- PyTorch parity (layers, state dicts unchanged) ----

def _torch_case(cell, bidirectional, L=2, T=6, N=3, D=5, H=7, batch_first=False, seed=0):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    tcls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    m = tcls(D, H, num_layers=L, bidirectional=bidirectional, batch_first=batch_first).double()
    ocls = rnnfast.LSTM if cell == "lstm" else rnnfast.GRU
    layers = {b: ocls(D, H, num_layers=L, bidirectional=bidirectional, batch_first=batch_first, dtype=np.float64,
                      backend=b) for b in ("numpy", "cpu") if rnnfast.backends()[b]["available"]}
    for lay in layers.values():
        lay.load_state_dict(m.state_dict())         # torch's state dict, unchanged
    rng = np.random.default_rng(seed)
    dirs = 2 if bidirectional else 1
    xs = (N, T, D) if batch_first else (T, N, D)
    x = rng.standard_normal(xs)
    h0, c0 = rng.standard_normal((L * dirs, N, H)), rng.standard_normal((L * dirs, N, H))
    dout = rng.standard_normal(xs[:2] + (dirs * H,))
    dh_n, dc_n = rng.standard_normal((L * dirs, N, H)), rng.standard_normal((L * dirs, N, H))
    return torch, m, layers, x, h0, c0, dout, dh_n, dc_n


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_layer_matches_torch(cell, bidirectional, batch_first):
    torch, m, layers, x, h0, c0, dout, dh_n, dc_n = _torch_case(cell, bidirectional, batch_first=batch_first)
    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    if cell == "lstm":
        out_t, (hn_t, cn_t) = m(xt, (h0t, c0t))
        loss = (out_t * torch.tensor(dout)).sum() + (hn_t * torch.tensor(dh_n)).sum() + \
            (cn_t * torch.tensor(dc_n)).sum()
        want = [out_t, hn_t, cn_t]
    else:
        out_t, hn_t = m(xt, h0t)
        loss = (out_t * torch.tensor(dout)).sum() + (hn_t * torch.tensor(dh_n)).sum()
        want = [out_t, hn_t]
    loss.backward()
    want = [w.detach().numpy() for w in want] + [xt.grad.numpy(), h0t.grad.numpy()] + \
        ([c0t.grad.numpy()] if cell == "lstm" else [])
    tgrads = {k: p.grad.numpy() for k, p in m.named_parameters()}
    for b, lay in layers.items():
        if cell == "lstm":
            out, (h_n, c_n) = lay(x, (h0, c0))
            dx, (dh0, dc0) = lay.backward(dout, dh_n, dc_n)
            got = [out, h_n, c_n, dx, dh0, dc0]
        else:
            out, h_n = lay(x, h0)
            dx, dh0 = lay.backward(dout, dh_n)
            got = [out, h_n, dx, dh0]
        for j, (g, w) in enumerate(zip(got, want)):
            np.testing.assert_allclose(g, w, **TOL64, err_msg=f"{b} output {j}")
        assert set(lay.grads) == set(tgrads)
        for k in tgrads:
            np.testing.assert_allclose(lay.grads[k], tgrads[k], **TOL64, err_msg=f"{b} {k}")


@requires_cpu
@pytest.mark.parametrize("cell", CELLS)
def test_layer_float32_matches_torch(cell):
    """float32 layers on the cpu backend against torch float32 (no h0: zeros on both sides)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(9, 20, num_layers=2)
    lay = (rnnfast.LSTM if cell == "lstm" else rnnfast.GRU)(9, 20, num_layers=2, backend="cpu")
    lay.load_state_dict(m.state_dict())
    x = np.random.default_rng(1).standard_normal((11, 4, 9)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    out_t = m(xt)[0]
    out_t.sum().backward()
    out = lay(x)[0]
    dx = lay.backward(np.ones_like(out))[0]
    np.testing.assert_allclose(out, out_t.detach().numpy(), **TORCH32_OUT)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TORCH32_DX)
    for k, p in m.named_parameters():
        np.testing.assert_allclose(lay.grads[k], p.grad.numpy(), **TORCH32_GRAD, err_msg=k)


# ---- bad input ----

@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=requires_cpu)])
def test_bad_gate_stacked_shapes(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3))
    ws = make_weights(rng, "lstm", 3, 10, 1, np.float64)
    bad = [(ws[0][0], ws[0][1][:10], ws[0][2], ws[0][3])]               # W_hh (H, H) instead of (4H, H)
    with pytest.raises(ValueError, match=r"weight_hh_l0 must have shape \(4H, H\)"):
        F.lstm_forward(x, None, None, bad, backend=backend)
    bad = [(ws[0][0][:30], ws[0][1], ws[0][2], ws[0][3])]                # W_ih (3H, D)
    with pytest.raises(ValueError, match=r"weight_ih_l0 must have shape \(4H, D\) = \(40, 3\), got \(30, 3\)"):
        F.lstm_forward(x, None, None, bad, backend=backend)
    bad = [(ws[0][0], ws[0][1], ws[0][2][:30], ws[0][3])]
    with pytest.raises(ValueError, match=r"bias_ih_l0 must have shape \(4H\) = \(40\)"):
        F.lstm_forward(x, None, None, bad, backend=backend)
    with pytest.raises(ValueError, match=r"c0 must have shape \(L, N, H\) = \(1, 2, 10\)"):
        F.lstm_forward(x, None, np.zeros((1, 3, 10)), ws, backend=backend)
    with pytest.raises(ValueError, match=r"weight_hh_l0 must have shape \(3H, H\)"):
        F.gru_forward(x, None, ws, backend=backend)                      # LSTM weights given to a GRU
    with pytest.raises(TypeError, match=r"weight_ih_l0 must have dtype float64"):
        F.lstm_forward(x, None, None, [(ws[0][0].astype(np.float32),) + ws[0][1:]], backend=backend)
    gws = make_weights(rng, "gru", 3, 10, 1, np.float64)
    out, h_n, cache = F.gru_forward(x, None, gws, backend=backend)
    with pytest.raises(ValueError, match=r"dh_n must have shape \(L, N, H\) = \(1, 2, 10\)"):
        F.gru_backward(None, np.zeros((1, 2, 9)), cache, zero_grads(gws), backend=backend)
    with pytest.raises(TypeError, match="cache"):
        F.lstm_backward(None, None, None, cache, zero_grads(gws), backend=backend)


def test_cuda_backend_refused_by_layers():
    if not rnnfast.backends()["cuda"]["available"]:
        pytest.skip("no cuda backend here")
    with pytest.raises(ValueError, match="no CUDA kernels"):
        rnnfast.LSTM(3, 4, backend="cuda")


# ---- layer bookkeeping ----

@pytest.mark.parametrize("cell", CELLS)
def test_layer_protocol(cell):
    cls = rnnfast.LSTM if cell == "lstm" else rnnfast.GRU
    G = 4 if cell == "lstm" else 3
    lay = cls(5, 6, num_layers=2, seed=3, bidirectional=True)
    assert lay.params["weight_ih_l1_reverse"].shape == (G * 6, 12)
    assert list(lay.params)[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l0_reverse"]
    assert cls(5, 6, bias=False).params.keys() == {"weight_ih_l0", "weight_hh_l0"}
    other = cls(5, 6, num_layers=2, seed=4, bidirectional=True)
    other.load_state_dict(lay.state_dict())
    x = np.random.default_rng(0).standard_normal((4, 2, 5)).astype(np.float32)
    np.testing.assert_array_equal(lay(x)[0], other(x)[0])
    out = lay(x)[0]
    assert out.shape == (4, 2, 12)
    lay.backward(np.ones_like(out))
    with pytest.raises(RuntimeError, match="once per forward"):
        lay.backward(np.ones_like(out))
    lay.eval()
    lay(x)
    with pytest.raises(RuntimeError):
        lay.backward(np.ones_like(out))
    with pytest.raises(TypeError, match="dtype float32"):
        lay(x.astype(np.float64))
    with pytest.raises(KeyError, match="missing"):
        lay.load_state_dict({})
    assert repr(lay).startswith(cls.__name__ + "(5, 6")


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=requires_cpu)])
@pytest.mark.parametrize("cell", CELLS)
def test_empty_sizes_nan_and_readonly(cell, backend):
    """T = 0 keeps the initial states and passes dh_n/dc_n to dh0/dc0; N = 0 gives empty results; NaN in
    the input propagates instead of crashing; read-only gradients are refused by name."""
    rng = np.random.default_rng(2)
    ws = make_weights(rng, cell, 3, 4, 2, np.float64)
    ns = 2 if cell == "lstm" else 1
    st = tuple(rng.standard_normal((2, 2, 4)) for _ in range(ns))
    d = (np.zeros((0, 2, 4)),) + tuple(rng.standard_normal((2, 2, 4)) for _ in range(ns))
    r = run_cell(cell, backend, np.zeros((0, 2, 3)), st, ws, d)
    for j in range(ns):
        np.testing.assert_array_equal(r[1 + j], st[j])             # final states = initial states
        np.testing.assert_array_equal(r[2 + ns + j], d[1 + j])     # dh0 = dh_n (dc0 = dc_n)
    assert all(not g.any() for g in r[2 + 2 * ns:])
    r = run_cell(cell, backend, np.zeros((3, 0, 3)), tuple(s[:, :0] for s in st), ws,
                 (np.zeros((3, 0, 4)),) + tuple(s[:, :0] for s in d[1:]))
    assert r[0].shape == (3, 0, 4) and all(not g.any() for g in r[2 + 2 * ns:])
    x = rng.standard_normal((4, 2, 3))
    x[1, 0, 0] = np.nan
    r = run_cell(cell, backend, x, st, ws, (rng.standard_normal((4, 2, 4)),) + d[1:])
    assert np.isnan(r[0][1:, 0]).all() and np.isfinite(r[0][:, 1]).all()
    fwd = F.lstm_forward if cell == "lstm" else F.gru_forward
    bwd = F.lstm_backward if cell == "lstm" else F.gru_backward
    cache = fwd(x, *st, ws, True, backend)[-1]
    g = zero_grads(ws)
    g[1][0].flags.writeable = False
    with pytest.raises(ValueError, match="dW_ih_l1 must be writeable"):
        bwd(None, *d[1:], cache, g, backend)
