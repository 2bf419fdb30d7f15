"""Chapter 6 checkers: they accept correct schedules and mixing functions (the package's, the
notebook's solutions) and reject plausible mistakes, naming the property that failed."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s2s_course import schedules
from s2s_course.exercises import ExerciseFailed, check_inverse_sigmoid, check_scheduled_inputs
from s2s_course.exercises.ch06 import scheduled_inputs_reference
from s2s_course.models.rnn import next_inputs
from tests.nbtools import chapter, run_solution

# -----------------------------------------------------------------------------
# inverse sigmoid


def _guarded(formula):
    """A schedule from ``formula(i, k)`` that returns 0 instead of overflowing."""
    def make(k):
        def eps(i):
            try:
                return formula(i, k)
            except OverflowError:
                return 0.0
        return eps
    return make


def test_inverse_sigmoid_accepts_the_package_schedule(capsys):
    assert check_inverse_sigmoid(schedules.inverse_sigmoid) is True
    assert "all 18 checks passed" in capsys.readouterr().out


def test_inverse_sigmoid_accepts_an_independent_formula():
    # written from the paper's formula, not the package: eps_i = k / (k + exp(i / k)),
    # rewritten as the logistic function 1 / (1 + exp(i/k - ln k)) evaluated with numpy
    def numpy_inverse_sigmoid(k):
        return lambda i: float(1.0 / (1.0 + np.exp(np.clip(i / k - math.log(k), None, 700.0))))
    assert check_inverse_sigmoid(numpy_inverse_sigmoid)


def test_inverse_sigmoid_accepts_the_notebook_solution():
    solution = run_solution(chapter("06"), "ex-06-inverse-sigmoid")
    assert check_inverse_sigmoid(solution.inverse_sigmoid)


@pytest.mark.parametrize("wrong, prop", [
    (lambda k: k / (k + 1.0), "returns a function of the step"),                        # a number, not a schedule
    (_guarded(lambda i, k: math.exp(i / k)), "range [0, 1]"),                            # forgot to invert
    (_guarded(lambda i, k: 1.0 / (1.0 + math.exp(i / k))), "value at step 0"),           # forgot k in the numerator
    (_guarded(lambda i, k: k / (k + math.exp(-i / k))), "monotonic"),                     # sign of the exponent
    (_guarded(lambda i, k: k / (k + math.exp(i * k))), "values"),                         # i * k instead of i / k
    (lambda k: (lambda i: k / (k + math.exp(i / k))), "no overflow at large steps"),      # math.exp overflows
    (lambda k: (lambda i: max(0.0, 1.0 - i / (k * 10))), "value at step 0"),              # a linear schedule
    (lambda k: (lambda i: 0.01 if i / k > 700 else k / (k + math.exp(i / k))),           # guard returns 0.01
     "no overflow at large steps"),
])
def test_inverse_sigmoid_rejects_mistakes_naming_the_property(wrong, prop):
    with pytest.raises(ExerciseFailed) as failure:
        check_inverse_sigmoid(wrong)
    assert f"check '{prop}'" in str(failure.value)


def test_inverse_sigmoid_reports_a_crash_inside_the_schedule():
    def crashes(k):
        return lambda i: [1.0][i]  # IndexError from step 1 on
    with pytest.raises(ExerciseFailed, match="IndexError"):
        check_inverse_sigmoid(crashes)


# -----------------------------------------------------------------------------
# mixing gold and predicted tokens


def test_reference_matches_hand_computed_case():
    gold = torch.tensor([7, 8, 9])
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0], [0.0, 1.0, 4.0]])  # argmax 1, 0, 2
    coin = torch.tensor([True, False, False])
    assert scheduled_inputs_reference(gold, logits, coin).tolist() == [7, 0, 2]


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_reference_is_next_inputs_with_its_own_coins(ratio):
    # next_inputs draws use_gold = torch.rand(B) < ratio; with the same seed, those are the coins
    g = torch.Generator().manual_seed(1)
    gold, logits = torch.randint(0, 6, (64,), generator=g), torch.randn(64, 6, generator=g)
    torch.manual_seed(123)
    from_package = next_inputs(gold, logits, ratio)
    torch.manual_seed(123)
    coin = torch.rand(gold.shape) < ratio
    assert 0 < int(coin.sum()) < 64
    assert torch.equal(scheduled_inputs_reference(gold, logits, coin), from_package)


def test_scheduled_inputs_accepts_correct_functions(capsys):
    assert check_scheduled_inputs(scheduled_inputs_reference)
    assert "all 24 checks passed" in capsys.readouterr().out
    # built from the package's two extremes: ratio 1 is gold, ratio 0 is the argmax
    assert check_scheduled_inputs(lambda g, l, c: torch.where(c, next_inputs(g, l, 1.0), next_inputs(g, l, 0.0)))


def test_scheduled_inputs_accepts_the_notebook_solution():
    solution = run_solution(chapter("06"), "ex-06-scheduled-inputs")
    assert check_scheduled_inputs(solution.scheduled_inputs)


def _in_place(gold, logits, coin):
    gold[~coin] = logits.argmax(-1)[~coin]
    return gold


def _sampled(gold, logits, coin):
    sample = torch.multinomial(torch.softmax(logits, -1), 1, generator=torch.Generator().manual_seed(3)).squeeze(1)
    return torch.where(coin, gold, sample)


@pytest.mark.parametrize("wrong, prop", [
    (lambda g, l, c: torch.where(c, l.argmax(-1), g), "mixing uses gold where coin=1"),      # swapped
    (lambda g, l, c: torch.where(c, g.float(), l.max(-1).values), "dtype"),                 # scores, not ids
    (_sampled, "mixing uses the argmax where coin=0"),                                       # a sample
    (_in_place, "does not modify its inputs"),                                               # overwrites gold
    (lambda g, l, c: l.argmax(-1), "mixing uses gold where coin=1"),                         # ignores the coin
    (lambda g, l, c: torch.where(c, g, l.argmax(-1)).unsqueeze(1), "shape"),                 # (B, 1)
    (lambda g, l, c: torch.where(c, g, l.argmin(-1)), "mixing uses the argmax where coin=0"),
    (lambda g, l, c: None, "returns a tensor"),
])
def test_scheduled_inputs_rejects_mistakes_naming_the_property(wrong, prop):
    with pytest.raises(ExerciseFailed) as failure:
        check_scheduled_inputs(wrong)
    assert f"check '{prop}'" in str(failure.value)
