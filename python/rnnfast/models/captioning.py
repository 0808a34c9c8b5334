"""Image captioning: image feature vector v -> RNN, LSTM or GRU language model that writes the caption word
by word.

What it is: the captioning model (conditioning through an affine map of v to the initial hidden state,
through W v added at every step as the RNN's constant input `c` (vanilla cell only), or both), the cell
choice, <START>/<END>/<NULL> handling
with <NULL> masked out of the loss, greedy decoding that stops at <END>, BLEU and exact-match evaluation,
the built-in shapes pipeline (CNN trained on an auxiliary task, frozen, truncated to give v), training with
checkpoints and resume, and the picture of held-out results. What it is not: the layers, losses,
optimizers or checkpoint format (rnnfast.nn, rnnfast.train) or the command line (rnnfast.cli).
"""
from __future__ import annotations

import math
import time
from collections import Counter, defaultdict

import numpy as np

from .. import train as _train
from ..nn import GRU, LSTM, RNN, Embedding, Linear, Module, linear_cross_entropy
from ..topologies import check_cell
from . import shapes as _shapes
from ._progress import Progress, take_stop
from .bleu import corpus_bleu, exact_match
from .cnn import SmallCNN

KIND = "caption"
SPECIAL = ["<NULL>", "<START>", "<END>", "<UNK>"]
NULL, START, END, UNK = 0, 1, 2, 3
CONDITIONING = ("h0", "c", "both")


# ---------------------------------------------------------------- words
def build_vocab(captions):
    """idx_to_word: the special tokens, then every word of the captions, sorted."""
    words = sorted({w for c in captions for w in c.split()} - set(SPECIAL))
    return SPECIAL + words


def encode_captions(captions, word_to_idx, T=None):
    """Strings -> ids (N, T + 1): <START> words <END> <NULL>...; unknown words become <UNK>.
    T defaults to the longest caption + 1 (its words and <END>)."""
    toks = [c.split() for c in captions]
    if T is None:
        T = max((len(t) for t in toks), default=0) + 1
    out = np.full((len(toks), T + 1), NULL, np.int32)
    out[:, 0] = START
    for i, t in enumerate(toks):
        ids = [word_to_idx.get(w, UNK) for w in t][: T - 1] + [END]
        out[i, 1:1 + len(ids)] = ids
    return out


def decode_captions(ids, idx_to_word):
    """ids (N, T) -> token lists, stopping at <END>, skipping <START> and <NULL>."""
    out = []
    for row in np.atleast_2d(ids):
        words = []
        for i in row:
            i = int(i)
            if i == END:
                break
            if i not in (NULL, START):
                words.append(idx_to_word[i])
        out.append(words)
    return out


# ---------------------------------------------------------------- model
def check_conditioning(cell, conditioning):
    """The cell, after checking that it can take this conditioning: "c" and "both" need the vanilla RNN's
    constant input, which the LSTM and GRU kernels do not have (ValueError)."""
    if cell != "rnn" and conditioning != "h0":
        raise ValueError(f"conditioning={conditioning!r} needs the RNN's constant input c, which only "
                         f"cell='rnn' has (the {cell.upper()} kernels have no constant input); use "
                         f"conditioning='h0' with cell={cell!r}")
    return cell


