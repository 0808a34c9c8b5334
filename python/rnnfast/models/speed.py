"""The whole char-LM training step three ways, timed in one process: rnnfast, per-step NumPy, PyTorch.

What it is: one training step (one-hot input, tanh RNN, linear head, softmax loss, backward, Adam update,
hidden state carried) as (1) rnnfast's CharLM on a chosen backend, (2) a NumPy implementation that loops
over time steps as min-char-rnn does, (3) torch.nn.RNN + nn.Linear (when torch is installed); and an
interleaved timer reporting characters per second. Used by `rnnfast demo` and benchmarks/bench_train.py.
What it is not: a correctness oracle (the tests compare layers against the reference and torch).
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from .. import train as _train
from .char_lm import CharLM


class RnnfastStep:
    """rnnfast's training step, as train_char_lm runs it: CharLM (OneHotRNN -> Linear), mean
    cross-entropy, rnnfast.train.Adam over the flat parameter buffer."""

    name = "rnnfast"

    def __init__(self, V, H, T, N, seed=0, backend="cpu"):
        self.model = CharLM("".join(chr(0x100 + i) for i in range(V)), H, backend=backend, seed=seed)
        self.opt = _train.Adam(self.model.flat, lr=2e-3)
        rng = np.random.default_rng(seed)
        self.x = rng.integers(0, V, (T, N))
        self.y = rng.integers(0, V, (T, N))
        self.h = self.model.zero_state(N)
        if backend != "cpu":
            self.name = f"rnnfast[{backend}]"

    def __call__(self):
        self.opt.zero_grad()
        loss, self.h = self.model.train_loss(self.x, self.y, self.h)
        self.opt.step()
        return loss


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
        self.t += 1
        c1, c2 = 1 - 0.9 ** self.t, 1 - 0.999 ** self.t
        for k in p:                                          # Adam
            self.m[k] = 0.9 * self.m[k] + 0.1 * g[k]
            self.v[k] = 0.999 * self.v[k] + 0.001 * g[k] * g[k]
            p[k] -= 2e-3 / c1 * self.m[k] / (np.sqrt(self.v[k] / c2) + 1e-8)
        self.h = hs[T - 1]
        return loss / (T * N)


class TorchStep:
    """The same model in PyTorch on the CPU: one-hot input, nn.RNN(V, H), nn.Linear(H, V), cross-entropy,
    Adam; the hidden state carried (detached) between steps."""

    name = "pytorch"

    def __init__(self, V, H, T, N, seed=0):
        import torch
        self.torch = torch
        torch.manual_seed(seed)
        self.rnn = torch.nn.RNN(V, H)
        self.head = torch.nn.Linear(H, V)
        self.opt = torch.optim.Adam(list(self.rnn.parameters()) + list(self.head.parameters()), lr=2e-3)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, V, (T, N), generator=g)
        self.y = torch.randint(0, V, (T, N), generator=g)
        self.h = torch.zeros(1, N, H)
        self.V = V

    def __call__(self):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        x = torch.nn.functional.one_hot(self.x, self.V).float()
        out, h = self.rnn(x, self.h)
        logits = self.head(out)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, self.V), self.y.reshape(-1))
        loss.backward()
        self.opt.step()
        self.h = h.detach()
        return loss.item()


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def make_steps(V, H, T, N, seed=0, include_torch=True, include_numpy=True, backend="cpu"):
    """The implementations to compare, rnnfast first."""
    steps = [RnnfastStep(V, H, T, N, seed, backend)]
    if include_numpy:
        steps.append(NumpyStep(V, H, T, N, seed))
    if include_torch and torch_available():
        steps.append(TorchStep(V, H, T, N, seed))
    return steps


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
