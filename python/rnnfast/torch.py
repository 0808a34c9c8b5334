"""A drop-in for torch.nn.RNN running on rnnfast's kernels, and convert() to swap it into existing models.

What it is: `RNN`, a subclass of torch.nn.RNN (same constructor, initialisation, parameter names, state
dict and forward signature) whose forward goes through a torch.autograd.Function that calls
rnnfast.functional on CPU tensors shared with NumPy without copies. What it is not: LSTM/GRU (rnnfast has
no gated kernels yet; nn.LSTM and nn.GRU are left untouched by convert()), PackedSequence input, or CUDA.
torch is imported here, never by `import rnnfast`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

from . import functional as _F

__all__ = ["RNN", "convert"]

_DTYPES = (torch.float32, torch.float64)


def _np(t):
    """A NumPy view of a CPU tensor (a contiguous copy first only when it is not contiguous)."""
    return None if t is None else t.detach().contiguous().numpy()


def _layers(flat, num_layers, has_bias):
    """Torch's flat weight list -> rnnfast's list of L tuples (W_ih, W_hh, b_ih, b_hh) of NumPy views."""
    per = 4 if has_bias else 2
    out = []
    for k in range(num_layers):
        w = [_np(t) for t in flat[k * per:(k + 1) * per]]
        out.append(tuple(w) if has_bias else (w[0], w[1], None, None))
    return out


class _RNNFunction(torch.autograd.Function):
    """A stack of `num_layers` same-direction layers: x (T, N, D), h0 (L, N, H) -> out (T, N, H), h_n."""

    @staticmethod
    def forward(ctx, nonlinearity, num_layers, has_bias, x, h0, *flat):
        weights = _layers(flat, num_layers, has_bias)
        out, h_n, cache = _F.rnn_forward(_np(x), _np(h0), weights, None, nonlinearity, need_cache=True)
        ctx.cache, ctx.has_bias = cache, has_bias
        ctx.save_for_backward(x, h0, *flat)     # for torch's in-place modification check only
        ctx.set_materialize_grads(False)
        return torch.from_numpy(out), torch.from_numpy(h_n)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dh_n):
        ctx.saved_tensors                      # raises if an input was modified in place after forward
        cache = ctx.cache
        grads = [tuple(None if w is None else np.zeros_like(w) for w in layer) for layer in cache.weights]
        dx, dh0, _ = _F.rnn_backward(_np(dout), _np(dh_n), cache, grads)
        flat_grads = []
        for layer in grads:
            flat_grads += [torch.from_numpy(g) for g in (layer if ctx.has_bias else layer[:2])]
        return (None, None, None, torch.from_numpy(dx), torch.from_numpy(dh0), *flat_grads)


def _run(nonlinearity, num_layers, has_bias, x, h0, flat):
    """Autograd-tracked when a gradient is wanted, a plain cache-free kernel call otherwise."""
    if torch.is_grad_enabled() and (x.requires_grad or h0.requires_grad or any(w.requires_grad for w in flat)):
        return _RNNFunction.apply(nonlinearity, num_layers, has_bias, x, h0, *flat)
    out, h_n, _ = _F.rnn_forward(_np(x), _np(h0), _layers(flat, num_layers, has_bias), None, nonlinearity,
                                 need_cache=False)
    return torch.from_numpy(out), torch.from_numpy(h_n)


class RNN(nn.RNN):
    """torch.nn.RNN with the recurrence computed by rnnfast (CPU, float32/float64).

    Constructor, parameters (weight_ih_l{k}[_reverse], ...), initialisation and forward(input, hx=None) ->
    (output, h_n) are torch.nn.RNN's, including batch_first, num_layers, bias, nonlinearity, bidirectional,
    unbatched 2-D input, and dropout on the outputs of every layer but the last in training mode. A
    bidirectional layer runs its reverse direction on the time-reversed input with the `_reverse`
    parameters; outputs are concatenated [forward, reverse] along the feature axis, as torch does.
    """

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            raise TypeError("rnnfast.torch.RNN does not take a PackedSequence yet: unpack it with "
                            "torch.nn.utils.rnn.pad_packed_sequence and pass the padded tensor (variable "
                            "lengths are planned as a `lengths` argument)")
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        self._update_flat_weights()
        if input.device.type != "cpu" or any(w.device.type != "cpu" for w in self._flat_weights):
            raise RuntimeError(f"rnnfast.torch.RNN runs on CPU tensors; got input on {input.device}. rnnfast "
                               "has no CUDA backend for torch tensors yet: use torch.nn.RNN on the GPU")
        if input.dtype not in _DTYPES:
            raise TypeError(f"input must have dtype torch.float32 or torch.float64, got {input.dtype}")
        dirs = 2 if self.bidirectional else 1
        if input.dim() not in (2, 3):
            raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            if hx is not None and hx.dim() != 2:
                raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
            input = input.unsqueeze(batch_dim)
            hx = hx.unsqueeze(1) if hx is not None else None
        elif hx is not None and hx.dim() != 3:
            raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
        N = input.size(0) if self.batch_first else input.size(1)
        if hx is None:
            hx = torch.zeros(self.num_layers * dirs, N, self.hidden_size, dtype=input.dtype)
        elif hx.dtype != input.dtype:
            raise TypeError(f"hx must have the dtype of input ({input.dtype}), got {hx.dtype}")
        self.check_forward_args(input, hx, None)

        x = (input.transpose(0, 1) if self.batch_first else input).contiguous()   # (T, N, D)
        hx = hx.contiguous()
        act = self.nonlinearity
        flat = self._flat_weights
        per = 4 if self.bias else 2
        use_dropout = self.dropout > 0 and self.training and self.num_layers > 1
        if dirs == 1 and not use_dropout:
            output, h_n = _run(act, self.num_layers, self.bias, x, hx, flat)   # the whole stack in one call
        else:
            layer_input, finals = x, []
            for k in range(self.num_layers):
                outs = []
                for d in range(dirs):
                    idx = k * dirs + d
                    w = flat[idx * per:(idx + 1) * per]
                    inp = layer_input if d == 0 else layer_input.flip(0)
                    o, h = _run(act, 1, self.bias, inp, hx[idx:idx + 1], w)
                    outs.append(o if d == 0 else o.flip(0))
                    finals.append(h)
                layer_input = torch.cat(outs, 2) if dirs == 2 else outs[0]
                if use_dropout and k < self.num_layers - 1:
                    layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
            output, h_n = layer_input, torch.cat(finals, 0)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            output = output.squeeze(batch_dim)
            h_n = h_n.squeeze(1)
        return output, h_n


def _from_torch(m):
    """An rnnfast RNN holding the very Parameter objects of the nn.RNN `m` (optimizers stay valid)."""
    new = RNN(m.input_size, m.hidden_size, num_layers=m.num_layers, nonlinearity=m.nonlinearity, bias=m.bias,
              batch_first=m.batch_first, dropout=m.dropout, bidirectional=m.bidirectional, device="meta",
              dtype=m.weight_ih_l0.dtype)   # "meta": no memory, no draws from torch's random generator
    for name in m._flat_weights_names:
        setattr(new, name, getattr(m, name))
    new._init_flat_weights()
    new.train(m.training)
    return new


def convert(model):
    """Replace every torch.nn.RNN inside `model` (and `model` itself) by rnnfast.torch.RNN, in place.

    The replacement shares the original Parameter objects, so weights, devices and optimizers built on
    model.parameters() carry over. Only modules whose type is exactly torch.nn.RNN are replaced (a user
    subclass may override forward); nn.LSTM and nn.GRU stay as they are, as rnnfast has no gated kernels yet.
    Returns the model (the new module when `model` is itself an nn.RNN).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if type(model) is nn.RNN:
        return _from_torch(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.RNN:
            setattr(model, name, _from_torch(child))
        else:
            convert(child)
    return model
