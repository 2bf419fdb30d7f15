"""Checkers for chapter 9 (multi-head attention).

- ``check_grouped_query_attention(fn)``: ``fn(q (B, h, T, d_k), k (B, g, S, d_k), v (B, g, S, d_v),
  mask (B or 1, 1, T or 1, S) bool or None) -> output (B, h, T, d_v)``: grouped-query attention
  (Ainslie et al. 2023). g key/value heads are shared by h query heads (h divisible by g): query
  heads ``i * h // g ... (i + 1) * h // g - 1`` form group i and all use key/value head i. g = h is
  ordinary multi-head attention, g = 1 is multi-query attention (Shazeer 2019).

The reference repeats each key/value head h // g times (``repeat_interleave``) and calls the
package's ``scaled_dot_product_attention``, so the exercise and the chapter's code cannot drift
apart. Besides comparing values, the checker recognises the usual mistakes (groups tiled with
``repeat``, keys and values swapped, no scale or one of 1/d_k or 1/sqrt(d_v), softmax over the
queries, a mask inverted or ignored, NaN on a query with no key) and names them. The cases include
masks of three shapes, one whose longest sentence is not first, T > S, d_v != d_k and float64.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from s2s_course.exercises.core import (Case, check_function, expect_close, expect_dtype, expect_grad,
                                       expect_inputs_unchanged, expect_known_mistakes, expect_shape,
                                       expect_type, expect_zero_rows)
from s2s_course.self_attention import scaled_dot_product_attention

__all__ = ["check_grouped_query_attention", "reference_grouped_query_attention"]


def reference_grouped_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each of the g key/value heads serves h // g consecutive query heads; output (B, h, T, d_v)."""
    group = q.size(1) // k.size(1)
    k = k.repeat_interleave(group, dim=1)                                 # (B, h, S, d_k)
    v = v.repeat_interleave(group, dim=1)                                 # (B, h, S, d_v)
    return scaled_dot_product_attention(q, k, v, mask)[0]


# -----------------------------------------------------------------------------
# the usual mistakes, each computed from the case's inputs

def _attend(q, k, v, mask, scale=None, dim=-1, tile=False):
    group = q.size(1) // k.size(1)
    if tile:
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    else:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights.nan_to_num(0.0) @ v


_MISTAKES: dict[str, Callable] = {
    "the key/value heads were tiled with .repeat (query head i used key/value head i % g): "
    "consecutive query heads form a group, so head i must use key/value head i // (h // g); "
    "use repeat_interleave(h // g, dim=1)":
        lambda q, k, v, m: _attend(q, k, v, m, tile=True),
    "keys and values are swapped: the scores compare the queries with k, the output averages v":
        lambda q, k, v, m: reference_grouped_query_attention(q, v, k, m) if k.shape == v.shape else None,
    "the scores are not scaled: divide q k^T by sqrt(d_k) before the softmax":
        lambda q, k, v, m: _attend(q, k, v, m, scale=1.0),
    "the scores were divided by d_k: the scale is 1 / sqrt(d_k)":
        lambda q, k, v, m: _attend(q, k, v, m, scale=1.0 / q.size(-1)),
    "the scores were divided by sqrt(d_v), the size of the values: the scale is 1 / sqrt(d_k), "
    "d_k = q.size(-1), the size of the vectors in the dot product":
        lambda q, k, v, m: _attend(q, k, v, m, scale=1.0 / math.sqrt(v.size(-1)))
        if v.size(-1) != q.size(-1) else None,
    "the softmax runs over the queries (dim=-2): each query's weights over the keys (dim=-1) must sum to 1":
        lambda q, k, v, m: _attend(q, k, v, m, dim=-2) if m is None else None,
    "the mask is inverted: True means this query MAY attend to this key (as in "
    "F.scaled_dot_product_attention); fill the scores with -inf where the mask is False":
        lambda q, k, v, m: _attend(q, k, v, ~m) if m is not None else None,
    "every sentence got the first sentence's mask (mask[0]); a code that works only when the first "
    "sentence is the longest: broadcast the (B, 1, T or 1, S) mask, one row per sentence":
        lambda q, k, v, m: _attend(q, k, v, m[:1].expand_as(m))
        if m is not None and m.size(0) > 1 and not bool(m[0].all()) else None,
    "the mask was ignored: every query attended to every key; fill the scores with -inf where the "
    "mask is False (it is given, do not guess the padding from the keys)":
        lambda q, k, v, m: _attend(q, k, v, None) if m is not None else None,
}


