"""The array API: forward(cell, ...) / backward(cell, ...) for every cell, and the named wrappers
rnn_forward / rnn_backward, lstm_forward / lstm_backward, gru_forward / gru_backward, dispatching to a
backend (numpy reference, C++ cpu, cuda); `lengths` and `bidirectional` route through rnnfast._stack.

What it is: the one call path layer -> functional -> backend; arguments are checked once, by
rnnfast._checks for a backend that does not check its own (backend.VALIDATES_ARGUMENTS is False: the
NumPy reference), else by the backend (the C++ bindings, the cuda backend on its converted arrays), with
the same messages. What it is not: layers or parameter storage (rnnfast.nn) or any math (the backends).

Weights are a list of L tuples (W_ih (G*H, D_k), W_hh (G*H, H), b_ih (G*H,) or None, b_hh (G*H,) or None),
G = 1 (RNN), 4 (LSTM: i, f, g, o) or 3 (GRU: r, z, n); gradients a list of L tuples of arrays of the same
shapes, accumulated (+=).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from . import _cells, _checks, _stack
from ._cache import StackCache
from .backends import get as _get_backend
from .backends import resolve as _resolve_backend

Weights = Sequence[Tuple[object, object, Optional[object], Optional[object]]]


_SUPPORTED: dict = {}   # (backend name, cell name) -> the backend module, once it is known to have the cell


def _backend(cell, backend):
    name = _resolve_backend(backend)
    mod = _SUPPORTED.get((name, cell.name))
    if mod is None:
        mod = _get_backend(name)
        if not cell.supported_by(mod):
            raise RuntimeError(f"backend {name!r} has no {cell.title} kernels yet; use 'cpu' or 'numpy'")
        _SUPPORTED[(name, cell.name)] = mod
    return name, mod


def forward(cell: str | _cells.Cell, x: np.ndarray, states: Sequence[Optional[np.ndarray]], weights: Weights,
            need_cache: bool = True, backend: Optional[str] = None, lengths=None, bidirectional: bool = False,
            c: Optional[np.ndarray] = None, nonlinearity: str = "tanh") -> tuple:
    """Stacked forward of `cell` ("rnn", "lstm", "gru" or a rnnfast._cells.Cell), time-major.

    states: one initial state per state of the cell ((h0,) or (h0, c0)), each (L, N, H) or None for zeros
    ((2L, N, H) with bidirectional). c (N, H) and nonlinearity: the vanilla RNN only.
    Returns (out (T, N, H) (or (T, N, 2H)), finals tuple like states, cache or None).
    """
    if cell.__class__ is not _cells.Cell:
        cell = _cells.get(cell)
    if len(states) != len(cell.states):
        raise ValueError(f"states must be a tuple ({', '.join(cell.states)}) for cell {cell.name!r}, "
                         f"got {len(states)} items")
    if lengths is not None or bidirectional:
        return _stack.forward(cell, x, states, weights, need_cache, backend, lengths, bidirectional, c,
                              nonlinearity)
    _, mod = _backend(cell, backend)
    if not mod.VALIDATES_ARGUMENTS:
        _checks.validate_forward(cell, x, states, weights, 1, c, nonlinearity)
    return _cells.call_forward(cell, mod, x, states, weights, need_cache, c, nonlinearity)


def backward(cell: str | _cells.Cell, dout: Optional[np.ndarray], dfinals: Sequence[Optional[np.ndarray]], cache,
             grads: Weights, backend: Optional[str] = None, dseqs: Optional[np.ndarray] = None) -> tuple:
    """Backward through forward(cell, ...). Parameter gradients in `grads` accumulate (+=); a call that
    raises has changed none of them. dfinals: one gradient (or None) per final state ((dh_n,) or
    (dh_n, dc_n)). Returns (dx (T, N, D), dstates tuple like states, dc (N, H) or None).
    The cache may be used more than once; it is not modified."""
    if cell.__class__ is not _cells.Cell:
        cell = _cells.get(cell)
    if cache.__class__ is StackCache:
        if cache.cell != cell.name:
            raise TypeError(f"cache must come from {cell.forward_name}, got the cache of a "
                            f"{cache.cell.upper()} forward")
        return _stack.backward(cell, cache, dout, dfinals, grads, backend)
    _, mod = _backend(cell, backend)
    if not mod.VALIDATES_ARGUMENTS:
        _checks.validate_backward(cell, dout, dfinals, cache, grads, cell.forward_name)
    return _cells.call_backward(cell, mod, dout, dfinals, cache, grads, dseqs)


def rnn_forward(x: np.ndarray, h0: Optional[np.ndarray], weights: Weights, c: Optional[np.ndarray] = None,
                nonlinearity: str = "tanh", need_cache: bool = True, backend: Optional[str] = None, lengths=None,
                bidirectional: bool = False) -> tuple:
    """Stacked vanilla RNN forward, time-major.

    x (T, N, D); h0 (L, N, H) or None for zeros; c (N, H) or None, added at every step of layer 0.
    Returns (out (T, N, H), h_n (L, N, H), cache); cache is None when need_cache is False.
    lengths (N,) ints in [0, T] and/or bidirectional=True: see lstm_forward (out is then (T, N, 2H), h0 and
    h_n (2L, N, H), weights 2L tuples; c is added at every step of layer 0 in both directions).
    """
    out, (h_n,), cache = forward(_cells.RNN, x, (h0,), weights, need_cache, backend, lengths, bidirectional, c,
                                 nonlinearity)
    return out, h_n, cache


def rnn_backward(dout: Optional[np.ndarray], dh_n: Optional[np.ndarray], cache, grads: Weights,
                 backend: Optional[str] = None) -> tuple:
    """Backward through rnn_forward. Parameter gradients in `grads` accumulate (+=).

    dout (T, N, H) or None; dh_n (L, N, H) or None. Returns (dx (T, N, D), dh0 (L, N, H), dc (N, H) or
    None when the forward had no c). The cache may be used more than once; it is not modified.
    """
    dx, (dh0,), dc = backward(_cells.RNN, dout, (dh_n,), cache, grads, backend)
    return dx, dh0, dc


def lstm_forward(x: np.ndarray, h0: Optional[np.ndarray], c0: Optional[np.ndarray], weights: Weights,
                 need_cache: bool = True, backend: Optional[str] = None, lengths=None,
                 bidirectional: bool = False) -> tuple:
    """Stacked LSTM forward, time-major, PyTorch's gates (i, f, g, o) and layout.

    x (T, N, D); h0, c0 (L, N, H) or None for zeros. Returns (out (T, N, H), h_n (L, N, H), c_n (L, N, H),
    cache); cache is None when need_cache is False.
    lengths: (N,) integers in [0, T], any order: each sequence stops at its own length; out is zero past
    it, h_n and c_n are taken at its last valid step (h0, c0 when the length is 0).
    bidirectional=True: weights are 2L tuples (l0, l0_reverse, l1, ...), h0/c0/h_n/c_n (2L, N, H) in
    PyTorch's order, out (T, N, 2H) = [forward, reverse]; the reverse direction starts at each sequence's
    own last valid step.
    """
    out, (h_n, c_n), cache = forward(_cells.LSTM, x, (h0, c0), weights, need_cache, backend, lengths,
                                     bidirectional)
    return out, h_n, c_n, cache


def lstm_backward(dout: Optional[np.ndarray], dh_n: Optional[np.ndarray], dc_n: Optional[np.ndarray], cache,
                  grads: Weights, backend: Optional[str] = None) -> tuple:
    """Backward through lstm_forward. Parameter gradients in `grads` accumulate (+=).

    dout (T, N, H) (or (T, N, 2H)), dh_n and dc_n (L, N, H) (or (2L, N, H)), each or None for zeros.
    Returns (dx (T, N, D), dh0, dc0). The cache may be used more than once; it is not modified.
    """
    dx, (dh0, dc0), _ = backward(_cells.LSTM, dout, (dh_n, dc_n), cache, grads, backend)
    return dx, dh0, dc0


def gru_forward(x: np.ndarray, h0: Optional[np.ndarray], weights: Weights, need_cache: bool = True,
                backend: Optional[str] = None, lengths=None, bidirectional: bool = False) -> tuple:
    """Stacked GRU forward, time-major, PyTorch's variant (reset gate applied to W_hn h + b_hn), gates
    (r, z, n). x (T, N, D); h0 (L, N, H) or None. Returns (out (T, N, H), h_n (L, N, H), cache).
    lengths and bidirectional as in lstm_forward.
    """
    out, (h_n,), cache = forward(_cells.GRU, x, (h0,), weights, need_cache, backend, lengths, bidirectional)
    return out, h_n, cache


def gru_backward(dout: Optional[np.ndarray], dh_n: Optional[np.ndarray], cache, grads: Weights,
                 backend: Optional[str] = None) -> tuple:
    """Backward through gru_forward. dout (T, N, H) (or (T, N, 2H)), dh_n (L, N, H) (or (2L, N, H)), each or
    None. Returns (dx (T, N, D), dh0). Parameter gradients accumulate (+=)."""
    dx, (dh0,), _ = backward(_cells.GRU, dout, (dh_n,), cache, grads, backend)
    return dx, dh0
