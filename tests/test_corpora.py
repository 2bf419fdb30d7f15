"""Real corpora read from the local data folder (S2S_COURSE_DATA), and the offline failure path."""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import socket
from pathlib import Path

import pytest

from s2s_course.data import corpora
from s2s_course.data.corpora import (load_multi30k, load_tatoeba_kor_eng, local_layout,
                                     multi30k_terms, tatoeba_attribution)
from s2s_course.data.download import DataUnavailableError

REPO = Path(__file__).resolve().parents[1]
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _shared_data() -> Path:
    env = os.environ.get("S2S_COURSE_DATA", "").strip()
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def closed_port_urls(monkeypatch) -> str:
    """Point every corpus URL at a local port where nothing listens: no test ever goes online."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(corpora, "MULTI30K_URLS", [base + "/multi30k/{name}"])
    monkeypatch.setattr(corpora, "TATOEBA_URLS", [base + "/kor-eng.zip"])
    return base


@pytest.fixture
def shared_data(monkeypatch, tmp_path, closed_port_urls) -> Path:
    root = _shared_data()
    if not (root / "multi30k" / "train.de.gz").is_file() or not (root / "tatoeba-kor-eng").is_dir():
        pytest.skip(f"local corpora not found at {root} (set S2S_COURSE_DATA to the shared data folder)")
    monkeypatch.setenv("S2S_COURSE_DATA", str(root))
    monkeypatch.setenv("S2S_COURSE_CACHE", str(tmp_path / "cache"))
    return root


@pytest.fixture
def fake_data(monkeypatch, tmp_path, closed_port_urls) -> Path:
    """An empty local data folder and cache; tests write small files and pin their digests."""
    monkeypatch.setenv("S2S_COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("S2S_COURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "data"


def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- Multi30k


@pytest.mark.parametrize("split, n, first_en", [
    ("train", 29000, "Two young, White males are outside near many bushes."),
    ("val", 1014, "A group of men are loading cotton onto a truck"),
    ("test_2016_flickr", 1000, "A man in an orange hat starring at something."),
])
def test_multi30k_splits(shared_data, split, n, first_en):
    pairs = load_multi30k(split)
    assert len(pairs) == n
    de, en = pairs[0]
    assert en == first_en
    assert de.startswith(("Zwei junge", "Eine Gruppe", "Ein Mann"))
    assert all(isinstance(d, str) and isinstance(e, str) and d and e for d, e in pairs)
    assert all(d == d.strip() and e == e.strip() for d, e in pairs)  # train.de has trailing blanks


def test_multi30k_is_german_then_english(shared_data):
    pairs = load_multi30k("val")
    german = re.compile(r"\b(ein|eine|einem|einer|einen|der|die|das|den|dem|und|mit|auf|im|ist|sind)\b", re.I)
    english = re.compile(r"\b(a|the|and|with|is|are|of)\b", re.I)
    n = len(pairs)
    assert sum(bool(german.search(de)) for de, _ in pairs) > 0.95 * n
    assert sum(bool(english.search(en)) for _, en in pairs) > 0.95 * n
    assert sum(bool(german.search(en)) for _, en in pairs) < 0.01 * n
    assert sum(bool(english.search(de)) for de, _ in pairs) < 0.01 * n


def test_multi30k_misaligned_files_are_an_error(fake_data, monkeypatch):
    for lang, text in (("de", "eins\nzwei\n"), ("en", "one\ntwo\nthree\n")):
        digest = _write(fake_data / "multi30k" / f"val.{lang}.gz", gzip.compress(text.encode()))
        monkeypatch.setitem(corpora.MULTI30K_SHA256, f"val.{lang}.gz", digest)
    with pytest.raises(ValueError, match=r"misaligned: .*val\.de\.gz has 2 lines but .*val\.en\.gz has 3"):
        load_multi30k("val")


# ----------------------------------------------------------------------------- Tatoeba


def test_tatoeba_all_pairs(shared_data):
    pairs = load_tatoeba_kor_eng()
    assert len(pairs) == 5749
    assert pairs[0] == ("가.", "Go.")
    assert all(HANGUL.search(ko) for ko, _ in pairs)  # Korean first ...
    assert sum(bool(HANGUL.search(en)) for _, en in pairs) == 0  # ... English second


def test_tatoeba_splits_are_disjoint_covering_and_deterministic(shared_data):
    everything = load_tatoeba_kor_eng()
    splits = {name: load_tatoeba_kor_eng(name, seed=0) for name in ("train", "val", "test")}
    sizes = {name: len(pairs) for name, pairs in splits.items()}
    assert sum(sizes.values()) == len(everything)
    assert sorted(p for pairs in splits.values() for p in pairs) == sorted(everything)
    assert abs(sizes["train"] / len(everything) - 0.90) < 0.01
    assert abs(sizes["val"] / len(everything) - 0.05) < 0.01
    assert abs(sizes["test"] / len(everything) - 0.05) < 0.01
    # no Korean or English sentence of the test set is seen in training
    train_sentences = {s for pair in splits["train"] for s in pair}
    assert not any(ko in train_sentences or en in train_sentences for ko, en in splits["test"])
    # deterministic for a seed, different for another
    assert load_tatoeba_kor_eng("test", seed=0) == splits["test"]
    assert load_tatoeba_kor_eng("test", seed=1) != splits["test"]


def test_tatoeba_split_groups_repeated_sentences(fake_data, monkeypatch):
    lines = []
    for i in range(40):  # 40 English sentences, each with 1 to 3 Korean translations
        lines += [f"Sentence {i}.\t문장 {i}-{k}.\tCC-BY 2.0 (France) #{i}" for k in range(1 + i % 3)]
    lines.insert(5, "")  # an empty line is skipped
    data = ("\n".join(lines) + "\n").encode()
    monkeypatch.setattr(corpora, "TATOEBA_SHA256", _write(fake_data / "tatoeba-kor-eng" / "kor.txt", data))
    everything = load_tatoeba_kor_eng()
    assert len(everything) == len(lines) - 1 and everything[0] == ("문장 0-0.", "Sentence 0.")
    seen: dict[str, str] = {}
    for name in ("train", "val", "test"):
        for _, en in load_tatoeba_kor_eng(name, seed=3):
            assert seen.setdefault(en, name) == name, f"{en!r} is in {seen[en]} and {name}"
    assert len(seen) == 40


def test_tatoeba_malformed_line_is_an_error(fake_data, monkeypatch):
    data = "Go.\t가.\tattribution\nno tab on this line\n".encode()
    monkeypatch.setattr(corpora, "TATOEBA_SHA256", _write(fake_data / "tatoeba-kor-eng" / "kor.txt", data))
    with pytest.raises(ValueError, match=r"kor\.txt, line 2: expected 'English<TAB>Korean"):
        load_tatoeba_kor_eng()


# ----------------------------------------------------------------------------- offline, errors, terms


def test_offline_with_nothing_raises_data_unavailable(fake_data):
    with pytest.raises(DataUnavailableError) as info:
        load_multi30k("val")
    msg = str(info.value)
    assert "multi30k/val.de.gz" in msg and "connection refused" in msg
    assert "S2S_COURSE_DATA" in msg and "tatoeba-kor-eng/kor.txt" in msg  # the layout is shown
    with pytest.raises(DataUnavailableError, match="member 'kor.txt' of a zip archive"):
        load_tatoeba_kor_eng()


@pytest.mark.parametrize("loader, bad", [(load_multi30k, "test"), (load_tatoeba_kor_eng, "dev")])
def test_invalid_split_names_the_argument(loader, bad):
    with pytest.raises(ValueError, match=r"split must be one of .*got '(test|dev)'"):
        loader(bad)


def test_terms_and_layout():
    assert "non-commercial research and/or educational purposes" in multi30k_terms()
    assert "Elliott" in multi30k_terms() and "2016" in multi30k_terms()
    assert "CC-BY 2.0 FR" in tatoeba_attribution()
    assert "www.manythings.org/anki and tatoeba.org" in tatoeba_attribution()
    layout = local_layout()
    for split in corpora.MULTI30K_SPLITS:
        for lang in ("de", "en"):
            assert f"multi30k/{split}.{lang}.gz" in layout
    assert "tatoeba-kor-eng/kor.txt" in layout


def test_tatoeba_credits_align_with_pairs(shared_data):
    from s2s_course.data import tatoeba_credits

    pairs, credits = corpora.load_tatoeba_kor_eng(), tatoeba_credits()
    assert len(credits) == len(pairs)
    assert credits[0].startswith("CC-BY 2.0 (France) Attribution: tatoeba.org #")
    test_pairs, test_credits = corpora.load_tatoeba_kor_eng("test"), tatoeba_credits("test")
    by_pair = dict(zip(pairs, credits))
    assert all(by_pair[p] == c for p, c in zip(test_pairs, test_credits))
