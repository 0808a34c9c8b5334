"""The NumPy reference: the readable, per-step specification every kernel is tested against.

It is also the "numpy" backend. It is deliberately simple (one time step at a time, no fusion, no hoisted
GEMMs) and never deleted; the fast kernels must agree with it. Validation of arguments happens in
`rnnfast.functional`, not here.
"""
from __future__ import annotations

import numpy as np

from ._cache import RNNCache

# ---- activations (same names as csrc/rnnfast/cell_math.h; derivatives take the output y) ----


def act_tanh(z):
    return np.tanh(z)


def act_relu(z):
    return np.maximum(z, 0)  # np.maximum propagates NaN, as the kernels do


def dact_tanh(y):
    return 1 - y * y


def dact_relu(y):
    return (y > 0).astype(y.dtype)


ACTIVATIONS = {"tanh": (act_tanh, dact_tanh), "relu": (act_relu, dact_relu)}


# ---- one step ----


def rnn_step_forward(x_t, h_prev, W_ih, W_hh, b_ih=None, b_hh=None, c=None, nonlinearity="tanh"):
    """h_t = act(x_t W_ih^T + b_ih + h_prev W_hh^T + b_hh [+ c]); x_t (N, D), h_prev (N, H) -> (N, H)."""
    act, _ = ACTIVATIONS[nonlinearity]
    z = x_t @ W_ih.T + h_prev @ W_hh.T
    if b_ih is not None:
        z = z + b_ih + b_hh
    if c is not None:
        z = z + c
    return act(z)


def rnn_step_backward(dh_t, h_t, x_t, h_prev, W_ih, W_hh, grads, nonlinearity="tanh"):
    """Backward of one step. dh_t (N, H) is the total gradient reaching h_t.

    grads = (dW_ih, dW_hh, db_ih, db_hh) accumulate (+=). Returns (dx_t, dh_prev, dz) with dz the gradient
    of the pre-activation (which is also the gradient of b_ih, b_hh and c for this step).
    """
    _, dact = ACTIVATIONS[nonlinearity]
    dW_ih, dW_hh, db_ih, db_hh = grads
    dz = dh_t * dact(h_t)                 # backprop through the activation
    dW_ih += dz.T @ x_t                   # into W_ih
    dW_hh += dz.T @ h_prev                # into W_hh
    if db_ih is not None:
        db_ih += dz.sum(axis=0)           # into both biases
        db_hh += dz.sum(axis=0)
    dx_t = dz @ W_ih                      # into the input
    dh_prev = dz @ W_hh                   # into the previous hidden state
    return dx_t, dh_prev, dz


# ---- whole sequence, stacked ----


def rnn_forward(x, h0, weights, c=None, nonlinearity="tanh", need_cache=True):
    """x (T, N, D); h0 (L, N, H) or None; weights: L tuples (W_ih, W_hh, b_ih|None, b_hh|None).

    Returns (out (T, N, H), h_n (L, N, H), cache or None).
    """
    T, N, _ = x.shape
    L = len(weights)
    H = weights[0][1].shape[0]
    dtype = x.dtype
    if h0 is None:
        h0 = np.zeros((L, N, H), dtype=dtype)
    hs = np.empty((L, T, N, H), dtype=dtype)
    h_n = np.empty((L, N, H), dtype=dtype)
    for k, (W_ih, W_hh, b_ih, b_hh) in enumerate(weights):
        inp = x if k == 0 else hs[k - 1]
        h = h0[k]
        for t in range(T):
            h = rnn_step_forward(inp[t], h, W_ih, W_hh, b_ih, b_hh, c if k == 0 else None, nonlinearity)
            hs[k, t] = h
        h_n[k] = h
    out = hs[L - 1].copy()
    cache = RNNCache(x, h0, hs, c, weights, nonlinearity, "numpy") if need_cache else None
    return out, h_n, cache


def rnn_backward(dout, dh_n, cache, grads):
    """Backward through rnn_forward, the forward read in reverse.

    dout (T, N, H) or None; dh_n (L, N, H) or None; grads: L tuples (dW_ih, dW_hh, db_ih|None, db_hh|None)
    accumulated (+=). Returns (dx (T, N, D), dh0 (L, N, H), dc (N, H) or None), all freshly allocated.
    """
    x, h0, hs, weights = cache.x, cache.h0, cache.hs, cache.weights
    L, T, N, H = hs.shape
    dtype = hs.dtype
    dh0 = np.empty((L, N, H), dtype=dtype)
    dc = np.zeros((N, H), dtype=dtype) if cache.c is not None else None
    dy = np.zeros((T, N, H), dtype=dtype) if dout is None else dout   # gradient reaching the top outputs
    for k in reversed(range(L)):
        W_ih, W_hh, _, _ = weights[k]
        inp = x if k == 0 else hs[k - 1]
        dinp = np.empty((T, N, W_ih.shape[1]), dtype=dtype)
        dh_next = np.zeros((N, H), dtype=dtype) if dh_n is None else dh_n[k].copy()
        for t in reversed(range(T)):
            h_prev = hs[k, t - 1] if t > 0 else h0[k]
            dinp[t], dh_next, dz = rnn_step_backward(dy[t] + dh_next, hs[k, t], inp[t], h_prev,
                                                     W_ih, W_hh, grads[k], cache.nonlinearity)
            if k == 0 and dc is not None:
                dc += dz                      # c is added at every step of layer 0
        dh0[k] = dh_next
        dy = dinp                             # layer k's input gradient is layer k-1's output gradient
    return dy, dh0, dc
