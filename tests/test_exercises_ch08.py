"""Chapter 8 checker: it accepts correct code (the reference, a loop version, the chapter's solution)
and rejects each typical mistake with a message that names it."""
import math

import pytest
import torch
import torch.nn.functional as F

from s2s_course.exercises import ExerciseFailed, check_distance_bias_attention
from s2s_course.exercises.ch08 import distance_matrix, reference_distance_bias_attention
from tests.nbtools import chapter, run_solution


def failure(fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check_distance_bias_attention(fn)
    return str(info.value)


# --- the reference against independent computations -------------------------------------------

def test_reference_by_hand():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])            # (1, T=2, 2)
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # (1, S=3, 2)
    v = torch.tensor([[[1.0], [2.0], [4.0]]])
    out, w = reference_distance_bias_attention(q, k, v, torch.tensor([2]), 0.5)
    r = 1 / math.sqrt(2)
    # query 0: scores (r - 0, 0 - 0.5), key 2 is padding; query 1: (0 - 0.5, r - 0)
    a = math.exp(r) / (math.exp(r) + math.exp(-0.5))
    torch.testing.assert_close(w, torch.tensor([[[a, 1 - a, 0.0], [1 - a, a, 0.0]]]))
    torch.testing.assert_close(out, torch.tensor([[[a + 2 * (1 - a)], [(1 - a) + 2 * a]]]))
    assert torch.equal(distance_matrix(2, 3), torch.tensor([[0.0, 1, 2], [1, 0, 1]]))


@pytest.mark.parametrize("slope", [0.0, 0.3, 2.0])
def test_reference_equals_torch_sdpa_with_a_float_mask(slope):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 4, 8), torch.randn(3, 6, 8), torch.randn(3, 6, 5)
    lengths = torch.tensor([6, 1, 4])
    bias = -slope * (torch.arange(4)[:, None] - torch.arange(6)[None, :]).abs().float()   # (T, S)
    bias = bias.expand(3, 4, 6).masked_fill(torch.arange(6) >= lengths[:, None, None], float("-inf"))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out, w = reference_distance_bias_attention(q, k, v, lengths, slope)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4))


# --- correct code passes -------------------------------------------------------------------

def test_accepts_the_reference_and_a_loop_version(capsys):
    def loop(q, k, v, lengths, slope):
        B, T, d = q.shape
        S = k.size(1)
        outs, weights = [], []
        for b in range(B):
            rows_o, rows_w = [], []
            for t in range(T):
                n = int(lengths[b])
                if n == 0:
                    rows_w.append(q.new_zeros(S))
                    rows_o.append(v.new_zeros(v.size(-1)))
                    continue
                scores = torch.stack([q[b, t] @ k[b, s] / math.sqrt(d) - slope * abs(t - s) for s in range(n)])
                w = torch.cat([torch.softmax(scores, 0), q.new_zeros(S - n)])
                rows_w.append(w)
                rows_o.append(w @ v[b])
            outs.append(torch.stack(rows_o))
            weights.append(torch.stack(rows_w))
        return torch.stack(outs), torch.stack(weights)

    assert check_distance_bias_attention(reference_distance_bias_attention)
    assert check_distance_bias_attention(loop)
    assert "✓ all" in capsys.readouterr().out


def test_the_chapter_solution_passes():
    solution = run_solution(chapter("08"), "ex-08-distance-bias")
    assert check_distance_bias_attention(solution.distance_bias_attention)


# --- wrong code fails and says why -----------------------------------------------------------

def _attend(q, k, v, lengths, slope, scale=None, bias=None, dim=-1, mask=True, fill=True, where=False):
    T, S = q.size(1), k.size(1)
    distance = (torch.arange(T)[:, None] - torch.arange(S)[None, :]).abs().to(q.dtype)
    scale = 1 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = q @ k.transpose(1, 2) * scale - (slope * distance if bias is None else bias(slope, T, S, q))
    keep = (torch.arange(S)[None, :] < lengths[:, None])[:, None, :]            # (B, 1, S)
    if mask:
        scores = scores.masked_fill(~keep, float("-inf"))
    w = torch.softmax(scores, dim=dim)
    if where:
        w = torch.where(keep, w, 0.0)
    elif fill and mask:
        w = w.masked_fill(~keep, 0.0)
    return w @ v, w


