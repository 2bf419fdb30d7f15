"""Chapter 7 checkers: they accept correct code (the package's reference and the notebook's
solutions) and reject plausible mistakes with a message that names the mistake."""
from __future__ import annotations

import math

import pytest
import torch

from s2s_course.decode import beam_search
from s2s_course.exercises import ExerciseFailed, check_beam_step, check_length_penalty
from s2s_course.exercises.ch07 import reference_beam_step, reference_length_penalty
from s2s_course.models import DecoderState
from tests.nbtools import chapter, run_solution


def failure(checker, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        checker(fn)
    return str(info.value)


# --- the references against independent computations -------------------------------------------

def test_reference_length_penalty_by_hand():
    # lp(3) = (8/6)^0.6, lp(0) = (5/6)^0.6; alpha = 0 leaves the log-probabilities alone
    got = reference_length_penalty(torch.tensor([-4.0, -1.0]), torch.tensor([3, 0]), 0.6)
    assert got.tolist() == pytest.approx([-4.0 / (8 / 6) ** 0.6, -1.0 / (5 / 6) ** 0.6])
    same = reference_length_penalty(torch.tensor([-4.0, -6.0]), torch.tensor([3, 9]), 0.0)
    assert same.tolist() == pytest.approx([-4.0, -6.0])


def test_reference_beam_step_by_brute_force():
    g = torch.Generator().manual_seed(3)
    beam_scores, log_probs = -torch.rand(4, generator=g), torch.log_softmax(torch.randn(4, 9, generator=g), -1)
    candidates = sorted(((beam_scores[i] + log_probs[i, v]).item(), i, v) for i in range(4) for v in range(9))
    best = candidates[::-1][:5]
    scores, parents, tokens = reference_beam_step(beam_scores, log_probs, 5)
    assert scores.tolist() == pytest.approx([s for s, _, _ in best])
    assert parents.tolist() == [i for _, i, _ in best] and tokens.tolist() == [v for _, _, v in best]


class TwoStepToy(torch.nn.Module):
    """Log-probabilities fixed per step (whatever the prefix): lets us compare the package's first
    beam step with reference_beam_step."""

    def __init__(self, table):
        super().__init__()
        self.table = table                                   # (steps, V) log-probs

    def encode(self, src, src_lengths):
        return DecoderState(hidden=torch.zeros(1, src.size(0), 1), context=torch.zeros(src.size(0), 1))

    def decode_step(self, y_prev, state):
        step = int(state.context[0, 0])
        logits = self.table[step].expand(y_prev.size(0), -1)
        return logits, DecoderState(hidden=state.hidden, context=state.context + 1)


def test_reference_beam_step_agrees_with_the_package_beam_search():
    # Step 1 has no <eos> candidates in its top 3, so the package's beam after step 1 must be
    # exactly the three extensions reference_beam_step picks from the single <sos> hypothesis.
    V = 8
    first = torch.log_softmax(torch.tensor([-9.0, -9.0, -9.0, -9.0, 2.0, 1.5, 1.0, 0.2]), -1)
    second = torch.full((V,), -9.0)
    second[2] = 5.0                                          # then <eos>
    toy = TwoStepToy(torch.stack([first, torch.log_softmax(second, -1)]))
    hyps = beam_search(toy, torch.ones(1, 2, dtype=torch.long), torch.tensor([2]), beam_size=3,
                       length_penalty=0.0, n_best=3, max_len=2)[0]
    scores, parents, tokens = reference_beam_step(torch.zeros(1), first.unsqueeze(0), 3)
    assert sorted(h.tokens[0] for h in hyps) == sorted(tokens.tolist())
    assert parents.tolist() == [0, 0, 0]
    assert math.isclose(hyps[0].log_prob, scores[0].item() + torch.log_softmax(second, -1)[2].item(),
                        abs_tol=1e-5)


# --- check_length_penalty -----------------------------------------------------------------------

def test_length_penalty_checker_accepts_reference_and_notebook_solution(capsys):
    assert check_length_penalty(reference_length_penalty)
    solution = run_solution(chapter("07"), "ex-07-length-penalty")
    assert check_length_penalty(solution.length_penalty_scores)
    assert "checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, words", [
    (lambda lp, n, a: lp * ((5 + n) / 6) ** a, ["length penalty formula", "divide"]),
    (lambda lp, n, a: lp / n.clamp(min=1) ** a, ["length penalty formula", "smooths"]),
    (lambda lp, n, a: lp / ((5 + n) / 6), ["length penalty formula", "exponent alpha"]),
    (lambda lp, n, a: lp / ((5 + n) ** a / 6), ["length penalty formula", "whole fraction"]),
    (lambda lp, n, a: lp / ((1 + n) / 6) ** a, ["length penalty formula", "constant is 5"]),
    (lambda lp, n, a: (lp / ((5 + n) / 6) ** a).tolist(), ["returns a tensor", "list"]),
    (lambda lp, n, a: (lp / ((5 + n) / 6) ** a).sum(), ["shape"]),
    (lambda lp, n, a: lp / ((5 + n) / 6) ** (a + 0.1), ["values", "expected score"]),
])
def test_length_penalty_checker_rejects_and_names_the_mistake(wrong, words):
    message = failure(check_length_penalty, wrong)
    for word in words:
        assert word in message, (word, message)


