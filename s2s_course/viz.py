"""Pictures for the book: source code, training curves, attention heatmaps, accuracy by length.

Every plotting function draws on ``ax`` (or a new figure) and returns the Axes; none calls
``plt.show()``, so a notebook shows the figure once and a test can inspect it.
"""
from __future__ import annotations

import html
import importlib.util
import inspect
import os
import re
import warnings
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager
from matplotlib.axes import Axes

# Tick labels may be Korean: try fonts with Hangul first, keep DejaVu Sans (bundled) as the fallback.
HANGUL_FONTS = ("NanumGothic", "Noto Sans CJK KR", "DejaVu Sans")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")  # jamo, compatibility jamo, syllables


# -----------------------------------------------------------------------------
# tables (the course needs no pandas)

class Table:
    """A small results table that shows as HTML in notebooks and on the website, and as Markdown
    or plain text elsewhere. Cells are turned into strings; `back-quoted` text becomes code."""

    def __init__(self, header: Sequence[Any], rows: Sequence[Sequence[Any]]):
        self.header = [str(h) for h in header]
        self.rows = [[str(x) for x in row] for row in rows]
        for i, row in enumerate(self.rows):
            if len(row) != len(self.header):
                raise ValueError(f"rows[{i}] has {len(row)} cells, the header has {len(self.header)}")

    def _repr_html_(self) -> str:
        def cell(text: str, tag: str) -> str:
            parts = html.escape(text).split("`")
            inner = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
            return f"<{tag}>{inner}</{tag}>"
        head = "".join(cell(h, "th") for h in self.header)
        body = "".join("<tr>" + "".join(cell(x, "td") for x in row) + "</tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _repr_markdown_(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in self.rows])

    def __repr__(self) -> str:
        return self._repr_markdown_()


# -----------------------------------------------------------------------------
# source code

class Source:
    """Source code that shows itself highlighted in notebooks (HTML) and as plain text elsewhere."""

    def __init__(self, text: str, title: str):
        self.text, self.title = text, title

    def _repr_html_(self) -> str:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        code = highlight(self.text, PythonLexer(), HtmlFormatter(noclasses=True, nobackground=True))
        return (f'<div class="s2s-source"><div style="font-size:0.85em;opacity:0.7">'
                f"{html.escape(self.title)}</div>{code}</div>")

    def __repr__(self) -> str:  # the text/plain fallback: terminals, and the book when HTML is off
        return f"# {self.title}\n{self.text}"


def _source_target(obj: Any) -> Any:
    """The object whose source we can show: instances are shown through their class."""
    is_code = (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj)
               or inspect.ismethod(obj))
    target = obj if is_code else type(obj)
    if inspect.isbuiltin(target) or inspect.ismethoddescriptor(target) or (
            inspect.isclass(target) and target.__module__ == "builtins"):
        raise TypeError(f"show_source needs a Python function, class, method or module; {obj!r} is "
                        f"built into Python or an extension (written in C), so it has no Python source")
    return target


def show_source(obj: Any) -> Source:
    """Show the source of a function, class, method or module of the course (or of any library).

    Put it last in a notebook cell (or wrap it in ``display``): the returned object renders as
    highlighted HTML in Jupyter and the book, and as plain text in a terminal.
    """
    target = _source_target(obj)
    try:
        path = inspect.getsourcefile(target)  # None for a compiled extension module
    except TypeError:  # e.g. a class defined in C
        path = None
    if path is None:
        raise TypeError(f"show_source cannot show {obj!r}: it is compiled (e.g. written in C), "
                        f"so it has no Python source")
    lines, start = inspect.getsourcelines(target)
    name = getattr(target, "__qualname__", getattr(target, "__name__", repr(target)))
    module = getattr(target, "__module__", None)
    full = f"{module}.{name}" if module and not inspect.ismodule(target) else name
    where = os.path.basename(path) + (f", line {start}" if start else "")  # modules start at 0
    return Source("".join(lines), f"{full}  ({where})")


# -----------------------------------------------------------------------------
# plots

