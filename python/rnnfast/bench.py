"""The CPU benchmark suite behind `rnnfast bench` and benchmarks/bench_cpu.py.

What it is: one process, the same inputs, peers interleaved round by round (rnnfast cpu, the NumPy
reference, torch.nn.RNN on CPU when importable), forward-only and forward+backward, medians, ratios,
GFLOP/s against the SGEMM rate measured in the same run, peak memory, scaling sweeps; a printed table,
JSON and PNG plots. What it is not: a correctness test (tests/ does that) or a GPU benchmark (bench_gpu.py).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

# (T, N, D, H, L)
CONFIGS = {
    "charrnn": (25, 1, 65, 100, 1),
    "small": (100, 1, 128, 128, 1),
    "mid": (100, 32, 128, 128, 1),
    "large": (100, 64, 512, 512, 1),
    "wide": (50, 16, 1024, 1024, 1),
    "deep": (100, 32, 256, 256, 3),
    "ds2": (300, 20, 800, 800, 1),
    "deepbench": (50, 16, 1760, 1760, 1),
}
PEERS = ("rnnfast", "numpy", "torch")


def flops(T, N, D, H, L, mode):
    """Layer forward = 2*T*N*H*(D_k + H); backward twice that (docs/design.md 5)."""
    f = sum(2.0 * T * N * H * ((D if k == 0 else H) + H) for k in range(L))
    return f if mode == "fwd" else 3.0 * f


def sgemm_gflops(n=1024, reps=5):
    """This machine's SGEMM rate now (n x n x n float32 matmul through NumPy's OpenBLAS), best of reps."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def _torch():
    try:
        import torch
        return torch
    except Exception:
        return None


class _Case:
    """One peer on one configuration: callables for forward-only and forward+backward on fixed inputs."""

    def __init__(self, peer, T, N, D, H, L, seed=0):
        import rnnfast
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((T, N, D)).astype(np.float32)
        self.dout = rng.standard_normal((T, N, H)).astype(np.float32)
        if peer in ("rnnfast", "numpy"):
            rnn = rnnfast.RNN(D, H, num_layers=L, backend="cpu" if peer == "rnnfast" else "numpy", seed=seed)
            x, dout = self.x, self.dout

            def fwd():
                rnn.forward(x, need_cache=False)

            def fwdbwd():
                rnn.forward(x, need_cache=True)
                rnn.backward(dout)
        else:
            torch = _torch()
            torch.manual_seed(seed)
            m = torch.nn.RNN(D, H, num_layers=L)
            tx = torch.from_numpy(self.x)
            tdout = torch.from_numpy(self.dout)

            def fwd():
                with torch.no_grad():
                    m(tx)

            def fwdbwd():
                txg = tx.detach().requires_grad_(True)
                out, _ = m(txg)
                out.backward(tdout)
        self.fns = {"fwd": fwd, "fwdbwd": fwdbwd}


def _time_interleaved(cases, mode, budget_s, rounds=5, min_reps=3, max_reps=400):
    """Median seconds per call for each case. Peers alternate in `rounds` rounds; within a round each peer
    runs a block of calls. Blocks rather than single calls: after a call NumPy's and torch's BLAS/OpenMP
    threads keep spinning for milliseconds, and a microsecond-scale call that follows another library's
    would be timed against those spinning threads rather than on the machine."""
    for c in cases.values():   # warm-up (also calibrates)
        c.fns[mode]()
    t_one = {}
    for k, c in cases.items():
        t0 = time.perf_counter()
        c.fns[mode]()
        t_one[k] = time.perf_counter() - t0
    per_peer = budget_s / max(1, len(cases))
    block = {k: int(min(max_reps, max(min_reps, per_peer / rounds / max(t, 1e-9)))) for k, t in t_one.items()}
    times = {k: [] for k in cases}
    for _ in range(rounds):
        for k, c in cases.items():
            c.fns[mode]()      # first call after another library: not timed
            for _ in range(block[k]):
                t0 = time.perf_counter()
                c.fns[mode]()
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}, {k: len(v) for k, v in times.items()}


_MEM_SNIPPET = r"""
import sys, json
peer, T, N, D, H, L = sys.argv[1], *map(int, sys.argv[2:7])
sys.path[:0] = json.loads(sys.argv[7])
from rnnfast.bench import _Case
c = _Case(peer, T, N, D, H, L)
import gc; gc.collect()
def kb(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")           # reset the peak-RSS mark (VmHWM) to the current RSS
base = kb("VmRSS")
c.fns["fwdbwd"]()
print((kb("VmHWM") - base) * 1024)
"""


