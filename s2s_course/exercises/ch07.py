"""Checkers for chapter 7, decoding and evaluation.

- ``check_length_penalty(fn)``: ``fn(log_probs (N,), lengths (N,), alpha) -> scores (N,)``, the
  GNMT score log P(Y|X) / lp(Y) of N finished hypotheses, against ``decode.gnmt_length_penalty``.
- ``check_beam_step(fn)``: ``fn(beam_scores (K,), log_probs (K, V), k) -> (scores (k,),
  parents (k,), tokens (k,))``, one step of beam search: the k best of all K x V extensions,
  with back-pointers to the hypothesis each one extends.
- ``check_coverage_penalty(fn)``: ``fn(attn (..., T, S), src_mask (..., S), beta) -> (...,)``, GNMT's
  coverage penalty beta * sum_i log(min(sum_j p_ij, 1)) over the real source words, against
  ``decode.coverage_penalty`` (a word never attended is clamped at ``decode.COVERAGE_EPS``).

When the answer is wrong, both say which classic slip it matches (no smoothing in the penalty,
multiplying instead of dividing, ranking tokens without the prefix score, picking per row,
swapping the back-pointer and the token, ...), not just "values differ".
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from s2s_course.decode import COVERAGE_EPS, beam_step, coverage_penalty, gnmt_length_penalty
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_grad,
                                       expect_inputs_unchanged)

# =============================================================================================
# 1. The GNMT length penalty, applied to finished hypotheses
# =============================================================================================


def reference_length_penalty(log_probs: torch.Tensor, lengths: torch.Tensor,
                             alpha: float) -> torch.Tensor:
    """score_i = log_probs_i / lp(lengths_i), lp from the package (Wu et al. 2016, eq. 14)."""
    lp = torch.tensor([gnmt_length_penalty(int(n), alpha) for n in lengths],
                      dtype=log_probs.dtype)                                   # (N,)
    return log_probs / lp


# Plausible wrong formulas, each with the message that explains it.
_PENALTY_SLIPS: list[tuple[Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], str]] = [
    (lambda lp, n, a: lp * ((5 + n.double()) / 6) ** a,
     "your scores match log_probs * lp(Y): divide by the penalty, score = log P / lp(Y). "
     "Log-probabilities are negative, so dividing by lp > 1 makes long sentences' scores less "
     "negative: that is the point"),
    (lambda lp, n, a: lp / n.double() ** a,
     "your scores match log_probs / |Y| ** alpha: GNMT smooths the length, "
     "lp(Y) = ((5 + |Y|) / 6) ** alpha"),
    (lambda lp, n, a: lp / ((5 + n.double()) / 6),
     "your scores match log_probs / ((5 + |Y|) / 6), without the exponent alpha: "
     "lp(Y) = ((5 + |Y|) / 6) ** alpha (alpha = 0 must give no penalty at all)"),
    (lambda lp, n, a: lp / ((5 + n.double()) ** a / 6),
     "your scores match log_probs / ((5 + |Y|) ** alpha / 6): the exponent applies to the whole "
     "fraction, lp(Y) = ((5 + |Y|) / 6) ** alpha"),
    (lambda lp, n, a: lp / ((1 + n.double()) / 6) ** a,
     "your scores match lp(Y) = ((1 + |Y|) / 6) ** alpha: the constant is 5, "
     "lp(Y) = ((5 + |Y|) / 6) ** alpha"),
    (lambda lp, n, a: lp / ((5 + (n.double() - 1)) / 6) ** a,
     "your scores match the penalty of lengths - 1: the lengths you are given already count the "
     "final <eos>, as beam_search counts it (a hypothesis finished at step t has |Y| = t); use them "
     "as they are"),
    (lambda lp, n, a: lp / ((5 + (n.double() + 1)) / 6) ** a,
     "your scores match the penalty of lengths + 1: the lengths you are given already count the "
     "final <eos> (as beam_search does), so do not add one for it"),
    (lambda lp, n, a: (lp / ((5 + n.double()) / 6) ** a).sort(descending=True).values,
     "your scores are the right numbers sorted best first: return them in the order of the "
     "hypotheses (score i belongs to hypothesis i); ranking them is the caller's job"),
]


def _close(got: Any, expected: torch.Tensor) -> bool:
    return (isinstance(got, torch.Tensor) and got.shape == expected.shape
            and torch.allclose(got.detach().double(), expected.detach().double(),
                               atol=1e-5, rtol=1e-4))


def _penalty_checks() -> list[Check]:
    def returns_tensor(t: Trial) -> str | None:
        if isinstance(t.got, torch.Tensor):
            return None
        extra = " (did you forget `return`?)" if t.got is None else ""
        return f"expected a torch.Tensor of scores, got {type(t.got).__name__}{extra}"

    def shape(t: Trial) -> str | None:
        if tuple(t.got.shape) == tuple(t.expected.shape):
            return None
        return (f"expected one score per hypothesis, shape {tuple(t.expected.shape)}, "
                f"got {tuple(t.got.shape)}")

    def dtype(t: Trial) -> str | None:
        if t.got.dtype == t.expected.dtype:
            return None
        return (f"log_probs are {t.expected.dtype}, got {t.got.dtype} scores: keep the dtype of log_probs "
                f"(build the penalty with lengths.to(log_probs.dtype), do not call .float())")

    def dead_hypotheses(t: Trial) -> str | None:
        got, expected = t.got.detach(), t.expected
        if bool(torch.isnan(got).any()) and not bool(torch.isnan(expected).any()):
            return f"your scores contain NaN: {got.tolist()}"
        wrong = torch.isneginf(expected) & ~torch.isneginf(got)
        if bool(wrong.any()):
            i = int(wrong.nonzero()[0, 0])
            return (f"hypothesis {i} has log P = -inf (it took a token of probability 0), so its score "
                    f"must stay -inf, got {got[i].item():.4g}: dividing by lp(Y) > 0 keeps -inf; "
                    f"do not replace it by 0 or a finite number, or a dead hypothesis can win")
        return None

    def formula(t: Trial) -> str | None:
        if _close(t.got, t.expected):
            return None
        log_probs, lengths, alpha = t.case.fresh()[0]
        for slip, message in _PENALTY_SLIPS:
            if _close(t.got, slip(log_probs.double(), lengths, alpha)):
                return message
        return None  # an unknown mistake: the "values" check reports it

    def values(t: Trial) -> str | None:
        if _close(t.got, t.expected):
            return None
        got, expected = t.got.detach().double(), t.expected.detach().double()
        i = int((got - expected).abs().nan_to_num(nan=0.0).argmax())  # -inf - -inf is not a mistake
        log_probs, lengths, alpha = t.case.fresh()[0]
        return (f"hypothesis {i} (log P = {log_probs[i].item():.4g}, |Y| = {int(lengths[i])}, "
                f"alpha = {alpha}): expected score {expected[i].item():.4g}, "
                f"got {got[i].item():.4g}")

    return [Check("returns a tensor", returns_tensor), Check("shape", shape), Check("dtype", dtype),
            Check("a -inf hypothesis stays -inf", dead_hypotheses),
            Check("length penalty formula", formula),
            Check("values", values, "score = log_probs / ((5 + lengths) / 6) ** alpha"),
            expect_inputs_unchanged(),
            expect_grad(wrt=["log_probs"], hint="divide the log_probs tensor itself; do not rebuild the "
                                                "scores with torch.tensor([...]) or .item()")]


PENALTY_CASES = [
    Case("GNMT alpha = 0.6", (torch.tensor([-2.0, -3.5, -6.0, -9.1]), torch.tensor([2, 4, 7, 12]),
                              0.6)),
    Case("alpha = 0: no penalty", (torch.tensor([-1.2, -4.0]), torch.tensor([1, 9]), 0.0)),
    Case("alpha = 1", (torch.tensor([-0.5, -7.25, -3.0]), torch.tensor([1, 15, 3]), 1.0)),
    Case("one hypothesis of length 1 (only <eos>)", (torch.tensor([-0.7]), torch.tensor([1]),
                                                      0.8)),
    Case("unsorted scores, longest first", (torch.tensor([-9.0, -1.5, -5.0, -3.2]),
                                            torch.tensor([14, 2, 9, 6]), 0.6)),
    Case("float64 log_probs", (torch.tensor([-3.25, -0.75, -12.5], dtype=torch.float64),
                               torch.tensor([5, 1, 20]), 0.7)),
    Case("a dead hypothesis (log P = -inf)", (torch.tensor([-2.5, float("-inf"), -4.0]),
                                              torch.tensor([3, 4, 8]), 0.6)),
]


def check_length_penalty(length_penalty_scores: Callable) -> bool:
    """``length_penalty_scores(log_probs (N,), lengths (N,) long, alpha: float) -> scores (N,)``
    must equal log_probs / ((5 + lengths) / 6) ** alpha, in the dtype of log_probs, in the order
    of the hypotheses, differentiable in log_probs, without changing its inputs. The lengths
    count the final <eos>, as ``decode.beam_search`` does."""
    return check_function(length_penalty_scores, reference_length_penalty, PENALTY_CASES,
                          _penalty_checks())


# =============================================================================================
# 2. One step of beam search
# =============================================================================================


def reference_beam_step(beam_scores: torch.Tensor, log_probs: torch.Tensor,
                        k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The package's ``decode.beam_step``: the k best of all K*V extensions, with back-pointers."""
    return beam_step(beam_scores, log_probs, k)