def _register_bundled_hangul_font() -> None:
    """Make NanumGothic known to matplotlib if ``koreanize-matplotlib`` (a dependency) ships it.

    We only register the font file; we do not import that package, which would change the global
    font settings of the learner's session.
    """
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return
    path = os.path.join(list(spec.submodule_search_locations)[0], "fonts", "NanumGothic.ttf")
    if os.path.exists(path) and "NanumGothic" not in {f.name for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(path)


def font_families() -> list[str]:
    """The installed fonts from ``HANGUL_FONTS``, best first (missing ones are skipped silently)."""
    _register_bundled_hangul_font()
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return [name for name in HANGUL_FONTS if name in installed] or ["DejaVu Sans"]


def _check_hangul_font(texts: Sequence[str]) -> None:
    """Warn once, with the fix, when Korean labels would be drawn without a Korean font."""
    if any(_HANGUL.search(str(t)) for t in texts) and font_families() == ["DejaVu Sans"]:
        warnings.warn("no Korean font found (NanumGothic or Noto Sans CJK KR): Hangul will show as boxes. "
                      "Install one (Colab: !apt-get -qq install fonts-nanum), then restart the kernel",
                      stacklevel=3)


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (6, 4)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_history(history: Any, keys: str | Sequence[str] | None = None, ax: Axes | None = None,
                 labels: Sequence[str] | None = None) -> Axes:
    """One line per (history, key) against the epoch. ``history`` is a ``History`` or a list of them.

    ``keys`` defaults to whichever of ``train_loss`` and ``val_loss`` were recorded; compare runs
    by passing several histories with ``labels``.
    """
    histories = list(history) if isinstance(history, (list, tuple)) else [history]
    if not histories:
        raise ValueError("history is an empty list: nothing to plot")
    if labels is None:
        labels = [""] if len(histories) == 1 else [f"run {i + 1}" for i in range(len(histories))]
    if len(labels) != len(histories):
        raise ValueError(f"labels must have one entry per history ({len(histories)}), got {len(labels)}")
    if keys is None:
        keys = [k for k in ("train_loss", "val_loss") if any(k in h.keys() for h in histories)]
    elif isinstance(keys, str):
        keys = [keys]

    ax = _new_axes(ax)
    for h, label in zip(histories, labels):
        for key in keys:
            points = [(e, v) for e, v in zip(h["epoch"], h[key]) if v is not None]
            xs, ys = zip(*points) if points else ((), ())
            ax.plot(xs, ys, marker="o", markersize=3, label=f"{label} {key}".strip())
    ax.set_xlabel("epoch")
    ax.set_ylabel(keys[0] if len(keys) == 1 else "value")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_attention(weights: Any, src_tokens: Sequence[str], tgt_tokens: Sequence[str],
                   ax: Axes | None = None, title: str | None = None, cmap: str = "viridis") -> Axes:
    """Heatmap of attention ``weights`` (T, S): row t = where output token t looked in the source."""
    if hasattr(weights, "detach"):  # a torch tensor, possibly on the GPU or requiring grad
        weights = weights.detach().float().cpu().numpy()
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2:
        raise ValueError(f"weights must be (T, S) = (len(tgt_tokens), len(src_tokens)), "
                         f"got shape {weights.shape}")
    T, S = weights.shape
    if len(src_tokens) != S:
        raise ValueError(f"src_tokens must have S = {S} tokens (weights.shape[1]), got {len(src_tokens)}")
    if len(tgt_tokens) != T:
        raise ValueError(f"tgt_tokens must have T = {T} tokens (weights.shape[0]), got {len(tgt_tokens)}")

    ax = _new_axes(ax, figsize=(max(3.0, 0.45 * S + 1.5), max(2.5, 0.45 * T + 1.0)))
    fonts = font_families()
    _check_hangul_font([*src_tokens, *tgt_tokens, title or ""])
    image = ax.imshow(weights, cmap=cmap, aspect="auto", vmin=0.0)  # (T, S)
    ax.set_xticks(range(S), [str(t) for t in src_tokens], rotation=90, fontfamily=fonts)
    ax.set_yticks(range(T), [str(t) for t in tgt_tokens], fontfamily=fonts)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title is not None:
        ax.set_title(title, fontfamily=fonts)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_by_length(series: Mapping[str, Mapping[int, Any]], ax: Axes | None = None,
                   ylabel: str = "exact match") -> Axes:
    """One line per model: a score against sequence length, e.g. ``{"greedy": {3: 0.9, 4: 0.8}}``.

    Values may be numbers or the ``(exact, token_acc, n)`` tuples of
    ``metrics.accuracy_by_length`` (the first entry, exact match, is plotted).
    """
    if not series:
        raise ValueError("series is empty: pass {label: {length: value}}")
    ax = _new_axes(ax)
    for label, by_length in series.items():
        lengths = sorted(by_length)
        values = [by_length[n][0] if isinstance(by_length[n], (tuple, list)) else by_length[n]
                  for n in lengths]
        ax.plot(lengths, values, marker="o", label=str(label))
    ax.set_xlabel("length")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _check_hangul_font(list(series))
    ax.legend(prop={"family": font_families()})
    return ax


__all__ = ["HANGUL_FONTS", "Source", "Table", "font_families", "show_source", "plot_history",
           "plot_attention", "plot_by_length"]
