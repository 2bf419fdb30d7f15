"""The course's two real parallel corpora, as lists of (source, target) sentence pairs.

- Multi30k Task 1 (German -> English image descriptions; Elliott et al., 2016): the standard
  small benchmark of seq2seq tutorials. ``load_multi30k(split)`` -> [(de, en), ...].
- Tatoeba Korean-English (www.manythings.org/anki, built from tatoeba.org): short everyday
  sentences in a language with a different script and word order.
  ``load_tatoeba_kor_eng(split)`` -> [(ko, en), ...].

Files come through ``download.fetch``: a local folder (``$S2S_COURSE_DATA``, see
``local_layout()``), else the cache, else the internet, always checked against the sha256
digests pinned below. Sentences are returned raw (cased, untokenized), with surrounding
whitespace removed; tokenization is the chapters' business.
"""
from __future__ import annotations

import random
from pathlib import Path

from s2s_course.data.download import fetch, read_lines

# ----------------------------------------------------------------------------- Multi30k

MULTI30K_SPLITS = ("train", "val", "test_2016_flickr")
MULTI30K_LANGS = ("de", "en")
MULTI30K_DIR = "multi30k"
# URL templates, tried in order: GitHub, then the jsDelivr CDN mirror of the same repository.
MULTI30K_URLS = [
    "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}",
    "https://cdn.jsdelivr.net/gh/multi30k/dataset@master/data/task1/raw/{name}",
]
# sha256 of the gzip files in multi30k/dataset, data/task1/raw/ (commit a3d2e0d).
MULTI30K_SHA256 = {
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
}

# ----------------------------------------------------------------------------- Tatoeba

TATOEBA_SPLITS = (None, "train", "val", "test")
TATOEBA_FRACTIONS = {"train": 0.90, "val": 0.05, "test": 0.05}
TATOEBA_DIR = "tatoeba-kor-eng"
TATOEBA_MEMBER = "kor.txt"
# manythings.org rebuilds kor-eng.zip from time to time, so the member kor.txt is what is pinned
# (the version dated 2023-02-20, 5,749 pairs).
TATOEBA_URLS = ["https://www.manythings.org/anki/kor-eng.zip"]
TATOEBA_SHA256 = "6c9d8de3e500306997e4083274fb0038ef521651ffb2b7923e4e607a59d09dbc"


def multi30k_terms() -> str:
    """The Multi30k terms of use and citation, to show wherever the data is used."""
    return ("Multi30k may be used for non-commercial research and/or educational purposes. "
            "Cite: D. Elliott, S. Frank, K. Sima'an, L. Specia (2016), \"Multi30K: Multilingual "
            "English-German Image Descriptions\", Proceedings of the 5th Workshop on Vision and "
            "Language. Data: https://github.com/multi30k/dataset")


def tatoeba_attribution() -> str:
    """The Tatoeba attribution and licence line, to show wherever the data is used."""
    return ("Korean-English sentence pairs from www.manythings.org/anki and tatoeba.org, "
            "licensed CC-BY 2.0 FR (https://creativecommons.org/licenses/by/2.0/fr/); "
            "per-sentence credits are in the third column of kor.txt.")


def local_layout() -> str:
    """The folder layout that ``$S2S_COURSE_DATA`` must follow (used in error messages)."""
    multi30k = "\n".join(f"    {MULTI30K_DIR}/{name}" for name in MULTI30K_SHA256)
    return ("Expected layout of the local data folder ($S2S_COURSE_DATA):\n"
            f"{multi30k}\n"
            f"    {TATOEBA_DIR}/{TATOEBA_MEMBER}    (extracted from {TATOEBA_URLS[0].rsplit('/', 1)[-1]})")


def _check_split(split: str | None, allowed: tuple) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


# ----------------------------------------------------------------------------- loaders


