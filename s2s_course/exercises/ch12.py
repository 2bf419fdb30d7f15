"""Checkers for chapter 12 (encoder-only and decoder-only models, sampling).

- ``check_repetition_penalty(fn)``: ``fn(logits (B, V) float, previous (B, T) long, penalty float)
  -> (B, V)``: the repetition penalty of CTRL (Keskar et al. 2019), as Hugging Face applies it.
  Every token id that occurs in row b of ``previous`` (once or many times: it is penalised once)
  has its logit in row b changed: a positive logit is divided by ``penalty``, a negative one is
  multiplied by it (both make the token less likely when penalty > 1; 0 stays 0). Other logits
  are unchanged; rows are independent; the inputs are not modified; the dtype is kept.

Besides comparing values, the checker recognises the usual mistakes (always dividing, the two
branches swapped, one penalty per occurrence or per run of adjacent repeats, every row's history
applied to all rows, the ids taken as positions, id 0 skipped as padding, subtracting the penalty)
and names them. No gradient is checked: the penalty is applied while decoding, under no_grad.
"""
from __future__ import annotations

from typing import Callable

import torch

from s2s_course.exercises.core import (Case, check_function, expect_close, expect_dtype,
                                       expect_inputs_unchanged, expect_known_mistakes, expect_shape,
                                       expect_type)

__all__ = ["check_repetition_penalty", "reference_repetition_penalty"]


def reference_repetition_penalty(logits: torch.Tensor, previous: torch.Tensor,
                                 penalty: float) -> torch.Tensor:
    """Penalise, in each row, the logits of the ids in that row of ``previous``."""
    if previous.size(1) == 0:
        return logits.clone()
    score = logits.gather(1, previous)                                   # (B, T): duplicates agree
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, previous, score)                             # out of place


# -----------------------------------------------------------------------------
# the usual mistakes

def _seen(logits: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    seen = torch.zeros(logits.shape, dtype=torch.bool)
    for b in range(previous.size(0)):
        seen[b, previous[b]] = True
    return seen


def _apply(logits, where, fn):
    return torch.where(where, fn(logits), logits)


def _per_occurrence(logits, previous, penalty):
    out = logits.clone()
    for b in range(previous.size(0)):
        for token in previous[b].tolist():
            x = out[b, token]
            out[b, token] = x * penalty if x < 0 else x / penalty
    return out


def _all_rows(logits, previous, penalty):
    seen = _seen(logits, previous).any(dim=0, keepdim=True).expand_as(logits)
    return _apply(logits, seen, lambda x: torch.where(x < 0, x * penalty, x / penalty))


def _positions(logits, previous, penalty):
    T = min(previous.size(1), logits.size(1))
    seen = torch.zeros(logits.shape, dtype=torch.bool)
    seen[:, :T] = True
    return _apply(logits, seen, lambda x: torch.where(x < 0, x * penalty, x / penalty))


def _adjacent_once(logits, previous, penalty):
    """Repeats removed only where they are adjacent (unique_consecutive), as if the history were sorted."""
    out = logits.clone()
    for b in range(previous.size(0)):
        for token in torch.unique_consecutive(previous[b]).tolist():
            x = out[b, token]
            out[b, token] = x * penalty if x < 0 else x / penalty
    return out


def _skip_zero(logits, previous, penalty):
    seen = _seen(logits, previous)
    seen[:, 0] = False
    return _apply(logits, seen, lambda x: torch.where(x < 0, x * penalty, x / penalty))


_MISTAKES: dict[str, Callable] = {
    "every penalised logit was divided by the penalty: a negative logit divided by penalty > 1 moves "
    "towards 0 and the token becomes MORE likely. Multiply negative logits by the penalty, divide "
    "positive ones":
        lambda l, p, r: _apply(l, _seen(l, p), lambda x: x / r),
    "the two branches are swapped: divide a POSITIVE logit by the penalty and multiply a NEGATIVE one":
        lambda l, p, r: _apply(l, _seen(l, p), lambda x: torch.where(x < 0, x / r, x * r)),
    "a token that occurs several times in the history was penalised once per occurrence: penalise "
    "each distinct token once (gather/scatter, or a boolean 'seen' mask)":
        _per_occurrence,
    "repeats were removed only where they are adjacent (unique_consecutive, or comparing with the "
    "previous token): the history is not sorted, a token can come back later; penalise each distinct "
    "token once (gather/scatter, or a boolean 'seen' mask)":
        _adjacent_once,
    "token id 0 was skipped as if it were padding: every id in previous is a real token, 0 included":
        _skip_zero,
    "every row's history was applied to every row: row b may only penalise the tokens in previous[b]":
        _all_rows,
    "the first T logits were penalised, as if previous held positions: previous holds token ids, "
    "index the vocabulary with them (logits.gather(1, previous))":
        _positions,
    "the penalty was subtracted; CTRL's penalty divides positive logits and multiplies negative ones":
        lambda l, p, r: _apply(l, _seen(l, p), lambda x: x - r),
}


def _cases() -> list[Case]:
    g = torch.Generator().manual_seed(12)
    logits = torch.randn(3, 10, generator=g) * 2
    previous = torch.tensor([[1, 4, 4, 7], [0, 0, 0, 0], [9, 2, 5, 2]])
    return [
        Case("by hand: one row, logits 2, -1, 0.5, -3, 1, history [0, 1], penalty 2",
             (torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0]]), torch.tensor([[0, 1]]), 2.0)),
        Case("a token three times in the history", (torch.tensor([[3.0, -2.0, 1.0, 0.5]]),
                                                    torch.tensor([[0, 0, 1, 0]]), 1.5)),
        Case("three rows with different histories", (logits, previous, 1.3)),
        Case("penalty < 1 (encourage repeats)", (logits, previous, 0.5)),
        Case("penalty 1 changes nothing", (logits, previous, 1.0)),
        Case("empty history (T = 0)", (logits, torch.zeros(3, 0, dtype=torch.long), 2.0)),
        Case("a zero logit and the last vocabulary id", (torch.tensor([[0.0, 1.0, -1.0, 2.0]]),
                                                         torch.tensor([[0, 3]]), 4.0)),
        Case("float64", (logits.double(), previous[:, :2], 1.2)),
    ]


def check_repetition_penalty(fn: Callable) -> bool:
    """Check ``fn(logits (B, V), previous (B, T) long, penalty) -> (B, V)``."""
    return check_function(fn, reference_repetition_penalty, _cases(), checks=[
        expect_type(),
        expect_shape(hint="return the logits of the whole vocabulary, (B, V), not only the penalised ones"),
        expect_dtype(hint="keep the logits' dtype (build new tensors with logits.new_... or torch.where)"),
        expect_inputs_unchanged(hint="logits.scatter (no underscore) or logits.clone() first: sample_next "
                                     "and the caller still need the original logits"),
        expect_known_mistakes(_MISTAKES, atol=1e-6, rtol=1e-5),
        expect_close(atol=1e-6, rtol=1e-6),
    ])
