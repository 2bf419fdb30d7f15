import re

import pytest
import torch

from s2s_course.attention import AdditiveScore, masked_softmax
from s2s_course.exercises import ExerciseFailed, check_additive_scores, check_masked_softmax
from s2s_course.exercises.ch04 import additive_scores
from tests.nbtools import chapter, run_solution


def fails(checker, fn, prop, case=None):
    """The checker rejects ``fn`` and its report names the failing property (and case)."""
    with pytest.raises(ExerciseFailed) as info:
        checker(fn)
    message = str(info.value)
    assert f"check {prop!r}" in message, message
    if case is not None:
        assert case in message, message
    return message


# --- the reference of the additive checker is the textbook formula -----------------------------

def test_additive_reference_matches_the_formula_by_hand():
    torch.manual_seed(0)
    B, S, Hq, Hk, A = 2, 3, 4, 5, 6
    q, k = torch.randn(B, Hq), torch.randn(B, S, Hk)
    W, U, v = torch.randn(A, Hq), torch.randn(A, Hk), torch.randn(A)
    by_hand = torch.empty(B, S)
    for b in range(B):
        for j in range(S):
            by_hand[b, j] = v @ torch.tanh(W @ q[b] + U @ k[b, j])
    torch.testing.assert_close(additive_scores(q, k, W, U, v), by_hand)
    # and it is the package's module with those weights
    module = AdditiveScore(Hq, Hk, A)
    with torch.no_grad():
        module.W.weight.copy_(W), module.U.weight.copy_(U), module.v.weight.copy_(v.unsqueeze(0))
    torch.testing.assert_close(module(q, k), by_hand)


# --- check_masked_softmax ---------------------------------------------------------------------

def test_masked_softmax_checker_accepts_the_package(capsys):
    assert check_masked_softmax(masked_softmax) is True
    assert "✓ all" in capsys.readouterr().out


def test_masked_softmax_checker_accepts_the_chapter_solution():
    solution = run_solution(chapter("04"), "ex-04-masked-softmax")
    assert check_masked_softmax(solution.my_masked_softmax) is True


def test_masked_softmax_checker_accepts_an_independent_implementation():
    def by_formula(scores, mask):
        m = mask.view(mask.size(0), *([1] * (scores.dim() - 2)), mask.size(1)).expand_as(scores)
        kept = scores.masked_fill(~m, float("-inf"))
        e = torch.exp(kept - kept.amax(-1, keepdim=True).nan_to_num(neginf=0.0))   # exp(-inf) = 0
        total = e.sum(-1, keepdim=True)
        return e / torch.where(total > 0, total, torch.ones_like(total))
    assert check_masked_softmax(by_formula) is True


def test_masked_softmax_checker_rejects_ignoring_the_mask():
    fails(check_masked_softmax, lambda scores, mask: torch.softmax(scores, -1), "masking",
          case="padded batch")


def test_masked_softmax_checker_rejects_zeroing_after_softmax():
    def zero_after(scores, mask):
        return torch.softmax(scores, -1) * mask.view(mask.size(0), *([1] * (scores.dim() - 2)), -1)
    message = fails(check_masked_softmax, zero_after, "rows sum to one")
    assert "sum to" in message and "hint" in message


def test_masked_softmax_checker_rejects_overflowing_exp():
    def naive(scores, mask):
        m = mask.view(mask.size(0), *([1] * (scores.dim() - 2)), -1)
        e = torch.exp(scores) * m
        return e / e.sum(-1, keepdim=True)
    fails(check_masked_softmax, naive, "finite (no inf / NaN)", case="large scores")


def test_masked_softmax_checker_rejects_nan_on_all_padding_rows():
    def nan_rows(scores, mask):
        m = mask.view(mask.size(0), *([1] * (scores.dim() - 2)), -1)
        return torch.softmax(scores.masked_fill(~m, float("-inf")), -1)
    fails(check_masked_softmax, nan_rows, "finite (no inf / NaN)", case="an empty source")


def test_masked_softmax_checker_rejects_in_place_changes():
    def in_place(scores, mask):
        m = mask.view(mask.size(0), *([1] * (scores.dim() - 2)), -1)
        scores.masked_fill_(~m, -1e9)
        return torch.softmax(scores, -1).masked_fill(~m, 0.0)
    fails(check_masked_softmax, in_place, "does not modify its inputs")


def test_masked_softmax_checker_rejects_a_mask_that_does_not_broadcast_over_steps():
    def two_d_only(scores, mask):
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num()
    message = fails(check_masked_softmax, two_d_only, "runs without error", case="every decoder step")
    assert re.search(r"raised RuntimeError", message)


def test_masked_softmax_checker_rejects_detached_output():
    def detached(scores, mask):
        return masked_softmax(scores.detach(), mask)
    fails(check_masked_softmax, detached, "gradient flows")


# --- check_additive_scores --------------------------------------------------------------------

def test_additive_checker_accepts_the_reference_and_the_chapter_solution():
    assert check_additive_scores(additive_scores) is True
    solution = run_solution(chapter("04"), "ex-04-additive-scores")
    assert check_additive_scores(solution.my_additive_scores) is True


def test_additive_checker_rejects_a_missing_tanh():
    def no_tanh(query, keys, W, U, v):
        return ((query @ W.T).unsqueeze(1) + keys @ U.T) @ v
    fails(check_additive_scores, no_tanh, "values")


def test_additive_checker_rejects_an_unsqueezed_output():
    def keepdim(query, keys, W, U, v):
        return torch.tanh((query @ W.T).unsqueeze(1) + keys @ U.T) @ v.unsqueeze(1)  # (B, S, 1)
    message = fails(check_additive_scores, keepdim, "shape")
    assert "expected shape (2, 5), got (2, 5, 1)" in message


def test_additive_checker_rejects_a_wrong_broadcast():
    def wrong_pairing(query, keys, W, U, v):  # query b is added to position b of every sentence
        return torch.tanh((query @ W.T).unsqueeze(0) + keys @ U.T) @ v
    fails(check_additive_scores, wrong_pairing, "runs without error", case="B=2, S=5")

    def wrong_pairing_when_it_fits(query, keys, W, U, v):
        if query.size(0) == keys.size(1):
            return torch.tanh((query @ W.T).unsqueeze(0) + keys @ U.T) @ v
        return additive_scores(query, keys, W, U, v)
    fails(check_additive_scores, wrong_pairing_when_it_fits, "values", case="B equals S")


def test_additive_checker_rejects_v_inside_the_tanh_and_detached_weights():
    def v_inside(query, keys, W, U, v):
        return torch.tanh(((query @ W.T).unsqueeze(1) + keys @ U.T) @ v)
    fails(check_additive_scores, v_inside, "values")

    def detached(query, keys, W, U, v):
        return additive_scores(query, keys.detach(), W, U, v)
    message = fails(check_additive_scores, detached, "gradient flows")
    assert "keys" in message
