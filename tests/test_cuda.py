"""The cuda backend against the NumPy reference and torch.nn.RNN on cuDNN: outputs, final states and every
gradient, on odd shapes, through every recurrence path (persistent with thread-block clusters where they
fit, persistent with the grid barrier, stepwise) and both GEMMs (cuBLAS, ours).
Without a GPU only the "reports why it is missing" tests run; the rest skip. Not a benchmark
(benchmarks/bench_gpu.py)."""
import shutil

import numpy as np
import pytest

import rnnfast
from rnn_helpers import TOL64, assert_f32_close, make_weights, run, zero_grads

CUDA = rnnfast.backends()["cuda"]
requires_gpu = pytest.mark.skipif(not CUDA["available"], reason=f"cuda backend missing: {CUDA['reason']}")


# ---- without a GPU ---------------------------------------------------------------------------------

def test_missing_cuda_is_reported_with_a_reason():
    from rnnfast import _cuda_backend

    ok, why = _cuda_backend.is_available()
    assert ok == CUDA["available"]
    if ok:
        assert why is None
        return
    assert isinstance(why, str) and len(why) > 10
    x = np.zeros((2, 1, 3), np.float32)
    w = make_weights(np.random.default_rng(0), 3, 4, 1, np.float32)
    with pytest.raises(RuntimeError, match="cuda"):
        rnnfast.rnn_forward(x, None, w, backend="cuda")


def test_extension_builds_and_loads_without_a_gpu():
    # where nvcc is on the PATH (CI, the development machines) the build must have produced _C_cuda
    if shutil.which("nvcc") is None:
        C = pytest.importorskip("rnnfast._C_cuda", reason="_C_cuda not built (no CUDA compiler at build time)")
    else:
        from rnnfast import _C_cuda as C
    status = C.runtime_status()
    assert isinstance(status, str)
    assert (status == "") or ("CUDA" in status)


# ---- on a GPU --------------------------------------------------------------------------------------

def _problem(rng, T, N, D, H, L, dtype, bias=True, with_c=False, with_h0=True):
    w = make_weights(rng, D, H, L, dtype, bias=bias)
    x = rng.standard_normal((T, N, D)).astype(dtype)
    h0 = rng.standard_normal((L, N, H)).astype(dtype) * 0.5 if with_h0 else None
    c = rng.standard_normal((N, H)).astype(dtype) * 0.3 if with_c else None
    dout = rng.standard_normal((T, N, H)).astype(dtype)
    dh_n = rng.standard_normal((L, N, H)).astype(dtype)
    return x, h0, w, c, dout, dh_n


def _cast(a, dtype):
    return None if a is None else a.astype(dtype)


def _check_against_reference(x, h0, w, c, act, dout, dh_n, names):
    dtype = x.dtype
    got = run("cuda", x, h0, w, c, act, dout, dh_n)
    args64 = [_cast(a, np.float64) for a in (x, h0)]
    w64 = [tuple(_cast(a, np.float64) for a in layer) for layer in w]
    ref64 = run("numpy", args64[0], args64[1], w64, _cast(c, np.float64), act, _cast(dout, np.float64),
                _cast(dh_n, np.float64))
    assert len(got) == len(ref64) == len(names)
    if dtype == np.float64:
        for g, r, n in zip(got, ref64, names):
            assert isinstance(g, np.ndarray), n
            np.testing.assert_allclose(g, r, err_msg=n, **TOL64)
    else:
        ref32 = run("numpy", x, h0, w, c, act, dout, dh_n)
        for g, r64, r32, n in zip(got, ref64, ref32, names):
            assert g.dtype == np.float32, n
            assert_f32_close(g, r64, r32, n)


def _names(L, bias, with_c):
    names = ["out", "h_n", "dx", "dh0"] + (["dc"] if with_c else [])
    for k in range(L):
        names += [f"dW_ih_l{k}", f"dW_hh_l{k}"] + ([f"db_ih_l{k}", f"db_hh_l{k}"] if bias else [])
    return names


