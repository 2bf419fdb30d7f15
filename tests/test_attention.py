"""Attention against independent references: hand-computed cases and torch built-ins."""
import math

import pytest
import torch
import torch.nn.functional as F

from s2s_course.models import make_attention_seq2seq
from s2s_course.attention import (AdditiveScore, Attention, ConcatScore, DotScore, GeneralScore,
                                  LocalAttention, make_score, masked_softmax)

B, S, H = 3, 5, 4


def _mask(lengths, S=S):
    return torch.arange(S).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


# --------------------------------------------------------------------------- masked_softmax

def test_masked_softmax_equals_softmax_over_the_unmasked_subset():
    torch.manual_seed(0)
    scores = torch.randn(B, S)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    weights = masked_softmax(scores, mask)
    for b in range(B):
        kept = mask[b].nonzero().squeeze(1)
        torch.testing.assert_close(weights[b, kept], torch.softmax(scores[b, kept], dim=0))
        assert (weights[b, ~mask[b]] == 0).all()                 # exactly zero, not tiny
    torch.testing.assert_close(weights.sum(-1), torch.ones(B))


def test_masked_softmax_fully_masked_row_is_zeros_and_none_mask_is_softmax():
    scores = torch.randn(2, 3)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    weights = masked_softmax(scores, mask)
    assert not torch.isnan(weights).any()
    assert (weights[1] == 0).all()
    scores.requires_grad_(True)
    (masked_softmax(scores, mask) * torch.randn(2, 3)).sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[1] == 0).all()
    torch.testing.assert_close(masked_softmax(scores), torch.softmax(scores, -1))


def test_masked_softmax_broadcasts_a_b_s_mask_over_extra_dims():
    scores = torch.randn(2, 3, 4)                                 # (B, T, S)
    mask = _mask([4, 2], S=4)
    weights = masked_softmax(scores, mask)
    torch.testing.assert_close(weights[1, :, :2], torch.softmax(scores[1, :, :2], -1))
    assert (weights[1, :, 2:] == 0).all()


def test_masked_softmax_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"mask must be \(2, 3\) bool"):
        masked_softmax(torch.randn(2, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be"):
        masked_softmax(torch.randn(2, 3), torch.ones(2, 3))       # float mask
    with pytest.raises(ValueError, match=r"scores must be \(B, ..., S\)"):
        masked_softmax(torch.randn(3), torch.ones(3, dtype=torch.bool))


# --------------------------------------------------------------------------- score functions

def test_additive_score_two_positions_by_hand():
    score = AdditiveScore(query_dim=1, key_dim=1, attn_dim=1)
    with torch.no_grad():
        score.W.weight.fill_(1.0)
        score.U.weight.fill_(2.0)
        score.v.weight.fill_(3.0)
    query = torch.tensor([[0.5]])
    keys = torch.tensor([[[1.0], [-1.0]]])
    # e_j = 3 * tanh(1 * 0.5 + 2 * k_j)
    e1, e2 = 3 * math.tanh(0.5 + 2.0), 3 * math.tanh(0.5 - 2.0)
    torch.testing.assert_close(score(query, keys), torch.tensor([[e1, e2]]))
    context, weights = Attention(score)(query, keys)
    a1 = math.exp(e1) / (math.exp(e1) + math.exp(e2))
    torch.testing.assert_close(weights, torch.tensor([[a1, 1 - a1]]))
    torch.testing.assert_close(context, torch.tensor([[a1 * 1.0 + (1 - a1) * -1.0]]))


def test_general_and_concat_scores_by_hand():
    query = torch.tensor([[1.0, 2.0]])                           # (1, 2)
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # (1, 3, 2)
    general = GeneralScore(2, 2)
    with torch.no_grad():
        general.W_a.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, -1.0]]))
    # q^T W k: W k_1 = (2, 0) -> 2; W k_2 = (0, -1) -> -2; W k_3 = (2, -1) -> 0
    torch.testing.assert_close(general(query, keys), torch.tensor([[2.0, -2.0, 0.0]]))

    concat = ConcatScore(2, 2, attn_dim=1)
    with torch.no_grad():
        concat.W_a.weight.copy_(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))   # acts on [q; k]
        concat.v.weight.fill_(2.0)
    expected = [2 * math.tanh(0.1 * 1 + 0.2 * 2 + 0.3 * k0 + 0.4 * k1)
                for k0, k1 in [(1, 0), (0, 1), (1, 1)]]
    torch.testing.assert_close(concat(query, keys), torch.tensor([expected]))


def test_dot_attention_equals_scaled_dot_product_attention_with_scale_1():
    torch.manual_seed(0)
    q, k, v = torch.randn(B, H), torch.randn(B, S, H), torch.randn(B, S, 6)
    mask = _mask([5, 3, 1])
    context, weights = Attention(DotScore())(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q.unsqueeze(1), k, v, attn_mask=mask.unsqueeze(1),
                                              scale=1.0).squeeze(1)
    torch.testing.assert_close(context, expected)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B))
    assert (weights[~mask] == 0).all()


