"""s2s_course.translation on small slices of the real Multi30k files and tiny models.

References are independent of the code under test: sacrebleu called directly, the decoders run
one sentence at a time, log-probabilities summed step by step with decode_step, hand-made toy
models with known probabilities.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from sacrebleu.metrics import BLEU, CHRF

from s2s_course.data import EOS_IDX, SOS_IDX, UNK, get_tokenizer, load_multi30k, make_loader
from s2s_course.decode import beam_search, greedy_decode
from s2s_course.models import DecoderState, make_attention_seq2seq, make_rnn_seq2seq
from s2s_course.metrics import chrf_signature
from s2s_course.translation import (TranslationResult, bleu_metric,
                                    detokenize, evaluate_translation,
                                    find_failures, fit_select, prepare_multi30k, recase,
                                    repeated_ngram, search_and_model_errors, sequence_log_probs)

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("S2S_COURSE_DATA", "").strip()
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="module")
def local_data(tmp_path_factory):
    root = _data_root()
    if not (root / "multi30k" / "train.de.gz").is_file():
        pytest.skip(f"Multi30k not found under {root} (set S2S_COURSE_DATA to the shared data folder)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2S_COURSE_DATA", str(root))
        mp.setenv("S2S_COURSE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield root


@pytest.fixture(scope="module")
def small(local_data):
    return prepare_multi30k(min_freq=1, max_len=8, n_train=150, n_val=12, n_test=10)


@pytest.fixture(scope="module")
def model(small):
    torch.manual_seed(0)
    m = make_attention_seq2seq(len(small.src_vocab), len(small.tgt_vocab), kind="bahdanau",
                               emb_dim=8, hidden_dim=16)
    return m.eval()


# --- prepare_multi30k ---------------------------------------------------------------------------

def test_prepare_multi30k_sizes_filtering_and_alignment(small):
    tok = get_tokenizer("words")
    assert small.sizes() == {"train": 150, "val": 12, "test": 10, "src_vocab": len(small.src_vocab),
                             "tgt_vocab": len(small.tgt_vocab)}
    # training pairs: at most 8 tokens per side, in file order, raw text aligned with the tokens
    kept = [(d, e) for d, e in load_multi30k("train") if len(tok(d)) <= 8 and len(tok(e)) <= 8][:150]
    assert small.raw["train"] == kept
    assert small.train.pairs == [(tok(d), tok(e)) for d, e in kept]
    # val and test: the first n pairs, not filtered by length
    assert small.raw["val"] == load_multi30k("val")[:12]
    assert small.raw["test"] == load_multi30k("test_2016_flickr")[:10]
    assert any(len(tok(d)) > 8 for d, _ in small.raw["test"])
    assert small.settings["max_len"] == 8 and small.settings["lowercase"] is True


def test_vocabularies_come_from_training_tokens_only(small, local_data):
    train_src = {t for s, _ in small.train.pairs for t in s}
    train_tgt = {t for _, t in small.train.pairs for t in t}
    assert set(small.src_vocab.get_itos()[4:]) == train_src
    assert set(small.tgt_vocab.get_itos()[4:]) == train_tgt
    rare = prepare_multi30k(min_freq=2, max_len=8, n_train=150, n_val=2, n_test=2)
    counts: dict[str, int] = {}
    for src, _ in rare.train.pairs:
        for t in src:
            counts[t] = counts.get(t, 0) + 1
    assert set(rare.src_vocab.get_itos()[4:]) == {t for t, c in counts.items() if c >= 2}


def test_lowercase_false_keeps_case(local_data):
    data = prepare_multi30k(lowercase=False, n_train=5, n_val=1, n_test=1)
    assert data.train.pairs[0][1][0] == data.raw["train"][0][1].split()[0]   # "Two"
    assert data.train.pairs[0][1][0][0].isupper()


@pytest.mark.parametrize("kwargs, word", [({"min_freq": 0}, "min_freq"), ({"n_train": 0}, "n_train"),
                                          ({"max_len": True}, "max_len"), ({"n_test": -3}, "n_test")])
def test_prepare_multi30k_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        prepare_multi30k(**kwargs)


def test_prepare_multi30k_with_nothing_left_after_filtering(local_data):
    with pytest.raises(ValueError, match="max_len=1"):
        prepare_multi30k(max_len=1, n_val=1, n_test=1)


# --- detokenize / recase ------------------------------------------------------------------------

@pytest.mark.parametrize("tokens, text", [
    ([], ""),
    (["a", "man", "'", "s", "hat", "."], "a man's hat."),
    (["they", "don", "'", "t", "run", "!"], "they don't run!"),
    (["a", "t", "-", "shirt", ",", "a", "dog", "-", "like", "cat"], "a t-shirt, a dog-like cat"),
    (["a", "sign", "(", "red", ")", "says", '"', "stop", "now", '"', "."], 'a sign (red) says "stop now".'),
    (["about", "4", "'", "in", "diameter"], "about 4 ' in diameter"),
    (["-", "a"], "- a"),
])
def test_detokenize(tokens, text):
    assert detokenize(tokens) == text


def test_detokenize_round_trip_on_real_references(local_data):
    tok = get_tokenizer("words")
    refs = [e for _, e in load_multi30k("val")[:200]]
    exact = sum(recase(detokenize(tok(r))).lower() == r.lower() for r in refs)
    assert exact >= 198


def test_recase():
    assert recase("") == ""
    assert recase("a man.") == "A man."
    assert recase("A man.") == "A man."


# --- evaluate_translation -----------------------------------------------------------------------

def _src_ids(small, sentence):
    ids = small.src_vocab(small.tokenizer(sentence)) + [EOS_IDX]
    return torch.tensor([ids]), torch.tensor([len(ids)])


def test_greedy_evaluation_matches_one_sentence_at_a_time_and_sacrebleu(small, model):
    res = evaluate_translation(model, small.raw["val"], small.src_vocab, small.tgt_vocab,
                               small.tokenizer, max_len=12, batch_size=5)
    for (src, _), hyp in zip(small.raw["val"], res.hyp_tokens):
        ids, lengths = _src_ids(small, src)
        assert hyp == small.tgt_vocab.lookup_tokens(greedy_decode(model, ids, lengths, max_len=12)[0])
    refs = [e for _, e in small.raw["val"]]
    assert res.references == refs and res.sources == [d for d, _ in small.raw["val"]]
    assert res.hypotheses == [recase(detokenize(t)) for t in res.hyp_tokens]
    assert res.bleu == pytest.approx(BLEU().corpus_score(res.hypotheses, [refs]).score)
    assert res.bleu_lc == pytest.approx(BLEU(lowercase=True).corpus_score(res.hypotheses, [refs]).score)
    assert res.chrf == pytest.approx(CHRF().corpus_score(res.hypotheses, [refs]).score)
    joined_hyps = [" ".join(t).lower() for t in res.hyp_tokens]
    joined_refs = [" ".join(small.tokenizer(r)).lower() for r in refs]
    assert res.token_bleu == pytest.approx(
        BLEU(tokenize="none", force=True).corpus_score(joined_hyps, [joined_refs]).score)
    assert "tok:13a" in res.bleu_signature and "case:mixed" in res.bleu_signature
    assert "nc:6" in res.chrf_signature and res.chrf_signature == chrf_signature()
    assert res.bleu_text.startswith("BLEU = ")
    assert res.method == "greedy" and res.beam_size == 1 and res.length_penalty == 0.0
    assert res.attention is None and res.seconds >= 0


def test_beam_evaluation_matches_beam_search_per_sentence(small, model):
    beam = evaluate_translation(model, small.raw["test"], small.src_vocab, small.tgt_vocab,
                                small.tokenizer, method="beam", beam_size=3, length_penalty=1.0,
                                max_len=12, batch_size=4, device="cpu")
    for (src, _), hyp in zip(small.raw["test"], beam.hyp_tokens):
        ids, lengths = _src_ids(small, src)
        best = beam_search(model, ids, lengths, beam_size=3, length_penalty=1.0, max_len=12)[0][0]
        assert hyp == small.tgt_vocab.lookup_tokens(best.tokens)
    assert (beam.method, beam.beam_size, beam.length_penalty) == ("beam", 3, 1.0)
    one = evaluate_translation(model, small.raw["test"], small.src_vocab, small.tgt_vocab,
                               small.tokenizer, method="beam", beam_size=1, max_len=12)
    greedy = evaluate_translation(model, small.raw["test"], small.src_vocab, small.tgt_vocab,
                                  small.tokenizer, max_len=12)
    assert one.hyp_tokens == greedy.hyp_tokens                      # beam of 1 == greedy


def test_attention_is_returned_per_sentence(small, model):
    res = evaluate_translation(model, small.raw["test"], small.src_vocab, small.tgt_vocab,
                               small.tokenizer, max_len=12, return_attention=True)
    for src_tokens, hyp, weights in zip(res.src_tokens, res.hyp_tokens, res.attention):
        assert weights.shape == (min(len(hyp) + 1, 12), len(src_tokens) + 1)
        assert torch.allclose(weights.sum(-1), torch.ones(weights.size(0)), atol=1e-5)


def test_summary_holds_numbers_only(small, model):
    res = evaluate_translation(model, small.raw["test"][:3], small.src_vocab, small.tgt_vocab,
                               small.tokenizer, max_len=5)
    summary = res.summary()
    assert summary["sentences"] == 3 and summary["bleu"] == round(res.bleu, 2)
    assert set(summary) == {"method", "beam_size", "length_penalty", "sentences", "bleu", "bleu_lc",
                            "chrf", "token_bleu", "bleu_signature", "chrf_signature", "seconds"}


@pytest.mark.parametrize("kwargs, pairs, word", [
    ({"method": "sample"}, None, "method"),
    ({"method": "beam", "return_attention": True}, None, "return_attention"),
    ({"batch_size": 0}, None, "batch_size"),
    ({}, [], "non-empty"),
    ({}, [("ein Hund", 3)], r"pairs\[0\]"),
    ({}, "ein Hund", "non-empty"),
])
def test_evaluate_translation_rejects_bad_arguments(small, model, kwargs, pairs, word):
    pairs = small.raw["test"] if pairs is None else pairs
    with pytest.raises(ValueError, match=word):
        evaluate_translation(model, pairs, small.src_vocab, small.tgt_vocab, small.tokenizer, **kwargs)


def test_bleu_metric_is_greedy_bleu(small, model):
    metric = bleu_metric(small.raw["val"], small.src_vocab, small.tgt_vocab, small.tokenizer, max_len=12)
    expected = evaluate_translation(model, small.raw["val"], small.src_vocab, small.tgt_vocab,
                                    small.tokenizer, max_len=12).bleu
    assert metric(model, None, torch.device("cpu")) == pytest.approx(expected)
    with pytest.raises(ValueError):
        bleu_metric([], small.src_vocab, small.tgt_vocab, small.tokenizer)


# --- fit_select ---------------------------------------------------------------------------------

def test_fit_select_keeps_the_best_epochs_weights(small):
    torch.manual_seed(1)
    m = make_rnn_seq2seq(len(small.src_vocab), len(small.tgt_vocab), emb_dim=8, hidden_dim=8)
    loader = make_loader(small.train, 50, seed=0)
    val_loader = make_loader(small.val, 50, shuffle=False)
    scripted = iter([0.1, 0.9, 0.3])
    snapshots = []

    def score(model, loader, device):          # a metric that also remembers the weights it saw
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    history = fit_select(m, loader, val_loader, epochs=3, select="score", mode="max",
                         metrics={"score": score}, progress=False, seed=0, device="cpu")
    assert history.epochs == [1, 2, 3] and history["score"] == [0.1, 0.9, 0.3]
    assert history.best("score", mode="max")["epoch"] == 2
    for key, value in m.state_dict().items():
        assert torch.equal(value, snapshots[1][key]), key
    assert not torch.equal(snapshots[1]["decoder.out.weight"], snapshots[2]["decoder.out.weight"])
    assert not m.training


def test_fit_select_min_mode_on_val_loss_and_shared_optimizer(small):
    torch.manual_seed(2)
    m = make_rnn_seq2seq(len(small.src_vocab), len(small.tgt_vocab), emb_dim=8, hidden_dim=8)
    optimizer = torch.optim.SGD(m.parameters(), lr=0.5)
    history = fit_select(m, make_loader(small.train, 50), make_loader(small.val, 50, shuffle=False),
                         epochs=2, optimizer=optimizer, progress=False, device="cpu")
    best = history.best("val_loss")
    from s2s_course.train import evaluate
    assert evaluate(m, make_loader(small.val, 50, shuffle=False))["loss"] == pytest.approx(best["val_loss"])


@pytest.mark.parametrize("kwargs, error, word", [
    ({"epochs": 0}, ValueError, "epochs"),
    ({"epochs": 1, "mode": "avg"}, ValueError, "mode"),
    ({"epochs": 1, "teacher_forcing": lambda step: 0.5}, ValueError, "teacher_forcing"),
    ({"epochs": 1, "select": "val_bleu"}, KeyError, "val_bleu"),
])
def test_fit_select_rejects_bad_arguments(small, kwargs, error, word):
    m = make_rnn_seq2seq(len(small.src_vocab), len(small.tgt_vocab), emb_dim=4, hidden_dim=4)
    with pytest.raises(error, match=word):
        fit_select(m, make_loader(small.train, 75), make_loader(small.val, 50), progress=False,
                   device="cpu", **kwargs)


# --- log-probabilities, search errors and model errors ----------------------------------------

def test_sequence_log_probs_equal_a_step_by_step_sum(small, model):
    batch = next(iter(make_loader(small.val, 4, shuffle=False, bucket=False)))
    outputs = [[5, 6, 7], [], [9], [4, 4, 4, 4, 4]]
    got = sequence_log_probs(model, batch.src, batch.src_lengths, outputs)
    with torch.no_grad():
        for i, out in enumerate(outputs):
            length = int(batch.src_lengths[i])
            state = model.encode(batch.src[i:i + 1, :length], batch.src_lengths[i:i + 1])
            total, prev = 0.0, SOS_IDX
            for token in out + [EOS_IDX]:
                logits, state = model.decode_step(torch.tensor([prev]), state)
                total += torch.log_softmax(logits, -1)[0, token].item()
                prev = token
            assert got[i] == pytest.approx(total, abs=1e-4)
    with pytest.raises(ValueError, match="one sequence per source"):
        sequence_log_probs(model, batch.src, batch.src_lengths, outputs[:2])


class BigramToy(torch.nn.Module):
    """p(next | previous) from a fixed table, whatever the source; forward for teacher forcing."""

    def __init__(self, table, vocab_size=6):
        super().__init__()
        log_probs = torch.full((vocab_size, vocab_size), math.log(1e-6))
        for prev, row in table.items():
            for token, p in row.items():
                log_probs[prev, token] = math.log(p)
        self.register_buffer("log_probs", log_probs)

    def encode(self, src, src_lengths):
        return DecoderState(hidden=torch.zeros(1, src.size(0), 1))

    def decode_step(self, y_prev, state):
        return self.log_probs[y_prev], state

    def forward(self, src, src_lengths, tgt_in, teacher_forcing=1.0):
        return self.log_probs[tgt_in]                                   # (B, T, V)


A, B = 4, 5
TABLE = {SOS_IDX: {A: 0.5, B: 0.4, EOS_IDX: 0.1}, A: {EOS_IDX: 0.4, A: 0.3, B: 0.3},
         B: {EOS_IDX: 0.9, A: 0.05, B: 0.05}}


def test_search_and_model_errors_on_a_toy_with_known_probabilities():
    toy = BigramToy(TABLE)
    src, lengths = torch.ones(4, 2, dtype=torch.long), torch.tensor([2, 2, 2, 2])
    # p(A) = .2, p(B) = .36, p(A A) = .5*.3*.4 = .06, p(<empty>) = .1
    outputs = [[A], [B], [A, A], [B]]
    refs = [[B], [B], [A], [A, A]]
    assert sequence_log_probs(toy, src, lengths, outputs) == pytest.approx(
        [math.log(0.2), math.log(0.36), math.log(0.06), math.log(0.36)], abs=1e-5)
    counts = search_and_model_errors(toy, src, lengths, outputs, refs)
    # 0: ref B (.36) beats output A (.2) -> search error; 1: correct;
    # 2: ref A (.2) beats A A (.06) -> search error; 3: output B (.36) beats ref A A -> model error
    assert counts == {"correct": 1, "search_errors": 2, "model_errors": 1}
    with pytest.raises(ValueError, match="same length"):
        search_and_model_errors(toy, src, lengths, outputs, refs[:3])


# --- typical failures ---------------------------------------------------------------------------

@pytest.mark.parametrize("tokens, expected", [
    (["a", "dog", "runs"], None),
    (["a", "dog", "dog", "runs"], ("dog",)),
    (["a", "dog", "a", "dog", "runs"], ("a", "dog")),
    (["x", "in", "a", "red", "in", "a", "red"], ("in", "a", "red")),
    (["a", UNK, UNK, "."], None),                              # two unknown words, not a stutter
    (["a", UNK, "a", UNK], ("a", UNK)),
    ([], None),
])
def test_repeated_ngram(tokens, expected):
    assert repeated_ngram(tokens) == expected


def test_repeated_ngram_max_n():
    assert repeated_ngram(["p", "q", "r", "s", "p", "q", "r", "s"], max_n=3) is None
    assert repeated_ngram(["p", "q", "r", "s", "p", "q", "r", "s"], max_n=4) == ("p", "q", "r", "s")


def test_find_failures():
    hyps = [["a", "man", "man", "."], ["a", "dog", "."], ["a", UNK, "runs", "on", "grass", "."],
            ["two", "men", "walk", "."], ["a", "cat", "sits"]]
    refs = ["A man runs.", "A dog runs on the grass in the sun.", "A cat runs on grass.",
            "Two men walk.", "A cat sits."]
    result = TranslationResult(
        method="greedy", beam_size=1, length_penalty=0.0, sources=[""] * 5, references=refs,
        src_tokens=[[]] * 5, hyp_tokens=hyps, hypotheses=[" ".join(h) for h in hyps], bleu=0.0,
        bleu_lc=0.0, chrf=0.0, token_bleu=0.0, bleu_signature="", chrf_signature="", bleu_text="",
        seconds=0.0)
    assert find_failures(result) == {"repetition": [0], "dropped words": [1], "unknown words": [2]}
    # "A cat sits." is 3 tokens by str.split but 4 for the words tokenizer (the "." counts)
    assert find_failures(result, short_ratio=0.9)["dropped words"] == [1]
    tok = get_tokenizer("words")
    assert find_failures(result, short_ratio=0.9, tokenizer=tok)["dropped words"] == [1, 4]


# --- BPE data, detokenizer, word-level token BLEU, fit_select's time budget --------------------
from s2s_course.data.specials import SPECIALS, UNK_IDX  # noqa: E402
from s2s_course.models.transformer import make_transformer  # noqa: E402


@pytest.fixture(scope="module")
def bpe_data(local_data):
    return prepare_multi30k(tokenizer="bpe", bpe_vocab_size=300, n_train=300, n_val=8, n_test=6)


@pytest.fixture(scope="module")
def bpe_model(bpe_data):
    torch.manual_seed(0)
    size = len(bpe_data.src_vocab)
    return make_transformer(size, size, d_model=16, num_heads=2, num_layers=1, d_ff=32,
                            dropout=0.0, tie="all").eval()


def test_prepare_multi30k_bpe_shares_one_vocabulary_in_the_bpe_order(bpe_data):
    data, tok = bpe_data, bpe_data.tokenizer
    assert data.src_vocab is data.tgt_vocab
    assert data.src_vocab.get_itos() == tok.pieces()
    assert data.src_vocab.get_itos()[:4] == list(SPECIALS)
    assert 4 < len(data.src_vocab) <= 300
    assert data.settings["tokenizer"] == "bpe" and data.settings["bpe_vocab_size"] == 300
    assert data.settings["lowercase"] is False
    assert data.sizes()["train"] == 300 and data.sizes()["val"] == 8 and data.sizes()["test"] == 6
    train = load_multi30k("train")[:300]
    assert data.raw["train"] == train and data.raw["test"] == load_multi30k("test_2016_flickr")[:6]
    assert data.train.pairs[:20] == [(tok(d), tok(e)) for d, e in train[:20]]
    src_ids, tgt_ids = data.train[0]
    assert src_ids.tolist() == data.src_vocab(tok(train[0][0])) + [EOS_IDX]
    assert tgt_ids.tolist() == [SOS_IDX] + data.tgt_vocab(tok(train[0][1])) + [EOS_IDX]
    # every training piece is in the vocabulary: no <unk> in training data
    assert all(UNK_IDX not in ids.tolist() for pair in (data.train[i] for i in range(300))
               for ids in pair)


def test_bpe_detokenizer_gives_back_the_cased_text(bpe_data):
    data = bpe_data
    for d, e in data.raw["train"][:30] + data.raw["val"]:
        assert data.detokenizer(data.tokenizer(e)) == e
        assert data.detokenizer(data.tokenizer(d)) == d
    assert data.detokenizer(["<sos>", *data.tokenizer("A dog."), "<eos>"]) == "A dog."


def test_bpe_lowercase_detokenizer_recases(local_data):
    data = prepare_multi30k(tokenizer="bpe", bpe_vocab_size=200, n_train=100, n_val=3, n_test=2,
                            lowercase=True)
    assert data.settings["lowercase"] is True
    assert all(p == p.lower() for p in data.src_vocab.get_itos())
    for _, e in data.raw["val"]:
        assert data.detokenizer(data.tokenizer(e)) == recase(e.lower())


def test_evaluate_translation_uses_the_detokenizer(bpe_data, bpe_model):
    data = bpe_data
    marked = evaluate_translation(bpe_model, data.raw["val"], data.src_vocab, data.tgt_vocab,
                                  data.tokenizer, max_len=4,
                                  detokenizer=lambda tokens: "X " + "".join(tokens))
    assert marked.hypotheses == ["X " + "".join(t) for t in marked.hyp_tokens]
    res = evaluate_translation(bpe_model, data.raw["val"], data.src_vocab, data.tgt_vocab,
                               data.tokenizer, max_len=4, detokenizer=data.detokenizer)
    assert res.hyp_tokens == marked.hyp_tokens
    assert res.hypotheses == [data.tokenizer.decode(t) for t in res.hyp_tokens]
    refs = [e for _, e in data.raw["val"]]
    assert res.bleu == pytest.approx(BLEU().corpus_score(res.hypotheses, [refs]).score)
    assert res.chrf == pytest.approx(CHRF().corpus_score(res.hypotheses, [refs]).score)


def test_token_bleu_is_on_lowercased_word_tokens_of_the_text(bpe_data, bpe_model):
    """Whatever units the model writes (here BPE pieces), token_bleu compares lowercased *words*
    of the detokenized output with those of the reference."""
    data = bpe_data
    refs = [e for _, e in data.raw["val"]]

    def oracle(shout):
        it = iter(refs)               # hypotheses are detokenized in the order of the pairs
        return lambda tokens: next(it).upper() if shout else next(it)

    def run(detokenizer):
        return evaluate_translation(bpe_model, data.raw["val"], data.src_vocab, data.tgt_vocab,
                                    data.tokenizer, max_len=2, detokenizer=detokenizer)

    exact = run(oracle(False))
    assert exact.hypotheses == refs
    assert exact.bleu == pytest.approx(100.0) and exact.token_bleu == pytest.approx(100.0)
    shouted = run(oracle(True))
    assert shouted.bleu < 50.0                                  # case-sensitive sacreBLEU
    assert shouted.bleu_lc == pytest.approx(100.0)
    assert shouted.token_bleu == pytest.approx(100.0)           # lowercased words
    # the model's own output, against an independent computation
    res = run(data.detokenizer)
    words = get_tokenizer("words", lower=True)
    hyps = [" ".join(words(h)).lower() for h in res.hypotheses]
    word_refs = [" ".join(words(r)).lower() for r in refs]
    assert res.token_bleu == pytest.approx(
        BLEU(tokenize="none", force=True).corpus_score(hyps, [word_refs]).score)


def test_bleu_metric_passes_the_detokenizer(bpe_data, bpe_model):
    data = bpe_data
    refs = iter([e for _, e in data.raw["val"]])
    metric = bleu_metric(data.raw["val"], data.src_vocab, data.tgt_vocab, data.tokenizer,
                         max_len=2, detokenizer=lambda tokens: next(refs))
    assert metric(bpe_model, None, torch.device("cpu")) == pytest.approx(100.0)


class _Clock:
    """Replaces s2s_course.train's time module: perf_counter advances 1 'second' per call, so
    each fit epoch reports train_seconds == 1."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


