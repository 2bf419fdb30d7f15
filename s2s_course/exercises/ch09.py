"""Checkers for chapter 9 (multi-head attention).

- ``check_grouped_query_attention(fn)``: ``fn(q (B, h, T, d_k), k (B, g, S, d_k), v (B, g, S, d_v),
  mask (B or 1, 1, T or 1, S) bool or None) -> output (B, h, T, d_v)``: grouped-query attention
  (Ainslie et al. 2023). g key/value heads are shared by h query heads (h divisible by g): query
  heads ``i * h // g ... (i + 1) * h // g - 1`` form group i and all use key/value head i. g = h is
  ordinary multi-head attention, g = 1 is multi-query attention (Shazeer 2019).

The reference repeats each key/value head h // g times (``repeat_interleave``) and calls the
package's ``scaled_dot_product_attention``, so the exercise and the chapter's code cannot drift
apart. Besides comparing values, the checker recognises the usual mistakes (groups tiled with
``repeat``, keys and values swapped, no or the wrong scale, softmax over the queries, an inverted
mask, NaN on a query with no key) and names them.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_close, expect_dtype,
                                       expect_grad, expect_inputs_unchanged, expect_shape, expect_type)
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


def _nan(q, k, v, mask):
    return torch.full((*q.shape[:-1], v.size(-1)), float("nan"), dtype=q.dtype)


_MISTAKES: dict[str, Callable] = {
    "the key/value heads were tiled with .repeat (query head i used key/value head i % g): "
    "consecutive query heads form a group, so head i must use key/value head i // (h // g); "
    "use repeat_interleave(h // g, dim=1)":
        lambda q, k, v, m: _attend(q, k, v, m, tile=True),
    "keys and values are swapped: the scores compare the queries with k, the output averages v":
        lambda q, k, v, m: reference_grouped_query_attention(q, v, k, m) if k.shape == v.shape
        else _nan(q, k, v, m),
    "the scores are not scaled: divide q k^T by sqrt(d_k) before the softmax":
        lambda q, k, v, m: _attend(q, k, v, m, scale=1.0),
    "the scores were divided by d_k: the scale is 1 / sqrt(d_k)":
        lambda q, k, v, m: _attend(q, k, v, m, scale=1.0 / q.size(-1)),
    "the softmax runs over the queries (dim=-2): each query's weights over the keys (dim=-1) must sum to 1":
        lambda q, k, v, m: _attend(q, k, v, m, dim=-2) if m is None else _nan(q, k, v, m),
    "the mask is inverted: True means this query MAY attend to this key (as in "
    "F.scaled_dot_product_attention); fill the scores with -inf where the mask is False":
        lambda q, k, v, m: _attend(q, k, v, ~m) if m is not None else _nan(q, k, v, m),
}


def _known_mistakes() -> Check:
    def fn(t: Trial) -> str | None:
        got = t.got
        if not isinstance(got, torch.Tensor) or got.shape != t.expected.shape:
            return None
        close = lambda a, b: bool(torch.allclose(a.detach().double(), b.double(), atol=1e-5, rtol=1e-4))  # noqa: E731
        if close(got.nan_to_num(12345.0), t.expected):
            return None
        for message, mistake in _MISTAKES.items():
            args, kwargs = t.case.fresh()
            with torch.no_grad():
                wrong = mistake(*args, **kwargs)
            if wrong.shape == got.shape and close(got.nan_to_num(0.0), wrong):
                return message
        return None  # not a mistake we know: the "values" check says where it differs

    return Check("common mistakes", fn)


def _empty_rows_are_zero() -> Check:
    """A query whose mask row is all False must get an output of exact zeros, not NaN."""
    def fn(t: Trial) -> str | None:
        args, _ = t.case.fresh()
        mask = args[3] if len(args) > 3 else None
        if mask is None or not isinstance(t.got, torch.Tensor) or t.got.shape != t.expected.shape:
            return None
        empty = ~mask.any(dim=-1, keepdim=True)                           # (B?, 1, T?, 1)
        empty = empty.expand(*t.got.shape[:-1], 1).expand_as(t.got)
        bad = empty & (t.got.detach().isnan() | (t.got.detach() != 0))
        if not bool(bad.any()):
            return None
        b, i, row, _ = bad.nonzero()[0].tolist()
        value = t.got[b, i, row].detach()
        what = "NaN" if bool(value.isnan().any()) else f"{value.abs().max().item():.4g} (not 0)"
        return (f"query {row} of batch {b} has no key it may attend to (its mask row is all False); "
                f"head {i} returned {what}. softmax over only -inf gives NaN: set the weights of such "
                f"a row to 0 (e.g. weights.masked_fill(~mask, 0.0) after the softmax)")

    return Check("query with no allowed key", fn)


def _cases() -> list[Case]:
    g = torch.Generator().manual_seed(9)
    r = lambda *shape, dtype=torch.float32: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    pad = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, None, :]   # (2, 1, 1, 5)
    causal = torch.ones(4, 5, dtype=torch.bool).tril(diagonal=1)[None, None]           # (1, 1, 4, 5)
    empty = torch.ones(2, 1, 3, 4, dtype=torch.bool)
    empty[1, 0, 2] = False                                                # query 2 of batch 1: no key
    empty[0, 0, :, 3] = False
    return [
        Case("h=4 query heads, g=2 key/value heads, no mask", (r(2, 4, 3, 8), r(2, 2, 5, 8), r(2, 2, 5, 8), None)),
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
        _empty_rows_are_zero(),
        _known_mistakes(),
        expect_close(),
        expect_grad(wrt=["q", "k", "v"]),
    ])