@pytest.mark.parametrize("name", ["additive", "dot", "general", "concat"])
def test_permuting_source_positions_permutes_weights_and_keeps_context(name):
    torch.manual_seed(1)
    attention = Attention(make_score(name, H, H, attn_dim=3))
    q, k, v = torch.randn(B, H), torch.randn(B, S, H), torch.randn(B, S, 2)
    mask = _mask([5, 4, 2])
    perm = torch.tensor([3, 0, 4, 1, 2])
    context, weights = attention(q, k, v, mask)
    context_p, weights_p = attention(q, k[:, perm], v[:, perm], mask[:, perm])
    torch.testing.assert_close(weights_p, weights[:, perm])
    torch.testing.assert_close(context_p, context)


@pytest.mark.parametrize("name", ["additive", "general", "concat"])
def test_gradient_reaches_every_parameter(name):
    torch.manual_seed(2)
    attention = Attention(make_score(name, 3, H))
    q = torch.randn(B, 3, requires_grad=True)
    keys = torch.randn(B, S, H, requires_grad=True)
    context, _ = attention(q, keys, mask=_mask([5, 3, 2]))
    context.sum().backward()
    assert q.grad is not None and keys.grad is not None
    for pname, p in attention.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_make_score_rejects_unknown_names_and_mismatched_dot():
    assert isinstance(make_score("dot", 4, 4), DotScore)
    with pytest.raises(ValueError, match="name must be one of"):
        make_score("cosine", 4, 4)
    with pytest.raises(ValueError, match="query_dim == key_dim"):
        make_score("dot", 4, 6)
    with pytest.raises(ValueError, match="same size"):
        DotScore()(torch.randn(2, 4), torch.randn(2, 3, 6))


def test_shape_errors_name_the_argument_and_the_expected_shape():
    attention = Attention(AdditiveScore(4, 6, 5))
    with pytest.raises(ValueError, match=r"query must be \(B, 4\), got shape \(2, 3\)"):
        attention(torch.randn(2, 3), torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"keys must be \(B, S, 6\) with B=2"):
        attention(torch.randn(2, 4), torch.randn(3, 5, 6))
    with pytest.raises(ValueError, match=r"values must be \(B, S, Hv\)"):
        attention(torch.randn(2, 4), torch.randn(2, 5, 6), torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match=r"mask must be \(2, 5\) bool"):
        attention(torch.randn(2, 4), torch.randn(2, 5, 6), mask=torch.ones(2, 4, dtype=torch.bool))


# --------------------------------------------------------------------------- local-p attention

def _local_with_centre_gate(window=2, dim=H):
    """v_p = 0 makes sigmoid(...) = 0.5, so p_t = S_len / 2 exactly."""
    local = LocalAttention(DotScore(), query_dim=dim, window=window)
    with torch.no_grad():
        local.v_p.weight.zero_()
    return local


def test_local_attention_matches_luong_eq_10_by_hand():
    torch.manual_seed(3)
    S_ = 8
    local = _local_with_centre_gate(window=2)
    q, k = torch.randn(2, H), torch.randn(2, S_, H)
    mask = _mask([8, 4], S=S_)
    context, weights = local(q, k, mask=mask)
    for b, p in [(0, 4.0), (1, 2.0)]:                         # p_t = S_len / 2
        window = [s for s in range(S_) if abs(s - p) <= 2 and mask[b, s]]
        scores = [float(k[b, s] @ q[b]) for s in window]
        z = sum(math.exp(e) for e in scores)
        expected = torch.zeros(S_)
        for s, e in zip(window, scores):
            expected[s] = math.exp(e) / z * math.exp(-(s - p) ** 2 / (2 * 1.0 ** 2))  # sigma = D/2
        torch.testing.assert_close(weights[b], expected)
        outside = torch.tensor([s not in window for s in range(S_)])
        assert (weights[b, outside] == 0).all()
    torch.testing.assert_close(context, torch.bmm(weights.unsqueeze(1), k).squeeze(1))


def test_local_attention_gradient_reaches_the_position_predictor():
    torch.manual_seed(4)
    local = LocalAttention(GeneralScore(3, H), query_dim=3, window=1)
    context, weights = local(torch.randn(B, 3), torch.randn(B, S, H), mask=_mask([5, 4, 3]))
    assert (weights.sum(-1) <= 1 + 1e-6).all()
    context.sum().backward()
    for pname, p in local.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_local_attention_without_mask_and_bad_window():
    local = _local_with_centre_gate(window=1)
    _, weights = local(torch.randn(1, H), torch.randn(1, 6, H))   # p = 3, window [2, 4]
    assert (weights[0, [0, 1, 5]] == 0).all() and (weights[0, 2:5] > 0).all()
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        LocalAttention(DotScore(), H, window=0)