class CaptioningRNN(Module):
    """features (N, F) -> caption ids. Word embedding (V, E) -> cell(E, H, L) -> Linear(H, V), with cell
    "rnn" (RNN, the default), "lstm" (LSTM) or "gru" (GRU).

    conditioning "h0": h0 = reshape(Linear(F, L*H)(v)) (an affine map to every layer's initial state; an
    LSTM's cell state starts at c0 = 0); "c": c = Linear(F, H)(v) added to layer 0's input at every step
    (the kernel's constant input), h0 = 0; "both": the two together. "c" and "both" need cell="rnn": the
    gated kernels have no constant input, so those combinations raise ValueError.
    """

    def __init__(self, feature_dim, vocab_size, hidden_size=128, embed_size=64, num_layers=1, conditioning="both",
                 nonlinearity="tanh", dtype=np.float32, backend=None, seed=0, cell="rnn"):
        super().__init__()
        if conditioning not in CONDITIONING:
            raise ValueError(f"conditioning must be one of {CONDITIONING}, got {conditioning!r}")
        self.cell = check_conditioning(check_cell(cell, nonlinearity), conditioning)
        s = [int(x) for x in np.random.default_rng(seed).integers(0, 2**31 - 1, size=5)]
        self.F, self.V, self.H, self.L = int(feature_dim), int(vocab_size), int(hidden_size), int(num_layers)
        self.conditioning = conditioning
        self.dtype = np.dtype(dtype)
        if conditioning in ("h0", "both"):
            self.proj_h0 = Linear(self.F, self.L * self.H, dtype=dtype, seed=s[0])
        if conditioning in ("c", "both"):
            self.proj_c = Linear(self.F, self.H, dtype=dtype, seed=s[1])
        self.embed = Embedding(self.V, int(embed_size), dtype=dtype, seed=s[2])
        self.embed.params["weight"] *= 0.1          # small initial embeddings: tanh stays out of saturation
        self.nonlinearity = nonlinearity
        if self.cell == "rnn":
            self.rnn = RNN(int(embed_size), self.H, self.L, nonlinearity=nonlinearity, dtype=dtype,
                           backend=backend, seed=s[3])
        else:
            layer = LSTM if self.cell == "lstm" else GRU
            self.rnn = layer(int(embed_size), self.H, self.L, dtype=dtype, backend=backend, seed=s[3])
        self.head = Linear(self.H, self.V, dtype=dtype, seed=s[4])

    def config(self):
        return {"feature_dim": self.F, "vocab_size": self.V, "hidden_size": self.H,
                "embed_size": self.embed.embedding_dim, "num_layers": self.L, "conditioning": self.conditioning,
                "nonlinearity": self.nonlinearity, "dtype": self.dtype.name, "cell": self.cell}

    def _check_features(self, features):
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.F:
            raise ValueError(f"features must have shape (N, F) with F = {self.F}, got {features.shape}")
        if len(features) == 0:
            raise ValueError("empty batch: features has N = 0 rows")
        return np.ascontiguousarray(features, dtype=self.dtype)

    def _condition(self, v, need_cache):
        N = len(v)
        h0 = c = None
        if self.conditioning in ("h0", "both"):
            h0 = np.ascontiguousarray(self.proj_h0.forward(v, need_cache).reshape(N, self.L, self.H)
                                      .transpose(1, 0, 2))
        if self.conditioning in ("c", "both"):
            c = self.proj_c.forward(v, need_cache)
        return h0, c

    def loss(self, features, captions):
        """Teacher-forced loss of captions (N, T + 1) given features (N, F): inputs captions[:, :-1], targets
        captions[:, 1:], <NULL> targets masked; the sum over steps averaged over N. Gradients accumulate."""
        v = self._check_features(features)
        captions = np.asarray(captions)
        if captions.ndim != 2 or captions.shape[0] != len(v) or captions.shape[1] < 2:
            raise ValueError(f"captions must have shape (N, T + 1) = ({len(v)}, >= 2), got {captions.shape}")
        x_in = np.ascontiguousarray(captions[:, :-1].T)           # (T, N)
        y = np.ascontiguousarray(captions[:, 1:].T)                 # (T, N)
        h0, c = self._condition(v, True)
        out, _ = self._run(self.embed.forward(x_in), h0, c, None)
        loss, dout = linear_cross_entropy(self.head, out, y, mask=y != NULL)   # head + loss + into the head
        res = self.rnn.backward(dout)                               # through time
        self.embed.backward(res[0])                                 # into the word vectors
        dh0 = res[1][0] if self.cell == "lstm" else res[1]          # (an LSTM's c0 = 0 is a constant)
        if self.conditioning in ("h0", "both"):                     # into the h0 map
            self.proj_h0.backward(np.ascontiguousarray(dh0.transpose(1, 0, 2)).reshape(len(v), -1))
        if self.conditioning in ("c", "both"):                      # into the constant-input map
            self.proj_c.backward(res[2])
        return loss

    def _run(self, x, h, c, need_cache):
        """The recurrent layer over x (T, N, E) from state h (None, (L, N, H), or the LSTM pair) -> (out,
        state)."""
        if self.cell == "rnn":
            return self.rnn.forward(x, h, c, need_cache)
        if self.cell == "lstm" and h is not None and not isinstance(h, tuple):
            h = (h, np.zeros_like(h))                               # the image sets h0; c0 starts at zero
        return self.rnn.forward(x, h, need_cache)

    def generate(self, features, max_length=20, native=None):
        """Greedy decoding from <START>: ids (N, max_length); after a sequence emits <END> the rest is
        <NULL>. Decoding stops early once every sequence has ended. native (None = where available): one
        native call for the whole batch (rnnfast._decode); native=False runs the Python per-step loop (the
        reference). Both give the same ids."""
        from .. import _decode
        max_length = int(max_length)
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        if not _decode.use_native(native, self.rnn):
            return self._generate_python(features, max_length)
        v = self._check_features(features)
        N = len(v)
        h, c = self._condition(v, False)
        if h is None:
            h = np.zeros((self.L, N, self.H), self.dtype)
        if self.cell == "lstm":
            h = (h, np.zeros_like(h))
        ids, _ = _decode.sample(self.rnn, self.head, self.embed.params["weight"], np.full(N, START), h, c,
                                max_length, end_token=END, pad_token=NULL)
        return np.ascontiguousarray(ids.T)

    def _generate_python(self, features, max_length=20):
        """The reference greedy decoder: one embedding, layer forward and head per step."""
        v = self._check_features(features)
        N = len(v)
        h, c = self._condition(v, False)
        if h is None:
            h = np.zeros((self.L, N, self.H), self.dtype)
        if self.cell == "lstm":
            h = (h, np.zeros_like(h))
        out = np.full((N, max_length), NULL, np.int64)
        prev = np.full(N, START, np.int64)
        done = np.zeros(N, bool)
        for t in range(max_length):
            o, h = self._run(self.embed.forward(prev[None], need_cache=False), h, c, False)
            nxt = self.head.forward(o[0], need_cache=False).argmax(axis=1)
            out[:, t] = np.where(done, NULL, nxt)
            done |= nxt == END
            if done.all():
                break
            prev = nxt
        return out


