"""Chapter 5 checkers: they accept correct code (the package's and the chapter's solutions) and
reject typical mistakes with a message that names what is wrong."""
import math

import pytest
import torch

from s2s_course.exercises import ExerciseFailed, check_general_score, check_local_p_weights
from s2s_course.exercises.ch05 import reference_general_score, reference_local_p_weights
from tests.nbtools import chapter, run_solution


def failure(checker, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        checker(fn)
    return str(info.value)


# --- the references against hand computation ------------------------------------------------

def test_reference_general_score_is_q_W_k_by_hand():
    q = torch.tensor([[1.0, 2.0]])                      # (1, 2)
    k = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]])  # (1, 2, 3)
    W = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])     # (2, 3)
    # W k_0 = [3, 1] -> q . = 3 + 2 = 5 ;  W k_1 = [-2, 2] -> -2 + 4 = 2
    torch.testing.assert_close(reference_general_score(q, k, W), torch.tensor([[5.0, 2.0]]))


def test_reference_local_p_weights_by_hand():
    scores = torch.tensor([[0.0, 1.0, 2.0, 0.5, -1.0, 3.0]])
    p, D = torch.tensor([2.5]), 2                          # window: |s - 2.5| <= 2 -> s = 1, 2, 3, 4
    mask = torch.tensor([[True, True, True, True, False, False]])   # s = 4 is padding
    kept = [1, 2, 3]
    z = sum(math.exp(scores[0, s].item()) for s in kept)
    expected = torch.zeros(1, 6)
    for s in kept:
        expected[0, s] = math.exp(scores[0, s].item()) / z * math.exp(-(s - 2.5) ** 2 / (2 * 1.0 ** 2))
    torch.testing.assert_close(reference_local_p_weights(scores, p, mask, D), expected)


# --- correct code passes -------------------------------------------------------------------

def test_general_score_accepts_reference_and_an_einsum_version(capsys):
    assert check_general_score(reference_general_score)
    assert check_general_score(lambda q, k, W: torch.einsum("bh,hk,bsk->bs", q, W, k))
    assert "✓ all" in capsys.readouterr().out


def test_local_p_accepts_reference_and_a_loop_version():
    def loop(scores, p, mask, window):
        B, S = scores.shape
        rows = []
        for b in range(B):
            row = []
            keep = [s for s in range(S) if mask[b, s] and abs(s - p[b].item()) <= window]
            z = sum(torch.exp(scores[b, s]) for s in keep)
            for s in range(S):
                if s in keep:
                    g = torch.exp(-(s - p[b]) ** 2 / (2 * (window / 2) ** 2))
                    row.append(torch.exp(scores[b, s]) / z * g)
                else:
                    row.append(scores.new_zeros(()))
            rows.append(torch.stack(row))
        return torch.stack(rows)

    assert check_local_p_weights(reference_local_p_weights)
    assert check_local_p_weights(loop)


def test_the_chapter_solutions_pass():
    path = chapter("05")
    assert check_general_score(run_solution(path, "ex-05-general-score").general_score)
    assert check_local_p_weights(run_solution(path, "ex-05-local-p").local_p_weights)


# --- wrong code fails and says why -----------------------------------------------------------

def test_general_score_rejects_typical_mistakes():
    msg = failure(check_general_score, lambda q, k, W: torch.softmax(torch.einsum("bh,hk,bsk->bs", q, W, k), -1))
    assert "check 'common mistakes'" in msg and "softmax weights" in msg
    msg = failure(check_general_score, lambda q, k, W: torch.einsum("bh,kh,bsk->bs", q, W, k))
    assert "check 'common mistakes'" in msg and "transposed" in msg
    msg = failure(check_general_score, lambda q, k, W: torch.bmm(k, q.unsqueeze(2)).squeeze(2))
    assert "check 'common mistakes'" in msg and "dot score" in msg
    msg = failure(check_general_score, lambda q, k, W: torch.bmm(k @ W.T, q.unsqueeze(2)))
    assert "check 'shape'" in msg and "expected shape (2, 3), got (2, 3, 1)" in msg
    msg = failure(check_general_score,
                  lambda q, k, W: torch.tensor(torch.einsum("bh,hk,bsk->bs", q, W, k).tolist()))
    assert "check 'gradient flows'" in msg


def test_general_score_rejects_in_place_changes_and_unknown_errors():
    def scales_query_in_place(q, k, W):
        q.mul_(2)
        return torch.einsum("bh,hk,bsk->bs", q, W, k) / 2

    assert "does not modify its inputs" in failure(check_general_score, scales_query_in_place)
    msg = failure(check_general_score, lambda q, k, W: torch.einsum("bh,hk,bsk->bs", q, W, k) + 1)
    assert "check 'values'" in msg


def _local(scores, p, mask, window, sigma=None, in_window=True, use_mask=True, gauss=True, renorm=False,
           two=2.0):
    sigma = window / 2 if sigma is None else sigma
    distance = torch.arange(scores.size(1), dtype=scores.dtype).unsqueeze(0) - p.unsqueeze(1)
    keep = torch.ones_like(mask)
    if use_mask:
        keep = keep & mask
    if in_window:
        keep = keep & (distance.abs() <= window)
    w = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1)
    if gauss:
        w = w * torch.exp(-distance ** 2 / (two * sigma ** 2))
    if renorm:
        w = w / w.sum(-1, keepdim=True)
    return w


def test_local_p_rejects_typical_mistakes():
    assert check_local_p_weights(_local)   # the helper itself is right with its defaults
    cases = [
        (dict(sigma_is_D=True), "common mistakes", "sigma = D / 2"),
        (dict(gauss=False), "common mistakes", "no Gaussian"),
        (dict(renorm=True), "common mistakes", "renormalised"),
        (dict(two=1.0), "common mistakes", "factor 2"),
        (dict(in_window=False), "zero outside the window", "|s - p_t| > D"),
        (dict(use_mask=False), "zero on padding", "padding"),
    ]
    for options, check, words in cases:
        if options.pop("sigma_is_D", False):
            fn = lambda s, p, m, D: _local(s, p, m, D, sigma=D)  # noqa: E731
        else:
            fn = lambda s, p, m, D, o=options: _local(s, p, m, D, **o)  # noqa: E731
        msg = failure(check_local_p_weights, fn)
        assert f"check '{check}'" in msg and words in msg, msg


def test_local_p_rejects_rounded_p_in_place_edits_and_detached_outputs():
    msg = failure(check_local_p_weights, lambda s, p, m, D: _local(s, p.round(), m, D))
    assert "rounded" in msg

    def in_place(scores, p, mask, window):
        scores.masked_fill_(~mask, -1e9)
        return _local(scores, p, mask, window)

    assert "does not modify its inputs" in failure(check_local_p_weights, in_place)
    msg = failure(check_local_p_weights, lambda s, p, m, D: _local(s, p.detach(), m, D))
    assert "check 'gradient flows'" in msg and "'p'" in msg
