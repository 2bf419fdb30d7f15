"""Measuring instead of asserting: wall time of a call, and a fitted scaling exponent.

    seconds = time_call(lambda: layer(x), repeat=5)
    slope = loglog_slope(ns, times)        # ~2 for attention in n, ~1 for an RNN
    nbytes = peak_memory(lambda: layer(x)) # the most tensor memory the call held at once
    count_ops(lambda: gru(x), MATMULS)     # {"mm": .., "addmm": .., "bmm": ..}: matrix products

Times are medians of ``repeat`` runs after ``warmup`` runs (the first calls pay for allocation
and kernel selection). On CUDA the device is synchronised before the clock is read.
"""
from __future__ import annotations

import math
import statistics
import time
import weakref
from collections import Counter
from typing import Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], repeat: int = 5, warmup: int = 1,
              device: torch.device | str | None = None, statistic: str = "median") -> float:
    """Median (or, with ``statistic="min"``, fastest) wall-clock seconds of ``fn()`` over
    ``repeat`` runs, after ``warmup`` runs. The minimum is the better estimate of the cost itself
    when other programs share the machine: they can only ever add time."""
    if repeat < 1 or warmup < 0:
        raise ValueError(f"repeat must be >= 1 and warmup >= 0, got {repeat}, {warmup}")
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic must be 'median' or 'min', got {statistic!r}")
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) if statistic == "median" else min(times)


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x: y ~ x^slope."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"xs and ys need the same length >= 2, got {len(xs)} and {len(ys)}")
    if min(xs) <= 0 or min(ys) <= 0:
        raise ValueError("xs and ys must be positive for a log-log fit")
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


# --------------------------------------------------------------------------------------------
# What a call allocates and which operations it runs, seen from PyTorch's dispatcher
# --------------------------------------------------------------------------------------------

class _TensorMemoryTracker(TorchDispatchMode):
    """Adds up the bytes of every storage an operation creates while the mode is on, and takes
    them off again when the last tensor seen on that storage is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}   # storage address -> [bytes, tensors alive]
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and not t.is_meta}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.is_meta:
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if key in self.live:                   # a view of (or in-place op on) a storage we count
                self.live[key][1] += 1
            elif key in inputs or nbytes == 0:     # a view of memory that existed before the call
                continue
            else:                                  # a new allocation
                self.live[key] = [nbytes, 1]
                self.current += nbytes
                self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._release, key)
        return out


def peak_memory(fn: Callable[[], object], device: torch.device | str | None = None) -> int:
    """Peak bytes of tensor memory that ``fn()`` held at once, beyond what existed before the call.

    On CUDA this is the caching allocator's own peak (``torch.cuda.max_memory_allocated``). On
    other devices every tensor that a PyTorch operation creates is counted from its creation to
    the death of the last tensor seen on its storage (a ``TorchDispatchMode``): that is the memory
    the computation needs for its tensors. It is *not* the process's resident memory (allocator
    caches, Python objects and libraries are not included), and scratch space that a fused
    kernel allocates internally, without returning it as a tensor, is invisible to it.
    """
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    tracker = _TensorMemoryTracker()
    with tracker:
        result = fn()
    del result
    return tracker.peak


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object], names: Sequence[str] | None = None) -> dict[str, int]:
    """How often ``fn()`` calls each ATen operation (e.g. ``mm``, ``addmm``, ``bmm``), as the
    dispatcher sees them: composite operations such as ``gru`` appear as the operations they
    are made of. ``names`` keeps only those (with a count of 0 for the ones never called)."""
    counter = _OpCounter()
    with counter:
        fn()
    if names is None:
        return dict(counter.counts)
    return {name: counter.counts.get(name, 0) for name in names}


MATMULS = ("mm", "addmm", "bmm")  # the matrix products an nn.Linear, a matmul or a GRU cell run


__all__ = ["time_call", "loglog_slope", "peak_memory", "count_ops", "MATMULS"]
