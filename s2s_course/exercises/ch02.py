"""Checkers for chapter 2, the RNN encoder-decoder.

- ``check_gru_step(fn)``: one GRU step written by hand, ``fn(x, h, weight_ih, weight_hh, bias_ih,
  bias_hh) -> h_new``, against ``torch.nn.GRUCell`` holding the same weights.
- ``check_greedy_decode(fn)``: greedy decoding written by hand, ``fn(model, src, src_lengths,
  max_len) -> list[list[int]]``, against ``s2s_course.decode.greedy_decode``.
- ``check_lstm_step(fn)``: one LSTM step written by hand, ``fn(x, h, c, weight_ih, weight_hh,
  bias_ih, bias_hh) -> (h_new, c_new)``, against ``torch.nn.LSTMCell`` holding the same weights.

They say *which* property is wrong (gate order, update-gate interpolation, reset-gate placement,
biases, activations, the cell update; stopping at <eos>, feeding back the prediction, carrying the
state, max_len, dropout left on, ...), not just "values differ". The cell steps are checked in
float32 and float64, with gradients with respect to every input and parameter.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.func import functional_call

from s2s_course.data.specials import EOS_IDX, SOS_IDX
from s2s_course.decode import evaluating, greedy_decode
from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_dtype,
                                       expect_grad, expect_inputs_unchanged, expect_shape,
                                       expect_type)
from s2s_course.models.rnn import make_rnn_seq2seq

# =============================================================================================
# 1. One GRU step by hand
# =============================================================================================


def reference_gru_step(x: torch.Tensor, h: torch.Tensor, weight_ih: torch.Tensor,
                       weight_hh: torch.Tensor, bias_ih: torch.Tensor,
                       bias_hh: torch.Tensor) -> torch.Tensor:
    """``torch.nn.GRUCell`` run with the given weights: x (B, E), h (B, H) -> h_new (B, H).

    The weights use PyTorch's layout: rows [0:H] are the reset gate r, [H:2H] the update gate z,
    [2H:3H] the candidate n. ``functional_call`` keeps the weights differentiable.
    """
    hidden, emb = weight_hh.size(1), weight_ih.size(1)
    cell = nn.GRUCell(emb, hidden, dtype=x.dtype)
    params = {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias_ih": bias_ih, "bias_hh": bias_hh}
    return functional_call(cell, params, (x, h))


def _gru_variant(x, h, w_ih, w_hh, b_ih, b_hh, *, order=(0, 1, 2), swap_update=False,
                 reset_before_matmul=False, use_b_ih=True, use_b_hh=True) -> torch.Tensor:
    """A GRU step with one of the classic slips switched on (used to diagnose a wrong answer)."""
    H = h.size(1)

    def chunk(t: torch.Tensor, k: int) -> torch.Tensor:
        return t[order[k] * H:(order[k] + 1) * H]

    b_i = b_ih if use_b_ih else torch.zeros_like(b_ih)
    b_h = b_hh if use_b_hh else torch.zeros_like(b_hh)
    r = torch.sigmoid(x @ chunk(w_ih, 0).T + chunk(b_i, 0) + h @ chunk(w_hh, 0).T + chunk(b_h, 0))
    z = torch.sigmoid(x @ chunk(w_ih, 1).T + chunk(b_i, 1) + h @ chunk(w_hh, 1).T + chunk(b_h, 1))
    if reset_before_matmul:   # Cho et al.'s original: W (r * h)
        hn = (r * h) @ chunk(w_hh, 2).T + chunk(b_h, 2)
    else:                     # PyTorch / cuDNN: r * (W h + b)
        hn = r * (h @ chunk(w_hh, 2).T + chunk(b_h, 2))
    n = torch.tanh(x @ chunk(w_ih, 2).T + chunk(b_i, 2) + hn)
    return z * n + (1 - z) * h if swap_update else (1 - z) * n + z * h


# Each entry: property name, the slip (keyword arguments of _gru_variant), what to tell the learner.
_GRU_SLIPS: list[tuple[str, dict[str, Any], str]] = [
    ("gate order (r, z, n)", {"order": (1, 0, 2)},
     "your result matches a GRU that reads the update gate z from rows [0:H] and the reset gate r "
     "from rows [H:2H]; PyTorch stacks the weights as (r, z, n): r = rows [0:H], z = rows [H:2H], "
     "n = rows [2H:3H]"),
    ("update gate interpolation", {"swap_update": True},
     "your result matches h_new = z * n + (1 - z) * h; PyTorch (and this chapter) use "
     "h_new = (1 - z) * n + z * h, i.e. z is the fraction of the OLD state that is kept"),
    ("reset gate placement", {"reset_before_matmul": True},
     "your result matches n = tanh(W_in x + b_in + W_hn (r * h) + b_hn), Cho et al.'s original "
     "form; PyTorch applies r after the matrix product: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))"),
    ("biases", {"use_b_ih": False},
     "your result matches a step without bias_ih: add bias_ih to all three input projections"),
    ("biases", {"use_b_hh": False},
     "your result matches a step without bias_hh: add bias_hh to all three hidden projections "
     "(inside the reset gate's product for n)"),
]


def _matches(got: Any, expected: torch.Tensor) -> bool:
    return (isinstance(got, torch.Tensor) and got.shape == expected.shape
            and torch.allclose(got.detach().to(expected.dtype), expected, atol=1e-5, rtol=1e-4))


def _slip_check(name: str, slip: dict[str, Any], message: str) -> Check:
    """Fails when the learner's output equals the output of a known slip (and not the reference)."""
    def fn(t: Trial) -> str | None:
        expected = t.expected.detach()
        if _matches(t.got, expected):
            return None
        args, _ = t.case.fresh()
        with torch.no_grad():
            wrong = _gru_variant(*args, **slip)
        return message if _matches(t.got, wrong) else None

    return Check(name, fn)


