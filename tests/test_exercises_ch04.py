import re

import pytest
import torch

from s2s_course.attention import AdditiveScore, masked_softmax
from s2s_course.exercises import ExerciseFailed, check_additive_scores, check_masked_softmax
from s2s_course.exercises.ch04 import additive_scores
from tests.nbtools import chapter, run_solution


def fails(checker, fn, prop, case=None):
    """The checker rejects ``fn`` and its report names the failing property (and case)."""
    with pytest.raises(ExerciseFailed) as info:
        checker(fn)
    message = str(info.value)
    assert f"check {prop!r}" in message, message
    if case is not None:
        assert case in message, message
    return message


# --- the reference of the additive checker is the textbook formula -----------------------------

def test_additive_reference_matches_the_formula_by_hand():
    torch.manual_seed(0)
    B, S, Hq, Hk, A = 2, 3, 4, 5, 6
    q, k = torch.randn(B, Hq), torch.randn(B, S, Hk)
    W, U, v = torch.randn(A, Hq), torch.randn(A, Hk), torch.randn(A)
    by_hand = torch.empty(B, S)
    for b in range(B):
        for j in range(S):
            by_hand[b, j] = v @ torch.tanh(W @ q[b] + U @ k[b, j])
    torch.testing.assert_close(additive_scores(q, k, W, U, v), by_hand)
    # and it is the package's module with those weights
    module = AdditiveScore(Hq, Hk, A)
    with torch.no_grad():
        module.W.weight.copy_(W), module.U.weight.copy_(U), module.v.weight.copy_(v.unsqueeze(0))
    torch.testing.assert_close(module(q, k), by_hand)


# --- check_masked_softmax ---------------------------------------------------------------------

def test_masked_softmax_checker_accepts_the_package(capsys):
    assert check_masked_softmax(masked_softmax) is True
    assert "✓ all" in capsys.readouterr().out


def test_masked_softmax_checker_accepts_the_chapter_solution():
    solution = run_solution(chapter("04"), "ex-04-masked-softmax")
    assert check_masked_softmax(solution.my_masked_softmax) is True


def test_masked_softmax_checker_accepts_an_independent_implementation():
    def by_formula(scores, mask):
        m = mask.view(mask.size(0), *([1] * (scores.dim() - 2)), mask.size(1)).expand_as(scores)
        kept = scores.masked_fill(~m, float("-inf"))
        e = torch.exp(kept - kept.amax(-1, keepdim=True).nan_to_num(neginf=0.0))   # exp(-inf) = 0
        total = e.sum(-1, keepdim=True)
        return e / torch.where(total > 0, total, torch.ones_like(total))
    assert check_masked_softmax(by_formula) is True


def test_masked_softmax_checker_rejects_ignoring_the_mask():
    fails(check_masked_softmax, lambda scores, mask: torch.softmax(scores, -1), "masking",
          case="padded batch")


def test_masked_softmax_checker_rejects_zeroing_after_softmax():
    def zero_after(scores, mask):
        return torch.softmax(scores, -1) * mask.view(mask.size(0), *([1] * (scores.dim() - 2)), -1)
    message = fails(check_masked_softmax, zero_after, "rows sum to one")
    assert "sum to" in message and "hint" in message


def test_masked_softmax_checker_rejects_overflowing_exp():
    def naive(scores, mask):
        m = mask.view(mask.size(0), *([1] * (scores.dim() - 2)), -1)
        e = torch.exp(scores) * m
        return e / e.sum(-1, keepdim=True)
    fails(check_masked_softmax, naive, "finite (no inf / NaN)", case="large scores")


def test_masked_softmax_checker_rejects_nan_on_all_padding_rows():
    def nan_rows(scores, mask):
        m = mask.view(mask.size(0), *([1] * (scores.dim() - 2)), -1)
        return torch.softmax(scores.masked_fill(~m, float("-inf")), -1)
    fails(check_masked_softmax, nan_rows, "finite (no inf / NaN)", case="an empty source")


