"""Every decimal number a chapter's prose quotes must appear in that notebook's outputs.

A re-run changes a table and not the sentence that reads it (this happened: chapter 2 once said
"14.7 vs 12.2 ms" next to a table of 17.5 and 12.9). This test makes that impossible to commit.

What counts: decimal numbers (``12.9``, ``0.144``) in markdown cells. What does not: numbers in
math (``$30.6$``) or inline code, in citations, links and cross-references, and numbers that the
notebook's code also contains (settings such as a learning rate). So a constant from a paper or
a definition is written in math, and a measured number must come from an output.
A quoted number matches an output number with the same digits after rounding (``0.1234`` is
quoted as ``0.123`` or ``0.12``), as a percentage (``0.794`` as ``79.4``), and whatever its sign
(a minus in prose is often typeset as "−").
"""
from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
SCIENTIFIC = re.compile(r"(?<![\w.])\d+(?:\.\d+)?[eE][-+]?\d+(?![\w.])")  # 3.4e-01 in an output
NOT_PROSE = [r"\$\$.*?\$\$", r"\$[^$\n]*\$", r"`[^`]*`", r"\{(?:cite|doc|ref|eq|numref|term)[^}]*\}",
             r"\]\([^)]*\)", r"https?://\S+", r"<!--.*?-->", r"^:label:.*$"]


def prose(markdown: str) -> str:
    for pattern in NOT_PROSE:
        markdown = re.sub(pattern, " ", markdown, flags=re.S | re.M)
    return markdown


def output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append("".join(out["text"]))
        for kind, value in out.get("data", {}).items():
            if kind.startswith("text/"):
                parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def spellings(number: str) -> set[str]:
    """The ways a measured ``number`` may be quoted: rounded (half up or half even), or as a
    percentage. ``3.4e-01`` may be quoted as 0.34."""
    value = Decimal(number)
    digits = max(-value.as_tuple().exponent, 0) + 2
    found = {number}
    for shown in (value, 100 * value):
        for places in range(0, digits + 1):
            step = Decimal(1).scaleb(-places)
            for rounding in (ROUND_HALF_UP, ROUND_HALF_EVEN):
                found.add(f"{shown.quantize(step, rounding=rounding):f}")
    return found


def unmatched(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    source = "\n".join("".join(c["source"]) for c in code)
    outputs = "\n".join(output_text(c) for c in code)
    measured = set(NUMBER.findall(outputs)) | set(SCIENTIFIC.findall(outputs))
    allowed = {s for n in measured for s in spellings(n)} | set(NUMBER.findall(source))
    missing = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = prose("".join(cell["source"]))
        for match in NUMBER.finditer(text):
            if match.group() not in allowed:
                context = text[max(0, match.start() - 60):match.end() + 20].replace("\n", " ")
                missing.append(f"{match.group()} in '...{context}...'")
    return missing


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_number_in_the_prose_is_in_the_outputs(path):
    missing = unmatched(path)
    assert not missing, (f"{path.name}: numbers in the prose that no output shows (re-read the outputs, "
                         f"or write a constant in math $...$):\n  " + "\n  ".join(missing))


def test_the_check_catches_a_stale_number(tmp_path):
    cell = {"cell_type": "code", "source": ["print(t)"], "outputs": [
        {"output_type": "stream", "name": "stdout", "text": ["step 17.5 ms, share 0.794\n"]}]}
    def notebook(markdown: str) -> Path:
        path = tmp_path / "nb.ipynb"
        path.write_text(json.dumps({"cells": [cell, {"cell_type": "markdown", "source": [markdown]}]}))
        return path

    assert unmatched(notebook("A step takes 17.5 ms; 79.4% of it is attention.")) == []
    assert unmatched(notebook("Rounded: 17 ms... or $14.7$ from the paper, `lr=3.0`.")) == []
    stale = unmatched(notebook("A step takes 14.7 ms."))
    assert len(stale) == 1 and stale[0].startswith("14.7")
