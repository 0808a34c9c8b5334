"""Whole training step of the char-level LM (one-hot input, RNN, head, softmax loss, backward, Adam),
characters per second: rnnfast cpu vs the same model in PyTorch (when installed) vs a per-step NumPy
implementation (min-char-rnn's loops), plus rnnfast's own model on its NumPy reference kernels
("rnnfast[numpy]"), interleaved in one process on the same data. Prints a table, writes JSON (and a PNG when
matplotlib is installed). Not a correctness test (tests/test_char_lm.py checks the three compute the
same loss). Reproduce the README table with: python benchmarks/bench_train.py --out docs/bench
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

FLOORS = {1: {"numpy per-step": 30.0, "pytorch": 20.0}, 32: {"pytorch": 5.0}}   # issue 5's targets


def run(V=65, H=100, T=25, batches=(1, 32), seconds=10.0, rounds=5, include_torch=True, seed=0):
    from rnnfast.models.speed import RnnfastStep, make_steps, measure

    rows = []
    for N in batches:
        steps = make_steps(V, H, T, N, seed=seed, include_torch=include_torch)
        steps.insert(1, RnnfastStep(V, H, T, N, seed=seed, backend="numpy"))   # our model on the reference kernels
        res = measure(steps, T, N, seconds=seconds, rounds=rounds)
        ours = res["rnnfast"]["chars_per_sec"]
        for name, r in res.items():
            floor = FLOORS.get(N, {}).get(name)
            ratio = None if name == "rnnfast" else ours / r["chars_per_sec"]
            rows.append({"V": V, "H": H, "T": T, "N": N, "impl": name, "chars_per_sec": r["chars_per_sec"],
                         "step_ms": r["step_ms"], "steps": r["steps"], "rnnfast_speedup": ratio,
                         "floor": floor, "meets_floor": None if floor is None else ratio >= floor})
    return rows


def table(rows):
    lines = ["| N | implementation | chars/s | ms/step | rnnfast speed-up | floor |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        sp = "" if r["rnnfast_speedup"] is None else f"{r['rnnfast_speedup']:.1f}x"
        fl = "" if r["floor"] is None else f">= {r['floor']:g}x ({'met' if r['meets_floor'] else 'not met'})"
        lines.append(f"| {r['N']} | {r['impl']} | {r['chars_per_sec']:,.0f} | {r['step_ms']:.3f} | {sp} | {fl} |")
    return "\n".join(lines)


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    Ns = sorted({r["N"] for r in rows})
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    w = 0.8 / len(impls)
    for i, name in enumerate(impls):
        vals = [next((r["chars_per_sec"] for r in rows if r["N"] == N and r["impl"] == name), 0) for N in Ns]
        ax.bar([k + i * w for k in range(len(Ns))], vals, w, label=name)
    ax.set_xticks([k + w * (len(impls) - 1) / 2 for k in range(len(Ns))])
    ax.set_xticklabels([f"N={N}" for N in Ns])
    ax.set_yscale("log")
    ax.set_ylabel("characters / second (log)")
    r0 = rows[0]
    ax.set_title(f"char-LM training step, V={r0['V']} H={r0['H']} T={r0['T']}")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="timing budget per batch size (all peers)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 32], help="batch sizes N")
    ap.add_argument("--V", type=int, default=65)
    ap.add_argument("--H", type=int, default=100)
    ap.add_argument("--T", type=int, default=25)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every peer's BLAS and for torch (default: each library's own default)")
    ap.add_argument("--out", default="bench_results", help="folder for bench_train.json / .png")
    a = ap.parse_args(argv)
    if a.threads:      # before NumPy / torch / rnnfast load their BLAS
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RNNFAST_NUM_THREADS"):
            os.environ[k] = str(a.threads)
    from rnnfast.models.speed import torch_available
    if a.threads and torch_available():
        import torch
        torch.set_num_threads(a.threads)
    t0 = time.time()
    rows = run(a.V, a.H, a.T, a.batches, a.seconds, a.rounds, not a.no_torch)
    print(table(rows))
    if not a.no_torch and not torch_available():
        print("(PyTorch is not installed: not compared)")
    os.makedirs(a.out, exist_ok=True)
    import numpy as np
    from rnnfast import info
    meta = {"python": sys.version.split()[0], "numpy": np.__version__, "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "threads": a.threads, "rnnfast": info(), "wall_s": time.time() - t0}
    if torch_available():
        import torch
        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    with open(os.path.join(a.out, "bench_train.json"), "w") as f:
        json.dump({"rows": rows, "meta": meta}, f, indent=2, default=str)
    png = plot(rows, os.path.join(a.out, "bench_train.png"))
    print(f"results: {os.path.join(a.out, 'bench_train.json')}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
