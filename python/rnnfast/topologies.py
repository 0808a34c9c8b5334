"""The five sequence topologies on top of a recurrent layer: one-to-one, one-to-many, many-to-one,
many-to-many and sequence-to-sequence, each a small Module with forward, backward, loss (+ gradients) and,
where it generates, generate. Time-major throughout: sequences are (T, N, D) floats or (T, N) token ids.
Every topology takes cell="rnn" (vanilla), "lstm" or "gru". What it is not: the kernels
(rnnfast.functional), the layers (rnnfast.nn) or training loops (rnnfast.train).

States: for "rnn" and "gru" a state is one array (L, N, H); for "lstm" it is the pair (h, c), each
(L, N, H) (a (2, L, N, H) array is accepted wherever a state goes in). OneToMany derives h0 from its code
vector and an LSTM's c0 is then 0; Seq2Seq hands the LSTM decoder the encoder's final (h, c). The constant input `c`
(OneToMany feed_code, Seq2Seq feed_context) exists only for cell="rnn": the gated kernels have no
constant input, so those combinations raise ValueError.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np

from . import _decode
from .nn import (GRU, LSTM, RNN, Embedding, Linear, Module, OneHotRNN, _check_ids, _check_size, _gather_rows,
                 _identity_input, _one_hot, _onehot_path, _scatter_add_rows, linear_cross_entropy, mse,
                 softmax_cross_entropy)

_TASKS = ("classification", "regression")
CELLS = ("rnn", "lstm", "gru")


def _seeds(seed, k):
    return [int(s) for s in np.random.default_rng(seed).integers(0, 2**31 - 1, size=k)]


def _check_lengths(lengths, T, N):
    """lengths (N,) ints in [1, T] as int64, or None meaning every sequence has T steps."""
    if lengths is None:
        if T < 1:
            raise ValueError("the sequences must have T >= 1 steps, got T = 0")
        return np.full(N, T, dtype=np.int64)
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array of shape (N,) = ({N},), got dtype {lengths.dtype}")
    if lengths.shape != (N,):
        raise ValueError(f"lengths must have shape (N,) = ({N},), got {lengths.shape}")
    if N and (lengths.min() < 1 or lengths.max() > T):
        bad = int(lengths.min()) if lengths.min() < 1 else int(lengths.max())
        raise ValueError(f"lengths must lie in [1, T] = [1, {T}], got {bad}")
    return lengths.astype(np.int64)


def check_cell(cell, nonlinearity="tanh"):
    """The cell name, validated: one of CELLS; nonlinearity other than "tanh" only with cell="rnn"."""
    if not isinstance(cell, str) or cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(repr(c) for c in CELLS)}, got {cell!r}")
    if cell != "rnn" and nonlinearity != "tanh":
        raise ValueError(f"nonlinearity applies to cell='rnn' only (the {cell.upper()} gates fix their own), "
                         f"got nonlinearity={nonlinearity!r} with cell={cell!r}")
    return cell


def _no_constant_input(cell, what):
    if cell != "rnn":
        raise ValueError(f"{what} needs the RNN's constant input c, which only cell='rnn' has (the "
                         f"{cell.upper()} kernels have no constant input); use cell='rnn' or turn {what} off")


def lstm_state(state, name="h0"):
    """An LSTM state as the pair (h, c): from a tuple/list of two arrays or one (2, L, N, H) array."""
    if isinstance(state, (tuple, list)) and len(state) == 2:
        return state[0], state[1]
    if getattr(state, "ndim", None) == 4 and state.shape[0] == 2:
        return state[0], state[1]
    got = f"a {type(state).__name__} of length {len(state)}" if isinstance(state, (tuple, list)) else \
        f"shape {tuple(np.shape(state))}"
    raise ValueError(f"{name} for cell='lstm' must be a pair (h, c) of (L, N, H) arrays or one (2, L, N, H) "
                     f"array, got {got}")


def _smap(fn, state):
    """fn applied to each array of a state (one array, or the LSTM pair)."""
    return tuple(fn(a) for a in state) if isinstance(state, tuple) else fn(state)


def _hidden(state):
    """The hidden-state array of a state (the h of an LSTM's pair)."""
    return state[0] if isinstance(state, tuple) else state


def _check_task(task):
    if task not in _TASKS:
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    return task


@contextlib.contextmanager
def _inference(model):
    """Run without keeping caches, restoring the previous train/eval mode afterwards."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _mask(name, mask, shape):
    """mask as an array of the targets' shape (T, N), else ValueError naming it (not a broadcast error)."""
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"{name} must have the shape of the targets (T, N) = {tuple(shape)}, got {m.shape}")
    if m.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold booleans or 0/1 numbers, got dtype {m.dtype}")
    return m


