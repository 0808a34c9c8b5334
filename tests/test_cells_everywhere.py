"""Tests of the `cell` choice ("rnn" | "lstm" | "gru") in the topologies, the character-level LM, captioning
and the CLI: float64 central-difference gradient checks of every topology with the gated cells, the
seq2seq context and the one-hot input paths against independent oracles, short learning runs, checkpoints
that carry the cell, and bad input. Not the gated layers themselves (test_gated.py, test_bidir_lengths.py).
"""
import numpy as np
import pytest

import rnnfast
import rnnfast.functional as F
from rnnfast.models import captioning as C
from rnnfast.models import char_lm as LM
from rnnfast.topologies import ManyToMany, ManyToOne, OneToMany, OneToOne, Seq2Seq, _OneHotGRU, _OneHotLSTM
from rnnfast.train import Adam

from cli_helpers import cli

GATED = ["lstm", "gru"]


def numeric(f, a, idx, eps=1e-6):
    old = a[idx]
    a[idx] = old + eps
    fp = f()
    a[idx] = old - eps
    fm = f()
    a[idx] = old
    return (fp - fm) / (2 * eps)


def entries(shape, k=12, seed=0):
    """Every index of a small array, else k random ones (always the first and the last)."""
    all_idx = list(np.ndindex(shape))
    if len(all_idx) <= k:
        return all_idx
    pick = np.random.default_rng(seed).choice(len(all_idx), k - 2, replace=False)
    return [all_idx[0], all_idx[-1]] + [all_idx[i] for i in pick]


def gradcheck(model, loss_fn, extra=()):
    """model.grads after one loss_fn() against central differences, for sampled entries of every parameter
    and of the arrays in `extra` ((name, array, analytic gradient) triples)."""
    model.zero_grad()
    loss_fn()
    analytic = {k: v.copy() for k, v in model.grads.items()}
    assert analytic
    for name, p in model.params.items():
        for idx in entries(p.shape):
            assert analytic[name][idx] == pytest.approx(numeric(loss_fn, p, idx), rel=1e-5, abs=1e-8), (name, idx)
    for name, a, g in extra:
        for idx in entries(a.shape):
            assert g[idx] == pytest.approx(numeric(loss_fn, a, idx), rel=1e-5, abs=1e-8), (name, idx)


def state_arrays(cell, rng, L, N, H):
    h = rng.standard_normal((L, N, H)) * 0.5
    return (h, rng.standard_normal((L, N, H)) * 0.5) if cell == "lstm" else h


# ---------------------------------------------------------------- gradient checks, every topology
@pytest.mark.parametrize("cell", GATED)
def test_one_to_one_gradients(cell):
    rng = np.random.default_rng(0)
    m = OneToOne(3, 4, vocab_size=13, num_layers=2, cell=cell, dtype=np.float64, seed=1)   # one-hot, gather
    assert m.encoder.rnn.path == "gather"
    ids, t = rng.integers(0, 13, 5), rng.integers(0, 4, 5)
    gradcheck(m, lambda: m.loss(ids, t))


@pytest.mark.parametrize("cell", GATED)
def test_many_to_one_gradients_with_lengths(cell):
    rng = np.random.default_rng(1)
    m = ManyToOne(3, 2, input_size=2, num_layers=2, task="regression", cell=cell, dtype=np.float64, seed=2)
    x, y, lengths = rng.standard_normal((5, 4, 2)), rng.standard_normal((4, 2)), np.array([5, 1, 3, 4])
    gradcheck(m, lambda: m.loss(x, y, lengths=lengths))
    # the padding after each length changes nothing
    x2 = x.copy()
    x2[3:, 1:3] = 7.0
    np.testing.assert_array_equal(m.predict(x2, lengths), m.predict(x, lengths))