class CaptionPipeline(Module):
    """What a checkpoint holds: the frozen CNN (when the images are ours) and the captioning RNN."""

    def __init__(self, captioner, cnn=None):
        super().__init__()
        if cnn is not None:
            self.cnn = cnn
        self.captioner = captioner

    def image_features(self, images):
        if not hasattr(self, "cnn"):
            raise ValueError("this model was trained on precomputed features; it has no image encoder")
        return self.cnn.features(images)


# ---------------------------------------------------------------- data
def prepare_shapes(n_train=4000, n_val=500, n_test=500, seed=0, cnn_epochs=4, cnn_batch=32, cnn_lr=3e-3,
                   progress=True, log=print):
    """The built-in data set end to end: generate the splits, train the CNN on the auxiliary labels, freeze
    it and extract features. Returns (data, cnn, images) where data is in the layout load_coco_h5 returns
    (<split>_features, <split>_captions, <split>_image_idxs, idx_to_word, word_to_idx) and images maps
    split -> (images, caption strings)."""
    splits = _shapes.shapes_splits(n_train, n_val, n_test, seed)
    cnn = train_cnn(splits["train"][0], splits["train"][2], epochs=cnn_epochs, batch_size=cnn_batch, lr=cnn_lr,
                    seed=seed, progress=progress)
    if n_val:
        p = cnn.predict(splits["val"][0])
        acc = float(((p > 0.5) == splits["val"][2]).mean())
        log(f"CNN auxiliary task: {acc:.1%} of held-out labels right")
    idx_to_word = build_vocab(splits["train"][1])
    word_to_idx = {w: i for i, w in enumerate(idx_to_word)}
    T = max(len(c.split()) for s in splits.values() for c in s[1]) + 1
    data = {"idx_to_word": idx_to_word, "word_to_idx": word_to_idx}
    images = {}
    for name, (ims, caps, _) in splits.items():
        data[f"{name}_features"] = cnn.features(ims)
        data[f"{name}_captions"] = encode_captions(caps, word_to_idx, T)
        data[f"{name}_image_idxs"] = np.arange(len(ims), dtype=np.int32)
        images[name] = (ims, caps)
    return data, cnn, images


