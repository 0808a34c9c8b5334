"""The NumPy reference: the readable, per-step specification every kernel is tested against.

It is also the "numpy" backend, with the backend interface every backend has (<cell>_forward /
<cell>_backward per cell of rnnfast._cells, VALIDATES_ARGUMENTS, HOST_ARRAYS). It is deliberately simple
(one time step at a time, no fusion, no hoisted GEMMs) and never deleted; the fast kernels must agree with
it. Its arguments are checked by the caller (rnnfast.functional through rnnfast._checks), not here.
"""
from __future__ import annotations

import numpy as np

from ._cache import GRUCache, LSTMCache, RNNCache

VALIDATES_ARGUMENTS = False   # rnnfast.functional checks the arguments before calling a function here
HOST_ARRAYS = True            # NumPy in, NumPy out: usable by the lengths / bidirectional path


def _keep(a):
    """What a cache keeps of a caller's array: a C-contiguous copy, so that changing the array in place
    between forward and backward cannot change the gradients (the cache contract, rnnfast._cache)."""
    return None if a is None else np.array(a, order="C", copy=True)

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
    cache = RNNCache(_keep(x), _keep(h0), hs, _keep(c), list(weights), nonlinearity, "numpy") if need_cache else None
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


# ---- gated cells: LSTM and GRU, PyTorch's gate order and layout ----
# Gate blocks are stacked along the first axis of W_ih (G*H, D_k), W_hh (G*H, H), b_ih and b_hh (G*H,):
# LSTM (G = 4) i, f, g, o; GRU (G = 3) r, z, n. Gates are kept after their activations (what the caches hold).


def act_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def dact_sigmoid(y):
    return y * (1 - y)


def lstm_step_forward(x_t, h_prev, c_prev, W_ih, W_hh, b_ih=None, b_hh=None):
    """One LSTM step. x_t (N, D), h_prev and c_prev (N, H) -> (h_t (N, H), c_t (N, H), gates (N, 4H)).

    i = sig(a_i), f = sig(a_f), g = tanh(a_g), o = sig(a_o) with a = x_t W_ih^T + b_ih + h_prev W_hh^T + b_hh;
    c_t = f * c_prev + i * g; h_t = o * tanh(c_t). gates = [i, f, g, o] (after the activations).
    """
    H = h_prev.shape[1]
    a = x_t @ W_ih.T + h_prev @ W_hh.T
    if b_ih is not None:
        a = a + b_ih + b_hh
    i = act_sigmoid(a[:, 0:H])
    f = act_sigmoid(a[:, H:2 * H])
    g = act_tanh(a[:, 2 * H:3 * H])
    o = act_sigmoid(a[:, 3 * H:4 * H])
    c_t = f * c_prev + i * g
    h_t = o * act_tanh(c_t)
    return h_t, c_t, np.concatenate([i, f, g, o], axis=1)


def lstm_step_backward(dh_t, dc_t, c_t, gates, x_t, h_prev, c_prev, W_ih, W_hh, grads):
    """Backward of one LSTM step. dh_t (N, H) is the total gradient reaching h_t; dc_t (N, H) the gradient
    reaching c_t from later steps (not through h_t). grads = (dW_ih, dW_hh, db_ih, db_hh) accumulate (+=).
    Returns (dx_t, dh_prev, dc_prev, da) with da (N, 4H) the gradient of the gate pre-activations.
    """
    H = dh_t.shape[1]
    dW_ih, dW_hh, db_ih, db_hh = grads
    i, f, g, o = gates[:, 0:H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:4 * H]
    tc = act_tanh(c_t)
    dc = dc_t + dh_t * o * dact_tanh(tc)          # backprop through h_t = o * tanh(c_t) into c_t
    do = dh_t * tc                                # ... and into o
    di, dg, df = dc * g, dc * i, dc * c_prev      # through c_t = f * c_prev + i * g
    da = np.concatenate([di * dact_sigmoid(i), df * dact_sigmoid(f), dg * dact_tanh(g), do * dact_sigmoid(o)],
                        axis=1)                   # through the gate activations
    dW_ih += da.T @ x_t                           # into W_ih
    dW_hh += da.T @ h_prev                        # into W_hh
    if db_ih is not None:
        db_ih += da.sum(axis=0)                   # into both biases
        db_hh += da.sum(axis=0)
    dx_t = da @ W_ih                              # into the input
    dh_prev = da @ W_hh                           # into the previous hidden state
    dc_prev = dc * f                              # into the previous cell state
    return dx_t, dh_prev, dc_prev, da


