"""Checkers for chapter 11 (the cost of attention).

- ``check_recurrent_linear_attention(fn)``: ``fn(q (B, h, T, d), k (B, h, T, d), v (B, h, T, d_v),
  key_padding_mask (B, T) bool or None) -> (B, h, T, d_v)``: causal linear attention
  (Katharopoulos et al. 2020) written as a recurrence over positions with a running state
  S_t = S_{t-1} + phi(k_t) v_t^T (d, d_v) and z_t = z_{t-1} + phi(k_t) (d,), phi(x) = elu(x) + 1,
  out_t = phi(q_t)^T S_t / phi(q_t)^T z_t. A padded key (mask False) adds nothing to the state; a
  query that has seen no real key yet (z_t = 0) gets zeros, not NaN.

The reference is the package's ``linear_attention(q, k, v, causal=True, key_padding_mask=...)``
(cumulative sums, shown in the chapter), so the exercise and the chapter cannot drift apart. The
checker names the usual slips: the state read before the current key is added, no causality, no
normaliser, another feature map (exp, relu, none), keys and values swapped, the mask ignored,
inverted or turned into lengths, NaN for a query with no key. The cases include leading padding,
padding between real keys, a sentence of padding only, a batch whose longest sentence is not first,
d_v != d and float64.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from s2s_course.efficient_attention import linear_attention
from s2s_course.exercises.core import (Case, check_function, expect_close, expect_dtype, expect_grad,
                                       expect_inputs_unchanged, expect_known_mistakes, expect_shape,
                                       expect_type, expect_zero_rows)

__all__ = ["check_recurrent_linear_attention", "reference_recurrent_linear_attention"]


def reference_recurrent_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                         key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Causal linear attention, (B, h, T, d_v); the chapter's cumulative-sum version."""
    return linear_attention(q, k, v, causal=True, key_padding_mask=key_padding_mask)


# -----------------------------------------------------------------------------
# the usual mistakes, each computed from the case's inputs (cumulative sums, same shapes)

def _variant(q, k, v, mask, phi=lambda x: F.elu(x) + 1, causal=True, strict=False,
             normalise=True, invert=False):
    fq, fk = phi(q), phi(k)                                               # (B, h, T, d)
    if mask is not None:
        keep = (~mask if invert else mask)[:, None, :, None].to(fk.dtype)  # (B, 1, T, 1)
        fk = fk * keep
    if causal:
        S = torch.cumsum(fk.unsqueeze(-1) * v.unsqueeze(-2), dim=-3)      # (B, h, T, d, d_v)
        z = torch.cumsum(fk, dim=-2)                                      # (B, h, T, d)
        if strict:                                                        # state before key t
            S, z = S - fk.unsqueeze(-1) * v.unsqueeze(-2), z - fk
        num = (fq.unsqueeze(-2) @ S).squeeze(-2)
    else:
        S, z = fk.transpose(-2, -1) @ v, fk.sum(-2, keepdim=True)
        num = fq @ S
    if not normalise:
        return num
    den = (fq * z).sum(-1, keepdim=True)
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)),
                       torch.zeros_like(num))


def _as_lengths(mask: torch.Tensor) -> torch.Tensor:
    """(B, T): the first mask.sum(1) positions True, as if the padding were always at the end."""
    return torch.arange(mask.size(1))[None, :] < mask.sum(1, keepdim=True)


_MISTAKES: dict[str, Callable] = {
    "out_t reads the state before key t was added (S_{t-1}, z_{t-1}): position t must see its own "
    "key and value; update S and z first, then read them with q_t":
        lambda q, k, v, m: _variant(q, k, v, m, strict=True),
    "every query sees every key (sums over all positions): causal means S_t and z_t only hold "
    "positions j <= t":
        lambda q, k, v, m: _variant(q, k, v, m, causal=False),
    "there is no normaliser: divide phi(q_t)^T S_t by phi(q_t)^T z_t, the sum of the weights":
        lambda q, k, v, m: _variant(q, k, v, m, normalise=False),
    "phi is exp: the chapter's (and Katharopoulos et al.'s) feature map is phi(x) = elu(x) + 1":
        lambda q, k, v, m: _variant(q, k, v, m, phi=torch.exp),
    "phi is relu: use phi(x) = elu(x) + 1 (F.elu(x) + 1), which is never 0":
        lambda q, k, v, m: _variant(q, k, v, m, phi=torch.relu),
    "no feature map: apply phi(x) = elu(x) + 1 to q and k before using them":
        lambda q, k, v, m: _variant(q, k, v, m, phi=lambda x: x),
    "keys and values are swapped: the state adds phi(k_t) v_t^T, the keys go through phi":
        lambda q, k, v, m: _variant(q, v, k, m) if k.shape == v.shape else None,
    "the padding mask is ignored: a padded key (mask False) must add nothing to S and z":
        lambda q, k, v, m: _variant(q, k, v, None) if m is not None else None,
    "the mask is inverted: True marks a REAL key (as in key_padding_mask elsewhere in the course)":
        lambda q, k, v, m: _variant(q, k, v, m, invert=True) if m is not None else None,
    "the mask was turned into lengths (the first mask.sum(1) keys taken as real): padding can sit "
    "anywhere, e.g. before the first real key; use the mask itself, position by position":
        lambda q, k, v, m: _variant(q, k, v, _as_lengths(m)) if m is not None else None,
}