def train_cnn(images, labels, epochs=4, batch_size=32, lr=3e-3, seed=0, progress=True):
    """Train SmallCNN on the auxiliary multi-label task, then set its feature standardisation."""
    cnn = SmallCNN(image_size=images.shape[1], n_labels=labels.shape[1], seed=seed)
    opt = _train.Adam(cnn, lr=lr)
    rng = np.random.default_rng(seed)
    n_batches = math.ceil(len(images) / batch_size)
    bar = Progress(epochs * n_batches, desc="CNN", enabled=progress)
    try:
        for _ in range(epochs):
            perm = rng.permutation(len(images))
            for i in range(0, len(images), batch_size):
                b = perm[i:i + batch_size]
                opt.zero_grad()
                loss = cnn.loss(images[b], labels[b])
                opt.step()
                bar.update(1, loss=f"{loss:.3f}")
    finally:
        bar.close()
    cnn.fit_feature_stats(images)
    return cnn


# ---------------------------------------------------------------- evaluation
def references_by_image(captions, image_idxs, idx_to_word):
    """{image index: [token list, ...]} from encoded captions."""
    refs = defaultdict(list)
    for cap, i in zip(decode_captions(captions, idx_to_word), image_idxs):
        refs[int(i)].append(cap)
    return refs


def evaluate(model, data, split="val", max_images=None, max_length=None, batch_size=500):
    """Greedy captions for the split's images, scored against all their reference captions.
    Returns {"bleu1".."bleu4", "exact", "n_images"}."""
    feats = data[f"{split}_features"]
    caps, idxs = data[f"{split}_captions"], data[f"{split}_image_idxs"]
    refs = references_by_image(caps, idxs, data["idx_to_word"])
    img = sorted(refs)[:max_images] if max_images else sorted(refs)
    max_length = max_length or caps.shape[1]
    hyps = []
    for s in range(0, len(img), batch_size):
        ids = model.generate(feats[img[s:s + batch_size]], max_length)
        hyps += decode_captions(ids, data["idx_to_word"])
    R = [refs[i] for i in img]
    b = corpus_bleu(R, hyps, 4)
    return {"bleu1": b[0], "bleu2": b[1], "bleu3": b[2], "bleu4": b[3], "exact": exact_match(R, hyps),
            "n_images": len(img)}


def baseline_bleu(data, split="val"):
    """The trivial baseline: the most frequent training caption, given for every image."""
    train = decode_captions(data["train_captions"], data["idx_to_word"])
    best = list(Counter(tuple(c) for c in train).most_common(1)[0][0])
    refs = references_by_image(data[f"{split}_captions"], data[f"{split}_image_idxs"], data["idx_to_word"])
    R = [refs[i] for i in sorted(refs)]
    b = corpus_bleu(R, [best] * len(R), 4)
    return {"bleu1": b[0], "bleu2": b[1], "bleu3": b[2], "bleu4": b[3], "exact": exact_match(R, [best] * len(R))}


