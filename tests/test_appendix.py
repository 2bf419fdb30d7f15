"""The appendices stay in step with the chapters.

book/appendix_interview.md copies every chapter's "Check your understanding" questions
(scripts/collect_cyu.py writes that part); its own classic questions quote numbers that must come
from the chapters they link to. book/appendix_distributed.md describes scripts/train_ddp.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from tests.nbtools import load_file

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "appendix_interview.md"
DISTRIBUTED = ROOT / "book" / "appendix_distributed.md"
LINK = re.compile(r"\]\(\.\./chapters/([\w-]+)\.ipynb#([\w-]+)\)")
ANSWER = re.compile(r"^````\{admonition\} Answer\n(.*?)^````$", flags=re.S | re.M)
FOOTER = re.compile(r"^Evidence: (.+?) · 한국어: \*\*(.+?)\*\* — \*(.+)\*$", flags=re.M)


cyu = load_file("scripts/collect_cyu.py")
TEXT = PAGE.read_text(encoding="utf-8")
CLASSIC = TEXT.split("## Classic questions", 1)[1].split("## Questions from the chapters", 1)[0]


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    return [c["file"] for part in toc["parts"] for c in part.get("chapters", [])]


# --- the generated part --------------------------------------------------------------------------

def test_chapter_questions_are_in_sync_with_the_notebooks():
    assert cyu.render() in TEXT, ("book/appendix_interview.md differs from the chapters' 'Check your "
                                  "understanding' sections: run `python scripts/collect_cyu.py`")


def test_evidence_table_matches_the_questions():
    assert cyu.stale_evidence() == [], "update EVIDENCE in scripts/collect_cyu.py"


def test_every_listed_chapter_is_collected_with_all_its_questions():
    chapters = cyu.toc_chapters()
    assert chapters, "no chapters in _toc.yml"
    for path in chapters:
        n = cyu.chapter_number(path)
        questions = cyu.parse_questions(n, cyu.notebook_markdown(path))
        assert f"### Chapter {n}: " in TEXT
        assert all(f"**{n}.{q.number}** " in TEXT for q in questions)
    total = sum(len(cyu.parse_questions(cyu.chapter_number(p), cyu.notebook_markdown(p))) for p in chapters)
    assert len(ANSWER.findall(TEXT)) == len(ANSWER.findall(CLASSIC)) + total


def test_check_mode_and_update(tmp_path, capsys):
    assert cyu.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\n{cyu.BEGIN}\nold\n{cyu.END}\n\ntail\n", encoding="utf-8")
    assert cyu.update(page) is True and cyu.update(page) is False
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\n") and text.endswith("\n\ntail\n") and cyu.render() in text
    page.write_text("no markers", encoding="utf-8")
    with pytest.raises(ValueError, match="marker"):
        cyu.update(page)


# --- helpers of the script -----------------------------------------------------------------------

def test_slugs_follow_myst():
    from myst_parser.mdit_to_docutils.base import default_slugify

    assert cyu.slugify("Why $\\sqrt{d_k}$, measured") == "why--measured"
    assert cyu.slugify("Padding: random batches vs `BucketBatchSampler`") == \
        default_slugify("Padding: random batches vs BucketBatchSampler")
    md = "# T\n\n## A\n\n```python\n# not a heading\n```\n\n## A\n\n#### deep\n"
    assert cyu.heading_slugs(md) == {"t": "T", "a": "A", "a-1": "A"}


def test_question_parsing_and_relinking():
    md = ("## Check your understanding\n\n1. Why?\n   Really, see {doc}`02_rnn`.\n\n"
          "```{admonition} Answer\n:class: dropdown\nBecause [this](03_x.ipynb#a).\n```\n\n"
          "2. And?\n\n```{admonition} Answer\n:class: dropdown\nSo.\n```\n\n## Summary\n")
    questions = cyu.parse_questions(4, md)
    assert [(q.number, q.answer) for q in questions] == [(1, "Because [this](03_x.ipynb#a)."), (2, "So.")]
    assert cyu.relink(questions[0].text).endswith("{doc}`../chapters/02_rnn`.")
    assert cyu.relink(questions[0].answer) == "Because [this](../chapters/03_x.ipynb#a)."
    assert cyu.relink("{doc}`../chapters/x` and [web](https://e.org/a.md)") == \
        "{doc}`../chapters/x` and [web](https://e.org/a.md)"
    with pytest.raises(ValueError, match="no numbered question"):
        cyu.parse_questions(4, "## Check your understanding\n\nNothing.\n")
    with pytest.raises(ValueError, match="no '## Check"):
        cyu.parse_questions(4, "## Summary\n")


def test_unknown_questions_fall_back_to_the_glossary():
    terms = {"causal mask (look-ahead mask)": "인과 마스크", "mask": "마스크", "beam search": "빔 서치"}
    assert cyu.guess_term("Why do we need a look-ahead mask?", terms) == "causal mask (look-ahead mask)"
    assert cyu.guess_term("Masks everywhere", terms) == "mask"
    assert cyu.guess_term("nothing here", terms) is None
    q = cyu.Question(99, 1, "What does beam search keep?", "The k best prefixes.")
    slugs = {"99_x": {"check-your-understanding": "Check your understanding"}}
    text = cyu.render_question(q, "99_x", slugs, terms)
    assert "](../chapters/99_x.ipynb#check-your-understanding)" in text and "**빔 서치** — *beam search*" in text


# --- every answer: a dropdown, evidence that resolves, a Korean term ----------------------------

def test_every_answer_is_a_dropdown_with_evidence_and_a_korean_term():
    terms = cyu.glossary()
    answers = ANSWER.findall(TEXT)
    assert len(ANSWER.findall(CLASSIC)) == 12
    for body in answers:
        assert body.startswith(":class: dropdown\n"), body[:80]
        footer = FOOTER.search(body)
        assert footer, f"answer without an 'Evidence: ... · 한국어: **...** — *...*' line: {body[:80]!r}"
        assert LINK.search(footer.group(1)), f"no chapter section linked: {footer.group(0)}"
        korean, english = footer.group(2), footer.group(3)
        assert terms.get(english) == korean, f"glossary says {english!r} is {terms.get(english)!r}, not {korean!r}"


def test_every_chapter_link_resolves():
    listed = {f.split("/", 1)[1] for f in _toc_files() if f.startswith("chapters/")}
    slugs: dict[str, dict[str, str]] = {}
    links = LINK.findall(TEXT)
    assert links
    for stem, slug in links:
        assert stem in listed, f"links to chapters/{stem}, which _toc.yml does not list"
        if stem not in slugs:
            slugs[stem] = cyu.heading_slugs(cyu.notebook_markdown(ROOT / "chapters" / f"{stem}.ipynb"))
        assert slug in slugs[stem], f"chapters/{stem} has no section #{slug}"
    for stem in re.findall(r"\{doc\}`\.\./chapters/([\w-]+)`", TEXT):
        assert stem in listed, f"{{doc}} link to chapters/{stem}, which _toc.yml does not list"


def _outputs(stem: str) -> str:
    nb = json.loads((ROOT / "chapters" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            parts.append(cyu.cell_source({"source": out.get("text", "")}))
            for kind, value in out.get("data", {}).items():
                if kind.startswith("text/"):
                    parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def test_classic_answers_quote_only_numbers_from_the_linked_chapters():
    """A decimal number (0.947, 5.4e+07, -3.81) in the prose of a classic answer must be printed
    by one of the chapters its footer links to: a re-run that changes it fails here."""
    outputs: dict[str, str] = {}
    for body in ANSWER.findall(CLASSIC):
        stems = {stem for stem, _ in LINK.findall(body)}
        printed = "\n".join(outputs.setdefault(s, _outputs(s)) for s in stems)
        prose = re.sub(r"\$[^$]*\$|`[^`]*`|\{cite[^}]*\}`[^`]*`|\]\([^)]*\)", " ", body)
        for number in re.findall(r"(?<![\w.])\d+\.\d+(?:e[-+]\d+)?(?!\w|\.\d)", prose):
            assert re.search(rf"(?<![\w.]){re.escape(number)}(?!\w|\.\d)", printed), \
                f"{number} is not printed by {sorted(stems)}: {body[:60]!r}"


# --- the pages in the book -----------------------------------------------------------------------

def test_appendices_are_in_the_toc_before_the_glossary_and_linked_from_the_intro():
    files = _toc_files()
    for page in ("book/appendix_interview", "book/appendix_distributed"):
        assert page in files and files.index(page) < files.index("book/glossary"), page
        assert f"{{doc}}`{page.split('/')[1]}`" in (ROOT / "book" / "intro.md").read_text(encoding="utf-8")


def test_distributed_page_names_what_exists():
    text = DISTRIBUTED.read_text(encoding="utf-8")
    assert "torchrun" in text and "scripts/train_ddp.py" in text
    for name in re.findall(r"s2s_course\.distributed\.(\w+)", text):
        import s2s_course.distributed as distributed

        assert hasattr(distributed, name), name
    for path in re.findall(r"\b((?:scripts|tests)/[\w/]+\.py)\b", text):
        assert (ROOT / path).exists(), path


def test_stale_evidence_is_reported(tmp_path):
    """A chapter whose questions changed: the entries that no longer fit, and the new question."""
    (tmp_path / "chapters").mkdir()
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text("parts:\n  - chapters:\n      - file: chapters/04_x\n", encoding="utf-8")
    (tmp_path / "book" / "glossary.md").write_text("| English | 한국어 | Meaning |\n|---|---|---|\n"
                                                   "| mask | 마스크 | m |\n", encoding="utf-8")
    cyu_md = ("# X\n\n## Check your understanding\n\n" +
              "".join(f"{i}. New question {i}?\n\n```{{admonition}} Answer\n:class: dropdown\nA.\n```\n\n"
                      for i in range(1, 8)))
    nb = {"cells": [{"cell_type": "markdown", "source": cyu_md}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "chapters" / "04_x.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    problems = cyu.stale_evidence(tmp_path)
    assert any(p.startswith("4.1: the question no longer contains") for p in problems)
    assert any(p.startswith("4.1: no section") for p in problems)
    assert any(p.startswith("4.1: 'padding mask' is not in the glossary") for p in problems)
    assert any(p.startswith("4.6: no EVIDENCE entry") for p in problems)
    assert not any(p.startswith("5.") for p in problems)  # chapter 5 is not in this book
    assert "Chapter 4: X" in cyu.render(tmp_path)
