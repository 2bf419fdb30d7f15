"""Checkers for chapter 4 (Bahdanau attention): a masked softmax and the additive score.

    check_masked_softmax(my_masked_softmax)      # fn(scores (B, ..., S), mask (B, S) bool) -> weights
    check_additive_scores(my_additive_scores)    # fn(query, keys, W, U, v) -> scores (B, S)

Each runs the learner's function next to the package's (``s2s_course.attention``) on named cases
and reports the first property that fails: shape, masking, rows summing to one, values, gradient.
"""
from __future__ import annotations

import torch

from s2s_course import attention
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_close, expect_grad,
                                       expect_inputs_unchanged, expect_masked_zero, expect_shape,
                                       expect_type)


# -----------------------------------------------------------------------------
# masked softmax

def _masked_softmax_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(3, 5, generator=g)                               # (B, S)
    mask = torch.tensor([[1, 1, 1, 1, 1],                                 # no padding
                         [1, 1, 1, 0, 0],                                 # 2 pads
                         [1, 0, 0, 0, 0]], dtype=torch.bool)              # 1 real token
    steps = torch.randn(2, 4, 6, generator=g)                             # (B, T, S): every step
    steps_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    big = torch.tensor([[1000.0, 999.0, 998.0, 0.0], [-1000.0, -1001.0, 5.0, 7.0]])
    big_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    empty_mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    return [
        Case("padded batch (B=3, S=5)", (scores, mask)),
        Case("a batch of one, no padding", (scores[:1], mask[:1])),
        Case("every decoder step at once (B=2, T=4, S=6)", (steps, steps_mask)),
        Case("large scores (|score| ~ 1000)", (big, big_mask)),
        Case("an empty source (row 1 is all padding)", (big, empty_mask)),
    ]


def _rows_sum_to_one(t: Trial) -> str | None:
    """Each row sums to 1 when it has a real token, to 0 when it is all padding."""
    got = t.got.detach().double()
    expected = t.expected.detach().double().sum(-1)                      # 1 or 0 per row
    sums = got.sum(-1)
    bad = ~torch.isclose(sums, expected, atol=1e-5, rtol=0) | sums.isnan()
    if not bool(bad.any()):
        return None
    first = tuple(bad.nonzero()[0].tolist())
    return (f"the weights of row {list(first)} sum to {sums[first].item():.4g}, expected "
            f"{expected[first].item():.4g}: softmax over the last dimension (source positions) and "
            f"over the real tokens only (an all-padding row gets all zeros, not NaN)")


def _finite(t: Trial) -> str | None:
    if not isinstance(t.got, torch.Tensor) or bool(torch.isfinite(t.got).all()):
        return None
    first = tuple((~torch.isfinite(t.got)).nonzero()[0].tolist())
    return (f"got {t.got[first].item()} at index {list(first)}: exp() of large scores overflows "
            f"(or a row with nothing to attend to divides 0 by 0)")


def check_masked_softmax(fn) -> bool:
    """``fn(scores, mask)`` must equal ``s2s_course.attention.masked_softmax``: a softmax over the
    last dimension in which positions with ``mask == False`` get exactly 0 and every row with at
    least one real token sums to 1 (an all-padding row: all zeros)."""
    return check_function(fn, attention.masked_softmax, _masked_softmax_cases(), checks=[
        expect_type(),
        expect_shape(),
        Check("finite (no inf / NaN)", _finite,
              hint="subtract the row maximum before exp (torch.softmax does) and handle rows "
                   "that are all padding"),
        expect_masked_zero(where=lambda case: ~case.args[1].view(
            case.args[1].size(0), *([1] * (case.args[0].dim() - 2)), case.args[1].size(1)),
            hint="fill padded scores with -inf (masked_fill) BEFORE the softmax"),
        Check("rows sum to one", _rows_sum_to_one,
              hint="zeroing the padding AFTER a plain softmax leaves rows that sum to less than 1"),
        expect_close(atol=1e-6),
        expect_inputs_unchanged(),
        expect_grad(wrt=["scores"]),
    ])


# -----------------------------------------------------------------------------
# additive (Bahdanau) scores

def additive_scores(query: torch.Tensor, keys: torch.Tensor, W: torch.Tensor, U: torch.Tensor,
                    v: torch.Tensor) -> torch.Tensor:
    """Reference: the package's ``AdditiveScore`` with the given weights.

    query (B, Hq), keys (B, S, Hk), W (A, Hq), U (A, Hk), v (A,) -> scores (B, S) with
    scores[b, j] = v . tanh(W query[b] + U keys[b, j]).
    """
    A, Hq = W.shape
    score = attention.AdditiveScore(Hq, U.size(1), A)
    # Run the module with the given tensors as its weights, so gradients reach them.
    weights = {"W.weight": W, "U.weight": U, "v.weight": v.unsqueeze(0)}   # (A, Hq), (A, Hk), (1, A)
    return torch.func.functional_call(score, weights, (query, keys))


def _additive_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)

    def case(name: str, B: int, S: int, Hq: int, Hk: int, A: int, scale: float = 1.0) -> Case:
        return Case(name, (torch.randn(B, Hq, generator=g), torch.randn(B, S, Hk, generator=g),
                           scale * torch.randn(A, Hq, generator=g) / Hq ** 0.5,
                           scale * torch.randn(A, Hk, generator=g) / Hk ** 0.5,
                           torch.randn(A, generator=g)))
    return [
        case("B=2, S=5, Hq=4, Hk=6, A=3", 2, 5, 4, 6, 3),
        case("batch of one (B=1, S=4)", 1, 4, 3, 3, 5),
        case("B equals S (B=3, S=3): broadcasting must pair query b with keys of b", 3, 3, 4, 2, 4),
        case("large pre-activations (tanh saturates)", 2, 4, 5, 5, 3, scale=10.0),
    ]


def check_additive_scores(fn) -> bool:
    """``fn(query, keys, W, U, v)`` must return the Bahdanau scores v^T tanh(W q + U k_j) (B, S)."""
    return check_function(fn, additive_scores, _additive_cases(), checks=[
        expect_type(),
        expect_shape(hint="one score per (sentence, source position): (B, S); squeeze the last "
                          "dimension of v's output"),
        expect_close(atol=1e-5, hint="score_j = v . tanh(W q + U k_j): W acts on the query, U on "
                                     "every key, tanh before v, and W q is broadcast over the S "
                                     "positions of the same sentence (unsqueeze(1))"),
        expect_inputs_unchanged(),
        expect_grad(),
    ])


__all__ = ["additive_scores", "check_additive_scores", "check_masked_softmax"]
