"""The whole char-LM training step through the public API (ManyToMany on token ids -> Trainer.step, Adam,
clip_norm=5, mean cross-entropy), V=96 H=128 T=50 float32, against a per-step NumPy implementation
(min-char-rnn style) and the same model in torch on the CPU, all in one process with NumPy and torch
loaded, interleaved, medians over rounds; plus N=32 LSTM and GRU against torch and the step's achieved
GFLOP/s as a fraction of the SGEMM rate measured in the same run. Prints which OpenBLAS kernels each
library runs (threadpoolctl), checks the floors of issue 13, writes bench_train.json and bench_train.md.
Not a correctness test (tests/test_char_lm.py and tests/test_train_ops.py check the peers agree).

    python benchmarks/bench_train.py --out bench_results            # about 2-3 minutes
    python benchmarks/bench_train.py --quick --out bench_results    # under a minute
"""
from __future__ import annotations

import os
import sys

# The environment may pin OpenBLAS to AVX2 kernels (OPENBLAS_CORETYPE) and a small L2 size; both are read
# when a BLAS library loads, so they are removed and the process re-executed before NumPy is imported:
# every library (rnnfast's, NumPy's and torch's BLAS) then picks its own best kernels.
_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(k in os.environ for k in _PINS) and "numpy" not in sys.modules:
    for k in _PINS:
        os.environ.pop(k, None)
    os.execv(sys.executable, [sys.executable] + sys.argv)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

V, H, T = 96, 128, 50
# issue 13's floors: rnnfast's speed-up over each peer (and the fraction of SGEMM) must be at least these
FLOORS = {("rnn", 1): {"numpy per-step": 25.0, "pytorch": 15.0},
          ("rnn", 32): {"numpy per-step": 3.0, "pytorch": 4.0, "sgemm_fraction": 0.35},
          ("lstm", 32): {"pytorch": 2.0}, ("gru", 32): {"pytorch": 2.0}}


def step_flops(cell, N, V=V, H=H, T=T):
    """FLOPs of one training step's matrix products (issue 13's count: about 275 MFLOP for the vanilla cell at
    N=32): the recurrence 2*T*N*G*H*H forward, twice that backward (into h_{t-1} and W_hh); the head
    2*T*N*H*V forward, twice that backward (dW and dh). The one-hot input is a row gather (no GEMM) on the
    "cpu" backend, so it counts nothing; the peers' one-hot GEMMs are not counted either."""
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    return 3 * 2 * T * N * G * H * H + 3 * 2 * T * N * H * V