def test_the_helper_is_right_with_its_defaults():
    assert check_distance_bias_attention(_attend)


@pytest.mark.parametrize("fn, check, words", [
    (lambda q, k, v, n, m: _attend(q, k, v, n, m, dim=-2), "common mistakes", "softmax over the query axis"),
    (lambda q, k, v, n, m: _attend(q, k, v, n, m, dim=1), "common mistakes", "softmax over the query axis"),
    (lambda q, k, v, n, m: _attend(q, k, v, n, m, scale=1.0), "common mistakes", "forgot the 1/sqrt(d_k)"),
    (lambda q, k, v, n, m: _attend(q, k, v, n, m, bias=lambda m, T, S, q: -m * (
        torch.arange(T)[:, None] - torch.arange(S)[None, :]).abs().to(q.dtype)), "common mistakes", "wrong sign"),
    (lambda q, k, v, n, m: _attend(q, k, v, n, m, bias=lambda m, T, S, q: m * (
        torch.arange(T)[:, None] - torch.arange(S)[None, :]).to(q.dtype)), "common mistakes", "signed distance"),
    (lambda q, k, v, n, m: _attend(q, k, v, n, m, bias=lambda m, T, S, q: m * (
        torch.arange(T)[:, None] - torch.arange(S)[None, :]).abs().to(q.dtype) / math.sqrt(q.size(-1))),
     "common mistakes", "divided by sqrt(d_k) too"),
    (lambda q, k, v, n, m: _attend(q, k, v, n, m, mask=False), "common mistakes", "padding got weight"),
    (lambda q, k, v, n, m: _attend(q, v, k, n, m), "common mistakes", "k and v are swapped"),
    (lambda q, k, v, n, m: _attend(q, k, v, n, m, fill=False), "no NaN", "NaN"),
    (lambda q, k, v, n, m: _attend(q, k, v, n, m)[::-1], "shape", "expected shape"),         # (weights, out)
    (lambda q, k, v, n, m: _attend(q, k, v, n, m)[0], "returns a tuple", "expected a tuple"),
    (lambda q, k, v, n, m: tuple(x.transpose(1, 2) for x in _attend(q, k, v, n, m)), "shape", "(B, T, S)"),
    (lambda q, k, v, n, m: tuple(x.float() for x in _attend(q, k, v, n, m)), "dtype", "float64"),
    (lambda q, k, v, n, m: tuple(x.detach() for x in _attend(q, k, v, n, m)), "gradient flows", "autograd"),
    (lambda q, k, v, n, m: (_attend(q, k, v, n, m)[0] + 0.01, _attend(q, k, v, n, m)[1]), "values", "differ"),
])
def test_rejects_typical_mistakes(fn, check, words):
    msg = failure(fn)
    assert f"check '{check}" in msg and words in msg, msg


def test_rejects_masked_queries_and_swapped_k_v_by_name():
    def masks_queries(q, k, v, lengths, slope):
        T, S = q.size(1), k.size(1)
        distance = (torch.arange(T)[:, None] - torch.arange(S)[None, :]).abs().to(q.dtype)
        scores = q @ k.transpose(1, 2) / math.sqrt(q.size(-1)) - slope * distance
        rows = (torch.arange(T)[None, :] < lengths.clamp(max=T)[:, None])[:, :, None]   # (B, T, 1)
        w = torch.softmax(scores.masked_fill(~rows, float("-inf")), -1).masked_fill(~rows, 0.0)
        return w @ v, w

    msg = failure(masks_queries)
    assert "queries (rows) were masked instead of the keys" in msg or "padding got weight" in msg, msg

    def swapped(q, k, v, lengths, slope):
        if k.shape != v.shape:          # make it run on every case, as a learner's code might
            return reference_distance_bias_attention(q, k, v, lengths, slope)
        return reference_distance_bias_attention(q, v, k, lengths, slope)

    assert "k and v are swapped" in failure(swapped)


