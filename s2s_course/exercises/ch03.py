"""Checkers for chapter 3 (the bottleneck, measured).

- ``check_accuracy_by_length_bucket``: exact match and token accuracy grouped in length buckets,
  against ``analysis.accuracy_by_length_bucket``.
- ``check_position_norms``: the mean per-position gradient norm over the real tokens of a batch,
  against ``analysis.position_norms``.
"""
from __future__ import annotations

import math

import torch

from s2s_course import analysis
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_close,
                                       expect_inputs_unchanged, expect_shape, expect_type)

# -----------------------------------------------------------------------------
# accuracy by length bucket

# Ten examples, lengths 3..13. Buckets of width 4 from 0: [0, 4), [4, 8), [8, 12), [12, 16).
_LENGTHS = [3, 4, 5, 7, 8, 9, 11, 12, 13, 13]
_REFS = [
    [1, 2, 3],
    [4, 5, 6, 7],
    [1, 1, 2, 2, 3],
    [5, 6, 7, 8, 9, 1, 2],
    [2, 2, 2, 2, 3, 3, 3, 3],
    [9, 8, 7, 6, 5, 4, 3, 2, 1],
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2],
    [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],
    [4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7],
    [7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3],
]
_PREDS = [
    [1, 2, 3],                                    # exact
    [4, 5, 6],                                    # stops one token early: 3/4, not exact
    [1, 1, 2, 2, 3, 3],                           # one extra token: 5/5 positions right, not exact
    [5, 6, 7, 8, 9, 1, 2],                        # exact
    [2, 2, 2, 2, 3, 3, 3, 9],                     # 7/8
    [9],                                          # 1/9
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2],            # exact
    [3, 3, 3, 3, 3, 3],                           # 6/12
    [4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7],      # exact
    [7, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3],         # second token dropped, rest shifted: 1/13
]


def _bucket_checks() -> list[Check]:
    def is_dict(t: Trial) -> str | None:
        if not isinstance(t.got, dict):
            return f"expected a dict {{bucket: (exact, token_acc, n)}}, got {type(t.got).__name__}"
        bad = next((v for v in t.got.values() if not (isinstance(v, (tuple, list)) and len(v) == 3)), None)
        if bad is not None:
            return f"every value must be a tuple (exact_match, token_accuracy, n_examples), got {bad!r}"
        return None

    def keys(t: Trial) -> str | None:
        got, want = sorted(t.got), sorted(t.expected)
        if got != want:
            return (f"expected bucket keys {want} (the LOWER edge of each bucket, start + k * width), "
                    f"got {got}")
        return None

    def counts(t: Trial) -> str | None:
        for k in sorted(t.expected):
            if int(t.got[k][2]) != t.expected[k][2]:
                return f"bucket {k}: expected n = {t.expected[k][2]} examples, got {t.got[k][2]}"
        return None

    def exact(t: Trial) -> str | None:
        for k in sorted(t.expected):
            if not math.isclose(float(t.got[k][0]), t.expected[k][0], abs_tol=1e-9):
                return (f"bucket {k}: expected exact match {t.expected[k][0]:.4g}, got {float(t.got[k][0]):.4g} "
                        f"(a prediction counts only if it equals the reference: same tokens AND same length)")
        return None

    def token(t: Trial) -> str | None:
        for k in sorted(t.expected):
            if not math.isclose(float(t.got[k][1]), t.expected[k][1], abs_tol=1e-9):
                return (f"bucket {k}: expected token accuracy {t.expected[k][1]:.4g}, "
                        f"got {float(t.got[k][1]):.4g} (correct positions / reference tokens, summed over "
                        f"the whole bucket; positions past the end of a short prediction are wrong, "
                        f"extra predicted tokens are not counted)")
        return None

    return [Check("returns {bucket: (exact, token_acc, n)}", is_dict), Check("bucket keys", keys),
            Check("examples per bucket", counts), Check("exact match", exact),
            Check("token accuracy", token)]


def check_accuracy_by_length_bucket(fn) -> bool:
    """``fn(preds, refs, lengths, width)`` -> ``{lower edge: (exact, token_acc, n)}`` (buckets from 0)."""
    return check_function(fn, analysis.accuracy_by_length_bucket, cases=[
        Case("width 4", (_PREDS, _REFS, _LENGTHS, 4)),
        Case("width 1 (one bucket per length)", (_PREDS, _REFS, _LENGTHS, 1)),
        Case("width 5", (_PREDS, _REFS, _LENGTHS, 5)),
        Case("one example", ([[1, 2]], [[1, 3]], [2], 3)),
    ], checks=_bucket_checks())


# -----------------------------------------------------------------------------
# per-position gradient norms

def _grad(B: int, S: int, E: int, seed: int) -> torch.Tensor:
    return torch.randn(B, S, E, generator=torch.Generator().manual_seed(seed))


def _mask(lengths: list[int], S: int) -> torch.Tensor:
    return torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]   # (B, S) bool


def _has_padding(case: Case) -> bool:
    return not bool(case.args[1].all())


def _position_checks() -> list[Check]:
    def values_without_padding(t: Trial) -> str | None:
        if _has_padding(t.case):
            return None
        return expect_close(atol=1e-5).fn(t)

    def masking(t: Trial) -> str | None:
        if not _has_padding(t.case):
            return None
        got, want = t.got.detach().double(), t.expected.double()
        wrong = ~torch.isclose(got, want, atol=1e-5, rtol=1e-4) & ~torch.isnan(want)
        if wrong.any():
            s = int(wrong.nonzero()[0])
            return (f"at position {s} expected {want[s].item():.4g}, got {got[s].item():.4g}: average over the "
                    f"examples that have a REAL token at s (divide by mask.sum(0)), padding must not count")
        return None

    def empty_positions(t: Trial) -> str | None:
        want_nan = torch.isnan(t.expected)
        if not want_nan.any():
            return None
        got_nan = torch.isnan(t.got.detach())
        if not bool(got_nan[want_nan].all()):
            s = int((want_nan & ~got_nan).nonzero()[0])
            return (f"position {s} has no real token in any example: expected NaN (0 / 0), "
                    f"got {t.got[s].item():.4g}")
        return None

    hint_values = ("for each (b, s) take the Euclidean (L2) norm over the last dimension E, "
                   "e.g. grad.norm(dim=-1), then average over b")
    return [expect_type(), expect_shape(hint="one number per source position: shape (S,)"),
            Check("values (batch without padding)", values_without_padding, hint_values),
            Check("masking", masking), Check("positions without tokens", empty_positions),
            expect_inputs_unchanged()]


def check_position_norms(fn) -> bool:
    """``fn(grad (B, S, E), mask (B, S) bool)`` -> (S,) mean over real tokens of ``||grad[b, s]||``."""
    return check_function(fn, analysis.position_norms, cases=[
        Case("no padding", (_grad(3, 5, 4, 0), _mask([5, 5, 5], 5))),
        Case("one example", (_grad(1, 4, 2, 1), _mask([4], 4))),
        Case("padding", (_grad(4, 6, 3, 2), _mask([6, 4, 2, 5], 6))),
        Case("last position empty", (_grad(2, 5, 3, 3), _mask([3, 4], 5))),
    ], checks=_position_checks())


__all__ = ["check_accuracy_by_length_bucket", "check_position_norms"]
