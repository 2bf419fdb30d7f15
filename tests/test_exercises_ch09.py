"""Chapter 9 checker: it accepts correct grouped-query attention (several ways, and the chapter's
solution) and rejects each typical mistake with a message that names it."""
import math

import pytest
import torch
import torch.nn.functional as F

from s2s_course.exercises import ExerciseFailed, check_grouped_query_attention
from s2s_course.exercises.ch09 import reference_grouped_query_attention
from s2s_course.self_attention import MultiHeadAttention
from tests.nbtools import chapter, run_solution


def failure(fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check_grouped_query_attention(fn)
    return str(info.value)


def gqa(q, k, v, mask, *, tile=False, scale=None, dim=-1, invert=False, zero_empty=True, swap=False):
    """Grouped-query attention with switches for each mistake (defaults: correct)."""
    if swap:
        k, v = v, k
    group = q.size(1) // k.size(1)
    if tile:
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    else:
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(q.size(-1)) if scale is None else scale)
    if mask is not None:
        mask = ~mask if invert else mask
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    if mask is not None and zero_empty:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v


# --- the reference ----------------------------------------------------------------------------

def test_reference_is_multi_head_attention_when_g_equals_h():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 6, 5), torch.randn(2, 4, 6, 5)
    expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(5), -1) @ v
    torch.testing.assert_close(reference_grouped_query_attention(q, k, v), expected)


def test_reference_groups_consecutive_query_heads():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, 3, 2), torch.randn(1, 2, 5, 2), torch.randn(1, 2, 5, 2)
    out = reference_grouped_query_attention(q, k, v)
    for i in range(4):  # query heads 0, 1 -> kv head 0; 2, 3 -> kv head 1
        j = i // 2
        expected = torch.softmax(q[:, i] @ k[:, j].transpose(-2, -1) / math.sqrt(2), -1) @ v[:, j]
        torch.testing.assert_close(out[:, i], expected)


# --- correct code passes ----------------------------------------------------------------------

def test_accepts_reference_and_other_correct_versions(capsys):
    assert check_grouped_query_attention(reference_grouped_query_attention)
    assert check_grouped_query_attention(gqa)

    def by_view(q, k, v, mask):  # no copies: queries reshaped into (B, g, h // g, T, d)
        B, h, T, d = q.shape
        g = k.size(1)
        scores = q.view(B, g, h // g, T, d) @ k.unsqueeze(2).transpose(-2, -1) / math.sqrt(d)
        if mask is not None:
            m = mask.unsqueeze(1)   # (B, 1, 1, T, S): broadcast over groups and heads in a group
            scores = scores.masked_fill(~m, float("-inf"))
        w = torch.softmax(scores, -1)
        if mask is not None:
            w = w.masked_fill(~m, 0.0)
        return (w @ v.unsqueeze(2)).reshape(B, h, T, v.size(-1))

    assert check_grouped_query_attention(by_view)

    def fused(q, k, v, mask):  # PyTorch's own kernel, with empty rows set to 0
        group = q.size(1) // k.size(1)
        out = F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1),
                                             v.repeat_interleave(group, 1), attn_mask=mask)
        if mask is not None:
            out = out.masked_fill(~mask.any(-1, keepdim=True), 0.0)
        return out

    assert check_grouped_query_attention(fused)
    assert "✓ all" in capsys.readouterr().out


def test_the_chapter_solution_passes():
    solution = run_solution(chapter("09"), "ex-09-gqa")
    assert check_grouped_query_attention(solution.grouped_query_attention)


def test_g_equal_h_matches_the_package_layer():
    """With g = h the exercise is the attention inside MultiHeadAttention."""
    torch.manual_seed(2)
    mha = MultiHeadAttention(8, 2, fused=False)
    x = torch.randn(2, 5, 8)
    q = mha.split_heads(mha.W_q(x))
    k, v = mha.project_kv(x, x)
    expected = mha(x)[0]
    got = mha.W_o(mha.merge_heads(reference_grouped_query_attention(q, k, v)))
    torch.testing.assert_close(got, expected)


# --- wrong code fails and names the mistake ---------------------------------------------------

