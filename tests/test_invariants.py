"""Invariants of the recurrence on every backend: chunked forward with the state carried equals the
whole-sequence forward; truncated BPTT with the gradient carried across chunk boundaries equals full BPTT.
Not a comparison between backends (test_backends.py)."""
import numpy as np
import pytest

import rnnfast
from rnn_helpers import available_backends, flat_grads, make_weights, zero_grads
from tolerances import EXACT64, SAME64

BACKENDS = available_backends()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_chunked_forward_equals_whole(backend, act):
    rng = np.random.default_rng(1)
    T, N, D, H, L = 23, 3, 4, 9, 2
    x = rng.standard_normal((T, N, D))
    h0 = rng.standard_normal((L, N, H))
    ws = make_weights(rng, D, H, L, np.float64)
    c = rng.standard_normal((N, H))
    out, h_n, _ = rnnfast.rnn_forward(x, h0, ws, c, act, False, backend=backend)
    h, outs = h0, []
    for s in range(0, T, 5):
        o, h, _ = rnnfast.rnn_forward(x[s:s + 5], h, ws, c, act, False, backend=backend)
        outs.append(o)
    np.testing.assert_allclose(np.concatenate(outs), out, **EXACT64)
    np.testing.assert_allclose(h, h_n, **EXACT64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bptt_with_gradient_carried_across_chunks_equals_full(backend):
    rng = np.random.default_rng(2)
    T, N, D, H, L = 20, 2, 3, 8, 2
    x = rng.standard_normal((T, N, D))
    h0 = rng.standard_normal((L, N, H))
    ws = make_weights(rng, D, H, L, np.float64)
    c = rng.standard_normal((N, H))
    dout = rng.standard_normal((T, N, H))
    dh_n = rng.standard_normal((L, N, H))
    # full BPTT
    _, _, cache = rnnfast.rnn_forward(x, h0, ws, c, "tanh", True, backend=backend)
    g_full = zero_grads(ws)
    dx_full, dh0_full, dc_full = rnnfast.rnn_backward(dout, dh_n, cache, g_full, backend=backend)
    # chunks of 7: forward carries the state, backward carries dh0 of a chunk into dh_n of the previous one
    bounds = [(s, min(s + 7, T)) for s in range(0, T, 7)]
    caches, h = [], h0
    for a, b in bounds:
        _, h, cch = rnnfast.rnn_forward(x[a:b], h, ws, c, "tanh", True, backend=backend)
        caches.append(cch)
    g_chunk = zero_grads(ws)
    dxs, carry, dc = [None] * len(bounds), dh_n, np.zeros_like(c)
    for i in reversed(range(len(bounds))):
        a, b = bounds[i]
        dxs[i], carry, dci = rnnfast.rnn_backward(dout[a:b], carry, caches[i], g_chunk, backend=backend)
        dc += dci
    np.testing.assert_allclose(np.concatenate(dxs), dx_full, **SAME64)
    np.testing.assert_allclose(carry, dh0_full, **SAME64)
    np.testing.assert_allclose(dc, dc_full, **SAME64)
    for a, b in zip(flat_grads(g_chunk), flat_grads(g_full)):
        np.testing.assert_allclose(a, b, **SAME64)
