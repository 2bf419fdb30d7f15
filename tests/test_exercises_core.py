import importlib
import pkgutil
import sys
import types

import pytest
import torch

import s2s_course.exercises as exercises
from s2s_course.exercises.core import (Case, Check, CheckResult, ExerciseFailed, check_function,
                                       default_checks, expect_close, expect_dtype, expect_equal,
                                       expect_grad, expect_inputs_unchanged, expect_known_mistakes,
                                       expect_masked_zero, expect_shape, expect_type, expect_zero_rows,
                                       run_checks)


# --- a small exercise: masked softmax ------------------------------------------------------------

def reference_masked_softmax(scores, mask):
    """Softmax over the last dim ignoring mask == False; all-masked rows give zeros."""
    scores = scores.masked_fill(~mask, float("-inf"))
    scores = scores.masked_fill(~mask.any(-1, keepdim=True), 0.0)  # avoid NaN on all-masked rows
    return scores.softmax(-1).masked_fill(~mask, 0.0)


def learner_correct(scores, mask):  # a different, correct implementation
    e = torch.exp(scores - scores.max(-1, keepdim=True).values) * mask
    return e / e.sum(-1, keepdim=True).clamp_min(1e-30)


torch.manual_seed(0)
SCORES = torch.randn(2, 4)
MASK = torch.tensor([[True, True, True, False], [True, True, True, True]])
CASES = [
    Case("basic", (SCORES, MASK)),
    Case("batch of 1", (SCORES[:1], MASK[:1])),
    Case("length-1 sequence", (SCORES[:, :1], torch.ones(2, 1, dtype=torch.bool))),
    Case("all-padding row", (SCORES, torch.tensor([[True, False, True, False], [False] * 4]))),
]
CHECKS = [expect_type(), expect_shape(), expect_dtype(), expect_close(), expect_masked_zero(),
          expect_inputs_unchanged(), expect_grad(wrt=["scores"])]


def check_masked_softmax(fn, checks=CHECKS):
    return check_function(fn, reference_masked_softmax, CASES, checks)


def failure(fn, checks=CHECKS):
    with pytest.raises(ExerciseFailed) as info:
        check_masked_softmax(fn, checks)
    return info.value, str(info.value)


def test_correct_function_passes_and_says_so(capsys):
    assert check_masked_softmax(learner_correct) is True
    out = capsys.readouterr().out
    assert out == ("✓ all 28 checks passed (cases: basic, batch of 1, length-1 sequence, "
                   "all-padding row)\n")


def test_exercise_failed_is_an_assertion_error():
    assert issubclass(ExerciseFailed, AssertionError)


def test_wrong_shape_is_reported_with_both_shapes():
    _, msg = failure(lambda scores, mask: learner_correct(scores, mask).T)
    assert "failed on case 'basic', check 'shape'" in msg
    assert "expected shape (2, 4), got (4, 2)" in msg
    assert "inputs: scores = tensor of shape (2, 4), float32 = [[" in msg
    assert "mask = tensor of shape (2, 4), bool" in msg
    assert "bool = [[ True, True, True, False], [ True, True, True, True]]" in msg  # small inputs show their values


def test_wrong_values_report_first_mismatch_and_max_difference():
    def no_mask(scores, mask):
        return scores.softmax(-1)

    _, msg = failure(no_mask)
    assert "failed on case 'basic', check 'values'" in msg
    assert "first mismatch at index [0, 0]" in msg
    expected = reference_masked_softmax(SCORES, MASK)
    got = SCORES.softmax(-1)
    assert f"expected {expected[0, 0].item():.4g}, got {got[0, 0].item():.4g}" in msg
    assert f"max abs difference {(expected - got).abs().max().item():.4g}" in msg
    assert "entries differ" in msg and "no_mask" in msg


def test_masking_is_reported_at_the_first_unmasked_padding_position():
    def leaky(scores, mask):
        return scores.masked_fill(~mask, -8.0).softmax(-1)

    _, msg = failure(leaky, checks=[expect_masked_zero(hint="mask before the softmax")])
    assert "check 'masking'" in msg and "expected exactly 0 at masked position [0, 3]" in msg
    assert "hint: mask before the softmax" in msg