class _LrLog(torch.optim.SGD):
    def __init__(self, params, lr):
        super().__init__(list(params), lr=lr)
        self.lrs = []

    def step(self, closure=None):
        self.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


def test_fit_select_max_seconds_and_a_continuing_lr_schedule(bpe_data, bpe_model, monkeypatch):
    import copy

    import s2s_course.train as train_module

    monkeypatch.setattr(train_module, "time", _Clock())
    model = copy.deepcopy(bpe_model)
    train = make_loader(bpe_data.train, max_tokens=2000, seed=0)
    val = make_loader(bpe_data.val, max_tokens=2000, shuffle=False)
    n = len(train)
    optimizer = _LrLog(model.parameters(), lr=1.0)
    history = fit_select(model, train, val, epochs=10, optimizer=optimizer, max_seconds=2.5,
                         lr_schedule=lambda step: 1e-3 * (step + 1), progress=False,
                         device="cpu")
    assert history.epochs == [1, 2, 3]                      # 1 + 1 + 1 >= 2.5 seconds
    assert history["train_seconds"] == [1.0, 1.0, 1.0]
    assert history["steps"] == [n, 2 * n, 3 * n]            # the global step carries over
    assert optimizer.lrs == pytest.approx([1e-3 * (s + 1) for s in range(3 * n)])
    monkeypatch.setattr(train_module, "time", _Clock())
    assert len(fit_select(copy.deepcopy(bpe_model), train, val, epochs=2, max_seconds=100.0,
                          progress=False, device="cpu")) == 2