@pytest.mark.parametrize("cell", GATED)
def test_many_to_many_gradients_including_state(cell):
    rng = np.random.default_rng(2)
    L, N, H, V = 2, 3, 2, 6
    m = ManyToMany(H, V, vocab_size=V, embed_size=3, num_layers=L, cell=cell, dtype=np.float64, seed=3)
    x, t = rng.integers(0, V, (4, N)), rng.integers(0, V, (4, N))
    h0 = state_arrays(cell, rng, L, N, H)
    wy = rng.standard_normal((4, N, V))
    wh = state_arrays(cell, rng, L, N, H)
    flat = lambda s: s if isinstance(s, tuple) else (s,)   # noqa: E731
    grad0 = []

    def loss():     # sum(y * wy) + sum(h_n * wh): its gradients reach every parameter and the initial state
        y, h_n = m.forward(x, h0)
        grad0[:] = [g.copy() for g in flat(m.backward(wy, wh))]
        return float((y * wy).sum() + sum((a * b).sum() for a, b in zip(flat(h_n), flat(wh))))

    loss()
    extra = [(f"state{i}", a, g) for i, (a, g) in enumerate(zip(flat(h0), list(grad0)))]
    assert len(extra) == (2 if cell == "lstm" else 1)
    gradcheck(m, loss, extra)
    # the truncated-BPTT protocol: the final state comes back shaped as it goes in
    _, h_n = m.loss(x, t, h0=h0, return_state=True)
    assert (len(h_n) == 2 and h_n[0].shape == (L, N, H)) if cell == "lstm" else h_n.shape == (L, N, H)


@pytest.mark.parametrize("cell", GATED)
def test_one_to_many_gradients(cell):
    rng = np.random.default_rng(3)
    m = OneToMany(4, 3, 7, num_layers=2, cell=cell, dtype=np.float64, seed=4)     # one-hot input
    assert m.decoder.rnn.path == ("gather" if "cpu" in rnnfast.available() else "dense")
    code, t = rng.standard_normal((3, 4)), rng.integers(0, 7, (5, 3))
    mask = np.ones((5, 3), bool)
    mask[3:, 1] = False
    gradcheck(m, lambda: m.loss(code, t, mask=mask))
    ids = m.generate(code, 6, method="sample", seed=0)
    assert ids.shape == (6, 3) and np.array_equal(ids, m.generate(code, 6, method="sample", seed=0))


@pytest.mark.parametrize("cell", GATED)
def test_seq2seq_gradients(cell):
    rng = np.random.default_rng(4)
    m = Seq2Seq(11, 6, 2, num_layers=2, tgt_embed=3, cell=cell, dtype=np.float64, seed=5)
    assert m.encoder.rnn.path == "gather" and "encoder.rnn.weight_ih_l1" in m.params
    src, tgt, sl = rng.integers(0, 11, (5, 3)), rng.integers(0, 6, (4, 3)), np.array([2, 5, 1])
    gradcheck(m, lambda: m.loss(src, tgt, src_lengths=sl))


# ---------------------------------------------------------------- oracles
@pytest.mark.parametrize("cell", GATED)
def test_seq2seq_context_is_each_sequence_alone(cell):
    """The context equals the encoder run on each sequence's valid prefix alone (no lengths at all)."""
    rng = np.random.default_rng(5)
    m = Seq2Seq(9, 5, 4, num_layers=2, src_embed=3, cell=cell, dtype=np.float64, seed=6)
    src, sl = rng.integers(0, 9, (6, 4)), np.array([6, 1, 3, 5])
    ctx, c = m.encode(src, sl, need_cache=False)
    assert c is None
    for n in range(4):
        x = m.encoder.embed.forward(src[:sl[n], n:n + 1], need_cache=False)
        _, alone = m.encoder.rnn.forward(x, need_cache=False)
        for got, want in zip(ctx if cell == "lstm" else (ctx,), alone if cell == "lstm" else (alone,)):
            np.testing.assert_allclose(got[:, n:n + 1], want, rtol=1e-12, atol=1e-14)
    # decoding carries the state (the LSTM pair, re-indexed per beam): each returned score equals the
    # teacher-forced log-probability of the returned sequence
    for method in ("greedy", "beam"):
        ids, scores = m.generate(src, 5, sl, method=method, beam_size=3, return_scores=True)
        np.testing.assert_allclose(scores, m.sequence_log_prob(src, ids, sl), rtol=1e-10)


