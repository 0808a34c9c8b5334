"""Variable-length batches (`lengths`) and bidirectional stacks for every cell (RNN, LSTM, GRU), built in
Python around the ordinary one-layer kernels: layers run one at a time, a reverse direction runs on each
sequence's valid prefix reversed (a gather with index arrays), outputs are concatenated (T, N, 2H).
What it is not: math (the kernels do all of it) or the fast path (no lengths, one direction never comes here).

Why running the kernel on the padded batch is exact: padding steps come after every valid step of their
sequence, so they only influence values that are discarded (outputs past the length, states after it).
Forward zeroes those outputs and takes the final states at each sequence's own last step; backward zeroes
dout past the lengths and routes dh_n (and dc_n) into step lengths[n]-1, or into dh0 (dc0) when the
length is 0. No gradient then reaches a padding step, so none flows from padding.
"""
from __future__ import annotations

import numpy as np

from ._cache import StackCache
from .functional import _check   # the one argument check, messages in the T N D H L letters

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_STATES = {"rnn": ("h0",), "lstm": ("h0", "c0"), "gru": ("h0",)}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _shape(a):
    return tuple(getattr(a, "shape", ()))


def check_lengths(lengths, T, N):
    """lengths as an int64 array (N,) with every value in [0, T]; raise naming `lengths` otherwise."""
    if hasattr(lengths, "detach"):           # a torch tensor
        lengths = lengths.detach().cpu().numpy()
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array of shape (N,) = ({N},), got dtype {arr.dtype}")
    if arr.shape != (N,):
        raise ValueError(f"lengths must have shape (N,) = ({N},), got {arr.shape}")
    if N:
        bad = np.flatnonzero((arr < 0) | (arr > T))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"lengths[{i}] = {int(arr[i])} is outside [0, T] = [0, {T}]")
    return arr.astype(np.int64)


def validate(cell, x, states, weights, dirs, c=None):
    """Check x, the initial states and the L*dirs weight tuples with PyTorch's parameter names; return
    (T, N, D, H, L)."""
    G = _GATES[cell]
    gh = "H" if G == 1 else f"{G}H"
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"x must be an array of shape (T, N, D), got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"x must have dtype float32 or float64, got {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, N, D), got {tuple(x.shape)} (rank {x.ndim})")
    T, N, D = x.shape
    if not isinstance(weights, (list, tuple)) or len(weights) == 0 or len(weights) % dirs:
        what = "2L tuples (layer k, then layer k reverse)" if dirs == 2 else "L tuples"
        raise ValueError(f"weights must be a non-empty list of {what} (W_ih, W_hh, b_ih, b_hh)")
    L = len(weights) // dirs
    try:
        W_hh0 = weights[0][1]
        H = W_hh0.shape[1]
    except Exception:
        raise TypeError("weights[0] must be a tuple (W_ih, W_hh, b_ih, b_hh) of arrays") from None
    if W_hh0.ndim != 2 or H < 1 or W_hh0.shape[0] != G * H:
        raise ValueError(f"weight_hh_l0 must have shape ({gh}, H) with H >= 1, got {_shape(W_hh0)}")
    dt = x.dtype
    bias = None
    for i, w in enumerate(weights):
        k, d = divmod(i, dirs)
        sfx = f"l{k}" + ("_reverse" if d else "")
        if not isinstance(w, (list, tuple)) or len(w) != 4:
            raise ValueError(f"weights[{i}] must be a tuple (W_ih, W_hh, b_ih, b_hh)")
        W_ih, W_hh, b_ih, b_hh = w
        Dk = D if k == 0 else dirs * H
        _check(f"weight_ih_{sfx}", W_ih, (gh, "D" if k == 0 else ("2H" if dirs == 2 else "H")), (G * H, Dk), dt)
        _check(f"weight_hh_{sfx}", W_hh, (gh, "H"), (G * H, H), dt)
        if (b_ih is None) != (b_hh is None):
            raise ValueError(f"bias_ih_{sfx} and bias_hh_{sfx} must both be given or both be None")
        if bias is None:
            bias = b_ih is not None
        elif bias != (b_ih is not None):
            raise ValueError(f"all layers must have biases, or none ({sfx})")
        if b_ih is not None:
            _check(f"bias_ih_{sfx}", b_ih, (gh,), (G * H,), dt)
            _check(f"bias_hh_{sfx}", b_hh, (gh,), (G * H,), dt)
    LD = "L*2" if dirs == 2 else "L"
    for sname, s in zip(_STATES[cell], states):
        if s is not None:
            _check(sname, s, (LD, "N", "H"), (L * dirs, N, H), dt)
    if c is not None:
        _check("c", c, ("N", "H"), (N, H), dt)
    return T, N, D, H, L


