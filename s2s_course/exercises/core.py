"""Exercise checkers: run a learner's function next to the course's reference and say what differs.

A chapter defines a checker from named cases and an ordered list of properties::

    def check_masked_softmax(fn):
        return check_function(fn, attention.masked_softmax, cases=[
            Case("basic", (scores, mask)),
            Case("batch of 1", (scores[:1], mask[:1])),
            Case("all-padding row", (scores, all_pad_mask)),
        ], checks=[expect_type(), expect_shape(), expect_close(), expect_masked_zero(), expect_grad()])

and the learner runs ``check_masked_softmax(my_masked_softmax)``. Each case is run through both
functions on fresh copies of the inputs (same random seed); the checks run in order and the first
one that fails raises ``ExerciseFailed`` saying which case, which property, what was expected and
what came out. An exception inside the learner's code is reported the same way, not as a crash.
"""
from __future__ import annotations

import copy
import inspect
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch


class ExerciseFailed(AssertionError):
    """A check did not pass; the message says what to fix."""


@dataclass
class Case:
    """One named input: ``fn(*args, **kwargs)``. Every call gets its own deep copy of the inputs."""

    name: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def fresh(self) -> tuple[tuple, dict[str, Any]]:
        return copy.deepcopy(tuple(self.args)), copy.deepcopy(dict(self.kwargs))


@dataclass
class Trial:
    """What a check sees for one case: both outputs, both functions, and the learner's inputs after the call."""

    case: Case
    got: Any
    expected: Any
    learner_fn: Callable
    reference_fn: Callable
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    """A named property. ``fn(trial)`` returns None when it holds, else a sentence saying what is wrong."""

    name: str
    fn: Callable[[Trial], str | None]
    hint: str | None = None  # extra advice printed when the check fails


@dataclass
class CheckResult:
    case: str
    check: str
    passed: bool
    message: str = ""
    error: BaseException | None = None  # the learner's exception, if that is what failed


# -----------------------------------------------------------------------------
# formatting helpers: messages a learner can act on

def _fmt(value: Any) -> str:
    """A short description of a value: tensors by shape and dtype (and their values when they are
    small enough to read), numbers to 4 digits."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return _fmt(value.item())
        described = f"tensor of shape {tuple(value.shape)}, {str(value.dtype).replace('torch.', '')}"
        if value.numel() <= 10:
            shown = value.detach().cpu().numpy()
            described += " = " + " ".join(np.array2string(shown, precision=4, separator=", ").split())
        return described
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, torch.nn.Module):
        return type(value).__name__
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _index(position: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(i)) for i in position) + "]"


def _arg_names(fn: Callable, case: Case) -> list[str]:
    """Names for the positional arguments of ``case``, taken from ``fn``'s signature when possible."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"arg{i}" for i in range(len(case.args))]


def _describe_inputs(fn: Callable, case: Case) -> str:
    named = list(zip(_arg_names(fn, case), case.args)) + list(case.kwargs.items())
    return ", ".join(f"{name} = {_fmt(value)}" for name, value in named) or "(no arguments)"


def _describe_exception(err: BaseException, fn: Callable) -> str:
    """``ValueError: ... (in my_fn, line 7: return x[5])``: the deepest frame of the learner's file."""
    frames = traceback.extract_tb(err.__traceback__)[1:]  # drop the checker's own frame
    filename = getattr(getattr(fn, "__code__", None), "co_filename", None)
    mine = [f for f in frames if f.filename == filename] or frames
    where = f"\n  in {mine[-1].name}, line {mine[-1].lineno}: {mine[-1].line}" if mine else ""
    return f"your function raised {type(err).__name__}: {err}{where}"


def _pick(value: Any, item: int | None) -> Any:
    return value if item is None else value[item]


def _named(name: str, item: int | None) -> str:
    return name if item is None else f"{name} of output[{item}]"


# -----------------------------------------------------------------------------
# the properties a checker can ask for