@pytest.mark.parametrize("cell", GATED)
def test_one_hot_paths_agree_with_the_plain_layer(cell):
    """Gather and dense one-hot inputs give the plain LSTM/GRU's outputs and gradients on explicit one-hots."""
    rng = np.random.default_rng(6)
    V, H, L, T, N = 10, 2, 2, 4, 3
    ids = rng.integers(0, V, (T, N))
    onehot = np.eye(V)[ids]
    dout = rng.standard_normal((T, N, H))
    plain = (rnnfast.LSTM if cell == "lstm" else rnnfast.GRU)(V, H, L, dtype=np.float64, seed=0)
    out_ref, _ = plain.forward(onehot)
    plain.backward(dout)
    for path in ("gather", "dense"):
        layer = (_OneHotLSTM if cell == "lstm" else _OneHotGRU)(V, H, L, dtype=np.float64, seed=1, path=path)
        assert layer.path == path
        layer.load_state_dict(plain.state_dict())
        out, _ = layer.forward(ids)
        dx, _ = layer.backward(dout)
        assert dx is None
        np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-14)
        for k in plain.grads:
            np.testing.assert_allclose(layer.grads[k], plain.grads[k], rtol=1e-12, atol=1e-14, err_msg=(path, k))


def test_default_cell_is_rnn_and_unchanged():
    m = ManyToMany(4, 3, input_size=2, seed=0)
    r = ManyToMany(4, 3, input_size=2, seed=0, cell="rnn")
    assert m.cell == "rnn" and isinstance(m.encoder.rnn, rnnfast.RNN)
    x = np.random.default_rng(0).standard_normal((3, 2, 2)).astype(np.float32)
    assert np.array_equal(m.predict(x), r.predict(x))
    assert "encoder.rnn_l1.weight_hh_l0" in Seq2Seq(5, 5, 3, num_layers=2).params     # vanilla layout kept


# ---------------------------------------------------------------- learning
@pytest.mark.parametrize("cell", GATED)
def test_many_to_one_learns_sign_of_running_sum(cell):
    rng = np.random.default_rng(7)
    T, N = 10, 64
    m = ManyToOne(16, 2, input_size=1, cell=cell, seed=0)
    opt = Adam(m, lr=0.02)
    for _ in range(120):
        x = rng.standard_normal((T, N, 1)).astype(np.float32)
        opt.zero_grad()
        m.loss(x, (x.sum(axis=(0, 2)) > 0).astype(np.int64), reduction="mean")
        opt.step()
    x = rng.standard_normal((T, 500, 1)).astype(np.float32)
    acc = (m.predict(x) == (x.sum(axis=(0, 2)) > 0)).mean()
    assert acc > 0.9, acc


@pytest.mark.parametrize("cell", GATED)
def test_char_lm_hello(cell, tmp_path):
    ck = tmp_path / "hello.npz"
    r = LM.train_char_lm("hello", hidden_size=8, seq_length=4, batch_size=1, lr=0.05, max_steps=200,
                         val_fraction=0.0, seed=0, eval_every=0, progress=False, cell=cell, checkpoint=str(ck))
    m = r["model"]
    assert m.cell == cell and m.zero_state(1).shape == ((2,) if cell == "lstm" else ()) + (1, 1, 8)
    assert "h" + m.sample("h", 4, temperature=0) == "hello"
    back, info = LM.load_model(str(ck))
    assert back.cell == cell and info["metadata"]["cell"] == cell
    assert "h" + back.sample("h", 4, temperature=0) == "hello"
    other = "gru" if cell == "lstm" else "lstm"
    with pytest.raises(ValueError, match=f"holds a cell='{cell}' model, not cell='{other}'"):
        LM.load_model(str(ck), cell=other)


