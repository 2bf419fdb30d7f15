"""Checkers for chapter 6 (teacher forcing, exposure bias and scheduled sampling).

- ``check_inverse_sigmoid(fn)``: ``fn(k)`` returns a schedule ``step -> eps_step`` with
  ``eps_i = k / (k + exp(i / k))`` (Bengio et al. 2015), compared with ``s2s_course.schedules``.
- ``check_scheduled_inputs(fn)``: ``fn(gold, logits, coin)`` picks, per example, the gold token where
  ``coin`` is True and the model's own guess (argmax of ``logits``) where it is False: the mixing step
  inside ``s2s_course.models.rnn.next_inputs``, with the coins given instead of drawn.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from s2s_course import schedules
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_dtype, expect_inputs_unchanged,
                                       expect_shape, expect_type)

# -----------------------------------------------------------------------------
# inverse-sigmoid schedule

_STEPS = 2000        # steps 0 .. 1999 are checked for range, monotonicity and values
_LARGE_STEP = 10**6  # exp(10**6 / k) overflows a float for every k in the cases


def _evaluate(schedule: Callable[[int], Any], step: int) -> float:
    return float(schedule(step))


def _schedule_check(name: str, body: Callable[[Callable, Callable, float], str | None],
                    hint: str | None = None) -> Check:
    """A property of the learner's schedule ``t.got`` (reference ``t.expected``) for ``k = case.args[0]``;
    an exception raised while evaluating the schedule is reported under this property."""
    def fn(t: Trial) -> str | None:
        k = float(t.case.args[0])
        try:
            return body(t.got, t.expected, k)
        except Exception as err:  # the learner's schedule crashed on some step
            return f"evaluating your schedule raised {type(err).__name__}: {err}"

    return Check(name, fn, hint)


def _returns_schedule(got: Any, expected: Any, k: float) -> str | None:
    if callable(got):
        return None
    return (f"inverse_sigmoid(k) must return a function of the step (e.g. `return lambda i: ...`), "
            f"got {type(got).__name__}: {got!r:.60}")


def _in_range(got: Callable, expected: Callable, k: float) -> str | None:
    for i in range(_STEPS):
        value = _evaluate(got, i)
        if not 0.0 <= value <= 1.0:
            return f"eps_{i} = {value:.4g} is not a probability in [0, 1]"
    return None


def _at_zero(got: Callable, expected: Callable, k: float) -> str | None:
    value, want = _evaluate(got, 0), expected(0)
    if math.isclose(value, want, rel_tol=1e-6, abs_tol=1e-9):
        return None
    return f"expected eps_0 = k / (k + exp(0)) = k / (k + 1) = {want:.6g}, got {value:.6g}"


def _non_increasing(got: Callable, expected: Callable, k: float) -> str | None:
    previous = _evaluate(got, 0)
    for i in range(1, _STEPS):
        value = _evaluate(got, i)
        if value > previous + 1e-12:
            return (f"eps_{i} = {value:.6g} > eps_{i - 1} = {previous:.6g}: the schedule must never go up "
                    f"(teacher forcing is handed over to the model, not taken back)")
        previous = value
    return None


def _values(got: Callable, expected: Callable, k: float) -> str | None:
    for i in range(_STEPS):
        value, want = _evaluate(got, i), expected(i)
        if not math.isclose(value, want, rel_tol=1e-6, abs_tol=1e-9):
            return f"expected eps_{i} = k / (k + exp({i} / k)) = {want:.6g}, got {value:.6g}"
    return None


def _large_step(got: Callable, expected: Callable, k: float) -> str | None:
    try:
        value = _evaluate(got, _LARGE_STEP)
    except OverflowError as err:
        return (f"at step {_LARGE_STEP} exp({_LARGE_STEP} / k) overflows ({err}); long trainings reach such "
                f"steps: return 0.0 once i / k is large (past ~700) instead of calling exp")
    if not abs(value) < 1e-12:
        return f"expected eps_{_LARGE_STEP} = 0 (to float precision), got {value:.4g}"
    return None


def check_inverse_sigmoid(inverse_sigmoid: Callable[[float], Callable[[int], float]]) -> bool:
    """``inverse_sigmoid(k)`` must return ``step -> k / (k + exp(step / k))`` for ``k >= 1``.

    Properties, in order: returns a function of the step, range [0, 1], value at step 0,
    monotonic (non-increasing), values at steps 0..1999, no overflow at large steps.
    """
    cases = [Case("k=10", (10.0,)), Case("k=1", (1.0,)), Case("k=200", (200.0,))]
    checks = [
        _schedule_check("returns a function of the step", _returns_schedule),
        _schedule_check("range [0, 1]", _in_range, hint="eps_i is a probability: k / (k + exp(i / k))"),
        _schedule_check("value at step 0", _at_zero,
                        hint="the k in the numerator keeps eps_0 = k / (k + 1) close to 1 for large k"),
        _schedule_check("monotonic", _non_increasing, hint="the exponent is +i / k, so exp grows with i"),
        _schedule_check("values", _values, hint="divide the step by k inside exp: exp(i / k)"),
        _schedule_check("no overflow at large steps", _large_step),
    ]
    return check_function(inverse_sigmoid, schedules.inverse_sigmoid, cases, checks)


# -----------------------------------------------------------------------------
# mixing gold and predicted tokens

def scheduled_inputs_reference(gold: torch.Tensor, logits: torch.Tensor, coin: torch.Tensor) -> torch.Tensor:
    """Gold token where ``coin`` is True, the model's argmax where False: (B,), (B, V), (B,) -> (B,)."""
    return torch.where(coin, gold, logits.argmax(dim=-1))


