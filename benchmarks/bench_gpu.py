"""GPU benchmark: rnnfast's cuda backend against torch.nn.RNN on cuDNN, in one process, interleaved, on the
same inputs; forward (inference) and forward+backward; microseconds per step and TFLOP/s; JSON, PNG and a
markdown table, with the issue's floors checked. Not a test (tests/test_cuda.py checks the numbers).

FLOPs per layer: forward 2*T*N*H*(D+H), backward twice that (docs/design.md 5); D = H here. float32 throughout,
TF32 off for both (cuDNN and cuBLAS), so both sides do true FP32 arithmetic.
Usage: python benchmarks/bench_gpu.py --out DIR [--budget SECONDS] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

NS = (1, 4, 16, 64, 256)
HS = (128, 256, 512, 1024, 1760)
TS = (50, 1000)


def floors(N, H):
    """The issue's floors for one size: (min fwd+bwd speedup over cuDNN, max forward us/step or None)."""
    speed = 2.0 if (N <= 16 and H <= 1024) else 1.0
    fwd_us = 2.0 if (H <= 512 and N <= 64) else None
    return speed, fwd_us


def timeit(fn, sync, budget_s, min_reps=3, max_reps=30):
    """Median seconds per call over batches; the batch count adapts to the budget."""
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, min(50, int(0.02 / one)))          # batches of >= ~20 ms amortise the host sync
    reps = int(max(min_reps, min(max_reps, budget_s / (one * inner))))
    samples = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_results")
    ap.add_argument("--budget", type=float, default=170.0, help="seconds for the whole sweep (approximate)")
    ap.add_argument("--quick", action="store_true", help="a few sizes only")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    import cupy as cp
    import torch

    import rnnfast
    from rnnfast import _cuda_backend as cb

    ok, why = cb.is_available()
    if not ok:
        raise SystemExit(f"cuda backend unavailable: {why}")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    info = cb.info()
    info["torch"] = torch.__version__
    info["cudnn"] = torch.backends.cudnn.version()
    info["gpu"] = torch.cuda.get_device_name()

    # the machine's own SGEMM rate (FP32, TF32 off), measured in this run
    a = torch.randn(8192, 8192, device=dev)
    b = torch.randn(8192, 8192, device=dev)
    t = timeit(lambda: a @ b, sync, 1.0)
    info["sgemm_tflops"] = 2 * 8192 ** 3 / t / 1e12
    del a, b
    print(f"{info['gpu']}: SGEMM {info['sgemm_tflops']:.1f} TFLOP/s; cuBLAS for rnnfast: {info['cublas']}", flush=True)

    sizes = [(T, N, H) for T in TS for H in HS for N in NS]
    if args.quick:
        sizes = [(50, 1, 128), (50, 16, 512), (50, 256, 1760), (1000, 4, 1024)]
    # cheap sizes first; each gets a share of the budget in proportion to nothing: a fixed slice
    t_start = time.perf_counter()
    per = args.budget / (len(sizes) * 4.5)
    rows = []
    for T, N, H in sizes:
        if time.perf_counter() - t_start > args.budget:
            rows.append(dict(T=T, N=N, H=H, skipped="budget"))
            continue
        D = H
        torch.manual_seed(0)
        m = torch.nn.RNN(D, H, num_layers=1, nonlinearity="tanh").to(dev)
        x = torch.randn(T, N, D, device=dev)
        h0 = torch.randn(1, N, H, device=dev)
        dout = torch.randn(T, N, H, device=dev)
        dhn = torch.randn(1, N, H, device=dev)
        xg = x.clone().requires_grad_(True)
        p = dict(m.named_parameters())
        w = [tuple(cb.as_array(p[f"{n}_l0"]) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))]
        grads = [tuple(cp.zeros_like(v) for v in w[0])]
        xc, h0c, doutc, dhnc = (cb.as_array(v) for v in (x, h0, dout, dhn))

        def torch_fwd():
            with torch.no_grad():
                m(x, h0)

        def torch_fb():
            out, hn = m(xg, h0)
            torch.autograd.backward([out, hn], [dout, dhn])

        def ours_fwd():
            rnnfast.rnn_forward(xc, h0c, w, None, "tanh", need_cache=False, backend="cuda")

        def ours_fb():
            _, _, cache = rnnfast.rnn_forward(xc, h0c, w, None, "tanh", need_cache=True, backend="cuda")
            rnnfast.rnn_backward(doutc, dhnc, cache, grads, backend="cuda")

        r = dict(T=T, N=N, H=H, D=D)
        try:
            # interleaved: torch, ours, torch, ours
            tf1 = timeit(torch_fwd, sync, per)
            of1 = timeit(ours_fwd, sync, per)
            tb1 = timeit(torch_fb, sync, per)
            ob1 = timeit(ours_fb, sync, per)
            tf2 = timeit(torch_fwd, sync, per / 2)
            of2 = timeit(ours_fwd, sync, per / 2)
            r.update(cudnn_fwd_s=min(tf1, tf2), ours_fwd_s=min(of1, of2), cudnn_fb_s=tb1, ours_fb_s=ob1)
            if T == 50:   # every recurrence path, to check the automatic choice
                variants = {"cluster": ("persistent", "1"), "grid": ("persistent", "0"), "stepwise": ("stepwise", "1")}
                for name, (rec, clus) in variants.items():
                    pl = cb.plan(N, H, recurrence="auto", cluster=clus == "1")
                    if rec == "persistent" and not pl["persistent_fits"]:
                        continue
                    if name == "cluster" and not pl["cluster"]:
                        continue
                    os.environ["RNNFAST_CUDA_RECURRENCE"], os.environ["RNNFAST_CUDA_CLUSTER"] = rec, clus
                    try:
                        r[f"ours_fwd_{name}_s"] = timeit(ours_fwd, sync, per / 3)
                        r[f"ours_fb_{name}_s"] = timeit(ours_fb, sync, per / 3)
                    finally:
                        del os.environ["RNNFAST_CUDA_RECURRENCE"], os.environ["RNNFAST_CUDA_CLUSTER"]
        except Exception as e:  # one size failing must not lose the others
            r["error"] = f"{type(e).__name__}: {e}"
            rows.append(r)
            print(f"T={T} N={N} H={H}: {r['error']}", flush=True)
            continue
        fl = 2.0 * T * N * H * (D + H)
        pf, pb = cb.plan(N, H), cb.plan(N, H, backward=True)
        sp, fw = floors(N, H)
        r.update(
            path_fwd=path_name(pf), path_bwd=path_name(pb), blocks_fwd=pf["blocks"],
            cudnn_fwd_us_step=r["cudnn_fwd_s"] / T * 1e6, ours_fwd_us_step=r["ours_fwd_s"] / T * 1e6,
            cudnn_fb_us_step=r["cudnn_fb_s"] / T * 1e6, ours_fb_us_step=r["ours_fb_s"] / T * 1e6,
            ours_fwd_tflops=fl / r["ours_fwd_s"] / 1e12, ours_fb_tflops=3 * fl / r["ours_fb_s"] / 1e12,
            cudnn_fwd_tflops=fl / r["cudnn_fwd_s"] / 1e12, cudnn_fb_tflops=3 * fl / r["cudnn_fb_s"] / 1e12,
            speedup_fwd=r["cudnn_fwd_s"] / r["ours_fwd_s"], speedup_fb=r["cudnn_fb_s"] / r["ours_fb_s"],
            floor_speedup_fb=sp, floor_fwd_us=fw)
        r["floor_met"] = bool(r["speedup_fb"] >= sp and (fw is None or r["ours_fwd_us_step"] <= fw))
        rows.append(r)
        print(f"T={T:5d} N={N:4d} H={H:5d}  fwd us/step cudnn {r['cudnn_fwd_us_step']:8.2f} ours "
              f"{r['ours_fwd_us_step']:8.2f} ({r['speedup_fwd']:5.2f}x)  f+b cudnn {r['cudnn_fb_us_step']:8.2f} "
              f"ours {r['ours_fb_us_step']:8.2f} ({r['speedup_fb']:5.2f}x)  {r['ours_fb_tflops']:6.2f} TFLOP/s "
              f"[{pf['path']}/{pb['path']}]{'' if r['floor_met'] else '  FLOOR MISSED'}", flush=True)
        del m, x, h0, dout, dhn, xg, w, grads, xc, h0c, doutc, dhnc
        torch.cuda.empty_cache()
        cp.get_default_memory_pool().free_all_blocks()
        save_json(args.out, info, rows)   # after every size: a killed run keeps what it measured

    save_json(args.out, info, rows)
    md = table(info, rows)
    with open(os.path.join(args.out, "bench_gpu.md"), "w") as f:
        f.write(md)
    print(md, flush=True)
    plot(info, rows, os.path.join(args.out, "bench_gpu.png"))


