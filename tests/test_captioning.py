"""Tests of image captioning: BLEU against hand-computed values, the shapes data set, the CNN's and the
captioning model's gradients (central differences, float64), NULL masking, decoding, a short training run
against the trivial baseline, checkpoint/resume, and the cs231n-layout HDF5 loader with bad files.
Not tested here: the command line (test_cli.py).
"""
import json
import math

import numpy as np
import pytest

from rnnfast.models import captioning as C
from rnnfast.models.bleu import corpus_bleu, exact_match
from rnnfast.models.cnn import SmallCNN
from rnnfast.models.shapes import COLOURS, PAIRS, SHAPES, generate_shapes, shapes_splits


def toks(s):
    return s.split()


# ---------------------------------------------------------------- BLEU, by hand
def test_bleu_identical_is_one():
    assert corpus_bleu([[toks("a red circle above a blue square")]],
                       [toks("a red circle above a blue square")]) == pytest.approx([1.0] * 4)


def test_bleu_hand_computed_precisions():
    # p1 = 5/6 (the x2, cat, on, mat), p2 = 3/5, p3 = 1/4, p4 = 0; equal lengths so BP = 1
    b = corpus_bleu([toks("the cat is on the mat")], [toks("the cat sat on the mat")])
    assert b[0] == pytest.approx(5 / 6)
    assert b[1] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert b[2] == pytest.approx(0.5)          # (5/6 * 3/5 * 1/4) ** (1/3) = 0.125 ** (1/3)
    assert b[3] == 0.0


def test_bleu_clipped_counts():
    # "the" appears once in the reference: only one of the four counts
    assert corpus_bleu([toks("the cat")], [toks("the the the the")], 1) == pytest.approx([0.25])


def test_bleu_brevity_penalty():
    # all n-grams match, but c = 2 < r = 6: BP = exp(1 - 6/2)
    b = corpus_bleu([toks("the cat sat on the mat")], [toks("the cat")], 2)
    assert b == pytest.approx([math.exp(-2.0)] * 2)


def test_bleu_multiple_references_take_max_counts():
    b = corpus_bleu([[toks("a b d"), toks("x b c")]], [toks("a b c")], 3)
    assert b[:2] == pytest.approx([1.0, 1.0])
    assert b[2] == 0.0


def test_bleu_is_corpus_level():
    # counts are summed over sentences: p1 = (2 + 1) / 4, p2 = (1 + 0) / 2
    b = corpus_bleu([toks("a b"), toks("c e")], [toks("a b"), toks("c d")], 2)
    assert b == pytest.approx([0.75, math.sqrt(0.75 * 0.5)])


def test_bleu_bad_input():
    with pytest.raises(ValueError, match="same length"):
        corpus_bleu([toks("a")], [])


def test_exact_match():
    assert exact_match([toks("a b"), [toks("x"), toks("c d")]], [toks("a b"), toks("c d")]) == 1.0
    assert exact_match([toks("a b"), toks("c d")], [toks("a b"), toks("c")]) == 0.5


# ---------------------------------------------------------------- data
def test_shapes_deterministic_and_consistent():
    a = generate_shapes(20, 7)
    b = generate_shapes(20, 7)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])
    ims, caps, labels = a
    assert ims.shape == (20, 32, 32, 3) and ims.dtype == np.float32 and 0 <= ims.min() and ims.max() <= 1
    for cap, lab in zip(caps, labels):
        words = cap.split()
        assert 1 <= words.count("a") <= 3
        named = {(words[i + 1], words[i + 2]) for i, w in enumerate(words) if w == "a"}
        assert named == {PAIRS[k] for k in np.flatnonzero(lab)}
        assert all(c in COLOURS and s in SHAPES for c, s in named)


def test_shapes_splits_are_fixed():
    s1 = shapes_splits(10, 5, 6, seed=3)
    s2 = shapes_splits(30, 0, 6, seed=3)     # the test split does not depend on the other sizes
    assert np.array_equal(s1["test"][0], s2["test"][0])
    assert not np.array_equal(s1["train"][0][:5], s1["val"][0])


def test_encode_decode_captions():
    itw = C.build_vocab(["a red circle", "a blue square above a red circle"])
    w2i = {w: i for i, w in enumerate(itw)}
    ids = C.encode_captions(["a red circle", "a green circle"], w2i, T=6)
    assert ids.shape == (2, 7)
    assert ids[0, 0] == C.START and ids[0, 4] == C.END and (ids[0, 5:] == C.NULL).all()
    assert ids[1, 2] == C.UNK
    assert C.decode_captions(ids, itw) == [["a", "red", "circle"], ["a", "<UNK>", "circle"]]


# ---------------------------------------------------------------- gradients (central differences, float64)
def _num_grad(f, p, idx, eps=1e-6):
    old = p[idx]
    p[idx] = old + eps
    lp = f()
    p[idx] = old - eps
    lm = f()
    p[idx] = old
    return (lp - lm) / (2 * eps)


