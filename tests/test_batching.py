"""Batching: padding vs torch's pad_sequence, masks vs lengths, the bucket sampler's guarantees."""
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Subset

from s2s_course.data.batching import (Batch, BucketBatchSampler, Seq2SeqDataset, collate_batch,
                                      lengths_to_mask, make_loader, pad_sequences)
from s2s_course.data.specials import EOS_IDX, PAD_IDX, SOS_IDX, UNK_IDX
from s2s_course.data.synthetic import make_task, task_vocabs
from s2s_course.data.vocab import build_vocab_from_iterator


# --- pad_sequences / lengths_to_mask ---------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=5), st.integers(0, 9))
def test_pad_sequences_matches_torch(lengths, pad_idx):
    seqs = [torch.randint(10, 20, (n,)) for n in lengths]
    padded, got_lengths = pad_sequences(seqs, pad_idx=pad_idx)
    expected = pad_sequence(seqs, batch_first=True, padding_value=pad_idx)
    assert torch.equal(padded, expected)
    assert got_lengths.tolist() == lengths and got_lengths.dtype == torch.long


def test_pad_sequences_errors():
    with pytest.raises(ValueError, match="non-empty"):
        pad_sequences([])
    with pytest.raises(ValueError, match=r"seqs\[1\] must be a 1-D tensor, got \(2, 2\)"):
        pad_sequences([torch.ones(2), torch.ones(2, 2)])
    with pytest.raises(ValueError, match=r"seqs\[0\] must be a 1-D tensor, got list"):
        pad_sequences([[1, 2]])


def test_lengths_to_mask_hand_case():
    expected = torch.tensor([[True, True, False],
                             [False, False, False],
                             [True, True, True]])
    assert torch.equal(lengths_to_mask(torch.tensor([2, 0, 3])), expected)
    wide = lengths_to_mask(torch.tensor([2, 0, 3]), max_len=5)
    assert wide.shape == (3, 5) and torch.equal(wide[:, :3], expected) and not wide[:, 3:].any()
    assert lengths_to_mask(torch.tensor([], dtype=torch.long)).shape == (0, 0)


