"""Chapter 5 checkers: they accept correct code (the package's and the chapter's solutions) and
reject typical mistakes with a message that names what is wrong."""
import math

import pytest
import torch

from s2s_course.exercises import ExerciseFailed, check_general_score, check_local_p_weights
from s2s_course.exercises.ch05 import reference_general_score, reference_local_p_weights
from tests.nbtools import chapter, run_solution


def failure(checker, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        checker(fn)
    return str(info.value)


# --- the references against hand computation ------------------------------------------------

def test_reference_general_score_is_q_W_k_by_hand():
    q = torch.tensor([[1.0, 2.0]])                      # (1, 2)
    k = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]])  # (1, 2, 3)
    W = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])     # (2, 3)
    # W k_0 = [3, 1] -> q . = 3 + 2 = 5 ;  W k_1 = [-2, 2] -> -2 + 4 = 2
    torch.testing.assert_close(reference_general_score(q, k, W), torch.tensor([[5.0, 2.0]]))


def test_reference_local_p_weights_by_hand():
    scores = torch.tensor([[0.0, 1.0, 2.0, 0.5, -1.0, 3.0]])
    p, D = torch.tensor([2.5]), 2                          # window: |s - 2.5| <= 2 -> s = 1, 2, 3, 4
    mask = torch.tensor([[True, True, True, True, False, False]])   # s = 4 is padding
    kept = [1, 2, 3]
    z = sum(math.exp(scores[0, s].item()) for s in kept)
    expected = torch.zeros(1, 6)
    for s in kept:
        expected[0, s] = math.exp(scores[0, s].item()) / z * math.exp(-(s - 2.5) ** 2 / (2 * 1.0 ** 2))
    torch.testing.assert_close(reference_local_p_weights(scores, p, mask, D), expected)


# --- correct code passes -------------------------------------------------------------------

def test_general_score_accepts_reference_and_an_einsum_version(capsys):
    assert check_general_score(reference_general_score)
    assert check_general_score(lambda q, k, W: torch.einsum("bh,hk,bsk->bs", q, W, k))
    assert "✓ all" in capsys.readouterr().out


def test_local_p_accepts_reference_and_a_loop_version():
    def loop(scores, p, mask, window):
        B, S = scores.shape
        rows = []
        for b in range(B):
            row = []
            keep = [s for s in range(S) if mask[b, s] and abs(s - p[b].item()) <= window]
            z = sum(torch.exp(scores[b, s]) for s in keep)
            for s in range(S):
                if s in keep:
                    g = torch.exp(-(s - p[b]) ** 2 / (2 * (window / 2) ** 2))
                    row.append(torch.exp(scores[b, s]) / z * g)
                else:
                    row.append(scores.new_zeros(()))
            rows.append(torch.stack(row))
        return torch.stack(rows)

    assert check_local_p_weights(reference_local_p_weights)
    assert check_local_p_weights(loop)


def test_the_chapter_solutions_pass():
    path = chapter("05")
    assert check_general_score(run_solution(path, "ex-05-general-score").general_score)
    assert check_local_p_weights(run_solution(path, "ex-05-local-p").local_p_weights)


# --- wrong code fails and says why -----------------------------------------------------------

def test_general_score_rejects_typical_mistakes():
    msg = failure(check_general_score, lambda q, k, W: torch.softmax(torch.einsum("bh,hk,bsk->bs", q, W, k), -1))
    assert "check 'common mistakes'" in msg and "softmax weights" in msg
    msg = failure(check_general_score, lambda q, k, W: torch.einsum("bh,kh,bsk->bs", q, W, k))
    assert "check 'common mistakes'" in msg and "transposed" in msg
    msg = failure(check_general_score, lambda q, k, W: torch.bmm(k, q.unsqueeze(2)).squeeze(2))
    assert "check 'common mistakes'" in msg and "dot score" in msg
    msg = failure(check_general_score, lambda q, k, W: torch.bmm(k @ W.T, q.unsqueeze(2)))
    assert "check 'shape'" in msg and "expected shape (2, 3), got (2, 3, 1)" in msg
    msg = failure(check_general_score,
                  lambda q, k, W: torch.tensor(torch.einsum("bh,hk,bsk->bs", q, W, k).tolist()))
    assert "check 'gradient flows'" in msg


