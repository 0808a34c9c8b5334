"""Regression tests for issue 11 (reliability): MemoryError instead of a crash when a copy cannot be
allocated, big-endian arrays, the Trainer's NaN guard, all-or-nothing checkpoint loads, RNNFAST_NUM_THREADS
and set_num_threads, clear errors instead of pybind11 dumps or broadcast errors, checkpoint temp files and
concurrent saves, Ctrl-C during a long kernel call. Not the property-based tests (test_properties.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import rnnfast
import rnnfast.functional as F
from rnnfast.compat import cs231n
from rnnfast.topologies import ManyToMany, ManyToOne, OneToMany, Seq2Seq
from rnnfast.train import SGD, Adam, Trainer, TrainingDiverged, load_checkpoint, save_checkpoint

HAVE_CPU = rnnfast.backends()["cpu"]["available"]
BACKENDS = ["numpy", "cpu"] if HAVE_CPU else ["numpy"]
needs_cpu = pytest.mark.skipif(not HAVE_CPU, reason="cpu backend missing")
# Where the rnnfast under test lives (site-packages after `pip install`, python/ in a dev build): subprocesses
# must import the same package, never the source tree by accident (it has no _C when installed).
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))


def _run(code, env=None, timeout=120):
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([PKG_PARENT, os.environ.get("PYTHONPATH", "")]))
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=e,
                          timeout=timeout)


def _weights(rng, D, H, L=1, G=1, dtype=np.float32, bias=True):
    out = []
    for k in range(L):
        Dk = D if k == 0 else H
        s = 1 / np.sqrt(H)
        w = (rng.uniform(-s, s, (G * H, Dk)).astype(dtype), rng.uniform(-s, s, (G * H, H)).astype(dtype))
        b = (rng.uniform(-s, s, G * H).astype(dtype), rng.uniform(-s, s, G * H).astype(dtype)) if bias else (None, None)
        out.append(w + b)
    return out


# ---- 1. a copy that cannot be allocated: MemoryError naming the argument, not a segfault ----


@needs_cpu
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_uncopyable_argument_raises_memory_error(cell):
    r = _run(f"""
        import resource, numpy as np, rnnfast.functional as F
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        G = dict(rnn=1, lstm=4, gru=3)["{cell}"]
        H = 2 ** 16
        W = [(np.full((G * H, 4), .1, np.float32), np.broadcast_to(np.float32(.1), (G * H, H)), None, None)]
        x = np.ones((2, 1, 4), np.float32)
        fwd = dict(rnn=lambda: F.rnn_forward(x, None, W, need_cache=False, backend="cpu"),
                   lstm=lambda: F.lstm_forward(x, None, None, W, need_cache=False, backend="cpu"),
                   gru=lambda: F.gru_forward(x, None, W, need_cache=False, backend="cpu"))["{cell}"]
        try:
            fwd()
        except MemoryError as e:
            print("MemoryError:", e)
        xs = np.lib.stride_tricks.as_strided(np.ones(1, np.float32), (1000, 1000, 2000), (0, 0, 0))
        W2 = [(np.ones((G * 3, 2000), np.float32), np.ones((G * 3, 3), np.float32), None, None)]
        try:
            F.rnn_forward(xs, None, W2, need_cache=False, backend="cpu") if G == 1 else \\
                F.gru_forward(xs, None, W2, need_cache=False, backend="cpu") if G == 3 else \\
                F.lstm_forward(xs, None, None, W2, need_cache=False, backend="cpu")
        except MemoryError as e:
            print("MemoryError:", e)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    assert "weight_hh_l0" in lines[0] and lines[1].startswith("MemoryError:") and " x " in lines[1]


