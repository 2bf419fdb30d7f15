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


def failure(checker, fn) -> str:
    """The report ``checker`` raises for ``fn`` (the test fails if it accepts it)."""
    with pytest.raises(ExerciseFailed) as info:
        checker(fn)
    return str(info.value)

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
    assert "all 21 checks passed" in capsys.readouterr().out


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
    assert f"check '{prop}'" in failure(check_inverse_sigmoid, wrong)


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
    assert "all 42 checks passed" in capsys.readouterr().out
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
    assert f"check '{prop}'" in failure(check_scheduled_inputs, wrong)


# -----------------------------------------------------------------------------
# part 3 blind spots: inverse sigmoid


def _counting_calls(k):
    """Ignores the step and counts its own calls: right only when called with 0, 1, 2, ... in order."""
    calls = [-1]

    def eps(i):
        calls[0] += 1
        x = calls[0] / k
        return 0.0 if x > 700 else k / (k + math.exp(x))
    return eps


def _nan_after_overflow(k):
    def eps(i):
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(i / k)
            return float(1.0 - e / (k + e))          # = k / (k + e), but inf / inf = NaN
    return eps


@pytest.mark.parametrize("wrong, words", [
    (lambda k: (lambda i: torch.tensor(k) / (k + torch.exp(torch.tensor(i / k)))),
     ["returns a Python number", "torch.Tensor", "fit accepts only"]),
    (lambda k: (lambda i: np.float32(k / (k + math.exp(min(i / k, 700))))), ["returns a Python number", "float32"]),
    (_nan_after_overflow, ["no overflow at large steps", "NaN"]),
    (_counting_calls, ["value at step 0"]),
])
def test_inverse_sigmoid_covers_the_blind_spots(wrong, words):
    message = failure(check_inverse_sigmoid, wrong)
    for word in words:
        assert word in message, (word, message)


def test_inverse_sigmoid_names_nan_inside_the_first_steps():
    def nan_in_range(k):
        inner = _nan_after_overflow(k)
        return lambda i: inner(i * 1000)                  # overflows from step 1 on for k = 1
    with pytest.raises(ExerciseFailed, match=r"(?s)check 'range \[0, 1\]'.*NaN"):
        check_inverse_sigmoid(nan_in_range)


# -----------------------------------------------------------------------------
# part 3 blind spots: scheduled inputs


def _one_hot_mix(gold, logits, coin):
    """Mixes distributions instead of choosing tokens: 0 * NaN = NaN on a row of -inf logits."""
    mix = (coin[:, None] * torch.nn.functional.one_hot(gold, logits.size(-1))
           + (~coin)[:, None] * torch.softmax(logits, dim=-1))
    return mix.argmax(dim=-1)


def _logits_in_place(gold, logits, coin):
    logits.sub_(logits.max(dim=-1, keepdim=True).values)  # "for stability", in place
    return torch.where(coin, gold, logits.argmax(dim=-1))


def test_scheduled_inputs_large_case_separates_exp_from_logits():
    from s2s_course.exercises.ch06 import _mixing_cases
    (large,) = [c for c in _mixing_cases() if c.name.startswith("large")]
    gold, logits, coin = large.args
    assert not torch.equal(logits.exp().argmax(-1)[~coin], logits.argmax(-1)[~coin])


@pytest.mark.parametrize("wrong, words", [
    (_one_hot_mix, ["rows of -inf logits where coin = 1", "mixing uses gold where coin=1"]),
    (lambda g, l, c: torch.where(c, g, l.exp().argmax(-1)), ["large logits", "mixing uses the argmax"]),
    (_logits_in_place, ["does not modify its inputs", "'logits'"]),
    (lambda g, l, c: torch.where(c, g, l.argmax(-1)).int(), ["check 'dtype'", "int32"]),
])
def test_scheduled_inputs_covers_the_blind_spots(wrong, words):
    message = failure(check_scheduled_inputs, wrong)
    for word in words:
        assert word in message, (word, message)


# -----------------------------------------------------------------------------
# nucleus (top-p) filtering

from s2s_course.decode import top_p_filter  # noqa: E402
from s2s_course.exercises import check_top_p_filter  # noqa: E402
from s2s_course.exercises.ch06 import _top_p_cases, top_p_reference  # noqa: E402


def test_top_p_cases_are_far_from_the_edge():
    # every row's cumulative mass stays at least 1e-3 away from p, and probabilities differ by
    # more than float noise except in the case built with a tie, so float32 and float64 agree
    for case in _top_p_cases():
        logits, p = case.args
        probs = torch.softmax(logits.double(), -1).reshape(-1, logits.shape[-1])
        cum = probs.sort(-1, descending=True).values.cumsum(-1)
        if p < 1:
            assert bool(((cum - p).abs() > 1e-3).all()), case.name
        if "tied" not in case.name and p < 1:
            finite = [row[row > 0].sort().values for row in probs]
            assert all(bool((r[1:] - r[:-1] > 1e-5).all()) for r in finite), case.name


def test_top_p_case_p_1_needs_the_shortcut_in_both_precisions():
    # without `if p >= 1: return logits`, the cumulative sum says the last token is not needed
    (case,) = [c for c in _top_p_cases() if c.args[1] == 1.0]
    logits = case.args[0]
    for dtype in (torch.float32, torch.float64):
        sorted_probs = torch.softmax(logits.to(dtype), -1).sort(descending=True).values
        assert (sorted_probs.cumsum(-1) - sorted_probs)[-1].item() >= 1.0, dtype


