"""Tests of the character-level language model: the "hello" example, a short run on the default corpus
against the uniform baseline, exact resume, sampling, the flat parameter buffer, the lean loss against
rnnfast.nn's, the speed peers computing the same model, and bad input. Not tested here: the CLI.
"""
import math

import numpy as np
import pytest

from rnnfast import nn
from rnnfast.models import char_lm as LM
from rnnfast.models import speed


@pytest.fixture(scope="module")
def hello():
    r = LM.train_char_lm("hello", hidden_size=8, seq_length=4, batch_size=1, lr=0.05, max_steps=200,
                         val_fraction=0.0, seed=0, eval_every=0, progress=False)
    return r["model"]


def test_hello_learns_next_characters(hello):
    assert hello.vocab.chars == "ehlo"
    logits, _ = hello.step_logits(hello.vocab.encode("hell")[:, None], hello.zero_state(1))
    assert hello.vocab.decode(logits.argmax(axis=-1)[:, 0]) == "ello"


def test_hello_sampling_from_h(hello):
    assert "h" + hello.sample("h", 4, temperature=0) == "hello"
    assert "h" + hello.sample("h", 4, temperature=0.5, top_k=1, seed=3) == "hello"   # top-1 is greedy


@pytest.fixture(scope="module")
def corpus():
    text, desc = LM.default_corpus(120_000)
    return text


def test_default_corpus_is_deterministic(corpus):
    again, desc = LM.default_corpus(120_000)
    assert again == corpus and len(corpus) == 120_000 and "stdlib" in desc
    assert "def " in corpus and set(corpus) <= set(map(chr, range(128)))


@pytest.mark.slow
def test_training_beats_uniform_baseline(corpus):
    r = LM.train_char_lm(corpus, hidden_size=64, seq_length=25, batch_size=16, lr=1e-2, max_steps=300,
                         seed=0, eval_every=150, val_max_chars=10_000, progress=False, log=lambda s: None)
    assert r["steps"] == 300 and r["history"]["val_step"] == [150, 300]
    # uniform guessing costs log2(V) ~ 6.5 bits/char; the model must be far below it
    assert r["val_bpc"] < 0.6 * r["uniform_bpc"]
    assert r["history"]["val_bpc"][-1] < r["history"]["val_bpc"][0] + 0.05
    assert r["chars_per_sec"] > 0


def test_resume_continues_exactly(corpus, tmp_path):
    kw = dict(hidden_size=24, num_layers=2, seq_length=10, batch_size=4, lr=3e-3, progress=False, seed=1,
              eval_every=0)
    full = LM.train_char_lm(corpus[:30_000], max_steps=24, **kw)
    ck = str(tmp_path / "lm.npz")
    half = LM.train_char_lm(corpus[:30_000], max_steps=12, checkpoint=ck, **kw)
    assert half["steps"] == 12
    res = LM.train_char_lm(corpus[:30_000], max_steps=24, resume=ck, **kw)
    assert res["history"]["loss"] == full["history"]["loss"]
    assert res["val_bpc"] == full["val_bpc"]


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_ctrl_c_saves_stream_position_and_state_and_resume_is_exact(corpus, tmp_path, monkeypatch, cell):
    kw = dict(hidden_size=16, num_layers=2, seq_length=10, batch_size=3, lr=3e-3, progress=False, seed=2,
              eval_every=0, cell=cell)
    full = LM.train_char_lm(corpus[:20_000], max_steps=14, **kw)
    ck = str(tmp_path / "lm.npz")
    real = LM.CharLM.sample

    def ctrl_c(self, *a, seed=None, **k):      # the sampling hook of step 6 is where Ctrl-C lands
        if seed == 6:
            raise KeyboardInterrupt
        return real(self, *a, seed=seed, **k)

    monkeypatch.setattr(LM.CharLM, "sample", ctrl_c)
    with pytest.raises(KeyboardInterrupt) as e:
        LM.train_char_lm(corpus[:20_000], max_steps=14, checkpoint=ck, sample_every=3, sample_length=5, **kw)
    monkeypatch.setattr(LM.CharLM, "sample", real)
    assert e.value.step == 6 and e.value.checkpoint == ck
    with np.load(ck, allow_pickle=False) as z:
        assert z["extra/h"].dtype == np.float32 and int(z["step"]) == 6
    res = LM.train_char_lm(corpus[:20_000], max_steps=14, resume=ck, **{k: v for k, v in kw.items() if k != "cell"})
    assert res["history"]["loss"] == full["history"]["loss"]


def test_sample_reproducible_and_long_prime(hello, corpus):
    m = LM.CharLM(LM.CharVocab(corpus), hidden_size=16, seed=0)
    a = m.sample("import os\n", 50, temperature=1.0, seed=5)
    assert a == m.sample("import os\n", 50, temperature=1.0, seed=5) and len(a) == 50
    # a prime far longer than any chunk is fed chunk by chunk with the state carried: same as whole
    prime = corpus[:1000]
    assert m.sample(prime, 30, temperature=0, chunk=7) == m.sample(prime, 30, temperature=0, chunk=1000)


def test_flat_buffer_backs_every_parameter(hello):
    m = LM.CharLM("abc", hidden_size=5, num_layers=2, seed=0)
    for name, p in m.net.params.items():
        assert np.shares_memory(p, m.flat.flat), name
        assert np.shares_memory(m.net.grads[name], m.flat.grad), name
    state = {k: v + 1.0 for k, v in m.net.state_dict().items()}
    m.load_state_dict(state)         # replaces the arrays: the buffer follows
    assert all(np.shares_memory(p, m.flat.flat) for p in m.net.params.values())
    assert np.array_equal(m.net.params["head.bias"], state["head.bias"])


