"""Tests of the native training-step ops (rnnfast._C linear_xent, gather/scatter, optimizers, clipping) and
of the paths that use them (topologies' loss, Trainer.step/tbptt over flat buffers, CharLM), each against
its NumPy reference path (nn.set_native_ops(False)) and, where it applies, torch. Not the recurrent kernels
(test_backends.py) nor checkpoint-file robustness (test_train.py, test_reliability*.py)."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import rnnfast
from rnnfast import nn, train
from rnnfast.nn import Linear, linear_cross_entropy, softmax_cross_entropy
from rnnfast.topologies import ManyToMany, ManyToOne, OneToMany, Seq2Seq

pytestmark = pytest.mark.skipif(nn.native_ops() is None, reason="the CPU extension (native ops) is not built")
_C = nn.native_ops()
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


@contextlib.contextmanager
def reference():
    was = nn.set_native_ops(False)
    try:
        yield
    finally:
        nn.set_native_ops(was)


def grads_of(m):
    return {k: v.copy() for k, v in m.grads.items()}


def assert_dicts_close(a, b, dtype):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], err_msg=k, **TOL[dtype])


# ---- the fused head + softmax cross-entropy ----

# the last two are cut into row groups that rnnfast's threads share (train_ops.cpp, linear_xent): 8 groups
# of 200 rows (the char-LM step at N=32) and 2 uneven groups
XENT = [(T, N, K, V) for T, N, K, V in [(1, 1, 1, 1), (7, 3, 5, 11), (7, 1, 31, 97), (3, 32, 65, 2),
                                        (50, 32, 128, 96), (45, 13, 64, 50)]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("masking", ["none", "bool", "weights", "ignore"])
@pytest.mark.parametrize("T,N,K,V", XENT, ids=[f"T{t}-N{n}-K{k}-V{v}" for t, n, k, v in XENT])
def test_linear_xent_matches_reference(T, N, K, V, masking, reduction, dtype, isa):
    """In every kernel build (on the vector ones the head's three products run in the small-GEMM kernel, the
    weight gradient with its first operand transposed: every row and column tail of it is among these shapes)."""
    rng = np.random.default_rng(T * 1000 + N * 100 + K + V)
    head = Linear(K, V, dtype=dtype, seed=1)
    h = rng.standard_normal((T, N, K)).astype(dtype)
    y = rng.integers(0, V, (T, N))
    mask, ignore = None, None
    if masking == "bool":
        mask = rng.random((T, N)) > 0.3
    elif masking == "weights":
        mask = rng.random((T, N)).astype(dtype)
    elif masking == "ignore":
        ignore = V - 1
    head.grads["weight"][...] = 0.5          # accumulation, not overwrite
    loss, dh = linear_cross_entropy(head, h, y, mask=mask, reduction=reduction, ignore_index=ignore)
    got = grads_of(head)
    head.grads["weight"][...] = 0.5
    head.grads["bias"][...] = 0.0
    logits = head.forward(h)                 # the reference: head, softmax_cross_entropy, head backward
    rl, dl = softmax_cross_entropy(logits, y, mask=mask, reduction=reduction, ignore_index=ignore)
    rdh = head.backward(dl)
    np.testing.assert_allclose(loss, rl, **TOL[dtype])
    np.testing.assert_allclose(dh, rdh, **TOL[dtype])
    assert_dicts_close(got, grads_of(head), dtype)
    assert dh.dtype == dtype and dh.shape == h.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_linear_xent_row_groups_give_the_same_bits_for_any_thread_count(dtype):
    """The row groups are fixed by the problem's size, never by the thread count, and their parts are added in
    group order: loss, dh, dW and db are bit-for-bit the same on one thread and on two."""
    rng = np.random.default_rng(4)
    head = Linear(128, 96, dtype=dtype, seed=2)
    h = rng.standard_normal((50, 32, 128)).astype(dtype)
    y = rng.integers(0, 96, (50, 32))
    mask = rng.random((50, 32)) > 0.2
    out = []
    for threads in (1, 2):
        rnnfast.set_num_threads(threads)
        try:
            head.zero_grad()
            loss, dh = linear_cross_entropy(head, h, y, mask=mask, reduction="mean")
            out.append((loss, dh, grads_of(head)))
        finally:
            rnnfast.set_num_threads(2)
    (l1, dh1, g1), (l2, dh2, g2) = out
    assert l1 == l2
    np.testing.assert_array_equal(dh1, dh2)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)


def test_linear_xent_2d_no_bias_and_stable_for_huge_logits():
    rng = np.random.default_rng(0)
    head = Linear(4, 6, bias=False, dtype=np.float64, seed=0)
    head.params["weight"] *= 1e4              # logits of order 1e4: log-sum-exp must not overflow
    h = rng.standard_normal((5, 4))
    y = rng.integers(0, 6, 5)
    loss, dh = linear_cross_entropy(head, h, y)
    g = head.grads["weight"].copy()
    head.zero_grad()
    with reference():
        rl, rdh = linear_cross_entropy(head, h, y)
    assert np.isfinite(loss) and np.all(np.isfinite(dh))
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(dh, rdh, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(g, head.grads["weight"], rtol=1e-9, atol=1e-9)


def test_linear_xent_loss_by_hand():
    head = Linear(1, 2, dtype=np.float64, seed=0)
    head.params["weight"][...] = [[1.0], [-1.0]]
    head.params["bias"][...] = 0.0
    h = np.array([[[2.0]], [[0.0]]])          # T=2, N=1: logits (2, -2) and (0, 0)
    loss, _ = linear_cross_entropy(head, h, np.array([[0], [1]]), reduction="sum")
    assert loss == pytest.approx(np.log1p(np.exp(-4.0)) + np.log(2.0), rel=1e-14)


def test_linear_xent_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    head = Linear(8, 13, dtype=np.float64, seed=2)
    h = rng.standard_normal((6, 4, 8))
    y = rng.integers(0, 13, (6, 4))
    loss, dh = linear_cross_entropy(head, h, y, reduction="mean")
    th = torch.tensor(h, requires_grad=True)
    lin = torch.nn.Linear(8, 13).double()
    lin.load_state_dict({k: torch.tensor(v) for k, v in head.params.items()})
    tl = torch.nn.functional.cross_entropy(lin(th).reshape(-1, 13), torch.tensor(y).reshape(-1))
    tl.backward()
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
    np.testing.assert_allclose(dh, th.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(head.grads["weight"], lin.weight.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(head.grads["bias"], lin.bias.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_linear_xent_bad_input_changes_nothing():
    head = Linear(3, 4, dtype=np.float32, seed=0)
    h = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="outside the classes"):
        linear_cross_entropy(head, h, np.array([[0, 4], [1, 2]]))
    with pytest.raises(ValueError, match=r"targets must have shape \(2, 2\)"):
        linear_cross_entropy(head, h, np.array([0, 1]))
    with pytest.raises(TypeError, match="dtype"):
        linear_cross_entropy(head, h.astype(np.float64), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="non-negative"):
        linear_cross_entropy(head, h, np.zeros((2, 2), np.int64), mask=-np.ones((2, 2)))
    assert not any(g.any() for g in head.grads.values())
    loss, _ = linear_cross_entropy(head, h, np.array([[0, 99], [1, 2]]), mask=np.array([[1, 0], [1, 1]]))
    assert np.isfinite(loss)                  # a masked target may hold anything
    W = np.zeros((4, 3), np.float32)          # the binding's own checks
    with pytest.raises(ValueError, match=r"weight must have shape \(V, K\)"):
        _C.linear_xent(h.reshape(4, 3), W[:, :2], None, np.zeros(4, np.int64), None, None, "sum", 1, None, None, True)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.linear_xent(h.reshape(4, 3), W, None, np.zeros(4, np.int64), None, None, "sum", 1,
                       np.zeros((3, 4), np.float32).T, None, True)
    with pytest.raises(ValueError, match="reduction"):
        _C.linear_xent(h.reshape(4, 3), W, None, np.zeros(4, np.int64), None, None, "max", 1, None, None, True)


# ---- token rows ----

def test_gather_scatter_one_hot_match_numpy():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        table = rng.standard_normal((9, 5)).astype(dtype)
        ids = rng.integers(0, 9, (4, 3))
        np.testing.assert_array_equal(_C.gather_rows(table, ids), table[ids])
        rows = rng.standard_normal((12, 5)).astype(dtype)
        want = table.copy()
        np.add.at(want, ids.ravel(), rows)
        got = table.copy()
        _C.scatter_add_rows(got, ids, rows)
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-14)
        oh = _C.one_hot(ids, 9, dtype)
        assert oh.dtype == dtype and oh.shape == (4, 3, 9)
        np.testing.assert_array_equal(oh, np.eye(9, dtype=dtype)[ids])
    with pytest.raises(ValueError, match="outside"):
        _C.gather_rows(table, np.array([0, 9]))
    with pytest.raises(ValueError, match="outside"):
        _C.scatter_add_rows(table, np.array([-1]), rows[:1])
    with pytest.raises(TypeError, match="integer"):
        _C.one_hot(np.array([0.5]), 3, np.float32)


# ---- optimizers and clipping over flat buffers ----

OPTS = [
    (train.SGD, dict(lr=0.1)),
    (train.SGD, dict(lr=0.1, momentum=0.9)),
    (train.SGD, dict(lr=0.1, momentum=0.5, weight_decay=0.01)),
    (train.Adagrad, dict(lr=0.1)),
    (train.RMSprop, dict(lr=0.01, alpha=0.9)),
    (train.Adam, dict(lr=0.01, betas=(0.8, 0.99))),
]
OPT_IDS = [f"{c.__name__}-{i}" for i, (c, _) in enumerate(OPTS)]


def _run_optimizer(cls, kw, dtype, native, steps=6, flat=True):
    m = ManyToMany(vocab_size=7, hidden_size=5, output_size=7, dtype=dtype, seed=1)
    if flat:
        assert train.flatten_parameters(m) is not None
    was = nn.set_native_ops(native)
    try:
        opt = cls(m, **kw)
        rng = np.random.default_rng(0)
        for _ in range(steps):
            opt.zero_grad()
            for g in m.grads.values():
                g[...] = rng.standard_normal(g.shape)
            opt.step()
    finally:
        nn.set_native_ops(was)
    return m, opt


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cls,kw", OPTS, ids=OPT_IDS)
def test_native_optimizer_equals_numpy_bitwise(cls, kw, dtype):
    m1, o1 = _run_optimizer(cls, kw, dtype, native=True)
    m2, o2 = _run_optimizer(cls, kw, dtype, native=False)
    assert "_flat_cache" in o1.__dict__ or not o1._SLOTS     # the native path ran
    for k in m1.params:
        np.testing.assert_array_equal(m1.params[k], m2.params[k], err_msg=k)
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k], err_msg=k)


@pytest.mark.parametrize("cls,kw", OPTS, ids=OPT_IDS)
def test_native_optimizer_matches_torch(cls, kw):
    torch = pytest.importorskip("torch")
    m, _ = _run_optimizer(cls, kw, np.float64, native=True, steps=0)
    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in m.params.items()}
    tkw = dict(kw)
    opt = cls(m, **kw)
    topt = getattr(torch.optim, cls.__name__)(list(tp.values()), **tkw)
    rng = np.random.default_rng(1)
    for _ in range(5):
        opt.zero_grad()
        for k, g in m.grads.items():
            g[...] = rng.standard_normal(g.shape)
            tp[k].grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
    for k in m.params:
        np.testing.assert_allclose(m.params[k], tp[k].detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("cls,kw", OPTS, ids=OPT_IDS)
def test_native_optimizer_resume_is_bitwise(cls, kw):
    full, _ = _run_optimizer(cls, kw, np.float32, native=True, steps=6)
    m, opt = _run_optimizer(cls, kw, np.float32, native=True, steps=0)
    rng = np.random.default_rng(0)

    def one(o, model):
        o.zero_grad()
        for g in model.grads.values():
            g[...] = rng.standard_normal(g.shape)
        o.step()

    for _ in range(3):
        one(opt, m)
    state = {k: v.copy() for k, v in opt.state_dict().items()}
    params = m.state_dict()
    m2 = ManyToMany(vocab_size=7, hidden_size=5, output_size=7, dtype=np.float32, seed=5)
    m2.load_state_dict(params)
    train.flatten_parameters(m2)
    opt2 = cls(m2, **kw)
    opt2.load_state_dict(state)               # per-name arrays, re-packed into flat buffers on the next step
    for _ in range(3):
        one(opt2, m2)
    for k in full.params:
        np.testing.assert_array_equal(m2.params[k], full.params[k], err_msg=k)


def test_unflattened_model_takes_the_numpy_path_with_the_same_numbers():
    m1, _ = _run_optimizer(train.Adam, dict(lr=0.01), np.float32, native=True, flat=False)
    m2, _ = _run_optimizer(train.Adam, dict(lr=0.01), np.float32, native=True, flat=True)
    for k in m1.params:
        np.testing.assert_array_equal(m1.params[k], m2.params[k], err_msg=k)


def test_flatten_keeps_values_and_survives_load_state_dict():
    m = ManyToMany(vocab_size=7, hidden_size=5, output_size=7, seed=1)
    before = m.state_dict()
    fb = train.flatten_parameters(m)
    assert fb.P.size == sum(v.size for v in before.values())
    for k, v in before.items():
        np.testing.assert_array_equal(m.params[k], v)
        assert np.shares_memory(m.params[k], fb.P) and np.shares_memory(m.grads[k], fb.G)
    m.load_state_dict({k: v + 1 for k, v in before.items()})
    assert train.flat_buffers(m) is not fb   # the replaced arrays are packed again
    fb2 = train.flat_buffers(m)
    for k, v in before.items():
        np.testing.assert_array_equal(m.params[k], v + 1)
        assert np.shares_memory(m.params[k], fb2.P)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_native_clipping_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    for fn, arg in ((train.clip_grad_norm, 0.5), (train.clip_grad_value, 0.3), (train.clip_grad_norm, 1e9)):
        m = ManyToMany(vocab_size=7, hidden_size=5, output_size=7, dtype=dtype, seed=1)
        train.flatten_parameters(m)
        for g in m.grads.values():
            g[...] = rng.standard_normal(g.shape)
        ref = {k: v.copy() for k, v in m.grads.items()}
        r_out = fn(ref, arg)
        out = fn(m, arg)
        if fn is train.clip_grad_norm:
            assert out == pytest.approx(r_out, rel=1e-12)
        for k in ref:
            np.testing.assert_allclose(m.grads[k], ref[k], rtol=1e-6 if dtype == np.float32 else 1e-13, err_msg=k)
    g = np.array([np.nan, 2.0, -2.0, 0.1], dtype)
    _C.clip_value(g, 1.0)
    assert np.isnan(g[0]) and list(g[1:]) == [1.0, -1.0, np.asarray(0.1, dtype)]
    assert _C.all_finite(np.ones(17, dtype)) and not _C.all_finite(np.r_[np.ones(16), np.inf].astype(dtype))


def test_optimizer_ops_validate():
    p = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="as many values"):
        _C.adam(p, np.zeros(3, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), 0.1, 0.9, 0.999, 1e-8, 1)
    with pytest.raises(TypeError, match="dtype"):
        _C.sgd(p, np.zeros(4), None, 0.1, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="writable"):
        ro = np.zeros(4, np.float32)
        ro.flags.writeable = False
        _C.adagrad(ro, p, np.zeros(4, np.float32), 0.1, 1e-10)
    with pytest.raises(ValueError, match="t "):
        _C.adam(p, p, p.copy(), p.copy(), 0.1, 0.9, 0.999, 1e-8, 0)


# ---- the paths users run ----

CELLS = ["rnn", "lstm", "gru"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("inputs", ["onehot", "embed"])
def test_many_to_many_loss_native_equals_reference(cell, inputs):
    rng = np.random.default_rng(0)
    kw = dict(vocab_size=13, hidden_size=6, output_size=13, num_layers=2, cell=cell, dtype=np.float64, seed=3,
              embed_size=4 if inputs == "embed" else None)
    x, y = rng.integers(0, 13, (7, 3)), rng.integers(0, 13, (7, 3))
    mask = rng.random((7, 3)) > 0.2
    m = ManyToMany(**kw)
    loss = m.loss(x, y, mask=mask)
    g = grads_of(m)
    m.zero_grad()
    with reference():
        rl = m.loss(x, y, mask=mask)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    assert_dicts_close(g, grads_of(m), np.float64)


def test_other_topologies_loss_native_equals_reference():
    rng = np.random.default_rng(1)
    cases = [
        (ManyToOne(hidden_size=5, output_size=4, vocab_size=9, dtype=np.float64, seed=0),
         (rng.integers(0, 9, (6, 3)), rng.integers(0, 4, 3)), dict(lengths=np.array([6, 2, 4]))),
        (OneToMany(code_size=3, hidden_size=5, vocab_size=8, dtype=np.float64, seed=0, feed_code=True),
         (rng.standard_normal((3, 3)), rng.integers(0, 8, (5, 3))), dict(mask=rng.random((5, 3)) > 0.3)),
        (Seq2Seq(src_vocab=7, tgt_vocab=8, hidden_size=5, num_layers=2, dtype=np.float64, seed=0),
         (rng.integers(0, 7, (4, 3)), rng.integers(0, 8, (5, 3))), dict(src_lengths=np.array([4, 1, 3]))),
        (Seq2Seq(src_vocab=7, tgt_vocab=8, hidden_size=5, cell="lstm", dtype=np.float64, seed=0),
         (rng.integers(0, 7, (4, 3)), rng.integers(0, 8, (5, 3))), dict(src_lengths=np.array([4, 1, 3]))),
    ]
    for m, args, kw in cases:
        m.zero_grad()
        loss = m.loss(*args, **kw)
        g = grads_of(m)
        m.zero_grad()
        with reference():
            rl = m.loss(*args, **kw)
        np.testing.assert_allclose(loss, rl, rtol=1e-12, err_msg=type(m).__name__)
        assert_dicts_close(g, grads_of(m), np.float64)


def _trainer_run(native, cell="rnn", steps=4, clip_norm=5.0, tbptt=False):
    was = nn.set_native_ops(native)
    try:
        m = ManyToMany(vocab_size=11, hidden_size=8, output_size=11, cell=cell, seed=2)
        t = train.Trainer(m, train.Adam(m, lr=0.01), clip_norm=clip_norm, progress=False)
        rng = np.random.default_rng(0)
        losses = []
        for _ in range(steps):
            x, y = rng.integers(0, 11, (9, 4)), rng.integers(0, 11, (9, 4))
            if tbptt:
                losses += t.tbptt(x, y, k=4)[0]
            else:
                losses.append(t.step(x, y))
    finally:
        nn.set_native_ops(was)
    return m, t, losses


@pytest.mark.parametrize("cell", CELLS)
def test_trainer_step_native_equals_reference(cell):
    m1, _, l1 = _trainer_run(True, cell)
    m2, _, l2 = _trainer_run(False, cell)
    assert train.flat_buffers(m1) is not None       # Trainer flattened the model
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    for k in m1.params:
        np.testing.assert_allclose(m1.params[k], m2.params[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_trainer_tbptt_native_equals_reference():
    m1, _, l1 = _trainer_run(True, tbptt=True, steps=2)
    m2, _, l2 = _trainer_run(False, tbptt=True, steps=2)
    assert len(l1) == 6
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    for k in m1.params:
        np.testing.assert_allclose(m1.params[k], m2.params[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_trainer_resume_is_bitwise(tmp_path):
    path = tmp_path / "ck.npz"
    full_m, _, full_l = _trainer_run(True, steps=6)
    m = ManyToMany(vocab_size=11, hidden_size=8, output_size=11, seed=2)
    t = train.Trainer(m, train.Adam(m, lr=0.01), clip_norm=5.0, progress=False)
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 11, (9, 4)), rng.integers(0, 11, (9, 4))) for _ in range(6)]
    for b in batches[:3]:
        t.step(*b)
    t.save(path)
    m2 = ManyToMany(vocab_size=11, hidden_size=8, output_size=11, seed=9)
    t2 = train.Trainer(m2, train.Adam(m2, lr=0.01), clip_norm=5.0, progress=False)
    t2.load(path)
    losses = [t2.step(*b) for b in batches[3:]]
    assert losses == full_l[3:]
    for k in full_m.params:
        np.testing.assert_array_equal(m2.params[k], full_m.params[k], err_msg=k)


@pytest.mark.parametrize("cell", CELLS)
def test_char_lm_train_loss_equals_reference(cell):
    from rnnfast.models.char_lm import CharLM
    rng = np.random.default_rng(0)
    lm = CharLM("abcdefghij", hidden_size=7, cell=cell, dtype=np.float64, seed=1)
    x, y = rng.integers(0, 10, (6, 3)), rng.integers(0, 10, (6, 3))
    h = lm.zero_state(3)
    lm.flat.zero_grad()
    loss, hn = lm.train_loss(x, y, h)
    g = lm.flat.grad.copy()
    lm.flat.zero_grad()
    rl, rhn = lm.train_loss_reference(x, y, h)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(hn, rhn, rtol=1e-12)
    np.testing.assert_allclose(g, lm.flat.grad, rtol=1e-10, atol=1e-13)


def test_public_names():
    assert rnnfast.train.flatten_parameters is train.flatten_parameters
    assert callable(nn.set_native_ops)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_linear_on_rnnfast_blas_equals_numpy(dtype):
    rng = np.random.default_rng(0)
    lin = Linear(5, 3, dtype=dtype, seed=0)
    x = rng.standard_normal((4, 2, 5)).astype(dtype)
    dy = rng.standard_normal((4, 2, 3)).astype(dtype)
    y = lin.forward(x)
    dx = lin.backward(dy)
    g = grads_of(lin)
    lin.zero_grad()
    with reference():
        ry = lin.forward(x)
        rdx = lin.backward(dy)
    np.testing.assert_allclose(y, ry, **TOL[dtype])
    np.testing.assert_allclose(dx, rdx, **TOL[dtype])
    assert_dicts_close(g, grads_of(lin), dtype)
    with pytest.raises(ValueError, match="shapes do not agree"):
        _C.gemm(np.zeros((2, 3), dtype), np.zeros((2, 3), dtype), np.zeros((2, 2), dtype), False, False, 0.0)


def test_cs231n_captioning_loss_native_equals_reference():
    from rnnfast.compat import cs231n
    np.random.seed(0)
    words = {w: i for i, w in enumerate(["<NULL>", "<START>", "<END>", "a", "b", "c"])}
    for cell in ("rnn", "lstm"):
        m = cs231n.CaptioningRNN(words, input_dim=5, wordvec_dim=4, hidden_dim=6, cell_type=cell, dtype=np.float64)
        feats = np.random.randn(3, 5)
        caps = np.random.randint(0, 6, (3, 7))
        loss, g = m.loss(feats, caps)
        with reference():
            rl, rg = m.loss(feats, caps)
        np.testing.assert_allclose(loss, rl, rtol=1e-12)
        assert_dicts_close(g, rg, np.float64)


def test_apps_train_through_trainer():
    from rnnfast.models import char_lm
    r = char_lm.train_char_lm("abcabcabd" * 40, hidden_size=8, seq_length=5, batch_size=2, max_steps=3,
                              progress=False, val_fraction=0.1, log=lambda *a: None)
    assert r["steps"] == 3 and len(r["history"]["loss"]) == 3
    assert train.flat_buffers(r["model"].net) is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_matches_numpy(dtype, isa):
    """_C.all_finite equals np.isfinite(a).all() for NaN, +-inf, the largest finite value, subnormals and -0,
    at every position around its 4096-value blocks, in every kernel build."""
    from rnnfast import _C
    fi = np.finfo(dtype)
    rng = np.random.default_rng(3)
    for n in (1, 7, 4095, 4096, 4097, 9000):
        a = rng.standard_normal(n).astype(dtype)
        a[rng.integers(0, n, 3)] = [fi.max, -fi.tiny / 2, -0.0][: min(3, n)]
        assert _C.all_finite(a) and np.isfinite(a).all()
        for pos in sorted({0, n // 2, n - 1, min(n - 1, 4095), min(n - 1, 4096)}):
            for bad in (np.nan, np.inf, -np.inf):
                b = a.copy()
                b[pos] = bad
                assert not _C.all_finite(b), (n, pos, bad)


def test_linear_xent_from_two_python_threads_at_once():
    """Two Python threads in the head at once (the GIL is released inside): one gets the helper threads, the
    other finds them busy and does its groups alone (csrc/cpu/parallel.cpp); both get the one-thread bits."""
    import threading
    rng = np.random.default_rng(6)
    h = rng.standard_normal((1600, 128)).astype(np.float32)
    W = rng.standard_normal((96, 128)).astype(np.float32)
    t = rng.integers(0, 96, 1600)

    def head():
        dW = np.zeros_like(W)
        loss, dh = _C.linear_xent(h, W, None, t, None, None, "mean", 1, dW, None, True)
        return loss, dh, dW

    ref = head()
    bad = []

    def worker():
        for _ in range(30):
            got = head()
            if not (got[0] == ref[0] and np.array_equal(got[1], ref[1]) and np.array_equal(got[2], ref[2])):
                bad.append(got)

    ths = [threading.Thread(target=worker) for _ in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not bad
