"""Checkers for chapter 4 (Bahdanau attention): a masked softmax, the additive score and the
final state of a bidirectional encoder.

    check_masked_softmax(my_masked_softmax)      # fn(scores (B, ..., S), mask (B, S) bool) -> weights
    check_additive_scores(my_additive_scores)    # fn(query, keys, W, U, v) -> scores (B, S)
    check_merge_directions(my_merge_directions)  # fn(h_n (2L, B, H), output (B, S, 2H)) -> (L, B, 2H)

Each runs the learner's function next to the package's (``s2s_course.attention``,
``s2s_course.models.rnn.Encoder``) on named cases and reports the first property that fails:
shape, dtype, masking, rows summing to one, values, inputs left unchanged, gradient.

Conventions checked: a row with no real token (all padding) gets all-zero weights, never NaN;
float64 inputs give float64 outputs; batches are not sorted by length.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s2s_course import attention
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_close, expect_dtype,
                                       expect_grad, expect_inputs_unchanged, expect_known_mistakes,
                                       expect_masked_zero, expect_shape, expect_type)

_DTYPE_HINT = ("float64 inputs must give a float64 result: do not call .float(), and create new "
               "tensors with the inputs' dtype (new_zeros, zeros_like, dtype=x.dtype)")


# -----------------------------------------------------------------------------
# masked softmax

def _masked_softmax_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(3, 5, generator=g)                               # (B, S)
    mask = torch.tensor([[1, 1, 1, 1, 1],                                 # no padding
                         [1, 1, 1, 0, 0],                                 # 2 pads
                         [1, 0, 0, 0, 0]], dtype=torch.bool)              # 1 real token
    steps = torch.randn(2, 4, 6, generator=g)                             # (B, T, S): every step
    steps_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    big = torch.tensor([[1000.0, 999.0, 998.0, 0.0], [-1000.0, -1001.0, 5.0, 7.0]])
    big_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    empty_mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    # Batches are not sorted by length: the shortest sentence may come first.
    unsorted = torch.randn(3, 5, generator=g)
    unsorted_mask = _lengths_mask([2, 5, 4], 5)
    # "Any number of dimensions between B and S": (B, heads, T, S). B = heads = 3, so a mask
    # broadcast against the wrong axis runs without error and must be caught by the values.
    heads = torch.randn(3, 3, 2, 5, generator=g)
    heads_mask = _lengths_mask([3, 5, 1], 5)
    double = torch.randn(2, 4, generator=g, dtype=torch.float64)
    double_mask = _lengths_mask([3, 4], 4)
    return [
        Case("padded batch (B=3, S=5)", (scores, mask)),
        Case("a batch of one, no padding", (scores[:1], mask[:1])),
        Case("shortest sentence first (lengths 2, 5, 4)", (unsorted, unsorted_mask)),
        Case("every decoder step at once (B=2, T=4, S=6)", (steps, steps_mask)),
        Case("four dimensions (B=3, heads=3, T=2, S=5)", (heads, heads_mask)),
        Case("large scores (|score| ~ 1000)", (big, big_mask)),
        Case("an empty source (row 1 is all padding)", (big, empty_mask)),
        Case("float64 scores", (double, double_mask)),
    ]


def _lengths_mask(lengths: list[int], S: int) -> torch.Tensor:
    """(B, S) bool, True at the first lengths[b] positions of row b."""
    return torch.arange(S).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def _rows_sum_to_one(t: Trial) -> str | None:
    """Each row sums to 1 when it has a real token, to 0 when it is all padding."""
    got = t.got.detach().double()
    expected = t.expected.detach().double().sum(-1)                      # 1 or 0 per row
    sums = got.sum(-1)
    bad = ~torch.isclose(sums, expected, atol=1e-5, rtol=0) | sums.isnan()
    if not bool(bad.any()):
        return None
    first = tuple(bad.nonzero()[0].tolist())
    return (f"the weights of row {list(first)} sum to {sums[first].item():.4g}, expected "
            f"{expected[first].item():.4g}: softmax over the last dimension (source positions) and "
            f"over the real tokens only (an all-padding row gets all zeros, not NaN)")


def _real_tokens_weighted(t: Trial) -> str | None:
    """Every position the reference gives weight must get weight: a real token left out of the
    softmax (e.g. a length read from the wrong row of an unsorted batch) gets exactly 0."""
    if not isinstance(t.got, torch.Tensor) or t.got.shape != t.expected.shape:
        return None
    wrong = (t.expected > 0) & (t.got.detach() == 0)
    if not bool(wrong.any()):
        return None
    first = tuple(wrong.nonzero()[0].tolist())
    return (f"the real token at index {list(first)} got weight exactly 0 ({int(wrong.sum())} real "
            f"tokens got none): every position where the mask is True takes part in the softmax; "
            f"take each row's padding from its own mask row (batches are not sorted by length, "
            f"so row 0 is not always the longest)")


def _finite(t: Trial) -> str | None:
    if not isinstance(t.got, torch.Tensor) or bool(torch.isfinite(t.got).all()):
        return None
    first = tuple((~torch.isfinite(t.got)).nonzero()[0].tolist())
    return (f"got {t.got[first].item()} at index {list(first)}: exp() of large scores overflows "
            f"(or a row with nothing to attend to divides 0 by 0)")


def check_masked_softmax(fn) -> bool:
    """``fn(scores, mask)`` must equal ``s2s_course.attention.masked_softmax``: a softmax over the
    last dimension in which positions with ``mask == False`` get exactly 0 and every row with at
    least one real token sums to 1 (an all-padding row: all zeros)."""
    return check_function(fn, attention.masked_softmax, _masked_softmax_cases(), checks=[
        expect_type(),
        expect_shape(),
        expect_dtype(hint=_DTYPE_HINT),
        Check("finite (no inf / NaN)", _finite,
              hint="subtract the row maximum before exp (torch.softmax does) and handle rows "
                   "that are all padding"),
        expect_masked_zero(where=lambda case: ~case.args[1].view(
            case.args[1].size(0), *([1] * (case.args[0].dim() - 2)), case.args[1].size(1)),
            hint="fill padded scores with -inf (masked_fill) BEFORE the softmax; with more than "
                 "three dimensions the mask must become (B, 1, ..., 1, S), not (B, 1, S)"),
        Check("real tokens get weight", _real_tokens_weighted),
        Check("rows sum to one", _rows_sum_to_one,
              hint="zeroing the padding AFTER a plain softmax leaves rows that sum to less than 1"),
        expect_close(atol=1e-6),
        expect_inputs_unchanged(),
        expect_grad(),   # the only float input is scores; the all-padding row must give 0, not NaN
    ])


# -----------------------------------------------------------------------------
# additive (Bahdanau) scores

def additive_scores(query: torch.Tensor, keys: torch.Tensor, W: torch.Tensor, U: torch.Tensor,
                    v: torch.Tensor) -> torch.Tensor:
    """Reference: the package's ``AdditiveScore`` with the given weights.

    query (B, Hq), keys (B, S, Hk), W (A, Hq), U (A, Hk), v (A,) -> scores (B, S) with
    scores[b, j] = v . tanh(W query[b] + U keys[b, j]).
    """
    A, Hq = W.shape
    score = attention.AdditiveScore(Hq, U.size(1), A)
    # Run the module with the given tensors as its weights, so gradients reach them.
    weights = {"W.weight": W, "U.weight": U, "v.weight": v.unsqueeze(0)}   # (A, Hq), (A, Hk), (1, A)
    return torch.func.functional_call(score, weights, (query, keys))


def _additive_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)

    def case(name: str, B: int, S: int, Hq: int, Hk: int, A: int, scale: float = 1.0,
             dtype: torch.dtype = torch.float32) -> Case:
        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=g, dtype=dtype)
        return Case(name, (randn(B, Hq), randn(B, S, Hk), scale * randn(A, Hq) / Hq ** 0.5,
                           scale * randn(A, Hk) / Hk ** 0.5, randn(A)))
    return [
        case("B=2, S=5, Hq=4, Hk=6, A=3", 2, 5, 4, 6, 3),
        case("batch of one (B=1, S=4)", 1, 4, 3, 3, 5),
        case("B equals S (B=3, S=3): broadcasting must pair query b with keys of b", 3, 3, 4, 2, 4),
        case("large pre-activations (tanh saturates)", 2, 4, 5, 5, 3, scale=10.0),
        case("float64 inputs and weights", 2, 3, 4, 3, 5, dtype=torch.float64),
    ]


def check_additive_scores(fn) -> bool:
    """``fn(query, keys, W, U, v)`` must return the Bahdanau scores v^T tanh(W q + U k_j) (B, S)."""
    return check_function(fn, additive_scores, _additive_cases(), checks=[
        expect_type(),
        expect_shape(hint="one score per (sentence, source position): (B, S); squeeze the last "
                          "dimension of v's output"),
        expect_dtype(hint=_DTYPE_HINT),
        expect_close(atol=1e-5, hint="score_j = v . tanh(W q + U k_j): W acts on the query, U on "
                                     "every key, tanh before v, and W q is broadcast over the S "
                                     "positions of the same sentence (unsqueeze(1))"),
        expect_inputs_unchanged(),
        expect_grad(),   # with respect to all five: query, keys, W, U and v
    ])


# -----------------------------------------------------------------------------
# the final state of a bidirectional encoder, one (L, B, 2H) state per layer

def merge_directions(h_n: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Reference: h_n (2L, B, H) of a bidirectional RNN -> (L, B, 2H), [forward; backward] per layer.

    torch orders h_n layer by layer, forward before backward: rows 2l and 2l + 1 are layer l.
    ``output`` is not needed; it is part of the exercise's signature so that the learner can
    check an answer against it (and is tempted to use it).
    """
    return torch.cat([h_n[0::2], h_n[1::2]], dim=-1)   # (L, B, H) and (L, B, H) -> (L, B, 2H)