def _head_loss(task, y, targets, mask, reduction):
    """The topologies' loss, one convention for both tasks. reduction "sum" (default): per sequence, the sum
    over steps (and, for regression, output features) of the per-element losses, averaged over the N
    sequences; "mean": the mean over the counted elements (softmax: positions; regression: values).
    y (T, N, C) or (N, C); N is axis 1 or 0."""
    if task == "classification":
        return softmax_cross_entropy(y, targets, mask=mask, reduction=reduction)
    if reduction == "mean":
        return mse(y, targets, mask=mask, reduction="mean")
    loss, dy = mse(y, targets, mask=mask, reduction="sum")
    n = y.shape[1] if y.ndim == 3 else y.shape[0]
    return loss / n, dy / n


def _head_loss_backward(task, head, h, targets, mask, reduction):
    """Head + loss + the head's backward on hidden rows h: (loss, dh). Classification runs the fused
    native head + softmax cross-entropy (nn.linear_cross_entropy); regression the head and mse."""
    if task == "classification":
        return linear_cross_entropy(head, h, _ids_array(targets), mask=mask, reduction=reduction)
    y = head.forward(h)
    loss, dy = _head_loss(task, y, targets, mask, reduction)
    return loss, head.backward(dy)


def _ids_array(targets):
    return targets if isinstance(targets, np.ndarray) else np.asarray(targets)


class _OneHotGated:
    """LSTM(V, H) / GRU(V, H) fed one-hot vectors of token ids (T, N), as OneHotRNN is for the vanilla cell.

    Parameters are exactly the gated layer's (weight_ih_l0 is (G*H, V)), so state dicts move to and from
    rnnfast.LSTM / GRU and torch.nn.LSTM / GRU. Path "dense" builds the (T, N, V) one-hot and uses the
    ordinary input GEMM; path "gather" takes rows of W_ih^T (T*N x G*H values) and runs the kernels with
    layer 0's input weight set to the identity, then scatters the kernels' dx back into the columns of
    dW_ih. On the "cpu" backend (without lengths) the identity is W_ih = None, which the kernels take as
    "x is the projection" (no input GEMM, no dW_ih GEMM, dx = the gate gradients); elsewhere an explicit
    I_{G*H} (x @ I is exact), whose GEMM costs (G*H)^2 per row against V*G*H for the one-hot one. "auto"
    picks "gather" on the "cpu" backend, else "dense" when V <= G*H. Results are identical either way.
    """

    def _init_onehot(self, path):
        self.vocab_size = self.input_size
        GH = self._G * self.hidden_size
        self.path = _onehot_path(path, self.backend, self.vocab_size, GH)
        self._eye = None
        self._ids = None
        self._identity = False      # this forward passes W_ih = None (set per call by _onehot_input)

    def _onehot_input(self, ids, lengths=None):
        ids = _check_ids("ids", ids, self.vocab_size, "(T, N)")
        if ids.ndim != 2:
            raise ValueError(f"ids must have shape (T, N), got {ids.shape}")
        self._ids = ids
        if self.path == "dense":
            return _one_hot(ids, self.vocab_size, self.dtype)
        # W_ih = None for the cpu kernels; the lengths path (rnnfast._stack) checks W_ih as an array
        self._identity = lengths is None and _identity_input(self.backend)
        if not self._identity and self._eye is None:
            self._eye = np.eye(self._G * self.hidden_size, dtype=self.dtype)
        return _gather_rows(np.ascontiguousarray(self.params["weight_ih_l0"].T), ids)   # (T, N, G*H)

    def _input(self, x):            # the layer's own check expects D = V; x was built from checked ids
        return x

    def _weights(self):
        w = super()._weights()
        if self.path == "gather":
            w[0] = (None if self._identity else self._eye,) + w[0][1:]
        return w

    def _grad_list(self):
        g = super()._grad_list()
        if self.path == "gather":   # the identity's gradient is not a parameter: None, or a scratch array
            g[0] = (None if self._identity else np.zeros_like(self._eye),) + g[0][1:]
        return g

    def _scatter(self, dx):
        if self.path == "gather":
            gT = np.zeros((self.vocab_size, self._G * self.hidden_size), dtype=self.dtype)
            _scatter_add_rows(gT, self._ids, dx)    # into the columns of W_ih that were read
            self.grads["weight_ih_l0"] += gT.T


class _OneHotLSTM(_OneHotGated, LSTM):
    def __init__(self, vocab_size, hidden_size, num_layers=1, dtype=np.float32, backend=None, seed=None,
                 path="auto"):
        LSTM.__init__(self, vocab_size, hidden_size, num_layers, dtype=dtype, backend=backend, seed=seed)
        self._init_onehot(path)

    def forward(self, ids, hc0=None, need_cache=None, lengths=None):
        return LSTM.forward(self, self._onehot_input(ids, lengths), hc0, need_cache, lengths)

    __call__ = forward

    def backward(self, dout, dh_n=None, dc_n=None):
        dx, states = LSTM.backward(self, dout, dh_n, dc_n)
        self._scatter(dx)
        return None, states


