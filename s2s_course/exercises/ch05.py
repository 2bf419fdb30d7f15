"""Checkers for chapter 5 (Luong attention).

- ``check_general_score(fn)``: ``fn(query (B, Hq), keys (B, S, Hk), W_a (Hq, Hk)) -> scores (B, S)``,
  Luong's "general" score  score(h_t, h_s) = h_t^T W_a h_s  (Luong et al. 2015, eq. (8)).
- ``check_local_p_weights(fn)``: ``fn(scores (B, S), p (B,), mask (B, S) bool, window D) -> weights (B, S)``,
  Luong's local-p weights: a softmax of the scores over the window |s - p_t| <= D (real tokens only),
  times the Gaussian exp(-(s - p_t)^2 / (2 sigma^2)) with sigma = D / 2  (eq. (10)). A window with
  no real token in it gets all-zero weights, not NaN (the convention of ``masked_softmax``).
- ``check_local_p_position(fn)``: ``fn(query (B, Hq), mask (B, S) bool, W_p (A, Hq), v_p (A,)) -> p (B,)``,
  the predicted position p_t = S_b * sigmoid(v_p . tanh(W_p q)) with S_b each sentence's own length
  (eq. (9)), not the padded width S of the batch.
- ``check_general_score_fast(fn)``: the general score with W_a applied to the query once,
  (W_a^T q) . k_s, instead of to every key: the same values at O(Hq Hk + S Hk) per decoder step
  instead of O(S Hq Hk). The cost is measured with ``torch.utils.flop_counter.FlopCounterMode``.

The references are the package's own ``GeneralScore`` and ``LocalAttention``, so an exercise and
the model the chapter trains cannot drift apart. Besides comparing values, the checkers recognise the
usual mistakes (a transposed W_a, softmax weights instead of scores, sigma = D, renormalising) and
name them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from s2s_course.attention import GeneralScore, LocalAttention, masked_softmax
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_close, expect_dtype,
                                       expect_grad, expect_inputs_unchanged, expect_known_mistakes,
                                       expect_shape, expect_type)

__all__ = ["check_general_score", "check_general_score_fast", "check_local_p_position", "check_local_p_weights",
           "measure_cost", "reference_general_score", "reference_local_p_position", "reference_local_p_weights"]

_DTYPE_HINT = ("float64 inputs must give a float64 result: do not call .float(), and create new "
               "tensors with the inputs' dtype (new_zeros, zeros_like, dtype=x.dtype)")


# -----------------------------------------------------------------------------
# Luong's general score

def reference_general_score(query: torch.Tensor, keys: torch.Tensor, W_a: torch.Tensor) -> torch.Tensor:
    """The package's ``GeneralScore`` with its matrix set to ``W_a`` (Hq, Hk): scores (B, S)."""
    score = GeneralScore(query.size(1), keys.size(2))
    # functional_call keeps W_a in the autograd graph, so gradients with respect to it can be compared.
    return functional_call(score, {"W_a.weight": W_a}, (query, keys))


def _general_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    d = torch.float64
    return [
        Case("square W_a (Hq = Hk = 4)", (torch.randn(2, 4, generator=g), torch.randn(2, 3, 4, generator=g),
                                        torch.randn(4, 4, generator=g))),
        Case("query and keys of different sizes (Hq=3, Hk=5)",
             (torch.randn(3, 3, generator=g), torch.randn(3, 6, 5, generator=g), torch.randn(3, 5, generator=g))),
        Case("batch of 1, one source position", (torch.randn(1, 4, generator=g), torch.randn(1, 1, 4, generator=g),
                                                 torch.randn(4, 4, generator=g))),
        Case("float64 query, keys and W_a (Hq=2, Hk=3)",
             (torch.randn(2, 2, generator=g, dtype=d), torch.randn(2, 4, 3, generator=g, dtype=d),
              torch.randn(2, 3, generator=g, dtype=d))),
    ]


