"""Chapter 11 checker: it accepts correct causal linear attention written as a recurrence (several
ways, and the chapter's solution) and rejects each typical mistake with a message that names it."""
import pytest
import torch
import torch.nn.functional as F

from s2s_course.efficient_attention import chunked_causal_linear_attention, linear_attention
from s2s_course.exercises import ExerciseFailed, check_recurrent_linear_attention
from s2s_course.exercises.ch11 import reference_recurrent_linear_attention
from tests.nbtools import chapter, run_solution


def failure(fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check_recurrent_linear_attention(fn)
    return str(info.value)


def recurrence(q, k, v, mask, *, phi=lambda x: F.elu(x) + 1, read_first=False, causal=True,
               normalise=True, swap=False, ignore_mask=False, invert=False, guard=True, eps=0.0):
    """A loop over positions with a running state, with switches for each mistake (defaults: correct)."""
    if swap:
        k, v = v, k
    B, h, T, d = q.shape
    fq, fk = phi(q), phi(k)
    if mask is not None and not ignore_mask:
        keep = ~mask if invert else mask
        fk = fk * keep[:, None, :, None].to(fk.dtype)
    S = q.new_zeros(B, h, d, v.size(-1))
    z = q.new_zeros(B, h, d)
    if not causal:
        S = (fk.unsqueeze(-1) * v.unsqueeze(-2)).sum(2)
        z = fk.sum(2)
    outputs = []
    for t in range(T):
        if read_first:
            num, den = (fq[:, :, t, None] @ S).squeeze(-2), (fq[:, :, t] * z).sum(-1, keepdim=True)
        if causal:
            S = S + fk[:, :, t, :, None] * v[:, :, t, None, :]
            z = z + fk[:, :, t]
        if not read_first:
            num, den = (fq[:, :, t, None] @ S).squeeze(-2), (fq[:, :, t] * z).sum(-1, keepdim=True)
        if not normalise:
            outputs.append(num)
        elif guard:
            safe = torch.where(den > 0, den, torch.ones_like(den))
            outputs.append(torch.where(den > 0, num / safe, torch.zeros_like(num)))
        else:
            outputs.append(num / (den + eps))
    return torch.stack(outputs, 2)


# --- the reference ----------------------------------------------------------------------------

def test_reference_is_the_recurrence_and_the_chunked_version():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 2, 9, 3), torch.randn(2, 2, 9, 3), torch.randn(2, 2, 9, 4)
    torch.testing.assert_close(reference_recurrent_linear_attention(q, k, v), recurrence(q, k, v, None))
    torch.testing.assert_close(reference_recurrent_linear_attention(q, k, v),
                               chunked_causal_linear_attention(q, k, v, 4))


# --- correct code passes ----------------------------------------------------------------------

def test_accepts_reference_and_other_correct_versions(capsys):
    assert check_recurrent_linear_attention(reference_recurrent_linear_attention)
    assert check_recurrent_linear_attention(recurrence)
    assert check_recurrent_linear_attention(lambda q, k, v, m: recurrence(q, k, v, m, guard=False, eps=1e-9)
                                            .nan_to_num(0.0) if m is None else recurrence(q, k, v, m))

    def masked_quadratic(q, k, v, mask):   # the explicit (T, T) way: also correct
        fq, fk = F.elu(q) + 1, F.elu(k) + 1
        sim = (fq @ fk.transpose(-2, -1)).tril()
        if mask is not None:
            sim = sim * mask[:, None, None, :].to(sim.dtype)
        den = sim.sum(-1, keepdim=True)
        return torch.where(den > 0, sim @ v / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros(()).to(q))

    assert check_recurrent_linear_attention(masked_quadratic)
    assert "✓ all" in capsys.readouterr().out


def test_the_chapter_solution_passes():
    solution = run_solution(chapter("11"), "ex-11-recurrent")
    assert check_recurrent_linear_attention(solution.recurrent_linear_attention)


# --- wrong code fails and names the mistake ---------------------------------------------------

@pytest.mark.parametrize("options, check, words", [
    (dict(read_first=True), "common mistakes", "before key t"),
    (dict(causal=False), "common mistakes", "causal"),
    (dict(normalise=False), "common mistakes", "no normaliser"),
    (dict(phi=torch.exp), "common mistakes", "phi is exp"),
    (dict(phi=lambda x: x, guard=False), "common mistakes", "no feature map"),
    (dict(swap=True), "common mistakes", "swapped"),
    (dict(ignore_mask=True), "common mistakes", "ignored"),
    (dict(invert=True), "common mistakes", "inverted"),
    (dict(guard=False), "query with no key so far", "NaN"),
])
def test_rejects_each_typical_mistake(options, check, words):
    msg = failure(lambda q, k, v, m: recurrence(q, k, v, m, **options))
    assert f"check '{check}'" in msg and words in msg, msg


