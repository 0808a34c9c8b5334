"""rnnfast.torch drop-ins against torch.nn.RNN / LSTM / GRU on the features beyond plain forward/backward.

What it is: double backward (gradient penalties), batched gradients (is_grads_batched), zero-length and empty
batches, hx forms, packed input with batch_first, flatten_parameters, deepcopy / pickle / torch.save+load
(weights_only too), state_dict both ways, weight norm and re-assigned or tied weights, dropout with projections,
bfloat16/float16, torch.compile and TorchScript refusal; torch's own modules are the oracle throughout.
What it is not: the LSTM-projection kernel tests (test_torch_lstm_proj.py) or the basic parity grid
(test_torch_dropin.py).
"""
import copy
import io
import pickle

import pytest

torch = pytest.importorskip("torch")
rt = pytest.importorskip("rnnfast.torch")
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402

F64 = dict(rtol=1e-9, atol=1e-11)
F32 = dict(rtol=1e-4, atol=2e-5)
CELLS = [("RNN", {}), ("LSTM", {}), ("GRU", {}), ("LSTM", dict(proj_size=2))]
CELL_IDS = ["RNN", "LSTM", "GRU", "LSTM-proj"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pair(cell, *args, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    ref = getattr(nn, cell)(*args, dtype=dtype, **kw)
    ours = getattr(rt, cell)(*args, dtype=dtype, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _close(a, b, tol=F64):
    a, b = tree_leaves(a), tree_leaves(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


def _loss(out):
    return sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).reshape(t.shape)).sum()
               for t in tree_leaves(out) if t.is_floating_point())


# ---- double backward ----

def _penalty_grads(m, x, packed_lengths=None):
    """A gradient penalty: loss = f(out) + |d f / d x|^2, backward through the gradient (create_graph=True).
    Returns (the penalty's input gradient, every parameter's gradient, x's gradient)."""
    xx = x.clone().requires_grad_(True)
    inp = xx if packed_lengths is None else pack_padded_sequence(xx, packed_lengths, enforce_sorted=False)
    out = m(inp)
    f = _loss(out)
    g, = torch.autograd.grad(f, xx, create_graph=True)
    m.zero_grad()
    (f + g.pow(2).sum()).backward()
    return [g.detach()] + [p.grad.clone() for p in m.parameters()] + [xx.grad]


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradient_penalty_double_backward_matches_torch(cell, kw, bidirectional):
    ref, ours = _pair(cell, 3, 4, num_layers=2, bidirectional=bidirectional, **kw)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    _close(_penalty_grads(ours, x), _penalty_grads(ref, x))


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_gradient_penalty_through_a_packed_sequence_matches_torch(cell, kw):
    ref, ours = _pair(cell, 3, 4, bidirectional=True, **kw)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 6, 2])
    _close(_penalty_grads(ours, x, lengths), _penalty_grads(ref, x, lengths))


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_gradgradcheck_input_states_and_parameters(cell, kw):
    _, m = _pair(cell, 2, 3, **kw)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    params = tuple(m.parameters())
    assert torch.autograd.gradgradcheck(lambda x, *p: tuple(tree_leaves(m(x))), (x, *params))


# ---- batched gradients (vmap over the backward) ----

