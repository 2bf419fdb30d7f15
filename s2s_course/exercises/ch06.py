"""Checkers for chapter 6 (teacher forcing, exposure bias and scheduled sampling).

- ``check_inverse_sigmoid(fn)``: ``fn(k)`` returns a schedule ``step -> eps_step`` with
  ``eps_i = k / (k + exp(i / k))`` (Bengio et al. 2015), compared with ``s2s_course.schedules``.
- ``check_scheduled_inputs(fn)``: ``fn(gold, logits, coin)`` picks, per example, the gold token where
  ``coin`` is True and the model's own guess (argmax of ``logits``) where it is False: the mixing step
  inside ``s2s_course.models.rnn.next_inputs``, with the coins given instead of drawn.
- ``check_top_p_filter(fn)``: ``fn(logits (..., V), p)`` keeps, in every row, the smallest set of
  most likely tokens whose probabilities reach ``p`` (and the tokens tied with the least likely
  of them) and sets the rest to -inf: nucleus filtering, for scheduled sampling with sampled
  tokens, against ``s2s_course.decode.top_p_filter``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from s2s_course import schedules
from s2s_course.decode import top_p_filter
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_close, expect_dtype, expect_grad,
                                       expect_inputs_unchanged, expect_shape, expect_type)

# -----------------------------------------------------------------------------
# inverse-sigmoid schedule

_STEPS = 2000        # steps 0 .. 1999 are checked for range, monotonicity and values
_LARGE_STEP = 10**6  # exp(10**6 / k) overflows a float for every k in the cases


def _evaluate(schedule: Callable[[int], Any], step: int) -> float:
    return float(schedule(step))


def _schedule_check(name: str, body: Callable[[Callable, Callable, float], str | None],
                    hint: str | None = None) -> Check:
    """A property of the learner's schedule ``t.got`` (reference ``t.expected``) for ``k = case.args[0]``;
    an exception raised while evaluating the schedule is reported under this property."""
    def fn(t: Trial) -> str | None:
        k = float(t.case.args[0])
        try:
            return body(t.got, t.expected, k)
        except Exception as err:  # the learner's schedule crashed on some step
            return f"evaluating your schedule raised {type(err).__name__}: {err}"

    return Check(name, fn, hint)


def _returns_schedule(got: Any, expected: Any, k: float) -> str | None:
    if callable(got):
        return None
    return (f"inverse_sigmoid(k) must return a function of the step (e.g. `return lambda i: ...`), "
            f"got {type(got).__name__}: {got!r:.60}")


def _python_number(got: Callable, expected: Callable, k: float) -> str | None:
    for i in (0, 1, 1000):
        value = got(i)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return (f"eps_{i} is a {type(value).__module__}.{type(value).__name__} ({value!r:.60}); fit "
                    f"accepts only a Python int or float as the ratio (and records it in the history): "
                    f"compute with math.exp, or return float(...)")
    return None


def _in_range(got: Callable, expected: Callable, k: float) -> str | None:
    for i in range(_STEPS):
        value = _evaluate(got, i)
        if math.isnan(value):
            return (f"eps_{i} is NaN: an inf / inf or inf - inf once exp(i / k) overflowed; rewrite the "
                    f"formula so that a huge exp gives 0 (k / (k + exp(i / k))), or return 0.0 past i / k = 700")
        if not 0.0 <= value <= 1.0:
            return f"eps_{i} = {value:.4g} is not a probability in [0, 1]"
    return None


def _at_zero(got: Callable, expected: Callable, k: float) -> str | None:
    value, want = _evaluate(got, 0), expected(0)
    if math.isclose(value, want, rel_tol=1e-6, abs_tol=1e-9):
        return None
    return f"expected eps_0 = k / (k + exp(0)) = k / (k + 1) = {want:.6g}, got {value:.6g}"


def _non_increasing(got: Callable, expected: Callable, k: float) -> str | None:
    previous = _evaluate(got, 0)
    for i in range(1, _STEPS):
        value = _evaluate(got, i)
        if value > previous + 1e-12:
            return (f"eps_{i} = {value:.6g} > eps_{i - 1} = {previous:.6g}: the schedule must never go up "
                    f"(teacher forcing is handed over to the model, not taken back)")
        previous = value
    return None


def _values(got: Callable, expected: Callable, k: float) -> str | None:
    for i in range(_STEPS):
        value, want = _evaluate(got, i), expected(i)
        if not math.isclose(value, want, rel_tol=1e-6, abs_tol=1e-9):
            return f"expected eps_{i} = k / (k + exp({i} / k)) = {want:.6g}, got {value:.6g}"
    return None


def _large_step(got: Callable, expected: Callable, k: float) -> str | None:
    try:
        value = _evaluate(got, _LARGE_STEP)
    except OverflowError as err:
        return (f"at step {_LARGE_STEP} exp({_LARGE_STEP} / k) overflows ({err}); long trainings reach such "
                f"steps: return 0.0 once i / k is large (past ~700) instead of calling exp")
    if math.isnan(value):
        return f"eps_{_LARGE_STEP} is NaN (inf / inf after exp overflowed): it must be 0"
    if not abs(value) < 1e-12:
        return f"expected eps_{_LARGE_STEP} = 0 (to float precision), got {value:.4g}"
    return None


def check_inverse_sigmoid(inverse_sigmoid: Callable[[float], Callable[[int], float]]) -> bool:
    """``inverse_sigmoid(k)`` must return ``step -> k / (k + exp(step / k))`` for ``k >= 1``.

    Properties, in order: returns a function of the step, returns a Python number, range [0, 1]
    (no NaN), value at step 0, monotonic (non-increasing), values at steps 0..1999, no overflow at
    large steps.
    """
    cases = [Case("k=10", (10.0,)), Case("k=1", (1.0,)), Case("k=200", (200.0,))]
    checks = [
        _schedule_check("returns a function of the step", _returns_schedule),
        _schedule_check("returns a Python number", _python_number),
        _schedule_check("range [0, 1]", _in_range, hint="eps_i is a probability: k / (k + exp(i / k))"),
        _schedule_check("value at step 0", _at_zero,
                        hint="the k in the numerator keeps eps_0 = k / (k + 1) close to 1 for large k"),
        _schedule_check("monotonic", _non_increasing, hint="the exponent is +i / k, so exp grows with i"),
        _schedule_check("values", _values, hint="divide the step by k inside exp: exp(i / k)"),
        _schedule_check("no overflow at large steps", _large_step),
    ]
    return check_function(inverse_sigmoid, schedules.inverse_sigmoid, cases, checks)


# -----------------------------------------------------------------------------
# mixing gold and predicted tokens

def scheduled_inputs_reference(gold: torch.Tensor, logits: torch.Tensor, coin: torch.Tensor) -> torch.Tensor:
    """Gold token where ``coin`` is True, the model's argmax where False: (B,), (B, V), (B,) -> (B,)."""
    return torch.where(coin, gold, logits.argmax(dim=-1))


