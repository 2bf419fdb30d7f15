"""Checkers for chapter 3 (the bottleneck, measured).

- ``check_accuracy_by_length_bucket``: exact match and token accuracy grouped in length buckets,
  against ``analysis.accuracy_by_length_bucket``.
- ``check_position_norms``: the mean per-position gradient norm over the real tokens of a batch,
  against ``analysis.position_norms``.
- ``check_mean_pool``: a masked mean over the real time steps of encoder outputs, (B, S, H) and
  lengths (B,) -> (B, H), against ``reference_mean_pool``; a row of length 0 gives zeros.

Each report names the slip: examples assumed sorted by length, buckets keyed by the reference
length instead of the given source length, padding counted or the mask derived from nonzero
gradients, dividing by S, NaN for an empty row, float64 turned into float32, inputs modified.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch

from s2s_course import analysis
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_close, expect_dtype,
                                       expect_grad, expect_inputs_unchanged, expect_shape, expect_type)

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

    def _same(got: Any, want: dict) -> bool:
        if not isinstance(got, dict) or sorted(got) != sorted(want):
            return False
        return all(isinstance(got[k], (tuple, list)) and len(got[k]) == 3
                   and all(math.isclose(float(a), float(b), abs_tol=1e-9) for a, b in zip(got[k], want[k]))
                   for k in want)

    def length_key(t: Trial) -> str | None:
        preds, refs, lengths, width = t.case.args
        if _same(t.got, t.expected):
            return None
        for name, other in [("len(refs[i]), the reference length", [len(r) for r in refs]),
                            ("len(preds[i]), the prediction length", [len(p) for p in preds])]:
            if list(other) != list(lengths) and _same(t.got, analysis.accuracy_by_length_bucket(
                    preds, refs, other, width)):
                return (f"your buckets follow {name}; bucket each example by lengths[i], the length "
                        f"given (the SOURCE length), which need not equal it")
        return None

    def any_order(t: Trial) -> str | None:
        preds, refs, lengths, width = copy.deepcopy(t.case.args)
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        if order == list(range(len(lengths))) or _same(t.got, t.expected):
            return None
        try:
            on_sorted = t.learner_fn([preds[i] for i in order], [refs[i] for i in order],
                                     [lengths[i] for i in order], width)
        except Exception:
            return None
        if _same(on_sorted, t.expected):
            return ("your function is right when the examples are sorted by length and wrong in any other "
                    "order (e.g. itertools.groupby without sorting first): collect each bucket's examples "
                    "in a dict, whatever the order")
        return None

    def unchanged(t: Trial) -> str | None:
        for name, before, after in zip(["preds", "refs", "lengths"], t.case.args, t.args):
            if before != after:
                return (f"argument {name!r} was modified in place (e.g. a prediction padded with .extend or "
                        f"+=, or a list sorted with .sort()); work on copies")
        return None

    return [Check("returns {bucket: (exact, token_acc, n)}", is_dict),
            Check("bucket by the given lengths", length_key), Check("examples in any order", any_order),
            Check("bucket keys", keys), Check("examples per bucket", counts), Check("exact match", exact),
            Check("token accuracy", token), Check("does not modify its inputs", unchanged)]


def _shuffled(seed: int) -> tuple[list, list, list]:
    order = torch.randperm(len(_LENGTHS), generator=torch.Generator().manual_seed(seed)).tolist()
    return [_PREDS[i] for i in order], [_REFS[i] for i in order], [_LENGTHS[i] for i in order]


# source lengths that differ from the reference lengths (sorted, like _LENGTHS): bucketing by
# len(ref) gives other buckets
_SOURCE_LENGTHS = [1, 2, 6, 6, 7, 10, 10, 13, 14, 17]

BUCKET_CASES = [
    Case("width 4", (_PREDS, _REFS, _LENGTHS, 4)),
    Case("width 1 (one bucket per length)", (_PREDS, _REFS, _LENGTHS, 1)),
    Case("width 5", (_PREDS, _REFS, _LENGTHS, 5)),
    Case("one example", ([[1, 2]], [[1, 3]], [2], 3)),
    Case("examples in random order, width 4", (*_shuffled(0), 4)),
    Case("source lengths differ from reference lengths, width 4", (_PREDS, _REFS, _SOURCE_LENGTHS, 4)),
]


def check_accuracy_by_length_bucket(fn) -> bool:
    """``fn(preds, refs, lengths, width)`` -> ``{lower edge: (exact, token_acc, n)}`` (buckets from 0),
    examples in any order, bucketed by the given ``lengths``, inputs left unchanged."""
    return check_function(fn, analysis.accuracy_by_length_bucket, cases=BUCKET_CASES,
                          checks=_bucket_checks())


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

    def mask_from_gradient(t: Trial) -> str | None:
        if not _has_padding(t.case):
            return None
        grad, mask = t.case.args
        got, want = t.got.detach().double(), t.expected.double()
        if torch.allclose(got, want, atol=1e-5, rtol=1e-4, equal_nan=True):
            return None
        norms = grad.double().norm(dim=-1)                           # (B, S)
        nonzero = (norms > 0).sum(0)                                 # (S,) counts that ignore the mask
        if bool((nonzero == mask.size(0)).all()):
            return None  # the same as dividing by B here: the masking check names that
        for numerator in [(norms * mask).sum(0), norms.sum(0)]:
            if torch.allclose(got, numerator / nonzero, atol=1e-5, rtol=1e-4, equal_nan=True):
                return ("your mean counts the positions with a nonzero gradient, not the real tokens: a "
                        "padded position can have a nonzero gradient and a real token a zero one; take "
                        "the count from the mask, mask.sum(0)")
        return None

    hint_values = ("for each (b, s) take the Euclidean (L2) norm over the last dimension E, "
                   "e.g. grad.norm(dim=-1), then average over b")
    return [expect_type(), expect_shape(hint="one number per source position: shape (S,)"),
            expect_dtype(hint="float64 gradients give float64 norms: do not call .float() or mix in "
                              "float32 tensors you created"),
            Check("values (batch without padding)", values_without_padding, hint_values),
            Check("mask from the argument", mask_from_gradient),
            Check("masking", masking), Check("positions without tokens", empty_positions),
            expect_inputs_unchanged()]


def _zero_padding_grad() -> tuple[torch.Tensor, torch.Tensor]:
    """Realistic: padding has exactly zero gradient; and one real token has zero gradient too."""
    mask = _mask([5, 3, 4], 5)
    grad = _grad(3, 5, 3, 4) * mask[..., None]   # (B, S, E), 0 at padding
    grad[1, 1] = 0.0                             # a real token whose gradient happens to be 0
    return grad, mask


POSITION_CASES = [
    Case("no padding", (_grad(3, 5, 4, 0), _mask([5, 5, 5], 5))),
    Case("one example", (_grad(1, 4, 2, 1), _mask([4], 4))),
    Case("zero gradient at padding and at one real token", _zero_padding_grad()),
    Case("padding", (_grad(4, 6, 3, 2), _mask([6, 4, 2, 5], 6))),
    Case("last position empty", (_grad(2, 5, 3, 3), _mask([3, 4], 5))),
    Case("float64", (_grad(3, 4, 3, 5).double(), _mask([4, 2, 3], 4))),
]


def check_position_norms(fn) -> bool:
    """``fn(grad (B, S, E), mask (B, S) bool)`` -> (S,) mean over real tokens of ``||grad[b, s]||``,
    in grad's dtype, NaN where no example has a real token."""
    return check_function(fn, analysis.position_norms, cases=POSITION_CASES, checks=_position_checks())