class _OneHotGRU(_OneHotGated, GRU):
    def __init__(self, vocab_size, hidden_size, num_layers=1, dtype=np.float32, backend=None, seed=None,
                 path="auto"):
        GRU.__init__(self, vocab_size, hidden_size, num_layers, dtype=dtype, backend=backend, seed=seed)
        self._init_onehot(path)

    def forward(self, ids, h0=None, need_cache=None, lengths=None):
        return GRU.forward(self, self._onehot_input(ids, lengths), h0, need_cache, lengths)

    __call__ = forward

    def backward(self, dout, dh_n=None):
        dx, dh0 = GRU.backward(self, dout, dh_n)
        self._scatter(dx)
        return None, dh0


_GATED = {"lstm": (LSTM, _OneHotLSTM), "gru": (GRU, _OneHotGRU)}


class _SeqInput(Module):
    """The input side shared by the topologies: floats (T, N, D) -> cell(D, H); token ids (T, N) ->
    Embedding(V, E) -> cell(E, H) when embed_size is given, else the one-hot layer (OneHotRNN(V, H), or
    LSTM/GRU(V, H) fed one-hot ids; no (T*N, V) GEMM when V is large). cell "rnn", "lstm" or "gru".

    With layerwise=True (cell "rnn" only) the stack is L single-layer RNNs (children rnn_l0, rnn_l1, ...)
    so that every layer's outputs are visible and can receive gradient (the vanilla seq2seq encoder reads
    each layer's state at each sequence's last valid step). The gated cells get the same from their own
    `lengths` argument (h_n, c_n at each sequence's end), so they always use one stacked child "rnn".
    """

    def __init__(self, hidden_size, num_layers, input_size, vocab_size, embed_size, nonlinearity, dtype,
                 backend, seed, layerwise=False, cell="rnn"):
        super().__init__()
        if (input_size is None) == (vocab_size is None):
            raise ValueError("give exactly one of input_size (float inputs) or vocab_size (token ids)")
        if input_size is not None and embed_size is not None:
            raise ValueError("embed_size applies to token inputs (vocab_size), not to input_size")
        self.cell = check_cell(cell, nonlinearity)
        H = _check_size("hidden_size", hidden_size)
        L = _check_size("num_layers", num_layers)
        self.kind = "float" if input_size is not None else ("embed" if embed_size is not None else "onehot")
        layerwise = layerwise and self.cell == "rnn"
        self.dtype, self.layerwise, self.num_layers, self.hidden_size = np.dtype(dtype), layerwise, L, H
        self.vocab_size = None if vocab_size is None else _check_size("vocab_size", vocab_size)
        s = _seeds(seed, L + 1)
        if self.kind == "embed":
            self.embed = Embedding(self.vocab_size, _check_size("embed_size", embed_size), dtype=dtype, seed=s[L])
        D = input_size if self.kind == "float" else embed_size
        if self.cell != "rnn":
            dense, onehot = _GATED[self.cell]
            kw = dict(dtype=dtype, backend=backend, seed=s[0])
            self.rnn = onehot(self.vocab_size, H, L, **kw) if self.kind == "onehot" else \
                dense(_check_size("input_size", D), H, L, **kw)
            return
        kw = dict(nonlinearity=nonlinearity, dtype=dtype, backend=backend)
        first_layers = 1 if layerwise else L
        if self.kind == "onehot":
            first = OneHotRNN(self.vocab_size, H, first_layers, seed=s[0], **kw)
        else:
            first = RNN(_check_size("input_size", D), H, first_layers, seed=s[0], **kw)
        if layerwise:
            self.rnn_l0 = first
            for k in range(1, L):
                setattr(self, f"rnn_l{k}", RNN(H, H, 1, seed=s[k], **kw))
        else:
            self.rnn = first

    def _layers(self):
        return [getattr(self, f"rnn_l{k}") for k in range(self.num_layers)] if self.layerwise else [self.rnn]

    def dims(self, x):
        """(T, N) of the input, validated: floats (T, N, D) or ids (T, N); N = 0 is an error."""
        x = np.asarray(x) if not hasattr(x, "shape") else x
        if self.kind == "float":
            if x.ndim != 3:
                raise ValueError(f"x must have shape (T, N, D), got {tuple(x.shape)}")
        else:
            if x.ndim != 2:
                raise ValueError(f"token ids must have shape (T, N), got {tuple(x.shape)}")
        T, N = x.shape[:2]
        if N == 0:
            raise ValueError(f"empty batch: N = 0 sequences (input shape {tuple(x.shape)})")
        return T, N

    def zero_state(self, N):
        """The all-zero initial state for N sequences: (L, N, H), or the pair (h, c) for an LSTM."""
        z = np.zeros((self.num_layers, N, self.hidden_size), dtype=self.dtype)
        return (z, z.copy()) if self.cell == "lstm" else z

    def forward(self, x, h0=None, c=None, need_cache=None, lengths=None):
        """-> (out (T, N, H), state): h_n (L, N, H), or (h_n, c_n) for an LSTM. In layerwise mode
        self.layer_outputs holds every layer's out. lengths (gated cells only): each sequence's final state
        is taken at its own last valid step."""
        if c is not None:
            _no_constant_input(self.cell, "the constant input c")
        if self.kind == "embed":
            x = self.embed.forward(x, need_cache)
        if self.cell == "lstm":
            hc0 = None if h0 is None else lstm_state(h0, "h0")
            out, (h_n, c_n) = self.rnn.forward(x, hc0, need_cache, lengths)
            return out, (h_n, c_n)
        if self.cell == "gru":
            return self.rnn.forward(x, h0, need_cache, lengths)
        if lengths is not None:
            raise ValueError("lengths are taken by the gated cells here; the vanilla topologies read each "
                             "sequence's last valid step from the outputs")
        if not self.layerwise:
            return self.rnn.forward(x, h0, c, need_cache)
        outs, hns = [], []
        for k, r in enumerate(self._layers()):
            x, hn = r.forward(x, None if h0 is None else h0[k:k + 1], c if k == 0 else None, need_cache)
            outs.append(x)
            hns.append(hn[0])
        self.layer_outputs = outs
        return x, np.stack(hns)

    __call__ = forward

    def backward(self, dout, dh_n=None, dlayers=None):
        """-> (dstate0, dc or None): dh0 (L, N, H), or (dh0, dc0) for an LSTM. dlayers: optional per-layer
        extra output gradients (layerwise). dh_n: the final state's gradient, shaped as the state."""
        dc = None
        if self.cell == "lstm":
            dh, dcn = (None, None) if dh_n is None else lstm_state(dh_n, "dh_n")
            dx, dh0 = self.rnn.backward(dout, dh, dcn)
        elif self.cell == "gru":
            dx, dh0 = self.rnn.backward(dout, dh_n)
        elif not self.layerwise:
            res = self.rnn.backward(dout, dh_n)
            dx, dh0, dc = res if len(res) == 3 else (res[0], res[1], None)
        else:
            dh0s, d = [None] * self.num_layers, dout
            for k in reversed(range(self.num_layers)):
                if dlayers is not None and dlayers[k] is not None:
                    d = dlayers[k] if d is None else d + dlayers[k]
                res = self._layers()[k].backward(d, None if dh_n is None else dh_n[k:k + 1])
                d, dh0s[k] = res[0], res[1][0]
                if k == 0 and len(res) == 3:
                    dc = res[2]
            dx, dh0 = d, np.stack(dh0s)
        if self.kind == "embed":
            self.embed.backward(dx)
        return dh0, dc


