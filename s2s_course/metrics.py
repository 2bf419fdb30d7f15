"""How good are the outputs? Token accuracy, exact match, perplexity, BLEU and chrF.

Sequence-level metrics take plain Python lists of token ids (or tokens) as produced by
``decode.greedy_decode``: no SOS, no EOS, no padding. BLEU and chrF are *never* hand-written here:
they come from sacrebleu, the reference implementation, so the numbers in the book can be compared
with papers. Always report BLEU together with its signature (``bleu_signature``): a BLEU score
without its tokenizer and casing settings is not comparable with anything.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Hashable, Sequence

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.bleu import BLEUScore
from sacrebleu.metrics.chrf import CHRFScore

Seq = Sequence[Hashable]  # one sequence of token ids or token strings


def _check_pairs(preds: Sequence, refs: Sequence, names: tuple[str, str] = ("preds", "refs")) -> None:
    """Both lists must be non-empty and of the same length (one prediction per reference)."""
    for name, value in zip(names, (preds, refs)):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a list, got {type(value).__name__}")
        if len(value) == 0:
            raise ValueError(f"{name} is empty: need at least one sequence")
    if len(preds) != len(refs):
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, "
                         f"got {len(preds)} and {len(refs)}")


def _correct_tokens(pred: Seq, ref: Seq) -> int:
    """How many positions ``i < len(ref)`` have ``pred[i] == ref[i]``."""
    return sum(p == r for p, r in zip(pred, ref))


def token_accuracy(preds: Sequence[Seq], refs: Sequence[Seq]) -> float:
    """Fraction of reference tokens predicted correctly at the same position (micro average).

    Position-wise over the *reference* length: a prediction that stops early misses the rest,
    extra predicted tokens past the reference end are not counted. ``[[1, 2, 9]]`` vs ``[[1, 2, 3, 4]]``
    is 2 / 4 = 0.5.
    """
    _check_pairs(preds, refs)
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("refs contains only empty sequences: token accuracy is undefined")
    return sum(_correct_tokens(p, r) for p, r in zip(preds, refs)) / total


def exact_match(preds: Sequence[Seq], refs: Sequence[Seq]) -> float:
    """Fraction of predictions identical to their reference (same tokens, same length)."""
    _check_pairs(preds, refs)
    return sum(list(p) == list(r) for p, r in zip(preds, refs)) / len(refs)


def accuracy_by_length(preds: Sequence[Seq], refs: Sequence[Seq],
                       lengths: Sequence[int] | None = None) -> dict[int, tuple[float, float, int]]:
    """Group examples by length: ``{length: (exact_match, token_accuracy, n_examples)}``.

    ``lengths`` is usually the *source* length of each example (does the model fail on long
    inputs?); by default the reference length is used. Keys come out sorted.
    """
    _check_pairs(preds, refs)
    if lengths is None:
        lengths = [len(r) for r in refs]
    if len(lengths) != len(refs):
        raise ValueError(f"lengths must have one entry per example ({len(refs)}), got {len(lengths)}")
    groups: dict[int, list[int]] = defaultdict(list)
    for i, length in enumerate(lengths):
        groups[int(length)].append(i)
    result = {}
    for length in sorted(groups):
        idx = groups[length]
        p, r = [preds[i] for i in idx], [refs[i] for i in idx]
        n_tokens = sum(len(x) for x in r)
        tok = sum(_correct_tokens(a, b) for a, b in zip(p, r)) / n_tokens if n_tokens else float("nan")
        result[length] = (exact_match(p, r), tok, len(idx))
    return result


def perplexity(mean_nll: float) -> float:
    """``exp(mean negative log-likelihood per token)``: the effective number of choices per token.

    A model that spreads its probability uniformly over ``V`` tokens has perplexity ``V``.
    """
    if isinstance(mean_nll, bool) or not isinstance(mean_nll, (int, float)) or math.isnan(mean_nll):
        raise ValueError(f"mean_nll must be a number, got {mean_nll!r}")
    if mean_nll < 0:
        raise ValueError(f"mean_nll must be >= 0 (a negative log-likelihood), got {mean_nll!r}")
    return math.exp(mean_nll) if mean_nll < 709 else math.inf  # exp overflows past ~709.78


def _check_strings(hyps: Sequence[str], refs: Sequence[str]) -> None:
    _check_pairs(hyps, refs, names=("hyps", "refs"))
    for name, lines in (("hyps", hyps), ("refs", refs)):
        bad = next((i for i, line in enumerate(lines) if not isinstance(line, str)), None)
        if bad is not None:
            raise TypeError(f"{name} must be a list of strings (detokenized sentences), "
                            f"but {name}[{bad}] is {type(lines[bad]).__name__}; "
                            f"join tokens first, e.g. ' '.join(tokens)")


def _check_tokenize(tokenize: str) -> None:
    if tokenize not in BLEU.TOKENIZERS:
        raise ValueError(f"tokenize must be one of {sorted(BLEU.TOKENIZERS)}, got {tokenize!r}")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], tokenize: str = "13a",
                lowercase: bool = False) -> BLEUScore:
    """Corpus BLEU of detokenized sentences with one reference each, computed by sacrebleu.

    ``tokenize="13a"`` is the WMT standard; use ``"intl"`` or ``"char"`` for Korean, ``"none"`` for
    text that is already tokenized. The result prints as ``BLEU = 35.12 ...``; ``.score`` is 0-100.
    """
    _check_strings(hyps, refs)
    _check_tokenize(tokenize)
    return BLEU(tokenize=tokenize, lowercase=lowercase).corpus_score(list(hyps), [list(refs)])


def corpus_chrf(hyps: Sequence[str], refs: Sequence[str], word_order: int = 0,
                lowercase: bool = False) -> CHRFScore:
    """Corpus chrF (character n-gram F-score) by sacrebleu; ``word_order=2`` gives chrF++.

    chrF needs no tokenizer, which makes it a fairer choice than BLEU for Korean.
    """
    _check_strings(hyps, refs)
    if word_order not in (0, 1, 2):
        raise ValueError(f"word_order must be 0 (chrF), 1 or 2 (chrF++), got {word_order!r}")
    return CHRF(word_order=word_order, lowercase=lowercase).corpus_score(list(hyps), [list(refs)])


def bleu_signature(tokenize: str = "13a", lowercase: bool = False) -> str:
    """sacrebleu's signature for ``corpus_bleu`` with these settings (one reference), e.g.
    ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.0``."""
    _check_tokenize(tokenize)
    bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
    bleu.corpus_score(["x"], [["x"]])  # sacrebleu learns the number of references by scoring
    return str(bleu.get_signature())


def chrf_signature(word_order: int = 0, lowercase: bool = False) -> str:
    """sacrebleu's signature for ``corpus_chrf`` with these settings (one reference), e.g.
    ``nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.4.0``."""
    chrf = CHRF(word_order=word_order, lowercase=lowercase)
    chrf.corpus_score(["x"], [["x"]])  # sacrebleu learns the number of references by scoring
    return str(chrf.get_signature())


def lowercase_token_bleu(hyps_tokens: Sequence[Sequence[str]],
                         refs_tokens: Sequence[Sequence[str]]) -> BLEUScore:
    """BLEU over our *own* tokens, lowercased and joined by spaces (sacrebleu, ``tokenize="none"``).

    This is what many tutorials (e.g. bentrevett's pytorch-seq2seq) report. It depends on the
    tokenizer, so it is only comparable with numbers computed the same way; prefer ``corpus_bleu``
    on detokenized text for anything you publish.
    """
    _check_pairs(hyps_tokens, refs_tokens, names=("hyps_tokens", "refs_tokens"))
    for name, lists in (("hyps_tokens", hyps_tokens), ("refs_tokens", refs_tokens)):
        if any(isinstance(tokens, str) for tokens in lists):
            raise TypeError(f"{name} must be a list of token lists, e.g. [['a', 'dog'], ...], "
                            f"not a list of strings (use corpus_bleu for sentences)")
    hyps = [" ".join(str(t) for t in tokens).lower() for tokens in hyps_tokens]
    refs = [" ".join(str(t) for t in tokens).lower() for tokens in refs_tokens]
    # force=True: the input is tokenized on purpose, so sacrebleu's "forgot to detokenize?" warning is noise.
    return BLEU(tokenize="none", lowercase=False, force=True).corpus_score(hyps, [refs])
