"""Vocab and build_vocab_from_iterator against hand-counted corpora."""
import json
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s_course.data import vocab as vocab_module
from s2s_course.data.specials import EOS_IDX, PAD_IDX, SOS_IDX, SPECIALS, UNK_IDX
from s2s_course.data.vocab import Vocab, build_vocab_from_iterator

CORPUS = [["the", "cat", "sat"], ["the", "dog", "sat"], ["a", "cat"], ["the"]]
# counts: the 3, cat 2, sat 2, a 1, dog 1 -> ties alphabetical
EXPECTED_ITOS = ["<pad>", "<sos>", "<eos>", "<unk>", "the", "cat", "sat", "a", "dog"]


@pytest.fixture
def vocab():
    return build_vocab_from_iterator(CORPUS)


def test_specials_constants_reexported():
    assert vocab_module.SPECIALS == ["<pad>", "<sos>", "<eos>", "<unk>"]
    assert (vocab_module.PAD_IDX, vocab_module.SOS_IDX, vocab_module.EOS_IDX, vocab_module.UNK_IDX) == (0, 1, 2, 3)


# --- building ---------------------------------------------------------------------------------
def test_order_is_frequency_then_alphabet(vocab):
    assert vocab.get_itos() == EXPECTED_ITOS
    assert len(vocab) == 9
    assert vocab.freqs == Counter({"the": 3, "cat": 2, "sat": 2, "a": 1, "dog": 1})


def test_build_is_deterministic_whatever_the_input_order():
    assert build_vocab_from_iterator(CORPUS[::-1]).get_itos() == EXPECTED_ITOS
    assert build_vocab_from_iterator(iter(CORPUS)).get_itos() == EXPECTED_ITOS  # a generator works


def test_min_freq_and_max_tokens_count_the_specials():
    assert build_vocab_from_iterator(CORPUS, min_freq=2).get_itos()[4:] == ["the", "cat", "sat"]
    v = build_vocab_from_iterator(CORPUS, max_tokens=6)  # 4 specials + 2 tokens, as torchtext
    assert v.get_itos() == SPECIALS + ["the", "cat"]
    with pytest.raises(ValueError, match="max_tokens"):
        build_vocab_from_iterator(CORPUS, max_tokens=4)
    with pytest.raises(ValueError, match="min_freq"):
        build_vocab_from_iterator(CORPUS, min_freq=0)


def test_specials_keep_fixed_indices():
    # specials in the text are not counted twice; extra specials go after or before the words
    v = build_vocab_from_iterator([["<unk>", "x", "<pad>"]], specials=["<mask>"] + SPECIALS)
    assert v.get_itos() == SPECIALS + ["<mask>", "x"]
    v = build_vocab_from_iterator([["x"]], specials=SPECIALS + ["<mask>"], special_first=False)
    assert v.get_itos() == SPECIALS + ["x", "<mask>"]
    v = build_vocab_from_iterator([["x"]], specials=None)
    assert v.get_itos() == SPECIALS + ["x"]
    assert (v["<pad>"], v["<sos>"], v["<eos>"], v["<unk>"]) == (PAD_IDX, SOS_IDX, EOS_IDX, UNK_IDX)


@pytest.mark.parametrize("corpus, kwargs", [
    ([], {}),
    ([[], []], {}),
    ([["<pad>", "<unk>"]], {}),
    ([["a", "b"]], {"min_freq": 2}),
])
def test_built_from_nothing(corpus, kwargs):
    with pytest.raises(ValueError, match="built from nothing"):
        build_vocab_from_iterator(corpus, **kwargs)


def test_sentences_must_be_tokenized():
    with pytest.raises(TypeError, match="tokenize"):
        build_vocab_from_iterator(["a whole sentence"])


# --- lookups ---------------------------------------------------------------------------------
def test_lookups(vocab):
    assert vocab["cat"] == 5
    assert vocab["zebra"] == UNK_IDX          # never crashes
    assert "cat" in vocab and "zebra" not in vocab
    assert vocab(["the", "zebra", "dog"]) == [4, 3, 8]
    assert vocab.lookup_indices(["a"]) == [7]
    assert vocab.lookup_token(8) == "dog"
    assert vocab.lookup_tokens([4, 5, 0]) == ["the", "cat", "<pad>"]
    assert vocab.lookup_tokens(torch.tensor([4, 5])) == ["the", "cat"]
    assert vocab.get_stoi()["sat"] == 6
    with pytest.raises(TypeError, match="tokenize"):
        vocab.lookup_indices("the cat")
    with pytest.raises(TypeError, match="lookup_token"):
        vocab[5]