def _bigru_case(name: str, lengths: list[int], num_layers: int, hidden: int, emb: int = 5,
                dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[Case, dict[str, Any]]:
    """Run a real bidirectional nn.GRU on a padded, packed batch (in the given, unsorted order).

    Returns the case (h_n, output) and facts about it taken from the outputs of every layer,
    computed without h_n: the forward final state of layer l is that layer's output at the last
    real position, the backward final state its output at position 0.
    """
    B, S = len(lengths), max(lengths) + 1                    # one all-padding column at the end
    with torch.random.fork_rng(devices=[]):                  # leave the notebook's RNG alone
        torch.manual_seed(seed)
        gru = nn.GRU(emb, hidden, num_layers=num_layers, bidirectional=True, batch_first=True).to(dtype)
        x = torch.randn(B, S, emb, dtype=dtype)
    lens = torch.tensor(lengths)

    def run(rnn: nn.GRU) -> tuple[torch.Tensor, torch.Tensor]:
        packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        out, h = rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=S)   # (B, S, 2H)
        return out.detach(), h.detach()

    with torch.no_grad():
        output, h_n = run(gru)
        forward, backward = [], []
        for layer in range(num_layers):   # layer l's outputs: a GRU with layers 0..l only
            lower = nn.GRU(emb, hidden, num_layers=layer + 1, bidirectional=True, batch_first=True).to(dtype)
            lower.load_state_dict({k: v for k, v in gru.state_dict().items()
                                   if int(k.split("_l")[1].split("_")[0]) <= layer})
            out, _ = run(lower)
            last = lens - 1                                              # (B,)
            forward.append(out[torch.arange(B), last, :hidden])          # (B, H)
            backward.append(out[:, 0, hidden:])                          # (B, H)
    facts = {"lengths": lengths, "forward": forward, "backward": backward}
    return Case(name, (h_n, output)), facts


