"""The layers as torch users expect them: torch's positional constructor order, unbatched (T, D) input,
dropout between layers (seeded; checked against the same layers composed by hand with the same masks),
load_state_dict(strict=...), named_parameters(), and optimizers given model.parameters(). torch is the
oracle where it can be (pytest.importorskip). Not here: the kernels' numbers (test_layer.py, test_gated.py).
"""
import numpy as np
import pytest
import rnnfast as rf

CELLS = {"RNN": rf.RNN, "LSTM": rf.LSTM, "GRU": rf.GRU}


def _x(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("cell", CELLS)
def test_torch_positional_order(cell):
    torch = pytest.importorskip("torch")
    args = (4, 5, 2, "tanh", False, True, 0.25, True) if cell == "RNN" else (4, 5, 2, False, True, 0.25, True)
    ours, theirs = CELLS[cell](*args), getattr(torch.nn, cell)(*args)
    for a in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"):
        assert getattr(ours, a) == getattr(theirs, a), a
    assert [(k, v.shape) for k, v in ours.named_parameters()] == \
        [(k, tuple(v.shape)) for k, v in theirs.named_parameters()]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_matches_torch(cell, batch_first):
    torch = pytest.importorskip("torch")
    T, D, H, L = 7, 3, 5, 2
    m = CELLS[cell](D, H, L, batch_first=batch_first, dtype=np.float64, seed=3)
    t = getattr(torch.nn, cell)(D, H, L, batch_first=batch_first).double()
    t.load_state_dict({k: torch.tensor(v) for k, v in m.state_dict().items()})
    x, h0 = _x(T, D), _x(L, H, seed=1)
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    if cell == "LSTM":
        c0 = _x(L, H, seed=2)
        c0t = torch.tensor(c0, requires_grad=True)
        out, (h_n, c_n) = m.forward(x, (h0, c0))
        to, (th, tc) = t(xt, (h0t, c0t))
        np.testing.assert_allclose(c_n, tc.detach().numpy(), atol=1e-12)
    else:
        out, h_n = m.forward(x, h0)
        to, th = t(xt, h0t)
    assert out.shape == (T, H) and h_n.shape == (L, H)
    np.testing.assert_allclose(out, to.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(h_n, th.detach().numpy(), atol=1e-12)
    dout = _x(T, H, seed=4)
    (to * torch.tensor(dout)).sum().backward()
    dx, dh0 = m.backward(dout)
    if cell == "LSTM":
        dh0, dc0 = dh0
        np.testing.assert_allclose(dc0, c0t.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), atol=1e-12)
    for k, p in t.named_parameters():
        np.testing.assert_allclose(m.grads[k], p.grad.numpy(), atol=1e-12, err_msg=k)


def _by_hand(cell, m, x, masks, dout):
    """The stacked layer with dropout written as L one-layer layers and the given masks between them."""
    kw = {"dtype": m.dtype, "backend": "numpy", "bidirectional": m.bidirectional}
    dirs = 2 if m.bidirectional else 1
    layers, inp, outs = [], x, []
    for k in range(m.num_layers):
        one = CELLS[cell](m.input_size if k == 0 else dirs * m.hidden_size, m.hidden_size, 1, **kw)
        one.load_state_dict({n.replace(f"_l{k}", "_l0"): v for n, v in m.params.items() if f"_l{k}" in n})
        out = one.forward(inp)[0]
        layers.append(one)
        outs.append(out)
        inp = out * masks[k] if k < m.num_layers - 1 else out
    d = dout
    for k in reversed(range(m.num_layers)):
        dx = layers[k].backward(d)[0]
        d = dx * masks[k - 1] if k > 0 else dx
    grads = {n.replace("_l0", f"_l{k}"): g for k, one in enumerate(layers) for n, g in one.grads.items()}
    return inp, d, grads


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_between_layers(cell, bidirectional):
    T, N, D, H, L, p = 6, 3, 4, 5, 3, 0.4
    m = CELLS[cell](D, H, L, dropout=p, bidirectional=bidirectional, dtype=np.float64, seed=7)
    x, dout = _x(T, N, D), _x(T, N, (2 if bidirectional else 1) * H, seed=5)
    out = m.forward(x)[0]
    masks = m._cache.masks
    assert len(masks) == L - 1
    for mk in masks:    # inverted dropout: zeros or 1/(1-p), about p of them zero
        assert set(np.unique(mk)) <= {0.0, 1.0 / (1 - p)}
        assert 0.15 < (mk == 0).mean() < 0.65
    dx = m.backward(dout)[0]
    ref_out, ref_dx, ref_grads = _by_hand(cell, m, x, masks, dout)
    np.testing.assert_allclose(out, ref_out, atol=1e-12)
    np.testing.assert_allclose(dx, ref_dx, atol=1e-12)
    for k, g in ref_grads.items():
        np.testing.assert_allclose(m.grads[k], g, atol=1e-12, err_msg=k)
    # seeded: the same seed gives the same masks; eval mode and dropout=0 use none
    again = CELLS[cell](D, H, L, dropout=p, bidirectional=bidirectional, dtype=np.float64, seed=7)
    np.testing.assert_array_equal(again.forward(x)[0], out)
    plain = CELLS[cell](D, H, L, bidirectional=bidirectional, dtype=np.float64, seed=7)
    m.eval()
    np.testing.assert_allclose(m.forward(x)[0], plain.forward(x)[0], atol=1e-12)


def test_dropout_checked():
    with pytest.raises(ValueError, match="dropout"):
        rf.RNN(3, 4, 2, dropout=1.0)
    with pytest.raises(TypeError, match="dropout"):
        rf.LSTM(3, 4, 2, True, False, np.float32)     # a dtype where torch's order has dropout


@pytest.mark.parametrize("cell", CELLS)
def test_load_state_dict_strict(cell):
    a, b = CELLS[cell](3, 4, 2, seed=0), CELLS[cell](3, 4, 2, seed=1)
    full = a.state_dict()
    part = {k: v for k, v in full.items() if k.endswith("_l0")}
    before = b.state_dict()
    with pytest.raises(KeyError, match="missing"):
        b.load_state_dict(part)
    for k, v in before.items():
        np.testing.assert_array_equal(b.params[k], v)     # a failed call changes nothing
    res = b.load_state_dict({**part, "extra": np.zeros(1)}, strict=False)
    assert res.unexpected_keys == ["extra"] and sorted(res.missing_keys) == sorted(set(full) - set(part))
    for k in full:
        np.testing.assert_array_equal(b.params[k], full[k] if k in part else before[k])
    assert b.load_state_dict(full) == ([], [])


def test_module_load_state_dict_strict_and_named_parameters():
    m = rf.ManyToMany(hidden_size=6, output_size=3, vocab_size=4, embed_size=5, seed=0)
    n = rf.ManyToMany(hidden_size=6, output_size=3, vocab_size=4, embed_size=5, seed=1)
    names = [k for k, _ in m.named_parameters()]
    assert names == list(m.params) and all(v is m.params[k] for k, v in m.named_parameters())
    sd = m.state_dict()
    head = {k: v for k, v in sd.items() if "embed" not in k}
    with pytest.raises(KeyError):
        n.load_state_dict(head)
    res = n.load_state_dict(head, strict=False)
    assert res.unexpected_keys == [] and res.missing_keys == [k for k in sd if "embed" in k]
    for k in head:
        np.testing.assert_array_equal(n.params[k], sd[k])


@pytest.mark.parametrize("opt", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_optimizer_takes_parameters(opt):
    a, b = rf.RNN(3, 4, seed=0, dtype=np.float64), rf.RNN(3, 4, seed=0, dtype=np.float64)
    x = _x(5, 2, 3)
    oa, ob = getattr(rf, opt)(a, lr=0.1), getattr(rf, opt)(b.parameters(), lr=0.1)
    for m, o in ((a, oa), (b, ob)):
        out = m.forward(x)[0]
        m.backward(np.ones_like(out))
        o.step()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    with pytest.raises(TypeError, match=r"takes the model .* or model.parameters\(\)"):
        getattr(rf, opt)([np.ones(3)], lr=0.1)


def test_regression_reduction_matches_classification_convention():
    """reduction="sum": summed over steps and outputs, divided by N (as classification); "mean": per value."""
    rng = np.random.default_rng(0)
    T, N, D, C = 4, 3, 2, 2
    m = rf.ManyToMany(5, C, input_size=D, task="regression", dtype=np.float64, seed=1)
    x, t = rng.standard_normal((T, N, D)), rng.standard_normal((T, N, C))
    y = m.forward(x)[0]
    assert m.loss(x, t) == pytest.approx(((y - t) ** 2).sum() / N, rel=1e-12)
    assert m.loss(x, t, reduction="mean") == pytest.approx(((y - t) ** 2).mean(), rel=1e-12)
    c = rf.ManyToMany(5, 3, input_size=D, dtype=np.float64, seed=1)
    ids = rng.integers(0, 3, (T, N))
    logits = c.forward(x)[0]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, ids[..., None], -1).sum()
    assert c.loss(x, ids) == pytest.approx(nll / N, rel=1e-12)
    o = rf.OneToOne(4, C, input_size=D, task="regression", dtype=np.float64, seed=2)
    x1, t1 = rng.standard_normal((N, D)), rng.standard_normal((N, C))
    assert o.loss(x1, t1) == pytest.approx(((o.forward(x1) - t1) ** 2).sum() / N, rel=1e-12)


def test_plot_history_keeps_the_backend_and_takes_ax(tmp_path):
    pytest.importorskip("matplotlib")
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot as plt; import rnnfast as rf\n"
            "from rnnfast.models.captioning import caption_grid\nimport numpy as np\n"
            "h = {'step': [1, 2, 3], 'loss': [3.0, 2.0, 1.5], 'val_step': [3], 'val_bpc': [1.7]}\n"
            "fig = rf.plot_history(h, r'%s', smooth=0.5)\n"
            "fig2, ax = plt.subplots(); assert rf.plot_history(h, ax=ax) is fig2\n"
            "caption_grid(np.zeros((2, 4, 4, 3)), ['a', 'b'], ['a', 'c'], r'%s')\n"
            "print(matplotlib.get_backend(), type(fig).__name__, len(fig.axes[0].lines))"
            % (tmp_path / "h.png", tmp_path / "g.png"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "Figure", "3"]     # train, EMA, validation
    assert (tmp_path / "h.png").stat().st_size > 0 and (tmp_path / "g.png").stat().st_size > 0