def _mixing_check(name: str, use_gold: bool, hint: str) -> Check:
    def fn(t: Trial) -> str | None:
        gold, logits, coin = t.case.args
        where = coin if use_gold else ~coin
        wrong = where & (t.got.detach().cpu() != t.expected)
        if not bool(wrong.any()):
            return None
        b = int(wrong.nonzero()[0, 0])
        source = "the gold token gold[b]" if use_gold else "the model's guess logits[b].argmax()"
        return (f"example b={b} has coin={bool(coin[b])}, so the input must be {source} = "
                f"{int(t.expected[b])}, got {int(t.got[b])} ({int(wrong.sum())} of {int(where.sum())} "
                f"such examples are wrong)")

    return Check(name, fn, hint)


def _mixing_cases() -> list[Case]:
    g = torch.Generator().manual_seed(6)
    B, V = 8, 7
    gold = torch.randint(3, V, (B,), generator=g)
    logits = torch.randn(B, V, generator=g)
    logits[torch.arange(B), gold] -= 5.0  # the model's guess is never the gold token: mix-ups show
    coin = torch.tensor([True, False, True, True, False, False, True, False])
    return [
        Case("mixed coins", (gold, logits, coin)),
        Case("all coins 1 (teacher forcing)", (gold, logits, torch.ones(B, dtype=torch.bool))),
        Case("all coins 0 (free running)", (gold, logits, torch.zeros(B, dtype=torch.bool))),
        Case("batch of 1", (gold[:1], logits[:1], coin[1:2])),
    ]


def check_scheduled_inputs(scheduled_inputs: Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                                                      torch.Tensor]) -> bool:
    """``scheduled_inputs(gold (B,), logits (B, V), coin (B,) bool) -> (B,) long``.

    Properties, in order: returns a tensor, shape, dtype, mixing uses gold where coin=1, mixing uses
    the argmax where coin=0, does not modify its inputs.
    """
    checks = [
        expect_type(), expect_shape(hint="one token per example: take the argmax over the vocabulary (dim=-1)"),
        expect_dtype(hint="token ids are int64: use argmax (an index), not max (a score)"),
        _mixing_check("mixing uses gold where coin=1", True,
                      "torch.where(coin, gold, predicted): coin=True means teacher forcing"),
        _mixing_check("mixing uses the argmax where coin=0", False,
                      "the model's own guess is logits.argmax(dim=-1), not a sample and not dim=0"),
        expect_inputs_unchanged(),
    ]
    return check_function(scheduled_inputs, scheduled_inputs_reference, _mixing_cases(), checks)


__all__ = ["check_inverse_sigmoid", "check_scheduled_inputs", "scheduled_inputs_reference"]