def _no_prefix(beam_scores, log_probs, k):
    V = log_probs.size(1)
    _, flat = log_probs.reshape(-1).topk(k)
    totals = beam_scores.unsqueeze(1) + log_probs
    return totals.reshape(-1)[flat], flat // V, flat % V


def _no_prefix_raw(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = log_probs.reshape(-1).topk(k)
    return scores, flat // V, flat % V


def _per_row(beam_scores, log_probs, k):
    """Best token of each hypothesis, then the k best of those (wrong: one child per parent)."""
    totals = beam_scores.unsqueeze(1) + log_probs                      # (K, V)
    best, token = totals.max(dim=1)                                    # (K,)
    order = best.argsort(descending=True)[:k]
    return best[order], order, token[order]


def _swapped(beam_scores, log_probs, k):
    scores, parents, tokens = reference_beam_step(beam_scores, log_probs, k)
    return scores, tokens, parents


def _divided_by_k(beam_scores, log_probs, k):
    K = log_probs.size(0)
    totals = beam_scores.unsqueeze(1) + log_probs
    scores, flat = totals.reshape(-1).topk(k)
    return scores, flat // K, flat % K


def _parents_in_sorted_order(beam_scores, log_probs, k):
    """Sorts the hypotheses best first, then forgets to map the parents back (wrong unless the
    beam scores arrive sorted)."""
    V = log_probs.size(1)
    order = beam_scores.argsort(descending=True)
    totals = beam_scores[order].unsqueeze(1) + log_probs[order]
    scores, flat = totals.reshape(-1).topk(k)
    return scores, flat // V, flat % V


def _finished_at_the_end(beam_scores, log_probs, k):
    """Assumes finished (-inf) hypotheses sit at the end of the beam and cuts them off."""
    V = log_probs.size(1)
    alive = int(torch.isfinite(beam_scores).sum())
    totals = beam_scores[:alive].unsqueeze(1) + log_probs[:alive]
    scores, flat = totals.reshape(-1).topk(k)
    return scores, flat // V, flat % V


def _probability_space(beam_scores, log_probs, k):
    """Multiplies probabilities instead of adding log-probabilities: underflows to 0 for long
    hypotheses."""
    V = log_probs.size(1)
    probs = beam_scores.exp().unsqueeze(1) * log_probs.exp()
    best, flat = probs.reshape(-1).topk(k)
    return best.log(), flat // V, flat % V


def _equal(got: Any, expected: torch.Tensor) -> bool:
    return (isinstance(got, torch.Tensor) and got.shape == expected.shape
            and bool((got.detach().cpu().long() == expected.long()).all()))


def _all_match(got: Any, expected: tuple) -> bool:
    return (isinstance(got, (tuple, list)) and len(got) == 3 and _close(got[0], expected[0])
            and _equal(got[1], expected[1]) and _equal(got[2], expected[2]))


_BEAM_SLIPS = [
    (_no_prefix_raw, "you ranked (and scored) the extensions by the new token's log-probability "
                     "alone; a hypothesis's score is the sum over ALL its tokens: rank "
                     "beam_scores[:, None] + log_probs"),
    (_no_prefix, "you ranked the extensions by the new token's log-probability alone; a "
                 "hypothesis's score is the sum over ALL its tokens: rank "
                 "beam_scores[:, None] + log_probs"),
    (_per_row, "you kept only the best token of each hypothesis; beam search compares all K x V "
               "extensions together, so one good hypothesis may have several children and a "
               "weak one none: flatten the (K, V) totals and take topk"),
    (_swapped, "parents and tokens are swapped: in the flattened (K*V,) index, the hypothesis "
               "(parent) is index // V and the token is index % V"),
    (_divided_by_k, "you split the flat index with K (the beam size); the rows of the (K, V) "
                    "table have V entries, so parent = index // V and token = index % V"),
    (_parents_in_sorted_order, "your parents index the hypotheses after sorting them by score; the "
                               "beam is not sorted best first, so a parent must be the position in "
                               "the beam_scores you were given (or map it back: order[index // V])"),
    (_finished_at_the_end, "you cut off the last rows as if finished (-inf) hypotheses always sat at "
                           "the end of the beam; they can be anywhere: rank all K rows, a -inf row "
                           "never wins"),
    (_probability_space, "you multiplied probabilities: exp of a long hypothesis's score underflows "
                         "to 0 and every extension ties; stay in log space and add, "
                         "beam_scores[:, None] + log_probs"),
]


def _beam_checks() -> list[Check]:
    def three_tensors(t: Trial) -> str | None:
        if (isinstance(t.got, (tuple, list)) and len(t.got) == 3
                and all(isinstance(x, torch.Tensor) for x in t.got)):
            return None
        return (f"expected a tuple of three tensors (scores, parents, tokens), "
                f"got {type(t.got).__name__}" + (f" of length {len(t.got)}"
                                                 if isinstance(t.got, (tuple, list)) else ""))

    def shapes(t: Trial) -> str | None:
        k = t.case.args[2]
        for name, x in zip(("scores", "parents", "tokens"), t.got):
            if tuple(x.shape) != (k,):
                return f"{name} must have shape ({k},) (one entry per kept extension), got {tuple(x.shape)}"
        return None

    def dtypes(t: Trial) -> str | None:
        for name, x in zip(("parents", "tokens"), t.got[1:]):
            if x.dtype != torch.long:
                return (f"{name} must be int64 (torch.long) indices, got {x.dtype}; "
                        f"use // and % on the index tensor from topk")
        return None

    def known_slips(t: Trial) -> str | None:
        if _all_match(t.got, t.expected):
            return None
        args = t.case.fresh()[0]
        for slip, message in _BEAM_SLIPS:
            try:
                matched = _all_match(t.got, slip(*args))
            except Exception:  # a slip that cannot even run on this case is not the learner's
                matched = False
            if matched:
                return message
        return None

    def scores_dtype(t: Trial) -> str | None:
        if t.got[0].dtype == t.expected[0].dtype:
            return None
        return (f"the inputs are {t.expected[0].dtype}, got {t.got[0].dtype} scores: keep the dtype "
                f"of beam_scores + log_probs (do not call .float() or rebuild with torch.tensor)")

    def scores(t: Trial) -> str | None:
        if _close(t.got[0], t.expected[0]):
            return None
        if bool(torch.isnan(t.got[0].detach()).any()):
            return ("your scores contain NaN: a hypothesis whose every next token is -inf must simply "
                    "never be chosen; do not renormalise or subtract rows (-inf - (-inf) = NaN)")
        if _close(t.got[0].sort(descending=True).values, t.expected[0]):
            return "scores are right but not sorted best first: topk returns them in order"
        return (f"expected the k best totals {[round(v, 4) for v in t.expected[0].tolist()]}, "
                f"got {[round(v, 4) for v in t.got[0].detach().tolist()]}")

    def backpointers(t: Trial) -> str | None:
        if _equal(t.got[1], t.expected[1]):
            return None
        return (f"expected parents {t.expected[1].tolist()} (which hypothesis each extension "
                f"continues), got {t.got[1].tolist()}")

    def tokens(t: Trial) -> str | None:
        if _equal(t.got[2], t.expected[2]):
            return None
        return f"expected tokens {t.expected[2].tolist()}, got {t.got[2].tolist()}"

    return [Check("returns (scores, parents, tokens)", three_tensors),
            Check("beam step logic", known_slips), Check("shapes", shapes),
            Check("dtype of indices", dtypes),
            Check("dtype of scores", scores_dtype),
            Check("scores", scores), Check("back-pointers (parents)", backpointers),
            Check("tokens", tokens), expect_inputs_unchanged(),
            expect_grad(wrt=["beam_scores", "log_probs"], item=0,
                        hint="the scores must be the selected totals themselves (topk values or "
                             "totals.reshape(-1)[index]), so gradients reach both inputs")]


def _beam_case(name: str, K: int, V: int, k: int, seed: int, sort: bool = True,
               dead: tuple = (), banned: tuple = (), offset: float = 0.0,
               dtype: torch.dtype = torch.float32) -> Case:
    """Random (K,) scores (best first unless sort=False) and (K, V) log-probabilities; the rows in
    dead get score -inf (finished hypotheses), the rows in banned get -inf for every token, and
    offset is added to every score (a long hypothesis has a very negative one)."""
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(K, V, generator=g) * 2, dim=-1)   # (K, V)
    beam_scores = -torch.rand(K, generator=g) * 3 + offset                       # (K,)
    if sort:
        beam_scores = beam_scores.sort(descending=True).values
    beam_scores[list(dead)] = float("-inf")
    log_probs[list(banned)] = float("-inf")
    return Case(name, (beam_scores.to(dtype), log_probs.to(dtype), k))


