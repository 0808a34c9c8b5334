"""LSTM with projections (proj_size P > 0): the NumPy reference against central differences, the CPU kernel
against the reference, and rnnfast.torch.LSTM(proj_size=P) against torch.nn.LSTM (outputs, final states,
every gradient; float32 and float64; bias, layers, batch_first, bidirectional, packed, given states), and the
NumPy-API layer rnnfast.nn.LSTM(proj_size=P) against torch.nn.LSTM with lengths and state dicts both ways.

What it is not: the drop-in's other features (test_torch_features.py). The reference and kernel tests need
no torch; the drop-in tests skip without it.
"""
import numpy as np
import pytest

from rnnfast import _lstm_proj as LP
from rnnfast import reference as ref

BACKENDS = ["numpy", "cpu"]


def _weights(rng, L, dirs, D, H, P, bias, dtype):
    out = []
    for k in range(L):
        Dk = D if k == 0 else dirs * P
        for _ in range(dirs):
            w = [rng.standard_normal(s).astype(dtype) * 0.5 for s in ((4 * H, Dk), (4 * H, P))]
            b = [rng.standard_normal(4 * H).astype(dtype) * 0.5 for _ in range(2)] if bias else [None, None]
            out.append((w[0], w[1], b[0], b[1], rng.standard_normal((P, H)).astype(dtype) * 0.5))
    return out


