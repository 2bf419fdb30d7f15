"""The book's local Sphinx extension (_ext/s2s_book.py) and the browser check's helpers."""
from pathlib import Path
from tests.nbtools import load_file

ROOT = Path(__file__).resolve().parents[1]




s2s_book = load_file("_ext/s2s_book.py")
check_site = load_file("scripts/check_site.py")


def test_run_facts_line():
    run = {"seconds": 133.7, "mode": "full", "device": "cpu", "torch_threads": 1}
    assert s2s_book.run_facts(run) == "Runs in about 2 min on a laptop CPU (full mode, 1 torch thread)."
    quick = s2s_book.run_facts({"seconds": 26.9, "mode": "quick", "device": "cpu", "torch_threads": 2})
    assert quick.startswith("Runs in under a minute on a laptop CPU (quick mode, 2 torch threads)")
    assert "S2S_QUICK" in quick
    assert s2s_book.run_facts({"seconds": 600, "device": "cuda"}) == "Runs in about 10 min on a GPU."
    assert s2s_book.run_facts({"mode": "full"}) is None
    loaded = s2s_book.run_facts(run, note="with the trained model loaded from the cache; training it first adds "
                                          "about 30 min.")
    assert loaded == ("Runs in about 2 min on a laptop CPU (full mode, 1 torch thread); with the trained model "
                      "loaded from the cache; training it first adds about 30 min.")


def test_chapters_that_load_a_trained_run_say_so_in_their_run_line():
    """Chapters 7 and 10 load the Multi30k runs that train_or_load caches: their recorded time
    leaves the training out, and the line under the title must say so."""
    import json

    for prefix in ("07", "10"):
        (path,) = (ROOT / "chapters").glob(f"{prefix}_*.ipynb")
        meta = json.loads(path.read_text(encoding="utf-8"))["metadata"]
        note = meta.get("s2s_course_runtime_note", "")
        assert "train" in note and "min" in note, path.name


def test_every_chapter_gets_a_run_line():
    import json

    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        run = json.loads(path.read_text(encoding="utf-8"))["metadata"].get("s2s_course_run")
        if run:
            assert s2s_book.run_facts(run), path.name


def test_cdn_addresses_map_to_npm_packages():
    assert check_site.cdn_target("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js") == (
        "mathjax", "3", "es5/tex-chtml.js")
    assert check_site.cdn_target(
        "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist/embed-amd.js?x=1") == (
        "@jupyter-widgets/html-manager", "1.0.6", "dist/embed-amd.js")
    assert check_site.cdn_target("https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js") == (
        "requirejs", "2.3.4", "require.js")
    assert check_site.cdn_target("https://example.com/x.js") is None


def test_broken_links_are_found(tmp_path):
    (tmp_path / "a.html").write_text('<a href="b.html#here">ok</a><a href="b.html#gone">x</a>'
                                     '<a href="missing.html">y</a><a href="https://x.org">z</a>')
    (tmp_path / "b.html").write_text('<h1 id="here">B</h1><a href="a.html">back</a><a href="#here">self</a>')
    problems = check_site.broken_links(tmp_path)
    assert problems == ["a.html: link to missing anchor b.html#gone", "a.html: link to missing missing.html"]