class _SequenceWithHead(Module):
    """What one-to-one, many-to-one and many-to-many share: an input side (floats, embedding or one-hot)
    into a stacked RNN/LSTM/GRU, and a Linear head on its outputs."""

    def __init__(self, hidden_size, output_size, input_size=None, vocab_size=None, embed_size=None, num_layers=1,
                 task="classification", nonlinearity="tanh", dtype=np.float32, backend=None, seed=0, cell="rnn"):
        super().__init__()
        self.task = _check_task(task)
        s = _seeds(seed, 2)
        self.encoder = _SeqInput(hidden_size, num_layers, input_size, vocab_size, embed_size, nonlinearity,
                                 dtype, backend, s[0], cell=cell)
        self.cell = self.encoder.cell
        self.head = Linear(hidden_size, _check_size("output_size", output_size), dtype=dtype, seed=s[1])


class OneToOne(_SequenceWithHead):
    """A single step, the degenerate case: x (N, D) or ids (N,) -> one cell step from h = 0 (and c = 0 for
    an LSTM) -> Linear head. forward(x) -> y (N, output_size); loss(x, targets) (targets (N,) ids or
    (N, output_size) floats)."""

    def forward(self, x) -> np.ndarray:
        x = np.asarray(x) if not hasattr(x, "shape") else x
        xs = x[None]
        self.encoder.dims(xs)
        out, _ = self.encoder.forward(xs)
        return self.head.forward(out[0])

    __call__ = forward

    def backward(self, dy):
        dh = self.head.backward(dy)
        self.encoder.backward(dh[None])

    def loss(self, x, targets, reduction: str = "sum") -> tuple:
        x = np.asarray(x) if not hasattr(x, "shape") else x
        xs = x[None]
        self.encoder.dims(xs)
        out, _ = self.encoder.forward(xs)
        loss, dh = _head_loss_backward(self.task, self.head, out[0], targets, None, reduction)
        self.encoder.backward(dh[None])
        return loss

    def predict(self, x) -> np.ndarray:
        with _inference(self):
            y = self.forward(x)
        return y.argmax(axis=-1) if self.task == "classification" else y


