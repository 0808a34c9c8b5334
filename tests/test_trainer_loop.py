"""Tests of Trainer.fit as the one training loop: the time budget (on a fake clock, no timed asserts),
after_step and every-k hooks, the extra state saved into and restored from checkpoints, Ctrl-C saving
the last whole step, and the native finite guard on flat buffers. Not the optimizers or checkpoint
format themselves (test_train.py, test_reliability.py)."""
from __future__ import annotations

import numpy as np
import pytest

import rnnfast
import rnnfast.train as train
from rnnfast.topologies import ManyToMany
from rnnfast.train import Adam, Trainer, load_checkpoint

FAST = "cpu" if rnnfast.backends()["cpu"]["available"] else "numpy"


def _batch(rng, N=8, T=6):
    x = rng.integers(0, 5, (T, N))
    return x, np.roll(x, 1, axis=0) % 4


def _trainer(path=None, every=None, **kw):
    m = ManyToMany(8, 4, vocab_size=5, embed_size=3, num_layers=2, dtype=np.float32, backend=FAST, seed=1)
    return Trainer(m, Adam(m, 0.02), clip_norm=1.0, checkpoint=path, checkpoint_every=every, progress=False,
                   seed=7, **kw)


def test_time_budget_on_a_fake_clock(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(train.time, "perf_counter", lambda: clock["t"])

    def batch(rng):
        clock["t"] += 1.0              # each step "takes" one second
        return _batch(rng)

    tr = _trainer()
    tr.fit(batch, max_seconds=3)
    assert tr.step_count == 3
    tr2 = _trainer()
    tr2.fit(batch, 2, max_seconds=100)   # whichever budget ends first
    assert tr2.step_count == 2
    with pytest.raises(ValueError, match="num_steps or max_seconds"):
        _trainer().fit(batch)
    with pytest.raises(ValueError, match="max_seconds"):
        _trainer().fit(batch, max_seconds=-1)


def test_hooks_run_every_k_steps_and_after_step_before_the_checkpoint(tmp_path):
    seen, after = [], []
    state = {"n": 0}
    tr = _trainer(tmp_path / "ck.npz", every=2, extra_state=(lambda: {"n": state["n"]}, None))

    def after_step(t, loss):
        state["n"] += 1
        after.append((t.step_count, loss))

    tr.fit(_batch, 6, after_step=after_step, hooks=[(3, lambda t: seen.append(("a", t.step_count))),
                                                   (2, lambda t: seen.append(("b", t.step_count)))])
    assert [s for s, _ in after] == [1, 2, 3, 4, 5, 6]
    assert [loss for _, loss in after] == tr.history["loss"]
    assert seen == [("b", 2), ("a", 3), ("b", 4), ("a", 6), ("b", 6)]
    info = load_checkpoint(tmp_path / "ck.npz")
    assert info["step"] == 6 and info["extra"]["n"] == 6      # the loop's state had followed the update
    with pytest.raises(ValueError, match="hooks"):
        _trainer().fit(_batch, 1, hooks=[(0, print)])


def _stateful(path=None, every=None):
    """A loop with state of its own: a carried float32 array mixed into each batch, and a counter."""
    loop = {"h": np.zeros(3, np.float32), "k": 0}

    def get():
        return {"h": loop["h"], "k": loop["k"]}

    def put(extra):
        loop["h"], loop["k"] = extra["h"], extra["k"]

    tr = _trainer(path, every, extra_state=(get, put))

    def batch(rng):
        x, y = _batch(rng)
        return (x + int(loop["h"].sum() * 1000) % 2) % 5, y

    def after_step(t, loss):
        loop["h"] = (loop["h"] + np.float32(loss) / np.float32(3.0)).astype(np.float32)
        loop["k"] += 1

    return tr, loop, batch, after_step


def test_extra_state_round_trip_and_exact_resume(tmp_path):
    full, floop, fb, fa = _stateful()
    full.fit(fb, 10, after_step=fa)
    p = tmp_path / "ck.npz"
    half, hloop, hb, ha = _stateful(p, every=5)
    half.fit(hb, 5, after_step=ha)
    with np.load(p, allow_pickle=False) as z:
        assert z["extra/h"].dtype == np.float32 and np.array_equal(z["extra/h"], hloop["h"])
    resumed, rloop, rb, ra = _stateful(p)
    resumed.load()
    assert rloop["k"] == 5 and rloop["h"].dtype == np.float32 and np.array_equal(rloop["h"], hloop["h"])
    resumed.fit(rb, 10, after_step=ra)
    assert resumed.history["loss"] == full.history["loss"]
    assert np.array_equal(rloop["h"], floop["h"]) and rloop["k"] == 10


def test_ctrl_c_saves_the_last_whole_step_and_resume_is_exact(tmp_path):
    full, _, fb, fa = _stateful()
    full.fit(fb, 8, after_step=fa)
    p = tmp_path / "ck.npz"
    tr, loop, b, a = _stateful(p)
    calls = {"n": 0}

    def interrupting(rng):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return b(rng)

    with pytest.raises(KeyboardInterrupt) as e:
        tr.fit(interrupting, 8, after_step=a)
    assert e.value.step == 3 and e.value.checkpoint == str(p)
    assert load_checkpoint(p)["step"] == 3
    resumed, _, rb, ra = _stateful(p)
    resumed.load()
    resumed.fit(rb, 8, after_step=ra)
    assert resumed.history["loss"] == full.history["loss"]


def test_interrupt_inside_the_update_does_not_save_a_half_step(tmp_path):
    p = tmp_path / "ck.npz"
    tr, loop, b, a = _stateful(p, every=2)

    def after(t, loss):
        if t.step_count == 3:
            raise KeyboardInterrupt      # the update happened but the loop's state has not followed it
        a(t, loss)

    with pytest.raises(KeyboardInterrupt) as e:
        tr.fit(b, 8, after_step=after)
    assert e.value.checkpoint is None and load_checkpoint(p)["step"] == 2


def test_should_stop_stops_like_ctrl_c(tmp_path):
    p = tmp_path / "ck.npz"
    tr = _trainer(p)
    with pytest.raises(KeyboardInterrupt) as e:
        tr.fit(_batch, 10, should_stop=lambda: tr.step_count >= 4)
    assert isinstance(e.value, train.TrainingInterrupted)
    assert e.value.step == 4 and load_checkpoint(p)["step"] == 4


@pytest.mark.skipif(FAST != "cpu", reason="needs the native extension")
def test_finite_guard_uses_one_native_pass_on_flat_buffers(monkeypatch, tmp_path):
    tr = _trainer()
    ops = train._native()
    calls = []

    class Counting:
        def __getattr__(self, name):
            return getattr(ops, name)

        def all_finite(self, g):
            calls.append(g.size)
            return ops.all_finite(g)

    monkeypatch.setattr(train, "_native", lambda: Counting())
    fb = train.flat_buffers(tr.model)
    assert fb is not None
    tr.fit(_batch, 2)
    assert calls and set(calls) == {fb.P.size}
    assert train._nonfinite_in(tr.model, "G") is None
    name = next(iter(tr.model.grads))
    tr.model.grads[name].flat[0] = np.nan          # a view into the flat gradient buffer
    assert train._nonfinite_in(tr.model, "G") == name
    pname = list(tr.model.params)[-1]
    tr.model.params[pname].flat[-1] = np.inf
    assert train._nonfinite_in(tr.model, "P") == pname
    with pytest.raises(train.TrainingDiverged, match="NaN or inf"):
        tr.save(tmp_path / "never.npz")
