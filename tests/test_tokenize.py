"""Tokenizers: hand-written expected outputs and Unicode's own Hangul arithmetic as references."""
import pickle
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s_course.data.tokenize import SPACE_TOKEN, TOKENIZERS, get_tokenizer


# --- basic_english: torchtext's documented behaviour -------------------------------------
@pytest.mark.parametrize("text, expected", [
    # the example in torchtext's get_tokenizer docstring
    ("You can now install TorchText using pip!",
     ["you", "can", "now", "install", "torchtext", "using", "pip", "!"]),
    ("Don't stop.", ["don", "'", "t", "stop", "."]),
    ('He said "hi" (twice); ok: yes?', ["he", "said", "hi", "(", "twice", ")", "ok", "yes", "?"]),
    ("line one<br />line two", ["line", "one", "line", "two"]),
    ("3.14,2", ["3", ".", "14", ",", "2"]),
    ("  A\tB\n\nC  ", ["a", "b", "c"]),
    ("", []),
])
def test_basic_english_matches_torchtext(text, expected):
    assert get_tokenizer("basic_english")(text) == expected


def test_basic_english_language_and_lower_checks():
    assert get_tokenizer("basic_english", "en")("Hi!") == ["hi", "!"]
    with pytest.raises(ValueError, match="language"):
        get_tokenizer("basic_english", "de")
    with pytest.raises(ValueError, match="lower"):
        get_tokenizer("basic_english", lower=False)
    assert get_tokenizer("basic_english", lower=True)("A") == ["a"]


# --- words / whitespace -----------------------------------------------------------------------
def test_words_german_korean_and_case():
    tok = get_tokenizer("words", "de")
    assert tok("Ein Mann läuft, schnell!") == ["ein", "mann", "läuft", ",", "schnell", "!"]
    assert tok("Straße 42.") == ["straße", "42", "."]
    assert get_tokenizer("words", "ko")("나는 학생이다.") == ["나는", "학생이다", "."]
    assert get_tokenizer("words", lower=False)("Don't GO") == ["Don", "'", "t", "GO"]
    # "é" typed as e + combining accent is still one word (NFC first)
    assert tok("Cafe\u0301 au lait") == ["café", "au", "lait"]


def test_whitespace():
    assert get_tokenizer("whitespace")("  Hello,  World!\n") == ["Hello,", "World!"]
    assert get_tokenizer("whitespace", lower=True)("Hello World") == ["hello", "world"]


# --- char / jamo -------------------------------------------------------------------------------
def test_char_keeps_spaces_and_syllables():
    tok = get_tokenizer("char")
    assert tok("ab c") == ["a", "b", SPACE_TOKEN, "c"]
    assert SPACE_TOKEN == "\u2581"
    assert tok("한국 말") == ["한", "국", "▁", "말"]
    assert tok("\u1112\u1161\u11ab") == ["한"]  # NFD input becomes one syllable
    assert tok("A\tB") == ["A", "▁", "B"]
    assert get_tokenizer("char", lower=True)("AB") == ["a", "b"]
    assert tok("") == []


def test_jamo_hand_written():
    tok = get_tokenizer("jamo")
    assert tok("한") == ["\u1112", "\u1161", "\u11ab"]  # ᄒ ᅡ ᆫ
    expected = ["ᄂ", "ᅡ",              # 나
                "ᄂ", "ᅳ", "ᆫ",         # 는
                "▁",
                "ᄒ", "ᅡ", "ᆨ",         # 학
                "ᄉ", "ᅢ", "ᆼ",         # 생
                "ᄋ", "ᅵ",              # 이
                "ᄃ", "ᅡ"]              # 다
    assert tok("나는 학생이다") == expected
    # non-Hangul characters stay whole, accents included
    assert tok("é1!") == ["é", "1", "!"]


def _jamo_by_arithmetic(syllable: str) -> list[str]:
    """The Unicode standard's formula (ch. 3.12), independent of unicodedata."""
    s = ord(syllable) - 0xAC00
    lead, vowel, tail = s // 588, (s % 588) // 28, s % 28
    out = [chr(0x1100 + lead), chr(0x1161 + vowel)]
    return out + [chr(0x11A7 + tail)] if tail else out


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3), min_size=1, max_size=8))
def test_jamo_matches_unicode_formula_and_round_trips(text):
    tokens = get_tokenizer("jamo")(text)
    assert tokens == [j for syl in text for j in _jamo_by_arithmetic(syl)]
    assert unicodedata.normalize("NFC", "".join(tokens)) == text


# --- the registry ----------------------------------------------------------------------------
def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown tokenizer"):
        get_tokenizer(["char"])
    with pytest.raises(ValueError) as err:
        get_tokenizer("spacy")
    for name in TOKENIZERS:
        assert name in str(err.value)


def test_callable_passthrough_and_bad_language():
    fn = str.split
    assert get_tokenizer(fn) is fn
    with pytest.raises(ValueError, match="language"):
        get_tokenizer("words", language=3)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_tokenizers_are_picklable(name):
    """DataLoader workers on macOS/Windows pickle what they use."""
    for kwargs in ({}, {"lower": True}):
        tok = get_tokenizer(name, **kwargs)
        assert pickle.loads(pickle.dumps(tok))("Ab c") == tok("Ab c")
