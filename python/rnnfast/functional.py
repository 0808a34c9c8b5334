"""rnn_forward / rnn_backward (and lstm_ / gru_ forward / backward) on arrays, dispatching to a backend
(numpy reference, C++ cpu, cuda); `lengths` and `bidirectional` route through rnnfast._stack.

What it is: the array-level API and, for the Python-side backends, the argument validation (the C++
bindings validate their own arguments with the same messages). What it is not: layers or parameter
storage (rnnfast.nn) or any math (the backends).

Weights are a list of L tuples (W_ih (H, D_k), W_hh (H, H), b_ih (H,) or None, b_hh (H,) or None),
gradients a list of L tuples of arrays of the same shapes, accumulated (+=).
"""
from __future__ import annotations

import numpy as np

from .backends import get as _get_backend
from .backends import resolve as _resolve_backend
from ._cache import GRUCache, LSTMCache, RNNCache, StackCache

_NONLIN = ("tanh", "relu")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _shape_str(names, dims):
    return "(" + ", ".join(names) + ") = (" + ", ".join(str(d) for d in dims) + ")"


def _check(name, a, names, dims, dtype):
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name} must be an array of shape {_shape_str(names, dims)}, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} (the dtype of x), got {a.dtype}")
    if tuple(a.shape) != tuple(dims):
        raise ValueError(f"{name} must have shape {_shape_str(names, dims)}, got {tuple(a.shape)}")


def validate_forward(x, h0, weights, c, nonlinearity):
    """Raise TypeError/ValueError naming the argument and the expected shape; return (T, N, D, H, L)."""
    if nonlinearity not in _NONLIN:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"x must be an array of shape (T, N, D), got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"x must have dtype float32 or float64, got {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, N, D), got {tuple(x.shape)} (rank {x.ndim})")
    if not isinstance(weights, (list, tuple)) or len(weights) == 0:
        raise ValueError("weights must be a non-empty list of L tuples (W_ih, W_hh, b_ih, b_hh)")
    T, N, D = x.shape
    L = len(weights)
    try:
        H = weights[0][1].shape[0]
    except Exception:
        raise TypeError("weights[0] must be a tuple (W_ih, W_hh, b_ih, b_hh) of arrays") from None
    if H <= 0:
        raise ValueError(f"weight_hh_l0 must have shape (H, H) with H >= 1, got {tuple(weights[0][1].shape)}")
    dt = x.dtype
    for k, w in enumerate(weights):
        if len(w) != 4:
            raise ValueError(f"weights[{k}] must be a tuple (W_ih, W_hh, b_ih, b_hh), got {len(w)} items")
        W_ih, W_hh, b_ih, b_hh = w
        Dk = D if k == 0 else H
        _check(f"weight_ih_l{k}", W_ih, ("H", "D" if k == 0 else "H"), (H, Dk), dt)
        _check(f"weight_hh_l{k}", W_hh, ("H", "H"), (H, H), dt)
        if (b_ih is None) != (b_hh is None):
            raise ValueError(f"bias_ih_l{k} and bias_hh_l{k} must both be given or both be None")
        if b_ih is not None:
            _check(f"bias_ih_l{k}", b_ih, ("H",), (H,), dt)
            _check(f"bias_hh_l{k}", b_hh, ("H",), (H,), dt)
    if h0 is not None:
        _check("h0", h0, ("L", "N", "H"), (L, N, H), dt)
    if c is not None:
        _check("c", c, ("N", "H"), (N, H), dt)
    return T, N, D, H, L


def validate_backward(dout, dh_n, cache, grads):
    if not isinstance(cache, RNNCache):
        raise TypeError(f"cache must be the RNNCache returned by rnn_forward(..., need_cache=True), "
                        f"got {type(cache).__name__}")
    L, T, N, H = cache.hs.shape
    dt = cache.hs.dtype
    if dout is not None:
        _check("dout", dout, ("T", "N", "H"), (T, N, H), dt)
    if dh_n is not None:
        _check("dh_n", dh_n, ("L", "N", "H"), (L, N, H), dt)
    _check_grads(grads, cache.weights, L, dt)


def _check_grads(grads, weights, L, dt):
    """grads: L tuples shaped like the weights, of dtype dt, writeable (they are accumulated into)."""
    if not isinstance(grads, (list, tuple)) or len(grads) != L:
        raise ValueError(f"grads must be a list of L = {L} tuples (dW_ih, dW_hh, db_ih, db_hh)")
    for k, (g, w) in enumerate(zip(grads, weights)):
        for gname, ga, wa in zip(("dW_ih", "dW_hh", "db_ih", "db_hh"), g, w):
            if wa is None:
                continue
            if ga is None:
                raise ValueError(f"{gname}_l{k} must be given (the layer has that parameter)")
            _check(f"{gname}_l{k}", ga, tuple("?" * wa.ndim), wa.shape, dt)
            if not getattr(ga.flags, "writeable", True):   # CuPy arrays have no such flag
                raise ValueError(f"{gname}_l{k} must be writeable (gradients accumulate into it)")