def test_char_lm_lstm_resume_is_exact(tmp_path):
    text = "abcabdabe" * 20
    kw = dict(hidden_size=6, num_layers=2, seq_length=5, batch_size=3, val_fraction=0.0, eval_every=0,
              progress=False, seed=1, cell="lstm")
    full = LM.train_char_lm(text, max_steps=12, **kw)
    ck = str(tmp_path / "lm.npz")
    LM.train_char_lm(text, max_steps=6, checkpoint=ck, **kw)
    res = LM.train_char_lm(text, max_steps=12, resume=ck, **kw)     # the carried (2, L, N, H) state too
    assert res["history"]["loss"] == full["history"]["loss"]
    with pytest.raises(ValueError, match="holds a cell='lstm' model"):
        LM.train_char_lm(text, max_steps=14, resume=ck, **dict(kw, cell="gru"))


@pytest.mark.parametrize("cell", GATED)
def test_captioner_gradients_and_checkpoint(cell, tmp_path):
    rng = np.random.default_rng(8)
    m = C.CaptioningRNN(5, 7, hidden_size=3, embed_size=3, num_layers=2, conditioning="h0", dtype=np.float64,
                        seed=2, cell=cell)
    feats = rng.standard_normal((3, 5))
    caps = np.array([[1, 4, 5, 2, 0], [1, 6, 2, 0, 0], [1, 4, 4, 6, 2]])
    gradcheck(m, lambda: m.loss(feats, caps))
    assert m.generate(feats, 4).shape == (3, 4)
    data = {"idx_to_word": C.SPECIAL + ["a", "b", "c"], "train_captions": caps,
            "train_image_idxs": np.arange(3, dtype=np.int32), "train_features": feats.astype(np.float32)}
    ck = str(tmp_path / "cap.npz")
    C.train_captioner(data, hidden_size=4, embed_size=3, conditioning="h0", batch_size=2, max_steps=2,
                      checkpoint=ck, progress=False, cell=cell)
    model, info = C.load_model(ck)
    assert model.captioner.cell == cell and info["metadata"]["captioner"]["cell"] == cell
    with pytest.raises(ValueError, match=f"holds a cell='{cell}' model, not cell='rnn'"):
        C.load_model(ck, cell="rnn")