_GENERAL_MISTAKES = {
    "these are softmax weights (each row sums to 1): return the raw scores h_t^T W_a h_s; "
    "the softmax over source positions comes later, in the attention module":
        lambda q, k, W: torch.softmax(reference_general_score(q, k, W), dim=-1),
    "W_a is transposed: the score is h_t^T W_a h_s with W_a of shape (Hq, Hk), i.e. W_a maps a key "
    "(Hk) to query space (Hq): (W_a @ k_s) . q, not (W_a^T @ k_s) . q":
        lambda q, k, W: reference_general_score(q, k, W.T) if W.size(0) == W.size(1) else
        torch.full((k.size(0), k.size(1)), float("nan")),
    "W_a is not used: this is the dot score h_t . h_s; the general score puts W_a between them":
        lambda q, k, W: torch.bmm(k, q.unsqueeze(2)).squeeze(2) if q.size(1) == k.size(2) else
        torch.full((k.size(0), k.size(1)), float("nan")),
}


def check_general_score(fn: Callable) -> bool:
    """Check ``fn(query (B, Hq), keys (B, S, Hk), W_a (Hq, Hk)) -> scores (B, S)``, scores = q^T W_a k_s."""
    return check_function(fn, reference_general_score, _general_cases(), checks=[
        expect_type(), expect_shape(hint="one score per source position: (B, S), no trailing 1 "
                                         "(squeeze the result of torch.bmm)"),
        expect_dtype(hint=_DTYPE_HINT), expect_inputs_unchanged(), expect_known_mistakes(_GENERAL_MISTAKES),
        expect_close(),
        expect_grad(),   # with respect to query, keys and W_a
    ])


# -----------------------------------------------------------------------------
# Luong's local-p weights

class _GivenScores(nn.Module):
    """A "score function" that returns scores computed beforehand (to drive LocalAttention)."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return keys

    def forward(self, query: torch.Tensor, keys: torch.Tensor, *rest) -> torch.Tensor:
        return self.scores   # rest: projected_keys, if the attention module passes it


def reference_local_p_weights(scores: torch.Tensor, p: torch.Tensor, mask: torch.Tensor,
                              window: int) -> torch.Tensor:
    """The package's ``LocalAttention`` weights for given scores (B, S) and positions p (B,)."""
    B, S = scores.shape
    local = LocalAttention(_GivenScores(scores), query_dim=1, window=window)
    local.predict_position = lambda query, src_len: p   # use the given p_t instead of predicting it
    keys = scores.new_zeros(B, S, 1)                    # only their shape matters here
    _, weights = local(scores.new_zeros(B, 1), keys, mask=mask)
    return weights


def _in_window(case: Case) -> torch.Tensor:
    scores, p, mask, window = case.args
    distance = torch.arange(scores.size(1), dtype=scores.dtype).unsqueeze(0) - p.detach().unsqueeze(1)
    return distance.abs() <= window


def _zero_where(name: str, where: Callable[[Case], torch.Tensor], message: str) -> Check:
    def fn(t: Trial) -> str | None:
        if not isinstance(t.got, torch.Tensor) or t.got.shape != t.expected.shape:
            return None  # the shape check reports it
        wrong = where(t.case) & (t.got.detach() != 0)
        if not bool(wrong.any()):
            return None
        b, s = wrong.nonzero()[0].tolist()
        return (f"expected exactly 0 at [{b}, {s}], got {t.got[b, s].item():.4g} "
                f"({int(wrong.sum())} such positions): {message}")

    return Check(name, fn)


def _gaussian(scores, p, mask, window, sigma):
    positions = torch.arange(scores.size(1), dtype=scores.dtype)
    distance = positions.unsqueeze(0) - p.unsqueeze(1)
    align = masked_softmax(scores, mask & (distance.abs() <= window))
    return align, distance, align * torch.exp(-distance ** 2 / (2 * sigma ** 2))


_LOCAL_MISTAKES = {
    "the Gaussian is too wide: sigma = D / 2 (Luong et al. eq. 10), not sigma = D":
        lambda s, p, m, D: _gaussian(s, p, m, D, sigma=D)[2],
    "no Gaussian: after the windowed softmax multiply by exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2":
        lambda s, p, m, D: _gaussian(s, p, m, D, sigma=D / 2)[0],
    "the weights were renormalised after the Gaussian: as in Luong et al. they are align(s) * gaussian(s) "
    "and sum to at most 1, do not divide by their sum":
        lambda s, p, m, D: (lambda w: w / w.sum(-1, keepdim=True))(_gaussian(s, p, m, D, sigma=D / 2)[2]),
    "the Gaussian lacks the factor 2: exp(-(s - p_t)^2 / (2 sigma^2)), not exp(-(s - p_t)^2 / sigma^2)":
        lambda s, p, m, D: _gaussian(s, p, m, D, sigma=D / 2)[0]
        * torch.exp(-_gaussian(s, p, m, D, sigma=D / 2)[1] ** 2 / (D / 2) ** 2),
    "p_t was rounded: keep the predicted position real-valued in the Gaussian (it is how the gradient "
    "reaches the position predictor)":
        lambda s, p, m, D: _gaussian(s, p.round(), m, D, sigma=D / 2)[2],
}


