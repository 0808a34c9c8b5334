"""The whole char-LM training step three ways, timed in one process: rnnfast, per-step NumPy, PyTorch.

What it is: one training step (one-hot input, RNN / LSTM / GRU, linear head, softmax loss, backward,
gradient clipping to norm 5, Adam update) as (1) rnnfast's public API (ManyToMany -> Trainer.step) on a
chosen backend, (2) a NumPy implementation that loops over time steps as min-char-rnn does (tanh RNN
only), (3) torch.nn.RNN / LSTM / GRU + nn.Linear (when torch is installed); and an interleaved timer
reporting characters per second. Used by `rnnfast demo` and benchmarks/bench_train.py.
What it is not: a correctness oracle (the tests compare layers against the reference and torch).
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from .. import train as _train


class RnnfastStep:
    """rnnfast's training step through the public API a user writes: ManyToMany on token ids (one-hot
    input, no embedding) -> Trainer.step with Adam and clip_norm=5, mean cross-entropy. cell "rnn",
    "lstm" or "gru"."""

    name = "rnnfast"

    def __init__(self, V, H, T, N, seed=0, backend="cpu", cell="rnn"):
        from ..topologies import ManyToMany
        self.model = ManyToMany(vocab_size=V, hidden_size=H, output_size=V, cell=cell, backend=backend, seed=seed)
        self.trainer = _train.Trainer(self.model, _train.Adam(self.model, lr=2e-3), clip_norm=5.0, progress=False)
        rng = np.random.default_rng(seed)
        self.x = rng.integers(0, V, (T, N))
        self.y = rng.integers(0, V, (T, N))
        if backend != "cpu":
            self.name = f"rnnfast[{backend}]"

    def __call__(self):
        return self.trainer.step(self.x, self.y, reduction="mean")


class NumpyStep:
    """The same model in NumPy, one time step at a time (min-char-rnn's loops, batched over N streams)."""

    name = "numpy per-step"

    def __init__(self, V, H, T, N, seed=0):
        rng = np.random.default_rng(seed)
        b = 1.0 / np.sqrt(H)
        f32 = np.float32
        self.p = {"Wxh": rng.uniform(-b, b, (H, V)).astype(f32), "Whh": rng.uniform(-b, b, (H, H)).astype(f32),
                  "bh": np.zeros(H, f32), "Why": rng.uniform(-b, b, (V, H)).astype(f32), "by": np.zeros(V, f32)}
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0
        self.x = rng.integers(0, V, (T, N))
        self.y = rng.integers(0, V, (T, N))
        self.h = np.zeros((N, H), f32)
        self.V = V

    def __call__(self):
        p, V = self.p, self.V
        T, N = self.x.shape
        xs, hs, ps = {}, {-1: self.h}, {}
        loss = 0.0
        rows = np.arange(N)
        for t in range(T):                                   # forward, step by step
            xs[t] = np.zeros((N, V), np.float32)
            xs[t][rows, self.x[t]] = 1.0
            hs[t] = np.tanh(xs[t] @ p["Wxh"].T + hs[t - 1] @ p["Whh"].T + p["bh"])
            z = hs[t] @ p["Why"].T + p["by"]
            z = np.exp(z - z.max(axis=1, keepdims=True))
            ps[t] = z / z.sum(axis=1, keepdims=True)
            loss -= np.log(ps[t][rows, self.y[t]]).sum()
        g = {k: np.zeros_like(v) for k, v in p.items()}
        dh_next = np.zeros_like(self.h)
        for t in reversed(range(T)):                         # backward, step by step
            dy = ps[t].copy()
            dy[rows, self.y[t]] -= 1.0
            dy /= T * N
            g["Why"] += dy.T @ hs[t]
            g["by"] += dy.sum(axis=0)
            dh = dy @ p["Why"] + dh_next
            dz = (1.0 - hs[t] * hs[t]) * dh
            g["bh"] += dz.sum(axis=0)
            g["Wxh"] += dz.T @ xs[t]
            g["Whh"] += dz.T @ hs[t - 1]
            dh_next = dz @ p["Whh"]
        norm = np.sqrt(sum(float((v * v).sum()) for v in g.values()))   # clip_norm = 5
        if norm > 5.0:
            for v in g.values():
                v *= 5.0 / (norm + 1e-6)
        self.t += 1
        c1, c2 = 1 - 0.9 ** self.t, 1 - 0.999 ** self.t
        for k in p:                                          # Adam
            self.m[k] = 0.9 * self.m[k] + 0.1 * g[k]
            self.v[k] = 0.999 * self.v[k] + 0.001 * g[k] * g[k]
            p[k] -= 2e-3 / c1 * self.m[k] / (np.sqrt(self.v[k] / c2) + 1e-8)
        self.h = hs[T - 1]
        return loss / (T * N)


class TorchStep:
    """The same model in PyTorch on the CPU: one-hot input, nn.RNN / LSTM / GRU (V, H), nn.Linear(H, V),
    cross-entropy, clip_grad_norm_(5), Adam."""

    name = "pytorch"

    def __init__(self, V, H, T, N, seed=0, cell="rnn"):
        import torch
        self.torch = torch
        torch.manual_seed(seed)
        self.rnn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](V, H)
        self.head = torch.nn.Linear(H, V)
        self.params = list(self.rnn.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.Adam(self.params, lr=2e-3)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, V, (T, N), generator=g)
        self.y = torch.randint(0, V, (T, N), generator=g)
        self.V = V

    def __call__(self):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        x = torch.nn.functional.one_hot(self.x, self.V).float()
        out, _ = self.rnn(x)
        logits = self.head(out)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, self.V), self.y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        return loss.item()


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def make_steps(V, H, T, N, seed=0, include_torch=True, include_numpy=True, backend="cpu", cell="rnn"):
    """The implementations to compare, rnnfast first (the NumPy per-step peer exists for cell="rnn")."""
    steps = [RnnfastStep(V, H, T, N, seed, backend, cell=cell)]
    if include_numpy and cell == "rnn":
        steps.append(NumpyStep(V, H, T, N, seed))
    if include_torch and torch_available():
        steps.append(TorchStep(V, H, T, N, seed, cell=cell))
    return steps


