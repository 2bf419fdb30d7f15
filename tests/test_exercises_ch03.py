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


# --- bucket accuracy: order, which length, in-place ----------------------------------------------

def bucket_by_groupby(preds, refs, lengths, width):
    """Wrong: itertools.groupby only groups neighbours, right only for examples sorted by length."""
    import itertools

    out = {}
    for edge, group in itertools.groupby(range(len(lengths)), key=lambda i: lengths[i] // width * width):
        idx = list(group)
        exact = sum(list(preds[i]) == list(refs[i]) for i in idx) / len(idx)
        hits = sum(p == r for i in idx for p, r in zip(preds[i], refs[i]))
        out[edge] = (exact, hits / sum(len(refs[i]) for i in idx), len(idx))  # a later run overwrites
    return out


def test_bucket_checker_names_examples_assumed_sorted_by_length():
    msg = failure(check_accuracy_by_length_bucket, bucket_by_groupby)
    assert "case 'examples in random order" in msg and "check 'examples in any order'" in msg
    assert "sorted by length" in msg


def test_bucket_checker_names_bucketing_by_the_reference_length():
    msg = failure(check_accuracy_by_length_bucket,
                  lambda p, r, l, w: bucket_variant(p, r, [len(x) for x in r], w))
    assert "case 'source lengths differ from reference lengths" in msg
    assert "check 'bucket by the given lengths'" in msg and "len(refs[i]), the reference length" in msg


def test_bucket_checker_rejects_padding_the_predictions_in_place():
    def wrong(preds, refs, lengths, width):
        for p, r in zip(preds, refs):
            p += [None] * (len(r) - len(p))  # pads the caller's lists
        return bucket_variant(preds, refs, lengths, width)

    msg = failure(check_accuracy_by_length_bucket, wrong)
    assert "check 'does not modify its inputs'" in msg and "'preds' was modified in place" in msg


def test_bucket_checker_accepts_a_sorting_version():
    def sorting(preds, refs, lengths, width):  # sorts a copy of the order first, then groupby: right
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return bucket_by_groupby([preds[i] for i in order], [refs[i] for i in order],
                                 [lengths[i] for i in order], width)

    assert check_accuracy_by_length_bucket(sorting)


# --- position norms: mask from gradients, float64 ------------------------------------------------

def test_norms_checker_names_a_mask_derived_from_nonzero_gradients():
    def wrong(grad, mask):
        norms = grad.norm(dim=-1)
        return (norms * mask).sum(0) / (norms > 0).sum(0)  # right while padding has exactly 0 gradient

    msg = failure(check_position_norms, wrong)
    assert "case 'zero gradient at padding and at one real token'" in msg
    assert "check 'mask from the argument'" in msg and "mask.sum(0)" in msg


def test_norms_checker_rejects_float32_for_float64_gradients():
    msg = failure(check_position_norms, lambda g, m: analysis.position_norms(g.float(), m))
    assert "case 'float64'" in msg and "check 'dtype'" in msg and "torch.float64" in msg


# --- masked mean pool ----------------------------------------------------------------------------

from s2s_course.exercises import check_mean_pool  # noqa: E402
from s2s_course.exercises.ch03 import POOL_CASES, reference_mean_pool  # noqa: E402


def pool_by_loop(outputs, lengths):
    """Independent: a Python loop over rows."""
    rows = [outputs[b, :n].mean(0) if n > 0 else outputs.new_zeros(outputs.size(2))
            for b, n in enumerate(lengths.tolist())]
    return torch.stack(rows)


def pool_by_weights(outputs, lengths):
    """Independent: a (B, S) weight matrix 1 / length on real positions, then bmm."""
    S = outputs.size(1)
    real = (torch.arange(S)[None, :] < lengths[:, None]).to(outputs.dtype)      # (B, S)
    weights = real / real.sum(1, keepdim=True).clamp(min=1)
    return torch.bmm(weights[:, None, :], outputs).squeeze(1)                   # (B, H)


def pool_variant(outputs, lengths, *, slip=None):
    B, S, H = outputs.shape
    if slip == "mean_all":
        return outputs.mean(1)
    if slip == "crop_first":  # takes lengths[0] as the longest
        outputs = outputs[:, :int(lengths[0])]
        S = outputs.size(1)
    real = torch.arange(S)[None, :] < lengths[:, None]                       # (B, S)
    if slip == "in_place":
        outputs.masked_fill_(~real[..., None], 0.0)
        total = outputs.sum(1)
    elif slip == "sum_all":
        total = outputs.sum(1)
    else:
        total = (outputs * real[..., None]).sum(1)
    if slip == "divide_by_S":
        return total / S
    if slip == "nan_row":
        return total / lengths[:, None]
    if slip == "where":  # zeros forward, NaN gradient backward
        return torch.where(lengths[:, None] > 0, total / lengths[:, None], torch.zeros_like(total))
    if slip == "float":
        return total / lengths[:, None].float()
    if slip == "float32":
        return (total / lengths.clamp(min=1)[:, None]).float()
    if slip == "detach":
        return (total / lengths.clamp(min=1)[:, None]).detach()
    return total / lengths.clamp(min=1)[:, None]


def test_mean_pool_reference_by_hand():
    outputs = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [7.0], [7.0]], [[5.0], [5.0], [5.0]]])
    got = reference_mean_pool(outputs, torch.tensor([2, 3, 0]))
    assert got.flatten().tolist() == [2.0, pytest.approx(16 / 3), 0.0]