# ---------------------------------------------------------------- bad input
def test_bad_cell_and_unsupported_combinations():
    allowed = "'rnn', 'lstm', 'gru'"
    makers = [lambda c: OneToOne(3, 2, input_size=2, cell=c), lambda c: ManyToOne(3, 2, input_size=2, cell=c),
              lambda c: ManyToMany(3, 2, input_size=2, cell=c), lambda c: OneToMany(2, 3, 4, cell=c),
              lambda c: Seq2Seq(4, 4, 3, cell=c), lambda c: LM.CharLM("ab", 4, cell=c),
              lambda c: C.CaptioningRNN(3, 5, cell=c, conditioning="h0")]
    for make in makers:
        with pytest.raises(ValueError, match=f"cell must be one of {allowed}, got 'LSTM'"):
            make("LSTM")
    with pytest.raises(ValueError, match="feed_code needs the RNN's constant input c"):
        OneToMany(2, 3, 4, feed_code=True, cell="lstm")
    with pytest.raises(ValueError, match="feed_context needs the RNN's constant input c"):
        Seq2Seq(4, 4, 3, feed_context=True, cell="gru")
    with pytest.raises(ValueError, match="conditioning='both' needs the RNN's constant input c"):
        C.CaptioningRNN(3, 5, cell="lstm")
    with pytest.raises(ValueError, match="nonlinearity applies to cell='rnn' only"):
        ManyToMany(3, 2, input_size=2, nonlinearity="relu", cell="gru")
    m = ManyToMany(3, 2, input_size=2, num_layers=2, cell="lstm")
    x = np.zeros((4, 1, 2), np.float32)
    with pytest.raises(ValueError, match=r"h0 for cell='lstm' must be a pair \(h, c\)"):
        m.forward(x, np.zeros((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match="token id 9"):
        OneToOne(3, 2, vocab_size=5, cell="gru").forward(np.array([9]))


# ---------------------------------------------------------------- CLI
# in-process through rnnfast.cli.main(argv) (cli_helpers); test_cli.py keeps the true subprocess runs


def test_cli_train_char_gru_then_sample(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("the quick brown fox jumps over the lazy dog.\n" * 40, encoding="utf-8")
    ck = tmp_path / "g.npz"
    rc, out, err = cli("train-char", "--text", f, "--cell", "gru", "--steps", 20, "--hidden", 16, "--seq-length",
                       10, "--batch", 4, "--checkpoint", ck, "--sample-every", 0, "--plot", tmp_path / "p.png",
                       "--no-progress")
    assert rc == 0, err
    assert "trained 20 steps" in out
    assert LM.read_checkpoint_info(str(ck))["metadata"]["cell"] == "gru"
    rc, out, err = cli("sample", ck, "--prime", "the ", "--length", 30, "--seed", 0)
    assert rc == 0, err
    assert out.startswith("the ") and len(out) == len("the ") + 30 + 1
    rc, out, err = cli("train-char", "--resume", ck, "--cell", "lstm", "--steps", 25, "--no-progress")
    assert rc == 2 and "holds a cell='gru' model, not cell='lstm'" in err
    rc, out, err = cli("caption", "train", "--cell", "lstm", "--conditioning", "both", "--steps", 1)
    assert rc == 2 and "conditioning='both' needs the RNN's constant input c" in err


def test_checkpoint_without_cell_loads_as_rnn(tmp_path):
    """Checkpoints written before the cell choice have no "cell" in their metadata: they are vanilla RNNs."""
    from rnnfast.train import save_checkpoint

    m = LM.CharLM("abc", hidden_size=4, seed=0)
    meta = m.metadata()
    del meta["cell"]
    ck = str(tmp_path / "old.npz")
    save_checkpoint(ck, m.net, metadata=meta)
    back, _ = LM.load_model(ck)
    assert back.cell == "rnn" and isinstance(back.net.encoder.rnn, rnnfast.RNN)
    for k, v in m.net.params.items():
        np.testing.assert_array_equal(back.net.params[k], v)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_identity_input_weight_on_cpu(cell, isa):
    """The cpu kernels' W_ih = None (layer 0; x is the input projection, D = G*H) equal an explicit identity
    W_ih in every kernel build, float32 and float64, with a second layer; dx is the input projection's
    gradient and no dW_ih is taken. Bad uses raise naming the argument."""
    from rnnfast import _C
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    for dt in (np.float32, np.float64):
        rng = np.random.default_rng(11)
        T, N, H = 5, 3, 4
        x = rng.standard_normal((T, N, G * H)).astype(dt)
        w = [(np.eye(G * H, dtype=dt), rng.standard_normal((G * H, H)).astype(dt),
              rng.standard_normal(G * H).astype(dt), rng.standard_normal(G * H).astype(dt)),
             tuple(rng.standard_normal(s).astype(dt) for s in ((G * H, H), (G * H, H), (G * H,), (G * H,)))]
        wn = [(None,) + w[0][1:], w[1]]
        dout = rng.standard_normal((T, N, H)).astype(dt)
        states = (None, None) if cell == "lstm" else (None,)
        out = []
        for ww in (w, wn):
            y, _, cache = F.forward(cell, x, states, ww, need_cache=True, backend="cpu")
            grads = [tuple(None if a is None else np.zeros_like(a) for a in t) for t in ww]
            dx, _, _ = F.backward(cell, dout, (None,) * len(states), cache, grads, backend="cpu")
            out.append((y, dx, grads))
        (y0, dx0, g0), (y1, dx1, g1) = out
        np.testing.assert_array_equal(y1, y0)
        tol = dict(rtol=1e-5, atol=1e-6) if dt == np.float32 else dict(rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(dx1, dx0, **tol)
        for a, b in zip(g0[0][1:] + g0[1], g1[0][1:] + g1[1]):
            np.testing.assert_allclose(b, a, **tol)
    fwd = {"rnn": lambda xx, ww: _C.rnn_forward(xx, None, ww, None, "tanh", False),
           "lstm": lambda xx, ww: _C.lstm_forward(xx, None, None, ww, False),
           "gru": lambda xx, ww: _C.gru_forward(xx, None, ww, False)}[cell]
    with pytest.raises(ValueError, match="weight_ih_l0 = None"):
        fwd(x[..., :-1].copy(), wn)                     # D != G*H
    y, _, cache = F.forward(cell, x, states, wn, need_cache=True, backend="cpu")
    bad = [tuple(np.zeros_like(a) if a is not None else np.zeros((G * H, G * H), x.dtype) for a in t) for t in wn]
    with pytest.raises(ValueError, match="dW_ih_l0 must be None"):
        F.backward(cell, dout, (None,) * len(states), cache, bad, backend="cpu")


@pytest.mark.parametrize("cell", GATED)
def test_one_hot_gather_with_lengths_uses_the_explicit_identity(cell):
    rng = np.random.default_rng(12)
    V, H, T, N = 7, 3, 5, 4
    ids = rng.integers(0, V, (T, N))
    lengths = np.array([5, 2, 0, 3])
    plain = (rnnfast.LSTM if cell == "lstm" else rnnfast.GRU)(V, H, 1, dtype=np.float64, seed=0)
    layer = (_OneHotLSTM if cell == "lstm" else _OneHotGRU)(V, H, 1, dtype=np.float64, seed=1, path="gather")
    layer.load_state_dict(plain.state_dict())
    out_ref, _ = plain.forward(np.eye(V)[ids], lengths=lengths)
    out, _ = layer.forward(ids, lengths=lengths)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-14)
    dout = rng.standard_normal((T, N, H))
    plain.backward(dout)
    layer.backward(dout)
    for k in plain.grads:
        np.testing.assert_allclose(layer.grads[k], plain.grads[k], rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_step_gemm_every_row_and_column_tail(cell, isa):
    """The per-step recurrent product at batches above the matrix-vector path (blas.h gemm_step: register
    blocks of rows x vectors, B read in place) equals the NumPy reference for batch sizes that leave every
    row remainder of the block (N = 5..17, 33) and hidden sizes that leave partial vectors (H = 5, 17, 40),
    forward and backward, two layers, with h0 (and c0): float64 to TOL64, float32 within the float32
    protocol against the float64 reference (tolerances.assert_f32_close)."""
    from tolerances import TOL64, assert_f32_close
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(13)

    def run(be, dt, x, states, ws, dout, dstates):
        c = lambda a: a.astype(dt)  # noqa: E731
        ws = [tuple(c(a) for a in t) for t in ws]
        y, st, cache = F.forward(cell, c(x), tuple(c(a) for a in states), ws, need_cache=True, backend=be)
        grads = [tuple(np.zeros_like(a) for a in t) for t in ws]
        dx, dst, _ = F.backward(cell, c(dout), tuple(c(a) for a in dstates), cache, grads, backend=be)
        return [y, *st, dx, *dst] + [a for t in grads for a in t]

    for N, H in [(5, 5), (6, 17), (7, 40), (9, 5), (10, 17), (11, 40), (12, 17), (13, 5), (14, 40),
                 (15, 17), (16, 40), (17, 5), (33, 17)]:
        T, D = 4, 3
        x = rng.standard_normal((T, N, D))
        ws = [tuple(0.5 * rng.standard_normal(s) for s in ((G * H, d), (G * H, H), (G * H,), (G * H,)))
              for d in (D, H)]
        states = tuple(rng.standard_normal((2, N, H)) for _ in range(2 if cell == "lstm" else 1))
        dout = rng.standard_normal((T, N, H))
        dstates = tuple(rng.standard_normal((2, N, H)) for _ in states)
        args = (x, states, ws, dout, dstates)
        ref64 = run("numpy", np.float64, *args)
        ref32 = run("numpy", np.float32, *args)
        got64 = run("cpu", np.float64, *args)
        got32 = run("cpu", np.float32, *args)
        for k, (r64, r32, g64, g32) in enumerate(zip(ref64, ref32, got64, got32)):
            np.testing.assert_allclose(g64, r64, **TOL64, err_msg=f"output {k}, N={N} H={H}")
            assert_f32_close(g32, r64, r32, name=f"output {k}, N={N} H={H}")


def _one_and_two_threads_and_reference(cell, x, states, ws, dout, dstates, wref=None):
    """Forward and backward on the cpu backend with 1 and 2 threads and on the NumPy reference (with wref, the
    weights the reference takes instead: an explicit identity for a W_ih of None) -> three lists [y, *states,
    dx, *dstates, every gradient that exists], in the same order."""
    res = []
    for be, threads in (("cpu", 1), ("cpu", 2), ("numpy", None)):
        if threads:
            rnnfast.set_num_threads(threads)
        try:
            w = ws if threads or wref is None else wref
            y, st, cache = F.forward(cell, x, states, w, need_cache=True, backend=be)
            grads = [tuple(None if a is None else np.zeros_like(a) for a in t) for t in w]
            dx, dst, _ = F.backward(cell, dout, dstates, cache, grads, backend=be)
        finally:
            rnnfast.set_num_threads(2)
        grads = [tuple(None if a is None else g for a, g in zip(t, gt)) for t, gt in zip(ws, grads)]
        res.append([y, *st, dx, *dst] + [a for t in grads for a in t if a is not None])
    return res


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("N", [24, 130])
def test_weight_gradients_beside_the_loop_same_bits_for_any_thread_count(cell, N):
    """Backward at sizes where the weight-gradient products are shared among threads (csrc/cpu/wgrad.h; two
    layers, so layer 1 also takes dW_ih and dx there): at 24 sequences after the loop, which groups of sequences
    ran side by side (wgrad::products, slices of output rows); at 130 (past the small kernel's batch) in blocks
    of steps on a helper thread while the serial loop produces them (WeightGradPipe, 15 blocks). The gradients
    are bit-for-bit those of one thread, and equal the NumPy reference (float64 to TOL64)."""
    from tolerances import TOL64
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(21)
    T, D, H = 30, 64, 64
    x = rng.standard_normal((T, N, D))
    ws = [tuple(0.3 * rng.standard_normal(s) for s in ((G * H, d), (G * H, H), (G * H,), (G * H,))) for d in (D, H)]
    states = tuple(rng.standard_normal((2, N, H)) for _ in range(2 if cell == "lstm" else 1))
    dout = rng.standard_normal((T, N, H))
    dstates = tuple(rng.standard_normal((2, N, H)) for _ in states)
    for a, b, r in zip(*_one_and_two_threads_and_reference(cell, x, states, ws, dout, dstates)):
        np.testing.assert_array_equal(b, a)
        np.testing.assert_allclose(b, r, **TOL64)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("T,N,identity", [(24, 13, False), (24, 24, True), (100, 3, False)])
def test_forward_sequence_groups_same_bits_for_any_thread_count(cell, T, N, identity, isa):
    """In every kernel build (the weight products after the loop run in the small kernel with a transposed
    first operand on the vector ones). Forward at sizes where groups of sequences run the serial loop side by
    side on rnnfast's threads
    (parallel::row_groups: 13 and 24 sequences in the small-kernel path, 3 in the per-sequence path; uneven
    groups; with h0/c0 so every group reads its own rows of them; layer 0 either with W_ih or the identity input
    of a gathered one-hot, which the LSTM's kernel reads in place): outputs, final states and the cache are
    bit-for-bit those of one thread, equal the NumPy reference (float64 to TOL64), and so do the gradients."""
    from tolerances import TOL64
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(31)
    H = 128
    D = G * H if identity else 40
    x = rng.standard_normal((T, N, D))
    ws = [tuple(0.6 / np.sqrt(H) * rng.standard_normal(s) for s in ((G * H, d), (G * H, H), (G * H,), (G * H,)))
          for d in (D, H)]
    wref = None
    if identity:  # the reference takes the identity as an explicit W_ih (no dW_ih is compared)
        wref = [(np.eye(G * H),) + ws[0][1:], ws[1]]
        ws = [(None,) + ws[0][1:], ws[1]]
    states = tuple(rng.standard_normal((2, N, H)) for _ in range(2 if cell == "lstm" else 1))
    dout = rng.standard_normal((T, N, H))
    dstates = tuple(rng.standard_normal((2, N, H)) for _ in states)
    res = _one_and_two_threads_and_reference(cell, x, states, ws, dout, dstates, wref)
    for k, (a, b, r) in enumerate(zip(*res)):
        np.testing.assert_array_equal(b, a, err_msg=f"output {k}")
        np.testing.assert_allclose(b, r, **TOL64, err_msg=f"output {k}")


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_fused_rnn_step_with_and_without_h0(nonlinearity, isa):
    """The vanilla forward's fused step (blas.h gemm_small_fused: act(P_t + b + h_{t-1} W_hh^T) in one pass,
    with no product at all at t = 0 without h0) equals the NumPy reference for both activations, a constant
    input c, the one-hot identity input (W_ih = None), row and column tails, float32 and float64."""
    from tolerances import TOL64, assert_f32_close
    rng = np.random.default_rng(23)
    for N, H, h0_given, identity in [(9, 17, False, False), (33, 40, True, False), (13, 5, False, True),
                                     (16, 32, True, True)]:
        T, D = 5, H if identity else 6
        x = rng.standard_normal((T, N, D))
        ws = [(None if identity else 0.5 * rng.standard_normal((H, D)), 0.5 * rng.standard_normal((H, H)),
               rng.standard_normal(H), rng.standard_normal(H)), tuple(0.5 * rng.standard_normal(s) for s in
                                                                      ((H, H), (H, H), (H,), (H,)))]
        h0 = rng.standard_normal((2, N, H)) if h0_given else None
        c = rng.standard_normal((N, H))

        def run(be, dt):
            cv = lambda a: None if a is None else a.astype(dt)  # noqa: E731
            w = [tuple(cv(a) for a in t) for t in ws]
            if be == "numpy" and identity:      # the reference takes the identity explicitly
                w[0] = (np.eye(H, dtype=dt),) + w[0][1:]
            y, (hn,), _ = F.forward("rnn", cv(x), (cv(h0),), w, need_cache=False, backend=be, c=cv(c),
                                    nonlinearity=nonlinearity)
            return y, hn

        ref64, ref32 = run("numpy", np.float64), run("numpy", np.float32)
        got64, got32 = run("cpu", np.float64), run("cpu", np.float32)
        for r64, r32, g64, g32 in zip(ref64, ref32, got64, got32):
            np.testing.assert_allclose(g64, r64, **TOL64, err_msg=f"N={N} H={H}")
            assert_f32_close(g32, r64, r32, name=f"N={N} H={H}")
