"""The built-in captioning data set: small RGB scenes of one to three coloured shapes, with captions.

What it is: a deterministic generator (same seed, same images and captions, on any machine) of 32x32
scenes and their captions from a small grammar ("a red circle left of a blue square"), the fixed
train/val/test splits, and the auxiliary labels (which colour-shape pairs appear) the CNN is trained on.
What it is not: a model or a tokenizer beyond whitespace splitting of the grammar's output.
"""
from __future__ import annotations

import numpy as np

COLOURS = {"red": (0.90, 0.12, 0.10), "green": (0.10, 0.78, 0.15), "blue": (0.15, 0.30, 1.00),
           "yellow": (0.95, 0.90, 0.10)}
SHAPES = ("circle", "square", "triangle")
IMAGE_SIZE = 32
PAIRS = [(c, s) for c in COLOURS for s in SHAPES]   # the auxiliary labels: (colour, shape) present?


def _draw(img, yy, xx, shape, cy, cx, r, rgb):
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        m = dy * dy + dx * dx <= r * r
    elif shape == "square":
        s = 0.85 * r
        m = (np.abs(dx) <= s) & (np.abs(dy) <= s)
    else:   # triangle, apex up
        m = (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) * 0.55)
    img[m] = rgb


def _scene(rng):
    """One scene: a list of (colour, shape, cy, cx, r) and its caption (a string)."""
    S = IMAGE_SIZE
    n = int(rng.integers(1, 4))
    layout = "horizontal" if n == 3 or (n == 2 and rng.random() < 0.5) else ("vertical" if n == 2 else "single")
    objs = []
    base = None
    for k in range(n):
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        if layout == "single":
            r = rng.uniform(4.0, 8.0)
            cy, cx = rng.uniform(r + 1, S - r - 1, size=2)
        else:
            slot = S / n
            r = rng.uniform(3.5, min(7.0, slot / 2 - 1.0))
            along = k * slot + rng.uniform(r + 0.5, slot - r - 0.5)
            if n == 2:   # two shapes share a row (or column) give or take 3 px: the relation is unambiguous
                if base is None:
                    base = rng.uniform(8.0, S - 8.0)
                across = float(np.clip(base + rng.uniform(-3.0, 3.0), r + 1, S - r - 1))
            else:
                across = rng.uniform(r + 1, S - r - 1)
            cy, cx = (across, along) if layout == "horizontal" else (along, across)
        objs.append((colour, shape, cy, cx, r))
    rel = " left of " if layout == "horizontal" else " above "
    caption = rel.join(f"a {c} {s}" for c, s, *_ in objs)
    return objs, caption


def generate_shapes(n, seed):
    """n scenes from `seed`. Returns (images (n, 32, 32, 3) float32 in [0, 1], captions (list of str),
    labels (n, len(PAIRS)) float32: 1 where that (colour, shape) pair appears)."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    rng = np.random.default_rng(seed)
    S = IMAGE_SIZE
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    images = np.empty((n, S, S, 3), np.float32)
    labels = np.zeros((n, len(PAIRS)), np.float32)
    captions = []
    for i in range(n):
        bg = rng.uniform(0.0, 0.25)
        img = np.full((S, S, 3), bg, np.float32)
        objs, cap = _scene(rng)
        for colour, shape, cy, cx, r in objs:
            _draw(img, yy, xx, shape, cy, cx, r, COLOURS[colour])
            labels[i, PAIRS.index((colour, shape))] = 1.0
        img += rng.normal(0.0, 0.03, size=img.shape).astype(np.float32)
        images[i] = np.clip(img, 0.0, 1.0)
        captions.append(cap)
    return images, captions, labels


def shapes_splits(n_train=4000, n_val=500, n_test=500, seed=0):
    """Fixed train/val/test splits: each split has its own stream derived from `seed`, so the test set
    does not change when n_train does. Returns {"train"|"val"|"test": (images, captions, labels)}."""
    ss = np.random.SeedSequence(seed).spawn(3)
    return {name: generate_shapes(k, s) for name, k, s in
            (("train", n_train, ss[0]), ("val", n_val, ss[1]), ("test", n_test, ss[2]))}