def _values_check(hint: str) -> Check:
    def fn(t: Trial) -> str | None:
        got, expected = t.got.detach().to(t.expected.dtype), t.expected.detach()
        if torch.allclose(got, expected, atol=1e-5, rtol=1e-4):
            return None
        diff = (got - expected).abs()
        where = tuple(torch.nonzero(diff == diff.max())[0].tolist())
        return (f"h_new differs from nn.GRUCell: largest difference {diff.max().item():.3g} at "
                f"{list(where)} (expected {expected[where].item():.4g}, got {got[where].item():.4g})")

    return Check("values", fn, hint)


def _gru_case(name: str, B: int, E: int, H: int, seed: int, zero_h: bool = False,
              dtype: torch.dtype = torch.float32) -> Case:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, E, generator=g)
    h = torch.zeros(B, H) if zero_h else torch.randn(B, H, generator=g).tanh()
    w_ih, w_hh = torch.randn(3 * H, E, generator=g) * 0.7, torch.randn(3 * H, H, generator=g) * 0.7
    b_ih, b_hh = torch.randn(3 * H, generator=g) * 0.5, torch.randn(3 * H, generator=g) * 0.5
    return Case(name, tuple(t.to(dtype) for t in (x, h, w_ih, w_hh, b_ih, b_hh)))


GRU_CASES = [
    _gru_case("batch of 3, E=4, H=5", B=3, E=4, H=5, seed=0),
    _gru_case("batch of 1", B=1, E=4, H=5, seed=1),
    _gru_case("first step, h = 0", B=2, E=3, H=6, seed=2, zero_h=True),
    _gru_case("E > H", B=4, E=7, H=2, seed=3),
    _gru_case("float64 inputs and weights", B=3, E=4, H=5, seed=4, dtype=torch.float64),
]

_FLOAT64_HINT = ("with float64 inputs and weights the result must be float64 too: do not create tensors "
                 "without dtype= (torch.zeros(B, H) is float32) and do not call .float()")


def check_gru_step(gru_step: Callable) -> bool:
    """``gru_step(x (B,E), h (B,H), weight_ih (3H,E), weight_hh (3H,H), bias_ih (3H,), bias_hh (3H,))
    -> h_new (B,H)`` must equal ``nn.GRUCell`` with those weights (in the inputs' dtype), with the
    reference's gradient with respect to every argument."""
    checks = [expect_type(), expect_shape(hint="h_new has the shape of h: (B, H)"),
              expect_dtype(hint=_FLOAT64_HINT)]
    checks += [_slip_check(*slip) for slip in _GRU_SLIPS]
    checks += [_values_check("r = sigmoid(...), z = sigmoid(...), n = tanh(...); rows of the "
                             "weights are stacked (r, z, n)"),
               expect_inputs_unchanged(),
               expect_grad(hint="every input and parameter (x, h, both weights, both biases) must "
                                "reach h_new through differentiable operations: no .detach(), .data, "
                                ".item(), .tolist() or torch.tensor(...) copies")]
    return check_function(gru_step, reference_gru_step, GRU_CASES, checks)