def test_mean_pool_checker_accepts_reference_independent_versions_and_the_solution(capsys):
    assert check_mean_pool(reference_mean_pool)
    assert check_mean_pool(pool_by_loop)
    assert check_mean_pool(pool_by_weights)
    assert check_mean_pool(pool_variant)
    solution = run_solution(chapter("03"), "ex-03-mean-pool")
    assert check_mean_pool(solution.mean_pool)
    assert "✓ all" in capsys.readouterr().out


@pytest.mark.parametrize("slip, case, check, words", [
    ("mean_all", "lengths [5, 2, 4]", "known slips", "padding positions were averaged in"),
    ("divide_by_S", "lengths [5, 2, 4]", "known slips", "divides by S"),
    ("sum_all", "lengths [5, 2, 4]", "known slips", "zero the padding"),
    ("crop_first", "longest last", "rows in any order", "lengths[0] as the longest"),
    ("nan_row", "a row of length 0", "rows of length 0", "not 0 / 0 = NaN"),
    ("where", "a row of length 0", "gradient flows", "torch.where over a 0 / 0 branch"),
    ("in_place", "lengths [5, 2, 4]", "does not modify its inputs", "'outputs' was modified in place"),
    ("float32", "float64", "dtype", "float64 outputs give a float64 mean"),
    ("detach", "lengths [5, 2, 4]", "gradient flows", "not connected to the inputs"),
])
def test_mean_pool_checker_names_the_mistake(slip, case, check, words):
    msg = failure(check_mean_pool, lambda o, l: pool_variant(o, l, slip=slip))
    assert f"case '{case}" in msg and f"check '{check}'" in msg and words in msg


def test_mean_pool_cases_have_nonzero_padding_unsorted_lengths_and_an_empty_row():
    assert all(bool((c.args[0] != 0).all()) for c in POOL_CASES)
    assert any(int(c.args[1].argmax()) != 0 for c in POOL_CASES)
    assert any(int(c.args[1].min()) == 0 for c in POOL_CASES)
    assert any(c.args[0].dtype == torch.float64 for c in POOL_CASES)


def test_mean_pool_with_lengths_read_off_nonzero_outputs_is_named():
    def wrong(outputs, lengths):  # right only while padding is exactly 0
        counted = (outputs.abs().sum(-1) != 0).sum(1)
        return outputs.sum(1) / counted.clamp(min=1)[:, None]

    msg = failure(check_mean_pool, wrong)
    assert "check 'known slips'" in msg and "padding positions were averaged in" in msg
