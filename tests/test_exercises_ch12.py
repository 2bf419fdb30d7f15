"""Chapter 12 checker: it accepts correct repetition penalties (the reference, a loop, the chapter's
solution) and rejects each typical mistake with a message that names it."""
import pytest
import torch

from s2s_course.exercises import ExerciseFailed, check_repetition_penalty
from s2s_course.exercises.ch12 import reference_repetition_penalty
from tests.nbtools import chapter, run_solution


def failure(fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check_repetition_penalty(fn)
    return str(info.value)


def test_reference_by_hand():
    out = reference_repetition_penalty(torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0]]), torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, -3.0, 1.0]]
    two = reference_repetition_penalty(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.tensor([[0], [1]]), 4.0)
    assert two.tolist() == [[0.25, 1.0], [1.0, -4.0]]


def loop(logits, previous, penalty):
    out = logits.clone()
    for b in range(logits.size(0)):
        for token in set(previous[b].tolist()):
            x = logits[b, token]
            out[b, token] = x * penalty if x < 0 else x / penalty
    return out


def masked(logits, previous, penalty):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, previous, True)
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def test_accepts_correct_versions(capsys):
    for fn in (reference_repetition_penalty, loop, masked):
        assert check_repetition_penalty(fn)
    assert "✓ all" in capsys.readouterr().out


def test_the_chapter_solution_passes():
    solution = run_solution(chapter("12"), "ex-12-repetition-penalty")
    assert check_repetition_penalty(solution.repetition_penalty)


def _seen(logits, previous):
    return torch.zeros_like(logits, dtype=torch.bool).scatter(1, previous, True)


@pytest.mark.parametrize("wrong, words", [
    (lambda l, p, r: torch.where(_seen(l, p), l / r, l), "MORE likely"),
    (lambda l, p, r: torch.where(_seen(l, p), torch.where(l < 0, l / r, l * r), l), "swapped"),
    (lambda l, p, r: _per_occurrence(l, p, r), "once per occurrence"),
    (lambda l, p, r: torch.where(_seen(l, p).any(0, keepdim=True), torch.where(l < 0, l * r, l / r), l),
     "every row's history"),
    (lambda l, p, r: torch.cat([torch.where(l[:, :p.size(1)] < 0, l[:, :p.size(1)] * r, l[:, :p.size(1)] / r),
                                l[:, p.size(1):]], 1), "positions"),
    (lambda l, p, r: torch.where(_seen(l, p), l - r, l), "subtracted"),
])
def test_names_the_usual_mistakes(wrong, words):
    assert words in failure(wrong)


def _per_occurrence(logits, previous, penalty):
    out = logits.clone()
    for b in range(logits.size(0)):
        for token in previous[b].tolist():
            x = out[b, token]
            out[b, token] = x * penalty if x < 0 else x / penalty
    return out


def test_rejects_in_place_dtype_shape_and_unfinished():
    def in_place(logits, previous, penalty):
        score = logits.gather(1, previous)
        return logits.scatter_(1, previous, torch.where(score < 0, score * penalty, score / penalty))

    assert "modified in place" in failure(in_place)
    assert "dtype" in failure(lambda l, p, r: masked(l, p, r).float())
    assert "shape" in failure(lambda l, p, r: l.gather(1, p))
    assert "forget `return`" in failure(lambda l, p, r: None)

    def unfinished(logits, previous, penalty):
        raise NotImplementedError("replace this line with your code")

    assert "NotImplementedError" in failure(unfinished)


def test_empty_history_and_argument_order():
    def crashes_on_empty(logits, previous, penalty):
        if previous.size(1) == 0:
            raise IndexError("empty")
        return masked(logits, previous, penalty)

    assert "T = 0" in failure(crashes_on_empty)

    def swapped_arguments(previous, logits, penalty):         # wrong parameter order
        return masked(logits, previous, penalty)

    assert "failed" in failure(swapped_arguments)


# --- the blind spots of part 3: order of the history, id 0 as padding, dtype ------------------

def test_rejects_repeats_removed_only_when_adjacent():
    def adjacent_once(logits, previous, penalty):     # right for a sorted history only
        out = logits.clone()
        for b in range(logits.size(0)):
            last = None
            for token in previous[b].tolist():
                if token != last:
                    x = out[b, token]
                    out[b, token] = x * penalty if x < 0 else x / penalty
                last = token
        return out

    msg = failure(adjacent_once)
    assert "check 'common mistakes'" in msg and "only where they are adjacent" in msg, msg


def test_rejects_token_zero_taken_for_padding():
    def skips_zero(logits, previous, penalty):
        seen = _seen(logits, previous) & (torch.arange(logits.size(1)) != 0)
        return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)

    msg = failure(skips_zero)
    assert "check 'common mistakes'" in msg and "id 0 was skipped" in msg, msg


def test_rejects_new_logits_built_in_float32():
    def fills_new_tensor(logits, previous, penalty):  # torch.zeros(...) is float32 whatever the logits
        out = torch.zeros(logits.shape)
        out[:] = masked(logits, previous, penalty)
        return out

    msg = failure(fills_new_tensor)
    assert "check 'dtype'" in msg and "float64" in msg, msg
