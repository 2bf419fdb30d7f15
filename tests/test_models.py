"""RNN seq2seq models: padding invariance, the shared interface, teacher forcing, gradients."""
import pytest
import torch
import torch.nn as nn

from s2s_course.data.specials import PAD_IDX, SOS_IDX
from s2s_course.models import (AttnSeq2Seq, BahdanauDecoder, Decoder, DecoderState, Encoder,
                               EncoderDecoder, LuongDecoder, Seq2Seq, count_parameters,
                               make_attention_seq2seq, make_rnn_seq2seq)

SRC_V, TGT_V, E, H = 10, 11, 6, 8


def _batch(seed=0):
    """Sources of lengths 5, 2, 4 (PAD after the end) and a (3, 4) tgt_in starting with <sos>."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, SRC_V, (3, 5), generator=g)
    lengths = torch.tensor([5, 2, 4])
    src[1, 2:] = PAD_IDX
    src[2, 4:] = PAD_IDX
    tgt_in = torch.randint(4, TGT_V, (3, 4), generator=g)
    tgt_in[:, 0] = SOS_IDX
    return src, lengths, tgt_in


MODELS = {
    "cho-gru": lambda: make_rnn_seq2seq(SRC_V, TGT_V, E, H, mode="cho"),
    "cho-lstm-bi-2l": lambda: make_rnn_seq2seq(SRC_V, TGT_V, E, H, cell="lstm", mode="cho",
                                               num_layers=2, bidirectional=True),
    "sutskever-gru": lambda: make_rnn_seq2seq(SRC_V, TGT_V, E, H, mode="sutskever"),
    "sutskever-lstm-bi": lambda: make_rnn_seq2seq(SRC_V, TGT_V, E, H, cell="lstm",
                                                  mode="sutskever", bidirectional=True),
    "bahdanau-gru": lambda: make_attention_seq2seq(SRC_V, TGT_V, emb_dim=E, hidden_dim=H),
    "bahdanau-lstm-2l": lambda: make_attention_seq2seq(SRC_V, TGT_V, emb_dim=E, hidden_dim=H,
                                                       cell="lstm", num_layers=2),
    "luong-dot": lambda: make_attention_seq2seq(SRC_V, TGT_V, "luong", "dot", emb_dim=E,
                                                hidden_dim=H),
    "luong-general-lstm-nofeed": lambda: make_attention_seq2seq(
        SRC_V, TGT_V, "luong", "general", input_feeding=False, emb_dim=E, hidden_dim=H,
        cell="lstm", bidirectional=False),
    "luong-concat-local": lambda: make_attention_seq2seq(SRC_V, TGT_V, "luong", "concat", emb_dim=E,
                                                         hidden_dim=H, local_window=1),
}
ATTENTION = [name for name in MODELS if name.startswith(("bahdanau", "luong"))]


# --------------------------------------------------------------------------- encoder

@pytest.mark.parametrize("cell,bidirectional,layers", [("gru", False, 1), ("lstm", True, 2)])
def test_encoding_alone_equals_encoding_padded_in_a_batch(cell, bidirectional, layers):
    torch.manual_seed(0)
    encoder = Encoder(SRC_V, E, H, layers, cell, bidirectional=bidirectional)
    src, lengths, _ = _batch()
    outputs, final = encoder(src, lengths)
    D = 2 if bidirectional else 1
    assert outputs.shape == (3, 5, D * H)
    for i in range(3):
        n = int(lengths[i])
        alone_out, alone_final = encoder(src[i:i + 1, :n], lengths[i:i + 1])
        torch.testing.assert_close(outputs[i, :n], alone_out[0])
        assert (outputs[i, n:] == 0).all()                      # padding gives zero outputs
        finals = zip(final, alone_final) if cell == "lstm" else [(final, alone_final)]
        for batched, alone in finals:
            assert batched.shape == (layers, 3, D * H)
            torch.testing.assert_close(batched[:, i], alone[:, 0])


def test_bidirectional_final_state_is_forward_last_and_backward_first_output():
    torch.manual_seed(1)
    encoder = Encoder(SRC_V, E, H, bidirectional=True)
    src, lengths, _ = _batch()
    outputs, final = encoder(src, lengths)
    for i, n in enumerate(lengths.tolist()):
        expected = torch.cat([outputs[i, n - 1, :H], outputs[i, 0, H:]])  # [forward; backward]
        torch.testing.assert_close(final[-1, i], expected)


def test_encoder_equals_a_plain_gru_on_unpadded_input():
    torch.manual_seed(2)
    encoder = Encoder(SRC_V, E, H)
    reference = nn.GRU(E, H, batch_first=True)
    reference.load_state_dict(encoder.rnn.state_dict())
    src = torch.randint(4, SRC_V, (2, 4))
    outputs, final = encoder(src, torch.tensor([4, 4]))
    ref_out, ref_final = reference(encoder.embedding(src))
    torch.testing.assert_close(outputs, ref_out)
    torch.testing.assert_close(final, ref_final)


def test_encoder_input_errors():
    encoder = Encoder(SRC_V, E, H)
    with pytest.raises(ValueError, match=r"src must be \(B, S\) int64"):
        encoder(torch.zeros(3, dtype=torch.long), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"src_lengths must be \(2,\)"):
        encoder(torch.zeros(2, 3, dtype=torch.long), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"src_lengths must lie in \[1, 3\]"):
        encoder(torch.zeros(2, 3, dtype=torch.long), torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="cell must be one of"):
        Encoder(SRC_V, E, H, cell="rnn")


# --------------------------------------------------------------------------- all models

@pytest.mark.parametrize("name", list(MODELS))
def test_forward_shapes_and_padding_invariance(name):
    torch.manual_seed(3)
    model = MODELS[name]()
    src, lengths, tgt_in = _batch()
    logits, attn = model(src, lengths, tgt_in, return_attention=True)
    assert logits.shape == (3, 4, TGT_V)
    assert model.vocab_size == TGT_V and model.src_pad_idx == PAD_IDX
    for i in range(3):                                          # a sentence alone == in the batch
        n = int(lengths[i])
        alone = model(src[i:i + 1, :n], lengths[i:i + 1], tgt_in[i:i + 1])
        torch.testing.assert_close(logits[i], alone[0])
    if name in ATTENTION:
        assert attn.shape == (3, 4, 5)
        assert (attn[1, :, 2:] == 0).all() and (attn[2, :, 4:] == 0).all()  # padding: weight 0
        if "local" not in name:
            torch.testing.assert_close(attn.sum(-1), torch.ones(3, 4))
    else:
        assert attn is None


@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_reaches_every_parameter(name):
    torch.manual_seed(4)
    model = MODELS[name]()
    src, lengths, tgt_in = _batch()
    model(src, lengths, tgt_in).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_forward_equals_a_loop_of_decode_steps_on_gold_inputs():
    torch.manual_seed(5)
    model = MODELS["luong-dot"]()
    src, lengths, tgt_in = _batch()
    state = model.encode(src, lengths)
    steps = []
    for t in range(tgt_in.size(1)):
        logits, state = model.decode_step(tgt_in[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(model(src, lengths, tgt_in), torch.stack(steps, 1))


def test_teacher_forcing_1_draws_no_random_numbers():
    model = MODELS["cho-gru"]()
    src, lengths, tgt_in = _batch()
    torch.manual_seed(6)
    before = torch.get_rng_state()
    model(src, lengths, tgt_in, teacher_forcing=1.0)
    model(src, lengths, tgt_in, teacher_forcing=0.0)
    assert torch.equal(before, torch.get_rng_state())
    model(src, lengths, tgt_in, teacher_forcing=0.5)
    assert not torch.equal(before, torch.get_rng_state())


def _recorded_inputs(model, src, lengths, tgt_in, ratio):
    """Run forward while recording every decoder input and every step's logits."""
    inputs, outputs = [], []
    step = model.decode_step

    def spy(y_prev, state):
        logits, state = step(y_prev, state)
        inputs.append(y_prev.clone())
        outputs.append(logits.argmax(-1))
        return logits, state

    model.decode_step = spy
    model(src, lengths, tgt_in, teacher_forcing=ratio)
    return torch.stack(inputs, 1), torch.stack(outputs, 1)       # (B, T) each


