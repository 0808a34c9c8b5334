"""Shared helpers for the per-cell tests: weight builders, one call that runs forward + backward of any cell
through rnnfast.functional.forward/backward (the cells table, no per-cell code), and the torch state-dict
bridge. Not tests themselves; tolerances live in tolerances.py."""
from __future__ import annotations

import numpy as np

import rnnfast.functional as F
from rnnfast._cells import CELLS

GATES = {name: cell.gates for name, cell in CELLS.items()}


def make_weights(rng, cell, D, H, L, dtype, bias=True, dirs=1, scale=None):
    """L*dirs tuples (W_ih (G*H, D_k), W_hh (G*H, H), b_ih, b_hh) in PyTorch's order (l0, l0_reverse, ...)."""
    G = GATES[cell]
    s = scale if scale is not None else 1.0 / np.sqrt(H)
    ws = []
    for k in range(L):
        for _ in range(dirs):
            Dk = D if k == 0 else H * dirs
            ws.append((rng.uniform(-s, s, (G * H, Dk)).astype(dtype), rng.uniform(-s, s, (G * H, H)).astype(dtype),
                       rng.uniform(-s, s, G * H).astype(dtype) if bias else None,
                       rng.uniform(-s, s, G * H).astype(dtype) if bias else None))
    return ws


def zero_grads(weights):
    return [tuple(None if a is None else np.zeros_like(a) for a in w) for w in weights]


def flat(grads):
    return [a for g in grads for a in g if a is not None]


def run_cell(cell, backend, x, states, ws, douts, lengths=None, bidirectional=False, c=None, act="tanh"):
    """Forward + backward of `cell` through rnnfast.functional. states: (h0,) or (h0, c0); douts: (dout, dh_n)
    or (dout, dh_n, dc_n). Returns [out, finals..., dx, dstates..., (dc,) parameter gradients...]."""
    kw = {}
    if lengths is not None or bidirectional:
        kw = dict(lengths=lengths, bidirectional=bidirectional)
    if CELLS[cell].constant_input:
        kw.update(c=c, nonlinearity=act)
    g = zero_grads(ws)
    out, finals, cache = F.forward(cell, x, states, ws, True, backend, **kw)
    dx, dstates, dc = F.backward(cell, douts[0], douts[1:], cache, g, backend)
    return [out, *finals, dx, *dstates] + ([dc] if dc is not None else []) + flat(g)


def torch_params(ws, L, dirs, bias=True):
    """Our weight tuples as a torch-style state dict (names weight_ih_l{k}[_reverse], ...)."""
    sd = {}
    for i, w in enumerate(ws):
        k, d = divmod(i, dirs)
        sfx = f"l{k}" + ("_reverse" if d else "")
        for name, a in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), w):
            if a is not None:
                sd[f"{name}_{sfx}"] = a
    return sd