# ---------------------------------------------------------------- training
def _metadata(model, data, extra):
    return {"kind": KIND, "idx_to_word": list(data["idx_to_word"]), "max_length": int(data["train_captions"].shape[1]),
            "captioner": model.captioner.config(),
            "cnn": None if not hasattr(model, "cnn") else model.cnn.config(), **extra}


def build_model(meta, backend=None):
    """A CaptionPipeline shaped as the checkpoint metadata says (weights not loaded)."""
    cfg = dict(meta["captioner"])
    dtype = np.dtype(cfg.pop("dtype"))
    captioner = CaptioningRNN(dtype=dtype, backend=backend, **cfg)
    cnn = SmallCNN(**meta["cnn"]) if meta.get("cnn") else None
    return CaptionPipeline(captioner, cnn)


def load_model(path, backend=None, cell=None):
    """(CaptionPipeline, load_checkpoint info) from a checkpoint written by train_captioner, with the
    checkpoint's cell (checkpoints without one are "rnn"); a checkpoint of another kind of model, or (when
    `cell` is given) of another cell, raises ValueError."""
    from .char_lm import read_checkpoint_info

    info = read_checkpoint_info(path)
    meta = info.get("metadata") or {}
    if meta.get("kind") != KIND:
        what = f"a {meta['kind']!r} model" if meta.get("kind") else "not from rnnfast's applications (no model kind)"
        raise ValueError(f"checkpoint {path} is {what}, not a captioning model: use a checkpoint written by "
                         f"`rnnfast caption train` (or train_captioner)")
    saved = meta.get("captioner", {}).get("cell", "rnn")
    if cell is not None and check_cell(cell) != saved:
        raise ValueError(f"checkpoint {path} holds a cell={saved!r} model, not cell={cell!r}; leave the cell "
                         f"out to use the checkpoint's, or start a new run")
    model = build_model(meta, backend)
    info = _train.load_checkpoint(path, model=model)
    return model, info