def _layer_forward(cell, x, init, w, need_cache, backend, c, nonlinearity):
    """One layer, one direction, on the whole padded batch: (out, finals tuple, cache)."""
    from . import functional as F
    if cell == "rnn":
        out, h_n, cache = F.rnn_forward(x, init[0], w, c, nonlinearity, need_cache, backend)
        return out, (h_n,), cache
    if cell == "lstm":
        out, h_n, c_n, cache = F.lstm_forward(x, init[0], init[1], w, need_cache, backend)
        return out, (h_n, c_n), cache
    out, h_n, cache = F.gru_forward(x, init[0], w, need_cache, backend)
    return out, (h_n,), cache


def _layer_backward(cell, dy, dfin, dcs, cache, g, backend):
    """-> (dx, dstates tuple of (1, N, H), dc or None)."""
    from . import functional as F
    if cell == "rnn":
        dx, dh0, dc = F.rnn_backward(dy, dfin[0], cache, g, backend)
        return dx, (dh0,), dc
    if cell == "lstm":
        dx, dh0, dc0 = F._lstm_backward(dy, dfin[0], dfin[1], cache, g, backend, dcs)
        return dx, (dh0, dc0), None
    dx, dh0 = F.gru_backward(dy, dfin[0], cache, g, backend)
    return dx, (dh0,), None


def forward(cell, x, states, weights, need_cache, backend, lengths, bidirectional, c=None, nonlinearity="tanh"):
    """Stacked forward of `cell` with optional lengths and directions.

    states: the initial states (h0,) or (h0, c0), each (L*dirs, N, H) or None; weights: L*dirs tuples in
    PyTorch's order (l0, l0_reverse, l1, ...). Returns (out (T, N, dirs*H), finals tuple of (L*dirs, N, H),
    StackCache or None).
    """
    from .backends import resolve
    name = resolve(backend)
    if name == "cuda":
        raise ValueError("lengths and bidirectional run on the 'cpu' and 'numpy' backends; backend 'cuda' "
                         "does not support them yet")
    dirs = 2 if bidirectional else 1
    T, N, D, H, L = validate(cell, x, states, weights, dirs, c)
    lengths = np.full(N, T, dtype=np.int64) if lengths is None else check_lengths(lengths, T, N)
    t = np.arange(T)[:, None]
    mask = t < lengths[None, :]                       # (T, N): valid steps
    rev = np.where(mask, lengths[None, :] - 1 - t, t)  # (T, N): reverse each valid prefix, keep the padding
    ar = np.arange(N)
    full = bool(mask.all())
    valid = lengths > 0
    empty = ~valid
    last = np.maximum(lengths - 1, 0)
    dt = x.dtype
    finals = [np.empty((L * dirs, N, H), dtype=dt) for _ in states]
    # LSTM's c at each sequence's own end is read from the cache, so a ragged LSTM batch keeps one.
    inner_cache = need_cache or (cell == "lstm" and not full)
    caches = []
    inp = x
    for k in range(L):
        outs = []
        for d in range(dirs):
            i = k * dirs + d
            xin = inp if d == 0 else inp[rev, ar]
            init = tuple(None if s is None else s[i:i + 1] for s in states)
            out, fin, cache = _layer_forward(cell, xin, init, [weights[i]], inner_cache, name,
                                             c if k == 0 else None, nonlinearity)
            if full:
                for f, v in zip(finals, fin):
                    f[i] = v[0]
            else:
                seqs = [out] + ([cache.cs[0]] if cell == "lstm" else [])     # h (and c) at every step
                for f, s0, seq in zip(finals, init, seqs):
                    f[i] = seq[last, ar]                                   # each sequence's own last step
                    f[i][empty] = 0 if s0 is None else s0[0][empty]        # ... or its initial state
                out[~mask] = 0
            outs.append(out if d == 0 else out[rev, ar])
            caches.append(cache if need_cache else None)
        inp = outs[0] if dirs == 1 else np.concatenate(outs, axis=2)
    sc = StackCache(cell, caches, lengths, rev, dirs, D, H, c is not None, name) if need_cache else None
    return inp, tuple(finals), sc


