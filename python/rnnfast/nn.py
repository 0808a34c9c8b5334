"""Layers with explicit forward/backward on NumPy arrays: the stacked vanilla RNN, and around it Module
(composites), Embedding, OneHotRNN, Linear (TemporalAffine) and the losses softmax_cross_entropy and mse.

What it is: parameter storage (named and shaped exactly as torch.nn.RNN), initialisation, batch_first
handling and the forward->backward bookkeeping of each layer. What it is not: the RNN math
(rnnfast.functional and the backends), topologies (rnnfast.topologies) or training loops (rnnfast.train).
"""
from __future__ import annotations

import inspect
from typing import Optional

import numpy as np

from . import _cells
from . import _lstm_proj as _LP
from . import functional as F
from .backends import resolve as _resolve_backend

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _to_numpy(v):
    """A NumPy array from an array, a torch tensor (any device), a CuPy array or a nested list."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    elif hasattr(v, "get") and hasattr(v, "__cuda_array_interface__"):   # CuPy
        v = v.get()
    return np.asarray(v)


class Parameters(list):
    """What parameters() returns: the live parameter arrays, in order, as a list that also remembers its
    module, so an optimizer can be given `model.parameters()` as in torch (it finds the gradients through
    the module: NumPy arrays carry none)."""

    def __init__(self, arrays, module):
        super().__init__(arrays)
        self.module = module


class LoadResult(tuple):
    """load_state_dict's result, as torch's: (missing_keys, unexpected_keys), both empty when strict."""

    def __new__(cls, missing_keys, unexpected_keys):
        return super().__new__(cls, (list(missing_keys), list(unexpected_keys)))

    missing_keys = property(lambda self: self[0])
    unexpected_keys = property(lambda self: self[1])


def _check_state_keys(state, own, strict):
    """(missing, unexpected) key lists; with strict, any of either raises KeyError naming them."""
    if not hasattr(state, "keys"):
        raise TypeError(f"state must be a dict of arrays (a state_dict()), got {type(state).__name__}")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        raise KeyError(f"state dict mismatch: missing {missing}, unexpected {unexpected} (strict=False loads the "
                       f"names that match)")
    return missing, unexpected


def _check_dropout(dropout, backend):
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating, np.integer)):
        raise TypeError(f"dropout must be a number in [0, 1), got {type(dropout).__name__}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if dropout and backend is not None and str(backend).lower() == "cuda":
        raise ValueError("dropout is not available with backend='cuda' yet; use dropout=0 or backend='cpu'")
    return float(dropout)


def _unbatch_in(a, axis=1):
    """An unbatched array (torch's 2-D input or state) with a batch axis of 1 added; None stays None."""
    return None if a is None else np.expand_dims(np.asarray(a), axis)


class _DropoutCache:
    """What a forward with dropout keeps: each layer's own cache and the masks applied between layers."""

    def __init__(self, caches, masks, out_shape):
        self.caches, self.masks, self.out_shape = caches, masks, out_shape

    @property
    def nbytes(self):
        return sum(getattr(c, "nbytes", 0) for c in self.caches) + sum(m.nbytes for m in self.masks)


class _Layer:
    """The parameter bookkeeping every leaf layer shares (RNN, LSTM, GRU, Embedding, Linear): params/grads
    dicts, zero_grad, state_dict/load_state_dict, train/eval, and one backward per forward."""

    def _init_params(self, params):
        self.params = params
        self.grads = {k: np.zeros_like(v) for k, v in params.items()}
        self.training = True
        self._cache = None

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def parameters(self):
        """The live parameter arrays in order (a list; an optimizer also accepts it, as in torch)."""
        return Parameters(self.params.values(), self)

    def named_parameters(self):
        """(name, array) pairs in order, named as torch names them."""
        return list(self.params.items())

    def state_dict(self):
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state, strict=True):
        """Load arrays (or torch tensors) named and shaped as torch's modules name them; cast to this dtype.
        strict=True (torch's default): the names must match exactly (KeyError otherwise); strict=False loads
        the names that match and leaves the rest. Returns (missing_keys, unexpected_keys). Shapes are
        checked before anything is assigned, so a failed call changes nothing."""
        missing, unexpected = _check_state_keys(state, self.params, strict)
        new = {}
        for k, ref in self.params.items():
            if k not in state:
                continue
            v = _to_numpy(state[k])
            if v.shape != ref.shape:
                raise ValueError(f"{k} must have shape {ref.shape}, got {v.shape}")
            new[k] = np.ascontiguousarray(v, dtype=self.dtype)
        self.params.update(self._place(new))
        self._cache = None
        return LoadResult(missing, unexpected)

    def _place(self, arrays):
        """Where loaded parameters live: host arrays here; the RNN layer moves them to the GPU on cuda."""
        return arrays

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def _take_cache(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() needs a preceding forward() in training mode "
                               f"(or with need_cache=True); backward may run only once per forward")
        cache, self._cache = self._cache, None
        return cache


