"""The applications' subcommands of the `rnnfast` console script: train-char, sample, caption, demo.

What it is: argument parsers (added to rnnfast.cli's parser by add_commands) and thin handlers that call
rnnfast.models.*; bad input ends with a one-line "rnnfast <cmd>: error: ..." and exit status 2. What it
is not: any training or model logic (char_lm.py, captioning.py).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import tempfile
import zipfile

from ._progress import Progress, TrainingInterrupted

_SAMPLE_BAR_FROM = 2000    # `rnnfast sample --length` above this shows a progress bar


def _errors(fn):
    """Turn the expected failures of bad input into a message and exit status 2 (no traceback), and a
    Ctrl-C that stopped training (and saved its checkpoint) into a message and exit status 130."""
    @functools.wraps(fn)
    def run(args):
        try:
            with _deferred_interrupt(args.command):
                return fn(args)
        except TrainingInterrupted as e:
            where = f"; checkpoint saved: {e.checkpoint}" if getattr(e, "checkpoint", None) else \
                "; no checkpoint (none was asked for)"
            print(f"rnnfast {args.command}: interrupted at step {getattr(e, 'step', '?')}{where}", file=sys.stderr)
            return 130
        except (ValueError, OSError, KeyError, ImportError, FloatingPointError, RuntimeError, TypeError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"rnnfast {args.command}: error: {msg}", file=sys.stderr)
            return 2
    return run


@contextlib.contextmanager
def _deferred_interrupt(command=None):
    """While a command runs, the first Ctrl-C asks the training loop to stop after the current step (it
    then saves its checkpoint; `rnnfast sample` prints the text so far); a second one stops at once. Only
    in the main thread (signals go there)."""
    import signal
    import threading

    from ._progress import clear_stop, request_stop, stop_requested

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop_requested():
            raise KeyboardInterrupt
        request_stop()
        what = ("printing the text so far" if command == "sample"
                else "stopping after this step and saving the checkpoint")
        print(f"\nCtrl-C: {what} (Ctrl-C again to quit now)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if stop_requested():    # asked outside a training loop (loading data, the CNN, evaluation)
            clear_stop()
            raise KeyboardInterrupt


def _budget(args, default_seconds):
    steps, seconds = args.steps, args.seconds
    if steps is None and seconds is None:
        seconds = default_seconds
    return steps, seconds


def _check_backend(name):
    """Fail before any work when the asked-for backend is unavailable (e.g. cuda without a GPU)."""
    if name is not None:
        from ..backends import resolve

        resolve(name)


def _check_output(path, what):
    """Fail before any work when `path` cannot be written: its folder is missing or read-only, or it is a
    folder. Nothing is left behind by the check."""
    if not path:
        return
    if os.path.isdir(path):
        raise ValueError(f"{what} {path} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{what} {path}: the folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path}: cannot write in {folder} ({e.strerror})") from None
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {path} exists and is not writable")


def _check_checkpoint(path):
    """A checkpoint to read: present, and a .npz archive (a truncated or foreign file is named as such)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an rnnfast checkpoint: it is not a .npz archive (truncated, or "
                         f"another kind of file)")


