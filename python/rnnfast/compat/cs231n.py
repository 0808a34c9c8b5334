"""Drop-in replacements for the layer functions and CaptioningRNN of the cs231n RNN captioning assignment.

What it is: the same names, signatures, shapes (batch-first, Wx (D, H)) and return tuples as the
assignment's NumPy code (2016-2024), with whole-sequence rnn_forward/rnn_backward running on rnnfast's fused
kernels. What it is not: a copy of the assignment. Caches are opaque objects of our own; backward functions
never modify their inputs.
"""
from __future__ import annotations

import numpy as np

from .. import functional as _F
from .._cache import RNNCache

__all__ = [
    "affine_forward", "affine_backward", "sigmoid",
    "rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward",
    "lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward",
    "word_embedding_forward", "word_embedding_backward",
    "temporal_affine_forward", "temporal_affine_backward", "temporal_softmax_loss",
    "CaptioningRNN",
]


# ---- argument checks (names and shapes in the assignment's letters N T D H V) ----


def _arr(name, a):
    """a as a real numeric array, else TypeError naming it (complex input would lose its imaginary part)."""
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        a = np.asarray(a)
        if a.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got {type(a).__name__}")
    if np.dtype(a.dtype).kind not in "biuf":
        raise TypeError(f"{name} must be a real (float) array, got dtype {a.dtype}")
    return a


def _ids(name, a, V):
    """a as integer ids in [0, V), else TypeError/ValueError naming it (never an IndexError or a silent
    wrap-around of negative ids)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer ids, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= V):
        raise ValueError(f"{name} must hold ids in [0, V) with V={V}, got range [{a.min()}, {a.max()}]")
    return a


def _shape(name, a, letters, dims):
    """Raise ValueError unless a.shape == dims (None entries match anything)."""
    ok = a.ndim == len(dims) and all(d is None or s == d for s, d in zip(a.shape, dims))
    if not ok:
        want = ", ".join(f"{l}={d}" if d is not None else l for l, d in zip(letters, dims))
        raise ValueError(f"{name} must have shape ({', '.join(letters)}) with {want}, got {tuple(a.shape)}")


def _float_dtype(*arrays):
    """NumPy's result dtype of the inputs, mapped onto what the kernels compute in (float32 or float64)."""
    dt = np.result_type(*arrays)
    return np.dtype(np.float32) if dt in (np.float16, np.float32) else np.dtype(np.float64)


# ---- affine and sigmoid (the assignment's layers.py helpers used by its rnn.py) ----


def affine_forward(x, w, b):
    """x (N, d_1, ..., d_k) flattened to (N, D); w (D, M); b (M,). Returns (out (N, M), cache)."""
    x, w, b = _arr("x", x), _arr("w", w), _arr("b", b)
    N = x.shape[0]
    x2 = x.reshape(N, -1)
    _shape("w", w, ("D", "M"), (x2.shape[1], None))
    _shape("b", b, ("M",), (w.shape[1],))
    return x2 @ w + b, (x, w, b)


def affine_backward(dout, cache):
    """dout (N, M). Returns (dx shaped as x, dw (D, M), db (M,))."""
    x, w, _ = cache
    x2 = x.reshape(x.shape[0], -1)
    dx = (dout @ w.T).reshape(x.shape)      # into the input
    dw = x2.T @ dout                        # into the weights
    db = dout.sum(axis=0)                   # into the bias
    return dx, dw, db