def test_out_of_range_names_argument_and_range(vocab):
    with pytest.raises(IndexError, match=r"indices must be in \[0, 8\].*got 9"):
        vocab.lookup_tokens([1, 9])
    with pytest.raises(IndexError, match=r"\[0, 8\].*got -1"):
        vocab.lookup_tokens([-1])
    with pytest.raises(IndexError, match=r"index must be in \[0, 8\]"):
        vocab.lookup_token(100)
    with pytest.raises(TypeError, match="indices"):
        vocab.lookup_tokens(3)
    with pytest.raises(TypeError, match="indices"):
        vocab.lookup_tokens([1.5])


def test_default_index(vocab):
    assert vocab.get_default_index() == UNK_IDX
    vocab.set_default_index(None)
    with pytest.raises(KeyError, match="zebra"):
        vocab["zebra"]
    vocab.set_default_index(PAD_IDX)
    assert vocab["zebra"] == PAD_IDX
    with pytest.raises(ValueError, match="default index"):
        vocab.set_default_index(99)


def test_getters_return_copies(vocab):
    vocab.get_itos().append("oops")
    vocab.get_stoi()["oops"] = 1
    assert len(vocab) == 9 and "oops" not in vocab


# --- encode / decode -------------------------------------------------------------------------
def test_encode(vocab):
    assert vocab.encode(["the", "cat"]) == [SOS_IDX, 4, 5, EOS_IDX]
    assert vocab.encode(["the", "zebra"], add_sos_eos=False) == [4, UNK_IDX]


def test_decode_stops_at_first_eos_and_strips(vocab):
    ids = [SOS_IDX, 4, UNK_IDX, 5, EOS_IDX, 6, EOS_IDX, PAD_IDX]
    assert vocab.decode(ids) == ["the", "<unk>", "cat"]
    assert vocab.decode(torch.tensor(ids)) == ["the", "<unk>", "cat"]
    assert vocab.decode([4, PAD_IDX, 5]) == ["the", "cat"]
    assert vocab.decode(ids, strip_specials=False) == [
        "<sos>", "the", "<unk>", "cat", "<eos>", "sat", "<eos>", "<pad>"]
    assert vocab.decode([]) == []


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.sampled_from(list("abcdefgh")), max_size=6), min_size=1, max_size=6))
def test_properties(sentences):
    if not any(sentences):
        with pytest.raises(ValueError, match="built from nothing"):
            build_vocab_from_iterator(sentences)
        return
    v = build_vocab_from_iterator(sentences)
    counts = Counter(t for s in sentences for t in s)
    words = v.get_itos()[4:]
    assert sorted(words) == sorted(counts)                       # every token, once
    assert [counts[w] for w in words] == sorted(counts.values(), reverse=True)
    for s in sentences:
        assert v.decode(v.encode(s)) == s                        # round trip


# --- construction and saving -----------------------------------------------------------------
def test_constructor_checks():
    with pytest.raises(ValueError, match="start with the specials"):
        Vocab(["a", "b"])
    with pytest.raises(ValueError, match="duplicates"):
        Vocab(SPECIALS + ["a", "a"])


def test_save_load_round_trip(tmp_path):
    v = build_vocab_from_iterator([["나는", "학생", "이다"], ["나는", "cat"]])
    path = v.save(tmp_path / "vocab.json")
    assert "나는" in path.read_text(encoding="utf-8")   # readable, not \uXXXX escapes
    loaded = Vocab.load(path)
    assert loaded == v
    assert loaded.get_itos() == v.get_itos() and loaded.freqs == v.freqs
    assert loaded["unseen"] == UNK_IDX
    v.set_default_index(None)
    assert Vocab.load(v.save(tmp_path / "v2.json")).get_default_index() is None


def test_load_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"itos": SPECIALS}))
    with pytest.raises(ValueError, match="not a vocabulary"):
        Vocab.load(path)


def test_eq_repr_hash(vocab):
    assert vocab == build_vocab_from_iterator(CORPUS)
    assert vocab != build_vocab_from_iterator(CORPUS, min_freq=2)
    assert (vocab == "x") is False
    assert "size=9" in repr(vocab) and "the, cat" in repr(vocab)
    with pytest.raises(TypeError):
        hash(vocab)