def test_rejects_in_place_changes_and_nan_gradients():
    def scales_q_in_place(q, k, v, lengths, slope):
        q.div_(math.sqrt(q.size(-1)))
        return _attend(q, k, v, lengths, slope, scale=1.0)

    assert "does not modify its inputs" in failure(scales_q_in_place)

    def nan_gradient(q, k, v, lengths, slope):       # forward right, but NaN flows back from the empty row
        out, w = _attend(q, k, v, lengths, slope, fill=False)
        keep = (torch.arange(k.size(1))[None, :] < lengths[:, None])[:, None, :]
        w = torch.where(keep & ~torch.isnan(w), w, torch.zeros((), dtype=w.dtype))
        return torch.nan_to_num(out * keep.any(-1, keepdim=True)), w

    msg = failure(nan_gradient)
    assert "check 'gradient flows" in msg and "got nan" in msg, msg


def test_unknown_errors_are_reported_not_raised():
    msg = failure(lambda q, k, v, n, m: 1 / 0)
    assert "runs without error" in msg and "ZeroDivisionError" in msg


# --- the blind spots of part 3: one order, padding, gradients, dtype, in place, empty rows ----

def test_rejects_keys_cut_at_the_first_sentences_length():
    def cut_at_first(q, k, v, lengths, slope):       # assumes the batch is sorted longest first
        n = int(lengths[0])
        out, w = _attend(q[:, :, :], k[:, :n], v[:, :n], lengths.clamp(max=n), slope)
        return out, torch.cat([w, w.new_zeros(*w.shape[:2], k.size(1) - n)], dim=-1)

    msg = failure(cut_at_first)
    assert "check 'common mistakes'" in msg and "cut at lengths[0]" in msg, msg


def test_rejects_padding_read_off_zero_keys():
    def zero_keys_are_padding(q, k, v, lengths, slope):  # the padded keys are random, not zero
        n = (k.abs().sum(-1) != 0).sum(-1)
        return _attend(q, k, v, n, slope)

    msg = failure(zero_keys_are_padding)
    assert "check 'common mistakes'" in msg and "padding got weight" in msg, msg


def test_rejects_scale_by_the_value_size():
    msg = failure(lambda q, k, v, n, m: _attend(q, k, v, n, m, scale=1 / math.sqrt(v.size(-1))))
    assert "check 'common mistakes'" in msg and "sqrt(d_v)" in msg, msg


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_rejects_a_gradient_missing_for_any_input(name):
    def detaches(q, k, v, lengths, slope):
        args = dict(q=q, k=k, v=v)
        args[name] = args[name].detach()
        return _attend(args["q"], args["k"], args["v"], lengths, slope)

    msg = failure(detaches)
    assert "check 'gradient flows" in msg and f"no gradient reaches argument '{name}'" in msg, msg


def test_rejects_detached_weights():
    msg = failure(lambda q, k, v, n, m: (_attend(q, k, v, n, m)[0], _attend(q, k, v, n, m)[1].detach()))
    assert "check 'gradient flows of output[1]'" in msg and "autograd" in msg, msg


def test_rejects_float32_weights_on_float64_inputs():
    def float32_distances(q, k, v, lengths, slope):   # right output dtype, weights in float32
        out, w = _attend(q, k, v, lengths, slope)
        return out, w.float()

    msg = failure(float32_distances)
    assert "check 'dtype of output[1]'" in msg and "float64" in msg, msg


def test_rejects_zeroing_the_padded_keys_in_place():
    def zeroes_k(q, k, v, lengths, slope):
        k.masked_fill_(torch.arange(k.size(1))[None, :, None] >= lengths[:, None, None], 0.0)
        return _attend(q, k, v, lengths, slope)

    msg = failure(zeroes_k)
    assert "'k' was modified in place" in msg, msg


def test_rejects_uniform_weights_on_a_sentence_without_keys():
    def large_negative(q, k, v, lengths, slope):     # -1e9 instead of -inf: an empty row is uniform
        T, S = q.size(1), k.size(1)
        distance = (torch.arange(T)[:, None] - torch.arange(S)[None, :]).abs().to(q.dtype)
        scores = q @ k.transpose(1, 2) / math.sqrt(q.size(-1)) - slope * distance
        keep = (torch.arange(S)[None, :] < lengths[:, None])[:, None, :]
        w = torch.softmax(scores.masked_fill(~keep, -1e9), -1)
        return w @ v, w

    msg = failure(large_negative)
    assert "check 'no NaN on a row without keys of output[1]'" in msg and "(not 0)" in msg \
        and "sentence 0 (length 0" in msg, msg