# =============================================================================================
# 2. Greedy decoding by hand
# =============================================================================================

@dataclass
class ScriptState:
    """The scripted model's state: how many ordinary tokens each sentence still has to write."""

    remaining: torch.Tensor  # (B,) long
    attn: None = None


class ScriptedModel(nn.Module):
    """A decoder with known behaviour, so a checker can tell *why* a decoding loop is wrong.

    Sentence i writes ``src_lengths[i] - 1`` ordinary tokens, then <eos>, then (if someone keeps
    asking) more ordinary tokens. Each token depends on the previous one fed in:
    next = 4 + (y_prev + 2) mod (V - 4), a cycle through the ids 4..10, so a loop that does not
    feed back its own choice writes something else.
    """

    vocab_size = 11

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> ScriptState:
        return ScriptState(remaining=src_lengths.clone().long() - 1)

    def decode_step(self, y_prev: torch.Tensor, state: ScriptState) -> tuple[torch.Tensor, ScriptState]:
        V = self.vocab_size
        token = 4 + (y_prev.long() + 2) % (V - 4)                          # (B,)
        token = torch.where(state.remaining == 0, torch.full_like(token, EOS_IDX), token)
        logits = torch.full((y_prev.size(0), V), -5.0)
        logits[torch.arange(y_prev.size(0)), token] = 5.0                  # (B, V)
        return logits, ScriptState(remaining=state.remaining - 1)

    def forward(self, *args, **kwargs):  # pragma: no cover - only decoding is exercised
        raise NotImplementedError("ScriptedModel only supports encode / decode_step")


class ModeRecorder(nn.Module):
    """Wraps a model and records, at every ``encode`` and ``decode_step``, whether it was in
    training mode: with dropout that is the difference between decoding and decoding noise."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.modes: list[bool] = []  # self.training at each call

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Any:
        self.modes.append(self.training)
        return self.model.encode(src, src_lengths)

    def decode_step(self, y_prev: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        self.modes.append(self.training)
        return self.model.decode_step(y_prev, state)

    def forward(self, *args, **kwargs):  # pragma: no cover - only decoding is exercised
        return self.model(*args, **kwargs)


def reference_greedy(model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor,
                     max_len: int) -> list[list[int]]:
    """The package's greedy decoder, called the way the exercise calls the learner's."""
    return greedy_decode(model, src, src_lengths, max_len=max_len)


def _greedy_rows(model, src, src_lengths, max_len, carry_state: bool = True) -> list[list[int]]:
    """Greedy choices of all ``max_len`` steps, <eos> and whatever follows it included (dropout
    off). ``carry_state=False``: the slip of passing the encoder's state to every step."""
    with evaluating(model):
        first = state = model.encode(src, src_lengths)
        y = torch.full((src.size(0),), SOS_IDX, dtype=torch.long)
        rows = []
        for _ in range(max_len):
            logits, state = model.decode_step(y, state if carry_state else first)
            y = logits.argmax(-1)
            rows.append(y)
    return torch.stack(rows, 1).tolist()


def _cut(rows: list[list[int]]) -> list[list[int]]:
    return [r[:r.index(EOS_IDX)] if EOS_IDX in r else r for r in rows]


def _greedy_feeding_sos(model, src, src_lengths, max_len):
    """A loop that always feeds <sos> instead of its own previous choice (a classic slip)."""
    state = model.encode(src, src_lengths)
    B = src.size(0)
    y0 = torch.full((B,), SOS_IDX, dtype=torch.long)
    rows = []
    with torch.no_grad():
        for _ in range(max_len):
            logits, state = model.decode_step(y0, state)
            rows.append(logits.argmax(-1))
    out = torch.stack(rows, 1).tolist()
    return [r[:r.index(EOS_IDX)] if EOS_IDX in r else r for r in out]


def _as_lists(got: Any) -> list[list[int]] | None:
    """The output as plain lists of ints, or None when it is not list-of-lists of ints."""
    if not isinstance(got, (list, tuple)):
        return None
    rows = []
    for row in got:
        if isinstance(row, torch.Tensor) or not isinstance(row, (list, tuple)):
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in row):
            return None
        rows.append(list(row))
    return rows