def test_teacher_forcing_0_feeds_the_previous_argmax():
    torch.manual_seed(7)
    model = MODELS["bahdanau-gru"]()
    src, lengths, tgt_in = _batch()
    inputs, argmaxes = _recorded_inputs(model, src, lengths, tgt_in, 0.0)
    assert torch.equal(inputs[:, 0], tgt_in[:, 0])
    assert torch.equal(inputs[:, 1:], argmaxes[:, :-1])


def test_teacher_forcing_mixes_gold_and_argmax_per_example_per_step():
    torch.manual_seed(8)
    model = make_rnn_seq2seq(SRC_V, TGT_V, E, H)
    src, lengths, _ = _batch()
    src, lengths = src.repeat(20, 1), lengths.repeat(20)         # 60 examples
    tgt_in = torch.randint(4, TGT_V, (60, 6))
    tgt_in[:, 0] = SOS_IDX
    inputs, argmaxes = _recorded_inputs(model, src, lengths, tgt_in, 0.5)
    gold = inputs[:, 1:] == tgt_in[:, 1:]
    own = inputs[:, 1:] == argmaxes[:, :-1]
    assert (gold | own).all()                                    # always one or the other
    only_gold, only_own = (gold & ~own).sum().item(), (own & ~gold).sum().item()
    assert only_gold > 20 and only_own > 20                      # both happen, ~half each
    assert (gold & ~own).any(dim=0).all()                        # within each step, examples differ
    assert (own & ~gold).any(dim=0).all()