def sigmoid(x):
    """Numerically stable logistic function: never evaluates exp of a positive number."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(x.dtype, copy=False)


# ---- vanilla RNN: one step in NumPy, whole sequence on the fused kernels ----


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """next_h = tanh(x Wx + prev_h Wh + b); x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,)."""
    x, prev_h, Wx, Wh, b = (_arr(n, a) for n, a in
                            (("x", x), ("prev_h", prev_h), ("Wx", Wx), ("Wh", Wh), ("b", b)))
    _shape("x", x, ("N", "D"), (None, None))
    N, D = x.shape
    _shape("Wx", Wx, ("D", "H"), (D, None))
    H = Wx.shape[1]
    _shape("prev_h", prev_h, ("N", "H"), (N, H))
    _shape("Wh", Wh, ("H", "H"), (H, H))
    _shape("b", b, ("H",), (H,))
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache):
    """dnext_h (N, H). Returns (dx (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,))."""
    x, prev_h, Wx, Wh, next_h = cache
    dz = dnext_h * (1 - next_h * next_h)   # backprop through tanh
    dx = dz @ Wx.T                         # into the input
    dprev_h = dz @ Wh.T                    # into the previous hidden state
    dWx = x.T @ dz                         # into Wx
    dWh = prev_h.T @ dz                    # into Wh
    db = dz.sum(axis=0)                    # into b
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    """Vanilla RNN over a whole sequence on the fused kernels.

    x (N, T, D), h0 (N, H), Wx (D, H), Wh (H, H), b (H,). Returns (h (N, T, H), cache).
    The computation runs time-major in the common dtype of the inputs (float32 stays float32, everything
    else is float64), with W_ih = Wx.T and W_hh = Wh.T as the kernels store them.
    """
    x, h0, Wx, Wh, b = (_arr(n, a) for n, a in (("x", x), ("h0", h0), ("Wx", Wx), ("Wh", Wh), ("b", b)))
    _shape("x", x, ("N", "T", "D"), (None, None, None))
    N, T, D = x.shape
    _shape("Wx", Wx, ("D", "H"), (D, None))
    H = Wx.shape[1]
    _shape("h0", h0, ("N", "H"), (N, H))
    _shape("Wh", Wh, ("H", "H"), (H, H))
    _shape("b", b, ("H",), (H,))
    dt = _float_dtype(x, h0, Wx, Wh, b)
    x_tm = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=dt)            # (T, N, D)
    h0_l = np.array(h0, dtype=dt).reshape(1, N, H)                         # (L=1, N, H), a copy
    weights = [(np.ascontiguousarray(Wx.T, dtype=dt), np.ascontiguousarray(Wh.T, dtype=dt),
                np.array(b, dtype=dt), np.zeros(H, dtype=dt))]             # b_ih = b, b_hh = 0
    out, _, cache = _F.rnn_forward(x_tm, h0_l, weights, None, "tanh", True)
    return np.ascontiguousarray(out.transpose(1, 0, 2)), cache


def rnn_backward(dh, cache):
    """dh (N, T, H), the upstream gradient of every hidden state.

    Returns (dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,)), all freshly allocated.
    """
    if not isinstance(cache, RNNCache):
        raise TypeError(f"cache must be the cache returned by rnn_forward, got {type(cache).__name__}")
    _, T, N, H = cache.hs.shape
    D = cache.x.shape[2]
    dt = cache.hs.dtype
    dh = _arr("dh", dh)
    _shape("dh", dh, ("N", "T", "H"), (N, T, H))
    dout = np.ascontiguousarray(dh.transpose(1, 0, 2), dtype=dt)
    grads = [(np.zeros((H, D), dt), np.zeros((H, H), dt), np.zeros(H, dt), np.zeros(H, dt))]
    dx, dh0, _ = _F.rnn_backward(dout, None, cache, grads)
    dW_ih, dW_hh, db, _ = grads[0]            # db_ih == db_hh: both are the sum of dz
    return (np.ascontiguousarray(dx.transpose(1, 0, 2)), dh0[0], np.ascontiguousarray(dW_ih.T),
            np.ascontiguousarray(dW_hh.T), db)


# ---- LSTM (gate order i, f, o, g in the columns of Wx (D, 4H), as the assignment has it) ----


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """One LSTM step. x (N, D), prev_h, prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,).

    Returns (next_h (N, H), next_c (N, H), cache).
    """
    x, prev_h, prev_c, Wx, Wh, b = (_arr(n, a) for n, a in (("x", x), ("prev_h", prev_h), ("prev_c", prev_c),
                                                             ("Wx", Wx), ("Wh", Wh), ("b", b)))
    _shape("x", x, ("N", "D"), (None, None))
    N, D = x.shape
    _shape("Wx", Wx, ("D", "4H"), (D, None))
    if Wx.shape[1] % 4:
        raise ValueError(f"Wx must have shape (D, 4H) with 4H a multiple of 4, got {tuple(Wx.shape)}")
    H = Wx.shape[1] // 4
    _shape("prev_h", prev_h, ("N", "H"), (N, H))
    _shape("prev_c", prev_c, ("N", "H"), (N, H))
    _shape("Wh", Wh, ("H", "4H"), (H, 4 * H))
    _shape("b", b, ("4H",), (4 * H,))
    a = x @ Wx + prev_h @ Wh + b
    i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H])
    g = np.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Returns (dx (N, D), dprev_h (N, H), dprev_c (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,))."""
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c = cache
    do = dnext_h * tanh_c                                    # through next_h = o * tanh(c)
    dc = dnext_c + dnext_h * o * (1 - tanh_c * tanh_c)       # both paths into next_c
    da = np.concatenate([dc * g * i * (1 - i),              # input gate
                         dc * prev_c * f * (1 - f),          # forget gate
                         do * o * (1 - o),                   # output gate
                         dc * i * (1 - g * g)], axis=1)      # candidate (tanh)
    dprev_c = dc * f
    return da @ Wx.T, da @ Wh.T, dprev_c, x.T @ da, prev_h.T @ da, da.sum(axis=0)


