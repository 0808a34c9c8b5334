"""The cells table (rnnfast._cells) is the only per-cell code above the backends: a cell registered there with
entry points in a backend runs through functional.forward/backward, the lengths / bidirectional path and
the argument checks with no other change; the parameter layout is PyTorch's. Oracle: the same math run
under its own name (the GRU) and torch's parameter names. Not the cells' math (test_gated.py).
"""
import dataclasses

import numpy as np
import pytest

import rnnfast
import rnnfast.functional as F
from rnnfast import _cells, reference
from gated_helpers import flat, make_weights, zero_grads
from tolerances import EXACT64


@pytest.fixture
def toy(monkeypatch):
    """A new cell "toy": the GRU's math under another name, with entry points only in the numpy backend."""
    monkeypatch.setattr(reference, "toy_forward", reference.gru_forward, raising=False)
    monkeypatch.setattr(reference, "toy_backward", reference.gru_backward, raising=False)
    return dataclasses.replace(_cells.GRU, name="toy", title="TOY")


@pytest.mark.parametrize("kw", [{}, {"lengths": np.array([4, 0, 2])}, {"bidirectional": True}],
                         ids=["plain", "lengths", "bidirectional"])
def test_a_cell_in_the_table_runs_everywhere_below_the_named_api(toy, kw):
    dirs = 2 if kw.get("bidirectional") else 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5))
    ws = make_weights(rng, "gru", 5, 6, 2, np.float64, dirs=dirs)
    h0 = rng.standard_normal((2 * dirs, 3, 6))
    dout = rng.standard_normal((4, 3, 6 * dirs))
    res = []
    for cell in (toy, "gru"):
        out, finals, cache = F.forward(cell, x, (h0,), ws, True, "numpy", **kw)
        g = zero_grads(ws)
        dx, dstates, _ = F.backward(cell, dout, (None,), cache, g, "numpy")
        res.append([out, *finals, dx, *dstates, *flat(g)])
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, **EXACT64)


def test_a_new_cell_without_kernels_is_refused_clearly(toy):
    x = np.zeros((2, 1, 3))
    ws = make_weights(np.random.default_rng(0), "gru", 3, 4, 1, np.float64)
    if rnnfast.backends()["cpu"]["available"]:
        with pytest.raises(RuntimeError, match="backend 'cpu' has no TOY kernels yet"):
            F.forward(toy, x, (None,), ws, True, "cpu")
    with pytest.raises(ValueError, match=r"weight_hh_l0 must have shape \(3H, H\)"):
        F.forward(toy, x, (None,), [(ws[0][0], ws[0][1][:5], None, None)], True, "numpy")


@pytest.mark.parametrize("name", list(_cells.CELLS))
def test_parameter_layout_is_the_layers_and_torchs(name):
    cell = _cells.CELLS[name]
    layout = cell.param_layout(5, 7, num_layers=2, bias=True, dirs=2)
    layer = getattr(rnnfast, cell.title)(5, 7, num_layers=2, bidirectional=True)
    assert [(k, tuple(v.shape)) for k, v in layer.params.items()] == layout
    torch = pytest.importorskip("torch")
    ref = getattr(torch.nn, cell.title)(5, 7, num_layers=2, bidirectional=True)
    assert [(k, tuple(v.shape)) for k, v in ref.state_dict().items()] == layout


def test_unknown_cell_names_the_choices():
    with pytest.raises(ValueError, match="cell must be one of 'rnn', 'lstm', 'gru', got 'mgu'"):
        _cells.get("mgu")