def _no_key_yet(case: Case) -> torch.Tensor | None:
    """(B, 1, T, 1): True for a position that has seen no real key yet (keys 0..t all padding)."""
    mask = case.args[3] if len(case.args) > 3 else None
    if mask is None:
        return None
    seen = torch.cumsum(mask.long(), dim=1) > 0                           # (B, T): a real key so far
    return (~seen)[:, None, :, None]


def _explain_no_key(index: tuple[int, ...], found: str) -> str:
    b, i, row = index[0], index[1], index[2]
    start = (f"position {row} of batch {b} has seen no real key yet (keys 0..{row} are all padding), "
             f"so z_t = 0; head {i} returned {found}. ")
    if found == "NaN":
        return start + "0 / 0 is NaN: return 0 where phi(q_t)^T z_t == 0 (e.g. torch.where(den > 0, num / den, 0))"
    return start + ("A padded key was added to the state: multiply phi(k_t) by the mask position by "
                    "position, so that S and z stay 0 until the first real key")


def _cases() -> list[Case]:
    g = torch.Generator().manual_seed(11)
    r = lambda *shape, dtype=torch.float32: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    trailing = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])                    # (2, 6)
    leading = torch.tensor([[False, False, True, True, True], [True, False, True, False, True]])
    unsorted = torch.tensor([[True, True, False, False, False, False], [False] * 6,
                             [True, True, False, True, True, True]])                 # (3, 6)
    d64 = torch.float64
    return [
        Case("B=2, h=2, T=5, d=4, no mask", (r(2, 2, 5, 4), r(2, 2, 5, 4), r(2, 2, 5, 4), None)),
        Case("trailing padding (B, T), d_v=3 != d=4", (r(2, 2, 6, 4), r(2, 2, 6, 4), r(2, 2, 6, 3), trailing)),
        # the longest sentence is not first, one is padding only, one has padding between real keys
        Case("3 sentences: 2 real keys, none, and 5 with a padded key inside; d=3, d_v=5",
             (r(3, 2, 6, 3), r(3, 2, 6, 3), r(3, 2, 6, 5), unsorted)),
        Case("float64, leading padding: positions that have seen no real key",
             (r(2, 3, 5, 4, dtype=d64), r(2, 3, 5, 4, dtype=d64), r(2, 3, 5, 4, dtype=d64), leading)),
        Case("one position (T=1)", (r(1, 1, 1, 3), r(1, 1, 1, 3), r(1, 1, 1, 2), None)),
    ]


def check_recurrent_linear_attention(fn: Callable) -> bool:
    """Check ``fn(q, k, v, key_padding_mask) -> (B, h, T, d_v)``, causal linear attention."""
    return check_function(fn, reference_recurrent_linear_attention, _cases(), checks=[
        expect_type(),
        expect_shape(hint="one output per query: (B, h, T, d_v), d_v = v.size(-1)"),
        expect_dtype(hint="keep the inputs' dtype: create the state with q.new_zeros(...), not "
                          "torch.zeros(...) with the default float32"),
        expect_inputs_unchanged(hint="add to the state with S = S + ..., and build the outputs in "
                                     "a list (torch.stack), instead of writing into q, k or v"),
        expect_zero_rows(_no_key_yet, _explain_no_key, "query with no key so far"),
        expect_known_mistakes(_MISTAKES, nan_as=0.0),
        expect_close(),
        expect_grad(wrt=["q", "k", "v"]),
    ])
