"""s2s_book: small Sphinx additions for the course website (loaded from _config.yml).

- Under each chapter's title, one line saying how long the chapter takes to run, read from the
  notebook's ``metadata.s2s_course_run`` (written by ``make execute``), so no notebook has to be
  edited or re-executed to show it.
- ``static/s2s-widgets.js`` for pages with widgets (see that file).
- Each inline script once per page: Sphinx 7.4 adds a body-only script that an extension
  registers after the builder starts (sphinx-thebe's config, sphinx-togglebutton's selector) a
  second time before writing (as "" where it first had None), and the second
  ``const THEBE_JS_URL`` is a SyntaxError in the browser.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

__version__ = "0.1.0"


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    return f"about {minutes} min"


def run_facts(run: dict[str, Any], note: str | None = None) -> str | None:
    """The one-line summary of a chapter's recorded run, or None when there is nothing to say.

    ``note`` (the notebook's ``s2s_course_runtime_note`` metadata) adds what the recorded time
    leaves out, e.g. that a trained model was loaded from the cache."""
    seconds = run.get("seconds")
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return None
    device = str(run.get("device", "cpu")).lower()
    where = {"cpu": "a laptop CPU", "cuda": "a GPU", "mps": "an Apple GPU"}.get(device, device)
    threads = run.get("torch_threads")
    details = []
    mode = run.get("mode")
    if mode:
        details.append(f"{mode} mode")
    if device == "cpu" and isinstance(threads, int):
        details.append(f"{threads} torch thread{'s' if threads != 1 else ''}")
    text = f"Runs in {_minutes(float(seconds))} on {where}"
    if details:
        text += f" ({', '.join(details)})"
    if mode == "quick":
        text += "; the full run (without S2S_QUICK=1) takes longer"
    if note:
        text += f"; {note.strip().rstrip('.')}"
    return text + "."


def _notebook_run(app: Sphinx, pagename: str) -> tuple[dict[str, Any], str | None] | None:
    """The chapter's ``s2s_course_run`` record and its optional ``s2s_course_runtime_note``."""
    path = Path(app.srcdir) / f"{pagename}.ipynb"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError):
        return None
    run, note = meta.get("s2s_course_run"), meta.get("s2s_course_runtime_note")
    return (run, note if isinstance(note, str) else None) if isinstance(run, dict) else None


_FIRST_H1 = re.compile(r"(<h1[^>]*>.*?</h1>)", re.S)


def add_run_facts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    found = _notebook_run(app, pagename)
    text = run_facts(*found) if found else None
    body = context.get("body")
    if not text or not body:
        return
    line = (f'<p class="s2s-run-facts"><i class="fa-regular fa-clock" aria-hidden="true"></i> {html.escape(text)}</p>')
    context["body"] = _FIRST_H1.sub(lambda m: m.group(1) + "\n" + line, body, count=1)


def normalise_inline_scripts(app: Sphinx, env: Any) -> None:
    """Give the builder's inline scripts the name "" that Sphinx gives them again before writing,
    so that it sees them as already there instead of adding each a second time."""
    files = getattr(app.builder, "_js_files", None)
    if not files:
        return
    for i, script in enumerate(files):
        if getattr(script, "filename", "") is None:
            files[i] = type(script)("", priority=script.priority, **script.attributes)


def add_static_path(app: Sphinx) -> None:
    # _ext/static, not _static: Jupyter Book adds every _static/*.js to every page, and
    # s2s-widgets.js belongs only on pages with widgets (nb_ipywidgets_js in _config.yml).
    app.config.html_static_path.append(str(Path(__file__).parent / "static"))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", add_static_path)
    # Early: html-page-context stops at the first handler that returns a template name.
    app.connect("html-page-context", add_run_facts, priority=200)
    app.connect("env-updated", normalise_inline_scripts)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