# lstm_forward / lstm_backward run on rnnfast's fused LSTM kernels (rnnfast.functional.lstm_forward), which
# use torch's gate order (i, f, g, o) and layout W_ih (4H, D): the assignment's (i, f, o, g) columns are
# permuted on the way in and the gradients permuted back on the way out.

def _gate_perm(H):
    """Column indices taking the assignment's gate order (i, f, o, g) to torch's (i, f, g, o)."""
    return np.concatenate([np.arange(0, 2 * H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)])


class LSTMCache:
    """What lstm_forward keeps: rnnfast's own LSTM cache (time-major, torch layout) and the hidden size."""

    __slots__ = ("inner", "H")

    def __init__(self, inner, H):
        self.inner, self.H = inner, H


def lstm_forward(x, h0, Wx, Wh, b):
    """LSTM over a whole sequence, initial cell state zero.

    x (N, T, D), h0 (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,). Returns (h (N, T, H), cache).
    """
    x, h0, Wx, Wh, b = (_arr(n, a) for n, a in (("x", x), ("h0", h0), ("Wx", Wx), ("Wh", Wh), ("b", b)))
    _shape("x", x, ("N", "T", "D"), (None, None, None))
    N, T, D = x.shape
    _shape("Wx", Wx, ("D", "4H"), (D, None))
    if Wx.shape[1] % 4:
        raise ValueError(f"Wx must have shape (D, 4H) with 4H a multiple of 4, got {tuple(Wx.shape)}")
    H = Wx.shape[1] // 4
    _shape("h0", h0, ("N", "H"), (N, H))
    _shape("Wh", Wh, ("H", "4H"), (H, 4 * H))
    _shape("b", b, ("4H",), (4 * H,))
    dt = _float_dtype(x, h0, Wx, Wh, b)
    perm = _gate_perm(H)
    x_tm = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=dt)
    h0c = np.array(h0, dtype=dt)
    W_ih = np.ascontiguousarray(Wx[:, perm].T, dtype=dt)
    W_hh = np.ascontiguousarray(Wh[:, perm].T, dtype=dt)
    b_ih = np.ascontiguousarray(np.asarray(b, dt)[perm])
    weights = [(W_ih, W_hh, b_ih, np.zeros_like(b_ih))]       # one bias: the second is zero
    hs, _, _, inner = _F.lstm_forward(x_tm, h0c[None], None, weights)
    return np.ascontiguousarray(hs.transpose(1, 0, 2)), LSTMCache(inner, H)


def lstm_backward(dh, cache):
    """dh (N, T, H). Returns (dx (N, T, D), dh0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,))."""
    if not isinstance(cache, LSTMCache):
        raise TypeError(f"cache must be the cache returned by lstm_forward, got {type(cache).__name__}")
    inner, H = cache.inner, cache.H
    T, N = inner.x.shape[:2]
    dh = _arr("dh", dh)
    _shape("dh", dh, ("N", "T", "H"), (N, T, H))
    dout = np.ascontiguousarray(dh.transpose(1, 0, 2), dtype=inner.x.dtype)
    grads = [tuple(np.zeros_like(w) for w in inner.weights[0])]
    dx, dh0, _ = _F.lstm_backward(dout, None, None, inner, grads)
    dW_ih, dW_hh, db, _ = grads[0]
    dh0 = dh0[0]
    perm = _gate_perm(H)
    dWx = np.empty((dW_ih.shape[1], 4 * H), dW_ih.dtype)
    dWh = np.empty((H, 4 * H), dW_hh.dtype)
    dbo = np.empty(4 * H, db.dtype)
    dWx[:, perm], dWh[:, perm], dbo[perm] = dW_ih.T, dW_hh.T, db    # back to the (i, f, o, g) order
    return np.ascontiguousarray(dx.transpose(1, 0, 2)), dh0, dWx, dWh, dbo