def test_lengths_to_mask_errors():
    with pytest.raises(ValueError, match=r"lengths must be a 1-D tensor \(B,\), got \(2, 1\)"):
        lengths_to_mask(torch.ones(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="lengths must be a 1-D tensor"):
        lengths_to_mask([1, 2])
    with pytest.raises(ValueError, match="max_len must be >= the longest length 3, got 2"):
        lengths_to_mask(torch.tensor([1, 3]), max_len=2)


# --- dataset ---------------------------------------------------------------------------------
PAIRS = [(["a", "b"], ["x"]), (["c"], ["y", "z", "x"]), (["a", "b", "c", "d"], [])]


@pytest.fixture
def vocabs():
    return task_vocabs(PAIRS)


def test_dataset_numericalises_once(vocabs):
    src_vocab, tgt_vocab = vocabs
    ds = Seq2SeqDataset(PAIRS, src_vocab, tgt_vocab)
    assert len(ds) == 3 and ds.pairs == [(list(s), list(t)) for s, t in PAIRS]
    src, tgt = ds[1]
    assert src.dtype == tgt.dtype == torch.long
    assert src.tolist() == [src_vocab["c"], EOS_IDX]
    assert tgt.tolist() == [SOS_IDX, tgt_vocab["y"], tgt_vocab["z"], tgt_vocab["x"], EOS_IDX]
    assert ds[2][1].tolist() == [SOS_IDX, EOS_IDX]  # an empty target still has <sos> <eos>
    assert ds.src_lengths == [3, 2, 5] and ds.tgt_lengths == [3, 5, 2]
    no_eos = Seq2SeqDataset(PAIRS, src_vocab, tgt_vocab, add_src_eos=False)
    assert no_eos[0][0].tolist() == [src_vocab["a"], src_vocab["b"]]
    # unknown tokens become <unk>, never an error
    assert Seq2SeqDataset([(["zzz"], ["x"])], src_vocab, tgt_vocab)[0][0].tolist() == [UNK_IDX, EOS_IDX]


def test_dataset_errors(vocabs):
    with pytest.raises(ValueError, match="non-empty"):
        Seq2SeqDataset([], *vocabs)
    with pytest.raises(TypeError, match=r"pairs\[0\].*tokenize"):
        Seq2SeqDataset([("a b", "x")], *vocabs)
    with pytest.raises(ValueError, match=r"pairs\[1\] must be a \(src_tokens, tgt_tokens\) pair"):
        Seq2SeqDataset([(["a"], ["x"]), (["a"],)], *vocabs)


# --- collate / Batch -------------------------------------------------------------------------
def test_collate_batch(vocabs):
    ds = Seq2SeqDataset(PAIRS, *vocabs)
    batch = collate_batch([ds[i] for i in range(3)])
    assert isinstance(batch, Batch) and len(batch) == 3
    assert batch.src.shape == (3, 5) and batch.tgt.shape == (3, 5)
    assert batch.src.dtype == batch.tgt.dtype == torch.long
    assert batch.src_mask.dtype == batch.tgt_mask.dtype == torch.bool
    assert batch.src_lengths.tolist() == [3, 2, 5] and batch.tgt_lengths.tolist() == [3, 5, 2]
    for tokens, lengths, mask in [(batch.src, batch.src_lengths, batch.src_mask),
                                  (batch.tgt, batch.tgt_lengths, batch.tgt_mask)]:
        assert torch.equal(mask.sum(1), lengths)
        for b, n in enumerate(lengths.tolist()):
            assert mask[b, :n].all() and not mask[b, n:].any()
            assert (tokens[b, n:] == PAD_IDX).all() and (tokens[b, :n] != PAD_IDX).all()
            assert tokens[b, n - 1] == EOS_IDX
    assert (batch.tgt[:, 0] == SOS_IDX).all()
    # teacher forcing views: the target is the input shifted by one
    assert batch.tgt_in.shape == batch.tgt_out.shape == (3, 4)
    assert torch.equal(batch.tgt_in[:, 1:], batch.tgt_out[:, :-1])


def test_collate_accepts_lists_and_rejects_empty():
    batch = collate_batch([([5, 2], [1, 6, 2]), ([2], [1, 2])], pad_idx=PAD_IDX)
    assert batch.src.tolist() == [[5, 2], [2, 0]]
    with pytest.raises(ValueError, match="non-empty"):
        collate_batch([])


def test_batch_to_keeps_lengths_on_cpu():
    batch = collate_batch([([5, 2], [1, 6, 2]), ([2], [1, 2])])
    moved = batch.to("meta")  # a device without data: shows what moves, on any machine
    for name in ("src", "tgt", "src_mask", "tgt_mask"):
        assert getattr(moved, name).device.type == "meta"
    assert moved.src_lengths.device.type == "cpu" and moved.tgt_lengths.device.type == "cpu"
    assert batch.src.device.type == "cpu"  # the original is unchanged


# --- BucketBatchSampler ---------------------------------------------------------------------
def _padding_fraction(batches, lengths):
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / padded


_rng = random.Random(0)
RNG_LENGTHS = [_rng.randint(1, 50) for _ in range(2000)]


def test_sampler_every_index_once_per_epoch():
    sampler = BucketBatchSampler(RNG_LENGTHS, batch_size=32, bucket_size_multiplier=10)
    epochs = [list(sampler) for _ in range(3)]
    for batches in epochs:
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(RNG_LENGTHS)))
        assert len(batches) == len(sampler) == 63  # ceil(2000 / 32)
        assert all(1 <= len(b) <= 32 for b in batches)
    assert epochs[0] != epochs[1]  # a new shuffle each epoch


