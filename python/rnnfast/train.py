"""Training: optimizers (SGD with momentum, Adagrad, RMSprop, Adam), gradient clipping, sampling from
logits, atomic .npz checkpoints (no pickle) and a Trainer with a truncated-BPTT loop, NaN guard, progress
bar (tqdm when installed) and loss history. What it is not: models (rnnfast.topologies, rnnfast.models)
or the math of any layer (rnnfast.nn). A "model" here is anything with .params / .grads dicts
(rnnfast.RNN, rnnfast.nn.Module) and, for Trainer, a loss(...) method that accumulates gradients.
"""
from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import threading
import time
from typing import Optional

import numpy as np

from . import nn as _nn

FORMAT_VERSION = 1


# ---- optimizers ----


def _host(a):
    """A NumPy copy of a NumPy or GPU (CuPy) array."""
    return np.array(a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else a)


def _like(a, ref):
    """`a` as an array of ref's dtype on ref's device (NumPy, or CuPy for GPU-resident parameters)."""
    a = np.asarray(a, dtype=ref.dtype)
    if isinstance(ref, np.ndarray):
        return a.copy()
    from ._cuda_backend import to_device
    return to_device(a)


def _dicts(model_or_grads):
    if isinstance(model_or_grads, dict):
        return model_or_grads
    return model_or_grads.grads


def _native():
    return _nn.native_ops()


# ---- flat parameter buffers ----


def _leaves(model):
    """The leaf layers (objects whose .params dict holds the arrays) under a Module, depth first, in the
    order Module.params lists them."""
    kids = getattr(model, "_children", None)
    if kids is None:
        return [model]
    return [leaf for child in kids.values() for leaf in _leaves(child)]


class FlatBuffers:
    """One contiguous parameter buffer P and one gradient buffer G; model.params[name] / model.grads[name]
    are views into them (`views`: name -> (offset, size, shape)). Made by flatten_parameters."""

    def __init__(self, P, G, names, pviews, gviews, leaf_items=None):
        self.P, self.G, self.names = P, G, names
        self.pviews, self.gviews = pviews, gviews
        self.leaf_items = leaf_items      # [(leaf.params, leaf.grads, key, pview, gview)]: the cheap check

    def still_bound(self):
        """valid() through the leaves' own dicts, without building the model's name -> array dicts."""
        for pd, gd, k, pv, gv in self.leaf_items:
            if pd.get(k) is not pv or gd.get(k) is not gv:
                return False
        return True

    def valid(self, params, grads):
        """Whether the model still uses these views (a load_state_dict that replaced arrays breaks it)."""
        if len(params) != len(self.names):
            return False
        for n, pv, gv in zip(self.names, self.pviews, self.gviews):
            if params.get(n) is not pv or grads.get(n) is not gv:
                return False
        return True


def flatten_parameters(model):
    """Move every parameter of `model` into one contiguous buffer and every gradient into another, the
    layers' arrays becoming views into them (values kept), so that zeroing the gradients is one memset and
    clipping and the optimizer update are one native call each. Returns the FlatBuffers, or None (nothing
    changed) when the parameters are not all NumPy arrays of one float dtype. Trainer calls it; calling it
    again after a load_state_dict rebuilds the buffers."""
    leaves = _leaves(model)
    items = [(leaf, k, v) for leaf in leaves for k, v in leaf.params.items()]
    if not items:
        return None
    dtype = items[0][2].dtype
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return None
    for leaf, k, v in items:
        if type(v) is not np.ndarray or v.dtype != dtype or type(leaf.grads.get(k)) is not np.ndarray:
            return None
    total = sum(v.size for _, _, v in items)
    P, G = np.empty(total, dtype), np.empty(total, dtype)
    off = 0
    for leaf, k, v in items:
        n = v.size
        P[off:off + n] = v.ravel()
        G[off:off + n] = leaf.grads[k].ravel()
        leaf.params[k] = P[off:off + n].reshape(v.shape)
        leaf.grads[k] = G[off:off + n].reshape(v.shape)
        off += n
    params, grads = model.params, model.grads
    names = list(params)
    fb = FlatBuffers(P, G, names, [params[n] for n in names], [grads[n] for n in names],
                     [(leaf.params, leaf.grads, k, leaf.params[k], leaf.grads[k]) for leaf, k, _ in items])
    if not fb.valid(params, grads):   # a model whose params dict is not its leaves' (no flat path)
        return None
    object.__setattr__(model, "_rnnfast_flat", fb)
    return fb


def _leaves_unchanged(model, fb):
    """Whether the model's leaf layers still own the dicts recorded in fb (no layer was replaced)."""
    leaves = fb.__dict__.get("_leaf_ids")
    now = tuple(id(leaf.params) for leaf in _leaves(model))
    if leaves is None:
        fb._leaf_ids = leaves = tuple(dict.fromkeys(id(pd) for pd, *_ in fb.leaf_items))
    return now == leaves