def backward(cache, dout, dfinals, grads, backend):
    """Backward through forward(). dout (T, N, dirs*H) or None; dfinals: (dh_n,) or (dh_n, dc_n), each
    (L*dirs, N, H) or None; grads: L*dirs tuples, accumulated (+=). Returns (dx (T, N, D), dstates tuple of
    (L*dirs, N, H), dc (N, H) or None)."""
    if not isinstance(cache, StackCache):
        raise TypeError(f"cache must be the cache returned by a forward with need_cache=True, got "
                        f"{type(cache).__name__}")
    from .backends import resolve
    name = resolve(backend)
    cell, dirs, H, rev, lengths = cache.cell, cache.dirs, cache.H, cache.rev, cache.lengths
    T, N = rev.shape
    LD = len(cache.caches)
    L = LD // dirs
    dt = cache.caches[0].hs.dtype
    if dout is not None:
        _check("dout", dout, ("T", "N", "2H" if dirs == 2 else "H"), (T, N, dirs * H), dt)
    for sname, df in zip(("dh_n", "dc_n"), dfinals):
        if df is not None:
            _check(sname, df, ("L*2" if dirs == 2 else "L", "N", "H"), (LD, N, H), dt)
    if not isinstance(grads, (list, tuple)) or len(grads) != LD:
        raise ValueError(f"grads must be a list of {'2L' if dirs == 2 else 'L'} = {LD} tuples "
                         f"(dW_ih, dW_hh, db_ih, db_hh)")
    t = np.arange(T)[:, None]
    mask = t < lengths[None, :]
    full = bool(mask.all())
    ar = np.arange(N)
    valid = lengths > 0
    empty = ~valid
    tv, nv = lengths[valid] - 1, ar[valid]    # the last valid step of each non-empty sequence
    dstates = [np.empty((LD, N, H), dtype=dt) for _ in dfinals]
    dc = np.zeros((N, H), dtype=dt) if cache.has_c else None
    dY = dout
    for k in reversed(range(L)):
        dinp = None
        for d in range(dirs):
            i = k * dirs + d
            if dY is None:
                dy = None
            else:
                dy = dY[:, :, d * H:(d + 1) * H]
                dy = dy[rev, ar] if d == 1 else np.array(dy)   # into the direction's own time order
                if not full:
                    dy[~mask] = 0                              # no gradient from padding
            dfin = [None if df is None else df[i] for df in dfinals]
            dcs = None
            if full:
                kfin = tuple(None if f is None else f[None] for f in dfin)
            else:
                kfin = (None,) * len(dfin)
                if dfin[0] is not None:                        # dh_n into each sequence's last step
                    if dy is None:
                        dy = np.zeros((T, N, H), dtype=dt)
                    dy[tv, nv] += dfin[0][valid]
                if len(dfin) > 1 and dfin[1] is not None:     # dc_n likewise, through the cell-state input
                    dcs = np.zeros((1, T, N, H), dtype=dt)
                    dcs[0, tv, nv] = dfin[1][valid]
            dx, ds, dck = _layer_backward(cell, dy, kfin, dcs, cache.caches[i], [grads[i]], name)
            for j, (dst, s) in enumerate(zip(dstates, ds)):
                dst[i] = s[0]
                if not full and dfin[j] is not None:
                    dst[i][empty] += dfin[j][empty]            # an empty sequence's final state is its initial one
            if k == 0 and dc is not None:
                dc += dck
            if d == 1:
                dx = dx[rev, ar]
            dinp = dx if dinp is None else dinp + dx
        dY = dinp
    return dY, tuple(dstates), dc