def test_general_score_rejects_in_place_changes_and_unknown_errors():
    def scales_query_in_place(q, k, W):
        q.mul_(2)
        return torch.einsum("bh,hk,bsk->bs", q, W, k) / 2

    assert "does not modify its inputs" in failure(check_general_score, scales_query_in_place)
    msg = failure(check_general_score, lambda q, k, W: torch.einsum("bh,hk,bsk->bs", q, W, k) + 1)
    assert "check 'values'" in msg


def _local(scores, p, mask, window, sigma=None, in_window=True, use_mask=True, gauss=True, renorm=False,
           two=2.0, fix_nan=True):
    sigma = window / 2 if sigma is None else sigma
    distance = torch.arange(scores.size(1), dtype=scores.dtype).unsqueeze(0) - p.unsqueeze(1)
    keep = torch.ones_like(mask)
    if use_mask:
        keep = keep & mask
    if in_window:
        keep = keep & (distance.abs() <= window)
    w = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1)
    if fix_nan:   # a window with no real token: all zeros, not NaN
        w = w.masked_fill(~keep, 0.0)
    if gauss:
        w = w * torch.exp(-distance ** 2 / (two * sigma ** 2))
    if renorm:
        w = w / w.sum(-1, keepdim=True)
    return w


def test_local_p_rejects_typical_mistakes():
    assert check_local_p_weights(_local)   # the helper itself is right with its defaults
    cases = [
        (dict(sigma_is_D=True), "common mistakes", "sigma = D / 2"),
        (dict(gauss=False), "common mistakes", "no Gaussian"),
        (dict(renorm=True), "common mistakes", "renormalised"),
        (dict(two=1.0), "common mistakes", "factor 2"),
        (dict(in_window=False), "zero outside the window", "|s - p_t| > D"),
        (dict(use_mask=False), "zero on padding", "padding"),
    ]
    for options, check, words in cases:
        if options.pop("sigma_is_D", False):
            fn = lambda s, p, m, D: _local(s, p, m, D, sigma=D)  # noqa: E731
        else:
            fn = lambda s, p, m, D, o=options: _local(s, p, m, D, **o)  # noqa: E731
        msg = failure(check_local_p_weights, fn)
        assert f"check '{check}'" in msg and words in msg, msg


def test_local_p_rejects_rounded_p_in_place_edits_and_detached_outputs():
    msg = failure(check_local_p_weights, lambda s, p, m, D: _local(s, p.round(), m, D))
    assert "rounded" in msg

    def in_place(scores, p, mask, window):
        scores.masked_fill_(~mask, -1e9)
        return _local(scores, p, mask, window)

    assert "does not modify its inputs" in failure(check_local_p_weights, in_place)
    msg = failure(check_local_p_weights, lambda s, p, m, D: _local(s, p.detach(), m, D))
    assert "check 'gradient flows'" in msg and "'p'" in msg


# --- part 3 blind spots ---------------------------------------------------------------------

def _einsum_general(q, k, W):
    return torch.einsum("bh,hk,bsk->bs", q, W, k)


@pytest.mark.parametrize("name", ["query", "keys", "W_a"])
def test_general_score_wants_a_gradient_for_every_input(name):
    def detaches_one(query, keys, W_a):
        given = dict(query=query, keys=keys, W_a=W_a)
        given[name] = given[name].detach()
        return _einsum_general(given["query"], given["keys"], given["W_a"])
    msg = failure(check_general_score, detaches_one)
    assert "check 'gradient flows'" in msg and f"argument {name!r}" in msg, msg


def test_general_score_rejects_float32_scores_for_float64_inputs():
    msg = failure(check_general_score, lambda q, k, W: _einsum_general(q.float(), k.float(), W.float()))
    assert "check 'dtype'" in msg and "float64" in msg and "float64 query" in msg


def test_local_p_rejects_nan_in_a_window_without_real_tokens():
    msg = failure(check_local_p_weights, lambda s, p, m, D: _local(s, p, m, D, fix_nan=False))
    assert "check 'finite (no NaN)'" in msg and "a window with no real token" in msg
    assert "all zeros" in msg


def test_local_p_rejects_falling_back_to_global_attention_when_the_window_is_empty():
    def fallback(scores, p, mask, window):
        w = _local(scores, p, mask, window)
        empty = ~(w > 0).any(-1, keepdim=True)                       # (B, 1)
        return torch.where(empty, torch.softmax(scores.masked_fill(~mask, float("-inf")), -1), w)
    msg = failure(check_local_p_weights, fallback)
    assert "check 'zero outside the window'" in msg and "a window with no real token" in msg