def test_lean_loss_matches_nn():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((5, 3, 7)) * 30).astype(np.float32)
    y = rng.integers(0, 7, (5, 3))
    a, da = LM._xent(logits, y)
    b, db = nn.softmax_cross_entropy(logits, y, reduction="mean")
    assert a == pytest.approx(b, rel=1e-5) and np.allclose(da, db, atol=1e-7)


@pytest.mark.slow
def test_speed_peers_are_the_same_model():
    """rnnfast, the per-step NumPy step and (when installed) torch give the same first loss from the same
    weights and data."""
    V, H, T, N = 11, 6, 5, 3
    ours = speed.RnnfastStep(V, H, T, N, seed=0)
    p = ours.model.params
    ref = speed.NumpyStep(V, H, T, N, seed=0)
    ref.p.update(Wxh=p["encoder.rnn.weight_ih_l0"].copy(), Whh=p["encoder.rnn.weight_hh_l0"].copy(),
                 bh=p["encoder.rnn.bias_ih_l0"] + p["encoder.rnn.bias_hh_l0"], Why=p["head.weight"].copy(),
                 by=p["head.bias"].copy())
    ref.x, ref.y = ours.x, ours.y
    expect = ours()
    assert ref() == pytest.approx(expect, rel=1e-5)
    torch = pytest.importorskip("torch")
    tt = speed.TorchStep(V, H, T, N, seed=0)
    fresh = speed.RnnfastStep(V, H, T, N, seed=0)
    fp = fresh.model.params
    with torch.no_grad():
        for tn, rn in (("weight_ih_l0", "encoder.rnn.weight_ih_l0"), ("weight_hh_l0", "encoder.rnn.weight_hh_l0"),
                       ("bias_ih_l0", "encoder.rnn.bias_ih_l0"), ("bias_hh_l0", "encoder.rnn.bias_hh_l0")):
            getattr(tt.rnn, tn).copy_(torch.from_numpy(fp[rn]))
        tt.head.weight.copy_(torch.from_numpy(fp["head.weight"]))
        tt.head.bias.copy_(torch.from_numpy(fp["head.bias"]))
    tt.x, tt.y = torch.from_numpy(fresh.x), torch.from_numpy(fresh.y)
    assert tt() == pytest.approx(fresh(), rel=1e-5)


def test_measure_reports_every_peer():
    steps = speed.make_steps(13, 8, 4, 2, include_torch=False)
    res = speed.measure(steps, 4, 2, seconds=0.2, rounds=2, warmup=1)
    assert set(res) == {"rnnfast", "numpy per-step"}
    assert all(v["chars_per_sec"] > 0 and v["steps"] >= 2 for v in res.values())


# ---------------------------------------------------------------- bad input
def test_bad_text_files(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        LM.load_text(tmp_path / "empty.txt")
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match="binary"):
        LM.load_text(tmp_path / "bin.dat")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match="not valid UTF-8"):
        LM.load_text(tmp_path / "latin1.txt")
    with pytest.raises(FileNotFoundError):
        LM.load_text(tmp_path / "nope.txt")
    (tmp_path / "ok.txt").write_text("héllo wörld", encoding="utf-8")
    assert LM.load_text(tmp_path / "ok.txt") == "héllo wörld"


def test_unknown_characters_at_sampling(hello):
    with pytest.raises(ValueError, match=r"prime has 2 character\(s\) not in the model's vocabulary: 'x', 'z'"):
        hello.sample("hxz", 3)
    with pytest.raises(ValueError, match="non-empty"):
        hello.sample("", 3)
    with pytest.raises(ValueError, match="temperature"):
        hello.sample("h", 3, temperature=-1)


def test_text_too_short_for_streams():
    with pytest.raises(ValueError, match="too short for batch_size N = 8"):
        LM.train_char_lm("abcdefgh", batch_size=8, max_steps=1, val_fraction=0.0, progress=False)
    with pytest.raises(ValueError, match="max_steps or max_seconds"):
        LM.train_char_lm("abcdefgh")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        LM.train_char_lm("abcdefgh" * 10, optimizer="lbfgs", max_steps=1, progress=False)


def test_checkpoint_of_another_model(tmp_path):
    from rnnfast import train
    from rnnfast.models.captioning import CaptioningRNN, CaptionPipeline

    cap = CaptionPipeline(CaptioningRNN(4, 6, hidden_size=5, embed_size=3))
    train.save_checkpoint(str(tmp_path / "cap.npz"), cap, metadata={"kind": "caption"})
    with pytest.raises(ValueError, match="is a 'caption' model, not a character-level language model"):
        LM.load_model(str(tmp_path / "cap.npz"))
    (tmp_path / "text.npz").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not an rnnfast checkpoint"):
        LM.load_model(str(tmp_path / "text.npz"))
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="is not an rnnfast checkpoint"):
        LM.load_model(str(tmp_path / "plain.npz"))
    with pytest.raises(FileNotFoundError):
        LM.load_model(str(tmp_path / "missing.npz"))


def test_untrained_model_is_near_uniform():
    m = LM.CharLM("abcd", hidden_size=64, seed=0)     # small initial logits: about log2(V) = 2 bits/char
    assert abs(m.evaluate(m.vocab.encode("abcdabcdabcd" * 5), N=2, T=7) - math.log2(4)) < 0.2