class _Recurrent(_Layer):
    """What RNN, LSTM and GRU share: parameters laid out by their cell (rnnfast._cells: G gate blocks of H
    rows, PyTorch's names and init), the weight and gradient tuples, the x / dout layout checks, and one
    forward/backward through rnnfast.functional.forward/backward. A backward that raises keeps the cache
    and changes no gradient, so the caller can retry."""

    _cell = None   # a rnnfast._cells.Cell

    def _init_recurrent(self, input_size, hidden_size, num_layers, bias, batch_first, dtype, backend, seed,
                        bidirectional, dropout=0.0):
        self.dropout = _check_dropout(dropout, backend)
        # the dropout masks' own stream: seeded from `seed` (so runs repeat) but separate from the init's
        self._drop_rng = np.random.default_rng(None if seed is None else [int(seed), 0x64726F70])
        self._unbatched = False
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = _check_size("hidden_size", hidden_size)
        self.num_layers = _check_size("num_layers", num_layers)
        self.dtype = _check_dtype(dtype)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.backend = backend
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        params = {}
        for name, shape in self._cell.param_layout(self.input_size, self.hidden_size, self.num_layers, self.bias,
                                                   self._dirs):   # torch's order and init: U(-1/sqrt(H), 1/sqrt(H))
            params[name] = rng.uniform(-bound, bound, size=shape).astype(self.dtype)
        self._init_params(params)

    @property
    def _dirs(self):
        return 2 if getattr(self, "bidirectional", False) else 1

    @property
    def _G(self):
        return self._cell.gates

    # ---- parameters ----
    def _layer_keys(self):
        keys = self.__dict__.get("_keys")
        if keys is None:   # computed once: this runs on every call, so no string formatting per call
            keys = self._keys = self._cell.layer_keys(self.num_layers, self._dirs)
        return keys

    def _weights(self):
        p = self.params
        return [(p[a], p[b], p.get(c), p.get(d)) for a, b, c, d in self._layer_keys()]

    def _grad_list(self):
        g = self.grads
        return [(g[a], g[b], g.get(c), g.get(d)) for a, b, c, d in self._layer_keys()]

    # ---- layout ----
    def _input(self, x):
        """x as the time-major (T, N, D) array of the layer's dtype (NumPy, or CuPy on the GPU)."""
        if not hasattr(x, "dtype") or hasattr(x, "detach"):
            x = _to_numpy(x)
        lay = "(N, T, D)" if self.batch_first else "(T, N, D)"
        if x.dtype != self.dtype:
            raise TypeError(f"x must have dtype {self.dtype} (the layer's dtype), got {x.dtype}")
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must have shape {lay} with D = {self.input_size}, got {tuple(x.shape)}")
        return x.transpose(1, 0, 2) if self.batch_first else x

    def _dout(self, dout):
        if dout is not None and self.batch_first:
            if getattr(dout, "ndim", 0) != 3:
                raise ValueError(f"dout must have shape (N, T, H), got {tuple(np.shape(dout))}")
            dout = dout.transpose(1, 0, 2)
        return dout

    # ---- computation ----
    def _forward(self, x, states, need_cache, lengths, **kw):
        """functional.forward on the layer's parameters; keeps the cache. -> (out, finals tuple).
        Unbatched x (T, D) (torch's 2-D input) runs as a batch of one, squeezed on the way out; with dropout
        in training mode the layers run one at a time with the masks between them."""
        if not hasattr(x, "dtype") or hasattr(x, "detach"):
            x = _to_numpy(x)
        self._unbatched = x.ndim == 2 and not getattr(self, "_gpu", False)
        if self._unbatched:
            if lengths is not None:
                raise ValueError("lengths needs a batch: x (T, N, D), not unbatched x (T, D)")
            x = _unbatch_in(x, 0 if self.batch_first else 1)
            states = tuple(_unbatch_in(s) for s in states)
            if kw.get("c") is not None:
                kw["c"] = _unbatch_in(kw["c"], 0)
        x = self._input(x)
        if need_cache is None:
            need_cache = self.training
        if lengths is not None or self.bidirectional:
            kw.update(lengths=lengths, bidirectional=self.bidirectional)
        if self.dropout and self.training and self.num_layers > 1:
            out, finals, cache = self._dropout_forward(x, states, need_cache, kw)
        else:
            out, finals, cache = F.forward(self._cell, x, states, self._weights(), need_cache, self.backend, **kw)
        self._cache = cache
        if self.batch_first:
            out = out.transpose(1, 0, 2)
        if self._unbatched:
            out = out[0] if self.batch_first else out[:, 0]
            finals = tuple(f[:, 0] for f in finals)
        return out, finals

    def _backward(self, dout, dfinals):
        """functional.backward of the last forward -> (dx, dstates tuple, dc). On a bad argument nothing has
        changed and the cache is kept."""
        cache = self._take_cache()
        ub = self._unbatched
        if ub:
            dout = _unbatch_in(dout, 0 if self.batch_first else 1)
            dfinals = tuple(_unbatch_in(d) for d in dfinals)
        try:
            if isinstance(cache, _DropoutCache):
                dx, dstates, dc = self._dropout_backward(self._dout(dout), dfinals, cache)
            else:
                dx, dstates, dc = F.backward(self._cell, self._dout(dout), dfinals, cache, self._grad_list(),
                                             self.backend)
        except (ValueError, TypeError):
            self._cache = cache    # bad arguments: keep the cache so the caller can retry
            raise
        if self.batch_first:
            dx = dx.transpose(1, 0, 2)
        if ub:
            dx = dx[0] if self.batch_first else dx[:, 0]
            dstates = tuple(d[:, 0] for d in dstates)
            dc = None if dc is None else dc[0]
        return dx, dstates, dc

    # ---- dropout between layers (torch's placement: on the outputs of every layer but the last) ----
    def _dropout_forward(self, x, states, need_cache, kw):
        """Layer by layer, inverted dropout between: -> (out, finals, _DropoutCache or None)."""
        d, keep = self._dirs, 1.0 - self.dropout
        weights = self._weights()
        caches, masks, finals = [], [], []
        inp = x
        for k in range(self.num_layers):
            sk = tuple(None if s is None else np.asarray(s)[k * d:(k + 1) * d] for s in states)
            kk = dict(kw) if k == 0 else {n: v for n, v in kw.items() if n != "c"}
            out, fk, cache = F.forward(self._cell, inp, sk, weights[k * d:(k + 1) * d], need_cache, self.backend,
                                       **kk)
            caches.append(cache)
            finals.append(fk)
            if k < self.num_layers - 1:
                m = (self._drop_rng.random(out.shape) < keep).astype(out.dtype) / out.dtype.type(keep)
                masks.append(m)
                inp = out * m
        finals = tuple(np.concatenate(f, axis=0) for f in zip(*finals))
        return out, finals, (_DropoutCache(caches, masks, out.shape) if need_cache else None)

    def _dropout_backward(self, dout, dfinals, cache):
        """Last layer first; the gradient into layer k's input passes through layer k-1's mask."""
        if dout is not None and np.shape(dout) != cache.out_shape:
            raise ValueError(f"dout must have shape {cache.out_shape} (the forward's out), got {np.shape(dout)}")
        d = self._dirs
        grads = self._grad_list()
        g = np.zeros(cache.out_shape, self.dtype) if dout is None else dout
        dstates, dc = [None] * self.num_layers, None
        for k in reversed(range(self.num_layers)):
            dk = tuple(None if s is None else np.asarray(s)[k * d:(k + 1) * d] for s in dfinals)
            dx, dstates[k], dck = F.backward(self._cell, g, dk, cache.caches[k], grads[k * d:(k + 1) * d],
                                             self.backend)
            if k == 0:
                dc = dck
            else:
                g = dx * cache.masks[k - 1]
        return dx, tuple(np.concatenate(s, axis=0) for s in zip(*dstates)), dc