def _greedy_checks() -> list[Check]:
    def kind(t: Trial) -> str | None:
        if _as_lists(t.got) is not None:
            return None
        return (f"expected a list with one list of ints per sentence, got {type(t.got).__name__}"
                + (" of tensors/other" if isinstance(t.got, (list, tuple)) else "")
                + "; convert with tensor.tolist()")

    def one_per_sentence(t: Trial) -> str | None:
        B = t.case.args[1].size(0)
        return None if len(t.got) == B else f"expected {B} outputs (one per sentence), got {len(t.got)}"

    def dropout_off(t: Trial) -> str | None:
        modes = getattr(t.args[0], "modes", None)
        if not modes or not any(modes):
            return None
        return ("the model was in training mode while your loop called it, so dropout was on and "
                "the tokens were noisy: call model.eval() before decoding")

    def mode_restored(t: Trial) -> str | None:
        before, after = t.case.args[0].training, t.args[0].training
        if before == after:
            return None
        return (f"the model was in {'training' if before else 'eval'} mode before your function and in "
                f"{'training' if after else 'eval'} mode after it: put it back (was_training = "
                f"model.training; model.eval(); ...; model.train(was_training)), otherwise decoding a "
                f"few examples in the middle of training switches dropout off for the rest of it")

    def no_specials(t: Trial) -> str | None:
        for i, row in enumerate(_as_lists(t.got)):
            if row[:1] == [SOS_IDX]:
                return f"output {i} starts with <sos> (id {SOS_IDX}): return only the generated tokens"
            if EOS_IDX in row:
                return (f"output {i} contains <eos> (id {EOS_IDX}) at position {row.index(EOS_IDX)}: "
                        f"cut each sentence just before its first <eos>")
        return None

    def max_len(t: Trial) -> str | None:
        limit = t.case.args[3]
        for i, row in enumerate(_as_lists(t.got)):
            if len(row) > limit:
                return f"output {i} has {len(row)} tokens but max_len = {limit}: stop after max_len steps"
        return None

    def feeds_back(t: Trial) -> str | None:
        got = _as_lists(t.got)
        if got == t.expected:
            return None
        args, _ = t.case.fresh()
        if got == _greedy_feeding_sos(*args):
            return ("your output matches a loop that feeds <sos> at every step: after each step, the "
                    "next input must be the token just chosen (y = logits.argmax(-1))")
        return None

    def carries_state(t: Trial) -> str | None:
        got = _as_lists(t.got)
        if got == t.expected:
            return None
        args, _ = t.case.fresh()
        if got == _cut(_greedy_rows(*args, carry_state=False)):
            return ("your output matches a loop that passes the encoder's first state to every step: "
                    "keep the state that decode_step returns and pass it to the next step "
                    "(logits, state = model.decode_step(y, state))")
        return None

    def all_steps(t: Trial) -> str | None:
        got = _as_lists(t.got)
        limit = t.case.args[3]
        if got == t.expected or limit < 2:
            return None
        args, _ = t.case.fresh()
        if got == reference_greedy(*args[:3], limit - 1):
            i = next(i for i, (g, e) in enumerate(zip(got, t.expected)) if g != e)
            return (f"output {i} has {len(got[i])} tokens, expected {len(t.expected[i])}: your loop runs "
                    f"max_len - 1 = {limit - 1} steps; a sentence without <eos> gets max_len = {limit} "
                    f"tokens, so loop `for _ in range(max_len)`")
        return None

    def stops_each(t: Trial) -> str | None:
        got = _as_lists(t.got)
        args, _ = t.case.fresh()
        full = _greedy_rows(*args)  # every step's choice, nothing cut
        for i, (g, e) in enumerate(zip(got, t.expected)):
            after_eos = full[i][len(e) + 1:len(e) + 2]  # the token chosen right after the <eos>
            if (len(g) > len(e) and g[:len(e)] == e and full[i][len(e):len(e) + 1] == [EOS_IDX]
                    and g[len(e):len(e) + 1] == after_eos):
                return (f"output {i} continues after <eos>: expected {e}, got {g}; a sentence is "
                        f"finished at its first <eos>, whatever comes later")
            if len(g) < len(e) and e[:len(g)] == g:
                return (f"output {i} stops too early: expected {e}, got {g}; keep decoding until "
                        f"EVERY sentence has produced <eos> (or max_len), not just the first one")
        return None

    def values(t: Trial) -> str | None:
        got = _as_lists(t.got)
        for i, (g, e) in enumerate(zip(got, t.expected)):
            if g != e:
                return f"output {i}: expected {e}, got {g}"
        return None

    return [Check("returns list[list[int]]", kind), Check("one output per sentence", one_per_sentence),
            Check("dropout off while decoding", dropout_off),
            Check("restores the training mode", mode_restored),
            Check("no <sos>/<eos> in the output", no_specials), Check("max_len", max_len),
            Check("feeds back its own prediction", feeds_back),
            Check("carries the decoder state", carries_state),
            Check("runs max_len steps", all_steps),
            Check("stops at <eos>, sentence by sentence", stops_each),
            Check("values", values, "y_0 = <sos>; y_t = argmax of decode_step's logits"),
            expect_inputs_unchanged()]


