"""The table of recurrent cells: for each cell its gate count and gate order, its states, its cache record,
its NumPy reference step, the names of its kernel entry points in every backend, and its parameter layout.

What it is: data, plus the two calls (call_forward / call_backward) that turn one uniform argument list
into a backend's entry point, so rnnfast.functional, rnnfast._stack and rnnfast.nn need no per-cell code.
What it is not: math (rnnfast.reference and csrc/) or argument checking (rnnfast._checks).
Adding a cell: one Cell(...) entry here, its reference functions, its kernels (docs/design.md, "Adding a cell").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from . import reference as _ref
from ._cache import GRUCache, LSTMCache, RNNCache


@dataclass(frozen=True)
class Cell:
    """One recurrent cell. Every backend module (rnnfast.reference, rnnfast._cpu_backend,
    rnnfast._cuda_backend) exposes `<name>_forward` and `<name>_backward` with the argument lists below."""

    name: str                  # "rnn", "lstm", "gru": the `cell=` string and the entry-point prefix
    title: str                 # "RNN", "LSTM", "GRU": layer class names, messages
    gates: int                 # G: W_ih is (G*H, D_k), W_hh (G*H, H), biases (G*H,)
    gate_names: tuple          # the order of the G blocks (PyTorch's)
    states: tuple              # initial-state argument names, each (L, N, H): ("h0",) or ("h0", "c0")
    finals: tuple              # final-state names, same order: ("h_n",) or ("h_n", "c_n")
    cache: type                # the per-call cache record (rnnfast._cache)
    step_forward: Callable     # the NumPy reference of one time step
    step_backward: Callable
    constant_input: bool = False   # takes c (N, H) added at every step of layer 0, and `nonlinearity`
    state_seqs: tuple = ("hs",)    # the cache fields holding every state at every step, in `states` order
    forward_name: str = field(init=False)    # "<name>_forward", "<name>_backward": the entry points
    backward_name: str = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "forward_name", f"{self.name}_forward")
        object.__setattr__(self, "backward_name", f"{self.name}_backward")

    @property
    def finals_grads(self) -> tuple:
        return tuple("d" + f for f in self.finals)       # dh_n, dc_n

    @property
    def states_grads(self) -> tuple:
        return tuple("d" + s for s in self.states)       # dh0, dc0

    def param_layout(self, input_size, hidden_size, num_layers=1, bias=True, dirs=1):
        """[(name, shape)] of every parameter, in PyTorch's names and order (l0, l0_reverse, l1, ...)."""
        H, G = hidden_size, self.gates
        out = []
        for k in range(num_layers):
            for sfx in ("", "_reverse")[:dirs]:
                Dk = input_size if k == 0 else H * dirs
                out += [(f"weight_ih_l{k}{sfx}", (G * H, Dk)), (f"weight_hh_l{k}{sfx}", (G * H, H))]
                if bias:
                    out += [(f"bias_ih_l{k}{sfx}", (G * H,)), (f"bias_hh_l{k}{sfx}", (G * H,))]
        return out

    def layer_keys(self, num_layers, dirs=1):
        """Per weight tuple, the four parameter names (weight_ih, weight_hh, bias_ih, bias_hh)."""
        return [(f"weight_ih_l{k}{s}", f"weight_hh_l{k}{s}", f"bias_ih_l{k}{s}", f"bias_hh_l{k}{s}")
                for k in range(num_layers) for s in ("", "_reverse")[:dirs]]

    def supported_by(self, mod) -> bool:
        return hasattr(mod, self.forward_name) and hasattr(mod, self.backward_name)


RNN = Cell("rnn", "RNN", 1, ("h",), ("h0",), ("h_n",), RNNCache, _ref.rnn_step_forward, _ref.rnn_step_backward,
           constant_input=True)
LSTM = Cell("lstm", "LSTM", 4, ("i", "f", "g", "o"), ("h0", "c0"), ("h_n", "c_n"), LSTMCache,
            _ref.lstm_step_forward, _ref.lstm_step_backward, state_seqs=("hs", "cs"))
GRU = Cell("gru", "GRU", 3, ("r", "z", "n"), ("h0",), ("h_n",), GRUCache, _ref.gru_step_forward,
           _ref.gru_step_backward)

CELLS = {c.name: c for c in (RNN, LSTM, GRU)}


def get(cell) -> Cell:
    """The Cell for a name ("rnn", "lstm", "gru") or a Cell; ValueError naming `cell` otherwise."""
    if isinstance(cell, Cell):
        return cell
    if isinstance(cell, str) and cell in CELLS:
        return CELLS[cell]
    raise ValueError(f"cell must be one of {', '.join(repr(c) for c in CELLS)}, got {cell!r}")


def call_forward(cell, mod, x, states, weights, need_cache, c=None, nonlinearity="tanh"):
    """mod.<cell>_forward with the cell's argument list; returns (out, finals tuple, cache or None).

    Argument lists: rnn (x, h0, weights, c, nonlinearity, need_cache); lstm (x, h0, c0, weights,
    need_cache); gru (x, h0, weights, need_cache). Results: (out, *finals, cache)."""
    extra = (c, nonlinearity) if cell.constant_input else ()
    res = getattr(mod, cell.forward_name)(x, *states, weights, *extra, need_cache)
    return res[0], tuple(res[1:-1]), res[-1]


def call_backward(cell, mod, dout, dfinals, cache, grads, dseqs: Optional[object] = None):
    """mod.<cell>_backward; returns (dx, dstates tuple, dc or None).

    dseqs (1, T, N, H) or None: an extra gradient reaching the second state (LSTM's c) at every step (the
    lengths path routes dc_n there). Argument lists: (dout, *dfinals, cache, grads[, dseqs]); results
    (dx, *dstates[, dc])."""
    extra = (dseqs,) if len(cell.states) > 1 else ()
    res = getattr(mod, cell.backward_name)(dout, *dfinals, cache, grads, *extra)
    ns = len(cell.states)
    return res[0], tuple(res[1:1 + ns]), (res[1 + ns] if cell.constant_input else None)