def _rows_without_keys(case: Case) -> torch.Tensor | None:
    """(B or 1, 1, T or 1, 1): True for a query whose mask row is all False (it may attend to no key)."""
    mask = case.args[3] if len(case.args) > 3 else None
    return None if mask is None else ~mask.any(dim=-1, keepdim=True)


def _explain_empty_row(index: tuple[int, ...], found: str) -> str:
    b, i, row = index[0], index[1], index[2]
    start = (f"query {row} of batch {b} has no key it may attend to (its mask row is all False); "
             f"head {i} returned {found}. ")
    if found == "NaN":
        return start + ("softmax over only -inf gives NaN: set the weights of such a row to 0 "
                        "(e.g. weights.masked_fill(~mask, 0.0) after the softmax)")
    return start + ("Its weights must all be 0, so its output is 0: fill the scores with -inf (a large "
                    "negative number gives a uniform row) and set the weights to 0 after the softmax")


def _cases() -> list[Case]:
    g = torch.Generator().manual_seed(9)
    r = lambda *shape, dtype=torch.float32: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    pad = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, None, :]   # (2, 1, 1, 5)
    causal = torch.ones(4, 5, dtype=torch.bool).tril(diagonal=1)[None, None]           # (1, 1, 4, 5)
    empty = torch.ones(2, 1, 3, 4, dtype=torch.bool)
    empty[1, 0, 2] = False                                                # query 2 of batch 1: no key
    empty[0, 0, :, 3] = False
    unsorted = (torch.arange(4)[None, :] < torch.tensor([2, 3, 1])[:, None])[:, None, None, :]  # (3, 1, 1, 4)
    return [
        Case("h=4 query heads, g=2 key/value heads, no mask", (r(2, 4, 3, 8), r(2, 2, 5, 8), r(2, 2, 5, 8), None)),
        # the longest sentence is not first, none fills all S keys, and there are more queries than keys
        Case("h=6, g=2, 5 queries, 4 keys, padding mask with lengths 2, 3 and 1",
             (r(3, 6, 5, 4), r(3, 2, 4, 4), r(3, 2, 4, 4), unsorted)),
        Case("h=6, g=3, padding mask (B, 1, 1, S)", (r(2, 6, 4, 4), r(2, 3, 5, 4), r(2, 3, 5, 4), pad)),
        Case("multi-query: h=4, g=1, causal mask (1, 1, T, S)", (r(1, 4, 4, 6), r(1, 1, 5, 6), r(1, 1, 5, 6), causal)),
        Case("g = h = 2 (plain multi-head), d_v=3 != d_k=5", (r(2, 2, 3, 5), r(2, 2, 4, 5), r(2, 2, 4, 3), None)),
        Case("float64, h=4, g=2, a query with no allowed key",
             (r(2, 4, 3, 4, dtype=torch.float64), r(2, 2, 4, 4, dtype=torch.float64),
              r(2, 2, 4, 4, dtype=torch.float64), empty)),
    ]


def check_grouped_query_attention(fn: Callable) -> bool:
    """Check ``fn(q (B, h, T, d_k), k (B, g, S, d_k), v (B, g, S, d_v), mask) -> (B, h, T, d_v)``."""
    return check_function(fn, reference_grouped_query_attention, _cases(), checks=[
        expect_type(),
        expect_shape(hint="one output per query head: (B, h, T, d_v), with h = q.size(1), not g"),
        expect_dtype(hint="keep the inputs' dtype: do not build new tensors with a fixed float32 dtype"),
        expect_inputs_unchanged(),
        expect_zero_rows(_rows_without_keys, _explain_empty_row, "query with no allowed key"),
        expect_known_mistakes(_MISTAKES, nan_as=0.0),
        expect_close(),
        expect_grad(wrt=["q", "k", "v"]),
    ])