def test_sampler_groups_similar_lengths():
    bucketed = list(BucketBatchSampler(RNG_LENGTHS, batch_size=32, seed=0))
    perm = torch.randperm(len(RNG_LENGTHS), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [perm[i:i + 32] for i in range(0, len(perm), 32)]
    bucket_pad = _padding_fraction(bucketed, RNG_LENGTHS)
    random_pad = _padding_fraction(random_batches, RNG_LENGTHS)
    assert random_pad > 0.4            # lengths 1..50 uniform: ~48 % padding at random
    assert bucket_pad < 0.1 * random_pad


def test_sampler_determinism_and_set_epoch():
    a = BucketBatchSampler(RNG_LENGTHS, 16, seed=3)
    b = BucketBatchSampler(RNG_LENGTHS, 16, seed=3)
    assert [list(a), list(a)] == [list(b), list(b)]
    assert list(BucketBatchSampler(RNG_LENGTHS, 16, seed=4)) != list(BucketBatchSampler(RNG_LENGTHS, 16, seed=3))
    first = list(BucketBatchSampler(RNG_LENGTHS, 16, seed=3))
    a.set_epoch(0)
    assert list(a) == first


def test_sampler_without_shuffle_is_fixed_and_sorted_in_buckets():
    lengths = [5, 1, 4, 2, 3, 6, 1]
    sampler = BucketBatchSampler(lengths, batch_size=2, shuffle=False, bucket_size_multiplier=2)
    # buckets of 4 in the original order: [0,1,2,3] -> by length [1,3,2,0]; [4,5,6] -> [6,4,5]
    assert list(sampler) == [[1, 3], [2, 0], [6, 4], [5]]
    assert list(sampler) == list(sampler)


@pytest.mark.parametrize("kwargs, match", [
    ({"lengths": []}, "lengths"),
    ({"batch_size": 0}, "batch_size"),
    ({"bucket_size_multiplier": 0}, "bucket_size_multiplier"),
])
def test_sampler_errors(kwargs, match):
    args = {"lengths": [1, 2], "batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        BucketBatchSampler(**args)


# --- make_loader -----------------------------------------------------------------------------
@pytest.fixture
def reverse_dataset():
    pairs = make_task("reverse", 300, min_len=1, max_len=20, seed=0)
    return Seq2SeqDataset(pairs, *task_vocabs(pairs))


@pytest.mark.parametrize("bucket", [True, False])
def test_make_loader_covers_the_data_and_repeats(reverse_dataset, bucket):
    loader = make_loader(reverse_dataset, batch_size=32, bucket=bucket, seed=1)
    batches = list(loader)
    assert all(isinstance(b, Batch) for b in batches)
    assert sum(len(b) for b in batches) == len(reverse_dataset)
    assert sorted(int(n) for b in batches for n in b.src_lengths) == sorted(reverse_dataset.src_lengths)
    again = list(make_loader(reverse_dataset, batch_size=32, bucket=bucket, seed=1))
    assert all(torch.equal(x.src, y.src) for x, y in zip(batches, again))


def test_make_loader_bucketing_pads_less(reverse_dataset):
    def pad_fraction(loader):
        masks = [b.src_mask for b in loader]
        return 1 - sum(m.sum().item() for m in masks) / sum(m.numel() for m in masks)
    bucketed = pad_fraction(make_loader(reverse_dataset, batch_size=16, bucket=True))
    plain = pad_fraction(make_loader(reverse_dataset, batch_size=16, bucket=False))
    assert bucketed < 0.5 * plain


def test_make_loader_without_src_lengths_and_in_order(reverse_dataset):
    subset = Subset(reverse_dataset, list(range(50)))  # a Subset has no .src_lengths
    batches = list(make_loader(subset, batch_size=8, shuffle=False))
    assert sum(len(b) for b in batches) == 50
    plain = list(make_loader(reverse_dataset, batch_size=8, shuffle=False, bucket=False))
    assert torch.equal(plain[0].src[0, :reverse_dataset.src_lengths[0]], reverse_dataset[0][0])
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(reverse_dataset, batch_size=0)


def test_end_to_end_with_a_word_vocab():
    pairs = [(["ein", "hund"], ["a", "dog"]), (["eine", "katze", "schläft"], ["a", "cat", "sleeps"])]
    src_vocab = build_vocab_from_iterator(s for s, _ in pairs)
    tgt_vocab = build_vocab_from_iterator(t for _, t in pairs)
    batch = next(iter(make_loader(Seq2SeqDataset(pairs, src_vocab, tgt_vocab), batch_size=2, shuffle=False)))
    decoded = sorted(tgt_vocab.decode(row) for row in batch.tgt)
    assert decoded == sorted(t for _, t in pairs)


# --- TokenBatchSampler: batches by padded tokens ----------------------------------------------
from s2s_course.data.batching import TokenBatchSampler  # noqa: E402


def _random_lengths(n, seed, low=1, high=30):
    rng = random.Random(seed)
    src = [rng.randint(low, high) for _ in range(n)]
    tgt = [max(1, s + rng.randint(-5, 5)) for s in src]
    return src, tgt


def _cost(batch, src, tgt):
    return len(batch) * max(max(src[i], tgt[i]) for i in batch)


@pytest.mark.parametrize("max_tokens, bucket_size", [(60, 4096), (100, 37), (7, 4096)])
def test_token_sampler_every_index_once_and_within_budget(max_tokens, bucket_size):
    src, tgt = _random_lengths(300, seed=max_tokens)
    sampler = TokenBatchSampler(src, tgt, max_tokens, seed=1, bucket_size=bucket_size)
    for _ in range(2):  # two epochs
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(300))
        for b in batches:
            assert len(b) >= 1
            oversize = len(b) == 1 and max(src[b[0]], tgt[b[0]]) > max_tokens
            assert _cost(b, src, tgt) <= max_tokens or oversize
    if max_tokens == 7:  # lengths up to 35 > 7: those examples are batches of one
        assert any(len(b) == 1 and max(src[b[0]], tgt[b[0]]) > 7 for b in batches)


def test_token_sampler_fills_batches_greedily_by_sorted_length():
    """No shuffle, one bucket: sorted by size, a batch closes only when the next pair would
    break the budget (an independent greedy packing by hand)."""
    src = [3, 9, 1, 4, 4, 2, 8, 5]
    tgt = [2, 10, 2, 3, 5, 2, 1, 6]
    sizes = [max(s, t) for s, t in zip(src, tgt)]   # 3 10 2 4 5 2 8 6
    sampler = TokenBatchSampler(src, tgt, max_tokens=12, shuffle=False)
    # sorted by size (stable): 2(i2) 2(i5) 3(i0) 4(i3) 5(i4) 6(i7) 8(i6) 10(i1)
    # [2,2,3,4]: 4*4=16 > 12 -> [i2,i5,i0] (3*3=9); [4,5]: 2*5=10, +6: 3*6=18 -> [i3,i4];
    # [6]: +8 -> 16 -> [i7]; [8]: +10 -> 20 -> [i6]; [10] -> [i1]
    assert list(sampler) == [[2, 5, 0], [3, 4], [7], [6], [1]]
    assert len(sampler) == 5
    assert sizes[1] == 10


def test_token_sampler_deterministic_per_seed_and_new_order_each_epoch():
    src, tgt = _random_lengths(200, seed=3)
    a = TokenBatchSampler(src, tgt, 80, seed=5)
    b = TokenBatchSampler(src, tgt, 80, seed=5)
    first_a, first_b = list(a), list(b)
    assert first_a == first_b
    second_a = list(a)
    assert second_a != first_a                       # the next epoch is reshuffled
    assert second_a == list(b)                       # ... the same way for the same seed
    assert list(TokenBatchSampler(src, tgt, 80, seed=6)) != first_a
    b.set_epoch(0)
    assert list(b) == first_a                        # set_epoch goes back
    b.set_epoch(1)
    assert list(b) == second_a


def test_token_sampler_len_and_no_shuffle():
    src, tgt = _random_lengths(150, seed=4)
    sampler = TokenBatchSampler(src, tgt, 90, shuffle=False)
    assert len(sampler) == len(list(sampler))
    assert list(sampler) == list(sampler)            # no shuffle: every epoch the same
    shuffled = TokenBatchSampler(src, tgt, 90, seed=0)
    assert len(shuffled) == len(list(shuffled))      # epoch 0 is exactly what len() counted
    assert abs(len(list(shuffled)) - len(shuffled)) <= 2  # later epochs barely differ
    # every length equal: exactly ceil(n / per_batch) batches
    same = TokenBatchSampler([5] * 23, [4] * 23, max_tokens=20)
    assert len(same) == 6 and sorted(len(b) for b in same) == [3, 4, 4, 4, 4, 4]


@pytest.mark.parametrize("args, match", [
    (([], [], 10), "src_lengths"),
    (([1, 2], [1], 10), "src_lengths"),
    (([1], [1], 0), "max_tokens"),
    (([1], [1], 2.5), "max_tokens"),
    (([1], [1], True), "max_tokens"),
])
def test_token_sampler_errors(args, match):
    with pytest.raises(ValueError, match=match):
        TokenBatchSampler(*args)


def test_make_loader_with_max_tokens_yields_batches_within_budget(reverse_dataset):
    loader = make_loader(reverse_dataset, max_tokens=64, seed=2)
    batches = list(loader)
    assert all(isinstance(b, Batch) for b in batches)
    assert sum(len(b) for b in batches) == len(reverse_dataset)
    for b in batches:
        assert len(b) * max(b.src.size(1), b.tgt.size(1)) <= 64
    assert sorted(int(n) for b in batches for n in b.src_lengths) == sorted(reverse_dataset.src_lengths)
    assert len(loader) == len(batches)
    again = [b.src for b in make_loader(reverse_dataset, max_tokens=64, seed=2)]
    assert all(torch.equal(x.src, y) for x, y in zip(batches, again))
    ordered = list(make_loader(reverse_dataset, max_tokens=64, shuffle=False))
    assert [b.src.size(1) for b in ordered] == sorted(b.src.size(1) for b in ordered)
