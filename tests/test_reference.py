"""The NumPy reference proven first: central-difference gradient checks in float64 on small shapes, plus
hand-computed values for one step. Not a test of the fast kernels (see test_backends.py)."""
import numpy as np
import pytest

from rnnfast import reference as ref
from rnn_helpers import make_weights, zero_grads
from tolerances import FD, HAND


def _loss(x, h0, weights, c, act, dout, dh_n):
    out, h_n, _ = ref.rnn_forward(x, h0, weights, c, act, need_cache=False)
    return float(np.sum(out * dout) + np.sum(h_n * dh_n))


def _numgrad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + eps
        fp = f()
        a[i] = old - eps
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("bias,with_c", [(True, True), (False, False)])
def test_reference_gradients_match_finite_differences(act, L, bias, with_c):
    rng = np.random.default_rng(100 + L)
    T, N, D, H = 4, 2, 3, 5
    x = rng.standard_normal((T, N, D))
    h0 = rng.standard_normal((L, N, H)) * 0.5
    ws = make_weights(rng, D, H, L, np.float64, bias=bias, scale=0.6)
    c = rng.standard_normal((N, H)) * 0.5 if with_c else None
    dout = rng.standard_normal((T, N, H))
    dh_n = rng.standard_normal((L, N, H))
    if act == "relu":   # keep pre-activations away from the kink at 0, where the derivative is not defined
        x += np.sign(x) * 0.1
    _, _, cache = ref.rnn_forward(x, h0, ws, c, act)
    grads = zero_grads(ws)
    dx, dh0, dc = ref.rnn_backward(dout, dh_n, cache, grads)
    f = lambda: _loss(x, h0, ws, c, act, dout, dh_n)  # noqa: E731
    np.testing.assert_allclose(dx, _numgrad(f, x), **FD)
    np.testing.assert_allclose(dh0, _numgrad(f, h0), **FD)
    if with_c:
        np.testing.assert_allclose(dc, _numgrad(f, c), **FD)
    else:
        assert dc is None
    for k in range(L):
        for p, g in zip(ws[k], grads[k]):
            if p is not None:
                np.testing.assert_allclose(g, _numgrad(f, p), **FD)


def test_reference_one_step_by_hand():
    # N=1, D=1, H=2: z = x*W_ih + b_ih + h0 W_hh^T + b_hh, computed by hand
    x = np.array([[[2.0]]])
    h0 = np.array([[[0.5, -1.0]]])
    W_ih = np.array([[0.1], [-0.2]])
    W_hh = np.array([[1.0, 0.0], [0.5, 0.25]])
    b_ih = np.array([0.01, 0.02])
    b_hh = np.array([0.03, -0.04])
    z = np.array([2 * 0.1 + 0.01 + 0.5 * 1.0 + 0.03, 2 * -0.2 + 0.02 + 0.5 * 0.5 - 1.0 * 0.25 - 0.04])
    out, h_n, _ = ref.rnn_forward(x, h0, [(W_ih, W_hh, b_ih, b_hh)], nonlinearity="tanh")
    np.testing.assert_allclose(out[0, 0], np.tanh(z), **HAND)
    out, h_n, _ = ref.rnn_forward(x, h0, [(W_ih, W_hh, b_ih, b_hh)], nonlinearity="relu")
    np.testing.assert_allclose(out[0, 0], np.maximum(z, 0), **HAND)
    np.testing.assert_array_equal(h_n[0], out[-1])


def test_reference_zero_length_sequence_returns_h0():
    rng = np.random.default_rng(0)
    ws = make_weights(rng, 3, 4, 2, np.float64)
    h0 = rng.standard_normal((2, 5, 4))
    out, h_n, cache = ref.rnn_forward(np.zeros((0, 5, 3)), h0, ws)
    assert out.shape == (0, 5, 4)
    np.testing.assert_array_equal(h_n, h0)
    dh_n = rng.standard_normal((2, 5, 4))
    dx, dh0, _ = ref.rnn_backward(None, dh_n, cache, zero_grads(ws))
    assert dx.shape == (0, 5, 3)
    np.testing.assert_array_equal(dh0, dh_n)
