"""Drop-ins for torch.nn.RNN / LSTM / GRU running on rnnfast's kernels, and convert() to swap them into models.

What it is: `RNN`, `LSTM`, `GRU`, subclasses of torch.nn.RNN / LSTM / GRU (same constructor, initialisation,
parameter names, state dict and forward signature, PackedSequence input included) whose forward goes through
a torch.autograd.Function that calls rnnfast.functional on CPU tensors shared with NumPy without copies.
What it is not: CUDA tensors (torch's own modules serve the GPU), LSTM projections (proj_size > 0) or double
backward.
torch is imported here, never by `import rnnfast`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

from . import functional as _F

__all__ = ["RNN", "LSTM", "GRU", "convert"]

_DTYPES = (torch.float32, torch.float64)
_NSTATES = {"rnn": 1, "lstm": 2, "gru": 1}


def _np(t):
    """A NumPy view of a CPU tensor (a contiguous copy first only when it is not contiguous)."""
    return None if t is None else t.detach().contiguous().numpy()


def _layers(flat, groups, has_bias):
    """Torch's flat weight list -> rnnfast's list of `groups` tuples (W_ih, W_hh, b_ih, b_hh) of NumPy views
    (one per layer and direction, torch's order l0, l0_reverse, l1, ...)."""
    per = 4 if has_bias else 2
    out = []
    for k in range(groups):
        w = [_np(t) for t in flat[k * per:(k + 1) * per]]
        out.append(tuple(w) if has_bias else (w[0], w[1], None, None))
    return out


def _kernel_forward(cell, nonlinearity, weights, x, states, lengths, bidirectional, need_cache):
    """rnnfast.functional's forward of `cell` on NumPy views -> (out, finals tuple, cache or None)."""
    s = [_np(t) for t in states]
    if cell == "rnn":
        out, h_n, cache = _F.rnn_forward(_np(x), s[0], weights, None, nonlinearity, need_cache, lengths=lengths,
                                         bidirectional=bidirectional)
        return out, (h_n,), cache
    if cell == "lstm":
        out, h_n, c_n, cache = _F.lstm_forward(_np(x), s[0], s[1], weights, need_cache, lengths=lengths,
                                               bidirectional=bidirectional)
        return out, (h_n, c_n), cache
    out, h_n, cache = _F.gru_forward(_np(x), s[0], weights, need_cache, lengths=lengths, bidirectional=bidirectional)
    return out, (h_n,), cache


def _kernel_backward(cell, dout, dfinals, cache, grads):
    """-> (dx, dstates tuple); parameter gradients accumulate into `grads`."""
    if cell == "rnn":
        dx, dh0, _ = _F.rnn_backward(dout, dfinals[0], cache, grads)
        return dx, (dh0,)
    if cell == "lstm":
        dx, dh0, dc0 = _F.lstm_backward(dout, dfinals[0], dfinals[1], cache, grads)
        return dx, (dh0, dc0)
    dx, dh0 = _F.gru_backward(dout, dfinals[0], cache, grads)
    return dx, (dh0,)


class _StackFunction(torch.autograd.Function):
    """`groups` layer-directions of one cell: x (T, N, D), the initial states (h0,) or (h0, c0), each
    (groups, N, H) -> out (T, N, dirs*H) and the final states; lengths (N,) or None."""

    @staticmethod
    def forward(ctx, cell, nonlinearity, groups, bidirectional, has_bias, lengths, x, *rest):
        ns = _NSTATES[cell]
        states, flat = rest[:ns], rest[ns:]
        weights = _layers(flat, groups, has_bias)
        out, finals, cache = _kernel_forward(cell, nonlinearity, weights, x, states, lengths, bidirectional, True)
        ctx.cell, ctx.cache, ctx.weights, ctx.has_bias = cell, cache, weights, has_bias
        ctx.save_for_backward(x, *states, *flat)     # for torch's in-place modification check only
        ctx.set_materialize_grads(False)
        return (torch.from_numpy(out), *(torch.from_numpy(f) for f in finals))

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, *dfinals):
        ctx.saved_tensors                      # raises if an input was modified in place after forward
        grads = [tuple(None if w is None else np.zeros_like(w) for w in layer) for layer in ctx.weights]
        dx, dstates = _kernel_backward(ctx.cell, _np(dout), [_np(d) for d in dfinals], ctx.cache, grads)
        flat_grads = []
        for layer in grads:
            flat_grads += [torch.from_numpy(g) for g in (layer if ctx.has_bias else layer[:2])]
        return (None,) * 6 + (torch.from_numpy(dx), *(torch.from_numpy(d) for d in dstates), *flat_grads)