def _merge_cases() -> tuple[list[Case], dict[str, dict[str, Any]]]:
    made = [
        _bigru_case("one layer, lengths 3, 5, 2 (unsorted)", [3, 5, 2], num_layers=1, hidden=4),
        _bigru_case("two layers, lengths 2, 6, 4", [2, 6, 4], num_layers=2, hidden=3, seed=1),
        _bigru_case("three layers, lengths 4, 1", [4, 1], num_layers=3, hidden=2, seed=2),
        _bigru_case("float64, two layers, lengths 1, 3", [1, 3], num_layers=2, hidden=3,
                    dtype=torch.float64, seed=3),
    ]
    return [case for case, _ in made], {case.name: facts for case, facts in made}


def _top_layer_replaced(h_n: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    merged = merge_directions(h_n, None)
    return torch.cat([merged[:-1], top.unsqueeze(0)])


def _merge_mistakes() -> dict[str, Callable[..., torch.Tensor]]:
    def view_as_is(h, o):
        return h.reshape(h.size(0) // 2, h.size(1), 2 * h.size(2))

    def directions_outer(h, o):
        halves = h.view(2, h.size(0) // 2, h.size(1), h.size(2))   # the wrong grouping
        return torch.cat([halves[0], halves[1]], dim=-1)
    return {
        "h_n.view(L, B, 2H) (or reshape) glues rows of h_n that do not belong together: h_n is "
        "(layer 0 forward, layer 0 backward, layer 1 forward, ...), each (B, H), so a plain view pairs "
        "one sentence's state with another sentence's; view it as (L, 2, B, H) and move the direction "
        "axis next to H (permute) before merging, or concatenate h_n[0::2] and h_n[1::2]": view_as_is,
        "the backward state comes first: the convention (and pad_packed output's layout) is "
        "[forward; backward]": lambda h, o: torch.cat([h[1::2], h[0::2]], dim=-1),
        "only the last layer was kept: a decoder with L layers needs one merged state per layer, "
        "(L, B, 2H)": lambda h, o: torch.cat([h[-2], h[-1]], dim=-1).unsqueeze(0),
        "h_n was split as (directions, layers): torch orders it layer by layer, forward then backward "
        "within each layer (rows 2l and 2l + 1 belong to layer l), not all forward layers first":
            directions_outer,
        "output[:, -1] is not the final state: for every sentence shorter than the batch it is a "
        "padding position (zeros), and its backward half has read only the last token; use h_n":
            lambda h, o: _top_layer_replaced(h, o[:, -1]),
        "the forward half was taken from output[:, -1], which is a padding position for every "
        "sentence shorter than the batch; the forward final state is in h_n (or at each sentence's "
        "own last real position)":
            lambda h, o: _top_layer_replaced(h, torch.cat([o[:, -1, :o.size(2) // 2],
                                                           o[:, 0, o.size(2) // 2:]], dim=-1)),
    }


def _agrees_with_gru(facts: dict[str, dict[str, Any]]) -> Check:
    """Each layer's halves equal what the GRU's outputs say, independently of h_n."""
    def fn(t: Trial) -> str | None:
        f = facts[t.case.name]
        got = t.got.detach()
        for layer, (fwd, bwd) in enumerate(zip(f["forward"], f["backward"])):
            H = fwd.size(1)
            for b, length in enumerate(f["lengths"]):
                if not torch.allclose(got[layer, b, :H].double(), fwd[b].double(), atol=1e-6):
                    return (f"layer {layer}, sentence {b} (length {length}): the first half, "
                            f"result[{layer}, {b}, :H], is not the forward GRU's state after the "
                            f"last real token (that layer's output at position {length - 1})")
                if not torch.allclose(got[layer, b, H:].double(), bwd[b].double(), atol=1e-6):
                    return (f"layer {layer}, sentence {b}: the second half, result[{layer}, {b}, H:], "
                            f"is not the backward GRU's state after reading back to the first token "
                            f"(that layer's output at position 0)")
        return None

    return Check("agrees with the GRU's outputs", fn)


def check_merge_directions(fn) -> bool:
    """``fn(h_n (2L, B, H), output (B, S, 2H))`` of a bidirectional nn.GRU run on a packed batch must
    return (L, B, 2H): for every layer, [forward final state; backward final state]."""
    cases, facts = _merge_cases()
    return check_function(fn, merge_directions, cases, checks=[
        expect_type(),
        expect_known_mistakes(_merge_mistakes(), atol=1e-6, rtol=1e-5),
        expect_shape(hint="one state per layer: (L, B, 2H) with L = h_n.size(0) // 2"),
        expect_dtype(hint=_DTYPE_HINT),
        _agrees_with_gru(facts),
        expect_close(atol=1e-6),
        expect_inputs_unchanged(),
        expect_grad(wrt=["h_n"]),
    ])


__all__ = ["additive_scores", "check_additive_scores", "check_masked_softmax", "check_merge_directions",
           "merge_directions"]