# Within Trainer._finish (guard, clip, update, guard: no user code replaces arrays in between) the check
# below runs once, not once per helper: {thread: (model, fb)}.
_checked = threading.local()


def flat_buffers(model):
    """The model's FlatBuffers when its parameters are (still) views into them, else None. A model with a
    single contiguous parameter (e.g. rnnfast.models.char_lm.FlatParams) is its own flat buffer."""
    memo = getattr(_checked, "memo", None)
    if memo is not None and memo[0] is model:
        return memo[1]
    fb = getattr(model, "_rnnfast_flat", None)
    if fb is not None and fb.leaf_items is not None and _leaves_unchanged(model, fb) and fb.still_bound():
        return fb
    params, grads = model.params, model.grads
    if fb is not None:
        if fb.valid(params, grads):
            return fb
        fb = flatten_parameters(model)     # arrays were replaced (load_state_dict): rebuild the buffers
        if fb is not None:
            return fb
    if len(params) == 1:
        (name, p), = params.items()
        g = grads.get(name)
        if type(p) is np.ndarray and type(g) is np.ndarray and p.flags.c_contiguous and g.flags.c_contiguous \
                and p.dtype == g.dtype and p.shape == g.shape and p.dtype in (np.float32, np.float64):
            return FlatBuffers(p.reshape(-1), g.reshape(-1), [name], [p], [g])
    return None


class Optimizer:
    """Updates model.params in place from model.grads, both looked up by name at every step (so a
    load_state_dict that replaces the arrays is followed). State is per parameter name."""

    def __init__(self, model, lr):
        from .nn import Parameters

        if isinstance(model, Parameters):   # Adam(model.parameters(), ...), as in torch
            model = model.module
        if not (hasattr(model, "params") and hasattr(model, "grads")):
            raise TypeError(f"{type(self).__name__} takes the model (anything with .params and .grads dicts, e.g. "
                            f"{type(self).__name__}(model, lr=...)) or model.parameters(); got "
                            f"{type(model).__name__} (a list of bare arrays has no gradients to follow)")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        self.model, self.lr, self.t = model, float(lr), 0
        self.state = {}          # slot name -> {param name -> array}

    def _slot(self, slot, name, like):
        d = self.state.setdefault(slot, {})
        if name not in d:
            d[name] = np.zeros_like(like)
        return d[name]

    def zero_grad(self):
        fb = flat_buffers(self.model) if _native() is not None else None
        if fb is not None:
            fb.G.fill(0)            # one memset over the flat gradient buffer
        else:
            self.model.zero_grad()

    def step(self):
        self.t += 1
        if self._native_step():
            return
        grads = self.model.grads
        for name, p in self.model.params.items():
            self._update(name, p, grads[name])

    # The native path: with flat buffers (flatten_parameters) the state slots are flat buffers too, each
    # state[slot][name] a view into one, and the whole update is one call into rnnfast._C.
    _SLOTS = ()

    def _native_step(self):
        ops = _native()
        if ops is None:
            return False
        fb = flat_buffers(self.model)
        if fb is None:
            return False
        slots = self._flat_slots(fb)
        if slots is None:
            return False
        self._native_update(ops, fb, slots)
        return True

    def _flat_slots(self, fb):
        """{slot: flat state buffer} for the slots this optimizer uses (absent ones as None), re-packing
        per-name state (e.g. just loaded) into flat buffers; None when a slot is only partly filled."""
        cache = self.__dict__.setdefault("_flat_cache", {})
        out = {}
        for slot in self._SLOTS:
            d = self.state.get(slot)
            hit = cache.get(slot)
            if hit is not None and hit[0] is fb.P and d is not None and len(d) == len(fb.names) and \
                    all(d.get(n) is v for n, v in zip(fb.names, hit[2])):
                out[slot] = hit[1]
                continue
            if not d:
                out[slot] = None
                continue
            if set(d) != set(fb.names) or any(type(d[n]) is not np.ndarray for n in fb.names):
                return None
            buf = np.empty_like(fb.P)
            views = []
            for n, pv in zip(fb.names, fb.pviews):
                off = _offset(fb.P, pv)
                v = buf[off:off + pv.size].reshape(pv.shape)
                v[...] = d[n]
                views.append(v)
            for n, v in zip(fb.names, views):
                d[n] = v
            cache[slot] = (fb.P, buf, views)
            out[slot] = buf
        return out

    def _new_slot(self, fb, slot):
        """A zero flat state buffer for `slot`, with state[slot][name] views into it."""
        buf = np.zeros_like(fb.P)
        views = [buf[_offset(fb.P, pv):_offset(fb.P, pv) + pv.size].reshape(pv.shape) for pv in fb.pviews]
        self.state[slot] = dict(zip(fb.names, views))
        self.__dict__.setdefault("_flat_cache", {})[slot] = (fb.P, buf, views)
        return buf

    def state_dict(self):
        """Flat {key: array}: "t", "lr" and "<slot>/<param name>" for every state array."""
        out = {"t": np.array(self.t, dtype=np.int64), "lr": np.array(self.lr)}
        for slot, d in self.state.items():
            for name, a in d.items():
                out[f"{slot}/{name}"] = _host(a)
        return out

    def _stage_state_dict(self, state, where="optimizer state"):
        """Validate `state` (as state_dict() returns it) against this optimizer and its model; return what
        load_state_dict assigns: (state, t, lr). Raises naming `where` and the bad key; changes nothing."""
        params = self.model.params
        for key in ("t", "lr"):
            if key not in state:
                raise KeyError(f"{where} has no {key!r} entry")
        new = {}
        for key, a in state.items():
            if key in ("t", "lr"):
                continue
            slot, _, name = key.partition("/")
            if self.slots is not None and slot not in self.slots:
                raise ValueError(f"{where} holds {key!r}, a slot that {type(self).__name__} does not have "
                                 f"(it keeps {list(self.slots) or 'no state'}): is it another optimizer's state?")
            if name not in params:
                raise KeyError(f"{where} {key!r} names no parameter of the model")
            if np.shape(a) != params[name].shape:
                raise ValueError(f"{where} {key!r} must have shape {params[name].shape}, got {np.shape(a)}")
            new.setdefault(slot, {})[name] = _like(a, params[name])
        t, lr = np.asarray(state["t"]), np.asarray(state["lr"])
        if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
            raise ValueError(f"{where} 't' must be an integer >= 0, got {state['t']!r}")
        if lr.shape != () or lr.dtype.kind not in "fiu" or not (math.isfinite(float(lr)) and float(lr) >= 0):
            raise ValueError(f"{where} 'lr' must be a finite number >= 0, got {state['lr']!r}")
        return new, int(t), float(lr)

    def load_state_dict(self, state):
        """Replace the state with `state` (as state_dict() returns it); all of it is checked first, so a bad
        state changes nothing."""
        self.state, self.t, self.lr = self._stage_state_dict(state)

    slots = None     # the state slot names this optimizer keeps (None: not declared, not checked)