class RNN(_Recurrent):
    """Stacked vanilla RNN, h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh [+ c]).

    RNN(input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, dtype=np.float32, backend=None, seed=None): the first eight in torch.nn.RNN's
    positional order. dropout: as torch, zeroes each output of every layer but the last with probability
    `dropout` in training mode (survivors scaled by 1/(1-dropout)); the masks come from a stream seeded by
    `seed`, so seeded runs repeat.
    forward(x, h0=None, c=None) -> (out, h_n): x (T, N, D) (or (N, T, D) with batch_first), h0 (L, N, H),
    c (N, H) a constant input added at every step of the first layer. out (T, N, H), h_n (L, N, H).
    Unbatched input as torch: x (T, D), h0 (L, H), c (H,) give out (T, H), h_n (L, H).
    backward(dout, dh_n=None) -> (dx, dh0), or (dx, dh0, dc) when forward was given c. Parameter gradients
    accumulate (+=) into `grads` until zero_grad().
    """

    _cell = _cells.RNN

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, backend=None, seed=None):
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(f"input_size, hidden_size and num_layers must be >= 1, got "
                             f"({input_size}, {hidden_size}, {num_layers})")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        _check_dtype(dtype)
        if backend is not None:
            _resolve_backend(backend)   # fail now, with the reason, if it is unavailable
        self.nonlinearity = nonlinearity
        self._init_recurrent(input_size, hidden_size, num_layers, bias, batch_first, dtype, backend, seed,
                             bidirectional, dropout)
        self._gpu = backend is not None and str(backend).lower() == "cuda"
        if self._gpu:   # parameters and gradients live on the GPU (CuPy arrays)
            self.params, self.grads = self._to_gpu(self.params), self._to_gpu(self.grads)
        self._had_c = False

    @staticmethod
    def _to_gpu(d):
        from ._cuda_backend import to_device
        return {k: to_device(v) for k, v in d.items()}

    def _place(self, arrays):
        return self._to_gpu(arrays) if self._gpu else arrays

    def forward(self, x, h0=None, c=None, need_cache: Optional[bool] = None, lengths=None) -> tuple:
        """Run the layer. need_cache defaults to self.training; without a cache backward is unavailable.
        lengths (N,) ints in [0, T]: a variable-length batch (outputs past each length are zero, h_n is taken
        at each sequence's last valid step). With bidirectional=True out is (T, N, 2H), h0/h_n (2L, N, H)."""
        if self._gpu:   # torch CUDA tensors and other GPU arrays become CuPy views (NumPy stays NumPy)
            from ._cuda_backend import as_array
            x, h0, c = as_array(x), as_array(h0), as_array(c)
        out, (h_n,) = self._forward(x, (h0,), need_cache, lengths, c=c, nonlinearity=self.nonlinearity)
        self._had_c = c is not None
        return out, h_n

    __call__ = forward

    def backward(self, dout, dh_n=None) -> tuple:
        """Gradients of the last forward. Returns (dx, dh0), or (dx, dh0, dc) when forward was given c."""
        if self._gpu:
            from ._cuda_backend import as_array
            dout, dh_n = as_array(dout), as_array(dh_n)
        dx, (dh0,), dc = self._backward(dout, (dh_n,))
        return (dx, dh0, dc) if self._had_c else (dx, dh0)

    def __repr__(self):
        return (f"RNN({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"nonlinearity={self.nonlinearity!r}, bias={self.bias}, batch_first={self.batch_first}, "
                f"dtype={self.dtype.name}, backend={self.backend!r}"
                + (f", dropout={self.dropout}" if self.dropout else "")
                + (", bidirectional=True)" if self.bidirectional else ")"))


# ---------------------------------------------------------------------------------------------------------
# Composite modules, embeddings, linear heads and losses (issue 4). Everything below works on NumPy arrays,
# float32 or float64; parameter gradients accumulate (+=) until zero_grad(), input gradients are fresh.


def _is_layer(v):
    return hasattr(v, "params") and hasattr(v, "grads") and hasattr(v, "zero_grad")


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _check_size(name, v, minimum=1):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def _check_ids(name, ids, V, shape_desc):
    """Token ids as an int64 array; raise naming `name` if not integers or outside [0, V)."""
    ids = _to_numpy(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array of token ids with shape {shape_desc}, got dtype "
                        f"{ids.dtype}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= V:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} holds token id {bad}, outside the vocabulary [0, V) = [0, {V})")
    return ids.astype(np.int64, copy=False)


_NATIVE = {"enabled": True, "ops": None, "loaded": False}


