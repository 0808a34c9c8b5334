"""Character-level language model: one-hot characters -> stacked RNN, LSTM or GRU -> linear head -> softmax.

What it is: the corpus (the running interpreter's standard-library sources by default, or any UTF-8
file), the character vocabulary, N parallel streams trained by truncated BPTT with the hidden state
carried between chunks, validation in bits per character, sampling (temperature, top-k, seed),
checkpoints with exact resume, and the loss-curve plot. What it is not: the layers, losses, optimizers or
checkpoint format (rnnfast.nn, rnnfast.topologies, rnnfast.train), nor the command line (rnnfast.cli).
"""
from __future__ import annotations

import glob
import math
import os
import string
import time
import zipfile

import numpy as np

from .. import _decode
from .. import train as _train
from ..topologies import ManyToMany, check_cell
from ._progress import take_stop

KIND = "char_lm"
_LN2 = math.log(2.0)
_CORPUS_CHARS = set(string.printable) - set("\x0b\x0c\r")


# ---------------------------------------------------------------- text
def default_corpus(max_chars=1_000_000):
    """The default training text: the standard library's own top-level .py files, found through the
    running interpreter, sorted by name, those made only of printable ASCII, concatenated up to max_chars.
    Returns (text, description). Deterministic for a given Python installation."""
    root = os.path.dirname(os.__file__)
    files = sorted(glob.glob(os.path.join(root, "*.py")))
    parts, n, used = [], 0, 0
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                t = fh.read()
        except (OSError, UnicodeDecodeError):
            continue
        if not set(t) <= _CORPUS_CHARS:
            continue
        t = t[: max_chars - n]
        parts.append(t)
        n += len(t)
        used += 1
        if n >= max_chars:
            break
    if n == 0:
        raise RuntimeError(f"no standard-library sources found under {root}; pass a text file instead")
    return "".join(parts), f"{used} stdlib files from {root}, {n} chars"


def load_text(path, max_chars=None):
    """Read a UTF-8 text file. Raises FileNotFoundError, or ValueError for an empty, binary or non-UTF-8
    file, or one with fewer than 2 characters."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path}")
    with open(path, "rb") as fh:
        raw = fh.read() if max_chars is None else fh.read(4 * max_chars)
    if not raw:
        raise ValueError(f"text file {path} is empty")
    if b"\x00" in raw:
        raise ValueError(f"text file {path} looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if max_chars is not None and e.start >= len(raw) - 4:   # cut inside a multi-byte character
            text = raw[:e.start].decode("utf-8")
        else:
            raise ValueError(f"text file {path} is not valid UTF-8 (byte {e.start}: {e.reason}); "
                             f"give a UTF-8 text file") from None
    if max_chars is not None:
        text = text[:max_chars]
    if len(text) < 2:
        raise ValueError(f"text file {path} must hold at least 2 characters, got {len(text)}")
    return text


class CharVocab:
    """The characters of a text, sorted; ids are positions in that order."""

    def __init__(self, chars):
        self.chars = "".join(sorted(set(chars)))
        if not self.chars:
            raise ValueError("a vocabulary needs at least one character")
        self.index = {c: i for i, c in enumerate(self.chars)}
        self._table = None
        self._codes = None

    @property
    def size(self):
        return len(self.chars)

    def encode(self, text, what="text"):
        """ids (len(text),) int64. Unknown characters raise ValueError listing them."""
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise ValueError(f"{what} has {len(unknown)} character(s) not in the model's vocabulary: {shown}")
        if self._table is None and max(map(ord, self.chars)) < 65536:
            table = np.full(65536, -1, np.int64)
            table[[ord(c) for c in self.chars]] = np.arange(self.size)
            self._table = table
        if self._table is not None:
            codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
            return self._table[codes]
        return np.fromiter((self.index[c] for c in text), np.int64, len(text))

    def decode(self, ids):
        a = np.asarray(ids)
        if a.ndim == 1 and a.dtype.kind in "iu" and a.size:   # one gather + one UTF-32 decode, not a loop
            if self._codes is None:
                codes = np.array([ord(c) for c in self.chars], np.uint32)
                ok = not ((codes >= 0xD800) & (codes < 0xE000)).any()   # surrogates do not round-trip
                self._codes = codes if ok else False
            if self._codes is not False:
                return self._codes[a].tobytes().decode("utf-32-le")
        return "".join(self.chars[int(i)] for i in ids)


def make_streams(ids, N):
    """Cut the id sequence into N contiguous streams, time-major: (M // N, N)."""
    M = len(ids) // N
    if M < 2:
        raise ValueError(f"the text ({len(ids)} characters) is too short for batch_size N = {N} streams; "
                         f"each stream needs at least 2 characters")
    return np.ascontiguousarray(np.asarray(ids[: M * N]).reshape(N, M).T)


# ---------------------------------------------------------------- model
class FlatParams:
    """Every parameter of a Module in one contiguous buffer and every gradient in another
    (rnnfast.train.flatten_parameters); the layers' .params/.grads entries are views into them. Given to
    an optimizer (it has .params, .grads and zero_grad like a model) a step is one native call over one
    array, and clipping one pass. Call rebind() after anything replaces the layers' arrays (load_state_dict
    does)."""

    def __init__(self, module):
        self.module = module
        self.rebind()

    def rebind(self):
        fb = _train.flatten_parameters(self.module)
        if fb is None:
            raise TypeError("FlatParams needs parameters that are NumPy arrays of one float dtype")
        self.flat, self.grad = fb.P, fb.G
        self.params = {"flat": self.flat}
        self.grads = {"flat": self.grad}

    def zero_grad(self):
        self.grad.fill(0)


def _xent(logits, y):
    """Mean softmax cross-entropy over all T*N positions (every target counts): (loss, dlogits).
    The char model's lean path; it equals nn.softmax_cross_entropy(..., reduction="mean")."""
    V = logits.shape[-1]
    z = logits.reshape(-1, V)
    rows = np.arange(z.shape[0])
    t = y.ravel()
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1)
    loss = float(np.log(s).sum() - z[rows, t].sum()) / len(t)
    e /= s[:, None]
    e[rows, t] -= 1.0
    e *= 1.0 / len(t)
    return loss, e.reshape(logits.shape)