def test_exception_in_learner_code_is_reported_not_a_crash():
    def buggy(scores, mask):
        return scores[:, 10]

    error, msg = failure(buggy)
    assert "failed on case 'basic', check 'runs without error'" in msg
    assert "your function raised IndexError" in msg
    assert "in buggy, line" in msg and "return scores[:, 10]" in msg
    assert isinstance(error.__cause__, IndexError)


def test_forgotten_return_and_wrong_type():
    _, msg = failure(lambda scores, mask: None)
    assert "check 'returns a tensor'" in msg and "got NoneType (did you forget `return`?)" in msg
    _, msg = failure(lambda scores, mask: reference_masked_softmax(scores, mask).tolist())
    assert "expected a torch.Tensor, got list" in msg


def test_wrong_dtype():
    _, msg = failure(lambda scores, mask: reference_masked_softmax(scores, mask).double())
    assert "check 'dtype'" in msg and "expected dtype torch.float32, got torch.float64" in msg


def test_edge_case_failures_name_the_case():
    def breaks_on_all_padding(scores, mask):
        return scores.masked_fill(~mask, float("-inf")).softmax(-1)  # NaN on an all-masked row

    _, msg = failure(breaks_on_all_padding)
    assert "case 'all-padding row', check 'values'" in msg and "first mismatch at index [1, 0]" in msg
    assert "got nan" in msg and "max abs difference inf" in msg


def test_detached_output_fails_the_gradient_check():
    def detached(scores, mask):
        return reference_masked_softmax(scores, mask).detach()

    _, msg = failure(detached)
    assert "check 'gradient flows'" in msg and "not connected to the inputs by autograd" in msg


def test_wrong_gradient_is_compared_to_the_reference():
    def wrong_grad(scores, mask):
        out = reference_masked_softmax(scores, mask)
        return out + 0.1 * (scores - scores.detach())  # same values, different gradient

    _, msg = failure(wrong_grad)
    assert "gradient with respect to 'scores' differs from the reference" in msg


def test_no_gradient_reaching_an_argument():
    def ignores_x(x, y):
        return y * 2 + x.detach()

    with pytest.raises(ExerciseFailed, match="no gradient reaches argument 'x'"):
        check_function(ignores_x, lambda x, y: x + y * 2, [Case("one", (torch.ones(2), torch.ones(2)))],
                       [expect_grad()])


def test_in_place_change_of_an_input_is_caught():
    def in_place(scores, mask):
        scores.masked_fill_(~mask, float("-inf"))
        return reference_masked_softmax(scores, mask)

    _, msg = failure(in_place)
    assert "check 'does not modify its inputs'" in msg and "argument 'scores' was modified in place" in msg
    _, msg = failure(in_place, checks=[expect_grad()])
    assert "check 'gradient flows'" in msg and "with inputs that require grad, your function raised RuntimeError" in msg
    assert "scores.masked_fill_(~mask" in msg


def test_same_seed_for_reference_and_learner_and_notebook_rng_untouched():
    def reference(x):
        return x + torch.randn(3)

    def learner(x):
        return torch.randn(3) + x

    before = torch.random.get_rng_state()
    assert check_function(learner, reference, [Case("noise", (torch.zeros(3),))])
    assert torch.equal(before, torch.random.get_rng_state())


def test_tuple_outputs_and_kwargs():
    def reference(x, scale=1.0):
        return x * scale, x.sum()

    def learner(x, scale=1.0):
        return x * scale, x.sum() + 1

    cases = [Case("kw", (torch.arange(3.0),), {"scale": 2.0})]
    checks = [expect_type(item=0), expect_shape(item=0), expect_close(item=0), expect_close(item=1)]
    with pytest.raises(ExerciseFailed, match=r"check 'values of output\[1\]'") as info:
        check_function(learner, reference, cases, checks)
    assert "scale = 2" in str(info.value)


