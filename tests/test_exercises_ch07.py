"""Chapter 7 checkers: they accept correct code (the package's reference and the notebook's
solutions) and reject plausible mistakes with a message that names the mistake."""
from __future__ import annotations

import math

import pytest
import torch

from s2s_course.decode import beam_search
from s2s_course.exercises import ExerciseFailed, check_beam_step, check_length_penalty
from s2s_course.exercises.ch07 import reference_beam_step, reference_length_penalty
from s2s_course.models import DecoderState
from tests.nbtools import chapter, run_solution


def failure(checker, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        checker(fn)
    return str(info.value)


# --- the references against independent computations -------------------------------------------

def test_reference_length_penalty_by_hand():
    # lp(3) = (8/6)^0.6, lp(0) = (5/6)^0.6; alpha = 0 leaves the log-probabilities alone
    got = reference_length_penalty(torch.tensor([-4.0, -1.0]), torch.tensor([3, 0]), 0.6)
    assert got.tolist() == pytest.approx([-4.0 / (8 / 6) ** 0.6, -1.0 / (5 / 6) ** 0.6])
    same = reference_length_penalty(torch.tensor([-4.0, -6.0]), torch.tensor([3, 9]), 0.0)
    assert same.tolist() == pytest.approx([-4.0, -6.0])


def test_reference_beam_step_by_brute_force():
    g = torch.Generator().manual_seed(3)
    beam_scores, log_probs = -torch.rand(4, generator=g), torch.log_softmax(torch.randn(4, 9, generator=g), -1)
    candidates = sorted(((beam_scores[i] + log_probs[i, v]).item(), i, v) for i in range(4) for v in range(9))
    best = candidates[::-1][:5]
    scores, parents, tokens = reference_beam_step(beam_scores, log_probs, 5)
    assert scores.tolist() == pytest.approx([s for s, _, _ in best])
    assert parents.tolist() == [i for _, i, _ in best] and tokens.tolist() == [v for _, _, v in best]


class TwoStepToy(torch.nn.Module):
    """Log-probabilities fixed per step (whatever the prefix): lets us compare the package's first
    beam step with reference_beam_step."""

    def __init__(self, table):
        super().__init__()
        self.table = table                                   # (steps, V) log-probs

    def encode(self, src, src_lengths):
        return DecoderState(hidden=torch.zeros(1, src.size(0), 1), context=torch.zeros(src.size(0), 1))

    def decode_step(self, y_prev, state):
        step = int(state.context[0, 0])
        logits = self.table[step].expand(y_prev.size(0), -1)
        return logits, DecoderState(hidden=state.hidden, context=state.context + 1)


def test_reference_beam_step_agrees_with_the_package_beam_search():
    # Step 1 has no <eos> candidates in its top 3, so the package's beam after step 1 must be
    # exactly the three extensions reference_beam_step picks from the single <sos> hypothesis.
    V = 8
    first = torch.log_softmax(torch.tensor([-9.0, -9.0, -9.0, -9.0, 2.0, 1.5, 1.0, 0.2]), -1)
    second = torch.full((V,), -9.0)
    second[2] = 5.0                                          # then <eos>
    toy = TwoStepToy(torch.stack([first, torch.log_softmax(second, -1)]))
    hyps = beam_search(toy, torch.ones(1, 2, dtype=torch.long), torch.tensor([2]), beam_size=3,
                       length_penalty=0.0, n_best=3, max_len=2)[0]
    scores, parents, tokens = reference_beam_step(torch.zeros(1), first.unsqueeze(0), 3)
    assert sorted(h.tokens[0] for h in hyps) == sorted(tokens.tolist())
    assert parents.tolist() == [0, 0, 0]
    assert math.isclose(hyps[0].log_prob, scores[0].item() + torch.log_softmax(second, -1)[2].item(),
                        abs_tol=1e-5)


# --- check_length_penalty -----------------------------------------------------------------------

def test_length_penalty_checker_accepts_reference_and_notebook_solution(capsys):
    assert check_length_penalty(reference_length_penalty)
    solution = run_solution(chapter("07"), "ex-07-length-penalty")
    assert check_length_penalty(solution.length_penalty_scores)
    assert "checks passed" in capsys.readouterr().out


def test_length_penalty_checker_catches_in_place_changes():
    def in_place(log_probs, lengths, alpha):
        return log_probs.div_(((5 + lengths) / 6) ** alpha)

    assert "modified in place" in failure(check_length_penalty, in_place)


# --- check_beam_step ----------------------------------------------------------------------------

def test_beam_step_checker_accepts_reference_and_notebook_solution(capsys):
    assert check_beam_step(reference_beam_step)
    solution = run_solution(chapter("07"), "ex-07-beam-step")
    assert check_beam_step(solution.beam_step)
    assert "checks passed" in capsys.readouterr().out


def no_prefix(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = log_probs.reshape(-1).topk(k)
    return scores, flat // V, flat % V


def per_row(beam_scores, log_probs, k):
    totals = beam_scores[:, None] + log_probs
    best, token = totals.max(dim=1)
    keep = best.topk(min(k, best.numel())).indices
    return best[keep], keep, token[keep]


def swapped(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).topk(k)
    return scores, flat % V, flat // V


def by_beam_size(beam_scores, log_probs, k):
    K = log_probs.size(0)
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).topk(k)
    return scores, flat // K, flat % K


def float_indices(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).topk(k)
    return scores, (flat // V).float(), (flat % V).float()


def worst_first(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).topk(k)
    return scores.flip(0), (flat // V).flip(0), (flat % V).flip(0)


def two_outputs(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = (beam_scores[:, None] + log_probs).reshape(-1).topk(k)
    return scores, flat


def test_beam_step_checker_reports_wrong_shapes_and_backpointers():
    def too_many(beam_scores, log_probs, k):
        return reference_beam_step(beam_scores, log_probs, k + 1)

    assert "shapes" in failure(check_beam_step, too_many)

    def bad_parents(beam_scores, log_probs, k):
        scores, parents, tokens = reference_beam_step(beam_scores, log_probs, k)
        return scores, torch.zeros_like(parents), tokens

    assert "back-pointers" in failure(check_beam_step, bad_parents)

    def bad_tokens(beam_scores, log_probs, k):
        scores, parents, tokens = reference_beam_step(beam_scores, log_probs, k)
        return scores, parents, (tokens + 1) % log_probs.size(1)

    assert "check 'tokens'" in failure(check_beam_step, bad_tokens)

    def bad_scores(beam_scores, log_probs, k):
        scores, parents, tokens = reference_beam_step(beam_scores, log_probs, k)
        return scores + 1.0, parents, tokens

    assert "expected the k best totals" in failure(check_beam_step, bad_scores)


# --- part 3 blind spots: check_length_penalty --------------------------------------------------

def test_length_penalty_reference_agrees_with_the_package_beam_search():
    # beam_search ranks a hypothesis finished at step t with |Y| = t: its tokens plus the <eos>.
    # The exercise gives lengths that count the <eos> too, so its scores are the package's.
    V = 8
    first = torch.log_softmax(torch.tensor([-9.0, -9.0, -9.0, -9.0, 2.0, 1.5, 1.0, 0.2]), -1)
    second = torch.full((V,), -9.0)
    second[2] = 5.0                                          # then <eos>
    toy = TwoStepToy(torch.stack([first, torch.log_softmax(second, -1)]))
    hyps = beam_search(toy, torch.ones(1, 2, dtype=torch.long), torch.tensor([2]), beam_size=3,
                       length_penalty=0.8, n_best=3, max_len=2)[0]
    log_probs = torch.tensor([h.log_prob for h in hyps])
    lengths = torch.tensor([len(h.tokens) + 1 for h in hyps])  # + the <eos>
    assert reference_length_penalty(log_probs, lengths, 0.8).tolist() == pytest.approx([h.score for h in hyps])
    assert reference_length_penalty(log_probs, lengths - 1, 0.8).tolist() != pytest.approx([h.score for h in hyps])


def test_length_penalty_checker_accepts_an_independent_version():
    # multiply by the inverse penalty, written from eq. (14) of the paper
    assert check_length_penalty(lambda lp, n, a: lp * (6.0 / (5.0 + n.to(lp.dtype))) ** a)


def _rebuilt(log_probs, lengths, alpha):
    return torch.tensor([l / ((5 + n) / 6) ** alpha for l, n in zip(log_probs.tolist(), lengths.tolist())],
                        dtype=log_probs.dtype)


def _lengths_in_place(log_probs, lengths, alpha):
    return log_probs / (lengths.add_(5).div(6)) ** alpha


@pytest.mark.parametrize("wrong, words", [
    (lambda lp, n, a: lp * ((5 + n) / 6) ** a, ["length penalty formula", "divide"]),
    (lambda lp, n, a: lp / n.clamp(min=1) ** a, ["length penalty formula", "smooths"]),
    (lambda lp, n, a: lp / ((5 + n) / 6), ["length penalty formula", "exponent alpha"]),
    (lambda lp, n, a: lp / ((5 + n) ** a / 6), ["length penalty formula", "whole fraction"]),
    (lambda lp, n, a: lp / ((1 + n) / 6) ** a, ["length penalty formula", "constant is 5"]),
    (lambda lp, n, a: (lp / ((5 + n) / 6) ** a).tolist(), ["returns a tensor", "list"]),
    (lambda lp, n, a: (lp / ((5 + n) / 6) ** a).sum(), ["shape"]),
    (lambda lp, n, a: lp / ((5 + n) / 6) ** (a + 0.1), ["values", "expected score"]),
    # the blind spots: lengths that count <eos>, any order, dtype, -inf, gradients, in place
    (lambda lp, n, a: lp / ((4 + n) / 6) ** a, ["length penalty formula", "lengths - 1", "<eos>"]),
    (lambda lp, n, a: lp / ((6 + n) / 6) ** a, ["length penalty formula", "lengths + 1", "<eos>"]),
    (lambda lp, n, a: (lp / ((5 + n) / 6) ** a).sort(descending=True).values,
     ["case 'unsorted scores, longest first'", "sorted best first"]),
    (lambda lp, n, a: lp.float() / ((5 + n) / 6) ** a, ["case 'float64 log_probs'", "check 'dtype'"]),
    (lambda lp, n, a: torch.where(torch.isfinite(lp), lp / ((5 + n) / 6) ** a, torch.zeros_like(lp)),
     ["a -inf hypothesis stays -inf", "must stay -inf"]),
    (_rebuilt, ["gradient flows", "not connected"]),
    (_lengths_in_place, ["does not modify its inputs", "'lengths' was modified in place"]),
])
def test_length_penalty_checker_rejects_and_names_the_mistake(wrong, words):
    message = failure(check_length_penalty, wrong)
    for word in words:
        assert word in message, (word, message)


# --- part 3 blind spots: check_beam_step --------------------------------------------------------

def loop_beam_step(beam_scores, log_probs, k):
    """Written independently: rank all (i, v) pairs with Python's sorted, then index the totals."""
    K, V = log_probs.shape
    totals = (beam_scores.unsqueeze(1) + log_probs).reshape(-1)      # (K*V,)
    best = sorted(range(K * V), key=lambda f: totals[f].item(), reverse=True)[:k]
    flat = torch.tensor(best)
    return totals[flat], flat // V, flat % V


def test_beam_step_checker_accepts_an_independent_version():
    assert check_beam_step(loop_beam_step)


def test_beam_step_cases_have_no_ties_and_enough_live_candidates():
    from s2s_course.exercises.ch07 import BEAM_CASES
    for case in BEAM_CASES:
        beam_scores, log_probs, k = case.args
        totals = (beam_scores.unsqueeze(1) + log_probs).reshape(-1)
        finite = totals[torch.isfinite(totals)].sort(descending=True).values
        assert len(finite) > k, case.name
        assert bool((finite[:k] - finite[1:k + 1] > 1e-4).all()), case.name


def sorted_then_unmapped(beam_scores, log_probs, k):
    V = log_probs.size(1)
    order = beam_scores.argsort(descending=True)
    scores, flat = (beam_scores[order, None] + log_probs[order]).reshape(-1).topk(k)
    return scores, flat // V, flat % V


def drops_trailing_rows(beam_scores, log_probs, k):
    alive = int(torch.isfinite(beam_scores).sum())
    return reference_beam_step(beam_scores[:alive], log_probs[:alive], k)


def in_probability_space(beam_scores, log_probs, k):
    V = log_probs.size(1)
    probs = (beam_scores.exp()[:, None] * log_probs.exp()).reshape(-1)
    best, flat = probs.topk(k)
    return best.log(), flat // V, flat % V


def max_shifted(beam_scores, log_probs, k):
    """Subtracts each row's best log-prob "for stability" and adds it back: NaN on a -inf row."""
    best = log_probs.max(dim=-1, keepdim=True).values                 # (K, 1)
    return reference_beam_step(beam_scores, best + (log_probs - best), k)


def float32_scores(beam_scores, log_probs, k):
    scores, parents, tokens = reference_beam_step(beam_scores, log_probs, k)
    return scores.float(), parents, tokens


def detached(beam_scores, log_probs, k):
    scores, parents, tokens = reference_beam_step(beam_scores.detach(), log_probs.detach(), k)
    return scores, parents, tokens


def adds_in_place(beam_scores, log_probs, k):
    V = log_probs.size(1)
    scores, flat = log_probs.add_(beam_scores[:, None]).reshape(-1).topk(k)
    return scores, flat // V, flat % V


@pytest.mark.parametrize("wrong, words", [
    (no_prefix, ["beam step logic", "log-probability alone"]),
    (per_row, ["beam step logic", "best token of each hypothesis"]),
    (swapped, ["beam step logic", "swapped"]),
    (by_beam_size, ["beam step logic", "with K"]),
    (float_indices, ["dtype of indices", "int64"]),
    (worst_first, ["scores", "not sorted"]),
    (two_outputs, ["returns (scores, parents, tokens)", "length 2"]),
    # the blind spots: inputs in any order, finished hypotheses anywhere, underflow, dtype, gradients
    (sorted_then_unmapped, ["unsorted beam scores", "beam step logic", "after sorting them"]),
    (drops_trailing_rows, ["finished (-inf) hypothesis first", "beam step logic", "can be anywhere"]),
    (in_probability_space, ["scores near -800", "beam step logic", "multiplied probabilities"]),
    (max_shifted, ["every next token is -inf", "check 'scores'", "NaN"]),
    (float32_scores, ["float64 inputs", "dtype of scores"]),
    (detached, ["gradient flows", "not connected"]),
    (adds_in_place, ["does not modify its inputs", "'log_probs' was modified in place"]),
])
def test_beam_step_checker_rejects_and_names_the_mistake(wrong, words):
    message = failure(check_beam_step, wrong)
    for word in words:
        assert word in message, (word, message)


# --- the coverage penalty -------------------------------------------------------------------------

from s2s_course.decode import COVERAGE_EPS, coverage_penalty  # noqa: E402
from s2s_course.exercises import check_coverage_penalty  # noqa: E402
from s2s_course.exercises.ch07 import COVERAGE_CASES, reference_coverage_penalty  # noqa: E402


def test_reference_coverage_penalty_by_loops():
    # eq. (14) of Wu et al. written with Python loops over every hypothesis and source word
    for case in COVERAGE_CASES:
        attn, mask, beta = case.args
        flat_attn = attn.reshape(-1, *attn.shape[-2:]).double()
        flat_mask = mask.reshape(-1, attn.shape[-1])
        want = []
        for a, m in zip(flat_attn, flat_mask):
            total = sum(math.log(max(min(float(a[:, i].sum()), 1.0), COVERAGE_EPS))
                        for i in range(a.shape[1]) if m[i])
            want.append(beta * total)
        got = reference_coverage_penalty(attn, mask, beta)
        assert got.shape == attn.shape[:-2], case.name
        assert got.reshape(-1).tolist() == pytest.approx(want, abs=1e-5), case.name


def test_coverage_cases_have_no_coverage_at_the_cap():
    # min(c, 1) has no unique gradient at c = 1; the compared gradients stay away from it
    for case in COVERAGE_CASES:
        if "never attended" in case.name:
            continue
        attn, mask, _ = case.args
        assert bool(((attn.sum(-2) - 1).abs()[mask] > 1e-3).all()), case.name


def loop_coverage(attn, src_mask, beta):
    """Written independently: one hypothesis and one source word at a time, torch.minimum for the cap."""
    S = attn.shape[-1]
    flat_attn, flat_mask = attn.reshape(-1, attn.shape[-2], S), src_mask.reshape(-1, S)
    out = []
    for a, m in zip(flat_attn, flat_mask):
        total = a.new_zeros(())
        for i in range(S):
            if m[i]:
                c = a[:, i].sum()
                total = total + torch.minimum(c, c.new_tensor(1.0)).clamp(min=1e-10).log()
        out.append(beta * total)
    return torch.stack(out).reshape(attn.shape[:-2])


def plus_eps(attn, src_mask, beta):
    """Another convention for a never-attended word: log(min(c, 1) + eps) instead of a clamp."""
    per_word = torch.log(attn.sum(-2).clamp(max=1.0) + 1e-10)
    return beta * torch.where(src_mask, per_word, torch.zeros_like(per_word)).sum(-1)


def test_coverage_checker_accepts_correct_versions(capsys):
    assert check_coverage_penalty(reference_coverage_penalty)
    assert check_coverage_penalty(coverage_penalty)
    assert check_coverage_penalty(loop_coverage)
    assert check_coverage_penalty(plus_eps)
    solution = run_solution(chapter("07"), "ex-07-coverage-penalty")
    assert check_coverage_penalty(solution.coverage_penalty)
    assert "checks passed" in capsys.readouterr().out


def _cov(attn):
    return attn.sum(-2)


def only_2d_and_3d(attn, src_mask, beta):
    squeeze = attn.dim() == 2
    a, m = (attn[None], src_mask[None]) if squeeze else (attn, src_mask)
    per_word = a.sum(dim=1).clamp(1e-10, 1.0).log().masked_fill(~m, 0.0)
    out = beta * per_word.sum(dim=1)
    return out[0] if squeeze else out


def pads_with_ones_in_place(attn, src_mask, beta):
    attn.masked_fill_(~src_mask.unsqueeze(-2), 1.0 / attn.size(-2))   # padding coverage 1: log 1 = 0
    return beta * _cov(attn).clamp(1e-10, 1.0).log().sum(-1)


@pytest.mark.parametrize("wrong, words", [
    (lambda a, m, b: b * _cov(a).clamp(min=1e-10).log().masked_fill(~m, 0).sum(-1), ["without the min"]),
    (lambda a, m, b: b * a.sum(-1).clamp(1e-10, 1).log().masked_fill(~m, 0).sum(-1),
     ["one hypothesis", "TARGET steps"]),
    (lambda a, m, b: b * _cov(a).clamp(1e-10, 1).log().sum(-1), ["counts the padding positions"]),
    (lambda a, m, b: b * _cov(a).clamp(max=1).log().sum(-1), ["-inf because the padding"]),
    (lambda a, m, b: b * (_cov(a).clamp(max=1).log() * m).sum(-1), ["NaN", "multiplying by the mask"]),
    (lambda a, m, b: b * _cov(a).clamp(max=1).log().masked_fill(~m, 0).sum(-1),
     ["source lengths 4, 5, 2", "NaN in the gradient"]),
    (lambda a, m, b: b * torch.where(m, _cov(a), torch.ones_like(_cov(a))).clamp(max=1).log().sum(-1),
     ["never attended", "clamps the coverage at eps"]),
    (lambda a, m, b: b * _cov(a).clamp(1e-10, 1).log().masked_fill(_cov(a) == 0, 0).sum(-1),
     ["never attended", "padding comes from src_mask"]),
    (lambda a, m, b: _cov(a).clamp(1e-10, 1).log().masked_fill(~m, 0).sum(-1), ["ignores beta"]),
    (lambda a, m, b: -b * _cov(a).clamp(1e-10, 1).log().masked_fill(~m, 0).sum(-1), ["wrong sign"]),
    (lambda a, m, b: b * _cov(a).clamp(1e-10, 1).log().masked_fill(~m, 0).sum(-1) / m.sum(-1),
     ["the mean over the source words"]),
    (lambda a, m, b: b * a.clamp(1e-10, 1).log().sum(-2).masked_fill(~m, 0).sum(-1),
     ["log of every attention weight"]),
    (only_2d_and_3d, ["batch x beam (B, K, T, S)"]),
    (lambda a, m, b: b * _cov(a.float()).clamp(1e-10, 1).log().masked_fill(~m, 0).sum(-1),
     ["float64 attention", "check 'dtype'"]),
    (pads_with_ones_in_place, ["check 'gradient flows'", "in-place operation"]),
    (lambda a, m, b: reference_coverage_penalty(a.detach(), m, b), ["gradient flows", "not connected"]),
    (lambda a, m, b: float(reference_coverage_penalty(a, m, b).sum()), ["returns a tensor", "float"]),
])
def test_coverage_checker_rejects_and_names_the_mistake(wrong, words):
    message = failure(check_coverage_penalty, wrong)
    for word in words:
        assert word in message, (word, message)
