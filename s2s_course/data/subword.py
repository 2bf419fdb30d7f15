"""Subword tokenization with byte-pair encoding (BPE; Sennrich et al. 2016), via ``tokenizers``.

A word vocabulary either grows huge or maps rare words to ``<unk>``. BPE starts from characters
and repeatedly merges the most frequent adjacent pair, so frequent words stay whole and rare ones
split into known pieces: "Skateboardfahrer" -> "▁Skate", "board", "fahrer". Nothing is unknown.

    bpe = train_bpe(german_and_english_sentences, vocab_size=8000)
    bpe("Ein Mann fährt Skateboard.")   # ['▁Ein', '▁Mann', '▁fährt', '▁Skate', 'board', '.']
    bpe.decode(['▁Ein', '▁Mann', ...])  # 'Ein Mann fährt Skateboard.'

The Metaspace pre-tokenizer marks the start of each word with "▁", so decoding is exact: join the
pieces, turn "▁" back into spaces. One vocabulary learned on both languages (a *joint* BPE) lets
the encoder and decoder share their embeddings.
"""
from __future__ import annotations

from typing import Iterable

from s2s_course.data.specials import SPECIALS, UNK


class SubwordTokenizer:
    """A trained BPE model as a course tokenizer: ``tok(text) -> pieces``, ``tok.decode(pieces)``."""

    def __init__(self, tokenizer) -> None:  # a tokenizers.Tokenizer
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, pieces: Iterable[str]) -> str:
        """Pieces back to text: "▁" starts a new word. Special tokens are dropped."""
        return "".join(p for p in pieces if p not in SPECIALS).replace("▁", " ").strip()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def pieces(self) -> list[str]:
        """The learned pieces, ordered by id (the specials first)."""
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab, key=vocab.__getitem__)

    def __repr__(self) -> str:
        return f"SubwordTokenizer(bpe, vocab_size={self.vocab_size})"


def train_bpe(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
              lowercase: bool = False) -> SubwordTokenizer:
    """Learn a BPE vocabulary of ``vocab_size`` pieces (the course's specials included) from
    ``texts``. Deterministic for the same texts and settings."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= len(SPECIALS):
        raise ValueError(f"vocab_size must be an int > {len(SPECIALS)}, got {vocab_size!r}")
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    # A character never seen in training becomes <unk> (without unk_token it would silently vanish).
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    steps = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIALS), show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return SubwordTokenizer(tokenizer)


__all__ = ["SubwordTokenizer", "train_bpe"]