def test_expect_equal_on_lists_and_scalars(capsys):
    cases = [Case("ids", ([3, 1, 2],))]
    assert check_function(lambda xs: sorted(xs), sorted, cases, [expect_equal()])
    with pytest.raises(ExerciseFailed, match=r"expected \[1, 2, 3\], got \[1, 3, 2\] \(first difference at index 1\)"):
        check_function(lambda xs: [1, 3, 2], sorted, cases, [expect_equal()])
    with pytest.raises(ExerciseFailed, match="expected 3 items, got 2"):
        check_function(lambda xs: [1, 2], sorted, cases, [expect_equal()])
    with pytest.raises(ExerciseFailed, match="expected 6, got 5"):
        check_function(lambda xs: 5, sum, cases, [expect_equal()])
    tensor_case = [Case("t", (torch.tensor([1, 2]),))]
    with pytest.raises(ExerciseFailed, match="expected a tensor, got list"):
        check_function(lambda t: [1, 2], lambda t: t * 1, tensor_case, [expect_equal()])
    with pytest.raises(ExerciseFailed, match=r"first mismatch at index \[1\]: expected 2, got 3"):
        check_function(lambda t: t + torch.tensor([0, 1]), lambda t: t * 1, tensor_case, [expect_equal()])


def test_expect_type_with_another_kind_and_shape_of_non_tensor():
    case = [Case("x", (torch.ones(2),))]
    with pytest.raises(ExerciseFailed, match="(?s)check 'returns a list'.*expected a list, got Tensor"):
        check_function(lambda x: x, lambda x: [1, 1], case, [expect_type(list)])
    with pytest.raises(ExerciseFailed, match=r"expected a tensor of shape \(2,\), got list"):
        check_function(lambda x: [1, 1], lambda x: x, case, [expect_shape()])
    with pytest.raises(ExerciseFailed, match="(?s)check 'values'.*expected a tensor, got list"):
        check_function(lambda x: [1, 1], lambda x: x, case, [expect_close()])
    with pytest.raises(ExerciseFailed, match=r"cannot compare values: expected shape \(2,\), got \(3,\)"):
        check_function(lambda x: torch.ones(3), lambda x: x, case, [expect_close()])


def test_masked_zero_with_explicit_positions():
    where = lambda case: case.args[1] == 0  # noqa: E731
    case = [Case("pad", (torch.ones(3), torch.tensor([1, 1, 0])))]
    assert check_function(lambda x, m: x * m, lambda x, m: x * m, case, [expect_masked_zero(where=where)])
    with pytest.raises(ExerciseFailed, match=r"masked position \[2\], got 1"):
        check_function(lambda x, m: x, lambda x, m: x * m, case, [expect_masked_zero(where=where)])


def test_a_check_that_cannot_run_is_reported():
    case = [Case("x", (torch.ones(2),))]
    with pytest.raises(ExerciseFailed, match="(?s)check 'dtype'.*could not check it: AttributeError"):
        check_function(lambda x: 3, lambda x: x, case, [expect_dtype()])


def test_checker_mistakes_are_not_blamed_on_the_learner():
    with pytest.raises(RuntimeError, match="the reference failed on case 'x'"):
        check_function(lambda x: x, lambda x: 1 / 0, [Case("x", (1,))])
    with pytest.raises(ValueError, match="cases is empty"):
        check_function(lambda x: x, lambda x: x, [])
    with pytest.raises(ExerciseFailed, match="expected a function to check, got int"):
        check_function(3, lambda x: x, [Case("x", (1,))])


def test_run_checks_returns_results_up_to_the_first_failure():
    results = run_checks(lambda x: x * 2, lambda x: x * 3, [Case("x", (torch.ones(2),))])
    assert [r.check for r in results] == ["returns a tensor", "shape", "dtype", "values"]
    assert [r.passed for r in results] == [True, True, True, False]
    assert isinstance(results[0], CheckResult) and results[-1].error is None
    assert [c.name for c in default_checks()] == ["returns a tensor", "shape", "dtype", "values"]


def test_custom_check_and_argument_names_for_builtins():
    positive = Check("positive", lambda t: None if bool((t.got > 0).all()) else "expected > 0")
    case = [Case("x", (torch.tensor([-1.0, 2.0]),))]
    with pytest.raises(ExerciseFailed, match="check 'positive'") as info:
        check_function(lambda x: x, torch.abs, case, [positive])
    assert "inputs: " in str(info.value)  # torch.abs has no Python signature: falls back to arg0/input
    no_args = [Case("none")]
    assert check_function(lambda: 1, lambda: 1, no_args, [expect_equal()])