def _run(cell, nonlinearity, groups, bidirectional, has_bias, lengths, x, states, flat):
    """Autograd-tracked when a gradient is wanted, a plain cache-free kernel call otherwise.
    Returns (out, finals tuple)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, *states, *flat)):
        res = _StackFunction.apply(cell, nonlinearity, groups, bidirectional, has_bias, lengths, x, *states, *flat)
        return res[0], tuple(res[1:])
    out, finals, _ = _kernel_forward(cell, nonlinearity, _layers(flat, groups, has_bias), x, states, lengths,
                                     bidirectional, False)
    return torch.from_numpy(out), tuple(torch.from_numpy(f) for f in finals)


def _packed_layout(packed):
    """For a PackedSequence of N sequences and T = max length: (index, lengths) where row i of packed.data is
    row index[i] of the time-major padded (T*N, F) tensor in the caller's batch order (torch's
    unsorted order), and lengths (N,) int64 is each sequence's length in that order."""
    bs = packed.batch_sizes.cpu()
    N = int(bs[0])
    order = torch.arange(N) if packed.sorted_indices is None else packed.sorted_indices.cpu()
    valid = torch.arange(N)[None, :] < bs[:, None]            # (T, N_sorted), row-major = packed order
    t, j = valid.nonzero(as_tuple=True)
    lengths = np.empty(N, dtype=np.int64)
    lengths[order.numpy()] = valid.sum(0).numpy()
    return t * N + order[j], lengths


def _packed_dropout(y, p, index):
    """Dropout on the packed rows of a padded (T, N, F) tensor, in packed order: the same draws torch makes
    on the packed data between layers."""
    T, N, F = y.shape
    rows = y.reshape(T * N, F)
    data = nn.functional.dropout(rows.index_select(0, index), p, training=True)
    return torch.zeros_like(rows).index_copy(0, index, data).reshape(T, N, F)


class _DropIn:
    """The forward shared by RNN, LSTM and GRU (a mixin placed before the torch class)."""

    _cell = "rnn"
    _torch_name = "RNN"

    def forward(self, input, hx=None):
        cell, name = self._cell, self._torch_name
        lstm = cell == "lstm"
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor or a PackedSequence, got {type(input).__name__}")
        self._update_flat_weights()
        if data.device.type != "cpu" or any(w.device.type != "cpu" for w in self._flat_weights):
            why = "it does not take CUDA tensors" if cell == "rnn" else f"rnnfast has no CUDA {name} kernels"
            raise RuntimeError(f"rnnfast.torch.{name} runs on CPU tensors; got input on {data.device}, and "
                               f"{why}: use torch.nn.{name} on the GPU")
        if data.dtype not in _DTYPES:
            raise TypeError(f"input must have dtype torch.float32 or torch.float64, got {data.dtype}")
        if lstm and hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2
                                            and all(isinstance(h, torch.Tensor) for h in hx)):
            raise TypeError(f"hx must be a tuple (h_0, c_0) of two tensors for LSTM, got {type(hx).__name__}")
        dirs = 2 if self.bidirectional else 1
        batched = True
        index = lengths = None
        if packed:
            index, lengths = _packed_layout(input)
            T, N = input.batch_sizes.numel(), lengths.size
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
            batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if hx is not None:
                want = 3 if batched else 2
                dims = [h.dim() for h in (hx if lstm else (hx,))]
                if any(d != want for d in dims):
                    kind = "batched 3-D" if batched else "unbatched 2-D"
                    what = "hx and cx" if lstm else "hx"
                    got = "(" + ", ".join(f"{d}-D" for d in dims) + ") tensors" if lstm else f"{dims[0]}-D tensor"
                    raise RuntimeError(f"For {kind} input, {what} should also be {want}-D but got {got}")
            if not batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    hx = tuple(h.unsqueeze(1) for h in hx) if lstm else hx.unsqueeze(1)
            N = input.size(0) if self.batch_first else input.size(1)
        if hx is None:
            states = tuple(torch.zeros(self.num_layers * dirs, N, self.hidden_size, dtype=data.dtype)
                           for _ in range(_NSTATES[cell]))
        else:
            states = tuple(hx) if lstm else (hx,)
        for sname, s in zip(("hx", "cx") if lstm else ("hx",), states):
            if s.dtype != data.dtype:
                raise TypeError(f"{sname} must have the dtype of input ({data.dtype}), got {s.dtype}")
            if s.device.type != "cpu":
                raise RuntimeError(f"rnnfast.torch.{name} runs on CPU tensors; got {sname} on {s.device}")
        if packed:     # torch's own checks, on the packed data; hx is in the caller's batch order
            self.check_forward_args(data, states if lstm else states[0], input.batch_sizes)
            D = data.size(-1)
            x = torch.zeros(T * N, D, dtype=data.dtype).index_copy(0, index, data).reshape(T, N, D)
            if (lengths == T).all():
                lengths = None                 # nothing ragged: the kernels' plain path
        else:
            self.check_forward_args(input, states if lstm else states[0], None)
            x = (input.transpose(0, 1) if self.batch_first else input).contiguous()   # (T, N, D)
        states = tuple(s.contiguous() for s in states)

        act = getattr(self, "nonlinearity", "tanh")
        flat = self._flat_weights
        L = self.num_layers
        use_dropout = self.dropout > 0 and self.training and L > 1
        if not use_dropout:
            output, finals = _run(cell, act, L * dirs, dirs == 2, self.bias, lengths, x, states, flat)
        else:
            per = (4 if self.bias else 2) * dirs
            layer_input, acc = x, [[] for _ in states]
            for k in range(L):
                st = tuple(s[k * dirs:(k + 1) * dirs] for s in states)
                layer_input, fin = _run(cell, act, dirs, dirs == 2, self.bias, lengths, layer_input, st,
                                        flat[k * per:(k + 1) * per])
                for a, f in zip(acc, fin):
                    a.append(f)
                if k < L - 1:
                    layer_input = (nn.functional.dropout(layer_input, self.dropout, training=True) if index is None
                                   else _packed_dropout(layer_input, self.dropout, index))
            output, finals = layer_input, tuple(torch.cat(a, 0) for a in acc)

        if packed:
            T, N, F = output.shape
            output = PackedSequence(output.reshape(T * N, F).index_select(0, index), input.batch_sizes,
                                    input.sorted_indices, input.unsorted_indices)
        else:
            if self.batch_first:
                output = output.transpose(0, 1)
            if not batched:
                output = output.squeeze(batch_dim)
                finals = tuple(f.squeeze(1) for f in finals)
        return output, (finals if lstm else finals[0])


