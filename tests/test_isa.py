"""The kernel ISA dispatcher: RNNFAST_ISA and its errors, in-process switching, `rnnfast info`'s report,
and fork() after kernel calls. Not the kernels' correctness per ISA (test_backends.py, test_gated.py run
every kernel test once per ISA through the `isa` fixture)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import rnnfast
from rnn_helpers import ISAS, requires_cpu


def _python(code, **env):
    e = dict(os.environ, **env)
    e["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


@requires_cpu
def test_supported_isas_start_with_generic_and_default_is_the_best():
    from rnnfast import _C
    sup = _C.supported_isas()
    assert sup[0] == "generic" and set(sup) <= set(ISAS)
    r = _python("from rnnfast import _C; print(_C.isa())", RNNFAST_ISA="")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == sup[-1]


@requires_cpu
@pytest.mark.parametrize("name", ISAS)
def test_rnnfast_isa_env_selects_or_names_what_is_missing(name):
    from rnnfast import _C
    r = _python("from rnnfast import _C; import rnnfast, numpy as np\n"
                "try:\n    print(_C.isa())\nexcept ValueError as e:\n    print('ValueError:', e)", RNNFAST_ISA=name)
    assert r.returncode == 0, r.stderr
    if name in _C.supported_isas():
        assert r.stdout.strip() == name
    else:
        assert "ValueError" in r.stdout and "lacks" in r.stdout and "'generic'" in r.stdout


@requires_cpu
def test_unknown_isa_is_a_clear_error_everywhere():
    from rnnfast import _C
    r = _python("import numpy as np, rnnfast\n"
                "try:\n    rnnfast.RNN(3, 4, backend='cpu').forward(np.zeros((2, 1, 3), np.float32))\n"
                "except ValueError as e:\n    print('ValueError:', e)", RNNFAST_ISA="sse9")
    assert r.returncode == 0, r.stderr
    assert "RNNFAST_ISA must be one of 'generic', 'avx2', 'avx512', got 'sse9'" in r.stdout
    old = _C.isa()
    with pytest.raises(ValueError, match="must be one of 'generic', 'avx2', 'avx512'"):
        _C.set_isa("neon")
    assert _C.isa() == old


@requires_cpu
def test_info_reports_the_kernel_isa():
    from rnnfast import _C
    from rnnfast._info import collect, format_info
    d = collect()
    assert d["kernel_isa"] == _C.isa() and d["kernel_isas"] == _C.supported_isas()
    assert f"kernels: {_C.isa()} build" in format_info(d)


@requires_cpu
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_fork_after_kernel_calls_does_not_hang_the_child():
    """A child forked after kernel calls runs kernels too, the ones that split their work over helper threads
    (csrc/cpu/parallel.cpp: the child starts helpers of its own) included, and gets the parent's answer (a
    child that hangs is killed by the timeout and fails the test)."""
    code = (
        "import os, sys, numpy as np, rnnfast\n"
        "from rnnfast import _C\n"
        "rng = np.random.default_rng(0)\n"
        "for N in (1, 32):\n"
        "    for cls in (rnnfast.RNN, rnnfast.LSTM, rnnfast.GRU):\n"
        "        m = cls(16, 64, backend='cpu', seed=0)\n"
        "        x = rng.standard_normal((30, N, 16)).astype(np.float32)\n"
        "        m.forward(x, need_cache=True); m.backward(np.ones((30, N, 64), np.float32))\n"
        "h = rng.standard_normal((1600, 128)).astype(np.float32)\n"
        "W = rng.standard_normal((96, 128)).astype(np.float32)\n"
        "t = rng.integers(0, 96, 1600)\n"
        "def head():\n"
        "    dW = np.zeros_like(W); loss, dh = _C.linear_xent(h, W, None, t, None, None, 'mean', 1, dW, None, True)\n"
        "    return loss, dh, dW\n"
        "ref = head()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    m = rnnfast.LSTM(16, 64, backend='cpu', seed=0)\n"
        "    y = m.forward(np.ones((30, 32, 16), np.float32), need_cache=True)\n"
        "    m.backward(np.ones((30, 32, 64), np.float32))\n"
        "    got = head()\n"
        "    same = got[0] == ref[0] and all(np.array_equal(a, b) for a, b in zip(got[1:], ref[1:]))\n"
        "    os._exit(0 if same and np.isfinite(np.asarray(y[0])).all() else 3)\n"
        "_, st = os.waitpid(pid, 0)\n"
        "print('child', os.waitstatus_to_exitcode(st))\n")
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("child 0")


@requires_cpu
def test_unaligned_caller_arrays_give_the_aligned_answer(isa):
    """float32 arrays that start at an odd byte address (a view into a bytes buffer) give exactly the
    aligned copy's answer in every kernel build."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 3, 5)).astype(np.float32)
    buf = bytearray(x.nbytes + 1)
    xu = np.frombuffer(buf, dtype=np.float32, count=x.size, offset=1).reshape(x.shape)
    xu[...] = x
    assert not xu.flags.aligned
    h0 = rng.standard_normal((1, 3, 31)).astype(np.float32)
    hb = bytearray(h0.nbytes + 2)
    h0u = np.frombuffer(hb, dtype=np.float32, count=h0.size, offset=2).reshape(h0.shape)
    h0u[...] = h0
    ws = [tuple(rng.standard_normal(s).astype(np.float32) * 0.2 for s in ((31, 5), (31, 31), (31,), (31,)))]
    a = rnnfast.rnn_forward(x, h0, ws, None, "tanh", False, backend="cpu")
    b = rnnfast.rnn_forward(xu, h0u, ws, None, "tanh", False, backend="cpu")
    for u, v in zip(a[:2], b[:2]):
        np.testing.assert_array_equal(u, v)
