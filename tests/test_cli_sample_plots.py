"""`rnnfast sample --length` beyond 2,000 characters: a progress bar (off with --no-progress) over pieces
generated with the state and random stream carried, giving exactly the text of one native decoder call with
the same seed; and the benchmark plots (rnnfast.bench.plot, benchmarks/bench_gpu.py) leaving the caller's
matplotlib backend and pyplot alone. Not tested here: the sampler's distribution (test_decode.py,
test_char_lm.py).
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import cli

TINY = ["--hidden", "8", "--seq-length", "8", "--batch", "4", "--no-progress", "--sample-every", "0"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", params=["rnn", "lstm"])
def checkpoint(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"lm_{request.param}")
    (d / "t.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 40, encoding="utf-8")
    rc, _out, err = cli("train-char", "--text", d / "t.txt", "--steps", 4, "--cell", request.param,
                        "--checkpoint", d / "lm.npz", *TINY, cwd=d)
    assert rc == 0, err
    return d / "lm.npz"


def _one_native_call(model, prime, length, temperature, seed):
    """The whole text from one rnnfast._decode.sample call (t0 = 0, the prime as its forced prefix)."""
    from rnnfast import _decode

    ids = model.vocab.encode(prime, "prime")
    h = model.zero_state(1)
    state = (h[0], h[1]) if model.cell == "lstm" else h
    out, _ = _decode.sample(model.net.encoder.rnn, model.net.head, None, ids[:1], state, None, length, "sample",
                            temperature, 0, seed, prefix=ids[1:, None])
    return model.vocab.decode(out[:, 0])


def test_long_sample_shows_a_bar_and_equals_one_call(checkpoint):
    from rnnfast import _decode
    from rnnfast.models.char_lm import load_model

    model, _ = load_model(str(checkpoint))
    if not _decode.use_native(None, model.net.encoder.rnn):
        pytest.skip("the native decoder is not available in this build")
    expected = "the " + _one_native_call(model, "the ", 2500, 0.8, 7) + "\n"
    rc, out, err = cli("sample", checkpoint, "--length", 2500, "--seed", 7, "--prime", "the ")
    assert rc == 0, err
    assert out == expected
    assert "sampling" in err and "2500/2500" in err        # the bar, on stderr
    rc, out2, err2 = cli("sample", checkpoint, "--length", 2500, "--seed", 7, "--prime", "the ", "--no-progress")
    assert rc == 0 and out2 == expected and err2 == ""
    rc, out3, err3 = cli("sample", checkpoint, "--length", 1500, "--seed", 7, "--prime", "the ")
    assert rc == 0 and err3 == "" and out3 == expected[:4 + 1500] + "\n"    # short: no bar, the same stream


@pytest.mark.parametrize("native", [None, False])
def test_pieces_concatenate_to_the_whole_sample(checkpoint, native):
    from rnnfast.models.char_lm import load_model

    model, _ = load_model(str(checkpoint))
    n = 300 if native is False else 2000
    for temperature, top_k in ((0.8, None), (1.3, 3), (0, None)):
        whole = model.sample("fox", n, temperature=temperature, top_k=top_k, seed=11, native=native)
        assert len(whole) == n
        for piece in (1, 7, n - 1, n, 5000):
            pieces = list(model.sample_pieces("fox", n, temperature=temperature, top_k=top_k, seed=11,
                                              native=native, piece_length=piece))
            assert [len(p) for p in pieces[:-1]] == [piece] * (len(pieces) - 1)
            assert "".join(pieces) == whole, (temperature, top_k, piece)
    g = np.random.default_rng(5)     # a Generator seed: one draw, the same for the pieces as for one call
    assert "".join(model.sample_pieces("fox", 600, seed=g, native=native, piece_length=50)) \
        == model.sample("fox", 600, seed=np.random.default_rng(5), native=native)
    assert model.sample("fox", 0, native=native) == ""
    with pytest.raises(ValueError, match="piece_length"):
        model.sample_pieces("fox", 10, piece_length=0)


def test_long_sample_on_the_numpy_backend_equals_one_call(checkpoint):
    from rnnfast.models.char_lm import load_model

    model, _ = load_model(str(checkpoint), backend="numpy")
    expected = "\n" + model.sample("\n", 2100, temperature=0.8, seed=3, native=False) + "\n"
    rc, out, err = cli("sample", checkpoint, "--length", 2100, "--seed", 3, "--backend", "numpy", "--no-progress")
    assert rc == 0 and err == "" and out == expected


def test_sample_help_names_no_progress():
    rc, out, _err = cli("sample", "--help")
    assert rc == 0 and "--no-progress" in out and "2,000" in out


_PLOT_SCRIPT = r"""
import importlib.util, sys
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
from rnnfast import bench
spec = importlib.util.spec_from_file_location("bench_gpu", sys.argv[2])
bench_gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_gpu)
out = sys.argv[1]
res = {"configs": {"a": {"fwd": {"speedup_vs_torch": 2.0}, "fwdbwd": {"speedup_vs_torch": 3.5}},
                   "b": {"fwd": {"speedup_vs_torch": 0.8}, "fwdbwd": {"speedup_vs_torch": 1.2}}},
       "peers": ["rnnfast", "torch"], "machine": {"cpu": "test cpu", "cores": 2}, "sgemm_gflops": 100.0}
pts = lambda vs: [{"value": v, "rnnfast": 1e-3 * v, "torch": 2e-3 * v} for v in vs]
sweeps = {"T": pts([25, 50, 100]), "N": pts([1, 2, 4]), "H": pts([64, 128]),
          "T_linear_fit": {"seconds_per_step": 1e-5, "r2": 0.999}}
paths = bench.plot(res, sweeps, out + "/cpu")
rows = [{"T": T, "H": H, "N": N, "ours_fwd_us_step": 1.0 + N, "cudnn_fwd_us_step": 2.0 + N,
         "ours_fb_us_step": 3.0 + N, "cudnn_fb_us_step": 5.0 + N}
        for T in bench_gpu.TS for H in bench_gpu.HS[:2] for N in bench_gpu.NS]
bench_gpu.plot({"gpu": "test gpu"}, rows, out + "/gpu.png")
print(matplotlib.get_backend(), plt.get_fignums(), " ".join(p[len(out) + 1:] for p in paths))
"""


def test_benchmark_plots_leave_the_backend_and_pyplot_alone(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image as mpimg

    p = subprocess.run([sys.executable, "-c", _PLOT_SCRIPT, str(tmp_path), os.path.join(ROOT, "benchmarks",
                        "bench_gpu.py")], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["svg", "[]", "cpu_speedup.png", "cpu_sweeps.png"]
    for name, (w, h) in (("cpu_speedup.png", (13, 4.5)), ("cpu_sweeps.png", (15, 4.2)), ("gpu.png", (13, 9))):
        img = mpimg.imread(tmp_path / name)     # figsize * dpi 110, drawn (not a blank canvas)
        assert img.shape[:2] == (round(h * 110), round(w * 110)), name
        assert img[..., :3].std() > 0.01, name
