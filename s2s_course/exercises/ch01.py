"""Checkers for chapter 1 (sequences, tokens and batches): masks, padding and token budgets.

    from s2s_course.exercises import check_lengths_to_mask, check_pad_sequences, check_token_batches
    check_lengths_to_mask(my_lengths_to_mask)   # (B,) lengths [, max_len] -> (B, T) bool
    check_pad_sequences(my_pad_sequences)       # list of 1-D tensors [, pad_idx] -> (padded, lengths)
    check_token_batches(my_token_batches)       # list of lengths, max_tokens -> list of index lists

The first two compare the learner's function with the package's (``s2s_course.data.batching``) on
named edge cases: sequences of length 1 or 0, a batch whose sequences all have the same length, a
``max_len`` larger than the longest sequence, a batch of one, a batch whose longest sequence is not
the first, a padding id other than 0, and a real token equal to the padding id. When a function is
right on a batch sorted longest-first and wrong on the same batch in another order, the report
says so. The third checks properties of the batches (every index once, within the budget, little
padding), since many different batchings are right.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from s2s_course.data.batching import TokenBatchSampler, lengths_to_mask, pad_sequences
from s2s_course.exercises.core import (Case, Check, ExerciseFailed, Trial, check_function, expect_dtype,
                                       expect_equal, expect_inputs_unchanged, expect_shape, expect_type,
                                       run_checks)

__all__ = ["check_lengths_to_mask", "check_pad_sequences", "check_token_batches",
           "reference_token_batches"]


def _long(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def _same(a: Any, b: Any) -> bool:
    """Tensors, or tuples of tensors, equal in shape, dtype and values."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and a.dtype == b.dtype and torch.equal(a, b))


def _check_with_order_diagnosis(fn: Callable, reference: Callable, cases: Sequence[Case],
                                checks: list[Check],
                                sort_longest_first: Callable[[Case], tuple[tuple, dict] | None],
                                advice: str) -> bool:
    """``check_function``, and when it fails on a batch that is not sorted longest-first, also try
    the same batch sorted longest-first: if the learner is right there, the report says that the
    function assumes sorted input (a slip that a test set sorted by length never shows)."""
    try:
        return check_function(fn, reference, cases, checks)
    except ExerciseFailed as failure:
        message = str(failure)
        failed = run_checks(fn, reference, cases, checks)[-1]  # which case failed
        case = next((c for c in cases if c.name == failed.case), None)
        sorted_inputs = sort_longest_first(case) if case is not None and not failed.passed else None
        if sorted_inputs is not None:
            args, kwargs = sorted_inputs
            try:
                right_when_sorted = _same(fn(*args, **kwargs), reference(*args, **kwargs))
            except Exception:
                right_when_sorted = False
            if right_when_sorted:
                message += ("\n  diagnosis: your function gives the right answer when the same batch is "
                            f"sorted longest-first, so it assumes that order; {advice}")
        raise ExerciseFailed(message) from failure.__cause__


# -----------------------------------------------------------------------------
# lengths_to_mask

MASK_CASES = [
    Case("basic: lengths [3, 1, 2]", (_long([3, 1, 2]),)),
    Case("all length 1: lengths [1, 1, 1, 1]", (_long([1, 1, 1, 1]),)),
    Case("all the same length: lengths [4, 4, 4]", (_long([4, 4, 4]),)),
    Case("max_len larger than the longest: lengths [2, 5, 1], max_len=7", (_long([2, 5, 1]),),
         {"max_len": 7}),
    Case("batch of one: lengths [6]", (_long([6]),)),
    Case("longest last: lengths [1, 2, 4]", (_long([1, 2, 4]),)),
    Case("an empty sequence: lengths [0, 3, 2]", (_long([0, 3, 2]),)),
]


def _sorted_lengths(case: Case) -> tuple[tuple, dict] | None:
    lengths = case.args[0]
    if bool((lengths[:-1] >= lengths[1:]).all()):
        return None  # already longest-first: nothing to compare with
    return (lengths.sort(descending=True).values.clone(),), dict(case.kwargs)


