"""The "cpu" backend: a thin adapter from the functional API to the C++ extension rnnfast._C.

What it is: packing the cache record around what _C returns (the backend interface of rnnfast._cells:
<cell>_forward / <cell>_backward). What it is not: validation (the bindings do it) or math (csrc/cpu).
"""
from __future__ import annotations

import numpy as np

from . import _C
from ._cache import GRUCache, LSTMCache, RNNCache

VALIDATES_ARGUMENTS = True   # the bindings check every argument (csrc/bindings/validate.h)
HOST_ARRAYS = True           # NumPy in, NumPy out: usable by the lengths / bidirectional path


def _own(kept, given):
    """The cache keeps its own copy of a caller's array: _C hands back the caller's array itself when it was
    already C-contiguous, and changing it in place before backward would change the gradients."""
    if kept is given:                  # kept is None when given is None, so None passes through
        return None if kept is None else kept.copy()
    if kept is not None and kept.base is not None and np.may_share_memory(kept, given):
        return kept.copy()             # a view the bindings made of the caller's memory
    return kept


def _own_x(kept, given, weights):
    """_own for the input x, except when layer 0's input weight is None (the identity: x is the input
    projection itself, a gathered one-hot input): backward then never reads x (no dW_ih, and dx is the gate
    gradient), so changing it in place cannot change a gradient, and copying it (T*N*G*H values, 3.3 MB for a
    char-LM LSTM step at N=32) would only cost time."""
    return kept if weights and weights[0][0] is None else _own(kept, given)


def rnn_forward(x, h0, weights, c, nonlinearity, need_cache):
    out, h_n, kept = _C.rnn_forward(x, h0, weights, c, nonlinearity, need_cache)
    if kept is None:
        return out, h_n, None
    xc, h0c, hs, cc = kept
    return out, h_n, RNNCache(_own_x(xc, x, weights), _own(h0c, h0), hs, _own(cc, c), list(weights), nonlinearity,
                              "cpu")


def rnn_backward(dout, dh_n, cache, grads):
    if not isinstance(cache, RNNCache):
        raise TypeError(f"cache must be the RNNCache returned by rnn_forward(..., need_cache=True), "
                        f"got {type(cache).__name__}")
    return _C.rnn_backward(dout, dh_n, cache.x, cache.h0, cache.hs, cache.c is not None, cache.weights, grads,
                           cache.nonlinearity)


def lstm_forward(x, h0, c0, weights, need_cache):
    out, h_n, c_n, kept = _C.lstm_forward(x, h0, c0, weights, need_cache)
    if kept is None:
        return out, h_n, c_n, None
    xc, h0c, c0c, hs, cs, gates = kept
    return out, h_n, c_n, LSTMCache(_own_x(xc, x, weights), _own(h0c, h0), _own(c0c, c0), hs, cs, gates,
                                    list(weights), "cpu")


def lstm_backward(dout, dh_n, dc_n, cache, grads, dcs=None):
    if not isinstance(cache, LSTMCache):
        raise TypeError(f"cache must be the LSTMCache returned by lstm_forward(..., need_cache=True), "
                        f"got {type(cache).__name__}")
    return _C.lstm_backward(dout, dh_n, dc_n, dcs, cache.x, cache.h0, cache.c0, cache.hs, cache.cs, cache.gates,
                            cache.weights, grads)


def gru_forward(x, h0, weights, need_cache):
    out, h_n, kept = _C.gru_forward(x, h0, weights, need_cache)
    if kept is None:
        return out, h_n, None
    xc, h0c, hs, gates, ghn = kept
    return out, h_n, GRUCache(_own_x(xc, x, weights), _own(h0c, h0), hs, gates, ghn, list(weights), "cpu")


def gru_backward(dout, dh_n, cache, grads):
    if not isinstance(cache, GRUCache):
        raise TypeError(f"cache must be the GRUCache returned by gru_forward(..., need_cache=True), "
                        f"got {type(cache).__name__}")
    return _C.gru_backward(dout, dh_n, cache.x, cache.h0, cache.hs, cache.gates, cache.ghn, cache.weights, grads)
