"""PyTorch as an external oracle (skipped when torch is not installed): torch.nn.RNN's state dict loaded
into rnnfast.RNN gives the same outputs, h_n, dx, dh0 and every parameter gradient.
Not a dependency: rnnfast never imports torch itself."""
import numpy as np
import pytest

import rnnfast
from rnn_helpers import available_backends

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("act,L,bias,batch_first", [("tanh", 1, True, False), ("relu", 2, True, True),
                                                    ("tanh", 3, False, False)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch_rnn(backend, act, L, bias, batch_first, dtype):
    torch.manual_seed(0)
    T, N, D, H = 9, 4, 6, 13
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    m = torch.nn.RNN(D, H, num_layers=L, nonlinearity=act, bias=bias, batch_first=batch_first).to(tdt)
    ours = rnnfast.RNN(D, H, num_layers=L, nonlinearity=act, bias=bias, batch_first=batch_first, dtype=dtype,
                       backend=backend)
    ours.load_state_dict({k: v.detach().numpy() for k, v in m.state_dict().items()})
    assert set(ours.state_dict()) == set(m.state_dict())
    rng = np.random.default_rng(1)
    xs = (N, T, D) if batch_first else (T, N, D)
    x = rng.standard_normal(xs).astype(dtype)
    h0 = rng.standard_normal((L, N, H)).astype(dtype)
    os_ = (N, T, H) if batch_first else (T, N, H)
    dout = rng.standard_normal(os_).astype(dtype)
    dh_n = rng.standard_normal((L, N, H)).astype(dtype)

    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0, requires_grad=True)
    tout, thn = m(tx, th0)
    (tout * torch.tensor(dout)).sum().add((thn * torch.tensor(dh_n)).sum()).backward()

    out, h_n = ours.forward(x, h0)
    dx, dh0 = ours.backward(dout, dh_n)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    np.testing.assert_allclose(h_n, thn.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(dh0, th0.grad.numpy(), **tol)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(ours.grads[name], p.grad.numpy(), err_msg=name, **tol)
