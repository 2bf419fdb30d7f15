"""scripts/gpu_check.sh (make gpu-check) without CUDA, and the budget cap of train_multi30k.py.

Nothing here runs a notebook or trains a real model: the script must stop before its first
step, and train_multi30k's ``train_or_load`` is replaced by a stub.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from tests.nbtools import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run_without_cuda(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("S2S_GPU_CHECK_ALLOW_CPU", "S2S_DEVICE", "S2S_TEST_DEVICE")}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, OUT=str(tmp_path / "out"))
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_gpu_check_stops_at_once_with_one_clear_line_without_cuda(tmp_path):
    done = _run_without_cuda(tmp_path)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("gpu-check: CUDA is not available") and "--cpu-dry-run" in lines[0]
    assert done.stdout == ""
    assert not (tmp_path / "out").exists()  # no step ran, nothing was written


def test_gpu_check_rejects_unknown_arguments(tmp_path):
    done = _run_without_cuda(tmp_path, "--bogus")
    assert done.returncode == 2 and "unknown argument --bogus" in done.stderr


def _train_script():
    return load_file("scripts/train_multi30k.py")


@pytest.mark.parametrize("argv, env, expected", [
    (["--max-minutes", "1.5"], None, {"max_minutes": 1.5}),
    ([], "2", {"max_minutes": 2.0}),
    ([], None, {}),
])
def test_max_minutes_overrides_the_recipe_budget(monkeypatch, tmp_path, capsys, argv, env, expected):
    if env is None:
        monkeypatch.delenv("S2S_MAX_MINUTES", raising=False)
    else:
        monkeypatch.setenv("S2S_MAX_MINUTES", env)
    module = _train_script()
    calls = []

    def fake_train_or_load(name, **kwargs):
        calls.append((name, kwargs))
        config = {"max_minutes": kwargs.get("max_minutes", 27.0)}
        return SimpleNamespace(info={"recipe": name, "config": config, "epochs": 1})

    monkeypatch.setattr(module, "train_or_load", fake_train_or_load)
    report = tmp_path / "report.json"
    assert module.main([*argv, "--device", "cpu", "--json", str(report), "rnn"]) == 0
    (name, kwargs), = calls
    assert name == "rnn" and kwargs["device"] == "cpu"
    assert {k: v for k, v in kwargs.items() if k == "max_minutes"} == expected
    assert '"max_minutes"' in report.read_text() and "config" not in report.read_text()


@pytest.mark.parametrize("argv", [["--max-minutes", "0"], ["--n-test", "0"]])
def test_train_script_rejects_bad_budgets(argv):
    with pytest.raises(SystemExit):
        _train_script().main([*argv, "rnn"])
