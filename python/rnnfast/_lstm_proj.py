"""LSTM with projections (torch.nn.LSTM's proj_size P > 0) on arrays: stacked layers, both directions and
variable lengths around the one-layer, one-direction kernels (reference.lstm_proj_* on "numpy",
csrc/cpu/lstm_proj_cpu.cpp on "cpu"), which handle lengths and the reverse direction themselves.
What it is not: the math (the kernels) or a CUDA path (refused).

weights: L*dirs tuples (W_ih (4H, D_k), W_hh (4H, P), b_ih (4H,) or None, b_hh (4H,) or None, W_hr (P, H)) in
torch's order l0, l0_reverse, l1, ...; D_k = D for layer 0, dirs*P above. h is (., N, P), c is (., N, H).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import reference as _ref
from ._checks import check as _check
from ._checks import check_lengths

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass
class LSTMProjCache:
    """What forward keeps for backward: per layer-direction the kernel's input, initial states and cache."""
    layers: list          # L*dirs tuples (x_k (T, N, D_k), h0 (N, P), c0 (N, H), (gates, cs, ms, hs))
    weights: list
    lengths: object       # (N,) int64 or None
    dirs: int
    backend: str


def _kernels(backend):
    from .backends import resolve
    name = resolve(backend)
    if name == "cpu":
        from . import _C
        return name, _C.lstm_proj_forward, _C.lstm_proj_backward
    if name == "numpy":
        return name, _ref.lstm_proj_forward, _ref.lstm_proj_backward
    raise ValueError(f"LSTM with projections (proj_size > 0) runs on the 'cpu' and 'numpy' backends, not {name!r}")


def validate(x, h0, c0, weights, dirs):
    """Check every argument with torch's parameter names; return (T, N, D, H, P, L)."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"x must be an array of shape (T, N, D), got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"x must have dtype float32 or float64, got {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, N, D), got {tuple(x.shape)} (rank {x.ndim})")
    T, N, D = x.shape
    if not isinstance(weights, (list, tuple)) or not weights or len(weights) % dirs:
        raise ValueError("weights must be a non-empty list of L*dirs tuples (W_ih, W_hh, b_ih, b_hh, W_hr)")
    try:
        P, H = weights[0][4].shape
    except Exception:
        raise TypeError("weights[0] must be a tuple (W_ih, W_hh, b_ih, b_hh, W_hr) of arrays, W_hr (P, H)") from None
    if H < 1 or P < 1:
        raise ValueError(f"weight_hr_l0 must have shape (P, H) with P >= 1 and H >= 1, got {(P, H)}")
    if P >= H:
        raise ValueError(f"proj_size P = {P} must be smaller than hidden_size H = {H}")
    L = len(weights) // dirs
    dt = x.dtype
    for i, w in enumerate(weights):
        k, d = divmod(i, dirs)
        sfx = f"l{k}" + ("_reverse" if d else "")
        if not isinstance(w, (list, tuple)) or len(w) != 5:
            raise ValueError(f"weights[{i}] must be a tuple (W_ih, W_hh, b_ih, b_hh, W_hr)")
        W_ih, W_hh, b_ih, b_hh, W_hr = w
        _check(f"weight_ih_{sfx}", W_ih, ("4H", "D" if k == 0 else ("2P" if dirs == 2 else "P")),
               (4 * H, D if k == 0 else dirs * P), dt)
        _check(f"weight_hh_{sfx}", W_hh, ("4H", "P"), (4 * H, P), dt)
        _check(f"weight_hr_{sfx}", W_hr, ("P", "H"), (P, H), dt)
        if (b_ih is None) != (b_hh is None):
            raise ValueError(f"bias_ih_{sfx} and bias_hh_{sfx} must both be given or both be None")
        if b_ih is not None:
            _check(f"bias_ih_{sfx}", b_ih, ("4H",), (4 * H,), dt)
            _check(f"bias_hh_{sfx}", b_hh, ("4H",), (4 * H,), dt)
    LD = "L*2" if dirs == 2 else "L"
    if h0 is not None:
        _check("h0", h0, (LD, "N", "P"), (L * dirs, N, P), dt)
    if c0 is not None:
        _check("c0", c0, (LD, "N", "H"), (L * dirs, N, H), dt)
    return T, N, D, H, P, L


def lstm_proj_forward(x, h0, c0, weights, need_cache=True, backend=None, lengths=None, bidirectional=False):
    """Stacked LSTM with projections. x (T, N, D); h0 (L*dirs, N, P), c0 (L*dirs, N, H), each or None for zeros.
    Returns (out (T, N, dirs*P), h_n (L*dirs, N, P), c_n (L*dirs, N, H), LSTMProjCache or None). With lengths
    (N,) in [0, T], outputs past a length are zero and the final states are each sequence's own last ones."""
    dirs = 2 if bidirectional else 1
    T, N, _, H, P, L = validate(x, h0, c0, weights, dirs)
    name, fwd, _ = _kernels(backend)
    if lengths is not None:
        lengths = check_lengths(lengths, T, N)
    dt = x.dtype
    h0 = np.zeros((L * dirs, N, P), dtype=dt) if h0 is None else h0
    c0 = np.zeros((L * dirs, N, H), dtype=dt) if c0 is None else c0
    h_n, c_n = np.empty((L * dirs, N, P), dtype=dt), np.empty((L * dirs, N, H), dtype=dt)
    kept = []
    inp = np.ascontiguousarray(x)
    for k in range(L):
        outs = []
        for d in range(dirs):
            i = k * dirs + d
            hi, ci = np.ascontiguousarray(h0[i]), np.ascontiguousarray(c0[i])
            out, h_n[i], c_n[i], cache = fwd(inp, hi, ci, *weights[i], lengths, d == 1, need_cache)
            outs.append(out)
            kept.append((inp, hi, ci, cache))
        inp = outs[0] if dirs == 1 else np.concatenate(outs, axis=2)
    cache = LSTMProjCache(kept, list(weights), lengths, dirs, name) if need_cache else None
    return inp, h_n, c_n, cache


