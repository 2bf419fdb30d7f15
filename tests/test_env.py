import os
import random

import numpy as np
import pytest
import torch

import s2s_course
from s2s_course import env


def test_is_quick_reads_the_environment(monkeypatch):
    for value, expected in [("1", True), ("true", True), ("YES", True), ("0", False), ("", False), ("off", False)]:
        monkeypatch.setenv("S2S_QUICK", value)
        assert env.is_quick() is expected
    monkeypatch.delenv("S2S_QUICK")
    assert env.is_quick() is False


def test_is_quick_rejects_nonsense(monkeypatch):
    monkeypatch.setenv("S2S_QUICK", "maybe")
    with pytest.raises(ValueError, match="S2S_QUICK"):
        env.is_quick()


def test_pick(monkeypatch):
    monkeypatch.setenv("S2S_QUICK", "1")
    assert env.pick(full=20, quick=2) == 2
    monkeypatch.setenv("S2S_QUICK", "0")
    assert env.pick(full=20, quick=2) == 20


def test_get_device_default_and_override(monkeypatch):
    monkeypatch.delenv("S2S_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if env._mps_available() else "cpu")
    assert env.get_device().type == expected
    assert env.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("S2S_DEVICE", "cpu")
    assert env.get_device().type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_get_device_refuses_missing_cuda():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        env.get_device("cuda")


@pytest.mark.skipif(env._mps_available(), reason="needs a machine without MPS")
def test_get_device_refuses_missing_mps():
    with pytest.raises(RuntimeError, match="MPS is not available"):
        env.get_device("mps")


def test_seed_everything_repeats_all_generators():
    env.seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    env.seed_everything(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        env.seed_everything(bad)


def test_in_colab(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert env.in_colab() is False
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_2026")
    assert env.in_colab() is True


def test_setup_prints_device_and_mode(monkeypatch, capsys):
    monkeypatch.setenv("S2S_QUICK", "1")
    monkeypatch.setenv("S2S_DEVICE", "cpu")
    device = s2s_course.setup(seed=7)
    out = capsys.readouterr().out
    assert device == torch.device("cpu")
    assert "device=cpu" in out and "QUICK" in out and torch.__version__ in out and "seed=7" in out
    assert s2s_course.setup(verbose=False) == torch.device("cpu")
    assert capsys.readouterr().out == ""


def test_describe_has_the_run_facts(monkeypatch):
    monkeypatch.setenv("S2S_QUICK", "0")
    info = env.describe()
    assert info["quick"] is False and info["torch"] == torch.__version__
    assert {"device", "python", "colab", "threads"} <= set(info)