def _loss_and_grads(backend, x, h0, c0, W, lengths, bidirectional, do, dh, dc):
    out, h_n, c_n, cache = LP.lstm_proj_forward(x, h0, c0, W, True, backend, lengths, bidirectional)
    grads = [tuple(None if w is None else np.zeros_like(w) for w in layer) for layer in W]
    dx, dh0, dc0 = LP.lstm_proj_backward(do, dh, dc, cache, grads)
    loss = (out * do).sum() + (h_n * dh).sum() + (c_n * dc).sum()
    return loss, (out, h_n, c_n), (dx, dh0, dc0, grads)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_reference_matches_central_differences(reverse, with_lengths):
    rng = np.random.default_rng(0)
    T, N, D, H, P = 4, 3, 2, 3, 2
    x = rng.standard_normal((T, N, D))
    h0, c0 = rng.standard_normal((N, P)), rng.standard_normal((N, H))
    W_ih, W_hh, b_ih, b_hh, W_hr = _weights(rng, 1, 1, D, H, P, True, np.float64)[0]
    lengths = np.array([4, 1, 0]) if with_lengths else None
    do, dh, dc = rng.standard_normal((T, N, P)), rng.standard_normal((N, P)), rng.standard_normal((N, H))
    args = [x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hr]

    def loss():
        out, h_n, c_n, _ = ref.lstm_proj_forward(*args, lengths=lengths, reverse=reverse)
        return (out * do).sum() + (h_n * dh).sum() + (c_n * dc).sum()

    _, _, _, cache = ref.lstm_proj_forward(*args, lengths=lengths, reverse=reverse)
    grads = tuple(np.zeros_like(a) for a in (W_ih, W_hh, b_ih, b_hh, W_hr))
    dx, dh0, dc0 = ref.lstm_proj_backward(do, dh, dc, x, h0, c0, cache, W_ih, W_hh, W_hr, grads, lengths, reverse)
    analytic = [dx, dh0, dc0, *grads]
    for a, g in zip(args, analytic):
        num = np.empty_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + 1e-6
            up = loss()
            a[i] = old - 1e-6
            num[i] = (up - loss()) / 2e-6
            a[i] = old
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("T,N,D,H,P", [(1, 1, 1, 2, 1), (7, 3, 5, 31, 7), (5, 32, 65, 9, 4)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("bidirectional,with_lengths,bias", [(False, False, True), (True, True, False),
                                                             (True, False, True), (False, True, True)],
                         ids=["uni", "bi-lengths-nobias", "bi", "uni-lengths"])
def test_cpu_kernel_matches_reference(dtype, T, N, D, H, P, bidirectional, with_lengths, bias):
    rng = np.random.default_rng(1)
    dirs = 2 if bidirectional else 1
    L = 2
    W = _weights(rng, L, dirs, D, H, P, bias, dtype)
    x = rng.standard_normal((T, N, D)).astype(dtype)
    h0 = rng.standard_normal((L * dirs, N, P)).astype(dtype)
    c0 = rng.standard_normal((L * dirs, N, H)).astype(dtype)
    lengths = rng.integers(0, T + 1, N) if with_lengths else None
    do = rng.standard_normal((T, N, dirs * P)).astype(dtype)
    dh, dc = rng.standard_normal(h0.shape).astype(dtype), rng.standard_normal(c0.shape).astype(dtype)
    _, fa, ga = _loss_and_grads("cpu", x, h0, c0, W, lengths, bidirectional, do, dh, dc)
    W64 = [tuple(None if w is None else w.astype(np.float64) for w in layer) for layer in W]
    up = [a.astype(np.float64) for a in (x, h0, c0, do, dh, dc)]
    _, fr, gr = _loss_and_grads("numpy", up[0], up[1], up[2], W64, lengths, bidirectional, *up[3:])
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    flat = lambda g: list(g[:3]) + [a for layer in g[3] for a in layer if a is not None]  # noqa: E731
    for a, b in zip(list(fa) + flat(ga), list(fr) + flat(gr)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments_name_the_parameter_and_change_nothing(backend):
    rng = np.random.default_rng(2)
    W = _weights(rng, 1, 1, 3, 4, 2, True, np.float64)
    x = rng.standard_normal((5, 2, 3))
    bad = [W[0][:4] + (np.zeros((2, 3)),)]
    with pytest.raises(ValueError, match=r"weight_hh_l0 must have shape \(4H, P\) = \(16, 2\), got \(16, 3\)"):
        LP.lstm_proj_forward(x, None, None, [W[0][:1] + (np.zeros((16, 3)),) + W[0][2:]], True, backend)
    with pytest.raises(ValueError, match=r"weight_ih_l0 must have shape \(4H, D\) = \(12, 3\)"):   # H from W_hr
        LP.lstm_proj_forward(x, None, None, bad, True, backend)
    with pytest.raises(ValueError, match=r"weight_hr_l1 must have shape \(P, H\) = \(2, 4\), got \(2, 3\)"):
        W2 = _weights(rng, 2, 1, 3, 4, 2, True, np.float64)
        LP.lstm_proj_forward(x, None, None, [W2[0], W2[1][:4] + (np.zeros((2, 3)),)], True, backend)
    with pytest.raises(ValueError, match=r"h0 must have shape \(L, N, P\) = \(1, 2, 2\)"):
        LP.lstm_proj_forward(x, np.zeros((1, 2, 4)), None, W, True, backend)
    with pytest.raises(ValueError, match=r"lengths\[1\] = 6 is outside \[0, T\] = \[0, 5\]"):
        LP.lstm_proj_forward(x, None, None, W, True, backend, lengths=np.array([1, 6]))
    with pytest.raises(ValueError, match="proj_size P = 4 must be smaller than hidden_size H = 4"):
        LP.lstm_proj_forward(x, None, None, [W[0][:1] + (np.zeros((16, 4)),) + W[0][2:4] + (np.zeros((4, 4)),)],
                             True, backend)
    out, h_n, c_n, cache = LP.lstm_proj_forward(x, None, None, W, True, backend)
    grads = [tuple(np.zeros_like(w) for w in W[0])]
    grads_bad = [grads[0][:4] + (np.zeros((2, 3)),)]
    with pytest.raises(ValueError, match="dW_hr_l0"):
        LP.lstm_proj_backward(np.ones_like(out), None, None, cache, grads_bad)
    assert all(not g.any() for g in grads_bad[0])          # nothing accumulated before the refusal
    with pytest.raises(ValueError, match=r"dout must have shape \(T, N, P\) = \(5, 2, 2\)"):
        LP.lstm_proj_backward(np.ones((5, 2, 4)), None, None, cache, grads)
    with pytest.raises((ValueError, RuntimeError), match="cuda"):     # refused, or not even available here
        LP._kernels("cuda")


# ---- the drop-in against torch.nn.LSTM(proj_size=P) ----

CONFIGS = [
    dict(),
    dict(num_layers=3),
    dict(bias=False),
    dict(batch_first=True, num_layers=2),
    dict(bidirectional=True),
    dict(bidirectional=True, num_layers=2, batch_first=True, bias=False),
]


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["h0zero", "h0given"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}_{v}" for k, v in c.items()) or "default")
def test_drop_in_matches_torch_outputs_final_states_and_all_gradients(cfg, packed, with_hx, dtype_name):
    torch = pytest.importorskip("torch")
    rt = pytest.importorskip("rnnfast.torch")
    from torch.nn.utils.rnn import pack_padded_sequence
    from torch.utils._pytree import tree_leaves
    torch.set_num_threads(1)
    dtype = getattr(torch, dtype_name)
    D, H, P, T, N = 5, 7, 3, 6, 4
    torch.manual_seed(0)
    ref_m = torch.nn.LSTM(D, H, proj_size=P, dtype=dtype, **cfg)
    ours = rt.LSTM(D, H, proj_size=P, dtype=dtype, **cfg)
    ours.load_state_dict(ref_m.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref_m.named_parameters()]
    assert "weight_hr_l0" in ours.state_dict()
    g = torch.Generator().manual_seed(1)
    bf = cfg.get("batch_first", False)
    x = torch.randn(*((N, T, D) if bf else (T, N, D)), dtype=dtype, generator=g)
    LD = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    hx = (torch.randn(LD, N, P, dtype=dtype, generator=g), torch.randn(LD, N, H, dtype=dtype, generator=g))
    results = []
    for m in (ours, ref_m):
        xx = x.clone().requires_grad_(True)
        states = tuple(s.clone().requires_grad_(True) for s in hx)
        inp = pack_padded_sequence(xx, torch.tensor([6, 2, 5, 1]), batch_first=bf, enforce_sorted=False) \
            if packed else xx
        out = m(inp, states if with_hx else None)
        leaves = [t for t in tree_leaves(out) if t.is_floating_point()]
        loss = sum((t * torch.linspace(-1, 1, t.numel(), dtype=dtype).reshape(t.shape)).sum() for t in leaves)
        m.zero_grad()
        loss.backward()
        results.append(leaves + [xx.grad] + ([s.grad for s in states] if with_hx else [])
                       + [p.grad for p in m.parameters()])
    tol = dict(rtol=1e-4, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **tol)


# ---- the NumPy-API layer rnnfast.nn.LSTM(proj_size=P) against torch.nn.LSTM ----

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", [dict(), dict(bidirectional=True, num_layers=2, batch_first=True),
                                 dict(bias=False, num_layers=2)], ids=["default", "bi-2-bf", "nobias-2"])
def test_layer_matches_torch_with_lengths_and_state_dicts(backend, cfg):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    from rnnfast import nn as rnn
    torch.set_num_threads(1)
    D, H, P, T, N = 3, 6, 2, 5, 3
    m = rnn.LSTM(D, H, proj_size=P, dtype=np.float64, backend=backend, seed=0, **cfg)
    t = torch.nn.LSTM(D, H, proj_size=P, dtype=torch.float64, **cfg)
    assert list(m.state_dict()) == list(t.state_dict())
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    bf = cfg.get("batch_first", False)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, T, D) if bf else (T, N, D))
    lengths = np.array([5, 2, 4])
    out, (h_n, c_n) = m(x, lengths=lengths)
    do = rng.standard_normal(out.shape)
    dh, dc = rng.standard_normal(h_n.shape), rng.standard_normal(c_n.shape)
    dx, _ = m.backward(do, dh, dc)
    xt = torch.from_numpy(x).requires_grad_(True)
    to, (th, tc) = t(pack_padded_sequence(xt, torch.from_numpy(lengths), batch_first=bf, enforce_sorted=False))
    to = pad_packed_sequence(to, batch_first=bf, total_length=T)[0]
    loss = (to * torch.from_numpy(do)).sum() + (th * torch.from_numpy(dh)).sum() + (tc * torch.from_numpy(dc)).sum()
    loss.backward()
    tol = dict(rtol=1e-9, atol=1e-11)
    for a, b in [(out, to), (h_n, th), (c_n, tc), (dx, xt.grad)]:
        np.testing.assert_allclose(a, b.detach().numpy(), **tol)
    for name, p in t.named_parameters():
        np.testing.assert_allclose(m.grads[name], p.grad.numpy(), **tol)
    back = rnn.LSTM(D, H, proj_size=P, dtype=np.float64, backend=backend, seed=7, **cfg)
    back.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    np.testing.assert_allclose(back(x, lengths=lengths)[0], out, **tol)


def test_layer_refuses_bad_proj_size():
    from rnnfast import nn as rnn
    with pytest.raises(ValueError, match=r"proj_size must be smaller than hidden_size \(4\), got 4"):
        rnn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="proj_size must be >= 0"):
        rnn.LSTM(3, 4, proj_size=-1)
    with pytest.raises(TypeError, match="proj_size must be an int"):
        rnn.LSTM(3, 4, proj_size=1.5)