def test_cnn_gradients():
    cnn = SmallCNN(image_size=8, channels=(2, 3, 2), n_labels=3, seed=1)
    for k in cnn.params:
        cnn.params[k] = cnn.params[k].astype(np.float64)
        cnn.grads[k] = np.zeros_like(cnn.params[k])
    rng = np.random.default_rng(0)
    x = rng.random((2, 8, 8, 3))
    y = (rng.random((2, 3)) > 0.5).astype(np.float64)
    cnn._check = lambda im: im            # keep float64 (the public path casts to float32)
    cnn.zero_grad()
    cnn.loss(x, y)
    g = {k: v.copy() for k, v in cnn.grads.items()}
    for k, p in cnn.params.items():
        if k.startswith("norm."):
            continue
        for idx in list(np.ndindex(p.shape))[:6]:
            assert g[k][idx] == pytest.approx(_num_grad(lambda: cnn.loss(x, y), p, idx), abs=1e-7), (k, idx)


@pytest.mark.parametrize("conditioning", ["h0", "c", "both"])
def test_captioner_gradients(conditioning):
    rng = np.random.default_rng(1)
    m = C.CaptioningRNN(5, 7, hidden_size=4, embed_size=3, num_layers=2, conditioning=conditioning,
                        dtype=np.float64, seed=2)
    feats = rng.standard_normal((3, 5))
    caps = np.array([[1, 4, 5, 2, 0], [1, 6, 2, 0, 0], [1, 4, 4, 6, 2]])
    m.zero_grad()
    m.loss(feats, caps)
    g = {k: v.copy() for k, v in m.grads.items()}
    for name, p in m.params.items():
        for idx in list(np.ndindex(p.shape))[:: max(1, p.size // 5)]:
            assert g[name][idx] == pytest.approx(_num_grad(lambda: m.loss(feats, caps), p, idx), abs=1e-6), name


def test_null_padding_is_masked():
    rng = np.random.default_rng(0)
    m = C.CaptioningRNN(4, 6, hidden_size=5, embed_size=3, dtype=np.float64, seed=0)
    f = rng.standard_normal((2, 4))
    caps = np.array([[1, 4, 2, 0], [1, 5, 3, 2]])
    padded = np.concatenate([caps, np.zeros((2, 3), int)], axis=1)
    assert m.loss(f, caps) == pytest.approx(m.loss(f, padded), rel=1e-12)


def test_generate_stops_at_end():
    m = C.CaptioningRNN(4, 6, hidden_size=5, embed_size=3, seed=0)
    m.head.params["bias"][:] = 0
    m.head.params["bias"][C.END] = 100.0           # <END> always wins
    ids = m.generate(np.zeros((3, 4), np.float32), 5)
    assert (ids[:, 0] == C.END).all() and (ids[:, 1:] == C.NULL).all()
    assert C.decode_captions(ids, ["<NULL>", "<START>", "<END>", "<UNK>", "x", "y"]) == [[], [], []]


def test_captioner_bad_input():
    m = C.CaptioningRNN(4, 6, hidden_size=5, embed_size=3, seed=0)
    with pytest.raises(ValueError, match=r"features must have shape \(N, F\) with F = 4"):
        m.loss(np.zeros((2, 3), np.float32), np.ones((2, 4), int))
    with pytest.raises(ValueError, match="conditioning"):
        C.CaptioningRNN(4, 6, conditioning="x")


# ---------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny():
    data, cnn, images = C.prepare_shapes(400, 60, 100, seed=0, cnn_epochs=1, progress=False, log=lambda s: None)
    return data, cnn, images


@pytest.mark.slow
def test_training_beats_trivial_baseline(tiny):
    data, cnn, _ = tiny
    r = C.train_captioner(data, cnn, hidden_size=48, embed_size=24, max_steps=250, eval_every=0, progress=False)
    ev = C.evaluate(r["model"].captioner, data, "test")
    base = C.baseline_bleu(data, "test")
    assert ev["bleu1"] > base["bleu1"] + 0.4
    assert ev["bleu4"] > base["bleu4"] + 0.25


def test_checkpoint_resume_is_exact(tiny, tmp_path):
    data, cnn, _ = tiny
    kw = dict(hidden_size=16, embed_size=8, eval_every=0, progress=False, seed=3)
    full = C.train_captioner(data, cnn, max_steps=16, **kw)
    ck = tmp_path / "cap.npz"
    C.train_captioner(data, cnn, max_steps=8, checkpoint=str(ck), **kw)
    res = C.train_captioner(data, None, max_steps=16, resume=str(ck), **kw)
    assert res["history"]["loss"] == full["history"]["loss"]
    model, _ = C.load_model(str(ck))
    ims = tiny[2]["test"][0][:3]
    assert np.array_equal(model.image_features(ims), cnn.features(ims))   # the CNN travels with the model


def test_wrong_kind_of_checkpoint(tmp_path):
    from rnnfast.models import char_lm

    r = char_lm.train_char_lm("abcabcabd" * 4, hidden_size=4, seq_length=4, batch_size=2, max_steps=2,
                              checkpoint=str(tmp_path / "c.npz"), progress=False, eval_every=0)
    assert r["steps"] == 2
    with pytest.raises(ValueError, match="not a captioning model"):
        C.load_model(str(tmp_path / "c.npz"))


def test_caption_grid_png(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    ims = tiny[2]["test"][0][:3]
    out = C.caption_grid(ims, ["a red circle", "b", "c"], ["a red circle", "x", "c"], str(tmp_path / "g.png"))
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- HDF5 (cs231n COCO layout)
def _write_coco(h5py, path, V=8, n_img=6, F=5, n_cap=10, T=6, seed=0):
    rng = np.random.default_rng(seed)
    idx_to_word = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"w{i}" for i in range(V - 4)]
    caps = np.zeros((n_cap, T), np.int32)
    caps[:, 0] = 1
    for i in range(n_cap):
        n = rng.integers(1, T - 2)
        caps[i, 1:1 + n] = rng.integers(4, V, n)
        caps[i, 1 + n] = 2
    with h5py.File(path, "w") as f:
        for split in ("train", "val"):
            f[f"{split}_captions"] = caps
            f[f"{split}_image_idxs"] = rng.integers(0, n_img, n_cap).astype(np.int32)
            f[f"{split}_features"] = rng.standard_normal((n_img, F)).astype(np.float32)
        f["idx_to_word"] = np.array(idx_to_word, dtype=h5py.string_dtype())
    return idx_to_word, caps


def test_hdf5_single_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    from rnnfast.models.coco_h5 import load_coco_h5

    itw, caps = _write_coco(h5py, tmp_path / "coco.h5")
    d = load_coco_h5(tmp_path / "coco.h5")
    assert d["idx_to_word"] == itw and d["word_to_idx"]["w0"] == 4
    assert np.array_equal(d["train_captions"], caps) and d["train_features"].shape == (6, 5)
    r = C.train_captioner(d, hidden_size=8, embed_size=4, max_steps=5, eval_every=0, progress=False)
    assert len(r["history"]["loss"]) == 5
    assert set(C.evaluate(r["model"].captioner, d, "val")) >= {"bleu4", "exact"}
    assert len(load_coco_h5(tmp_path / "coco.h5", max_train=4)["train_captions"]) == 4


def test_hdf5_cs231n_folder(tmp_path):
    h5py = pytest.importorskip("h5py")
    from rnnfast.models.coco_h5 import load_coco_h5

    rng = np.random.default_rng(0)
    itw = ["<NULL>", "<START>", "<END>", "<UNK>", "dog"]
    with h5py.File(tmp_path / "coco2014_captions.h5", "w") as f:
        f["train_captions"] = np.array([[1, 4, 2, 0]], np.int32)
        f["train_image_idxs"] = np.array([1], np.int32)
    with h5py.File(tmp_path / "train2014_vgg16_fc7_pca.h5", "w") as f:
        f["features"] = rng.standard_normal((2, 3)).astype(np.float32)
    (tmp_path / "coco2014_vocab.json").write_text(json.dumps({"idx_to_word": itw,
                                                              "word_to_idx": {w: i for i, w in enumerate(itw)}}))
    d = load_coco_h5(tmp_path)
    assert d["train_features"].shape == (2, 3) and d["idx_to_word"] == itw


def test_hdf5_bad_files(tmp_path):
    h5py = pytest.importorskip("h5py")
    from rnnfast.models.coco_h5 import load_coco_h5

    with pytest.raises(FileNotFoundError, match="not found"):
        load_coco_h5(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("this is not HDF5")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_coco_h5(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "nofeat.h5", "w") as f:
        f["train_captions"] = np.zeros((2, 3), np.int32)
        f["train_image_idxs"] = np.zeros(2, np.int32)
        f["idx_to_word"] = np.array(["<NULL>", "<START>", "<END>"], dtype=h5py.string_dtype())
    with pytest.raises(ValueError, match="missing 'train_features'"):
        load_coco_h5(tmp_path / "nofeat.h5")
    _write_coco(h5py, tmp_path / "bad.h5")
    with h5py.File(tmp_path / "bad.h5", "a") as f:
        del f["train_image_idxs"]
        f["train_image_idxs"] = np.full(10, 99, np.int32)
    with pytest.raises(ValueError, match=r"train_image_idxs must index train_features rows \[0, 6\)"):
        load_coco_h5(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "novocab.h5", "w") as f:
        f["train_captions"] = np.zeros((2, 3), np.int32)
    with pytest.raises(ValueError, match="idx_to_word"):
        load_coco_h5(tmp_path / "novocab.h5")