def _mixing_check(name: str, use_gold: bool, hint: str) -> Check:
    def fn(t: Trial) -> str | None:
        gold, logits, coin = t.case.args
        where = coin if use_gold else ~coin
        wrong = where & (t.got.detach().cpu() != t.expected)
        if not bool(wrong.any()):
            return None
        b = int(wrong.nonzero()[0, 0])
        source = "the gold token gold[b]" if use_gold else "the model's guess logits[b].argmax()"
        message = (f"example b={b} has coin={bool(coin[b])}, so the input must be {source} = "
                   f"{int(t.expected[b])}, got {int(t.got[b])} ({int(wrong.sum())} of {int(where.sum())} "
                   f"such examples are wrong)")
        if not bool(torch.isfinite(logits[b]).any()):
            message += ("; its logits are all -inf (no possible token), so any softmax of that row is "
                        "NaN: choose tokens with torch.where, do not mix distributions")
        elif bool(torch.isinf(logits[b].float().exp()).any()):
            message += "; exp of these logits overflows to inf: take the argmax of the logits themselves"
        return message

    return Check(name, fn, hint)


def _mixing_cases() -> list[Case]:
    g = torch.Generator().manual_seed(6)
    B, V = 8, 7
    gold = torch.randint(3, V, (B,), generator=g)
    logits = torch.randn(B, V, generator=g)
    logits[torch.arange(B), gold] -= 5.0  # the model's guess is never the gold token: mix-ups show
    coin = torch.tensor([True, False, True, True, False, False, True, False])
    finished = logits.clone()
    finished[[0, 3]] = float("-inf")       # rows with no possible token (e.g. after <eos>) get the gold
    large = logits * 3 + 100.0             # exp(100) overflows float32: take the argmax of the logits
    other = ~coin                          # the coins in another pattern
    return [
        Case("mixed coins", (gold, logits, coin)),
        Case("all coins 1 (teacher forcing)", (gold, logits, torch.ones(B, dtype=torch.bool))),
        Case("all coins 0 (free running)", (gold, logits, torch.zeros(B, dtype=torch.bool))),
        Case("batch of 1", (gold[:1], logits[:1], coin[1:2])),
        Case("float64 logits, other coins", (gold, logits.double(), other)),
        Case("rows of -inf logits where coin = 1", (gold, finished, coin)),
        Case("large logits (exp overflows float32)", (gold, large, other)),
    ]