# (T, N, D, H, L, bias, with_c, with_h0): odd sizes on purpose (docs/design.md 3.12)
SHAPES = [
    (1, 1, 1, 1, 1, True, False, True),
    (7, 3, 5, 31, 1, True, True, True),
    (7, 3, 65, 257, 2, False, False, False),
    (64, 1, 5, 128, 1, True, True, False),
    (64, 32, 65, 31, 2, True, False, True),
    (7, 32, 1, 257, 1, True, True, True),
    (9, 64, 16, 512, 1, True, False, True),   # several blocks in the persistent kernel
]


# recurrence path -> environment: "cluster" lets the persistent kernel use clusters where they fit (it falls
# back to one block or the grid barrier elsewhere); "grid" forbids them
PATHS = {"cluster": {"RNNFAST_CUDA_RECURRENCE": "persistent", "RNNFAST_CUDA_CLUSTER": "1"},
         "grid": {"RNNFAST_CUDA_RECURRENCE": "persistent", "RNNFAST_CUDA_CLUSTER": "0"},
         "stepwise": {"RNNFAST_CUDA_RECURRENCE": "stepwise"}}


def _set_path(monkeypatch, path):
    for k, v in PATHS[path].items():
        monkeypatch.setenv(k, v)


def _shape_id(s):
    return "T{}-N{}-D{}-H{}-L{}".format(*s[:5]) + ("" if s[5] else "-nobias") + ("-c" if s[6] else "") + \
        ("-h0" if s[7] else "")


@requires_gpu
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("act,dtype", [("tanh", np.float32), ("tanh", np.float64), ("relu", np.float64)],
                         ids=["tanh-f32", "tanh-f64", "relu-f64"])
@pytest.mark.parametrize("path", list(PATHS))
def test_cuda_matches_reference(path, act, dtype, shape, monkeypatch):
    _set_path(monkeypatch, path)
    T, N, D, H, L, bias, with_c, with_h0 = shape
    rng = np.random.default_rng(T * 1000 + N * 10 + H)
    x, h0, w, c, dout, dh_n = _problem(rng, T, N, D, H, L, dtype, bias, with_c, with_h0)
    _check_against_reference(x, h0, w, c, act, dout, dh_n, _names(L, bias, with_c))


@requires_gpu
@pytest.mark.parametrize("shape", SHAPES[:4], ids=_shape_id)
@pytest.mark.parametrize("path", list(PATHS))
def test_cuda_relu_float32_small(path, shape, monkeypatch):
    # relu in float32 only on small problems: a pre-activation within rounding of 0 flips relu' between
    # two exact answers, and large problems make such a tie likely
    _set_path(monkeypatch, path)
    T, N, D, H, L, bias, with_c, with_h0 = shape
    rng = np.random.default_rng(7 + H)
    x, h0, w, c, dout, dh_n = _problem(rng, T, N, D, H, L, np.float32, bias, with_c, with_h0)
    _check_against_reference(x, h0, w, c, "relu", dout, dh_n, _names(L, bias, with_c))


@requires_gpu
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2], SHAPES[4]], ids=_shape_id)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_internal_gemm_matches_reference(dtype, path, shape, monkeypatch):
    monkeypatch.setenv("RNNFAST_CUDA_GEMM", "internal")
    _set_path(monkeypatch, path)
    T, N, D, H, L, bias, with_c, with_h0 = shape
    rng = np.random.default_rng(3 + H)
    x, h0, w, c, dout, dh_n = _problem(rng, T, N, D, H, L, dtype, bias, with_c, with_h0)
    _check_against_reference(x, h0, w, c, "tanh", dout, dh_n, _names(L, bias, with_c))


@requires_gpu
def test_cuda_large_float32_matches_reference(monkeypatch):
    # the sizes the benchmark runs (auto path), shortened in T
    T, N, D, H, L = 5, 128, 64, 1024, 1
    rng = np.random.default_rng(11)
    x, h0, w, c, dout, dh_n = _problem(rng, T, N, D, H, L, np.float32, True, False, True)
    _check_against_reference(x, h0, w, c, "tanh", dout, dh_n, _names(L, True, False))


# ---- the size switch ---------------------------------------------------------------------------------