# ---------------------------------------------------------------- train-char
@_errors
def _cmd_train_char(args):
    from ..train import plot_history
    from .char_lm import default_corpus, load_text, train_char_lm

    # everything that can be checked is checked before any work: backend, output paths, the checkpoint
    checkpoint = args.checkpoint or args.resume or "char_lm.npz"    # a resumed run writes back to its file
    plot = args.plot or os.path.splitext(checkpoint)[0] + "_loss.png"
    _check_backend(args.backend)
    _check_output(checkpoint, "--checkpoint")
    _check_output(plot, "--plot")
    source, max_chars = args.text, args.max_chars
    if args.resume:
        _check_checkpoint(args.resume)
        from .char_lm import read_checkpoint_info

        st = ((read_checkpoint_info(args.resume).get("metadata") or {}).get("train_state") or {})
        if not st:
            raise ValueError(f"{args.resume} is not a train-char checkpoint (it has no training state to resume)")
        if not source:                  # continue on the text the checkpoint was trained on
            source, max_chars = st.get("text_source"), max_chars or st.get("text_chars")
    if source:
        text, desc = load_text(source, max_chars), f"{source}"
    else:
        text, desc = default_corpus(max_chars or 1_000_000)
    steps, seconds = _budget(args, 60.0)
    print(f"corpus: {desc} ({len(text):,} chars, {len(set(text))} distinct)")
    r = train_char_lm(text, hidden_size=args.hidden, num_layers=args.layers, seq_length=args.seq_length,
                      batch_size=args.batch, lr=args.lr, optimizer=args.optimizer, max_steps=steps,
                      max_seconds=seconds, seed=args.seed, clip_norm=args.clip, val_fraction=args.val_fraction,
                      sample_every=args.sample_every, checkpoint=checkpoint,
                      checkpoint_every=args.checkpoint_every, resume=args.resume, progress=not args.no_progress,
                      backend=args.backend, text_source=os.path.abspath(source) if source else None,
                      cell=args.cell)
    m = r["model"]
    print(f"trained {r['steps']} steps in {r['seconds']:.1f} s ({r['chars_per_sec']:,.0f} chars/s); "
          f"validation {r['val_bpc']:.3f} bits/char (uniform over {m.vocab.size} chars: {r['uniform_bpc']:.3f})"
          if r["val_bpc"] is not None else f"trained {r['steps']} steps in {r['seconds']:.1f} s")
    print(f"checkpoint: {checkpoint}")
    if plot:
        try:
            plot_history(r["history"], plot, smooth=0.9, title="character-level LM", ylabel="bits / character")
            print(f"loss curve: {plot}")
        except ImportError:
            print("loss curve: skipped (matplotlib is not installed: pip install matplotlib)")
    return 0


