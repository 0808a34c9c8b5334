"""Tests of rnnfast.compat.cs231n against the cs231n captioning assignment's contract.

What it is: the assignment notebook's numeric checks (np.linspace inputs, the values its notebook prints),
a small per-step implementation written here from the formulas as a second oracle, central-difference
gradient checks that perturb arrays in place as the assignment's checker does, and bad-input checks.
What it is not: a timing test (benchmarks/bench_cs231n.py measures the speed-up).
"""
import importlib

import numpy as np
import pytest

from rnnfast.compat import cs231n as C


def rel_error(x, y):
    return np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y)))


def num_grad(f, x, df, h=1e-5):
    """Central differences of sum(f(x) * df) w.r.t. x, perturbing x in place (as the assignment does)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        x[ix] = old + h
        pos = np.array(f(x), copy=True)
        x[ix] = old - h
        neg = np.array(f(x), copy=True)
        x[ix] = old
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def num_grad_scalar(f, x, h=1e-5):
    return num_grad(lambda v: np.array(f(v)), x, np.array(1.0), h)


# ---- independent per-step oracles, straight from the formulas ----


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def oracle_rnn(x, h0, Wx, Wh, b):
    N, T, _ = x.shape
    h, out = h0, []
    for t in range(T):
        h = np.tanh(x[:, t] @ Wx + h @ Wh + b)
        out.append(h)
    return np.stack(out, axis=1)


def oracle_lstm(x, h0, Wx, Wh, b):
    N, T, _ = x.shape
    H = h0.shape[1]
    h, c, out = h0, np.zeros_like(h0), []
    for t in range(T):
        a = x[:, t] @ Wx + h @ Wh + b
        i, f, o, g = _sig(a[:, :H]), _sig(a[:, H:2 * H]), _sig(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


# ---- vanilla RNN ----


def test_rnn_step_forward_matches_notebook():
    N, D, H = 3, 10, 4
    x = np.linspace(-0.4, 0.7, num=N * D).reshape(N, D)
    prev_h = np.linspace(-0.2, 0.5, num=N * H).reshape(N, H)
    Wx = np.linspace(-0.1, 0.9, num=D * H).reshape(D, H)
    Wh = np.linspace(-0.3, 0.7, num=H * H).reshape(H, H)
    b = np.linspace(-0.2, 0.4, num=H)
    next_h, _ = C.rnn_step_forward(x, prev_h, Wx, Wh, b)
    expected = np.asarray([[-0.58172089, -0.50182032, -0.41232771, -0.31410098],
                           [0.66854692, 0.79562378, 0.87755553, 0.92795967],
                           [0.97934501, 0.99144213, 0.99646691, 0.99854353]])   # printed by the notebook
    assert rel_error(next_h, expected) < 1e-7
    assert rel_error(next_h, np.tanh(x @ Wx + prev_h @ Wh + b)) < 1e-14


def test_rnn_step_backward_gradcheck():
    rng = np.random.default_rng(231)
    N, D, H = 4, 5, 6
    x, h, Wx, Wh, b = (rng.standard_normal(s) for s in ((N, D), (N, H), (D, H), (H, H), (H,)))
    out, cache = C.rnn_step_forward(x, h, Wx, Wh, b)
    dnext = rng.standard_normal(out.shape)
    dx, dprev_h, dWx, dWh, db = C.rnn_step_backward(dnext, cache)
    assert rel_error(dx, num_grad(lambda v: C.rnn_step_forward(v, h, Wx, Wh, b)[0], x, dnext)) < 1e-8
    assert rel_error(dprev_h, num_grad(lambda v: C.rnn_step_forward(x, v, Wx, Wh, b)[0], h, dnext)) < 1e-8
    assert rel_error(dWx, num_grad(lambda v: C.rnn_step_forward(x, h, v, Wh, b)[0], Wx, dnext)) < 1e-8
    assert rel_error(dWh, num_grad(lambda v: C.rnn_step_forward(x, h, Wx, v, b)[0], Wh, dnext)) < 1e-8
    assert rel_error(db, num_grad(lambda v: C.rnn_step_forward(x, h, Wx, Wh, v)[0], b, dnext)) < 1e-8


def test_rnn_forward_matches_notebook_and_oracle():
    N, T, D, H = 2, 3, 4, 5
    x = np.linspace(-0.1, 0.3, num=N * T * D).reshape(N, T, D)
    h0 = np.linspace(-0.3, 0.1, num=N * H).reshape(N, H)
    Wx = np.linspace(-0.2, 0.4, num=D * H).reshape(D, H)
    Wh = np.linspace(-0.4, 0.1, num=H * H).reshape(H, H)
    b = np.linspace(-0.7, 0.1, num=H)
    h, _ = C.rnn_forward(x, h0, Wx, Wh, b)
    expected = np.asarray([   # printed by the notebook, 8 decimals
        [[-0.42070749, -0.27279261, -0.11074945, 0.05740409, 0.22236251],
         [-0.39525808, -0.22554661, -0.0409454, 0.14649412, 0.32397316],
         [-0.42305111, -0.24223728, -0.04287027, 0.15997045, 0.35014525]],
        [[-0.55857474, -0.39065825, -0.19198182, 0.02378408, 0.23735671],
         [-0.27150199, -0.07088804, 0.13562939, 0.33099728, 0.50158768],
         [-0.51014825, -0.30524429, -0.06755202, 0.17806392, 0.40333043]]])
    assert h.shape == (N, T, H) and h.dtype == np.float64 and h.flags.c_contiguous
    assert rel_error(h, expected) < 2e-7
    assert np.max(np.abs(h - oracle_rnn(x, h0, Wx, Wh, b))) < 1e-13


@pytest.mark.parametrize("N,T,D,H", [(1, 1, 1, 1), (3, 7, 5, 31), (2, 64, 3, 8)])
def test_rnn_forward_odd_shapes_match_oracle(N, T, D, H):
    rng = np.random.default_rng(N * 1000 + T)
    x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    Wx, Wh, b = rng.standard_normal((D, H)) / np.sqrt(D), rng.standard_normal((H, H)) / np.sqrt(H), \
        rng.standard_normal(H)
    h, _ = C.rnn_forward(x, h0, Wx, Wh, b)
    assert np.max(np.abs(h - oracle_rnn(x, h0, Wx, Wh, b))) < 1e-12
    h32, _ = C.rnn_forward(*(a.astype(np.float32) for a in (x, h0, Wx, Wh, b)))
    assert h32.dtype == np.float32
    assert np.max(np.abs(h32 - h)) < 1e-4


def test_rnn_backward_gradcheck():
    rng = np.random.default_rng(231)
    N, D, T, H = 2, 3, 10, 5
    x, h0, Wx, Wh, b = (rng.standard_normal(s) for s in ((N, T, D), (N, H), (D, H), (H, H), (H,)))
    out, cache = C.rnn_forward(x, h0, Wx, Wh, b)
    dout = rng.standard_normal(out.shape)
    dx, dh0, dWx, dWh, db = C.rnn_backward(dout, cache)
    assert (dx.shape, dh0.shape, dWx.shape, dWh.shape, db.shape) == ((N, T, D), (N, H), (D, H), (H, H), (H,))
    assert rel_error(dx, num_grad(lambda v: C.rnn_forward(v, h0, Wx, Wh, b)[0], x, dout)) < 1e-7
    assert rel_error(dh0, num_grad(lambda v: C.rnn_forward(x, v, Wx, Wh, b)[0], h0, dout)) < 1e-7
    assert rel_error(dWx, num_grad(lambda v: C.rnn_forward(x, h0, v, Wh, b)[0], Wx, dout)) < 1e-7
    assert rel_error(dWh, num_grad(lambda v: C.rnn_forward(x, h0, Wx, v, b)[0], Wh, dout)) < 1e-7
    assert rel_error(db, num_grad(lambda v: C.rnn_forward(x, h0, Wx, Wh, v)[0], b, dout)) < 1e-7


def test_rnn_backward_equals_step_backward_chain_and_leaves_inputs_alone():
    rng = np.random.default_rng(5)
    N, T, D, H = 3, 7, 5, 4
    x, h0, Wx, Wh, b = (rng.standard_normal(s) for s in ((N, T, D), (N, H), (D, H), (H, H), (H,)))
    h, cache = C.rnn_forward(x, h0, Wx, Wh, b)
    dh = rng.standard_normal(h.shape)
    dh_copy = dh.copy()
    first = C.rnn_backward(dh, cache)
    second = C.rnn_backward(dh, cache)            # the cache may be reused
    assert np.array_equal(dh, dh_copy)
    for a, b2 in zip(first, second):
        assert np.array_equal(a, b2)
    # the per-step chain the assignment builds from rnn_step_forward/backward
    caches, prev = [], h0
    for t in range(T):
        prev, c = C.rnn_step_forward(x[:, t], prev, Wx, Wh, b)
        caches.append(c)
    dx = np.zeros_like(x)
    dWx, dWh, db, dprev = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b), np.zeros_like(h0)
    for t in reversed(range(T)):
        dx[:, t], dprev, gWx, gWh, gb = C.rnn_step_backward(dh[:, t] + dprev, caches[t])
        dWx += gWx
        dWh += gWh
        db += gb
    for got, want in zip(first, (dx, dprev, dWx, dWh, db)):
        assert np.max(np.abs(got - want)) < 1e-12


def test_rnn_forward_runs_on_the_fast_kernels_and_promotes_dtypes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    h0 = np.zeros((2, 5), np.float32)
    Wx, Wh, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 5), (5, 5), (5,)))
    _, cache = C.rnn_forward(x, h0, Wx, Wh, b)
    assert cache.backend == importlib.import_module("rnnfast.backends").resolve()   # cpu unless overridden
    h64, cache64 = C.rnn_forward(x, h0.astype(np.float64), Wx, Wh, b)   # NumPy's promotion: float64
    assert h64.dtype == np.float64 and cache64.hs.dtype == np.float64
    dx, *_ = C.rnn_backward(np.ones_like(h64), cache64)
    assert dx.dtype == np.float64


# ---- LSTM ----


def test_lstm_step_forward_matches_notebook():
    N, D, H = 3, 4, 5
    x = np.linspace(-0.4, 1.2, num=N * D).reshape(N, D)
    prev_h = np.linspace(-0.3, 0.7, num=N * H).reshape(N, H)
    prev_c = np.linspace(-0.4, 0.9, num=N * H).reshape(N, H)
    Wx = np.linspace(-2.1, 1.3, num=4 * D * H).reshape(D, 4 * H)
    Wh = np.linspace(-0.7, 2.2, num=4 * H * H).reshape(H, 4 * H)
    b = np.linspace(0.3, 0.7, num=4 * H)
    next_h, next_c, _ = C.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
    expected_h = np.asarray([[0.24635157, 0.28610883, 0.32240467, 0.35525807, 0.38474904],
                             [0.49223563, 0.55611431, 0.61507696, 0.66844003, 0.7159181],
                             [0.56735664, 0.66310127, 0.74419266, 0.80889665, 0.858299]])
    expected_c = np.asarray([[0.32986176, 0.39145139, 0.451556, 0.51014116, 0.56717407],
                             [0.66382255, 0.76674007, 0.87195994, 0.97902709, 1.08751345],
                             [0.74192008, 0.90592151, 1.07717006, 1.25120233, 1.42395676]])
    assert rel_error(next_h, expected_h) < 1e-7
    assert rel_error(next_c, expected_c) < 1e-7


def test_lstm_step_backward_gradcheck():
    rng = np.random.default_rng(231)
    N, D, H = 4, 5, 6
    x, h, c = rng.standard_normal((N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    Wx, Wh, b = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H)
    nh, nc, cache = C.lstm_step_forward(x, h, c, Wx, Wh, b)
    dnh, dnc = rng.standard_normal(nh.shape), rng.standard_normal(nc.shape)
    grads = C.lstm_step_backward(dnh, dnc, cache)
    args = [x, h, c, Wx, Wh, b]
    for k, got in enumerate(grads):
        def f_h(v, k=k):
            a = list(args)
            a[k] = v
            return C.lstm_step_forward(*a)[0]

        def f_c(v, k=k):
            a = list(args)
            a[k] = v
            return C.lstm_step_forward(*a)[1]
        want = num_grad(f_h, args[k], dnh) + num_grad(f_c, args[k], dnc)
        assert rel_error(got, want) < 1e-6, k


def test_lstm_forward_matches_notebook_and_oracle():
    N, D, H, T = 2, 5, 4, 3
    x = np.linspace(-0.4, 0.6, num=N * T * D).reshape(N, T, D)
    h0 = np.linspace(-0.4, 0.8, num=N * H).reshape(N, H)
    Wx = np.linspace(-0.2, 0.9, num=4 * D * H).reshape(D, 4 * H)
    Wh = np.linspace(-0.3, 0.6, num=4 * H * H).reshape(H, 4 * H)
    b = np.linspace(0.2, 0.7, num=4 * H)
    h, _ = C.lstm_forward(x, h0, Wx, Wh, b)
    expected = np.asarray([
        [[0.01764008, 0.01823233, 0.01882671, 0.0194232],
         [0.11287491, 0.12146228, 0.13018446, 0.13902939],
         [0.31358768, 0.33338627, 0.35304453, 0.37250975]],
        [[0.45767879, 0.4761092, 0.4936887, 0.51041945],
         [0.6704845, 0.69350089, 0.71486014, 0.7346449],
         [0.81733511, 0.83677871, 0.85403753, 0.86935314]]])
    assert rel_error(h, expected) < 2e-7
    assert np.max(np.abs(h - oracle_lstm(x, h0, Wx, Wh, b))) < 1e-13


def test_lstm_backward_gradcheck():
    rng = np.random.default_rng(231)
    N, D, T, H = 2, 3, 10, 6
    x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    Wx, Wh, b = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H)
    out, cache = C.lstm_forward(x, h0, Wx, Wh, b)
    dout = rng.standard_normal(out.shape)
    dout_copy = dout.copy()
    grads = C.lstm_backward(dout, cache)
    assert np.array_equal(dout, dout_copy)
    args = [x, h0, Wx, Wh, b]
    for k, got in enumerate(grads):
        def f(v, k=k):
            a = list(args)
            a[k] = v
            return C.lstm_forward(*a)[0]
        assert got.shape == args[k].shape
        assert rel_error(got, num_grad(f, args[k], dout)) < 1e-6, k


# ---- embedding, temporal affine, softmax loss, affine, sigmoid ----


def test_word_embedding_forward_matches_notebook_and_backward_gradcheck():
    N, T, V, D = 2, 4, 5, 3
    x = np.asarray([[0, 3, 1, 2], [2, 1, 0, 3]])
    W = np.linspace(0, 1, num=V * D).reshape(V, D)
    out, _ = C.word_embedding_forward(x, W)
    rows = np.array([[0, 0.07142857, 0.14285714], [0.21428571, 0.28571429, 0.35714286],
                     [0.42857143, 0.5, 0.57142857], [0.64285714, 0.71428571, 0.78571429]])
    assert rel_error(out, rows[x]) < 1e-7
    rng = np.random.default_rng(231)
    N, T, V, D = 50, 3, 5, 6
    x = rng.integers(V, size=(N, T))
    W = rng.standard_normal((V, D))
    out, cache = C.word_embedding_forward(x, W)
    dout = rng.standard_normal(out.shape)
    dW = C.word_embedding_backward(dout, cache)
    assert rel_error(dW, num_grad(lambda v: C.word_embedding_forward(x, v)[0], W, dout)) < 1e-9


def test_temporal_affine_gradcheck():
    rng = np.random.default_rng(231)
    N, T, D, M = 2, 3, 4, 5
    x, w, b = rng.standard_normal((N, T, D)), rng.standard_normal((D, M)), rng.standard_normal(M)
    out, cache = C.temporal_affine_forward(x, w, b)
    assert np.max(np.abs(out - (np.einsum("ntd,dm->ntm", x, w) + b))) < 1e-13
    dout = rng.standard_normal(out.shape)
    dx, dw, db = C.temporal_affine_backward(dout, cache)
    assert rel_error(dx, num_grad(lambda v: C.temporal_affine_forward(v, w, b)[0], x, dout)) < 1e-8
    assert rel_error(dw, num_grad(lambda v: C.temporal_affine_forward(x, v, b)[0], w, dout)) < 1e-8
    assert rel_error(db, num_grad(lambda v: C.temporal_affine_forward(x, w, v)[0], b, dout)) < 1e-8


def test_affine_gradcheck_with_multi_dim_input():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((4, 2, 3)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    out, cache = C.affine_forward(x, w, b)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = C.affine_backward(dout, cache)
    assert dx.shape == x.shape
    assert rel_error(dx, num_grad(lambda v: C.affine_forward(v, w, b)[0], x, dout)) < 1e-8
    assert rel_error(dw, num_grad(lambda v: C.affine_forward(x, v, b)[0], w, dout)) < 1e-8
    assert rel_error(db, num_grad(lambda v: C.affine_forward(x, w, v)[0], b, dout)) < 1e-8


def test_temporal_softmax_loss_scale_matches_notebook_checks():
    # The notebook's sanity checks: near-uniform scores over V=10 give log(10) per unmasked step, summed
    # over time and divided by N.
    rng = np.random.default_rng(231)

    def loss(N, T, V, p):
        x = 0.001 * rng.standard_normal((N, T, V))
        y = rng.integers(V, size=(N, T))
        mask = rng.random((N, T)) <= p
        return C.temporal_softmax_loss(x, y, mask)[0]

    assert abs(loss(100, 1, 10, 1.0) - np.log(10)) < 0.01          # "should be about 2.3"
    assert abs(loss(100, 10, 10, 1.0) - 10 * np.log(10)) < 0.05     # "should be about 23"
    assert 2.0 < loss(5000, 10, 10, 0.1) < 2.6                       # "should be within 2.2-2.4"


def test_temporal_softmax_loss_values_and_gradcheck():
    rng = np.random.default_rng(231)
    N, T, V = 7, 8, 9
    x = rng.standard_normal((N, T, V))
    y = rng.integers(V, size=(N, T))
    mask = rng.random((N, T)) > 0.5
    loss, dx = C.temporal_softmax_loss(x, y, mask)
    logp = x - np.log(np.exp(x).sum(axis=2, keepdims=True))
    want = -sum(logp[n, t, y[n, t]] for n in range(N) for t in range(T) if mask[n, t]) / N
    assert abs(loss - want) < 1e-12
    num = num_grad_scalar(lambda v: C.temporal_softmax_loss(v, y, mask)[0], x)
    assert np.allclose(dx, num, rtol=1e-6, atol=1e-9)
    assert np.all(dx[~mask] == 0)
    big, _ = C.temporal_softmax_loss(x + 1000.0, y, mask)             # shift-invariant, no overflow
    assert abs(big - loss) < 1e-9


def test_temporal_softmax_loss_verbose_prints_shape(capsys):
    x = np.zeros((2, 3, 4))
    C.temporal_softmax_loss(x, np.zeros((2, 3), int), np.ones((2, 3), bool), verbose=True)
    assert "(6, 4)" in capsys.readouterr().out


def test_sigmoid_is_stable_and_correct():
    x = np.array([-1000.0, -50.0, -1.0, 0.0, 1.0, 50.0, 1000.0])
    with np.errstate(over="raise", invalid="raise"):
        s = C.sigmoid(x)
    assert np.all(np.isfinite(s)) and s[0] == 0.0 and s[-1] == 1.0 and s[3] == 0.5
    mid = np.linspace(-20, 20, 41)
    assert np.max(np.abs(C.sigmoid(mid) - 1 / (1 + np.exp(-mid)))) < 1e-15
    assert C.sigmoid(np.float32(2.0)).dtype == np.float32


# ---- CaptioningRNN ----


W2I = {"<NULL>": 0, "cat": 2, "dog": 3}


@pytest.mark.parametrize("cell,lo_hi,expected", [("rnn", (-1.5, 0.3), 9.83235591003),
                                                 ("lstm", (-0.5, 1.7), 9.82445935443)])
def test_captioning_loss_matches_notebook(cell, lo_hi, expected):
    N, D, W, H, T = 10, 20, 30, 40, 13
    model = C.CaptioningRNN(W2I, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell, dtype=np.float64)
    for k, v in model.params.items():
        model.params[k] = np.linspace(-1.4, 1.3, num=v.size).reshape(*v.shape)
    features = np.linspace(*lo_hi, num=N * D).reshape(N, D)
    captions = (np.arange(N * T) % len(W2I)).reshape(N, T)
    loss, grads = model.loss(features, captions)
    assert abs(loss - expected) < 1e-9
    assert set(grads) == set(model.params)
    for k in grads:
        assert grads[k].shape == model.params[k].shape


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_captioning_gradcheck_perturbs_params_in_place(cell):
    np.random.seed(231)
    N, T, D, W, H = 2, 3, 4, 5, 6
    captions = np.random.randint(len(W2I), size=(N, T))
    features = np.random.randn(N, D)
    model = C.CaptioningRNN(W2I, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell, dtype=np.float64)
    loss, grads = model.loss(features, captions)
    for name in sorted(model.params):
        num = num_grad_scalar(lambda _: model.loss(features, captions)[0], model.params[name])
        assert np.allclose(grads[name], num, rtol=1e-5, atol=1e-9), name


def test_captioning_init_is_seeded_in_the_assignment_order():
    np.random.seed(7)
    model = C.CaptioningRNN(W2I, input_dim=4, wordvec_dim=3, hidden_dim=2, cell_type="lstm")
    np.random.seed(7)
    V = len(W2I)
    want = {"W_embed": np.random.randn(V, 3) / 100, "W_proj": np.random.randn(4, 2) / 2,
            "b_proj": np.zeros(2), "Wx": np.random.randn(3, 8) / np.sqrt(3), "Wh": np.random.randn(2, 8) / np.sqrt(2),
            "b": np.zeros(8), "W_vocab": np.random.randn(2, V) / np.sqrt(2), "b_vocab": np.zeros(V)}
    assert list(model.params) == list(want)
    for k, v in want.items():
        assert model.params[k].dtype == np.float32
        assert np.array_equal(model.params[k], v.astype(np.float32)), k


def test_captioning_mask_ignores_null_targets():
    np.random.seed(1)
    model = C.CaptioningRNN(W2I, input_dim=4, wordvec_dim=3, hidden_dim=5, dtype=np.float64)
    feats = np.random.randn(2, 4)
    caps = np.array([[1, 2, 0, 0], [2, 1, 2, 0]])
    loss, _ = model.loss(feats, caps)
    longer = model.loss(feats, np.concatenate([caps, np.zeros((2, 3), int)], axis=1))[0]
    assert abs(loss - longer) < 1e-12        # extra <NULL> targets add nothing


def _greedy_oracle(model, features, max_length):
    p = model.params
    h = features @ p["W_proj"] + p["b_proj"]
    c = np.zeros_like(h)
    H = h.shape[1]
    word = np.full(features.shape[0], model._start)
    out = []
    for _ in range(max_length):
        a = p["W_embed"][word] @ p["Wx"] + h @ p["Wh"] + p["b"]
        if model.cell_type == "rnn":
            h = np.tanh(a)
        else:
            c = _sig(a[:, H:2 * H]) * c + _sig(a[:, :H]) * np.tanh(a[:, 3 * H:])
            h = _sig(a[:, 2 * H:3 * H]) * np.tanh(c)
        word = np.argmax(h @ p["W_vocab"] + p["b_vocab"], axis=1)
        out.append(word)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_captioning_sample_greedy_and_end_handling(cell):
    np.random.seed(11)
    w2i = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3, "b": 4, "c": 5}
    model = C.CaptioningRNN(w2i, input_dim=6, wordvec_dim=4, hidden_dim=8, cell_type=cell, dtype=np.float64)
    feats = np.random.randn(5, 6) * 3
    want = _greedy_oracle(model, feats, 12)
    got = model.sample(feats, max_length=12)
    assert got.shape == (5, 12) and got.dtype == np.int32
    for n in range(5):
        ends = np.flatnonzero(want[n] == 2)
        stop = ends[0] + 1 if ends.size else 12
        assert np.array_equal(got[n, :stop], want[n, :stop])     # same greedy words up to and incl. <END>
        assert np.all(got[n, stop:] == 0)                        # then <NULL>
    # force <END> to win everywhere: every caption is <END> then <NULL>s
    model.params["b_vocab"][2] = 1e6
    forced = model.sample(feats, max_length=4)
    assert np.array_equal(forced, np.tile([2, 0, 0, 0], (5, 1)))
    # without <END> in the vocabulary, sampling never stops early
    m2 = C.CaptioningRNN({"<NULL>": 0, "<START>": 1, "x": 2}, input_dim=6, wordvec_dim=4, hidden_dim=8,
                         cell_type=cell)
    assert m2.sample(feats, max_length=5).shape == (5, 5)


def test_captioning_bad_arguments():
    with pytest.raises(ValueError, match="cell_type"):
        C.CaptioningRNN(W2I, cell_type="gru")
    with pytest.raises(ValueError, match="<START>"):
        C.CaptioningRNN(W2I, input_dim=3, wordvec_dim=2, hidden_dim=2).sample(np.zeros((1, 3)))


# ---- bad input ----


def test_bad_shapes_name_the_argument():
    x, h0 = np.zeros((2, 3, 4)), np.zeros((2, 5))
    Wx, Wh, b = np.zeros((4, 5)), np.zeros((5, 5)), np.zeros(5)
    with pytest.raises(ValueError, match=r"Wx must have shape \(D, H\) with D=4"):
        C.rnn_forward(x, h0, np.zeros((3, 5)), Wh, b)
    with pytest.raises(ValueError, match=r"h0 must have shape \(N, H\)"):
        C.rnn_forward(x, np.zeros((3, 5)), Wx, Wh, b)
    with pytest.raises(ValueError, match=r"x must have shape \(N, T, D\)"):
        C.rnn_forward(np.zeros((3, 4)), h0, Wx, Wh, b)
    _, cache = C.rnn_forward(x, h0, Wx, Wh, b)
    with pytest.raises(ValueError, match=r"dh must have shape \(N, T, H\)"):
        C.rnn_backward(np.zeros((2, 3, 4)), cache)
    with pytest.raises(TypeError, match="cache"):
        C.rnn_backward(np.zeros((2, 3, 5)), ("not", "a", "cache"))
    with pytest.raises(ValueError, match=r"Wh must have shape \(H, 4H\)"):
        C.lstm_forward(x, h0, np.zeros((4, 20)), np.zeros((5, 5)), np.zeros(20))
    with pytest.raises(ValueError, match=r"indices in \[0, V\)"):
        C.word_embedding_forward(np.array([[0, 9]]), np.zeros((5, 3)))
    with pytest.raises(TypeError, match="integer"):
        C.word_embedding_forward(np.array([[0.5]]), np.zeros((5, 3)))
