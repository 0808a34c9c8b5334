"""Shared helpers for the gated-cell and lengths/bidirectional tests: weight builders, one call that runs
forward + backward of any cell through rnnfast.functional, and the torch state-dict bridge.
Not tests themselves; tolerances stay in rnn_helpers."""
from __future__ import annotations

import numpy as np

import rnnfast.functional as F

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


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
    g = zero_grads(ws)
    if cell == "rnn":
        out, h_n, cache = F.rnn_forward(x, states[0], ws, c, act, True, backend, **kw)
        dx, dh0, dc = F.rnn_backward(douts[0], douts[1], cache, g, backend)
        return [out, h_n, dx, dh0] + ([dc] if dc is not None else []) + flat(g)
    if cell == "lstm":
        out, h_n, c_n, cache = F.lstm_forward(x, states[0], states[1], ws, True, backend, **kw)
        dx, dh0, dc0 = F.lstm_backward(douts[0], douts[1], douts[2], cache, g, backend)
        return [out, h_n, c_n, dx, dh0, dc0] + flat(g)
    out, h_n, cache = F.gru_forward(x, states[0], ws, True, backend, **kw)
    dx, dh0 = F.gru_backward(douts[0], douts[1], cache, g, backend)
    return [out, h_n, dx, dh0] + flat(g)


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