def test_masked_softmax_checker_rejects_in_place_changes():
    def in_place(scores, mask):
        m = mask.view(mask.size(0), *([1] * (scores.dim() - 2)), -1)
        scores.masked_fill_(~m, -1e9)
        return torch.softmax(scores, -1).masked_fill(~m, 0.0)
    fails(check_masked_softmax, in_place, "does not modify its inputs")


def test_masked_softmax_checker_rejects_a_mask_that_does_not_broadcast_over_steps():
    def two_d_only(scores, mask):
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num()
    message = fails(check_masked_softmax, two_d_only, "runs without error", case="every decoder step")
    assert re.search(r"raised RuntimeError", message)


def test_masked_softmax_checker_rejects_detached_output():
    def detached(scores, mask):
        return masked_softmax(scores.detach(), mask)
    fails(check_masked_softmax, detached, "gradient flows")


# --- check_additive_scores --------------------------------------------------------------------

def test_additive_checker_accepts_the_reference_and_the_chapter_solution():
    assert check_additive_scores(additive_scores) is True
    solution = run_solution(chapter("04"), "ex-04-additive-scores")
    assert check_additive_scores(solution.my_additive_scores) is True


def test_additive_checker_rejects_a_missing_tanh():
    def no_tanh(query, keys, W, U, v):
        return ((query @ W.T).unsqueeze(1) + keys @ U.T) @ v
    fails(check_additive_scores, no_tanh, "values")


def test_additive_checker_rejects_an_unsqueezed_output():
    def keepdim(query, keys, W, U, v):
        return torch.tanh((query @ W.T).unsqueeze(1) + keys @ U.T) @ v.unsqueeze(1)  # (B, S, 1)
    message = fails(check_additive_scores, keepdim, "shape")
    assert "expected shape (2, 5), got (2, 5, 1)" in message


def test_additive_checker_rejects_a_wrong_broadcast():
    def wrong_pairing(query, keys, W, U, v):  # query b is added to position b of every sentence
        return torch.tanh((query @ W.T).unsqueeze(0) + keys @ U.T) @ v
    fails(check_additive_scores, wrong_pairing, "runs without error", case="B=2, S=5")

    def wrong_pairing_when_it_fits(query, keys, W, U, v):
        if query.size(0) == keys.size(1):
            return torch.tanh((query @ W.T).unsqueeze(0) + keys @ U.T) @ v
        return additive_scores(query, keys, W, U, v)
    fails(check_additive_scores, wrong_pairing_when_it_fits, "values", case="B equals S")


def test_additive_checker_rejects_v_inside_the_tanh_and_detached_weights():
    def v_inside(query, keys, W, U, v):
        return torch.tanh(((query @ W.T).unsqueeze(1) + keys @ U.T) @ v)
    fails(check_additive_scores, v_inside, "values")

    def detached(query, keys, W, U, v):
        return additive_scores(query, keys.detach(), W, U, v)
    message = fails(check_additive_scores, detached, "gradient flows")
    assert "keys" in message


# --- part 3 blind spots: check_masked_softmax -------------------------------------------------

def _mask_like(scores, mask):
    return mask.view(mask.size(0), *([1] * (scores.dim() - 2)), mask.size(1))


def test_masked_softmax_checker_rejects_lengths_read_from_the_first_row():
    def first_row_is_longest(scores, mask):   # trims to row 0's length: right only if row 0 is longest
        n = int(mask[0].sum())
        kept = masked_softmax(scores[..., :n], mask[:, :n].contiguous())
        return torch.cat([kept, torch.zeros_like(scores[..., n:])], dim=-1)
    message = fails(check_masked_softmax, first_row_is_longest, "real tokens get weight",
                    case="shortest sentence first")
    assert "not sorted by length" in message


def test_masked_softmax_checker_rejects_a_mask_reshaped_for_three_dimensions_only():
    def up_to_three_dims(scores, mask):   # (B, 1, S): right for (B, S) and (B, T, S) only
        m = mask.unsqueeze(1) if scores.dim() > 2 else mask
        return torch.softmax(scores.masked_fill(~m, float("-inf")), -1).masked_fill(~m, 0.0)
    message = fails(check_masked_softmax, up_to_three_dims, "masking", case="four dimensions")
    assert "(B, 1, ..., 1, S)" in message


