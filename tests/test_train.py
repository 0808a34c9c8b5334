"""Tests of rnnfast.train: optimizers (against torch.optim when installed and hand-written updates),
clipping, sampling, truncated BPTT (k = T equals full BPTT; no gradient crosses a chunk boundary),
checkpoints (exact resume, atomic saves that survive interruption, no pickle), the NaN guard, the progress
bar and the loss history. Not the models (test_topologies.py) or layers (test_nn_layers.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import rnnfast
from rnnfast.nn import Linear
from rnnfast.topologies import ManyToMany, ManyToOne
from rnnfast.train import (SGD, Adagrad, Adam, RMSprop, Trainer, TrainingDiverged, clip_grad_norm,
                           clip_grad_value, load_checkpoint, plot_history, sample_logits, save_checkpoint)

FAST = "cpu" if rnnfast.backends()["cpu"]["available"] else "numpy"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- optimizers ----

OPTS = [
    (SGD, dict(lr=0.1), "SGD", dict(lr=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9), "SGD", dict(lr=0.1, momentum=0.9)),
    (SGD, dict(lr=0.1, momentum=0.5, weight_decay=0.01), "SGD", dict(lr=0.1, momentum=0.5, weight_decay=0.01)),
    (Adagrad, dict(lr=0.1), "Adagrad", dict(lr=0.1, eps=1e-10)),
    (RMSprop, dict(lr=0.01, alpha=0.9), "RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-8)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.99)), "Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8)),
]


@pytest.mark.parametrize("cls,kw,tname,tkw", OPTS, ids=[f"{o[2]}-{i}" for i, o in enumerate(OPTS)])
def test_optimizers_match_torch(cls, kw, tname, tkw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    lin = Linear(4, 3, dtype=np.float64, seed=0)
    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in lin.params.items()}
    opt = cls(lin, **kw)
    topt = getattr(torch.optim, tname)(list(tp.values()), **tkw)
    for _ in range(4):
        for k in lin.params:
            g = rng.standard_normal(lin.params[k].shape)
            lin.grads[k][...] = g
            tp[k].grad = torch.tensor(g)
        opt.step()
        topt.step()
        for k in lin.params:
            np.testing.assert_allclose(lin.params[k], tp[k].detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_sgd_momentum_and_adam_by_hand():
    lin = Linear(2, 1, bias=False, dtype=np.float64, seed=0)
    w0 = lin.params["weight"].copy()
    opt = SGD(lin, lr=0.5, momentum=0.9)
    g1, g2 = np.array([[1.0, -2.0]]), np.array([[0.5, 0.5]])
    lin.grads["weight"][...] = g1
    opt.step()
    lin.grads["weight"][...] = g2
    opt.step()
    np.testing.assert_allclose(lin.params["weight"], w0 - 0.5 * g1 - 0.5 * (0.9 * g1 + g2), rtol=1e-14)
    lin2 = Linear(2, 1, bias=False, dtype=np.float64, seed=0)
    adam = Adam(lin2, lr=0.1)
    lin2.grads["weight"][...] = g1
    adam.step()                       # first Adam step moves every weight by lr * sign(g) (up to eps)
    np.testing.assert_allclose(lin2.params["weight"], w0 - 0.1 * np.sign(g1), rtol=1e-7)


def test_optimizer_follows_replaced_arrays_and_validates():
    lin = Linear(2, 2, dtype=np.float64, seed=0)
    opt = SGD(lin, lr=1.0)
    lin.load_state_dict({k: np.zeros_like(v) for k, v in lin.params.items()})   # replaces the arrays
    for g in lin.grads.values():
        g.fill(1.0)
    opt.step()
    assert np.all(lin.params["weight"] == -1.0)
    with pytest.raises(ValueError, match="lr must be"):
        Adam(lin, lr=-1.0)
    with pytest.raises(TypeError, match=r"\.params and \.grads"):
        SGD(object(), lr=0.1)
    with pytest.raises(KeyError, match="names no parameter"):
        opt.load_state_dict({"t": np.array(1), "lr": np.array(0.1), "momentum/nope": np.zeros(2)})


# ---- clipping ----


def test_clip_grad_value_and_norm():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    lin = Linear(5, 4, dtype=np.float64, seed=0)
    for g in lin.grads.values():
        g[...] = rng.standard_normal(g.shape) * 3
    ref = [torch.tensor(g.copy()) for g in lin.grads.values()]
    ps = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in ref]
    for p, g in zip(ps, ref):
        p.grad = g
    norm = clip_grad_norm(lin, 2.0)
    tnorm = torch.nn.utils.clip_grad_norm_(ps, 2.0)
    assert norm == pytest.approx(float(tnorm), rel=1e-12)
    for g, p in zip(lin.grads.values(), ps):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-10)
    assert np.sqrt(sum((g ** 2).sum() for g in lin.grads.values())) == pytest.approx(2.0, rel=1e-5)
    before = {k: v.copy() for k, v in lin.grads.items()}
    assert clip_grad_norm(lin.grads, 100.0) == pytest.approx(2.0, rel=1e-5)     # under the limit: untouched
    for k in before:
        np.testing.assert_array_equal(lin.grads[k], before[k])
    lin.grads["weight"][0, 0] = 7.0
    clip_grad_value(lin, 0.25)
    assert max(np.abs(g).max() for g in lin.grads.values()) == 0.25
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        clip_grad_norm(lin, 0)
    with pytest.raises(ValueError, match="clip must be > 0"):
        clip_grad_value(lin, -1)


# ---- sampling ----


def test_sample_logits_greedy_seeded_topk_and_distribution():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, 7))
    np.testing.assert_array_equal(sample_logits(z), z.argmax(1))
    s1 = sample_logits(z, "sample", temperature=1.3, rng=42)
    s2 = sample_logits(z, "sample", temperature=1.3, rng=42)
    np.testing.assert_array_equal(s1, s2)
    big = np.repeat(z[:1], 20000, axis=0)
    draws = sample_logits(big, "sample", temperature=0.7, rng=np.random.default_rng(0))
    p = np.exp(z[0] / 0.7) / np.exp(z[0] / 0.7).sum()
    np.testing.assert_allclose(np.bincount(draws, minlength=7) / 20000, p, atol=0.015)
    top3 = set(np.argsort(z[0])[-3:])
    d3 = sample_logits(big, "sample", top_k=3, rng=1)
    assert set(np.unique(d3)) == top3
    np.testing.assert_array_equal(sample_logits(z, "sample", temperature=1e-6, rng=3), z.argmax(1))
    assert sample_logits(z[0]) == z[0].argmax()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_logits(z, "sample", temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        sample_logits(z, "sample", top_k=0)
    with pytest.raises(ValueError, match="method"):
        sample_logits(z, "beam")


# ---- truncated BPTT ----


def _m2m(backend=FAST, dtype=np.float64):
    return ManyToMany(6, 4, vocab_size=5, num_layers=2, dtype=dtype, backend=backend, seed=3)


def _long_batch(T=12, N=3):
    rng = np.random.default_rng(5)
    return rng.integers(0, 5, (T, N)), rng.integers(0, 4, (T, N))


def test_tbptt_with_k_equal_T_is_full_bptt():
    x, y = _long_batch()
    a, b = _m2m(), _m2m()
    ta, tb = Trainer(a, Adam(a, 0.01), progress=False), Trainer(b, Adam(b, 0.01), progress=False)
    for _ in range(3):
        la, _ = ta.tbptt(x, y, k=len(x))
        lb = tb.step(x, y)
        assert la == [lb]
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_tbptt_carries_state_without_gradient_across_the_boundary():
    x, y = _long_batch()
    m = _m2m()
    tr = Trainer(m, SGD(m, lr=0.0), progress=False)      # lr 0: parameters stay put, gradients stay visible
    losses, h_last = tr.tbptt(x, y, k=5)                  # chunks of 5, 5, 2
    assert len(losses) == 3 and tr.step_count == 3
    full = _m2m()
    full_loss = full.loss(x, y)
    assert sum(losses) == pytest.approx(full_loss, rel=1e-12)     # the state is carried exactly
    _, h10 = full.forward(x[:10])
    np.testing.assert_allclose(full.forward(x)[1], h_last, rtol=1e-12)
    ref = _m2m()                                          # the last chunk alone, from the carried state
    ref.loss(x[10:], y[10:], h0=h10)
    for k in ref.grads:
        np.testing.assert_allclose(m.grads[k], ref.grads[k], rtol=1e-10, atol=1e-13, err_msg=k)
    full.zero_grad()
    full.loss(x, y)
    assert not np.allclose(full.grads["encoder.rnn.weight_hh_l0"], m.grads["encoder.rnn.weight_hh_l0"])


def test_tbptt_bad_input():
    m = _m2m()
    tr = Trainer(m, SGD(m, lr=0.1), progress=False)
    x, y = _long_batch()
    with pytest.raises(ValueError, match="k .* must be an int >= 1"):
        tr.tbptt(x, y, k=0)
    with pytest.raises(ValueError, match="same number of steps"):
        tr.tbptt(x, y[:5], k=3)


# ---- checkpoints ----


def _batch(rng, N=8, T=6):
    x = rng.integers(0, 5, (T, N))
    y = np.roll(x, 1, axis=0) % 4
    return x, y


def _trainer(path=None, every=None, backend=FAST):
    m = ManyToMany(8, 4, vocab_size=5, embed_size=3, num_layers=2, dtype=np.float32, backend=backend, seed=1)
    return Trainer(m, Adam(m, 0.02), clip_norm=1.0, checkpoint=path, checkpoint_every=every, progress=False,
                   seed=7, metadata={"task": "roll"})


def test_checkpoint_roundtrip_no_pickle_metadata_inside(tmp_path):
    p = tmp_path / "ck.npz"
    tr = _trainer()
    tr.fit(_batch, 3)
    tr.save(p)
    with np.load(p, allow_pickle=False) as z:
        assert "step" in z.files and any(f.startswith("optim/exp_avg/") for f in z.files)
        assert all(z[f].dtype != object for f in z.files)
    assert not (tmp_path / "ck.npz.json").exists()          # no sidecar to go stale; the meta is inside
    assert load_checkpoint(p)["meta"]["step"] == 3
    fresh = _trainer()
    info = fresh.load(p)
    assert info["step"] == 3 and fresh.step_count == 3 and info["metadata"] == {"task": "roll"}
    assert fresh.history == tr.history
    for k, v in tr.model.params.items():
        np.testing.assert_array_equal(fresh.model.params[k], v)
    st, fst = tr.optimizer.state_dict(), fresh.optimizer.state_dict()
    assert st.keys() == fst.keys()
    for k in st:
        np.testing.assert_array_equal(st[k], fst[k])
    assert tr.rng.random() == fresh.rng.random()
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_resume_continues_exactly(tmp_path):
    p = tmp_path / "ck.npz"
    full = _trainer()
    full.fit(_batch, 16)
    half = _trainer(p, every=8)
    half.fit(_batch, 8)
    del half
    resumed = _trainer(p)                       # new objects: everything comes from the file
    resumed.load()
    assert resumed.step_count == 8
    resumed.fit(_batch, 16)
    assert resumed.history["loss"] == full.history["loss"]          # bit for bit, all 16 steps
    for k, v in full.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[k], v)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    p = tmp_path / "ck.npz"
    tr = _trainer(p)
    tr.fit(_batch, 2)
    tr.save()
    good = p.read_bytes()
    tr.fit(_batch, 4)

    def dying_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        tr.save()
    monkeypatch.undo()
    assert p.read_bytes() == good
    assert load_checkpoint(p)["step"] == 2
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_killed_process_during_save_leaves_loadable_checkpoint(tmp_path):
    """A real crash: the process dies (os._exit) half-way through writing the second checkpoint."""
    p = tmp_path / "ck.npz"
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {os.path.join(ROOT, 'python')!r})
        from rnnfast.nn import Linear
        from rnnfast.train import save_checkpoint
        m = Linear(3, 2, seed=0)
        save_checkpoint({str(p)!r}, m, step=1)
        def die(f, **arrays):
            f.write(b"PK\\x03\\x04 partial")
            f.flush()
            os._exit(3)
        np.savez = die
        save_checkpoint({str(p)!r}, m, step=2)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    info = load_checkpoint(p, Linear(3, 2, seed=5))
    assert info["step"] == 1


def test_load_checkpoint_errors(tmp_path):
    p = tmp_path / "ck.npz"
    lin = Linear(3, 2, seed=0)
    save_checkpoint(p, lin, step=4)
    with pytest.raises(KeyError, match="no optimizer state"):
        load_checkpoint(p, Linear(3, 2), SGD(Linear(3, 2), lr=0.1))
    with pytest.raises(KeyError, match="no RNG state"):
        load_checkpoint(p, rng=np.random.default_rng())
    with pytest.raises(ValueError, match="weight must have shape"):
        load_checkpoint(p, Linear(4, 2))


# ---- NaN guard ----


def test_nan_loss_stops_with_step_and_checkpoint_and_no_update(tmp_path):
    p = tmp_path / "ck.npz"
    m = ManyToOne(4, 2, input_size=1, backend=FAST, seed=0)
    tr = Trainer(m, SGD(m, lr=0.1), checkpoint=p, checkpoint_every=2, progress=False)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 4, 1)).astype(np.float32), np.array([0, 1, 1, 0])
    for _ in range(3):
        tr.step(x, y)
    saved = p.read_bytes()
    before = {k: v.copy() for k, v in m.params.items()}
    bad = x.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 4; .*ck\.npz \(step 2\)"):
        tr.step(bad, y)
    assert tr.step_count == 3 and len(tr.history["loss"]) == 3
    for k in before:
        np.testing.assert_array_equal(m.params[k], before[k])
    assert p.read_bytes() == saved and load_checkpoint(p)["step"] == 2
    assert issubclass(TrainingDiverged, FloatingPointError)


# ---- progress and history ----


def test_progress_bar_with_tqdm_and_without(monkeypatch):
    calls = {"postfix": [], "update": 0, "closed": False, "init": None}

    class FakeBar:
        def __init__(self, total=None, initial=0, unit=None, **kw):
            calls["init"] = (total, initial, unit)

        def set_postfix(self, d, refresh=True):
            calls["postfix"].append(dict(d))

        def update(self, n):
            calls["update"] += n

        def close(self):
            calls["closed"] = True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=FakeBar))   # notebooks' bar
    tr = _trainer()
    tr.progress = True
    tr.fit(_batch, 5, tokens_per_step=48)
    assert calls["init"] == (5, 0, "step") and calls["update"] == 5 and calls["closed"]
    assert set(calls["postfix"][-1]) == {"loss", "steps/s", "tok/s"}
    assert float(calls["postfix"][-1]["loss"]) == pytest.approx(tr.history["loss"][-1], rel=1e-3)
    monkeypatch.setitem(sys.modules, "tqdm", None)          # not installed: no bar, training still runs
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    tr2 = _trainer()
    tr2.progress = True
    hist = tr2.fit(_batch, 3)
    assert hist["step"] == [1, 2, 3] and len(hist["loss"]) == 3
    assert hist["loss"] == tr.history["loss"][:3]


def test_trainer_bad_arguments():
    m = _m2m()
    with pytest.raises(ValueError, match="checkpoint_every needs a checkpoint path"):
        Trainer(m, SGD(m, lr=0.1), checkpoint_every=5)
    with pytest.raises(ValueError, match="no checkpoint path"):
        Trainer(m, SGD(m, lr=0.1), progress=False).save()


def test_plot_history_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    tr = _trainer()
    tr.fit(_batch, 6)
    plot_history(tr.history, tmp_path / "loss.png", smooth=0.5, title="roll")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="smooth"):
        plot_history(tr.history, tmp_path / "x.png", smooth=1.0)
