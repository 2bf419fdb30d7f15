"""Decoding: toy models with known answers, and agreement between the decoders."""
import math

import pytest
import torch
import torch.nn as nn

from s2s_course.data.specials import EOS_IDX, PAD_IDX, SOS_IDX
from s2s_course.decode import (Hypothesis, beam_search, gnmt_length_penalty, greedy_decode,
                               sample_decode, translate)
from s2s_course.models import DecoderState, make_attention_seq2seq, make_rnn_seq2seq

A, B_ = 4, 5                                   # two ordinary tokens (3 is <unk>)
TINY = 1e-6


class MarkovToy(nn.Module):
    """A hand-built "model": p(next token | previous token) from a fixed table, whatever the
    source. It records every token it is fed, so tests can see what the decoder did."""

    def __init__(self, table: dict[int, dict[int, float]], vocab_size: int = 6) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        log_probs = torch.full((vocab_size, vocab_size), math.log(TINY))
        for prev, row in table.items():
            for token, p in row.items():
                log_probs[prev, token] = math.log(p)
        self.register_buffer("log_probs", log_probs)
        self.fed: list[int] = []

    def encode(self, src, src_lengths):
        return DecoderState(hidden=torch.zeros(1, src.size(0), 1))

    def decode_step(self, y_prev, state):
        self.fed.extend(y_prev.tolist())
        return self.log_probs[y_prev], state


# Greedy takes A (0.5) but then A -> <eos> is only 0.4: total 0.20 (log -1.61).
# Beam keeps B (0.4) too, and B -> <eos> is 0.9: total 0.36 (log -1.02), the best sentence.
TRAP = {SOS_IDX: {A: 0.5, B_: 0.4, EOS_IDX: 0.1},
        A: {EOS_IDX: 0.4, A: 0.3, B_: 0.3},
        B_: {EOS_IDX: 0.9, A: 0.05, B_: 0.05}}


def _one_source():
    return torch.tensor([[7, 8]]), torch.tensor([2])


def test_beam_finds_the_best_sentence_that_greedy_misses():
    toy = MarkovToy(TRAP)
    src, lengths = _one_source()
    assert greedy_decode(toy, src, lengths) == [[A]]
    best = beam_search(toy, src, lengths, beam_size=2, length_penalty=0.0)[0][0]
    assert best.tokens == [B_]
    assert best.log_prob == pytest.approx(math.log(0.4 * 0.9), abs=1e-5)
    assert best.log_prob > math.log(0.5 * 0.4)                  # better than greedy's sentence
    assert beam_search(toy, src, lengths, beam_size=1, length_penalty=0.0)[0][0].tokens == [A]


def test_n_best_is_sorted_by_score_with_the_right_values():
    toy = MarkovToy(TRAP)
    src, lengths = _one_source()
    hyps = beam_search(toy, src, lengths, beam_size=3, n_best=3, length_penalty=0.0)[0]
    assert len(hyps) == 3
    assert [h.tokens for h in hyps[:3]] == [[B_], [A], []]
    expected = [math.log(0.36), math.log(0.20), math.log(0.10)]
    assert [h.score for h in hyps] == pytest.approx(expected, abs=1e-5)
    assert all(isinstance(h, Hypothesis) for h in hyps)


def test_finished_hypotheses_stop_growing():
    toy = MarkovToy(TRAP)
    src, lengths = _one_source()
    hyps = beam_search(toy, src, lengths, beam_size=3, n_best=3)[0]
    assert EOS_IDX not in toy.fed                               # nothing is ever fed after <eos>
    assert all(EOS_IDX not in h.tokens for h in hyps)


def test_length_penalty_changes_the_ranking_as_expected():
    # [] costs log 0.35 = -1.050; [A] costs log(0.65 * 0.5) = -1.124: shorter wins without penalty.
    toy = MarkovToy({SOS_IDX: {EOS_IDX: 0.35, A: 0.65}, A: {EOS_IDX: 0.5, A: 0.3, B_: 0.2}})
    src, lengths = _one_source()
    plain = beam_search(toy, src, lengths, beam_size=2, n_best=2, length_penalty=0.0)[0]
    assert [h.tokens for h in plain] == [[], [A]]
    # alpha = 1: lp(1) = 1, lp(2) = 7/6, so [A] scores -1.124 / (7/6) = -0.963 > -1.050.
    penalised = beam_search(toy, src, lengths, beam_size=2, n_best=2, length_penalty=1.0)[0]
    assert [h.tokens for h in penalised] == [[A], []]
    assert penalised[0].score == pytest.approx(math.log(0.325) / (7 / 6), abs=1e-5)
    assert penalised[0].log_prob == pytest.approx(math.log(0.325), abs=1e-5)
    assert gnmt_length_penalty(3, 0.0) == 1.0
    assert gnmt_length_penalty(7, 1.0) == 2.0


