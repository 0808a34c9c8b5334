"""Drop-ins for torch.nn.RNN / LSTM / GRU running on rnnfast's kernels, and convert() to swap them into models.

What it is: `RNN`, `LSTM`, `GRU`, subclasses of torch.nn.RNN / LSTM / GRU (same constructor, initialisation,
parameter names, state dict and forward signature, PackedSequence input included) whose forward goes through
a torch.autograd.Function that calls rnnfast.functional on CPU tensors shared with NumPy without copies.
LSTM projections (proj_size > 0) run on rnnfast's projection kernel. The backward is the kernels' unless
create_graph=True (double backward, gradient penalties) or the incoming gradients are batched
(is_grads_batched=True): those recompute the forward in differentiable torch ops (_op_stack, the same math)
and let autograd differentiate it. bfloat16/float16 inputs are computed in float32 and returned in their dtype.
torch.compile graph-breaks around the drop-in (it runs eagerly); TorchScript is refused with the reason.
What it is not: CUDA tensors (torch's own modules serve the GPU), forward-mode AD (jvp) or torch.func transforms.
torch is imported here, never by `import rnnfast`.
"""
from __future__ import annotations

import functools
import sys

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import _lstm_proj as _LP
from . import functional as _F

__all__ = ["RNN", "LSTM", "GRU", "convert"]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_HALF = (torch.bfloat16, torch.float16)      # computed in float32, returned in the input's dtype
_NSTATES = {"rnn": 1, "lstm": 2, "gru": 1, "lstmp": 2}     # lstmp: LSTM with projections (proj_size > 0)


def _np(t):
    """A NumPy view of a CPU tensor (a contiguous copy first only when it is not contiguous)."""
    return None if t is None else t.detach().contiguous().numpy()


def _per(has_bias, proj):
    """How many tensors torch's flat weight list holds per layer and direction."""
    return (4 if has_bias else 2) + (1 if proj else 0)


def _layers(flat, groups, has_bias, proj=False):
    """Torch's flat weight list -> rnnfast's list of `groups` tuples (W_ih, W_hh, b_ih, b_hh[, W_hr]) of NumPy
    views (one per layer and direction, torch's order l0, l0_reverse, l1, ...; W_hr with projections)."""
    per = _per(has_bias, proj)
    out = []
    for k in range(groups):
        w = [_np(t) for t in flat[k * per:(k + 1) * per]]
        out.append(tuple(w[:4] if has_bias else (w[0], w[1], None, None)) + ((w[-1],) if proj else ()))
    return out


def _present(layer, has_bias, proj):
    """The inverse of _layers for one tuple: the entries torch's flat list holds, in its order."""
    return tuple(layer[:4] if has_bias else layer[:2]) + ((layer[4],) if proj else ())


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
    if cell == "lstmp":
        out, h_n, c_n, cache = _LP.lstm_proj_forward(_np(x), s[0], s[1], weights, need_cache, lengths=lengths,
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
    if cell == "lstmp":
        dx, dh0, dc0 = _LP.lstm_proj_backward(dout, dfinals[0], dfinals[1], cache, grads)
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
        weights = _layers(flat, groups, has_bias, cell == "lstmp")
        out, finals, cache = _kernel_forward(cell, nonlinearity, weights, x, states, lengths, bidirectional, True)
        ctx.cell, ctx.cache, ctx.weights, ctx.has_bias = cell, cache, weights, has_bias
        ctx.nonlinearity, ctx.groups, ctx.bidirectional, ctx.lengths = nonlinearity, groups, bidirectional, lengths
        ctx.save_for_backward(x, *states, *flat)     # the in-place check, and _op_backward
        ctx.set_materialize_grads(False)
        return (torch.from_numpy(out), *(torch.from_numpy(f) for f in finals))

    @staticmethod
    def backward(ctx, dout, *dfinals):
        saved = ctx.saved_tensors              # raises if an input was modified in place after forward
        if torch.is_grad_enabled() or _batched(dout, *dfinals):
            return (None,) * 6 + _op_backward(ctx, saved, dout, dfinals)
        grads = [tuple(None if w is None else np.zeros_like(w) for w in layer) for layer in ctx.weights]
        dx, dstates = _kernel_backward(ctx.cell, _np(dout), [_np(d) for d in dfinals], ctx.cache, grads)
        flat_grads = []
        for layer in grads:
            flat_grads += [torch.from_numpy(g) for g in _present(layer, ctx.has_bias, ctx.cell == "lstmp")]
        return (None,) * 6 + (torch.from_numpy(dx), *(torch.from_numpy(d) for d in dstates), *flat_grads)


def _batched(*ts):
    """True when a gradient is a vmap BatchedTensor (torch.autograd.grad(..., is_grads_batched=True))."""
    f = torch._C._functorch
    return any(t is not None and (f.is_legacy_batchedtensor(t) or f.is_batchedtensor(t)) for t in ts)


def _op_backward(ctx, saved, dout, dfinals):
    """The backward when create_graph=True (grad mode on inside backward) or the incoming gradients are
    batched: recompute the forward in differentiable torch ops (_op_stack, the same math) and let autograd
    differentiate it, so that second derivatives (gradient penalties) and vmap over the backward are right.
    Returns the gradients of (x, *states, *flat)."""
    ns = _NSTATES[ctx.cell]
    x, states, flat = saved[0], saved[1:1 + ns], saved[1 + ns:]
    inputs = (x, *states, *flat)
    with torch.enable_grad():
        out, finals = _op_stack(ctx.cell, ctx.nonlinearity, ctx.groups, ctx.bidirectional, ctx.has_bias,
                                ctx.lengths, x, states, flat)
        pairs = [(o, g) for o, g in zip((out, *finals), (dout, *dfinals)) if g is not None]
        wanted = [t for t in inputs if t.requires_grad]
        if not pairs or not wanted:
            return (None,) * len(inputs)
        got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                       create_graph=torch.is_grad_enabled(), allow_unused=True))
    return tuple(next(got) if t.requires_grad else None for t in inputs)