def expect_type(kind: type = torch.Tensor, item: int | None = None, hint: str | None = None) -> Check:
    """The output (or ``output[item]``) is an instance of ``kind``."""
    label = "a torch.Tensor" if kind is torch.Tensor else f"a {kind.__name__}"

    def fn(t: Trial) -> str | None:
        got = _pick(t.got, item)
        if isinstance(got, kind):
            return None
        extra = " (did you forget `return`?)" if got is None else ""
        return f"expected {label}, got {type(got).__name__}{extra}"

    return Check(_named("returns a tensor" if kind is torch.Tensor else f"returns {label}", item), fn, hint)


def expect_shape(item: int | None = None, hint: str | None = None) -> Check:
    """Same shape as the reference output."""
    def fn(t: Trial) -> str | None:
        got, expected = _pick(t.got, item), _pick(t.expected, item)
        want = tuple(expected.shape)
        if not hasattr(got, "shape"):
            return f"expected a tensor of shape {want}, got {type(got).__name__}"
        if tuple(got.shape) != want:
            return f"expected shape {want}, got {tuple(got.shape)}"
        return None

    return Check(_named("shape", item), fn, hint)


def expect_dtype(item: int | None = None, hint: str | None = None) -> Check:
    """Same dtype as the reference output (e.g. a mask must be bool, not float)."""
    def fn(t: Trial) -> str | None:
        got, expected = _pick(t.got, item), _pick(t.expected, item)
        if got.dtype != expected.dtype:
            return f"expected dtype {expected.dtype}, got {got.dtype}"
        return None

    return Check(_named("dtype", item), fn, hint)


