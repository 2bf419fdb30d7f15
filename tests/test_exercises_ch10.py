"""Chapter 10 checker: it accepts correct label-smoothed losses written in several styles and rejects
each typical mistake with a message that names it."""
import math

import pytest
import torch
import torch.nn.functional as F

from s2s_course.exercises import ExerciseFailed, check_label_smoothed_loss
from s2s_course.exercises.ch10 import _cases, reference_label_smoothed_loss
from s2s_course.train import sequence_loss
from tests.nbtools import CHAPTERS, chapter, run_solution


def failure(fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check_label_smoothed_loss(fn)
    return str(info.value)


# --- the reference against independent computations -------------------------------------------

def test_reference_by_hand():
    # V = 3, eps = 0.3, pad_idx = 0; q puts eps/V = 0.1 on every class and 1 - eps + 0.1 = 0.8 on the target
    logits = torch.tensor([[[0.0, math.log(2), math.log(5)],   # p = 1/8, 2/8, 5/8; target 2
                            [0.0, 0.0, 0.0],                   # p = 1/3 each;      target 1
                            [9.0, -3.0, 4.0]]])                # padding: must not count
    targets = torch.tensor([[2, 1, 0]])
    first = -(0.1 * math.log(1 / 8) + 0.1 * math.log(2 / 8) + 0.8 * math.log(5 / 8))
    second = math.log(3)                                       # any q against a uniform p
    loss = reference_label_smoothed_loss(logits, targets, 0.3, 0)
    assert loss.shape == ()
    torch.testing.assert_close(loss, torch.tensor((first + second) / 2))


def test_reference_keeps_the_dtype_and_equals_the_chapter_loss():
    for case in _cases():
        logits, targets, eps, pad_idx = case.args
        loss = reference_label_smoothed_loss(logits, targets, eps, pad_idx)
        assert loss.dtype == logits.dtype and loss.shape == () and torch.isfinite(loss)
        torch.testing.assert_close(loss.float(), sequence_loss(logits, targets, pad_idx=pad_idx,
                                                               label_smoothing=eps))


def test_the_cases_test_what_they_say():
    cases = {c.name: c.args for c in _cases()}
    pads = [p for _, _, _, p in cases.values()]
    assert 0 in pads and any(p != 0 for p in pads)
    assert any(eps == 0 for _, _, eps, _ in cases.values())
    assert any((t == p).all(1).any() for _, t, _, p in cases.values())              # an all-pad sentence
    assert any(x.dtype == torch.float64 for x, _, _, _ in cases.values())
    for x, t, _, p in cases.values():
        assert t.dtype == torch.int64 and (t != p).any()                              # never 0 / 0
    # the large case really breaks log(softmax(x)) in float32
    large = [x for x, _, _, _ in cases.values() if x.abs().max() >= 50]
    assert large and all((torch.softmax(x, -1) == 0).any() for x in large)


# --- correct code passes -------------------------------------------------------------------

def by_gather(logits, targets, eps, pad_idx):
    logp = torch.log_softmax(logits, dim=-1)                              # (B, T, V)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)             # (B, T)
    uniform = -logp.mean(dim=-1)                                          # (B, T)
    loss = (1 - eps) * nll + eps * uniform
    real = targets != pad_idx
    return loss[real].mean()


def by_smoothed_distribution(logits, targets, eps, pad_idx):
    V = logits.size(-1)
    q = (1 - eps) * F.one_hot(targets, V).to(logits.dtype) + eps / V     # (B, T, V)
    per_token = -(q * F.log_softmax(logits, dim=-1)).sum(-1)              # (B, T)
    real = (targets != pad_idx).to(logits.dtype)
    return (per_token * real).sum() / real.sum()


def by_nll_loss(logits, targets, eps, pad_idx):
    V = logits.size(-1)
    logp = (logits - logits.logsumexp(-1, keepdim=True)).reshape(-1, V)   # (B*T, V)
    flat = targets.reshape(-1)
    real = flat != pad_idx
    nll = F.nll_loss(logp, flat, ignore_index=pad_idx)
    return (1 - eps) * nll + eps * (-logp[real].mean())


def by_loop(logits, targets, eps, pad_idx):
    B, T, V = logits.shape
    total, count = logits.new_zeros(()), 0
    for b in range(B):
        for t in range(T):
            y = int(targets[b, t])
            if y == pad_idx:
                continue
            logp = torch.log_softmax(logits[b, t], dim=0)
            total = total - sum(((1 - eps) * (k == y) + eps / V) * logp[k] for k in range(V))
            count += 1
    return total / count


@pytest.mark.parametrize("fn", [reference_label_smoothed_loss, by_gather, by_smoothed_distribution,
                                by_nll_loss, by_loop])
def test_accepts_correct_versions(fn, capsys):
    assert check_label_smoothed_loss(fn)
    assert "✓ all" in capsys.readouterr().out


@pytest.mark.skipif(not sorted(CHAPTERS.glob("10_*.ipynb")), reason="chapter 10 notebook not written yet")
def test_the_chapter_solution_passes():
    solution = run_solution(chapter("10"), "ex-label-smoothing")
    assert check_label_smoothed_loss(solution.label_smoothed_loss)


# --- wrong code fails and says why -----------------------------------------------------------

def smoothed(logits, targets, eps, pad_idx, dim=-1, log=True, a=None, b=None, reduce="mean",
             other=None):
    """A correct loss with switches; each non-default switch is one mistake."""
    V = logits.size(-1)
    p = torch.log_softmax(logits, dim) if log else torch.softmax(logits, dim)
    nll = -p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)                # (B, T)
    total = -p.sum(-1)                                                    # (B, T)
    a = 1 - eps if a is None else a
    b = eps / V if b is None else b
    loss = a * nll + b * (total if other is None else other(p, nll, total))
    real = (targets != pad_idx).to(loss.dtype)
    if reduce == "mean":
        return (loss * real).sum() / real.sum()
    if reduce == "sum":
        return (loss * real).sum()
    if reduce == "all":
        return loss.mean()
    if reduce == "zeroed":
        return (loss * real).sum() / loss.numel()
    if reduce == "sentence":
        return ((loss * real).sum(1) / real.sum(1)).mean()
    raise ValueError(reduce)