def lstm_forward(x, h0, c0, weights, need_cache=True):
    """Stacked LSTM. x (T, N, D); h0, c0 (L, N, H) or None for zeros; weights: L tuples (W_ih (4H, D_k),
    W_hh (4H, H), b_ih (4H,) or None, b_hh (4H,) or None). Returns (out (T, N, H), h_n (L, N, H),
    c_n (L, N, H), cache or None).
    """
    T, N, _ = x.shape
    L = len(weights)
    H = weights[0][1].shape[1]
    dtype = x.dtype
    h0 = np.zeros((L, N, H), dtype=dtype) if h0 is None else h0
    c0 = np.zeros((L, N, H), dtype=dtype) if c0 is None else c0
    hs = np.empty((L, T, N, H), dtype=dtype)
    cs = np.empty((L, T, N, H), dtype=dtype)
    gates = np.empty((L, T, N, 4 * H), dtype=dtype)
    h_n = np.empty((L, N, H), dtype=dtype)
    c_n = np.empty((L, N, H), dtype=dtype)
    for k, (W_ih, W_hh, b_ih, b_hh) in enumerate(weights):
        inp = x if k == 0 else hs[k - 1]
        h, c = h0[k], c0[k]
        for t in range(T):
            h, c, gates[k, t] = lstm_step_forward(inp[t], h, c, W_ih, W_hh, b_ih, b_hh)
            hs[k, t], cs[k, t] = h, c
        h_n[k], c_n[k] = h, c
    out = hs[L - 1].copy()
    cache = LSTMCache(_keep(x), _keep(h0), _keep(c0), hs, cs, gates, list(weights), "numpy") if need_cache else None
    return out, h_n, c_n, cache


def lstm_backward(dout, dh_n, dc_n, cache, grads, dcs=None):
    """Backward through lstm_forward. dout (T, N, H), dh_n and dc_n (L, N, H), each or None; dcs (L, T, N, H)
    or None: extra gradient reaching the cell state of every step (variable-length batches put dc_n there).
    grads accumulate (+=). Returns (dx (T, N, D), dh0 (L, N, H), dc0 (L, N, H)).
    """
    x, h0, c0, hs, cs, gates, weights = cache.x, cache.h0, cache.c0, cache.hs, cache.cs, cache.gates, cache.weights
    L, T, N, H = hs.shape
    dtype = hs.dtype
    dh0 = np.empty((L, N, H), dtype=dtype)
    dc0 = np.empty((L, N, H), dtype=dtype)
    dy = np.zeros((T, N, H), dtype=dtype) if dout is None else dout
    for k in reversed(range(L)):
        W_ih, W_hh, _, _ = weights[k]
        inp = x if k == 0 else hs[k - 1]
        dinp = np.empty((T, N, W_ih.shape[1]), dtype=dtype)
        dh_next = np.zeros((N, H), dtype=dtype) if dh_n is None else dh_n[k].copy()
        dc_next = np.zeros((N, H), dtype=dtype) if dc_n is None else dc_n[k].copy()
        for t in reversed(range(T)):
            if dcs is not None:
                dc_next = dc_next + dcs[k, t]
            h_prev = hs[k, t - 1] if t > 0 else h0[k]
            c_prev = cs[k, t - 1] if t > 0 else c0[k]
            dinp[t], dh_next, dc_next, _ = lstm_step_backward(dy[t] + dh_next, dc_next, cs[k, t], gates[k, t],
                                                              inp[t], h_prev, c_prev, W_ih, W_hh, grads[k])
        dh0[k], dc0[k] = dh_next, dc_next
        dy = dinp
    return dy, dh0, dc0


def gru_step_forward(x_t, h_prev, W_ih, W_hh, b_ih=None, b_hh=None):
    """One GRU step (PyTorch's variant). x_t (N, D), h_prev (N, H) -> (h_t (N, H), gates (N, 3H), ghn (N, H)).

    r = sig(x W_ir^T + b_ir + h W_hr^T + b_hr), z likewise, ghn = h W_hn^T + b_hn,
    n = tanh(x W_in^T + b_in + r * ghn), h_t = (1 - z) * n + z * h_prev. gates = [r, z, n].
    """
    H = h_prev.shape[1]
    gi = x_t @ W_ih.T
    gh = h_prev @ W_hh.T
    if b_ih is not None:
        gi = gi + b_ih
        gh = gh + b_hh
    r = act_sigmoid(gi[:, 0:H] + gh[:, 0:H])
    z = act_sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    ghn = gh[:, 2 * H:3 * H]
    n = act_tanh(gi[:, 2 * H:3 * H] + r * ghn)
    h_t = (1 - z) * n + z * h_prev
    return h_t, np.concatenate([r, z, n], axis=1), ghn