def _offset(base, view):
    """Element offset of a contiguous view inside the 1-D buffer `base`."""
    return (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // base.itemsize


class SGD(Optimizer):
    """p -= lr * v with v = momentum * v + g (torch's SGD; plain SGD when momentum = 0)."""

    slots = ("momentum",)

    def __init__(self, model, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(model, lr)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)

    def _update(self, name, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            bufs = self.state.setdefault("momentum", {})
            if name not in bufs:                 # torch: the first buffer is the gradient itself
                bufs[name] = g.copy()
            else:
                bufs[name] *= self.momentum
                bufs[name] += g
            g = bufs[name]
        p -= self.lr * g

    @property
    def _SLOTS(self):
        return ("momentum",) if self.momentum else ()

    def _native_update(self, ops, fb, slots):
        buf, first = None, False
        if self.momentum:
            buf = slots["momentum"]
            if buf is None:                      # torch: the first buffer is the gradient itself
                buf, first = self._new_slot(fb, "momentum"), True
        ops.sgd(fb.P, fb.G, buf, self.lr, self.momentum, self.weight_decay, first)


class Adagrad(Optimizer):
    """s += g^2; p -= lr * g / (sqrt(s) + eps) (torch's Adagrad)."""

    slots = ("sum",)

    def __init__(self, model, lr=1e-2, eps=1e-10):
        super().__init__(model, lr)
        self.eps = float(eps)

    def _update(self, name, p, g):
        s = self._slot("sum", name, p)
        s += g * g
        p -= self.lr * g / (np.sqrt(s) + self.eps)

    _SLOTS = ("sum",)

    def _native_update(self, ops, fb, slots):
        s = slots["sum"] if slots["sum"] is not None else self._new_slot(fb, "sum")
        ops.adagrad(fb.P, fb.G, s, self.lr, self.eps)


class RMSprop(Optimizer):
    """s = alpha * s + (1 - alpha) * g^2; p -= lr * g / (sqrt(s) + eps) (torch's RMSprop)."""

    slots = ("square_avg",)

    def __init__(self, model, lr=1e-2, alpha=0.99, eps=1e-8):
        super().__init__(model, lr)
        self.alpha, self.eps = float(alpha), float(eps)

    def _update(self, name, p, g):
        s = self._slot("square_avg", name, p)
        s *= self.alpha
        s += (1 - self.alpha) * g * g
        p -= self.lr * g / (np.sqrt(s) + self.eps)

    _SLOTS = ("square_avg",)

    def _native_update(self, ops, fb, slots):
        s = slots["square_avg"] if slots["square_avg"] is not None else self._new_slot(fb, "square_avg")
        ops.rmsprop(fb.P, fb.G, s, self.lr, self.alpha, self.eps)


class Adam(Optimizer):
    """Adam with bias correction (torch's): m, v moving averages of g and g^2;
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""

    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(model, lr)
        self.b1, self.b2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)

    def _update(self, name, p, g):
        m, v = self._slot("exp_avg", name, p), self._slot("exp_avg_sq", name, p)
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * g * g
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        p -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)

    _SLOTS = ("exp_avg", "exp_avg_sq")

    def _native_update(self, ops, fb, slots):
        m = slots["exp_avg"] if slots["exp_avg"] is not None else self._new_slot(fb, "exp_avg")
        v = slots["exp_avg_sq"] if slots["exp_avg_sq"] is not None else self._new_slot(fb, "exp_avg_sq")
        ops.adam(fb.P, fb.G, m, v, self.lr, self.b1, self.b2, self.eps, self.t)


# ---- clipping ----


def clip_grad_value(model_or_grads, clip: float) -> None:
    """Clamp every gradient element to [-clip, clip], in place."""
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip!r}")
    fb = _flat_of(model_or_grads)
    if fb is not None:
        _native().clip_value(fb.G, float(clip))
        return
    for g in _dicts(model_or_grads).values():
        np.clip(g, -clip, clip, out=g)


def _flat_of(model_or_grads):
    """The flat buffers behind a model's gradients when the native ops can use them, else None."""
    if isinstance(model_or_grads, dict) or _native() is None:
        return None
    return flat_buffers(model_or_grads)


def clip_grad_norm(model_or_grads, max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most max_norm; returns the norm before."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    fb = _flat_of(model_or_grads)
    if fb is not None:                    # one pass for the norm, one for the scaling, both native
        ops = _native()
        total = ops.l2_norm(fb.G)
        if total > max_norm:
            ops.scale(fb.G, max_norm / (total + 1e-6))
        return total
    grads = list(_dicts(model_or_grads).values())
    total = math.sqrt(sum(float(np.dot(g.ravel().astype(np.float64), g.ravel().astype(np.float64)))
                          for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


# ---- sampling ----


def sample_logits(logits, method: str = "greedy", temperature: float = 1.0, top_k: Optional[int] = None,
                  rng=None):
    """Token ids (N,) from logits (N, V) (or (V,) -> a scalar id).

    "greedy": argmax. "sample": from softmax(logits / temperature), restricted to the top_k largest when
    top_k is given. rng: an np.random.Generator or an int seed (the same seed gives the same ids).
    This is the NumPy reference sampler of the Python decoding loops (native=False); the native decoders
    (rnnfast._decode) draw from their own counter-based stream instead.
    """
    logits = np.asarray(logits)
    one = logits.ndim == 1
    z = logits[None] if one else logits
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"logits must have shape (N, V) or (V,) with V >= 1, got {logits.shape}")
    if method == "greedy":
        ids = z.argmax(axis=1)
    elif method == "sample":
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        z = z.astype(np.float64) / temperature
        if top_k is not None:
            if not isinstance(top_k, (int, np.integer)) or top_k < 1:
                raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
            if top_k < z.shape[1]:
                kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
                z = np.where(z >= kth, z, -np.inf)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        u = rng.random(z.shape[0])
        ids = np.minimum((np.cumsum(p, axis=1) < u[:, None]).sum(axis=1), z.shape[1] - 1)
        ids = np.where(p[np.arange(len(ids)), ids] > 0, ids, p.argmax(axis=1))
    else:
        raise ValueError(f"method must be 'greedy' or 'sample', got {method!r}")
    ids = ids.astype(np.int64)
    return ids[0] if one else ids


# ---- checkpoints ----


def _rng_state_json(rng):
    return json.dumps(rng.bit_generator.state)


def _nonfinite(arrays):
    """The first name in {name: array} whose array holds a NaN or inf, or None. One reduction per array
    (a NaN or inf anywhere makes the sum non-finite); an overflowing sum is confirmed element-wise."""
    for name, a in arrays.items():
        if a.dtype.kind not in "fc":
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            total = abs(complex(a.sum()))
        if not math.isfinite(total):
            host = _host(a)
            if not np.isfinite(host).all():
                return name
    return None


def save_checkpoint(path, model, optimizer=None, step: int = 0, rng=None, history: Optional[dict] = None,
                    metadata: Optional[dict] = None, extra: Optional[dict] = None) -> None:
    """Write model, optimizer state, step, RNG state, loss history and metadata to ONE .npz at `path`.

    Atomic: everything goes to a temporary file beside `path`, is flushed to disk, then os.replace()s the
    old file, so an interrupted save leaves the previous checkpoint intact (temporary files left by a
    killed process are removed by the next save to that path). Saves to one path from several threads are
    serialised. Parameters holding NaN or inf are refused (ValueError) and the existing file is kept. No
    object arrays: strings are stored as NumPy unicode arrays and the file loads with allow_pickle=False.
    The metadata lives in the .npz itself ("meta_json"; load_checkpoint(path) returns it); no sidecar file
    is written, so nothing can go stale beside it. extra: {name: value} of a training loop's own state
    (Trainer's extra_state hook): NumPy arrays are stored bit for bit as "extra/<name>", other values
    (JSON-serialisable) in the metadata; load_checkpoint returns them as info["extra"].
    """
    path = os.fspath(path)
    arrays = {f"model/{k}": _host(v) for k, v in model.params.items()}
    bad = _nonfinite(arrays)
    if bad is not None:
        raise ValueError(f"{bad[6:]} holds NaN or inf: refusing to write it to {path} (the file there, if any, "
                         f"is kept)")
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    if history is not None:
        arrays["history/step"] = np.asarray(history["step"], dtype=np.int64)
        arrays["history/loss"] = np.asarray(history["loss"], dtype=np.float64)
    extra_json = {}
    for k, v in (extra or {}).items():
        if isinstance(v, np.ndarray) or hasattr(v, "__cuda_array_interface__"):
            arrays[f"extra/{k}"] = _host(v)
        else:
            extra_json[k] = v
    meta = {"format_version": FORMAT_VERSION, "step": int(step), "model": type(model).__name__,
            "optimizer": None if optimizer is None else type(optimizer).__name__,
            "metadata": metadata or {}}
    if extra_json:
        meta["extra"] = extra_json
    arrays["step"] = np.array(int(step), dtype=np.int64)
    arrays["meta_json"] = np.array(json.dumps(meta))
    if rng is not None:
        arrays["rng_json"] = np.array(_rng_state_json(rng))
    _atomic_write(path, lambda f: np.savez(f, **arrays))
    _remove_old_sidecar(path)


def _remove_old_sidecar(path):
    """Earlier versions wrote a metadata copy to path + ".json"; once the .npz is replaced it is stale."""
    side = path + ".json"
    try:
        with open(side) as f:
            ours = "format_version" in json.load(f)
    except (OSError, ValueError):
        return
    if ours:
        try:
            os.remove(side)
        except OSError:
            pass


_path_locks: dict = {}
_path_locks_guard = threading.Lock()


def _path_lock(path):
    with _path_locks_guard:
        return _path_locks.setdefault(os.path.abspath(path), threading.Lock())


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # exists but is not ours (EPERM), or a platform without signals
        return True
    return True


def _remove_orphans(d, base):
    """Delete .<base>.tmp-<pid>-* files whose writing process no longer exists (killed mid-save)."""
    prefix = f".{base}.tmp-"
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.remove(os.path.join(d, name))
            except OSError:
                pass


def _atomic_write(path, write):
    d = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    with _path_lock(path):
        _remove_orphans(d, base)
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.tmp-{os.getpid()}-", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        try:                               # make the rename itself durable (POSIX; best effort elsewhere)
            dfd = os.open(d, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)


def _read_checkpoint(path):
    """{name: array} and the meta dict of the checkpoint at path; every error names the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None
    except Exception as e:   # not a zip, a corrupt member, a pickled object array, ...
        raise ValueError(f"{path} is not a readable rnnfast checkpoint ({type(e).__name__}: {e})") from e
    if "meta_json" not in files or "step" not in files:
        raise ValueError(f"{path} is not an rnnfast checkpoint (it has no meta_json/step entries)")
    try:
        meta = json.loads(str(files["meta_json"]))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise ValueError(f"{path}: its meta_json entry is not valid ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {meta.get('format_version')!r}")
    return files, meta


def _check_model_state(path, model, state):
    """Names and shapes of `state` against model.params, all at once, before anything is loaded."""
    own = model.params
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise KeyError(f"{path} does not match the model ({type(model).__name__}): missing {missing}, "
                       f"unexpected {unexpected}")
    for k, ref in own.items():
        if np.shape(state[k]) != tuple(ref.shape):
            raise ValueError(f"{path}: {k} must have shape {tuple(ref.shape)} for this model, "
                             f"got {np.shape(state[k])}")
        if state[k].dtype.kind not in "fiu":
            raise ValueError(f"{path}: {k} must be a float array, got dtype {state[k].dtype}")


def load_checkpoint(path, model=None, optimizer=None, rng=None) -> dict:
    """Read a checkpoint written by save_checkpoint; load into model / optimizer / rng (each optional).
    Returns {"step", "metadata", "history", "meta", "extra"} (extra: save_checkpoint's extra= values,
    arrays bit for bit; {} when none were saved).

    All or nothing: the whole file is read and checked against the model, the optimizer (its type and
    every state array) and the RNG before any of them is changed, so a failed load changes nothing. Every
    error names the file."""
    path = os.fspath(path)
    files, meta = _read_checkpoint(path)
    mstate = ostate = rstate = None
    if model is not None:
        mstate = {k[6:]: v for k, v in files.items() if k.startswith("model/")}
        _check_model_state(path, model, mstate)
    if optimizer is not None:
        st = {k[6:]: v for k, v in files.items() if k.startswith("optim/")}
        if not st:
            raise KeyError(f"{path} holds no optimizer state")
        saved, want = meta.get("optimizer"), type(optimizer).__name__
        if saved is not None and saved != want:
            raise ValueError(f"{path} holds the state of a {saved} optimizer; it cannot be loaded into a {want} "
                             f"(create a {saved} to resume, or load without optimizer=)")
        ostate = optimizer._stage_state_dict(st, where=f"{path}: optimizer state")
    if rng is not None:
        if "rng_json" not in files:
            raise KeyError(f"{path} holds no RNG state")
        try:
            rstate = json.loads(str(files["rng_json"]))
            copy.deepcopy(rng.bit_generator).state = rstate      # validate on a copy
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{path}: its RNG state does not fit {type(rng.bit_generator).__name__} ({e})") from None
    history = None
    if "history/step" in files:
        history = {"step": files["history/step"].tolist(), "loss": files["history/loss"].tolist()}
    if model is not None:
        model.load_state_dict(mstate)
    if optimizer is not None:
        optimizer.state, optimizer.t, optimizer.lr = ostate
    if rng is not None:
        rng.bit_generator.state = rstate
    extra = dict(meta.get("extra", {}))
    extra.update({k[6:]: v for k, v in files.items() if k.startswith("extra/")})
    return {"step": int(files["step"]), "metadata": meta.get("metadata", {}), "history": history, "meta": meta,
            "extra": extra}


# ---- loss history ----


def plot_history(history: dict, path=None, smooth: float = 0.0, title: Optional[str] = None, ax=None,
                 ylabel: str = "loss"):
    """Draw loss against step and return the matplotlib Figure (needs matplotlib; ImportError otherwise).

    history: {"step": [...], "loss": [...]} as Trainer.history, optionally with validation points
    ("val_step" and one more "val_<name>" list, as the char-LM and captioning histories have). smooth in
    [0, 1): also draw an exponential moving average with that decay. ax: draw into these axes (the Figure
    returned is theirs); else a new Figure. path: also write it as a PNG. The caller's matplotlib backend
    is never changed (no pyplot state is touched when ax is None).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plot_history needs matplotlib (pip install matplotlib)") from e
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must lie in [0, 1), got {smooth!r}")
    steps, loss = np.asarray(history["step"]), np.asarray(history["loss"], dtype=np.float64)
    if ax is None:
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
    else:
        fig = ax.figure
    ax.plot(steps, loss, lw=0.8, alpha=0.5 if smooth else 1.0, label="train")
    if smooth and len(loss):
        ema = np.empty_like(loss)
        acc = loss[0]
        for i, v in enumerate(loss):
            acc = smooth * acc + (1 - smooth) * v
            ema[i] = acc
        ax.plot(steps, ema, lw=1.5, label=f"train, EMA ({smooth})")
    val = [k for k in history if k.startswith("val_") and k != "val_step"]
    if history.get("val_step") and val:
        ax.plot(history["val_step"], history[val[0]], "o-", ms=3, label=f"validation ({val[0][4:]})")
    if smooth or (history.get("val_step") and val):
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if path is not None:
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=100)
    return fig


# ---- the trainer ----


class TrainingDiverged(FloatingPointError):
    """The loss or a gradient became NaN or infinite (raised before the parameters are updated), or an
    update made a parameter non-finite (raised before anything is checkpointed from it). The message names
    the last good checkpoint."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped between two steps (Trainer.fit's should_stop, e.g. the command line's first Ctrl-C);
    `step` and `checkpoint` (the path saved, or None) are set by the loop that saved it."""

    step = None
    checkpoint = None


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _nonfinite_in(model, which):
    """The first name in model.params / model.grads (which = "P" / "G") holding NaN or inf, or None. On a
    flat model one native pass over the whole buffer (_C.all_finite); the per-array NumPy check runs only
    to name the culprit, or when the model is not flat."""
    fb = _flat_of(model)
    ops = _native()
    if fb is not None and hasattr(ops, "all_finite") and ops.all_finite(fb.P if which == "P" else fb.G):
        return None
    return _nonfinite(model.params if which == "P" else model.grads)


class Trainer:
    """Steps a model with an optimizer and owns the training loop: zero_grad, model.loss(*batch) (which
    accumulates gradients), a finite-loss and finite-gradient guard, clipping, the update, the loss
    history, periodic atomic checkpoints, a step and/or time budget, hooks and a progress bar.

    The RNG in self.rng feeds get_batch in fit(); it is saved in checkpoints, so a resumed run draws the
    same batches and its loss trajectory equals the uninterrupted one. A loop with more state of its own
    (a stream position, a carried hidden state) gives extra_state = (get, set): get() returns {name:
    array or JSON value}, saved into every checkpoint (arrays bit for bit), and load() hands the saved
    dict back to set(extra) (set may be None). loss_scale multiplies the loss recorded in history (e.g.
    1 / ln 2 for bits). checkpoint_model: what checkpoints hold when it is more than the trained model (a
    pipeline with a frozen feature extractor); default the model. log: where write() prints when no
    progress bar is shown.
    """

    def __init__(self, model, optimizer, clip_norm=None, clip_value=None, checkpoint=None, checkpoint_every=None,
                 progress=True, seed=0, metadata=None, extra_state=None, loss_scale=1.0, desc=None,
                 checkpoint_model=None, log=print):
        self.model, self.optimizer, self.log = model, optimizer, log
        self.checkpoint_model = model if checkpoint_model is None else checkpoint_model
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        if checkpoint_every is not None and checkpoint is None:
            raise ValueError("checkpoint_every needs a checkpoint path")
        if extra_state is not None and not (len(extra_state) == 2 and callable(extra_state[0])
                                            and (extra_state[1] is None or callable(extra_state[1]))):
            raise TypeError("extra_state must be a pair (get, set) of callables (set may be None)")
        self.progress, self.metadata = progress, metadata or {}
        self.extra_state, self.loss_scale, self.desc = extra_state, float(loss_scale), desc
        self.rng = np.random.default_rng(seed)
        self.step_count = 0
        self.history = {"step": [], "loss": []}
        self.last_checkpoint = None      # (path, step) of the last checkpoint written or loaded
        self._bar = None
        self._whole = True               # False from an update until the loop's own state has followed it
        if hasattr(model, "params") and hasattr(model, "grads") and flat_buffers(model) is None:
            flatten_parameters(model)    # zero_grad, clipping and the update become one native call each

    # one update
    def _where(self):
        return (f"the last good checkpoint is {self.last_checkpoint[0]} (step {self.last_checkpoint[1]})"
                if self.last_checkpoint else "no checkpoint was written")

    def _finish(self, loss, in_fit=False):
        prev = getattr(_checked, "memo", None)
        _checked.memo = (self.model, flat_buffers(self.model))
        try:
            self._finish_checked(loss, in_fit)
        finally:
            _checked.memo = prev

    def _finish_checked(self, loss, in_fit):
        # the guard: a finite loss can still come with NaN/inf gradients (an inf input, NaN in masked padding)
        bad = None if math.isfinite(loss) else f"loss is {loss}"
        if bad is None:
            name = _nonfinite_in(self.model, "G")
            if name is not None:
                bad = f"the gradient of {name} holds NaN or inf (the loss, {loss:.6g}, is finite)"
        if bad is not None:
            self.model.zero_grad()
            raise TrainingDiverged(f"{bad} at step {self.step_count + 1}; parameters were not updated; "
                                   f"{self._where()}")
        if self.clip_value is not None:
            clip_grad_value(self.model, self.clip_value)
        if self.clip_norm is not None:
            clip_grad_norm(self.model, self.clip_norm)
        self._whole = False
        self.optimizer.step()
        self.step_count += 1
        self.history["step"].append(self.step_count)
        self.history["loss"].append(float(loss) * self.loss_scale)
        if not in_fit:
            self._whole = True
        name = _nonfinite_in(self.model, "P")
        if name is not None:           # finite gradients, but the update overflowed: say so now
            self._whole = True
            raise TrainingDiverged(f"parameter {name} holds NaN or inf after the update of step {self.step_count}; "
                                   f"no checkpoint is written from it; {self._where()}")
        if not in_fit and self.checkpoint_every and self.step_count % self.checkpoint_every == 0:
            self.save(self.checkpoint)

    def step(self, *batch, **kw) -> float:
        """One update on one batch: returns the loss (a float)."""
        return self._step(batch, kw, False)

    def _step(self, batch, kw, in_fit):
        self.optimizer.zero_grad()
        loss = float(self.model.loss(*batch, **kw))
        self._finish(loss, in_fit)
        return loss

    def write(self, text: str) -> None:
        """Print a line (from a hook) without breaking the progress bar."""
        if self._bar is not None:
            self._bar.write(text)
        else:
            self.log(text)

    def fit(self, get_batch, num_steps: Optional[int] = None, tokens_per_step: Optional[int] = None, *,
            max_seconds: Optional[float] = None, after_step=None, hooks=(), should_stop=None) -> dict:
        """Run until step_count == num_steps (so a resumed trainer runs only what is left) or max_seconds of
        this call have passed, whichever comes first (at least one must be given).

        get_batch(rng) returns a tuple of positional arguments for model.loss (or a dict of keyword
        arguments). after_step(trainer, loss): called right after each update, before anything can save,
        to advance the loop's own state (extra_state). hooks: (every, fn) pairs; fn(trainer) runs when
        step_count % every == 0 (evaluation, sampling; use trainer.write to print). should_stop(): checked
        after each step; True stops the run as a Ctrl-C would (raising TrainingInterrupted). Checkpoints
        go to self.checkpoint every checkpoint_every steps. A KeyboardInterrupt (Ctrl-C) saves a checkpoint
        of the last whole step to self.checkpoint (when set), records .step and .checkpoint on the
        exception and re-raises it.
        """
        if num_steps is None and max_seconds is None:
            raise ValueError("give num_steps or max_seconds (a step or a time budget)")
        if max_seconds is not None and not (isinstance(max_seconds, (int, float, np.number))
                                            and math.isfinite(max_seconds) and max_seconds > 0):
            raise ValueError(f"max_seconds must be a number > 0, got {max_seconds!r}")
        for every, fn in hooks:
            if not (isinstance(every, (int, np.integer)) and every >= 1 and callable(fn)):
                raise ValueError(f"hooks must be (every >= 1, callable) pairs, got ({every!r}, {fn!r})")
        tq = _tqdm() if self.progress else None
        by_steps = num_steps is not None
        t0, n0 = time.perf_counter(), self.step_count
        if tq is not None:
            total = num_steps if by_steps else float(max_seconds)
            self._bar = tq(total=total, initial=self.step_count if by_steps else 0, desc=self.desc,
                           unit="step" if by_steps else "s", dynamic_ncols=True, mininterval=0.25)
        last, pending = t0, None
        try:
            while True:
                now = time.perf_counter()
                if by_steps and self.step_count >= num_steps:
                    break
                if max_seconds is not None and now - t0 >= max_seconds:
                    break
                pending = self.rng.bit_generator.state     # restored if Ctrl-C comes before the update
                b = get_batch(self.rng)
                if isinstance(b, dict):
                    loss = self._step((), b, True)
                else:
                    loss = self._step(tuple(b), {}, True)
                pending = None
                if after_step is not None:
                    after_step(self, loss)
                self._whole = True
                if self.checkpoint_every and self.step_count % self.checkpoint_every == 0:
                    self.save(self.checkpoint)
                for every, fn in hooks:
                    if self.step_count % every == 0:
                        fn(self)
                if self._bar is not None:
                    now = time.perf_counter()
                    rate = (self.step_count - n0) / max(now - t0, 1e-9)
                    post = {"loss": f"{loss * self.loss_scale:.4g}", "steps/s": f"{rate:.3g}"}
                    if tokens_per_step:
                        post["tok/s"] = f"{rate * tokens_per_step:.3g}"
                    self._bar.set_postfix(post, refresh=False)
                    self._bar.update(1 if by_steps else min(now - last, max(0.0, self._bar.total - self._bar.n)))
                    last = now
                if should_stop is not None and should_stop():
                    raise TrainingInterrupted("training stopped between two steps")
        except KeyboardInterrupt as e:
            saved = None
            if pending is not None and self._whole:    # stopped before this step's update: undo its draw
                self.rng.bit_generator.state = pending
                self.model.zero_grad()
            if self.checkpoint is not None and self._whole:
                self.save(self.checkpoint)
                saved = os.fspath(self.checkpoint)
            self._whole = True
            try:
                e.step, e.checkpoint = self.step_count, saved
            except AttributeError:
                pass
            raise
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        return self.history

    def tbptt(self, x, y, k: int, h0=None, mask=None, **kw) -> tuple:
        """Truncated BPTT over one long batch x (T, N, ...), y (T, N): chunks of k steps, one update per
        chunk, the final state of a chunk starting the next as plain data (no gradient crosses the
        boundary). With k >= T it is one full-BPTT update. Needs model.loss(x, y, mask=..., h0=...,
        return_state=True) -> (loss, h_n). Returns (chunk losses, final state)."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k (the chunk length) must be an int >= 1, got {k!r}")
        T = len(x)
        if len(y) != T:
            raise ValueError(f"x and y must have the same number of steps T, got {len(x)} and {len(y)}")
        h, losses = h0, []
        for s in range(0, T, k):
            self.optimizer.zero_grad()
            m = None if mask is None else mask[s:s + k]
            loss, h = self.model.loss(x[s:s + k], y[s:s + k], mask=m, h0=h, return_state=True, **kw)
            self._finish(float(loss))
            h = np.array(h, copy=True)
            losses.append(float(loss))
        return losses, h

    def save(self, path=None) -> None:
        path = path or self.checkpoint
        if path is None:
            raise ValueError("no checkpoint path given")
        bad = _nonfinite_in(self.model, "P")
        if bad is not None:
            raise TrainingDiverged(f"parameter {bad} holds NaN or inf: not saved to {os.fspath(path)}; "
                                   f"{self._where()}")
        extra = self.extra_state[0]() if self.extra_state is not None else None
        save_checkpoint(path, self.checkpoint_model, self.optimizer, self.step_count, self.rng, self.history,
                        self.metadata, extra=extra)
        self.last_checkpoint = (os.fspath(path), self.step_count)

    def load(self, path=None) -> dict:
        path = path or self.checkpoint
        info = load_checkpoint(path, self.checkpoint_model, self.optimizer, self.rng)
        self.step_count = info["step"]
        self.history = info["history"] or {"step": [], "loss": []}
        self.metadata = info["metadata"]
        if self.extra_state is not None and self.extra_state[1] is not None:
            self.extra_state[1](info["extra"])
        self.last_checkpoint = (os.fspath(path), self.step_count)
        return info
