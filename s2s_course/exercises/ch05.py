"""Checkers for chapter 5 (Luong attention).

- ``check_general_score(fn)``: ``fn(query (B, Hq), keys (B, S, Hk), W_a (Hq, Hk)) -> scores (B, S)``,
  Luong's "general" score  score(h_t, h_s) = h_t^T W_a h_s  (Luong et al. 2015, eq. (8)).
- ``check_local_p_weights(fn)``: ``fn(scores (B, S), p (B,), mask (B, S) bool, window D) -> weights (B, S)``,
  Luong's local-p weights: a softmax of the scores over the window |s - p_t| <= D (real tokens only),
  times the Gaussian exp(-(s - p_t)^2 / (2 sigma^2)) with sigma = D / 2  (eq. (10)).

The references are the package's own ``GeneralScore`` and ``LocalAttention``, so an exercise and
the model the chapter trains cannot drift apart. Besides comparing values, the checkers recognise the
usual mistakes (a transposed W_a, softmax weights instead of scores, sigma = D, renormalising) and
name them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torch.func import functional_call

from s2s_course.attention import GeneralScore, LocalAttention, masked_softmax
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_close, expect_dtype,
                                       expect_grad, expect_inputs_unchanged, expect_shape, expect_type)

__all__ = ["check_general_score", "check_local_p_weights", "reference_general_score",
           "reference_local_p_weights"]


def _matches(got: object, candidate: torch.Tensor, atol: float = 1e-5) -> bool:
    """True when ``got`` is a tensor equal to ``candidate`` (same shape, close values)."""
    return (isinstance(got, torch.Tensor) and got.shape == candidate.shape
            and bool(torch.allclose(got.detach().double(), candidate.detach().double(), atol=atol, rtol=1e-4)))


def _known_mistakes(mistakes: dict[str, Callable[[Trial], torch.Tensor]]) -> Check:
    """A check that names a typical error: it fails when the learner's output equals what one of
    ``mistakes`` (message -> function of the trial's inputs) computes and differs from the reference."""
    def fn(t: Trial) -> str | None:
        if _matches(t.got, t.expected):
            return None
        for message, mistake in mistakes.items():
            args, kwargs = t.case.fresh()
            with torch.no_grad():
                wrong = mistake(*args, **kwargs)
            if _matches(t.got, wrong):
                return message
        return None  # not a mistake we know: the "values" check reports the difference

    return Check("common mistakes", fn)


# -----------------------------------------------------------------------------
# Luong's general score

def reference_general_score(query: torch.Tensor, keys: torch.Tensor, W_a: torch.Tensor) -> torch.Tensor:
    """The package's ``GeneralScore`` with its matrix set to ``W_a`` (Hq, Hk): scores (B, S)."""
    score = GeneralScore(query.size(1), keys.size(2))
    # functional_call keeps W_a in the autograd graph, so gradients with respect to it can be compared.
    return functional_call(score, {"W_a.weight": W_a}, (query, keys))


def _general_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    return [
        Case("square W_a (Hq = Hk = 4)", (torch.randn(2, 4, generator=g), torch.randn(2, 3, 4, generator=g),
                                        torch.randn(4, 4, generator=g))),
        Case("query and keys of different sizes (Hq=3, Hk=5)",
             (torch.randn(3, 3, generator=g), torch.randn(3, 6, 5, generator=g), torch.randn(3, 5, generator=g))),
        Case("batch of 1, one source position", (torch.randn(1, 4, generator=g), torch.randn(1, 1, 4, generator=g),
                                                 torch.randn(4, 4, generator=g))),
    ]


_GENERAL_MISTAKES = {
    "these are softmax weights (each row sums to 1): return the raw scores h_t^T W_a h_s; "
    "the softmax over source positions comes later, in the attention module":
        lambda q, k, W: torch.softmax(reference_general_score(q, k, W), dim=-1),
    "W_a is transposed: the score is h_t^T W_a h_s with W_a of shape (Hq, Hk), i.e. W_a maps a key "
    "(Hk) to query space (Hq): (W_a @ k_s) . q, not (W_a^T @ k_s) . q":
        lambda q, k, W: reference_general_score(q, k, W.T) if W.size(0) == W.size(1) else
        torch.full((k.size(0), k.size(1)), float("nan")),
    "W_a is not used: this is the dot score h_t . h_s; the general score puts W_a between them":
        lambda q, k, W: torch.bmm(k, q.unsqueeze(2)).squeeze(2) if q.size(1) == k.size(2) else
        torch.full((k.size(0), k.size(1)), float("nan")),
}


def check_general_score(fn: Callable) -> bool:
    """Check ``fn(query (B, Hq), keys (B, S, Hk), W_a (Hq, Hk)) -> scores (B, S)``, scores = q^T W_a k_s."""
    return check_function(fn, reference_general_score, _general_cases(), checks=[
        expect_type(), expect_shape(hint="one score per source position: (B, S), no trailing 1 "
                                         "(squeeze the result of torch.bmm)"),
        expect_dtype(), expect_inputs_unchanged(), _known_mistakes(_GENERAL_MISTAKES), expect_close(),
        expect_grad(),
    ])


# -----------------------------------------------------------------------------
# Luong's local-p weights

class _GivenScores(nn.Module):
    """A "score function" that returns scores computed beforehand (to drive LocalAttention)."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return self.scores


def reference_local_p_weights(scores: torch.Tensor, p: torch.Tensor, mask: torch.Tensor,
                              window: int) -> torch.Tensor:
    """The package's ``LocalAttention`` weights for given scores (B, S) and positions p (B,)."""
    B, S = scores.shape
    local = LocalAttention(_GivenScores(scores), query_dim=1, window=window)
    local.predict_position = lambda query, src_len: p   # use the given p_t instead of predicting it
    keys = scores.new_zeros(B, S, 1)                    # only their shape matters here
    _, weights = local(scores.new_zeros(B, 1), keys, mask=mask)
    return weights


def _in_window(case: Case) -> torch.Tensor:
    scores, p, mask, window = case.args
    distance = torch.arange(scores.size(1), dtype=scores.dtype).unsqueeze(0) - p.detach().unsqueeze(1)
    return distance.abs() <= window


def _zero_where(name: str, where: Callable[[Case], torch.Tensor], message: str) -> Check:
    def fn(t: Trial) -> str | None:
        if not isinstance(t.got, torch.Tensor) or t.got.shape != t.expected.shape:
            return None  # the shape check reports it
        wrong = where(t.case) & (t.got.detach() != 0)
        if not bool(wrong.any()):
            return None
        b, s = wrong.nonzero()[0].tolist()
        return (f"expected exactly 0 at [{b}, {s}], got {t.got[b, s].item():.4g} "
                f"({int(wrong.sum())} such positions): {message}")

    return Check(name, fn)


def _gaussian(scores, p, mask, window, sigma):
    positions = torch.arange(scores.size(1), dtype=scores.dtype)
    distance = positions.unsqueeze(0) - p.unsqueeze(1)
    align = masked_softmax(scores, mask & (distance.abs() <= window))
    return align, distance, align * torch.exp(-distance ** 2 / (2 * sigma ** 2))


_LOCAL_MISTAKES = {
    "the Gaussian is too wide: sigma = D / 2 (Luong et al. eq. 10), not sigma = D":
        lambda s, p, m, D: _gaussian(s, p, m, D, sigma=D)[2],
    "no Gaussian: after the windowed softmax multiply by exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2":
        lambda s, p, m, D: _gaussian(s, p, m, D, sigma=D / 2)[0],
    "the weights were renormalised after the Gaussian: as in Luong et al. they are align(s) * gaussian(s) "
    "and sum to at most 1, do not divide by their sum":
        lambda s, p, m, D: (lambda w: w / w.sum(-1, keepdim=True))(_gaussian(s, p, m, D, sigma=D / 2)[2]),
    "the Gaussian lacks the factor 2: exp(-(s - p_t)^2 / (2 sigma^2)), not exp(-(s - p_t)^2 / sigma^2)":
        lambda s, p, m, D: _gaussian(s, p, m, D, sigma=D / 2)[0]
        * torch.exp(-_gaussian(s, p, m, D, sigma=D / 2)[1] ** 2 / (D / 2) ** 2),
    "p_t was rounded: keep the predicted position real-valued in the Gaussian (it is how the gradient "
    "reaches the position predictor)":
        lambda s, p, m, D: _gaussian(s, p.round(), m, D, sigma=D / 2)[2],
}


def _local_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    lengths = lambda ls, S: torch.arange(S).unsqueeze(0) < torch.tensor(ls).unsqueeze(1)  # noqa: E731
    return [
        Case("window inside the sentence (D=2)",
             (torch.randn(2, 9, generator=g), torch.tensor([4.3, 3.0]), lengths([9, 8], 9), 2)),
        Case("padding inside the window (D=3)",
             (torch.randn(2, 8, generator=g), torch.tensor([5.6, 2.5]), lengths([8, 4], 8), 3)),
        Case("window past the start (D=1, p=0.4)",
             (torch.randn(1, 5, generator=g), torch.tensor([0.4]), lengths([5], 5), 1)),
    ]


def check_local_p_weights(fn: Callable) -> bool:
    """Check ``fn(scores (B, S), p (B,), mask (B, S) bool, window) -> weights (B, S)`` (local-p, eq. 10)."""
    return check_function(fn, reference_local_p_weights, _local_cases(), checks=[
        expect_type(), expect_shape(), expect_dtype(), expect_inputs_unchanged(),
        _known_mistakes(_LOCAL_MISTAKES),
        _zero_where("zero on padding", lambda c: ~c.args[2],
                    "padding (mask False) must get no weight"),
        _zero_where("zero outside the window", lambda c: ~_in_window(c),
                    "positions with |s - p_t| > D must get exactly 0: the softmax runs over the window only"),
        expect_close(),
        expect_grad(wrt=["scores", "p"]),
    ])
