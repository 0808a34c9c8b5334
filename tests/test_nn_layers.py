"""Tests of the layers and losses in rnnfast.nn added for issue 4: Module, Embedding, OneHotRNN, Linear,
softmax_cross_entropy and mse. Oracles: central differences in float64, hand-written NumPy formulas, the
RNN layer on explicit one-hot vectors, and torch when installed. Not the RNN kernels (test_layer.py etc.)."""
from __future__ import annotations

import numpy as np
import pytest

import rnnfast
from rnnfast.nn import (RNN, Embedding, Linear, Module, OneHotRNN, TemporalAffine, mse,
                        softmax_cross_entropy)

BACKENDS = [b for b in ("numpy", "cpu") if rnnfast.backends()[b]["available"]]


def numeric_grad(f, a, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of a (modified in place)."""
    g = np.zeros(a.shape, dtype=np.float64)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + eps
        fp = f()
        a.flat[i] = old - eps
        fm = f()
        a.flat[i] = old
        g.flat[i] = (fp - fm) / (2 * eps)
    return g


def check_param_grads(layer, loss_and_backward, loss_only, rtol=1e-6, atol=1e-8):
    layer.zero_grad()
    loss_and_backward()
    analytic = {k: v.copy() for k, v in layer.grads.items()}
    for name, p in layer.params.items():
        num = numeric_grad(loss_only, p)
        np.testing.assert_allclose(analytic[name], num, rtol=rtol, atol=atol, err_msg=name)


# ---- Module ----


class _Two(Module):
    def __init__(self):
        super().__init__()
        self.a = Linear(3, 2, dtype=np.float64, seed=1)
        self.b = Embedding(4, 3, dtype=np.float64, seed=2)
        self.note = "not a layer"


def test_module_flat_names_state_dict_and_zero_grad():
    m = _Two()
    assert list(m.params) == ["a.weight", "a.bias", "b.weight"]
    assert m.params["a.weight"] is m.a.params["weight"]          # live arrays, not copies
    sd = m.state_dict()
    sd["a.weight"] += 1.0
    m2 = _Two()
    m2.load_state_dict(sd)
    np.testing.assert_array_equal(m2.params["a.weight"], m.params["a.weight"] + 1.0)
    m.grads["b.weight"][:] = 3
    m.zero_grad()
    assert not m.grads["b.weight"].any()
    with pytest.raises(KeyError, match="missing"):
        m.load_state_dict({"a.weight": sd["a.weight"]})
    with pytest.raises(ValueError, match="weight must have shape"):
        m.load_state_dict({**sd, "a.weight": np.zeros((2, 2))})
    m.eval()
    assert not m.a.training and not m.b.training and not m.training
    assert m.num_parameters() == 2 * 3 + 2 + 4 * 3


# ---- Embedding ----


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_forward_is_row_lookup(dtype):
    e = Embedding(7, 5, dtype=dtype, seed=0)
    ids = np.array([[0, 6, 3], [3, 3, 1]])
    out = e(ids)
    assert out.shape == (2, 3, 5) and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out[1, 0], e.params["weight"][3])


def test_embedding_backward_scatter_adds_repeated_ids_and_accumulates():
    rng = np.random.default_rng(0)
    e = Embedding(6, 4, dtype=np.float64, seed=0)
    ids = rng.integers(0, 6, (5, 3))
    ids[0, 0] = ids[1, 1] = ids[2, 2] = 2                     # repeats must sum
    dout = rng.standard_normal((5, 3, 4))
    want = np.zeros((6, 4))
    np.add.at(want, ids.ravel(), dout.reshape(-1, 4))
    e(ids)
    assert e.backward(dout) is None
    np.testing.assert_allclose(e.grads["weight"], want, rtol=1e-12, atol=1e-12)
    e(ids)
    e.backward(dout)
    np.testing.assert_allclose(e.grads["weight"], 2 * want, rtol=1e-12, atol=1e-12)   # += not =


def test_embedding_gradcheck():
    rng = np.random.default_rng(1)
    e = Embedding(5, 3, dtype=np.float64, seed=0)
    ids = rng.integers(0, 5, (4, 2))
    R = rng.standard_normal((4, 2, 3))

    def lb():
        out = e(ids)
        e.backward(R)
        return (out * R).sum()

    check_param_grads(e, lb, lambda: float((e(ids, need_cache=False) * R).sum()))


def test_embedding_bad_input():
    e = Embedding(5, 3)
    with pytest.raises(ValueError, match=r"token id 5, outside the vocabulary \[0, V\) = \[0, 5\)"):
        e(np.array([1, 5]))
    with pytest.raises(ValueError, match="token id -1"):
        e(np.array([-1]))
    with pytest.raises(TypeError, match="integer array"):
        e(np.array([1.0]))
    with pytest.raises(RuntimeError, match="preceding forward"):
        e.backward(np.zeros((1, 3), np.float32))
    e(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3\)"):
        e.backward(np.zeros((2, 4), np.float32))
    assert e(np.zeros((0, 2), np.int64)).shape == (0, 2, 3)
    with pytest.raises(ValueError, match="embedding_dim must be >= 1"):
        Embedding(3, 0)


# ---- OneHotRNN ----


def _onehot(ids, V, dtype):
    x = np.zeros(ids.shape + (V,), dtype=dtype)
    np.put_along_axis(x, ids[..., None], 1, axis=-1)
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", ["gather", "dense"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_onehot_rnn_equals_rnn_on_onehot_vectors(backend, path, dtype):
    V, H, L, T, N = 11, 6, 2, 5, 3
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (T, N))
    h0 = rng.standard_normal((L, N, H)).astype(dtype)
    c = rng.standard_normal((N, H)).astype(dtype)
    dout = rng.standard_normal((T, N, H)).astype(dtype)
    dh_n = rng.standard_normal((L, N, H)).astype(dtype)
    oh = OneHotRNN(V, H, L, dtype=dtype, backend=backend, seed=3, path=path)
    ref = RNN(V, H, L, dtype=dtype, backend=backend, seed=3)
    assert oh.path == path and list(oh.params) == list(ref.params)
    for k in ref.params:
        np.testing.assert_array_equal(oh.params[k], ref.params[k])      # same init, same names
    out, h_n = oh(ids, h0, c)
    out_r, h_n_r = ref(_onehot(ids, V, dtype), h0, c)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(out, out_r, **tol)
    np.testing.assert_allclose(h_n, h_n_r, **tol)
    dx, dh0, dc = oh.backward(dout, dh_n)
    _, dh0_r, dc_r = ref.backward(dout, dh_n)
    assert dx is None
    np.testing.assert_allclose(dh0, dh0_r, **tol)
    np.testing.assert_allclose(dc, dc_r, **tol)
    for k in ref.grads:
        np.testing.assert_allclose(oh.grads[k], ref.grads[k], err_msg=k, **tol)


def test_onehot_rnn_auto_path_and_batch_first():
    assert OneHotRNN(50, 8, backend="numpy").path == "gather"   # V > H: gather rows, identity GEMM of size H
    assert OneHotRNN(8, 50, backend="numpy").path == "dense"    # V <= H: the one-hot GEMM is the cheaper one
    if "cpu" in rnnfast.available():
        assert OneHotRNN(8, 50, backend="cpu").path == "gather"  # the cpu kernels take W_ih = None: no GEMM
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 9, (3, 4))                # (N, T)
    a = OneHotRNN(9, 5, batch_first=True, dtype=np.float64, seed=1, path="gather")
    b = OneHotRNN(9, 5, batch_first=False, dtype=np.float64, seed=1, path="dense")
    out_a, _ = a(ids)
    out_b, _ = b(ids.T)
    assert out_a.shape == (3, 4, 5)
    np.testing.assert_allclose(out_a, out_b.transpose(1, 0, 2), rtol=1e-12, atol=1e-13)
    d = rng.standard_normal((3, 4, 5))
    a.backward(d)
    b.backward(d.transpose(1, 0, 2).copy())
    for k in a.grads:
        np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-12, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("path", ["gather", "dense"])
def test_onehot_rnn_gradcheck(path):
    V, H, L, T, N = 6, 4, 2, 4, 2
    rng = np.random.default_rng(5)
    ids = rng.integers(0, V, (T, N))
    R = rng.standard_normal((T, N, H))
    oh = OneHotRNN(V, H, L, dtype=np.float64, seed=0, path=path)

    def lb():
        out, _ = oh(ids)
        oh.backward(R)
        return (out * R).sum()

    check_param_grads(oh, lb, lambda: float((oh(ids, need_cache=False)[0] * R).sum()))


def test_onehot_rnn_state_dict_moves_to_rnn():
    oh = OneHotRNN(12, 4, 2, seed=0)
    r = RNN(12, 4, 2, seed=9)
    r.load_state_dict(oh.state_dict())
    ids = np.array([[1, 11], [0, 3]])
    np.testing.assert_allclose(oh(ids)[0], r(_onehot(ids, 12, np.float32))[0], rtol=1e-6, atol=1e-6)


def test_onehot_rnn_bad_input():
    oh = OneHotRNN(5, 3)
    with pytest.raises(ValueError, match="token id 7"):
        oh(np.array([[7]]))
    with pytest.raises(ValueError, match=r"ids must have shape \(T, N\)"):
        oh(np.array([1, 2]))
    with pytest.raises(ValueError, match="path must be"):
        OneHotRNN(5, 3, path="sparse")
    with pytest.raises(ValueError, match="h0"):
        oh(np.array([[1]]), np.zeros((1, 2, 3), np.float32))


# ---- Linear ----


@pytest.mark.parametrize("shape", [(4, 3), (5, 2, 3), (1, 1, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_forward_any_leading_dims(shape, dtype):
    lin = Linear(3, 7, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    y = lin(x)
    want = np.einsum("...i,oi->...o", x.astype(np.float64), lin.params["weight"].astype(np.float64)) + \
        lin.params["bias"]
    assert y.shape == shape[:-1] + (7,) and y.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert TemporalAffine is Linear


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck_and_input_gradient(bias):
    rng = np.random.default_rng(3)
    lin = Linear(4, 3, bias=bias, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 2, 4))
    R = rng.standard_normal((5, 2, 3))

    def lb():
        y = lin(x)
        lin.backward(R)
        return (y * R).sum()

    check_param_grads(lin, lb, lambda: float((lin(x, need_cache=False) * R).sum()))
    lin(x)
    dx = lin.backward(R)
    np.testing.assert_allclose(dx, numeric_grad(lambda: float((lin(x, need_cache=False) * R).sum()), x),
                               rtol=1e-6, atol=1e-8)
    g = lin.grads["weight"].copy()
    lin(x)
    lin.backward(R)
    np.testing.assert_allclose(lin.grads["weight"], g + R.reshape(-1, 3).T @ x.reshape(-1, 4), rtol=1e-12)


def test_linear_bad_input():
    lin = Linear(3, 2)
    with pytest.raises(ValueError, match=r"\(\.\.\., D\) with D = in_features = 3"):
        lin(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="dtype float32"):
        lin(np.zeros((2, 3), np.float64))
    assert lin(np.zeros((0, 3), np.float32)).shape == (0, 2)
    lin.eval()
    lin(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="training mode"):
        lin.backward(np.zeros((2, 2), np.float32))


# ---- softmax cross-entropy ----


def _ce_naive(logits, targets, mask, denom):
    """float64, straight from the definition -log softmax(z)[y], weighted by the mask."""
    z = logits.astype(np.float64)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    t = np.where(mask != 0, targets, 0)
    lp = np.log(np.take_along_axis(p, t[..., None], -1)[..., 0])
    return -(lp * mask).sum() / denom


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cross_entropy_value_and_gradcheck(reduction):
    rng = np.random.default_rng(0)
    T, N, V = 4, 3, 5
    z = rng.standard_normal((T, N, V))
    y = rng.integers(0, V, (T, N))
    mask = rng.random((T, N)) > 0.3
    mask[0, 0] = True
    y[~mask] = -1                                            # masked targets may hold anything
    loss, dz = softmax_cross_entropy(z, y, mask=mask, reduction=reduction)
    denom = N if reduction == "sum" else mask.sum()
    assert loss == pytest.approx(_ce_naive(z, y, mask.astype(float), denom), rel=1e-12)
    num = numeric_grad(lambda: softmax_cross_entropy(z, y, mask=mask, reduction=reduction)[0], z)
    np.testing.assert_allclose(dz, num, rtol=1e-6, atol=1e-9)
    assert not dz[~mask].any()                               # no gradient from masked steps


def test_cross_entropy_sum_is_sum_over_steps_mean_over_batch():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 4, 3))
    y = rng.integers(0, 3, (6, 4))
    total = sum(softmax_cross_entropy(z[t], y[t])[0] for t in range(6))    # 2-D: mean over N
    assert softmax_cross_entropy(z, y)[0] == pytest.approx(total, rel=1e-12)
    lb, _ = softmax_cross_entropy(z.transpose(1, 0, 2), y.T, batch_first=True)
    assert lb == pytest.approx(total, rel=1e-12)


def test_cross_entropy_ignore_index_and_all_masked():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((3, 2, 4))
    y = np.array([[0, 3], [0, 1], [2, 0]])
    a = softmax_cross_entropy(z, y, ignore_index=0)
    b = softmax_cross_entropy(z, y, mask=y != 0)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    loss, dz = softmax_cross_entropy(z, y, mask=np.zeros((3, 2), bool), reduction="mean")
    assert loss == 0.0 and not dz.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_stable_for_large_logits(dtype):
    z = np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]], dtype=dtype)
    loss, dz = softmax_cross_entropy(z, np.array([1, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(dz)) and dz.dtype == np.dtype(dtype)
    assert loss == pytest.approx((1e4 + np.log(2)) / 2, rel=1e-6)
    shifted = softmax_cross_entropy(z.astype(np.float64) - 1e4 + 3, np.array([1, 0]))[0]
    assert loss == pytest.approx(shifted, rel=1e-6)


def test_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    z = rng.standard_normal((5, 3, 7))
    y = rng.integers(0, 7, (5, 3))
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(zt.reshape(-1, 7), torch.tensor(y.reshape(-1)), reduction="mean")
    lt.backward()
    loss, dz = softmax_cross_entropy(z, y, reduction="mean")
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_cross_entropy_bad_input():
    z = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"targets\[1, 2\] = 4 is outside the classes \[0, V\) = \[0, 4\)"):
        softmax_cross_entropy(z, np.array([[0, 0, 0], [0, 0, 4]]))
    with pytest.raises(ValueError, match=r"targets must have shape \(2, 3\)"):
        softmax_cross_entropy(z, np.zeros((3, 2), np.int64))
    with pytest.raises(TypeError, match="integer"):
        softmax_cross_entropy(z, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty batch"):
        softmax_cross_entropy(np.zeros((2, 0, 4)), np.zeros((2, 0), np.int64))
    with pytest.raises(ValueError, match="reduction"):
        softmax_cross_entropy(z, np.zeros((2, 3), np.int64), reduction="none")
    with pytest.raises(ValueError, match="mask must have"):
        softmax_cross_entropy(z, np.zeros((2, 3), np.int64), mask=np.ones(3))
    with pytest.raises(ValueError, match=r"\(T, N, V\) or \(N, V\)"):
        softmax_cross_entropy(np.zeros(4), np.zeros((), np.int64))
    with pytest.raises(TypeError, match="float32 or float64"):
        softmax_cross_entropy(np.zeros((2, 4), np.int64), np.zeros(2, np.int64))


# ---- mse ----


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_value_and_gradcheck(reduction):
    rng = np.random.default_rng(0)
    p = rng.standard_normal((4, 3, 2))
    t = rng.standard_normal((4, 3, 2))
    mask = rng.random((4, 3)) > 0.4
    loss, dp = mse(p, t, mask=mask, reduction=reduction)
    sq = ((p - t) ** 2 * mask[..., None]).sum()
    assert loss == pytest.approx(sq / (mask.sum() * 2) if reduction == "mean" else sq, rel=1e-12)
    np.testing.assert_allclose(dp, numeric_grad(lambda: mse(p, t, mask=mask, reduction=reduction)[0], p),
                               rtol=1e-6, atol=1e-9)
    assert mse(p, t)[0] == pytest.approx(((p - t) ** 2).mean(), rel=1e-12)


def test_mse_matches_torch_and_bad_input():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p, t = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    pt = torch.tensor(p, requires_grad=True)
    lt = torch.nn.functional.mse_loss(pt, torch.tensor(t))
    lt.backward()
    loss, dp = mse(p, t)
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(dp, pt.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="target must have pred's shape"):
        mse(p, t[:2])
    with pytest.raises(ValueError, match="empty batch"):
        mse(np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="mask"):
        mse(p, t, mask=np.ones(5))


def test_embedding_and_linear_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    e, lin = Embedding(6, 4, dtype=np.float64, seed=0), Linear(4, 3, dtype=np.float64, seed=0)
    te, tl = torch.nn.Embedding(6, 4).double(), torch.nn.Linear(4, 3).double()
    te.load_state_dict({k: torch.tensor(v) for k, v in e.state_dict().items()})
    tl.load_state_dict({k: torch.tensor(v) for k, v in lin.state_dict().items()})
    ids = rng.integers(0, 6, (5, 2))
    R = rng.standard_normal((5, 2, 3))
    y = lin(e(ids))
    e.backward(lin.backward(R))
    yt = tl(te(torch.tensor(ids)))
    (yt * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(e.grads["weight"], te.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(lin.grads["weight"], tl.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(lin.grads["bias"], tl.bias.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_keep_the_dtype_and_agree_across_dtypes(dtype):
    rng = np.random.default_rng(6)
    z, y = rng.standard_normal((4, 3, 5)), rng.integers(0, 5, (4, 3))
    p, t = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    l32, d32 = softmax_cross_entropy(z.astype(dtype), y)
    l64, d64 = softmax_cross_entropy(z, y)
    assert d32.dtype == np.dtype(dtype) and l32 == pytest.approx(l64, rel=1e-6)
    np.testing.assert_allclose(d32, d64, rtol=1e-5, atol=1e-7)
    m32, dm32 = mse(p.astype(dtype), t.astype(dtype))
    m64, dm64 = mse(p, t)
    assert dm32.dtype == np.dtype(dtype) and m32 == pytest.approx(m64, rel=1e-6)
    np.testing.assert_allclose(dm32, dm64, rtol=1e-5, atol=1e-7)