def native_ops():
    """rnnfast._C when its training-step ops can run (the CPU extension loads and they are enabled), else
    None: then every caller takes its NumPy path (the reference the native ops are tested against)."""
    if not _NATIVE["enabled"]:
        return None
    if not _NATIVE["loaded"]:
        from .backends import _load
        mod, _ = _load("cpu")
        ops = getattr(mod, "_C", None)
        _NATIVE["ops"] = ops if ops is not None and hasattr(ops, "linear_xent") else None
        _NATIVE["loaded"] = True
    return _NATIVE["ops"]


def set_native_ops(enabled):
    """Turn the native training-step ops (fused head + loss, token rows, optimizers, clipping) on or off;
    returns the previous setting. Off, every step runs the NumPy reference code (tests, benchmarks)."""
    was = _NATIVE["enabled"]
    _NATIVE["enabled"] = bool(enabled)
    return was


def _host_arrays(*arrays):
    return all(a is None or type(a) is np.ndarray for a in arrays)


def _scatter_add_rows(table, ids, rows):
    """table[ids[i]] += rows[i] for every i, repeated ids summed (natively, or a sort + segmented sum)."""
    ids = ids.ravel()
    if ids.size == 0:
        return
    ops = native_ops()
    if ops is not None and _host_arrays(table, rows) and table.dtype == rows.dtype and table.flags.c_contiguous \
            and table.dtype in _DTYPES:
        ops.scatter_add_rows(table, ids, rows)
        return
    rows = rows.reshape(ids.size, -1)
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    table[s[starts]] += np.add.reduceat(rows[order], starts, axis=0)


def _gather_rows(table, ids):
    """table[ids] (ids of any shape, already checked) natively when possible."""
    ops = native_ops()
    if ops is not None and type(table) is np.ndarray and table.ndim == 2 and ids.size:
        return ops.gather_rows(table, ids)
    return table[ids]


def _identity_input(backend):
    """Whether a one-hot layer on `backend` can pass layer 0's W_ih as None (the identity): the "cpu"
    kernels take it as "x is the input projection" and skip the input GEMMs."""
    try:
        return _resolve_backend(backend) == "cpu"
    except (RuntimeError, ValueError, TypeError):
        return False


def _onehot_path(path, backend, V, GH):
    """The one-hot layers' input path: "gather" (rows of W_ih^T) or "dense" (a (T, N, V) one-hot GEMM)."""
    if path not in ("auto", "gather", "dense"):
        raise ValueError(f"path must be 'auto', 'gather' or 'dense', got {path!r}")
    if path != "auto":
        return path
    return "gather" if _identity_input(backend) or V > GH else "dense"


def _one_hot(ids, V, dtype):
    """The (*ids.shape, V) one-hot of checked ids."""
    ops = native_ops()
    if ops is not None:
        return ops.one_hot(ids, V, dtype)
    x = np.zeros(ids.shape + (V,), dtype=dtype)
    np.put_along_axis(x, ids[..., None], 1, axis=ids.ndim)
    return x


class Module:
    """A composite of layers. Layers (anything with .params/.grads/.zero_grad, RNN included) assigned as
    attributes are registered in assignment order; `params` and `grads` are flat dicts "child.name" -> the
    live arrays, rebuilt on each access (so load_state_dict, which replaces arrays, is always seen)."""

    def __init__(self):
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        children = self.__dict__.setdefault("_children", {})
        if _is_layer(value):
            children[name] = value
        else:
            children.pop(name, None)
        object.__setattr__(self, name, value)

    def children(self):
        return dict(self._children)

    @property
    def params(self):
        return {f"{c}.{k}": v for c, m in self._children.items() for k, v in m.params.items()}

    @property
    def grads(self):
        return {f"{c}.{k}": v for c, m in self._children.items() for k, v in m.grads.items()}

    def parameters(self):
        """The live parameter arrays in order (a list; an optimizer also accepts it, as in torch)."""
        return Parameters(self.params.values(), self)

    def named_parameters(self):
        """("child.name", array) pairs in order."""
        return list(self.params.items())

    def zero_grad(self):
        for m in self._children.values():
            m.zero_grad()

    def state_dict(self):
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state, strict=True):
        """As the layers' load_state_dict, over "child.name" keys; returns (missing_keys, unexpected_keys)."""
        own = self.params
        missing, unexpected = _check_state_keys(state, own, strict)
        for k in own:                   # every shape first: a failed call changes nothing
            if k in state and np.shape(_to_numpy(state[k])) != own[k].shape:
                raise ValueError(f"{k} must have shape {own[k].shape}, got {np.shape(_to_numpy(state[k]))}")
        for c, m in self._children.items():
            part = {k[len(c) + 1:]: v for k, v in state.items() if k.startswith(c + ".") and k in own}
            if strict:
                m.load_state_dict(part)
            elif part:
                m.load_state_dict(part, strict=False)
        return LoadResult(missing, unexpected)

    def train(self, mode=True):
        object.__setattr__(self, "training", bool(mode))
        for m in self._children.values():
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def num_parameters(self):
        return int(sum(v.size for v in self.params.values()))


