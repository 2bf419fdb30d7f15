"""Book and repository checks: the parts of the project stay in step with each other."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.nbtools import load_file

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
REPO_URL = CONFIG["repository"]["url"]
SETUP_CELL = f'''# Setup: on Colab, install the course package; everywhere, seed and pick the device.
import sys
if "google.colab" in sys.modules:
    %pip install -q "s2s-course @ git+{REPO_URL}@main"
import s2s_course
device = s2s_course.setup()'''


def toc_files() -> list[str]:
    files = [TOC["root"]]
    for part in TOC.get("parts", []):
        for chapter in part.get("chapters", []):
            files.append(chapter["file"])
            files.extend(s["file"] for s in chapter.get("sections", []))
    return files


def chapter_paths() -> list[Path]:
    return sorted((ROOT / "chapters").glob("*.ipynb"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _requirement_names(lines: list[str]) -> list[str]:
    return sorted(re.split(r"[<>=!~ @\[]", line.strip(), maxsplit=1)[0].lower() for line in lines)


# --- layout and configuration ---------------------------------------------------------------

def test_top_level_layout():
    for name in ["book", "chapters", "s2s_course", "_config.yml", "_toc.yml", "tests", "environment.yml",
                 "README.md", "pyproject.toml", "Makefile", ".ci/run", "LICENSE"]:
        assert (ROOT / name).exists(), f"missing top-level {name}"


def test_config_is_jupyter_book_1():
    assert CONFIG["only_build_toc_files"] is True
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    assert CONFIG["repository"]["branch"] == "main"
    assert "sphinx_exercise" in CONFIG["sphinx"]["extra_extensions"]
    assert CONFIG["bibtex_bibfiles"] == ["book/references.bib"]
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


def test_toc_lists_only_existing_files_and_every_chapter():
    files = toc_files()
    for f in files:
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f"_toc.yml lists missing {f}"
    listed = {f for f in files if f.startswith("chapters/")}
    on_disk = {f"chapters/{p.stem}" for p in chapter_paths()}
    assert listed == on_disk, f"chapters not in _toc.yml: {on_disk - listed}; listed but absent: {listed - on_disk}"


def test_chapters_are_numbered_in_order():
    numbers = [int(p.name[:2]) for p in chapter_paths()]
    assert numbers == list(range(1, len(numbers) + 1)), numbers


def test_environment_yml_matches_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["book"] + \
        project["optional-dependencies"]["test"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = [p for p in pip_section if not p.startswith("-e")]
    assert sorted(have) == sorted(wanted), "environment.yml's pip section differs from pyproject.toml"
    assert "-e ." in pip_section


def test_lock_pins_everything_pyproject_asks_for():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = [ln for ln in (ROOT / "requirements/lock.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert all("==" in ln for ln in lock), "every line of the lock file pins a version"
    pinned = set(_requirement_names(lock))
    wanted = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    for name in _requirement_names(wanted):
        assert name.replace("_", "-") in {p.replace("_", "-") for p in pinned}, f"{name} is not pinned"
    assert "torch==2.13.0" in lock
    assert not any(ln.lower().startswith("torchtext") for ln in lock)


def test_every_repository_link_uses_the_configured_url():
    texts = [ROOT / "README.md", *(ROOT / "book").glob("*.md"), ROOT / "pyproject.toml", *chapter_paths()]
    for path in texts:
        for url in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", path.read_text(encoding="utf-8")):
            if "s2s-course" in url:
                assert url.rstrip(".") == REPO_URL, f"{path.name}: {url} is not {REPO_URL}"
    import s2s_course

    assert s2s_course.REPO_URL == REPO_URL


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make book" in readme
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_no_corpus_files_are_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    bad = [p for p in tracked if re.search(r"(^|/)(train|val|test_2016_flickr)\.(de|en)(\.gz)?$|(^|/)kor\.txt$", p)]
    assert not bad, f"corpus copies must be downloaded, not committed: {bad}"


# --- bibliography ----------------------------------------------------------------------------

BIB_KEYS = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "book/references.bib").read_text()))


def _cited_keys(text: str) -> set[str]:
    keys = set()
    for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
        keys.update(k.strip() for k in group.split(","))
    return keys


def test_every_citation_is_in_references_bib():
    for path in [*(ROOT / "book").glob("*.md"), *chapter_paths()]:
        missing = _cited_keys(path.read_text(encoding="utf-8")) - BIB_KEYS
        assert not missing, f"{path.name} cites keys not in references.bib: {missing}"


# --- chapters --------------------------------------------------------------------------------

@pytest.fixture(params=chapter_paths(), ids=lambda p: p.stem)
def chapter(request) -> tuple[Path, dict]:
    return request.param, load(request.param)


def test_first_code_cell_is_the_setup_cell(chapter):
    path, nb = chapter
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert cell_source(first).strip() == SETUP_CELL, f"{path.name}: first code cell differs from the setup cell"


def test_chapter_follows_the_chapter_shape(chapter):
    path, nb = chapter
    md = "\n".join(cell_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    headings = [h.strip().lower() for h in re.findall(r"^#{1,3} (.+)$", md, flags=re.M)]
    for wanted in ["what you will learn", "intuition", "math", "code", "experiment", "exercises",
                   "check your understanding", "summary", "references"]:
        assert any(wanted in h for h in headings), f"{path.name}: no heading containing {wanted!r}"
    exercises = re.findall(r"^:{3,}\{exercise\}", md, flags=re.M)
    solutions = re.findall(r"^:{3,}\{solution\}[^\n]*\n(?::[^\n]*\n)*", md, flags=re.M)
    assert len(exercises) >= 3, f"{path.name}: {len(exercises)} exercises, want >= 3"
    assert len(solutions) >= len(exercises), f"{path.name}: every exercise needs a solution"
    assert all(":class: dropdown" in s for s in solutions), f"{path.name}: solutions must be hidden (dropdown)"
    code = "\n".join(cell_source(c) for c in nb["cells"] if c["cell_type"] == "code")
    assert re.search(r"check_\w+\(|attempt\(check_\w+", code), f"{path.name}: no auto-checked coding exercise"
    assert "show_source(" in code, f"{path.name}: shows no package code"
    references = md.split("## References")[-1] if "## References" in md else ""
    assert _cited_keys(references), f"{path.name}: its References section cites nothing from references.bib"
    assert "torchtext" not in code


def test_chapter_is_committed_executed_with_run_metadata(chapter):
    path, nb = chapter
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and cell_source(c).strip()]
    counts = [c.get("execution_count") for c in code]
    assert None not in counts, f"{path.name}: unexecuted code cells"
    assert counts == list(range(counts[0], counts[0] + len(counts))), f"{path.name}: not a clean top-to-bottom run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: committed error outputs"
    run = nb["metadata"].get("s2s_course_run")
    assert run, f"{path.name}: no s2s_course_run metadata (use `make execute`)"
    assert {"mode", "quick", "device", "torch", "seconds"} <= set(run)
    assert path.stat().st_size < 3_000_000, f"{path.name}: outputs too heavy"


def test_exercise_stubs_read_as_not_attempted(chapter):
    """A shipped stub (``raise NotImplementedError`` checked by ``attempt``) shows a neutral line on
    the website, not a red failure report."""
    path, nb = chapter
    stubs = [c for c in nb["cells"] if c["cell_type"] == "code" and "attempt(" in cell_source(c)
             and "raise NotImplementedError" in cell_source(c)]
    assert stubs, f"{path.name}: no auto-checked exercise stub"
    for c in stubs:
        text = "".join("".join(o.get("text", "")) for o in c.get("outputs", []) if o.get("output_type") == "stream")
        assert "not attempted yet" in text and "✗" not in text, \
            f"{path.name}: stub cell {cell_source(c)[:60]!r} prints {text[:120]!r}"


def test_chapter_links_glossary_terms(chapter):
    """Chapters link the English–Korean glossary with {term}, and every link names a real entry."""
    path, nb = chapter
    md = "\n".join(cell_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    entries = {term.lower() for term in load_file("scripts/collect_cyu.py").glossary()}
    links = re.findall(r"\{term\}`([^`]*)`", md)
    assert len(links) >= 5, f"{path.name}: only {len(links)} glossary links"
    for link in links:
        target = (re.search(r"<([^>]*)>$", link) or re.match(r"(.*)", link)).group(1).strip().lower()
        assert target in entries, f"{path.name}: {{term}}`{link}` names no glossary entry"


def test_widget_outputs_have_saved_state(chapter):
    path, nb = chapter
    views = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    if views:
        state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        assert state.get("state"), f"{path.name}: widget outputs without saved widget state"
        for o in views:
            assert "text/plain" in o["data"] or "image/png" in o["data"], f"{path.name}: widget without fallback"


def test_python_version_supported():
    assert sys.version_info >= (3, 10)


def _resolve(dotted: str):
    """Import ``s2s_course.a.b.Name.attr`` by trying the longest importable module prefix."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_shown_package_source_is_the_current_source(chapter):
    """A chapter shows package code with show_source; its committed output must still be that
    code (same text, same line), or the chapter needs re-executing (`make execute`)."""
    from s2s_course.viz import show_source

    path, nb = chapter
    shown = 0
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            match = re.match(r"# (s2s_course\.[\w.]+)  \(", text)
            if match:
                shown += 1
                current = repr(show_source(_resolve(match.group(1))))
                assert text.rstrip("\n") == current.rstrip("\n"), f"{path.name}: the shown source of {match.group(1)} is stale; re-execute"
    assert shown, f"{path.name}: shows no package source"
