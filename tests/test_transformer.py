"""s2s_course.models.transformer against independent references.

- torch.nn.TransformerEncoderLayer / TransformerDecoderLayer with the same weights copied in
  (post-LN and pre-LN);
- the teacher-forced forward pass (all positions at once behind a causal mask) against
  decode_step token by token, with and without the KV cache;
- each padded sentence against the same sentence run alone, without padding;
- the reordered state against the reordered batch run from scratch;
- greedy_decode against beam_search with beam_size=1.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from s2s_course.data.specials import EOS_IDX, PAD_IDX, SOS_IDX
from s2s_course.decode import beam_search, greedy_decode
from s2s_course.models.rnn import count_parameters
from s2s_course.models.transformer import (DecoderLayer, EncoderLayer, FeedForward, Transformer,
                                           TransformerState, make_transformer)
from s2s_course.self_attention import padding_mask

D, H, FF = 16, 4, 32
TOL = dict(atol=1e-5, rtol=1e-5)


def tiny(norm_first=True, positional="sinusoidal", tie="decoder", src_vocab=13, tgt_vocab=11,
         layers=2, seed=0, **kwargs) -> Transformer:
    torch.manual_seed(seed)
    model = make_transformer(src_vocab, tgt_vocab, d_model=D, num_heads=H, num_layers=layers,
                             d_ff=FF, dropout=0.0, norm_first=norm_first, positional=positional,
                             tie=tie, max_len=64, **kwargs)
    if positional == "learned":  # std 0.02 positions would barely matter: make them count
        nn.init.normal_(model.positional.embedding.weight, std=1.0)
    if not norm_first:            # random LayerNorm affine parameters, so they are really used
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                nn.init.normal_(module.weight, 1.0, 0.3)
                nn.init.normal_(module.bias, 0.0, 0.3)
    return model.eval()


def padded_batch(seed=0, src_vocab=13, tgt_vocab=11, lengths=(5, 2, 4), T=6):
    """Sources of different lengths padded with PAD_IDX, and a target prefix <sos> y1 ..."""
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    src = torch.full((len(lengths), S), PAD_IDX, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(4, src_vocab, (n,), generator=g)
    tgt_in = torch.randint(4, tgt_vocab, (len(lengths), T), generator=g)
    tgt_in[:, 0] = SOS_IDX
    return src, torch.tensor(lengths), tgt_in


def step_by_step(model, src, src_lengths, tgt_in, use_cache):
    """Feed tgt_in one token at a time through decode_step; logits (B, T, V) and the states."""
    model.use_cache = use_cache
    try:
        state = model.encode(src, src_lengths)
        logits, states = [], []
        for t in range(tgt_in.size(1)):
            out, state = model.decode_step(tgt_in[:, t], state)
            logits.append(out)
            states.append(state)
    finally:
        model.use_cache = True
    return torch.stack(logits, dim=1), states


# --- torch.nn reference layers ---------------------------------------------------------------

def _copy_attention(ours, theirs: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.W_q.weight, ours.W_k.weight, ours.W_v.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.W_q.bias, ours.W_k.bias, ours.W_v.bias]))
        theirs.out_proj.weight.copy_(ours.W_o.weight)
        theirs.out_proj.bias.copy_(ours.W_o.bias)


def _copy_common(ours, theirs, norms) -> None:
    with torch.no_grad():
        theirs.linear1.weight.copy_(ours.ffn.linear1.weight)
        theirs.linear1.bias.copy_(ours.ffn.linear1.bias)
        theirs.linear2.weight.copy_(ours.ffn.linear2.weight)
        theirs.linear2.bias.copy_(ours.ffn.linear2.bias)
        for name in norms:
            getattr(theirs, name).weight.copy_(getattr(ours, name).weight)
            getattr(theirs, name).bias.copy_(getattr(ours, name).bias)


def _randomise_norms(layer) -> None:
    for module in layer.modules():
        if isinstance(module, nn.LayerNorm):
            nn.init.normal_(module.weight, 1.0, 0.3)
            nn.init.normal_(module.bias, 0.0, 0.3)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch_transformer_encoder_layer(norm_first):
    torch.manual_seed(0)
    ours = EncoderLayer(D, H, FF, dropout=0.0, norm_first=norm_first)
    _randomise_norms(ours)
    theirs = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation="relu",
                                        batch_first=True, norm_first=norm_first)
    _copy_attention(ours.self_attn, theirs.self_attn)
    _copy_common(ours, theirs, ("norm1", "norm2"))
    # train mode with dropout 0 keeps torch on its reference (non-"fast path") code, which
    # returns every position, padded ones included
    ours.eval(), theirs.train()
    x = torch.randn(3, 5, D)
    lengths = torch.tensor([5, 2, 4])
    mask = padding_mask(lengths, 5)                                  # True = real token
    got, weights = ours(x, mask)
    expected = theirs(x, src_key_padding_mask=~mask)                 # torch: True = ignore
    assert weights is None
    torch.testing.assert_close(got, expected, **TOL)
    got_w, weights = ours(x, mask, need_weights=True)
    torch.testing.assert_close(got_w, expected, **TOL)
    assert weights.shape == (3, H, 5, 5)
    assert torch.all(weights[1, :, :, 2:] == 0)                      # padded keys: no weight


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch_transformer_decoder_layer(norm_first):
    torch.manual_seed(1)
    ours = DecoderLayer(D, H, FF, dropout=0.0, norm_first=norm_first)
    _randomise_norms(ours)
    theirs = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, activation="relu",
                                        batch_first=True, norm_first=norm_first)
    _copy_attention(ours.self_attn, theirs.self_attn)
    _copy_attention(ours.cross_attn, theirs.multihead_attn)
    _copy_common(ours, theirs, ("norm1", "norm2", "norm3"))
    ours.eval(), theirs.train()
    y, memory = torch.randn(3, 4, D), torch.randn(3, 5, D)
    src_mask = padding_mask(torch.tensor([5, 2, 4]), 5)
    causal = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)  # True = hidden
    expected = theirs(y, memory, tgt_mask=causal, memory_key_padding_mask=~src_mask)

    memory_kv = ours.cross_attn.project_kv(memory, memory)
    got, cache, w_self, w_cross = ours(y, memory_kv, src_mask)
    assert cache is None and w_self is None and w_cross is None
    torch.testing.assert_close(got, expected, **TOL)

    got, _, w_self, w_cross = ours(y, memory_kv, src_mask, need_weights=True)
    torch.testing.assert_close(got, expected, **TOL)
    assert w_self.shape == (3, H, 4, 4) and w_cross.shape == (3, H, 4, 5)
    assert torch.all(w_self.masked_select(causal) == 0)              # no look at the future
    assert torch.all(w_cross[1, :, :, 2:] == 0)                      # nor at padding

    # the same layer fed one position at a time through its cache
    empty = torch.zeros(3, H, 0, D // H)
    cache, rows = (empty, empty), []
    for t in range(4):
        out, cache, _, _ = ours(y[:, t:t + 1], memory_kv, src_mask, cache=cache)
        rows.append(out)
    torch.testing.assert_close(torch.cat(rows, dim=1), expected, **TOL)
    assert cache[0].shape == (3, H, 4, D // H)


def test_feed_forward_is_relu_mlp_per_position():
    torch.manual_seed(0)
    ffn = FeedForward(D, FF)
    x = torch.randn(2, 3, D)
    w1, b1 = ffn.linear1.weight, ffn.linear1.bias
    w2, b2 = ffn.linear2.weight, ffn.linear2.bias
    expected = torch.clamp(x @ w1.T + b1, min=0) @ w2.T + b2
    torch.testing.assert_close(ffn(x), expected, **TOL)
    # position-wise: permuting positions permutes the outputs
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(ffn(x[:, perm]), ffn(x)[:, perm], **TOL)


# --- decode_step == forward ------------------------------------------------------------------

CONFIGS = [(True, "sinusoidal"), (False, "sinusoidal"), (True, "learned"), (False, "learned")]


@pytest.mark.parametrize("norm_first, positional", CONFIGS)
@pytest.mark.parametrize("use_cache", [True, False])
def test_decode_step_equals_teacher_forced_forward_for_every_prefix(norm_first, positional,
                                                                    use_cache):
    model = tiny(norm_first=norm_first, positional=positional)
    src, src_lengths, tgt_in = padded_batch()
    with torch.no_grad():
        full = model(src, src_lengths, tgt_in)                       # (B, T, V)
        stepped, states = step_by_step(model, src, src_lengths, tgt_in, use_cache)
    assert full.shape == (3, 6, 11)
    torch.testing.assert_close(stepped, full, **TOL)
    for t, state in enumerate(states):
        assert torch.equal(state.tokens, tgt_in[:, :t + 1])
        assert (state.cache is None) != use_cache
        assert state.attn.shape == (3, 5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_cache_and_recompute_agree_at_every_step(norm_first):
    model = tiny(norm_first=norm_first, layers=3, seed=4)
    src, src_lengths, tgt_in = padded_batch(seed=5, T=7)
    with torch.no_grad():
        cached, cached_states = step_by_step(model, src, src_lengths, tgt_in, use_cache=True)
        plain, plain_states = step_by_step(model, src, src_lengths, tgt_in, use_cache=False)
    torch.testing.assert_close(cached, plain, **TOL)
    for t, (a, b) in enumerate(zip(cached_states, plain_states)):
        torch.testing.assert_close(a.attn, b.attn, **TOL)
        assert len(a.cache) == 3 and b.cache is None
        for k, v in a.cache:
            assert k.shape == v.shape == (3, H, t + 1, D // H)
        assert a.cache_bytes() == 3 * 2 * 3 * H * (t + 1) * (D // H) * 4
        assert b.cache_bytes() == 0


@pytest.mark.parametrize("norm_first", [True, False])
def test_padded_batch_equals_each_sentence_alone(norm_first):
    model = tiny(norm_first=norm_first, seed=2)
    src, src_lengths, tgt_in = padded_batch(seed=3)
    with torch.no_grad():
        batch = model(src, src_lengths, tgt_in)
        stepped, _ = step_by_step(model, src, src_lengths, tgt_in, use_cache=True)
        for i, n in enumerate(src_lengths.tolist()):
            alone = model(src[i:i + 1, :n], src_lengths[i:i + 1], tgt_in[i:i + 1])
            torch.testing.assert_close(batch[i:i + 1], alone, **TOL)
            torch.testing.assert_close(stepped[i:i + 1], alone, **TOL)


# --- masks: causal and padding ---------------------------------------------------------------

@pytest.mark.parametrize("norm_first", [True, False])
def test_changing_a_future_target_token_changes_no_earlier_logits(norm_first):
    model = tiny(norm_first=norm_first, seed=6)
    src, src_lengths, tgt_in = padded_batch(seed=7)
    with torch.no_grad():
        base = model(src, src_lengths, tgt_in)
        for t in range(1, tgt_in.size(1)):
            changed = tgt_in.clone()
            changed[:, t] = 4 + (changed[:, t] - 4 + 1) % 7          # a different real token
            out = model(src, src_lengths, changed)
            torch.testing.assert_close(out[:, :t], base[:, :t], atol=0, rtol=0)
            assert not torch.allclose(out[:, t], base[:, t])         # position t does see it
            prefix = model(src, src_lengths, tgt_in[:, :t])          # a shorter target
            torch.testing.assert_close(prefix, base[:, :t], **TOL)


@pytest.mark.parametrize("norm_first", [True, False])
def test_padded_source_positions_change_nothing(norm_first):
    model = tiny(norm_first=norm_first, seed=8)
    src, src_lengths, tgt_in = padded_batch(seed=9)
    other = src.clone()
    pad = ~padding_mask(src_lengths, src.size(1))
    other[pad] = torch.randint(4, 13, (int(pad.sum()),), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(other, src)
    with torch.no_grad():
        torch.testing.assert_close(model(other, src_lengths, tgt_in), model(src, src_lengths, tgt_in),
                                   **TOL)
        a, _ = step_by_step(model, src, src_lengths, tgt_in, use_cache=True)
        b, _ = step_by_step(model, other, src_lengths, tgt_in, use_cache=True)
    torch.testing.assert_close(a, b, **TOL)
    # a real source token does matter
    changed = src.clone()
    changed[0, 0] = 4 + (changed[0, 0] - 4 + 1) % 9
    with torch.no_grad():
        assert not torch.allclose(model(changed, src_lengths, tgt_in)[0],
                                  model(src, src_lengths, tgt_in)[0])


# --- index_select ----------------------------------------------------------------------------

def _assert_states_close(a: TransformerState, b: TransformerState) -> None:
    assert len(a.memory_kv) == len(b.memory_kv)
    for (ka, va), (kb, vb) in zip(a.memory_kv, b.memory_kv):
        torch.testing.assert_close(ka, kb, **TOL)
        torch.testing.assert_close(va, vb, **TOL)
    assert torch.equal(a.src_mask, b.src_mask)
    assert torch.equal(a.tokens, b.tokens)
    assert (a.cache is None) == (b.cache is None)
    if a.cache is not None:
        assert len(a.cache) == len(b.cache)
        for (ka, va), (kb, vb) in zip(a.cache, b.cache):
            torch.testing.assert_close(ka, kb, **TOL)
            torch.testing.assert_close(va, vb, **TOL)
    assert (a.attn is None) == (b.attn is None)
    if a.attn is not None:
        torch.testing.assert_close(a.attn, b.attn, **TOL)


@pytest.mark.parametrize("use_cache", [True, False])
def test_index_select_equals_running_the_reordered_batch_from_scratch(use_cache):
    model = tiny(seed=10)
    src, src_lengths, tgt_in = padded_batch(seed=11, T=5)
    idx = torch.tensor([2, 0, 0, 1])                                 # reorder and repeat
    with torch.no_grad():
        _, states = step_by_step(model, src, src_lengths, tgt_in[:, :3], use_cache)
        picked = states[-1].index_select(idx)
        _, fresh_states = step_by_step(model, src[idx], src_lengths[idx], tgt_in[idx, :3],
                                       use_cache)
        _assert_states_close(picked, fresh_states[-1])
        # and decoding goes on identically from the selected state
        logits, after = model.decode_step(tgt_in[idx, 3], picked)
        model.use_cache = use_cache
        fresh_logits, fresh_after = model.decode_step(tgt_in[idx, 3], fresh_states[-1])
        model.use_cache = True
    torch.testing.assert_close(logits, fresh_logits, **TOL)
    _assert_states_close(after, fresh_after)
    # a state fresh from encode (no tokens, no attn yet) can be selected too
    state = model.encode(src, src_lengths).index_select(idx)
    assert state.tokens.shape == (4, 0) and state.attn is None
    assert state.cache == []


# --- decoding through the course's decoders ---------------------------------------------------

@pytest.mark.parametrize("norm_first", [True, False])
def test_beam_size_one_equals_greedy(norm_first):
    model = tiny(norm_first=norm_first, seed=12, tgt_vocab=9)
    with torch.no_grad():  # make <eos> unlikely so the outputs have some length
        model.generator.bias[EOS_IDX] -= 2.0
    src, src_lengths, _ = padded_batch(seed=13)
    greedy = greedy_decode(model, src, src_lengths, max_len=8)
    beam = beam_search(model, src, src_lengths, beam_size=1, max_len=8)
    assert [hyps[0].tokens for hyps in beam] == greedy
    assert any(len(out) > 1 for out in greedy)
    model.use_cache = False
    try:
        assert greedy_decode(model, src, src_lengths, max_len=8) == greedy
    finally:
        model.use_cache = True


def test_greedy_decode_returns_the_cross_attention_of_each_step():
    model = tiny(seed=14)
    src, src_lengths, _ = padded_batch(seed=15)
    outputs, attention = greedy_decode(model, src, src_lengths, max_len=5, return_attention=True)
    for out, weights, n in zip(outputs, attention, src_lengths.tolist()):
        assert weights.shape[1] == n
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.size(0)), **TOL)


# --- attention maps --------------------------------------------------------------------------

def test_attention_maps_shapes_masks_and_agreement_with_forward():
    model = tiny(seed=16, layers=2).train()
    src, src_lengths, tgt_in = padded_batch(seed=17)
    maps = model.attention_maps(src, src_lengths, tgt_in)
    assert model.training                                            # mode restored
    assert set(maps) == {"encoder", "decoder", "cross"}
    assert all(len(maps[k]) == 2 for k in maps)
    B, S, T = 3, 5, 6
    for w in maps["encoder"]:
        assert w.shape == (B, H, S, S)
        assert torch.all(w[1, :, :, 2:] == 0)
    for w in maps["decoder"]:
        assert w.shape == (B, H, T, T)
        assert torch.all(torch.triu(w, diagonal=1) == 0)
    for w in maps["cross"]:
        assert w.shape == (B, H, T, S)
        assert torch.all(w[1, :, :, 2:] == 0)
    for kind in maps:
        for w in maps[kind]:
            torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]), **TOL)
    model.eval()
    with torch.no_grad():
        logits, cross = model(src, src_lengths, tgt_in, return_attention=True)
    torch.testing.assert_close(cross, maps["cross"][-1].mean(dim=1), **TOL)
    torch.testing.assert_close(logits, model(src, src_lengths, tgt_in), **TOL)
    assert not model.training


# --- embeddings, tying, parameters -----------------------------------------------------------

def test_tie_all_shares_one_tensor_between_both_embeddings_and_the_generator():
    model = tiny(tie="all", src_vocab=12, tgt_vocab=12)
    assert model.src_embedding.weight is model.tgt_embedding.weight is model.generator.weight
    ptr = model.src_embedding.weight.data_ptr()
    assert model.tgt_embedding.weight.data_ptr() == ptr == model.generator.weight.data_ptr()
    with torch.no_grad():
        model.generator.weight[5, 0] = 123.0
    assert model.src_embedding.weight[5, 0].item() == 123.0
    assert model.tgt_embedding.weight[5, 0].item() == 123.0
    names = [n for n, _ in model.named_parameters()]
    assert sum("embedding.weight" in n or "generator.weight" in n for n in names) == 1


def test_tie_decoder_shares_target_embedding_and_generator_only():
    model = tiny(tie="decoder")
    assert model.tgt_embedding.weight is model.generator.weight
    assert model.src_embedding.weight.data_ptr() != model.tgt_embedding.weight.data_ptr()
    untied = tiny(tie="none")
    assert untied.generator.weight.data_ptr() != untied.tgt_embedding.weight.data_ptr()
    assert untied.src_embedding is not untied.tgt_embedding
    # the tied matrix is counted once
    assert count_parameters(untied) - count_parameters(model) == 11 * D


def test_parameter_count_by_hand():
    """Per layer: attention 4 (D^2 + D); FFN 2 D FF + FF + D; LayerNorm 2 D."""
    V_src, V_tgt, L = 13, 11, 2
    attention = 4 * (D * D + D)
    ffn = 2 * D * FF + FF + D
    encoder = L * (attention + ffn + 2 * 2 * D) + 2 * D               # + final LN (pre-LN)
    decoder = L * (2 * attention + ffn + 3 * 2 * D) + 2 * D
    embeddings = V_src * D + V_tgt * D
    generator_bias = V_tgt
    expected = encoder + decoder + embeddings + generator_bias        # generator tied (decoder)
    assert count_parameters(tiny(tie="decoder")) == expected
    assert count_parameters(tiny(tie="none")) == expected + V_tgt * D
    # post-LN: no final LayerNorms; learned positions add max_len x D
    assert count_parameters(tiny(norm_first=False)) == expected - 4 * D
    assert count_parameters(tiny(positional="learned")) == expected + 64 * D


def test_bad_tie_arguments():
    with pytest.raises(ValueError, match="tie"):
        tiny(tie="all", src_vocab=13, tgt_vocab=11)
    with pytest.raises(ValueError, match="tie"):
        tiny(tie="encoder")


def test_embedding_scale_and_pad_row():
    model = tiny(tie="none")
    tokens = torch.tensor([[5, PAD_IDX]])
    x = model.embed(model.src_embedding, tokens)
    pe = model.positional.pe[:2]
    expected = model.src_embedding.weight[tokens[0]] * D ** 0.5 + pe
    torch.testing.assert_close(x[0], expected, **TOL)
    assert model.src_pad_idx == PAD_IDX
    assert model.src_embedding.padding_idx == model.tgt_embedding.padding_idx == PAD_IDX


# --- errors -----------------------------------------------------------------------------------

def test_bad_shapes_and_teacher_forcing_name_the_argument():
    model = tiny()
    src, src_lengths, tgt_in = padded_batch()
    with pytest.raises(ValueError, match="tgt_in"):
        model(src, src_lengths, tgt_in[0])                           # 1-D
    with pytest.raises(ValueError, match="tgt_in"):
        model(src, src_lengths, tgt_in[:2])                          # batch size differs
    with pytest.raises(ValueError, match="src_lengths"):
        model(src, src_lengths[:2], tgt_in)
    with pytest.raises(ValueError, match="src_lengths"):
        model(src, torch.tensor([5, 0, 4]), tgt_in)
    with pytest.raises(ValueError, match="src_lengths"):
        model.encode(src, torch.tensor([6, 2, 4]))
    with pytest.raises(ValueError, match="src"):
        model(src.float(), src_lengths, tgt_in)
    with pytest.raises(ValueError, match="teacher_forcing"):
        model(src, src_lengths, tgt_in, teacher_forcing=0.5)
    with pytest.raises(ValueError, match="divisible"):
        make_transformer(10, 10, d_model=10, num_heads=4)


# --- it learns --------------------------------------------------------------------------------

def test_a_few_adam_steps_fit_a_copy_batch():
    from s2s_course.train import sequence_loss

    model = tiny(seed=20, tie="all", src_vocab=12, tgt_vocab=12, layers=1).train()
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 12, (8, 5), generator=g)
    lengths = torch.full((8,), 5)
    tgt = torch.cat([torch.full((8, 1), SOS_IDX), src, torch.full((8, 1), EOS_IDX)], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = sequence_loss(model(src, lengths, tgt[:, :-1]), tgt[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
