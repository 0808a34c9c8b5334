"""The forward->backward cache contract shared by every backend (docs/design.md 3.9).

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


class LSTMCache:
    """What `lstm_forward(..., need_cache=True)` keeps for `lstm_backward`, the same in every backend.

    Fields (G = 4 gates i, f, g, o in PyTorch's order):
      x       (T, N, D)     the input sequence of layer 0
      h0, c0  (L, N, H)     the initial hidden and cell states (zeros when the caller gave none)
      hs      (L, T, N, H)  hidden state of every layer at every step; layer k>0 reads hs[k-1] as input
      cs      (L, T, N, H)  cell state of every layer at every step
      gates   (L, T, N, 4H) the gates after their activations: [sig(a_i), sig(a_f), tanh(a_g), sig(a_o)]
      weights list of L tuples (W_ih (4H, D_k), W_hh (4H, H), b_ih (4H,) or None, b_hh (4H,) or None)
      backend the name of the backend that wrote it (informational)
    Backward recomputes tanh(c_t) from cs rather than keeping it.
    """

    __slots__ = ("x", "h0", "c0", "hs", "cs", "gates", "weights", "backend")

    def __init__(self, x, h0, c0, hs, cs, gates, weights, backend):
        self.x, self.h0, self.c0, self.hs, self.cs, self.gates = x, h0, c0, hs, cs, gates
        self.weights = weights
        self.backend = backend

    @property
    def nbytes(self) -> int:
        return int(self.hs.nbytes + self.cs.nbytes + self.gates.nbytes + self.h0.nbytes + self.c0.nbytes)

    def __repr__(self) -> str:
        L, T, N, H = self.hs.shape
        return f"LSTMCache(L={L}, T={T}, N={N}, H={H}, backend={self.backend!r})"


class GRUCache:
    """What `gru_forward(..., need_cache=True)` keeps for `gru_backward`, the same in every backend.

    Fields (G = 3 gates r, z, n in PyTorch's order):
      x       (T, N, D)     the input sequence of layer 0
      h0      (L, N, H)     the initial hidden states (zeros when the caller gave none)
      hs      (L, T, N, H)  hidden state of every layer at every step; layer k>0 reads hs[k-1] as input
      gates   (L, T, N, 3H) the gates after their activations: [sig(a_r), sig(a_z), tanh(a_n)]
      ghn     (L, T, N, H)  W_hn h_{t-1} + b_hn, the term the reset gate multiplies (needed for dr)
      weights list of L tuples (W_ih (3H, D_k), W_hh (3H, H), b_ih (3H,) or None, b_hh (3H,) or None)
      backend the name of the backend that wrote it (informational)
    """

    __slots__ = ("x", "h0", "hs", "gates", "ghn", "weights", "backend")

    def __init__(self, x, h0, hs, gates, ghn, weights, backend):
        self.x, self.h0, self.hs, self.gates, self.ghn = x, h0, hs, gates, ghn
        self.weights = weights
        self.backend = backend

    @property
    def nbytes(self) -> int:
        return int(self.hs.nbytes + self.gates.nbytes + self.ghn.nbytes + self.h0.nbytes)

    def __repr__(self) -> str:
        L, T, N, H = self.hs.shape
        return f"GRUCache(L={L}, T={T}, N={N}, H={H}, backend={self.backend!r})"


class StackCache:
    """What a forward with `lengths` and/or `bidirectional=True` keeps (any cell): the layers run one at a
    time, each direction on its own, around the ordinary kernels.

    Fields:
      cell     "rnn", "lstm" or "gru"
      caches   L*dirs inner caches (RNNCache / LSTMCache / GRUCache with one layer each), index k*dirs + d,
               d = 0 forward, 1 reverse (PyTorch's order); a reverse cache holds its input time-reversed
               within each sequence's valid prefix
      lengths  (N,) int64, each in [0, T] (all T when the forward got none)
      rev      (T, N) int64: rev[t, n] = lengths[n]-1-t for t < lengths[n], else t (an involution)
      dirs     1 or 2
      D        layer 0's input width; H hidden size
      has_c    whether an RNN forward got the constant input c
      backend  the name of the backend that ran it (informational)
    """

    __slots__ = ("cell", "caches", "lengths", "rev", "dirs", "D", "H", "has_c", "backend")

    def __init__(self, cell, caches, lengths, rev, dirs, D, H, has_c, backend):
        self.cell, self.caches, self.lengths, self.rev = cell, caches, lengths, rev
        self.dirs, self.D, self.H, self.has_c, self.backend = dirs, D, H, has_c, backend

    @property
    def nbytes(self) -> int:
        return int(sum(c.nbytes for c in self.caches))

    def __repr__(self) -> str:
        T, N = self.rev.shape
        return (f"StackCache(cell={self.cell!r}, L={len(self.caches) // self.dirs}, dirs={self.dirs}, T={T}, "
                f"N={N}, H={self.H}, backend={self.backend!r})")