def peak_memory(peer, cfg):
    """Peak resident-memory growth (bytes) of the first forward+backward in a fresh process that has
    built the model and inputs: the kernel's and the library's own buffers included, not just NumPy's
    (a first call, since the allocator keeps freed memory for reuse afterwards). Linux only (None
    elsewhere)."""
    T, N, D, H, L = cfg
    r = subprocess.run([sys.executable, "-c", _MEM_SNIPPET, peer, str(T), str(N), str(D), str(H), str(L),
                        json.dumps([p for p in sys.path if p])], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return None
    return int(r.stdout.strip().splitlines()[-1])


def machine_info():
    from ._info import collect
    d = collect()
    torch = _torch()
    return {"cpu": d["cpu"], "cores": d["cores"], "kernel_isa": d.get("kernel_isa"), "blas": d.get("blas"),
            "blas_threads": d.get("blas_threads"), "python": d["python"], "numpy": d["numpy"],
            "torch": torch.__version__ if torch else None,
            "torch_threads": torch.get_num_threads() if torch else None, "platform": platform.platform()}


def run_suite(configs=None, quick=False, peers=PEERS, memory=None, log=print):
    configs = configs or list(CONFIGS)
    torch = _torch()
    peers = [p for p in peers if p != "torch" or torch is not None]
    memory = (not quick) if memory is None else memory
    budget = 0.6 if quick else 3.0
    res = {"machine": machine_info(), "quick": quick, "peers": peers, "configs": {}}
    sg = [sgemm_gflops(768 if quick else 1024, 3 if quick else 7)]
    log(f"SGEMM rate measured now: {sg[0]:.1f} GFLOP/s")
    for name in configs:
        cfg = CONFIGS[name]
        cases = {p: _Case(p, *cfg) for p in peers}
        row = {"T_N_D_H_L": cfg}
        for mode in ("fwd", "fwdbwd"):
            med, reps = _time_interleaved(cases, mode, budget)
            f = flops(*cfg, mode)
            row[mode] = {p: {"median_s": med[p], "gflops": f / med[p] / 1e9} for p in peers}
            row[mode]["reps"] = reps
            for p in peers:
                if p != "rnnfast":
                    row[mode][f"speedup_vs_{p}"] = med[p] / med["rnnfast"]
        if memory:
            row["peak_mem_bytes"] = {p: peak_memory(p, cfg) for p in peers}
        res["configs"][name] = row
    # The machine's rate is the best of a measurement before and after the configurations (a shared
    # machine can be slowed for a while); every fraction below is relative to it.
    sg.append(sgemm_gflops(768 if quick else 1024, 3 if quick else 7))
    res["sgemm_gflops"], res["sgemm_gflops_samples"] = max(sg), sg
    log(f"SGEMM rate measured after: {sg[1]:.1f} GFLOP/s; using {max(sg):.1f}")
    for name, row in res["configs"].items():
        for mode in ("fwd", "fwdbwd"):
            for p in peers:
                row[mode][p]["frac_sgemm"] = row[mode][p]["gflops"] / res["sgemm_gflops"]
        log(_row_text(name, row, peers))
    return res


def _row_text(name, row, peers):
    parts = [f"{name:10s}"]
    for mode in ("fwd", "fwdbwd"):
        r = row[mode]
        s = " ".join(f"{p}={r[p]['median_s'] * 1e3:.3f}ms" for p in peers)
        sp = " ".join(f"x{r[f'speedup_vs_{p}']:.1f} vs {p}" for p in peers if p != "rnnfast")
        parts.append(f"[{mode}] {s} | {sp} | {r['rnnfast']['gflops']:.1f} GF/s ({r['rnnfast']['frac_sgemm']:.0%})")
    return "  ".join(parts)


def markdown_table(res):
    peers = res["peers"]
    others = [p for p in peers if p != "rnnfast"]
    hdr = ["config", "T,N,D,H,L", "mode", "rnnfast ms"] + [f"{p} ms" for p in others] + \
          [f"vs {p}" for p in others] + ["GFLOP/s", "of SGEMM"]
    if any("peak_mem_bytes" in r for r in res["configs"].values()):
        hdr += [f"peak MB {p}" for p in peers]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for name, row in res["configs"].items():
        for mode in ("fwd", "fwdbwd"):
            r = row[mode]
            cells = [name, ",".join(map(str, row["T_N_D_H_L"])), "fwd" if mode == "fwd" else "fwd+bwd",
                     f"{r['rnnfast']['median_s'] * 1e3:.3f}"]
            cells += [f"{r[p]['median_s'] * 1e3:.3f}" for p in others]
            cells += [f"{r[f'speedup_vs_{p}']:.1f}x" for p in others]
            cells += [f"{r['rnnfast']['gflops']:.1f}", f"{r['rnnfast']['frac_sgemm']:.0%}"]
            if "peak_mem_bytes" in row:
                cells += ["" if mode == "fwd" else
                          ("n/a" if row["peak_mem_bytes"][p] is None else f"{row['peak_mem_bytes'][p] / 2**20:.1f}")
                          for p in peers]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_sweeps(quick=False, log=print):
    """Time of rnnfast (and torch) forward+backward over T, N and H; time must grow linearly in T."""
    torch = _torch()
    peers = ["rnnfast"] + (["torch"] if torch else [])
    budget = 0.3 if quick else 1.0
    sweeps = {
        "T": ("T", [25, 50, 100, 250, 500, 1000], lambda v: (v, 16, 256, 256, 1)),
        "N": ("N", [1, 2, 4, 8, 16, 32, 64, 128, 256], lambda v: (50, v, 256, 256, 1)),
        "H": ("H", [64, 128, 256, 512, 1024], lambda v: (50, 16, v, v, 1)),
    }
    out = {}
    for key, (label, values, mk) in sweeps.items():
        pts = []
        for v in values:
            cfg = mk(v)
            cases = {p: _Case(p, *cfg) for p in peers}
            med, _ = _time_interleaved(cases, "fwdbwd", budget)
            pts.append({"value": v, "cfg": cfg, **{p: med[p] for p in peers},
                        "rnnfast_gflops": flops(*cfg, "fwdbwd") / med["rnnfast"] / 1e9})
            log(f"sweep {label}={v}: " + " ".join(f"{p}={med[p] * 1e3:.3f}ms" for p in peers))
        out[key] = pts
    T = np.array([p["value"] for p in out["T"]], float)
    t = np.array([p["rnnfast"] for p in out["T"]])
    slope, icpt = np.polyfit(T, t, 1)
    pred = slope * T + icpt
    out["T_linear_fit"] = {"seconds_per_step": float(slope), "intercept_s": float(icpt),
                           "r2": float(1 - np.sum((t - pred) ** 2) / np.sum((t - t.mean()) ** 2))}
    return out


def plot(res, sweeps, path_prefix):
    """PNG plots: speedup per configuration over each peer; the three sweeps. Needs matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    names = list(res["configs"])
    others = [p for p in res["peers"] if p != "rnnfast"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    for ax, mode in zip(axes, ("fwd", "fwdbwd")):
        w = 0.8 / max(1, len(others))
        for i, p in enumerate(others):
            vals = [res["configs"][n][mode][f"speedup_vs_{p}"] for n in names]
            bars = ax.bar(np.arange(len(names)) + i * w, vals, w, label=f"vs {p}")
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.axhline(1, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(names)) + w * (len(others) - 1) / 2, names, rotation=30)
        ax.set_title(f"rnnfast cpu speedup, {'forward' if mode == 'fwd' else 'forward+backward'} (float32)")
        ax.legend()
    fig.suptitle(f"{res['machine']['cpu']} ({res['machine']['cores']} cores); SGEMM {res['sgemm_gflops']:.0f} GFLOP/s")
    fig.tight_layout()
    fig.savefig(path_prefix + "_speedup.png", dpi=110)
    plt.close(fig)
    paths.append(path_prefix + "_speedup.png")
    if sweeps:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for ax, key, xl in zip(axes, ("T", "N", "H"), ("T (N=16, D=H=256)", "N (T=50, D=H=256)", "H=D (T=50, N=16)")):
            pts = sweeps[key]
            xs = [p["value"] for p in pts]
            for peer in ("rnnfast", "torch"):
                if peer in pts[0]:
                    ax.plot(xs, [p[peer] * 1e3 for p in pts], "o-", label=peer)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xl)
            ax.set_ylabel("forward+backward ms")
            ax.legend()
        fit = sweeps["T_linear_fit"]
        axes[0].set_title(f"linear in T: {fit['seconds_per_step'] * 1e6:.0f} us/step, R^2={fit['r2']:.4f}")
        fig.tight_layout()
        fig.savefig(path_prefix + "_sweeps.png", dpi=110)
        plt.close(fig)
        paths.append(path_prefix + "_sweeps.png")
    return paths


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="rnnfast bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short timing budget, no sweeps, no memory pass (< 1 min)")
    ap.add_argument("--configs", nargs="*", choices=list(CONFIGS), help="subset of configurations")
    ap.add_argument("--no-torch", action="store_true", help="leave torch out even if installed")
    ap.add_argument("--no-numpy", action="store_true", help="leave the NumPy reference out")
    ap.add_argument("--sweeps", action="store_true", help="also run the T/N/H sweeps (default in full mode)")
    ap.add_argument("--out", default="bench_results", help="folder for JSON, markdown and PNG")
    args = ap.parse_args(argv)
    peers = [p for p in PEERS if not (p == "torch" and args.no_torch) and not (p == "numpy" and args.no_numpy)]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    res = run_suite(args.configs, quick=args.quick, peers=peers)
    sweeps = run_sweeps(quick=args.quick) if (args.sweeps or not args.quick) else None
    res["sweeps"] = sweeps
    res["wall_s"] = time.time() - t0
    table = markdown_table(res)
    print("\n" + table)
    stem = os.path.join(args.out, "bench_cpu")
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(table + "\n")
    try:
        paths = plot(res, sweeps, stem)
        print("plots: " + ", ".join(paths))
    except ImportError:
        print("matplotlib not installed (pip install rnnfast[bench]): no plots")
    print(f"results: {stem}.json, {stem}.md  ({res['wall_s']:.0f} s)")
    return 0