# ---- 2. big-endian arrays: converted (inputs) or refused naming the argument (accumulated grads) ----


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["x", "weights", "all", "h0"])
def test_big_endian_inputs_equal_native(backend, which):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 6)).astype(np.float32)
    W = _weights(rng, 5, 6, L=2)
    ref = F.rnn_forward(x, h0, W, need_cache=False, backend="numpy")[0]

    def be(a):
        return None if a is None else a.astype(">f4")

    xb = be(x) if which in ("x", "all") else x
    hb = be(h0) if which in ("h0", "all") else h0
    Wb = [tuple(be(a) for a in w) for w in W] if which in ("weights", "all") else W
    out = F.rnn_forward(xb, hb, Wb, need_cache=False, backend=backend)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    for cell, G in (("lstm", 4), ("gru", 3)):
        Wg = _weights(rng, 5, 6, L=1, G=G)
        fw = F.lstm_forward if cell == "lstm" else F.gru_forward
        args = (lambda xx, ww: (xx, None, None, ww)) if cell == "lstm" else (lambda xx, ww: (xx, None, ww))
        r = fw(*args(x, Wg), need_cache=False, backend="numpy")[0]
        Wgb = [tuple(be(a) for a in w) for w in Wg] if which in ("weights", "all") else Wg
        g = fw(*args(xb, Wgb), need_cache=False, backend=backend)[0]
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