def test_expect_grad_needs_a_float_input():
    case = [Case("ints", (torch.tensor([1, 2]),))]
    with pytest.raises(ExerciseFailed, match="could not check it: ValueError: expect_grad"):
        check_function(lambda x: x * 2, lambda x: x * 2, case, [expect_grad()])


# --- the package: core names and chapter auto-import --------------------------------------------

def test_package_exports_core_names():
    for name in ("Case", "Check", "ExerciseFailed", "check_function", "expect_close", "expect_grad",
                 "expect_masked_zero", "expect_shape", "expect_equal", "run_checks"):
        assert getattr(exercises, name) is getattr(sys.modules["s2s_course.exercises.core"], name)
        assert name in exercises.__all__


def test_chapter_modules_are_imported_and_their_checkers_reexported(monkeypatch):
    fake = types.ModuleType("s2s_course.exercises.ch99")
    fake.check_something = lambda fn: True
    fake.helper = lambda: None
    fake.check_function = check_function  # imported by the chapter: not re-exported twice
    monkeypatch.setitem(sys.modules, "s2s_course.exercises.ch99", fake)
    found = [pkgutil.ModuleInfo(None, "notes", False), pkgutil.ModuleInfo(None, "ch99", False),
             pkgutil.ModuleInfo(None, "ch1", False)]
    monkeypatch.setattr(pkgutil, "iter_modules", lambda path: iter(found))
    try:
        reloaded = importlib.reload(exercises)
        assert "ch99" in reloaded.CHAPTERS and "ch1" not in reloaded.CHAPTERS
        assert reloaded.check_something is fake.check_something
        assert "check_something" in reloaded.__all__ and reloaded.__all__.count("check_function") == 1
        assert not hasattr(reloaded, "helper")
    finally:
        monkeypatch.undo()
        exercises.__dict__.pop("check_something", None)  # reload keeps old globals
        importlib.reload(exercises)
    assert not hasattr(exercises, "check_something")


def test_inputs_are_described_briefly():
    layer = torch.nn.Linear(2, 2)
    case = Case("mixed", (layer, torch.tensor(0.5), list(range(100))), {"flag": True})
    with pytest.raises(ExerciseFailed) as info:
        check_function(lambda m, t, xs, flag: 0, lambda m, t, xs, flag: 1, [case], [expect_equal()])
    line = str(info.value).splitlines()[1]
    assert line.startswith("  inputs: m = Linear, t = 0.5, xs = [0, 1, 2,") and line.endswith("..., flag = True")


def test_attempt_prints_the_report_instead_of_raising(capsys):
    from s2s_course.exercises import attempt

    def checker(fn):
        return check_function(fn, lambda x: x * 2, cases=[Case("two", (torch.tensor([1.0, 2.0]),))])

    def unfinished(x):
        raise NotImplementedError("your code here")

    def wrong(x):
        return x * 3

    def half_done(x):
        raise ValueError("oops")

    assert attempt(checker, unfinished) is None
    out = capsys.readouterr().out
    assert out.startswith("○ unfinished: not attempted yet") and "✗" not in out and "Error" not in out
    attempt(checker, wrong)  # a wrong answer still gets the full report
    out = capsys.readouterr().out
    assert "✗ wrong failed on case 'two'" in out and "not there yet" in out
    attempt(checker, half_done)  # so does any other exception
    out = capsys.readouterr().out
    assert "ValueError: oops" in out and "not there yet" in out
    attempt(checker, lambda x: x + x)
    assert "✓ all" in capsys.readouterr().out


# --- shared checks for the chapters: known mistakes, rows that must be zero ----------------------

SOFTMAX_MISTAKES = {
    "softmax over the batch axis": lambda scores, mask: reference_masked_softmax(scores.T, mask.T).T,
    "padding got weight": lambda scores, mask: scores.softmax(-1),
    "never applies here": lambda scores, mask: None,                     # skipped
    "cannot run here": lambda scores, mask: scores @ torch.ones(7),        # raises: skipped
    "the reference itself": reference_masked_softmax,                     # never blamed
}
KNOWN = [expect_type(), expect_shape(), expect_known_mistakes(SOFTMAX_MISTAKES), expect_close()]


