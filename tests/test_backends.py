"""Every native backend against the NumPy reference: forward and every gradient, float32 and float64, odd
shapes, both activations, both recurrence code paths (small-batch microkernel and per-step GEMM).
Not the reference's own proof (test_reference.py) nor bad input (test_bad_input.py)."""
import functools

import numpy as np
import pytest

import rnnfast
from rnn_helpers import TOL64, assert_f32_close, cast_weights, make_weights, requires_cpu, run
from tolerances import EXACT64

# Odd sizes on purpose (docs/design.md 3.12): every value of T, N, D, H appears, with remainders against the
# microkernel block (64 floats / 32 doubles) and BLAS tiles.
SHAPES = [  # (T, N, D, H, L)
    (1, 1, 1, 1, 1), (7, 3, 5, 31, 2), (64, 1, 65, 128, 1), (7, 32, 5, 257, 1), (1, 3, 65, 257, 2),
    (64, 32, 1, 31, 3), (7, 1, 65, 257, 1), (64, 3, 5, 128, 2), (1, 32, 65, 1, 1), (7, 32, 1, 128, 1),
]


def _problem(seed, T, N, D, H, L, bias, with_c, with_dhn, act):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, D))
    h0 = rng.standard_normal((L, N, H)) * 0.5
    ws = make_weights(rng, D, H, L, np.float64, bias=bias)
    c = rng.standard_normal((N, H)) * 0.3 if with_c else None
    dout = rng.standard_normal((T, N, H))
    dh_n = rng.standard_normal((L, N, H)) if with_dhn else None
    return x, h0, ws, c, dout, dh_n


def _ids(s):
    return f"T{s[0]}-N{s[1]}-D{s[2]}-H{s[3]}-L{s[4]}"


@functools.lru_cache(maxsize=None)
def _case(i, act):
    """Problem i and its NumPy-reference results in float64 and float32, computed once and shared by the
    recurrence paths and kernel ISAs (the reference depends on neither)."""
    T, N, D, H, L = SHAPES[i]
    bias, with_c, with_dhn = (i % 2 == 0), (i % 3 != 1), (i % 4 != 3)
    x, h0, ws, c, dout, dh_n = _problem(i, T, N, D, H, L, bias, with_c, with_dhn, act)
    use_h0 = h0 if i % 5 != 4 else None
    args64 = (x, use_h0, ws, c, act, dout, dh_n)
    f = np.float32
    args32 = (x.astype(f), None if use_h0 is None else use_h0.astype(f), cast_weights(ws, f),
              None if c is None else c.astype(f), act, dout.astype(f), None if dh_n is None else dh_n.astype(f))
    return args64, run("numpy", *args64), args32, run("numpy", *args32)


