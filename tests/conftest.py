"""Shared fixtures. ``torch_device`` is where the device tests (tests/test_on_device.py) run.

It is the CPU unless ``S2S_TEST_DEVICE`` names another device, e.g. ``S2S_TEST_DEVICE=cuda``
(``make gpu-check`` sets it). A device that is asked for but missing stops the run at once
instead of skipping: a GPU check that silently ran on the CPU would prove nothing.
"""
from __future__ import annotations

import os

import pytest
import torch


def _test_device() -> torch.device:
    return torch.device(os.environ.get("S2S_TEST_DEVICE", "").strip() or "cpu")


def pytest_configure(config: pytest.Config) -> None:
    device = _test_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"S2S_TEST_DEVICE={device} but CUDA is not available "
                                f"(torch {torch.__version__})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise pytest.UsageError(f"S2S_TEST_DEVICE={device} but MPS is not available")


def pytest_report_header(config: pytest.Config) -> str:
    return f"s2s_course device tests run on: {_test_device()} (S2S_TEST_DEVICE)"


@pytest.fixture(scope="session")
def torch_device() -> torch.device:
    """The device for tests that take one: ``$S2S_TEST_DEVICE``, default cpu."""
    return _test_device()