@needs_cpu
def test_big_endian_backward_and_grads():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    W = _weights(rng, 4, 5)
    out, _, cache = F.rnn_forward(x.astype(">f4"), None, W, backend="cpu")
    _, _, cref = F.rnn_forward(x, None, W, backend="numpy")
    dout = rng.standard_normal(out.shape).astype(np.float32)
    g = [tuple(np.zeros_like(a) for a in w) for w in W]
    gr = [tuple(np.zeros_like(a) for a in w) for w in W]
    dx = F.rnn_backward(dout.astype(">f4"), None, cache, g, backend="cpu")[0]
    dxr = F.rnn_backward(dout, None, cref, gr, backend="numpy")[0]
    np.testing.assert_allclose(dx, dxr, rtol=1e-5, atol=1e-6)
    for a, b in zip(g[0], gr[0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    bad = [(g[0][0].astype(">f4"),) + g[0][1:]]
    before = [a.copy() for a in bad[0]]
    with pytest.raises(ValueError, match="dW_ih_l0 must have native byte order"):
        F.rnn_backward(dout, None, cache, bad, backend="cpu")
    for a, b in zip(bad[0], before):
        np.testing.assert_array_equal(a, b)


# ---- 3. the NaN guard: gradients and updated parameters, and the last good checkpoint ----


def _m2o(seed=1):
    return ManyToOne(6, 3, input_size=4, dtype=np.float32, seed=seed)


def test_finite_loss_with_nan_gradient_is_refused(tmp_path):
    m = _m2o()
    p = tmp_path / "ck.npz"
    tr = Trainer(m, SGD(m, 0.1), checkpoint=p, checkpoint_every=1, progress=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    tr.step(x, y)
    saved = p.read_bytes()
    good = {k: v.copy() for k, v in m.params.items()}
    bad = x.copy()
    bad[4, 0] = np.nan                 # padding after lengths[0] = 2: the loss stays finite, gradients do not
    lengths = np.array([2, 5, 5, 5])
    with pytest.raises(TrainingDiverged, match=rf"gradient of .* NaN or inf .*finite.*last good checkpoint is {p}"):
        tr.step(bad, y, lengths=lengths)
    inf = x.copy()
    inf[0, 1, 0] = np.inf
    with pytest.raises(TrainingDiverged, match=rf"NaN or inf.*last good checkpoint is {p} \(step 1\)"):
        tr.step(inf, y)
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, good[k])
    assert p.read_bytes() == saved and tr.step_count == 1


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_update_to_inf_is_not_checkpointed(tmp_path):
    m = _m2o()
    p = tmp_path / "ck.npz"
    tr = Trainer(m, SGD(m, 0.1), checkpoint=p, checkpoint_every=1, progress=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    tr.step(x, y)
    saved = p.read_bytes()
    tr.optimizer.lr = 1e39                  # float32 parameters overflow to inf
    with pytest.raises(TrainingDiverged, match=rf"after the update of step 2.*last good checkpoint is {p} \(step 1\)"):
        tr.step(x, y)
    assert p.read_bytes() == saved
    with pytest.raises(TrainingDiverged, match=rf"not saved.*last good checkpoint is {p} \(step 1\)"):
        tr.save()
    with pytest.raises(ValueError, match="holds NaN or inf: refusing"):
        save_checkpoint(p, m)
    assert p.read_bytes() == saved


# ---- 4. all-or-nothing checkpoint loads ----


def _snapshot(m):
    return {k: v.copy() for k, v in m.params.items()}


def test_failed_load_changes_nothing(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (6, 4)), rng.integers(0, 3, (6, 4))
    src = ManyToMany(8, 3, vocab_size=5, embed_size=3, seed=1)
    tr = Trainer(src, Adam(src, 0.01), progress=False)
    tr.step(x, y)
    p = tmp_path / "ck.npz"
    tr.save(p)
    # the same encoder with another head: the encoder would load before the head fails
    other = ManyToMany(8, 4, vocab_size=5, embed_size=3, seed=2)
    opt = Adam(other, 0.5)
    before, t_before = _snapshot(other), opt.t
    with pytest.raises(ValueError, match=rf"{p}: head.weight must have shape"):
        load_checkpoint(p, other, opt)
    for k, v in other.params.items():
        np.testing.assert_array_equal(v, before[k])
    assert opt.lr == 0.5 and opt.state == {} and opt.t == t_before
    # an Adam checkpoint into an SGD trainer: refused, the SGD's learning rate kept
    same = ManyToMany(8, 3, vocab_size=5, embed_size=3, seed=3)
    sgd = SGD(same, 0.3)
    before = _snapshot(same)
    with pytest.raises(ValueError, match=rf"{p} holds the state of a Adam optimizer; it cannot be loaded into a SGD"):
        Trainer(same, sgd, progress=False).load(p)
    assert sgd.lr == 0.3
    for k, v in same.params.items():
        np.testing.assert_array_equal(v, before[k])
    # Optimizer.load_state_dict alone also refuses another optimizer's slots, changing nothing
    with pytest.raises(ValueError, match="exp_avg.*SGD does not have"):
        sgd.load_state_dict(tr.optimizer.state_dict())
    assert sgd.lr == 0.3 and sgd.state == {}


def test_corrupt_member_changes_nothing_and_names_file(tmp_path):
    import zipfile
    m = _m2o()
    p = tmp_path / "ck.npz"
    save_checkpoint(p, m, SGD(m, 0.1))
    q = tmp_path / "bad.npz"
    with zipfile.ZipFile(p) as zin, zipfile.ZipFile(q, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.startswith("model/head"):
                data = data[:-7]                      # a truncated member
            zout.writestr(item, data)
    fresh = _m2o(seed=9)
    before = _snapshot(fresh)
    with pytest.raises(ValueError, match=str(q)):
        load_checkpoint(q, fresh)
    for k, v in fresh.params.items():
        np.testing.assert_array_equal(v, before[k])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz is not a readable rnnfast checkpoint"):
        load_checkpoint(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_checkpoint(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="plain.npz is not an rnnfast checkpoint"):
        load_checkpoint(tmp_path / "plain.npz")


# ---- checkpoint files: no sidecar to go stale, orphan temp files, two threads on one path ----


def test_orphan_temp_files_are_removed_and_no_sidecar(tmp_path):
    m = _m2o()
    p = tmp_path / "ck.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    orphan = tmp_path / f".ck.npz.tmp-{dead}"
    orphan.write_bytes(b"half a checkpoint")
    orphan2 = tmp_path / f".ck.npz.tmp-{dead}-abc123"
    orphan2.write_bytes(b"half a checkpoint")
    live = tmp_path / f".ck.npz.tmp-{os.getppid()}-x"          # a live writer's file is left alone
    live.write_bytes(b"in progress")
    (tmp_path / "ck.npz.json").write_text(json.dumps({"format_version": 1, "step": 0}))   # an old sidecar
    save_checkpoint(p, m, step=4)
    assert not orphan.exists() and not orphan2.exists() and live.exists()
    assert not (tmp_path / "ck.npz.json").exists()
    assert load_checkpoint(p)["meta"]["step"] == 4


def test_two_threads_saving_to_one_path(tmp_path):
    p = tmp_path / "ck.npz"
    models = [_m2o(seed=s) for s in range(4)]
    errors = []

    def save(m, step):
        try:
            for _ in range(5):
                save_checkpoint(p, m, step=step)
        except Exception as e:       # noqa: BLE001  (collected, asserted below)
            errors.append(e)

    ts = [threading.Thread(target=save, args=(m, i)) for i, m in enumerate(models)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert [f for f in os.listdir(tmp_path) if ".tmp-" in f] == []
    info = load_checkpoint(p)
    winner = models[info["step"]]
    with np.load(p) as z:
        for k, v in winner.params.items():
            np.testing.assert_array_equal(z[f"model/{k}"], v)


# ---- the block cache behind the arrays rnnfast allocates (csrc/cpu/pool.h) ----


@needs_cpu
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_pooled_arrays_are_reused_but_never_shared(cell):
    """Training steps reuse cached blocks (hits grow, no new misses once warm), while arrays a caller still
    holds (outputs, gradients, caches) are never handed out again: their values survive later calls."""
    from rnnfast import _C
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(0)
    T, N, D, H = 20, 16, 24, 64                  # (T, N, G*H) blocks of 80-320 KB: above the cache's minimum
    W = _weights(rng, D, H, L=2, G=G)
    states = (None, None) if cell == "lstm" else (None,)

    def step(x):
        out, _, cache = F.forward(cell, x, states, W, need_cache=True, backend="cpu")
        grads = [tuple(np.zeros_like(a) for a in w) for w in W]
        dx, _, _ = F.backward(cell, np.ones_like(out), (None,) * len(states), cache, grads, backend="cpu")
        return out, dx, grads

    x1 = rng.standard_normal((T, N, D)).astype(np.float32)
    kept = step(x1)
    copies = (kept[0].copy(), kept[1].copy(), [tuple(a.copy() for a in g) for g in kept[2]])
    for _ in range(3):
        step(rng.standard_normal((T, N, D)).astype(np.float32))
    before = _C.pool_stats()
    for _ in range(3):
        step(rng.standard_normal((T, N, D)).astype(np.float32))
    after = _C.pool_stats()
    if before["limit_bytes"] > 0:
        assert after["hits"] > before["hits"] and after["misses"] == before["misses"], (before, after)
    np.testing.assert_array_equal(kept[0], copies[0])
    np.testing.assert_array_equal(kept[1], copies[1])
    for g, c in zip(kept[2], copies[2]):
        for a, b in zip(g, c):
            np.testing.assert_array_equal(a, b)
    again = step(x1)                              # and the values are the same computation as before
    np.testing.assert_array_equal(again[0], copies[0])
    np.testing.assert_array_equal(again[1], copies[1])


@needs_cpu
def test_pool_limit_and_trim():
    from rnnfast import _C
    old = _C.set_pool_limit(0)
    try:
        assert _C.pool_stats()["cached_bytes"] == 0 and _C.pool_stats()["limit_bytes"] == 0
        out, _, _ = F.rnn_forward(np.ones((50, 32, 8), np.float32), None, _weights(np.random.default_rng(1), 8, 128),
                                  need_cache=True, backend="cpu")
        del out
        assert _C.pool_stats()["cached_bytes"] == 0          # nothing kept with caching off
        with pytest.raises(ValueError, match="limit must be >= 0"):
            _C.set_pool_limit(-1)
    finally:
        _C.set_pool_limit(old)
    _C.pool_trim()
    assert _C.pool_stats()["cached_bytes"] == 0


@needs_cpu
@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "99999999"])
def test_pool_mb_typo_raises(value):
    r = _run("""
        import numpy as np, rnnfast
        try:
            rnnfast.backends()
            print("loaded")
        except ValueError as e:
            print("ValueError:", e)
    """, env={"RNNFAST_POOL_MB": value})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ValueError: RNNFAST_POOL_MB must be an integer"), r.stdout


@needs_cpu
def test_pool_mb_applies():
    r = _run("import rnnfast; rnnfast.backends(); from rnnfast import _C; print(_C.pool_stats()['limit_bytes'])",
             env={"RNNFAST_POOL_MB": " 3 "})
    assert r.returncode == 0 and r.stdout.strip() == str(3 << 20), (r.stdout, r.stderr)


# ---- 7. RNNFAST_NUM_THREADS ----


@needs_cpu
@pytest.mark.parametrize("value", ["0", "abc", "two", "-3", "1.5", "99999"])
def test_num_threads_typo_raises(value):
    r = _run("""
        import numpy as np, rnnfast
        try:
            rnnfast.rnn_forward(np.ones((1, 1, 1), np.float32), None,
                                [(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), None, None)])
            print("ran on", rnnfast.backends())
        except ValueError as e:
            print("ValueError:", e)
    """, env={"RNNFAST_NUM_THREADS": value})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ValueError: RNNFAST_NUM_THREADS must be a positive integer"), r.stdout
    assert repr(value) in r.stdout


@needs_cpu
def test_num_threads_valid_value_applies():
    r = _run("import rnnfast; rnnfast.backends(); from rnnfast import _C; print(_C.blas_num_threads())",
             env={"RNNFAST_NUM_THREADS": " 1 "})
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr


# ---- 8. set_num_threads: validated, and safe to call during a call in another thread ----


@needs_cpu
@pytest.mark.parametrize("bad,exc", [(True, TypeError), (False, TypeError), (0, ValueError), (-1, ValueError),
                                     (10 ** 10, ValueError), (2.0, TypeError), ("2", TypeError), (None, TypeError)])
def test_set_num_threads_validates(bad, exc):
    from rnnfast import _C
    old = _C.blas_num_threads()
    with pytest.raises(exc, match="n must be"):
        rnnfast.set_num_threads(bad)
    with pytest.raises(exc, match="number of threads must be"):
        _C.set_blas_num_threads(bad)
    assert _C.blas_num_threads() == old


@needs_cpu
def test_set_num_threads_concurrently_gives_one_counts_result():
    from rnnfast import _C
    old = _C.blas_num_threads()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 16, 256)).astype(np.float32)      # X @ W_ih^T: 1024 x 128 x 256, threaded
    W = _weights(rng, 256, 128)
    results = {}
    try:
        for n in (1, 2):
            rnnfast.set_num_threads(n)
            results[n] = F.rnn_forward(x, None, W, need_cache=False, backend="cpu")[0]
        stop, outs = threading.Event(), []

        def toggle():
            k = 0
            while not stop.is_set():
                rnnfast.set_num_threads(1 + k % 2)
                k += 1

        t = threading.Thread(target=toggle)
        t.start()
        try:
            for _ in range(8):
                outs.append(F.rnn_forward(x, None, W, need_cache=False, backend="cpu")[0])
        finally:
            stop.set()
            t.join()
    finally:
        rnnfast.set_num_threads(old)
    for o in outs:
        assert any(np.array_equal(o, r) for r in results.values())


# ---- clear errors instead of pybind11 dumps ----


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_argument_types_name_the_argument(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 3)).astype(np.float32)
    W = _weights(rng, 3, 4)
    with pytest.raises((TypeError, ValueError), match="nonlinearity must be 'tanh' or 'relu'"):
        F.rnn_forward(x, None, W, nonlinearity=None, backend=backend)
    for w in (None, {}, {"a": 1}, 3):
        with pytest.raises((TypeError, ValueError), match="weights must be a"):
            F.rnn_forward(x, None, w, backend=backend)
    for w in (None, 3):
        with pytest.raises((TypeError, ValueError), match="weights must be a"):
            F.lstm_forward(x, None, None, w, backend=backend)
        with pytest.raises((TypeError, ValueError), match="weights must be a"):
            F.gru_forward(x, None, w, backend=backend)
    out, _, cache = F.rnn_forward(x, None, W, backend=backend)
    for g in (None, {}, 3):
        with pytest.raises((TypeError, ValueError), match="grads must be a"):
            F.rnn_backward(np.ones_like(out), None, cache, g, backend=backend)
    Wl = _weights(rng, 3, 4, G=4)
    out, _, _, cache = F.lstm_forward(x, None, None, Wl, backend=backend)
    with pytest.raises((TypeError, ValueError), match="grads must be a"):
        F.lstm_backward(np.ones_like(out), None, None, cache, None, backend=backend)


@needs_cpu
def test_bindings_raise_typeerrors_not_dumps():
    from rnnfast import _C
    x = np.ones((2, 1, 3), np.float32)
    W = [(np.ones((4, 3), np.float32), np.ones((4, 4), np.float32), None, None)]
    cases = [
        (lambda: _C.rnn_forward(x, None, W, None, None, False), "nonlinearity must be 'tanh' or 'relu', got NoneType"),
        (lambda: _C.rnn_forward(x, None, None, None, "tanh", False), "weights must be a list of L tuples"),
        (lambda: _C.rnn_forward(x, None, {}, None, "tanh", False), "got dict"),
        (lambda: _C.rnn_forward(x, None, W, None, "tanh", None), "need_cache must be True or False"),
        (lambda: _C.gru_forward(x, None, W, "yes"), "need_cache must be True or False"),
        (lambda: _C.lstm_forward(x, None, None, (), np.bool_(False)), "weights must be a non-empty list"),
    ]
    for f, msg in cases:
        with pytest.raises((TypeError, ValueError), match=msg.replace("(", r"\(")) as e:
            f()
        assert "incompatible function arguments" not in str(e.value)


# ---- clear errors: topologies' masks, the cs231n compat layer ----


def test_wrong_mask_shape_names_the_mask():
    rng = np.random.default_rng(0)
    m = OneToMany(3, 6, vocab_size=5, seed=1)
    code, tg = rng.standard_normal((2, 3)).astype(np.float32), rng.integers(0, 5, (4, 2))
    with pytest.raises(ValueError, match=r"mask must have the shape of the targets \(T, N\) = \(4, 2\), got \(2, 4\)"):
        m.loss(code, tg, mask=np.ones((2, 4), bool))
    s = Seq2Seq(5, 6, 7, seed=1)
    src, tgt = rng.integers(0, 5, (3, 2)), rng.integers(0, 6, (4, 2))
    before = _snapshot(s)
    with pytest.raises(ValueError, match=r"tgt_mask must have the shape of the targets \(T, N\) = \(4, 2\)"):
        s.loss(src, tgt, tgt_mask=np.ones((4,), bool))
    for k, v in s.params.items():
        np.testing.assert_array_equal(v, before[k])
        assert not s.grads[k].any()


def test_cs231n_targets_and_complex_input():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4))
    mask = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match=r"y must hold ids in \[0, V\) with V=4, got range \[0, 4\]"):
        cs231n.temporal_softmax_loss(x, np.array([[0, 1, 4], [0, 0, 0]]), mask)
    with pytest.raises(ValueError, match=r"y must hold ids in \[0, V\) with V=4, got range \[-1, 1\]"):
        cs231n.temporal_softmax_loss(x, np.array([[0, 1, -1], [0, 0, 0]]), mask)
    with pytest.raises(TypeError, match="y must hold integer ids"):
        cs231n.temporal_softmax_loss(x, np.zeros((2, 3)), mask)
    Wx, Wh, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 5)), np.zeros(5)
    h0 = np.zeros((2, 5))
    with pytest.raises(TypeError, match="x must be a real"):
        cs231n.rnn_forward(x.astype(complex), h0, Wx, Wh, b)
    with pytest.raises(TypeError, match="Wh must be a real"):
        cs231n.lstm_forward(x, h0, rng.standard_normal((4, 20)), np.ones((5, 20), complex), np.zeros(20))