def test_max_len_is_respected_when_eos_never_comes():
    toy = MarkovToy({SOS_IDX: {A: 0.6, B_: 0.4}, A: {A: 0.6, B_: 0.4}, B_: {A: 0.6, B_: 0.4}})
    src, lengths = _one_source()
    assert greedy_decode(toy, src, lengths, max_len=4) == [[A, A, A, A]]
    hyps = beam_search(toy, src, lengths, beam_size=3, n_best=3, max_len=4)[0]
    assert [len(h.tokens) for h in hyps] == [4, 4, 4]
    assert hyps[0].tokens == [A, A, A, A]
    assert hyps[0].log_prob == pytest.approx(4 * math.log(0.6), abs=1e-4)
    assert len(sample_decode(toy, src, lengths, max_len=3)[0]) == 3


def test_sampling_follows_the_model_distribution():
    toy = MarkovToy(TRAP)
    src, lengths = torch.zeros(4000, 1, dtype=torch.long), torch.ones(4000, dtype=torch.long)
    samples = sample_decode(toy, src, lengths, generator=torch.Generator().manual_seed(0))
    firsts = [s[0] if s else EOS_IDX for s in samples]
    for token, p in TRAP[SOS_IDX].items():
        assert firsts.count(token) / 4000 == pytest.approx(p, abs=0.03)


# --------------------------------------------------------------------------- real (random) models

def _batch():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 10, (3, 5), generator=g)
    lengths = torch.tensor([5, 3, 4])
    src[1, 3:] = PAD_IDX
    src[2, 4:] = PAD_IDX
    return src, lengths


@pytest.mark.parametrize("kind", ["rnn", "bahdanau", "luong"])
def test_beam_size_1_equals_greedy(kind):
    torch.manual_seed(1)
    if kind == "rnn":
        model = make_rnn_seq2seq(10, 12, emb_dim=6, hidden_dim=8)
    else:
        model = make_attention_seq2seq(10, 12, kind=kind, emb_dim=6, hidden_dim=8)
    src, lengths = _batch()
    greedy = greedy_decode(model, src, lengths, max_len=8)
    beam = beam_search(model, src, lengths, beam_size=1, max_len=8)
    assert [hyps[0].tokens for hyps in beam] == greedy
    wide = beam_search(model, src, lengths, beam_size=4, n_best=4, max_len=8)
    for hyps in wide:
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)


def test_temperature_near_zero_is_greedy_and_a_seeded_generator_repeats():
    torch.manual_seed(2)
    model = make_attention_seq2seq(10, 12, kind="luong", emb_dim=6, hidden_dim=8)
    src, lengths = _batch()
    greedy = greedy_decode(model, src, lengths, max_len=8)
    assert sample_decode(model, src, lengths, temperature=1e-4, max_len=8) == greedy
    first = sample_decode(model, src, lengths, max_len=8,
                          generator=torch.Generator().manual_seed(5))
    again = sample_decode(model, src, lengths, max_len=8,
                          generator=torch.Generator().manual_seed(5))
    assert first == again


def test_attention_comes_back_per_sentence_and_training_mode_is_restored():
    torch.manual_seed(3)
    model = make_attention_seq2seq(10, 12, emb_dim=6, hidden_dim=8, dropout=0.1)
    model.train()
    src, lengths = _batch()
    outputs, attention = greedy_decode(model, src, lengths, max_len=6, return_attention=True)
    assert model.training
    for out, attn, n in zip(outputs, attention, lengths.tolist()):
        assert attn.shape == (min(len(out) + 1, 6), n)           # a row per token incl. <eos>
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.size(0)))
    best = beam_search(model, src, lengths, beam_size=2, max_len=6)[0][0]
    steps = len(best.tokens) + (1 if len(best.tokens) < 6 else 0)
    assert best.attention.shape == (steps, 5)
    plain = make_rnn_seq2seq(10, 12, emb_dim=6, hidden_dim=8)
    _, none = greedy_decode(plain, src, lengths, max_len=3, return_attention=True)
    assert none == [None, None, None]


