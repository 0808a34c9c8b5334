"""PyTorch char-model training step with torch.nn.RNN / LSTM / GRU vs with rnnfast.torch's, same process, interleaved.

What it is: a timing script for the PyTorch drop-ins (Embedding -> RNN/LSTM/GRU -> Linear, cross-entropy,
Adam step, float32, CPU) that prints a table and writes JSON; both models start from the same weights and see
the same batches, and the script reports how far their losses drift apart. What it is not: a correctness test
(tests/test_torch_dropin.py) or the kernel benchmark suite. Needs torch.
Usage: PYTHONPATH=python python benchmarks/bench_torch_dropin.py [--repeats 10] [--threads K] [--cells rnn,lstm,gru]
       [--shapes char-h128,...] [--out PATH]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time

import numpy as np
import torch
from torch import nn

import rnnfast
import rnnfast.torch as rt

# (name, V, N, T, H, L): char-rnn sizes (65 symbols, 64-step windows), a wider layer, and a 2-layer stack.
SHAPES = [("char-h128", 65, 32, 64, 128, 1), ("char-h256-l2", 65, 32, 64, 256, 2),
          ("char-h512", 65, 32, 64, 512, 1), ("char-h128-n1", 65, 1, 64, 128, 1)]


CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharModel(nn.Module):
    def __init__(self, V, H, L, cell="rnn"):
        super().__init__()
        self.embed = nn.Embedding(V, H)
        self.rnn = CELLS[cell](H, H, num_layers=L, batch_first=True)
        self.head = nn.Linear(H, V)

    def forward(self, idx):
        return self.head(self.rnn(self.embed(idx))[0])


def step(model, opt, batch, V):
    opt.zero_grad(set_to_none=True)
    logits = model(batch[:, :-1])
    loss = nn.functional.cross_entropy(logits.reshape(-1, V), batch[:, 1:].reshape(-1))
    loss.backward()
    opt.step()
    return loss.item()


def layer_fwd_bwd(rnn, x, g):
    x = x.detach().requires_grad_(True)
    out, _ = rnn(x)
    out.backward(g)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated subset of rnn,lstm,gru")
    ap.add_argument("--shapes", default=",".join(s[0] for s in SHAPES), help="comma-separated shape names")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "torch_dropin.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cells = [c for c in args.cells.split(",") if c]
    shapes = [s for s in SHAPES if s[0] in args.shapes.split(",")]
    bad = [c for c in cells if c not in CELLS]
    if bad or not shapes:
        ap.error(f"unknown cells {bad}" if bad else f"no shape among {[s[0] for s in SHAPES]}")
    rows = []
    for cell, (name, V, N, T, H, L) in ((c, s) for c in cells for s in shapes):
        torch.manual_seed(0)
        ref = CharModel(V, H, L, cell)
        fast = rt.convert(copy.deepcopy(ref))
        opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-3)
        opt_fast = torch.optim.Adam(fast.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(1)
        batches = torch.randint(0, V, (args.repeats + 2, N, T + 1), generator=gen)
        t_ref, t_fast, drift = [], [], 0.0
        for i, batch in enumerate(batches):        # the first two steps are warm-up
            t0 = time.perf_counter()
            l_ref = step(ref, opt_ref, batch, V)
            t1 = time.perf_counter()
            l_fast = step(fast, opt_fast, batch, V)
            t2 = time.perf_counter()
            drift = max(drift, abs(l_ref - l_fast))
            if i >= 2:
                t_ref.append(t1 - t0)
                t_fast.append(t2 - t1)
        # the recurrent layer alone: forward + backward of the same layer on the same input
        x = torch.randn(N, T, H, generator=gen)
        g = torch.randn(N, T, H, generator=gen)
        l_ref, l_fast = [], []
        for i in range(args.repeats + 2):
            t0 = time.perf_counter()
            layer_fwd_bwd(ref.rnn, x, g)
            t1 = time.perf_counter()
            layer_fwd_bwd(fast.rnn, x, g)
            t2 = time.perf_counter()
            if i >= 2:
                l_ref.append(t1 - t0)
                l_fast.append(t2 - t1)
        r, f = float(np.median(t_ref)), float(np.median(t_fast))
        lr, lf = float(np.median(l_ref)), float(np.median(l_fast))
        rows.append({"cell": cell, "shape": name, "V": V, "N": N, "T": T, "H": H, "L": L, "torch_ms": r * 1e3,
                     "rnnfast_ms": f * 1e3, "speedup": r / f, "layer_torch_ms": lr * 1e3,
                     "layer_rnnfast_ms": lf * 1e3, "layer_speedup": lr / lf, "max_loss_diff": drift})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, float32, CPU; "
          f"median of {args.repeats} training steps")
    print(f"{'':<36}{'--- training step ---':^33}{'--- recurrent layer fwd+bwd ---':^33}")
    print(f"{'cell':<6}{'shape':<14}{'N':>4}{'T':>4}{'H':>5}{'L':>3}{'torch ms':>11}{'rnnfast ms':>12}{'speed-up':>10}"
          f"{'torch ms':>11}{'rnnfast ms':>12}{'speed-up':>10}{'max |dloss|':>13}")
    for r in rows:
        print(f"{r['cell']:<6}{r['shape']:<14}{r['N']:>4}{r['T']:>4}{r['H']:>5}{r['L']:>3}{r['torch_ms']:>11.2f}"
              f"{r['rnnfast_ms']:>12.2f}{r['speedup']:>9.2f}x{r['layer_torch_ms']:>11.2f}"
              f"{r['layer_rnnfast_ms']:>12.2f}{r['layer_speedup']:>9.2f}x{r['max_loss_diff']:>13.2e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"benchmark": "char-model training step, torch.nn.RNN/LSTM/GRU vs rnnfast.torch's",
                   "torch": torch.__version__, "rnnfast": rnnfast.__version__, "torch_threads":
                   torch.get_num_threads(), "machine": platform.machine(), "repeats": args.repeats,
                   "rows": rows}, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