def test_length_penalty_checker_catches_in_place_changes():
    def in_place(log_probs, lengths, alpha):
        return log_probs.div_(((5 + lengths) / 6) ** alpha)

    assert "modified in place" in failure(check_length_penalty, in_place)


# --- check_beam_step ----------------------------------------------------------------------------

def test_beam_step_checker_accepts_reference_and_notebook_solution(capsys):
    assert check_beam_step(reference_beam_step)
    solution = run_solution(chapter("07"), "ex-07-beam-step")
    assert check_beam_step(solution.beam_step)
    assert "checks passed" in capsys.readouterr().out


def no_prefix(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = log_probs.reshape(-1).topk(k)
    return scores, flat // V, flat % V


def per_row(beam_scores, log_probs, k):
    totals = beam_scores[:, None] + log_probs
    best, token = totals.max(dim=1)
    keep = best.topk(min(k, best.numel())).indices
    return best[keep], keep, token[keep]


def swapped(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).topk(k)
    return scores, flat % V, flat // V


def by_beam_size(beam_scores, log_probs, k):
    K = log_probs.size(0)
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).topk(k)
    return scores, flat // K, flat % K


def float_indices(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).topk(k)
    return scores, (flat // V).float(), (flat % V).float()


def worst_first(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).topk(k)
    return scores.flip(0), (flat // V).flip(0), (flat % V).flip(0)


def two_outputs(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).topk(k)
    return scores, flat


@pytest.mark.parametrize("wrong, words", [
    (no_prefix, ["beam step logic", "log-probability alone"]),
    (per_row, ["beam step logic", "best token of each hypothesis"]),
    (swapped, ["beam step logic", "swapped"]),
    (by_beam_size, ["beam step logic", "with K"]),
    (float_indices, ["dtype of indices", "int64"]),
    (worst_first, ["scores", "not sorted"]),
    (two_outputs, ["returns (scores, parents, tokens)", "length 2"]),
])
def test_beam_step_checker_rejects_and_names_the_mistake(wrong, words):
    message = failure(check_beam_step, wrong)
    for word in words:
        assert word in message, (word, message)


def test_beam_step_checker_reports_wrong_shapes_and_backpointers():
    def too_many(beam_scores, log_probs, k):
        return reference_beam_step(beam_scores, log_probs, k + 1)

    assert "shapes" in failure(check_beam_step, too_many)

    def bad_parents(beam_scores, log_probs, k):
        scores, parents, tokens = reference_beam_step(beam_scores, log_probs, k)
        return scores, torch.zeros_like(parents), tokens

    assert "back-pointers" in failure(check_beam_step, bad_parents)

    def bad_tokens(beam_scores, log_probs, k):
        scores, parents, tokens = reference_beam_step(beam_scores, log_probs, k)
        return scores, parents, (tokens + 1) % log_probs.size(1)

    assert "check 'tokens'" in failure(check_beam_step, bad_tokens)

    def bad_scores(beam_scores, log_probs, k):
        scores, parents, tokens = reference_beam_step(beam_scores, log_probs, k)
        return scores + 1.0, parents, tokens

    assert "expected the k best totals" in failure(check_beam_step, bad_scores)