def _local_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    lengths = lambda ls, S: torch.arange(S).unsqueeze(0) < torch.tensor(ls).unsqueeze(1)  # noqa: E731
    d = torch.float64
    return [
        Case("window inside the sentence (D=2)",
             (torch.randn(2, 9, generator=g), torch.tensor([4.3, 3.0]), lengths([9, 8], 9), 2)),
        Case("padding inside the window (D=3)",
             (torch.randn(2, 8, generator=g), torch.tensor([5.6, 2.5]), lengths([8, 4], 8), 3)),
        Case("window past the start (D=1, p=0.4)",
             (torch.randn(1, 5, generator=g), torch.tensor([0.4]), lengths([5], 5), 1)),
        Case("shortest sentence first (lengths 4, 9, 6; D=2)",
             (torch.randn(3, 9, generator=g), torch.tensor([2.2, 6.5, 4.0]), lengths([4, 9, 6], 9), 2)),
        Case("a window with no real token (row 0: length 3, p=8)",
             (torch.randn(2, 10, generator=g), torch.tensor([8.0, 3.5]), lengths([3, 7], 10), 2)),
        Case("float64 scores and p (D=2)",
             (torch.randn(2, 6, generator=g, dtype=d), torch.tensor([1.5, 2.0], dtype=d), lengths([6, 4], 6), 2)),
    ]


def _local_finite(t: Trial) -> str | None:
    if not isinstance(t.got, torch.Tensor) or bool(torch.isfinite(t.got).all()):
        return None
    b, s = (~torch.isfinite(t.got)).nonzero()[0].tolist()
    return (f"got {t.got[b, s].item()} at [{b}, {s}]: when the window of a sentence holds no real token "
            f"(p_t beyond its end), the softmax over nothing gives NaN; such a row must be all zeros "
            f"(it has nothing to attend to), e.g. masked_fill the weights outside the kept positions "
            f"with 0 after the softmax")


def _kept_tokens_weighted(t: Trial) -> str | None:
    """A real token inside the window must get weight (the reference gives it some)."""
    if not isinstance(t.got, torch.Tensor) or t.got.shape != t.expected.shape:
        return None
    wrong = (t.expected > 0) & (t.got.detach() == 0)
    if not bool(wrong.any()):
        return None
    b, s = wrong.nonzero()[0].tolist()
    return (f"the real token at [{b}, {s}] is inside the window but got weight exactly 0: take each "
            f"sentence's padding from its own mask row (the batch is not sorted by length, so row 0 "
            f"is not always the longest)")


def check_local_p_weights(fn: Callable) -> bool:
    """Check ``fn(scores (B, S), p (B,), mask (B, S) bool, window) -> weights (B, S)`` (local-p, eq. 10)."""
    return check_function(fn, reference_local_p_weights, _local_cases(), checks=[
        expect_type(), expect_shape(), expect_dtype(hint=_DTYPE_HINT), expect_inputs_unchanged(),
        Check("finite (no NaN)", _local_finite),
        expect_known_mistakes(_LOCAL_MISTAKES),
        _zero_where("zero on padding", lambda c: ~c.args[2],
                    "padding (mask False) must get no weight"),
        _zero_where("zero outside the window", lambda c: ~_in_window(c),
                    "positions with |s - p_t| > D must get exactly 0: the softmax runs over the window only"),
        Check("real tokens in the window get weight", _kept_tokens_weighted),
        expect_close(),
        expect_grad(wrt=["scores", "p"]),   # every float input (mask is bool, window an int)
    ])


# -----------------------------------------------------------------------------
# Luong's local-p predicted position

