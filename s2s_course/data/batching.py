"""From token pairs to padded mini-batches.

Sentences have different lengths, but a tensor is a rectangle. So we

1. numericalise each pair once (``Seq2SeqDataset``): src = ids + <eos>, tgt = <sos> + ids + <eos>;
2. pad every sequence of a batch to the longest one with ``<pad>`` (``pad_sequences``) and keep
   the true lengths and a mask (True = real token) so models can ignore the padding;
3. put sentences of similar length in the same batch (``BucketBatchSampler``): less padding,
   less wasted compute.

    src  (B, S)  a b c <eos> <pad>         tgt  (B, T)  <sos> x y <eos> <pad>
                                           tgt_in  = tgt[:, :-1]  what the decoder reads
                                           tgt_out = tgt[:, 1:]   what it must predict
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from s2s_course.data.specials import EOS_IDX, PAD_IDX, SOS_IDX
from s2s_course.data.vocab import Vocab


@dataclass(eq=False)  # comparing tensors with == is ambiguous; compare fields instead
class Batch:
    """One mini-batch, batch first. Lengths stay on the CPU (``pack_padded_sequence`` wants them there)."""
    src: Tensor          # (B, S) long, padded with PAD_IDX
    src_lengths: Tensor  # (B,)   long, CPU
    tgt: Tensor          # (B, T) long, <sos> ... <eos> <pad> ...
    tgt_lengths: Tensor  # (B,)   long, CPU, counts <sos> and <eos>
    src_mask: Tensor     # (B, S) bool, True = real token
    tgt_mask: Tensor     # (B, T) bool, True = real token

    @property
    def tgt_in(self) -> Tensor:
        """Decoder input, ``<sos> y1 ... yn`` (B, T-1) (teacher forcing)."""
        return self.tgt[:, :-1]

    @property
    def tgt_out(self) -> Tensor:
        """Decoder target, ``y1 ... yn <eos>`` (B, T-1): the input shifted left by one."""
        return self.tgt[:, 1:]

    def __len__(self) -> int:
        return self.src.size(0)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """Move the token tensors and masks to ``device``; the lengths stay on the CPU."""
        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=non_blocking)
        return Batch(src=move(self.src), src_lengths=self.src_lengths, tgt=move(self.tgt),
                     tgt_lengths=self.tgt_lengths, src_mask=move(self.src_mask), tgt_mask=move(self.tgt_mask))


# -----------------------------------------------------------------------------
def pad_sequences(seqs: Sequence[Tensor], pad_idx: int = PAD_IDX) -> tuple[Tensor, Tensor]:
    """Stack 1-D sequences into (B, T) padded with ``pad_idx``; also return their lengths (B,)."""
    if len(seqs) == 0:
        raise ValueError("seqs must be a non-empty list of 1-D tensors, got an empty list")
    for i, seq in enumerate(seqs):
        if not isinstance(seq, Tensor) or seq.dim() != 1:
            shape = tuple(seq.shape) if isinstance(seq, Tensor) else type(seq).__name__
            raise ValueError(f"seqs[{i}] must be a 1-D tensor, got {shape}")
    lengths = torch.tensor([len(seq) for seq in seqs], dtype=torch.long)  # (B,)
    padded = seqs[0].new_full((len(seqs), int(lengths.max())), pad_idx)   # (B, T)
    for i, seq in enumerate(seqs):
        padded[i, :len(seq)] = seq
    return padded, lengths


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, T) bool mask, True where position < length. T = max_len or max(lengths)."""
    if not isinstance(lengths, Tensor) or lengths.dim() != 1:
        shape = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"lengths must be a 1-D tensor (B,), got {shape}")
    longest = int(lengths.max()) if lengths.numel() else 0
    if max_len is None:
        max_len = longest
    elif max_len < longest:
        raise ValueError(f"max_len must be >= the longest length {longest}, got {max_len}")
    positions = torch.arange(max_len, device=lengths.device)  # (T,)
    return positions[None, :] < lengths[:, None]               # (1, T) < (B, 1) -> (B, T)


def collate_batch(items: Sequence[tuple[Tensor, Tensor]], pad_idx: int = PAD_IDX) -> Batch:
    """``DataLoader`` collate function: a list of (src_ids, tgt_ids) -> one padded ``Batch``."""
    if len(items) == 0:
        raise ValueError("items must be a non-empty list of (src_ids, tgt_ids) pairs")
    src, src_lengths = pad_sequences([torch.as_tensor(s, dtype=torch.long) for s, _ in items], pad_idx)
    tgt, tgt_lengths = pad_sequences([torch.as_tensor(t, dtype=torch.long) for _, t in items], pad_idx)
    return Batch(src=src, src_lengths=src_lengths, tgt=tgt, tgt_lengths=tgt_lengths,
                 src_mask=lengths_to_mask(src_lengths, src.size(1)),
                 tgt_mask=lengths_to_mask(tgt_lengths, tgt.size(1)))


# -----------------------------------------------------------------------------
def _check_pair(pair, i: int) -> None:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"pairs[{i}] must be a (src_tokens, tgt_tokens) pair, got {pair!r:.60}")
    if isinstance(pair[0], str) or isinstance(pair[1], str):
        raise TypeError(f"pairs[{i}] holds a str, not a list of tokens; tokenize the sentences first")