@pytest.mark.parametrize("options, check, words", [
    (dict(tile=True), "common mistakes", "repeat_interleave"),
    (dict(swap=True), "common mistakes", "swapped"),
    (dict(scale=1.0), "common mistakes", "not scaled"),
    (dict(scale="1/d"), "common mistakes", "divided by d_k"),
    (dict(dim=-2), "common mistakes", "over the queries"),
    (dict(invert=True), "common mistakes", "inverted"),
    (dict(zero_empty=False), "query with no allowed key", "NaN"),
])
def test_rejects_each_typical_mistake(options, check, words):
    if options.get("scale") == "1/d":
        fn = lambda q, k, v, m: gqa(q, k, v, m, scale=1 / q.size(-1))  # noqa: E731
    else:
        fn = lambda q, k, v, m: gqa(q, k, v, m, **options)  # noqa: E731
    msg = failure(fn)
    assert f"check '{check}'" in msg and words in msg, msg


def test_rejects_wrong_shape_dtype_in_place_and_missing_gradients():
    msg = failure(lambda q, k, v, m: gqa(q, k, v, m).transpose(1, 2).flatten(2))   # merged heads
    assert "check 'shape'" in msg and "(2, 4, 3, 8)" in msg
    msg = failure(lambda q, k, v, m: gqa(q.float(), k.float(), v.float(), m))
    assert "check 'dtype'" in msg and "float64" in msg

    def scales_q_in_place(q, k, v, mask):
        q.mul_(1 / math.sqrt(q.size(-1)))
        return gqa(q, k, v, mask, scale=1.0)

    assert "does not modify its inputs" in failure(scales_q_in_place)
    msg = failure(lambda q, k, v, m: gqa(q, k, v.detach(), m))
    assert "check 'gradient flows'" in msg and "'v'" in msg
    msg = failure(lambda q, k, v, m: torch.tensor(gqa(q, k, v, m).tolist()))
    assert "check 'gradient flows'" in msg


def test_unknown_errors_fall_through_to_values_and_exceptions_are_reported():
    msg = failure(lambda q, k, v, m: gqa(q, k, v, m) + 1.0)
    assert "check 'values'" in msg

    def crashes(q, k, v, mask):
        return q @ k.transpose(-2, -1)   # (B, h, T, d) @ (B, g, d, S): batch dims do not broadcast

    msg = failure(crashes)
    assert "runs without error" in msg and "RuntimeError" in msg


# --- the blind spots of part 3: padding, gradients, empty rows, a size keyed wrong ---------------

def test_rejects_padding_read_off_zero_keys():
    def zero_keys_are_padding(q, k, v, mask):         # the padded keys are random, not zero
        real = (k.abs().sum(-1) != 0).any(1)          # (B, S)
        return gqa(q, k, v, real[:, None, None, :])

    msg = failure(zero_keys_are_padding)
    assert "check 'common mistakes'" in msg and "mask was ignored" in msg, msg


def test_rejects_scale_by_the_value_size():
    msg = failure(lambda q, k, v, m: gqa(q, k, v, m, scale=1 / math.sqrt(v.size(-1))))
    assert "check 'common mistakes'" in msg and "sqrt(d_v)" in msg, msg


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_rejects_a_gradient_missing_for_any_input(name):
    def detaches(q, k, v, mask):
        args = dict(q=q, k=k, v=v)
        args[name] = args[name].detach()
        return gqa(args["q"], args["k"], args["v"], mask)

    msg = failure(detaches)
    assert "check 'gradient flows'" in msg and f"no gradient reaches argument '{name}'" in msg, msg


def test_rejects_uniform_weights_on_a_query_without_keys():
    def large_negative(q, k, v, mask):                # -1e9 instead of -inf: an empty row averages v
        group = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            scores = scores.masked_fill(~mask, -1e9)
        return torch.softmax(scores, -1) @ v

    msg = failure(large_negative)
    assert "check 'query with no allowed key'" in msg and "(not 0)" in msg and "query 2 of batch 1" in msg, msg


def test_rejects_the_first_sentences_mask_for_every_sentence():
    # right whenever the first sentence is the longest (and unpadded), so one case puts it elsewhere
    msg = failure(lambda q, k, v, mask: gqa(q, k, v, None if mask is None else mask[:1].expand_as(mask)))
    assert "check 'common mistakes'" in msg and "first sentence's mask" in msg, msg


def test_ignoring_the_mask_is_still_named_as_such():
    msg = failure(lambda q, k, v, mask: gqa(q, k, v, None))
    assert "mask was ignored" in msg and "first sentence's mask" not in msg, msg
