"""Teacher-forcing schedules: how often the decoder sees the gold previous token.

With teacher forcing the decoder is fed the *correct* previous token during training, but at test
time it must eat its own predictions. Scheduled sampling (Bengio et al., 2015) closes this gap by
starting with teacher forcing and slowly handing the decoder its own outputs. A schedule maps the
global training step ``i`` (one step = one batch) to the probability ``eps_i`` of using the gold
token::

    tf = inverse_sigmoid(k=200)
    tf(0), tf(1000), tf(2000)  # 0.995, 0.574, 0.009
    fit(model, loader, epochs=10, teacher_forcing=tf)

Every schedule is a small callable object with a readable name, so plots can label their curves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Callable


@dataclass(frozen=True)
class Schedule:
    """A named function ``step -> probability`` of feeding the gold token (``0 <= eps_i <= 1``)."""

    name: str
    fn: Callable[[int], float]

    def __call__(self, step: int) -> float:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        return float(self.fn(step))

    def values(self, steps: int) -> list[float]:
        """``[eps_0, ..., eps_{steps-1}]``, handy for plotting a schedule."""
        return [self(i) for i in range(steps)]

    def __repr__(self) -> str:
        return self.name


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _probability(name: str, value: object) -> float:
    value = _number(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return value


def constant(p: float) -> Schedule:
    """Always ``p``: ``constant(1.0)`` is plain teacher forcing, ``constant(0.0)`` free running."""
    p = _probability("p", p)
    return Schedule(f"constant(p={p:g})", lambda i: p)


def linear(start: float = 1.0, end: float = 0.0, steps: int = 1000) -> Schedule:
    """Straight line from ``start`` at step 0 to ``end`` at step ``steps``, then flat at ``end``."""
    start, end = _probability("start", start), _probability("end", end)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return Schedule(f"linear(start={start:g}, end={end:g}, steps={steps})",
                    lambda i: start + (end - start) * min(i / steps, 1.0))


def exponential(k: float) -> Schedule:
    """Exponential decay ``eps_i = k ** i`` with ``0 < k < 1`` (Bengio et al. 2015)."""
    k = _number("k", k)
    if not 0.0 < k < 1.0:
        raise ValueError(f"k must be in (0, 1) for exponential decay, got {k!r}")
    return Schedule(f"exponential(k={k:g})", lambda i: k ** i)


def inverse_sigmoid(k: float) -> Schedule:
    """Inverse sigmoid decay ``eps_i = k / (k + exp(i / k))`` with ``k >= 1`` (Bengio et al. 2015).

    Stays near 1 for roughly ``k * ln(k)`` steps, then falls; larger ``k`` means slower decay.
    """
    k = _number("k", k)
    if not k >= 1.0 or math.isinf(k):
        raise ValueError(f"k must be a finite number >= 1 for inverse sigmoid decay, got {k!r}")

    def eps(i: int) -> float:
        x = i / k
        return 0.0 if x > 700 else k / (k + math.exp(x))  # exp(x) overflows past ~709

    return Schedule(f"inverse_sigmoid(k={k:g})", eps)


# --------------------------------------------------------------------------------------------
# Learning-rate schedules: the same Schedule objects, mapping the global step to a learning rate
# (``fit(..., lr_schedule=...)``). They are not probabilities, so no [0, 1] check.
# --------------------------------------------------------------------------------------------

def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def noam(d_model: int, warmup: int = 4000, factor: float = 1.0) -> Schedule:
    """Vaswani et al. 2017, eq. (3): lr = factor * d_model^-0.5 * min(s^-0.5, s * warmup^-1.5)
    with s = step + 1. Rises linearly for ``warmup`` steps, then decays as 1 / sqrt(s)."""
    d_model, warmup = _positive_int("d_model", d_model), _positive_int("warmup", warmup)
    factor = _number("factor", factor)
    return Schedule(f"noam(d_model={d_model}, warmup={warmup}, factor={factor:g})",
                    lambda i: factor * d_model ** -0.5 * min((i + 1) ** -0.5,
                                                             (i + 1) * warmup ** -1.5))


def warmup_inverse_sqrt(peak_lr: float, warmup: int) -> Schedule:
    """The same shape as ``noam``, named by its peak: lr rises linearly to ``peak_lr`` at step
    ``warmup``, then decays as ``peak_lr * sqrt(warmup / s)``. noam(d, w) peaks at 1/sqrt(d w)."""
    peak_lr, warmup = _number("peak_lr", peak_lr), _positive_int("warmup", warmup)
    if not peak_lr > 0:
        raise ValueError(f"peak_lr must be > 0, got {peak_lr!r}")
    return Schedule(f"warmup_inverse_sqrt(peak_lr={peak_lr:g}, warmup={warmup})",
                    lambda i: peak_lr * min((i + 1) / warmup, math.sqrt(warmup / (i + 1))))