def test_relu_feature_map_is_named_or_caught():
    msg = failure(lambda q, k, v, m: recurrence(q, k, v, m, phi=torch.relu))
    assert "relu" in msg or "check 'query with no key so far'" in msg, msg


def test_rejects_wrong_shape_dtype_in_place_and_missing_gradients():
    msg = failure(lambda q, k, v, m: recurrence(q, k, v, m).transpose(1, 2))      # (B, T, h, d_v)
    assert "check 'shape'" in msg and "(2, 2, 5, 4)" in msg

    def float32_state(q, k, v, m):
        return recurrence(q.float(), k.float(), v.float(), m)

    msg = failure(float32_state)
    assert "check 'dtype'" in msg and "float64" in msg

    def phi_in_place(q, k, v, mask):
        q.copy_(F.elu(q) + 1)
        return recurrence(q, k, v, mask, phi=lambda x: x if x is q else F.elu(x) + 1)

    assert "does not modify its inputs" in failure(phi_in_place)
    msg = failure(lambda q, k, v, m: recurrence(q, k.detach(), v, m))
    assert "check 'gradient flows'" in msg and "'k'" in msg
    msg = failure(lambda q, k, v, m: torch.tensor(recurrence(q, k, v, m).tolist(), dtype=q.dtype))
    assert "check 'gradient flows'" in msg


def test_unknown_errors_fall_through_to_values_and_exceptions_are_reported():
    msg = failure(lambda q, k, v, m: recurrence(q, k, v, m) * 1.5)
    assert "check 'values'" in msg

    def crashes(q, k, v, mask):
        return q @ v          # (B, h, T, d) @ (B, h, T, d_v): inner sizes differ

    msg = failure(crashes)
    assert "runs without error" in msg and "RuntimeError" in msg


def test_the_package_linear_attention_is_what_the_checker_expects():
    q, k, v = torch.randn(1, 1, 4, 2), torch.randn(1, 1, 4, 2), torch.randn(1, 1, 4, 2)
    torch.testing.assert_close(reference_recurrent_linear_attention(q, k, v), linear_attention(q, k, v, causal=True))


# --- the blind spots of part 3: padding read as lengths, gradients, empty sentences -----------

def test_rejects_the_mask_turned_into_lengths():
    def as_lengths(q, k, v, mask):                    # right for trailing padding only
        if mask is not None:
            mask = torch.arange(mask.size(1))[None, :] < mask.sum(1, keepdim=True)
        return recurrence(q, k, v, mask)

    msg = failure(as_lengths)                         # a padded key between real ones enters the state
    assert "check 'common mistakes'" in msg and "turned into lengths" in msg, msg

    def as_lengths_checked_later(q, k, v, mask):      # on leading padding the empty rows give it away
        if mask is not None and bool((~mask[:, 0] & mask.any(1)).any()):   # only on leading padding
            mask = torch.arange(mask.size(1))[None, :] < mask.sum(1, keepdim=True)
        return recurrence(q, k, v, mask)

    msg = failure(as_lengths_checked_later)
    assert "check 'query with no key so far'" in msg and "padded key was added" in msg, msg


def test_rejects_nan_on_a_sentence_of_padding_only():
    def guards_only_leading(q, k, v, mask):           # zero rows right, except a sentence with no key at all
        out = recurrence(q, k, v, mask)
        if mask is not None:
            empty = ~mask.any(1)                      # (B,)
            out = torch.where(empty[:, None, None, None], torch.full_like(out, float("nan")), out)
        return out

    msg = failure(guards_only_leading)
    assert "check 'query with no key so far'" in msg and "NaN" in msg and "batch 1" in msg, msg


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_rejects_a_gradient_missing_for_any_input(name):
    def detaches(q, k, v, mask):
        args = dict(q=q, k=k, v=v)
        args[name] = args[name].detach()
        return recurrence(args["q"], args["k"], args["v"], mask)

    msg = failure(detaches)
    assert "check 'gradient flows'" in msg and f"no gradient reaches argument '{name}'" in msg, msg
