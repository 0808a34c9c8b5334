"""Variable-length batches (`lengths`) and bidirectional stacks for RNN, LSTM and GRU: against an oracle
that runs every sequence alone, truncated to its length (lengths 0 and unsorted included), against
PyTorch's packed sequences and bidirectional layers (outputs, final states, every gradient), and bad
lengths. Not the cells' own math (test_gated.py, test_backends.py)."""
import numpy as np
import pytest

import rnnfast
import rnnfast.functional as F
from gated_helpers import make_weights, run_cell
from tolerances import SAME64, TOL64

CELLS = ["rnn", "lstm", "gru"]
BACKENDS = [b for b in ("numpy", "cpu") if rnnfast.backends()[b]["available"]]


def _problem(seed, cell, T, N, D, H, L, dirs, with_c=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, D))
    ws = make_weights(rng, cell, D, H, L, np.float64, dirs=dirs)
    ns = 2 if cell == "lstm" else 1
    states = tuple(rng.standard_normal((L * dirs, N, H)) * 0.5 for _ in range(ns))
    douts = (rng.standard_normal((T, N, dirs * H)),) + tuple(rng.standard_normal((L * dirs, N, H)) for _ in range(ns))
    c = rng.standard_normal((N, H)) * 0.3 if with_c else None
    return x, states, ws, douts, c


def _per_sequence_oracle(cell, x, states, ws, douts, lengths, bidirectional, c):
    """Run each sequence alone on its first lengths[n] steps (no lengths argument) and assemble the batch
    results: outputs zero past the length; an empty sequence keeps its initial state and passes dh_n
    (dc_n) straight to dh0 (dc0)."""
    T, N, _ = x.shape
    ns = len(states)
    res = None
    for n in range(N):
        ln = int(lengths[n])
        st = tuple(s[:, n:n + 1] for s in states)
        dfin = tuple(d[:, n:n + 1] for d in douts[1:])
        cn = None if c is None else c[n:n + 1]
        if ln > 0:
            r = run_cell(cell, "numpy", np.ascontiguousarray(x[:ln, n:n + 1]), st, ws,
                         (np.ascontiguousarray(douts[0][:ln, n:n + 1]),) + dfin, bidirectional=bidirectional, c=cn)
        else:   # out, finals, dx, dstates, (dc), parameter gradients
            H2 = douts[0].shape[2]
            r = [np.zeros((0, 1, H2))] + list(st) + [np.zeros((0, 1, x.shape[2]))] + list(dfin)
            r += [np.zeros((1, states[0].shape[2]))] if c is not None else []
            r += [np.zeros_like(a) for w in ws for a in w if a is not None]
        if res is None:
            res = [np.zeros((T, N) + r[0].shape[2:])] + [np.zeros_like(s) for s in states] + \
                [np.zeros_like(x)] + [np.zeros_like(s) for s in states] + \
                ([np.zeros((N, states[0].shape[2]))] if c is not None else []) + \
                [np.zeros_like(a) for w in ws for a in w if a is not None]
        res[0][:ln, n] = r[0][:, 0]
        for j in range(ns):
            res[1 + j][:, n] = r[1 + j][:, 0]
            res[2 + ns + j][:, n] = r[2 + ns + j][:, 0]
        res[1 + ns][:ln, n] = r[1 + ns][:, 0]
        k = 2 + 2 * ns
        if c is not None:
            res[k][n] = r[k][0]
            k += 1
        for j in range(k, len(res)):
            res[j] += r[j]
    return res


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_match_per_sequence_oracle(cell, bidirectional, backend):
    T, N, D, H, L = 6, 5, 3, 7, 2
    dirs = 2 if bidirectional else 1
    with_c = cell == "rnn"
    x, states, ws, douts, c = _problem(7, cell, T, N, D, H, L, dirs, with_c)
    lengths = np.array([3, 0, 6, 1, 4])             # unsorted, an empty sequence, a full one
    got = run_cell(cell, backend, x, states, ws, douts, lengths=lengths, bidirectional=bidirectional, c=c)
    want = _per_sequence_oracle(cell, x, states, ws, douts, lengths, bidirectional, c)
    assert len(got) == len(want)
    for j, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, **TOL64, err_msg=f"output {j}")


@pytest.mark.parametrize("cell", CELLS)
def test_full_lengths_equal_no_lengths(cell):
    x, states, ws, douts, _ = _problem(3, cell, 5, 3, 4, 6, 2, 1)
    a = run_cell(cell, BACKENDS[-1], x, states, ws, douts)
    b = run_cell(cell, BACKENDS[-1], x, states, ws, douts, lengths=[5, 5, 5])
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, **TOL64)