# --- keys projected once per sentence --------------------------------------------------------

@pytest.mark.parametrize("name", ["additive", "dot", "general", "concat"])
def test_projected_keys_give_the_same_scores_and_gradients(name):
    torch.manual_seed(0)
    score = make_score(name, 6, 6, attn_dim=5)
    q, k = torch.randn(3, 6, requires_grad=True), torch.randn(3, 4, 6, requires_grad=True)
    plain = score(q, k)
    cached = score(q, k, score.project_keys(k))
    torch.testing.assert_close(cached, plain)
    g_plain = torch.autograd.grad(plain.sum(), [q, k])
    g_cached = torch.autograd.grad(score(q, k, score.project_keys(k)).sum(), [q, k])
    for a, b in zip(g_plain, g_cached):
        torch.testing.assert_close(a, b)


def test_concat_split_equals_the_formula_by_hand():
    torch.manual_seed(1)
    score = ConcatScore(3, 2, 4)
    q, k = torch.randn(1, 3), torch.randn(1, 2, 2)
    by_hand = torch.stack([score.v.weight[0] @ torch.tanh(score.W_a.weight @ torch.cat([q[0], k[0, j]]))
                           for j in range(2)])
    torch.testing.assert_close(score(q, k, score.project_keys(k))[0], by_hand)


def _decoder_flops(model, state, steps=3):
    from torch.utils.flop_counter import FlopCounterMode
    y = torch.zeros(state.memory.size(0), dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        for _ in range(steps):
            _, state = model.decoder(y, state)
    return counter.get_total_flops()


@pytest.mark.parametrize("kind, score", [("bahdanau", "general"), ("luong", "general"), ("luong", "concat")])
def test_decoder_states_carry_the_projection_and_it_saves_work(kind, score):
    from dataclasses import replace
    torch.manual_seed(0)
    model = make_attention_seq2seq(11, 13, kind=kind, score=score, emb_dim=8, hidden_dim=32).eval()
    src, lengths = torch.randint(4, 11, (2, 40)), torch.tensor([40, 25])
    state = model.encode(src, lengths)
    assert state.keys is not None and state.keys.shape[:2] == (2, 40)
    uncached = replace(state, keys=None)  # the decoder then projects the keys at every step
    y = torch.tensor([1, 2])
    torch.testing.assert_close(model.decoder(y, state)[0], model.decoder(y, uncached)[0])
    assert _decoder_flops(model, state) < 0.8 * _decoder_flops(model, uncached)
    picked = state.index_select(torch.tensor([1, 1, 0]))
    torch.testing.assert_close(picked.keys, state.keys[[1, 1, 0]])
    assert model.decoder(y, state)[1].step == 1 and picked.step == 0


# --- local-m ---------------------------------------------------------------------------------

class _Given(torch.nn.Module):
    """Scores fixed in advance (zeros: uniform over the window)."""

    def __init__(self, S):
        super().__init__()
        self.S = S

    def project_keys(self, keys):
        return keys

    def forward(self, query, keys, projected_keys=None):
        return torch.zeros(keys.size(0), keys.size(1))


def test_local_m_window_follows_the_step_and_stops_at_the_last_real_token():
    local = LocalAttention(_Given(5), query_dim=2, window=1, monotonic=True)
    assert not any(True for _ in local.parameters())  # local-m has no position predictor
    q, keys = torch.zeros(2, 2), torch.randn(2, 5, 3)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    _, w = local(q, keys, mask=mask, step=1)
    # row 0: p = 1, window 0..2, uniform; row 1: p = min(1, 2 - 1) = 1, window 0..2 minus padding
    torch.testing.assert_close(w, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0, 0], [0.5, 0.5, 0, 0, 0]]))
    _, w = local(q, keys, mask=mask, step=7)  # past the end: the window sits on the last token
    torch.testing.assert_close(w, torch.tensor([[0, 0, 0, 0.5, 0.5], [0.5, 0.5, 0, 0, 0]]))
    context, w = local(q, keys, mask=mask, step=0)
    torch.testing.assert_close(context, torch.einsum("bs,bsh->bh", w, keys))
    with pytest.raises(ValueError, match="step"):
        local(q, keys, mask=mask)


def test_local_m_model_decodes_and_is_named():
    torch.manual_seed(0)
    model = make_attention_seq2seq(11, 13, kind="luong", emb_dim=8, hidden_dim=16, local_window=2,
                                   local_mode="m").eval()
    assert model.decoder.attention.monotonic
    state = model.encode(torch.randint(4, 11, (2, 6)), torch.tensor([6, 3]))
    for t in range(4):
        _, state = model.decoder(torch.tensor([1, 1]), state)
        assert (state.attn[1, 3:] == 0).all() and state.step == t + 1
    with pytest.raises(ValueError, match="local_mode"):
        make_attention_seq2seq(11, 13, kind="luong", local_window=2, local_mode="x")