def train_captioner(data, cnn=None, hidden_size=128, embed_size=64, num_layers=1, conditioning="both",
                    batch_size=50, lr=5e-3, lr_decay=1.0, max_steps=None, max_seconds=None, seed=0, clip_norm=5.0,
                    eval_every=None, eval_images=200, checkpoint=None, checkpoint_every=None, resume=None,
                    metadata=None, progress=True, log=print, backend=None, cell=None):
    """Train on data (the layout of load_coco_h5 / prepare_shapes) with minibatches of captions drawn by a
    seeded RNG; Adam with optional per-epoch lr decay. Stops after max_steps or max_seconds. With `resume`
    the run continues exactly (model, optimizer, step, RNG). cell: "rnn" (the default for a new run), "lstm"
    or "gru" (those two need conditioning="h0"); a resumed run uses the checkpoint's cell (giving a
    different one raises ValueError). Returns {"model", "history", "val", "steps", "seconds"}."""
    if max_steps is None and max_seconds is None:
        raise ValueError("give max_steps or max_seconds (a step or a time budget)")
    from .char_lm import check_budget

    check_budget(max_steps, max_seconds)
    caps, idxs, feats = data["train_captions"], data["train_image_idxs"], data["train_features"]
    if len(caps) == 0:
        raise ValueError("no training captions")
    if resume is not None:
        model, info = load_model(resume, backend, cell=cell)
        meta = info["metadata"]
        opt = _train.Adam(model.captioner, lr=lr)
        rng = np.random.default_rng()
        info = _train.load_checkpoint(resume, model=model, optimizer=opt, rng=rng)
        step = info["step"]
        history = dict(info["history"] or {"step": [], "loss": []})
        history.update({k: list(v) for k, v in info["extra"].items() if k in ("val_step", "val_bleu4")})
        batch_size, lr_decay, clip_norm = meta["batch_size"], meta["lr_decay"], meta["clip_norm"]
        extra = {k: meta[k] for k in ("batch_size", "lr_decay", "clip_norm", "data") if k in meta}
    else:
        captioner = CaptioningRNN(feats.shape[1], len(data["idx_to_word"]), hidden_size, embed_size, num_layers,
                                  conditioning, backend=backend, seed=seed, cell="rnn" if cell is None else cell)
        model = CaptionPipeline(captioner, cnn)
        opt = _train.Adam(model.captioner, lr=lr)
        rng = np.random.default_rng(seed)
        step = 0
        history = {"step": [], "loss": []}
        extra = {"batch_size": int(batch_size), "lr_decay": float(lr_decay), "clip_norm": clip_norm,
                 **(metadata or {})}
    meta = _metadata(model, data, extra)
    history.setdefault("val_step", [])
    history.setdefault("val_bleu4", [])
    steps_per_epoch = max(1, len(caps) // batch_size)
    if eval_every is None:
        eval_every = max(1, max_steps // 5) if max_steps else 200
    has_val = "val_captions" in data and len(data["val_captions"]) > 0

    trainer = _train.Trainer(model.captioner, opt, clip_norm=clip_norm or None, checkpoint=checkpoint,
                             checkpoint_every=checkpoint_every if checkpoint else None, progress=progress,
                             metadata=meta, checkpoint_model=model, desc="caption", log=log)
    trainer.rng, trainer.step_count, trainer.history = rng, step, history
    trainer.extra_state = (lambda: {"val_step": history["val_step"], "val_bleu4": history["val_bleu4"]}, None)
    val = None

    def get_batch(rng):
        b = rng.integers(0, len(caps), batch_size)
        return feats[idxs[b]], caps[b]

    def after_step(tr, loss):
        if lr_decay != 1.0 and tr.step_count % steps_per_epoch == 0:
            opt.lr *= lr_decay

    def evaluate_hook(tr):
        nonlocal val
        val = evaluate(model.captioner, data, "val", max_images=eval_images)
        history["val_step"].append(tr.step_count)
        history["val_bleu4"].append(val["bleu4"])
        tr.write(f"step {tr.step_count}: val BLEU-4 {val['bleu4']:.3f}, exact {val['exact']:.1%} "
                 f"({val['n_images']} images)")

    start = time.perf_counter()
    try:
        trainer.fit(get_batch, max_steps, batch_size, max_seconds=max_seconds, after_step=after_step,
                    hooks=[(eval_every, evaluate_hook)] if has_val and eval_every else [], should_stop=take_stop)
    except _train.TrainingDiverged as e:
        raise _train.TrainingDiverged(f"training diverged: {e}; lower the learning rate (the last checkpoint, "
                                      f"if any, is untouched)") from None
    seconds = time.perf_counter() - start
    if checkpoint:
        trainer.save(checkpoint)
    return {"model": model, "history": history, "val": val, "steps": trainer.step_count, "seconds": seconds}


# ---------------------------------------------------------------- picture
def caption_grid(images, generated, truth, path, cols=4, title=None):
    """A PNG grid of images with the generated (green when exactly right, red otherwise) and the true
    caption under each. Returns the path, or None when matplotlib is not installed. The caller's matplotlib
    backend is never changed (a standalone Figure, no pyplot)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    import textwrap
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(3.0 * cols, 4.0 * rows), dpi=72)
    axes = fig.subplots(rows, cols)
    for k, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(np.clip(images[k], 0, 1), interpolation="nearest")
        ok = generated[k] == truth[k]
        ax.set_title("gen: " + "\n".join(textwrap.wrap(generated[k], 30)), fontsize=8,
                     color="green" if ok else "red")
        ax.text(0.5, -0.04, "true: " + "\n".join(textwrap.wrap(truth[k], 30)), fontsize=8, ha="center",
                va="top", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(h_pad=3.0)
    fig.savefig(path)
    return path
