"""A pytest plugin for nbval runs: keep each executed notebook and a pass/fail record of it.

    PYTHONPATH=scripts pytest --nbval-lax -p nbval_record --nbval-record=DIR chapters/07_*.ipynb

nbval executes a notebook cell by cell but keeps nothing. With this plugin every notebook it
runs is written to ``DIR/<name>.ipynb`` with the outputs of this run (after every cell, so a
notebook that fails or times out is kept up to where it got), and ``DIR/<name>.json`` records
``{"notebook", "passed", "cells", "failed_cells", "first_failure", "seconds"}``. Works with
pytest-xdist (``--dist loadfile`` keeps a notebook on one worker). Used by scripts/gpu_check.sh.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--nbval-record", metavar="DIR", default=None,
                     help="write each executed notebook and its pass/fail record into DIR")


_records: dict[str, dict] = {}


def _is_cell(item: pytest.Item) -> bool:
    return hasattr(item, "cell") and hasattr(item, "test_outputs") and hasattr(item.parent, "nb")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    folder = item.config.getoption("nbval_record")
    if not folder or not _is_cell(item):
        return
    report = outcome.get_result()
    path = Path(str(item.parent.fspath))
    record = _records.setdefault(str(path), {
        "notebook": str(path), "passed": True, "cells": 0, "failed_cells": 0,
        "first_failure": None, "seconds": 0.0, "_start": call.start})  # incl. kernel start
    if report.when == "call":
        record["cells"] += 1
        if item.test_outputs is not None:  # what this run printed and displayed
            item.cell.outputs = [nbformat.from_dict(dict(out)) for out in item.test_outputs]
            item.cell.execution_count = record["cells"]
    if report.failed:
        record["passed"] = False
        record["failed_cells"] += 1
        if record["first_failure"] is None:
            message = re.sub(r"\x1b\[[0-9;]*m", "", report.longreprtext).strip().splitlines()
            record["first_failure"] = f"{item.name}: {message[-1] if message else 'failed'}"[:500]
    record["seconds"] = round(call.stop - record["_start"], 1)
    _write(Path(folder), path, item.parent.nb, record)


def _write(folder: Path, path: Path, nb: nbformat.NotebookNode, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / path.name, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    public = {k: v for k, v in record.items() if not k.startswith("_")}
    (folder / f"{path.stem}.json").write_text(json.dumps(public, indent=2) + "\n")
