"""The backend registry: "numpy" (the reference), "cpu" (the C++ extension _C), "cuda" (_C_cuda).

What it is: the one place that knows which backends can load, why any cannot, and which one a call gets
(explicit `backend=` > the RNNFAST_BACKEND environment variable > the best available). It is not where
arguments are validated (that is rnnfast._checks and the bindings).

The backend interface, the same for every backend module (rnnfast.reference, rnnfast._cpu_backend,
rnnfast._cuda_backend): `<cell>_forward` / `<cell>_backward` for each cell it has kernels for (argument
lists in rnnfast._cells), VALIDATES_ARGUMENTS (whether it checks its own arguments; if not,
rnnfast.functional checks them first) and HOST_ARRAYS (whether it takes and returns NumPy arrays, as the
lengths / bidirectional path needs).
"""
from __future__ import annotations

import ctypes
import importlib
import os
import threading

import numpy as np

_ORDER = ("cuda", "cpu", "numpy")   # best first; "cuda" is chosen automatically only for GPU arrays
_cache: dict = {}


# How long rnnfast's OpenBLAS worker threads spin after a call before they sleep: 2^18 cycles (~0.1 ms)
# instead of OpenBLAS's 2^28 (~0.1 s). NumPy's own OpenBLAS has a pool of its own; two pools that both
# spin for 0.1 s after every call leave no core free for the other, and a training step that alternates
# NumPy and rnnfast calls ran 4x slower than NumPy alone (measured: 13.7 ms vs 3.4 ms per char-LM step at
# N=32). Set OPENBLAS_THREAD_TIMEOUT yourself to override; NumPy's pool, loaded before, is not affected.
_THREAD_TIMEOUT = "18"


def _preload_openblas():
    """Load the scipy-openblas32 wheel's library globally so _C resolves it wherever it was built (importing
    the wheel's module loads the library, so the spin setting goes into the environment first)."""
    user = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = user or _THREAD_TIMEOUT   # read once, when the library loads
    try:
        import scipy_openblas32 as sob

        path = os.path.join(sob.get_lib_dir(), sob.get_library(fullname=True))
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    finally:
        if user is None:
            del os.environ["OPENBLAS_THREAD_TIMEOUT"]


_MAX_THREADS = 1024
_threads_lock = threading.Lock()


def _check_num_threads(n, what):
    """n as an int in [1, 1024], else TypeError/ValueError naming `what`."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(n).__name__}")
    if not 1 <= n <= _MAX_THREADS:
        raise ValueError(f"{what} must be a positive integer <= {_MAX_THREADS}, got {n}")
    return int(n)


def _env_int(name, lo, hi, what):
    """Environment variable `name` as an int in [lo, hi], or None when unset/empty; a typo or a value out of
    range raises ValueError naming the variable and `what` it must be (it never silently disables the cpu
    backend)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        n = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None
    if not lo <= n <= hi:
        raise ValueError(f"{name} must be {what}, at most {hi}, got {raw!r}")
    return n


def _env_num_threads():
    """RNNFAST_NUM_THREADS as an int, or None when unset/empty."""
    return _env_int("RNNFAST_NUM_THREADS", 1, _MAX_THREADS, "a positive integer")


def _env_pool_mb():
    """RNNFAST_POOL_MB (the cache of large blocks behind the arrays rnnfast allocates; csrc/cpu/pool.h) as an
    int, or None when unset/empty."""
    return _env_int("RNNFAST_POOL_MB", 0, 1 << 20, "an integer number of MiB >= 0")


def set_num_threads(n: int) -> None:
    """Threads used by rnnfast's CPU kernels (their BLAS calls, and the helper threads that take the work
    beside a serial loop); the default is one per core.

    Safe to call from any thread: it waits until kernel calls running in other threads have finished, so
    each call runs with one thread count. Results can differ in the last bits between thread counts (the
    BLAS splits its reductions by thread); for one thread count they are reproducible.
    """
    n = _check_num_threads(n, "n")
    mod = get("cpu")
    with _threads_lock:
        mod._C.set_blas_num_threads(n)


def _load(name):
    if name in _cache:
        return _cache[name]
    mod, reason = None, None
    threads = _env_num_threads() if name == "cpu" else None   # a typo raises, never disables the backend
    pool_mb = _env_pool_mb() if name == "cpu" else None
    try:
        if name == "numpy":
            from . import reference as mod
        elif name == "cpu":
            # rnnfast's OpenMP threads sleep between parallel regions instead of spinning, so they never
            # compete with NumPy's or torch's threads for cores (the user's setting wins).
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                _preload_openblas()
            except Exception as e:  # the rpath may still find it
                reason = f"scipy-openblas32 could not be loaded ({e})"
            mod = importlib.import_module("rnnfast._cpu_backend")
            reason = None
            if threads is not None:
                mod._C.set_blas_num_threads(threads)
            if pool_mb is not None:
                mod._C.set_pool_limit(pool_mb << 20)
        elif name == "cuda":
            from . import _cuda_backend as mod   # noqa: F811  (raises ImportError with the reason)
            ok, why = mod.is_available()
            if not ok:
                mod, reason = None, why
        else:
            raise KeyError(name)
    except KeyError:
        raise
    except Exception as e:  # ImportError, OSError from a missing runtime, ...
        mod, reason = None, reason or f"{type(e).__name__}: {e}"
    _cache[name] = (mod, reason)
    return mod, reason


def backends() -> dict:
    """{name: {"available": bool, "reason": str or None}} for "numpy", "cpu" and "cuda"."""
    out = {}
    for name in ("numpy", "cpu", "cuda"):
        mod, reason = _load(name)
        out[name] = {"available": mod is not None, "reason": None if mod is not None else reason}
    return out


def available() -> list:
    return [n for n in ("numpy", "cpu", "cuda") if _load(n)[0] is not None]


def resolve(backend=None) -> str:
    """The backend name a call gets: explicit > RNNFAST_BACKEND > best available CPU-side backend."""
    name = backend if backend is not None else os.environ.get("RNNFAST_BACKEND") or None
    if name is None:
        return "cpu" if _load("cpu")[0] is not None else "numpy"
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string ('numpy', 'cpu' or 'cuda'), got {type(name).__name__}")
    name = name.lower()
    if name not in ("numpy", "cpu", "cuda"):
        src = "backend" if backend is not None else "RNNFAST_BACKEND"
        raise ValueError(f"{src} must be one of 'numpy', 'cpu', 'cuda', got {name!r}")
    mod, reason = _load(name)
    if mod is None:
        raise RuntimeError(f"backend {name!r} is not available: {reason}")
    return name


def get(name: str):
    """The module implementing backend `name` (resolved already)."""
    mod, reason = _load(name)
    if mod is None:
        raise RuntimeError(f"backend {name!r} is not available: {reason}")
    return mod
