"""Tests of rnnfast.torch (RNN / LSTM / GRU drop-ins, convert) against torch.nn.RNN / LSTM / GRU as the oracle.

What it is: parity of outputs, final states and every gradient with torch over the constructor's options,
PackedSequence input (sorted and unsorted), gradcheck in float64, dropout, convert() on models trained a few
steps, state_dict round trips, bad input, and two-process DistributedDataParallel on gloo. What it is not: a
timing test (benchmarks/bench_torch_dropin.py). Skipped entirely when torch is not installed.
"""
import copy
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
rt = pytest.importorskip("rnnfast.torch")
from torch import nn  # noqa: E402

@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny shapes: torch's intra-op thread pool only adds scheduling stalls on a shared CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TOL = {torch.float32: dict(rtol=1e-4, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _pair(*args, dtype=torch.float32, cell="RNN", **kw):
    """A torch.nn.<cell> and an rnnfast.torch.<cell> with identical weights (same seed, same init)."""
    torch.manual_seed(0)
    ref = getattr(nn, cell)(*args, dtype=dtype, **kw)
    torch.manual_seed(0)
    ours = getattr(rt, cell)(*args, dtype=dtype, **kw)
    for (na, a), (nb, b) in zip(ref.named_parameters(), ours.named_parameters()):
        assert na == nb and torch.equal(a, b)
    return ref, ours


def _weighted(t, lo, hi):
    return (t * torch.linspace(lo, hi, t.numel(), dtype=t.dtype).reshape(t.shape)).sum()


def _forward_backward(m, x, hx):
    """forward + backward of a fixed weighted sum of the output and the final states; hx is a tensor, a tuple
    (h0, c0) for LSTM, or None. Returns (output, final states (a tensor or a tuple), gradients by name)."""
    x = x.clone().requires_grad_(True)
    states = () if hx is None else (hx if isinstance(hx, tuple) else (hx,))
    states = tuple(s.clone().requires_grad_(True) for s in states)
    out, fin = m(x, None if hx is None else (states if isinstance(hx, tuple) else states[0]))
    finals = fin if isinstance(fin, tuple) else (fin,)
    loss = _weighted(out, -1, 1)
    for i, f in enumerate(finals):
        loss = loss + _weighted(f, 1 - i, -0.5)
    loss.backward()
    grads = {"input": x.grad}
    grads.update({f"hx{i}": s.grad for i, s in enumerate(states)})
    grads.update({n: p.grad for n, p in m.named_parameters()})
    return out, fin, grads


def _assert_same(a, b, dtype, what=""):
    """b (torch's) vs a (ours): tensors, tuples of tensors or dicts of them."""
    if isinstance(b, dict):
        assert a.keys() == b.keys()
        for k in b:
            _assert_same(a[k], b[k], dtype, f"{what}{k}")
    elif isinstance(b, tuple):
        assert isinstance(a, tuple) and len(a) == len(b)
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, dtype, f"{what}[{i}]")
    else:
        assert a.shape == b.shape and a.dtype == b.dtype, what
        torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{what}: {m}")


CONFIGS = [
    dict(),
    dict(num_layers=3),
    dict(nonlinearity="relu", bias=False),
    dict(batch_first=True, num_layers=2),
    dict(bidirectional=True),
    dict(bidirectional=True, num_layers=2, batch_first=True, nonlinearity="relu"),
    dict(bidirectional=True, num_layers=3, bias=False),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["h0zero", "h0given"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}_{v}" for k, v in c.items()) or "default")
def test_matches_torch_outputs_and_all_gradients(cfg, with_hx, dtype):
    D, H, T, N = 5, 31, 7, 3
    ref, ours = _pair(D, H, dtype=dtype, **cfg)
    gen = torch.Generator().manual_seed(1)
    shape = (N, T, D) if cfg.get("batch_first") else (T, N, D)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    dirs = 2 if cfg.get("bidirectional") else 1
    hx = torch.randn(cfg.get("num_layers", 1) * dirs, N, H, generator=gen, dtype=dtype) if with_hx else None
    o1, h1, g1 = _forward_backward(ref, x, hx)
    o2, h2, g2 = _forward_backward(ours, x, hx)
    assert o2.shape == o1.shape and h2.shape == h1.shape and o2.dtype == dtype
    torch.testing.assert_close(o2, o1, **TOL[dtype])
    torch.testing.assert_close(h2, h1, **TOL[dtype])
    assert g1.keys() == g2.keys()
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], **TOL[dtype], msg=lambda m, k=k: f"{k}: {m}")