class Embedding(_Layer):
    """Token id -> row of a (V, D) table. forward(ids of any shape S) -> (*S, D); backward(dout) scatter-adds
    dout rows into grads["weight"] (repeated ids sum) and returns None (ids have no gradient)."""

    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32, seed=None):
        self.num_embeddings = _check_size("num_embeddings", num_embeddings)
        self.embedding_dim = _check_size("embedding_dim", embedding_dim)
        self.dtype = _check_dtype(dtype)
        rng = np.random.default_rng(seed)   # torch's init: N(0, 1)
        self._init_params({"weight": rng.standard_normal((self.num_embeddings, self.embedding_dim))
                           .astype(self.dtype)})

    def forward(self, ids, need_cache: Optional[bool] = None) -> np.ndarray:
        ids = _check_ids("ids", ids, self.num_embeddings, "(...)")
        out = _gather_rows(self.params["weight"], ids)
        self._cache = ids if (self.training if need_cache is None else need_cache) else None
        return out

    __call__ = forward

    def backward(self, dout: np.ndarray) -> None:
        ids = self._take_cache()
        D = self.embedding_dim
        if getattr(dout, "shape", None) != ids.shape + (D,) or dout.dtype != self.dtype:
            self._cache = ids
            raise ValueError(f"dout must have shape {ids.shape + (D,)} (ids' shape + (D,)) and dtype "
                             f"{self.dtype}, got {getattr(dout, 'shape', None)} {getattr(dout, 'dtype', None)}")
        _scatter_add_rows(self.grads["weight"], ids, dout)   # into the rows that were read
        return None

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}, dtype={self.dtype.name})"


class OneHotRNN(RNN):
    """RNN(V, H) fed one-hot vectors of token ids, without a (T*N, V) GEMM.

    Parameters are exactly RNN(V, H)'s (weight_ih_l0 is (H, V)), so state dicts move to and from RNN and
    torch.nn.RNN unchanged. forward(ids (T, N) [or (N, T) with batch_first], h0, c) -> (out, h_n);
    backward(dout, dh_n) -> (None, dh0) or (None, dh0, dc).

    How: onehot(x) @ W_ih^T is row x of W_ih^T. Path "gather" takes those rows (T*N x H values) and runs the
    kernels with layer 0's input weight set to the identity: on the "cpu" backend W_ih = None, which the
    kernels take as "x is the projection" (no input GEMM, no dW_ih GEMM, dX = dZ); on the others an explicit
    I_H (x @ I is exact). Either way the result equals the one-hot RNN, and dX (= dZ) is scattered back into
    the columns of dW_ih. Path "dense" builds the (T, N, V) one-hot and uses the ordinary GEMM. "auto" picks
    "gather" on the "cpu" backend (it computes nothing there) and elsewhere "dense" for V <= H (where that
    GEMM is cheaper than the identity one) and "gather" otherwise. With backend="cuda" (weights on the GPU)
    the path is always "dense".
    """

    def __init__(self, vocab_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dtype=np.float32, backend=None, seed=None, path="auto"):
        super().__init__(vocab_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dtype=dtype,
                         backend=backend, seed=seed)
        self.vocab_size = self.input_size
        self.path = _onehot_path(path, self.backend, self.vocab_size, hidden_size)
        if getattr(self, "_gpu", False):
            self.path = "dense"    # GPU-resident weights: the RNN layer moves the one-hot input itself
        self._eye = None
        self._ids = None
        self._identity = False     # whether the last gather forward passed W_ih = None (the cpu kernels)

    def forward(self, ids, h0=None, c=None, need_cache=None):
        lay = "(N, T)" if self.batch_first else "(T, N)"
        ids = _check_ids("ids", ids, self.vocab_size, lay)
        if ids.ndim != 2:
            raise ValueError(f"ids must have shape {lay}, got {ids.shape}")
        if self.batch_first:
            ids = ids.T
        if self.path == "dense":
            x = _one_hot(ids, self.vocab_size, self.dtype)
            bf, self.batch_first = self.batch_first, False
            try:
                out, h_n = super().forward(x, h0, c, need_cache)
            finally:
                self.batch_first = bf
        else:
            identity = _identity_input(self.backend)
            if not identity and self._eye is None:
                self._eye = np.eye(self.hidden_size, dtype=self.dtype)
            x = _gather_rows(np.ascontiguousarray(self.params["weight_ih_l0"].T), ids)   # rows of W_ih^T: (T, N, H)
            w = self._weights()
            w[0] = (None if identity else self._eye,) + w[0][1:]
            self._identity = identity
            if need_cache is None:
                need_cache = self.training
            out, h_n, cache = F.rnn_forward(x, h0, w, c, self.nonlinearity, need_cache, self.backend)
            self._cache, self._had_c = cache, c is not None
        self._ids = ids
        if self.batch_first:
            out = out.transpose(1, 0, 2)
        return out, h_n

    __call__ = forward

    def backward(self, dout, dh_n=None):
        if self.path == "dense":
            bf, self.batch_first = self.batch_first, False
            if dout is not None and bf:
                dout = dout.transpose(1, 0, 2)
            try:
                res = super().backward(dout, dh_n)
            finally:
                self.batch_first = bf
            return (None,) + tuple(res[1:])
        if self._cache is None:
            raise RuntimeError("backward() needs a preceding forward() with need_cache=True (training mode); "
                               "backward may run only once per forward")
        cache, self._cache = self._cache, None
        if dout is not None and self.batch_first:
            dout = dout.transpose(1, 0, 2)
        g = self._grad_list()
        # the identity's gradient is not a parameter: None (cpu kernels), else a scratch array takes it
        g[0] = (None if self._identity else np.zeros_like(self._eye),) + g[0][1:]
        try:
            dx, dh0, dc = F.rnn_backward(dout, dh_n, cache, g, self.backend)
        except (ValueError, TypeError):
            self._cache = cache
            raise
        gT = np.zeros((self.vocab_size, self.hidden_size), dtype=self.dtype)
        _scatter_add_rows(gT, self._ids, dx)    # into the columns of W_ih that were read
        self.grads["weight_ih_l0"] += gT.T
        return (None, dh0, dc) if self._had_c else (None, dh0)

    def __repr__(self):
        return (f"OneHotRNN({self.vocab_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"nonlinearity={self.nonlinearity!r}, path={self.path!r}, dtype={self.dtype.name}, "
                f"backend={self.backend!r})")