def _one_strong_parent() -> Case:
    """Hypothesis 0 is much better than hypothesis 1: its two best tokens both beat anything
    hypothesis 1 can offer, so both kept extensions have parent 0."""
    log_probs = torch.log(torch.tensor([[0.05, 0.05, 0.05, 0.05, 0.5, 0.3],
                                        [0.05, 0.05, 0.05, 0.05, 0.1, 0.7]]))
    return Case("one parent gets both children", (torch.tensor([-0.5, -4.0]), log_probs, 2))


BEAM_CASES = [
    _beam_case("K = 3, V = 7, k = 3", K=3, V=7, k=3, seed=1),
    _one_strong_parent(),
    _beam_case("first step: one hypothesis (K = 1)", K=1, V=6, k=3, seed=0),
    _beam_case("k = 4 > K = 2 (the beam grows)", K=2, V=5, k=4, seed=2),
    _beam_case("unsorted beam scores (the best hypothesis is not first)", K=4, V=6, k=4, seed=5,
               sort=False),
    _beam_case("a finished (-inf) hypothesis first", K=3, V=5, k=3, seed=6, sort=False, dead=(0,)),
    _beam_case("a finished (-inf) hypothesis in the middle", K=4, V=5, k=4, seed=7, sort=False,
               dead=(1,)),
    _beam_case("a hypothesis whose every next token is -inf", K=3, V=6, k=3, seed=8, sort=False,
               banned=(1,)),
    _beam_case("long hypotheses (scores near -800)", K=3, V=6, k=3, seed=9, sort=False,
               offset=-800.0),
    _beam_case("float64 inputs", K=3, V=7, k=3, seed=10, sort=False, dtype=torch.float64),
]