# ---------------------------------------------------------------- sample
@_errors
def _cmd_sample(args):
    from .char_lm import load_model

    _check_backend(args.backend)
    _check_checkpoint(args.checkpoint)
    model, _ = load_model(args.checkpoint, backend=args.backend)
    prime = args.prime if args.prime is not None else ("\n" if "\n" in model.vocab.index else model.vocab.chars[0])
    long = args.length > _SAMPLE_BAR_FROM       # then a progress bar, over pieces of >= 500 chars (<= ~200)
    pieces = model.sample_pieces(prime, args.length, temperature=args.temperature, top_k=args.top_k,
                                 seed=args.seed, piece_length=max(500, -(-args.length // 200)) if long
                                 else max(1, args.length))
    bar = Progress(args.length, desc="sampling", unit="char", enabled=long and not args.no_progress)
    parts, rc = [prime], 0
    try:
        for text in pieces:
            parts.append(text)
            bar.update(len(text))
    except TrainingInterrupted:                 # the first Ctrl-C: print what was generated
        rc = 130
    finally:
        bar.close()
    sys.stdout.write("".join(parts) + "\n")
    if rc:
        n = sum(map(len, parts[1:]))
        print(f"rnnfast sample: interrupted after {n} of {args.length} characters", file=sys.stderr)
    return rc


# ---------------------------------------------------------------- caption
def _data_info(args):
    """Where the training data comes from: the shapes generator's settings, or an HDF5 path."""
    if args.data in (None, "shapes"):
        return {"source": "shapes", "n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
                "seed": args.data_seed}
    return {"source": os.path.abspath(args.data)}


def _shapes_split(model, meta, split):
    """Regenerate a split of the shapes set and encode it with the checkpoint's vocabulary and CNN."""
    import numpy as np

    from . import captioning as C
    from .shapes import shapes_splits

    d = meta["data"]
    sizes = {"train": (d["n_train"], 0, 0), "val": (0, d["n_val"], 0), "test": (0, 0, d["n_test"])}[split]
    ims, caps, _ = shapes_splits(*sizes, seed=d["seed"])[split]
    w2i = {w: i for i, w in enumerate(meta["idx_to_word"])}
    data = {"idx_to_word": meta["idx_to_word"], f"{split}_features": model.image_features(ims),
            f"{split}_captions": C.encode_captions(caps, w2i, meta["max_length"] - 1),
            f"{split}_image_idxs": np.arange(len(ims), dtype=np.int32)}
    return data, ims, caps


@_errors
def _cmd_caption_train(args):
    from . import captioning as C
    from .coco_h5 import load_coco_h5

    _check_backend(args.backend)           # before the CNN is trained
    checkpoint = args.checkpoint or args.resume or "caption.npz"    # a resumed run writes back to its file
    _check_output(checkpoint, "--checkpoint")
    _check_output(args.grid, "--grid")
    if args.resume is not None:
        _check_checkpoint(args.resume)
    dinfo = _data_info(args)
    cnn = images = None
    conditioning = args.conditioning or ("both" if args.cell in (None, "rnn") else "h0")
    if args.resume is None:             # before any data is made: a gated cell cannot take "c" or "both"
        C.check_conditioning(args.cell or "rnn", conditioning)
    if args.resume is not None:
        model, info = C.load_model(args.resume, args.backend, cell=args.cell)
        meta = info["metadata"]
        dinfo = meta["data"]
        if dinfo["source"] == "shapes":
            data, images = {"idx_to_word": meta["idx_to_word"]}, {}
            for split in ("train", "val", "test"):
                d, ims, caps = _shapes_split(model, meta, split)
                data.update(d)
                images[split] = (ims, caps)
        else:
            data = load_coco_h5(dinfo["source"], max_train=args.max_train)
    elif dinfo["source"] == "shapes":
        data, cnn, images = C.prepare_shapes(dinfo["n_train"], dinfo["n_val"], dinfo["n_test"], dinfo["seed"],
                                             cnn_epochs=args.cnn_epochs, progress=not args.no_progress)
    else:
        data = load_coco_h5(dinfo["source"], max_train=args.max_train)
    steps, seconds = _budget(args, 60.0)
    r = C.train_captioner(data, cnn, hidden_size=args.hidden, embed_size=args.embed, num_layers=args.layers,
                          conditioning=conditioning, batch_size=args.batch, lr=args.lr, max_steps=steps,
                          max_seconds=seconds, seed=args.seed, checkpoint=checkpoint,
                          checkpoint_every=args.checkpoint_every, resume=args.resume, metadata={"data": dinfo},
                          progress=not args.no_progress, backend=args.backend, cell=args.cell)
    print(f"trained {r['steps']} steps in {r['seconds']:.1f} s")
    model = r["model"]
    split = "test" if "test_captions" in data else "val"
    if f"{split}_captions" in data:
        print(_format_eval(C.evaluate(model.captioner, data, split), split, C.baseline_bleu(data, split)))
        if images is not None and args.grid:
            _grid(model, data, images[split], split, args.grid, 12)
    print(f"checkpoint: {checkpoint}")
    return 0


@_errors
def _cmd_caption_compare(args):
    from . import captioning as C

    _check_backend(args.backend)
    dinfo = _data_info(args)
    if dinfo["source"] == "shapes":
        data, cnn, _ = C.prepare_shapes(dinfo["n_train"], dinfo["n_val"], dinfo["n_test"], dinfo["seed"],
                                        cnn_epochs=args.cnn_epochs, progress=not args.no_progress)
    else:
        from .coco_h5 import load_coco_h5

        data, cnn = load_coco_h5(dinfo["source"], max_train=args.max_train), None
    split = "test" if "test_captions" in data else "val"
    steps, seconds = _budget(args, 30.0)
    print(f"| conditioning | steps | seconds | {split} BLEU-1 | BLEU-4 | exact match |")
    print("|---|---:|---:|---:|---:|---:|")
    for cond in ("h0", "c", "both"):
        r = C.train_captioner(data, cnn, hidden_size=args.hidden, embed_size=args.embed, conditioning=cond,
                              batch_size=args.batch, lr=args.lr, max_steps=steps, max_seconds=seconds,
                              seed=args.seed, eval_every=0, progress=False, log=lambda s: None, backend=args.backend)
        ev = C.evaluate(r["model"].captioner, data, split)
        print(f"| {cond} | {r['steps']} | {r['seconds']:.1f} | {ev['bleu1']:.3f} | {ev['bleu4']:.3f} | "
              f"{ev['exact']:.1%} |", flush=True)
    return 0


def _format_eval(ev, split, base=None):
    s = (f"{split}: BLEU-1 {ev['bleu1']:.3f}  BLEU-2 {ev['bleu2']:.3f}  BLEU-3 {ev['bleu3']:.3f}  "
         f"BLEU-4 {ev['bleu4']:.3f}  exact match {ev['exact']:.1%}  ({ev['n_images']} images)")
    if base is not None:
        s += f"\nbaseline (most frequent training caption): BLEU-4 {base['bleu4']:.3f}, BLEU-1 {base['bleu1']:.3f}"
    return s


def _grid(model, data, split_images, split, path, k):
    from . import captioning as C

    ims, caps = split_images
    ids = model.captioner.generate(data[f"{split}_features"][:k], data[f"{split}_captions"].shape[1])
    gen = [" ".join(w) for w in C.decode_captions(ids, data["idx_to_word"])]
    if C.caption_grid(ims[:k], gen, list(caps[:k]), path, title=f"held-out ({split}) images") is None:
        print("caption grid: skipped (matplotlib is not installed: pip install matplotlib)")
    else:
        print(f"caption grid: {path}")


def _caption_split(args):
    from . import captioning as C

    _check_backend(args.backend)
    _check_checkpoint(args.checkpoint)
    model, info = C.load_model(args.checkpoint, args.backend)
    meta = info["metadata"]
    if args.data is None and meta["data"]["source"] == "shapes":
        split = args.split or "test"
        data, ims, caps = _shapes_split(model, meta, split)
        return model, data, split, (ims, caps)
    source = args.data or meta["data"]["source"]
    from .coco_h5 import load_coco_h5

    data = load_coco_h5(source)
    if list(data["idx_to_word"]) != list(meta["idx_to_word"]):
        raise ValueError(f"the vocabulary of {source} differs from the checkpoint's")
    split = args.split or "val"
    if f"{split}_captions" not in data:
        raise ValueError(f"{source} has no '{split}' split")
    return model, data, split, None


@_errors
def _cmd_caption_eval(args):
    from . import captioning as C

    model, data, split, _ = _caption_split(args)
    ev = C.evaluate(model.captioner, data, split, max_images=args.max_images)
    print(_format_eval(ev, split))
    return 0


@_errors
def _cmd_caption_sample(args):
    from . import captioning as C

    model, data, split, images = _caption_split(args)
    feats, caps = data[f"{split}_features"], data[f"{split}_captions"]
    refs = C.references_by_image(caps, data[f"{split}_image_idxs"], data["idx_to_word"])
    order = sorted(refs)
    if not 0 <= args.index < len(order):
        raise ValueError(f"--index must be in [0, {len(order)}) for the {split} split, got {args.index}")
    pick = order[args.index:args.index + args.count]
    ids = model.captioner.generate(feats[pick], caps.shape[1])
    for i, g in zip(pick, C.decode_captions(ids, data["idx_to_word"])):
        print(f"image {i}: {' '.join(g)}")
        for r in refs[i]:
            print(f"   true: {' '.join(r)}")
    if args.grid:
        if images is None:
            print("caption grid: skipped (the HDF5 data has features, not images)")
        else:
            ims, strs = images
            gen = [" ".join(w) for w in C.decode_captions(ids, data["idx_to_word"])]
            path = C.caption_grid(ims[pick], gen, [strs[i] for i in pick], args.grid)
            print("caption grid: skipped (matplotlib is not installed)" if path is None else f"caption grid: {path}")
    return 0


# ---------------------------------------------------------------- demo
@_errors
def _cmd_demo(args):
    from .char_lm import default_corpus, train_char_lm
    from .speed import training_comparison

    if os.environ.get("RNNFAST_NUM_THREADS"):   # a thread setting is for the cpu backend: a bad one stops here
        _check_backend("cpu")
    text, desc = default_corpus()
    print(f"rnnfast demo: a character-level RNN language model trained for {args.seconds:g} s on {desc}.")
    r = train_char_lm(text, hidden_size=args.hidden, num_layers=1, seq_length=args.seq_length,
                      batch_size=args.batch, lr=args.lr, max_seconds=args.seconds, seed=args.seed,
                      eval_every=0, progress=not args.no_progress)
    m = r["model"]
    print(f"\n{r['steps']} steps, {r['chars_per_sec']:,.0f} chars/s; validation {r['val_bpc']:.3f} bits/char "
          f"(uniform guessing: {r['uniform_bpc']:.2f})")
    for temp in (0.6, 1.0):
        print(f"\n--- sample, temperature {temp} ---")
        print("def " + m.sample("def ", args.length, temperature=temp, seed=args.seed))
    V, H, T = m.vocab.size, args.hidden, args.seq_length
    print(f"\n--- the whole training step (ManyToMany -> Trainer.step: one-hot input, RNN, head, softmax loss, "
          f"backward, clip_norm=5, Adam), V={V}, "
          f"H={H}, T={T}, timed now ---")
    training_comparison(V, H, T, tuple(dict.fromkeys((args.batch, 1))), seconds=args.bench_seconds,
                        include_torch=not args.no_torch, seed=args.seed)
    return 0


# ---------------------------------------------------------------- parsers
def _budget_args(q, what, default_seconds=60):
    q.add_argument("--steps", type=_positive_int, default=None, help=f"number of updates ({what})")
    q.add_argument("--seconds", type=_positive_float, default=None,
                   help=f"training time in seconds (default {default_seconds} when --steps is not given)")


def _number(s, cast, ok, what):
    try:
        v = cast(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"must be {what}, got {s}")
    return v


def _positive_int(s):
    return _number(s, int, lambda v: v >= 1, "an integer >= 1")


def _nonneg_int(s):
    return _number(s, int, lambda v: v >= 0, "an integer >= 0")


def _positive_float(s):
    return _number(s, float, lambda v: v > 0 and v != float("inf"), "a number > 0")


def _nonneg_float(s):
    return _number(s, float, lambda v: 0 <= v < float("inf"), "a number >= 0")


def _fraction(s):
    return _number(s, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


_BACKEND_HELP = "numpy (the reference), cpu (the C++ kernels) or cuda (needs a GPU); default: the best available"


def _caption_common_args(q):
    """The data and model options `caption train` and `caption compare` share."""
    q.add_argument("--data", default=None, help="'shapes' (default) or a cs231n COCO HDF5 file or folder")
    q.add_argument("--max-train", type=_positive_int, default=None, help="HDF5 data: keep this many captions")
    q.add_argument("--n-train", type=_positive_int, default=4000, help="shapes data: training images (4000)")
    q.add_argument("--n-val", type=_positive_int, default=300, help="shapes data: validation images (300)")
    q.add_argument("--n-test", type=_positive_int, default=500, help="shapes data: test images (500)")
    q.add_argument("--data-seed", type=int, default=0, help="shapes data: seed of the generator (0)")
    q.add_argument("--cnn-epochs", type=_positive_int, default=6, help="epochs of the image CNN (6)")
    q.add_argument("--hidden", type=_positive_int, default=128, help="hidden size H (128)")
    q.add_argument("--embed", type=_positive_int, default=64, help="word embedding size (64)")
    q.add_argument("--batch", type=_positive_int, default=50, help="captions per update (50)")
    q.add_argument("--lr", type=_positive_float, default=5e-3, help="learning rate of Adam (5e-3)")
    q.add_argument("--seed", type=int, default=0, help="seed of the initialisation and batches (0)")


def add_commands(sub):
    """Add train-char, sample, caption and demo to the `rnnfast` subparsers."""
    q = sub.add_parser("train-char", help="train a character-level RNN language model")
    q.add_argument("--text", help="a UTF-8 text file (default: the Python standard library's sources)")
    q.add_argument("--max-chars", type=_positive_int, default=None, help="use at most this many characters")
    q.add_argument("--hidden", type=_positive_int, default=128, help="hidden size H (default 128)")
    q.add_argument("--layers", type=_positive_int, default=1, help="stacked layers L (default 1)")
    q.add_argument("--cell", choices=["rnn", "lstm", "gru"], default=None,
                   help="recurrent cell (default rnn; a resumed run keeps the checkpoint's)")
    q.add_argument("--seq-length", type=_positive_int, default=50, help="chunk length T of truncated BPTT")
    q.add_argument("--batch", type=_positive_int, default=32, help="parallel streams N (default 32)")
    q.add_argument("--lr", type=_positive_float, default=5e-3, help="learning rate (default 5e-3)")
    q.add_argument("--optimizer", default="adam", choices=["adam", "sgd", "rmsprop", "adagrad"],
                   help="the update rule (default adam)")
    q.add_argument("--clip", type=_nonneg_float, default=5.0, help="clip the global gradient norm (0: off)")
    q.add_argument("--val-fraction", type=_fraction, default=0.1, help="held-out tail of the text (default 0.1)")
    _budget_args(q, "an exact budget: a resumed run continues the same trajectory")
    q.add_argument("--seed", type=int, default=0, help="seed of the initialisation (default 0)")
    q.add_argument("--sample-every", type=_nonneg_int, default=500,
                   help="print a sample every so many steps (0: never; default 500)")
    q.add_argument("--checkpoint", default=None,
                   help="checkpoint file to write (default: the --resume file when resuming, else char_lm.npz)")
    q.add_argument("--checkpoint-every", type=_nonneg_int, default=500,
                   help="also save the checkpoint every so many steps (0: only at the end; default 500)")
    q.add_argument("--resume", help="continue from this checkpoint (and write back to it unless --checkpoint)")
    q.add_argument("--plot", help="loss-curve PNG (default: <checkpoint without .npz>_loss.png)")
    q.add_argument("--backend", choices=["cpu", "numpy", "cuda"], default=None, help=_BACKEND_HELP)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_train_char)

    q = sub.add_parser("sample", help="generate text from a train-char checkpoint")
    q.add_argument("checkpoint", help="a checkpoint written by rnnfast train-char (e.g. char_lm.npz)")
    q.add_argument("--prime", default=None, help="text to start from (default: a newline)")
    q.add_argument("--length", type=_nonneg_int, default=500, help="characters to generate (default 500)")
    q.add_argument("--temperature", type=_nonneg_float, default=0.8,
                   help="0 = greedy; higher = more random (default 0.8)")
    q.add_argument("--top-k", type=_positive_int, default=None, help="sample among the k likeliest characters")
    q.add_argument("--seed", type=int, default=None, help="seed of the sampling (default: a fresh one)")
    q.add_argument("--backend", choices=["cpu", "numpy", "cuda"], default=None, help=_BACKEND_HELP)
    q.add_argument("--no-progress", action="store_true",
                   help=f"no progress bar (shown on stderr when --length is over {_SAMPLE_BAR_FROM:,})")
    q.set_defaults(func=_cmd_sample)

    cap = sub.add_parser("caption", help="image captioning: train | sample | eval")
    csub = cap.add_subparsers(dest="caption_command", required=True)
    q = csub.add_parser("train", help="train a captioning model (default data: the built-in shapes scenes)")
    _caption_common_args(q)
    q.add_argument("--layers", type=_positive_int, default=1, help="stacked layers L (1)")
    q.add_argument("--cell", choices=["rnn", "lstm", "gru"], default=None,
                   help="recurrent cell (default rnn; a resumed run keeps the checkpoint's)")
    q.add_argument("--conditioning", choices=["h0", "c", "both"], default=None,
                   help="image -> initial state (h0), -> constant input every step (c), or both (default: both "
                        "for the rnn cell, h0 for lstm and gru, which have no constant input)")
    _budget_args(q, "exact on resume")
    q.add_argument("--checkpoint", default=None,
                   help="checkpoint file to write (default: the --resume file when resuming, else caption.npz)")
    q.add_argument("--checkpoint-every", type=_nonneg_int, default=500,
                   help="also save every so many steps (0: only at the end; default 500)")
    q.add_argument("--resume", help="continue from this checkpoint (and write back to it unless --checkpoint)")
    q.add_argument("--grid", default="captions.png", help="PNG of held-out images with captions ('' = none)")
    q.add_argument("--backend", choices=["cpu", "numpy", "cuda"], default=None, help=_BACKEND_HELP)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_caption_train)
    q = csub.add_parser("compare", help="train h0 / c / both conditioning with the same budget and data")
    _caption_common_args(q)
    _budget_args(q, "per conditioning", 30)
    q.add_argument("--backend", choices=["cpu", "numpy", "cuda"], default=None, help=_BACKEND_HELP)
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_caption_compare)
    for name, fn, hlp in (("sample", _cmd_caption_sample, "caption held-out images"),
                          ("eval", _cmd_caption_eval, "BLEU-1..4 and exact match on a held-out split")):
        q = csub.add_parser(name, help=hlp)
        q.add_argument("checkpoint", help="a checkpoint written by rnnfast caption train (e.g. caption.npz)")
        q.add_argument("--data", default=None, help="HDF5 file or folder (default: what the model trained on)")
        q.add_argument("--split", default=None, choices=["train", "val", "test"],
                       help="test for shapes, val for HDF5 by default")
        q.add_argument("--backend", choices=["cpu", "numpy", "cuda"], default=None, help=_BACKEND_HELP)
        if name == "sample":
            q.add_argument("--index", type=_nonneg_int, default=0, help="first image of the split (0)")
            q.add_argument("--count", type=_positive_int, default=4, help="images to caption (4)")
            q.add_argument("--grid", default=None, help="also write these as a PNG grid")
        else:
            q.add_argument("--max-images", type=_positive_int, default=None, help="evaluate on at most this many")
        q.set_defaults(func=fn)

    q = sub.add_parser("demo", help="train a char-level model for a minute, sample it, and time the step")
    q.add_argument("--seconds", type=_positive_float, default=60.0, help="training time (default 60)")
    q.add_argument("--bench-seconds", type=_positive_float, default=6.0, help="time for the speed comparison (6)")
    q.add_argument("--hidden", type=_positive_int, default=128, help="hidden size H (128)")
    q.add_argument("--seq-length", type=_positive_int, default=50, help="chunk length T (50)")
    q.add_argument("--batch", type=_positive_int, default=32, help="parallel streams N (32)")
    q.add_argument("--lr", type=_positive_float, default=1e-2, help="learning rate of Adam (1e-2)")
    q.add_argument("--length", type=_positive_int, default=300, help="characters per sample (300)")
    q.add_argument("--seed", type=int, default=0, help="seed of training and sampling (0)")
    q.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_demo)