# ---- words in and scores out ----


def word_embedding_forward(x, W):
    """x (N, T) integers in [0, V), W (V, D). Returns (out (N, T, D), cache)."""
    x, W = np.asarray(x), _arr("W", W)
    if x.dtype.kind not in "iu":
        raise TypeError(f"x must hold integer word indices, got dtype {x.dtype}")
    _shape("W", W, ("V", "D"), (None, None))
    if x.size and (x.min() < 0 or x.max() >= W.shape[0]):
        raise ValueError(f"x must hold indices in [0, V) with V={W.shape[0]}, got range "
                         f"[{x.min()}, {x.max()}]")
    return W[x], (x, W.shape, W.dtype)


def word_embedding_backward(dout, cache):
    """dout (N, T, D). Returns dW (V, D); repeated words add up."""
    x, shape, dtype = cache
    dW = np.zeros(shape, dtype=np.result_type(dtype, dout))
    np.add.at(dW, x, dout)                 # scatter-add into the rows that were read
    return dW


def temporal_affine_forward(x, w, b):
    """x (N, T, D), w (D, M), b (M,). Returns (out (N, T, M), cache)."""
    x, w, b = _arr("x", x), _arr("w", w), _arr("b", b)
    _shape("x", x, ("N", "T", "D"), (None, None, None))
    N, T, D = x.shape
    _shape("w", w, ("D", "M"), (D, None))
    _shape("b", b, ("M",), (w.shape[1],))
    out = (x.reshape(N * T, D) @ w + b).reshape(N, T, w.shape[1])
    return out, (x, w, b, out)


def temporal_affine_backward(dout, cache):
    """dout (N, T, M). Returns (dx (N, T, D), dw (D, M), db (M,))."""
    x, w, _, _ = cache
    N, T, D = x.shape
    M = w.shape[1]
    d2 = np.asarray(dout).reshape(N * T, M)
    dx = (d2 @ w.T).reshape(N, T, D)       # into the input
    dw = x.reshape(N * T, D).T @ d2        # into the weights
    db = d2.sum(axis=0)                    # into the bias
    return dx, dw, db


def temporal_softmax_loss(x, y, mask, verbose=False):
    """Softmax cross-entropy summed over the unmasked time steps and averaged over the batch.

    x (N, T, V) scores, y (N, T) targets in [0, V), mask (N, T) booleans (False: the step is ignored).
    Returns (loss, dx (N, T, V)). With verbose=True the shape of the flattened gradient is printed, as the
    assignment's version does.
    """
    x, y, mask = _arr("x", x), np.asarray(y), np.asarray(mask)
    _shape("x", x, ("N", "T", "V"), (None, None, None))
    N, T, V = x.shape
    _shape("y", y, ("N", "T"), (N, T))
    _shape("mask", mask, ("N", "T"), (N, T))
    y = _ids("y", y, V)
    x_flat, y_flat, m_flat = x.reshape(N * T, V), y.reshape(N * T), mask.reshape(N * T)
    shifted = x_flat - x_flat.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_z
    rows = np.arange(N * T)
    loss = -np.sum(m_flat * log_probs[rows, y_flat]) / N
    dx_flat = np.exp(log_probs)
    dx_flat[rows, y_flat] -= 1
    dx_flat /= N
    dx_flat *= m_flat[:, None]
    if verbose:
        print("dx_flat: ", dx_flat.shape)
    return loss, dx_flat.reshape(N, T, V)


