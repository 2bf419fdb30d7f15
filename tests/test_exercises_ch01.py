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
