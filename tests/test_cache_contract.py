"""The forward->backward cache contract and failed calls, for every cell and CPU-side backend: the cache
owns its inputs (changing x, h0 or c0 in place after forward does not change the gradients), and a
backward that raises on a bad argument has changed nothing (no gradient accumulated, cache kept, a retry
gives the gradients of one clean call), naming the real layer and direction. Oracle: the same call on
untouched inputs. Not tested here: the math itself (test_backends.py, test_gated.py).
"""
import numpy as np
import pytest

import rnnfast
import rnnfast.functional as F
from gated_helpers import flat, make_weights, zero_grads
from rnn_helpers import available_backends
from tolerances import EXACT64

CELLS = ["rnn", "lstm", "gru"]
BACKENDS = available_backends()


def _problem(cell, T=5, N=3, D=4, H=6, L=2, dirs=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, D))
    ws = make_weights(rng, cell, D, H, L, np.float64, dirs=dirs)
    states = tuple(rng.standard_normal((L * dirs, N, H)) for _ in range(2 if cell == "lstm" else 1))
    dout = rng.standard_normal((T, N, dirs * H))
    return x, states, ws, dout


@pytest.mark.parametrize("kw", [{}, {"lengths": np.array([5, 0, 3])}, {"bidirectional": True}],
                         ids=["plain", "lengths", "bidirectional"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_changing_inputs_after_forward_does_not_change_gradients(cell, backend, kw):
    dirs = 2 if kw.get("bidirectional") else 1
    x, states, ws, dout = _problem(cell, dirs=dirs)
    results = []
    for mutate in (False, True):
        xs, ss = x.copy(), tuple(s.copy() for s in states)
        _, _, cache = F.forward(cell, xs, ss, ws, True, backend, **kw)
        if mutate:
            xs += 1.0
            for s in ss:
                s *= -3.0
        g = zero_grads(ws)
        dx, dstates, _ = F.backward(cell, dout, (None,) * len(states), cache, g, backend)
        results.append([dx, *dstates, *flat(g)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def _backward_fails_cleanly(cell, backend, kw, bad_grads_at, want_name):
    dirs = 2 if kw.get("bidirectional") else 1
    x, states, ws, dout = _problem(cell, dirs=dirs)
    _, _, cache = F.forward(cell, x, states, ws, True, backend, **kw)
    ref = zero_grads(ws)
    want = F.backward(cell, dout, (None,) * len(states), cache, ref, backend)
    g = zero_grads(ws)
    bad = list(g)
    i, j = bad_grads_at
    row = list(bad[i])
    row[j] = np.zeros((1, 1))
    bad[i] = tuple(row)
    with pytest.raises(ValueError, match=want_name):
        F.backward(cell, dout, (None,) * len(states), cache, bad, backend)
    for a in flat(g):
        assert not a.any(), "a failed backward accumulated into a gradient"
    got = F.backward(cell, dout, (None,) * len(states), cache, g, backend)   # the retry counts once
    for a, b in zip(flat(g), flat(ref)):
        np.testing.assert_allclose(a, b, **EXACT64)
    np.testing.assert_allclose(got[0], want[0], **EXACT64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_failed_stacked_backward_changes_nothing_and_names_the_layer(cell, backend):
    # layer 1 is processed first; a bad gradient for layer 0 used to raise after layer 1 had accumulated
    _backward_fails_cleanly(cell, backend, {"lengths": np.array([5, 2, 4])}, (0, 1), "dW_hh_l0 ")
    _backward_fails_cleanly(cell, backend, {"bidirectional": True}, (3, 0), "dW_ih_l1_reverse")
    _backward_fails_cleanly(cell, backend, {"bidirectional": True}, (1, 2), "db_ih_l0_reverse")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELLS)
def test_failed_plain_backward_changes_nothing(cell, backend):
    _backward_fails_cleanly(cell, backend, {}, (0, 1), "dW_hh_l0")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_layer_keeps_its_cache_after_a_bad_dout(cls, backend):
    layer = getattr(rnnfast, cls)(4, 6, num_layers=2, batch_first=True, dtype=np.float64, backend=backend, seed=1)
    x = np.random.default_rng(2).standard_normal((3, 5, 4))
    out = layer.forward(x)[0]
    dout = np.ones_like(out)
    for bad in (np.ones((3, 5)), np.ones((3, 5, 7)), "dout"):
        with pytest.raises((ValueError, TypeError)):
            layer.backward(bad)
        assert all(not g.any() for g in layer.grads.values())
    dx = layer.backward(dout)[0]     # the cache survived every failed call
    assert dx.shape == x.shape
    with pytest.raises(RuntimeError, match="preceding forward"):
        layer.backward(dout)


def test_numpy_backend_names_gradient_shapes_and_tuple_lengths():
    x, states, ws, dout = _problem("lstm", L=1)
    _, _, _, cache = F.lstm_forward(x, *states, ws, True, "numpy")
    g = zero_grads(ws)
    with pytest.raises(ValueError, match=r"grads\[0\] must be a tuple \(dW_ih, dW_hh, db_ih, db_hh\)"):
        F.lstm_backward(dout, None, None, cache, [g[0][:3]], "numpy")
    bad = [(np.zeros((24, 5)),) + g[0][1:]]
    with pytest.raises(ValueError, match=r"dW_ih_l0 must have shape \(4H, D\) = \(24, 4\), got \(24, 5\)"):
        F.lstm_backward(dout, None, None, cache, bad, "numpy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_entry_point_rejects_wrong_state_count(backend):
    x, states, ws, _ = _problem("lstm", L=1)
    with pytest.raises(ValueError, match=r"states must be a tuple \(h0, c0\)"):
        F.forward("lstm", x, states[:1], ws, True, backend)
    with pytest.raises(ValueError, match="cell must be one of"):
        F.forward("lstmx", x, states, ws, True, backend)
