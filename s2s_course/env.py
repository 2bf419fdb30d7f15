"""Where and how a chapter runs: device, seeds, quick mode, Colab.

Every chapter starts with ``s2s_course.setup()``, so the same notebook runs unchanged on a
laptop CPU, an Apple GPU (mps), Colab's CUDA GPU, and CI (quick mode).
"""
from __future__ import annotations

import os
import platform
import random
import sys
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def is_quick() -> bool:
    """True when ``S2S_QUICK`` asks for the small, one-minute version of a chapter."""
    value = os.environ.get("S2S_QUICK", "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"S2S_QUICK must be one of 1/0/true/false/yes/no, got {value!r}")


def pick(full: T, quick: T) -> T:
    """Return ``quick`` in quick mode and ``full`` otherwise (e.g. ``epochs = pick(20, 2)``)."""
    return quick if is_quick() else full


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: cuda, then mps, then cpu.

    ``prefer`` (or the ``S2S_DEVICE`` environment variable) forces one, e.g. ``"cpu"``.
    """
    choice = prefer if prefer is not None else os.environ.get("S2S_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} was asked for, but CUDA is not available here")
        if device.type == "mps" and not _mps_available():
            raise RuntimeError(f"device {choice!r} was asked for, but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int = 0) -> int:
    """Seed Python, NumPy and PyTorch (all devices) so a run can be repeated."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def describe() -> dict[str, str | bool]:
    """What this run is: device, mode and versions (also stored in notebook metadata)."""
    device = get_device()
    info: dict[str, str | bool] = {
        "device": device.type,
        "quick": is_quick(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "colab": in_colab(),
        "threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def setup(seed: int = 0, verbose: bool = True) -> torch.device:
    """The first call of every chapter: seed, pick the device, print where we run."""
    seed_everything(seed)
    device = get_device()
    if verbose:
        info = describe()
        mode = "QUICK (S2S_QUICK=1: small data, few epochs)" if info["quick"] else "full"
        extra = f" ({info['gpu']})" if "gpu" in info else ""
        print(f"s2s_course: device={device.type}{extra} | mode={mode} | "
              f"torch {info['torch']} | python {info['python']} | seed={seed}")
    return device