# --------------------------------------------------------------------------- specific models

def test_cho_decoder_starts_from_tanh_wc_and_reads_c_every_step():
    torch.manual_seed(9)
    model = MODELS["cho-gru"]()
    src, lengths, _ = _batch()
    state = model.encode(src, lengths)
    _, final = model.encoder(src, lengths)
    c = final[-1]                                                # top layer = summary of source
    torch.testing.assert_close(state.context, c)
    W, b = model.decoder.init_hidden.weight, model.decoder.init_hidden.bias
    torch.testing.assert_close(state.hidden[0], torch.tanh(c @ W.T + b))
    y = torch.full((3,), SOS_IDX)
    logits, _ = model.decode_step(y, state)
    other = DecoderState(hidden=state.hidden, context=torch.zeros_like(c))
    other_logits, _ = model.decode_step(y, other)                # same h, different c
    assert not torch.allclose(logits, other_logits)


def test_sutskever_hands_over_the_final_state_as_is():
    torch.manual_seed(10)
    model = MODELS["sutskever-gru"]()
    assert model.bridge is None
    src, lengths, _ = _batch()
    state = model.encode(src, lengths)
    _, final = model.encoder(src, lengths)
    torch.testing.assert_close(state.hidden, final)
    assert state.context is None and state.memory is None
    bi = MODELS["sutskever-lstm-bi"]()                           # (h, c) of 2H -> bridge to H
    h, c = bi.encode(src, lengths).hidden
    assert bi.bridge is not None and h.shape == c.shape == (1, 3, H)


