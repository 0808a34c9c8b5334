"""Tests of rnnfast.torch (RNN drop-in, convert) against torch.nn.RNN as the external oracle.

What it is: parity of outputs and every gradient with torch.nn.RNN over the constructor's options,
gradcheck in float64, dropout, convert() on a model trained a few steps, state_dict round trips, bad input,
and two-process DistributedDataParallel on gloo. What it is not: a timing test
(benchmarks/bench_torch_dropin.py). Skipped entirely when torch is not installed.
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


def _pair(*args, dtype=torch.float32, **kw):
    """A torch.nn.RNN and an rnnfast.torch.RNN with identical weights (same seed, same init)."""
    torch.manual_seed(0)
    ref = nn.RNN(*args, dtype=dtype, **kw)
    torch.manual_seed(0)
    ours = rt.RNN(*args, dtype=dtype, **kw)
    for (na, a), (nb, b) in zip(ref.named_parameters(), ours.named_parameters()):
        assert na == nb and torch.equal(a, b)
    return ref, ours


def _forward_backward(m, x, hx):
    x = x.clone().requires_grad_(True)
    hx = None if hx is None else hx.clone().requires_grad_(True)
    out, h_n = m(x, hx)
    g_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    g_h = torch.linspace(1, -0.5, h_n.numel(), dtype=out.dtype).reshape(h_n.shape)
    (out * g_out).sum().add((h_n * g_h).sum()).backward()
    grads = {"input": x.grad}
    if hx is not None:
        grads["hx"] = hx.grad
    grads.update({n: p.grad for n, p in m.named_parameters()})
    return out, h_n, grads


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
        self.gate = nn.GRU(V, 3)          # not converted: rnnfast has no GRU kernel yet

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
    assert type(converted.rnn) is rt.RNN and type(converted.gate) is nn.GRU
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


def test_packed_sequence_gives_a_clear_error():
    m = rt.RNN(3, 4)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3), [5, 3])
    with pytest.raises(TypeError, match="pad_packed_sequence"):
        m(packed)


def test_bad_inputs():
    m = rt.RNN(3, 4)
    with pytest.raises(TypeError, match="float32 or torch.float64"):
        m(torch.randn(5, 2, 3).half())
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


def test_import_rnnfast_does_not_import_torch():
    code = "import sys, rnnfast, rnnfast.compat.cs231n; print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


# ---- DistributedDataParallel: two processes on gloo, localhost ----

_DDP_WORKER = textwrap.dedent("""
    import sys
    import torch, torch.distributed as dist
    from torch import nn
    import rnnfast.torch as rt
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)

    def build():
        torch.manual_seed(0)
        return nn.Sequential(rt.RNN(3, 8, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64))

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


def test_distributed_data_parallel_two_processes_gloo(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    outs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    cmd = [sys.executable, "-X", "faulthandler", "-c", _DDP_WORKER]
    procs = [subprocess.Popen(cmd + [str(r), "2", str(port), str(outs[r])], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
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
    single = nn.Sequential(rt.RNN(3, 8, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64))
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
