"""Checkers for chapter 7, decoding and evaluation.

- ``check_length_penalty(fn)``: ``fn(log_probs (N,), lengths (N,), alpha) -> scores (N,)``, the
  GNMT score log P(Y|X) / lp(Y) of N finished hypotheses, against ``decode.gnmt_length_penalty``.
- ``check_beam_step(fn)``: ``fn(beam_scores (K,), log_probs (K, V), k) -> (scores (k,),
  parents (k,), tokens (k,))``, one step of beam search: the k best of all K x V extensions,
  with back-pointers to the hypothesis each one extends.

When the answer is wrong, both say which classic slip it matches (no smoothing in the penalty,
multiplying instead of dividing, ranking tokens without the prefix score, picking per row,
swapping the back-pointer and the token, ...), not just "values differ".
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from s2s_course.decode import beam_step, gnmt_length_penalty
from s2s_course.exercises.core import Case, Check, Trial, check_function, expect_inputs_unchanged

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
        i = int((got - expected).abs().argmax())
        log_probs, lengths, alpha = t.case.fresh()[0]
        return (f"hypothesis {i} (log P = {log_probs[i].item():.4g}, |Y| = {int(lengths[i])}, "
                f"alpha = {alpha}): expected score {expected[i].item():.4g}, "
                f"got {got[i].item():.4g}")

    return [Check("returns a tensor", returns_tensor), Check("shape", shape),
            Check("length penalty formula", formula),
            Check("values", values, "score = log_probs / ((5 + lengths) / 6) ** alpha"),
            expect_inputs_unchanged()]


PENALTY_CASES = [
    Case("GNMT alpha = 0.6", (torch.tensor([-2.0, -3.5, -6.0, -9.1]), torch.tensor([2, 4, 7, 12]),
                              0.6)),
    Case("alpha = 0: no penalty", (torch.tensor([-1.2, -4.0]), torch.tensor([1, 9]), 0.0)),
    Case("alpha = 1", (torch.tensor([-0.5, -7.25, -3.0]), torch.tensor([1, 15, 3]), 1.0)),
    Case("one hypothesis of length 0 (only <eos>)", (torch.tensor([-0.7]), torch.tensor([0]),
                                                      0.8)),
]


def check_length_penalty(length_penalty_scores: Callable) -> bool:
    """``length_penalty_scores(log_probs (N,), lengths (N,) long, alpha: float) -> scores (N,)``
    must equal log_probs / ((5 + lengths) / 6) ** alpha, without changing its inputs."""
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
            if _all_match(t.got, slip(*args)):
                return message
        return None

    def scores(t: Trial) -> str | None:
        if _close(t.got[0], t.expected[0]):
            return None
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
            Check("scores", scores), Check("back-pointers (parents)", backpointers),
            Check("tokens", tokens), expect_inputs_unchanged()]


def _beam_case(name: str, K: int, V: int, k: int, seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(K, V, generator=g) * 2, dim=-1)   # (K, V)
    beam_scores = -torch.rand(K, generator=g).sort(descending=True).values * 3   # (K,) best first
    return Case(name, (beam_scores, log_probs, k))


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
]


def check_beam_step(beam_step: Callable) -> bool:
    """``beam_step(beam_scores (K,), log_probs (K, V), k) -> (scores (k,), parents (k,) long,
    tokens (k,) long)``: the k best extensions, best first, with their back-pointers."""
    return check_function(beam_step, reference_beam_step, BEAM_CASES, _beam_checks())


__all__ = ["check_length_penalty", "check_beam_step", "reference_length_penalty",
           "reference_beam_step", "PENALTY_CASES", "BEAM_CASES"]
