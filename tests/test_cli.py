"""Smoke tests of the application subcommands: train-char / sample / resume, caption train / eval / sample,
demo, and bad input ending in a one-line error with exit status 2. Most run in-process through the CLI's
main(argv) (same parser, handlers and exit codes, without a new interpreter per case); a few run as real
subprocesses (`python -m rnnfast.cli ...`, the caller's environment) so the console entry, the exit
status and stderr of a real process stay covered. Not tested here: the models' numbers (test_char_lm.py,
test_captioning.py).
"""
import pytest

from cli_helpers import cli, cli_process


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    f = d / "small.txt"
    f.write_text("the quick brown fox jumps over the lazy dog.\n" * 120, encoding="utf-8")
    return f


@pytest.fixture(scope="module")
def char_ckpt(text_file):
    ck = text_file.parent / "lm.npz"
    rc, out, err = cli("train-char", "--text", text_file, "--steps", 40, "--hidden", 16, "--seq-length", 10,
                       "--batch", 4, "--checkpoint", ck, "--checkpoint-every", 20, "--sample-every", 20,
                       "--no-progress")
    assert rc == 0, err
    assert "validation" in out and "bits/char" in out and "--- sample at step 20 ---" in out
    return ck, out


def test_train_char_writes_checkpoint_and_plot(char_ckpt):
    ck, out = char_ckpt
    assert ck.exists() and "checkpoint:" in out
    try:
        import matplotlib  # noqa: F401
        assert (ck.parent / "lm_loss.png").exists()
    except ImportError:
        assert "skipped (matplotlib is not installed" in out


def test_resume(char_ckpt, text_file, tmp_path):
    ck, _ = char_ckpt
    copy = tmp_path / "lm.npz"
    copy.write_bytes(ck.read_bytes())
    rc, out, err = cli("train-char", "--resume", copy, "--steps", 50, "--checkpoint", copy,
                       "--no-progress", "--sample-every", 0)    # the text is found through the checkpoint
    assert rc == 0, err
    assert "trained 50 steps" in out


def test_sample(char_ckpt):
    ck, _ = char_ckpt
    rc, out, err = cli("sample", ck, "--prime", "the ", "--length", 40, "--temperature", 0.7, "--top-k", 5,
                       "--seed", 1)
    assert rc == 0, err
    assert out.startswith("the ") and len(out) >= 44
    assert cli_process("sample", ck, "--prime", "the ", "--length", 40, "--temperature", 0.7, "--top-k", 5,
                       "--seed", 1)[1] == out       # a separate process, same seed: the same text


def test_sample_bad_input(char_ckpt, tmp_path):
    ck, _ = char_ckpt
    rc, out, err = cli_process("sample", ck, "--prime", "QZ!")     # a real process: status 2, no traceback
    assert rc == 2 and "not in the model's vocabulary" in err and "Traceback" not in err
    rc, out, err = cli("sample", tmp_path / "missing.npz")
    assert rc == 2 and "checkpoint not found" in err


def test_train_char_bad_files(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    rc, out, err = cli_process("train-char", "--text", tmp_path / "empty.txt", "--steps", 1)
    assert rc == 2 and "is empty" in err and "Traceback" not in err
    (tmp_path / "x.bin").write_bytes(bytes(range(256)) * 4)
    rc, out, err = cli("train-char", "--text", tmp_path / "x.bin", "--steps", 1)
    assert rc == 2 and "binary" in err


@pytest.fixture(scope="module")
def cap_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("cap")
    ck = d / "cap.npz"
    rc, out, err = cli("caption", "train", "--n-train", 200, "--n-val", 30, "--n-test", 40, "--cnn-epochs", 1,
                       "--steps", 30, "--hidden", 32, "--embed", 16, "--checkpoint", ck, "--grid", d / "grid.png",
                       "--no-progress")
    assert rc == 0, err
    return ck, out


def test_caption_train(cap_ckpt):
    ck, out = cap_ckpt
    assert ck.exists()
    assert "test: BLEU-1" in out and "BLEU-4" in out and "baseline" in out
    try:
        import matplotlib  # noqa: F401
        assert (ck.parent / "grid.png").exists()
    except ImportError:
        assert "skipped" in out


def test_caption_eval_and_sample(cap_ckpt, tmp_path):
    ck, _ = cap_ckpt
    rc, out, err = cli("caption", "eval", ck)
    assert rc == 0, err
    assert "test: BLEU-1" in out and "(40 images)" in out
    rc, out, err = cli("caption", "sample", ck, "--index", 3, "--count", 2)
    assert rc == 0, err
    assert out.count("image ") == 2 and out.count("true: ") == 2


def test_caption_resume(cap_ckpt, tmp_path):
    ck, _ = cap_ckpt
    copy = tmp_path / "cap.npz"
    copy.write_bytes(ck.read_bytes())
    rc, out, err = cli("caption", "train", "--resume", copy, "--steps", 40, "--checkpoint", copy, "--grid", "",
                       "--no-progress")
    assert rc == 0, err
    assert "trained 40 steps" in out


def test_wrong_checkpoint_kind(cap_ckpt, char_ckpt):
    rc, out, err = cli("sample", cap_ckpt[0])
    assert rc == 2 and "not a character-level language model" in err
    rc, out, err = cli_process("caption", "eval", char_ckpt[0])
    assert rc == 2 and "not a captioning model" in err and "Traceback" not in err


def test_caption_bad_hdf5(tmp_path):
    pytest.importorskip("h5py")
    rc, out, err = cli("caption", "train", "--data", tmp_path / "missing.h5", "--steps", 1)
    assert rc == 2 and "not found" in err
    (tmp_path / "bad.h5").write_text("not hdf5")
    rc, out, err = cli("caption", "train", "--data", tmp_path / "bad.h5", "--steps", 1)
    assert rc == 2 and "not a readable HDF5 file" in err


@pytest.mark.slow
def test_demo_short():
    rc, out, err = cli("demo", "--seconds", 2, "--bench-seconds", 1, "--length", 40, "--hidden", 32,
                       "--no-progress", "--no-torch")
    assert rc == 0, err
    assert "temperature 0.6" in out and "temperature 1.0" in out
    assert "numpy per-step" in out and "x faster" in out


def test_caption_on_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    import numpy as np

    rng = np.random.default_rng(0)
    itw = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "dog", "cat"]
    caps = np.array([[1, 4, 5, 2, 0], [1, 4, 6, 2, 0], [1, 5, 2, 0, 0]] * 4, np.int32)
    with h5py.File(tmp_path / "coco.h5", "w") as f:
        for split in ("train", "val"):
            f[f"{split}_captions"] = caps
            f[f"{split}_image_idxs"] = np.arange(12, dtype=np.int32) % 5
            f[f"{split}_features"] = rng.standard_normal((5, 8)).astype(np.float32)
        f["idx_to_word"] = np.array(itw, dtype=h5py.string_dtype())
    ck = tmp_path / "c.npz"
    rc, out, err = cli("caption", "train", "--data", tmp_path / "coco.h5", "--steps", 5, "--hidden", 8,
                       "--embed", 4, "--checkpoint", ck, "--no-progress")
    assert rc == 0, err
    assert "val: BLEU-1" in out
    rc, out, err = cli("caption", "eval", ck)          # finds the data through the checkpoint
    assert rc == 0, err
    assert "val: BLEU-1" in out and "(5 images)" in out
