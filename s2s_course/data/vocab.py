"""Vocabulary: the two-way map between tokens (str) and ids (int).

The API follows ``torchtext.vocab`` (``vocab["cat"]``, ``vocab(tokens)``, ``get_itos()``...),
so code from older tutorials reads the same. Two course rules on top:

- the four specials sit at fixed ids in every vocabulary: ``<pad>``=0, ``<sos>``=1,
  ``<eos>``=2, ``<unk>``=3 (see ``specials.py``);
- an unknown token maps to ``<unk>`` instead of raising, so a new test sentence never crashes.

>>> v = build_vocab_from_iterator([["a", "b", "a"], ["c", "a"]])
>>> v.get_itos()
['<pad>', '<sos>', '<eos>', '<unk>', 'a', 'b', 'c']
>>> v.encode(["a", "zebra"])
[1, 4, 3, 2]
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from s2s_course.data.specials import (EOS, EOS_IDX, PAD, PAD_IDX, SOS, SOS_IDX, SPECIALS, UNK,
                                      UNK_IDX)

__all__ = ["Vocab", "build_vocab_from_iterator",
           "PAD", "SOS", "EOS", "UNK", "SPECIALS", "PAD_IDX", "SOS_IDX", "EOS_IDX", "UNK_IDX"]

_FORMAT = "s2s_course.Vocab"


def _as_int_list(indices, name: str) -> list[int]:
    """Accept a list of ints or a 1-D tensor/array (``vocab.decode(batch.tgt[0])``)."""
    if hasattr(indices, "tolist"):
        indices = indices.tolist()
    if isinstance(indices, int):
        raise TypeError(f"{name} must be a sequence of ints, got a single int {indices}")
    out = list(indices)
    for i in out:
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"{name} must contain ints, got {type(i).__name__} {i!r}")
    return out


class Vocab:
    """Token <-> id lookup. ``itos[i]`` is the token with id ``i``; ``itos`` starts with SPECIALS."""

    def __init__(self, itos: Sequence[str], freqs: Counter | None = None,
                 default_index: int | None = UNK_IDX) -> None:
        itos = list(itos)
        if itos[:len(SPECIALS)] != SPECIALS:
            raise ValueError(f"itos must start with the specials {SPECIALS}, got {itos[:len(SPECIALS)]}")
        stoi = {token: i for i, token in enumerate(itos)}
        if len(stoi) != len(itos):
            dupes = sorted(t for t, c in Counter(itos).items() if c > 1)
            raise ValueError(f"itos must not repeat a token, got duplicates {dupes[:5]}")
        self._itos = itos
        self._stoi = stoi
        self.freqs: Counter = Counter(freqs or {})  # corpus counts, incl. tokens below min_freq
        self._default_index: int | None = None
        self.set_default_index(default_index)

    # --- torchtext-style lookups ------------------------------------------------------
    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: str) -> bool:
        return token in self._stoi

    def __getitem__(self, token: str) -> int:
        """Id of ``token``; an unknown token gets the default index (``<unk>``)."""
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, got {type(token).__name__} {token!r:.40}; "
                            f"use lookup_token(i) to go from an id to a token")
        index = self._stoi.get(token)
        if index is not None:
            return index
        if self._default_index is None:
            raise KeyError(f"token {token!r} is not in the vocabulary and no default index is set "
                           f"(call set_default_index(UNK_IDX))")
        return self._default_index

    def __call__(self, tokens: Iterable[str]) -> list[int]:
        return self.lookup_indices(tokens)

    def lookup_indices(self, tokens: Iterable[str]) -> list[int]:
        if isinstance(tokens, str):
            raise TypeError(f"tokens must be a list of tokens, got the str {tokens[:30]!r}; tokenize it first")
        return [self[token] for token in tokens]

    def lookup_token(self, index: int) -> str:
        if not 0 <= index < len(self._itos):
            raise IndexError(f"index must be in [0, {len(self._itos) - 1}] for this vocabulary of "
                             f"{len(self._itos)} tokens, got {index}")
        return self._itos[index]

    def lookup_tokens(self, indices: Iterable[int]) -> list[str]:
        indices = _as_int_list(indices, "indices")
        bad = [i for i in indices if not 0 <= i < len(self._itos)]
        if bad:
            raise IndexError(f"indices must be in [0, {len(self._itos) - 1}] for this vocabulary of "
                             f"{len(self._itos)} tokens, got {bad[0]}")
        return [self._itos[i] for i in indices]

    def get_itos(self) -> list[str]:
        return list(self._itos)

    def get_stoi(self) -> dict[str, int]:
        return dict(self._stoi)

    def set_default_index(self, index: int | None) -> None:
        """Id returned for unknown tokens (``UNK_IDX`` by default; ``None`` makes them a KeyError)."""
        if index is not None and not 0 <= index < len(self._itos):
            raise ValueError(f"default index must be None or in [0, {len(self._itos) - 1}], got {index}")
        self._default_index = index

    def get_default_index(self) -> int | None:
        return self._default_index

    # --- what the models need -----------------------------------------------------------
    def encode(self, tokens: Iterable[str], add_sos_eos: bool = True) -> list[int]:
        """Tokens -> ids, wrapped as ``<sos> ... <eos>`` by default."""
        ids = self.lookup_indices(tokens)
        return [SOS_IDX, *ids, EOS_IDX] if add_sos_eos else ids

    def decode(self, indices: Iterable[int], strip_specials: bool = True) -> list[str]:
        """Ids -> tokens. By default stop at the first ``<eos>`` and drop ``<pad>``/``<sos>``
        (``<unk>`` is kept: it is information). ``strip_specials=False`` returns every token."""
        indices = _as_int_list(indices, "indices")
        if not strip_specials:
            return self.lookup_tokens(indices)
        kept: list[int] = []
        for i in indices:
            if i == EOS_IDX:
                break
            if i not in (PAD_IDX, SOS_IDX):
                kept.append(i)
        return self.lookup_tokens(kept)

    # --- saving ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as readable UTF-8 JSON (Korean stays Korean)."""
        path = Path(path)
        data = {"format": _FORMAT, "version": 1, "itos": self._itos,
                "default_index": self._default_index, "freqs": dict(self.freqs)}
        path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a vocabulary saved by Vocab.save")
        return cls(data["itos"], Counter(data.get("freqs", {})), data.get("default_index", UNK_IDX))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self._itos == other._itos and self._default_index == other._default_index

    __hash__ = None  # type: ignore[assignment]  (mutable default index)

    def __repr__(self) -> str:
        preview = ", ".join(self._itos[len(SPECIALS):len(SPECIALS) + 5])
        return f"Vocab(size={len(self)}, first tokens after the specials: [{preview}, ...])"


