"""All Python-side argument checking of the array API: x, initial states, weight and gradient tuples, dout,
final-state gradients and lengths, with messages in the T N D H L letters and PyTorch's parameter names.

What it is: a leaf module (it imports only NumPy), used by rnnfast.functional, rnnfast._stack and the
cuda backend; the C++ bindings check their own arguments with the same messages. What it is not: any
computation, or knowledge of which cells exist (the cell is passed in: a rnnfast._cells.Cell).
"""
from __future__ import annotations

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
NONLINEARITIES = ("tanh", "relu")
_GRAD_NAMES = ("dW_ih", "dW_hh", "db_ih", "db_hh")


def shape_str(names, dims) -> str:
    return "(" + ", ".join(names) + ") = (" + ", ".join(str(d) for d in dims) + ")"


def _native(dt):
    return dt.newbyteorder("=") if isinstance(dt, np.dtype) else dt


def _shape(a):
    return tuple(getattr(a, "shape", ()))


def check(name, a, names, dims, dtype) -> None:
    """`a` must be an array of dtype `dtype` and shape `dims` (named `names` in the message)."""
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name} must be an array of shape {shape_str(names, dims)}, got {type(a).__name__}")
    if _native(a.dtype) != _native(dtype):    # byte order aside: big-endian arrays compute correctly
        raise TypeError(f"{name} must have dtype {dtype} (the dtype of x), got {a.dtype}")
    if tuple(a.shape) != tuple(dims):
        raise ValueError(f"{name} must have shape {shape_str(names, dims)}, got {tuple(a.shape)}")


def layer_suffix(i, dirs) -> str:
    """The PyTorch suffix of weight tuple i in a stack with `dirs` directions: l0, l0_reverse, l1, ..."""
    k, d = divmod(i, dirs)
    return f"l{k}" + ("_reverse" if d else "")


def _gate_dim(cell) -> str:
    return "H" if cell.gates == 1 else f"{cell.gates}H"


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


def validate_forward(cell, x, states, weights, dirs=1, c=None, nonlinearity="tanh"):
    """Check x, the initial states and the L*dirs weight tuples of `cell`; return (T, N, D, H, L).

    states: one array or None per state of the cell (h0, or h0 and c0), each (L*dirs, N, H).
    c (N, H) and nonlinearity only for a cell with a constant input (the vanilla RNN).
    """
    G = cell.gates
    gh = _gate_dim(cell)
    if cell.constant_input and nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"x must be an array of shape (T, N, D), got {type(x).__name__}")
    if _native(np.dtype(x.dtype)) not in FLOATS:   # byte order aside
        raise TypeError(f"x must have dtype float32 or float64, got {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, N, D), got {tuple(x.shape)} (rank {x.ndim})")
    T, N, D = x.shape
    if not isinstance(weights, (list, tuple)) or len(weights) == 0 or len(weights) % dirs:
        what = "2L tuples (layer k, then layer k reverse)" if dirs == 2 else "L tuples"
        raise ValueError(f"weights must be a non-empty list of {what} (W_ih, W_hh, b_ih, b_hh)")
    L = len(weights) // dirs
    if not isinstance(weights[0], (list, tuple)) or len(weights[0]) != 4:
        raise ValueError("weights[0] must be a tuple (W_ih, W_hh, b_ih, b_hh)")
    W_hh0 = weights[0][1]
    if not hasattr(W_hh0, "shape") or not hasattr(W_hh0, "ndim"):
        raise TypeError(f"weight_hh_l0 must be an array of shape ({gh}, H), got {type(W_hh0).__name__}")
    if W_hh0.ndim != 2 or W_hh0.shape[1] < 1 or W_hh0.shape[0] != G * W_hh0.shape[1]:
        raise ValueError(f"weight_hh_l0 must have shape ({gh}, H) with H >= 1, got {_shape(W_hh0)}")
    H = W_hh0.shape[1]
    dt = x.dtype
    bias = None
    for i, w in enumerate(weights):
        k = i // dirs
        sfx = layer_suffix(i, dirs)
        if not isinstance(w, (list, tuple)) or len(w) != 4:
            raise ValueError(f"weights[{i}] must be a tuple (W_ih, W_hh, b_ih, b_hh)")
        W_ih, W_hh, b_ih, b_hh = w
        Dk = D if k == 0 else dirs * H
        check(f"weight_ih_{sfx}", W_ih, (gh, "D" if k == 0 else ("2H" if dirs == 2 else "H")), (G * H, Dk), dt)
        check(f"weight_hh_{sfx}", W_hh, (gh, "H"), (G * H, H), dt)
        if (b_ih is None) != (b_hh is None):
            raise ValueError(f"bias_ih_{sfx} and bias_hh_{sfx} must both be given or both be None")
        if bias is None:
            bias = b_ih is not None
        elif bias != (b_ih is not None):
            raise ValueError(f"all layers must have biases, or none ({sfx})")
        if b_ih is not None:
            check(f"bias_ih_{sfx}", b_ih, (gh,), (G * H,), dt)
            check(f"bias_hh_{sfx}", b_hh, (gh,), (G * H,), dt)
    LD = "L*2" if dirs == 2 else "L"
    for sname, s in zip(cell.states, states):
        if s is not None:
            check(sname, s, (LD, "N", "H"), (L * dirs, N, H), dt)
    if c is not None:
        check("c", c, ("N", "H"), (N, H), dt)
    return T, N, D, H, L