def reference_local_p_position(query: torch.Tensor, mask: torch.Tensor, W_p: torch.Tensor,
                               v_p: torch.Tensor) -> torch.Tensor:
    """The p_t that the package's ``LocalAttention.forward`` uses, with W_p (A, Hq) and v_p (A,): (B,)."""
    B, S = mask.shape
    local = LocalAttention(_GivenScores(query.new_zeros(B, S)), query_dim=query.size(1), window=1,
                           attn_dim=W_p.size(0))
    seen: dict[str, torch.Tensor] = {}
    predict = local.predict_position

    def spy(q: torch.Tensor, src_len: torch.Tensor) -> torch.Tensor:   # forward computes src_len itself
        seen["p"] = predict(q, src_len)
        return seen["p"]

    local.predict_position = spy
    functional_call(local, {"W_p.weight": W_p, "v_p.weight": v_p.unsqueeze(0)},
                    (query, query.new_zeros(B, S, 1)), {"mask": mask})
    return seen["p"]


def _position_cases() -> list[Case]:
    g = torch.Generator().manual_seed(9)
    lengths = lambda ls, S: torch.arange(S).unsqueeze(0) < torch.tensor(ls).unsqueeze(1)  # noqa: E731

    def case(name: str, ls: list[int], S: int, Hq: int = 4, A: int = 3, dtype=torch.float32) -> Case:
        return Case(name, (torch.randn(len(ls), Hq, generator=g, dtype=dtype), lengths(ls, S),
                           torch.randn(A, Hq, generator=g, dtype=dtype), torch.randn(A, generator=g, dtype=dtype)))
    return [
        case("every sentence fills the batch (lengths 6, 6)", [6, 6], 6),
        case("padded batch, shortest first (lengths 3, 7, 5)", [3, 7, 5], 7),
        case("batch of one with padding (length 4 of 9)", [4], 9, Hq=2, A=5),
        case("float64 query and weights, square W_p (lengths 2, 5)", [2, 5], 5, Hq=3, A=3, dtype=torch.float64),
    ]