@pytest.mark.parametrize("cell", CELLS)
def test_padding_values_do_not_matter(cell):
    """Changing x past each length changes nothing at all, in outputs or gradients."""
    x, states, ws, douts, _ = _problem(4, cell, 6, 4, 3, 5, 1, 2)
    lengths = np.array([2, 6, 0, 5])
    a = run_cell(cell, BACKENDS[-1], x, states, ws, douts, lengths=lengths, bidirectional=True)
    x2 = x.copy()
    x2[np.arange(6)[:, None] >= lengths[None, :]] = 1e3
    b = run_cell(cell, BACKENDS[-1], x2, states, ws, douts, lengths=lengths, bidirectional=True)
    for j, (u, v) in enumerate(zip(a, b)):
        if j == 1 + len(states):    # dx: compare on the valid steps; padding rows are zero in both
            assert np.all(u[np.arange(6)[:, None] >= lengths[None, :]] == 0)
        np.testing.assert_allclose(u, v, **TOL64, err_msg=f"output {j}")


# ---- PyTorch: packed sequences and bidirectional stacks ----

@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_layers_match_torch_packed_sequences(cell, bidirectional):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    T, N, D, H, L = 7, 4, 3, 5, 2
    dirs = 2 if bidirectional else 1
    torch.manual_seed(2)
    tcls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    m = tcls(D, H, num_layers=L, bidirectional=bidirectional).double()
    ocls = {"rnn": rnnfast.RNN, "lstm": rnnfast.LSTM, "gru": rnnfast.GRU}[cell]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, N, D))
    lengths = np.array([4, 7, 1, 5])                # unsorted; torch needs lengths >= 1
    states = [rng.standard_normal((L * dirs, N, H)) for _ in range(2 if cell == "lstm" else 1)]
    dout = rng.standard_normal((T, N, dirs * H))
    dfin = [rng.standard_normal((L * dirs, N, H)) for _ in states]
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    packed = pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    out_p, fin = m(packed, tuple(st) if cell == "lstm" else st[0])
    out_t, _ = pad_packed_sequence(out_p, total_length=T)
    fins = list(fin) if cell == "lstm" else [fin]
    loss = (out_t * torch.tensor(dout)).sum() + sum((f * torch.tensor(d)).sum() for f, d in zip(fins, dfin))
    loss.backward()
    want = [out_t.detach().numpy()] + [f.detach().numpy() for f in fins] + [xt.grad.numpy()] + \
        [s.grad.numpy() for s in st]
    tgrads = {k: p.grad.numpy() for k, p in m.named_parameters()}
    for b in BACKENDS:
        kw = {} if cell != "rnn" else {"nonlinearity": "tanh"}
        lay = ocls(D, H, num_layers=L, bidirectional=bidirectional, dtype=np.float64, backend=b, **kw)
        lay.load_state_dict(m.state_dict())
        if cell == "lstm":
            out, (h_n, c_n) = lay(x, tuple(states), lengths=lengths)
            dx, (dh0, dc0) = lay.backward(dout, *dfin)
            got = [out, h_n, c_n, dx, dh0, dc0]
        else:
            out, h_n = lay(x, states[0], lengths=lengths)
            dx, dh0 = lay.backward(dout, dfin[0])
            got = [out, h_n, dx, dh0]
        for j, (g, w) in enumerate(zip(got, want)):
            np.testing.assert_allclose(g, w, **TOL64, err_msg=f"{b} output {j}")
        for k in tgrads:
            np.testing.assert_allclose(lay.grads[k], tgrads[k], **TOL64, err_msg=f"{b} {k}")


def test_rnn_bidirectional_matches_torch_with_relu_and_batch_first():
    torch = pytest.importorskip("torch")
    torch.manual_seed(5)
    m = torch.nn.RNN(4, 6, num_layers=2, nonlinearity="relu", bidirectional=True, batch_first=True).double()
    lay = rnnfast.RNN(4, 6, num_layers=2, nonlinearity="relu", bidirectional=True, batch_first=True,
                      dtype=np.float64, backend=BACKENDS[-1])
    assert list(lay.params) == [k for k, _ in m.named_parameters()]
    lay.load_state_dict(m.state_dict())
    x = np.random.default_rng(5).standard_normal((3, 8, 4))
    xt = torch.tensor(x, requires_grad=True)
    out_t, hn_t = m(xt)
    (out_t.sum() + hn_t.sum()).backward()
    out, h_n = lay(x)
    dx, dh0 = lay.backward(np.ones_like(out), np.ones_like(h_n))
    np.testing.assert_allclose(out, out_t.detach().numpy(), **SAME64)
    np.testing.assert_allclose(h_n, hn_t.detach().numpy(), **SAME64)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL64)
    for k, p in m.named_parameters():
        np.testing.assert_allclose(lay.grads[k], p.grad.numpy(), **TOL64, err_msg=k)


# ---- the vanilla RNN without the new arguments is unchanged ----