class FakeVocab:
    def __init__(self, tokens):
        self.itos = ["<pad>", "<sos>", "<eos>", "<unk>"] + tokens
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def lookup_indices(self, tokens):
        return [self.stoi.get(t, 3) for t in tokens]

    def lookup_tokens(self, indices):
        return [self.itos[i] for i in indices]


def test_translate_with_greedy_and_beam():
    toy = MarkovToy(TRAP)
    src_vocab, tgt_vocab = FakeVocab(["hello", "world"]), FakeVocab(["a", "b"])
    assert translate(toy, "hello world", src_vocab, tgt_vocab, str.split) == ["a"]
    assert translate(toy, "hello", src_vocab, tgt_vocab, str.split, method="beam",
                     beam_size=2, device="cpu") == ["b"]
    model = make_rnn_seq2seq(6, 6, emb_dim=4, hidden_dim=4)
    out = translate(model, "hello there", src_vocab, tgt_vocab, str.split, max_len=5)
    assert len(out) <= 5 and all(t in tgt_vocab.itos for t in out)
    assert translate(toy, "hello", src_vocab, tgt_vocab, str.split, add_src_eos=False) == ["a"]
    with pytest.raises(ValueError, match="method must be 'greedy' or 'beam'"):
        translate(toy, "hello", src_vocab, tgt_vocab, str.split, method="sample")


def test_decoding_argument_errors():
    toy = MarkovToy(TRAP)
    src, lengths = _one_source()
    with pytest.raises(ValueError, match="beam_size must be > 0"):
        beam_search(toy, src, lengths, beam_size=0)
    with pytest.raises(ValueError, match=r"n_best must be in \[1, beam_size=2\]"):
        beam_search(toy, src, lengths, beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_decode(toy, src, lengths, temperature=0.0)
    with pytest.raises(ValueError, match="max_len must be > 0"):
        greedy_decode(toy, src, lengths, max_len=0)


def test_beam_step_ranks_all_extensions_together_by_hand():
    from s2s_course.decode import beam_step

    beam_scores = torch.tensor([-0.1, -2.0])                  # hypothesis 0 is far better so far
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.2],
                                        [0.9, 0.05, 0.05]]))
    scores, parents, tokens = beam_step(beam_scores, log_probs, 3)
    # totals: h0: -0.793, -1.304, -1.709; h1: -2.105, ...: all three children come from h0
    assert parents.tolist() == [0, 0, 0] and tokens.tolist() == [0, 1, 2]
    assert torch.allclose(scores, torch.tensor([-0.1 + math.log(0.5), -0.1 + math.log(0.3),
                                                -0.1 + math.log(0.2)]))
    scores, parents, tokens = beam_step(beam_scores, log_probs, 10)   # k larger than K*V
    assert len(scores) == 6 and (parents[3], tokens[3]) == (1, 0)


def test_coverage_penalty_by_hand():
    from s2s_course.decode import COVERAGE_EPS, coverage_penalty

    # two target steps over three source words: coverage 0.3 + 0.5 = 0.8, 0.6 + 0.5 = 1.1 (capped at 1),
    # 0.1 + 0.0 = 0.1; the fourth position is padding and counts nothing
    attn = torch.tensor([[0.3, 0.6, 0.1, 0.0],
                         [0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)          # (T=2, S=4)
    mask = torch.tensor([True, True, True, False])
    got = coverage_penalty(attn, mask, beta=0.2)
    assert got.shape == () and got.dtype == torch.float64
    assert got.item() == pytest.approx(0.2 * (math.log(0.8) + math.log(1.0) + math.log(0.1)))
    # any leading dims; beta = 0 switches it off; a real word never attended costs log(eps), not -inf
    batch = torch.stack([attn, attn]).unsqueeze(0)                           # (1, 2, T, S)
    assert torch.allclose(coverage_penalty(batch, mask.expand(1, 2, 4), 0.2), got.expand(1, 2))
    assert coverage_penalty(attn, mask, 0.0).item() == 0.0
    ignored = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])              # word 2 never attended
    one = coverage_penalty(ignored, torch.tensor([True, True, True]), 1.0)
    assert one.item() == pytest.approx(math.log(COVERAGE_EPS), rel=1e-5)
    assert coverage_penalty(ignored, torch.tensor([True, True, False]), 1.0).item() == 0.0
