"""rnn_forward / rnn_backward on arrays, dispatching to a backend (numpy reference, C++ cpu, cuda).

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
from ._cache import RNNCache

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
    if not isinstance(grads, (list, tuple)) or len(grads) != L:
        raise ValueError(f"grads must be a list of L = {L} tuples (dW_ih, dW_hh, db_ih, db_hh)")
    for k, (g, w) in enumerate(zip(grads, cache.weights)):
        for gname, ga, wa in zip(("dW_ih", "dW_hh", "db_ih", "db_hh"), g, w):
            if wa is None:
                continue
            if ga is None:
                raise ValueError(f"{gname}_l{k} must be given (the layer has that parameter)")
            _check(f"{gname}_l{k}", ga, tuple("?" * wa.ndim), wa.shape, dt)
            if not ga.flags.writeable:
                raise ValueError(f"{gname}_l{k} must be writeable (gradients accumulate into it)")


def _as_contig(a):
    return a if a is None or a.flags.c_contiguous else np.ascontiguousarray(a)


def rnn_forward(x, h0, weights, c=None, nonlinearity="tanh", need_cache=True, backend=None):
    """Stacked vanilla RNN forward, time-major.

    x (T, N, D); h0 (L, N, H) or None for zeros; c (N, H) or None, added at every step of layer 0.
    Returns (out (T, N, H), h_n (L, N, H), cache); cache is None when need_cache is False.
    """
    name = _resolve_backend(backend)
    mod = _get_backend(name)
    if name == "cpu":  # the bindings validate (same messages) and avoid Python overhead at small sizes
        return mod.rnn_forward(x, h0, weights, c, nonlinearity, need_cache)
    validate_forward(x, h0, weights, c, nonlinearity)
    if name == "numpy":
        x, h0, c = _as_contig(x), _as_contig(h0), _as_contig(c)
    return mod.rnn_forward(x, h0, weights, c, nonlinearity, need_cache)


def rnn_backward(dout, dh_n, cache, grads, backend=None):
    """Backward through rnn_forward. Parameter gradients in `grads` accumulate (+=).

    dout (T, N, H) or None; dh_n (L, N, H) or None. Returns (dx (T, N, D), dh0 (L, N, H), dc (N, H) or
    None when the forward had no c). The cache may be used more than once; it is not modified.
    """
    name = _resolve_backend(backend)
    mod = _get_backend(name)
    if name == "cpu":
        return mod.rnn_backward(dout, dh_n, cache, grads)
    validate_backward(dout, dh_n, cache, grads)
    return mod.rnn_backward(dout, dh_n, cache, grads)