def test_rnn_defaults_unchanged():
    lay = rnnfast.RNN(3, 4, num_layers=2, seed=9)
    rng = np.random.default_rng(9)
    b = 1 / np.sqrt(4)
    for name, shape in [("weight_ih_l0", (4, 3)), ("weight_hh_l0", (4, 4)), ("bias_ih_l0", (4,)),
                        ("bias_hh_l0", (4,)), ("weight_ih_l1", (4, 4)), ("weight_hh_l1", (4, 4)),
                        ("bias_ih_l1", (4,)), ("bias_hh_l1", (4,))]:
        np.testing.assert_array_equal(lay.params[name], rng.uniform(-b, b, shape).astype(np.float32))
    assert list(lay.params)[-1] == "bias_hh_l1" and "bidirectional" not in repr(lay)
    out, h_n, cache = F.rnn_forward(np.zeros((2, 1, 3), np.float32), None, lay._weights())
    assert type(cache).__name__ == "RNNCache"


# ---- bad lengths ----

@pytest.mark.parametrize("cell", CELLS)
def test_bad_lengths(cell):
    x, states, ws, douts, _ = _problem(0, cell, 4, 3, 2, 5, 1, 1)
    fwd = {"rnn": lambda **kw: F.rnn_forward(x, None, ws, **kw),
           "lstm": lambda **kw: F.lstm_forward(x, None, None, ws, **kw),
           "gru": lambda **kw: F.gru_forward(x, None, ws, **kw)}[cell]
    with pytest.raises(ValueError, match=r"lengths\[1\] = 5 is outside \[0, T\] = \[0, 4\]"):
        fwd(lengths=np.array([1, 5, 2]))
    with pytest.raises(ValueError, match=r"lengths\[2\] = -1 is outside"):
        fwd(lengths=[1, 2, -1])
    with pytest.raises(TypeError,
                       match=r"lengths must be an integer array of shape \(N,\) = \(3,\), got dtype float64"):
        fwd(lengths=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match="got dtype bool"):
        fwd(lengths=np.array([True, True, False]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(N,\) = \(3,\), got \(2,\)"):
        fwd(lengths=[1, 2])
    with pytest.raises(ValueError, match=r"weights must be a non-empty list of 2L tuples"):
        fwd(bidirectional=True, lengths=[1, 2, 3])   # one tuple: a bidirectional stack needs two per layer


def test_bad_bidirectional_shapes():
    x, states, ws, douts, _ = _problem(0, "gru", 4, 3, 2, 5, 2, 2)
    with pytest.raises(ValueError, match=r"h0 must have shape \(L\*2, N, H\) = \(4, 3, 5\)"):
        F.gru_forward(x, states[0][:2], ws, bidirectional=True)
    bad = list(ws)
    bad[2] = (ws[2][0][:, :5],) + ws[2][1:]
    with pytest.raises(ValueError, match=r"weight_ih_l1 must have shape \(3H, 2H\) = \(15, 10\)"):
        F.gru_forward(x, None, bad, bidirectional=True)
    out, h_n, cache = F.gru_forward(x, None, ws, bidirectional=True)
    with pytest.raises(ValueError, match=r"dout must have shape \(T, N, 2H\) = \(4, 3, 10\)"):
        F.gru_backward(np.zeros((4, 3, 5)), None, cache, [tuple(np.zeros_like(a) for a in w) for w in ws])
    with pytest.raises(TypeError, match="cache must come from rnn_forward, got the cache of a GRU forward"):
        F.rnn_backward(None, None, cache, [])


@pytest.mark.parametrize("cell", CELLS)
def test_inference_with_lengths_matches_training_forward(cell):
    """need_cache=False (an LSTM keeps a cache internally for c_n at each end, then drops it) gives the
    training forward's outputs and final states; float32 on the best backend."""
    x, states, ws, douts, _ = _problem(6, cell, 5, 4, 3, 6, 2, 2)
    f = np.float32
    x, states = x.astype(f), tuple(s.astype(f) for s in states)
    ws = [tuple(a.astype(f) for a in w) for w in ws]
    fwd = {"rnn": lambda nc: F.rnn_forward(x, states[0], ws, None, "tanh", nc, BACKENDS[-1], lengths=[5, 0, 2, 3],
                                           bidirectional=True),
           "lstm": lambda nc: F.lstm_forward(x, *states, ws, nc, BACKENDS[-1], lengths=[5, 0, 2, 3],
                                             bidirectional=True),
           "gru": lambda nc: F.gru_forward(x, states[0], ws, nc, BACKENDS[-1], lengths=[5, 0, 2, 3],
                                           bidirectional=True)}[cell]
    train, infer = fwd(True), fwd(False)
    assert infer[-1] is None and train[-1] is not None
    for a, b in zip(train[:-1], infer[:-1]):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