# ---- Ctrl-C during a long kernel call ----


def _fwd(cell, x, W, need_cache):
    if cell == "rnn":
        out, h_n, cache = F.rnn_forward(x, None, W, need_cache=need_cache, backend="cpu")
        return (out, h_n), cache
    if cell == "lstm":
        out, h_n, c_n, cache = F.lstm_forward(x, None, None, W, need_cache=need_cache, backend="cpu")
        return (out, h_n, c_n), cache
    out, h_n, cache = F.gru_forward(x, None, W, need_cache=need_cache, backend="cpu")
    return (out, h_n), cache


@needs_cpu
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("need_cache", [False, True])
def test_chunked_forward_equals_one_call(cell, L, need_cache):
    """Long forwards run in (layer, time chunk) pieces with a Ctrl-C check between; same results."""
    from rnnfast import _C
    rng = np.random.default_rng(L)
    G = dict(rnn=1, lstm=4, gru=3)[cell]
    x = rng.standard_normal((23, 3, 5))
    W = _weights(rng, 5, 7, L=L, G=G, dtype=np.float64)
    ref, rcache = _fwd(cell, x, W, need_cache)
    old = _C.check_interval()
    try:
        _C.set_check_interval(3 * G * 7 * 14 * 4)          # chunks of 4 steps: 6 chunks per layer
        got, gcache = _fwd(cell, x, W, need_cache)
    finally:
        _C.set_check_interval(old)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    if need_cache:
        for name in ("hs", "cs", "gates", "ghn"):
            if hasattr(rcache, name):
                np.testing.assert_allclose(getattr(gcache, name), getattr(rcache, name), rtol=1e-12, atol=1e-13)


