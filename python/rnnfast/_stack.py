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

from . import _cells, _checks
from ._cache import StackCache
from .backends import get as _get_backend
from .backends import resolve as _resolve_backend


def _host_backend(cell, backend):
    """The backend module for the layer-by-layer path: it must take NumPy arrays (numpy, cpu)."""
    name = _resolve_backend(backend)
    mod = _get_backend(name)
    if not getattr(mod, "HOST_ARRAYS", False):
        raise ValueError(f"lengths and bidirectional run on the 'cpu' and 'numpy' backends; backend {name!r} "
                         f"does not support them yet")
    if not cell.supported_by(mod):
        raise RuntimeError(f"backend {name!r} has no {cell.title} kernels yet; use 'cpu' or 'numpy'")
    return name, mod


def forward(cell, x, states, weights, need_cache, backend, lengths, bidirectional, c=None, nonlinearity="tanh"):
    """Stacked forward of `cell` (a rnnfast._cells.Cell) with optional lengths and directions.

    states: the initial states (h0,) or (h0, c0), each (L*dirs, N, H) or None; weights: L*dirs tuples in
    PyTorch's order (l0, l0_reverse, l1, ...). Returns (out (T, N, dirs*H), finals tuple of (L*dirs, N, H),
    StackCache or None). Arguments are checked here, once; the layers call the backend directly.
    """
    name, mod = _host_backend(cell, backend)
    dirs = 2 if bidirectional else 1
    T, N, D, H, L = _checks.validate_forward(cell, x, states, weights, dirs, c, nonlinearity)
    lengths = np.full(N, T, dtype=np.int64) if lengths is None else _checks.check_lengths(lengths, T, N)
    t = np.arange(T)[:, None]
    mask = t < lengths[None, :]                       # (T, N): valid steps
    rev = np.where(mask, lengths[None, :] - 1 - t, t)  # (T, N): reverse each valid prefix, keep the padding
    ar = np.arange(N)
    full = bool(mask.all())
    empty = lengths == 0
    last = np.maximum(lengths - 1, 0)
    dt = x.dtype
    finals = [np.empty((L * dirs, N, H), dtype=dt) for _ in states]
    # A second state (LSTM's c) at each sequence's own end is read from the cache, so a ragged batch of such
    # a cell keeps one.
    inner_cache = need_cache or (len(cell.states) > 1 and not full)
    caches = []
    inp = x
    for k in range(L):
        outs = []
        for d in range(dirs):
            i = k * dirs + d
            xin = inp if d == 0 else inp[rev, ar]
            init = tuple(None if s is None else s[i:i + 1] for s in states)
            out, fin, cache = _cells.call_forward(cell, mod, xin, init, [weights[i]], inner_cache,
                                                  c if k == 0 else None, nonlinearity)
            if full:
                for f, v in zip(finals, fin):
                    f[i] = v[0]
            else:
                seqs = [out] + [getattr(cache, s)[0] for s in cell.state_seqs[1:]]   # every state at every step
                for f, s0, seq in zip(finals, init, seqs):
                    f[i] = seq[last, ar]                                   # each sequence's own last step
                    f[i][empty] = 0 if s0 is None else s0[0][empty]        # ... or its initial state
                out[~mask] = 0
            outs.append(out if d == 0 else out[rev, ar])
            caches.append(cache if need_cache else None)
        inp = outs[0] if dirs == 1 else np.concatenate(outs, axis=2)
    sc = StackCache(cell.name, caches, lengths, rev, dirs, D, H, c is not None, name) if need_cache else None
    return inp, tuple(finals), sc


def _validate_backward(cell, cache, dout, dfinals, grads):
    """Every argument of backward(), checked before any gradient is touched (a failed call changes nothing)."""
    dirs, H = cache.dirs, cache.H
    T, N = cache.rev.shape
    LD = len(cache.caches)
    dt = cache.caches[0].hs.dtype
    if dout is not None:
        _checks.check("dout", dout, ("T", "N", "2H" if dirs == 2 else "H"), (T, N, dirs * H), dt)
    if len(dfinals) != len(cell.finals):
        raise ValueError(f"expected {len(cell.finals)} final-state gradients ({', '.join(cell.finals_grads)})")
    for sname, df in zip(cell.finals_grads, dfinals):
        if df is not None:
            _checks.check(sname, df, ("L*2" if dirs == 2 else "L", "N", "H"), (LD, N, H), dt)
    _checks.check_grads(cell, grads, [c.weights[0] for c in cache.caches], dirs, dt)


def backward(cell, cache, dout, dfinals, grads, backend):
    """Backward through forward(). dout (T, N, dirs*H) or None; dfinals: (dh_n,) or (dh_n, dc_n), each
    (L*dirs, N, H) or None; grads: L*dirs tuples, accumulated (+=). Returns (dx (T, N, D), dstates tuple of
    (L*dirs, N, H), dc (N, H) or None)."""
    if not isinstance(cache, StackCache):
        raise TypeError(f"cache must be the cache returned by a forward with need_cache=True, got "
                        f"{type(cache).__name__}")
    _, mod = _host_backend(cell, backend)
    _validate_backward(cell, cache, dout, dfinals, grads)
    dirs, H, rev, lengths = cache.dirs, cache.H, cache.rev, cache.lengths
    T, N = rev.shape
    LD = len(cache.caches)
    L = LD // dirs
    dt = cache.caches[0].hs.dtype
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
            dseqs = None
            if full:
                kfin = tuple(None if f is None else f[None] for f in dfin)
            else:
                kfin = (None,) * len(dfin)
                if dfin[0] is not None:                        # dh_n into each sequence's last step
                    if dy is None:
                        dy = np.zeros((T, N, H), dtype=dt)
                    dy[tv, nv] += dfin[0][valid]
                if len(dfin) > 1 and dfin[1] is not None:     # dc_n likewise, through the cell-state input
                    dseqs = np.zeros((1, T, N, H), dtype=dt)
                    dseqs[0, tv, nv] = dfin[1][valid]
            dx, ds, dck = _cells.call_backward(cell, mod, dy, kfin, cache.caches[i], [grads[i]], dseqs)
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
