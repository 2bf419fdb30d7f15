import math

import pytest
import torch
import torch.nn as nn

from s2s_course import analysis
from s2s_course.data import (EOS_IDX, Seq2SeqDataset, collate_batch, make_loader, make_task,
                             task_vocabs)
from s2s_course.models import make_attention_seq2seq, make_rnn_seq2seq
from s2s_course.models.rnn import DecoderState
from s2s_course.train import sequence_loss

PAIRS = [(list("abc"), list("abc")), (list("dcbae"), list("dcbae")), (list("ee"), list("ee")),
         (list("abcdabcd"), list("abcdabcd"))]
SRC_VOCAB, TGT_VOCAB = task_vocabs(PAIRS)


def batch_of(pairs, **kwargs):
    ds = Seq2SeqDataset(pairs, SRC_VOCAB, TGT_VOCAB, **kwargs)
    return collate_batch([ds[i] for i in range(len(ds))])


class Oracle(nn.Module):
    """Copies the source exactly (src id -> tgt id by token string), then <eos>; optionally
    corrupts the output token at ``wrong_at`` (0-based) to a fixed id, or stops at once."""

    def __init__(self, wrong_at=None, stop_at_once=False):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        itos = SRC_VOCAB.get_itos()
        self.map = torch.tensor([TGT_VOCAB[tok] for tok in itos])
        self.wrong_at, self.stop_at_once = wrong_at, stop_at_once

    def encode(self, src, src_lengths):
        return DecoderState(hidden=torch.zeros(1, src.size(0), 1), memory=src.clone(),
                            context=torch.zeros(src.size(0), 1))

    def decode_step(self, y_prev, state):
        t = int(state.context[0, 0])
        src = state.memory
        B, V = src.size(0), len(TGT_VOCAB)
        token = self.map[src[:, t]] if t < src.size(1) else torch.full((B,), EOS_IDX)  # <eos> at end
        if self.wrong_at is not None and t == self.wrong_at:
            token = torch.where(token == EOS_IDX, token, torch.full_like(token, TGT_VOCAB["a"]))
        if self.stop_at_once:
            token = torch.full((B,), EOS_IDX)
        logits = torch.full((B, V), -10.0)
        logits[torch.arange(B), token] = 10.0
        state.context = state.context + 1
        return logits, state


# --- data helpers ---------------------------------------------------------------------------

def test_reverse_source_keeps_targets_and_inputs():
    pairs = [(["a", "b", "c"], ["x", "y"]), (["d"], ["z"])]
    assert analysis.reverse_source(pairs) == [(["c", "b", "a"], ["x", "y"]), (["d"], ["z"])]
    assert pairs[0] == (["a", "b", "c"], ["x", "y"])  # not modified in place
    assert analysis.reverse_source([(("a", "b"), ("c",))]) == [(["b", "a"], ["c"])]


def test_source_lengths_with_and_without_eos():
    assert analysis.source_lengths(batch_of(PAIRS)).tolist() == [3, 5, 2, 8]
    assert analysis.source_lengths(batch_of(PAIRS, add_src_eos=False)).tolist() == [3, 5, 2, 8]


def test_target_references_strip_specials_and_padding():
    refs = analysis.target_references(batch_of(PAIRS))
    assert refs == [TGT_VOCAB(list(t)) for _, t in PAIRS]
    assert refs[2] == [TGT_VOCAB["e"]] * 2


# --- buckets and accuracies, hand-computed ---------------------------------------------------

def test_length_buckets():
    assert analysis.length_buckets([4, 7, 8, 11], width=4) == [4, 4, 8, 8]
    assert analysis.length_buckets([0, 3, 4, 39], width=4) == [0, 0, 4, 36]
    assert analysis.length_buckets([5, 6, 9], width=3, start=5) == [5, 5, 8]
    assert analysis.length_buckets([3, 5], width=1) == [3, 5]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="width"):
            analysis.length_buckets([1], width=bad)