def check_scheduled_inputs(scheduled_inputs: Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                                                      torch.Tensor]) -> bool:
    """``scheduled_inputs(gold (B,), logits (B, V), coin (B,) bool) -> (B,) long``.

    Properties, in order: returns a tensor, shape, dtype, mixing uses gold where coin=1, mixing uses
    the argmax where coin=0, does not modify its inputs.
    """
    checks = [
        expect_type(), expect_shape(hint="one token per example: take the argmax over the vocabulary (dim=-1)"),
        expect_dtype(hint="token ids are int64: use argmax (an index), not max (a score)"),
        _mixing_check("mixing uses gold where coin=1", True,
                      "torch.where(coin, gold, predicted): coin=True means teacher forcing"),
        _mixing_check("mixing uses the argmax where coin=0", False,
                      "the model's own guess is logits.argmax(dim=-1), not a sample and not dim=0"),
        expect_inputs_unchanged(),
    ]
    return check_function(scheduled_inputs, scheduled_inputs_reference, _mixing_cases(), checks)


# -----------------------------------------------------------------------------
# nucleus (top-p) filtering, to sample the model's token in scheduled sampling

def top_p_reference(logits: torch.Tensor, p: float) -> torch.Tensor:
    """``decode.top_p_filter``: logits (..., V) with every token outside the nucleus set to -inf."""
    return top_p_filter(logits, p)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])                                     # (rows, V)


