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
              stop_on_first=False, cut=True, as_tensors=False, eval_mode=True, restore=True,
              carry_state=True, steps=None, mutate=False):
    """A greedy loop written for the tests, with switches for the classic mistakes."""
    was_training = model.training
    if eval_mode:
        model.eval()
    first = state = model.encode(src, src_lengths)
    B = src.size(0)
    y = torch.full((B,), SOS_IDX, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    outputs = []
    with torch.no_grad():
        for _ in range(max_len if steps is None else steps(max_len)):
            y_in = torch.full_like(y, SOS_IDX) if feed_sos else y
            logits, state = model.decode_step(y_in, state if carry_state else first)
            y = logits.argmax(dim=-1)
            outputs.append(y)
            done |= y == EOS_IDX
            if (stop_on_first and bool(done.any())) or bool(done.all()):
                break
    if restore:
        model.train(was_training)
    if mutate:
        src_lengths.clamp_(max=max_len)  # e.g. "no sentence is longer than max_len"
    rows = torch.stack(outputs, dim=1).tolist()
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
    ({"eval_mode": False}, "dropout off while decoding", "call model.eval()"),
    ({"restore": False}, "restores the training mode", "model.train(was_training)"),
    ({"carry_state": False}, "carries the decoder state", "passes the encoder's first state to every step"),
    ({"steps": lambda n: n - 1}, "runs max_len steps", "range(max_len)"),
    ({"mutate": True}, "does not modify its inputs", "'src_lengths' was modified in place"),
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


# --- GRU step: every gradient, float64, in-place ----------------------------------------------

@pytest.mark.parametrize("detach, name", [
    ("x", "'x'"), ("bias_ih", "'bias_ih'"), ("bias_hh", "'bias_hh'"),
])
def test_gru_checker_wants_gradients_for_x_and_both_biases(detach, name):
    def wrong(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
        args = dict(x=x, h=h, weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh)
        args[detach] = args[detach].detach()  # e.g. torch.tensor(bias.tolist()) or bias.data
        return gru_step_variant(**args)

    msg = failure(check_gru_step, wrong)
    assert "check 'gradient flows'" in msg and f"no gradient reaches argument {name}" in msg
    assert "x, h, both weights, both biases" in msg


def test_gru_checker_rejects_a_float32_result_for_float64_inputs():
    msg = failure(check_gru_step, lambda *a: gru_step_variant(*(t.float() for t in a)))
    assert "case 'float64 inputs and weights'" in msg and "check 'dtype'" in msg
    assert "torch.float64" in msg and "float64 too" in msg


def test_gru_checker_rejects_an_in_place_update_of_h():
    def wrong(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
        gi, gh = x @ weight_ih.T + bias_ih, h @ weight_hh.T + bias_hh
        (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3, 1), gh.chunk(3, 1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        with torch.no_grad():
            h.mul_(z).add_((1 - z) * n)  # the caller's h is overwritten
        return h.clone()

    msg = failure(check_gru_step, wrong)
    assert "check 'does not modify its inputs'" in msg and "'h' was modified in place" in msg


def test_gru_cases_include_float64():
    assert any(c.args[0].dtype == torch.float64 and c.args[2].dtype == torch.float64 for c in GRU_CASES)


# --- greedy decoding: dropout, mode, state, max_len ----------------------------------------------

def test_greedy_cases_include_a_model_with_dropout_in_training_mode():
    noisy = [c for c in GREEDY_CASES if type(c.args[0]).__name__ == "ModeRecorder"]  # survives reload()
    assert noisy and noisy[0].args[0].training
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in noisy[0].args[0].modules())
    # without eval() the dropout changes the tokens, so the values alone would catch it too
    model, src, lengths, max_len = noisy[0].fresh()[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        noisy_out = my_greedy(model, src, lengths, max_len, eval_mode=False)
    assert noisy_out != greedy_decode(model, src, lengths, max_len=max_len)


def test_greedy_not_carrying_the_state_is_not_reported_as_continuing_after_eos():
    def wrong(model, src, src_lengths, max_len):
        was = model.training
        model.eval()
        state = model.encode(src, src_lengths)
        y, rows = torch.full((src.size(0),), SOS_IDX, dtype=torch.long), []
        with torch.no_grad():
            for _ in range(max_len):
                logits, _ = model.decode_step(y, state)  # the new state is dropped
                y = logits.argmax(-1)
                rows.append(y)
        model.train(was)
        return [r[:r.index(EOS_IDX)] if EOS_IDX in r else r for r in torch.stack(rows, 1).tolist()]

    msg = failure(check_greedy_decode, wrong)
    assert "check 'carries the decoder state'" in msg and "continues after <eos>" not in msg
    assert "logits, state = model.decode_step(y, state)" in msg


def test_greedy_one_step_short_is_not_reported_as_stopping_too_early():
    msg = failure(check_greedy_decode, lambda m, s, l, n: my_greedy(m, s, l, n, steps=lambda k: k - 1))
    assert "case 'scripted, max_len cuts'" in msg and "check 'runs max_len steps'" in msg
    assert "max_len - 1 = 2 steps" in msg and "EVERY sentence" not in msg


# --- one LSTM step ----------------------------------------------------------------------------

from s2s_course.exercises import check_lstm_step  # noqa: E402
from s2s_course.exercises.ch02 import LSTM_CASES, reference_lstm_step  # noqa: E402


def lstm_step_variant(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, *, order="ifgo", gate=torch.sigmoid,
                      candidate=torch.tanh, update_cell=True, old_cell_for_h=False, drop=None,
                      swap_outputs=False, in_place=False, cast=None):
    """Written for the tests with chunk(4) and names, independent of the checker's diagnostics."""
    b_ih = torch.zeros_like(bias_ih) if drop == "bias_ih" else bias_ih
    b_hh = torch.zeros_like(bias_hh) if drop == "bias_hh" else bias_hh
    blocks = dict(zip(order, (x @ weight_ih.T + b_ih + h @ weight_hh.T + b_hh).chunk(4, dim=1)))
    i, f, o = gate(blocks["i"]), gate(blocks["f"]), gate(blocks["o"])
    g = candidate(blocks["g"])
    if in_place:
        c_new = c.mul_(f).add_(i * g)
    else:
        c_new = f * c + i * g if update_cell else c
    h_new = o * torch.tanh(c if old_cell_for_h else c_new)
    out = (c_new, h_new) if swap_outputs else (h_new, c_new)
    return tuple(v.to(cast) for v in out) if cast else out


def lstm_step_einsum(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """Another independent version: one weight block per gate, einsum, gates named by index."""
    H = h.size(1)
    W_i, W_h = weight_ih.view(4, H, -1), weight_hh.view(4, H, H)     # (4, H, E), (4, H, H)
    pre = (torch.einsum("ghe,be->gbh", W_i, x) + torch.einsum("ghk,bk->gbh", W_h, h)
           + (bias_ih + bias_hh).view(4, 1, H))                       # (4, B, H)
    i, f, o = torch.sigmoid(pre[[0, 1, 3]])
    g = torch.tanh(pre[2])
    c_new = torch.addcmul(f * c, i, g)
    return o * c_new.tanh(), c_new


def test_lstm_reference_equals_a_hand_computed_scalar_lstm():
    import math

    x, h, c = 0.5, -0.3, 0.8
    w_ih, w_hh = [0.2, -0.4, 0.9, 0.3], [0.7, 0.1, -0.5, 0.6]
    b_ih, b_hh = [0.1, 0.0, -0.2, 0.05], [0.05, 0.3, 0.4, -0.1]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    pre = [w_ih[k] * x + b_ih[k] + w_hh[k] * h + b_hh[k] for k in range(4)]
    i, f, g, o = sig(pre[0]), sig(pre[1]), math.tanh(pre[2]), sig(pre[3])
    c_new = f * c + i * g
    h_new = o * math.tanh(c_new)
    t = lambda v: torch.tensor(v).view(-1, 1)  # noqa: E731
    got_h, got_c = reference_lstm_step(torch.tensor([[x]]), torch.tensor([[h]]), torch.tensor([[c]]),
                                       t(w_ih), t(w_hh), torch.tensor(b_ih), torch.tensor(b_hh))
    assert got_h.item() == pytest.approx(h_new, abs=1e-6) and got_c.item() == pytest.approx(c_new, abs=1e-6)


def test_lstm_checker_accepts_the_reference_independent_versions_and_the_solution(capsys):
    assert check_lstm_step(reference_lstm_step) is True
    assert check_lstm_step(lstm_step_variant) is True
    assert check_lstm_step(lstm_step_einsum) is True
    solution = run_solution(chapter("02"), "ex-02-lstm-step")
    assert check_lstm_step(solution.lstm_step) is True
    assert "✓ all" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, property_name, words", [
    ({"order": "ifog"}, "gate order (i, f, g, o)", "g = rows [3H:4H]"),
    ({"order": "figo"}, "gate order (i, f, g, o)", "i = rows [H:2H], f = rows [0:H]"),
    ({"gate": torch.tanh, "candidate": torch.sigmoid}, "activations", "tanh and sigmoid swapped"),
    ({"candidate": torch.sigmoid}, "activations", "g = sigmoid(...)"),
    ({"update_cell": False}, "cell updated", "c_new = f * c + i * g"),
    ({"old_cell_for_h": True}, "h_new from the new cell", "OLD cell"),
    ({"drop": "bias_hh"}, "biases", "without bias_hh"),
    ({"drop": "bias_ih"}, "biases", "without bias_ih"),
    ({"swap_outputs": True}, "output order", "return (h_new, c_new)"),
    ({"in_place": True}, "does not modify its inputs", "'c' was modified in place"),
    ({"cast": torch.float32}, "dtype of output[0]", "float64 too"),
])
def test_lstm_checker_names_the_mistake(kwargs, property_name, words):
    msg = failure(check_lstm_step, lambda *a: lstm_step_variant(*a, **kwargs))
    assert f"check '{property_name}'" in msg
    assert words in msg


def test_lstm_checker_rejects_other_slips_and_shapes():
    def no_tanh_on_cell(x, h, c, *w):
        h_new, c_new = lstm_step_variant(x, h, c, *w)
        o = torch.sigmoid((x @ w[0].T + w[2] + h @ w[1].T + w[3]).chunk(4, 1)[3])
        return o * c_new, c_new

    msg = failure(check_lstm_step, no_tanh_on_cell)
    assert "check 'activations'" in msg and "h_new = o * tanh(c_new)" in msg
    msg = failure(check_lstm_step, lambda *a: lstm_step_variant(*a)[0])
    assert "check 'returns (h_new, c_new)'" in msg and "return the new cell as well" in msg
    msg = failure(check_lstm_step, lambda *a: tuple(v.T for v in lstm_step_variant(*a)))
    assert "check 'shape of output[0]'" in msg
    msg = failure(check_lstm_step, lambda *a: tuple(v * 1.01 for v in lstm_step_variant(*a)))
    assert "check 'values of c_new'" in msg and "differs from nn.LSTMCell" in msg


@pytest.mark.parametrize("detach", ["x", "h", "c", "weight_ih", "weight_hh", "bias_ih", "bias_hh"])
def test_lstm_checker_wants_a_gradient_for_every_argument(detach):
    names = ["x", "h", "c", "weight_ih", "weight_hh", "bias_ih", "bias_hh"]

    def wrong(*args):
        args = [a.detach() if n == detach else a for n, a in zip(names, args)]
        return lstm_step_variant(*args)

    msg = failure(check_lstm_step, wrong)
    assert "check 'gradient flows of output[0]'" in msg and f"no gradient reaches argument '{detach}'" in msg


def test_lstm_cases_cover_batch_of_one_zero_state_and_float64():
    names = [c.name for c in LSTM_CASES]
    assert "batch of 1" in names and any("h = c = 0" in n for n in names)
    assert any(c.args[0].dtype == torch.float64 for c in LSTM_CASES)