class Linear(_Layer):
    """y = x W^T + b over all leading dimensions at once: (N, in) -> (N, out) and (T, N, in) -> (T, N, out)
    are one GEMM over every row (the over-time affine layer). Parameters named as torch.nn.Linear."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, seed=None):
        self.in_features = _check_size("in_features", in_features)
        self.out_features = _check_size("out_features", out_features)
        self.dtype = _check_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)   # torch's default: U(-1/sqrt(in), 1/sqrt(in))
        p = {"weight": rng.uniform(-bound, bound, (self.out_features, self.in_features)).astype(self.dtype)}
        if bias:
            p["bias"] = rng.uniform(-bound, bound, (self.out_features,)).astype(self.dtype)
        self._init_params(p)

    def forward(self, x, need_cache: Optional[bool] = None) -> np.ndarray:
        x = _to_numpy(x)
        if x.dtype != self.dtype:
            raise TypeError(f"x must have dtype {self.dtype} (the layer's dtype), got {x.dtype}")
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., D) with D = in_features = {self.in_features}, got "
                             f"{x.shape}")
        x2 = x.reshape(-1, self.in_features)
        W, ops = self.params["weight"], native_ops()
        if ops is not None and _host_arrays(x2, W):     # rnnfast's BLAS, not NumPy's (one thread pool)
            y = np.empty((x2.shape[0], self.out_features), self.dtype)
            if "bias" in self.params:
                y[...] = self.params["bias"]
            ops.gemm(x2, W, y, False, True, 1.0 if "bias" in self.params else 0.0)
        else:
            y = x2 @ W.T
            if "bias" in self.params:
                y += self.params["bias"]
        self._cache = (x2, x.shape) if (self.training if need_cache is None else need_cache) else None
        return y.reshape(x.shape[:-1] + (self.out_features,))

    __call__ = forward

    def backward(self, dout: np.ndarray) -> np.ndarray:
        x2, xshape = self._take_cache()
        want = xshape[:-1] + (self.out_features,)
        if getattr(dout, "shape", None) != want or dout.dtype != self.dtype:
            self._cache = (x2, xshape)
            raise ValueError(f"dout must have shape {want} and dtype {self.dtype}, got "
                             f"{getattr(dout, 'shape', None)} {getattr(dout, 'dtype', None)}")
        d2 = dout.reshape(-1, self.out_features)
        W, gW, ops = self.params["weight"], self.grads["weight"], native_ops()
        if ops is not None and _host_arrays(d2, x2, W, gW) and gW.flags.c_contiguous:
            ops.gemm(d2, x2, gW, True, False, 1.0)          # into W
            if "bias" in self.grads:
                self.grads["bias"] += d2.sum(axis=0)        # into b
            dx = np.empty((d2.shape[0], self.in_features), self.dtype)
            ops.gemm(d2, W, dx, False, False, 0.0)          # into the input
            return dx.reshape(xshape)
        self.grads["weight"] += d2.T @ x2           # into W
        if "bias" in self.grads:
            self.grads["bias"] += d2.sum(axis=0)    # into b
        return (d2 @ self.params["weight"]).reshape(xshape)   # into the input

    def __repr__(self):
        return (f"Linear({self.in_features}, {self.out_features}, bias={'bias' in self.params}, "
                f"dtype={self.dtype.name})")


TemporalAffine = Linear


# ---- losses: functions returning (loss, gradient with respect to the prediction) ----


def _float_array(name, a):
    a = _to_numpy(a)
    if a.dtype not in _DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    return a


def _mask_weights(mask, shape, dtype):
    if mask is None:
        return np.ones(shape, dtype=dtype)
    m = _to_numpy(mask)
    if m.shape != shape:
        raise ValueError(f"mask must have the targets' shape {shape}, got {m.shape}")
    m = m.astype(dtype)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("mask must hold finite, non-negative weights (True/1 = counts, False/0 = ignored)")
    return m


def softmax_cross_entropy(logits, targets, mask=None, reduction: str = "sum", ignore_index: Optional[int] = None,
                          batch_first: bool = False) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy over time. Returns (loss: float, dlogits) with dlogits like logits.

    logits (T, N, V) with targets (T, N) (or (N, T, V) / (N, T) with batch_first), or (N, V) with (N,).
    mask: the targets' shape, True/1 = counts (0/1 weights, or any non-negative weights); targets equal to
    ignore_index count as masked; masked targets may hold any value. reduction "sum" (default): per
    sequence, the sum over steps of the per-step losses, averaged over the N sequences. "mean": the mean
    over the counted positions (0 when none count). Stable for large logits (log-sum-exp).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    logits = _float_array("logits", logits)
    if logits.ndim not in (2, 3):
        raise ValueError(f"logits must have shape (T, N, V) or (N, V), got {logits.shape}")
    V = logits.shape[-1]
    if V < 1:
        raise ValueError(f"logits must have V >= 1 classes, got shape {logits.shape}")
    N = logits.shape[0] if logits.ndim == 2 or batch_first else logits.shape[1]
    if N == 0:
        raise ValueError(f"empty batch: logits has N = 0 sequences (shape {logits.shape})")
    targets = _to_numpy(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be an integer array of class ids, got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets must have shape {logits.shape[:-1]} (logits' shape without V), got "
                         f"{targets.shape}")
    m = _mask_weights(mask, targets.shape, logits.dtype)
    if ignore_index is not None:
        m = m * (targets != ignore_index)
    counted = m != 0
    bad = counted & ((targets < 0) | (targets >= V))
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"targets{list(pos)} = {int(targets[pos])} is outside the classes [0, V) = [0, {V})")
    t = np.where(counted, targets, 0).astype(np.int64)
    z = logits - logits.max(axis=-1, keepdims=True)            # shift: exp never overflows
    ez = np.exp(z)
    sez = ez.sum(axis=-1, keepdims=True)
    logp_t = np.take_along_axis(z, t[..., None], axis=-1)[..., 0] - np.log(sez[..., 0])
    denom = float(N) if reduction == "sum" else max(float(m.sum()), 1.0)
    loss = float(-(logp_t * m).sum() / denom)
    dlogits = ez / sez                                          # softmax
    np.put_along_axis(dlogits, t[..., None], np.take_along_axis(dlogits, t[..., None], axis=-1) - 1, axis=-1)
    dlogits *= (m / denom)[..., None].astype(logits.dtype)
    return loss, dlogits.astype(logits.dtype, copy=False)


def linear_cross_entropy(head, h, targets, mask=None, reduction="sum", ignore_index=None, need_dh=True):
    """A Linear head and softmax cross-entropy in one pass, forward and backward: what
    head.forward(h) -> softmax_cross_entropy(...) -> head.backward(dlogits) computes, without keeping the
    logits. Returns (loss: float, dh like h, or None when need_dh=False); the head's gradients accumulate.

    h (T, N, K) with targets (T, N), or (N, K) with (N,); mask, reduction and ignore_index as in
    softmax_cross_entropy. Natively (one call: logits GEMM, stable log-softmax, dlogits in the same pass,
    then dW += dlogits^T h, db += sum, dh = dlogits W) when the CPU extension is available, else the
    NumPy path above, which is the reference it is tested against.
    """
    ops = native_ops()
    W, b = head.params["weight"], head.params.get("bias")
    h = _to_numpy(h) if not isinstance(h, np.ndarray) else h
    if ops is None or reduction not in ("sum", "mean") or not isinstance(targets, np.ndarray) \
            or h.dtype != head.dtype or h.ndim not in (2, 3) or not _host_arrays(W, b, head.grads["weight"]) \
            or h.shape[-1] != head.in_features or targets.shape != h.shape[:-1] or targets.dtype.kind not in "iu" \
            or (mask is not None and np.shape(mask) != targets.shape) or h.shape[-2] == 0 \
            or not all(g.flags.c_contiguous and g.flags.writeable for g in head.grads.values()):
        y = head.forward(h, need_cache=True)        # the reference path (and every argument check)
        loss, dy = softmax_cross_entropy(y, targets, mask=mask, reduction=reduction, ignore_index=ignore_index)
        dh = head.backward(dy)
        return loss, (dh if need_dh else None)
    M = targets.size
    K = h.shape[-1]
    m = None if mask is None else _to_numpy(mask).reshape(M)
    try:
        loss, dh = ops.linear_xent(h.reshape(M, K), W, b, targets.reshape(M), m, ignore_index, reduction,
                                   h.shape[-2], head.grads["weight"], head.grads.get("bias"), need_dh)
    except ValueError:      # nothing was changed: let the reference checks word the error (targets[t, n] ...)
        softmax_cross_entropy(head.forward(h, need_cache=False), targets, mask=mask, reduction=reduction,
                              ignore_index=ignore_index)
        raise
    return loss, (dh.reshape(h.shape) if need_dh else None)


def mse(pred, target, mask=None, reduction: str = "mean") -> tuple[float, np.ndarray]:
    """Squared error. Returns (loss: float, dpred). mask: pred's shape or its leading dimensions (then
    broadcast over the rest); "mean" over the counted elements (torch MSELoss), "sum" their plain sum."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    pred = _float_array("pred", pred)
    target = _to_numpy(target)
    if target.shape != pred.shape:
        raise ValueError(f"target must have pred's shape {pred.shape}, got {target.shape}")
    if pred.size == 0:
        raise ValueError(f"empty batch: pred has shape {pred.shape}")
    diff = pred - target.astype(pred.dtype)
    if mask is None:
        m = np.ones((), dtype=pred.dtype)
        count = float(pred.size)
    else:
        mm = _to_numpy(mask)
        if mm.shape != pred.shape[:mm.ndim]:
            raise ValueError(f"mask must have pred's shape {pred.shape} or its leading dimensions, got {mm.shape}")
        mm = _mask_weights(mm, mm.shape, pred.dtype)
        m = mm.reshape(mm.shape + (1,) * (pred.ndim - mm.ndim))
        count = float(np.broadcast_to(m, pred.shape).sum())
    denom = max(count, 1.0) if reduction == "mean" else 1.0
    loss = float((m * diff * diff).sum() / denom)
    return loss, (2.0 / denom) * m * diff


