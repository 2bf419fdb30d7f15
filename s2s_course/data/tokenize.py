"""Tokenizers: turn a sentence (str) into a list of tokens (list[str]).

A seq2seq model never sees text, only token ids, so the first design decision is what a
"token" is. The course uses five simple, pure-Python choices:

- ``"basic_english"``: torchtext's classic English tokenizer (lowercase, split off punctuation).
- ``"words"``:  words (``\\w+``) and single punctuation marks, for any script (German, Korean, ...).
- ``"whitespace"``: ``str.split()``, nothing else.
- ``"char"``: one token per character; a space becomes ``"▁"`` so it stays visible.
- ``"jamo"``: like ``"char"``, but each Hangul syllable is split into its letters (jamo):
  ``"한"`` -> ``"ᄒ", "ᅡ", "ᆫ"``. Korean has ~11,000 syllables but only 67 jamo.

>>> tok = get_tokenizer("basic_english")
>>> tok("You can now install TorchText using pip!")
['you', 'can', 'now', 'install', 'torchtext', 'using', 'pip', '!']
"""
from __future__ import annotations

import re
import unicodedata
from functools import partial
from typing import Callable

Tokenizer = Callable[[str], list[str]]

SPACE_TOKEN = "▁"  # U+2581, the character SentencePiece also uses to show a space
TOKENIZERS = ("basic_english", "words", "whitespace", "char", "jamo")

# -----------------------------------------------------------------------------
# "basic_english": exactly torchtext's rules (torchtext/data/utils.py), applied in this order
# after lowercasing; the result is split on whitespace.
_BASIC_ENGLISH_RULES = [
    (re.compile(r"\'"), " '  "),    # split off apostrophes: don't -> don ' t
    (re.compile(r"\""), ""),        # drop double quotes
    (re.compile(r"\."), " . "),
    (re.compile(r"<br \/>"), " "),  # HTML line breaks (IMDB reviews)
    (re.compile(r","), " , "),
    (re.compile(r"\("), " ( "),
    (re.compile(r"\)"), " ) "),
    (re.compile(r"\!"), " ! "),
    (re.compile(r"\?"), " ? "),
    (re.compile(r"\;"), " "),       # ; and : are dropped
    (re.compile(r"\:"), " "),
    (re.compile(r"\s+"), " "),
]


def basic_english(text: str) -> list[str]:
    """torchtext's ``basic_english``: lowercase, split off . , ( ) ! ? and ', drop " ; :."""
    line = text.lower()
    for pattern, replacement in _BASIC_ENGLISH_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


# -----------------------------------------------------------------------------
# "words": a word is a run of letters/digits in any script; every other visible character is
# a token on its own. NFC first, so "é" typed as e + accent stays one word character.
_WORD_OR_PUNCT = re.compile(r"\w+|[^\w\s]")


def words(text: str, lower: bool = True) -> list[str]:
    """Unicode words and single punctuation marks: "Ein Mann läuft." -> ['ein', 'mann', 'läuft', '.']."""
    text = unicodedata.normalize("NFC", text)
    if lower:
        text = text.lower()
    return _WORD_OR_PUNCT.findall(text)


def whitespace(text: str, lower: bool = False) -> list[str]:
    """Split on runs of whitespace, like ``str.split()``."""
    return (text.lower() if lower else text).split()


# -----------------------------------------------------------------------------
# "char" and "jamo": no out-of-vocabulary words, at the price of much longer sequences.
def chars(text: str, lower: bool = False) -> list[str]:
    """One token per character (after NFC, so a Hangul syllable is one token); spaces -> "▁"."""
    text = unicodedata.normalize("NFC", text)
    if lower:
        text = text.lower()
    return [SPACE_TOKEN if ch.isspace() else ch for ch in text]


_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3  # 가 ... 힣: the 11,172 precomposed syllables


def jamo(text: str, lower: bool = False) -> list[str]:
    """Like ``chars``, but a Hangul syllable becomes its 2 or 3 jamo (Unicode NFD): 한 -> ᄒ ᅡ ᆫ."""
    tokens: list[str] = []
    for ch in chars(text, lower=lower):
        if _HANGUL_FIRST <= ord(ch) <= _HANGUL_LAST:
            tokens.extend(unicodedata.normalize("NFD", ch))  # leading consonant, vowel, (final)
        else:
            tokens.append(ch)
    return tokens


# -----------------------------------------------------------------------------
def get_tokenizer(name: str | Tokenizer, language: str | None = None, *,
                  lower: bool | None = None) -> Tokenizer:
    """Return the tokenizer called ``name`` (one of ``TOKENIZERS``), torchtext style.

    ``language`` is accepted for torchtext compatibility: ``"basic_english"`` only allows
    ``None``/``"en"``; the other tokenizers work for any language and ignore it.
    ``lower`` overrides the default lowercasing (``"words"``: on, ``"whitespace"``/``"char"``/
    ``"jamo"``: off; ``"basic_english"`` always lowercases). A callable is returned unchanged.
    """
    if callable(name):
        return name
    if language is not None and not isinstance(language, str):
        raise ValueError(f"language must be a str such as 'en' or None, got {language!r}")
    if name == "basic_english":
        if language not in (None, "en"):
            raise ValueError(f"basic_english only handles English (language='en'), got language={language!r}; "
                             f"use get_tokenizer('words') for other languages")
        if lower is False:
            raise ValueError("basic_english always lowercases; lower=False is not available for it")
        return basic_english
    simple = {"words": (words, True), "whitespace": (whitespace, False), "char": (chars, False),
              "jamo": (jamo, False)}
    if not isinstance(name, str) or name not in simple:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {list(TOKENIZERS)}")
    fn, default_lower = simple[name]
    use_lower = default_lower if lower is None else bool(lower)
    return fn if use_lower == default_lower else partial(fn, lower=use_lower)
