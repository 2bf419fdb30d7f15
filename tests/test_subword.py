"""s2s_course.data.subword: BPE trained on a few hundred made-up sentences (not the corpus)."""
from __future__ import annotations

import random

import pytest

from s2s_course.data.specials import SPECIALS
from s2s_course.data.subword import SubwordTokenizer, train_bpe

SUBJECTS = ["Ein Mann", "Eine Frau", "Zwei Kinder", "Ein Hund", "Die Skateboardfahrerin",
            "A man", "A woman", "Two children", "A dog", "The skateboarder"]
VERBS = ["fährt", "spielt", "läuft", "springt", "rides", "plays", "runs", "jumps"]
OBJECTS = ["auf der Straße.", "im Park!", "mit einem Ball,", "über die Brücke?",
           "on the street.", "in the park!", "with a ball,", "across the bridge?"]


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}" for _ in range(n)]


TRAIN = sentences(300, seed=0)
UNSEEN = ["Skateboardfahrer springen über Brücken!", "Zwölf Äpfel, naïve Möwen und Straßenbahnen.",
          "xyz qqq", "A dog-like hat (red) costs 5 % more?"]


@pytest.fixture(scope="module")
def bpe() -> SubwordTokenizer:
    return train_bpe(TRAIN, vocab_size=120)


def test_round_trip_on_seen_and_unseen_sentences(bpe):
    for text in TRAIN[:50]:
        assert bpe.decode(bpe(text)) == text
    # unseen words split into pieces; characters of the training data are all known
    for text in ["Eine Frau springt über die Straße!", "Two dogs ride the bridge, in the park?"]:
        assert bpe.decode(bpe(text)) == text
    assert len(bpe("Skateboardfahrerin")) < len("Skateboardfahrerin")  # merges were learned


def test_round_trip_with_unseen_characters():
    """Every character of these sentences is in the alphabet: nothing becomes unknown."""
    texts = TRAIN + UNSEEN
    bpe = train_bpe(texts, vocab_size=200, min_frequency=1)
    for text in UNSEEN:
        assert bpe.decode(bpe(text)) == text


def test_a_character_never_seen_in_training_becomes_unk(bpe):
    """Not silently dropped: the model must know something was there."""
    pieces = bpe("Zwölf Hunde")
    assert "<unk>" in pieces
    assert [p for p in pieces if p != "<unk>"] == bpe("Zwlf Hunde")
    assert bpe.decode(pieces) == "Zwlf Hunde"  # decode drops the specials, <unk> included


def test_pieces_mark_word_starts(bpe):
    pieces = bpe("Ein Hund spielt im Park!")
    assert pieces[0].startswith("▁")
    assert sum(p.startswith("▁") for p in pieces) == 5  # one per word
    assert "".join(pieces).replace("▁", " ").strip() == "Ein Hund spielt im Park!"


def test_specials_come_first_in_order_and_decode_drops_them(bpe):
    assert bpe.pieces()[:len(SPECIALS)] == list(SPECIALS)
    vocab = bpe.tokenizer.get_vocab()
    assert [vocab[s] for s in SPECIALS] == list(range(len(SPECIALS)))
    pieces = bpe("Ein Hund spielt.")
    assert bpe.decode([SPECIALS[2], *pieces, SPECIALS[3], SPECIALS[0]]) == "Ein Hund spielt."


def test_pieces_are_ordered_by_id(bpe):
    vocab = bpe.tokenizer.get_vocab()
    assert [vocab[p] for p in bpe.pieces()] == list(range(bpe.vocab_size))
    ids = bpe.tokenizer.encode("Ein Mann fährt", add_special_tokens=False).ids
    assert [bpe.pieces()[i] for i in ids] == bpe("Ein Mann fährt")


@pytest.mark.parametrize("size", [60, 120])
def test_vocab_size_is_respected(size):
    bpe = train_bpe(TRAIN, vocab_size=size)
    assert bpe.vocab_size <= size
    assert len(bpe.pieces()) == bpe.vocab_size
    assert repr(bpe) == f"SubwordTokenizer(bpe, vocab_size={bpe.vocab_size})"


def test_more_pieces_mean_fewer_pieces_per_sentence():
    small, large = train_bpe(TRAIN, vocab_size=60), train_bpe(TRAIN, vocab_size=150)
    count = lambda bpe: sum(len(bpe(t)) for t in TRAIN)  # noqa: E731
    assert count(large) < count(small)


def test_deterministic_and_lowercase():
    a, b = train_bpe(TRAIN, vocab_size=100), train_bpe(iter(TRAIN), vocab_size=100)
    assert a.pieces() == b.pieces()
    lower = train_bpe(TRAIN, vocab_size=100, lowercase=True)
    assert lower.decode(lower("Ein Hund SPIELT")) == "ein hund spielt"
    assert not any(c.isupper() for p in lower.pieces()[len(SPECIALS):] for c in p)


def test_nfc_normalisation():
    bpe = train_bpe(TRAIN, vocab_size=100)
    decomposed = "la\u0308uft"                      # a + combining diaeresis
    assert bpe.decode(bpe(decomposed)) == "läuft"


@pytest.mark.parametrize("size", [0, 4, True, 100.0, "8000"])
def test_bad_vocab_size_raises(size):
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(TRAIN, vocab_size=size)