@requires_cpu
@pytest.mark.parametrize("path", ["matvec", "blas", "auto"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_backend_matches_reference(shape, act, path, isa):
    """Each recurrence path of the cpu backend (forced), in every kernel build (ISA) this CPU runs,
    float64 and float32."""
    from rnnfast import _C
    assert _C.isa() == isa
    args64, ref64, args32, ref32 = _case(SHAPES.index(shape), act)
    old = _C.recurrence()
    _C.set_recurrence(path)
    try:
        got64 = run("cpu", *args64)
        for j, (g, r) in enumerate(zip(got64, ref64)):
            assert g.dtype == np.float64
            np.testing.assert_allclose(g, r, **TOL64, err_msg=f"float64 output {j}")
        got32 = run("cpu", *args32)
        for j, (g, r64, r32) in enumerate(zip(got32, ref64, ref32)):
            assert g.dtype == np.float32
            assert_f32_close(g, r64, r32, name=f"float32 output {j}")
    finally:
        _C.set_recurrence(old)


@requires_cpu
@pytest.mark.parametrize("need_cache", [True, False])
def test_inference_equals_training_forward(need_cache):
    x, h0, ws, c, _, _ = _problem(5, 9, 3, 4, 33, 3, True, True, False, "tanh")
    out_t, hn_t, cache = rnnfast.rnn_forward(x, h0, ws, c, "tanh", True, backend="cpu")
    out_i, hn_i, none = rnnfast.rnn_forward(x, h0, ws, c, "tanh", need_cache, backend="cpu")
    np.testing.assert_array_equal(out_t, out_i)
    np.testing.assert_array_equal(hn_t, hn_i)
    assert (none is None) == (not need_cache)
    assert cache.hs.shape == (3, 9, 3, 33)   # the cache keeps exactly T*N*H*L hidden values


@requires_cpu
@pytest.mark.parametrize("fwd,bwd", [("cpu", "numpy"), ("numpy", "cpu")])
def test_cache_contract_across_backends(fwd, bwd):
    x, h0, ws, c, dout, dh_n = _problem(11, 6, 2, 3, 17, 2, True, True, True, "tanh")
    _, _, cache_a = rnnfast.rnn_forward(x, h0, ws, c, "tanh", True, backend=fwd)
    _, _, cache_r = rnnfast.rnn_forward(x, h0, ws, c, "tanh", True, backend="numpy")
    from rnn_helpers import flat_grads, zero_grads
    ga, gr = zero_grads(ws), zero_grads(ws)
    res_a = rnnfast.rnn_backward(dout, dh_n, cache_a, ga, backend=bwd)
    res_r = rnnfast.rnn_backward(dout, dh_n, cache_r, gr, backend="numpy")
    for a, r in zip(list(res_a) + flat_grads(ga), list(res_r) + flat_grads(gr)):
        np.testing.assert_allclose(a, r, **TOL64)


@requires_cpu
def test_parameter_gradients_accumulate_and_activation_gradients_overwrite():
    x, h0, ws, c, dout, dh_n = _problem(3, 5, 2, 3, 7, 2, True, True, True, "tanh")
    from rnn_helpers import flat_grads, zero_grads
    _, _, cache = rnnfast.rnn_forward(x, h0, ws, c, "tanh", True, backend="cpu")
    g1 = zero_grads(ws)
    dx1, dh01, dc1 = rnnfast.rnn_backward(dout, dh_n, cache, g1, backend="cpu")
    g2 = [tuple(None if a is None else np.full_like(a, 0.5) for a in g) for g in zero_grads(ws)]
    dx2, dh02, dc2 = rnnfast.rnn_backward(dout, dh_n, cache, g2, backend="cpu")
    for a, b in zip(flat_grads(g1), flat_grads(g2)):
        np.testing.assert_allclose(b, a + 0.5, **EXACT64)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(dh01, dh02)
    np.testing.assert_array_equal(dc1, dc2)


@requires_cpu
def test_gemm_split_path_for_64bit_sizes():
    """Row and reduction counts beyond one BLAS call are split; lowering the split size exercises that
    path on small arrays (the same code handles T*N >= 2^31 rows)."""
    from rnnfast import _C
    x, h0, ws, c, dout, dh_n = _problem(8, 13, 5, 6, 19, 2, True, True, True, "tanh")
    ref = run("numpy", x, h0, ws, c, "tanh", dout, dh_n)
    old = _C.gemm_block()
    _C.set_gemm_block(7)   # T*N = 65 rows -> 10 blocks; reductions over T*N split too
    try:
        got = run("cpu", x, h0, ws, c, "tanh", dout, dh_n)
    finally:
        _C.set_gemm_block(old)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, **TOL64)


@requires_cpu
def test_cpu_results_are_deterministic():
    x, h0, ws, c, dout, dh_n = _problem(21, 30, 8, 40, 96, 2, True, True, True, "tanh")
    a = run("cpu", x, h0, ws, c, "tanh", dout, dh_n)
    b = run("cpu", x, h0, ws, c, "tanh", dout, dh_n)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@requires_cpu
def test_cache_holds_exactly_the_hidden_states():
    x, h0, ws, c, _, _ = _problem(6, 11, 4, 3, 10, 3, True, False, False, "tanh")
    for backend in ("numpy", "cpu"):
        _, _, cache = rnnfast.rnn_forward(x, h0, ws, None, "tanh", True, backend=backend)
        L, T, N, H = 3, 11, 4, 10
        assert cache.hs.shape == (L, T, N, H)
        assert cache.nbytes == (L * T * N * H + L * N * H) * 8


@requires_cpu
def test_gil_is_released_while_the_kernel_runs():
    import threading
    import time
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, 32, 256)).astype(np.float32)
    ws = make_weights(rng, 256, 256, 2, np.float32)
    t0 = time.perf_counter()
    rnnfast.rnn_forward(x, None, ws, backend="cpu", need_cache=False)
    one = time.perf_counter() - t0
    done = threading.Event()

    def work():
        for _ in range(3):
            rnnfast.rnn_forward(x, None, ws, backend="cpu", need_cache=False)
        done.set()

    th = threading.Thread(target=work)
    ticks = 0
    th.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    th.join()
    # With the GIL held for each whole call, this loop could only tick between the 3 calls.
    assert ticks > 10, (ticks, one)