def _fused_vocab_loss(h, W_vocab, b_vocab, y, mask, grads):
    """temporal_affine + temporal_softmax_loss + temporal_affine_backward in one native call (rnnfast's
    fused head + softmax cross-entropy): fills grads["W_vocab"], grads["b_vocab"], returns (loss, dh).
    (None, None) when the native ops are unavailable or the arrays do not fit them (the caller then runs
    the NumPy functions above, the reference this is tested against)."""
    from ..nn import native_ops
    ops = native_ops()
    h = np.asarray(h)
    if ops is None or h.ndim != 3 or h.dtype not in (np.float32, np.float64) or W_vocab.dtype != h.dtype \
            or b_vocab.dtype != h.dtype or np.shape(y) != h.shape[:2] or np.shape(mask) != h.shape[:2] \
            or W_vocab.shape != (h.shape[2], b_vocab.shape[0]) or np.asarray(y).dtype.kind not in "iu":
        return None, None
    N, T, H = h.shape
    WT = np.ascontiguousarray(W_vocab.T)                        # (V, H): the fused op's layout
    dWT, db = np.zeros_like(WT), np.zeros_like(b_vocab)
    loss, dh = ops.linear_xent(h.reshape(N * T, H), WT, b_vocab, np.asarray(y).reshape(N * T),
                               np.asarray(mask).reshape(N * T), None, "sum", N, dWT, db, True)
    grads["W_vocab"], grads["b_vocab"] = np.ascontiguousarray(dWT.T), db
    return loss, dh.reshape(N, T, H)


# ---- the model ----


