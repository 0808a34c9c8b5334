"""Loader for precomputed image features and captions in the cs231n COCO captioning layout (HDF5).

What it is: read `train_features`, `train_captions`, `train_image_idxs`, `val_*` and the vocabulary
(`idx_to_word`, `word_to_idx`) either from the cs231n folder (coco2014_captions.h5, <split>2014_vgg16_fc7
[_pca].h5 with a `features` dataset, coco2014_vocab.json) or from one HDF5 file holding all of them, and
check it. What it is not: a downloader or a feature extractor; h5py is needed only here (optional).
"""
from __future__ import annotations

import json
import os

import numpy as np

SPECIAL = ("<NULL>", "<START>", "<END>")


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("loading HDF5 caption data needs h5py: pip install h5py") from None
    return h5py


def _read_h5(path, h5py):
    try:
        with h5py.File(path, "r") as f:
            out = {}
            for k, v in f.items():
                if isinstance(v, h5py.Dataset):
                    out[k] = v[()]
            for k, v in f.attrs.items():
                out.setdefault(k, v)
            return out
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file ({e})") from None


def _words(v):
    return [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in np.asarray(v).ravel()]


def load_coco_h5(path, pca_features=True, max_train=None, seed=0):
    """Load a caption data set. `path` is the cs231n data folder or one HDF5 file.

    Returns a dict: "<split>_features" (N_img, F) float32, "<split>_captions" (N_cap, T) int32 (ids, padded
    with <NULL>), "<split>_image_idxs" (N_cap,) int32 indices into the features, for each split found
    ("train", "val", ...), plus "idx_to_word" (list of V words) and "word_to_idx" (dict). max_train keeps
    a random subset (by `seed`) of the training captions. Raises FileNotFoundError when the path or a
    needed file is missing and ValueError naming the key when the contents are malformed.
    """
    h5py = _h5py()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"caption data not found: {path}")
    if os.path.isdir(path):
        cap = os.path.join(path, "coco2014_captions.h5")
        if not os.path.isfile(cap):
            raise FileNotFoundError(f"{path} has no coco2014_captions.h5 (the cs231n layout)")
        data = _read_h5(cap, h5py)
        for split in ("train", "val"):
            names = [f"{split}2014_vgg16_fc7_pca.h5", f"{split}2014_vgg16_fc7.h5"]
            if not pca_features:
                names.reverse()
            feat = next((os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))), None)
            if feat is not None:
                d = _read_h5(feat, h5py)
                if "features" not in d:
                    raise ValueError(f"{feat} must hold a dataset 'features' (N_img, F)")
                data[f"{split}_features"] = d["features"]
        vocab = os.path.join(path, "coco2014_vocab.json")
        if os.path.isfile(vocab):
            with open(vocab, encoding="utf-8") as f:
                try:
                    data.update(json.load(f))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{vocab} is not valid JSON ({e})") from None
    else:
        data = _read_h5(path, h5py)
        vocab = os.path.join(os.path.dirname(path), "coco2014_vocab.json")
        if "idx_to_word" not in data and os.path.isfile(vocab):
            with open(vocab, encoding="utf-8") as f:
                data.update(json.load(f))
    return _validate(data, path, max_train, seed)


def _validate(data, path, max_train, seed):
    if "idx_to_word" not in data:
        raise ValueError(f"{path}: no 'idx_to_word' vocabulary (a dataset in the file or coco2014_vocab.json)")
    idx_to_word = _words(data["idx_to_word"])
    for i, w in enumerate(SPECIAL):
        if len(idx_to_word) <= i or idx_to_word[i] != w:
            raise ValueError(f"{path}: idx_to_word must start with {list(SPECIAL)}, got {idx_to_word[:3]}")
    V = len(idx_to_word)
    out = {"idx_to_word": idx_to_word, "word_to_idx": {w: i for i, w in enumerate(idx_to_word)}}
    splits = sorted({k[:-len("_captions")] for k in data if k.endswith("_captions")})
    if not splits:
        raise ValueError(f"{path}: no '<split>_captions' dataset (expected train_captions)")
    for s in splits:
        for key in (f"{s}_captions", f"{s}_image_idxs", f"{s}_features"):
            if key not in data:
                raise ValueError(f"{path}: missing '{key}'")
        caps = np.asarray(data[f"{s}_captions"])
        idxs = np.asarray(data[f"{s}_image_idxs"])
        feats = np.asarray(data[f"{s}_features"])
        if caps.ndim != 2 or not np.issubdtype(caps.dtype, np.integer):
            raise ValueError(f"{s}_captions must be an integer array of shape (N_cap, T), got "
                             f"{caps.dtype} {caps.shape}")
        if caps.size and (caps.min() < 0 or caps.max() >= V):
            raise ValueError(f"{s}_captions must hold word ids in [0, V) = [0, {V}), got "
                             f"[{caps.min()}, {caps.max()}]")
        if idxs.shape != (caps.shape[0],) or not np.issubdtype(idxs.dtype, np.integer):
            raise ValueError(f"{s}_image_idxs must be an integer array of shape (N_cap,) = ({caps.shape[0]},), "
                             f"got {idxs.dtype} {idxs.shape}")
        if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.floating):
            raise ValueError(f"{s}_features must be a float array of shape (N_img, F), got "
                             f"{feats.dtype} {feats.shape}")
        if idxs.size and (idxs.min() < 0 or idxs.max() >= feats.shape[0]):
            raise ValueError(f"{s}_image_idxs must index {s}_features rows [0, {feats.shape[0]}), got "
                             f"[{idxs.min()}, {idxs.max()}]")
        if s == "train" and max_train is not None and max_train < len(caps):
            keep = np.sort(np.random.default_rng(seed).choice(len(caps), int(max_train), replace=False))
            caps, idxs = caps[keep], idxs[keep]
        out[f"{s}_captions"] = caps.astype(np.int32)
        out[f"{s}_image_idxs"] = idxs.astype(np.int32)
        out[f"{s}_features"] = feats.astype(np.float32)
    return out