def gru_step_backward(dh_t, gates, ghn, x_t, h_prev, W_ih, W_hh, grads):
    """Backward of one GRU step. dh_t (N, H) is the total gradient reaching h_t; grads accumulate (+=).
    Returns (dx_t, dh_prev, dgi, dgh): the gradients of the input-side and hidden-side pre-activations (N, 3H),
    which differ in the n block (the hidden side is scaled by r).
    """
    H = dh_t.shape[1]
    dW_ih, dW_hh, db_ih, db_hh = grads
    r, z, n = gates[:, 0:H], gates[:, H:2 * H], gates[:, 2 * H:3 * H]
    dn = dh_t * (1 - z) * dact_tanh(n)            # through h_t = (1 - z) n + z h_prev, then tanh
    dz = dh_t * (h_prev - n) * dact_sigmoid(z)
    dr = dn * ghn * dact_sigmoid(r)               # the reset gate multiplied ghn = W_hn h + b_hn
    dgi = np.concatenate([dr, dz, dn], axis=1)
    dgh = np.concatenate([dr, dz, dn * r], axis=1)
    dW_ih += dgi.T @ x_t                          # into W_ih
    dW_hh += dgh.T @ h_prev                       # into W_hh
    if db_ih is not None:
        db_ih += dgi.sum(axis=0)                  # into the biases
        db_hh += dgh.sum(axis=0)
    dx_t = dgi @ W_ih                             # into the input
    dh_prev = dh_t * z + dgh @ W_hh               # into the previous hidden state, directly and through W_hh
    return dx_t, dh_prev, dgi, dgh


def gru_forward(x, h0, weights, need_cache=True):
    """Stacked GRU. x (T, N, D); h0 (L, N, H) or None for zeros; weights: L tuples (W_ih (3H, D_k),
    W_hh (3H, H), b_ih (3H,) or None, b_hh (3H,) or None). Returns (out (T, N, H), h_n (L, N, H), cache or None).
    """
    T, N, _ = x.shape
    L = len(weights)
    H = weights[0][1].shape[1]
    dtype = x.dtype
    h0 = np.zeros((L, N, H), dtype=dtype) if h0 is None else h0
    hs = np.empty((L, T, N, H), dtype=dtype)
    gates = np.empty((L, T, N, 3 * H), dtype=dtype)
    ghn = np.empty((L, T, N, H), dtype=dtype)
    h_n = np.empty((L, N, H), dtype=dtype)
    for k, (W_ih, W_hh, b_ih, b_hh) in enumerate(weights):
        inp = x if k == 0 else hs[k - 1]
        h = h0[k]
        for t in range(T):
            h, gates[k, t], ghn[k, t] = gru_step_forward(inp[t], h, W_ih, W_hh, b_ih, b_hh)
            hs[k, t] = h
        h_n[k] = h
    out = hs[L - 1].copy()
    cache = GRUCache(_keep(x), _keep(h0), hs, gates, ghn, list(weights), "numpy") if need_cache else None
    return out, h_n, cache


def gru_backward(dout, dh_n, cache, grads):
    """Backward through gru_forward. dout (T, N, H) or None; dh_n (L, N, H) or None; grads accumulate (+=).
    Returns (dx (T, N, D), dh0 (L, N, H)).
    """
    x, h0, hs, gates, ghn, weights = cache.x, cache.h0, cache.hs, cache.gates, cache.ghn, cache.weights
    L, T, N, H = hs.shape
    dtype = hs.dtype
    dh0 = np.empty((L, N, H), dtype=dtype)
    dy = np.zeros((T, N, H), dtype=dtype) if dout is None else dout
    for k in reversed(range(L)):
        W_ih, W_hh, _, _ = weights[k]
        inp = x if k == 0 else hs[k - 1]
        dinp = np.empty((T, N, W_ih.shape[1]), dtype=dtype)
        dh_next = np.zeros((N, H), dtype=dtype) if dh_n is None else dh_n[k].copy()
        for t in reversed(range(T)):
            h_prev = hs[k, t - 1] if t > 0 else h0[k]
            dinp[t], dh_next, _, _ = gru_step_backward(dy[t] + dh_next, gates[k, t], ghn[k, t], inp[t], h_prev,
                                                       W_ih, W_hh, grads[k])
        dh0[k] = dh_next
        dy = dinp
    return dy, dh0


