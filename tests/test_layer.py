"""The rnnfast.RNN layer: torch-compatible parameter names, shapes and initialisation, batch_first, the
constant input c, gradient accumulation and the forward/backward bookkeeping. Values are checked against
the functional NumPy reference. Not a kernel test (test_backends.py)."""
import numpy as np
import pytest

import rnnfast
from rnn_helpers import available_backends
from tolerances import EXACT64, SAME64

BACKENDS = available_backends()


def test_parameters_named_shaped_and_initialised_like_torch():
    rnn = rnnfast.RNN(65, 100, num_layers=2, seed=0)
    assert list(rnn.params) == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                                "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1"]
    assert rnn.params["weight_ih_l0"].shape == (100, 65) and rnn.params["weight_ih_l1"].shape == (100, 100)
    assert rnn.params["bias_hh_l1"].shape == (100,)
    bound = 1 / np.sqrt(100)
    for v in rnn.params.values():
        assert v.dtype == np.float32 and np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound
    assert set(rnn.grads) == set(rnn.params)
    again = rnnfast.RNN(65, 100, num_layers=2, seed=0)
    for k in rnn.params:
        np.testing.assert_array_equal(rnn.params[k], again.params[k])
    assert list(rnnfast.RNN(3, 4, bias=False).params) == ["weight_ih_l0", "weight_hh_l0"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_quickstart_and_values_against_reference(backend):
    rng = np.random.default_rng(0)
    rnn = rnnfast.RNN(input_size=65, hidden_size=100, num_layers=2, nonlinearity="tanh", dtype=np.float64,
                      backend=backend, seed=1)
    x = rng.standard_normal((25, 4, 65))
    h0 = rng.standard_normal((2, 4, 100))
    out, h_n = rnn.forward(x, h0)
    assert out.shape == (25, 4, 100) and h_n.shape == (2, 4, 100)
    dout = rng.standard_normal(out.shape)
    dh_n = rng.standard_normal(h_n.shape)
    dx, dh0 = rnn.backward(dout, dh_n)
    ws = rnn._weights()
    r_out, r_hn, cache = rnnfast.reference.rnn_forward(x, h0, ws)
    grads = [tuple(np.zeros_like(a) for a in w) for w in ws]
    r_dx, r_dh0, _ = rnnfast.reference.rnn_backward(dout, dh_n, cache, grads)
    for a, b in ((out, r_out), (h_n, r_hn), (dx, r_dx), (dh0, r_dh0)):
        np.testing.assert_allclose(a, b, **SAME64)
    np.testing.assert_allclose(rnn.grads["weight_hh_l1"], grads[1][1], **SAME64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_first_equals_time_major(backend):
    rng = np.random.default_rng(2)
    a = rnnfast.RNN(5, 7, num_layers=2, dtype=np.float64, backend=backend, seed=3)
    b = rnnfast.RNN(5, 7, num_layers=2, dtype=np.float64, backend=backend, seed=3, batch_first=True)
    x = rng.standard_normal((6, 3, 5))
    dout = rng.standard_normal((6, 3, 7))
    out_a, hn_a = a.forward(x)
    out_b, hn_b = b.forward(x.transpose(1, 0, 2))
    np.testing.assert_allclose(out_b, out_a.transpose(1, 0, 2), **EXACT64)
    np.testing.assert_allclose(hn_b, hn_a, **EXACT64)
    dx_a, _ = a.backward(dout)
    dx_b, _ = b.backward(dout.transpose(1, 0, 2))
    np.testing.assert_allclose(dx_b, dx_a.transpose(1, 0, 2), **EXACT64)
    for k in a.grads:
        np.testing.assert_allclose(a.grads[k], b.grads[k], **EXACT64)
    with pytest.raises(ValueError, match=r"\(N, T, D\) with D = 5"):
        b.forward(np.zeros((3, 6, 4)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_input_gradient_is_returned(backend):
    rng = np.random.default_rng(4)
    rnn = rnnfast.RNN(3, 6, dtype=np.float64, backend=backend, seed=0)
    x, c = rng.standard_normal((5, 2, 3)), rng.standard_normal((2, 6))
    out, _ = rnn.forward(x, c=c)
    res = rnn.backward(np.ones_like(out))
    assert len(res) == 3
    _, _, cache = rnnfast.reference.rnn_forward(x, None, rnn._weights(), c)
    _, _, dc = rnnfast.reference.rnn_backward(np.ones_like(out), None, cache,
                                              [tuple(np.zeros_like(a) for a in rnn._weights()[0])])
    np.testing.assert_allclose(res[2], dc, **EXACT64)
    out, _ = rnn.forward(x)
    assert len(rnn.backward(np.ones_like(out))) == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_accumulate_until_zero_grad(backend):
    rng = np.random.default_rng(5)
    rnn = rnnfast.RNN(3, 4, dtype=np.float64, backend=backend, seed=0)
    x = rng.standard_normal((4, 2, 3))
    out, _ = rnn.forward(x)
    rnn.backward(np.ones_like(out))
    once = {k: v.copy() for k, v in rnn.grads.items()}
    out, _ = rnn.forward(x)
    rnn.backward(np.ones_like(out))
    for k in once:
        np.testing.assert_allclose(rnn.grads[k], 2 * once[k], **EXACT64)
    rnn.zero_grad()
    assert all((v == 0).all() for v in rnn.grads.values())


def test_backward_before_forward_twice_and_in_eval_mode_raise():
    rnn = rnnfast.RNN(3, 4, seed=0)
    with pytest.raises(RuntimeError, match="preceding forward"):
        rnn.backward(np.zeros((2, 1, 4), np.float32))
    out, _ = rnn.forward(np.zeros((2, 1, 3), np.float32))
    rnn.backward(np.ones_like(out))
    with pytest.raises(RuntimeError, match="only once per forward"):
        rnn.backward(np.ones_like(out))
    rnn.eval()
    out, _ = rnn.forward(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(RuntimeError):
        rnn.backward(np.ones_like(out))
    rnn.train()
    out, _ = rnn.forward(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match="dout must have shape"):    # bad dout keeps the cache ...
        rnn.backward(np.ones((3, 1, 4), np.float32))
    rnn.backward(np.ones_like(out))                                   # ... so a corrected call works


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="nonlinearity"):
        rnnfast.RNN(3, 4, nonlinearity="gelu")
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        rnnfast.RNN(3, 4, dtype=np.int32)
    with pytest.raises(ValueError, match=">= 1"):
        rnnfast.RNN(3, 0)
    with pytest.raises(ValueError, match="backend must be one of"):
        rnnfast.RNN(3, 4, backend="fpga")
    rnn = rnnfast.RNN(3, 4)
    with pytest.raises(TypeError, match="x must have dtype float32"):
        rnn.forward(np.zeros((2, 1, 3)))
    with pytest.raises(KeyError, match="missing"):
        rnn.load_state_dict({"weight_ih_l0": np.zeros((4, 3))})
    bad = rnn.state_dict()
    bad["weight_hh_l0"] = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"weight_hh_l0 must have shape \(4, 4\)"):
        rnn.load_state_dict(bad)


def test_state_dict_round_trip_casts_dtype():
    a = rnnfast.RNN(3, 4, num_layers=2, seed=0)
    b = rnnfast.RNN(3, 4, num_layers=2, seed=1, dtype=np.float64)
    b.load_state_dict(a.state_dict())
    for k, v in a.params.items():
        assert b.params[k].dtype == np.float64
        np.testing.assert_array_equal(b.params[k], v.astype(np.float64))


def test_set_num_threads_validates_and_applies():
    if "cpu" not in BACKENDS:
        pytest.skip("cpu backend missing")
    from rnnfast import _C
    old = _C.blas_num_threads()
    try:
        rnnfast.set_num_threads(1)
        assert _C.blas_num_threads() == 1
    finally:
        rnnfast.set_num_threads(old)
    with pytest.raises(ValueError, match="positive integer"):
        rnnfast.set_num_threads(0)