@needs_cpu
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_ctrl_c_interrupts_one_long_forward(cell):
    """One call that would run for minutes (T = 10^6 steps of a 1024-wide recurrence) ends soon after
    SIGINT with KeyboardInterrupt; its output pages are never all touched, so memory stays small."""
    code = f"""
        import signal, numpy as np, rnnfast.functional as F
        # Python's own Ctrl-C handling whatever the parent left (a SIGINT ignored or blocked there is
        # inherited across exec; the subject here is rnnfast's long call, not the test runner)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
        T, H, G = 1_000_000, 1024, (4 if "{cell}" == "lstm" else 1)
        x = np.ones((T, 1, 1), np.float32)
        W = [(np.full((G * H, 1), .01, np.float32), np.full((G * H, H), .001, np.float32), None, None)]
        print("start", flush=True)
        try:
            if G == 1:
                F.rnn_forward(x, None, W, need_cache=False, backend="cpu")
            else:
                F.lstm_forward(x, None, None, W, need_cache=False, backend="cpu")
            print("finished", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """
    e = dict(os.environ, PYTHONPATH=PKG_PARENT)
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True, env=e)
    try:
        assert p.stdout.readline().strip() == "start"
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        # the whole call would take minutes on any current CPU; the reply and the exit are checked apart,
        # and a child that misses either has its threads' stacks put into the failure message
        line = _readline_within(p, 30)
        if line is None:
            pytest.fail(f"no reply within 30 s of SIGINT; the child's threads:\n{_stacks(p.pid)}")
        assert line.strip() == "interrupted"
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"interrupted, but not exited within 30 s; the child's threads:\n{_stacks(p.pid)}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _readline_within(p, seconds):
    """The next line of p's stdout, or None when none comes within `seconds`."""
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=seconds):
            return None
    return p.stdout.readline()