class CaptioningRNN:
    """Image features -> initial hidden state; words -> RNN or LSTM -> scores over the vocabulary.

    The constructor draws the parameters with np.random in the assignment's order (W_embed, W_proj, b_proj,
    Wx, Wh, b, W_vocab, b_vocab) and scaling, then casts them to dtype, so a seeded model equals the
    assignment's. `params` is read on every call, so gradient checkers may perturb it in place.
    """

    def __init__(self, word_to_idx, input_dim=512, wordvec_dim=128, hidden_dim=128, cell_type="rnn",
                 dtype=np.float32):
        if cell_type not in {"rnn", "lstm"}:
            raise ValueError(f'Invalid cell_type "{cell_type}"')
        if "<NULL>" not in word_to_idx:
            raise ValueError("word_to_idx must contain '<NULL>' (the padding token)")
        self.cell_type = cell_type
        self.dtype = dtype
        self.word_to_idx = word_to_idx
        self.idx_to_word = {i: w for w, i in word_to_idx.items()}
        self.params = {}
        vocab_size = len(word_to_idx)
        self._null = word_to_idx["<NULL>"]
        self._start = word_to_idx.get("<START>", None)
        self._end = word_to_idx.get("<END>", None)

        self.params["W_embed"] = np.random.randn(vocab_size, wordvec_dim) / 100
        self.params["W_proj"] = np.random.randn(input_dim, hidden_dim) / np.sqrt(input_dim)
        self.params["b_proj"] = np.zeros(hidden_dim)
        dim_mul = {"lstm": 4, "rnn": 1}[cell_type]
        self.params["Wx"] = np.random.randn(wordvec_dim, dim_mul * hidden_dim) / np.sqrt(wordvec_dim)
        self.params["Wh"] = np.random.randn(hidden_dim, dim_mul * hidden_dim) / np.sqrt(hidden_dim)
        self.params["b"] = np.zeros(dim_mul * hidden_dim)
        self.params["W_vocab"] = np.random.randn(hidden_dim, vocab_size) / np.sqrt(hidden_dim)
        self.params["b_vocab"] = np.zeros(vocab_size)
        for k, v in self.params.items():
            self.params[k] = v.astype(self.dtype)

    def loss(self, features, captions):
        """features (N, D), captions (N, T + 1) integers. Returns (loss, grads) with grads keyed as params.

        The RNN reads captions[:, :-1] and is scored on captions[:, 1:]; <NULL> targets are masked out.
        """
        captions = np.asarray(captions)
        captions_in, captions_out = captions[:, :-1], captions[:, 1:]
        mask = captions_out != self._null
        p = self.params
        h0, cache_proj = affine_forward(features, p["W_proj"], p["b_proj"])
        x, cache_embed = word_embedding_forward(captions_in, p["W_embed"])
        if self.cell_type == "rnn":
            h, cache_rnn = rnn_forward(x, h0, p["Wx"], p["Wh"], p["b"])
        else:
            h, cache_rnn = lstm_forward(x, h0, p["Wx"], p["Wh"], p["b"])
        grads = {}
        loss, dh = _fused_vocab_loss(h, p["W_vocab"], p["b_vocab"], captions_out, mask, grads)
        if loss is None:                   # the reference path: affine, temporal_softmax_loss, affine backward
            scores, cache_scores = temporal_affine_forward(h, p["W_vocab"], p["b_vocab"])
            loss, dscores = temporal_softmax_loss(scores, captions_out, mask)
            dh, grads["W_vocab"], grads["b_vocab"] = temporal_affine_backward(dscores, cache_scores)
        back = rnn_backward if self.cell_type == "rnn" else lstm_backward
        dx, dh0, grads["Wx"], grads["Wh"], grads["b"] = back(dh, cache_rnn)
        grads["W_embed"] = word_embedding_backward(dx, cache_embed)
        _, grads["W_proj"], grads["b_proj"] = affine_backward(dh0, cache_proj)
        return loss, grads

    def sample(self, features, max_length=30, native=None):
        """Greedy decoding from <START>. Returns captions (N, max_length) int32, first sampled word first.

        A sequence that has produced <END> (when the vocabulary has one) stops: its later slots stay <NULL>.
        native (None = where available): the whole batch in one native call (rnnfast._decode), computed in
        the params' dtype; native=False runs the assignment-style per-step loop (the reference). Both give
        the same captions.
        """
        from .. import _decode
        if self._start is None:
            raise ValueError("sample() needs '<START>' in word_to_idx")
        if not _decode.use_native(native):
            return self._sample_python(features, max_length)
        p = self.params
        features = _arr("features", features)
        _shape("features", features, ("N", "D"), (None, p["W_proj"].shape[0]))
        N = features.shape[0]
        if N == 0 or max_length <= 0:
            return self._null * np.ones((N, max(int(max_length), 0)), dtype=np.int32)
        dt = _float_dtype(features, *p.values())     # what the NumPy steps would compute in
        H = p["Wh"].shape[0]
        h0, _ = affine_forward(np.asarray(features, dt), np.asarray(p["W_proj"], dt), np.asarray(p["b_proj"], dt))
        Wx, Wh, b = (np.asarray(p[k], dt) for k in ("Wx", "Wh", "b"))
        if self.cell_type == "lstm":
            perm = _gate_perm(H)
            Wx, Wh, b = Wx[:, perm], Wh[:, perm], b[perm]
        W_ih, W_hh = np.ascontiguousarray(Wx.T), np.ascontiguousarray(Wh.T)
        weights = [(W_ih, W_hh, np.ascontiguousarray(b), np.zeros_like(b))]
        state = np.ascontiguousarray(h0, dtype=dt)[None]
        head = (np.ascontiguousarray(np.asarray(p["W_vocab"], dt).T), np.ascontiguousarray(p["b_vocab"], dt))
        from .._decode import _native_module
        ids, _, _ = _native_module().decode_sample(
            "rnn_tanh" if self.cell_type == "rnn" else "lstm", weights, np.ascontiguousarray(p["W_embed"], dt),
            head[0], head[1], np.full(N, self._start, np.int64), state,
            np.zeros_like(state) if self.cell_type == "lstm" else None, None, int(max_length), "greedy", 1.0, 0, 0, 0,
            -1 if self._end is None else self._end, self._null)
        return np.ascontiguousarray(ids.T, dtype=np.int32)

    def _sample_python(self, features, max_length=30):
        """The reference: the assignment's per-step loop on the step functions above."""
        N = np.asarray(features).shape[0]
        captions = self._null * np.ones((N, max_length), dtype=np.int32)
        p = self.params
        h, _ = affine_forward(features, p["W_proj"], p["b_proj"])
        c = np.zeros_like(h)
        word = np.full(N, self._start, dtype=np.int64)
        live = np.ones(N, dtype=bool)
        for t in range(max_length):
            x = p["W_embed"][word]
            if self.cell_type == "rnn":
                h, _ = rnn_step_forward(x, h, p["Wx"], p["Wh"], p["b"])
            else:
                h, c, _ = lstm_step_forward(x, h, c, p["Wx"], p["Wh"], p["b"])
            word = np.argmax(h @ p["W_vocab"] + p["b_vocab"], axis=1)
            captions[live, t] = word[live]
            if self._end is not None:
                live &= word != self._end
                if not live.any():
                    break
        return captions