@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_is_grads_batched_matches_torch(cell, kw):
    ref, ours = _pair(cell, 3, 4, num_layers=2, **kw)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    got = []
    for m in (ours, ref):
        xx = x.clone().requires_grad_(True)
        out, _ = m(xx)
        v = torch.randn(3, *out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
        got.append(torch.autograd.grad(out, [xx, *m.parameters()], v, is_grads_batched=True))
    _close(got[0], got[1])


# ---- zero-length sequences and empty batches ----

@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("shape,batch_first", [((0, 2, 3), False), ((2, 0, 3), True), ((0, 3), False)],
                         ids=["time-major", "batch-first", "unbatched"])
def test_zero_length_sequence_raises_like_torch(cell, shape, batch_first):
    ref, ours = _pair(cell, 3, 4, batch_first=batch_first)
    msgs = []
    for m in (ref, ours):
        with pytest.raises(RuntimeError) as e:
            m(torch.zeros(*shape, dtype=torch.float64))
        msgs.append(str(e.value))
    assert msgs[1] == msgs[0] == "Expected sequence length to be larger than 0 in RNN"


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_empty_batch_returns_empty_outputs_like_torch(cell, kw):
    ref, ours = _pair(cell, 3, 4, **kw)
    x = torch.zeros(5, 0, 3, dtype=torch.float64)
    for a, b in zip(tree_leaves(ours(x)), tree_leaves(ref(x))):
        assert a.shape == b.shape and a.dtype == b.dtype


# ---- hx forms, packed with batch_first, flatten_parameters ----

@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_hx_forms_and_packed_batch_first_match_torch(cell, kw):
    ref, ours = _pair(cell, 3, 4, num_layers=2, batch_first=True, **kw)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 3, dtype=torch.float64, generator=g)
    P = kw.get("proj_size") or 4
    h = torch.randn(2, 3, P, dtype=torch.float64, generator=g)
    hx = (h, torch.randn(2, 3, 4, dtype=torch.float64, generator=g)) if cell == "LSTM" else h
    packed = pack_padded_sequence(x, torch.tensor([2, 5, 3]), batch_first=True, enforce_sorted=False)
    for args in [(x,), (x, None), (x, hx), (packed,), (packed, hx)]:
        _close(ours(*args), ref(*args))
    ours.flatten_parameters()
    ref.flatten_parameters()
    _close(ours(x, hx), ref(x, hx))


# ---- copies, pickling, save/load, state dicts ----

@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_deepcopy_pickle_and_torch_save_load_like_torch(cell, kw):
    ref, ours = _pair(cell, 3, 4, bidirectional=True, **kw)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    want = ours(x)
    for m in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert type(m) is type(ours)
        _close(m(x), want)
    buf = io.BytesIO()
    torch.save(ours, buf)
    for weights_only in (False, True):
        buf.seek(0)
        with torch.serialization.safe_globals([type(ours)]):
            _close(torch.load(buf, weights_only=weights_only)(x), want)
    for m in (ours, ref):       # without the class allow-listed, weights_only refuses both the same way
        b = io.BytesIO()
        torch.save(m, b)
        b.seek(0)
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            torch.load(b, weights_only=True)


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_state_dict_round_trips_both_ways_through_files(cell, kw):
    ref, ours = _pair(cell, 3, 4, num_layers=2, bidirectional=True, **kw)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(9)
    fresh = getattr(nn, cell)(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **kw)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    _close(fresh(x), ref(x))
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(9)
    back = getattr(rt, cell)(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **kw)
    back.load_state_dict(torch.load(buf, weights_only=True))
    assert list(back.state_dict()) == list(ref.state_dict())
    _close(back(x), ref(x))


# ---- weight norm, re-assigned and tied weights ----

def _grads_after(m, x):
    m.zero_grad()
    out = m(x)
    _loss(out).backward()
    return [out] + [p.grad for p in m.parameters()]


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("kind", ["parametrizations", "hook"])
def test_weight_norm_matches_torch(cell, kw, kind):
    ref, ours = _pair(cell, 3, 4, **kw)
    for m in (ref, ours):
        if kind == "parametrizations":
            nn.utils.parametrizations.weight_norm(m, "weight_hh_l0")
        else:
            nn.utils.weight_norm(m, "weight_ih_l0")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    _close(_grads_after(ours, x), _grads_after(ref, x))


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_reassigned_and_tied_weights_match_torch(cell, kw):
    ref, ours = _pair(cell, 4, 4, num_layers=2, **kw)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    for m in (ref, ours):
        with torch.no_grad():
            m.weight_hh_l0 = nn.Parameter(m.weight_hh_l0 * 0.5)     # re-assigned
        m.weight_hh_l1 = m.weight_hh_l0                              # tied: one Parameter in two places
        assert m.weight_hh_l1 is m.weight_hh_l0
    _close(_grads_after(ours, x), _grads_after(ref, x))