def _as_contig(a):
    return a if a is None or a.flags.c_contiguous else np.ascontiguousarray(a)


def rnn_forward(x, h0, weights, c=None, nonlinearity="tanh", need_cache=True, backend=None, lengths=None,
                bidirectional=False):
    """Stacked vanilla RNN forward, time-major.

    x (T, N, D); h0 (L, N, H) or None for zeros; c (N, H) or None, added at every step of layer 0.
    Returns (out (T, N, H), h_n (L, N, H), cache); cache is None when need_cache is False.
    lengths (N,) ints in [0, T] and/or bidirectional=True: see lstm_forward (out is then (T, N, 2H), h0 and
    h_n (2L, N, H), weights 2L tuples; c is added at every step of layer 0 in both directions).
    """
    if lengths is not None or bidirectional:
        from . import _stack
        out, (h_n,), cache = _stack.forward("rnn", x, (h0,), weights, need_cache, backend, lengths, bidirectional,
                                            c, nonlinearity)
        return out, h_n, cache
    name = _resolve_backend(backend)
    mod = _get_backend(name)
    if name in ("cpu", "cuda"):  # these validate themselves, same messages: cpu in its bindings (less
        return mod.rnn_forward(x, h0, weights, c, nonlinearity, need_cache)  # overhead), cuda on CuPy views
    validate_forward(x, h0, weights, c, nonlinearity)
    if name == "numpy":
        x, h0, c = _as_contig(x), _as_contig(h0), _as_contig(c)
    return mod.rnn_forward(x, h0, weights, c, nonlinearity, need_cache)


def rnn_backward(dout, dh_n, cache, grads, backend=None):
    """Backward through rnn_forward. Parameter gradients in `grads` accumulate (+=).

    dout (T, N, H) or None; dh_n (L, N, H) or None. Returns (dx (T, N, D), dh0 (L, N, H), dc (N, H) or
    None when the forward had no c). The cache may be used more than once; it is not modified.
    """
    if isinstance(cache, StackCache):
        from . import _stack
        _check_cell(cache, "rnn", "rnn_forward")
        dx, (dh0,), dc = _stack.backward(cache, dout, (dh_n,), grads, backend)
        return dx, dh0, dc
    name = _resolve_backend(backend)
    mod = _get_backend(name)
    if name in ("cpu", "cuda"):
        return mod.rnn_backward(dout, dh_n, cache, grads)
    validate_backward(dout, dh_n, cache, grads)
    return mod.rnn_backward(dout, dh_n, cache, grads)


# ---- gated cells: LSTM and GRU (PyTorch's gate order and layout) ----
# Weights are L tuples (W_ih (G*H, D_k), W_hh (G*H, H), b_ih (G*H,) or None, b_hh (G*H,) or None) with
# G = 4 (LSTM: i, f, g, o) or 3 (GRU: r, z, n); gradients the same structure, accumulated (+=).


def validate_gated_forward(cell, x, states, weights):
    """Raise TypeError/ValueError naming the argument and the gate-stacked shape; return (T, N, D, H, L).
    cell "lstm" or "gru"; states (h0, c0) or (h0,), each (L, N, H) or None."""
    from ._stack import validate
    return validate(cell, x, states, weights, 1)


def validate_gated_backward(cell, dout, dfinals, cache, grads):
    kind = LSTMCache if cell == "lstm" else GRUCache
    if not isinstance(cache, kind):
        raise TypeError(f"cache must be the {kind.__name__} returned by {cell}_forward(..., need_cache=True), "
                        f"got {type(cache).__name__}")
    L, T, N, H = cache.hs.shape
    dt = cache.hs.dtype
    if dout is not None:
        _check("dout", dout, ("T", "N", "H"), (T, N, H), dt)
    for sname, df in zip(("dh_n", "dc_n"), dfinals):
        if df is not None:
            _check(sname, df, ("L", "N", "H"), (L, N, H), dt)
    _check_grads(grads, cache.weights, L, dt)


def _check_cell(cache, cell, fwd):
    if cache.cell != cell:
        raise TypeError(f"cache must come from {fwd}, got the cache of a {cache.cell.upper()} forward")


def _gated_backend(backend, what):
    name = _resolve_backend(backend)
    mod = _get_backend(name)
    if not hasattr(mod, what):
        raise RuntimeError(f"backend {name!r} has no {what.split('_')[0].upper()} kernels yet; use 'cpu' or 'numpy'")
    return name, mod


