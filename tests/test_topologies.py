"""Tests of rnnfast.topologies: gradient checks (central differences, float64) of every topology, the
variable-length and teacher-forcing contracts against per-sequence oracles, decoding (greedy, sampling,
beam search against exhaustive search), one small learning task per topology, and bad input.
Not the layers themselves (test_nn_layers.py) or the optimizers (test_train.py)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import rnnfast
from rnnfast.topologies import ManyToMany, ManyToOne, OneToMany, OneToOne, Seq2Seq
from rnnfast.train import Adam, Trainer

BACKENDS = [b for b in ("numpy", "cpu") if rnnfast.backends()[b]["available"]]
FAST = "cpu" if "cpu" in BACKENDS else "numpy"


def numeric_grad(f, a, eps=1e-6):
    g = np.zeros(a.shape, dtype=np.float64)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + eps
        fp = f()
        a.flat[i] = old - eps
        fm = f()
        a.flat[i] = old
        g.flat[i] = (fp - fm) / (2 * eps)
    return g


def gradcheck(model, loss_fn, rtol=1e-5, atol=1e-8):
    """model.grads after one loss_fn() against central differences of loss_fn for every parameter."""
    model.zero_grad()
    loss_fn()
    analytic = {k: v.copy() for k, v in model.grads.items()}
    assert analytic, "model has no parameters"
    for name, p in model.params.items():
        np.testing.assert_allclose(analytic[name], numeric_grad(loss_fn, p), rtol=rtol, atol=atol, err_msg=name)


# ---- gradient checks ----


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_one_to_one(backend):
    rng = np.random.default_rng(0)
    m = OneToOne(4, 3, input_size=2, num_layers=2, dtype=np.float64, backend=backend, seed=1)
    x, y = rng.standard_normal((5, 2)), rng.integers(0, 3, 5)
    gradcheck(m, lambda: m.loss(x, y))
    r = OneToOne(3, 2, vocab_size=4, embed_size=2, task="regression", dtype=np.float64, backend=backend)
    ids, t = rng.integers(0, 4, 6), rng.standard_normal((6, 2))
    gradcheck(r, lambda: r.loss(ids, t))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_one_to_many(backend):
    rng = np.random.default_rng(1)
    m = OneToMany(3, 4, 5, embed_size=3, num_layers=2, feed_code=True, start_token=4, dtype=np.float64,
                  backend=backend, seed=2)
    code, tgt = rng.standard_normal((3, 3)), rng.integers(0, 4, (4, 3))
    mask = np.ones((4, 3), bool)
    mask[2:, 1] = False
    tgt[2:, 1] = -1                                  # padding: must be neither read nor scored
    gradcheck(m, lambda: m.loss(code, tgt, mask=mask))
    plain = OneToMany(2, 3, 4, dtype=np.float64, backend=backend, seed=3)    # one-hot decoder input
    gradcheck(plain, lambda: plain.loss(code[:2, :2], tgt[:, [0, 2]] % 4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_many_to_one_with_lengths(backend):
    rng = np.random.default_rng(2)
    m = ManyToOne(4, 3, vocab_size=6, num_layers=2, dtype=np.float64, backend=backend, seed=3)
    ids, y, lengths = rng.integers(0, 6, (5, 4)), rng.integers(0, 3, 4), np.array([5, 1, 3, 2])
    gradcheck(m, lambda: m.loss(ids, y, lengths=lengths))
    r = ManyToOne(3, 2, input_size=2, task="regression", dtype=np.float64, backend=backend, seed=4)
    x, t = rng.standard_normal((4, 3, 2)), rng.standard_normal((3, 2))
    gradcheck(r, lambda: r.loss(x, t, lengths=np.array([2, 4, 1])))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_many_to_many(backend):
    rng = np.random.default_rng(3)
    m = ManyToMany(4, 3, vocab_size=5, embed_size=2, num_layers=3, dtype=np.float64, backend=backend, seed=5)
    ids, y = rng.integers(0, 5, (4, 2)), rng.integers(0, 3, (4, 2))
    mask = np.array([[1, 1], [1, 1], [1, 0], [0, 0]], bool)
    h0 = rng.standard_normal((3, 2, 4))
    gradcheck(m, lambda: m.loss(ids, y, mask=mask, h0=h0, reduction="mean"))
    r = ManyToMany(3, 2, input_size=3, task="regression", dtype=np.float64, backend=backend, seed=6)
    x, t = rng.standard_normal((3, 2, 3)), rng.standard_normal((3, 2, 2))
    gradcheck(r, lambda: r.loss(x, t, mask=mask[:3]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feed_context", [False, True])
def test_gradcheck_seq2seq(backend, feed_context):
    rng = np.random.default_rng(4)
    m = Seq2Seq(5, 6, 3, num_layers=2, tgt_embed=2, feed_context=feed_context, dtype=np.float64,
                backend=backend, seed=7)
    src, lengths = rng.integers(0, 5, (4, 3)), np.array([4, 2, 1])
    tgt = rng.integers(2, 6, (3, 3))
    tgt[-1] = 1
    gradcheck(m, lambda: m.loss(src, tgt, src_lengths=lengths))


def test_many_to_many_initial_state_gradient():
    rng = np.random.default_rng(5)
    m = ManyToMany(3, 2, input_size=2, num_layers=2, dtype=np.float64, seed=0)
    x, h0 = rng.standard_normal((4, 2, 2)), rng.standard_normal((2, 2, 3))
    R = rng.standard_normal((4, 2, 2))
    y, _ = m.forward(x, h0)
    dh0 = m.backward(R)
    np.testing.assert_allclose(dh0, numeric_grad(lambda: float((m.forward(x, h0)[0] * R).sum()), h0),
                               rtol=1e-6, atol=1e-9)


# ---- contracts against per-sequence oracles ----


def test_many_to_one_lengths_equal_running_each_sequence_alone_and_padding_gets_no_gradient():
    rng = np.random.default_rng(6)
    m = ManyToOne(5, 3, vocab_size=8, embed_size=4, num_layers=2, dtype=np.float64, seed=1)
    T, N = 6, 4
    lengths = np.array([6, 2, 4, 1])
    ids = rng.integers(0, 7, (T, N))
    for n in range(N):
        ids[lengths[n]:, n] = 7                     # token 7 appears only in padding
    y = m.forward(ids, lengths)
    for n in range(N):
        np.testing.assert_allclose(y[n], m.forward(ids[:lengths[n], n:n + 1])[0], rtol=1e-12, atol=1e-13)
    m.zero_grad()
    m.loss(ids, np.array([0, 1, 2, 0]), lengths=lengths)
    assert not m.grads["encoder.embed.weight"][7].any()        # padding received no gradient
    g = {k: v.copy() for k, v in m.grads.items()}
    ids2 = ids.copy()
    for n in range(N):
        ids2[lengths[n]:, n] = rng.integers(0, 7, T - lengths[n])
    m.zero_grad()
    m.loss(ids2, np.array([0, 1, 2, 0]), lengths=lengths)
    for k in g:
        if k != "encoder.embed.weight":
            np.testing.assert_allclose(m.grads[k], g[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_seq2seq_lengths_equal_running_each_sequence_alone():
    rng = np.random.default_rng(7)
    m = Seq2Seq(6, 5, 4, num_layers=2, feed_context=True, dtype=np.float64, seed=2)
    lengths = np.array([5, 1, 3])
    src = rng.integers(0, 6, (5, 3))
    tgt = rng.integers(2, 5, (4, 3))
    tgt[-1] = 1
    loss = m.loss(src, tgt, src_lengths=lengths)
    total = 0.0
    for n in range(3):
        total += m.loss(src[:lengths[n], n:n + 1], tgt[:, n:n + 1])
    assert loss == pytest.approx(total / 3, rel=1e-12)     # "sum" reduction: mean over the batch
    ctx, _ = m.encode(src, lengths)
    ctx1, _ = m.encode(src[:3, 2:3])
    np.testing.assert_allclose(ctx[:, 2], ctx1[:, 0], rtol=1e-12)


def test_one_to_many_teacher_forcing_and_greedy_generation():
    rng = np.random.default_rng(8)
    m = OneToMany(3, 6, 5, num_layers=2, feed_code=True, start_token=4, dtype=np.float64, seed=3)
    code = rng.standard_normal((3, 3))
    tgt = rng.integers(0, 4, (4, 3))
    inp = m.teacher_inputs(tgt)
    np.testing.assert_array_equal(inp[0], [4, 4, 4])
    np.testing.assert_array_equal(inp[1:], tgt[:-1])
    g = m.generate(code, 5)
    with_own = m.forward(code, np.concatenate([np.full((1, 3), 4), g[:-1]]))   # re-read its own outputs
    np.testing.assert_array_equal(g, with_own.argmax(-1))
    s1 = m.generate(code, 5, method="sample", temperature=2.0, seed=11)
    s2 = m.generate(code, 5, method="sample", temperature=2.0, seed=11)
    s3 = m.generate(code, 5, method="sample", temperature=2.0, seed=12)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, s3)
    k1 = m.generate(code, 5, method="sample", top_k=1, seed=5)
    np.testing.assert_array_equal(k1, g)                   # top_k = 1 sampling is greedy
    e = m.generate(code, 5, end_token=int(g[0, 0]))
    assert np.all(e[1:, 0] == g[0, 0])                      # after the end token, only end tokens


def test_seq2seq_beam_search():
    rng = np.random.default_rng(9)
    m = Seq2Seq(4, 4, 5, feed_context=True, start_token=0, end_token=1, dtype=np.float64, seed=4)
    for p in m.params.values():                            # sharper distributions make search matter
        p *= 3
    src = rng.integers(0, 4, (3, 6))
    greedy, gs = m.generate(src, 3, return_scores=True)
    b1, b1s = m.generate(src, 3, method="beam", beam_size=1, return_scores=True)
    np.testing.assert_array_equal(b1, greedy)
    np.testing.assert_allclose(b1s, gs, rtol=1e-12)
    np.testing.assert_allclose(gs, m.sequence_log_prob(src, greedy), rtol=1e-9)
    beam, bs = m.generate(src, 3, method="beam", beam_size=64, return_scores=True)   # 64 >= 4^3: exact
    np.testing.assert_allclose(bs, m.sequence_log_prob(src, beam), rtol=1e-9)
    allseq = np.array(list(itertools.product(range(4), repeat=3))).T                 # (3, 64)
    best = np.array([m.sequence_log_prob(np.repeat(src[:, n:n + 1], 64, 1), allseq).max() for n in range(6)])
    np.testing.assert_allclose(bs, best, rtol=1e-9)
    assert np.all(bs >= gs - 1e-12) and np.any(bs > gs + 1e-9)
    b3 = m.generate(src, 3, method="beam", beam_size=3)
    for n in range(6):                                       # after the end token, only end tokens
        col = b3[:, n]
        if (col == 1).any():
            assert np.all(col[np.argmax(col == 1):] == 1)


@pytest.mark.parametrize("topology", ["m2o", "s2s"])
def test_backends_agree(topology):
    if len(BACKENDS) < 2:
        pytest.skip("needs both the numpy and the cpu backend")
    res = []
    for b in BACKENDS:
        rng = np.random.default_rng(10)             # the same data for each backend
        if topology == "m2o":
            m = ManyToOne(5, 3, vocab_size=7, num_layers=2, dtype=np.float64, backend=b, seed=0)
            loss = m.loss(rng.integers(0, 7, (4, 3)), np.array([0, 1, 2]), lengths=np.array([4, 2, 3]))
        else:
            m = Seq2Seq(5, 6, 4, num_layers=2, feed_context=True, dtype=np.float64, backend=b, seed=0)
            loss = m.loss(rng.integers(0, 5, (4, 3)), rng.integers(0, 6, (3, 3)), src_lengths=np.array([4, 1, 2]))
        res.append((loss, m.grads))
    assert res[0][0] == pytest.approx(res[1][0], rel=1e-12)
    for k in res[0][1]:
        np.testing.assert_allclose(res[0][1][k], res[1][1][k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_float32_models_track_float64():
    rng = np.random.default_rng(11)
    src, tgt = rng.integers(0, 5, (4, 3)), rng.integers(0, 6, (3, 3))
    out = {}
    for dt in (np.float32, np.float64):
        m = Seq2Seq(5, 6, 8, num_layers=2, src_embed=3, feed_context=True, dtype=dt, seed=0)
        loss = m.loss(src, tgt)
        assert all(g.dtype == np.dtype(dt) for g in m.grads.values())
        out[dt] = (loss, m.grads)
    assert out[np.float32][0] == pytest.approx(out[np.float64][0], rel=1e-5)
    for k, g in out[np.float64][1].items():
        np.testing.assert_allclose(out[np.float32][1][k], g, rtol=1e-3, atol=1e-5, err_msg=k)


# ---- learning: each topology learns a small task in seconds on the cpu backend ----


def _fit(model, get_batch, steps, lr=1e-2, decay_at=None):
    """Adam at lr, divided by 5 from step decay_at on (if given)."""
    tr = Trainer(model, Adam(model, lr), clip_norm=5.0, progress=False, seed=0)
    if decay_at is not None:
        tr.fit(get_batch, decay_at)
        tr.optimizer.lr = lr / 5
    tr.fit(get_batch, steps)
    return tr


def test_learns_one_to_one_xor():
    m = OneToOne(16, 2, input_size=2, backend=FAST, seed=0)

    def batch(rng, N=64):
        x = rng.integers(0, 2, (N, 2))
        return (x.astype(np.float32) * 2 - 1, x[:, 0] ^ x[:, 1])

    _fit(m, batch, 150)
    x, y = batch(np.random.default_rng(99), 200)
    assert (m.predict(x) == y).mean() == 1.0


def test_learns_many_to_one_sign_of_running_sum():
    """Variable-length sequences of N(0, 1) numbers; class = sign of their sum, read at each own end."""
    m = ManyToOne(32, 2, input_size=1, backend=FAST, seed=1)

    def batch(rng, N=64, T=12):
        x = rng.standard_normal((T, N, 1)).astype(np.float32)
        lengths = rng.integers(3, T + 1, N)
        valid = np.arange(T)[:, None] < lengths[None]
        return x, ((x[..., 0] * valid).sum(0) > 0).astype(np.int64), lengths

    _fit(m, batch, 600, decay_at=400)
    x, y, lengths = batch(np.random.default_rng(1234), N=1000)
    acc = (m.predict(x, lengths) == y).mean()
    assert acc > 0.95, acc


def test_learns_many_to_many_tagging():
    """Tag each step with the token seen two steps earlier (a fixed tag before that): needs memory."""
    V = 4
    m = ManyToMany(32, V + 1, vocab_size=V, num_layers=2, backend=FAST, seed=2)

    def batch(rng, N=32, T=10):
        x = rng.integers(0, V, (T, N))
        y = np.full_like(x, V)
        y[2:] = x[:-2]
        return x, y

    _fit(m, batch, 300)
    x, y = batch(np.random.default_rng(4321), N=500)
    assert (m.predict(x) == y).mean() > 0.95


def test_learns_one_to_many_reproduces_sequence_from_code():
    """The code is the concatenated one-hots of P digits; the model must spell them out in order; held-out
    codes are digit combinations it has (almost surely) not seen."""
    P, K = 5, 4
    m = OneToMany(P * K, 32, K + 1, start_token=K, feed_code=True, backend=FAST, seed=3)

    def batch(rng, N=32):
        seq = rng.integers(0, K, (P, N))
        code = np.zeros((N, P * K), np.float32)
        for p in range(P):
            code[np.arange(N), p * K + seq[p]] = 1
        return code, seq

    _fit(m, batch, 300)
    code, seq = batch(np.random.default_rng(777), N=500)
    assert (m.generate(code, P) == seq).all(axis=0).mean() > 0.95


@pytest.mark.slow
def test_learns_seq2seq_reverse_digit_strings():
    """Reverse strings of 3-4 digits (source vocabulary 10, target vocabulary 12 = start, end, 10 digits),
    >95% exact match on held-out strings with greedy decoding, and beam search at least as good."""
    m = Seq2Seq(10, 12, 96, src_embed=16, tgt_embed=16, feed_context=True, start_token=0, end_token=1,
                backend=FAST, seed=0)

    def batch(rng, N=64, T=4):
        lengths = rng.integers(3, T + 1, N)
        src = rng.integers(0, 10, (T, N))
        tgt = np.full((T + 1, N), 1)
        mask = np.zeros((T + 1, N), bool)
        for n in range(N):
            tgt[:lengths[n], n] = src[:lengths[n], n][::-1] + 2
            mask[:lengths[n] + 1, n] = True
        return {"src": src, "tgt": tgt, "src_lengths": lengths, "tgt_mask": mask}

    _fit(m, batch, 1000, decay_at=700)
    b = batch(np.random.default_rng(2024), N=500)
    exact = lambda out: np.all((out == b["tgt"]) | ~b["tgt_mask"], axis=0).mean()   # noqa: E731
    greedy = exact(m.generate(b["src"], 5, src_lengths=b["src_lengths"]))
    beam = exact(m.generate(b["src"], 5, src_lengths=b["src_lengths"], method="beam", beam_size=3))
    assert greedy > 0.95 and beam >= greedy - 0.01


# ---- bad input ----


def test_bad_lengths():
    m = ManyToOne(3, 2, input_size=1)
    x = np.zeros((4, 2, 1), np.float32)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T\] = \[1, 4\], got -1"):
        m.forward(x, np.array([-1, 2]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T\] = \[1, 4\], got 5"):
        m.forward(x, np.array([5, 2]))
    with pytest.raises(ValueError, match="got 0"):
        m.forward(x, np.array([0, 2]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(N,\) = \(2,\)"):
        m.forward(x, np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="integer"):
        m.forward(x, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="T >= 1"):
        m.forward(np.zeros((0, 2, 1), np.float32))
    s = Seq2Seq(3, 4, 2)
    with pytest.raises(ValueError, match="lengths must lie"):
        s.loss(np.zeros((2, 1), np.int64), np.zeros((2, 1), np.int64), src_lengths=np.array([3]))


def test_bad_shapes_ids_and_empty_batches():
    m = ManyToMany(3, 2, vocab_size=5)
    with pytest.raises(ValueError, match=r"token ids must have shape \(T, N\)"):
        m.loss(np.zeros((2, 3, 1), np.int64), np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="token id 5"):
        m.loss(np.full((2, 3), 5), np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match=r"targets\[0, 1\] = 2 is outside"):
        m.loss(np.zeros((2, 3), np.int64), np.array([[0, 2, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="empty batch"):
        m.loss(np.zeros((2, 0), np.int64), np.zeros((2, 0), np.int64))
    f = ManyToOne(3, 2, input_size=2)
    with pytest.raises(ValueError, match=r"x must have shape \(T, N, D\)"):
        f.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="D = 2"):
        f.forward(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(TypeError, match="dtype float32"):
        f.forward(np.zeros((2, 3, 2), np.float64))
    o = OneToMany(3, 4, 5)
    with pytest.raises(ValueError, match=r"code must have shape \(N, C\) with C = 3"):
        o.loss(np.zeros((2, 4), np.float32), np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="N = 2"):
        o.forward(np.zeros((2, 3), np.float32), np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match="empty batch"):
        o.generate(np.zeros((0, 3), np.float32), 4)
    s = Seq2Seq(3, 4, 2)
    with pytest.raises(ValueError, match="token id 3"):
        s.loss(np.full((2, 1), 3), np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match="N = 1"):
        s.forward(np.zeros((2, 1), np.int64), np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="method"):
        s.generate(np.zeros((2, 1), np.int64), 3, method="nucleus")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="exactly one of input_size"):
        ManyToOne(3, 2)
    with pytest.raises(ValueError, match="exactly one of input_size"):
        ManyToOne(3, 2, input_size=2, vocab_size=4)
    with pytest.raises(ValueError, match="task must be"):
        ManyToMany(3, 2, input_size=2, task="ranking")
    with pytest.raises(ValueError, match=r"start_token must lie in \[0, V\) = \[0, 5\)"):
        OneToMany(3, 4, 5, start_token=5)
    with pytest.raises(ValueError, match="end_token must lie"):
        Seq2Seq(3, 4, 2, end_token=-1)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        ManyToMany(3, 2, input_size=2, num_layers=0)
    with pytest.raises(ValueError, match="embed_size applies to token inputs"):
        ManyToMany(3, 2, input_size=2, embed_size=4)