def test_luong_input_feeding_state():
    torch.manual_seed(11)
    src, lengths, _ = _batch()
    y = torch.full((3,), SOS_IDX)
    model = MODELS["luong-dot"]()
    state = model.encode(src, lengths)
    assert torch.equal(state.feed, torch.zeros(3, H))            # h~_0 = 0
    _, state = model.decode_step(y, state)
    assert state.feed.shape == (3, H) and state.attn.shape == (3, 5)
    no_feed = MODELS["luong-general-lstm-nofeed"]()
    _, state = no_feed.decode_step(y, no_feed.encode(src, lengths))
    assert state.feed is None


@pytest.mark.parametrize("lstm", [False, True])
def test_decoder_state_index_select(lstm):
    h = torch.arange(2 * 3 * 2.0).view(2, 3, 2)                 # (L=2, B=3, H=2)
    hidden = (h, -h) if lstm else h
    memory = torch.arange(3 * 4 * 2.0).view(3, 4, 2)
    state = DecoderState(hidden=hidden, memory=memory, src_mask=torch.ones(3, 4, dtype=torch.bool),
                         feed=torch.tensor([[0.0], [1.0], [2.0]]))
    idx = torch.tensor([2, 2, 0])
    picked = state.index_select(idx)
    new_h = picked.hidden[0] if lstm else picked.hidden
    assert torch.equal(new_h, h[:, [2, 2, 0]])
    if lstm:
        assert torch.equal(picked.hidden[1], -h[:, [2, 2, 0]])
    assert torch.equal(picked.memory, memory[[2, 2, 0]])
    assert picked.feed.squeeze(1).tolist() == [2.0, 2.0, 0.0]
    assert picked.context is None and picked.attn is None


def test_count_parameters_by_hand():
    encoder = Encoder(vocab_size=5, emb_dim=2, hidden_dim=3)
    # embedding 5*2 + GRU 3 gates * (input 3*2 + hidden 3*3 + two biases 3 + 3)
    assert count_parameters(encoder) == 5 * 2 + 3 * (3 * 2 + 3 * 3 + 3 + 3)
    encoder.embedding.weight.requires_grad_(False)
    assert count_parameters(encoder) == 3 * (3 * 2 + 3 * 3 + 3 + 3)


def test_construction_and_input_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        Decoder(TGT_V, E, H, H, mode="bahdanau")
    with pytest.raises(ValueError, match="context_dim must equal encoder.output_dim"):
        Seq2Seq(Encoder(SRC_V, E, H, bidirectional=True), Decoder(TGT_V, E, H, H))
    with pytest.raises(ValueError, match="same cell and num_layers"):
        Seq2Seq(Encoder(SRC_V, E, H, cell="lstm"), Decoder(TGT_V, E, H, H, mode="sutskever"))
    with pytest.raises(ValueError, match="memory_dim must equal"):
        AttnSeq2Seq(Encoder(SRC_V, E, H), BahdanauDecoder(TGT_V, E, H, 2 * H))
    with pytest.raises(ValueError, match="same cell and num_layers"):
        AttnSeq2Seq(Encoder(SRC_V, E, H, num_layers=2), LuongDecoder(TGT_V, E, H, H))
    with pytest.raises(NotImplementedError):
        EncoderDecoder().encode(torch.zeros(1, 1, dtype=torch.long), torch.tensor([1]))
    with pytest.raises(ValueError, match="kind must be one of"):
        make_attention_seq2seq(SRC_V, TGT_V, kind="transformer")
    with pytest.raises(ValueError, match="hidden_dim must be even"):
        make_attention_seq2seq(SRC_V, TGT_V, hidden_dim=7)
    with pytest.raises(ValueError, match="local_window is for kind='luong'"):
        make_attention_seq2seq(SRC_V, TGT_V, local_window=2)
    model = MODELS["cho-gru"]()
    src, lengths, tgt_in = _batch()
    with pytest.raises(ValueError, match=r"teacher_forcing must be in \[0, 1\]"):
        model(src, lengths, tgt_in, teacher_forcing=1.5)
    with pytest.raises(ValueError, match=r"tgt_in must be \(B, T\) with B=3"):
        model(src, lengths, tgt_in[:2])