def test_top_p_reference_by_hand():
    logits = torch.tensor([0.1, 0.4, 0.2, 0.3]).log()            # sorted: 0.4, 0.3 | 0.2, 0.1
    assert torch.isfinite(top_p_reference(logits, 0.6)).tolist() == [False, True, False, True]
    assert torch.isfinite(top_p_reference(logits, 0.75)).tolist() == [False, True, True, True]
    assert torch.isfinite(top_p_reference(logits, 0.3)).tolist() == [False, True, False, False]


def pairwise_top_p(logits, p):
    """Written independently: a token is kept when the mass of the STRICTLY more likely tokens is < p
    (so ties go together), computed with a (..., V, V) comparison instead of a sort."""
    if p >= 1.0:
        return logits.clone()
    probs = torch.softmax(logits.double(), dim=-1)                          # (..., V)
    more_likely = probs.unsqueeze(-2) > probs.unsqueeze(-1)                  # [..., i, j]: j above i
    ahead = (probs.unsqueeze(-2) * more_likely).sum(-1)                     # (..., V)
    return torch.where(ahead < p, logits, torch.full_like(logits, float("-inf")))


def loop_top_p(logits, p):
    """Written independently: one row at a time in Python, then the threshold rule for ties."""
    if p >= 1.0:
        return logits.clone()
    drops = []
    for row in logits.detach().reshape(-1, logits.shape[-1]):
        probs = torch.softmax(row.double(), -1).tolist()
        total, threshold = 0.0, None
        for q in sorted(probs, reverse=True):
            total, threshold = total + q, q
            if total >= p:
                break
        drops.append([q < threshold for q in probs])
    drop = torch.tensor(drops).reshape(logits.shape)
    return logits.masked_fill(drop, float("-inf"))


def test_top_p_checker_accepts_correct_versions(capsys):
    assert check_top_p_filter(_mask_top_p)                          # every switch in its right position
    assert check_top_p_filter(top_p_reference)
    assert check_top_p_filter(top_p_filter)
    assert check_top_p_filter(pairwise_top_p)
    assert check_top_p_filter(loop_top_p)
    solution = run_solution(chapter("06"), "ex-06-top-p")
    assert check_top_p_filter(solution.top_p_filter)
    assert "all 81 checks passed" in capsys.readouterr().out


def _mask_top_p(logits, p, descending=True, crossing=True, unsort=True, dim=-1, shortcut=True, exp=False,
                ties=True):
    """The usual sort-and-cumsum filter with one switch per classic mistake."""
    if shortcut and p >= 1.0:
        return logits.clone()
    if exp:
        e = logits.exp()
        probs = e / e.sum(dim, keepdim=True)
    else:
        probs = torch.softmax(logits, dim=dim)
    sorted_probs, order = probs.sort(dim=dim, descending=descending)
    cum = sorted_probs.cumsum(dim)
    keep_sorted = (cum - sorted_probs < p) if crossing else (cum < p)
    if ties:       # keep whatever is as likely as the least likely token the sum needs
        smallest = sorted_probs.gather(dim, keep_sorted.sum(dim, keepdim=True).clamp(min=1) - 1)
        keep = probs >= smallest
    else:
        keep = torch.zeros_like(keep_sorted).scatter(dim, order, keep_sorted) if unsort else keep_sorted
    return logits.masked_fill(~keep, float("-inf"))


def hugging_face_style(logits, p):
    """The transformers TopPLogitsWarper recipe: ascending sort, drop the mass <= 1 - p. Right except
    that of two tied tokens at the edge it keeps one (the sort order decides which)."""
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= 1 - p
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def _in_place_top_p(logits, p):
    keep = torch.isfinite(top_p_reference(logits, p))
    return logits.masked_fill_(~keep, float("-inf"))


def _log_probs_top_p(logits, p):
    return top_p_reference(torch.log_softmax(logits, -1), p)


def _sorted_output(logits, p):
    return top_p_reference(logits, p).sort(dim=-1, descending=True).values


def _large_negative(logits, p):
    return top_p_reference(logits, p).nan_to_num(neginf=-1e9).where(torch.isfinite(logits), logits)


@pytest.mark.parametrize("wrong, words", [
    (lambda x, p: _mask_top_p(x, p, descending=False, ties=False), ["LEAST likely"]),
    (lambda x, p: _mask_top_p(x, p, crossing=False, ties=False), ["token whose probability makes the total reach p"]),
    (lambda x, p: _mask_top_p(x, p, unsort=False, ties=False), ["sorted order and applied to the unsorted"]),
    (lambda x, p: _mask_top_p(x, p, shortcut=False), ["p = 1 keeps every token", "p = 1 must keep every token"]),
    (lambda x, p: _mask_top_p(x, p, dim=1) if x.dim() > 1 else _mask_top_p(x, p),
     ["(B, T, V) = (2, 3, 6)", "over dim 1", "LAST dim"]),
    (lambda x, p: _mask_top_p(x, p, exp=True), ["large logits", "torch.softmax"]),
    (lambda x, p: _mask_top_p(x, p, ties=False), ["tied", "must be kept too"]),
    (hugging_face_style, ["tied", "must be kept too"]),
    (_log_probs_top_p, ["kept logits unchanged", "log-probabilities"]),
    (_sorted_output, ["kept logits unchanged", "sorted order"]),
    (_large_negative, ["kept logits unchanged", "float('-inf')"]),
    (lambda x, p: top_p_reference(x, p).float(), ["float64 logits", "check 'dtype'"]),
    (_in_place_top_p, ["does not modify its inputs", "'logits' was modified in place"]),
    (lambda x, p: top_p_reference(x.detach(), p), ["gradient flows", "not connected"]),
    (lambda x, p: top_p_reference(x, p)[..., :-1], ["check 'shape'"]),
])
def test_top_p_checker_rejects_and_names_the_mistake(wrong, words):
    message = failure(check_top_p_filter, wrong)
    for word in words:
        assert word in message, (word, message)