@requires_gpu
def test_size_switch_and_override(monkeypatch):
    from rnnfast import _cuda_backend as cb

    small = cb.plan(4, 128)
    assert small["persistent_fits"] and small["path"] == "persistent", small
    assert small["blocks"] >= 1
    huge = cb.plan(4, 8192)   # 256 MiB of W_hh: cannot sit in shared memory
    assert not huge["persistent_fits"] and huge["path"] == "stepwise", huge
    with pytest.raises(ValueError, match="persistent"):
        cb.plan(4, 8192, recurrence="persistent")
    assert cb.plan(4, 128, recurrence="stepwise")["path"] == "stepwise"
    multi = cb.plan(64, 512, recurrence="persistent", cluster=False)
    assert multi["blocks"] > 1 and multi["cluster"] == 0, multi
    assert cb.plan(4, 2048)["path"] == "persistent" and cb.plan(4, 2048)["cluster"] == 0   # too big for a cluster
    hopper = float(cb.info()["compute_capability"]) >= 9.0
    clus = cb.plan(4, 384)
    assert (clus["cluster"] > 1) == hopper, clus
    # the three paths give the same numbers (float64: to rounding), on a size where clusters fit
    rng = np.random.default_rng(5)
    x, h0, w, c, dout, dh_n = _problem(rng, 20, 16, 8, 384, 2, np.float64, True, True, True)
    res = {}
    for path in PATHS:
        _set_path(monkeypatch, path)
        res[path] = run("cuda", x, h0, w, c, "tanh", dout, dh_n)
    for other in ("grid", "stepwise"):
        for a, b in zip(res["cluster"], res[other]):
            np.testing.assert_allclose(a, b, **TOL64)
    monkeypatch.setenv("RNNFAST_CUDA_RECURRENCE", "sideways")
    with pytest.raises(ValueError, match="RNNFAST_CUDA_RECURRENCE"):
        rnnfast.rnn_forward(x, h0, w, c, backend="cuda")
    monkeypatch.setenv("RNNFAST_CUDA_RECURRENCE", "auto")
    monkeypatch.setenv("RNNFAST_CUDA_CLUSTER", "yes")
    with pytest.raises(ValueError, match="RNNFAST_CUDA_CLUSTER"):
        rnnfast.rnn_forward(x, h0, w, c, backend="cuda")


# ---- arrays, caches, layers ------------------------------------------------------------------------

@requires_gpu
def test_array_kinds_in_and_out():
    import cupy as cp

    rng = np.random.default_rng(2)
    x, h0, w, c, dout, dh_n = _problem(rng, 6, 3, 4, 9, 2, np.float32, True, True, True)
    out_np, hn_np, _ = rnnfast.rnn_forward(x, h0, w, c, backend="cuda")
    assert isinstance(out_np, np.ndarray) and isinstance(hn_np, np.ndarray)
    xd = cp.asarray(x)
    wd = [tuple(cp.asarray(a) for a in layer) for layer in w]
    out_cp, hn_cp, cache = rnnfast.rnn_forward(xd, cp.asarray(h0), wd, cp.asarray(c), backend="cuda")
    assert isinstance(out_cp, cp.ndarray) and isinstance(cache.hs, cp.ndarray)
    np.testing.assert_array_equal(out_cp.get(), out_np)
    np.testing.assert_array_equal(hn_cp.get(), hn_np)
    grads = [tuple(cp.zeros_like(a) for a in layer) for layer in wd]
    dx, dh0, dc = rnnfast.rnn_backward(cp.asarray(dout), cp.asarray(dh_n), cache, grads, backend="cuda")
    assert isinstance(dx, cp.ndarray) and isinstance(dc, cp.ndarray)
    ref = run("cuda", x, h0, w, c, "tanh", dout, dh_n)
    got = [out_cp, hn_cp, dx, dh0, dc] + [a for g in grads for a in g]
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g.get(), r)


@requires_gpu
def test_torch_tensors_are_used_without_copies():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    from rnnfast._cuda_backend import as_array

    t = torch.randn(5, 3, 4, device="cuda")
    a = as_array(t)
    assert a.data.ptr == t.data_ptr() and a.shape == (5, 3, 4)
    tg = torch.zeros(8, 8, device="cuda", requires_grad=True)
    assert as_array(tg).data.ptr == tg.data_ptr()