def check_lengths_to_mask(fn: Callable) -> bool:
    """``fn(lengths, max_len=None)`` must return the (B, T) bool mask ``mask[b, t] = t < lengths[b]``,
    with ``T = max_len`` if given, else ``max(lengths)``; a length-0 row is all False."""
    checks = [
        expect_type(),
        expect_shape(hint="T is max_len when it is given, otherwise the longest length max(lengths) "
                          "(not lengths[0]: the batch need not be sorted); B is len(lengths)"),
        expect_dtype(hint="compare positions with lengths (`<`) to get a bool tensor; do not convert it to "
                          "int or float"),
        expect_equal(hint="mask[b, t] is True exactly when t < lengths[b] (positions count from 0; a "
                          "sequence of length 0 has a row of False)"),
        expect_inputs_unchanged(),
    ]
    return _check_with_order_diagnosis(fn, lengths_to_mask, MASK_CASES, checks, _sorted_lengths,
                                       "T = max(lengths), the longest, wherever it is in the batch")


# -----------------------------------------------------------------------------
# pad_sequences

def _seqs(*rows: list[int], dtype: torch.dtype = torch.long) -> list[torch.Tensor]:
    return [torch.tensor(row, dtype=dtype) for row in rows]


PAD_CASES = [
    Case("basic", (_seqs([5, 6, 7], [8], [9, 10]),)),
    Case("all length 1", (_seqs([4], [5], [6]),)),
    Case("all the same length", (_seqs([4, 5, 6], [7, 8, 9]),)),
    Case("pad_idx=9", (_seqs([4, 5], [6, 7, 8, 1], [2]),), {"pad_idx": 9}),
    Case("batch of one", (_seqs([4, 5, 6, 7]),)),
    Case("longest last", (_seqs([4], [5, 6], [7, 8, 9]),)),
    Case("a real token equal to pad_idx=0", (_seqs([5, 0, 7], [0], [9, 0]),)),
    Case("int32 ids", (_seqs([4, 5], [6, 7, 8], dtype=torch.int32),)),
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


def _lengths_not_from_padding() -> Check:
    """Names the slip of counting non-pad tokens, which a batch without pad-valued tokens hides."""
    def fn(t: Trial) -> str | None:
        got, expected = t.got[1], t.expected[1]
        if torch.equal(got.to(expected.dtype), expected):
            return None
        pad_idx = t.case.kwargs.get("pad_idx", 0)
        counted = (t.expected[0] != pad_idx).sum(dim=1)  # (B,) non-pad tokens of the right answer
        if torch.equal(got.to(counted.dtype), counted):
            return (f"lengths {got.tolist()} count the tokens that differ from pad_idx = {pad_idx}, but "
                    f"a real token can have the id {pad_idx} too (expected {expected.tolist()}): take "
                    f"len(seq) of each input sequence, not a count over the padded tensor")
        return None

    return Check("lengths not derived from padding", fn)


def _lengths_dtype_hint() -> str:
    return "lengths is a LongTensor (int64), e.g. torch.tensor([len(s) for s in seqs])"


def _sorted_seqs(case: Case) -> tuple[tuple, dict] | None:
    seqs = case.args[0]
    sizes = [len(s) for s in seqs]
    if sizes == sorted(sizes, reverse=True):
        return None
    order = sorted(range(len(seqs)), key=lambda i: -sizes[i])
    return ([seqs[i].clone() for i in order],), dict(case.kwargs)


def check_pad_sequences(fn: Callable) -> bool:
    """``fn(seqs, pad_idx=0)`` must return ``(padded, lengths)``: padded (B, T) with each sequence
    left-aligned and ``pad_idx`` after it (T = the longest length, dtype of the sequences), and
    lengths (B,) int64."""
    checks = [
        _returns_pair(),
        expect_type(item=0),
        expect_type(item=1, hint=_lengths_dtype_hint()),
        expect_shape(item=0, hint="padded is (B, T): one row per sequence, T = the longest sequence "
                                  "(wherever it is in the list)"),
        expect_dtype(item=0, hint="padded keeps the dtype of the sequences: seqs[0].new_full(...) or "
                                  "torch.full(..., dtype=seqs[0].dtype)"),
        expect_equal(item=0, hint="each row starts with its sequence (left-aligned) and is filled up with "
                                  "pad_idx, the argument, not always 0"),
        expect_shape(item=1, hint="lengths has one entry per sequence: shape (B,)"),
        expect_dtype(item=1, hint=_lengths_dtype_hint()),
        _lengths_not_from_padding(),
        expect_equal(item=1, hint="lengths[b] is the number of real tokens in sequence b"),
        _seqs_unchanged(),
    ]
    return _check_with_order_diagnosis(fn, pad_sequences, PAD_CASES, checks, _sorted_seqs,
                                       "T = max(len(s) for s in seqs), the longest, wherever it is")


# -----------------------------------------------------------------------------
# token_batches: batches by a budget of padded tokens

def reference_token_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """``TokenBatchSampler`` without shuffling, one bucket: indices sorted by length, then cut
    greedily so that each batch's padded size, len(batch) x its longest length, stays within
    ``max_tokens``; a sequence longer than ``max_tokens`` gets a batch of its own."""
    if len(lengths) == 0:
        return []
    sampler = TokenBatchSampler(list(lengths), list(lengths), max_tokens, shuffle=False,
                                bucket_size=len(lengths))
    return [list(batch) for batch in sampler]


def _token_lengths(seed: int, n: int, low: int, high: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, (n,), generator=g).tolist()


TOKEN_CASES = [
    Case("40 lengths in random order, max_tokens=64", (_token_lengths(0, 40, 1, 20), 64)),
    Case("lengths sorted longest-first, max_tokens=30", (sorted(_token_lengths(1, 25, 2, 12), reverse=True), 30)),
    Case("one sequence longer than max_tokens", ([3, 30, 5, 4, 2, 6, 5], 16)),
    Case("max_tokens smaller than every length", ([9, 7, 12, 8], 6)),
    Case("all the same length", ([5] * 10, 20)),
    Case("budget exactly filled: 4 x 6 = 24", ([6, 2, 6, 6, 3, 6], 24)),
    Case("one sequence", ([7], 10)),
    Case("empty input", ([], 10)),
]


def _as_index_lists(got: Any) -> list[list[int]] | None:
    if not isinstance(got, (list, tuple)):
        return None
    batches = []
    for batch in got:
        if not isinstance(batch, (list, tuple)):
            return None
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in batch):
            return None
        batches.append(list(batch))
    return batches