def test_unbatched_input_matches_torch():
    ref, ours = _pair(4, 6, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64)
    hx = torch.randn(4, 6, dtype=torch.float64)
    for h in (None, hx):
        o1, h1 = ref(x, h)
        o2, h2 = ours(x, h)
        assert o2.shape == (5, 12) and h2.shape == (4, 6)
        torch.testing.assert_close(o2, o1)
        torch.testing.assert_close(h2, h1)


def test_gradcheck_float64_input_hx_and_parameters():
    m = rt.RNN(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    names = [n for n, _ in m.named_parameters()]
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]

    def f(x, hx, *ps):
        out, h_n = torch.func.functional_call(m, dict(zip(names, ps)), (x, hx))
        return out, h_n
    assert torch.autograd.gradcheck(f, (x, hx, *params), eps=1e-6, atol=1e-7)


def test_gradcheck_relu_single_stack_call():
    m = rt.RNN(2, 3, num_layers=3, nonlinearity="relu", dtype=torch.float64)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: m(x)[0], (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_between_layers_matches_torch_in_training_and_is_off_in_eval(bidirectional):
    ref, ours = _pair(5, 8, num_layers=3, dropout=0.5, bidirectional=bidirectional)
    x = torch.randn(6, 4, 5)
    torch.manual_seed(123)
    o1, h1, g1 = _forward_backward(ref, x, None)
    torch.manual_seed(123)            # same draws: torch applies the same dropout to the same tensors
    o2, h2, g2 = _forward_backward(ours, x, None)
    torch.testing.assert_close(o2, o1, **TOL[torch.float32])
    torch.testing.assert_close(h2, h1, **TOL[torch.float32])
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], **TOL[torch.float32])
    ref.eval()
    ours.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], **TOL[torch.float32])
    torch.testing.assert_close(ours(x)[0], ours(x)[0], rtol=0, atol=0)


def test_no_grad_path_matches_and_builds_no_graph():
    ref, ours = _pair(3, 5, num_layers=2)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        o2, h2 = ours(x)
    assert o2.grad_fn is None and not o2.requires_grad
    torch.testing.assert_close(o2, ref(x)[0].detach(), **TOL[torch.float32])


def test_cpu_tensors_are_shared_with_numpy_without_copies():
    t = torch.randn(4, 3, 2)
    assert np.shares_memory(rt._np(t), t.numpy())
    w = nn.Parameter(torch.randn(5, 3))
    assert np.shares_memory(rt._np(w), w.detach().numpy())


def test_in_place_change_after_forward_is_detected():
    m = rt.RNN(3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = m(x)
    with torch.no_grad():
        m.weight_hh_l0.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_state_dict_round_trips_both_ways():
    torch.manual_seed(3)
    ref = nn.RNN(4, 6, num_layers=2, bidirectional=True, bias=True)
    ours = rt.RNN(4, 6, num_layers=2, bidirectional=True, bias=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    back = nn.RNN(4, 6, num_layers=2, bidirectional=True, bias=True)
    back.load_state_dict(ours.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v) and torch.equal(ours.state_dict()[k], v)
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], **TOL[torch.float32])


class CharModel(nn.Module):
    def __init__(self, V=11, E=6, H=16):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.rnn = nn.RNN(E, H, num_layers=2, batch_first=True)
        self.head = nn.Sequential(nn.Linear(H, V))
        self.gate = nn.GRU(V, 3)          # unused by forward: converted all the same

    def forward(self, idx):
        h, _ = self.rnn(self.embed(idx))
        return self.head(h)