def path_name(pl):
    """stepwise, 1-block, cluster<C> (persistent, clusters of C blocks) or grid<G> (persistent, G blocks)."""
    if pl["path"] == "stepwise":
        return "stepwise"
    if pl["cluster"]:
        return f"cluster{pl['cluster']}"
    return "1-block" if pl["blocks"] == 1 else f"grid{pl['blocks']}"


def save_json(out, info, rows):
    with open(os.path.join(out, "bench_gpu.json"), "w") as f:
        json.dump(dict(info=info, rows=rows), f, indent=1, default=str)


def table(info, rows):
    lines = [f"GPU: {info['gpu']} (CUDA runtime {info.get('runtime_version')}, torch {info['torch']}, cuDNN "
             f"{info['cudnn']}); FP32, TF32 off; SGEMM {info['sgemm_tflops']:.1f} TFLOP/s measured in the same run.",
             "", "| T | N | H | cuDNN fwd us/step | ours fwd us/step | fwd x | cuDNN f+b us/step | ours f+b us/step "
             "| f+b x | ours f+b TFLOP/s | path fwd/bwd | floor |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--|:--|"]
    met = total = 0
    for r in rows:
        if "ours_fb_us_step" not in r:
            lines.append(f"| {r['T']} | {r['N']} | {r['H']} | | | | | | | | | {r.get('skipped') or r.get('error')} |")
            continue
        total += 1
        met += r["floor_met"]
        fl = f">= {r['floor_speedup_fb']:.0f}x" + (f", fwd <= {r['floor_fwd_us']:.0f} us" if r["floor_fwd_us"] else "")
        lines.append(f"| {r['T']} | {r['N']} | {r['H']} | {r['cudnn_fwd_us_step']:.2f} | {r['ours_fwd_us_step']:.2f} | "
                     f"{r['speedup_fwd']:.2f} | {r['cudnn_fb_us_step']:.2f} | {r['ours_fb_us_step']:.2f} | "
                     f"{r['speedup_fb']:.2f} | {r['ours_fb_tflops']:.2f} | {r['path_fwd']}/{r['path_bwd']} | "
                     f"{'met' if r['floor_met'] else 'MISSED'} ({fl}) |")
    lines += ["", f"Floors met: {met} of {total} measured sizes."]
    return "\n".join(lines) + "\n"


def plot(info, rows, path):
    try:
        from matplotlib.figure import Figure     # a standalone Figure: the caller's backend and pyplot untouched
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig = Figure(figsize=(13, 9))
    axes = fig.subplots(2, 2)
    for i, T in enumerate(TS):
        for j, (key, title) in enumerate((("fwd", "forward"), ("fb", "forward+backward"))):
            ax = axes[i][j]
            for k, H in enumerate(HS):
                rs = [r for r in rows if r["T"] == T and r["H"] == H and f"ours_{key}_us_step" in r]
                if not rs:
                    continue
                ns = [r["N"] for r in rs]
                col = f"C{k}"
                ax.plot(ns, [r[f"ours_{key}_us_step"] for r in rs], "o-", color=col, label=f"rnnfast H={H}")
                ax.plot(ns, [r[f"cudnn_{key}_us_step"] for r in rs], "x--", color=col, label=f"cuDNN H={H}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch N")
            ax.set_ylabel("us per step")
            ax.set_title(f"{title}, T={T}")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"rnnfast cuda vs torch.nn.RNN (cuDNN), FP32, {info['gpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
