"""Helpers for tests that read the chapters: find an exercise's solution code and run it."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"


def load_file(path: str | Path, name: str | None = None) -> ModuleType:
    """Import a script that is not in a package (``scripts/...``, ``_ext/...``) from its path,
    relative to the repository root, as a fresh module registered under ``name`` (default: the
    file's stem; dataclasses look their module up in ``sys.modules``)."""
    path = ROOT / path
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def chapter(prefix: str) -> Path:
    """The notebook whose file name starts with ``prefix`` (e.g. ``"02"``)."""
    (path,) = sorted(CHAPTERS.glob(f"{prefix}_*.ipynb"))
    return path


def markdown(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def solution_code(path: Path, label: str) -> str:
    """The ```python blocks inside the ``{solution} <label>`` directive of a chapter."""
    md = markdown(path)
    match = re.search(r"^(:{3,})\{solution\} " + re.escape(label) + r"\s*\n(.*?)^\1\s*$", md, flags=re.M | re.S)
    if match is None:
        raise LookupError(f"{path.name}: no solution for exercise {label!r}")
    blocks = re.findall(r"```python\n(.*?)```", match.group(2), flags=re.S)
    if not blocks:
        raise LookupError(f"{path.name}: the solution of {label!r} has no ```python block")
    return "\n".join(blocks)


def run_solution(path: Path, label: str) -> SimpleNamespace:
    """Execute a solution's code and return the names it defines."""
    namespace: dict = {}
    exec(compile(solution_code(path, label), f"<{path.name}:{label}>", "exec"), namespace)
    return SimpleNamespace(**{k: v for k, v in namespace.items() if not k.startswith("__")})