class CharLM:
    """The model and its vocabulary. `net` is a topologies.ManyToMany over one-hot ids (no embedding) with
    cell "rnn" (default), "lstm" or "gru". The carried state is an array: (L, N, H), or (2, L, N, H) for an
    LSTM (its hidden and cell states stacked), so it is stored in checkpoints the same way for every cell."""

    def __init__(self, vocab, hidden_size=128, num_layers=1, nonlinearity="tanh", dtype=np.float32,
                 backend=None, seed=0, cell="rnn"):
        if not isinstance(vocab, CharVocab):
            vocab = CharVocab(vocab)
        self.vocab = vocab
        self.cell = check_cell(cell, nonlinearity)
        self.config = {"hidden_size": int(hidden_size), "num_layers": int(num_layers),
                       "nonlinearity": nonlinearity, "dtype": np.dtype(dtype).name, "cell": self.cell}
        self.net = ManyToMany(vocab_size=vocab.size, embed_size=None, hidden_size=int(hidden_size),
                              num_layers=int(num_layers), output_size=vocab.size, task="classification",
                              nonlinearity=nonlinearity, dtype=dtype, backend=backend, seed=seed, cell=self.cell)
        self.dtype = np.dtype(dtype)
        self.flat = FlatParams(self.net)

    def load_state_dict(self, state):
        self.net.load_state_dict(state)
        self.flat.rebind()

    def train_loss(self, x, y, h):
        """Forward, mean cross-entropy and backward on one chunk: ids x, y (T, N), state h (L, N, H).
        Gradients accumulate into self.flat.grad. Returns (loss in nats per char, h_n)."""
        loss, h_n = self.net.loss(x, y, reduction="mean", h0=h, return_state=True)
        return loss, self._state(h_n)

    def train_loss_reference(self, x, y, h):
        """train_loss through the NumPy head and loss (_xent): the reference the fused path is tested against."""
        logits, h_n = self.net.forward(x, h0=h)
        loss, dlogits = _xent(logits, y)
        self.net.backward(dlogits)
        return loss, self._state(h_n)

    def _state(self, h_n):
        return np.stack(h_n) if self.cell == "lstm" else h_n

    @property
    def H(self):
        return self.config["hidden_size"]

    @property
    def L(self):
        return self.config["num_layers"]

    def state_shape(self, N):
        """The carried state's shape: (L, N, H), or (2, L, N, H) for an LSTM."""
        return ((2,) if self.cell == "lstm" else ()) + (self.L, N, self.H)

    def zero_state(self, N):
        return np.zeros(self.state_shape(N), self.dtype)

    def metadata(self):
        return {"kind": KIND, "vocab": self.vocab.chars, **self.config}

    def step_logits(self, ids, h):
        """Forward (inference, no cache) over ids (T, N) from state h (L, N, H): (logits (T, N, V), h_n)."""
        self.net.eval()
        try:
            y, h_n = self.net.forward(np.asarray(ids, np.int64), h0=h)
        finally:
            self.net.train()
        return y, self._state(h_n)

    def evaluate(self, ids, N=16, T=256, max_chars=None):
        """Validation loss in bits per character over an id sequence, N streams, state carried."""
        ids = np.asarray(ids if max_chars is None else ids[:max_chars])
        N = max(1, min(N, (len(ids) - 1) // 2))
        S = make_streams(ids, N)
        h = self.zero_state(N)
        total, count = 0.0, 0
        for t in range(0, S.shape[0] - 1, T):
            x, y = S[t:t + T], S[t + 1:t + T + 1]
            x = x[: len(y)]
            logits, h = self.step_logits(x, h)
            z = logits - logits.max(axis=-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
            total -= float(np.take_along_axis(logp, y[..., None], axis=-1).sum())
            count += y.size
        return total / count / _LN2

    def sample(self, prime, length, temperature=1.0, top_k=None, seed=None, chunk=256, native=None):
        """Continue `prime` by `length` characters. temperature 0 is greedy. The prime is fed in chunks
        of `chunk` steps with the state carried, so any prime length gives the same state as feeding it
        whole. Returns the generated text (without the prime).

        native (None = where available): the prime and the `length` characters are one native call
        (rnnfast._decode; `chunk` then does not apply). Its random stream is a counter-based hash of
        (seed, step), not NumPy's, so a seed gives the same text on every run and machine but not the text
        the Python per-step loop (native=False, the reference) gives; greedy text is the same either way.
        seed: an int, a np.random.Generator or None (fresh)."""
        return "".join(self.sample_pieces(prime, length, temperature, top_k, seed, chunk, native,
                                          piece_length=max(1, length) if _is_count(length) else 1))

    def sample_pieces(self, prime, length, temperature=1.0, top_k=None, seed=None, chunk=256, native=None,
                      piece_length=1000):
        """sample()'s text as a generator of pieces of `piece_length` characters (the last one shorter),
        each generated when asked for, with the state and the random stream carried between pieces: their
        concatenation is exactly sample(prime, length, ...) with the same arguments (for a progress bar, or
        to stop early). The arguments are validated before the first piece."""
        if not isinstance(prime, str) or not prime:
            raise ValueError("prime must be a non-empty string (the text to continue)")
        if not _is_count(length):
            raise ValueError(f"length must be an int >= 0, got {length!r}")
        if not isinstance(temperature, (int, float, np.floating, np.integer)) or not temperature >= 0 \
                or not np.isfinite(temperature):
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if not _is_count(piece_length) or piece_length < 1:
            raise ValueError(f"piece_length must be an int >= 1, got {piece_length!r}")
        ids = self.vocab.encode(prime, "prime")
        encoder = self.net.encoder
        length, piece_length = int(length), int(piece_length)
        if not _decode.use_native(native, encoder.rnn):
            return self._sample_python(ids, length, temperature, top_k, seed, chunk, piece_length)
        greedy = temperature == 0
        return self._sample_native(ids, length, temperature if not greedy else 1.0,
                                   0 if top_k is None else min(int(top_k), self.vocab.size),
                                   0 if greedy else _decode.seed64(seed), greedy, piece_length)

    def _sample_native(self, ids, length, temperature, top_k, seed, greedy, piece_length):
        """The native decoder, one call per piece: piece k starts from the state the previous one ended in,
        fed the previous piece's last character, with the random stream offset t0 = characters so far
        (draw t is a pure function of (seed, t0 + t)), so the pieces continue one call's stream exactly."""
        h = self.zero_state(1)
        state = (h[0], h[1]) if self.cell == "lstm" else h
        first, prefix = ids[:1], ids[1:, None]
        for t0 in range(0, length, piece_length):
            steps = min(piece_length, length - t0)
            out, state = _decode.sample(self.net.encoder.rnn, self.net.head, None, first, state, None, steps,
                                        "greedy" if greedy else "sample", temperature, top_k, seed, t0=t0,
                                        prefix=prefix)
            first, prefix = out[-1:, 0], None
            yield self.vocab.decode(out[:, 0])

    def _sample_python(self, ids, length, temperature, top_k, seed, chunk, piece_length):
        """The reference sampler: one layer forward and one NumPy draw per character."""
        rng = np.random.default_rng(seed)
        h = self.zero_state(1)
        logits = None
        for t in range(0, len(ids), chunk):
            logits, h = self.step_logits(ids[t:t + chunk, None], h)
        last = logits[-1]
        out = np.empty(length, np.int64)
        start = 0
        for i in range(length):
            if temperature == 0:
                nxt = _train.sample_logits(last, method="greedy")
            else:
                nxt = _train.sample_logits(last, method="sample", temperature=temperature,
                                           top_k=None if top_k is None else min(top_k, self.vocab.size), rng=rng)
            out[i] = int(nxt[0])
            if i + 1 - start == piece_length or i + 1 == length:
                yield self.vocab.decode(out[start:i + 1])
                start = i + 1
            if i + 1 < length:
                logits, h = self.step_logits(out[i:i + 1, None], h)
                last = logits[-1]


def _is_count(n):
    return not isinstance(n, bool) and isinstance(n, (int, np.integer)) and n >= 0


def read_checkpoint_info(path):
    """load_checkpoint(path)'s dict (nothing loaded into a model); FileNotFoundError when missing,
    ValueError when the file is not an rnnfast checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return _train.load_checkpoint(path)
    except (KeyError, EOFError, zipfile.BadZipFile) as e:
        why = "it has no rnnfast metadata" if isinstance(e, KeyError) else "it is truncated or not a .npz archive"
        raise ValueError(f"{path} is not an rnnfast checkpoint: {why}") from None
    except (OSError, ValueError) as e:
        if "pickle" in str(e):      # NumPy's text would suggest an unsafe load; checkpoints never hold pickles
            raise ValueError(f"{path} is not an rnnfast checkpoint: it is not a .npz archive") from None
        if "meta_json" in str(e):   # a NumPy archive without rnnfast's entries: name no internal key
            raise ValueError(f"{path} is not an rnnfast checkpoint: it has no rnnfast metadata") from None
        raise ValueError(f"{path} is not an rnnfast checkpoint ({e})") from None


def load_model(path, backend=None, cell=None):
    """Build a CharLM from a checkpoint written by train_char_lm, with the checkpoint's cell (checkpoints
    without one are "rnn"). Returns (model, info) where info is load_checkpoint's dict. A checkpoint of
    another kind of model, or (when `cell` is given) of another cell, raises ValueError."""
    info = read_checkpoint_info(path)
    meta = info.get("metadata") or {}
    if meta.get("kind") != KIND:
        what = f"a {meta['kind']!r} model" if meta.get("kind") else "not from rnnfast's applications (no model kind)"
        raise ValueError(f"checkpoint {path} is {what}, not a character-level language model: use a checkpoint "
                         f"written by `rnnfast train-char` (or train_char_lm)")
    saved = meta.get("cell", "rnn")
    if cell is not None and check_cell(cell) != saved:
        raise ValueError(f"checkpoint {path} holds a cell={saved!r} model, not cell={cell!r}; leave the cell "
                         f"out to use the checkpoint's, or start a new run")
    model = CharLM(meta["vocab"], meta["hidden_size"], meta["num_layers"], meta["nonlinearity"],
                   np.dtype(meta["dtype"]), backend=backend, cell=saved)
    info = _train.load_checkpoint(path, model=model.net)
    model.flat.rebind()
    return model, info


# ---------------------------------------------------------------- training
_OPTIMIZERS = {"adam": _train.Adam, "sgd": _train.SGD, "rmsprop": _train.RMSprop, "adagrad": _train.Adagrad}


def make_optimizer(name, model, lr):
    """An optimizer of rnnfast.train over the model's flat parameter buffer."""
    try:
        cls = _OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {name!r}") from None
    return cls(model.flat, lr=lr)


class _ChunkTask:
    """What Trainer steps for the char model: params/grads of the network (so Trainer's checkpoints hold
    its weights), zero_grad over the flat buffer, and loss(x, y, h) returning the mean cross-entropy in nats
    while keeping the chunk's final state in .h_n (carried into the next chunk as plain data)."""

    def __init__(self, model):
        self.model, self.h_n = model, None

    @property
    def params(self):
        return self.model.net.params

    @property
    def grads(self):
        return self.model.net.grads

    @property
    def _rnnfast_flat(self):          # the network's flat buffers: Trainer clips them in one native pass
        return getattr(self.model.net, "_rnnfast_flat", None)

    def zero_grad(self):
        self.model.flat.zero_grad()

    def loss(self, x, y, h):
        loss, self.h_n = self.model.train_loss(x, y, h)
        return loss


def make_trainer(model, opt, clip_norm, step=0, checkpoint=None, checkpoint_every=None, progress=False,
                 metadata=None):
    """The Trainer that runs train_char_lm: zero_grad, loss, the finite-loss guard, clipping to clip_norm
    (None or 0: none), the optimizer step, its loop (budgets, hooks, checkpoints, progress); the history
    is in bits per character; step_count starts at `step`."""
    t = _train.Trainer(_ChunkTask(model), opt, clip_norm=clip_norm or None, progress=progress,
                       checkpoint=checkpoint,
                       checkpoint_every=checkpoint_every if checkpoint else None, metadata=metadata,
                       loss_scale=1.0 / _LN2, desc="train-char")
    t.step_count = int(step)
    return t


def split_text(text, val_fraction=0.1):
    """Train/validation split: the last val_fraction of the text is held out."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


def check_budget(max_steps=None, max_seconds=None):
    """A step budget is an int >= 1, a time budget a finite number of seconds > 0 (None: not given)."""
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer))
                                  or max_steps < 1):
        raise ValueError(f"max_steps (--steps) must be an integer >= 1, got {max_steps!r}")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float, np.number))
                                        and math.isfinite(max_seconds) and max_seconds > 0):
        raise ValueError(f"max_seconds (--seconds) must be a number > 0, got {max_seconds!r}")


def check_fits(n_chars, seq_length, batch_size):
    """Refuse a training text too short for N = batch_size streams of chunks of T = seq_length characters
    (each stream needs T + 1), saying which T and N would fit."""
    T, N = int(seq_length), int(batch_size)
    per = n_chars // N
    if per >= T + 1:
        return
    fit_T = per - 1
    fit_N = n_chars // (T + 1)
    options = [f"seq_length (--seq-length) <= {fit_T}" if fit_T >= 1 else None,
               f"batch_size (--batch) <= {fit_N}" if fit_N >= 1 else None]
    options = " or ".join(o for o in options if o) or "a smaller seq_length and batch_size"
    raise ValueError(f"the training text ({n_chars:,} characters after the validation split) is too short for "
                     f"batch_size N = {N} streams of seq_length T = {T}: each stream needs T + 1 = {T + 1} "
                     f"characters but gets {per:,}; use {options}, or a longer text")


def train_char_lm(text=None, hidden_size=128, num_layers=1, seq_length=50, batch_size=32, lr=2e-3,
                  optimizer="adam", max_steps=None, max_seconds=None, seed=0, clip_norm=5.0,
                  val_fraction=0.1, val_max_chars=50_000, eval_every=None, sample_every=None, sample_length=200,
                  checkpoint=None, checkpoint_every=None, resume=None, progress=True, log=print,
                  backend=None, nonlinearity="tanh", dtype=np.float32, text_source=None, cell=None):
    """Train by truncated BPTT over N = batch_size parallel streams, chunks of T = seq_length.

    cell: "rnn" (the default for a new run), "lstm" or "gru"; a resumed run uses the checkpoint's cell
    (giving a different one raises ValueError).

    Stops after max_steps updates or max_seconds of training (whichever first; at least one must be
    given). With `resume` (a checkpoint path) the model, optimizer, step, RNG, stream position and
    carried state are restored, and with a step budget the run continues exactly as if uninterrupted
    (give the same text; text_source, e.g. a file name, is only recorded in the checkpoint).
    Returns a dict: model, history {"step", "loss" (bits/char per step), "val_step", "val_bpc"},
    val_bpc, steps, seconds, chars_per_sec.
    """
    if max_steps is None and max_seconds is None:
        raise ValueError("give max_steps or max_seconds (a step or a time budget)")
    check_budget(max_steps, max_seconds)
    if text is None:
        text, _ = default_corpus()
    if resume is not None:
        model, info = load_model(resume, backend=backend, cell=cell)
        meta = info["metadata"]
        state = meta["train_state"]
        seq_length, batch_size = state["seq_length"], state["batch_size"]
        opt = make_optimizer(state["optimizer"], model, state["lr"])
        rng = np.random.default_rng()
        info = _train.load_checkpoint(resume, optimizer=opt, rng=rng)
        step = int(info["step"])
        pos = int(state["pos"])
        saved_h = info["extra"].get("h")
        if saved_h is None:               # checkpoints before the extra-state arrays: h as a float64 list
            saved_h = state.pop("h")
        state.pop("h", None)
        h = np.asarray(saved_h, model.dtype).reshape(model.state_shape(batch_size))
        history = {k: list(v) for k, v in (info.get("history") or {"step": [], "loss": []}).items()}
        history["val_step"], history["val_bpc"] = list(state["val_step"]), list(state["val_bpc"])
        val_fraction, clip_norm = state["val_fraction"], state["clip_norm"]
    else:
        model = CharLM(CharVocab(text), hidden_size, num_layers, nonlinearity, dtype, backend, seed,
                       cell="rnn" if cell is None else cell)
        opt = make_optimizer(optimizer, model, lr)
        rng = np.random.default_rng(seed)
        step, pos, h = 0, 0, None
        history = {"step": [], "loss": [], "val_step": [], "val_bpc": []}
        state = {"text_source": text_source, "text_chars": len(text),
                 "seq_length": int(seq_length), "batch_size": int(batch_size), "optimizer": optimizer.lower(),
                 "lr": float(lr), "val_fraction": float(val_fraction), "clip_norm": clip_norm}
    T, N = int(seq_length), int(batch_size)
    if T < 1 or N < 1:
        raise ValueError(f"seq_length T and batch_size N must be >= 1, got T = {T}, N = {N}")
    train_text, val_text = split_text(text, val_fraction)
    ids = model.vocab.encode(train_text, "training text")
    check_fits(len(train_text), T, N)
    S = make_streams(ids, N)
    if h is None:
        h = model.zero_state(N)
    val_ids = model.vocab.encode(val_text, "validation text") if len(val_text) >= 2 else None
    if eval_every is None:
        eval_every = max(1, max_steps // 5) if max_steps else 500

    meta = model.metadata()
    meta["train_state"] = state
    loop = {"pos": pos, "h": h, "chars": 0}
    trainer = make_trainer(model, opt, clip_norm, step, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                           progress=progress, metadata=meta)
    trainer.rng, trainer.log = rng, log
    trainer.history = history

    def get_extra():                  # the stream position and carried state, saved in every checkpoint
        state["pos"] = loop["pos"]
        state["val_step"], state["val_bpc"] = history["val_step"], history["val_bpc"]
        return {"h": loop["h"]}

    trainer.extra_state = (get_extra, None)

    def get_batch(_rng):
        if loop["pos"] + T + 1 > S.shape[0]:          # end of an epoch: wrap, reset the state
            loop["pos"], loop["h"] = 0, model.zero_state(N)
        p = loop["pos"]
        return S[p:p + T], S[p + 1:p + T + 1], loop["h"]

    def after_step(tr, loss):
        loop["h"] = tr.model.h_n
        loop["pos"] += T
        loop["chars"] += T * N

    def validate():
        if val_ids is None:
            return None
        bpc = model.evaluate(val_ids, max_chars=val_max_chars)
        history["val_step"].append(trainer.step_count)
        history["val_bpc"].append(bpc)
        return bpc

    def evaluate_hook(tr):
        v = validate()
        if v is not None:
            tr.write(f"step {tr.step_count}: val {v:.3f} bits/char")

    def sample_hook(tr):
        last = S[loop["pos"] - 1:loop["pos"], 0]
        tr.write(f"--- sample at step {tr.step_count} ---\n"
                 + model.sample(model.vocab.decode(last), sample_length, 0.8, seed=tr.step_count) + "\n---")

    hooks = [(eval_every, evaluate_hook)] if eval_every else []
    if sample_every:
        hooks.append((sample_every, sample_hook))
    start = time.perf_counter()
    try:
        trainer.fit(get_batch, max_steps, T * N, max_seconds=max_seconds, after_step=after_step, hooks=hooks,
                    should_stop=take_stop)
    except _train.TrainingDiverged as e:
        raise _train.TrainingDiverged(f"training diverged: {e}; lower the learning rate (the last checkpoint, "
                                      f"if any, is untouched)") from None
    seconds = time.perf_counter() - start
    step = trainer.step_count
    done = history["val_step"] and history["val_step"][-1] == step
    val_bpc = history["val_bpc"][-1] if done else validate()
    if checkpoint:
        trainer.save(checkpoint)
    chars = loop["chars"]
    return {"model": model, "history": history, "val_bpc": val_bpc, "steps": step, "seconds": seconds,
            "chars_per_sec": chars / max(seconds, 1e-9), "uniform_bpc": math.log2(model.vocab.size)}
