"""Chapter 2 checkers: they accept correct code (the package's and the notebook's solutions) and
reject plausible mistakes with a message that names the mistake."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from s2s_course.data.specials import EOS_IDX, SOS_IDX
from s2s_course.decode import greedy_decode
from s2s_course.exercises import ExerciseFailed, check_greedy_decode, check_gru_step
from s2s_course.exercises.ch02 import GREEDY_CASES, GRU_CASES, ScriptedModel, reference_gru_step
from tests.nbtools import chapter, run_solution


def failure(checker, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        checker(fn)
    return str(info.value)


# --- one GRU step -------------------------------------------------------------------------------

def gru_step_variant(x, h, weight_ih, weight_hh, bias_ih, bias_hh, *, order=(0, 1, 2),
                     swap_update=False, reset_inside=False, drop_bias_hh=False, candidate=torch.tanh):
    """Written independently of the checker's own diagnostics: split with chunk, not slicing."""
    gi = x @ weight_ih.T + bias_ih                      # (B, 3H)
    gh = h @ weight_hh.T + (0 if drop_bias_hh else bias_hh)
    gi_parts, gh_parts = gi.chunk(3, dim=1), gh.chunk(3, dim=1)
    i_r, i_z, i_n = (gi_parts[k] for k in order)
    h_r, h_z, h_n = (gh_parts[k] for k in order)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    if reset_inside:
        H = h.size(1)
        W_hn = weight_hh[2 * H:]
        b_hn = 0 if drop_bias_hh else bias_hh[2 * H:]
        n = candidate(i_n + (r * h) @ W_hn.T + b_hn)
    else:
        n = candidate(i_n + r * h_n)
    return z * n + (1 - z) * h if swap_update else (1 - z) * n + z * h


def test_reference_equals_a_hand_computed_scalar_gru():
    # H = E = 1: every gate is a scalar, computed here with math by hand.
    import math

    x, h = 0.5, -0.3
    w_ih, w_hh = [0.2, -0.4, 0.9], [0.7, 0.1, -0.5]
    b_ih, b_hh = [0.1, 0.0, -0.2], [0.05, 0.3, 0.4]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    r = sig(w_ih[0] * x + b_ih[0] + w_hh[0] * h + b_hh[0])
    z = sig(w_ih[1] * x + b_ih[1] + w_hh[1] * h + b_hh[1])
    n = math.tanh(w_ih[2] * x + b_ih[2] + r * (w_hh[2] * h + b_hh[2]))
    expected = (1 - z) * n + z * h
    t = lambda v: torch.tensor(v).view(-1, 1)  # noqa: E731
    got = reference_gru_step(torch.tensor([[x]]), torch.tensor([[h]]), t(w_ih), t(w_hh),
                             torch.tensor(b_ih), torch.tensor(b_hh))
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_gru_checker_accepts_the_reference_and_a_hand_written_step(capsys):
    assert check_gru_step(reference_gru_step) is True
    assert check_gru_step(gru_step_variant) is True
    assert "✓ all" in capsys.readouterr().out


def test_gru_checker_accepts_the_notebook_solution():
    solution = run_solution(chapter("02"), "ex-02-gru-step")
    assert check_gru_step(solution.gru_step) is True


@pytest.mark.parametrize("kwargs, property_name, words", [
    ({"order": (1, 0, 2)}, "gate order (r, z, n)", "rows [0:H]"),
    ({"swap_update": True}, "update gate interpolation", "(1 - z) * n + z * h"),
    ({"reset_inside": True}, "reset gate placement", "r * (W_hn h + b_hn)"),
    ({"drop_bias_hh": True}, "biases", "bias_hh"),
    ({"candidate": torch.sigmoid}, "values", "differs from nn.GRUCell"),
])
def test_gru_checker_names_the_mistake(kwargs, property_name, words):
    msg = failure(check_gru_step, lambda *a: gru_step_variant(*a, **kwargs))
    assert f"check '{property_name}'" in msg
    assert words in msg


def test_gru_checker_rejects_wrong_shape_and_broken_gradient():
    msg = failure(check_gru_step, lambda *a: gru_step_variant(*a).T)
    assert "check 'shape'" in msg and "expected shape (3, 5), got (5, 3)" in msg
    msg = failure(check_gru_step, lambda x, h, *w: gru_step_variant(x, h.detach(), *w).detach())
    assert "check 'gradient flows'" in msg


def test_gru_cases_cover_a_zero_state_and_batch_of_one():
    names = [c.name for c in GRU_CASES]
    assert any("h = 0" in n for n in names) and any("batch of 1" in n for n in names)
    zero = next(c for c in GRU_CASES if "h = 0" in c.name)
    assert torch.count_nonzero(zero.args[1]) == 0


# --- greedy decoding ----------------------------------------------------------------------------

