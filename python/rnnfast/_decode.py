"""Native autoregressive decoding: the adapter from the models (a recurrent layer, an optional embedding, a
Linear head) to the one-call decoders of the C++ extension (rnnfast._C.decode_sample / decode_beam).

What it is: reading a model's weights by their torch names, seeds, state packing, and the choice between
the native decoder and a model's Python per-step loop (which stays as the reference). What it is not: the
decoding math (csrc/cpu/decode.cpp) or the models' public methods (topologies, models, compat).

Random stream: draw t of sequence n is a counter-based hash of (seed, n, t) (csrc/cpu/decode.h), so the
same seed gives the same tokens for any batch composition and thread count; it is not NumPy's stream, so a
seed gives different text than the Python loop (native=False) does.
"""
from __future__ import annotations

import numpy as np

_CELLS = {"RNN": None, "OneHotRNN": None, "LSTM": "lstm", "GRU": "gru", "_OneHotLSTM": "lstm", "_OneHotGRU": "gru"}


_native = None


def _native_module():
    global _native
    if _native is None:                 # kept once loaded (a failure raises and is retried next time)
        from .backends import get
        _native = get("cpu")._C
    return _native


def available(*layers):
    """(ok, reason): whether the native decoder can run these layers (the CPU extension loads and every
    recurrent layer runs on the "cpu" backend; "numpy" and "cuda" layers use the Python loop)."""
    from .backends import resolve
    try:
        mod = _native_module()
    except (ImportError, OSError, RuntimeError) as e:   # the extension did not build or load
        return False, str(e)
    if not hasattr(mod, "decode_sample"):
        return False, "this build of rnnfast._C has no native decoder"
    for layer in layers:
        if layer is None or not hasattr(layer, "num_layers"):
            continue
        try:
            name = resolve(getattr(layer, "backend", None))
        except (RuntimeError, ValueError, TypeError) as e:
            return False, str(e)
        if name != "cpu":
            return False, f"the model runs on the {name!r} backend (native decoding needs 'cpu')"
    return True, None


def use_native(native, *layers):
    """native None: the native decoder where available; True: required (RuntimeError with the reason when
    it is not); False: the Python loop."""
    if native is not None and not isinstance(native, (bool, np.bool_)):
        raise TypeError(f"native must be None, True or False, got {native!r}")
    if native is False or native is np.False_:
        return False
    ok, why = available(*layers)
    if native is None:
        return ok
    if not ok:
        raise RuntimeError(f"native decoding is unavailable: {why}")
    return True


def seed64(seed):
    """The decoder's 64-bit seed: an int in [0, 2**64), a np.random.Generator (one draw from it), or None
    (fresh entropy)."""
    if seed is None or isinstance(seed, np.random.Generator):
        rng = seed if seed is not None else np.random.default_rng()
        return int(rng.integers(0, 2**63, dtype=np.int64))
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be None, an int or a np.random.Generator, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must lie in [0, 2**64), got {seed}")
    return int(seed)


def check_sampling(method, temperature, top_k):
    """Validate the token choice; returns top_k as an int (0 = no limit)."""
    if method not in ("greedy", "sample"):
        raise ValueError(f"method must be 'greedy' or 'sample', got {method!r}")
    if method == "sample" and (isinstance(temperature, bool)
                               or not isinstance(temperature, (int, float, np.floating, np.integer))
                               or not np.isfinite(temperature) or temperature <= 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is None:
        return 0
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1 (or None), got {top_k!r}")
    return int(top_k)


def check_token(name, tok, V, allow_none=True):
    if tok is None and allow_none:
        return -1
    if isinstance(tok, bool) or not isinstance(tok, (int, np.integer)) or not 0 <= tok < V:
        raise ValueError(f"{name} must be a token id in [0, V) = [0, {V}){' or None' if allow_none else ''}, "
                         f"got {tok!r}")
    return int(tok)


def layer_spec(rnn):
    """(cell name for _C, weights list) of a recurrent layer (RNN, OneHotRNN, LSTM, GRU or their one-hot
    variants), read by parameter name (a one-hot layer's gather path swaps W_ih in _weights(), not here)."""
    kind = _CELLS.get(type(rnn).__name__)
    if kind is None:
        if not hasattr(rnn, "nonlinearity"):
            raise TypeError(f"native decoding does not support {type(rnn).__name__}")
        kind = "rnn_" + rnn.nonlinearity
    if getattr(rnn, "bidirectional", False):
        raise ValueError("native decoding needs a unidirectional layer")
    p = rnn.params
    weights = [(p[f"weight_ih_l{k}"], p[f"weight_hh_l{k}"], p.get(f"bias_ih_l{k}"), p.get(f"bias_hh_l{k}"))
               for k in range(rnn.num_layers)]
    return kind, weights


def _split(kind, state):
    if kind == "lstm":
        h, c = state
        return np.ascontiguousarray(h), np.ascontiguousarray(c)
    return np.ascontiguousarray(state), None


def sample(rnn, head, embed, first, state, c, steps, method="greedy", temperature=1.0, top_k=0, seed=0, t0=0,
           end_token=-1, pad_token=0, prefix=None):
    """Decode `steps` tokens for N sequences in one native call -> (ids (steps, N) int64, final state).

    rnn: the recurrent layer; head: the Linear head (or a (weight (V, H), bias or None) pair); embed: the
    (V, E) embedding table or None for one-hot input; first (N,) the first input tokens; state: (L, N, H),
    or the pair (h, c) for an LSTM; c: (N, H) constant input or None. prefix (P, N) or None: P forced steps
    first (a prime: step t feeds its input and takes prefix[t] as the next one, nothing is chosen). After a
    sequence chooses end_token its ids are pad_token and its state stays put. Arguments are validated by
    the caller and by _C.
    """
    kind, weights = layer_spec(rnn)
    W, b = (head.params["weight"], head.params.get("bias")) if hasattr(head, "params") else head
    h0, c0 = _split(kind, state)
    ids, h_n, c_n = _native_module().decode_sample(
        kind, weights, embed, W, b, np.ascontiguousarray(first, dtype=np.int64), h0, c0, c, int(steps), method,
        float(temperature), int(top_k), int(seed), int(t0), int(end_token), int(pad_token),
        None if prefix is None else np.ascontiguousarray(prefix, dtype=np.int64))
    return ids, ((h_n, c_n) if kind == "lstm" else h_n)


def beam(rnn, head, embed, state, c, start_token, end_token, max_len, beam_size):
    """Beam search in one native call -> (ids (max_len, N) int64, scores (N,) float64), exactly as
    topologies.Seq2Seq's Python search (highest total log-probability, ties to the earlier candidate)."""
    kind, weights = layer_spec(rnn)
    W, b = (head.params["weight"], head.params.get("bias")) if hasattr(head, "params") else head
    h0, c0 = _split(kind, state)
    return _native_module().decode_beam(kind, weights, embed, W, b, h0, c0, c, int(start_token), int(end_token),
                                        int(max_len), int(beam_size))