def _tensor_difference(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> str | None:
    """None if close everywhere, else where they first differ and by how much at most."""
    if tuple(got.shape) != tuple(expected.shape):
        return f"cannot compare values: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    g = got.detach().cpu().double()
    e = expected.detach().cpu().double()
    close = torch.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
    if bool(close.all()):
        return None
    first = tuple((~close).nonzero()[0].tolist())
    diff = (g - e).abs().nan_to_num(nan=float("inf"))  # a NaN where a number was due counts as inf
    return (f"values differ: first mismatch at index {_index(first)}: expected {e[first].item():.4g}, "
            f"got {g[first].item():.4g}; max abs difference {diff.max().item():.4g} "
            f"(allowed: atol={atol:g}, rtol={rtol:g}); {int((~close).sum())} of {close.numel()} entries differ")


def expect_close(atol: float = 1e-5, rtol: float = 1e-4, item: int | None = None,
                 hint: str | None = None) -> Check:
    """Same values as the reference up to floating-point tolerance (``torch.isclose``)."""
    def fn(t: Trial) -> str | None:
        got, expected = _pick(t.got, item), _pick(t.expected, item)
        if not isinstance(got, torch.Tensor):
            return f"expected a tensor, got {type(got).__name__}"
        return _tensor_difference(got, torch.as_tensor(expected), atol, rtol)

    return Check(_named("values", item), fn, hint)


def expect_equal(item: int | None = None, hint: str | None = None) -> Check:
    """Exactly the reference output: tensors element by element, lists item by item, else ``==``."""
    def fn(t: Trial) -> str | None:
        got, expected = _pick(t.got, item), _pick(t.expected, item)
        if isinstance(expected, torch.Tensor):
            if not isinstance(got, torch.Tensor):
                return f"expected a tensor, got {type(got).__name__}"
            return _tensor_difference(got, expected, atol=0.0, rtol=0.0)
        if isinstance(expected, (list, tuple)) and isinstance(got, (list, tuple)):
            for i, (g, e) in enumerate(zip(got, expected)):
                if g != e:
                    return f"expected {_fmt(expected)}, got {_fmt(got)} (first difference at index {i})"
            if len(got) != len(expected):
                return f"expected {len(expected)} items, got {len(got)}: {_fmt(got)}"
            return None
        return None if got == expected else f"expected {_fmt(expected)}, got {_fmt(got)}"

    return Check(_named("values", item), fn, hint)


def expect_masked_zero(where: Callable[[Case], torch.Tensor] | None = None, item: int | None = None,
                       hint: str | None = None) -> Check:
    """Exactly 0 at masked positions: ``where(case)`` (bool, True = must be 0), by default
    wherever the reference output is exactly 0 (e.g. padding after a masked softmax)."""
    def fn(t: Trial) -> str | None:
        got, expected = _pick(t.got, item), _pick(t.expected, item)
        must_be_zero = where(t.case) if where is not None else expected == 0
        must_be_zero = must_be_zero.expand_as(got)
        wrong = must_be_zero & (got.detach() != 0)
        if not bool(wrong.any()):
            return None
        first = tuple(wrong.nonzero()[0].tolist())
        return (f"expected exactly 0 at masked position {_index(first)}, got {got[first].item():.4g} "
                f"({int(wrong.sum())} masked positions are not 0): padding must get no weight")

    return Check(_named("masking", item), fn, hint)


def _float_inputs(args: tuple, kwargs: dict[str, Any], names: list[str],
                  wrt: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """The floating-point tensor arguments to differentiate, by name, with ``requires_grad`` on."""
    named = dict(zip(names, args)) | kwargs
    chosen = {}
    for name, value in named.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and (wrt is None or name in wrt):
            chosen[name] = value.requires_grad_(True)
    return chosen


def expect_grad(wrt: Sequence[str] | None = None, compare: bool = True, atol: float = 1e-4,
                item: int | None = None, hint: str | None = None) -> Check:
    """Gradients flow from the output back to the float tensor inputs (``wrt``: their names,
    default all), and with ``compare=True`` equal the reference's gradients."""
    def grads(fn: Callable, case: Case, names: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        args, kwargs = case.fresh()
        inputs = _float_inputs(args, kwargs, names, wrt)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            out = _pick(fn(*args, **kwargs), item)
        return out, inputs

    def fn(t: Trial) -> str | None:
        names = _arg_names(t.reference_fn, t.case)
        ref_out, ref_inputs = grads(t.reference_fn, t.case, names)
        if not ref_inputs:
            raise ValueError(f"expect_grad: case {t.case.name!r} has no float tensor input named {wrt}")
        try:
            got_out, got_inputs = grads(t.learner_fn, t.case, names)
        except Exception as err:  # e.g. an in-place op on an input that requires grad
            return f"with inputs that require grad, {_describe_exception(err, t.learner_fn)}"
        if not got_out.requires_grad:
            return ("the output is not connected to the inputs by autograd: avoid .detach(), .item(), "
                    ".numpy(), torch.no_grad() and rebuilding tensors with torch.tensor(...)")
        weight = torch.randn(ref_out.shape, generator=torch.Generator().manual_seed(0))
        ref_out.backward(weight.to(ref_out.dtype))
        got_out.backward(weight.to(got_out.dtype))
        for name, ref_input in ref_inputs.items():
            got_grad = got_inputs[name].grad
            if got_grad is None:
                return f"no gradient reaches argument {name!r}"
            if compare and ref_input.grad is not None:
                problem = _tensor_difference(got_grad, ref_input.grad, atol=atol, rtol=1e-3)
                if problem:
                    return f"gradient with respect to {name!r} differs from the reference: {problem}"
        return None

    return Check(_named("gradient flows", item), fn, hint)


def expect_inputs_unchanged(hint: str | None = None) -> Check:
    """The learner's function leaves its tensor inputs as they were (no in-place ``masked_fill_``...)."""
    def fn(t: Trial) -> str | None:
        names = _arg_names(t.reference_fn, t.case)
        before = dict(zip(names, t.case.args)) | t.case.kwargs
        after = dict(zip(names, t.args)) | t.kwargs
        for name, value in before.items():
            if isinstance(value, torch.Tensor) and not torch.equal(value, after[name].detach()):
                return (f"argument {name!r} was modified in place; use out-of-place operations "
                        f"(masked_fill, not masked_fill_)")
        return None

    return Check("does not modify its inputs", fn, hint)


def _same_values(got: Any, want: Any, atol: float, rtol: float, nan_as: float | None) -> bool:
    """True when ``got`` is a tensor of ``want``'s shape with close values (NaN equal to NaN, or
    both read as ``nan_as`` when it is given)."""
    if not (isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor) and got.shape == want.shape):
        return False
    g, w = got.detach().cpu().double(), want.detach().cpu().double()
    if nan_as is not None:
        g, w = g.nan_to_num(nan=nan_as), w.nan_to_num(nan=nan_as)
    return bool(torch.allclose(g, w, atol=atol, rtol=rtol, equal_nan=True))


def expect_known_mistakes(mistakes: dict[str, Callable[..., Any]], atol: float = 1e-5, rtol: float = 1e-4,
                          nan_as: float | None = None, name: str = "common mistakes",
                          hint: str | None = None) -> Check:
    """Name a typical error instead of only saying that the values differ.

    ``mistakes`` maps a message to a function called like the reference (on fresh copies of the
    case's inputs, without autograd) that computes what that mistake returns; it may return None
    when the mistake cannot be told apart on this case (it is then skipped) and an exception
    counts as None too. The check fails with the first message whose output the learner's equals
    while the reference's differs. A tuple output is compared item by item: a mistake is named
    when one of the items that differ from the reference equals that item of the mistake's
    output. ``nan_as``: read NaN as this number on both sides (e.g. 0.0, when the learner may
    have zeroed the NaN a mistake produces on rows that another check already covers).
    """
    def fn(t: Trial) -> str | None:
        if isinstance(t.expected, tuple):
            if not isinstance(t.got, tuple) or len(t.got) != len(t.expected):
                return None  # the type check reports it
            got, expected = t.got, t.expected
        else:
            got, expected = (t.got,), (t.expected,)
        wrong_items = [i for i, (g, e) in enumerate(zip(got, expected))
                       if not _same_values(g, e, atol, rtol, None)]
        if not wrong_items:
            return None
        for message, mistake in mistakes.items():
            args, kwargs = t.case.fresh()
            try:
                with torch.no_grad():
                    wrong = mistake(*args, **kwargs)
            except Exception:
                continue  # the mistake does not apply to this case's shapes
            if wrong is None:
                continue
            wrong = wrong if isinstance(wrong, tuple) else (wrong,)
            if len(wrong) != len(got):
                continue
            for i in wrong_items:
                if (_same_values(got[i], wrong[i], atol, rtol, nan_as)
                        and not _same_values(wrong[i], expected[i], atol, rtol, nan_as)):
                    return message
        return None  # not a mistake we know: the "values" check reports the difference

    return Check(name, fn, hint)


def expect_zero_rows(rows: Callable[[Case], torch.Tensor | None],
                     explain: Callable[[tuple[int, ...], str], str], name: str = "rows with no key are zero",
                     item: int | None = None, hint: str | None = None) -> Check:
    """Exactly 0, and no NaN, wherever ``rows(case)`` is True: e.g. the output of a query that has no
    key it may attend to (a softmax over only -inf, or 0 / 0, gives NaN there).

    ``rows(case)`` returns a bool tensor that broadcasts to the output (or None: the case has no such
    row); ``explain(index, found)`` turns the first offending index of the output and what was found
    there (``"NaN"``, or ``"0.25 (not 0)"``: the largest absolute entry of that row, the last axis)
    into the message.
    """
    def fn(t: Trial) -> str | None:
        got, expected = _pick(t.got, item), _pick(t.expected, item)
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            return None  # the type and shape checks report it
        must_be_zero = rows(t.case)
        if must_be_zero is None:
            return None
        values = got.detach()
        bad = must_be_zero.expand_as(values) & (values.isnan() | (values != 0))
        if not bool(bad.any()):
            return None
        index = tuple(bad.nonzero()[0].tolist())
        row = values[index[:-1]] if values.dim() > 1 else values[index]  # a row, or a single entry
        found = "NaN" if bool(row.isnan().any()) else f"{row.abs().max().item():.4g} (not 0)"
        return explain(index, found)

    return Check(_named(name, item), fn, hint)


def default_checks() -> list[Check]:
    """Returns a tensor with the reference's shape, dtype and values."""
    return [expect_type(), expect_shape(), expect_dtype(), expect_close()]


# -----------------------------------------------------------------------------
# running the checks

def _call(fn: Callable, case: Case, seed: int = 0) -> tuple[Any, tuple, dict[str, Any]]:
    """``fn`` on a fresh copy of the case's inputs with a fixed seed (the notebook's RNG is untouched)."""
    args, kwargs = case.fresh()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn(*args, **kwargs), args, kwargs


def run_checks(learner_fn: Callable, reference_fn: Callable, cases: Sequence[Case],
               checks: Sequence[Check] | None = None) -> list[CheckResult]:
    """Every check on every case, in order, stopping at the first failure (then the last result)."""
    if not cases:
        raise ValueError("cases is empty: a checker needs at least one Case")
    checks = default_checks() if checks is None else list(checks)
    results: list[CheckResult] = []
    for case in cases:
        try:
            expected, _, _ = _call(reference_fn, case)
        except Exception as err:  # a bug in the exercise, not in the learner's code
            raise RuntimeError(f"the reference failed on case {case.name!r}: {err!r}") from err
        try:
            got, args, kwargs = _call(learner_fn, case)
        except Exception as err:
            results.append(CheckResult(case.name, "runs without error", False,
                                       _describe_exception(err, learner_fn), err))
            return results
        trial = Trial(case, got, expected, learner_fn, reference_fn, args, kwargs)
        for check in checks:
            try:
                problem = check.fn(trial)
            except Exception as err:
                problem = f"could not check it: {type(err).__name__}: {err}"
            if problem is not None and check.hint:
                problem += f"\n  hint: {check.hint}"
            results.append(CheckResult(case.name, check.name, problem is None, problem or ""))
            if problem is not None:
                return results
    return results


def check_function(learner_fn: Callable, reference_fn: Callable, cases: Sequence[Case],
                   checks: Sequence[Check] | None = None) -> bool:
    """Check ``learner_fn`` against ``reference_fn``: print a ✓ line and return True, or raise
    ``ExerciseFailed`` describing the first failed check (default checks: ``default_checks()``)."""
    if not callable(learner_fn):
        raise ExerciseFailed(f"expected a function to check, got {type(learner_fn).__name__}")
    results = run_checks(learner_fn, reference_fn, cases, checks)
    last = results[-1]
    if not last.passed:
        name = getattr(learner_fn, "__name__", "your function")
        case = next(c for c in cases if c.name == last.case)
        message = (f"✗ {name} failed on case {last.case!r}, check {last.check!r}\n"
                   f"  inputs: {_describe_inputs(reference_fn, case)}\n"
                   f"  problem: {last.message}")
        raise ExerciseFailed(message) from last.error
    print(f"✓ all {len(results)} checks passed (cases: {', '.join(c.name for c in cases)})")
    return True


def attempt(checker: Callable[[Callable], bool], learner_fn: Callable) -> None:
    """Run ``checker(learner_fn)`` and print its verdict instead of raising.

    Notebooks call this so that an unfinished exercise prints what to fix (and the chapter still
    runs top to bottom); call the checker directly to get an exception instead. A function that
    still raises ``NotImplementedError`` (the stub as the chapter ships it) has not been tried
    yet: that gets one neutral line, not a failure report. Any other outcome is the checker's.
    """
    try:
        checker(learner_fn)
    except ExerciseFailed as failure:
        if isinstance(failure.__cause__, NotImplementedError):
            name = getattr(learner_fn, "__name__", "your function")
            print(f"○ {name}: not attempted yet — write your function in the cell above, then run "
                  f"this cell again to check it")
            return
        print(f"{failure}\n(not there yet: fix the function above and run this cell again)")


__all__ = ["attempt", "ExerciseFailed", "Case", "Trial", "Check", "CheckResult", "run_checks", "check_function",
           "default_checks", "expect_type", "expect_shape", "expect_dtype", "expect_close",
           "expect_equal", "expect_masked_zero", "expect_grad", "expect_inputs_unchanged",
           "expect_known_mistakes", "expect_zero_rows"]
