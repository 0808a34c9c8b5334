"""Speed of rnnfast.compat.cs231n.rnn_forward + rnn_backward against the per-step NumPy loop that the cs231n
assignment builds from rnn_step_forward/rnn_step_backward, same process, interleaved, same inputs.

What it is: a small timing script that prints a table and writes JSON. What it is not: a correctness test
(tests/test_compat_cs231n.py) or the kernel benchmark suite.
Usage: PYTHONPATH=python python benchmarks/bench_cs231n.py [--repeats 7] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

import rnnfast
from rnnfast.compat import cs231n as C

# (name, N, T, D, H): the notebook's small model, the assignment's COCO training shape (batch 25/50,
# 16 input words, wordvec 256, hidden 512), and a smaller hidden size.
SHAPES = [("notebook", 10, 13, 30, 40), ("coco-h128", 50, 16, 256, 128), ("coco-h512", 25, 16, 256, 512),
          ("coco-h512-n50", 50, 16, 256, 512)]


def per_step_forward_backward(x, h0, Wx, Wh, b, dh):
    """The assignment's way: a Python loop over rnn_step_forward, then over rnn_step_backward."""
    N, T, _ = x.shape
    caches, h = [], h0
    for t in range(T):
        h, c = C.rnn_step_forward(x[:, t], h, Wx, Wh, b)
        caches.append(c)
    dx = np.empty_like(x)
    dWx, dWh, db, dprev = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b), np.zeros_like(h0)
    for t in reversed(range(T)):
        dx[:, t], dprev, gWx, gWh, gb = C.rnn_step_backward(dh[:, t] + dprev, caches[t])
        dWx += gWx
        dWh += gWh
        db += gb
    return dx, dprev, dWx, dWh, db


def fast_forward_backward(x, h0, Wx, Wh, b, dh):
    _, cache = C.rnn_forward(x, h0, Wx, Wh, b)
    return C.rnn_backward(dh, cache)


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cs231n.json"))
    args = ap.parse_args()
    rows = []
    for dtype in (np.float32, np.float64):
        for name, N, T, D, H in SHAPES:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((N, T, D)).astype(dtype)
            h0 = rng.standard_normal((N, H)).astype(dtype)
            Wx = (rng.standard_normal((D, H)) / np.sqrt(D)).astype(dtype)
            Wh = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
            b = np.zeros(H, dtype)
            dh = rng.standard_normal((N, T, H)).astype(dtype)
            ref = per_step_forward_backward(x, h0, Wx, Wh, b, dh)
            got = fast_forward_backward(x, h0, Wx, Wh, b, dh)
            err = max(float(np.max(np.abs(r - g)) / (1 + np.max(np.abs(r)))) for r, g in zip(ref, got))
            slow, fast = [], []
            for _ in range(args.repeats):          # interleaved
                slow.append(timed(per_step_forward_backward, x, h0, Wx, Wh, b, dh))
                fast.append(timed(fast_forward_backward, x, h0, Wx, Wh, b, dh))
            s, f = float(np.median(slow)), float(np.median(fast))
            rows.append({"shape": name, "dtype": np.dtype(dtype).name, "N": N, "T": T, "D": D, "H": H,
                         "per_step_numpy_ms": s * 1e3, "rnnfast_ms": f * 1e3, "speedup": s / f,
                         "max_rel_diff": err})
    print(f"{'shape':<15}{'dtype':<9}{'N':>4}{'T':>4}{'D':>5}{'H':>5}{'per-step ms':>13}{'rnnfast ms':>12}"
          f"{'speed-up':>10}")
    for r in rows:
        print(f"{r['shape']:<15}{r['dtype']:<9}{r['N']:>4}{r['T']:>4}{r['D']:>5}{r['H']:>5}"
              f"{r['per_step_numpy_ms']:>13.3f}{r['rnnfast_ms']:>12.3f}{r['speedup']:>9.1f}x")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"benchmark": "cs231n rnn_forward+rnn_backward", "rnnfast": rnnfast.__version__,
                   "numpy": np.__version__, "machine": platform.machine(), "repeats": args.repeats,
                   "rows": rows}, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