# ---------------------------------------------------------------------------------------------------------
# Gated recurrent layers (issue 6): LSTM and GRU with PyTorch's gate order, parameter names and shapes, so
# torch.nn.LSTM / torch.nn.GRU state dicts load unchanged. Same protocol as RNN (params/grads dicts, zero_grad,
# state_dict/load_state_dict, train/eval, one backward per forward), plus bidirectional and lengths.


class _Gated(_Recurrent):
    """What LSTM and GRU share beyond _Recurrent: the constructor (no CUDA kernels yet) and the repr."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, dtype=np.float32, backend=None, seed=None):
        if backend is not None:
            name = _resolve_backend(backend)
            if name == "cuda":
                raise ValueError(f"{self._cell.title} has no CUDA kernels yet; use backend='cpu' or 'numpy'")
        self._init_recurrent(input_size, hidden_size, num_layers, bias, batch_first, dtype, backend, seed,
                             bidirectional, dropout)

    def __repr__(self):
        return (f"{self._cell.title}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dtype={self.dtype.name}, "
                f"backend={self.backend!r}, bidirectional={self.bidirectional}"
                + (f", dropout={self.dropout})" if self.dropout else ")"))


class LSTM(_Gated):
    """Stacked LSTM, PyTorch's gates (i, f, g, o) and parameters (weight_ih_l{k} (4H, D_k), weight_hh_l{k}
    (4H, H), bias_ih_l{k}, bias_hh_l{k} (4H,), plus *_reverse with bidirectional=True).

    LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0, bidirectional=False,
         dtype=np.float32, backend=None, seed=None): the first seven in torch.nn.LSTM's positional order;
      dropout between layers in training mode, as RNN's. Unbatched input as torch: x (T, D), states (L, H).
    forward(x, hc0=None, need_cache=None, lengths=None) -> (out, (h_n, c_n)): x (T, N, D) (or (N, T, D) with
      batch_first); hc0 = (h0, c0), each (L*dirs, N, H) or None for zeros; out (T, N, dirs*H);
      lengths (N,) ints in [0, T], any order: outputs past a length are zero, h_n and c_n are each
      sequence's state at its last valid step (as torch with a packed sequence).
    backward(dout, dh_n=None, dc_n=None) -> (dx, (dh0, dc0)). Parameter gradients accumulate (+=) into
      `grads` until zero_grad().
    proj_size=P (keyword, 0 < P < H): torch's LSTM with projections, h_t = W_hr (o_t * tanh(c_t)) with
      weight_hr_l{k}[_reverse] (P, H); weight_hh (4H, P), layers above the first take dirs*P inputs, h0/h_n are
      (L*dirs, N, P), out (T, N, dirs*P); c stays H wide. Runs on the 'cpu' and 'numpy' backends
      (rnnfast._lstm_proj).
    """

    _cell = _cells.LSTM

    def __init__(self, *args, proj_size=0, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
            raise TypeError(f"proj_size must be an int, got {type(proj_size).__name__}")
        if proj_size < 0:
            raise ValueError(f"proj_size must be >= 0 (0 disables projections), got {proj_size}")
        if proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({self.hidden_size}), got {proj_size}")
        self.proj_size = int(proj_size)
        if self.proj_size:
            seed = inspect.signature(_Gated.__init__).bind(self, *args, **kwargs).arguments.get("seed")
            self._projection_params(seed)

    def _projection_params(self, seed):
        """The parameters with projections, in torch's order and init (U(-1/sqrt(H), 1/sqrt(H)))."""
        H, P = self.hidden_size, self.proj_size
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(H)
        params, keys = {}, []
        for k in range(self.num_layers):
            for sfx in ("", "_reverse")[:self._dirs]:
                Dk = self.input_size if k == 0 else P * self._dirs
                names = (f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}", f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}",
                         f"weight_hr_l{k}{sfx}")
                shapes = [(4 * H, Dk), (4 * H, P), (4 * H,), (4 * H,), (P, H)]
                for name, shape in zip(names, shapes):
                    if self.bias or "bias" not in name:
                        params[name] = rng.uniform(-bound, bound, size=shape).astype(self.dtype)
                keys.append(names)
        self._init_params(params)
        self._keys = keys

    def _weights(self):
        if not getattr(self, "proj_size", 0):
            return super()._weights()
        p = self.params
        return [(p[a], p[b], p.get(c), p.get(d), p[e]) for a, b, c, d, e in self._keys]

    def _grad_list(self):
        if not getattr(self, "proj_size", 0):
            return super()._grad_list()
        g = self.grads
        return [(g[a], g[b], g.get(c), g.get(d), g[e]) for a, b, c, d, e in self._keys]

    def __repr__(self):
        return super().__repr__()[:-1] + (f", proj_size={self.proj_size})" if self.proj_size else ")")

    def forward(self, x, hc0=None, need_cache: Optional[bool] = None, lengths=None) -> tuple:
        h0, c0 = (None, None) if hc0 is None else hc0
        if not self.proj_size:
            out, (h_n, c_n) = self._forward(x, (h0, c0), need_cache, lengths)
            return out, (h_n, c_n)
        x = self._input(x)
        if need_cache is None:
            need_cache = self.training
        out, h_n, c_n, self._cache = _LP.lstm_proj_forward(x, h0, c0, self._weights(), need_cache, self.backend,
                                                           lengths, self.bidirectional)
        if self.batch_first:
            out = out.transpose(1, 0, 2)
        return out, (h_n, c_n)

    __call__ = forward

    def backward(self, dout, dh_n=None, dc_n=None) -> tuple:
        if not self.proj_size:
            dx, (dh0, dc0), _ = self._backward(dout, (dh_n, dc_n))
            return dx, (dh0, dc0)
        cache = self._take_cache()
        try:
            dx, dh0, dc0 = _LP.lstm_proj_backward(self._dout(dout), dh_n, dc_n, cache, self._grad_list())
        except (ValueError, TypeError):
            self._cache = cache    # bad arguments: keep the cache so the caller can retry
            raise
        if self.batch_first:
            dx = dx.transpose(1, 0, 2)
        return dx, (dh0, dc0)


class GRU(_Gated):
    """Stacked GRU, PyTorch's variant (the reset gate multiplies W_hn h + b_hn), gates (r, z, n), parameters
    named and shaped as torch.nn.GRU's ((3H, D_k), (3H, H), (3H,), plus *_reverse when bidirectional).

    GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0, bidirectional=False,
        dtype=np.float32, backend=None, seed=None): torch.nn.GRU's positional order, dropout as LSTM's.
    forward(x, h0=None, need_cache=None, lengths=None) -> (out, h_n); backward(dout, dh_n=None) -> (dx, dh0).
    Shapes and lengths as in LSTM.
    """

    _cell = _cells.GRU

    def forward(self, x, h0=None, need_cache: Optional[bool] = None, lengths=None) -> tuple:
        out, (h_n,) = self._forward(x, (h0,), need_cache, lengths)
        return out, h_n

    __call__ = forward

    def backward(self, dout, dh_n=None) -> tuple:
        dx, (dh0,), _ = self._backward(dout, (dh_n,))
        return dx, dh0