def test_the_helper_is_right_with_its_defaults():
    assert check_label_smoothed_loss(smoothed)


def fairseq(x, t, e, p):
    V = x.size(-1)
    return smoothed(x, t, e, p, b=e / (V - 1), other=lambda lp, nll, total: total - nll)


def annotated_transformer(x, t, e, p):
    V = x.size(-1)
    return smoothed(x, t, e, p, b=e / (V - 2), other=lambda lp, nll, total: total - nll + lp[..., p])


def kl_div(x, t, e, p):
    V = x.size(-1)
    q = (1 - e) * F.one_hot(t, V).to(x.dtype) + e / V
    per_token = F.kl_div(F.log_softmax(x, -1), q, reduction="none").sum(-1)
    real = t != p
    return per_token[real].mean()


def naive_log_softmax(x, t, e, p):
    V = x.size(-1)
    logp = torch.log(torch.softmax(x, dim=-1))                            # -inf where softmax underflows
    q = (1 - e) * F.one_hot(t, V).to(x.dtype) + e / V
    return (-(q * logp).sum(-1))[t != p].mean()


def log_of_softmax_plus_tiny(x, t, e, p):
    V = x.size(-1)
    logp = torch.log(torch.softmax(x, dim=-1) + 1e-12)
    q = (1 - e) * F.one_hot(t, V).to(x.dtype) + e / V
    return (-(q * logp).sum(-1))[t != p].mean()


def swapped_arguments(logits, targets, pad_idx, eps):                      # the learner's own order
    return smoothed(logits, targets, eps, pad_idx)


def mutates_targets(x, t, e, p):
    real = t != p
    t.masked_fill_(~real, 0)                                                # in place: changes the caller's tensor
    return by_gather(x, t.masked_fill(~real, p), e, p)


def mutates_logits(x, t, e, p):
    with torch.no_grad():
        x -= x.amax(-1, keepdim=True)                                       # "stabilise" in place
    return by_gather(x, t, e, p)


def wrong_gradient(x, t, e, p):                                            # right value, wrong gradient
    logp = x - x.logsumexp(-1, keepdim=True).detach()
    q = (1 - e) * F.one_hot(t, x.size(-1)).to(x.dtype) + e / x.size(-1)
    return (-(q * logp).sum(-1))[t != p].mean()