class ManyToOne(_SequenceWithHead):
    """A sequence -> one output from the top layer's state at each sequence's last valid step.

    forward(x (T, N, D) or ids (T, N), lengths=None) -> y (N, output_size). With lengths (N,) in [1, T],
    sequence n reads the top-layer output at step lengths[n] - 1; the RNN is causal, so the padding after it
    cannot change that value, and backward puts the head's gradient exactly there (padding gets none).
    """

    def forward(self, x, lengths=None) -> np.ndarray:
        T, N = self.encoder.dims(x)
        lengths = _check_lengths(lengths, T, N)
        out, _ = self.encoder.forward(x)
        last = out[lengths - 1, np.arange(N)]          # (N, H): each sequence's own last valid step
        self._fw = (lengths, out.shape, out.dtype)
        return self.head.forward(last)

    __call__ = forward

    def backward(self, dy):
        lengths, shape, dtype = self._fw
        dlast = self.head.backward(dy)
        dout = np.zeros(shape, dtype=dtype)
        dout[lengths - 1, np.arange(shape[1])] = dlast  # only the steps that were read get gradient
        self.encoder.backward(dout)

    def loss(self, x, targets, lengths=None, reduction: str = "sum") -> tuple:
        T, N = self.encoder.dims(x)
        lengths = _check_lengths(lengths, T, N)
        out, _ = self.encoder.forward(x)
        last = out[lengths - 1, np.arange(N)]
        loss, dlast = _head_loss_backward(self.task, self.head, last, targets, None, reduction)
        dout = np.zeros(out.shape, dtype=out.dtype)
        dout[lengths - 1, np.arange(N)] = dlast
        self.encoder.backward(dout)
        return loss

    def predict(self, x, lengths=None) -> np.ndarray:
        with _inference(self):
            y = self.forward(x, lengths)
        return y.argmax(axis=-1) if self.task == "classification" else y


class ManyToMany(_SequenceWithHead):
    """Aligned sequence -> sequence: an output at every step, loss summed over steps, masks for padding.

    forward(x, h0=None) -> (y (T, N, output_size), h_n (L, N, H)). loss(x, targets, mask=None,
    reduction="sum", h0=None, return_state=False) -> loss, or (loss, h_n): the protocol the truncated-BPTT
    trainer uses (h_n is plain data: carrying it into the next chunk passes no gradient back).
    With cell="lstm" the state (h0, h_n, dh_n, dh0) is the pair (h, c) (or one (2, L, N, H) array going in).
    """

    def forward(self, x, h0=None):
        self.encoder.dims(x)
        out, h_n = self.encoder.forward(x, h0)
        return self.head.forward(out), h_n

    __call__ = forward

    def backward(self, dy, dh_n=None):
        """-> dh0 (L, N, H) (the pair (dh0, dc0) for an LSTM), the gradient reaching the initial state."""
        dout = self.head.backward(dy)
        dh0, _ = self.encoder.backward(dout, dh_n)
        return dh0

    def loss(self, x, targets, mask=None, reduction: str = "sum", h0=None, return_state: bool = False) -> tuple:
        self.encoder.dims(x)
        out, h_n = self.encoder.forward(x, h0)
        loss, dout = _head_loss_backward(self.task, self.head, out, targets, mask, reduction)
        self.encoder.backward(dout)
        return (loss, h_n) if return_state else loss

    def predict(self, x, h0=None) -> np.ndarray:
        with _inference(self):
            y, _ = self.forward(x, h0)
        return y.argmax(axis=-1) if self.task == "classification" else y


