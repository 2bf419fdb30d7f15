"""Checkers for the exercises of every chapter: ``from s2s_course.exercises import check_masked_softmax``.

The framework lives in ``core``; each chapter's checkers live in a module ``chNN`` (``ch01``, ``ch02``,
...). Every such module is imported here and its ``check_*`` functions are re-exported, so adding
``exercises/ch07.py`` is all a chapter author has to do.
"""
import importlib
import pkgutil
import re

from s2s_course.exercises.core import (Case, attempt, Check, CheckResult, ExerciseFailed, Trial, check_function,
                                       default_checks, expect_close, expect_dtype, expect_equal,
                                       expect_grad, expect_inputs_unchanged, expect_masked_zero,
                                       expect_shape, expect_type, run_checks)

__all__ = ["attempt", "Case", "Check", "CheckResult", "ExerciseFailed", "Trial", "check_function", "default_checks",
           "expect_close", "expect_dtype", "expect_equal", "expect_grad", "expect_inputs_unchanged",
           "expect_masked_zero", "expect_shape", "expect_type", "run_checks"]

CHAPTERS: list[str] = []  # the chapter modules found, e.g. ["ch01", "ch04"]

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if re.fullmatch(r"ch\d\d", _info.name):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        CHAPTERS.append(_info.name)
        for _name in dir(_module):
            if _name.startswith("check_") and _name != "check_function":
                globals()[_name] = getattr(_module, _name)
                __all__.append(_name)