def test_convert_replaces_in_place_and_trains_to_the_same_losses():
    torch.manual_seed(0)
    original = CharModel()
    converted = copy.deepcopy(original)
    opt_ref = torch.optim.SGD(original.parameters(), lr=0.5)
    opt = torch.optim.SGD(converted.parameters(), lr=0.5)    # built before convert: must stay valid
    params_before = [id(p) for p in converted.parameters()]
    rng_before = torch.get_rng_state()
    assert rt.convert(converted) is converted
    assert torch.equal(rng_before, torch.get_rng_state())      # convert draws nothing
    assert type(converted.rnn) is rt.RNN and type(converted.gate) is rt.GRU
    assert [id(p) for p in converted.parameters()] == params_before
    gen = torch.Generator().manual_seed(1)
    batch = torch.randint(0, 11, (4, 9), generator=gen)
    losses_ref, losses = [], []
    for _ in range(5):
        for model, o, store in ((original, opt_ref, losses_ref), (converted, opt, losses)):
            o.zero_grad()
            logits = model(batch[:, :-1])
            loss = nn.functional.cross_entropy(logits.reshape(-1, 11), batch[:, 1:].reshape(-1))
            loss.backward()
            o.step()
            store.append(loss.item())
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-5)
    assert losses[-1] < losses[0]


def test_convert_on_a_bare_rnn_and_bad_arguments():
    m = nn.RNN(3, 4, bidirectional=True)
    new = rt.convert(m)
    assert type(new) is rt.RNN and new.weight_ih_l0_reverse is m.weight_ih_l0_reverse
    with pytest.raises(TypeError, match="torch.nn.Module"):
        rt.convert("not a model")