def lstm_proj_backward(dout, dh_n, dc_n, cache, grads):
    """Backward through lstm_proj_forward. dout (T, N, dirs*P), dh_n (L*dirs, N, P), dc_n (L*dirs, N, H), each
    or None; grads: L*dirs tuples (dW_ih, dW_hh, db_ih, db_hh, dW_hr) accumulated (+=).
    Returns (dx (T, N, D), dh0 (L*dirs, N, P), dc0 (L*dirs, N, H))."""
    if not isinstance(cache, LSTMProjCache):
        raise TypeError(f"cache must be the LSTMProjCache of lstm_proj_forward(..., need_cache=True), got "
                        f"{type(cache).__name__}")
    _, _, bwd = _kernels(cache.backend)
    dirs, LD = cache.dirs, len(cache.layers)
    x0 = cache.layers[0][0]
    T, N, _ = x0.shape
    P, H = cache.weights[0][4].shape
    dt = x0.dtype
    if dout is not None:
        _check("dout", dout, ("T", "N", "2P" if dirs == 2 else "P"), (T, N, dirs * P), dt)
    LDn = "L*2" if dirs == 2 else "L"
    if dh_n is not None:
        _check("dh_n", dh_n, (LDn, "N", "P"), (LD, N, P), dt)
    if dc_n is not None:
        _check("dc_n", dc_n, (LDn, "N", "H"), (LD, N, H), dt)
    if not isinstance(grads, (list, tuple)) or len(grads) != LD:
        raise ValueError(f"grads must be a list of {LD} tuples (dW_ih, dW_hh, db_ih, db_hh, dW_hr)")
    for i, (g, w) in enumerate(zip(grads, cache.weights)):     # all checked before anything accumulates
        k, d = divmod(i, dirs)
        for gname, ga, wa in zip(("dW_ih", "dW_hh", "db_ih", "db_hh", "dW_hr"), g, w):
            if wa is None:
                continue
            name = f"{gname}_l{k}" + ("_reverse" if d else "")
            _check(name, ga, tuple("?" * wa.ndim), wa.shape, dt)
            if not ga.flags.c_contiguous or not ga.flags.writeable:
                raise ValueError(f"{name} must be C-contiguous and writeable (gradients accumulate into it)")
    dh0, dc0 = np.empty((LD, N, P), dtype=dt), np.empty((LD, N, H), dtype=dt)
    dY = dout
    for k in reversed(range(LD // dirs)):
        dinp = None
        for d in range(dirs):
            i = k * dirs + d
            xk, hk, ck, kc = cache.layers[i]
            W_ih, W_hh, _, _, W_hr = cache.weights[i]
            dy = None if dY is None else np.ascontiguousarray(dY[:, :, d * P:(d + 1) * P])
            dhi = None if dh_n is None else np.ascontiguousarray(dh_n[i])
            dci = None if dc_n is None else np.ascontiguousarray(dc_n[i])
            g = grads[i]
            if cache.backend == "cpu":
                dx, dh0[i], dc0[i] = bwd(dy, dhi, dci, xk, hk, ck, *kc, W_ih, W_hh, W_hr, cache.lengths, d == 1,
                                         *g)
            else:
                dx, dh0[i], dc0[i] = bwd(dy, dhi, dci, xk, hk, ck, kc, W_ih, W_hh, W_hr, g, cache.lengths, d == 1)
            dinp = dx if dinp is None else dinp + dx
        dY = dinp
    return dY, dh0, dc0