# -----------------------------------------------------------------------------
# masked mean pool: a summary of the encoder outputs instead of the last state

def reference_mean_pool(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean of ``outputs[b, :lengths[b]]`` for each row: (B, S, H), (B,) -> (B, H).

    Padding may hold any (finite) values, so it is filled with 0 before summing (not multiplied);
    a row of length 0 gives zeros, not 0 / 0 = NaN, and no NaN gradient either."""
    S = outputs.size(1)
    real = torch.arange(S, device=outputs.device)[None, :] < lengths[:, None]   # (B, S) bool
    summed = outputs.masked_fill(~real[..., None], 0.0).sum(dim=1)              # (B, H)
    count = lengths.clamp(min=1).to(outputs.dtype)[:, None]                     # (B, 1)
    return summed / count


def _pool_case(name: str, lengths: list[int], S: int, H: int, seed: int,
               dtype: torch.dtype = torch.float32) -> Case:
    # every position, padding included, holds a nonzero value: an RNN run without packing, or an
    # attention layer, leaves something there
    outputs = torch.randn(len(lengths), S, H, generator=torch.Generator().manual_seed(seed)) + 0.5
    return Case(name, (outputs.to(dtype), torch.tensor(lengths, dtype=torch.long)))


POOL_CASES = [
    _pool_case("lengths [5, 2, 4], S = 6", [5, 2, 4], S=6, H=3, seed=0),
    _pool_case("no padding", [4, 4], S=4, H=2, seed=1),
    _pool_case("batch of one", [3], S=5, H=4, seed=2),
    _pool_case("longest last: lengths [2, 3, 6]", [2, 3, 6], S=6, H=3, seed=3),
    _pool_case("a row of length 0", [3, 0, 2], S=4, H=3, seed=4),
    _pool_case("float64", [2, 4, 1], S=4, H=2, seed=5, dtype=torch.float64),
]


def _pool_slips(outputs: torch.Tensor, lengths: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    """What common mistakes return on these inputs, and what to say when the learner's matches."""
    B, S, _ = outputs.shape
    real = (torch.arange(S)[None, :] < lengths[:, None])[..., None]            # (B, S, 1)
    masked_sum = outputs.masked_fill(~real, 0.0).sum(1)                        # (B, H)
    n = lengths.to(outputs.dtype)[:, None]
    with_one_more = (torch.arange(S)[None, :] <= lengths[:, None])[..., None]
    return [
        (outputs.mean(dim=1), "your result is outputs.mean(dim=1): the padding positions were averaged "
                              "in; average only t < lengths[b]"),
        (masked_sum / S, "your result sums the real positions but divides by S, the padded length: "
                         "divide row b by lengths[b]"),
        (outputs.sum(dim=1) / n, "your result divides by lengths[b] but sums every position, padding "
                                 "included: zero the padding (masked_fill) before summing"),
        (outputs.masked_fill(~with_one_more, 0.0).sum(1) / (n + 1),
         "your result averages lengths[b] + 1 positions: position t is real when t < lengths[b]"),
    ]


def _pool_checks() -> list[Check]:
    def empty_rows(t: Trial) -> str | None:
        lengths = t.case.args[1]
        for b in (lengths == 0).nonzero().flatten().tolist():
            row = t.got[b].detach()
            if not bool(torch.isfinite(row).all()):
                return (f"row {b} has length 0 and came out as {row.tolist()}: return zeros for an empty "
                        f"row, not 0 / 0 = NaN; divide by lengths.clamp(min=1)")
            if bool((row != 0).any()):
                return f"row {b} has length 0: expected zeros (no real position to average), got {row.tolist()}"
        return None

    def slips(t: Trial) -> str | None:
        got, want = t.got.detach(), t.expected.detach()
        if torch.allclose(got.to(want.dtype), want, atol=1e-5, rtol=1e-4):
            return None
        outputs, lengths = t.case.fresh()[0]
        rows = lengths > 0  # a row of length 0 is the empty-row check's business
        for wrong, message in _pool_slips(outputs, lengths):
            if torch.allclose(got[rows].to(wrong.dtype), wrong[rows], atol=1e-5, rtol=1e-4):
                return message
        return None

    def any_order(t: Trial) -> str | None:
        got, want = t.got.detach(), t.expected.detach()
        outputs, lengths = t.case.fresh()[0]
        order = lengths.argsort(descending=True, stable=True)
        if torch.equal(order, torch.arange(len(lengths))) or torch.allclose(got.to(want.dtype), want,
                                                                            atol=1e-5, rtol=1e-4):
            return None
        try:
            on_sorted = t.learner_fn(outputs[order], lengths[order]).detach()
        except Exception:
            return None
        if torch.allclose(on_sorted.to(want.dtype), want[order], atol=1e-5, rtol=1e-4):
            return ("your function is right when the rows are sorted longest-first and wrong otherwise: "
                    "do not take lengths[0] as the longest (or pack with enforce_sorted=True); use "
                    "lengths.max() or a mask built from every row's own length")
        return None

    grad = expect_grad(hint="gradient reaches outputs[b, t] only for t < lengths[b], with weight "
                            "1 / lengths[b]; a NaN gradient usually comes from torch.where over a 0 / 0 "
                            "branch, which backpropagates NaN even where it is not selected: clamp the "
                            "count before dividing")
    return [expect_type(), expect_shape(hint="one vector per sequence: (B, H), the time axis averaged out"),
            expect_dtype(hint="float64 outputs give a float64 mean: convert lengths to outputs.dtype, not "
                              "to float32 with .float()"),
            Check("rows of length 0", empty_rows), Check("known slips", slips),
            Check("rows in any order", any_order),
            expect_close(hint="row b is the mean of outputs[b, :lengths[b]]"),
            expect_inputs_unchanged(), grad]


def check_mean_pool(fn: Callable) -> bool:
    """``fn(outputs (B, S, H), lengths (B,) long) -> (B, H)``: row b is the mean of
    ``outputs[b, :lengths[b]]`` (padding ignored whatever it holds, rows in any order), zeros for a
    row of length 0, in outputs' dtype, differentiable with the reference's gradient, inputs kept."""
    return check_function(fn, reference_mean_pool, POOL_CASES, _pool_checks())


__all__ = ["check_accuracy_by_length_bucket", "check_position_norms", "check_mean_pool",
           "reference_mean_pool", "BUCKET_CASES", "POSITION_CASES", "POOL_CASES"]