def check_beam_step(beam_step: Callable) -> bool:
    """``beam_step(beam_scores (K,), log_probs (K, V), k) -> (scores (k,), parents (k,) long,
    tokens (k,) long)``: the k best extensions, best first, with their back-pointers. The beam
    may come in any order and hold finished (-inf) hypotheses anywhere; scores keep the inputs'
    dtype and are differentiable in both inputs."""
    return check_function(beam_step, reference_beam_step, BEAM_CASES, _beam_checks())


# =============================================================================================
# 3. GNMT's coverage penalty
# =============================================================================================


def reference_coverage_penalty(attn: torch.Tensor, src_mask: torch.Tensor, beta: float) -> torch.Tensor:
    """The package's ``decode.coverage_penalty``: beta * sum_i log(min(sum_j p_ij, 1)) over the real
    source words i (coverage clamped at ``COVERAGE_EPS``), attn (..., T, S) -> (...,)."""
    return coverage_penalty(attn, src_mask, beta)


def _log_capped(coverage: torch.Tensor, eps: float | None = COVERAGE_EPS, cap: bool = True) -> torch.Tensor:
    """log(min(coverage, 1)), the coverage clamped at eps first unless eps is None."""
    if cap:
        coverage = coverage.clamp(max=1.0)
    return (coverage if eps is None else coverage.clamp(min=eps)).log()


