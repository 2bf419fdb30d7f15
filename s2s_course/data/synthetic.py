"""Synthetic seq2seq tasks: small, exact, and generated in a blink.

Before translating real sentences we test models on tasks whose answer we know:

- ``copy``:    a b c -> a b c      (can the model store a whole sequence in its state?)
- ``reverse``: a b c -> c b a      (the first output depends on the last input)
- ``sort``:    c a b -> a b c      (the output order depends on the content)
- ``dates``:   "2024년 3월 5일" / "March 5, 2024" / "05.03.2024" ... -> "2024-03-05"
  (a tiny translation task: many surface forms, one normalised meaning)

Every pair is ``(src_tokens, tgt_tokens)`` with one string per symbol, the same format as real
data, so ``Seq2SeqDataset`` and the models never know the difference.

>>> make_task("reverse", 2, min_len=3, max_len=5, seed=3)
[(['s', 'r', 'e'], ['e', 'r', 's']), (['t', 'p', 's', 'c'], ['c', 's', 'p', 't'])]
"""
from __future__ import annotations

import datetime
import random
from typing import Callable, Sequence

from s2s_course.data.tokenize import chars
from s2s_course.data.vocab import Vocab, build_vocab_from_iterator

Pair = tuple[list[str], list[str]]

TASKS = ("copy", "reverse", "sort", "dates")
DEFAULT_ALPHABET = "abcdefghijklmnopqrst"  # 20 symbols

# -----------------------------------------------------------------------------
# dates: a uniformly random day in 1950-2049, written in one of these formats.
FIRST_DATE, LAST_DATE = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]

DATE_FORMATS: dict[str, Callable[[datetime.date], str]] = {
    "korean":  lambda d: f"{d.year}년 {d.month}월 {d.day}일",           # 2024년 3월 5일
    "english": lambda d: f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",   # March 5, 2024
    "short":   lambda d: f"{d.day} {_MONTHS[d.month - 1][:3]} {d.year}",  # 5 Mar 2024
    "dotted":  lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",         # 05.03.2024 (day first)
    "slashed": lambda d: f"{d.year}/{d.month}/{d.day}",                 # 2024/3/5
}


def _random_date(rng: random.Random) -> datetime.date:
    """Every day in [FIRST_DATE, LAST_DATE] equally likely (so leap days appear, Feb 30 never)."""
    return datetime.date.fromordinal(rng.randint(FIRST_DATE.toordinal(), LAST_DATE.toordinal()))


def _date_pair(rng: random.Random) -> Pair:
    date = _random_date(rng)
    fmt = rng.choice(list(DATE_FORMATS.values()))
    return chars(fmt(date)), chars(date.isoformat())  # target: 2024-03-05


# -----------------------------------------------------------------------------
# copy / reverse / sort over a small alphabet.
def _symbol_pair(name: str, rng: random.Random, symbols: list[str], min_len: int, max_len: int) -> Pair:
    length = rng.randint(min_len, max_len)        # uniform in [min_len, max_len]
    src = [rng.choice(symbols) for _ in range(length)]
    if name == "copy":
        tgt = list(src)
    elif name == "reverse":
        tgt = src[::-1]
    else:  # "sort": in the order of the alphabet
        tgt = sorted(src, key=symbols.index)
    return src, tgt


def make_task(name: str, n: int, *, min_len: int = 3, max_len: int = 10, seed: int = 0,
              alphabet: str | Sequence[str] | None = None) -> list[Pair]:
    """``n`` (src_tokens, tgt_tokens) pairs of task ``name`` (one of ``TASKS``).

    copy/reverse/sort draw each length uniformly in ``[min_len, max_len]`` and each symbol from
    ``alphabet`` (default: 20 letters a-t). ``dates`` ignores the lengths and the alphabet.
    Same arguments, same pairs; the first ``k`` pairs do not depend on ``n``.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {list(TASKS)}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not isinstance(min_len, int) or min_len < 1:
        raise ValueError(f"min_len must be an int >= 1, got {min_len!r}")
    if not isinstance(max_len, int) or max_len < min_len:
        raise ValueError(f"max_len must be an int >= min_len={min_len}, got {max_len!r}")
    symbols = list(DEFAULT_ALPHABET if alphabet is None else alphabet)
    if not symbols or not all(isinstance(s, str) and s for s in symbols) or len(set(symbols)) != len(symbols):
        raise ValueError(f"alphabet must be a non-empty sequence of distinct non-empty strings, got {alphabet!r}")

    rng = random.Random(seed)
    if name == "dates":
        return [_date_pair(rng) for _ in range(n)]
    return [_symbol_pair(name, rng, symbols, min_len, max_len) for _ in range(n)]


def task_vocabs(pairs: Sequence[Pair], min_freq: int = 1) -> tuple[Vocab, Vocab]:
    """Source and target vocabularies built from the pairs themselves."""
    src_vocab = build_vocab_from_iterator((src for src, _ in pairs), min_freq=min_freq)
    tgt_vocab = build_vocab_from_iterator((tgt for _, tgt in pairs), min_freq=min_freq)
    return src_vocab, tgt_vocab