def _gate(q: torch.Tensor, W_p: torch.Tensor, v_p: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(torch.tanh(q @ W_p.T) @ v_p)   # (B,) in (0, 1)


_POSITION_MISTAKES = {
    "p_t was scaled by the padded width S of the batch: each sentence has its own length S_b = "
    "mask[b].sum(), and p_t = S_b * sigmoid(...) must stay inside that sentence (the two agree only "
    "when every sentence fills the batch)":
        lambda q, m, W, v: m.size(1) * _gate(q, W, v),
    "p_t was scaled by S_b - 1: the package (like the paper's p_t = S sigmoid(...)) scales by the "
    "length S_b itself":
        lambda q, m, W, v: (m.sum(1) - 1).to(q.dtype) * _gate(q, W, v),
    "no tanh: p_t = S_b * sigmoid(v_p . tanh(W_p h_t))":
        lambda q, m, W, v: m.sum(1).to(q.dtype) * torch.sigmoid(q @ W.T @ v),
    "W_p is transposed: it has shape (A, Hq) and maps the query to A features, W_p @ h_t = query @ W_p.T":
        lambda q, m, W, v: m.sum(1).to(q.dtype) * torch.sigmoid(torch.tanh(q @ W) @ v)
        if W.size(0) == W.size(1) else torch.full((q.size(0),), float("nan")),
}


def _inside_sentence(t: Trial) -> str | None:
    """0 <= p_t <= S_b for every sentence."""
    if not isinstance(t.got, torch.Tensor) or t.got.shape != t.expected.shape:
        return None
    length = t.case.args[1].sum(1).to(t.got.dtype)
    outside = (t.got.detach() < 0) | (t.got.detach() > length)
    if not bool(outside.any()):
        return None
    b = int(outside.nonzero()[0, 0])
    return (f"p_t = {t.got[b].item():.4g} for sentence {b}, whose length is {int(length[b])}: the predicted "
            f"position must lie in [0, S_b], S_b = mask[b].sum()")


def check_local_p_position(fn: Callable) -> bool:
    """Check ``fn(query (B, Hq), mask (B, S) bool, W_p (A, Hq), v_p (A,)) -> p (B,)`` (Luong eq. 9)."""
    return check_function(fn, reference_local_p_position, _position_cases(), checks=[
        expect_type(), expect_shape(hint="one position per sentence: (B,)"), expect_dtype(hint=_DTYPE_HINT),
        expect_inputs_unchanged(), expect_known_mistakes(_POSITION_MISTAKES), Check("inside the sentence", _inside_sentence),
        expect_close(),
        expect_grad(),   # with respect to query, W_p and v_p (the mask is bool)
    ])


# -----------------------------------------------------------------------------
# the general score at the cost of one projection per decoder step

class _ElementCounter(TorchDispatchMode):
    """Counts the elements that every op other than a matrix product reads or writes (the largest
    tensor it touches); views are free. FlopCounterMode counts only the matrix products, so a key
    projection written as a broadcast product and a sum would be invisible to it."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not func.is_view and func._overloadpacket not in flop_registry:
            tensors = [x for x in torch.utils._pytree.tree_leaves((args, kwargs, out))
                       if isinstance(x, torch.Tensor)]
            self.elements += max((x.numel() for x in tensors), default=0)
        return out


def measure_cost(fn: Callable, *args) -> tuple[int, int]:
    """(multiply-adds in matrix products, elements touched by all other ops) of one call ``fn(*args)``."""
    with torch.no_grad(), FlopCounterMode(display=False) as flops, _ElementCounter() as other:
        fn(*args)
    return flops.get_total_flops() // 2, other.elements   # FlopCounterMode counts 2 flops per multiply-add


def _fast_cases() -> list[Case]:
    g = torch.Generator().manual_seed(11)
    B, S, H = 2, 256, 64
    return _general_cases() + [
        Case(f"a long source (B={B}, S={S}, Hq=Hk={H}): the cost is measured here",
             (torch.randn(B, H, generator=g), torch.randn(B, S, H, generator=g),
              torch.randn(H, H, generator=g) / H ** 0.5)),
    ]


def _query_side_cost(t: Trial) -> str | None:
    """At most a few times the work of (W_a^T q) . k_s; name a version that projects every key."""
    (query, keys, W_a), _ = t.case.fresh()
    B, S, Hk = keys.shape
    Hq = query.size(1)
    if S < 64:   # on a few positions fixed overheads dominate; the long-source case measures the cost
        return None
    query_side = B * Hq * Hk + B * S * Hk        # W_a^T q once, then S dot products of length Hk
    key_side = B * S * Hq * Hk                   # W_a k_s for every source position
    try:
        macs, elements = measure_cost(t.learner_fn, query, keys, W_a)
    except Exception as err:   # the values check already ran this function without error
        return f"could not measure the cost: {type(err).__name__}: {err}"
    work = macs + elements
    if work <= 4 * query_side:
        return None
    measured = (f"your function did {macs:,} multiply-adds in matrix products and touched {elements:,} "
                f"elements in other operations; applying W_a to the query once costs about {query_side:,}")
    if macs >= key_side or elements >= key_side:
        return (f"{measured}, projecting every key costs {key_side:,} (S Hq Hk). Your version projects "
                f"every key with W_a, O(S d^2) per decoder step: compute u = W_a^T q once, (B, Hk), then "
                f"score every key with one dot product u . k_s, O(d^2 + S d)")
    return f"{measured}: it does much more work than the query-side score needs"


def check_general_score_fast(fn: Callable) -> bool:
    """Check ``fn(query (B, Hq), keys (B, S, Hk), W_a (Hq, Hk)) -> scores (B, S)``: the values of
    ``GeneralScore`` (q^T W_a k_s) computed as (W_a^T q) . k_s, without projecting every key."""
    return check_function(fn, reference_general_score, _fast_cases(), checks=[
        expect_type(), expect_shape(hint="one score per source position: (B, S), no trailing 1"),
        expect_dtype(hint=_DTYPE_HINT), expect_inputs_unchanged(), expect_known_mistakes(_GENERAL_MISTAKES),
        expect_close(hint="scores[b, s] = query[b] @ W_a @ keys[b, s]; W_a is (Hq, Hk), so the query "
                          "side is W_a^T q = q @ W_a, of size Hk"),
        Check("cost (no key projection)", _query_side_cost),
        expect_grad(),   # with respect to query, keys and W_a
    ])