def _op_step(cell, act, p, st, W_hh, b_hh, W_hr=None):
    """One step of `cell` in torch ops: p (N, G*H) the input projection with b_ih, st the states (h,) or
    (h, c), each (N, H) (h (N, P) with projections W_hr (P, H)) -> the new states."""
    h = st[0]
    r = nn.functional.linear(h, W_hh, b_hh)
    if cell == "rnn":
        z = p + r
        return (torch.tanh(z) if act == "tanh" else torch.relu(z),)
    if cell in ("lstm", "lstmp"):
        i, f, g, o = (p + r).chunk(4, -1)
        c = torch.sigmoid(f) * st[1] + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h if W_hr is None else nn.functional.linear(h, W_hr)), c
    pr, pz, pn = p.chunk(3, -1)
    rr, rz, rn = r.chunk(3, -1)
    reset, update = torch.sigmoid(pr + rr), torch.sigmoid(pz + rz)
    n = torch.tanh(pn + reset * rn)
    return ((1 - update) * n + update * h,)


def _op_stack(cell, act, groups, bidirectional, has_bias, lengths, x, states, flat):
    """_StackFunction's forward in differentiable torch ops (per step, readable; the kernels' math): x (T, N, D),
    states each (groups, N, H), lengths (N,) or None -> (out (T, N, dirs*H), finals tuple). A step past a
    sequence's length keeps the state and outputs zero; the reverse direction runs from each sequence's last
    valid step, as the kernels and torch do."""
    T = x.shape[0]
    dirs = 2 if bidirectional else 1
    proj = cell == "lstmp"
    per = _per(has_bias, proj)
    valid = None
    if lengths is not None:
        valid = (torch.arange(T)[:, None] < torch.as_tensor(lengths)[None, :]).unsqueeze(-1)   # (T, N, 1)
    inp, finals = x, [[] for _ in states]
    for k in range(groups // dirs):
        outs = []
        for d in range(dirs):
            i = k * dirs + d
            w = flat[i * per:(i + 1) * per]
            b_ih, b_hh = (w[2], w[3]) if has_bias else (None, None)
            P = nn.functional.linear(inp, w[0], b_ih)          # (T, N, G*H): the input projection
            st, ys = tuple(s[i] for s in states), [None] * T
            for t in (range(T) if d == 0 else reversed(range(T))):
                new = _op_step(cell, act, P[t], st, w[1], b_hh, w[-1] if proj else None)
                if valid is not None:
                    new = tuple(torch.where(valid[t], a, b) for a, b in zip(new, st))
                    ys[t] = torch.where(valid[t], new[0], torch.zeros_like(new[0]))
                else:
                    ys[t] = new[0]
                st = new
            outs.append(torch.stack(ys))
            for f, s in zip(finals, st):
                f.append(s)
        inp = outs[0] if dirs == 1 else torch.cat(outs, 2)
    return inp, tuple(torch.stack(f) for f in finals)


def _run(cell, nonlinearity, groups, bidirectional, has_bias, lengths, x, states, flat):
    """Autograd-tracked when a gradient is wanted, a plain cache-free kernel call otherwise.
    Returns (out, finals tuple)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, *states, *flat)):
        res = _StackFunction.apply(cell, nonlinearity, groups, bidirectional, has_bias, lengths, x, *states, *flat)
        return res[0], tuple(res[1:])
    out, finals, _ = _kernel_forward(cell, nonlinearity, _layers(flat, groups, has_bias, cell == "lstmp"), x,
                                     states, lengths, bidirectional, False)
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


_EAGER_REASON = ("rnnfast.torch runs its recurrence eagerly: the kernels are NumPy/C++ calls that torch.compile "
                 "cannot trace, so a compiled model graph-breaks around the drop-in and compiles the rest")
_DISABLED = {}


def _eager(fn):
    """`fn` wrapped by torch.compiler.disable (one clean graph break with the reason above instead of dynamo
    tracing into the kernels), created on first use so that importing rnnfast.torch does not import
    torch._dynamo (seconds) for programs that never compile; without torch._dynamo nothing can be compiling."""
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        disabled = _DISABLED.get(fn)
        if disabled is None:
            if "torch._dynamo" not in sys.modules:
                return fn(*args, **kwargs)
            disabled = _DISABLED[fn] = torch.compiler.disable(fn, reason=_EAGER_REASON)
        return disabled(*args, **kwargs)
    return inner


class _DropIn:
    """The forward shared by RNN, LSTM and GRU (a mixin placed before the torch class)."""

    _cell = "rnn"
    _torch_name = "RNN"

    def __prepare_scriptable__(self):
        """torch.jit.script calls this first: refuse with the reason rather than fail inside forward."""
        raise RuntimeError(f"rnnfast.torch.{self._torch_name} cannot be compiled by TorchScript "
                           f"(torch.jit.script/trace): its forward calls rnnfast's C++ kernels through NumPy, "
                           f"which TorchScript cannot see. Script a model holding torch.nn.{self._torch_name}, "
                           f"or use torch.compile (the drop-in then runs eagerly between compiled graphs)")

    @_eager
    def forward(self, input, hx=None):
        cell, name = self._cell, self._torch_name
        if torch.jit.is_tracing():
            self.__prepare_scriptable__()
        lstm = cell == "lstm"
        proj = getattr(self, "proj_size", 0)
        if proj:
            cell = "lstmp"
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
            raise TypeError(f"input must have dtype torch.float32 or torch.float64 (or bfloat16/float16, computed "
                            f"in float32), got {data.dtype}")
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
            states = tuple(torch.zeros(self.num_layers * dirs, N, size, dtype=data.dtype)
                           for size in (proj or self.hidden_size, self.hidden_size)[:_NSTATES[cell]])
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
            if x.size(0) == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        states = tuple(s.contiguous() for s in states)
        flat = self._flat_weights
        if data.dtype in _HALF:      # float32 kernels; autograd casts the gradients back
            x, states, flat = x.float(), tuple(s.float() for s in states), [w.float() for w in flat]

        act = getattr(self, "nonlinearity", "tanh")
        L = self.num_layers
        use_dropout = self.dropout > 0 and self.training and L > 1
        if not use_dropout:
            output, finals = _run(cell, act, L * dirs, dirs == 2, self.bias, lengths, x, states, flat)
        else:
            per = _per(self.bias, proj) * dirs
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
        if data.dtype in _HALF:
            output, finals = output.to(data.dtype), tuple(f.to(data.dtype) for f in finals)

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
    proj_size = P > 0 (torch's LSTM with projections, h_t = W_hr (o_t * tanh(c_t)), weight_hr_l{k} (P, H), h_0 and
    h_n (L*dirs, N, P)) runs on rnnfast's projection kernel (csrc/cpu/lstm_proj_cpu.cpp).
    """

    _cell = "lstm"
    _torch_name = "LSTM"


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
    return type(m) in _REPLACEMENTS


def _from_torch(m):
    """An rnnfast module holding the very Parameter objects of the torch module `m` (optimizers stay valid)."""
    kw = dict(num_layers=m.num_layers, bias=m.bias, batch_first=m.batch_first, dropout=m.dropout,
              bidirectional=m.bidirectional, device="meta",   # "meta": no memory, no draws from torch's RNG
              dtype=m.weight_ih_l0.dtype)
    if type(m) is nn.RNN:
        kw["nonlinearity"] = m.nonlinearity
    if type(m) is nn.LSTM:
        kw["proj_size"] = m.proj_size
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
    (a user subclass may override forward), LSTMs with proj_size > 0 included. Returns the model (the new
    module when `model` is itself one of them).
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