def _greedy_cases() -> list[Case]:
    scripted = ScriptedModel()
    src = torch.full((4, 7), 5, dtype=torch.long)
    with torch.random.fork_rng(devices=[]):  # importing the checkers must not touch the global RNG
        torch.manual_seed(0)
        # untrained, but with this seed its three sentences stop after 3 tokens, never, and 1 token
        real = make_rnn_seq2seq(9, 9, emb_dim=8, hidden_dim=12, cell="gru", mode="cho")
        # the same kind of model with dropout, in training mode as a model is during training
        noisy = ModeRecorder(make_rnn_seq2seq(9, 9, emb_dim=8, hidden_dim=12, cell="gru", mode="cho",
                                              dropout=0.5)).train()
    g = torch.Generator().manual_seed(1)
    real_src = torch.randint(4, 9, (3, 5), generator=g)
    return [
        Case("scripted, lengths differ", (scripted, src, torch.tensor([4, 1, 7, 3]), 10)),
        Case("scripted, one sentence", (scripted, src[:1], torch.tensor([5]), 10)),
        Case("scripted, max_len cuts", (scripted, src[:2], torch.tensor([7, 2]), 3)),
        Case("a small GRU seq2seq", (real, real_src, torch.tensor([5, 3, 4]), 8)),
        Case("a GRU seq2seq with dropout 0.5, in training mode", (noisy, real_src, torch.tensor([5, 3, 4]), 8)),
    ]


GREEDY_CASES = _greedy_cases()


def check_greedy_decode(greedy: Callable) -> bool:
    """``greedy(model, src (B,S), src_lengths (B,), max_len) -> list[list[int]]``: token ids per
    sentence without <sos>/<eos>, equal to ``s2s_course.decode.greedy_decode``; dropout off while
    decoding (``model.eval()``) and the model's mode restored afterwards, inputs unchanged."""
    return check_function(greedy, reference_greedy, GREEDY_CASES, _greedy_checks())


# =============================================================================================
# 3. One LSTM step by hand
# =============================================================================================

