"""The "cpu" backend: a thin adapter from the functional API to the C++ extension rnnfast._C.

What it is: packing the cache record around what _C returns. What it is not: validation (the bindings
do it) or math (csrc/cpu).
"""
from __future__ import annotations

from . import _C
from ._cache import GRUCache, LSTMCache, RNNCache


def rnn_forward(x, h0, weights, c, nonlinearity, need_cache):
    out, h_n, kept = _C.rnn_forward(x, h0, weights, c, nonlinearity, need_cache)
    if kept is None:
        return out, h_n, None
    xc, h0c, hs, cc = kept
    return out, h_n, RNNCache(xc, h0c, hs, cc, list(weights), nonlinearity, "cpu")


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
    return out, h_n, c_n, LSTMCache(xc, h0c, c0c, hs, cs, gates, list(weights), "cpu")


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
    return out, h_n, GRUCache(xc, h0c, hs, gates, ghn, list(weights), "cpu")


def gru_backward(dout, dh_n, cache, grads):
    if not isinstance(cache, GRUCache):
        raise TypeError(f"cache must be the GRUCache returned by gru_forward(..., need_cache=True), "
                        f"got {type(cache).__name__}")
    return _C.gru_backward(dout, dh_n, cache.x, cache.h0, cache.hs, cache.gates, cache.ghn, cache.weights, grads)
