"""Layers with explicit forward/backward on NumPy arrays: the stacked vanilla RNN.

What it is: parameter storage (named and shaped exactly as torch.nn.RNN), initialisation, batch_first
handling and the forward->backward bookkeeping of one layer. What it is not: the math (rnnfast.functional
and the backends) or training loops (rnnfast.train).
"""
from __future__ import annotations

import numpy as np

from . import backends as _backends
from . import functional as F

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _to_numpy(v):
    """A NumPy array from an array, a torch tensor (any device) or a nested list."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


class RNN:
    """Stacked vanilla RNN, h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh [+ c]).

    forward(x, h0=None, c=None) -> (out, h_n): x (T, N, D) (or (N, T, D) with batch_first), h0 (L, N, H),
    c (N, H) a constant input added at every step of the first layer. out (T, N, H), h_n (L, N, H).
    backward(dout, dh_n=None) -> (dx, dh0), or (dx, dh0, dc) when forward was given c. Parameter gradients
    accumulate (+=) into `grads` until zero_grad().
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dtype=np.float32, backend=None, seed=None):
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(f"input_size, hidden_size and num_layers must be >= 1, got "
                             f"({input_size}, {hidden_size}, {num_layers})")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        dtype = np.dtype(dtype)
        if dtype not in _DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if backend is not None:
            _backends.resolve(backend)   # fail now, with the reason, if it is unavailable
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.nonlinearity, self.bias, self.batch_first = nonlinearity, bool(bias), bool(batch_first)
        self.dtype, self.backend = dtype, backend
        self.training = True
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(hidden_size)
        self.params = {}
        for k in range(num_layers):
            Dk = input_size if k == 0 else hidden_size
            shapes = [(f"weight_ih_l{k}", (hidden_size, Dk)), (f"weight_hh_l{k}", (hidden_size, hidden_size))]
            if bias:
                shapes += [(f"bias_ih_l{k}", (hidden_size,)), (f"bias_hh_l{k}", (hidden_size,))]
            for name, shape in shapes:   # torch's order and distribution: U(-1/sqrt(H), 1/sqrt(H))
                self.params[name] = rng.uniform(-bound, bound, size=shape).astype(dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._cache = None
        self._had_c = False

    # ---- parameters ----
    def _weights(self):
        p = self.params
        return [(p[f"weight_ih_l{k}"], p[f"weight_hh_l{k}"], p.get(f"bias_ih_l{k}"), p.get(f"bias_hh_l{k}"))
                for k in range(self.num_layers)]

    def _grad_list(self):
        g = self.grads
        return [(g[f"weight_ih_l{k}"], g[f"weight_hh_l{k}"], g.get(f"bias_ih_l{k}"), g.get(f"bias_hh_l{k}"))
                for k in range(self.num_layers)]

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def state_dict(self):
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state):
        """Load arrays (or torch tensors) named and shaped as torch.nn.RNN's; cast to this layer's dtype."""
        missing = [k for k in self.params if k not in state]
        unexpected = [k for k in state if k not in self.params]
        if missing or unexpected:
            raise KeyError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
        new = {}
        for k, ref in self.params.items():
            v = _to_numpy(state[k])
            if v.shape != ref.shape:
                raise ValueError(f"{k} must have shape {ref.shape}, got {v.shape}")
            new[k] = np.ascontiguousarray(v, dtype=self.dtype)
        self.params.update(new)
        self._cache = None

    def parameters(self):
        return list(self.params.values())

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    # ---- computation ----
    def forward(self, x, h0=None, c=None, need_cache=None):
        """Run the layer. need_cache defaults to self.training; without a cache backward is unavailable."""
        x = np.asarray(x) if not hasattr(x, "dtype") else x
        if x.dtype != self.dtype:
            raise TypeError(f"x must have dtype {self.dtype} (the layer's dtype), got {x.dtype}")
        if x.ndim != 3:
            lay = "(N, T, D)" if self.batch_first else "(T, N, D)"
            raise ValueError(f"x must have shape {lay} with D = {self.input_size}, got {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        if x.shape[2] != self.input_size:
            lay = "(N, T, D)" if self.batch_first else "(T, N, D)"
            raise ValueError(f"x must have shape {lay} with D = {self.input_size}, got "
                             f"{tuple(x.transpose(1, 0, 2).shape) if self.batch_first else tuple(x.shape)}")
        if need_cache is None:
            need_cache = self.training
        out, h_n, cache = F.rnn_forward(x, h0, self._weights(), c, self.nonlinearity, need_cache, self.backend)
        self._cache, self._had_c = cache, c is not None
        if self.batch_first:
            out = out.transpose(1, 0, 2)
        return out, h_n

    __call__ = forward

    def backward(self, dout, dh_n=None):
        """Gradients of the last forward. Returns (dx, dh0), or (dx, dh0, dc) when forward was given c."""
        if self._cache is None:
            raise RuntimeError("backward() needs a preceding forward() with need_cache=True (training mode); "
                               "backward may run only once per forward")
        cache, self._cache = self._cache, None
        if dout is not None and self.batch_first:
            if getattr(dout, "ndim", 0) != 3:
                raise ValueError(f"dout must have shape (N, T, H), got {tuple(np.shape(dout))}")
            dout = dout.transpose(1, 0, 2)
        try:
            dx, dh0, dc = F.rnn_backward(dout, dh_n, cache, self._grad_list(), self.backend)
        except (ValueError, TypeError):
            self._cache = cache    # bad arguments: keep the cache so the caller can retry
            raise
        if self.batch_first:
            dx = dx.transpose(1, 0, 2)
        return (dx, dh0, dc) if self._had_c else (dx, dh0)

    def __repr__(self):
        return (f"RNN({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"nonlinearity={self.nonlinearity!r}, bias={self.bias}, batch_first={self.batch_first}, "
                f"dtype={self.dtype.name}, backend={self.backend!r})")