def sgemm_rate(n=1024, reps=5):
    """GFLOP/s of an n x n x n float32 GEMM on rnnfast's BLAS (all its threads), best of reps."""
    from rnnfast.nn import native_ops
    ops = native_ops()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        ops.gemm(a, b, c, False, False, 0.0)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def blas_kernels():
    """[{library, internal_api, version, architecture (the kernel it runs), num_threads, filepath}]."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"library": "threadpoolctl not installed"}]
    out = []
    for i in threadpool_info():
        path = i.get("filepath", "")
        lib = "rnnfast" if "scipy_openblas32" in path else "numpy" if "numpy" in path else \
            "torch" if "torch" in path else os.path.basename(path)
        out.append({"library": lib, "internal_api": i.get("internal_api"), "version": i.get("version"),
                    "architecture": i.get("architecture"), "num_threads": i.get("num_threads"), "filepath": path})
    return out


def run(quick=False, seconds=None, include_torch=True, seed=0):
    from rnnfast.models.speed import make_steps, measure, torch_available
    include_torch = include_torch and torch_available()
    seconds = seconds if seconds is not None else (1.0 if quick else 8.0)
    rounds = 3 if quick else 7
    configs = [("rnn", 1), ("rnn", 32), ("lstm", 32), ("gru", 32)]
    rate_before = sgemm_rate(512 if quick else 1024)
    rows = []
    for cell, N in configs:
        steps = make_steps(V, H, T, N, seed=seed, include_torch=include_torch, cell=cell)
        res = measure(steps, T, N, seconds=seconds, rounds=rounds, warmup=1 if quick else 3)
        ours = res["rnnfast"]
        for name, r in res.items():
            rows.append({"cell": cell, "N": N, "impl": name, "step_ms": r["step_ms"],
                         "chars_per_sec": r["chars_per_sec"], "steps": r["steps"],
                         "rnnfast_speedup": None if name == "rnnfast" else r["step_ms"] / ours["step_ms"]})
    rate = max(rate_before, sgemm_rate(512 if quick else 1024))
    for r in rows:
        if r["impl"] == "rnnfast":
            r["gflops"] = step_flops(r["cell"], r["N"]) / (r["step_ms"] * 1e-3) / 1e9
            r["sgemm_fraction"] = r["gflops"] / rate
    checks = []
    for (cell, N), floors in FLOORS.items():
        for peer, floor in floors.items():
            if peer == "sgemm_fraction":
                r = next((r for r in rows if r["cell"] == cell and r["N"] == N and r["impl"] == "rnnfast"), None)
                val = None if r is None else r["sgemm_fraction"]
            else:
                r = next((r for r in rows if r["cell"] == cell and r["N"] == N and r["impl"] == peer), None)
                val = None if r is None else r["rnnfast_speedup"]
            checks.append({"cell": cell, "N": N, "versus": peer, "floor": floor, "value": val,
                           "met": None if val is None else val >= floor})
    return {"rows": rows, "checks": checks, "sgemm_gflops": rate, "seconds_per_config": seconds, "rounds": rounds}


def markdown(res, kernels):
    lines = [(f"char-LM training step (ManyToMany -> Trainer.step, Adam, clip_norm=5), V={V} H={H} T={T} float32; "
              f"medians of {res['rounds']} interleaved rounds; same-run SGEMM {res['sgemm_gflops']:.0f} GFLOP/s"),
             "", "| cell | N | implementation | ms/step | chars/s | rnnfast speed-up | GFLOP/s (% of SGEMM) |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        sp = "" if r["rnnfast_speedup"] is None else f"{r['rnnfast_speedup']:.1f}x"
        gf = f"{r['gflops']:.1f} ({100 * r['sgemm_fraction']:.0f}%)" if "gflops" in r else ""
        lines.append(f"| {r['cell']} | {r['N']} | {r['impl']} | {r['step_ms']:.3f} | {r['chars_per_sec']:,.0f} | "
                     f"{sp} | {gf} |")
    lines += ["", "| floor | measured | verdict |", "|---|---:|---|"]
    for c in res["checks"]:
        what = "of SGEMM" if c["versus"] == "sgemm_fraction" else f"vs {c['versus']}"
        val = "n/a" if c["value"] is None else (f"{100 * c['value']:.0f}%" if c["versus"] == "sgemm_fraction"
                                                else f"{c['value']:.1f}x")
        fl = f">= {100 * c['floor']:.0f}%" if c["versus"] == "sgemm_fraction" else f">= {c['floor']:g}x"
        verdict = "not measured" if c["met"] is None else ("met" if c["met"] else "NOT met")
        lines.append(f"| {c['cell']} N={c['N']} {what} {fl} | {val} | {verdict} |")
    lines += ["", "OpenBLAS kernels: " + "; ".join(
        f"{k['library']}: {k.get('internal_api')} {k.get('version') or ''} {k.get('architecture') or ''} "
        f"({k.get('num_threads')} threads)" for k in kernels)]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short timings (the whole run under a minute)")
    ap.add_argument("--seconds", type=float, default=None, help="timing budget per configuration (all peers)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out", default="bench_results", help="folder for bench_train.json / bench_train.md")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every library (rnnfast, NumPy's BLAS, torch); default: each its own")
    a = ap.parse_args(argv)
    t0 = time.time()
    if a.threads:        # before rnnfast and torch load their pools (NumPy's is limited through threadpoolctl)
        for k in ("RNNFAST_NUM_THREADS", "OMP_NUM_THREADS"):
            os.environ[k] = str(a.threads)
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(a.threads)
        except ImportError:
            pass
    import rnnfast
    if not a.no_torch:
        try:
            import torch  # loaded as in a user's process, even when only rnnfast is timed
            if a.threads:
                torch.set_num_threads(a.threads)
        except ImportError:
            pass
    res = run(quick=a.quick, seconds=a.seconds, include_torch=not a.no_torch)
    kernels = blas_kernels()
    md = markdown(res, kernels)
    print(md)
    meta = {"python": sys.version.split()[0], "numpy": np.__version__, "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "rnnfast": rnnfast.info(), "blas_kernels": kernels,
            "unset": list(_PINS), "threads": a.threads,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "wall_s": time.time() - t0}
    if "torch" in sys.modules:
        import torch
        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "bench_train.json"), "w") as f:
        json.dump({**res, "meta": meta}, f, indent=2, default=str)
    with open(os.path.join(a.out, "bench_train.md"), "w") as f:
        f.write(md + "\n")
    print(f"results: {os.path.join(a.out, 'bench_train.json')}, bench_train.md ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
