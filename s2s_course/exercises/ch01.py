"""Checkers for chapter 1 (sequences, tokens and batches): masks and padding.

    from s2s_course.exercises import check_lengths_to_mask, check_pad_sequences
    check_lengths_to_mask(my_lengths_to_mask)   # (B,) lengths [, max_len] -> (B, T) bool
    check_pad_sequences(my_pad_sequences)       # list of 1-D tensors [, pad_idx] -> (padded, lengths)

Both compare the learner's function with the package's (``s2s_course.data.batching``) on named
edge cases: sequences of length 1, a batch whose sequences all have the same length, a ``max_len``
larger than the longest sequence, a batch of one, and a padding id other than 0.
"""
from __future__ import annotations

from typing import Callable

import torch

from s2s_course.data.batching import lengths_to_mask, pad_sequences
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_dtype, expect_equal,
                                       expect_inputs_unchanged, expect_shape, expect_type)

__all__ = ["check_lengths_to_mask", "check_pad_sequences"]


def _long(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# -----------------------------------------------------------------------------
# lengths_to_mask

MASK_CASES = [
    Case("basic: lengths [3, 1, 2]", (_long([3, 1, 2]),)),
    Case("all length 1: lengths [1, 1, 1, 1]", (_long([1, 1, 1, 1]),)),
    Case("all the same length: lengths [4, 4, 4]", (_long([4, 4, 4]),)),
    Case("max_len larger than the longest: lengths [2, 5, 1], max_len=7", (_long([2, 5, 1]),),
         {"max_len": 7}),
    Case("batch of one: lengths [6]", (_long([6]),)),
]


def check_lengths_to_mask(fn: Callable) -> bool:
    """``fn(lengths, max_len=None)`` must return the (B, T) bool mask ``mask[b, t] = t < lengths[b]``,
    with ``T = max_len`` if given, else ``max(lengths)``."""
    checks = [
        expect_type(),
        expect_shape(hint="T is max_len when it is given, otherwise the longest length; B is len(lengths)"),
        expect_dtype(hint="compare positions with lengths (`<`) to get a bool tensor; do not convert it to "
                          "int or float"),
        expect_equal(hint="mask[b, t] is True exactly when t < lengths[b] (positions count from 0)"),
        expect_inputs_unchanged(),
    ]
    return check_function(fn, lengths_to_mask, MASK_CASES, checks)


# -----------------------------------------------------------------------------
# pad_sequences

def _seqs(*rows: list[int]) -> list[torch.Tensor]:
    return [_long(row) for row in rows]


PAD_CASES = [
    Case("basic", (_seqs([5, 6, 7], [8], [9, 10]),)),
    Case("all length 1", (_seqs([4], [5], [6]),)),
    Case("all the same length", (_seqs([4, 5, 6], [7, 8, 9]),)),
    Case("pad_idx=9", (_seqs([4, 5], [6, 7, 8, 1], [2]),), {"pad_idx": 9}),
    Case("batch of one", (_seqs([4, 5, 6, 7]),)),
]


def _returns_pair() -> Check:
    def fn(t: Trial) -> str | None:
        if isinstance(t.got, (tuple, list)) and len(t.got) == 2:
            return None
        if isinstance(t.got, torch.Tensor):
            return "expected a pair (padded, lengths), got a single tensor: return the lengths as well"
        return f"expected a pair (padded, lengths), got {type(t.got).__name__}"

    return Check("returns (padded, lengths)", fn)


def _seqs_unchanged() -> Check:
    def fn(t: Trial) -> str | None:
        for i, (before, after) in enumerate(zip(t.case.args[0], t.args[0])):
            if not torch.equal(before, after):
                return f"seqs[{i}] was modified in place; copy it into the padded tensor instead"
        return None

    return Check("does not modify its inputs", fn)


def _lengths_dtype_hint() -> str:
    return "lengths is a LongTensor (int64), e.g. torch.tensor([len(s) for s in seqs])"


def check_pad_sequences(fn: Callable) -> bool:
    """``fn(seqs, pad_idx=0)`` must return ``(padded, lengths)``: padded (B, T) with each sequence
    left-aligned and ``pad_idx`` after it (T = the longest length), and lengths (B,) int64."""
    checks = [
        _returns_pair(),
        expect_type(item=0),
        expect_type(item=1, hint=_lengths_dtype_hint()),
        expect_shape(item=0, hint="padded is (B, T): one row per sequence, T = the longest sequence"),
        expect_dtype(item=0, hint="padded must keep the dtype of the sequences (int64 ids)"),
        expect_equal(item=0, hint="each row starts with its sequence (left-aligned) and is filled up with "
                                  "pad_idx, the argument, not always 0"),
        expect_shape(item=1, hint="lengths has one entry per sequence: shape (B,)"),
        expect_dtype(item=1, hint=_lengths_dtype_hint()),
        expect_equal(item=1, hint="lengths[b] is the number of real tokens in sequence b"),
        _seqs_unchanged(),
    ]
    return check_function(fn, pad_sequences, PAD_CASES, checks)
