"""LSTM and GRU benchmark rows: rnnfast's cpu layers against torch.nn.LSTM / torch.nn.GRU on CPU, forward +
backward, float32, the same inputs in one process, rounds interleaved, medians (rnnfast.bench's timer).
Prints a markdown table and writes JSON. Not a correctness test (tests/test_gated.py) nor the vanilla suite
(benchmarks/bench_cpu.py). Usage: python benchmarks/bench_gated.py [--configs charrnn,mid] [--budget 2]
[--threads 1] [--out docs/bench/gated.json]"""
import argparse
import json
import os
import sys
import time

import numpy as np

import rnnfast
from rnnfast.bench import _time_interleaved, _unpinned_reexec, blas_kernels, machine_info, sgemm_gflops

# (T, N, D, H, L), the names of the vanilla suite
CONFIGS = {
    "charrnn": (25, 1, 65, 100, 1),
    "small": (100, 1, 128, 128, 1),
    "mid": (100, 32, 128, 128, 1),
    "large": (100, 64, 512, 512, 1),
}
GATES = {"lstm": 4, "gru": 3}
# The floors (forward+backward, float32, against torch CPU in the same run).
FLOORS = {"charrnn": 10.0, "small": 10.0, "mid": 1.3, "large": 1.3}


def flops(cell, T, N, D, H, L):
    """Forward 2*T*N*G*H*(D_k + H) per layer (G gates), backward twice that: forward+backward = 3x."""
    G = GATES[cell]
    return 3.0 * sum(2.0 * T * N * G * H * ((D if k == 0 else H) + H) for k in range(L))


class _Case:
    """One peer (rnnfast / torch) on one cell and configuration: a forward+backward callable."""

    def __init__(self, peer, cell, T, N, D, H, L, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((T, N, D)).astype(np.float32)
        dout = rng.standard_normal((T, N, H)).astype(np.float32)
        if peer == "rnnfast":
            lay = (rnnfast.LSTM if cell == "lstm" else rnnfast.GRU)(D, H, num_layers=L, backend="cpu", seed=seed)

            def fwdbwd():
                lay.forward(x, need_cache=True)
                lay.backward(dout)
        else:
            import torch
            torch.manual_seed(seed)
            m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(D, H, num_layers=L)
            tx, tdout = torch.from_numpy(x), torch.from_numpy(dout)

            def fwdbwd():
                txg = tx.detach().requires_grad_(True)
                out, _ = m(txg)
                out.backward(tdout)
        self.fns = {"fwdbwd": fwdbwd}


def run(configs, cells, budget, log=print):
    try:
        import torch  # noqa: F401
        peers = ("rnnfast", "torch")
    except Exception:
        peers = ("rnnfast",)
    rows = []
    for cell in cells:
        for name in configs:
            cfg = CONFIGS[name]
            cases = {p: _Case(p, cell, *cfg) for p in peers}
            med, reps = _time_interleaved(cases, "fwdbwd", budget)
            f = flops(cell, *cfg)
            row = {"cell": cell, "config": name, "shape": dict(zip("TNDHL", cfg)), "reps": reps,
                   "ms": {p: med[p] * 1e3 for p in peers}, "gflops": {p: f / med[p] / 1e9 for p in peers}}
            if "torch" in med:
                row["speedup_vs_torch"] = med["torch"] / med["rnnfast"]
                row["floor"] = FLOORS.get(name)
            rows.append(row)
            log(_line(row))
    return rows


def _line(r):
    s = r["shape"]
    cols = [r["cell"].upper(), r["config"], f"({s['T']},{s['N']},{s['D']},{s['H']},{s['L']})",
            f"{r['ms']['rnnfast']:.3f}", f"{r['gflops']['rnnfast']:.1f}"]
    if "speedup_vs_torch" in r:
        cols += [f"{r['ms']['torch']:.3f}", f"{r['speedup_vs_torch']:.2f}x", f">= {r['floor']}x"]
    return "| " + " | ".join(cols) + " |"


def markdown(rows):
    head = "| cell | config | (T,N,D,H,L) | rnnfast ms | rnnfast GFLOP/s | torch ms | speedup | floor |"
    return "\n".join([head, "|" + "---|" * 8] + [_line(r) for r in rows])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timing per row (min 3 rounds)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both rnnfast's BLAS and torch (default: each library's own default)")
    ap.add_argument("--out", default=None, help="write the JSON here")
    ap.add_argument("--keep-blas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE "
                         "(dropped by default: they pin OpenBLAS to old kernels)")
    a = ap.parse_args(argv)
    if not a.keep_blas_env:
        _unpinned_reexec(sys.argv[1:] if argv is None else list(argv), script=os.path.abspath(__file__))
    configs = [c for c in a.configs.split(",") if c]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configs {bad}; choose from {list(CONFIGS)}")
    cells = [c for c in a.cells.split(",") if c]
    if any(c not in GATES for c in cells):
        ap.error("cells must be lstm and/or gru")
    if a.threads is not None:
        if a.threads < 1:
            ap.error("--threads must be >= 1")
        from rnnfast.backends import set_num_threads
        set_num_threads(a.threads)
        try:
            import torch
            torch.set_num_threads(a.threads)
        except Exception:
            pass
    t0 = time.time()
    for line in blas_kernels():
        print(f"BLAS: {line}", file=sys.stderr)
    sg = sgemm_gflops()
    rows = run(configs, cells, a.budget, log=lambda s: print(s, file=sys.stderr))
    print(markdown(rows))
    thr = f"{a.threads} thread(s) for both" if a.threads else "each library's default threads"
    print(f"\n{thr}; SGEMM (1024^3, NumPy's BLAS) in the same run: {sg:.1f} GFLOP/s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"machine": machine_info(), "threads": a.threads, "sgemm_gflops": sg,
                       "loadavg": os.getloadavg(),
                       "seconds": time.time() - t0, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
