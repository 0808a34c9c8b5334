"""Tests of native decoding (rnnfast._decode, csrc/cpu/decode.cpp) against the Python per-step loops it
replaces (the reference): greedy ids token for token and beam-search ids and scores for every cell, stacked,
float32/float64, one-hot and embedded input; the carried state against the layer's own forward; the
sampler's distribution against the reference softmax (chi-square) and its top-k support; the documented
counter-based random stream against an independent Python implementation; reproducibility; bad input.
Not the speed (benchmarks/bench_decode.py)."""
from __future__ import annotations

import string

import numpy as np
import pytest
import rnnfast
from rnnfast import _decode
from rnnfast.compat import cs231n as C
from rnnfast.models.captioning import END, NULL, CaptioningRNN
from rnnfast.models.char_lm import CharLM
from rnnfast.topologies import OneToMany, Seq2Seq, _decode_step, _inference

pytestmark = pytest.mark.skipif(not rnnfast.backends()["cpu"]["available"], reason="needs the CPU extension")

CELLS = ["rnn", "lstm", "gru"]
DTYPES = [np.float32, np.float64]


def _sharpen(model, scale=3.0):
    """Larger weights: peaked softmaxes, so greedy choices are far from ties in either precision."""
    for p in model.params.values():
        p *= scale
    return model


def _one_to_many(cell, embed, dtype, L=2, V=11, feed_code=None, seed=1):
    fc = cell == "rnn" if feed_code is None else feed_code
    return _sharpen(OneToMany(5, 31, V, embed_size=embed, num_layers=L, cell=cell, dtype=dtype, seed=seed,
                              feed_code=fc))