def _stacks(pid):
    """Every thread's native stack of process pid (gdb) and its signal masks, for a failure message."""
    try:
        with open(f"/proc/{pid}/status") as f:
            masks = "".join(line for line in f if line.startswith("Sig"))
    except OSError:
        masks = ""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    masks += f"parent: SIGINT handler {signal.getsignal(signal.SIGINT)!r}, blocked {blocked}\n"
    try:
        r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 20"], capture_output=True,
                           text=True, timeout=60)
        return masks + r.stdout[-6000:]
    except (OSError, subprocess.TimeoutExpired) as ex:
        return masks + f"(no stacks: {ex})"


# ---- unaligned arrays (a deterministic case for the sanitizer job; see also test_properties.py) ----


def _unaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    b = buf[1:].view(a.dtype).reshape(a.shape)
    b[...] = a
    return b


@needs_cpu
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_unaligned_arrays_equal_reference(cell):
    rng = np.random.default_rng(5)
    G = dict(rnn=1, lstm=4, gru=3)[cell]
    x = rng.standard_normal((5, 3, 7)).astype(np.float32)
    W = _weights(rng, 7, 9, L=2, G=G)
    Wu = [tuple(_unaligned(a) for a in w) for w in W]
    assert not _unaligned(x).flags.aligned
    ref, rcache = _fwd_any(cell, x, W, "numpy")
    got, gcache = _fwd_any(cell, _unaligned(x), Wu, "cpu")
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _fwd_any(cell, x, W, backend):
    if cell == "rnn":
        out, h_n, cache = F.rnn_forward(x, None, W, backend=backend)
        return (out, h_n), cache
    if cell == "lstm":
        out, h_n, c_n, cache = F.lstm_forward(x, None, None, W, backend=backend)
        return (out, h_n, c_n), cache
    out, h_n, cache = F.gru_forward(x, None, W, backend=backend)
    return (out, h_n), cache
