"""The CPU benchmark suite behind `rnnfast bench` and benchmarks/bench_cpu.py.

What it is: one process, the same inputs, peers interleaved round by round (rnnfast cpu, the NumPy
reference, torch.nn.RNN on CPU when importable), forward-only and forward+backward, medians, ratios,
GFLOP/s against two limits measured in the same run (the SGEMM rate; for N <= 4 a matrix-vector rate),
rnnfast timed once per kernel ISA, peak memory, scaling sweeps; a printed table, JSON and PNG plots. The
process drops OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (which pin OpenBLAS to old kernels) before NumPy loads,
re-executing itself if they were set, and prints which OpenBLAS kernel each library runs.
What it is not: a correctness test (tests/ does that) or a GPU benchmark (bench_gpu.py).
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
# Environment variables that pin OpenBLAS (NumPy's, rnnfast's and torch's) to older, slower kernels.
BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# The SGEMM rate may change this much between the measurements before and after the configurations
# before the run is declared disturbed (a busy machine) and no fraction of it is printed.
SGEMM_DRIFT = 1.25


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


def matvec_gflops(H=512, reps=2000):
    """This machine's float32 matrix-vector rate now: W (H, H) @ v through NumPy's OpenBLAS sgemv with W
    resident in cache (1 MB at H=512), best of `reps` blocks of 20 calls. The limit for N <= 4, where each
    step is a matrix-vector product bound by loads of W_hh rather than by FMAs."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((H, H)).astype(np.float32)
    v = rng.standard_normal(H).astype(np.float32)
    o = np.empty(H, np.float32)
    np.dot(W, v, out=o)
    best = float("inf")
    for _ in range(max(1, reps // 20)):
        t0 = time.perf_counter()
        for _ in range(20):
            np.dot(W, v, out=o)
        best = min(best, (time.perf_counter() - t0) / 20)
    return 2.0 * H * H / best / 1e9


def blas_kernels():
    """Which BLAS build and kernel (architecture) each loaded library runs, from threadpoolctl; a string
    per library. Empty when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed (pip install threadpoolctl): BLAS kernels not reported"]
    out = []
    for d in threadpool_info():
        if d.get("user_api") != "blas":
            continue
        out.append(f"{os.path.basename(d.get('filepath', '?'))}: {d.get('internal_api')} {d.get('version')} "
                   f"kernel={d.get('architecture')} threads={d.get('num_threads')}")
    return out


def _unpinned_reexec(argv, script=None):
    """Re-executes this benchmark (rnnfast.bench's main, or `script`) without BLAS_PINS when any is set:
    OpenBLAS reads them only when it loads, so they must be gone before NumPy is imported. Returns only
    when none is set."""
    if not any(k in os.environ for k in BLAS_PINS):
        return
    env = {k: v for k, v in os.environ.items() if k not in BLAS_PINS}
    env["RNNFAST_BENCH_UNPINNED"] = ",".join(f"{k}={os.environ[k]}" for k in BLAS_PINS if k in os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    sys.stdout.flush()
    sys.stderr.flush()
    cmd = [script] if script else ["-c", "import sys; from rnnfast.bench import main; sys.exit(main(sys.argv[1:]))"]
    os.execve(sys.executable, [sys.executable, *cmd, *argv], env)


def _torch():
    try:
        import torch
        return torch
    except Exception:
        return None


class _Case:
    """One peer on one configuration: callables for forward-only and forward+backward on fixed inputs."""

    def __init__(self, peer, T, N, D, H, L, seed=0, isa=None):
        import rnnfast
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((T, N, D)).astype(np.float32)
        self.dout = rng.standard_normal((T, N, H)).astype(np.float32)
        if peer in ("rnnfast", "numpy"):
            rnn = rnnfast.RNN(D, H, num_layers=L, backend="cpu" if peer == "rnnfast" else "numpy", seed=seed)
            x, dout = self.x, self.dout

            if isa is not None:     # rnnfast timed with one kernel ISA: selected around each call
                from . import _C
                default = _C.isa()

                def fwd():
                    _C.set_isa(isa)
                    rnn.forward(x, need_cache=False)
                    _C.set_isa(default)

                def fwdbwd():
                    _C.set_isa(isa)
                    rnn.forward(x, need_cache=True)
                    rnn.backward(dout)
                    _C.set_isa(default)
            else:
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


def _time_interleaved(cases, mode, budget_s, rounds=5, min_reps=3, max_reps=400, cap_s=None):
    """Median seconds per call for each case. Peers alternate in `rounds` rounds; within a round each peer
    runs a block of calls. Blocks rather than single calls: after a call NumPy's and torch's BLAS/OpenMP
    threads keep spinning for milliseconds, and a microsecond-scale call that follows another library's
    would be timed against those spinning threads rather than on the machine. `cap_s` bounds the wall time
    (default 4 x budget; a busy machine makes the calibrated blocks far longer than planned): past it, no
    new round starts once every peer has min_reps samples, and blocks shrink to one call."""
    deadline = time.perf_counter() + (cap_s if cap_s is not None else 4.0 * budget_s)
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
        if time.perf_counter() > deadline and all(len(v) >= min_reps for v in times.values()):
            break
        for k, c in cases.items():
            c.fns[mode]()      # first call after another library: not timed
            for _ in range(block[k] if time.perf_counter() < deadline else 1):
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
    return {"cpu": d["cpu"], "cores": d["cores"], "kernel_isa": d.get("kernel_isa"),
            "kernel_isas": d.get("kernel_isas"), "blas": d.get("blas"),
            "blas_threads": d.get("blas_threads"), "python": d["python"], "numpy": d["numpy"],
            "torch": torch.__version__ if torch else None,
            "torch_threads": torch.get_num_threads() if torch else None, "platform": platform.platform(),
            "blas_kernels": blas_kernels(), "blas_pins_removed": os.environ.get("RNNFAST_BENCH_UNPINNED"),
            "loadavg": os.getloadavg()}


def _other_isas():
    """The kernel ISAs besides the default that this CPU runs (each timed as its own peer)."""
    try:
        from . import _C
        return [i for i in _C.supported_isas() if i != _C.isa()]
    except (ImportError, ValueError):
        return []


def run_suite(configs=None, quick=False, peers=PEERS, memory=None, log=print, isas=True):
    configs = configs or list(CONFIGS)
    torch = _torch()
    peers = [p for p in peers if p != "torch" or torch is not None]
    isa_peers = [f"rnnfast[{i}]" for i in _other_isas()] if (isas and "rnnfast" in peers) else []
    memory = (not quick) if memory is None else memory
    budget = 0.6 if quick else 3.0
    res = {"machine": machine_info(), "quick": quick, "peers": peers, "isa_peers": isa_peers, "configs": {}}
    for line in res["machine"]["blas_kernels"]:
        log(f"BLAS: {line}")
    if res["machine"]["blas_pins_removed"]:
        log(f"(removed for this run: {res['machine']['blas_pins_removed']})")
    sg = [sgemm_gflops(768 if quick else 1024, 3 if quick else 7)]
    mv = [matvec_gflops(reps=400 if quick else 2000)]
    log(f"limits measured now: SGEMM {sg[0]:.1f} GFLOP/s, matrix-vector (sgemv, H=512) {mv[0]:.1f} GFLOP/s; "
        f"rnnfast kernels: {res['machine']['kernel_isa']}"
        + (f" (also timed: {', '.join(isa_peers)})" if isa_peers else ""))
    for name in configs:
        t_cfg = time.perf_counter()
        cfg = CONFIGS[name]
        cases = {p: _Case(p, *cfg) for p in peers}
        for ip in isa_peers:
            cases[ip] = _Case("rnnfast", *cfg, isa=ip[len("rnnfast["):-1])
        row = {"T_N_D_H_L": cfg}
        for mode in ("fwd", "fwdbwd"):
            med, reps = _time_interleaved(cases, mode, budget)
            f = flops(*cfg, mode)
            row[mode] = {p: {"median_s": med[p], "gflops": f / med[p] / 1e9} for p in cases}
            row[mode]["reps"] = reps
            for p in peers:
                if p != "rnnfast":
                    row[mode][f"speedup_vs_{p}"] = med[p] / med["rnnfast"]
        if memory:
            row["peak_mem_bytes"] = {p: peak_memory(p, cfg) for p in peers}
        row["wall_s"] = time.perf_counter() - t_cfg
        res["configs"][name] = row
        _fractions(row, cfg, sg[0], mv[0])
        log(_row_text(name, row, peers, isa_peers) + f"  ({row['wall_s']:.0f} s)")
    # The limits are measured again after the configurations: if they moved, the machine was busy and the
    # fractions (and likely the ratios) are not to be trusted; the table then says so instead of printing
    # impossible figures. Otherwise the fractions use the better of the two measurements.
    sg.append(sgemm_gflops(768 if quick else 1024, 3 if quick else 7))
    mv.append(matvec_gflops(reps=400 if quick else 2000))
    res["sgemm_gflops"], res["sgemm_gflops_samples"] = max(sg), sg
    res["matvec_gflops"], res["matvec_gflops_samples"] = max(mv), mv
    res["disturbed"] = max(sg) / min(sg) > SGEMM_DRIFT or max(mv) / min(mv) > SGEMM_DRIFT
    # A configuration faster than the machine's limit means the limit was measured while the machine was
    # busy (BLAS threads competing with other work), whatever the drift says.
    for row in res["configs"].values():
        _fractions(row, row["T_N_D_H_L"], max(sg), max(mv))
        res["disturbed"] |= any(row[m]["rnnfast"][k] is not None and row[m]["rnnfast"][k] > 1.0
                                for m in ("fwd", "fwdbwd") for k in ("frac_sgemm", "frac_matvec"))
    log(f"limits measured after: SGEMM {sg[1]:.1f} GFLOP/s, matrix-vector {mv[1]:.1f} GFLOP/s")
    if res["disturbed"]:
        log(f"WARNING: the machine was busy: its SGEMM/matrix-vector rate changed during this run (SGEMM "
            f"{sg[0]:.1f} -> {sg[1]:.1f}, matvec {mv[0]:.1f} -> {mv[1]:.1f} GFLOP/s; more than {SGEMM_DRIFT:.2f}x "
            "counts as a change) or a configuration beat it; fractions of the limits are not reported and the "
            "timings are suspect. Rerun on a quiet machine.")
    for row in res["configs"].values():
        _fractions(row, row["T_N_D_H_L"], None if res["disturbed"] else res["sgemm_gflops"],
                   None if res["disturbed"] else res["matvec_gflops"])
    return res


def _fractions(row, cfg, sgemm, matvec):
    """Each timed peer's fraction of the SGEMM rate, and for N <= 4 of the matrix-vector rate (None when
    the limit is not trustworthy)."""
    for mode in ("fwd", "fwdbwd"):
        for r in row[mode].values():
            if isinstance(r, dict) and "gflops" in r:
                r["frac_sgemm"] = r["gflops"] / sgemm if sgemm else None
                r["frac_matvec"] = r["gflops"] / matvec if (matvec and cfg[1] <= 4) else None


def _pct(x):
    """A fraction of a limit; above 100% the limit itself was disturbed, so none is printed."""
    return "n/a" if x is None or x > 1.0 else f"{x:.0%}"


def _row_text(name, row, peers, isa_peers=()):
    parts = [f"{name:10s}"]
    for mode in ("fwd", "fwdbwd"):
        r = row[mode]
        s = " ".join(f"{p}={r[p]['median_s'] * 1e3:.3f}ms" for p in list(peers) + list(isa_peers))
        sp = " ".join(f"x{r[f'speedup_vs_{p}']:.1f} vs {p}" for p in peers if p != "rnnfast")
        lim = f"{_pct(r['rnnfast']['frac_sgemm'])} of SGEMM"
        if r["rnnfast"]["frac_matvec"] is not None:
            lim += f", {_pct(r['rnnfast']['frac_matvec'])} of matvec"
        parts.append(f"[{mode}] {s} | {sp} | {r['rnnfast']['gflops']:.1f} GF/s ({lim})")
    return "  ".join(parts)


def markdown_table(res):
    peers = res["peers"]
    isa_peers = res.get("isa_peers", [])
    others = [p for p in peers if p != "rnnfast"]
    hdr = ["config", "T,N,D,H,L", "mode", f"rnnfast ms ({res['machine']['kernel_isa']})"] + \
          [f"{p} ms" for p in isa_peers] + [f"{p} ms" for p in others] + \
          [f"vs {p}" for p in others] + ["GFLOP/s", "of SGEMM", "of matvec"]
    if any("peak_mem_bytes" in r for r in res["configs"].values()):
        hdr += [f"peak MB {p}" for p in peers]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for name, row in res["configs"].items():
        for mode in ("fwd", "fwdbwd"):
            r = row[mode]
            cells = [name, ",".join(map(str, row["T_N_D_H_L"])), "fwd" if mode == "fwd" else "fwd+bwd",
                     f"{r['rnnfast']['median_s'] * 1e3:.3f}"]
            cells += [f"{r[p]['median_s'] * 1e3:.3f}" for p in isa_peers]
            cells += [f"{r[p]['median_s'] * 1e3:.3f}" for p in others]
            cells += [f"{r[f'speedup_vs_{p}']:.1f}x" for p in others]
            cells += [f"{r['rnnfast']['gflops']:.1f}", _pct(r["rnnfast"]["frac_sgemm"]),
                      "" if r["rnnfast"]["frac_matvec"] is None and row["T_N_D_H_L"][1] > 4
                      else _pct(r["rnnfast"]["frac_matvec"])]
            if "peak_mem_bytes" in row:
                cells += ["" if mode == "fwd" else
                          ("n/a" if row["peak_mem_bytes"][p] is None else f"{row['peak_mem_bytes'][p] / 2**20:.1f}")
                          for p in peers]
            lines.append("| " + " | ".join(cells) + " |")
    lim = (f"limits in the same run: SGEMM {res['sgemm_gflops']:.1f} GFLOP/s (samples "
           f"{', '.join(f'{v:.1f}' for v in res['sgemm_gflops_samples'])}), matrix-vector "
           f"{res['matvec_gflops']:.1f} GFLOP/s (samples "
           f"{', '.join(f'{v:.1f}' for v in res['matvec_gflops_samples'])})")
    if res.get("disturbed"):
        lim += "; the machine was busy (the limits moved, or a configuration beat them): fractions not reported"
    return "\n".join(lines) + "\n\n" + lim


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
    from matplotlib.figure import Figure     # a standalone Figure: the caller's backend and pyplot untouched

    paths = []
    names = list(res["configs"])
    others = [p for p in res["peers"] if p != "rnnfast"]
    fig = Figure(figsize=(13, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
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
    paths.append(path_prefix + "_speedup.png")
    if sweeps:
        fig = Figure(figsize=(15, 4.2))
        axes = fig.subplots(1, 3)
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
        paths.append(path_prefix + "_sweeps.png")
    return paths


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="rnnfast bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="short timing budget (each configuration capped at a few seconds), no sweeps, no memory "
                         "pass: about a minute on a quiet machine")
    ap.add_argument("--configs", nargs="*", choices=list(CONFIGS), help="subset of configurations")
    ap.add_argument("--no-torch", action="store_true", help="leave torch out even if installed")
    ap.add_argument("--no-numpy", action="store_true", help="leave the NumPy reference out")
    ap.add_argument("--sweeps", action="store_true", help="also run the T/N/H sweeps (default in full mode)")
    ap.add_argument("--out", default="bench_results", help="folder for JSON, markdown and PNG")
    ap.add_argument("--no-isas", action="store_true", help="time rnnfast with the default kernel ISA only")
    ap.add_argument("--keep-blas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (by default the benchmark drops them and "
                         "re-executes itself, since they pin every library's OpenBLAS to older kernels)")
    args = ap.parse_args(argv)
    if not args.keep_blas_env:
        _unpinned_reexec(list(sys.argv[1:]) if argv is None else list(argv))
    peers = [p for p in PEERS if not (p == "torch" and args.no_torch) and not (p == "numpy" and args.no_numpy)]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    res = run_suite(args.configs, quick=args.quick, peers=peers, isas=not args.no_isas)
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


if __name__ == "__main__":
    sys.exit(main())