def _decode_step(decoder, head, prev, h, c):
    out, h = decoder.forward(prev[None], h, c, need_cache=False)
    return head.forward(out[0], need_cache=False), h


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class OneToMany(Module):
    """A code vector -> a token sequence. h0 (L, N, H) = Linear(code_size, L*H)(code) (an affine map); with
    cell="lstm" that is the hidden state and the cell state starts at c0 = 0. With feed_code (cell="rnn"
    only: the gated kernels have no constant input) also c = Linear(code_size, H)(code), added at every
    step of layer 0 (as image features in captioning). Teacher forcing in training: the decoder reads
    [start_token, targets[:-1]].

    forward(code (N, C), inputs (T, N) ids) -> logits (T, N, V); loss(code, targets (T, N), mask=None);
    generate(code, T, ...) -> ids (T, N).
    """

    def __init__(self, code_size, hidden_size, vocab_size, embed_size=None, num_layers=1, feed_code=False,
                 start_token=0, nonlinearity="tanh", dtype=np.float32, backend=None, seed=0, cell="rnn"):
        super().__init__()
        s = _seeds(seed, 4)
        self.cell = check_cell(cell, nonlinearity)
        if feed_code:
            _no_constant_input(self.cell, "feed_code")
        H, L = _check_size("hidden_size", hidden_size), _check_size("num_layers", num_layers)
        self.code_size, self.vocab_size = _check_size("code_size", code_size), _check_size("vocab_size", vocab_size)
        if not 0 <= start_token < vocab_size:
            raise ValueError(f"start_token must lie in [0, V) = [0, {vocab_size}), got {start_token}")
        self.start_token, self.feed_code, self.dtype = int(start_token), bool(feed_code), np.dtype(dtype)
        self.init = Linear(self.code_size, L * H, dtype=dtype, seed=s[0])
        if feed_code:
            self.code_in = Linear(self.code_size, H, dtype=dtype, seed=s[1])
        self.decoder = _SeqInput(H, L, None, vocab_size, embed_size, nonlinearity, dtype, backend, s[2],
                                 cell=self.cell)
        self.head = Linear(H, self.vocab_size, dtype=dtype, seed=s[3])

    def _start(self, code, need_cache=None):
        code = np.asarray(code) if not hasattr(code, "shape") else code
        if code.ndim != 2 or code.shape[1] != self.code_size:
            raise ValueError(f"code must have shape (N, C) with C = {self.code_size}, got {tuple(code.shape)}")
        if code.shape[0] == 0:
            raise ValueError("empty batch: code has N = 0 rows")
        N, L, H = code.shape[0], self.decoder.num_layers, self.decoder.hidden_size
        h0 = np.ascontiguousarray(self.init.forward(code, need_cache).reshape(N, L, H).transpose(1, 0, 2))
        if self.cell == "lstm":
            h0 = (h0, np.zeros_like(h0))                # the code sets h0; the cell state starts at zero
        c = self.code_in.forward(code, need_cache) if self.feed_code else None
        return h0, c

    def forward(self, code, inputs):
        h0, c = self._start(code)
        T, N = self.decoder.dims(inputs)
        if N != code.shape[0]:
            raise ValueError(f"inputs must have shape (T, N) with N = {code.shape[0]} (code's rows), got "
                             f"{tuple(np.shape(inputs))}")
        out, _ = self.decoder.forward(inputs, h0, c)
        return self.head.forward(out)

    __call__ = forward

    def backward(self, dlogits):
        self._backward_decoder(self.head.backward(dlogits))

    def _backward_decoder(self, dout):
        dh0, dc = self.decoder.backward(dout)
        if self.cell == "lstm":
            dh0 = dh0[0]                                # c0 = 0 is a constant: its gradient goes nowhere
        L, N, H = dh0.shape
        self.init.backward(np.ascontiguousarray(dh0.transpose(1, 0, 2)).reshape(N, L * H))
        if self.feed_code:
            self.code_in.backward(dc)

    def teacher_inputs(self, targets, mask=None):
        """[start_token, targets[:-1]]; masked (padding) targets are replaced by start_token."""
        targets = np.asarray(targets)
        if targets.ndim != 2:
            raise ValueError(f"targets must have shape (T, N), got {targets.shape}")
        t = targets if mask is None else np.where(_mask("mask", mask, targets.shape) != 0, targets,
                                                  self.start_token)
        return np.concatenate([np.full((1, t.shape[1]), self.start_token, dtype=t.dtype), t[:-1]], axis=0)

    def loss(self, code, targets, mask=None, reduction: str = "sum") -> tuple:
        inputs = self.teacher_inputs(targets, mask)
        h0, c = self._start(code)
        _, N = self.decoder.dims(inputs)
        if N != code.shape[0]:
            raise ValueError(f"inputs must have shape (T, N) with N = {code.shape[0]} (code's rows), got "
                             f"{tuple(np.shape(inputs))}")
        out, _ = self.decoder.forward(inputs, h0, c)
        loss, dout = linear_cross_entropy(self.head, out, _ids_array(targets), mask=mask, reduction=reduction)
        self._backward_decoder(dout)
        return loss

    def generate(self, code, T: int, method: str = "greedy", temperature: float = 1.0, top_k: Optional[int] = None,
                 seed: Optional[int] = None, end_token: Optional[int] = None,
                 native: Optional[bool] = None) -> np.ndarray:
        """Generate T tokens per code row, feeding each back; after end_token (if given) the rest is
        end_token. method "greedy" or "sample" (temperature > 0, top_k >= 1 or None; reproducible with seed).

        native (None = where available): one native call decodes the whole batch (rnnfast._decode). Its
        random stream is a counter-based hash of (seed, row, step), not NumPy's: a seed gives the same ids on
        every run, batch composition and thread count, but not the ids of the Python per-step loop
        (native=False, the reference, which draws from np.random.default_rng(seed)). Greedy decoding gives
        the same ids either way."""
        T = _check_size("T", T, 0)
        top_k = _decode.check_sampling(method, temperature, top_k)
        end = _decode.check_token("end_token", end_token, self.vocab_size)
        if not _decode.use_native(native, self.decoder.rnn):
            return self._generate_python(code, T, method, temperature, top_k or None, seed,
                                         None if end < 0 else end)
        with _inference(self):
            h, c = self._start(code, need_cache=False)
        N = _hidden(h).shape[1]
        embed = self.decoder.embed.params["weight"] if self.decoder.kind == "embed" else None
        ids, _ = _decode.sample(self.decoder.rnn, self.head, embed, np.full(N, self.start_token), h, c, T, method,
                                temperature, min(top_k, self.vocab_size), _decode.seed64(seed),
                                end_token=end, pad_token=max(end, 0))
        return ids

    def _generate_python(self, code, T, method="greedy", temperature=1.0, top_k=None, seed=None, end_token=None):
        """The reference: one layer forward, head and NumPy sampler per step."""
        from .train import sample_logits
        rng = np.random.default_rng(seed)
        with _inference(self):
            h, c = self._start(code, need_cache=False)
            N = _hidden(h).shape[1]
            ids = np.empty((T, N), dtype=np.int64)
            prev = np.full(N, self.start_token, dtype=np.int64)
            done = np.zeros(N, dtype=bool)
            for t in range(T):
                logits, h = _decode_step(self.decoder, self.head, prev, h, c)
                tok = sample_logits(logits, method, temperature, top_k, rng)
                if end_token is not None:
                    tok = np.where(done, end_token, tok)
                    done |= tok == end_token
                ids[t] = prev = tok
        return ids