@pytest.mark.parametrize("fn, check, words", [
    (lambda x, t, e, p: smoothed(x, t, e, p, reduce="all"), "common mistakes", "padding got weight"),
    (lambda x, t, e, p: smoothed(x, t, e, p, reduce="zeroed"), "common mistakes", "padding got weight"),
    (lambda x, t, e, p: smoothed(x, t, e, p, reduce="sentence"), "common mistakes", "per sentence"),
    (lambda x, t, e, p: smoothed(x, t, e, p, reduce="sum"), "common mistakes", "summed instead of averaged"),
    (fairseq, "common mistakes", "eps/(V-1)"),
    (annotated_transformer, "common mistakes", "pad class was left out"),
    (kl_div, "common mistakes", "KL divergence"),
    (lambda x, t, e, p: smoothed(x, t, e, p, dim=1), "common mistakes", "wrong axis (dim=1, the time axis)"),
    (lambda x, t, e, p: smoothed(x, t, e, p, dim=0), "common mistakes", "wrong axis (dim=0, the batch axis)"),
    (lambda x, t, e, p: smoothed(x, t, e, p, log=False), "common mistakes", "forgot the log"),
    (lambda x, t, e, p: smoothed(x, t, 0.0, p), "common mistakes", "eps is not used"),
    (lambda x, t, e, p: smoothed(x, t, e, p, b=0.0), "common mistakes", "uniform term is missing"),
    (lambda x, t, e, p: smoothed(x, t, e, p, a=1.0), "common mistakes", "lacks its factor (1 - eps)"),
    (lambda x, t, e, p: smoothed(x, t, e, p, b=e), "common mistakes", "summed over the classes"),
    (lambda x, t, e, p: smoothed(x, t, e, p, a=e, b=(1 - e) / x.size(-1)), "common mistakes",
     "eps and 1 - eps are swapped"),
    (swapped_arguments, "common mistakes", "eps and pad_idx are swapped"),
    (naive_log_softmax, "finite", "numerically unstable: use log_softmax"),
    (log_of_softmax_plus_tiny, "numerically stable", "numerically unstable: use log_softmax"),
    (mutates_targets, "does not modify its inputs", "'targets' was modified in place"),
    (mutates_logits, "does not modify its inputs", "'logits' was modified in place"),
    (lambda x, t, e, p: smoothed(x.float(), t, e, p), "dtype", "float64"),
    (lambda x, t, e, p: smoothed(x.double(), t, e, p), "dtype", "float32"),
    (lambda x, t, e, p: smoothed(x, t, e, p).detach(), "gradient flows", "autograd"),
    (wrong_gradient, "gradient flows", "gradient with respect to 'logits' differs"),
    (lambda x, t, e, p: smoothed(x, t, e, p).item(), "returns a tensor", "got float"),
    (lambda x, t, e, p: smoothed(x, t, e, p).reshape(1), "shape", "expected shape ()"),
    (lambda x, t, e, p: smoothed(x, t, e, p) + 0.01, "values", "differ"),
])
def test_rejects_typical_mistakes(fn, check, words):
    msg = failure(fn)
    assert f"check '{check}" in msg and words in msg, msg


def test_names_the_convention_it_uses():
    msg = failure(fairseq)
    assert "fairseq" in msg and "eps/V on *every* class" in msg, msg


def test_a_sentence_of_padding_only_must_not_give_nan():
    def per_sentence_then_nan(x, t, e, p):                  # right on full batches, NaN on an empty sentence
        real = t != p
        if real.all(1).any() and not (~real).all(1).any():
            return smoothed(x, t, e, p)
        return smoothed(x, t, e, p, reduce="sentence")

    msg = failure(per_sentence_then_nan)
    assert "check 'finite'" in msg and "padding only must contribute nothing" in msg, msg


def test_pad_idx_other_than_zero_is_honoured():
    def assumes_pad_is_zero(x, t, e, p):
        return smoothed(x, t, e, 0)

    msg = failure(assumes_pad_is_zero)
    assert "pad_idx=3" in msg and "check 'common mistakes'" in msg and "taken to be index 0" in msg, msg


def test_unknown_errors_are_reported_not_raised():
    msg = failure(lambda x, t, e, p: 1 / 0)
    assert "runs without error" in msg and "ZeroDivisionError" in msg


# --- the blind spots of part 3: padding position, one order, a size keyed wrong ---------------

def test_a_case_has_padding_before_real_tokens():
    assert any(((t == p)[:, :-1] & (t != p)[:, 1:]).any() for _, t, _, p in (c.args for c in _cases()))


def test_rejects_padding_assumed_at_the_end():
    def lengths_from_padding(x, t, e, p):             # right for right-padded batches only
        logp = torch.log_softmax(x, dim=-1)
        loss = -(1 - e) * logp.gather(-1, t.unsqueeze(-1)).squeeze(-1) - e * logp.mean(-1)   # (B, T)
        lengths = (t != p).sum(1)
        real = torch.arange(t.size(1))[None, :] < lengths[:, None]                         # (B, T)
        return loss[real].mean()

    msg = failure(lengths_from_padding)
    assert "check 'common mistakes'" in msg and "taken to be at the end" in msg and "left-padded" in msg, msg


def test_rejects_positions_cut_at_the_first_sentences_length():
    def first_length(x, t, e, p):                     # assumes the first sentence is the longest
        n = int((t[0] != p).sum())
        return by_gather(x[:, :n], t[:, :n], e, p)

    msg = failure(first_length)
    assert "check 'common mistakes'" in msg and "first sentence's length" in msg, msg


def test_rejects_a_division_by_the_batch_size():
    def per_batch(x, t, e, p):
        return smoothed(x, t, e, p, reduce="sum") / t.size(0)

    msg = failure(per_batch)
    assert "check 'common mistakes'" in msg and "number of sentences" in msg, msg


def test_rejects_eps_spread_over_the_positions():
    msg = failure(lambda x, t, e, p: smoothed(x, t, e, p, b=e / x.size(1)))
    assert "check 'common mistakes'" in msg and "logits.size(1)" in msg, msg