def _kept_in_sorted_order(probs: torch.Tensor, p: float, descending: bool = True,
                          include_crossing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep in sorted order, the sort indices) along the last dim, without the tie rule."""
    sorted_probs, order = probs.sort(dim=-1, descending=descending)
    cum = sorted_probs.cumsum(dim=-1)
    keep = (cum - sorted_probs < p) if include_crossing else (cum < p)
    return keep, order


def _unsorted(keep_sorted: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def _slip_ascending(logits: torch.Tensor, p: float) -> torch.Tensor:
    keep, order = _kept_in_sorted_order(torch.softmax(logits.double(), -1), p, descending=False)
    return _unsorted(keep, order)


def _slip_no_crossing(logits: torch.Tensor, p: float) -> torch.Tensor:
    keep, order = _kept_in_sorted_order(torch.softmax(logits.double(), -1), p, include_crossing=False)
    return _unsorted(keep, order)


def _slip_not_scattered(logits: torch.Tensor, p: float) -> torch.Tensor:
    keep, _ = _kept_in_sorted_order(torch.softmax(logits.double(), -1), p)
    return keep                                   # a mask in sorted order, applied to unsorted logits


def _slip_no_shortcut(logits: torch.Tensor, p: float) -> torch.Tensor | None:
    if p < 1.0:
        return None
    keep, order = _kept_in_sorted_order(torch.softmax(logits.float(), -1), p)
    return _unsorted(keep, order)


def _slip_wrong_dim(dim: int) -> Callable[[torch.Tensor, float], torch.Tensor | None]:
    def slip(logits: torch.Tensor, p: float) -> torch.Tensor | None:
        if logits.dim() < 2 or dim % logits.dim() == logits.dim() - 1:
            return None
        probs = torch.softmax(logits.double(), dim=dim).movedim(dim, -1)
        keep, order = _kept_in_sorted_order(probs, p)
        return _unsorted(keep, order).movedim(-1, dim)
    return slip


_TOP_P_SLIPS: list[tuple[Callable[[torch.Tensor, float], torch.Tensor | None], str]] = [
    (_slip_ascending, "you kept the LEAST likely tokens: sort the probabilities in descending order "
                      "(sort(descending=True)) so the nucleus starts with the most likely token"),
    (_slip_no_crossing, "you left out the token whose probability makes the total reach p: keep a token "
                        "while the mass of the tokens BEFORE it is still < p (cumsum - probs < p), so "
                        "the most likely token is always kept"),
    (_slip_not_scattered, "your mask was computed in sorted order and applied to the unsorted logits: "
                          "map it back to the original positions (scatter with the sort indices), or "
                          "compare every probability with the smallest kept one"),
    (_slip_no_shortcut, "p = 1 must keep every token: the cumulative sum reaches 1.0 in floating point "
                        "before the last, very unlikely token; return the logits unchanged when p >= 1"),
    (_slip_wrong_dim(0), "you took the softmax / sort over dim 0: the vocabulary is the LAST dim "
                         "(dim=-1), whatever the number of leading dims"),
    (_slip_wrong_dim(1), "you took the softmax / sort over dim 1: the vocabulary is the LAST dim "
                         "(dim=-1), whatever the number of leading dims (logits may be (V,), (B, V) "
                         "or (B, T, V))"),
]


def _kept(got: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The tokens the learner kept: a finite logit left as it was."""
    g, x = got.detach().double(), logits.double()
    return torch.isfinite(x) & torch.isclose(g, x, rtol=1e-6, atol=1e-6)