def test_masked_softmax_checker_rejects_float32_output_for_float64_scores():
    def always_float32(scores, mask):
        return masked_softmax(scores.float(), mask)
    message = fails(check_masked_softmax, always_float32, "dtype", case="float64 scores")
    assert "float64" in message and ".float()" in message


def test_masked_softmax_checker_rejects_uniform_weights_on_an_all_padding_row():
    def finite_fill(scores, mask):   # -1e9 instead of -inf: an all-padding row becomes uniform
        return torch.softmax(scores.masked_fill(~_mask_like(scores, mask), -1e9), -1)
    fails(check_masked_softmax, finite_fill, "masking", case="an empty source")


def test_masked_softmax_checker_rejects_a_changed_mask():
    def mutates_mask(scores, mask):
        keep = mask.clone()
        mask[:, 0] = True   # "every row needs one real token" hack, done on the caller's tensor
        return masked_softmax(scores, keep)
    message = fails(check_masked_softmax, mutates_mask, "does not modify its inputs")
    assert "'mask'" in message


def test_masked_softmax_checker_accepts_a_four_dimensional_loop():
    def row_by_row(scores, mask):   # one sentence at a time: a different but correct route
        out = torch.zeros_like(scores)
        for b in range(scores.size(0)):
            n = mask[b]
            if bool(n.any()):
                out[b][..., n] = torch.softmax(scores[b][..., n], dim=-1)
        return out
    assert check_masked_softmax(row_by_row) is True


# --- part 3 blind spots: check_additive_scores ------------------------------------------------

def test_additive_checker_accepts_an_einsum_version():
    def by_einsum(query, keys, W, U, v):
        return torch.einsum("a,bsa->bs", v, torch.tanh(torch.einsum("ah,bh->ba", W, query)[:, None]
                                                       + torch.einsum("ak,bsk->bsa", U, keys)))
    assert check_additive_scores(by_einsum) is True


@pytest.mark.parametrize("name", ["query", "keys", "W", "U", "v"])
def test_additive_checker_wants_a_gradient_for_every_input(name):
    def detaches_one(query, keys, W, U, v):
        given = dict(query=query, keys=keys, W=W, U=U, v=v)
        given[name] = given[name].detach()
        return additive_scores(**given)
    message = fails(check_additive_scores, detaches_one, "gradient flows")
    assert f"argument {name!r}" in message


def test_additive_checker_rejects_float32_scores_for_float64_inputs():
    def float32_buffer(query, keys, W, U, v):
        scores = torch.zeros(keys.shape[:2])   # default dtype: float32
        scores[:] = additive_scores(query, keys, W, U, v)
        return scores
    message = fails(check_additive_scores, float32_buffer, "dtype", case="float64 inputs")
    assert "float64" in message


def test_additive_checker_rejects_an_in_place_reshape_of_v():
    def unsqueezes_v(query, keys, W, U, v):
        v.unsqueeze_(1)   # (A,) -> (A, 1) on the caller's tensor
        return (torch.tanh((query @ W.T).unsqueeze(1) + keys @ U.T) @ v).squeeze(-1)
    message = fails(check_additive_scores, unsqueezes_v, "does not modify its inputs")
    assert "'v'" in message


# --- check_merge_directions (new exercise: a bidirectional encoder's final state) -------------

from s2s_course.exercises import check_merge_directions  # noqa: E402
from s2s_course.exercises.ch04 import merge_directions  # noqa: E402
from s2s_course.models.rnn import Encoder  # noqa: E402