# ---- LSTM with projections (torch.nn.LSTM proj_size P > 0): one layer, one direction ----
# h_t = W_hr m_t with m_t = o_t * tanh(c_t): the hidden state h is P wide, the cell state c is H wide, so W_hh is
# (4H, P) and W_hr (P, H). `lengths` (N,) or None: a step t >= lengths[n] keeps sequence n's states and outputs
# zero; `reverse` runs t = T-1..0 (the reverse direction of a bidirectional layer, from each sequence's own end).


def lstm_proj_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hr, lengths=None, reverse=False, need_cache=True):
    """x (T, N, D), h0 (N, P), c0 (N, H) -> (out (T, N, P), h_n (N, P), c_n (N, H), cache or None) with cache the
    tuple (gates (T, N, 4H) after the activations, cs (T, N, H), ms (T, N, H), hs (T, N, P)): the states after each
    step and m_t (zero past a length)."""
    T, N, _ = x.shape
    P, H = W_hr.shape
    valid = np.ones((T, N), dtype=bool) if lengths is None else np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    out, hs = np.zeros((T, N, P), dtype=x.dtype), np.empty((T, N, P), dtype=x.dtype)
    cs, ms = np.empty((T, N, H), dtype=x.dtype), np.empty((T, N, H), dtype=x.dtype)
    gates = np.empty((T, N, 4 * H), dtype=x.dtype)
    h, c = h0.copy(), c0.copy()
    for t in (reversed(range(T)) if reverse else range(T)):
        a = x[t] @ W_ih.T + h @ W_hh.T
        if b_ih is not None:
            a = a + b_ih + b_hh
        i, f = act_sigmoid(a[:, 0:H]), act_sigmoid(a[:, H:2 * H])
        g, o = act_tanh(a[:, 2 * H:3 * H]), act_sigmoid(a[:, 3 * H:4 * H])
        v = valid[t][:, None]
        c = np.where(v, f * c + i * g, c)            # c_t = f * c_{t-1} + i * g
        m = np.where(v, o * act_tanh(c), 0)          # m_t = o * tanh(c_t)
        h = np.where(v, m @ W_hr.T, h)               # h_t = W_hr m_t
        out[t] = np.where(v, h, 0)
        gates[t], cs[t], ms[t], hs[t] = np.concatenate([i, f, g, o], axis=1), c, m, h
    return out, h, c, ((gates, cs, ms, hs) if need_cache else None)


def lstm_proj_backward(dout, dh_n, dc_n, x, h0, c0, cache, W_ih, W_hh, W_hr, grads, lengths=None, reverse=False):
    """Backward through lstm_proj_forward. dout (T, N, P), dh_n (N, P), dc_n (N, H), each or None; grads =
    (dW_ih, dW_hh, db_ih or None, db_hh or None, dW_hr) accumulate (+=). Returns (dx (T, N, D), dh0 (N, P),
    dc0 (N, H))."""
    gates, cs, ms, hs = cache
    T, N, _ = x.shape
    P, H = W_hr.shape
    dW_ih, dW_hh, db_ih, db_hh, dW_hr = grads
    valid = np.ones((T, N), dtype=bool) if lengths is None else np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    dh = np.zeros((N, P), dtype=x.dtype) if dh_n is None else dh_n.copy()
    dc = np.zeros((N, H), dtype=x.dtype) if dc_n is None else dc_n.copy()
    dx = np.zeros_like(x)
    order = list(reversed(range(T))) if reverse else list(range(T))
    for s in reversed(range(T)):
        t = order[s]
        h_prev = h0 if s == 0 else hs[order[s - 1]]
        c_prev = c0 if s == 0 else cs[order[s - 1]]
        v = valid[t][:, None]
        dht = np.where(v, dh + (0 if dout is None else dout[t]), 0)   # the gradient reaching h_t
        dW_hr += dht.T @ ms[t]                                        # into W_hr
        dm = dht @ W_hr                                               # through h_t = W_hr m_t into m_t
        # through the LSTM cell (rows past a length get no gradient there: they pass dh and dc through)
        dx[t], dh_prev, dc_prev, _ = lstm_step_backward(dm, np.where(v, dc, 0), cs[t], gates[t], x[t], h_prev,
                                                        c_prev, W_ih, W_hh, (dW_ih, dW_hh, db_ih, db_hh))
        dh, dc = np.where(v, dh_prev, dh), np.where(v, dc_prev, dc)
    return dx, dh, dc