def check_grads(cell, grads, weights, dirs, dtype) -> None:
    """grads: L*dirs tuples shaped like the weights, of `dtype`, writeable (they are accumulated into).
    Checked in full before any gradient is touched, so a bad one changes nothing."""
    LD = len(weights)
    gh = _gate_dim(cell)
    if not isinstance(grads, (list, tuple)) or len(grads) != LD:
        what = "2L" if dirs == 2 else "L"
        raise ValueError(f"grads must be a list of {what} = {LD} tuples (dW_ih, dW_hh, db_ih, db_hh)")
    for i, (g, w) in enumerate(zip(grads, weights)):
        sfx = layer_suffix(i, dirs)
        if not isinstance(g, (list, tuple)) or len(g) != 4:
            raise ValueError(f"grads[{i}] must be a tuple (dW_ih, dW_hh, db_ih, db_hh)")
        k = i // dirs
        names = ((gh, "D" if k == 0 else ("2H" if dirs == 2 else "H")), (gh, "H"), (gh,), (gh,))
        for gname, ga, wa, dims in zip(_GRAD_NAMES, g, w, names):
            if wa is None:
                continue
            if ga is None:
                raise ValueError(f"{gname}_{sfx} must be given (the layer has that parameter)")
            check(f"{gname}_{sfx}", ga, dims, wa.shape, dtype)
            if not getattr(ga.flags, "writeable", True):   # CuPy arrays have no such flag
                raise ValueError(f"{gname}_{sfx} must be writeable (gradients accumulate into it)")


def check_cache(cell, cache, forward_name):
    """The per-layer cache of `cell` (cell.cache) or raise TypeError naming the forward that makes it."""
    if not isinstance(cache, cell.cache):
        raise TypeError(f"cache must be the {cell.cache.__name__} returned by {forward_name}(..., need_cache=True), "
                        f"got {type(cache).__name__}")


def validate_backward(cell, dout, dfinals, cache, grads, forward_name):
    """Check the arguments of a backward through one plain (no lengths, one direction) forward."""
    check_cache(cell, cache, forward_name)
    L, T, N, H = cache.hs.shape
    dt = cache.hs.dtype
    if dout is not None:
        check("dout", dout, ("T", "N", "H"), (T, N, H), dt)
    for sname, df in zip(cell.finals_grads, dfinals):
        if df is not None:
            check(sname, df, ("L", "N", "H"), (L, N, H), dt)
    check_grads(cell, grads, cache.weights, 1, dt)
