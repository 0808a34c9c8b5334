"""What `rnnfast info` prints: version, backends with reasons, kernel ISA, BLAS, CPU features and thread counts.
Not an API for anything else; the values are informational.
"""
from __future__ import annotations

import os
import platform


def version() -> str:
    """The installed distribution's version ("0.0.0+local" when running from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version as _version
    try:
        return _version("rnnfast")
    except PackageNotFoundError:
        return "0.0.0+local"


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq",
                                        "avx512vl", "avx512_vnni", "avx512_bf16") if f in flags]
    except OSError:
        pass
    return []


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect() -> dict:
    import numpy as np

    from .backends import _load, backends

    d = {"version": version(), "python": platform.python_version(), "numpy": np.__version__,
         "backends": backends(), "cpu": _cpu_model(), "cpu_features": _cpu_flags(), "cores": os.cpu_count()}
    cpu, _ = _load("cpu")
    if cpu is not None:
        from . import _C
        try:
            d["kernel_isa"] = _C.isa()
        except ValueError as e:          # a bad RNNFAST_ISA: say so rather than fail the whole report
            d["kernel_isa"] = f"error: {e}"
        d["kernel_isas"] = _C.supported_isas()
        d["blas"] = _C.blas_config()
        d["blas_threads"] = _C.blas_num_threads()
        d["small_batch_limit"] = _C.small_batch_limit()
        d["recurrence"] = _C.recurrence()
    d["RNNFAST_BACKEND"] = os.environ.get("RNNFAST_BACKEND")
    d["RNNFAST_NUM_THREADS"] = os.environ.get("RNNFAST_NUM_THREADS")
    d["RNNFAST_ISA"] = os.environ.get("RNNFAST_ISA")
    return d


def format_info(d: dict) -> str:
    lines = [f"rnnfast {d['version']} (Python {d['python']}, NumPy {d['numpy']})", "backends:"]
    for name, b in d["backends"].items():
        lines.append(f"  {name:6s} {'available' if b['available'] else 'missing: ' + str(b['reason'])}")
    lines.append(f"cpu: {d['cpu']} ({d['cores']} logical cores; features {' '.join(d['cpu_features'])})")
    if "kernel_isa" in d:
        lines.append(f"kernels: {d['kernel_isa']}{'' if d['kernel_isa'].startswith('error') else ' build'} "
                     f"(this CPU runs: {', '.join(d['kernel_isas'])}; override with RNNFAST_ISA=generic|avx2|avx512)")
        lines.append(f"recurrence {d['recurrence']} (matrix-vector kernel for "
                     f"N <= {d['small_batch_limit']}, one BLAS GEMM per step above)")
        lines.append(f"blas: {d['blas']} ({d['blas_threads']} threads)")
    for k in ("RNNFAST_BACKEND", "RNNFAST_NUM_THREADS", "RNNFAST_ISA"):
        lines.append(f"{k}={d[k] if d[k] is not None else '(unset)'}")
    return "\n".join(lines)