def _padded(lengths: Sequence[int], batches: list[list[int]]) -> tuple[int, int]:
    """(cells in the padded batches, of which padding)."""
    cells = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return cells, cells - sum(lengths[i] for b in batches for i in b)


def _token_checks() -> list[Check]:
    def kind(t: Trial) -> str | None:
        if _as_index_lists(t.got) is not None:
            return None
        inner = type(t.got[0]).__name__ if isinstance(t.got, (list, tuple)) and t.got else ""
        return (f"expected a list of batches, each a list of int indices, got {type(t.got).__name__}"
                + (f" of {inner}" if inner else "")
                + "; convert tensors with .tolist()")

    def coverage(t: Trial) -> str | None:
        lengths, max_tokens = t.case.args
        batches = _as_index_lists(t.got)
        seen: dict[int, int] = {}
        for k, batch in enumerate(batches):
            if not batch:
                return f"batch {k} is empty; return only batches that hold at least one index"
            for i in batch:
                if not 0 <= i < len(lengths):
                    return (f"batch {k} holds index {i}, but there are only {len(lengths)} sequences; "
                            f"return indices into lengths, not the lengths themselves")
                if i in seen:
                    return f"index {i} is in batch {seen[i]} and again in batch {k}: each index exactly once"
                seen[i] = k
        missing = [i for i in range(len(lengths)) if i not in seen]
        if missing:
            i = missing[0]
            why = (f"; sequence {i} (length {lengths[i]}) is longer than max_tokens = {max_tokens}: give it "
                   f"a batch of its own instead of dropping it" if lengths[i] > max_tokens else "")
            return f"{len(missing)} indices are in no batch, e.g. index {i}{why}"
        return None

    def budget(t: Trial) -> str | None:
        lengths, max_tokens = t.case.args
        for k, batch in enumerate(_as_index_lists(t.got)):
            if len(batch) == 1:
                continue  # a batch of one is allowed even when the sequence alone exceeds the budget
            longest = max(lengths[i] for i in batch)
            size = len(batch) * longest
            if size <= max_tokens:
                continue
            message = (f"batch {k} has {len(batch)} sequences, the longest of length {longest}: padded size "
                       f"{len(batch)} x {longest} = {size} > max_tokens = {max_tokens}")
            too_long = [i for i in batch if lengths[i] > max_tokens]
            if too_long:
                return (message + f"; sequence {too_long[0]} (length {lengths[too_long[0]]}) exceeds "
                        f"max_tokens by itself, so it must be alone in its batch")
            if all(k * lengths[batch[k - 1]] <= max_tokens for k in range(1, len(batch) + 1)):
                return (message + "; each step fits if the padded size is computed with the length of the "
                        "sequence just added: compute the longest length of the batch with the new "
                        "sequence included, the max over the whole batch")
            real = sum(lengths[i] for i in batch)
            if real <= max_tokens:
                return (message + f"; its real tokens sum to only {real}: the budget is for the PADDED "
                        f"batch, len(batch) x the longest length in it, not the sum of the lengths")
            return message + ("; close a batch before the sequence that would push len(batch) x its "
                              "longest length above max_tokens")
        return None

    def packing(t: Trial) -> str | None:
        got, want = len(t.got), len(t.expected)
        allowed = want + max(1, want // 4)
        if got <= allowed:
            return None
        return (f"{got} batches where {want} suffice (the reference packs the sorted sequences greedily): "
                f"keep adding sequences to a batch while its padded size stays <= max_tokens")

    def padding(t: Trial) -> str | None:
        lengths, _ = t.case.args
        got_cells, got_pad = _padded(lengths, _as_index_lists(t.got))
        want_cells, want_pad = _padded(lengths, t.expected)
        allowed = max(2 * want_pad, want_pad + sum(lengths) // 10)
        if got_pad <= allowed:
            return None
        in_order = [i for b in _as_index_lists(t.got) for i in b] == list(range(len(lengths)))
        return (f"{got_pad} of your {got_cells} padded cells are padding, against {want_pad} of {want_cells} "
                f"for the reference" + (" (your batches follow the input order)" if in_order else "")
                + ": sort the indices by length before cutting them into batches, so that each batch "
                  "holds similar lengths (the input is in no particular order)")

    def unchanged(t: Trial) -> str | None:
        if list(t.args[0]) != list(t.case.args[0]):
            return ("lengths was modified in place (e.g. lengths.sort()); sort the indices instead: "
                    "sorted(range(len(lengths)), key=lambda i: lengths[i])")
        return None

    return [Check("returns a list of index lists", kind), Check("does not modify its inputs", unchanged),
            Check("every index exactly once", coverage), Check("padded size within max_tokens", budget),
            Check("little padding", padding), Check("batches are full", packing)]


def check_token_batches(fn: Callable) -> bool:
    """``fn(lengths (list of int), max_tokens) -> list[list[int]]``: every index exactly once; each
    batch of two or more has ``len(batch) * max(its lengths) <= max_tokens`` (a sequence longer than
    ``max_tokens`` is alone in its batch); about as few batches and as little padding as
    ``reference_token_batches``; empty input, empty output."""
    return check_function(fn, reference_token_batches, TOKEN_CASES, _token_checks())