def training_comparison(V=96, H=128, T=50, batches=(1, 32), seconds=4.0, include_torch=True, seed=0, log=print):
    """Time the whole training step (ManyToMany -> Trainer.step, Adam, clip_norm=5) against the NumPy
    per-step loop and torch, interleaved; print one line per implementation through `log` and return
    {N: measure(...)'s dict}. What `rnnfast demo` prints."""
    results = {}
    for N in batches:
        steps = make_steps(V, H, T, N, seed=seed, include_torch=include_torch)
        res = measure(steps, T, N, seconds=seconds / len(batches))
        ours = res[steps[0].name]["chars_per_sec"]
        for s in steps:
            cps = res[s.name]["chars_per_sec"]
            ratio = "" if s is steps[0] else f"   rnnfast is {ours / cps:.1f}x faster"
            log(f"  N={N:<3} {s.name:<16} {res[s.name]['step_ms']:>8.2f} ms/step {cps:>12,.0f} chars/s{ratio}")
        results[N] = res
    if include_torch and not torch_available():
        log("  (PyTorch is not installed, so it is not compared)")
    return results


def measure(steps, T, N, seconds=3.0, rounds=5, warmup=3):
    """Interleaved timing: in each of `rounds` rounds every implementation runs for seconds / rounds; the
    result per implementation is the median over rounds of characters per second (T * N per step).
    Returns {name: {"chars_per_sec", "step_ms", "steps"}}."""
    for s in steps:
        for _ in range(warmup):
            s()
    rates = {s.name: [] for s in steps}
    counts = {s.name: 0 for s in steps}
    per = seconds / rounds / len(steps)
    for _ in range(rounds):
        for s in steps:
            n, t0 = 0, time.perf_counter()
            while True:
                s()
                n += 1
                dt = time.perf_counter() - t0
                if dt >= per:
                    break
            rates[s.name].append(n * T * N / dt)
            counts[s.name] += n
    out = {}
    for name, r in rates.items():
        cps = statistics.median(r)
        out[name] = {"chars_per_sec": cps, "step_ms": 1e3 * T * N / cps, "steps": counts[name]}
    return out