def _masked_sum(per_word: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
    return per_word.masked_fill(~src_mask, 0.0).sum(dim=-1)


# What each classic slip computes, from attn (..., T, S) in float64, and the message that names it.
_COVERAGE_SLIPS: list[tuple[Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], str]] = [
    (lambda a, m, b: b * _masked_sum(_log_capped(a.sum(-2), cap=False), m),
     "your penalty matches log(sum_j p_ij) without the min: a source word attended to more than once "
     "(coverage > 1) must not earn a bonus; take log(min(coverage, 1))"),
    (lambda a, m, b: b * _masked_sum(_log_capped(a.sum(-1)), m),
     "your penalty matches a sum over the source positions (dim=-1): every attention row already sums "
     "to 1 over the source; the coverage of source word i is the sum over the TARGET steps j, "
     "attn.sum(dim=-2)"),
    (lambda a, m, b: b * _log_capped(a.sum(-2)).sum(-1),
     "your penalty counts the padding positions (each adds beta * log(eps)): leave out the source "
     "positions where src_mask is False"),
    (lambda a, m, b: b * _masked_sum(_log_capped(a.sum(-2), eps=None), m),
     "your penalty is -inf: a real source word that got no attention at all has coverage 0 and "
     "log 0 = -inf; this exercise clamps the coverage at eps = 1e-10 before the log "
     "(coverage.clamp(min=1e-10, max=1.0))"),
    (lambda a, m, b: b * _log_capped(a.sum(-2), eps=None).sum(-1),
     "your penalty is -inf because the padding positions were counted: their attention is 0 and "
     "log 0 = -inf; leave out the positions where src_mask is False"),
    (lambda a, m, b: b * (_log_capped(a.sum(-2), eps=None) * m).sum(-1),
     "your penalty is NaN: log 0 = -inf at a padding position, times the 0 of the mask, is NaN; "
     "select with masked_fill / torch.where instead of multiplying by the mask (or clamp first)"),
    (lambda a, m, b: b * _masked_sum(_log_capped(a.sum(-2)), m & (a.sum(-2) > 0)),
     "you skipped a real source word whose coverage is 0, as if it were padding: padding comes from "
     "src_mask, not from zero attention; a real word never attended costs log(eps)"),
    (lambda a, m, b: _masked_sum(_log_capped(a.sum(-2)), m) if b != 1 else None,
     "your penalty ignores beta: cp = beta * sum_i log(min(coverage_i, 1))"),
    (lambda a, m, b: -b * _masked_sum(_log_capped(a.sum(-2)), m),
     "your penalty has the wrong sign: log of a coverage <= 1 is <= 0, so cp <= 0 as it is, and it "
     "is ADDED to the score (do not negate it)"),
    (lambda a, m, b: b * _masked_sum(_log_capped(a.sum(-2)), m) / m.sum(-1),
     "your penalty is the mean over the source words: GNMT sums log(min(coverage_i, 1)) over them"),
    (lambda a, m, b: b * _masked_sum(_log_capped(a).sum(-2), m),
     "you took the log of every attention weight and then summed: the coverage of word i is the sum "
     "of its weights over the target steps, and the log comes after the sum (and the min)"),
]


