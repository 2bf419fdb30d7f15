"""Checkers for chapter 8 (self-attention).

- ``check_distance_bias_attention(fn)``: ``fn(q (B, T, d_k), k (B, S, d_k), v (B, S, d_v),
  lengths (B,) int, slope float) -> (output (B, T, d_v), weights (B, T, S))``: scaled dot-product
  attention with a *linear distance penalty* added to the scores (the idea of ALiBi, Press et al.
  2022, here in its bidirectional form) and a key padding mask built from the lengths::

      scores[b, t, s] = q[b, t] . k[b, s] / sqrt(d_k)  -  slope * |t - s|
      weights = softmax over s of the scores, keys s >= lengths[b] excluded (weight exactly 0)
      output  = weights @ v

  A query whose sentence has no real key at all (length 0) gets zero weights and a zero output,
  not NaN. Query and key positions both count from 0.

The reference is written out below and is tested against ``F.scaled_dot_product_attention`` with
a float mask (tests/test_exercises_ch08.py). Besides comparing values, the checker recognises the
usual mistakes (softmax over the query axis, padding that gets weight, a forgotten 1/sqrt(d_k) or
1/sqrt(d_v) in its place, a bias with the wrong sign or a signed distance, the bias scaled along with
the dot product, the queries masked instead of the keys, every sentence cut at lengths[0], k and v
swapped) and names them. The cases include lengths that are not sorted longest first, T > S, random
(not zero) vectors at the padded keys and float64 inputs.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from s2s_course.exercises.core import (Case, check_function, expect_close, expect_dtype, expect_grad,
                                       expect_inputs_unchanged, expect_known_mistakes, expect_masked_zero,
                                       expect_shape, expect_type, expect_zero_rows)
from s2s_course.self_attention import padding_mask

__all__ = ["check_distance_bias_attention", "reference_distance_bias_attention", "distance_matrix"]


def distance_matrix(T: int, S: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """(T, S): |t - s| for query position t and key position s, both counted from 0."""
    t = torch.arange(T, device=device).unsqueeze(1)
    s = torch.arange(S, device=device).unsqueeze(0)
    return (t - s).abs().to(dtype)


def _attend(q, k, v, lengths, slope, *, scale=True, sign=-1.0, signed=False, bias_scaled=False,
            softmax_dim=-1, mask_keys=True, mask_queries=False, scale_by_d_v=False, first_length=False):
    """The reference with switches; each non-default switch is one typical mistake."""
    T, S = q.size(-2), k.size(-2)
    distance = distance_matrix(T, S, q.dtype, q.device)
    if signed:
        distance = torch.arange(T).unsqueeze(1).to(q.dtype) - torch.arange(S).unsqueeze(0).to(q.dtype)
    d = v.size(-1) if scale_by_d_v else q.size(-1)
    factor = 1.0 / math.sqrt(d) if scale else 1.0
    bias = sign * slope * distance                                         # (T, S)
    if bias_scaled:
        scores = (q @ k.transpose(-2, -1) + bias) * factor
    else:
        scores = q @ k.transpose(-2, -1) * factor + bias                   # (B, T, S)
    mask = torch.ones(q.size(0), T, S, dtype=torch.bool, device=q.device)
    if first_length:                  # keys cut at lengths[0], as if the batch were sorted longest first
        lengths = lengths.clamp(max=int(lengths[0]))
    if mask_keys:
        mask = mask & padding_mask(lengths, S).to(q.device).unsqueeze(1)   # (B, 1, S): real keys
    if mask_queries:
        mask = mask & padding_mask(lengths.clamp(max=T), T).to(q.device).unsqueeze(2)
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=softmax_dim)
    weights = weights.masked_fill(~mask, 0.0)                              # an empty row: zeros
    return weights @ v, weights


def reference_distance_bias_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                      lengths: torch.Tensor, slope: float
                                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d_k) - slope |t - s|, padding keys excluded) v; returns (output, weights)."""
    return _attend(q, k, v, lengths, slope)


_MISTAKES = {
    "softmax over the query axis: each query's weights must sum to 1 over the keys, "
    "softmax(..., dim=-1), not dim=-2 (or dim=1)":
        lambda q, k, v, n, m: _attend(q, k, v, n, m, softmax_dim=-2),
    "forgot the 1/sqrt(d_k): divide q k^T by sqrt(d_k) before adding the bias":
        lambda q, k, v, n, m: _attend(q, k, v, n, m, scale=False),
    "the scores were divided by sqrt(d_v), the size of the values: the scale is 1/sqrt(d_k), "
    "d_k = q.size(-1), the size of the vectors in the dot product":
        lambda q, k, v, n, m: _attend(q, k, v, n, m, scale_by_d_v=True) if v.size(-1) != q.size(-1) else None,
    "the bias has the wrong sign: far keys must be penalised, scores - slope * |t - s|, "
    "not + slope * |t - s|":
        lambda q, k, v, n, m: _attend(q, k, v, n, m, sign=1.0),
    "a signed distance (t - s) instead of the absolute distance |t - s|: a key 3 positions to the "
    "left must be penalised as much as one 3 positions to the right":
        lambda q, k, v, n, m: _attend(q, k, v, n, m, signed=True),
    "a signed distance (t - s) with the wrong sign: use the absolute distance |t - s|":
        lambda q, k, v, n, m: _attend(q, k, v, n, m, signed=True, sign=1.0),
    "the bias was divided by sqrt(d_k) too: only the dot product is scaled, "
    "q k^T / sqrt(d_k) - slope * |t - s|":
        lambda q, k, v, n, m: _attend(q, k, v, n, m, bias_scaled=True),
    "padding got weight: keys at positions s >= lengths[b] must be excluded from the softmax":
        lambda q, k, v, n, m: _attend(q, k, v, n, m, mask_keys=False),
    "the queries (rows) were masked instead of the keys (columns): lengths says which *keys* are real":
        lambda q, k, v, n, m: _attend(q, k, v, n, m, mask_keys=False, mask_queries=True),
    "every sentence's keys were cut at lengths[0], as if the first sentence were the longest: the "
    "batch is not sorted by length; mask each sentence b with its own lengths[b] (keys s >= lengths[b])":
        lambda q, k, v, n, m: _attend(q, k, v, n, m, first_length=True) if bool((n > n[0]).any()) else None,
    "k and v are swapped: the scores compare q with k, the output averages v":
        lambda q, k, v, n, m: _attend(q, v, k, n, m) if k.shape == v.shape else None,
}