def test_local_p_rejects_lengths_taken_from_the_first_row():
    def first_row_is_longest(scores, p, mask, window):   # padding = beyond row 0's length
        n = int(mask[0].sum())
        cut = mask & (torch.arange(scores.size(1)) < n)
        return _local(scores, p, cut, window)
    msg = failure(check_local_p_weights, first_row_is_longest)
    assert "check 'real tokens in the window get weight'" in msg and "shortest sentence first" in msg
    assert "not sorted by length" in msg


def test_local_p_rejects_a_window_clipped_at_the_padded_length():
    """The window clipped to [0, S) (the padded width) instead of each sentence's own length:
    right whenever a sentence fills the batch, wrong for the shorter ones."""
    def clipped_at_S(scores, p, mask, window):
        return _local(scores, p, torch.ones_like(mask), window)
    msg = failure(check_local_p_weights, clipped_at_S)
    assert "check 'zero on padding'" in msg and "padding (mask False) must get no weight" in msg


def test_local_p_rejects_float32_weights_and_detached_scores():
    msg = failure(check_local_p_weights, lambda s, p, m, D: _local(s, p, m, D).to(torch.float32))
    assert "check 'dtype'" in msg and "float64" in msg
    msg = failure(check_local_p_weights, lambda s, p, m, D: _local(s.detach(), p, m, D))
    assert "check 'gradient flows'" in msg and "'scores'" in msg


# --- check_general_score_fast (new exercise: project the query, not the keys) ----------------

from s2s_course.exercises import check_general_score_fast  # noqa: E402
from s2s_course.exercises.ch05 import measure_cost  # noqa: E402


def _fast_bmm(query, keys, W_a):
    u = query @ W_a                                   # (B, Hk): W_a^T q
    return (keys @ u.unsqueeze(2)).squeeze(2)         # (B, S)


def test_fast_general_score_accepts_query_side_versions_and_the_chapter_solution():
    assert check_general_score_fast(_fast_bmm)
    assert check_general_score_fast(lambda q, k, W: (k * (q @ W).unsqueeze(1)).sum(-1))
    assert check_general_score_fast(lambda q, k, W: torch.einsum("bk,bsk->bs", torch.einsum("bh,hk->bk", q, W), k))
    solution = run_solution(chapter("05"), "ex-05-general-score-fast")
    assert check_general_score_fast(solution.general_score_fast)


def test_measure_cost_counts_matrix_products_and_broadcast_products():
    q, k, W = torch.randn(2, 8), torch.randn(2, 100, 8), torch.randn(8, 8)
    macs, _ = measure_cost(_fast_bmm, q, k, W)
    assert macs == 2 * 8 * 8 + 2 * 100 * 8
    macs, _ = measure_cost(reference_general_score, q, k, W)
    assert macs == 2 * 100 * 8 * 8 + 2 * 100 * 8
    _, elements = measure_cost(lambda q, k, W: ((k.unsqueeze(2) * W).sum(-1) * q.unsqueeze(1)).sum(-1), q, k, W)
    assert elements >= 2 * 100 * 8 * 8


@pytest.mark.parametrize("slow", [
    lambda q, k, W: ((k @ W.T) @ q.unsqueeze(2)).squeeze(2),                       # matrix product
    lambda q, k, W: ((k.unsqueeze(2) * W).sum(-1) * q.unsqueeze(1)).sum(-1),       # broadcast and sum
    reference_general_score,                                                       # the package's module
    lambda q, k, W: torch.einsum("bsk,hk,bh->bs", k, W, q),                       # einsum, keys first
], ids=["matmul", "broadcast", "package", "einsum-keys-first"])
def test_fast_general_score_rejects_projecting_every_key(slow):
    msg = failure(check_general_score_fast, slow)
    assert "check 'cost (no key projection)'" in msg and "a long source" in msg
    assert "projects every key" in msg, msg


def test_fast_general_score_rejects_wrong_values_dtype_in_place_and_detached_weights():
    msg = failure(check_general_score_fast, lambda q, k, W: (k @ (q @ W.T).unsqueeze(2)).squeeze(2))
    assert "check 'common mistakes'" in msg and "transposed" in msg
    msg = failure(check_general_score_fast, lambda q, k, W: torch.softmax(_fast_bmm(q, k, W), -1))
    assert "softmax weights" in msg
    msg = failure(check_general_score_fast, lambda q, k, W: _fast_bmm(q, k, W).float())
    assert "check 'dtype'" in msg and "float64" in msg

    def scales_in_place(q, k, W):
        W.mul_(2)
        return _fast_bmm(q, k, W) / 2
    assert "does not modify its inputs" in failure(check_general_score_fast, scales_in_place)
    msg = failure(check_general_score_fast, lambda q, k, W: _fast_bmm(q, k, W.detach()))
    assert "check 'gradient flows'" in msg and "'W_a'" in msg