def _same(got: Any, want: torch.Tensor) -> bool:
    """Same shape and values (NaN equals NaN, -inf equals -inf)."""
    return (isinstance(got, torch.Tensor) and got.shape == want.shape
            and bool(torch.isclose(got.detach().double(), want.double(), atol=1e-5, rtol=1e-4,
                                   equal_nan=True).all()))


def _coverage_checks() -> list[Check]:
    def returns_tensor(t: Trial) -> str | None:
        if isinstance(t.got, torch.Tensor):
            return None
        extra = " (did you forget `return`?)" if t.got is None else ""
        return (f"expected a torch.Tensor (a 0-d tensor for one hypothesis), got "
                f"{type(t.got).__name__}{extra}; do not call .item()")

    def shape(t: Trial) -> str | None:
        if tuple(t.got.shape) == tuple(t.expected.shape):
            return None
        attn = t.case.args[0]
        return (f"attn has shape {tuple(attn.shape)} = (..., T, S), so expected one penalty per "
                f"hypothesis, shape {tuple(t.expected.shape)}, got {tuple(t.got.shape)}: sum over the "
                f"target steps (dim=-2), then over the source words (dim=-1), whatever the leading dims")

    def dtype(t: Trial) -> str | None:
        if t.got.dtype == t.expected.dtype:
            return None
        return f"attn is {t.expected.dtype}, got a {t.got.dtype} penalty: keep the dtype of attn"

    def formula(t: Trial) -> str | None:
        if _same(t.got, t.expected):
            return None
        attn, src_mask, beta = t.case.fresh()[0]
        for slip, message in _COVERAGE_SLIPS:
            try:
                wrong = slip(attn.double(), src_mask, beta)
            except Exception:  # e.g. the wrong axis does not broadcast with this case's mask
                continue
            if wrong is not None and not _same(wrong, t.expected) and _same(t.got, wrong):
                return message
        return None  # an unknown mistake: the next checks report it

    def finite(t: Trial) -> str | None:
        got = t.got.detach()
        bad = ~torch.isfinite(got) & torch.isfinite(t.expected)
        if not bool(bad.any()):
            return None
        first = tuple(bad.nonzero()[0].tolist())
        return (f"penalty{list(first)} is {got[first].item()}, expected {t.expected[first].item():.4g}: "
                f"padding must count 0 and a real word's coverage is clamped at eps = 1e-10 before "
                f"the log")

    def values(t: Trial) -> str | None:
        if _same(t.got, t.expected):
            return None
        got, expected = t.got.detach().double(), t.expected.double()
        flat = int((got - expected).abs().nan_to_num(nan=0.0).reshape(-1).argmax())
        i = tuple(int(j) for j in np.unravel_index(flat, tuple(got.shape)))
        where = f"penalty{list(i)}" if i else "the penalty"
        return f"{where}: expected {expected[i].item():.6g}, got {got[i].item():.6g}"

    compared = expect_grad(wrt=["attn"])
    flows = expect_grad(wrt=["attn"], compare=False)

    def nan_gradient(t: Trial) -> str | None:
        """A NaN in the learner's gradient, named: log(0) at a padding position, masked after the log."""
        args, kwargs = t.case.fresh()
        attn = args[0].requires_grad_(True)
        try:
            out = t.learner_fn(*args, **kwargs)
            if not (isinstance(out, torch.Tensor) and out.requires_grad):
                return None  # expect_grad says so
            out.sum().backward()
        except Exception:
            return None  # expect_grad reports the exception
        if attn.grad is None or not bool(torch.isnan(attn.grad).any()):
            return None
        return ("NaN in the gradient with respect to attn: the log of a 0 coverage (padding) is -inf, "
                "and masking it AFTER the log still sends 0 * inf = NaN back through it; clamp the "
                "coverage before the log, or replace the padding coverage by 1 before it")

    def gradient(t: Trial) -> str | None:
        # Where the coverage is 0 the derivative depends on how the clamp is written (clamp: 0,
        # adding eps: 1 / eps); both conventions are fine, so that case only needs a gradient.
        return nan_gradient(t) or (flows if "never attended" in t.case.name else compared).fn(t)

    return [Check("returns a tensor", returns_tensor), Check("shape", shape), Check("dtype", dtype),
            Check("coverage formula", formula), Check("finite", finite),
            Check("values", values, "cp = beta * (log of attn.sum(-2).clamp(1e-10, 1)) summed over the "
                                    "real source words"),
            expect_inputs_unchanged(),
            Check("gradient flows", gradient, "build the penalty from attn with tensor operations "
                                              "(no .item(), no torch.tensor([...]))")]