def _top_p_checks() -> list[Check]:
    def no_nan(t: Trial) -> str | None:
        if not bool(torch.isnan(t.got.detach()).any()):
            return None
        return ("the output contains NaN: a token is either kept (its logit unchanged) or removed "
                "(-inf); NaN usually means an overflow (exp of a large logit) or -inf - (-inf)")

    def kept_values(t: Trial) -> str | None:
        logits, p = t.case.args
        got, expected = t.got.detach().double(), t.expected.double()
        if _same_tensor(got, expected.sort(dim=-1, descending=True).values) and not _same_tensor(got, expected):
            return ("your output is in sorted order: put every logit back at its own position (the "
                    "token ids are the positions), e.g. filter the original tensor with a mask")
        changed = torch.isfinite(got) & ~torch.isclose(got, logits.double(), rtol=1e-6, atol=1e-6)
        if not bool(changed.any()):
            return None
        first = tuple(changed.nonzero()[0].tolist())
        if not bool(torch.isfinite(expected[first])):
            return (f"at {list(first)} a removed token got {got[first].item():.4g}: removed tokens must be "
                    f"float('-inf') (exactly: a softmax then gives them probability 0), not 0 or a large "
                    f"negative number")
        if _same_tensor(got[torch.isfinite(got)], torch.log_softmax(logits.double(), -1)[torch.isfinite(got)]):
            what = "log-probabilities"
        elif _same_tensor(got[torch.isfinite(got)], torch.softmax(logits.double(), -1)[torch.isfinite(got)]):
            what = "probabilities"
        else:
            what = f"{got[first].item():.4g}"
        return (f"at {list(first)} a kept token has the logit {logits[first].item():.4g}, got {what}: kept "
                f"tokens keep their logits unchanged (only the others become -inf)")

    def divmod_rows(r: int, shape: torch.Size) -> tuple[int, ...]:
        lead = tuple(shape[:-1])
        index = []
        for size in reversed(lead):
            index.append(r % size)
            r //= size
        return tuple(reversed(index))

    def which_kept(t: Trial) -> str | None:
        logits, p = t.case.fresh()[0]
        want = torch.isfinite(t.expected)
        got = _kept(t.got, logits)
        if torch.equal(got, want):
            return None
        if bool(torch.isinf(logits[torch.isfinite(logits)].exp()).any()):
            return ("these logits are large (exp overflows to inf here, and inf / inf = NaN), and your "
                    "kept set differs only now: compute the probabilities with torch.softmax, which "
                    "subtracts each row's max first, not exp(logits) / exp(logits).sum()")
        for slip, message in _TOP_P_SLIPS:
            try:
                wrong = slip(logits, p)
            except Exception:
                continue
            if wrong is None or torch.equal(wrong, want):
                continue
            if torch.equal(wrong & torch.isfinite(logits), got):
                return message
        probs = _rows(torch.softmax(logits.double(), -1))
        got_rows, want_rows = _rows(got), _rows(want)
        r = int((got_rows != want_rows).any(dim=-1).nonzero()[0, 0])
        where = f"row {list(divmod_rows(r, logits.shape))}" if logits.dim() > 1 else "the row"
        kept, should = got_rows[r].nonzero().flatten().tolist(), want_rows[r].nonzero().flatten().tolist()
        missing = sorted(set(should) - set(kept))
        smallest = probs[r][want_rows[r]].min()
        shown = ", ".join(f"{i}: {probs[r, i].item():.3f}" for i in probs[r].argsort(descending=True).tolist()
                          if torch.isfinite(logits.reshape(-1, logits.shape[-1])[r, i]))
        if not kept:
            return (f"{where} keeps no token: the most likely token is always kept; include the token whose "
                    f"probability makes the total reach p = {p} (probabilities: {shown})")
        tie = (bool(missing) and set(kept) < set(should) and all(probs[r, i] == smallest for i in missing)
               and bool((probs[r][got_rows[r]] == smallest).any()))
        if tie:
            return (f"{where}: tokens {missing} are tied with the least likely kept token "
                    f"(probability {smallest.item():.3f}) and must be kept too: keep every token whose "
                    f"probability is >= that of the last one the cumulative sum needs")
        if set(kept) > set(should):
            return (f"{where} keeps too many tokens: {kept}, expected the smallest set reaching p = {p}: "
                    f"{should} (probabilities: {shown})")
        return f"{where}: expected to keep tokens {should}, kept {kept} (p = {p}; probabilities: {shown})"

    def dtype(t: Trial) -> str | None:
        if t.got.dtype == t.expected.dtype:
            return None
        return (f"logits are {t.expected.dtype}, got {t.got.dtype}: return the logits' dtype (compute the "
                f"softmax in any precision, but fill the original tensor)")

    return [expect_type(), expect_shape(hint="return one value per logit: filter, do not select or sort"),
            Check("dtype", dtype), Check("no NaN", no_nan), Check("kept logits unchanged", kept_values),
            Check("which tokens are kept", which_kept), expect_close(atol=1e-6, rtol=1e-6),
            expect_inputs_unchanged(),
            expect_grad(wrt=["logits"], compare=False,
                        hint="filter the logits tensor itself (torch.where / masked_fill), do not rebuild it")]


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.isclose(a.double(), b.double(), rtol=1e-6, atol=1e-6,
                                                     equal_nan=True).all())