# --- check_local_p_position (the predicted position p_t, keyed by each sentence's length) -----

from s2s_course.exercises import check_local_p_position  # noqa: E402
from s2s_course.exercises.ch05 import reference_local_p_position  # noqa: E402


def _position(query, mask, W_p, v_p, length=None, squash=torch.tanh):
    gate = torch.sigmoid(squash(query @ W_p.T) @ v_p)            # (B,)
    length = mask.sum(1).to(query.dtype) if length is None else length
    return length * gate


def test_reference_local_p_position_by_hand():
    q = torch.tensor([[1.0, 0.0]])
    W_p, v_p = torch.tensor([[2.0, 0.0]]), torch.tensor([3.0])
    mask = torch.tensor([[True, True, True, True, False, False]])   # length 4 of 6
    expected = 4 * torch.sigmoid(3 * torch.tanh(torch.tensor(2.0)))
    torch.testing.assert_close(reference_local_p_position(q, mask, W_p, v_p), expected.reshape(1))


def test_local_p_position_accepts_reference_independent_version_and_the_chapter_solution():
    assert check_local_p_position(reference_local_p_position)
    assert check_local_p_position(_position)

    def loop(query, mask, W_p, v_p):   # one sentence at a time, the length counted by hand
        return torch.stack([sum(bool(x) for x in mask[b]) * torch.sigmoid(v_p @ torch.tanh(W_p @ query[b]))
                            for b in range(query.size(0))])
    assert check_local_p_position(loop)
    solution = run_solution(chapter("05"), "ex-05-local-p-position")
    assert check_local_p_position(solution.local_p_position)


def test_local_p_position_rejects_the_padded_width_which_agrees_when_no_sentence_is_padded():
    padded_width = lambda q, m, W, v: _position(q, m, W, v, length=torch.tensor(float(m.size(1))))  # noqa: E731
    msg = failure(check_local_p_position, padded_width)
    assert "'padded batch, shortest first" in msg            # the equal-length case passed
    assert "check 'common mistakes'" in msg and "padded width S" in msg


@pytest.mark.parametrize("wrong, words", [
    (lambda q, m, W, v: _position(q, m, W, v, length=(m.sum(1) - 1).to(q.dtype)), "S_b - 1"),
    (lambda q, m, W, v: _position(q, m, W, v, squash=lambda x: x), "no tanh"),
    (lambda q, m, W, v: m.sum(1).to(q.dtype)   # transposed where the shapes let it run
     * torch.sigmoid(torch.tanh(q @ (W if W.size(0) == W.size(1) else W.T)) @ v), "transposed"),
], ids=["length-minus-one", "no-tanh", "transposed"])
def test_local_p_position_names_the_usual_mistakes(wrong, words):
    msg = failure(check_local_p_position, wrong)
    assert "check 'common mistakes'" in msg and words in msg, msg


def test_local_p_position_rejects_out_of_range_float32_in_place_and_detached_versions():
    msg = failure(check_local_p_position, lambda q, m, W, v: m.sum(1) * torch.tanh(torch.tanh(q @ W.T) @ v))
    assert "check 'inside the sentence'" in msg and "[0, S_b]" in msg
    msg = failure(check_local_p_position, lambda q, m, W, v: _position(q, m, W, v).float())
    assert "check 'dtype'" in msg and "float64" in msg

    def unsqueezes_v(query, mask, W_p, v_p):
        v_p.unsqueeze_(1)
        return _position(query, mask, W_p, v_p.squeeze(1))
    assert "does not modify its inputs" in failure(check_local_p_position, unsqueezes_v)
    for name in ["query", "W_p", "v_p"]:
        def detached(query, mask, W_p, v_p, name=name):
            given = dict(query=query, mask=mask, W_p=W_p, v_p=v_p)
            given[name] = given[name].detach()
            return _position(**given)
        msg = failure(check_local_p_position, detached)
        assert "check 'gradient flows'" in msg and f"argument {name!r}" in msg, msg
