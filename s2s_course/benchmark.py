"""Measuring instead of asserting: wall time of a call, and a fitted scaling exponent.

    seconds = time_call(lambda: layer(x), repeat=5)
    slope = loglog_slope(ns, times)        # ~2 for attention in n, ~1 for an RNN

Times are medians of ``repeat`` runs after ``warmup`` runs (the first calls pay for allocation
and kernel selection). On CUDA the device is synchronised before the clock is read.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Sequence

import torch


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], repeat: int = 5, warmup: int = 1,
              device: torch.device | str | None = None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` runs, after ``warmup`` runs."""
    if repeat < 1 or warmup < 0:
        raise ValueError(f"repeat must be >= 1 and warmup >= 0, got {repeat}, {warmup}")
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x: y ~ x^slope."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"xs and ys need the same length >= 2, got {len(xs)} and {len(ys)}")
    if min(xs) <= 0 or min(ys) <= 0:
        raise ValueError("xs and ys must be positive for a log-log fit")
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


__all__ = ["time_call", "loglog_slope"]