def _soft_attention(shape: tuple, lengths: list[int] | None, seed: int,
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Random softmax attention (*lead, T, S) and its source mask (*lead, S); ``lengths`` (one per
    row of the first dim, or None: no padding) sets the real source words, padding gets exactly 0."""
    g = torch.Generator().manual_seed(seed)
    *lead, T, S = shape
    scores = torch.randn(*shape, generator=g, dtype=torch.float64) * 1.5
    if lengths is None:
        mask = torch.ones(*lead, S, dtype=torch.bool)
    else:
        row = torch.arange(S) < torch.tensor(lengths).unsqueeze(1)                 # (B, S)
        mask = row.reshape(len(lengths), *([1] * (len(lead) - 1)), S).expand(*lead, S).clone()
    attn = torch.softmax(scores.masked_fill(~mask.unsqueeze(-2), float("-inf")), dim=-1)
    return attn.to(dtype), mask


def _hard_attention() -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot (hard) attention, T = 4 over S = 5: words 0-2 are attended, word 3 is real but
    never attended, word 4 is padding."""
    attn = torch.zeros(4, 5)
    attn[torch.arange(4), torch.tensor([0, 1, 1, 2])] = 1.0
    return attn, torch.tensor([True, True, True, True, False])


def _coverage_cases() -> list[Case]:
    one = _soft_attention((5, 5), None, seed=1)
    batch = _soft_attention((3, 6, 5), [4, 5, 2], seed=2)
    beams = _soft_attention((2, 3, 4, 6), [3, 6], seed=3)
    wide = _soft_attention((2, 3, 6), [6, 4], seed=4, dtype=torch.float64)
    return [
        Case("one hypothesis (T, S) = (5, 5), beta = 0.2", (*one, 0.2)),
        Case("batch (B, T, S) = (3, 6, 5), source lengths 4, 5, 2, beta = 1", (*batch, 1.0)),
        Case("batch x beam (B, K, T, S) = (2, 3, 4, 6), source lengths 3, 6, beta = 0.4", (*beams, 0.4)),
        Case("a real source word never attended (hard attention), beta = 0.3", (*_hard_attention(), 0.3)),
        Case("float64 attention, T = 3 < S = 6 (words left out), beta = 0.2", (*wide, 0.2)),
        Case("beta = 0: no penalty", (*batch, 0.0)),
    ]


COVERAGE_CASES = _coverage_cases()


def check_coverage_penalty(coverage_penalty: Callable) -> bool:
    """``coverage_penalty(attn (..., T, S), src_mask (..., S) bool, beta) -> (...,)``: GNMT's
    beta * sum_i log(min(sum_j attn[..., j, i], 1)) over the real source words (src_mask True),
    the coverage clamped at 1e-10 before the log, in attn's dtype, differentiable in attn, without
    changing its inputs, for any number of leading dims."""
    return check_function(coverage_penalty, reference_coverage_penalty, COVERAGE_CASES, _coverage_checks())


__all__ = ["check_length_penalty", "check_beam_step", "check_coverage_penalty", "reference_length_penalty",
           "reference_beam_step", "reference_coverage_penalty", "PENALTY_CASES", "BEAM_CASES",
           "COVERAGE_CASES"]
