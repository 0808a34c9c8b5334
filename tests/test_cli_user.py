"""What a new user hits on the command line: resume writes back to its file, budgets and output paths checked
before any work, texts too short refused with what fits, Ctrl-C saves and exits cleanly, one-line errors for
bad checkpoints / backends / thread settings, `--version`, `python -m rnnfast`, help on every option, a closed
pipe. A few true subprocess runs (signals, pipes, environment); the rest through rnnfast.cli.main(argv), the
same code path, in-process. Not tested here: the models' numbers (test_char_lm.py, test_captioning.py).
"""
import argparse
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from rnnfast.cli import build_parser, main

TINY = ["--hidden", "8", "--seq-length", "8", "--batch", "4", "--no-progress", "--sample-every", "0"]


def run(argv, capsys):
    """main(argv) in-process: (exit status, stdout, stderr); argparse errors give status 2 as on the shell."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def sub(*args, env=None, **kw):
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "rnnfast", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e, **kw)


@pytest.fixture
def text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)             # the default output files land here, not in the test folder
    f = tmp_path / "t.txt"
    f.write_text("the quick brown fox jumps over the lazy dog.\n" * 40, encoding="utf-8")
    return f


def _step(path):
    from rnnfast.train import load_checkpoint

    return load_checkpoint(str(path))["step"]


def test_resume_writes_back_to_the_file_it_resumed_from(text, capsys):
    rc, out, err = run(["train-char", "--text", text, "--steps", 6, "--checkpoint", "lm.npz", *TINY], capsys)
    assert rc == 0, err
    rc, out, err = run(["train-char", "--resume", "lm.npz", "--steps", 12, *TINY], capsys)   # the README's form
    assert rc == 0, err
    assert _step("lm.npz") == 12 and not os.path.exists("char_lm.npz")
    assert "checkpoint: lm.npz" in out and os.path.exists("lm_loss.png")
    rc, out, err = run(["train-char", "--resume", "lm.npz", "--steps", 14, "--checkpoint", "other.npz", *TINY],
                       capsys)
    assert rc == 0, err
    assert _step("other.npz") == 14 and _step("lm.npz") == 12


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--steps", "-3"], ["--seconds", "-1"], ["--seconds", "0"],
                                 ["--sample-every", "-1"], ["--checkpoint-every", "-1"], ["--lr", "-1"]])
@pytest.mark.parametrize("progress", [True, False])
def test_bad_budgets_refused_before_any_work(text, capsys, bad, progress):
    (text.parent / "char_lm.npz").write_bytes(b"precious")
    argv = ["train-char", "--text", text, *bad] + (["--no-progress"] if not progress else [])
    rc, out, err = run(argv, capsys)
    assert rc == 2 and "corpus:" not in out and "Traceback" not in err
    assert bad[0] in err
    assert (text.parent / "char_lm.npz").read_bytes() == b"precious"


@pytest.mark.parametrize("flag", ["--checkpoint", "--plot"])
def test_unwritable_output_path_refused_before_training(text, capsys, flag):
    rc, out, err = run(["train-char", "--text", text, "--steps", 3, flag, "/nonexistent-dir/x.out", *TINY], capsys)
    assert rc == 2 and "corpus:" not in out
    assert "/nonexistent-dir/x.out" in err and ".tmp" not in err and "Traceback" not in err


def test_output_path_that_is_a_folder(text, capsys):
    rc, _out, err = run(["train-char", "--text", text, "--steps", 3, "--checkpoint", text.parent, *TINY], capsys)
    assert rc == 2 and "is a folder" in err


def test_text_too_short_says_what_fits(text, capsys):
    short = text.parent / "short.txt"
    short.write_text(text.read_text()[:1500], encoding="utf-8")
    rc, _out, err = run(["train-char", "--text", short, "--steps", 2, "--no-progress"], capsys)   # defaults
    assert rc == 2 and "IndexError" not in err and "too short" in err
    # 1350 training characters: T = 50 needs 51 per stream, so N <= 26; N = 32 gives 42 each, so T <= 41
    assert "--seq-length) <= 41" in err and "--batch) <= 26" in err
    rc, _out, err = run(["train-char", "--text", short, "--steps", 2, "--batch", 26, "--no-progress",
                        "--hidden", 8], capsys)
    assert rc == 0, err


def test_train_char_lm_refuses_a_long_seq_length():
    from rnnfast.models.char_lm import train_char_lm

    with pytest.raises(ValueError, match=r"seq_length \(--seq-length\) <= 9"):
        train_char_lm("abcdefghij" * 10, hidden_size=4, seq_length=200, batch_size=10, max_steps=1,
                      val_fraction=0.0, progress=False)
    with pytest.raises(ValueError, match="max_steps"):
        train_char_lm("abcdefghij" * 10, hidden_size=4, seq_length=4, batch_size=2, max_steps=0, progress=False)


def test_stop_request_saves_a_whole_checkpoint_and_resumes_exactly(tmp_path):
    """What a first Ctrl-C does, without a signal: the loop stops after the step, saves, raises."""
    from rnnfast.models import _progress
    from rnnfast.models.char_lm import train_char_lm

    txt = "the quick brown fox jumps over the lazy dog.\n" * 20
    kw = {"hidden_size": 8, "seq_length": 8, "batch_size": 4, "val_fraction": 0.0, "progress": False,
          "log": lambda s: None}
    full = train_char_lm(txt, max_steps=6, **kw)["history"]["loss"]
    ck = str(tmp_path / "c.npz")
    _progress.request_stop()
    with pytest.raises(_progress.TrainingInterrupted) as e:
        train_char_lm(txt, max_steps=6, checkpoint=ck, **kw)
    assert e.value.step == 1 and e.value.checkpoint == ck and _step(ck) == 1
    assert not _progress.stop_requested()
    rest = train_char_lm(txt, max_steps=6, resume=ck, **kw)["history"]["loss"]
    np.testing.assert_allclose(rest, full, rtol=1e-6)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(text):
    p = sub("train-char", "--text", text, "--seconds", 60, "--checkpoint", text.parent / "cc.npz", *TINY,
            cwd=text.parent)
    assert p.stdout.readline().startswith("corpus:")
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "checkpoint saved" in err
    step = _step(text.parent / "cc.npz")
    assert step >= 1 and f"interrupted at step {step}" in err


@pytest.mark.parametrize("argv", [["sample", "{ck}"], ["train-char", "--resume", "{ck}", "--steps", "2"],
                                  ["caption", "eval", "{ck}"]])
@pytest.mark.parametrize("kind", ["truncated", "garbage", "plain-npz", "other-kind"])
def test_bad_checkpoints_give_one_line(text, capsys, argv, kind):
    ck = text.parent / f"{kind}.npz"
    if kind in ("truncated", "other-kind"):
        rc, _, err = run(["train-char", "--text", text, "--steps", 2, "--checkpoint", "good.npz", *TINY], capsys)
        assert rc == 0, err
        good = (text.parent / "good.npz").read_bytes()
        if kind == "truncated":
            ck.write_bytes(good[: len(good) // 2])
        else:
            ck = text.parent / "good.npz"
    elif kind == "garbage":
        ck.write_bytes(b"\x80\x04garbage, not an archive" * 10)
    else:
        np.savez(ck, a=np.ones(3))
    if kind == "other-kind" and argv[0] != "caption":
        return      # a char_lm checkpoint is the right kind there
    rc, _out, err = run([a.format(ck=ck) for a in argv], capsys)
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for wrong in ("allow_pickle", "meta_json", "'unknown'", "BadZipFile"):
        assert wrong not in err
    assert "not an rnnfast checkpoint" in err or "not a captioning model" in err


@pytest.mark.skipif("cuda" in __import__("rnnfast").available(), reason="a GPU is present")
@pytest.mark.parametrize("argv", [["train-char", "--steps", "2"], ["sample", "x.npz"],
                                  ["caption", "train", "--steps", "2"], ["caption", "compare", "--steps", "2"]])
def test_cuda_without_gpu_fails_before_any_work(text, capsys, argv):
    t0 = time.perf_counter()
    rc, out, err = run(argv + ["--backend", "cuda"], capsys)
    assert rc == 2 and out == "" and "backend 'cuda' is not available" in err
    assert time.perf_counter() - t0 < 10      # no CNN was trained first (that takes minutes)


def test_split_choices(capsys):
    rc, _out, err = run(["caption", "sample", "x.npz", "--split", "bogus"], capsys)
    assert rc == 2 and "invalid choice: 'bogus'" in err and "train" in err


def _actions(parser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for p in a.choices.values():
                yield from _actions(p)
        elif not isinstance(a, argparse._HelpAction):
            yield parser.prog, a


def test_every_option_has_help():
    missing = [f"{prog} {'/'.join(a.option_strings) or a.dest}" for prog, a in _actions(build_parser())
               if not a.help]
    assert missing == []


def test_library_errors_become_one_line(text, capsys):
    rc, _, err = run(["train-char", "--text", text, "--steps", 2, "--checkpoint", "lm.npz", *TINY], capsys)
    assert rc == 0, err
    rc, _out, err = run(["sample", "lm.npz", "--prime", "\u03a9"], capsys)    # not in the vocabulary
    assert rc == 2 and "vocabulary" in err and len(err.strip().splitlines()) == 1


def test_version_and_python_dash_m():
    import rnnfast

    p = sub("--version")
    out, _err = p.communicate(timeout=60)
    assert p.returncode == 0 and out.strip() == f"rnnfast {rnnfast.__version__}"


def test_info_json_into_a_closed_pipe():
    p = sub("info", "--json")
    p.stdout.close()                      # `| head` that has already exited
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "Traceback" not in err and "BrokenPipe" not in err


def test_bad_thread_setting_is_one_line(tmp_path):
    p = sub("demo", "--seconds", "1", "--bench-seconds", "0.1", env={"RNNFAST_NUM_THREADS": "0"}, cwd=tmp_path)
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "RNNFAST_NUM_THREADS" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