def lstm_forward(x, h0, c0, weights, need_cache=True, backend=None, lengths=None, bidirectional=False):
    """Stacked LSTM forward, time-major, PyTorch's gates (i, f, g, o) and layout.

    x (T, N, D); h0, c0 (L, N, H) or None for zeros. Returns (out (T, N, H), h_n (L, N, H), c_n (L, N, H),
    cache); cache is None when need_cache is False.
    lengths: (N,) integers in [0, T], any order: each sequence stops at its own length; out is zero past
    it, h_n and c_n are taken at its last valid step (h0, c0 when the length is 0).
    bidirectional=True: weights are 2L tuples (l0, l0_reverse, l1, ...), h0/c0/h_n/c_n (2L, N, H) in
    PyTorch's order, out (T, N, 2H) = [forward, reverse]; the reverse direction starts at each sequence's
    own last valid step.
    """
    if lengths is not None or bidirectional:
        from . import _stack
        out, (h_n, c_n), cache = _stack.forward("lstm", x, (h0, c0), weights, need_cache, backend, lengths,
                                                bidirectional)
        return out, h_n, c_n, cache
    name, mod = _gated_backend(backend, "lstm_forward")
    if name == "cpu":
        return mod.lstm_forward(x, h0, c0, weights, need_cache)
    validate_gated_forward("lstm", x, (h0, c0), weights)
    if name == "numpy":
        x, h0, c0 = _as_contig(x), _as_contig(h0), _as_contig(c0)
    return mod.lstm_forward(x, h0, c0, weights, need_cache)


def _lstm_backward(dout, dh_n, dc_n, cache, grads, backend, dcs):
    if isinstance(cache, StackCache):
        from . import _stack
        _check_cell(cache, "lstm", "lstm_forward")
        dx, (dh0, dc0), _ = _stack.backward(cache, dout, (dh_n, dc_n), grads, backend)
        return dx, dh0, dc0
    name, mod = _gated_backend(backend, "lstm_backward")
    if name == "cpu":
        return mod.lstm_backward(dout, dh_n, dc_n, cache, grads, dcs)
    validate_gated_backward("lstm", dout, (dh_n, dc_n), cache, grads)
    return mod.lstm_backward(dout, dh_n, dc_n, cache, grads, dcs)


def lstm_backward(dout, dh_n, dc_n, cache, grads, backend=None):
    """Backward through lstm_forward. Parameter gradients in `grads` accumulate (+=).

    dout (T, N, H) (or (T, N, 2H)), dh_n and dc_n (L, N, H) (or (2L, N, H)), each or None for zeros.
    Returns (dx (T, N, D), dh0, dc0). The cache may be used more than once; it is not modified.
    """
    return _lstm_backward(dout, dh_n, dc_n, cache, grads, backend, None)


def gru_forward(x, h0, weights, need_cache=True, backend=None, lengths=None, bidirectional=False):
    """Stacked GRU forward, time-major, PyTorch's variant (reset gate applied to W_hn h + b_hn), gates
    (r, z, n). x (T, N, D); h0 (L, N, H) or None. Returns (out (T, N, H), h_n (L, N, H), cache).
    lengths and bidirectional as in lstm_forward.
    """
    if lengths is not None or bidirectional:
        from . import _stack
        out, (h_n,), cache = _stack.forward("gru", x, (h0,), weights, need_cache, backend, lengths, bidirectional)
        return out, h_n, cache
    name, mod = _gated_backend(backend, "gru_forward")
    if name == "cpu":
        return mod.gru_forward(x, h0, weights, need_cache)
    validate_gated_forward("gru", x, (h0,), weights)
    if name == "numpy":
        x, h0 = _as_contig(x), _as_contig(h0)
    return mod.gru_forward(x, h0, weights, need_cache)


def gru_backward(dout, dh_n, cache, grads, backend=None):
    """Backward through gru_forward. dout (T, N, H) (or (T, N, 2H)), dh_n (L, N, H) (or (2L, N, H)), each or
    None. Returns (dx (T, N, D), dh0). Parameter gradients accumulate (+=)."""
    if isinstance(cache, StackCache):
        from . import _stack
        _check_cell(cache, "gru", "gru_forward")
        dx, (dh0,), _ = _stack.backward(cache, dout, (dh_n,), grads, backend)
        return dx, dh0
    name, mod = _gated_backend(backend, "gru_backward")
    if name == "cpu":
        return mod.gru_backward(dout, dh_n, cache, grads)
    validate_gated_backward("gru", dout, (dh_n,), cache, grads)
    return mod.gru_backward(dout, dh_n, cache, grads)