def _multi30k_file(split: str, lang: str) -> Path:
    name = f"{split}.{lang}.gz"
    return fetch(f"{MULTI30K_DIR}/{name}", [url.format(name=name) for url in MULTI30K_URLS],
                 MULTI30K_SHA256[name], note=local_layout())


def load_multi30k(split: str = "train") -> list[tuple[str, str]]:
    """Multi30k Task 1 as (German, English) pairs: train 29,000, val 1,014, test_2016_flickr 1,000.

    Choose hyperparameters on "val" and report "test_2016_flickr" (the usual test set) once.
    """
    _check_split(split, MULTI30K_SPLITS)
    paths = {lang: _multi30k_file(split, lang) for lang in MULTI30K_LANGS}
    de, en = ([line.strip() for line in read_lines(paths[lang])] for lang in MULTI30K_LANGS)
    if len(de) != len(en):
        raise ValueError(f"Multi30k split {split!r} is misaligned: {paths['de']} has {len(de)} "
                         f"lines but {paths['en']} has {len(en)}")
    return list(zip(de, en))


def _read_tatoeba(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Parse kor.txt (English <tab> Korean <tab> attribution) into (Korean, English) pairs and credits."""
    pairs, credits = [], []
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(f"{path}, line {lineno}: expected 'English<TAB>Korean<TAB>attribution', "
                             f"got {line!r}")
        pairs.append((fields[1].strip(), fields[0].strip()))
        credits.append(fields[2].strip() if len(fields) > 2 else "")
    return pairs, credits


def _grouped_split(pairs: list[tuple[str, str]], seed: int) -> dict[str, list[int]]:
    """Indices of a deterministic ~90/5/5 split that keeps repeated sentences on one side.

    Tatoeba often has several translations of one sentence (hundreds of English sentences repeat).
    A plain random split would put "I'm hungry." in train and test with different Korean
    translations, so pairs sharing a Korean or an English sentence are grouped (union-find) and
    whole groups are assigned to a split: no test sentence is ever seen in training.
    """
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[int, str], int] = {}
    for i, pair in enumerate(pairs):
        for side, sentence in enumerate(pair):
            j = first_seen.setdefault((side, sentence), i)
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(pairs)):
        groups.setdefault(find(i), []).append(i)
    order = list(groups.values())  # in order of first appearance, then shuffled with the seed
    random.Random(seed).shuffle(order)

    split: dict[str, list[int]] = {"test": [], "val": [], "train": []}
    targets = {name: round(TATOEBA_FRACTIONS[name] * len(pairs)) for name in ("test", "val")}
    for group in order:
        name = next((n for n in ("test", "val") if len(split[n]) < targets[n]), "train")
        split[name].extend(group)
    return {name: sorted(indices) for name, indices in split.items()}


def load_tatoeba_kor_eng(split: str | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """Tatoeba Korean-English as (Korean, English) pairs, in file order (short sentences first).

    ``split=None`` gives all 5,749 pairs; "train"/"val"/"test" give a deterministic ~90/5/5 split
    drawn with ``seed`` in which no Korean or English sentence appears in two splits.
    Show ``tatoeba_attribution()`` wherever the data is used (CC-BY 2.0 FR).
    """
    pairs, _ = _tatoeba(split, seed)
    return pairs


def tatoeba_credits(split: str | None = None, seed: int = 0) -> list[str]:
    """The per-pair credit line (contributors and sentence ids), aligned with ``load_tatoeba_kor_eng``."""
    _, credits = _tatoeba(split, seed)
    return credits


def _tatoeba(split: str | None, seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    _check_split(split, TATOEBA_SPLITS)
    path = fetch(f"{TATOEBA_DIR}/{TATOEBA_MEMBER}", TATOEBA_URLS, TATOEBA_SHA256,
                 extract=TATOEBA_MEMBER, note=local_layout())
    pairs, credits = _read_tatoeba(path)
    if split is None:
        return pairs, credits
    chosen = _grouped_split(pairs, seed)[split]
    return [pairs[i] for i in chosen], [credits[i] for i in chosen]
