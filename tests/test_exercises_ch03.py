"""Chapter 3 checkers: they accept correct code (the package's and the notebook's solutions) and
reject plausible mistakes with a message that names the mistake."""
from __future__ import annotations

import pytest
import torch

from s2s_course import analysis
from s2s_course.exercises import ExerciseFailed, check_accuracy_by_length_bucket, check_position_norms
from s2s_course.exercises.ch03 import _LENGTHS, _PREDS, _REFS
from tests.nbtools import chapter, run_solution


def failure(checker, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        checker(fn)
    return str(info.value)


# --- accuracy by length bucket -----------------------------------------------------------------

def bucket_variant(preds, refs, lengths, width, *, key="lower", macro=False, over_pred=False,
                   prefix_exact=False, as_list=False):
    """An independent implementation with switches for the usual mistakes."""
    groups = {}
    for i, n in enumerate(lengths):
        k = n // width
        edge = {"lower": k * width, "upper": (k + 1) * width - 1, "index": k}[key]
        groups.setdefault(edge, []).append(i)
    out = {}
    for edge, idx in groups.items():
        if prefix_exact:
            exact = sum(list(preds[i][:len(refs[i])]) == list(refs[i]) for i in idx) / len(idx)
        else:
            exact = sum(list(preds[i]) == list(refs[i]) for i in idx) / len(idx)
        hits = [sum(p == r for p, r in zip(preds[i], refs[i])) for i in idx]
        if macro:
            token = sum(h / len(refs[i]) for h, i in zip(hits, idx)) / len(idx)
        elif over_pred:
            token = sum(hits) / sum(max(len(preds[i]), 1) for i in idx)
        else:
            token = sum(hits) / sum(len(refs[i]) for i in idx)
        out[edge] = [exact, token, len(idx)] if as_list else (exact, token, len(idx))
    return out


def test_hand_computed_reference_values():
    got = analysis.accuracy_by_length_bucket(_PREDS, _REFS, _LENGTHS, 4)
    assert got[0] == (1.0, 1.0, 1)
    # lengths 4, 5, 7: exact only the 7-token one; tokens 3/4 + 5/5 + 7/7 = 15/16
    assert got[4] == (pytest.approx(1 / 3), pytest.approx(15 / 16), 3)
    # lengths 8, 9, 11: exact only the 11-token one; tokens 7/8 + 1/9 + 11/11 = 19/28
    assert got[8] == (pytest.approx(1 / 3), pytest.approx(19 / 28), 3)
    # lengths 12, 13, 13: exact the first 13; tokens 6/12 + 13/13 + 1/13 = 20/38
    assert got[12] == (pytest.approx(1 / 3), pytest.approx(20 / 38), 3)


def test_bucket_checker_accepts_reference_solution_and_a_list_variant(capsys):
    assert check_accuracy_by_length_bucket(analysis.accuracy_by_length_bucket)
    assert check_accuracy_by_length_bucket(bucket_variant)
    assert check_accuracy_by_length_bucket(lambda p, r, l, w: bucket_variant(p, r, l, w, as_list=True))
    solution = run_solution(chapter("03"), "ex-03-bucket-accuracy")
    assert check_accuracy_by_length_bucket(solution.accuracy_by_bucket)
    assert "all" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, words", [
    (dict(key="upper"), "bucket keys"),
    (dict(key="index"), "LOWER edge"),
    (dict(macro=True), "token accuracy"),
    (dict(over_pred=True), "token accuracy"),
    (dict(prefix_exact=True), "exact match"),
])
def test_bucket_checker_rejects_plausible_mistakes(kwargs, words):
    message = failure(check_accuracy_by_length_bucket, lambda p, r, l, w: bucket_variant(p, r, l, w, **kwargs))
    assert words in message


def test_bucket_checker_reports_wrong_types_and_counts():
    assert "returns {bucket" in failure(check_accuracy_by_length_bucket, lambda p, r, l, w: [1, 2])
    assert "tuple (exact_match" in failure(check_accuracy_by_length_bucket,
                                           lambda p, r, l, w: {k: v[0] for k, v in bucket_variant(p, r, l, w).items()})

    def wrong_counts(p, r, l, w):
        return {k: (e, t, n + 1) for k, (e, t, n) in bucket_variant(p, r, l, w).items()}

    assert "examples per bucket" in failure(check_accuracy_by_length_bucket, wrong_counts)


# --- per-position gradient norms -----------------------------------------------------------------

def norms_variant(grad, mask, *, divide_by_batch=False, squared=False, l1=False, mean_e=False,
                  clamp=False, inplace=False):
    if l1:
        norms = grad.abs().sum(-1)
    elif mean_e:
        norms = grad.mean(-1).abs()
    else:
        norms = (grad ** 2).sum(-1)
        norms = norms if squared else norms.sqrt()
    if inplace:
        grad.zero_()
    norms = norms * mask.float()
    count = torch.full_like(norms[0], mask.size(0)) if divide_by_batch else mask.sum(0).float()
    return norms.sum(0) / (count.clamp(min=1) if clamp else count)


def test_reference_values_by_hand():
    grad = torch.tensor([[[3.0, 4.0], [1.0, 0.0]], [[0.0, 2.0], [9.0, 9.0]]])   # (2, 2, 2)
    mask = torch.tensor([[True, True], [True, False]])
    got = analysis.position_norms(grad, mask)
    assert got.tolist() == [pytest.approx(3.5), pytest.approx(1.0)]  # (5 + 2) / 2 and 1 / 1


def test_norms_checker_accepts_reference_and_solutions(capsys):
    assert check_position_norms(analysis.position_norms)
    assert check_position_norms(norms_variant)
    solution = run_solution(chapter("03"), "ex-03-position-norms")
    assert check_position_norms(solution.per_position_norms)
    assert "all" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, words", [
    (dict(squared=True), "values (batch without padding)"),
    (dict(l1=True), "L2"),
    (dict(mean_e=True), "values"),
    (dict(divide_by_batch=True), "masking"),
    (dict(clamp=True), "positions without tokens"),
    (dict(inplace=True), "modified in place"),
])
def test_norms_checker_rejects_plausible_mistakes(kwargs, words):
    assert words in failure(check_position_norms, lambda g, m: norms_variant(g, m, **kwargs))


def test_norms_checker_reports_shape_and_type():
    assert "shape" in failure(check_position_norms, lambda g, m: g.norm(dim=-1))       # (B, S)
    assert "torch.Tensor" in failure(check_position_norms, lambda g, m: g.norm(dim=-1).mean(0).tolist())