@requires_gpu
def test_cross_backend_caches():
    from rnnfast._cuda_backend import cache_to_host

    import cupy as cp

    rng = np.random.default_rng(4)
    x, h0, w, c, dout, dh_n = _problem(rng, 8, 3, 5, 17, 2, np.float64, True, True, True)
    ref = run("numpy", x, h0, w, c, "tanh", dout, dh_n)
    # NumPy input on cuda keeps a host cache: backward on numpy reads it directly
    out, h_n, cache = rnnfast.rnn_forward(x, h0, w, c, backend="cuda")
    assert isinstance(cache.hs, np.ndarray)
    g = zero_grads(w)
    dx, dh0, dc = rnnfast.rnn_backward(dout, dh_n, cache, g, backend="numpy")
    for a, r in zip([out, h_n, dx, dh0, dc] + [v for t in g for v in t], ref):
        np.testing.assert_allclose(a, r, **TOL64)
    # a GPU cache goes to numpy through cache_to_host
    wd = [tuple(cp.asarray(a) for a in layer) for layer in w]
    _, _, dcache = rnnfast.rnn_forward(cp.asarray(x), cp.asarray(h0), wd, cp.asarray(c), backend="cuda")
    g = zero_grads(w)
    dx, dh0, dc = rnnfast.rnn_backward(dout, dh_n, cache_to_host(dcache), g, backend="numpy")
    for a, r in zip([dx, dh0, dc] + [v for t in g for v in t], ref[2:]):
        np.testing.assert_allclose(a, r, **TOL64)
    # forward on numpy, backward on cuda
    _, _, ncache = rnnfast.rnn_forward(x, h0, w, c, backend="numpy")
    g = zero_grads(w)
    dx, dh0, dc = rnnfast.rnn_backward(dout, dh_n, ncache, g, backend="cuda")
    for a, r in zip([dx, dh0, dc] + [v for t in g for v in t], ref[2:]):
        np.testing.assert_allclose(a, r, **TOL64)


@requires_gpu
def test_layer_keeps_parameters_on_the_gpu():
    import cupy as cp

    ref = rnnfast.RNN(5, 12, num_layers=2, dtype=np.float64, backend="numpy", seed=3, batch_first=True)
    gpu = rnnfast.RNN(5, 12, num_layers=2, dtype=np.float64, backend="cuda", seed=3, batch_first=True)
    assert all(isinstance(v, cp.ndarray) for v in gpu.params.values())
    assert all(isinstance(v, cp.ndarray) for v in gpu.grads.values())
    gpu.load_state_dict(ref.state_dict())
    assert all(isinstance(v, cp.ndarray) for v in gpu.params.values())
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 6, 5))
    dout = rng.standard_normal((4, 6, 12))
    for _ in range(2):   # gradients accumulate over two backward passes
        o_r, _ = ref.forward(x)
        ref.backward(dout)
        o_g, _ = gpu.forward(cp.asarray(x))
        assert isinstance(o_g, cp.ndarray)
        dx_g, _ = gpu.backward(cp.asarray(dout))
        np.testing.assert_allclose(o_g.get(), o_r, **TOL64)
    for k in ref.grads:
        assert isinstance(gpu.grads[k], cp.ndarray)
        np.testing.assert_allclose(gpu.grads[k].get(), ref.grads[k], err_msg=k, **TOL64)
    gpu.zero_grad()
    assert all(float(abs(v).max()) == 0.0 for v in gpu.grads.values())


@requires_gpu
@pytest.mark.parametrize("L,act,bias,dtype", [(1, "tanh", True, np.float32), (2, "relu", True, np.float32),
                                              (3, "tanh", False, np.float64)])