def _code(N, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal((N, 5)).astype(dtype)


# ---- greedy equals the reference, token for token ----

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("embed", [None, 7], ids=["onehot", "embed"])
@pytest.mark.parametrize("cell", CELLS)
def test_one_to_many_greedy_matches_python(cell, embed, dtype):
    m = _one_to_many(cell, embed, dtype)
    code = _code(6, dtype)
    ref = m.generate(code, 25, native=False)
    np.testing.assert_array_equal(m.generate(code, 25, native=True), ref)
    end = int(ref[2, 0])                          # an end token that some sequences emit
    ref_e = m.generate(code, 25, end_token=end, native=False)
    got_e = m.generate(code, 25, end_token=end, native=True)
    np.testing.assert_array_equal(got_e, ref_e)
    assert (got_e == end).any(axis=0).any()


@pytest.mark.parametrize("L", [1, 3])
def test_one_to_many_greedy_layers_and_relu(L):
    m = _sharpen(OneToMany(4, 17, 9, num_layers=L, nonlinearity="relu", seed=3), 1.5)
    code = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(m.generate(code, 20, native=True), m.generate(code, 20, native=False))


@pytest.mark.parametrize("H,V,N", [(1, 1, 1), (1, 3, 2), (65, 33, 5), (257, 300, 33)])
@pytest.mark.parametrize("cell", CELLS)
def test_odd_sizes_match_python(cell, H, V, N):
    """Sizes off the 64-byte blocks and the 4-row blocks: padding and tails."""
    m = _sharpen(OneToMany(2, H, V, num_layers=2, cell=cell, seed=5), 2.0)
    code = np.random.default_rng(4).standard_normal((N, 2)).astype(np.float32)
    np.testing.assert_array_equal(m.generate(code, 6, native=True), m.generate(code, 6, native=False))
    s = _sharpen(Seq2Seq(4, V, H, cell=cell, seed=5, end_token=0, start_token=min(1, V - 1)), 2.0)
    src = np.random.default_rng(5).integers(0, 4, (3, N))
    a, sa = s.generate(src, 5, method="beam", beam_size=3, return_scores=True, native=True)
    b, sb = s.generate(src, 5, method="beam", beam_size=3, return_scores=True, native=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_char_lm_greedy_matches_python(cell):
    lm = CharLM(string.ascii_lowercase + " .", 48, num_layers=2, cell=cell, seed=4)
    _sharpen(lm.net, 2.5)
    for prime in ("a", "the quick brown fox"):
        want = lm.sample(prime, 60, temperature=0, native=False)
        assert lm.sample(prime, 60, temperature=0, native=True) == want
        assert lm.sample(prime, 60, temperature=0, chunk=3) == want   # the prime's chunking changes nothing
    assert lm.sample("ab", 0, temperature=0.5, seed=1) == ""


@pytest.mark.parametrize("conditioning,cell", [("h0", "rnn"), ("c", "rnn"), ("both", "rnn"), ("h0", "lstm"),
                                               ("h0", "gru")])
def test_captioner_greedy_matches_python(conditioning, cell):
    m = _sharpen(CaptioningRNN(6, 13, hidden_size=24, embed_size=8, num_layers=2, conditioning=conditioning,
                               cell=cell, seed=2), 2.0)
    feats = np.random.default_rng(3).standard_normal((7, 6)).astype(np.float32) * 2
    ref = m.generate(feats, 15, native=False)
    got = m.generate(feats, 15, native=True)
    np.testing.assert_array_equal(got, ref)
    m.head.params["bias"][END] += 50.0           # <END> first everywhere: then <NULL>s
    forced = m.generate(feats, 4, native=True)
    np.testing.assert_array_equal(forced, np.tile([END, NULL, NULL, NULL], (7, 1)))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_cs231n_sample_matches_python(cell):
    np.random.seed(5)
    w2i = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{c: i + 3 for i, c in enumerate("abcdefg")}}
    model = C.CaptioningRNN(w2i, input_dim=6, wordvec_dim=5, hidden_dim=12, cell_type=cell, dtype=np.float64)
    for k in ("Wx", "Wh", "W_vocab"):
        model.params[k] *= 3
    feats = np.random.randn(9, 6) * 2
    ref = model.sample(feats, max_length=14, native=False)
    got = model.sample(feats, max_length=14, native=True)
    assert got.dtype == np.int32 and got.shape == (9, 14)
    np.testing.assert_array_equal(got, ref)


# ---- beam search equals the Python search ----

@pytest.mark.parametrize("K", [1, 3, 16])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_beam_matches_python(cell, dtype, K):
    m = _sharpen(Seq2Seq(9, 6, 23, num_layers=2, tgt_embed=5 if cell == "gru" else None, cell=cell, dtype=dtype,
                         seed=6, end_token=2, feed_context=cell == "rnn"), 2.0)
    src = np.random.default_rng(7).integers(0, 9, (8, 5))
    lengths = np.array([8, 3, 5, 1, 8])
    method = "greedy" if K == 1 else "beam"
    ids, sc = m.generate(src, 9, lengths, method=method, beam_size=K, return_scores=True, native=True)
    ref, rsc = m.generate(src, 9, lengths, method=method, beam_size=K, return_scores=True, native=False)
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_allclose(sc, rsc, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    if K == 16:                                   # K > V: beams that never lived (-inf) take part too
        assert np.isfinite(sc).all()


@pytest.mark.parametrize("cell", CELLS)
def test_beam_split_across_threads_equals_one_thread(cell):
    """A beam search big enough for the native search to split its sources across threads (csrc/cpu/decode.cpp,
    decode_beam_impl: chunks of sources claimed by the caller and helper threads; 7 sources leave a short last
    chunk) gives the one-thread ids and scores bit for bit, and the Python search's ids."""
    m = _sharpen(Seq2Seq(12, 30, 64, num_layers=2, cell=cell, dtype=np.float32, seed=8, end_token=2,
                         feed_context=cell == "rnn"), 1.5)
    src = np.random.default_rng(9).integers(0, 12, (6, 7))
    rnnfast.set_num_threads(1)
    try:
        ids1, sc1 = m.generate(src, 14, method="beam", beam_size=5, return_scores=True, native=True)
    finally:
        rnnfast.set_num_threads(2)
    ids2, sc2 = m.generate(src, 14, method="beam", beam_size=5, return_scores=True, native=True)
    np.testing.assert_array_equal(ids2, ids1)
    np.testing.assert_array_equal(sc2, sc1)
    ref, rsc = m.generate(src, 14, method="beam", beam_size=5, return_scores=True, native=False)
    np.testing.assert_array_equal(ids2, ref)
    np.testing.assert_allclose(sc2, rsc, rtol=1e-5, atol=1e-6)


def test_beam_scores_are_sequence_log_probs():
    m = _sharpen(Seq2Seq(7, 5, 16, seed=8, end_token=1, dtype=np.float64), 1.5)
    src = np.random.default_rng(9).integers(0, 7, (4, 3))
    ids, sc = m.generate(src, 6, method="beam", beam_size=4, return_scores=True)
    np.testing.assert_allclose(sc, m.sequence_log_prob(src, ids), rtol=1e-10)


# ---- the carried state ----

@pytest.mark.parametrize("cell", CELLS)
def test_state_is_the_layer_forward_over_the_fed_tokens(cell):
    m = _one_to_many(cell, None, np.float64, L=2)
    with _inference(m):
        h0, c = m._start(_code(4, np.float64), need_cache=False)
    first = np.array([0, 3, 5, 7])
    ids, h_n = _decode.sample(m.decoder.rnn, m.head, None, first, h0, c, 12, "sample", 1.0, 0, 99)
    fed = np.concatenate([first[None], ids[:-1]])               # what the decoder read
    with _inference(m):
        _, want = m.decoder.forward(fed, h0, c)
    for a, b in zip(h_n if cell == "lstm" else (h_n,), want if cell == "lstm" else (want,)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_finished_sequences_keep_their_state_and_pad():
    m = _one_to_many("gru", None, np.float64, L=1)
    with _inference(m):
        h0, c = m._start(_code(5, np.float64), need_cache=False)
    first = np.zeros(5, np.int64)
    full, _ = _decode.sample(m.decoder.rnn, m.head, None, first, h0, c, 15)
    end = int(full[3, 1])
    ids, h_n = _decode.sample(m.decoder.rnn, m.head, None, first, h0, c, 15, end_token=end, pad_token=10)
    for n in range(5):
        hits = np.flatnonzero(full[:, n] == end)
        stop = hits[0] + 1 if hits.size else 15
        np.testing.assert_array_equal(ids[:stop, n], full[:stop, n])
        assert (ids[stop:, n] == 10).all()
        fed = np.concatenate([[0], full[:stop - 1, n]])[:, None]
        with _inference(m):
            _, want = m.decoder.forward(fed, h0[:, n:n + 1], None)
        np.testing.assert_allclose(h_n[:, n], want[:, 0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["greedy", "sample"])
def test_chunked_decoding_equals_one_call(method):
    m = _one_to_many("lstm", 6, np.float32, L=2)
    with _inference(m):
        h0, _ = m._start(_code(3, np.float32), need_cache=False)
    first = np.array([1, 2, 3])
    args = (method, 0.9, 4, 1234)
    whole, hw = _decode.sample(m.decoder.rnn, m.head, m.decoder.embed.params["weight"], first, h0, None, 20, *args)
    a, ha = _decode.sample(m.decoder.rnn, m.head, m.decoder.embed.params["weight"], first, h0, None, 8, *args)
    b, hb = _decode.sample(m.decoder.rnn, m.head, m.decoder.embed.params["weight"], a[-1], ha, None, 12, *args,
                           t0=8)
    np.testing.assert_array_equal(np.concatenate([a, b]), whole)
    np.testing.assert_array_equal(hb[0], hw[0])


def test_prefix_equals_feeding_it_first():
    m = _one_to_many("gru", None, np.float64, L=2)
    with _inference(m):
        h0, _ = m._start(_code(3, np.float64), need_cache=False)
    prime = np.random.default_rng(2).integers(0, 11, (6, 3))
    got, hg = _decode.sample(m.decoder.rnn, m.head, None, prime[0], h0, None, 9, "sample", 0.8, 3, 77,
                             prefix=prime[1:])
    with _inference(m):
        _, h = m.decoder.forward(prime[:-1], h0)              # the prime but its last token, by the layer
    want, hw = _decode.sample(m.decoder.rnn, m.head, None, prime[-1], h, None, 9, "sample", 0.8, 3, 77)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(hg, hw, rtol=1e-10, atol=1e-12)


# ---- the prepared-model cache: reused only for the same bytes ----

def _native_cache():
    mod = _decode._native_module()
    mod.decode_cache_clear()
    return mod


@pytest.mark.parametrize("cell", CELLS)
def test_cache_sees_in_place_changes_of_every_parameter(cell):
    """Each parameter changed in place (same array object, same shape) after a cached call: the next native
    call decodes the changed model, token for token as the Python reference on it."""
    mod = _native_cache()
    m = _one_to_many(cell, 7, np.float32, L=2)
    code = _code(5, np.float32)
    before = m.generate(code, 12, native=True)
    for i, (name, p) in enumerate(m.params.items()):
        if not name.startswith(("decoder", "head")):
            continue
        p0 = p.copy()
        p[...] = np.random.default_rng(i).standard_normal(p.shape).astype(p.dtype) * 2.5
        np.testing.assert_array_equal(m.generate(code, 12, native=True), m.generate(code, 12, native=False),
                                      err_msg=name)
        p[...] = p0
        np.testing.assert_array_equal(m.generate(code, 12, native=True), before, err_msg=name)
    hits, misses, _ = mod.decode_cache_stats()
    assert hits > 0 and misses > 1


def test_cache_sees_one_changed_element_and_load_state_dict():
    _native_cache()
    lm = CharLM(string.ascii_lowercase + " .", 40, num_layers=2, seed=4)
    _sharpen(lm.net, 2.5)
    text = lm.sample("the quick", 60, temperature=0)
    W = lm.net.params["head.weight"]
    j = lm.vocab.encode(text[0], "t")[0]
    W[j, 0] -= 1e3 * np.sign(lm.net.encoder.rnn.params["weight_hh_l0"][0, 0] + 1e-3)   # one element
    changed = lm.sample("the quick", 60, temperature=0)
    assert changed == lm.sample("the quick", 60, temperature=0, native=False)
    other = CharLM(string.ascii_lowercase + " .", 40, num_layers=2, seed=9)
    _sharpen(other.net, 2.5)
    want = other.sample("the quick", 60, temperature=0.8, seed=3)
    lm.net.load_state_dict(other.net.state_dict())
    assert lm.sample("the quick", 60, temperature=0.8, seed=3) == want
    assert lm.sample("the quick", 60, temperature=0, native=True) == \
        lm.sample("the quick", 60, temperature=0, native=False)


def test_cached_calls_equal_fresh_ones_across_models_and_dtypes():
    """More models than cache entries, alternating, both dtypes, sampled and beam: every call equals the
    same call on an empty cache."""
    mod = _native_cache()
    models = [_one_to_many(c, e, d, L=2, seed=s) for s, (c, e, d) in
              enumerate([("rnn", None, np.float32), ("gru", 7, np.float64), ("lstm", None, np.float32),
                         ("rnn", 7, np.float64), ("gru", None, np.float32), ("lstm", 7, np.float64)])]
    s2s = _sharpen(Seq2Seq(6, 9, 20, seed=3, end_token=0))
    src = np.random.default_rng(0).integers(0, 6, (4, 5))

    def run(m):
        return m.generate(_code(7, m.params["head.weight"].dtype), 15, method="sample", seed=5, top_k=4)

    fresh = []
    for m in models:
        mod.decode_cache_clear()
        fresh.append(run(m))
    mod.decode_cache_clear()
    fresh_beam = s2s.generate(src, 6, method="beam", beam_size=3, return_scores=True)
    for _ in range(2):
        for m, want in zip(models, fresh):
            np.testing.assert_array_equal(run(m), want)
        ids, sc = s2s.generate(src, 6, method="beam", beam_size=3, return_scores=True)
        np.testing.assert_array_equal(ids, fresh_beam[0])
        np.testing.assert_array_equal(sc, fresh_beam[1])


def test_concurrent_calls_share_the_cache_safely():
    """Threads decoding different models at once (the calls release the GIL) get what serial calls get."""
    from concurrent.futures import ThreadPoolExecutor
    _native_cache()
    models = [_one_to_many(c, None, np.float32, L=2, seed=s) for s, c in enumerate(CELLS * 3)]
    code = _code(6, np.float32)

    def run(m):
        return m.generate(code, 30, method="sample", seed=1)

    want = [run(m) for m in models]
    with ThreadPoolExecutor(4) as ex:
        for _ in range(3):
            for got, w in zip(ex.map(run, models), want):
                np.testing.assert_array_equal(got, w)


def test_vocab_decode_equals_the_character_lookup():
    """CharVocab.decode (one gather + one UTF-32 decode, the text of every CharLM.sample) against the plain
    per-id lookup, for non-ASCII characters, negative ids, other integer dtypes, lists and empty input."""
    from rnnfast.models.char_lm import CharVocab
    v = CharVocab("abcxyz \n\té€😀")
    rng = np.random.default_rng(0)
    for ids in (rng.integers(0, v.size, 300), rng.integers(-v.size, v.size, 50), np.arange(v.size, dtype=np.uint8),
                [3, 0, 5], (v.size - 1,), np.array([], np.int64), []):
        assert v.decode(ids) == "".join(v.chars[int(i)] for i in ids)
    with pytest.raises(IndexError):
        v.decode(np.array([v.size]))


def test_rows_decode_the_same_in_any_batch_size():
    """Row blocks of several sizes (and the one-row path) give every sequence the same tokens: sequence n of
    a batch of 13 equals sequence n of a batch of 1..12 (its draws depend only on (seed, n, t))."""
    m = _one_to_many("gru", None, np.float32, L=2, V=40)
    code = _code(13, np.float32)
    whole = m.generate(code, 20, method="sample", seed=8, temperature=1.2)
    for n in range(1, 13):
        np.testing.assert_array_equal(m.generate(code[:n], 20, method="sample", seed=8, temperature=1.2),
                                      whole[:, :n])


def test_every_kernel_isa_decodes_the_same():
    """The vector width (avx2 / avx512 builds) changes no token and no score: the products add in the same
    order, one fused multiply-add each, in every build (the generic build rounds each product instead)."""
    mod = _decode._native_module()
    isas = list(mod.supported_isas())
    if len([i for i in isas if i != "generic"]) < 2:
        pytest.skip("fewer than two fused-multiply-add kernel builds run on this CPU")
    default = mod.isa()
    m = _one_to_many("lstm", None, np.float32, L=2, V=37)
    s2s = _sharpen(Seq2Seq(6, 33, 40, seed=3, end_token=0))
    src = np.random.default_rng(0).integers(0, 6, (4, 9))
    code = _code(9, np.float32)
    assert s2s.decoder.kind == "onehot"
    with _inference(m):
        h0, _ = m._start(code, need_cache=False)
    with _inference(s2s):
        ctx, c = s2s.encode(src, need_cache=False)        # once: the encoder's kernels are not under test
    first = np.arange(9) % 37
    out = {}
    try:
        for isa in isas:
            mod.set_isa(isa)
            out[isa] = (_decode.sample(m.decoder.rnn, m.head, None, first, h0, None, 25, "sample", 0.9, 0, 2)[0],
                        *_decode.beam(s2s.decoder.rnn, s2s.head, None, ctx, c, 1, 0, 7, 4))
    finally:
        mod.set_isa(default)
    with_fma = [i for i in isas if i != "generic"]   # the generic x86-64 build has no fused multiply-add
    for isa in with_fma[1:]:
        for a, b in zip(out[isa], out[with_fma[0]]):
            np.testing.assert_array_equal(a, b, err_msg=isa)


# ---- the random stream and the sampler ----

def _splitmix64(x):
    M = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & M
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M
    return x ^ (x >> 31)


def test_random_stream_is_the_documented_hash():
    """An independent Python implementation of decode.h's generator pins the stream on every machine."""
    mod = _decode._native_module()
    M = (1 << 64) - 1
    for seed, n, t in [(0, 0, 0), (1, 0, 0), (2**64 - 1, 7, 3), (12345, 99, 100000), (42, 2**40, 2**33)]:
        x = _splitmix64(_splitmix64(_splitmix64(seed) ^ n) ^ ((t * 0xD1B54A32D192ED03) & M))
        assert mod.decode_uniform(seed, n, t) == (x >> 11) / 2.0**53
    u = np.array([mod.decode_uniform(7, n, t) for n in range(50) for t in range(200)])
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def _chi2_critical(df, z=3.719):          # Wilson-Hilferty; z = 3.719 is the one-sided 1e-4 quantile
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("top_k,temperature", [(None, 1.0), (None, 0.6), (4, 1.3)])
def test_sampling_distribution_matches_reference_softmax(top_k, temperature):
    """N rows from one state, one step: N independent draws from softmax(logits / T) (top-k restricted),
    logits from the reference path; a chi-square test of the counts and the exact top-k support."""
    V, N = 12, 40000
    m = OneToMany(3, 16, V, seed=10, dtype=np.float64)
    _sharpen(m, 2.2)                  # probabilities 0.001-0.35: a 10% temperature error fails the test
    code = np.tile(np.array([[0.3, -1.0, 0.5]]), (N, 1))
    ids = m.generate(code, 1, method="sample", temperature=temperature, top_k=top_k, seed=2024, native=True)[0]
    with _inference(m):
        h, c = m._start(code[:1], need_cache=False)
        logits, _ = _decode_step(m.decoder, m.head, np.array([m.start_token]), h, c)
    z = logits[0].astype(np.float64) / temperature
    keep = np.ones(V, bool) if top_k is None else z >= np.sort(z)[-top_k]
    p = np.where(keep, np.exp(z - z.max()), 0.0)
    p /= p.sum()
    counts = np.bincount(ids, minlength=V)
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(keep))     # never outside the top k
    expect = N * p[keep]
    assert expect.min() > 20                                          # the test has power on every cell
    stat = float(((counts[keep] - expect) ** 2 / expect).sum())
    assert stat < _chi2_critical(keep.sum() - 1), (stat, counts, expect)


def test_sampling_reproducible_and_seed_dependent():
    m = _one_to_many("rnn", None, np.float32, L=1)
    code = _code(4, np.float32)
    a = m.generate(code, 40, method="sample", seed=3)
    np.testing.assert_array_equal(a, m.generate(code, 40, method="sample", seed=3))
    assert not np.array_equal(a, m.generate(code, 40, method="sample", seed=4))
    np.testing.assert_array_equal(m.generate(code[:1], 40, method="sample", seed=3)[:, 0], a[:, 0])  # own stream
    lm = CharLM(string.ascii_lowercase, 32, seed=1)
    s = lm.sample("abc", 80, temperature=1.0, seed=11)
    assert s == lm.sample("abc", 80, temperature=1.0, seed=11) != lm.sample("abc", 80, temperature=1.0, seed=12)
    assert lm.sample("abc", 80, temperature=1.0, seed=np.random.default_rng(5)) == \
        lm.sample("abc", 80, temperature=1.0, seed=np.random.default_rng(5))
    assert lm.sample("abc", 30, temperature=0.7, top_k=1, seed=1) == lm.sample("abc", 30, temperature=0)


def test_same_ids_for_any_thread_count():
    m = _one_to_many("lstm", None, np.float32, L=2)
    code = _code(40, np.float32)
    rnnfast.set_num_threads(1)
    try:
        a = m.generate(code, 30, method="sample", seed=9)
    finally:
        rnnfast.set_num_threads(2)
    np.testing.assert_array_equal(m.generate(code, 30, method="sample", seed=9), a)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("L,nonlinearity,feed_code", [(1, "tanh", True), (3, "relu", True), (2, "tanh", False)])
def test_one_stream_on_two_threads_equals_one_thread(L, nonlinearity, feed_code, dtype):
    """One vanilla stream with products of several panels (H = 80, V = 70) is decoded with a helper thread that
    takes part of every step's columns (decode.cpp, SplitStream): the ids and the final state equal one
    thread's bit for bit, for greedy and top-k sampling, with the constant input c or without, an end token
    that stops the stream early, and a forced prefix; greedy equals the Python loop token for token."""
    m = _sharpen(OneToMany(5, 80, 70, num_layers=L, cell="rnn", dtype=dtype, seed=4, feed_code=feed_code,
                           nonlinearity=nonlinearity), 1.5)
    with _inference(m):
        h0, c = m._start(_code(1, dtype, seed=3), need_cache=False)
    prime = np.random.default_rng(6).integers(0, 70, (4, 1))
    runs = [dict(method="greedy"), dict(method="sample", temperature=0.9, top_k=9, seed=21),
            dict(method="sample", temperature=1.3, seed=5, prefix=prime)]
    from rnnfast import _C
    for kw in runs:
        res = []
        for threads, stall in ((1, None), (2, None), (2, 0)):   # stall 0: the helper is dropped at its first wait
            rnnfast.set_num_threads(threads)
            old = _C._helper_stall_ns(stall) if stall is not None else None
            try:
                res.append(_decode.sample(m.decoder.rnn, m.head, None, np.array([3]), h0, c, 40, **kw))
            finally:
                rnnfast.set_num_threads(2)
                if old is not None:
                    _C._helper_stall_ns(old)
        (a, ha), (b, hb), (d, hd) = res
        for x, hx in ((b, hb), (d, hd)):
            np.testing.assert_array_equal(x, a, err_msg=str(kw))
            np.testing.assert_array_equal(hx, ha, err_msg=str(kw))
        end = int(a[17, 0])                          # stops at its first occurrence
        stop = int(np.flatnonzero(a[:, 0] == end)[0]) + 1
        ended = []
        for threads in (1, 2):
            rnnfast.set_num_threads(threads)
            try:
                ended.append(_decode.sample(m.decoder.rnn, m.head, None, np.array([3]), h0, c, 40, end_token=end,
                                            pad_token=1, **kw))
            finally:
                rnnfast.set_num_threads(2)
        (e1, he1), (e, he) = ended
        np.testing.assert_array_equal(e, e1)
        np.testing.assert_array_equal(he, he1)
        np.testing.assert_array_equal(e[:stop], a[:stop])
        assert (e[stop:] == 1).all()
        if kw["method"] == "greedy":
            np.testing.assert_array_equal(m.generate(_code(1, dtype, seed=3), 40, native=False)[1:],
                                          m.generate(_code(1, dtype, seed=3), 40, native=True)[1:])


# ---- bad input: clear errors, never a crash ----

def test_bad_arguments_public():
    m = _one_to_many("rnn", None, np.float32, L=1)
    code = _code(2, np.float32)
    with pytest.raises(ValueError, match="method"):
        m.generate(code, 3, method="nucleus")
    for t in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            m.generate(code, 3, method="sample", temperature=t)
    for k in (0, -2, 2.5):
        with pytest.raises(ValueError, match="top_k"):
            m.generate(code, 3, method="sample", top_k=k)
    for e in (-1, 11, 1.0):
        with pytest.raises(ValueError, match="end_token"):
            m.generate(code, 3, end_token=e)
    with pytest.raises(ValueError, match="seed"):
        m.generate(code, 3, method="sample", seed=-1)
    with pytest.raises(TypeError, match="native"):
        m.generate(code, 3, native="yes")
    slow = OneToMany(5, 8, 11, backend="numpy")
    with pytest.raises(RuntimeError, match="native decoding is unavailable"):
        slow.generate(code, 3, native=True)
    assert slow.generate(code, 3).shape == (3, 2)       # the default falls back to the Python loop
    lm = CharLM("abc", 8)
    with pytest.raises(ValueError, match="temperature"):
        lm.sample("a", 3, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        lm.sample("a", 3, top_k=0)
    with pytest.raises(ValueError, match="length"):
        lm.sample("a", -1)


def test_bad_arguments_native():
    m = _one_to_many("lstm", None, np.float32, L=2)
    mod = _decode._native_module()
    kind, w = _decode.layer_spec(m.decoder.rnn)
    W, b = m.head.params["weight"], m.head.params["bias"]
    h = np.zeros((2, 3, 31), np.float32)
    first = np.zeros(3, np.int64)

    def call(**kw):
        a = {"cell": kind, "weights": w, "embed": None, "head_weight": W, "head_bias": b, "first": first, "h0": h,
             "c0": h, "c": None, "steps": 4, "method": "sample", "temperature": 1.0, "top_k": 0, "seed": 0, "t0": 0,
             "end_token": -1, "pad_token": 0}
        a.update(kw)
        return mod.decode_sample(**a)

    assert call()[0].shape == (4, 3)
    cases = [({"cell": "transformer"}, ValueError, "cell"), ({"method": "beam"}, ValueError, "method"),
             ({"temperature": 0.0}, ValueError, "temperature"), ({"top_k": -1}, ValueError, "top_k"),
             ({"end_token": 11}, ValueError, "end_token"), ({"pad_token": -1}, ValueError, "pad_token"),
             ({"h0": np.zeros((2, 2, 31), np.float32)}, ValueError, r"h0 must have shape \(L, N, H\)"),
             ({"c0": None}, ValueError, "c0"), ({"c0": np.zeros((1, 3, 31), np.float32)}, ValueError, "c0"),
             ({"h0": h.astype(np.float64)}, TypeError, "dtype"), ({"first": np.array([0, 11, 0])}, ValueError,
                                                                   "outside the vocabulary"),
             ({"first": np.zeros(3)}, TypeError, "integer"), ({"steps": -1}, ValueError, "steps"),
             ({"c": np.zeros((3, 31), np.float32)}, ValueError, "constant input"),
             ({"head_weight": W[:, :5]}, ValueError, "head weight"), ({"weights": w[:1] + [w[0]]}, ValueError,
                                                                      "weight_ih_l1"),
             ({"embed": np.zeros((11, 4), np.float32)}, ValueError, "weight_ih_l0"),
             ({"prefix": np.zeros((2, 2), np.int64)}, ValueError, r"prefix must .* shape \(P, N\)"),
             ({"prefix": np.full((2, 3), 11)}, ValueError, "prefix.* outside the vocabulary")]
    for kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            call(**kw)
    with pytest.raises(ValueError, match="beam_size"):
        mod.decode_beam(kind, w, None, W, b, h, h, None, 0, 1, 5, 0)
    with pytest.raises(ValueError, match="max_len"):
        mod.decode_beam(kind, w, None, W, b, h, h, None, 0, 1, 0, 2)
    with pytest.raises(ValueError, match="start_token"):
        mod.decode_beam(kind, w, None, W, b, h, h, None, 11, 1, 5, 2)