def test_accuracy_by_length_bucket_hand_case():
    refs = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [1, 1, 2, 2, 3], [1, 2, 3, 4, 5, 6, 7, 8]]
    preds = [[1, 2, 3], [4, 5, 6, 7, 0, 9], [1, 1, 2], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
    got = analysis.accuracy_by_length_bucket(preds, refs, [3, 6, 5, 8], width=4)
    assert list(got) == [0, 4, 8]
    assert got[0] == (1.0, 1.0, 1)
    assert got[4][0] == 0.0 and got[4][1] == pytest.approx(8 / 11) and got[4][2] == 2
    assert got[8] == (0.0, 1.0, 1)  # one extra token: not exact, every reference token right
    per_length = analysis.accuracy_by_length_bucket(preds, refs, [3, 6, 5, 8])
    assert list(per_length) == [3, 5, 6, 8]
    with pytest.raises(ValueError, match="lengths must have one entry per example"):
        analysis.accuracy_by_length_bucket(preds, refs, [3, 6], width=4)


def test_accuracy_by_position_hand_case():
    refs = [[1, 2, 3], [4, 5], [6]]
    preds = [[1, 9, 3, 7], [4], [0]]
    got = analysis.accuracy_by_position(preds, refs)
    assert got == {1: (pytest.approx(2 / 3), 3), 2: (0.0, 2), 3: (1.0, 1)}
    assert analysis.accuracy_by_position([[]], [[5, 6]]) == {1: (0.0, 1), 2: (0.0, 1)}
    with pytest.raises(ValueError, match="same length"):
        analysis.accuracy_by_position([[1]], [[1], [2]])


# --- predict and accuracy_by_source_length, with hand-made models ------------------------------

def test_predict_with_an_oracle_copies_everything():
    loader = make_loader(Seq2SeqDataset(PAIRS, SRC_VOCAB, TGT_VOCAB), batch_size=3, shuffle=False)
    p = analysis.predict(Oracle(), loader)
    assert sorted(p.lengths) == [2, 3, 5, 8]
    assert p.preds == p.refs
    assert sorted(map(len, p.refs)) == [2, 3, 5, 8]
    by_len = analysis.accuracy_by_source_length(Oracle(), loader, width=4)
    assert by_len == {0: (1.0, 1.0, 2), 4: (1.0, 1.0, 1), 8: (1.0, 1.0, 1)}


def test_predict_errors_and_limits():
    loader = make_loader(Seq2SeqDataset(PAIRS, SRC_VOCAB, TGT_VOCAB), batch_size=4, shuffle=False)
    stop = analysis.predict(Oracle(stop_at_once=True), loader, device="cpu")
    assert stop.preds == [[], [], [], []]
    assert analysis.accuracy_by_length_bucket(stop.preds, stop.refs, stop.lengths, width=100) == {
        0: (0.0, 0.0, 4)}
    cut = analysis.predict(Oracle(), loader, max_len=2)
    assert all(len(p) <= 2 for p in cut.preds)
    wrong = analysis.predict(Oracle(wrong_at=0), loader)
    by_pos = analysis.accuracy_by_position(wrong.preds, wrong.refs)
    assert by_pos[2][0] == 1.0 and by_pos[1][0] == 0.5  # "abc" and "abcdabcd" start with a
    with pytest.raises(ValueError, match="no batches"):
        analysis.predict(Oracle(), [])


def test_predict_uses_the_models_device_for_a_parameterless_model():
    class NoParams(Oracle):
        def parameters(self, recurse=True):
            return iter(())

    loader = make_loader(Seq2SeqDataset(PAIRS[:2], SRC_VOCAB, TGT_VOCAB), batch_size=2, shuffle=False)
    assert analysis.predict(NoParams(), loader).preds == analysis.predict(Oracle(), loader).refs


# --- gradient norms -----------------------------------------------------------------------------

def test_position_norms_against_a_loop():
    torch.manual_seed(0)
    grad = torch.randn(3, 5, 4)
    lengths = [5, 2, 4]
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    got = analysis.position_norms(grad, mask)
    for s in range(5):
        norms = [math.sqrt(sum(float(v) ** 2 for v in grad[b, s])) for b in range(3) if s < lengths[b]]
        assert got[s].item() == pytest.approx(sum(norms) / len(norms), rel=1e-5)
    empty = analysis.position_norms(grad, torch.zeros(3, 5, dtype=torch.bool))
    assert torch.isnan(empty).all()
    hand = analysis.position_norms(torch.tensor([[[3.0, 4.0]], [[6.0, 8.0]]]), torch.ones(2, 1, dtype=torch.bool))
    assert hand.tolist() == [7.5]  # mean of 5 and 10


def test_position_norms_input_errors():
    with pytest.raises(ValueError, match=r"grad must be \(B, S, E\)"):
        analysis.position_norms(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be"):
        analysis.position_norms(torch.zeros(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask must be"):
        analysis.position_norms(torch.zeros(2, 3, 4), torch.ones(3, 2, dtype=torch.bool))


def _reference_norms(model, batch):
    """The textbook way: retain_grad on the embedding output, loss.backward()."""
    model.zero_grad()
    caught = []

    def hook(module, inputs, output):  # returns None: the output itself is used
        output.retain_grad()
        caught.append(output)

    handle = model.encoder.embedding.register_forward_hook(hook)
    model.eval()
    loss = sequence_loss(model(batch.src, batch.src_lengths, batch.tgt_in), batch.tgt_out)
    loss.backward()
    handle.remove()
    grad = caught[0].grad                                     # (B, S, E)
    model.zero_grad()
    out = []
    for s in range(batch.src.size(1)):
        vals = [grad[b, s].norm().item() for b in range(grad.size(0)) if s < batch.src_lengths[b]]
        out.append(sum(vals) / len(vals))
    return torch.tensor(out)


@pytest.mark.parametrize("make", [
    lambda: make_rnn_seq2seq(len(SRC_VOCAB), len(TGT_VOCAB), emb_dim=6, hidden_dim=8),
    lambda: make_rnn_seq2seq(len(SRC_VOCAB), len(TGT_VOCAB), emb_dim=6, hidden_dim=8, cell="lstm",
                             mode="sutskever", dropout=0.5, num_layers=2),
    lambda: make_attention_seq2seq(len(SRC_VOCAB), len(TGT_VOCAB), emb_dim=6, hidden_dim=8),
])
def test_source_gradient_norms_match_retain_grad_and_leave_the_model_alone(make):
    torch.manual_seed(0)
    model = make()
    model.train()
    batch = batch_of(PAIRS)
    got = analysis.source_gradient_norms(model, batch)
    assert got.shape == (batch.src.size(1),)
    assert model.training                                       # mode restored
    assert all(p.grad is None for p in model.parameters())      # .grad untouched
    assert not model.encoder.embedding._forward_hooks           # hook removed
    torch.testing.assert_close(got, _reference_norms(model, batch), rtol=1e-4, atol=1e-9)


def test_source_gradient_norms_with_a_frozen_embedding_and_explicit_module():
    torch.manual_seed(0)
    model = make_rnn_seq2seq(len(SRC_VOCAB), len(TGT_VOCAB), emb_dim=6, hidden_dim=8)
    batch = batch_of(PAIRS)
    before = analysis.source_gradient_norms(model, batch)
    model.encoder.embedding.weight.requires_grad_(False)
    frozen = analysis.source_gradient_norms(model, batch, embedding=model.encoder.embedding, device="cpu")
    torch.testing.assert_close(frozen, before)


def test_source_gradient_norms_vanish_in_a_plain_rnn_but_not_with_attention():
    """At initialisation the plain GRU's gradient decays towards the first source positions
    (a product of Jacobians); attention gives every position a direct path."""
    pairs = make_task("copy", 16, min_len=30, max_len=30, seed=0, alphabet="abcde")
    src_vocab, tgt_vocab = task_vocabs(pairs)
    ds = Seq2SeqDataset(pairs, src_vocab, tgt_vocab)
    batch = collate_batch([ds[i] for i in range(len(ds))])
    torch.manual_seed(0)
    plain = analysis.source_gradient_norms(make_rnn_seq2seq(len(src_vocab), len(tgt_vocab)), batch)
    torch.manual_seed(0)
    attn = analysis.source_gradient_norms(
        make_attention_seq2seq(len(src_vocab), len(tgt_vocab), kind="luong", score="dot",
                               bidirectional=False), batch)
    assert plain[0] < 1e-3 * plain[-2]
    assert attn[0] > 0.1 * attn[-2]


def test_source_gradient_norms_errors():
    batch = batch_of(PAIRS)
    with pytest.raises(ValueError, match="encoder.embedding"):
        analysis.source_gradient_norms(Oracle(), batch)
    model = make_rnn_seq2seq(len(SRC_VOCAB), len(TGT_VOCAB), emb_dim=6, hidden_dim=8)
    with pytest.raises(ValueError, match="ran 9 times"):  # the decoder's embedding runs once per step
        analysis.source_gradient_norms(model, batch, embedding=model.decoder.embedding)
    assert not model.decoder.embedding._forward_hooks


def test_predict_teacher_forced_reads_the_gold_prefix():
    """A model that repeats its previous input token: under teacher forcing its guess for token t
    is the gold token t-1 (so it is right exactly where the reference repeats itself); greedy, it
    repeats <sos> forever."""
    class Echo(Oracle):
        def decode_step(self, y_prev, state):
            logits = torch.full((y_prev.size(0), len(TGT_VOCAB)), -10.0)
            logits[torch.arange(y_prev.size(0)), y_prev] = 10.0
            return logits, state

        def forward(self, src, src_lengths, tgt_in):                     # teacher forcing
            return torch.stack([self.decode_step(tgt_in[:, t], None)[0] for t in range(tgt_in.size(1))], 1)

    pairs = [(list("aab"), list("aab")), (list("cdd"), list("cdd"))]
    loader = make_loader(Seq2SeqDataset(pairs, SRC_VOCAB, TGT_VOCAB), batch_size=2, shuffle=False)
    forced = analysis.predict(Echo(), loader, teacher_forced=True)
    sos = 1
    assert forced.preds == [[sos] + TGT_VOCAB(list("aa")), [sos] + TGT_VOCAB(list("cd"))]
    assert analysis.accuracy_by_position(forced.preds, forced.refs) == {1: (0.0, 2), 2: (0.5, 2), 3: (0.5, 2)}
    greedy = analysis.predict(Echo(), loader, max_len=4)
    assert greedy.preds == [[sos] * 4, [sos] * 4]