@pytest.mark.parametrize("T,N,H", [(9, 4, 13), (50, 16, 256)])
def test_cuda_matches_torch_cudnn(T, N, H, L, act, bias, dtype):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    D = 7
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    m = torch.nn.RNN(D, H, num_layers=L, nonlinearity=act, bias=bias).to("cuda", tdt)
    ours = rnnfast.RNN(D, H, num_layers=L, nonlinearity=act, bias=bias, dtype=dtype, backend="cuda")
    ours.load_state_dict({k: v.detach() for k, v in m.state_dict().items()})
    x = torch.randn(T, N, D, device="cuda", dtype=tdt, requires_grad=True)
    h0 = torch.randn(L, N, H, device="cuda", dtype=tdt, requires_grad=True)
    dout = torch.randn(T, N, H, device="cuda", dtype=tdt)
    dh_n = torch.randn(L, N, H, device="cuda", dtype=tdt)
    tout, thn = m(x, h0)
    ((tout * dout).sum() + (thn * dh_n).sum()).backward()
    out, h_n = ours.forward(x, h0)      # torch tensors in, CuPy out
    dx, dh0 = ours.backward(dout, dh_n)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=1e-3, atol=1e-4)

    def cmp(a, t, name):
        np.testing.assert_allclose(a.get(), t.detach().cpu().numpy(), err_msg=name, **tol)

    cmp(out, tout, "out")
    cmp(h_n, thn, "h_n")
    cmp(dx, x.grad, "dx")
    cmp(dh0, h0.grad, "dh0")
    for name, p in m.named_parameters():
        cmp(ours.grads[name], p.grad, name)


# ---- sizes and errors ----------------------------------------------------------------------------------

@requires_gpu
def test_inference_without_cache_matches_training_forward():
    rng = np.random.default_rng(9)
    x, h0, w, c, _, _ = _problem(rng, 11, 5, 6, 40, 3, np.float64, True, True, True)
    a = rnnfast.rnn_forward(x, h0, w, c, need_cache=False, backend="cuda")
    b = rnnfast.rnn_forward(x, h0, w, c, need_cache=True, backend="cuda")
    assert a[2] is None
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@requires_gpu
def test_empty_sequence():
    rng = np.random.default_rng(1)
    x, h0, w, c, _, dh_n = _problem(rng, 0, 3, 4, 5, 2, np.float32, True, True, True)
    out, h_n, cache = rnnfast.rnn_forward(x, h0, w, c, backend="cuda")
    assert out.shape == (0, 3, 5)
    np.testing.assert_array_equal(h_n, h0)
    dx, dh0, dc = rnnfast.rnn_backward(None, dh_n, cache, zero_grads(w), backend="cuda")
    assert dx.shape == (0, 3, 4)
    np.testing.assert_array_equal(dh0, dh_n)
    np.testing.assert_array_equal(dc, np.zeros((3, 5), np.float32))


@requires_gpu
def test_bad_inputs_raise_clear_errors():
    import cupy as cp

    from rnnfast import _C_cuda

    rng = np.random.default_rng(0)
    x, h0, w, c, _, _ = _problem(rng, 3, 2, 4, 5, 1, np.float32, True, False, True)
    xd = cp.asarray(x)
    with pytest.raises(ValueError, match=r"h0 must have shape \(L, N, H\) = \(1, 2, 5\)"):
        rnnfast.rnn_forward(xd, cp.zeros((1, 2, 4), cp.float32), w, backend="cuda")
    with pytest.raises(TypeError, match="weight_hh_l0 must have dtype float32"):
        rnnfast.rnn_forward(xd, None, [(w[0][0], w[0][1].astype(np.float64), w[0][2], w[0][3])], backend="cuda")
    with pytest.raises(TypeError, match="float32 or float64"):
        rnnfast.rnn_forward(cp.zeros((3, 2, 4), cp.int32), None, w, backend="cuda")
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        _C_cuda.device_info(10 ** 6)
    # out of memory: a 1 TiB cache
    big_x = cp.zeros((2 ** 16, 2 ** 10, 1), cp.float32)
    wb = [tuple(cp.asarray(a) for a in layer) for layer in make_weights(rng, 1, 4096, 1, np.float32)]
    with pytest.raises(MemoryError):
        rnnfast.rnn_forward(big_x, None, wb, backend="cuda")