def build_vocab_from_iterator(iterator: Iterable[Iterable[str]], min_freq: int = 1,
                              specials: Sequence[str] | None = SPECIALS, special_first: bool = True,
                              max_tokens: int | None = None) -> Vocab:
    """Count tokens and keep the frequent ones, most frequent first (ties alphabetically).

    ``iterator`` yields one list of tokens per sentence. The four course specials always get
    ids 0-3; extra ``specials`` (e.g. ``"<mask>"``) follow them when ``special_first`` and go
    to the end otherwise. ``max_tokens`` caps the size *including* the specials (as torchtext).
    """
    if not isinstance(min_freq, int) or min_freq < 1:
        raise ValueError(f"min_freq must be an int >= 1, got {min_freq!r}")
    extra_specials = [s for s in dict.fromkeys(specials or []) if s not in SPECIALS]
    n_specials = len(SPECIALS) + len(extra_specials)
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= n_specials):
        raise ValueError(f"max_tokens must be an int > the number of specials ({n_specials}), got {max_tokens!r}")

    freqs: Counter = Counter()
    for tokens in iterator:
        if isinstance(tokens, str):
            raise TypeError(f"iterator must yield lists of tokens, got the str {tokens[:30]!r}; "
                            f"tokenize each sentence first")
        freqs.update(tokens)

    # Sort by (-count, token): most frequent first, ties in alphabetical order -> deterministic.
    candidates = sorted((t for t, c in freqs.items() if c >= min_freq and t not in SPECIALS
                         and t not in extra_specials), key=lambda t: (-freqs[t], t))
    if max_tokens is not None:
        candidates = candidates[:max_tokens - n_specials]
    if not candidates:
        reason = ("the iterator yielded no tokens" if not freqs
                  else f"no token occurs at least min_freq={min_freq} times (besides specials)")
        raise ValueError(f"vocabulary would be built from nothing: {reason}")

    if special_first:
        itos = SPECIALS + extra_specials + candidates
    else:
        itos = SPECIALS + candidates + extra_specials
    return Vocab(itos, freqs)