class Seq2Seq(Module):
    """Sequence to sequence: an encoder (many-to-one) over source ids and a decoder (one-to-many) started
    from its final state; source and target vocabularies differ.

    The context is every encoder layer's state at each sequence's last valid step, (L, N, H); the decoder
    starts from h0 = context and, with feed_context (cell="rnn" only), also gets c = Linear(H, H)(context[L-1])
    at every step. With cell="lstm" the context is the pair (h, c) of every layer's hidden and cell state,
    each at its sequence's last valid step, and the decoder starts from both; with cell="gru" it is h.
    Training is teacher-forced (decoder inputs [start_token, tgt[:-1]]); generate decodes greedily or with
    beam search. Parameter names: encoder.rnn_l{k}.* (cell="rnn": one single-layer RNN per layer) or
    encoder.rnn.* (gated cells: one stacked layer run with the source lengths), decoder.rnn.*,
    [encoder|decoder].embed.weight, context.*, head.*.
    """

    def __init__(self, src_vocab, tgt_vocab, hidden_size, num_layers=1, src_embed=None, tgt_embed=None,
                 feed_context=False, start_token=0, end_token=1, nonlinearity="tanh", dtype=np.float32,
                 backend=None, seed=0, cell="rnn"):
        super().__init__()
        s = _seeds(seed, 4)
        self.cell = check_cell(cell, nonlinearity)
        if feed_context:
            _no_constant_input(self.cell, "feed_context")
        H, L = _check_size("hidden_size", hidden_size), _check_size("num_layers", num_layers)
        self.tgt_vocab = _check_size("tgt_vocab", tgt_vocab)
        for name, v in (("start_token", start_token), ("end_token", end_token)):
            if not 0 <= v < tgt_vocab:
                raise ValueError(f"{name} must lie in [0, V_tgt) = [0, {tgt_vocab}), got {v}")
        self.start_token, self.end_token = int(start_token), int(end_token)
        self.feed_context, self.dtype = bool(feed_context), np.dtype(dtype)
        self.encoder = _SeqInput(H, L, None, src_vocab, src_embed, nonlinearity, dtype, backend, s[0],
                                 layerwise=True, cell=self.cell)
        if feed_context:
            self.context = Linear(H, H, dtype=dtype, seed=s[1])
        self.decoder = _SeqInput(H, L, None, tgt_vocab, tgt_embed, nonlinearity, dtype, backend, s[2],
                                 cell=self.cell)
        self.head = Linear(H, self.tgt_vocab, dtype=dtype, seed=s[3])

    def encode(self, src, src_lengths=None, need_cache=None):
        """-> (context (L, N, H) (the pair (h, c) for an LSTM), c (N, H) or None)."""
        T, N = self.encoder.dims(src)
        lengths = _check_lengths(src_lengths, T, N)
        if self.cell != "rnn":                         # the gated layer stops each sequence at its length
            _, ctx = self.encoder.forward(src, need_cache=need_cache, lengths=lengths)
            self._enc = (lengths, T, N)
            return ctx, None
        self.encoder.forward(src, need_cache=need_cache)
        idx = (lengths - 1, np.arange(N))
        ctx = np.ascontiguousarray(np.stack([o[idx] for o in self.encoder.layer_outputs]))
        self._enc = (lengths, T, N)
        c = self.context.forward(ctx[-1], need_cache) if self.feed_context else None
        return ctx, c

    def forward(self, src, tgt_in, src_lengths=None):
        ctx, c = self.encode(src, src_lengths)
        T, N = self.decoder.dims(tgt_in)
        if N != _hidden(ctx).shape[1]:
            raise ValueError(f"tgt_in must have shape (T, N) with N = {_hidden(ctx).shape[1]} (the source batch), "
                             f"got {tuple(np.shape(tgt_in))}")
        out, _ = self.decoder.forward(tgt_in, ctx, c)
        return self.head.forward(out)

    __call__ = forward

    def backward(self, dlogits):
        self._backward_from_decoder(self.head.backward(dlogits))

    def _backward_from_decoder(self, dout):
        dctx, dc = self.decoder.backward(dout)          # into the context (the decoder's h0) and c
        if self.cell != "rnn":                          # the layer routes it to each sequence's last step
            self.encoder.backward(None, dctx)
            return
        if self.feed_context:
            dctx[-1] += self.context.backward(dc)
        lengths, T, N = self._enc
        H = dctx.shape[2]
        dlayers = []
        for k in range(dctx.shape[0]):                  # each layer's state was read at its last valid step
            d = np.zeros((T, N, H), dtype=dctx.dtype)
            d[lengths - 1, np.arange(N)] = dctx[k]
            dlayers.append(d)
        self.encoder.backward(None, None, dlayers)

    def teacher_inputs(self, tgt, mask=None):
        tgt = np.asarray(tgt)
        if tgt.ndim != 2:
            raise ValueError(f"tgt must have shape (T, N), got {tgt.shape}")
        t = tgt if mask is None else np.where(_mask("tgt_mask", mask, tgt.shape) != 0, tgt, self.end_token)
        return np.concatenate([np.full((1, t.shape[1]), self.start_token, dtype=t.dtype), t[:-1]], axis=0)

    def loss(self, src, tgt, src_lengths=None, tgt_mask=None, reduction: str = "sum") -> tuple:
        tgt_in = self.teacher_inputs(tgt, tgt_mask)
        ctx, c = self.encode(src, src_lengths)
        _, N = self.decoder.dims(tgt_in)
        if N != _hidden(ctx).shape[1]:
            raise ValueError(f"tgt_in must have shape (T, N) with N = {_hidden(ctx).shape[1]} (the source batch), "
                             f"got {tuple(np.shape(tgt_in))}")
        out, _ = self.decoder.forward(tgt_in, ctx, c)
        loss, dout = linear_cross_entropy(self.head, out, _ids_array(tgt), mask=tgt_mask, reduction=reduction)
        self._backward_from_decoder(dout)
        return loss

    def sequence_log_prob(self, src, tgt, src_lengths=None):
        """log p(tgt | src) per sequence (N,), summed up to and including the first end_token."""
        with _inference(self):
            logits = self.forward(src, self.teacher_inputs(tgt), src_lengths)
        lp = np.take_along_axis(_log_softmax(logits), np.asarray(tgt)[..., None], axis=-1)[..., 0]
        is_end = np.asarray(tgt) == self.end_token
        after = np.cumsum(is_end, axis=0) - is_end > 0    # steps strictly after the first end
        return np.where(after, 0.0, lp).sum(axis=0)

    def generate(self, src, max_len: int, src_lengths=None, method: str = "greedy", beam_size: int = 4,
                 return_scores: bool = False, native: Optional[bool] = None):
        """Decode up to max_len tokens -> ids (max_len, N) (after end_token the rest is end_token), and with
        return_scores also each sequence's log-probability. method "greedy" or "beam" (beam_size beams per
        source; the highest total log-probability wins, ties to the earlier beam; no length normalisation).
        native (None = where available): the whole search in one native call, same ids and scores (to
        float64 rounding) as the Python loop (native=False, the reference)."""
        max_len = _check_size("max_len", max_len, 1)
        if method not in ("greedy", "beam"):
            raise ValueError(f"method must be 'greedy' or 'beam', got {method!r}")
        K = 1 if method == "greedy" else _check_size("beam_size", beam_size)
        fast = _decode.use_native(native, self.decoder.rnn)
        with _inference(self):
            ctx, c = self.encode(src, src_lengths, need_cache=False)
            if fast:
                embed = self.decoder.embed.params["weight"] if self.decoder.kind == "embed" else None
                ids, scores = _decode.beam(self.decoder.rnn, self.head, embed, ctx, c, self.start_token,
                                           self.end_token, max_len, K)
            else:
                ids, scores = self._beam(ctx, c, max_len, K)
        return (ids, scores) if return_scores else ids

    def _beam(self, ctx, c, max_len, K):
        L, N, H = _hidden(ctx).shape
        V, end = self.tgt_vocab, self.end_token
        h = _smap(lambda a: np.repeat(a, K, axis=1), ctx)   # (L, N*K, H): beam k of source n is row n*K + k
        cb = None if c is None else np.repeat(c, K, axis=0)
        scores = np.full((N, K), -np.inf)
        scores[:, 0] = 0.0                              # one live beam at the start
        toks = np.full((max_len, N, K), end, dtype=np.int64)
        done = np.zeros((N, K), dtype=bool)
        prev = np.full(N * K, self.start_token, dtype=np.int64)
        rows = np.arange(N)[:, None]
        for t in range(max_len):
            logits, h = _decode_step(self.decoder, self.head, prev, h, cb)
            lp = _log_softmax(logits.astype(np.float64)).reshape(N, K, V)
            lp[done] = -np.inf                          # a finished beam only continues with end, at no cost
            lp[done, end] = 0.0
            cand = (scores[:, :, None] + lp).reshape(N, K * V)
            top = np.argsort(-cand, axis=1, kind="stable")[:, :K]
            beam, tok = top // V, top % V
            scores = np.take_along_axis(cand, top, axis=1)
            toks = toks[:, rows, beam]
            toks[t] = tok
            done = done[rows, beam] | (tok == end)
            h = _smap(lambda a: np.ascontiguousarray(a.reshape(L, N, K, H)[:, rows, beam].reshape(L, N * K, H)), h)
            prev = tok.reshape(-1)
            if done.all():
                break
        return toks[:, :, 0], scores[:, 0]