def reference_lstm_step(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weight_ih: torch.Tensor,
                        weight_hh: torch.Tensor, bias_ih: torch.Tensor,
                        bias_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.nn.LSTMCell`` run with the given weights: x (B, E), h, c (B, H) -> (h_new, c_new).

    PyTorch's layout: rows [0:H] of the weights are the input gate i, [H:2H] the forget gate f,
    [2H:3H] the candidate g, [3H:4H] the output gate o.
    """
    hidden, emb = weight_hh.size(1), weight_ih.size(1)
    cell = nn.LSTMCell(emb, hidden, dtype=x.dtype)
    params = {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias_ih": bias_ih, "bias_hh": bias_hh}
    h_new, c_new = functional_call(cell, params, (x, (h, c)))
    return h_new, c_new


_GATES = ("i", "f", "g", "o")


def _lstm_variant(x, h, c, w_ih, w_hh, b_ih, b_hh, *, order=(0, 1, 2, 3), gate=torch.sigmoid,
                  candidate=torch.tanh, squash_cell=True, h_from_old_c=False, use_b_ih=True,
                  use_b_hh=True) -> tuple[torch.Tensor, torch.Tensor]:
    """An LSTM step with one of the classic slips switched on (used to diagnose a wrong answer).
    ``order[k]``: which block of rows is read as gate k of (i, f, g, o)."""
    H = h.size(1)
    pre = (x @ w_ih.T + (b_ih if use_b_ih else 0)) + (h @ w_hh.T + (b_hh if use_b_hh else 0))  # (B, 4H)
    i, f, g, o = (pre[:, order[k] * H:(order[k] + 1) * H] for k in range(4))
    i, f, o, g = gate(i), gate(f), gate(o), candidate(g)
    c_new = f * c + i * g                                                                     # (B, H)
    cell = c if h_from_old_c else c_new
    h_new = o * (torch.tanh(cell) if squash_cell else cell)
    return h_new, c_new


def _lstm_slips() -> list[tuple[str, dict[str, Any], str]]:
    """Property name, slip (keyword arguments of ``_lstm_variant``), what to tell the learner."""
    slips = []
    for order in itertools.permutations(range(4)):
        if order == (0, 1, 2, 3):
            continue
        read = ", ".join(f"{_GATES[k]} = rows [{_block(order[k])}]" for k in range(4))
        slips.append(("gate order (i, f, g, o)", {"order": order},
                      f"your result matches a cell that reads {read}; PyTorch stacks the rows as i = "
                      f"[0:H], f = [H:2H], g = [2H:3H], o = [3H:4H]"))
    slips += [
        ("activations", {"gate": torch.tanh, "candidate": torch.sigmoid},
         "your result matches a cell with tanh and sigmoid swapped: the gates i, f, o use sigmoid "
         "(values in (0, 1), how much passes), the candidate g uses tanh (values in (-1, 1))"),
        ("activations", {"candidate": torch.sigmoid},
         "your result matches a cell with g = sigmoid(...): the candidate g uses tanh, so that it "
         "can add negative values to the cell"),
        ("activations", {"squash_cell": False},
         "your result matches h_new = o * c_new: the cell goes through tanh first, "
         "h_new = o * tanh(c_new)"),
        ("h_new from the new cell", {"h_from_old_c": True},
         "your result matches h_new = o * tanh(c), with the OLD cell: compute c_new first, then "
         "h_new = o * tanh(c_new)"),
        ("biases", {"use_b_ih": False}, "your result matches a step without bias_ih: add it to the "
                                        "input projections of all four gates"),
        ("biases", {"use_b_hh": False}, "your result matches a step without bias_hh: add it to the "
                                        "hidden projections of all four gates"),
        ("biases", {"use_b_ih": False, "use_b_hh": False},
         "your result matches a step without biases: add bias_ih and bias_hh"),
    ]
    return slips


def _block(k: int) -> str:
    return ["0:H", "H:2H", "2H:3H", "3H:4H"][k]


def _pair(got: Any) -> bool:
    return (isinstance(got, (tuple, list)) and len(got) == 2
            and all(isinstance(v, torch.Tensor) for v in got))


def _lstm_checks() -> list[Check]:
    def returns_pair(t: Trial) -> str | None:
        if _pair(t.got):
            return None
        if isinstance(t.got, torch.Tensor):
            return "expected a pair (h_new, c_new), got a single tensor: return the new cell as well"
        return f"expected a pair of tensors (h_new, c_new), got {type(t.got).__name__}"

    def output_order(t: Trial) -> str | None:
        h_want, c_want = (v.detach() for v in t.expected)
        if (not _matches(t.got[0], h_want) and _matches(t.got[0], c_want)
                and _matches(t.got[1], h_want)):
            return "you returned (c_new, h_new); return (h_new, c_new), as nn.LSTMCell does"
        return None

    def cell_updated(t: Trial) -> str | None:
        c_old, c_want = t.case.args[2], t.expected[1].detach()
        if not _matches(t.got[1], c_want) and _matches(t.got[1], c_old):
            return ("c_new equals the old cell c: update it, c_new = f * c + i * g (forget part of the "
                    "old memory, add the gated candidate)")
        return None

    def slip(name: str, variants: list[tuple[dict[str, Any], str]]) -> Check:
        """Fails when the learner's pair equals the pair of one of the known slips ``variants``."""
        def fn(t: Trial) -> str | None:
            want = [v.detach() for v in t.expected]
            if all(_matches(g, w) for g, w in zip(t.got, want)):
                return None
            args, _ = t.case.fresh()
            for kwargs, message in variants:
                with torch.no_grad():
                    wrong = _lstm_variant(*args, **kwargs)
                if all(_matches(g, w) for g, w in zip(t.got, wrong)):
                    return message
            return None

        return Check(name, fn)

    def values(item: int, name: str, formula: str) -> Check:
        def fn(t: Trial) -> str | None:
            got, want = t.got[item].detach().to(t.expected[item].dtype), t.expected[item].detach()
            if torch.allclose(got, want, atol=1e-5, rtol=1e-4):
                return None
            diff = (got - want).abs()
            where = tuple(torch.nonzero(diff == diff.max())[0].tolist())
            return (f"{name} differs from nn.LSTMCell: largest difference {diff.max().item():.3g} at "
                    f"{list(where)} (expected {want[where].item():.4g}, got {got[where].item():.4g}); "
                    f"{formula}")

        return Check(f"values of {name}", fn)

    grad_hint = ("every input and parameter (x, h, c, both weights, both biases) must reach the output "
                 "through differentiable operations: no .detach(), .data, .item() or torch.tensor(...) copies")
    by_property: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for name, kwargs, message in _lstm_slips():
        by_property.setdefault(name, []).append((kwargs, message))
    checks = [Check("returns (h_new, c_new)", returns_pair), Check("output order", output_order),
              expect_type(item=0), expect_type(item=1),
              expect_shape(item=0, hint="h_new has the shape of h: (B, H)"),
              expect_shape(item=1, hint="c_new has the shape of c: (B, H)"),
              expect_dtype(item=0, hint=_FLOAT64_HINT), expect_dtype(item=1, hint=_FLOAT64_HINT),
              Check("cell updated", cell_updated)]
    checks += [slip(name, variants) for name, variants in by_property.items()]
    checks += [values(1, "c_new", "c_new = f * c + i * g with i, f, o = sigmoid(...), g = tanh(...)"),
               values(0, "h_new", "h_new = o * tanh(c_new)"),
               expect_inputs_unchanged(),
               expect_grad(item=0, hint=grad_hint), expect_grad(item=1, hint=grad_hint)]
    return checks


def _lstm_case(name: str, B: int, E: int, H: int, seed: int, zero_state: bool = False,
               dtype: torch.dtype = torch.float32) -> Case:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, E, generator=g)
    h = torch.zeros(B, H) if zero_state else torch.randn(B, H, generator=g).tanh()
    c = torch.zeros(B, H) if zero_state else torch.randn(B, H, generator=g)
    w_ih, w_hh = torch.randn(4 * H, E, generator=g) * 0.7, torch.randn(4 * H, H, generator=g) * 0.7
    b_ih, b_hh = torch.randn(4 * H, generator=g) * 0.5, torch.randn(4 * H, generator=g) * 0.5
    return Case(name, tuple(t.to(dtype) for t in (x, h, c, w_ih, w_hh, b_ih, b_hh)))