def test_bad_inputs():
    m = rt.RNN(3, 4)
    with pytest.raises(TypeError, match="float32 or torch.float64"):
        m(torch.ones(5, 2, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="hx must have the dtype"):
        m(torch.randn(5, 2, 3), torch.zeros(1, 2, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="input_size"):
        m(torch.randn(5, 2, 7))
    with pytest.raises(RuntimeError, match="hidden"):
        m(torch.randn(5, 2, 3), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="2D or 3D"):
        m(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match="nonlinearity"):
        rt.RNN(3, 4, nonlinearity="sigmoid")


# ---- LSTM and GRU ----

GATED_CONFIGS = [
    dict(),
    dict(num_layers=3),
    dict(bias=False),
    dict(batch_first=True, num_layers=2),
    dict(bidirectional=True),
    dict(bidirectional=True, num_layers=2, batch_first=True, bias=False),
]


def _states(cell, L, N, H, gen, dtype):
    """Random initial states: (h0, c0) for LSTM, h0 otherwise."""
    s = tuple(torch.randn(L, N, H, generator=gen, dtype=dtype) for _ in range(2 if cell == "LSTM" else 1))
    return s if cell == "LSTM" else s[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["h0zero", "h0given"])
@pytest.mark.parametrize("cfg", GATED_CONFIGS, ids=lambda c: "-".join(f"{k}_{v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_gated_match_torch_outputs_final_states_and_all_gradients(cell, cfg, with_hx, dtype):
    D, H, T, N = 5, 17, 6, 3
    ref, ours = _pair(D, H, dtype=dtype, cell=cell, **cfg)
    assert isinstance(ours, getattr(nn, cell))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((N, T, D) if cfg.get("batch_first") else (T, N, D), generator=gen, dtype=dtype)
    dirs = 2 if cfg.get("bidirectional") else 1
    hx = _states(cell, cfg.get("num_layers", 1) * dirs, N, H, gen, dtype) if with_hx else None
    o1, f1, g1 = _forward_backward(ref, x, hx)
    o2, f2, g2 = _forward_backward(ours, x, hx)
    assert isinstance(f2, tuple) == (cell == "LSTM")
    _assert_same(o2, o1, dtype, "output")
    _assert_same(f2, f1, dtype, "final state")
    assert len(g1) == (1 + (2 if cell == "LSTM" else 1) * with_hx + len(list(ref.parameters())))
    _assert_same(g2, g1, dtype)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_gated_unbatched_input_matches_torch(cell):
    ref, ours = _pair(4, 6, num_layers=2, bidirectional=True, dtype=torch.float64, cell=cell)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    hx = _states(cell, 4, 1, 6, gen, torch.float64)
    hx = tuple(h[:, 0] for h in hx) if cell == "LSTM" else hx[:, 0]
    for h in (None, hx):
        o1, f1 = ref(x, h)
        o2, f2 = ours(x, h)
        assert o2.shape == (5, 12)
        _assert_same(o2, o1, torch.float64)
        _assert_same(f2, f1, torch.float64)
        assert all(f.shape == (4, 6) for f in (f2 if cell == "LSTM" else (f2,)))


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_gated_gradcheck_float64_input_states_and_parameters(cell):
    m = getattr(rt, cell)(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    names = [n for n, _ in m.named_parameters()]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    states = [torch.randn(4, 2, 4, generator=gen, dtype=torch.float64, requires_grad=True)
              for _ in range(2 if cell == "LSTM" else 1)]
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]
    ns = len(states)

    def f(x, *rest):
        hx = tuple(rest[:ns]) if cell == "LSTM" else rest[0]
        out, fin = torch.func.functional_call(m, dict(zip(names, rest[ns:])), (x, hx))
        return (out, *fin) if cell == "LSTM" else (out, fin)
    assert torch.autograd.gradcheck(f, (x, *states, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", [dict(), dict(bidirectional=True, batch_first=True)], ids=["uni", "bi-bf"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_gated_dropout_between_layers_reproduces_torch_with_a_seed(cell, cfg, dtype):
    ref, ours = _pair(5, 8, num_layers=3, dropout=0.4, dtype=dtype, cell=cell, **cfg)
    x = torch.randn((4, 6, 5) if cfg.get("batch_first") else (6, 4, 5), dtype=dtype)
    torch.manual_seed(123)
    o1, f1, g1 = _forward_backward(ref, x, None)
    torch.manual_seed(123)            # same draws: torch applies the same dropout to the same tensors
    o2, f2, g2 = _forward_backward(ours, x, None)
    _assert_same(o2, o1, dtype, "output")
    _assert_same(f2, f1, dtype, "final state")
    _assert_same(g2, g1, dtype)
    torch.manual_seed(7)
    o3, _ = ours(x)
    assert not torch.allclose(o3, o2)                 # other draws, other output: dropout is really applied
    ref.eval()
    ours.eval()
    _assert_same(ours(x)[0], ref(x)[0], dtype)


# ---- PackedSequence input (all three cells) ----

def _packed_run(m, seqs, hx, enforce_sorted, dtype):
    """pack `seqs`, run m, backprop a fixed weighted sum of the packed output data and the final states."""
    seqs = [s.clone().requires_grad_(True) for s in seqs]
    states = () if hx is None else (hx if isinstance(hx, tuple) else (hx,))
    states = tuple(s.clone().requires_grad_(True) for s in states)
    packed = nn.utils.rnn.pack_sequence(seqs, enforce_sorted=enforce_sorted)
    out, fin = m(packed, None if hx is None else (states if isinstance(hx, tuple) else states[0]))
    assert isinstance(out, nn.utils.rnn.PackedSequence)
    finals = fin if isinstance(fin, tuple) else (fin,)
    loss = _weighted(out.data, -1, 1)
    for i, f in enumerate(finals):
        loss = loss + _weighted(f, 1 - i, -0.5)
    loss.backward()
    grads = {f"seq{i}": s.grad for i, s in enumerate(seqs)}
    grads.update({f"hx{i}": s.grad for i, s in enumerate(states)})
    grads.update({n: p.grad for n, p in m.named_parameters()})
    return out, fin, grads


def _assert_same_packed(a, b, dtype):
    _assert_same(a.data, b.data, dtype, "packed output")
    assert torch.equal(a.batch_sizes, b.batch_sizes)
    for u, v in ((a.sorted_indices, b.sorted_indices), (a.unsorted_indices, b.unsorted_indices)):
        assert (u is None and v is None) or torch.equal(u, v)


@pytest.mark.parametrize("with_hx", [False, True], ids=["h0zero", "h0given"])
@pytest.mark.parametrize("cfg", [dict(enforce_sorted=True, lens=(6, 4, 4, 1)),
                                 dict(enforce_sorted=False, lens=(3, 6, 1, 6, 2)),
                                 dict(enforce_sorted=False, lens=(5, 5, 5))],
                         ids=["sorted", "unsorted", "all-full"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_packed_sequence_matches_torch(cell, bidirectional, cfg, with_hx):
    dtype = torch.float64
    D, H, L = 3, 5, 2
    ref, ours = _pair(D, H, num_layers=L, bidirectional=bidirectional, dtype=dtype, cell=cell)
    gen = torch.Generator().manual_seed(4)
    seqs = [torch.randn(n, D, generator=gen, dtype=dtype) for n in cfg["lens"]]
    dirs = 2 if bidirectional else 1
    hx = _states(cell, L * dirs, len(seqs), H, gen, dtype) if with_hx else None
    o1, f1, g1 = _packed_run(ref, seqs, hx, cfg["enforce_sorted"], dtype)
    o2, f2, g2 = _packed_run(ours, seqs, hx, cfg["enforce_sorted"], dtype)
    _assert_same_packed(o2, o1, dtype)
    _assert_same(f2, f1, dtype, "final state")
    _assert_same(g2, g1, dtype)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_packed_sequence_with_dropout_reproduces_torch(cell):
    dtype = torch.float32
    ref, ours = _pair(3, 6, num_layers=3, dropout=0.5, bidirectional=True, dtype=dtype, cell=cell)
    gen = torch.Generator().manual_seed(5)
    seqs = [torch.randn(n, 3, generator=gen, dtype=dtype) for n in (2, 7, 4, 7, 1)]
    torch.manual_seed(9)
    o1, f1, g1 = _packed_run(ref, seqs, None, False, dtype)
    torch.manual_seed(9)              # torch drops on the packed data between layers; so must we
    o2, f2, g2 = _packed_run(ours, seqs, None, False, dtype)
    _assert_same_packed(o2, o1, dtype)
    _assert_same(f2, f1, dtype, "final state")
    _assert_same(g2, g1, dtype)


def test_packed_sequence_from_padded_batch_first_and_no_grad():
    ref, ours = _pair(4, 5, cell="GRU", batch_first=True)
    x = torch.randn(3, 6, 4)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([2, 6, 5]), batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        o2, h2 = ours(packed)
        o1, h1 = ref(packed)
    assert o2.data.grad_fn is None
    _assert_same_packed(o2, o1, torch.float32)
    _assert_same(h2, h1, torch.float32)
    p1, n1 = nn.utils.rnn.pad_packed_sequence(o1, batch_first=True)
    p2, n2 = nn.utils.rnn.pad_packed_sequence(o2, batch_first=True)
    assert torch.equal(n1, n2)
    _assert_same(p2, p1, torch.float32)


# ---- LSTM / GRU: module behaviour ----

@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_gated_state_dict_round_trips_both_ways(cell):
    torch.manual_seed(3)
    ref = getattr(nn, cell)(4, 6, num_layers=2, bidirectional=True)
    ours = getattr(rt, cell)(4, 6, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert ours.weight_ih_l1_reverse.shape == ((4 if cell == "LSTM" else 3) * 6, 12)
    ours.load_state_dict(ref.state_dict())
    back = getattr(nn, cell)(4, 6, num_layers=2, bidirectional=True)
    back.load_state_dict(ours.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v) and torch.equal(ours.state_dict()[k], v)
    x = torch.randn(3, 2, 4)
    _assert_same(ours(x)[0], ref(x)[0], torch.float32)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_gated_no_grad_path_and_in_place_detection(cell):
    ref, ours = _pair(3, 5, num_layers=2, cell=cell)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        o2, f2 = ours(x)
    assert o2.grad_fn is None and not o2.requires_grad
    o1, f1 = ref(x)
    _assert_same(o2, o1.detach(), torch.float32)
    _assert_same(f2, tuple(f.detach() for f in f1) if cell == "LSTM" else f1.detach(), torch.float32)
    out, _ = ours(x)
    with torch.no_grad():
        ours.weight_hh_l1.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


class Tagger(nn.Module):
    """Embedding -> 2-layer LSTM -> bidirectional GRU, beside an LSTM with projections -> Linear."""

    def __init__(self, V=11, E=6, H=8):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, num_layers=2, batch_first=True)
        self.gru = nn.GRU(H, H, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * H + 3, V)
        self.proj = nn.LSTM(E, H, proj_size=3, batch_first=True)

    def forward(self, idx):
        e = self.embed(idx)
        h, (h_n, c_n) = self.lstm(e)
        g, _ = self.gru(h, h_n)                      # the LSTM's (2, N, H) final states start both directions
        p, _ = self.proj(e)                          # (N, T, 3)
        return self.head(torch.cat([g, p], -1))


def test_convert_lstm_and_gru_model_trains_to_the_same_losses():
    torch.manual_seed(0)
    original = Tagger()
    converted = copy.deepcopy(original)
    opt_ref = torch.optim.Adam(original.parameters(), lr=0.05)
    opt = torch.optim.Adam(converted.parameters(), lr=0.05)    # built before convert: must stay valid
    params_before = [id(p) for p in converted.parameters()]
    rng_before = torch.get_rng_state()
    assert rt.convert(converted) is converted
    assert torch.equal(rng_before, torch.get_rng_state())      # convert draws nothing
    assert type(converted.lstm) is rt.LSTM and type(converted.gru) is rt.GRU
    assert type(converted.proj) is rt.LSTM and converted.proj.proj_size == 3     # projections convert too
    assert [id(p) for p in converted.parameters()] == params_before
    assert converted.gru.bidirectional and converted.lstm.batch_first and converted.lstm.num_layers == 2
    gen = torch.Generator().manual_seed(1)
    batch = torch.randint(0, 11, (4, 9), generator=gen)
    losses_ref, losses = [], []
    for _ in range(5):
        for model, o, store in ((original, opt_ref, losses_ref), (converted, opt, losses)):
            o.zero_grad()
            logits = model(batch[:, :-1])
            loss = nn.functional.cross_entropy(logits.reshape(-1, 11), batch[:, 1:].reshape(-1))
            loss.backward()
            o.step()
            store.append(loss.item())
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-5)
    assert losses[-1] < losses[0]


def test_convert_on_bare_lstm_and_gru():
    m = nn.LSTM(3, 4, num_layers=2, dropout=0.25, bias=False).double().eval()
    new = rt.convert(m)
    assert type(new) is rt.LSTM and new.weight_hh_l1 is m.weight_hh_l1 and not new.training
    assert new.dropout == 0.25 and not new.bias and new.weight_hh_l1.dtype == torch.float64
    g = nn.GRU(3, 4, batch_first=True)
    assert type(rt.convert(g)) is rt.GRU
    p = nn.LSTM(3, 4, proj_size=2, bidirectional=True)
    new = rt.convert(p)
    assert type(new) is rt.LSTM and new.proj_size == 2 and new.weight_hr_l0_reverse is p.weight_hr_l0_reverse
    x = torch.randn(5, 2, 3)
    for a, b in zip(torch.utils._pytree.tree_leaves(new(x)), torch.utils._pytree.tree_leaves(p(x))):
        torch.testing.assert_close(a, b, **TOL[torch.float32])


def test_gated_refusals_and_bad_inputs():
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        rt.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        rt.GRU(3, 4, proj_size=2)
    for cell in ("LSTM", "GRU"):
        m = getattr(rt, cell)(3, 4)
        with pytest.raises(RuntimeError, match=f"use torch.nn.{cell} on the GPU"):
            m(torch.empty(5, 2, 3, device="meta"))
        with pytest.raises(TypeError, match="float32 or torch.float64"):
            m(torch.ones(5, 2, 3, dtype=torch.int32))
        with pytest.raises(RuntimeError, match="input_size"):
            m(torch.randn(5, 2, 7))
        with pytest.raises(ValueError, match="2D or 3D"):
            m(torch.randn(5, 2, 3, 1))
    m = rt.LSTM(3, 4)
    h = torch.zeros(1, 2, 4)
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        m(torch.randn(5, 2, 3), h)
    with pytest.raises(TypeError, match="cx must have the dtype"):
        m(torch.randn(5, 2, 3), (h, h.double()))
    with pytest.raises(RuntimeError, match="hx and cx should also be 3-D"):
        m(torch.randn(5, 2, 3), (h, h[0]))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size"):
        m(torch.randn(5, 2, 3), (h, torch.zeros(1, 3, 4)))
    with pytest.raises(RuntimeError, match="hx should also be 2-D"):
        rt.GRU(3, 4)(torch.randn(5, 3), h)


def test_import_rnnfast_does_not_import_torch():
    code = "import sys, rnnfast, rnnfast.compat.cs231n; print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


# ---- DistributedDataParallel: two processes on gloo, localhost ----

_DDP_MODEL = textwrap.dedent("""
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rt.RNN(3, 8, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
            self.lstm = rt.LSTM(16, 5, batch_first=True, dtype=torch.float64)
            self.gru = rt.GRU(5, 8, bidirectional=True, batch_first=True, dtype=torch.float64)

        def forward(self, x):
            return self.gru(self.lstm(self.rnn(x)[0])[0])
""")

_DDP_WORKER = textwrap.dedent("""
    import sys
    import torch, torch.distributed as dist
    from torch import nn
    import rnnfast.torch as rt
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)

    exec(sys.argv[5])                                   # defines Stack (_DDP_MODEL)

    def build():
        torch.manual_seed(0)
        return Stack()

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 5, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 5, 16, generator=gen, dtype=torch.float64)
    per = x.shape[0] // world
    model = torch.nn.parallel.DistributedDataParallel(build())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = ((model(x[rank * per:(rank + 1) * per])[0] - y[rank * per:(rank + 1) * per]) ** 2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.module.named_parameters()}
    opt.step()
    torch.save({"grads": grads, "params": {n: p.detach().clone() for n, p in model.module.named_parameters()}},
               out)
    dist.destroy_process_group()
""")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_data_parallel_two_processes_gloo(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    outs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    cmd = [sys.executable, "-X", "faulthandler", "-c", _DDP_WORKER]
    procs = [subprocess.Popen(cmd + [str(r), "2", str(port), str(outs[r]), _DDP_MODEL], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = [p.returncode for p in procs]
    assert codes == [0, 0], f"exit codes {codes}\n" + "\n".join(logs)
    r0, r1 = (torch.load(o) for o in outs)

    # one process, the combined batch, same initial weights and data
    torch.manual_seed(0)
    scope = {"nn": nn, "rt": rt, "torch": torch}
    exec(_DDP_MODEL, scope)
    single = scope["Stack"]()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 5, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 5, 16, generator=gen, dtype=torch.float64)
    opt = torch.optim.SGD(single.parameters(), lr=0.1)
    ((single(x)[0] - y) ** 2).mean().backward()
    grads = {n: p.grad.clone() for n, p in single.named_parameters()}
    opt.step()
    for n, p in single.named_parameters():
        torch.testing.assert_close(r0["grads"][n], r1["grads"][n], rtol=0, atol=0)    # averaged: identical
        torch.testing.assert_close(r0["params"][n], r1["params"][n], rtol=0, atol=0)
        torch.testing.assert_close(r0["grads"][n], grads[n], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(r0["params"][n], p.detach(), rtol=1e-10, atol=1e-12)
