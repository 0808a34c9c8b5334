"""The forward->backward cache contract shared by every backend (DESIGN.md 3.9).

What it is: a plain record of what a training forward keeps, in the same layout whatever produced it, so
forward on one backend and backward on another works. What it is not: a place for computation.
"""
from __future__ import annotations


class RNNCache:
    """What `rnn_forward(..., need_cache=True)` keeps for `rnn_backward`.

    Fields (dimension letters T time, N batch, D input, H hidden, L layers):
      x       (T, N, D)    the input sequence of layer 0
      h0      (L, N, H)    the initial hidden states (zeros when the caller gave none)
      hs      (L, T, N, H) hidden state of every layer at every step; layer k>0 reads hs[k-1] as input
      c       (N, H)       the constant input of layer 0, or None
      weights list of L tuples (W_ih (H, D_k), W_hh (H, H), b_ih (H,) or None, b_hh (H,) or None)
      nonlinearity  "tanh" or "relu"
      backend the name of the backend that wrote it (informational)
    The cache holds T*N*H*L hidden values plus the input; nothing per step beyond that.
    """

    __slots__ = ("x", "h0", "hs", "c", "weights", "nonlinearity", "backend")

    def __init__(self, x, h0, hs, c, weights, nonlinearity, backend):
        self.x = x
        self.h0 = h0
        self.hs = hs
        self.c = c
        self.weights = weights
        self.nonlinearity = nonlinearity
        self.backend = backend

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-step state (hs) and the initial state."""
        return int(self.hs.nbytes + self.h0.nbytes)

    def __repr__(self) -> str:
        L, T, N, H = self.hs.shape
        return f"RNNCache(L={L}, T={T}, N={N}, H={H}, nonlinearity={self.nonlinearity!r}, backend={self.backend!r})"