LSTM_CASES = [
    _lstm_case("batch of 3, E=4, H=5", B=3, E=4, H=5, seed=10),
    _lstm_case("batch of 1", B=1, E=4, H=5, seed=11),
    _lstm_case("first step, h = c = 0", B=2, E=3, H=6, seed=12, zero_state=True),
    _lstm_case("E > H", B=4, E=7, H=2, seed=13),
    _lstm_case("float64 inputs and weights", B=3, E=4, H=5, seed=14, dtype=torch.float64),
]


def check_lstm_step(lstm_step: Callable) -> bool:
    """``lstm_step(x (B,E), h (B,H), c (B,H), weight_ih (4H,E), weight_hh (4H,H), bias_ih (4H,),
    bias_hh (4H,)) -> (h_new, c_new)``, both (B, H), must equal ``nn.LSTMCell`` with those weights
    (gate rows i, f, g, o; in the inputs' dtype), with the reference's gradients with respect to
    every argument, and leave its inputs unchanged."""
    return check_function(lstm_step, reference_lstm_step, LSTM_CASES, _lstm_checks())


__all__ = ["check_gru_step", "check_greedy_decode", "check_lstm_step", "reference_gru_step",
           "reference_greedy", "reference_lstm_step", "ModeRecorder", "ScriptedModel", "GRU_CASES",
           "GREEDY_CASES", "LSTM_CASES"]