def test_known_mistakes_are_named_and_unknown_ones_fall_through():
    _, msg = failure(lambda scores, mask: scores.softmax(-1), KNOWN)
    assert "check 'common mistakes'" in msg and "problem: padding got weight" in msg, msg
    _, msg = failure(lambda scores, mask: reference_masked_softmax(scores.T, mask.T).T, KNOWN)
    assert "softmax over the batch axis" in msg, msg
    _, msg = failure(lambda scores, mask: learner_correct(scores, mask) * 2, KNOWN)
    assert "check 'values'" in msg, msg
    assert check_masked_softmax(learner_correct, KNOWN)


def test_known_mistakes_compare_tuples_item_by_item_and_read_nan_as_told():
    def reference(x):
        return x * 2, x.exp()

    mistakes = {"forgot the exp": lambda x: (x * 2, x), "doubled the wrong thing": lambda x: (x, x.exp())}
    cases = [Case("x", (torch.tensor([0.5, 1.0]),))]
    with pytest.raises(ExerciseFailed, match="forgot the exp"):
        check_function(lambda x: (x * 2, x), reference, cases, [expect_known_mistakes(mistakes)])
    with pytest.raises(ExerciseFailed, match="doubled the wrong thing"):
        check_function(lambda x: (x, x.exp()), reference, cases, [expect_known_mistakes(mistakes)])
    assert check_function(lambda x: (x * 3, 3), reference, cases, [expect_known_mistakes(mistakes)])  # no match
    assert check_function(lambda x: 3, reference, cases, [expect_known_mistakes(mistakes)])        # not a tuple

    nan_mistake = {"divided by zero": lambda x: x / torch.tensor([0.0, 1.0]) * 0}   # [nan, 0]
    zeroed = lambda x: torch.zeros(2)                                               # noqa: E731
    assert check_function(zeroed, torch.exp, cases, [expect_known_mistakes(nan_mistake)])
    with pytest.raises(ExerciseFailed, match="divided by zero"):
        check_function(zeroed, torch.exp, cases, [expect_known_mistakes(nan_mistake, nan_as=0.0)])


def _all_padding_rows(case):
    scores, mask = case.args
    return ~mask.any(-1, keepdim=True)                                     # (B, 1)


def _explain(index, found):
    return f"row {index[0]} has no real position but got {found}"


ZERO_ROWS = [expect_type(), expect_shape(), expect_zero_rows(_all_padding_rows, _explain, "empty rows are zero"),
             expect_close()]


def test_zero_rows_report_nan_and_nonzero_values():
    def nan_rows(scores, mask):                                            # softmax over only -inf
        return scores.masked_fill(~mask, float("-inf")).softmax(-1)

    _, msg = failure(nan_rows, ZERO_ROWS)
    assert "failed on case 'all-padding row', check 'empty rows are zero'" in msg, msg
    assert "problem: row 1 has no real position but got NaN" in msg, msg

    def uniform_rows(scores, mask):                                        # -1e9 instead of -inf
        return scores.masked_fill(~mask, -1e9).softmax(-1)

    _, msg = failure(lambda s, m: torch.where(m.any(-1, keepdim=True), learner_correct(s, m), uniform_rows(s, m)),
                     ZERO_ROWS)
    assert "row 1 has no real position but got 0.25 (not 0)" in msg, msg
    assert check_masked_softmax(learner_correct, ZERO_ROWS)


def test_zero_rows_on_an_item_and_cases_without_such_rows():
    rows = lambda case: None if case.name == "skip" else torch.tensor([True, False])   # noqa: E731
    check = expect_zero_rows(rows, lambda i, found: f"entry {i[0]}: {found}", item=1)
    assert check.name == "rows with no key are zero of output[1]"
    reference = lambda x: (x, x * torch.tensor([0.0, 1.0]))                             # noqa: E731
    x = torch.tensor([2.0, 3.0])
    assert check_function(lambda x: (x, x), reference, [Case("skip", (x,))], [check])
    with pytest.raises(ExerciseFailed, match=r"entry 0: 2 \(not 0\)"):
        check_function(lambda x: (x, x), reference, [Case("x", (x,))], [check])
