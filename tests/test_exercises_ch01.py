"""Chapter 1 checkers: they accept correct masks and padding (the package's, the chapter's
solutions, independent implementations) and reject plausible mistakes, naming what is wrong."""
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from s2s_course.data import lengths_to_mask, pad_sequences
from s2s_course.exercises import ExerciseFailed, check_lengths_to_mask, check_pad_sequences
from tests.nbtools import chapter, run_solution


def failure(checker, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        checker(fn)
    return str(info.value)


# --- lengths_to_mask -------------------------------------------------------------------------

def mask_by_loops(lengths, max_len=None):
    """An independent reference: fill the mask element by element."""
    T = int(lengths.max()) if max_len is None else max_len
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for b, n in enumerate(lengths.tolist()):
        mask[b, :n] = True
    return mask


def test_lengths_to_mask_accepts_the_package_an_independent_version_and_the_solution(capsys):
    assert check_lengths_to_mask(lengths_to_mask)
    assert check_lengths_to_mask(mask_by_loops)
    solution = run_solution(chapter("01"), "ex-01-lengths-to-mask")
    assert check_lengths_to_mask(solution.lengths_to_mask)
    assert "✓ all" in capsys.readouterr().out


def test_the_mask_checker_is_right_by_hand():
    # the checker's reference on a hand-computed case, so the cases mean what they say
    assert mask_by_loops(torch.tensor([3, 1]), 4).tolist() == [[True, True, True, False],
                                                               [True, False, False, False]]
    assert torch.equal(lengths_to_mask(torch.tensor([3, 1]), 4), mask_by_loops(torch.tensor([3, 1]), 4))


def test_off_by_one_mask_is_a_values_failure():
    def wrong(lengths, max_len=None):
        T = int(lengths.max()) if max_len is None else max_len
        return torch.arange(T)[None, :] <= lengths[:, None]

    msg = failure(check_lengths_to_mask, wrong)
    assert "check 'values'" in msg and "case 'basic: lengths [3, 1, 2]'" in msg and "t < lengths[b]" in msg


def test_float_mask_is_a_dtype_failure():
    def wrong(lengths, max_len=None):
        T = int(lengths.max()) if max_len is None else max_len
        return (torch.arange(T)[None, :] < lengths[:, None]).float()

    msg = failure(check_lengths_to_mask, wrong)
    assert "check 'dtype'" in msg and "torch.bool" in msg and "torch.float32" in msg


def test_ignoring_max_len_is_a_shape_failure_on_that_case():
    def wrong(lengths, max_len=None):
        return torch.arange(int(lengths.max()))[None, :] < lengths[:, None]

    msg = failure(check_lengths_to_mask, wrong)
    assert "case 'max_len larger than the longest" in msg and "check 'shape'" in msg
    assert "expected shape (3, 7), got (3, 5)" in msg


def test_batch_size_as_time_axis_is_a_shape_failure():
    def wrong(lengths, max_len=None):
        return torch.arange(len(lengths))[None, :] < lengths[:, None]

    msg = failure(check_lengths_to_mask, wrong)  # right by accident on 'basic' (B = max = 3)
    assert "case 'all length 1" in msg and "expected shape (4, 1), got (4, 4)" in msg


def test_in_place_change_of_lengths_is_caught():
    def wrong(lengths, max_len=None):
        mask = torch.arange(int(lengths.max()) if max_len is None else max_len)[None, :] < lengths[:, None]
        lengths.zero_()  # the mask is right, but the caller's lengths are gone
        return mask

    msg = failure(check_lengths_to_mask, wrong)
    assert "check 'does not modify its inputs'" in msg and "'lengths' was modified in place" in msg


def test_forgotten_return_and_template_error_are_reported():
    def no_return(lengths, max_len=None):
        torch.arange(3)[None, :] < lengths[:, None]

    assert "forget `return`" in failure(check_lengths_to_mask, no_return)

    def template(lengths, max_len=None):
        raise NotImplementedError("fill me in")

    assert "raised NotImplementedError" in failure(check_lengths_to_mask, template)


# --- pad_sequences ---------------------------------------------------------------------------

def pad_with_torch(seqs, pad_idx=0):
    """An independent correct version built on torch.nn.utils.rnn.pad_sequence."""
    padded = pad_sequence(list(seqs), batch_first=True, padding_value=pad_idx)
    return padded, torch.tensor([len(s) for s in seqs])


def test_pad_sequences_accepts_the_package_torch_and_the_solution(capsys):
    assert check_pad_sequences(pad_sequences)
    assert check_pad_sequences(pad_with_torch)
    solution = run_solution(chapter("01"), "ex-01-pad-sequences")
    assert check_pad_sequences(solution.pad_sequences)
    assert "✓ all" in capsys.readouterr().out


def test_pad_reference_is_right_by_hand():
    padded, lengths = pad_sequences([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_idx=9)
    assert padded.tolist() == [[5, 6, 7], [8, 9, 9]] and lengths.tolist() == [3, 1]


def test_left_padding_is_a_values_failure():
    def wrong(seqs, pad_idx=0):
        T = max(len(s) for s in seqs)
        padded = torch.full((len(seqs), T), pad_idx, dtype=torch.long)
        for i, s in enumerate(seqs):
            padded[i, T - len(s):] = s
        return padded, torch.tensor([len(s) for s in seqs])

    msg = failure(check_pad_sequences, wrong)
    assert "check 'values of output[0]'" in msg and "left-aligned" in msg


def test_ignoring_pad_idx_fails_on_the_pad_idx_case():
    def wrong(seqs, pad_idx=0):
        return pad_with_torch(seqs, 0)

    msg = failure(check_pad_sequences, wrong)
    assert "case 'pad_idx=9'" in msg and "check 'values of output[0]'" in msg


def test_lengths_as_a_list_fail_the_type_check():
    def wrong(seqs, pad_idx=0):
        return pad_with_torch(seqs, pad_idx)[0], [len(s) for s in seqs]

    msg = failure(check_pad_sequences, wrong)
    assert "check 'returns a tensor of output[1]'" in msg and "LongTensor" in msg


def test_int32_lengths_fail_the_dtype_check():
    def wrong(seqs, pad_idx=0):
        padded, lengths = pad_with_torch(seqs, pad_idx)
        return padded, lengths.int()

    msg = failure(check_pad_sequences, wrong)
    assert "check 'dtype of output[1]'" in msg and "torch.int64" in msg


def test_float_padding_fails_the_dtype_check():
    def wrong(seqs, pad_idx=0):
        padded, lengths = pad_with_torch(seqs, pad_idx)
        return padded.float(), lengths

    assert "check 'dtype of output[0]'" in failure(check_pad_sequences, wrong)


def test_returning_only_the_padded_tensor_is_reported():
    def wrong(seqs, pad_idx=0):
        return pad_with_torch(seqs, pad_idx)[0]

    msg = failure(check_pad_sequences, wrong)
    assert "check 'returns (padded, lengths)'" in msg and "return the lengths as well" in msg

    def none(seqs, pad_idx=0):
        pad_with_torch(seqs, pad_idx)

    assert "got NoneType" in failure(check_pad_sequences, none)


def test_padding_one_short_is_a_shape_failure():
    def wrong(seqs, pad_idx=0):
        padded, lengths = pad_with_torch(seqs, pad_idx)
        return padded[:, :-1], lengths

    msg = failure(check_pad_sequences, wrong)
    assert "check 'shape of output[0]'" in msg


def test_modifying_the_input_sequences_is_caught():
    def wrong(seqs, pad_idx=0):
        out = pad_with_torch(seqs, pad_idx)
        seqs[0][0] = 99
        return out

    assert "seqs[0] was modified in place" in failure(check_pad_sequences, wrong)


# --- part 3 blind spots: order, lengths from padding, dtype, empty rows ---------------------------

def test_mask_that_assumes_the_longest_length_first_is_named():
    def wrong(lengths, max_len=None):
        T = int(lengths[0]) if max_len is None else max_len  # right only for a batch sorted longest-first
        return torch.arange(T)[None, :] < lengths[:, None]

    msg = failure(check_lengths_to_mask, wrong)
    assert "case 'longest last" in msg and "check 'shape'" in msg
    assert "sorted longest-first, so it assumes that order" in msg and "max(lengths)" in msg


def test_mask_from_the_last_position_fails_on_an_empty_sequence():
    def wrong(lengths, max_len=None):  # mark position lengths-1, then fill backwards: -1 wraps around
        T = int(lengths.max()) if max_len is None else max_len
        last = torch.zeros(len(lengths), T, dtype=torch.long)
        last[torch.arange(len(lengths)), lengths - 1] = 1
        return last.flip(1).cumsum(1).flip(1) > 0

    msg = failure(check_lengths_to_mask, wrong)
    assert "case 'an empty sequence" in msg and "check 'values'" in msg and "row of False" in msg


def test_padding_that_assumes_the_longest_sequence_first_is_named():
    def wrong(seqs, pad_idx=0):
        T = len(seqs[0])  # crashes (or cuts) when a later sequence is longer
        padded = torch.full((len(seqs), T), pad_idx, dtype=seqs[0].dtype)
        for row, s in zip(padded, seqs):
            row[:len(s)] = s
        return padded, torch.tensor([len(s) for s in seqs])

    msg = failure(check_pad_sequences, wrong)
    assert "case 'basic'" not in msg and "raised RuntimeError" in msg
    assert "sorted longest-first, so it assumes that order" in msg and "max(len(s) for s in seqs)" in msg


def test_lengths_counted_from_the_padding_are_named():
    def wrong(seqs, pad_idx=0):
        padded, _ = pad_with_torch(seqs, pad_idx)
        return padded, (padded != pad_idx).sum(dim=1)  # a real token equal to pad_idx is not counted

    msg = failure(check_pad_sequences, wrong)
    assert "case 'a real token equal to pad_idx=0'" in msg and "check 'lengths not derived from padding'" in msg
    assert "count the tokens that differ from pad_idx" in msg and "len(seq)" in msg


def test_padding_that_always_makes_int64_fails_on_int32_ids():
    def wrong(seqs, pad_idx=0):
        padded = torch.full((len(seqs), max(len(s) for s in seqs)), pad_idx, dtype=torch.long)
        for row, s in zip(padded, seqs):
            row[:len(s)] = s
        return padded, torch.tensor([len(s) for s in seqs])

    msg = failure(check_pad_sequences, wrong)
    assert "case 'int32 ids'" in msg and "check 'dtype of output[0]'" in msg and "seqs[0].dtype" in msg


def test_lengths_in_the_dtype_of_the_ids_fail_on_int32_ids():
    def wrong(seqs, pad_idx=0):
        padded, lengths = pad_with_torch(seqs, pad_idx)
        return padded, lengths.to(seqs[0].dtype)

    msg = failure(check_pad_sequences, wrong)
    assert "case 'int32 ids'" in msg and "check 'dtype of output[1]'" in msg and "int64" in msg


def test_the_mask_and_padding_cases_cover_the_blind_spots():
    from s2s_course.exercises.ch01 import MASK_CASES, PAD_CASES

    assert any(int(c.args[0].argmax()) != 0 and "max_len" not in c.kwargs for c in MASK_CASES)
    assert any(int(c.args[0].min()) == 0 for c in MASK_CASES)
    assert any(any(bool((s == c.kwargs.get("pad_idx", 0)).any()) for s in c.args[0]) for c in PAD_CASES)
    assert any(c.args[0][0].dtype != torch.long for c in PAD_CASES)


# --- token-budget batches ------------------------------------------------------------------------

from s2s_course.exercises import check_token_batches  # noqa: E402
from s2s_course.exercises.ch01 import TOKEN_CASES, reference_token_batches  # noqa: E402


def batches_longest_first(lengths, max_tokens):
    """Independent: sort longest-first, so a batch's first index is its longest; open a new batch
    when one more would overflow."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def batches_strict(lengths, max_tokens):
    """Independent: shortest-first, with a strict `<` (never exactly full), as tuples."""
    batches, batch = [], []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if batch and (len(batch) + 1) * lengths[i] >= max_tokens:
            batches.append(tuple(batch))
            batch = []
        batch.append(i)
    return batches + ([tuple(batch)] if batch else [])


def token_variant(lengths, max_tokens, *, sort=True, budget="padded", drop_long=False, alone=True,
                  in_place=False):
    """Greedy shortest-first packing with switches for the usual mistakes."""
    if in_place:
        lengths.sort()
        order = list(range(len(lengths)))
    else:
        order = sorted(range(len(lengths)), key=lengths.__getitem__) if sort else list(range(len(lengths)))
    batches, batch = [], []
    for i in order:
        if drop_long and lengths[i] > max_tokens:
            continue
        candidate = batch + [i]
        if budget == "padded":
            size = len(candidate) * max(lengths[j] for j in candidate)
        elif budget == "real":
            size = sum(lengths[j] for j in candidate)
        else:  # "new": the new sequence's length only (right only when the input is sorted shortest-first)
            size = len(candidate) * lengths[i]
        if batch and size > max_tokens and (alone or lengths[i] <= max_tokens):
            batches.append(batch)
            batch = []
        batch.append(i)
    return batches + ([batch] if batch else [])


def test_token_reference_is_right_by_hand():
    assert reference_token_batches([3, 30, 5, 4, 2, 6, 5], 16) == [[4, 0, 3], [2, 6], [5], [1]]
    assert reference_token_batches([], 10) == []
    assert reference_token_batches([9, 7], 6) == [[1], [0]]


def test_token_checker_accepts_the_reference_independent_versions_and_the_solution(capsys):
    assert check_token_batches(reference_token_batches)
    assert check_token_batches(batches_longest_first)
    assert check_token_batches(batches_strict)
    assert check_token_batches(token_variant)
    solution = run_solution(chapter("01"), "ex-01-token-batches")
    assert check_token_batches(solution.token_batches)
    assert "✓ all" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, case, property_name, words", [
    (dict(sort=False), "40 lengths in random order", "little padding", "follow the input order"),
    (dict(budget="real"), "40 lengths in random order", "padded size within max_tokens", "PADDED"),
    (dict(budget="new", sort=False), "40 lengths in random order", "padded size within max_tokens",
     "longest length of the batch"),
    (dict(drop_long=True), "one sequence longer than max_tokens", "every index exactly once",
     "a batch of its own"),
    (dict(alone=False), "one sequence longer than max_tokens", "padded size within max_tokens",
     "alone in its batch"),
    (dict(in_place=True), "40 lengths in random order", "does not modify its inputs", "lengths.sort()"),
])
def test_token_checker_names_the_mistake(kwargs, case, property_name, words):
    msg = failure(check_token_batches, lambda l, m: token_variant(l, m, **kwargs))
    assert f"case '{case}" in msg and f"check '{property_name}'" in msg and words in msg


def test_token_checker_rejects_one_batch_per_sequence_duplicates_and_tensors():
    msg = failure(check_token_batches, lambda l, m: [[i] for i in range(len(l))])
    assert "check 'batches are full'" in msg and "keep adding sequences" in msg
    msg = failure(check_token_batches, lambda l, m: reference_token_batches(l, m) + [[0]] if l else [])
    assert "check 'every index exactly once'" in msg and "index 0 is in batch" in msg
    msg = failure(check_token_batches, lambda l, m: [torch.tensor(b) for b in reference_token_batches(l, m)])
    assert "check 'returns a list of index lists'" in msg and ".tolist()" in msg
    msg = failure(check_token_batches, lambda l, m: [[l[i] for i in b] for b in reference_token_batches(l, m)])
    assert "check 'every index exactly once'" in msg


def test_token_checker_reports_a_crash_on_empty_input():
    def wrong(lengths, max_tokens):
        assert max(lengths) > 0  # max() of an empty list raises
        return reference_token_batches(lengths, max_tokens)

    msg = failure(check_token_batches, wrong)
    assert "case 'empty input'" in msg and "raised ValueError" in msg


def test_token_cases_cover_order_budget_and_edges():
    names = " ".join(c.name for c in TOKEN_CASES)
    assert "random order" in names and "longest-first" in names and "empty input" in names
    assert any(max(c.args[0], default=0) > c.args[1] for c in TOKEN_CASES)