def my_greedy(model, src, src_lengths, max_len, *, feed_sos=False, keep_eos=False,
              stop_on_first=False, cut=True, as_tensors=False):
    """A greedy loop written for the tests, with switches for the classic mistakes."""
    state = model.encode(src, src_lengths)
    B = src.size(0)
    y = torch.full((B,), SOS_IDX, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    steps = []
    with torch.no_grad():
        for _ in range(max_len):
            logits, state = model.decode_step(torch.full_like(y, SOS_IDX) if feed_sos else y, state)
            y = logits.argmax(dim=-1)
            steps.append(y)
            done |= y == EOS_IDX
            if (stop_on_first and bool(done.any())) or bool(done.all()):
                break
    rows = torch.stack(steps, dim=1).tolist()
    out = []
    for row in rows:
        if cut and EOS_IDX in row:
            row = row[:row.index(EOS_IDX) + (1 if keep_eos else 0)]
        out.append(torch.tensor(row) if as_tensors else row)
    return out


def test_scripted_model_behaves_as_documented():
    model = ScriptedModel()
    out = greedy_decode(model, torch.zeros(3, 4, dtype=torch.long), torch.tensor([4, 1, 2]), max_len=9)
    assert out == [[7, 6, 5], [], [7]]


def test_greedy_checker_accepts_reference_an_independent_loop_and_the_notebook_solution():
    assert check_greedy_decode(lambda m, s, l, n: greedy_decode(m, s, l, max_len=n)) is True
    assert check_greedy_decode(my_greedy) is True
    solution = run_solution(chapter("02"), "ex-02-greedy")
    assert check_greedy_decode(solution.greedy) is True


@pytest.mark.parametrize("kwargs, property_name, words", [
    ({"feed_sos": True}, "feeds back its own prediction", "feeds <sos> at every step"),
    ({"keep_eos": True}, "no <sos>/<eos> in the output", "contains <eos>"),
    ({"cut": False}, "no <sos>/<eos> in the output", "contains <eos>"),
    ({"stop_on_first": True}, "stops at <eos>, sentence by sentence", "stops too early"),
    ({"as_tensors": True}, "returns list[list[int]]", "tolist()"),
])
def test_greedy_checker_names_the_mistake(kwargs, property_name, words):
    msg = failure(check_greedy_decode, lambda m, s, l, n: my_greedy(m, s, l, n, **kwargs))
    assert f"check '{property_name}'" in msg
    assert words in msg


def test_greedy_checker_catches_ignoring_max_len_and_continuing_after_eos():
    msg = failure(check_greedy_decode, lambda m, s, l, n: my_greedy(m, s, l, n + 2))
    assert "check 'max_len'" in msg

    def continues(m, s, l, n):  # drops the <eos> but keeps what follows it
        state, B = m.encode(s, l), s.size(0)
        y, rows = torch.full((B,), SOS_IDX, dtype=torch.long), [[] for _ in range(B)]
        for _ in range(n):
            logits, state = m.decode_step(y, state)
            y = logits.argmax(-1)
            for i, v in enumerate(y.tolist()):
                if v != EOS_IDX:
                    rows[i].append(v)
        return rows

    msg = failure(check_greedy_decode, continues)
    assert "check 'stops at <eos>, sentence by sentence'" in msg and "continues after <eos>" in msg


def test_greedy_checker_reports_the_wrong_number_of_outputs():
    msg = failure(check_greedy_decode, lambda m, s, l, n: my_greedy(m, s, l, n)[:-1] or [[0]])
    assert "check 'one output per sentence'" in msg


def test_greedy_cases_include_an_empty_output_and_a_real_model():
    outputs = [greedy_decode(c.args[0], c.args[1], c.args[2], max_len=c.args[3]) for c in GREEDY_CASES]
    assert any([] in out for out in outputs)
    assert any(isinstance(c.args[0], nn.Module) and not isinstance(c.args[0], ScriptedModel)
               for c in GREEDY_CASES)


def test_greedy_checker_rejects_other_output_types_a_leading_sos_and_wrong_tokens():
    msg = failure(check_greedy_decode, lambda m, s, l, n: torch.zeros(s.size(0), n, dtype=torch.long))
    assert "check 'returns list[list[int]]'" in msg and "got Tensor" in msg
    msg = failure(check_greedy_decode,
                  lambda m, s, l, n: [[float(v) for v in r] for r in my_greedy(m, s, l, n)])
    assert "check 'returns list[list[int]]'" in msg
    msg = failure(check_greedy_decode, lambda m, s, l, n: [[SOS_IDX] + r for r in my_greedy(m, s, l, n)])
    assert "check 'no <sos>/<eos> in the output'" in msg and "starts with <sos>" in msg

    def least_likely(model, src, src_lengths, max_len):  # argmin instead of argmax
        state, B = model.encode(src, src_lengths), src.size(0)
        y, rows = torch.full((B,), SOS_IDX, dtype=torch.long), []
        for _ in range(max_len):
            logits, state = model.decode_step(y, state)
            y = logits.argmin(dim=-1)
            rows.append(y)
        out = torch.stack(rows, 1).tolist()
        return [r[:r.index(EOS_IDX)] if EOS_IDX in r else r for r in out]

    msg = failure(check_greedy_decode, least_likely)
    assert "check 'values'" in msg and "output 0: expected" in msg


def test_importing_the_checkers_leaves_the_global_rng_alone():
    import importlib

    import s2s_course.exercises.ch02 as ch02

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    importlib.reload(ch02)
    assert torch.equal(torch.rand(3), expected)
