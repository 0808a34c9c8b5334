"""BLEU-1..4 (Papineni et al. 2002): clipped n-gram precisions, geometric mean, brevity penalty.

What it is: corpus-level BLEU over token lists with one or more references per hypothesis, and the
exact-match rate, in plain Python. What it is not: a tokenizer or smoothing for sentence-level scores
(a corpus with no matching n-gram of some order scores 0 for that BLEU-n, as in the original definition).
"""
from __future__ import annotations

import math
from collections import Counter


def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _as_refs(refs):
    """One reference (list of tokens) or several (list of lists) -> list of lists."""
    if len(refs) > 0 and isinstance(refs[0], str):
        return [list(refs)]
    return [list(r) for r in refs]


def corpus_bleu(references, hypotheses, max_n=4):
    """BLEU-1..max_n of a corpus. Returns a list [BLEU-1, ..., BLEU-max_n] of floats in [0, 1].

    references: one item per hypothesis, each a token list or a list of token lists (several references).
    hypotheses: a list of token lists. Clipped counts and lengths are summed over the corpus before the
    ratios are taken; the brevity penalty uses, for each hypothesis, the reference length closest to it
    (the shorter on ties), BP = min(1, exp(1 - r / c)).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"references and hypotheses must have the same length, got {len(references)} and "
                         f"{len(hypotheses)}")
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    match = [0] * max_n
    total = [0] * max_n
    hyp_len = ref_len = 0
    for refs, hyp in zip(references, hypotheses):
        refs = _as_refs(refs)
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        hyp = list(hyp)
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            h = _ngrams(hyp, n)
            if not h:
                continue
            best = Counter()
            for r in refs:
                best |= _ngrams(r, n)   # max count of each n-gram over the references
            match[n - 1] += sum(min(c, best[g]) for g, c in h.items())
            total[n - 1] += sum(h.values())
    if hyp_len == 0:
        return [0.0] * max_n
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    scores = []
    log_sum = 0.0
    for n in range(max_n):
        if total[n] == 0 or match[n] == 0:
            scores.extend([0.0] * (max_n - n))
            break
        log_sum += math.log(match[n] / total[n])
        scores.append(bp * math.exp(log_sum / (n + 1)))
    return scores


def exact_match(references, hypotheses):
    """Fraction of hypotheses equal to one of their references (token lists compared whole)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"references and hypotheses must have the same length, got {len(references)} and "
                         f"{len(hypotheses)}")
    if not hypotheses:
        return 0.0
    hits = sum(any(list(h) == r for r in _as_refs(refs)) for refs, h in zip(references, hypotheses))
    return hits / len(hypotheses)