# ---- dropout with projections (the other cells: test_torch_dropin.py) ----

def test_lstm_projection_dropout_reproduces_torchs_draws():
    ref, ours = _pair("LSTM", 3, 5, num_layers=3, dropout=0.4, proj_size=2, bidirectional=True)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    torch.manual_seed(11)
    want = _grads_after(ref, x)
    torch.manual_seed(11)
    _close(_grads_after(ours, x), want)


# ---- half precision ----

@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_half_inputs_compute_in_float32_and_return_their_dtype(cell, kw, dtype):
    ref, ours = _pair(cell, 3, 4, num_layers=2, dtype=torch.float32, **kw)
    ours.to(dtype)
    ref32 = copy.deepcopy(ref)
    with torch.no_grad():                     # torch in float32 on the same (rounded) weights: the oracle
        for p, q in zip(ref32.parameters(), ours.parameters()):
            p.copy_(q.float())
    x = torch.randn(5, 2, 3).to(dtype)
    xx = x.clone().requires_grad_(True)
    out = ours(xx)
    _loss(out).backward()
    x32 = x.float().requires_grad_(True)
    want = ref32(x32)
    _loss(want).backward()
    for a, b in zip(tree_leaves(out), tree_leaves(want)):
        assert a.dtype == dtype
        eps = torch.finfo(dtype).eps       # the float32 result rounded once: at most one half-precision ulp apart
        torch.testing.assert_close(a.float(), b.to(dtype).float(), rtol=eps, atol=eps * 1e-2)
    assert xx.grad.dtype == dtype and all(p.grad.dtype == dtype for p in ours.parameters())
    torch.testing.assert_close(xx.grad.float(), x32.grad, rtol=2e-2, atol=2e-2)
    ref.to(dtype)                             # and torch's own half module agrees to half precision
    for a, b in zip(tree_leaves(ours(x)), tree_leaves(ref(x))):
        torch.testing.assert_close(a.float(), b.float(), rtol=5e-2, atol=5e-2)


# ---- torch.compile and TorchScript ----

@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("allow_rnn", [False, True], ids=["default", "allow_rnn"])
def test_torch_compile_graph_breaks_around_the_drop_in_and_matches_eager(cell, kw, allow_rnn):
    """Dynamo graph-breaks at torch's RNN classes by default (config.allow_rnn); when told to trace them, it
    stops at the drop-in's forward with rnnfast's reason. Either way the compiled model gives eager's numbers."""
    dynamo = pytest.importorskip("torch._dynamo")
    from torch._dynamo.utils import counters
    _, rnn = _pair(cell, 3, 4, **kw)
    model = nn.Sequential(nn.Linear(3, 3, dtype=torch.float64), rnn)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with dynamo.config.patch(allow_rnn=allow_rnn):
        dynamo.reset()
        counters.clear()
        compiled = torch.compile(model, backend="eager")
        _close(compiled(x), model(x))
        reasons = " ".join(counters["graph_break"])
        assert ("rnnfast.torch runs its recurrence eagerly" if allow_rnn else "Dynamo does not support RNN") in reasons
        xx = x.clone().requires_grad_(True)
        _loss(compiled(xx)).backward()
    want = x.clone().requires_grad_(True)
    _loss(model(want)).backward()
    _close(xx.grad, want.grad)


@pytest.mark.parametrize("cell,kw", CELLS, ids=CELL_IDS)
def test_torchscript_is_refused_with_the_reason(cell, kw):
    _, m = _pair(cell, 3, 4, **kw)
    with pytest.raises(RuntimeError, match=r"cannot be compiled by TorchScript .*use torch.compile"):
        torch.jit.script(m)
    with pytest.raises(RuntimeError, match="cannot be compiled by TorchScript"):
        torch.jit.trace(m, torch.randn(5, 2, 3, dtype=torch.float64))
