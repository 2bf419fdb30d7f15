"""Synthetic tasks: definitions, length ranges, determinism; dates checked with datetime.strptime."""
import datetime
from collections import Counter

import pytest

from s2s_course.data.synthetic import DATE_FORMATS, DEFAULT_ALPHABET, TASKS, make_task, task_vocabs

STRPTIME = {  # an independent parser per format (C locale month names)
    "korean": "%Y년 %m월 %d일",
    "english": "%B %d, %Y",
    "short": "%d %b %Y",
    "dotted": "%d.%m.%Y",
    "slashed": "%Y/%m/%d",
}


def _text(tokens):
    return "".join(tokens).replace("▁", " ")


@pytest.mark.parametrize("name, relation", [
    ("copy", lambda s: s),
    ("reverse", lambda s: s[::-1]),
    ("sort", sorted),  # the default alphabet a-t is in alphabetical order
])
def test_symbol_tasks(name, relation):
    pairs = make_task(name, 300, min_len=2, max_len=7, seed=1)
    assert len(pairs) == 300
    for src, tgt in pairs:
        assert tgt == relation(src)
        assert 2 <= len(src) <= 7
        assert set(src) <= set(DEFAULT_ALPHABET)
    assert len(DEFAULT_ALPHABET) == 20
    # lengths are uniform: every length shows up, none dominates
    counts = Counter(len(src) for src, _ in pairs)
    assert sorted(counts) == list(range(2, 8))
    assert max(counts.values()) < 2 * min(counts.values())


def test_fixed_length_and_custom_alphabet():
    pairs = make_task("copy", 20, min_len=5, max_len=5, alphabet=["x", "y"])
    assert all(len(src) == 5 and set(src) <= {"x", "y"} for src, _ in pairs)
    # "sort" follows the order of the alphabet given, not Python's string order
    for src, tgt in make_task("sort", 50, alphabet="zyx", seed=3):
        assert tgt == sorted(src, reverse=True)


def test_determinism():
    assert make_task("reverse", 50, seed=7) == make_task("reverse", 50, seed=7)
    assert make_task("reverse", 50, seed=7) != make_task("reverse", 50, seed=8)
    assert make_task("dates", 30, seed=2) == make_task("dates", 30, seed=2)
    # the first k pairs do not depend on n
    assert make_task("sort", 100, seed=4)[:10] == make_task("sort", 10, seed=4)


def test_dates_parse_back_to_the_target():
    pairs = make_task("dates", 600, seed=0)
    used = Counter()
    years = []
    for src, tgt in pairs:
        assert all(isinstance(t, str) and len(t) == 1 for t in src + tgt)  # char tokens
        text, target = _text(src), "".join(tgt)
        parsed = []
        for fmt_name, fmt in STRPTIME.items():
            try:
                parsed.append((fmt_name, datetime.datetime.strptime(text, fmt).date()))
            except ValueError:
                pass
        assert len(parsed) == 1, f"{text!r} matches {parsed}"
        fmt_name, date = parsed[0]
        used[fmt_name] += 1
        assert date.isoformat() == target
        assert len(target) == 10 and target[4] == target[7] == "-"
        years.append(date.year)
    assert set(used) == set(DATE_FORMATS) == set(STRPTIME)
    assert 1950 <= min(years) and max(years) <= 2049
    assert min(years) < 1960 and max(years) > 2039  # the whole range is used


def test_date_format_examples():
    d = datetime.date(2024, 3, 5)
    assert [DATE_FORMATS[k](d) for k in ("korean", "english", "short", "dotted", "slashed")] == [
        "2024년 3월 5일", "March 5, 2024", "5 Mar 2024", "05.03.2024", "2024/3/5"]


def test_dates_include_leap_days_only_in_leap_years():
    pairs = make_task("dates", 3000, seed=5)
    leap_days = [int("".join(t[:4])) for _, t in pairs if "".join(t[4:]) == "-02-29"]
    assert leap_days, "a uniform draw over 36,525 days should hit Feb 29 a few times in 3000"
    assert all(y % 4 == 0 for y in leap_days)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "add"}, "copy"),
    ({"n": 0}, "n must"),
    ({"n": 2.5}, "n must"),
    ({"min_len": 0}, "min_len"),
    ({"min_len": 5, "max_len": 4}, "max_len"),
    ({"alphabet": ""}, "alphabet"),
    ({"alphabet": ["a", "a"]}, "alphabet"),
])
def test_bad_arguments(kwargs, match):
    args = {"name": "copy", "n": 5, **kwargs}
    with pytest.raises(ValueError, match=match) as err:
        make_task(args.pop("name"), args.pop("n"), **args)
    if "name" in kwargs:
        assert all(t in str(err.value) for t in TASKS)


def test_task_vocabs():
    pairs = make_task("dates", 400, seed=0)
    src_vocab, tgt_vocab = task_vocabs(pairs)
    assert set(tgt_vocab.get_itos()[4:]) == set("0123456789-")
    assert {"년", "월", "일", "▁", "/", ".", ",", "M"} <= set(src_vocab.get_itos())
    for src, tgt in pairs[:20]:
        assert src_vocab.decode(src_vocab.encode(src)) == src
        assert tgt_vocab.decode(tgt_vocab.encode(tgt)) == tgt