class RNN(_DropIn, nn.RNN):
    """torch.nn.RNN with the recurrence computed by rnnfast (CPU, float32/float64).

    Constructor, parameters (weight_ih_l{k}[_reverse], ...), initialisation and forward(input, hx=None) ->
    (output, h_n) are torch.nn.RNN's, including batch_first, num_layers, bias, nonlinearity, bidirectional,
    unbatched 2-D input, PackedSequence input (run through the kernels' `lengths`; sorted or not), and
    dropout on the outputs of every layer but the last in training mode. A bidirectional layer's reverse
    direction starts at each sequence's own last step; outputs are concatenated [forward, reverse] along the
    feature axis, as torch does.
    """

    _cell = "rnn"
    _torch_name = "RNN"


class LSTM(_DropIn, nn.LSTM):
    """torch.nn.LSTM with the recurrence computed by rnnfast (CPU, float32/float64).

    Constructor, parameters (gates i, f, g, o stacked in weight_ih_l{k} (4H, D_k), ...), initialisation and
    forward(input, (h_0, c_0)=None) -> (output, (h_n, c_n)) are torch.nn.LSTM's, with the options of RNN above.
    proj_size > 0 (torch's LSTM with projections) is refused: use torch.nn.LSTM for it.
    """

    _cell = "lstm"
    _torch_name = "LSTM"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.proj_size != 0:
            raise ValueError(f"rnnfast.torch.LSTM does not support proj_size != 0 (got {self.proj_size}): "
                             "rnnfast has no LSTM-with-projections kernel; use torch.nn.LSTM for it")


class GRU(_DropIn, nn.GRU):
    """torch.nn.GRU with the recurrence computed by rnnfast (CPU, float32/float64).

    Constructor, parameters (gates r, z, n stacked in weight_ih_l{k} (3H, D_k), ...; the reset gate applied to
    W_hn h + b_hn as torch does), initialisation and forward(input, hx=None) -> (output, h_n) are
    torch.nn.GRU's, with the options of RNN above.
    """

    _cell = "gru"
    _torch_name = "GRU"


_REPLACEMENTS = {nn.RNN: RNN, nn.LSTM: LSTM, nn.GRU: GRU}


def _convertible(m):
    return type(m) in _REPLACEMENTS and getattr(m, "proj_size", 0) == 0


def _from_torch(m):
    """An rnnfast module holding the very Parameter objects of the torch module `m` (optimizers stay valid)."""
    kw = dict(num_layers=m.num_layers, bias=m.bias, batch_first=m.batch_first, dropout=m.dropout,
              bidirectional=m.bidirectional, device="meta",   # "meta": no memory, no draws from torch's RNG
              dtype=m.weight_ih_l0.dtype)
    if type(m) is nn.RNN:
        kw["nonlinearity"] = m.nonlinearity
    new = _REPLACEMENTS[type(m)](m.input_size, m.hidden_size, **kw)
    for name in m._flat_weights_names:
        setattr(new, name, getattr(m, name))
    new._init_flat_weights()
    new.train(m.training)
    return new


def convert(model):
    """Replace every torch.nn.RNN / LSTM / GRU inside `model` (and `model` itself) by rnnfast's, in place.

    The replacement shares the original Parameter objects, so weights, devices and optimizers built on
    model.parameters() carry over. Only modules whose type is exactly torch.nn.RNN, LSTM or GRU are replaced
    (a user subclass may override forward); an LSTM with proj_size > 0 stays as it is (rnnfast has no
    projection kernel). Returns the model (the new module when `model` is itself one of them).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if _convertible(model):
        return _from_torch(model)
    for name, child in list(model.named_children()):
        if _convertible(child):
            setattr(model, name, _from_torch(child))
        else:
            convert(child)
    return model