def _nucleus_logits(probs: list[list[float]], seed: int, offset: float = 1.5,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Logits (rows, V) with the given probabilities, each row shuffled (so never sorted) and shifted
    by a different constant (the softmax does not see it)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i, row in enumerate(probs):
        x = torch.tensor(row, dtype=torch.float64).log() + offset * (i + 1)
        rows.append(x[torch.randperm(len(row), generator=g)])
    return torch.stack(rows).to(dtype)


def _top_p_cases() -> list[Case]:
    batch = _nucleus_logits([[0.30, 0.25, 0.15, 0.10, 0.08, 0.06, 0.04, 0.02],    # keeps 4
                             [0.50, 0.20, 0.12, 0.08, 0.05, 0.03, 0.015, 0.005],  # keeps 3
                             [0.90, 0.04, 0.02, 0.015, 0.01, 0.008, 0.005, 0.002]], seed=1)  # keeps 1
    deep = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0)) * 1.5
    one = _nucleus_logits([[0.35, 0.20, 0.15, 0.12, 0.08, 0.05, 0.03, 0.02]], seed=2)[0]
    tied = torch.tensor([0.1, 0.2, 0.4, 0.1, 0.2]).log()            # the two 0.2 tie across p = 0.5
    unlikely = torch.tensor([0.5, 0.5, -45.0, 0.5])  # 1e-20: the mass before it rounds to 1.0 (float32 and 64)
    inf = float("-inf")
    after_top_k = torch.tensor([[1.0, inf, 0.2, inf, 2.0, 0.5], [inf, 3.0, inf, inf, 0.0, inf]])
    wide = _nucleus_logits([[0.40, 0.30, 0.15, 0.10, 0.05], [0.22, 0.21, 0.20, 0.19, 0.18]], seed=3,
                           dtype=torch.float64)
    large = _nucleus_logits([[0.45, 0.25, 0.15, 0.10, 0.05], [0.70, 0.20, 0.06, 0.03, 0.01]], seed=4,
                            offset=100.0)
    return [
        Case("(B, V) = (3, 8), unsorted, p = 0.75", (batch, 0.75)),
        Case("(B, T, V) = (2, 3, 6), p = 0.6", (deep, 0.6)),
        Case("one row (V,) = (8,), p = 0.75", (one, 0.75)),
        Case("two tokens tied at the edge of the nucleus, p = 0.5", (tied, 0.5)),
        Case("p = 0.1: only the most likely token", (batch, 0.1)),
        Case("p = 1 keeps every token, even one of probability 1e-20", (unlikely, 1.0)),
        Case("-inf logits already (after top-k), p = 0.85", (after_top_k, 0.85)),
        Case("float64 logits, p = 0.8", (wide, 0.8)),
        Case("large logits (around 100), p = 0.6", (large, 0.6)),
    ]


def check_top_p_filter(top_p_filter: Callable[[torch.Tensor, float], torch.Tensor]) -> bool:
    """``top_p_filter(logits (..., V), p) -> (..., V)``: in every row, the smallest set of most likely
    tokens whose probabilities add up to at least p keeps its logits (with the tokens tied with the
    least likely of them), every other token becomes -inf; p = 1 keeps all. Any number of leading
    dims, the logits' dtype, the input left unchanged."""
    return check_function(top_p_filter, top_p_reference, _top_p_cases(), _top_p_checks())


__all__ = ["check_inverse_sigmoid", "check_scheduled_inputs", "check_top_p_filter", "scheduled_inputs_reference",
           "top_p_reference"]