def _empty_sentences(case: Case) -> torch.Tensor:
    """(B, 1, 1): True for a sentence with no real key (length 0): its rows must be exactly 0."""
    lengths = case.args[3]
    return (lengths == 0).view(-1, 1, 1)


def _explain_empty(what: str) -> Callable[[tuple[int, ...], str], str]:
    def explain(index: tuple[int, ...], found: str) -> str:
        b, t = index[0], index[1]
        start = f"{what} of query {t} in sentence {b} (length 0, no real key) is {found}: "
        if found == "NaN":
            return start + ("a query with no real key gets a softmax over nothing but -inf, which is NaN; "
                            "set its weights to 0 after the softmax (masked_fill), so that the row and "
                            "its output are zeros")
        return start + ("a query with no real key must give no weight to anything: fill the scores of the "
                        "padded keys with -inf (a large negative number gives a uniform row) and set the "
                        "weights to 0 after the softmax, so that the row and its output are zeros")

    return explain


def _padding(case: Case) -> torch.Tensor:
    q, k, _, lengths, _ = case.args
    return ~padding_mask(lengths, k.size(-2)).unsqueeze(1)                  # (B, 1, S): True = padding


def _cases() -> list[Case]:
    g = torch.Generator().manual_seed(8)
    r = lambda *shape, dtype=torch.float32: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    return [
        Case("self-attention, T = S = 5, lengths 5 and 3, slope 0.5",
             (r(2, 5, 4) * 2, r(2, 5, 4) * 2, r(2, 5, 4), torch.tensor([5, 3]), 0.5)),
        Case("3 queries, 6 keys, d_k = 8, d_v = 2, slope 0.25",
             (r(2, 3, 8) * 2, r(2, 6, 8) * 2, r(2, 6, 2), torch.tensor([6, 4]), 0.25)),
        Case("a sentence with no real key (length 0)",
             (r(2, 4, 4), r(2, 4, 4), r(2, 4, 3), torch.tensor([0, 2]), 1.0)),
        Case("float64 inputs, slope 0 (plain attention)",
             (r(1, 4, 6, dtype=torch.float64), r(1, 4, 6, dtype=torch.float64), r(1, 4, 6, dtype=torch.float64),
              torch.tensor([4]), 0.0)),
        # not sorted longest first, no sentence fills all S keys, more queries than keys
        Case("lengths 2, 4 and 3 (the longest not first, none full), 6 queries and 5 keys, slope 0.3",
             (r(3, 6, 4) * 2, r(3, 5, 4) * 2, r(3, 5, 3), torch.tensor([2, 4, 3]), 0.3)),
    ]


def check_distance_bias_attention(fn: Callable) -> bool:
    """Check ``fn(q, k, v, lengths, slope) -> (output, weights)``: attention with the scores
    ``q k^T / sqrt(d_k) - slope * |t - s|`` and the keys ``s >= lengths[b]`` masked out."""
    return check_function(fn, reference_distance_bias_attention, _cases(), checks=[
        expect_type(tuple, hint="return two things: `return output, weights`"),
        expect_type(item=0), expect_type(item=1),
        expect_shape(item=0, hint="output is (B, T, d_v): weights (B, T, S) @ v (B, S, d_v)"),
        expect_shape(item=1, hint="weights are (B, T, S): one row per query, one column per key"),
        expect_dtype(item=0, hint="compute in the inputs' dtype: build the distances with dtype=q.dtype "
                                  "and do not call .float()"),
        expect_dtype(item=1, hint="the weights too are in the inputs' dtype (float64 weights would break "
                                  "weights @ v with float32 values): build the distances with dtype=q.dtype"),
        expect_inputs_unchanged(hint="mask the scores with masked_fill (no underscore), not by writing into "
                                     "q, k or v"),
        expect_zero_rows(_empty_sentences, _explain_empty("the weights row"), "no NaN on a row without keys",
                         item=1),
        expect_zero_rows(_empty_sentences, _explain_empty("the output"), "no NaN on a row without keys",
                         item=0),
        expect_known_mistakes(_MISTAKES),
        expect_masked_zero(_padding, item=1),
        expect_close(item=1), expect_close(item=0),
        expect_grad(wrt=["q", "k", "v"], item=0,
                    hint="a row without keys must have finite (zero) gradients: fill the scores with "
                         "-inf *before* the softmax and the weights with 0 after it"),
        expect_grad(wrt=["q", "k"], item=1, hint="return the weights the output was computed from, "
                                                 "without .detach()"),
    ])
