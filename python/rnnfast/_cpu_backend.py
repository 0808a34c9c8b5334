"""The "cpu" backend: a thin adapter from the functional API to the C++ extension rnnfast._C.

What it is: packing the cache record around what _C returns. What it is not: validation (the bindings
do it) or math (csrc/cpu).
"""
from __future__ import annotations

from . import _C
from ._cache import RNNCache


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