class Seq2SeqDataset(Dataset):
    """Token pairs numericalised once: item ``i`` is (src_ids (S_i,), tgt_ids (T_i,)) LongTensors.

    src = ids + <eos> (``add_src_eos=False`` leaves it out); tgt = <sos> + ids + <eos>.
    ``pairs`` keeps the tokens (for printing and BLEU), ``src_lengths`` feeds the bucketing.
    """

    def __init__(self, pairs: Sequence[tuple[Sequence[str], Sequence[str]]], src_vocab: Vocab,
                 tgt_vocab: Vocab, *, add_src_eos: bool = True) -> None:
        if len(pairs) == 0:
            raise ValueError("pairs must be a non-empty list of (src_tokens, tgt_tokens)")
        self.pairs: list[tuple[list[str], list[str]]] = []
        for i, pair in enumerate(pairs):
            _check_pair(pair, i)
            self.pairs.append((list(pair[0]), list(pair[1])))
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        src_end = [EOS_IDX] if add_src_eos else []
        self.src = [torch.tensor(src_vocab(src) + src_end, dtype=torch.long) for src, _ in self.pairs]
        self.tgt = [torch.tensor([SOS_IDX] + tgt_vocab(tgt) + [EOS_IDX], dtype=torch.long)
                    for _, tgt in self.pairs]
        self.src_lengths = [len(s) for s in self.src]
        self.tgt_lengths = [len(t) for t in self.tgt]

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.src[i], self.tgt[i]


# -----------------------------------------------------------------------------
class BucketBatchSampler(Sampler[list[int]]):
    """Yield batches of indices whose lengths are similar; every index exactly once per epoch.

    Each epoch: shuffle all indices, cut them into buckets of ``batch_size *
    bucket_size_multiplier``, sort each bucket by length, cut it into batches, shuffle the
    batches. Randomness comes from ``seed + epoch``, so runs repeat exactly; each new
    ``iter()`` is a new epoch (or call ``set_epoch``). ``shuffle=False``: no shuffling at all.
    """

    def __init__(self, lengths: Sequence[int] | Tensor, batch_size: int, shuffle: bool = True,
                 seed: int = 0, bucket_size_multiplier: int = 50) -> None:
        self.lengths = [int(n) for n in lengths]
        if len(self.lengths) == 0:
            raise ValueError("lengths must be non-empty (one length per example)")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(bucket_size_multiplier, int) or bucket_size_multiplier < 1:
            raise ValueError(f"bucket_size_multiplier must be an int >= 1, got {bucket_size_multiplier!r}")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.bucket_size = batch_size * bucket_size_multiplier
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        n = len(self.lengths)
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        batches: list[list[int]] = []
        for start in range(0, n, self.bucket_size):
            bucket = sorted(order[start:start + self.bucket_size], key=self.lengths.__getitem__)
            batches += [bucket[i:i + self.batch_size] for i in range(0, len(bucket), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        yield from batches

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def make_loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = True, bucket: bool = True,
                seed: int = 0, max_tokens: int | None = None) -> DataLoader:
    """A ``DataLoader`` yielding ``Batch`` objects; ``bucket=True`` groups similar source lengths.

    ``max_tokens``: batch by size instead of by count (``TokenBatchSampler``), for a dataset with
    ``src_lengths`` and ``tgt_lengths``; ``batch_size`` is then ignored."""
    if max_tokens is not None:
        sampler = TokenBatchSampler(dataset.src_lengths, dataset.tgt_lengths, max_tokens,
                                    shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if bucket:
        lengths = getattr(dataset, "src_lengths", None)
        if lengths is None:  # e.g. a torch Subset: measure the sources once
            lengths = [len(dataset[i][0]) for i in range(len(dataset))]
        sampler = BucketBatchSampler(lengths, batch_size, shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=collate_batch)


class TokenBatchSampler(Sampler[list[int]]):
    """Batches of about ``max_tokens`` padded tokens each, instead of a fixed number of sentences.

    A batch of n pairs costs n x max(longest source, longest target) padded tokens per side;
    sentences sorted by length inside buckets of ``bucket_size`` pairs are added to a batch while
    that cost stays <= ``max_tokens``. Short sentences make big batches, long ones small, so every
    step does about the same work and little of it on padding. Each epoch reshuffles (seed +
    epoch), like ``BucketBatchSampler``; a pair longer than ``max_tokens`` gets a batch alone.
    """

    def __init__(self, src_lengths: Sequence[int], tgt_lengths: Sequence[int], max_tokens: int,
                 shuffle: bool = True, seed: int = 0, bucket_size: int = 4096) -> None:
        if len(src_lengths) != len(tgt_lengths) or len(src_lengths) == 0:
            raise ValueError(f"src_lengths and tgt_lengths must be non-empty and of one length, "
                             f"got {len(src_lengths)} and {len(tgt_lengths)}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
        self.sizes = [max(int(s), int(t)) for s, t in zip(src_lengths, tgt_lengths)]
        self.max_tokens, self.shuffle, self.seed, self.bucket_size = max_tokens, shuffle, seed, bucket_size
        self.epoch = 0
        self._batches = self._make_batches(0)  # the number of batches barely varies by epoch

    def _make_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        n = len(self.sizes)
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        batches: list[list[int]] = []
        for start in range(0, n, self.bucket_size):
            batch: list[int] = []
            longest = 0
            for i in sorted(order[start:start + self.bucket_size], key=self.sizes.__getitem__):
                longest_if_added = max(longest, self.sizes[i])
                if batch and (len(batch) + 1) * longest_if_added > self.max_tokens:
                    batches.append(batch)
                    batch, longest_if_added = [], self.sizes[i]
                batch.append(i)
                longest = longest_if_added
            if batch:
                batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches if self.epoch == 0 else self._make_batches(self.epoch)
        self.epoch += 1
        yield from batches

    def __len__(self) -> int:
        return len(self._batches)
