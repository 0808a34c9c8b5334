"""The "cuda" backend: GPU arrays in and out of the CUDA extension rnnfast._C_cuda, through CuPy.

What it is: array handling (CuPy arrays, torch CUDA tensors and anything with __cuda_array_interface__ or
DLPack are used in place; NumPy inputs are copied to the GPU and the results back), shape/dtype checks
(rnnfast._checks, run on the converted arrays), output allocation, and the run-time
loading of cuBLAS. What it is not: math (csrc/cuda/rnn_cuda.cu). Importing it never fails for want of
CuPy, the CUDA runtime or a GPU: is_available() then says why.

Caches and other backends. The cache follows the kind of x: a forward on NumPy input keeps a NumPy cache
(hs copied back to the host), so backward on "numpy" or "cpu" works on it directly; a forward on GPU
arrays keeps CuPy arrays, which the NumPy/CPU backends cannot read: move it with cache_to_host(cache)
first (and the weights and grads you pass to that backward must be NumPy too). Backward on "cuda" takes
either kind of cache.

Environment: RNNFAST_CUDA_RECURRENCE = auto | persistent | stepwise chooses the recurrence kernel (auto:
a cost model per size, see plan()); RNNFAST_CUDA_GEMM = auto | cublas | internal chooses the GEMMs
(auto: cuBLAS when it loads); RNNFAST_CUDA_CLUSTER = 1 | 0 allows or forbids thread-block clusters in the
persistent kernel (Hopper and newer; default 1); RNNFAST_CUBLAS = path of a libcublas.so to load instead of
searching.
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np

from . import _cells, _checks
from ._cache import RNNCache

VALIDATES_ARGUMENTS = True   # checked here, on the converted arrays (rnnfast._checks)
HOST_ARRAYS = False          # GPU arrays: not for the NumPy-indexing lengths / bidirectional path
_REC_MODES = {"auto": 0, "persistent": 1, "stepwise": 2}
_GEMM_MODES = {"auto": 0, "cublas": 1, "internal": 2}
_state: dict = {}


# ---- availability ------------------------------------------------------------------------------------

def _cublas_candidates():
    """Paths of libcublas to try, best first: RNNFAST_CUBLAS, the nvidia-cublas wheels, the CUDA toolkit."""
    env = os.environ.get("RNNFAST_CUBLAS")
    if env:
        return [env]
    out = []
    for base in sys.path:
        for pat in ("nvidia/cu*/lib/libcublas.so*", "nvidia/cublas/lib/libcublas.so*"):
            out += sorted(glob.glob(os.path.join(base, pat)), reverse=True)
    for d in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if d:
            out += sorted(glob.glob(os.path.join(d, "lib64", "libcublas.so*")), reverse=True)
    out += ["libcublas.so.13", "libcublas.so.12", "libcublas.so"]
    return [p for p in dict.fromkeys(out) if "Lt" not in os.path.basename(p)]


def _probe():
    try:
        from . import _C_cuda
    except ImportError as e:
        return None, None, f"the CUDA extension rnnfast._C_cuda is not built or does not load ({e})"
    why = _C_cuda.runtime_status()
    if why:
        return None, None, why
    try:
        import cupy
    except Exception as e:  # ImportError, or CuPy failing to find its CUDA libraries
        return None, None, f"CuPy is needed for the cuda backend (pip install 'rnnfast[cuda]'): {type(e).__name__}: {e}"
    reasons = []
    for path in _cublas_candidates():
        err = _C_cuda.load_cublas(path)
        if not err:
            break
        reasons.append(f"{path}: {err}")
    _state["cublas_errors"] = reasons
    return _C_cuda, cupy, None


def _load():
    if "C" not in _state:
        C, cp, reason = _probe()
        _state.update(C=C, cp=cp, reason=reason)
    return _state["C"], _state["cp"]


def is_available():
    """(True, None) when a GPU, the CUDA runtime, the extension and CuPy are all there, else (False, reason)."""
    C, _ = _load()
    return (C is not None), _state["reason"]


def _need():
    C, cp = _load()
    if C is None:
        raise RuntimeError(f"backend 'cuda' is not available: {_state['reason']}")
    return C, cp


def info() -> dict:
    """The device, the cuBLAS library in use (or why none) and the modes from the environment."""
    C, cp = _need()
    dev = cp.cuda.Device().id
    d = dict(C.device_info(dev))
    d["device"] = dev
    d["cublas"] = C.cublas_path() or None
    if not d["cublas"]:
        d["cublas_errors"] = list(_state.get("cublas_errors", []))
    d["recurrence"], d["gemm"] = _modes()
    d["cluster"] = _cluster_allowed()
    return d


def plan(N, H, dtype=np.float32, backward=False, recurrence=None, cluster=None):
    """How the recurrence of one layer with batch N and hidden size H runs: a dict with "path"
    ("persistent" or "stepwise"), "why", the tiling ("cluster" > 1: blocks per thread-block cluster) and
    the modelled microseconds per step."""
    C, cp = _need()
    mode = _REC_MODES[_mode("RNNFAST_CUDA_RECURRENCE", _REC_MODES, recurrence)]
    allow = _cluster_allowed() if cluster is None else bool(cluster)
    return C.plan(int(N), int(H), np.dtype(dtype).itemsize, bool(backward), cp.cuda.Device().id, mode, allow)


def _cluster_allowed():
    v = os.environ.get("RNNFAST_CUDA_CLUSTER", "1").strip()
    if v not in ("0", "1"):
        raise ValueError(f"RNNFAST_CUDA_CLUSTER must be 0 or 1, got {v!r}")
    return v == "1"


def _mode(var, table, given=None):
    v = (given if given is not None else os.environ.get(var, "auto")).lower()
    if v not in table:
        raise ValueError(f"{var} must be one of {', '.join(table)}, got {v!r}")
    return v


def _modes():
    return (_mode("RNNFAST_CUDA_RECURRENCE", _REC_MODES), _mode("RNNFAST_CUDA_GEMM", _GEMM_MODES))


# ---- arrays ------------------------------------------------------------------------------------------

def _is_gpu(a):
    _, cp = _load()
    if cp is not None and isinstance(a, cp.ndarray):
        return True
    if isinstance(a, np.ndarray):
        return False
    if hasattr(a, "__cuda_array_interface__"):
        return True
    dev = getattr(a, "__dlpack_device__", None)
    if dev is not None:
        try:
            return dev()[0] in (2, 13)  # kDLCUDA, kDLCUDAManaged
        except Exception:
            return False
    return False


def as_array(a):
    """A CuPy array for GPU arrays (no copy: CuPy, torch CUDA tensors, __cuda_array_interface__, DLPack),
    the argument unchanged for NumPy arrays and None, else np.asarray(a)."""
    if a is None or isinstance(a, np.ndarray):
        return a
    _, cp = _need()
    if isinstance(a, cp.ndarray):
        return a
    if hasattr(a, "detach") and hasattr(a, "is_cuda"):   # torch: the interface refuses tensors needing grad
        if not a.is_cuda:
            return a.detach().numpy()
        a = a.detach()
    if hasattr(a, "__cuda_array_interface__"):
        return cp.asarray(a)
    if _is_gpu(a):
        return cp.from_dlpack(a)
    return np.asarray(a)


def to_device(a):
    """A CuPy array on the current device (copies NumPy input to the GPU; GPU arrays as in as_array)."""
    a = as_array(a)
    if a is None:
        return None
    _, cp = _need()
    return cp.asarray(a)


def to_host(a):
    """A NumPy array (copies CuPy arrays back; NumPy unchanged)."""
    if a is None or isinstance(a, np.ndarray):
        return a
    a = as_array(a)
    return a.get() if hasattr(a, "get") else np.asarray(a)


def cache_to_host(cache):
    """The cache with every array on the host, for backward on the "numpy" or "cpu" backend."""
    w = [tuple(to_host(v) for v in layer) for layer in cache.weights]
    return RNNCache(to_host(cache.x), to_host(cache.h0), to_host(cache.hs), to_host(cache.c), w, cache.nonlinearity,
                    cache.backend)


def cache_to_device(cache):
    """The cache with every array on the GPU (CuPy)."""
    w = [tuple(to_device(v) for v in layer) for layer in cache.weights]
    return RNNCache(to_device(cache.x), to_device(cache.h0), to_device(cache.hs), to_device(cache.c), w,
                    cache.nonlinearity, cache.backend)


def _dev(a, name, device):
    """Device array for the kernel: contiguous, on `device`; NumPy input is uploaded."""
    if a is None:
        return None
    _, cp = _need()
    a = as_array(a)
    if isinstance(a, cp.ndarray):
        if a.device.id != device:
            raise ValueError(f"{name} is on GPU {a.device.id}, but x is on GPU {device}; "
                             f"put all arrays on one device")
        return a if a.flags.c_contiguous else cp.ascontiguousarray(a)
    with cp.cuda.Device(device):
        return cp.asarray(np.ascontiguousarray(a))


def _ptr(a):
    return 0 if a is None else int(a.data.ptr)


def _layers_dev(weights, device):
    out = []
    for k, w in enumerate(weights):
        if not isinstance(w, (list, tuple)) or len(w) != 4:
            out.append(w)  # validate_forward names the problem
            continue
        names = (f"weight_ih_l{k}", f"weight_hh_l{k}", f"bias_ih_l{k}", f"bias_hh_l{k}")
        out.append(tuple(_dev(v, n, device) for v, n in zip(w, names)))
    return out


# ---- forward and backward ----------------------------------------------------------------------------

def rnn_forward(x, h0, weights, c, nonlinearity, need_cache):
    """See rnnfast.reference.rnn_forward. GPU input -> CuPy results; NumPy input -> NumPy results."""
    C, cp = _need()
    host = not _is_gpu(x)
    xa = as_array(x)
    device = xa.device.id if isinstance(xa, cp.ndarray) else cp.cuda.Device().id
    with cp.cuda.Device(device):
        xd = _dev(xa, "x", device) if hasattr(xa, "dtype") else xa
        h0d, cd = _dev(h0, "h0", device), _dev(c, "c", device)
        wd = _layers_dev(weights, device) if isinstance(weights, (list, tuple)) else weights
        T, N, D, H, L = _checks.validate_forward(_cells.RNN, xd, (h0d,), wd, 1, cd, nonlinearity)
        dt = xd.dtype
        rec, gemm = _modes()
        out = cp.empty((T, N, H), dtype=dt)
        h_n = cp.empty((L, N, H), dtype=dt)
        hs = cp.empty((L, T, N, H), dtype=dt) if need_cache else None
        scratch = cp.empty((T, N, H), dtype=dt) if (not need_cache and L > 1) else None
        if T == 0 or N == 0:
            h_n[...] = h0d if h0d is not None else 0
        else:
            bar = cp.empty(4, dtype=cp.uint32)
            layers = [[_ptr(v) for v in w] for w in wd]
            C.forward(dt.name, T, N, D, H, L, 0 if nonlinearity == "tanh" else 1, layers, _ptr(xd), _ptr(h0d),
                      _ptr(cd), _ptr(hs), _ptr(out), _ptr(h_n), _ptr(scratch), _ptr(bar), device,
                      cp.cuda.get_current_stream().ptr, _REC_MODES[rec], _GEMM_MODES[gemm],
                      _cluster_allowed())
        cache = None
        if need_cache:
            # the cache owns copies of x, h0 and c: the caller may change its arrays before backward
            h0c = h0d.copy() if h0d is not None else cp.zeros((L, N, H), dtype=dt)
            if host:
                cache = RNNCache(np.array(xa, order="C", copy=True), h0c.get(), hs.get(),
                                 None if cd is None else cd.get(), list(weights), nonlinearity, "cuda")
            else:
                cache = RNNCache(xd.copy(), h0c, hs, None if cd is None else cd.copy(), wd, nonlinearity, "cuda")
        if host:
            return out.get(), h_n.get(), cache
        return out, h_n, cache


def rnn_backward(dout, dh_n, cache, grads):
    """See rnnfast.reference.rnn_backward. Parameter gradients accumulate (+=) in place, on the GPU or on
    the host; results are CuPy arrays, or NumPy when the cache is a host cache."""
    C, cp = _need()
    if not isinstance(cache, RNNCache):
        raise TypeError(f"cache must be the RNNCache returned by rnn_forward(..., need_cache=True), "
                        f"got {type(cache).__name__}")
    host = not _is_gpu(cache.hs)
    hs0 = as_array(cache.hs)
    device = hs0.device.id if isinstance(hs0, cp.ndarray) else cp.cuda.Device().id
    with cp.cuda.Device(device):
        dcache = RNNCache(_dev(cache.x, "cache.x", device), _dev(cache.h0, "cache.h0", device),
                          _dev(hs0, "cache.hs", device), _dev(cache.c, "cache.c", device),
                          _layers_dev(cache.weights, device), cache.nonlinearity, cache.backend)
        doutd, dh_nd = _dev(dout, "dout", device), _dev(dh_n, "dh_n", device)
        # gradients: GPU arrays are accumulated in place; host or non-contiguous ones through a copy
        gdev, writeback = [], []
        if not isinstance(grads, (list, tuple)):
            raise ValueError("grads must be a list of L tuples (dW_ih, dW_hh, db_ih, db_hh)")
        for k, g in enumerate(grads):
            if not isinstance(g, (list, tuple)) or len(g) != 4:
                raise ValueError(f"grads[{k}] must be a tuple (dW_ih, dW_hh, db_ih, db_hh)")
            row = []
            for name, ga in zip(("dW_ih", "dW_hh", "db_ih", "db_hh"), g):
                if ga is None:
                    row.append(None)
                    continue
                ga = as_array(ga)
                if isinstance(ga, np.ndarray) and not ga.flags.writeable:
                    raise ValueError(f"{name}_l{k} must be writeable (gradients accumulate into it)")
                gd = _dev(ga, f"{name}_l{k}", device)
                if gd is not ga:   # a host array or a non-contiguous view: accumulate in a copy, write back
                    writeback.append((ga, gd))
                row.append(gd)
            gdev.append(tuple(row))
        _checks.validate_backward(_cells.RNN, doutd, (dh_nd,), dcache, gdev, "rnn_forward")
        L, T, N, H = dcache.hs.shape
        D = dcache.x.shape[2]
        dt = dcache.hs.dtype
        dx = cp.empty((T, N, D), dtype=dt)
        dh0 = cp.empty((L, N, H), dtype=dt)
        dc = cp.zeros((N, H), dtype=dt) if dcache.c is not None else None
        if T == 0 or N == 0:
            dh0[...] = dh_nd if dh_nd is not None else 0
        else:
            rec, gemm = _modes()
            dz = cp.empty((T, N, H), dtype=dt)
            dy = cp.empty((T, N, H), dtype=dt)
            bar = cp.empty(4, dtype=cp.uint32)
            layers = [[_ptr(v) for v in w] for w in dcache.weights]
            glist = [[_ptr(v) for v in g] for g in gdev]
            C.backward(dt.name, T, N, D, H, L, 0 if cache.nonlinearity == "tanh" else 1, layers, glist,
                       _ptr(dcache.x), _ptr(dcache.h0), _ptr(dcache.hs), _ptr(doutd), _ptr(dh_nd), _ptr(dx),
                       _ptr(dh0), _ptr(dc), _ptr(dz), _ptr(dy), _ptr(bar), device,
                       cp.cuda.get_current_stream().ptr, _REC_MODES[rec], _GEMM_MODES[gemm],
                       _cluster_allowed())
        for target, gd in writeback:
            if isinstance(target, np.ndarray):
                np.copyto(target, gd.get())
            else:
                target[...] = gd
        if host:
            return dx.get(), dh0.get(), None if dc is None else dc.get()
        return dx, dh0, dc