def _merged_by_view(h_n):
    L2, B, H = h_n.shape
    return h_n.view(L2 // 2, 2, B, H).permute(0, 2, 1, 3).reshape(L2 // 2, B, 2 * H)


def test_merge_reference_is_the_package_encoder_and_the_gru_outputs():
    torch.manual_seed(0)
    enc = Encoder(vocab_size=11, emb_dim=4, hidden_dim=3, num_layers=2, bidirectional=True)
    src = torch.randint(3, 11, (3, 6))
    lengths = torch.tensor([2, 6, 4])
    outputs, final = enc(src, lengths)                       # final: the package's merge
    packed = torch.nn.utils.rnn.pack_padded_sequence(enc.embedding(src), lengths, batch_first=True,
                                                     enforce_sorted=False)
    _, h_n = enc.rnn(packed)
    torch.testing.assert_close(merge_directions(h_n, outputs), final)
    # top layer, by hand: forward at each sentence's last real token, backward at position 0
    top = torch.stack([torch.cat([outputs[b, n - 1, :3], outputs[b, 0, 3:]]) for b, n in enumerate([2, 6, 4])])
    torch.testing.assert_close(final[-1], top)


def test_merge_checker_accepts_the_reference_independent_versions_and_the_chapter_solution():
    assert check_merge_directions(merge_directions) is True
    assert check_merge_directions(lambda h_n, output: _merged_by_view(h_n)) is True

    def by_layer(h_n, output):   # a loop over layers, also right
        return torch.stack([torch.cat([h_n[2 * l], h_n[2 * l + 1]], dim=-1) for l in range(h_n.size(0) // 2)])
    assert check_merge_directions(by_layer) is True
    solution = run_solution(chapter("04"), "ex-04-merge-directions")
    assert check_merge_directions(solution.my_merge_directions) is True


@pytest.mark.parametrize("wrong, words", [
    (lambda h, o: h.view(h.size(0) // 2, h.size(1), 2 * h.size(2)), "h_n.view(L, B, 2H)"),
    (lambda h, o: torch.cat([h[1::2], h[0::2]], dim=-1), "backward state comes first"),
    (lambda h, o: torch.cat([h[-2], h[-1]], dim=-1).unsqueeze(0), "only the last layer"),
    (lambda h, o: torch.cat(list(h.view(2, h.size(0) // 2, h.size(1), h.size(2))), dim=-1),
     "layer by layer"),
    (lambda h, o: o[:, -1].unsqueeze(0), "output[:, -1] is not the final state"),
    (lambda h, o: torch.cat([_merged_by_view(h)[:-1], o[None, :, -1]]), "output[:, -1] is not the final state"),
    (lambda h, o: torch.cat([_merged_by_view(h)[:-1], torch.cat([o[:, -1, :o.size(2) // 2],
                                                                 o[:, 0, o.size(2) // 2:]], -1)[None]]),
     "forward half was taken from output[:, -1]"),
], ids=["view", "backward-first", "last-layer-only", "directions-outer", "output-last", "output-last-top",
        "output-last-forward-half"])
def test_merge_checker_names_the_usual_mistakes(wrong, words):
    message = fails(check_merge_directions, wrong, "common mistakes")
    assert words in message, message


def test_merge_checker_rejects_sentences_in_length_order():
    def sorted_by_length(h_n, output):   # as if the batch had been sorted longest-first
        real = (output != 0).any(-1).sum(1)
        return _merged_by_view(h_n)[:, real.argsort(descending=True, stable=True)]
    message = fails(check_merge_directions, sorted_by_length, "agrees with the GRU's outputs",
                    case="one layer, lengths 3, 5, 2")
    assert "sentence 0 (length 3)" in message


def test_merge_checker_rejects_float32_in_place_and_detached_versions():
    message = fails(check_merge_directions, lambda h, o: _merged_by_view(h).float(), "dtype",
                    case="float64")
    assert "float64" in message

    def reverses_in_place(h_n, output):
        merged = _merged_by_view(h_n.clone())
        h_n.copy_(h_n.flip(0))   # scribbles on the caller's tensor
        return merged
    message = fails(check_merge_directions, reverses_in_place, "does not modify its inputs")
    assert "'h_n'" in message

    fails(check_merge_directions, lambda h, o: _merged_by_view(h.detach()), "gradient flows")
