"""Interactive figures that need no kernel: precomputed data + a few lines of plain JavaScript.

An ipywidgets explorer calls Python on every move, so on the book's website (no kernel) its
controls cannot change anything. ``attention_stepper(examples)`` draws the same thing (pick a
sentence, move along the decoder steps, see where each step looked) from attention weights
embedded in the page as JSON, with a drop-down and a slider driven by a small self-contained
script: it works in Jupyter, in Colab and on the static website alike, and loads nothing from a
CDN. Show it by putting it last in a cell (or with ``display``).

Examples are the same as for ``s2s_course.widgets.attention_explorer``: ``(src_tokens,
tgt_tokens, weights (T, S)[, context (T, H)])`` or ``AttentionExample``.

``positional_explorer(table)`` does the same for a positional-encoding table (positions, d):
a slider for the position p and one for the frequency pair i draw PE(p) as a strip, the pair's
sine and cosine along all positions, and PE(p)·PE(p+k) against the offset k.
"""
from __future__ import annotations

import html
import itertools
import json
from typing import Any, Sequence

import numpy as np

from s2s_course.positional import frequencies
from s2s_course.widgets import _as_examples, _default_label

_COUNTER = itertools.count()

# One copy of the script per figure keeps each output self-contained (a notebook output, a page
# of the book); it only touches the elements inside its own figure. Every figure's script starts
# the same way: find its own root once, then parse the data embedded beside it.
_PREAMBLE = """
(function () {
  var root = document.getElementById(%s);
  if (!root || root.dataset.ready) { return; }
  root.dataset.ready = "1";
  var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
"""


def _new_id(figure: object) -> str:
    """A page-unique element id for one figure."""
    return f"s2s-interactive-{next(_COUNTER)}-{id(figure) & 0xFFFFFF:06x}"


def _check_decimals(decimals: Any) -> None:
    if not isinstance(decimals, int) or not 1 <= decimals <= 6:
        raise ValueError(f"decimals must be an int in [1, 6], got {decimals!r}")


def _figure_html(fig_id: str, title: str | None, controls: str, data: dict[str, Any], script: str) -> str:
    """The shared shell of a kernel-free figure: title, a row of controls, a caption, the view,
    the data as JSON and the script (``_PREAMBLE`` + ``script``, which draws into the view)."""
    # "</" inside the JSON would end the <script> element early; "<\/" is the same JSON string.
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    heading = (f'<div style="font-weight:bold;margin-bottom:4px">{html.escape(title)}</div>'
               if title else "")
    code = _PREAMBLE % json.dumps(fig_id) + script.lstrip("\n")
    return (
        f'<div class="s2s-interactive" id="{fig_id}" style="max-width:100%;overflow-x:auto">'
        f"{heading}"
        '<div style="display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center;margin-bottom:6px">'
        f"{controls}</div>"
        '<div data-s2s-caption style="margin-bottom:6px"></div>'
        '<div data-s2s-view></div>'
        f'<script type="application/json">{payload}</script>'
        f"<script>{code}</script>"
        "</div>"
    )


_SCRIPT = r"""
  var pick = root.querySelector("select"), slider = root.querySelector("input[type=range]");
  var stepLabel = root.querySelector("[data-s2s-step]"), view = root.querySelector("[data-s2s-view]");
  var caption = root.querySelector("[data-s2s-caption]");
  function esc(s) { var d = document.createElement("span"); d.textContent = s; return d.innerHTML; }
  function cell(w, text, strong) {
    var a = Math.max(0, Math.min(1, w));
    var fg = a > 0.55 ? "#fff" : "inherit";
    return '<td style="background:rgba(31,119,180,' + a.toFixed(3) + ');color:' + fg +
      ';padding:2px 6px;text-align:center;border:1px solid rgba(128,128,128,0.25)' +
      (strong ? ';outline:2px solid #d62728;outline-offset:-2px' : '') + '">' + text + '</td>';
  }
  function draw() {
    var ex = data.examples[+pick.value], t = +slider.value;
    slider.max = ex.tgt.length - 1;
    if (t > ex.tgt.length - 1) { t = ex.tgt.length - 1; slider.value = t; }
    var row = ex.w[t], j = 0;
    for (var k = 1; k < row.length; k++) { if (row[k] > row[j]) { j = k; } }
    stepLabel.textContent = t + " (" + ex.tgt[t] + ")";
    var text = "step " + t + ": output <b>" + esc(ex.tgt[t]) + "</b> puts " + row[j].toFixed(2) +
      " of its weight on source <b>" + esc(ex.src[j]) + "</b> (position " + j + ")";
    if (ex.cnorm) { text += "; context norm \u2016c_" + t + "\u2016 = " + ex.cnorm[t].toFixed(2); }
    caption.innerHTML = text;
    var out = '<table style="border-collapse:collapse;font-size:0.85em;margin:0"><tr><th></th>';
    ex.src.forEach(function (s) { out += '<th style="padding:2px 6px;font-weight:normal">' + esc(s) + '</th>'; });
    out += '</tr>';
    ex.tgt.forEach(function (y, i) {
      out += '<tr' + (i === t ? ' data-s2s-current="1"' : ' style="opacity:0.45"') + '>' +
        '<th style="padding:2px 6px;text-align:right;font-weight:' + (i === t ? 'bold' : 'normal') + '">' +
        esc(y) + '</th>';
      ex.w[i].forEach(function (w, c) {
        out += cell(w, i === t ? w.toFixed(2) : "", i === t && c === j);
      });
      out += '</tr>';
    });
    view.innerHTML = out + '</table>';
  }
  pick.addEventListener("change", function () { slider.value = 0; draw(); });
  slider.addEventListener("input", draw);
  slider.addEventListener("change", draw);
  draw();
})();
"""


class AttentionStepper:
    """A kernel-free attention figure: drop-down (sentence) + slider (output step) + heatmap.

    ``_repr_html_`` is the whole figure (data, markup and script); ``__repr__`` is a text summary
    for terminals. ``data`` is what is embedded: per example the tokens and the weights, rounded
    to ``decimals`` places to keep pages small.
    """

    def __init__(self, examples: Sequence[Any], labels: Sequence[str] | None = None,
                 title: str | None = None, decimals: int = 3) -> None:
        self.examples = _as_examples(examples)
        if labels is not None and len(labels) != len(self.examples):
            raise ValueError(f"labels must have one entry per example ({len(self.examples)}), "
                             f"got {len(labels)}")
        _check_decimals(decimals)
        self.labels = [str(n) for n in labels] if labels is not None else [
            ex.label or _default_label(i, ex) for i, ex in enumerate(self.examples)]
        self.title = title
        self.decimals = decimals
        self.id = _new_id(self)

    @property
    def data(self) -> dict[str, Any]:
        examples = []
        for ex in self.examples:
            item: dict[str, Any] = {
                "src": list(ex.src_tokens), "tgt": list(ex.tgt_tokens),
                "w": np.round(ex.weights, self.decimals).tolist(),
            }
            if ex.context is not None:
                item["cnorm"] = np.round(np.linalg.norm(ex.context, axis=1), self.decimals).tolist()
            examples.append(item)
        return {"examples": examples}

    def _repr_html_(self) -> str:
        options = "".join(f'<option value="{i}">{html.escape(n)}</option>' for i, n in enumerate(self.labels))
        first = self.examples[0]
        controls = (
            f'<label>sentence <select aria-label="sentence">{options}</select></label>'
            f'<label>output step <input type="range" min="0" max="{len(first.tgt_tokens) - 1}" value="0" '
            'step="1" aria-label="output step" style="vertical-align:middle"> '
            '<span data-s2s-step></span></label>')
        return _figure_html(self.id, self.title, controls, self.data, _SCRIPT)

    def __repr__(self) -> str:
        lines = [f"AttentionStepper: {len(self.examples)} sentence(s); open in Jupyter or the book "
                 f"to move through the steps"]
        for name, ex in zip(self.labels, self.examples):
            lines.append(f"  {name}: {len(ex.tgt_tokens)} output steps x {len(ex.src_tokens)} source tokens")
        return "\n".join(lines)


def attention_stepper(examples: Sequence[Any], labels: Sequence[str] | None = None,
                      title: str | None = None, decimals: int = 3) -> AttentionStepper:
    """Pick a sentence, move the slider along the output steps, see each step's attention row.

    Needs no kernel: the weights travel in the output, so the figure works on the website too.
    ``examples`` as for ``attention_explorer``; ``labels``: names for the drop-down.
    """
    return AttentionStepper(examples, labels=labels, title=title, decimals=decimals)


_PE_SCRIPT = r"""
  var pe = data.table, n = pe.length, d = pe[0].length;
  var sp = root.querySelector("[data-s2s-p]"), si = root.querySelector("[data-s2s-i]");
  var view = root.querySelector("[data-s2s-view]"), caption = root.querySelector("[data-s2s-caption]");
  var W = 560, H = 120, pad = 28;
  function color(v) {  // blue for +1, red for -1, white for 0
    var a = Math.min(1, Math.abs(v));
    return v >= 0 ? "rgba(31,119,180," + a.toFixed(3) + ")" : "rgba(214,39,40," + a.toFixed(3) + ")";
  }
  function dot(a, b) { var s = 0; for (var k = 0; k < d; k++) { s += pe[a][k] * pe[b][k]; } return s; }
  function line(xs, ys, x0, x1, y0, y1, style) {
    var pts = xs.map(function (x, k) {
      var px = pad + (x - x0) / (x1 - x0) * (W - 2 * pad), py = H - pad / 2 - (ys[k] - y0) / (y1 - y0) * (H - pad);
      return px.toFixed(1) + "," + py.toFixed(1);
    });
    return '<polyline fill="none" stroke-width="2" ' + style + ' points="' + pts.join(" ") + '"/>';
  }
  function axes(y0, y1) {  // the zero line; labels are HTML above each plot, legible on a phone
    var y = (H - pad / 2 - (0 - y0) / (y1 - y0) * (H - pad)).toFixed(1);
    return '<line x1="' + pad + '" x2="' + (W - pad) + '" y1="' + y + '" y2="' + y + '" stroke="#999" stroke-width="0.5"/>';
  }
  function label(text) { return '<div style="font-size:12px;margin:6px 0 0">' + text + '</div>'; }
  function draw() {
    var p = +sp.value, i = +si.value, xs = [], s = [], c = [], ks = [], dots = [];
    for (var q = 0; q < n; q++) { xs.push(q); s.push(pe[q][2 * i]); c.push(pe[q][2 * i + 1]); }
    var kmax = Math.min(data.max_offset, n - 1 - p);
    for (var k = 0; k <= kmax; k++) { ks.push(k); dots.push(dot(p, p + k)); }
    root.querySelector("[data-s2s-pval]").textContent = p;
    root.querySelector("[data-s2s-ival]").textContent = i + " (dims " + (2 * i) + ", " + (2 * i + 1) + ")";
    var wl = 2 * Math.PI / data.freqs[i];
    caption.innerHTML = "pair " + i + ": frequency \u03c9<sub>" + i + "</sub> = " + data.freqs[i].toPrecision(3) +
      ", wavelength " + wl.toFixed(1) + " positions; at p = " + p + ": sin = " + pe[p][2 * i].toFixed(3) +
      ", cos = " + pe[p][2 * i + 1].toFixed(3) + "; PE(p)\u00b7PE(p+1) = " + dot(p, Math.min(p + 1, n - 1)).toFixed(2);
    var strip = '<div style="font-size:12px;margin:2px 0">PE(' + p + '): all ' + d + ' dimensions (blue +, red \u2212; the chosen pair outlined)</div>' +
      '<div style="display:flex;max-width:' + W + 'px">';
    for (var k2 = 0; k2 < d; k2++) {
      var on = (k2 === 2 * i || k2 === 2 * i + 1);
      strip += '<div title="dim ' + k2 + ': ' + pe[p][k2].toFixed(3) + '" style="flex:1;height:22px;background:' +
        color(pe[p][k2]) + (on ? ';outline:2px solid #000;outline-offset:-2px' : '') + '"></div>';
    }
    strip += '</div>';
    var xm = pad + p / (n - 1) * (W - 2 * pad);
    var wave = label("pair " + i + " along positions 0.." + (n - 1) + ": sin (blue, solid), cos (orange, dashed); red line at p") +
      '<svg viewBox="0 0 ' + W + ' ' + H + '" style="width:100%;max-width:' + W + 'px;display:block" role="img" aria-label="sine and cosine of the chosen pair">' +
      axes(-1.1, 1.1) +
      line(xs, s, 0, n - 1, -1.1, 1.1, 'stroke="#1f77b4"') + line(xs, c, 0, n - 1, -1.1, 1.1, 'stroke="#ff7f0e" stroke-dasharray="5,3"') +
      '<line x1="' + xm.toFixed(1) + '" x2="' + xm.toFixed(1) + '" y1="14" y2="' + (H - 4) + '" stroke="#d62728" stroke-width="1.5"/></svg>';
    var dmin = Math.min.apply(null, dots), dmax = d / 2;
    var sim = label("PE(" + p + ")\u00b7PE(" + p + "+k) against k = 0.." + kmax + " (green; d/2 = " + (d / 2) + " at k = 0; grey line at 0)") +
      '<svg viewBox="0 0 ' + W + ' ' + H + '" style="width:100%;max-width:' + W + 'px;display:block" role="img" aria-label="dot product against offset">' +
      axes(Math.min(dmin, 0) - 1, dmax + 1) +
      line(ks, dots, 0, Math.max(1, data.max_offset), Math.min(dmin, 0) - 1, dmax + 1, 'stroke="#2ca02c"') + '</svg>';
    view.innerHTML = strip + wave + sim;
  }
  sp.addEventListener("input", draw); si.addEventListener("input", draw);
  sp.addEventListener("change", draw); si.addEventListener("change", draw);
  draw();
})();
"""


class PositionalExplorer:
    """A kernel-free positional-encoding figure: sliders for the position p and the pair i.

    Shows PE(p) as a strip of all d values, the pair's sine and cosine along every position (the
    wavelength grows with i), and PE(p)·PE(p+k) against k (it depends on k only). The table is
    embedded rounded to ``decimals`` places; the dot products are computed in the browser.
    """

    def __init__(self, table: Any, freqs: Any | None = None, max_offset: int = 60,
                 title: str | None = None, decimals: int = 3) -> None:
        table = np.asarray(table.detach().cpu() if hasattr(table, "detach") else table, dtype=float)
        if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] < 2 or table.shape[1] % 2:
            raise ValueError(f"table must be (positions >= 2, d) with d even, got shape {table.shape}")
        n, d = table.shape
        if freqs is None:
            freqs = frequencies(d)  # the sinusoid's omega_i, base 10000
        freqs = np.asarray(freqs.detach().cpu() if hasattr(freqs, "detach") else freqs, dtype=float)
        if freqs.shape != (d // 2,):
            raise ValueError(f"freqs must have d/2 = {d // 2} entries, got shape {freqs.shape}")
        if not isinstance(max_offset, int) or not 1 <= max_offset < n:
            raise ValueError(f"max_offset must be an int in [1, positions - 1 = {n - 1}], got {max_offset!r}")
        _check_decimals(decimals)
        self.table, self.freqs, self.max_offset = table, freqs, max_offset
        self.title, self.decimals = title, decimals
        self.id = _new_id(self)

    @property
    def data(self) -> dict[str, Any]:
        return {"table": np.round(self.table, self.decimals).tolist(),
                "freqs": [float(f"{f:.6g}") for f in self.freqs], "max_offset": self.max_offset}

    def _repr_html_(self) -> str:
        n, d = self.table.shape
        controls = (
            f'<label>position p <input type="range" min="0" max="{n - 1}" value="0" step="1" data-s2s-p '
            'aria-label="position p" style="vertical-align:middle"> <span data-s2s-pval></span></label>'
            f'<label>pair i <input type="range" min="0" max="{d // 2 - 1}" value="0" step="1" data-s2s-i '
            'aria-label="frequency pair i" style="vertical-align:middle"> <span data-s2s-ival></span></label>')
        return _figure_html(self.id, self.title, controls, self.data, _PE_SCRIPT)

    def __repr__(self) -> str:
        n, d = self.table.shape
        return (f"PositionalExplorer: {n} positions x {d} dimensions; open in Jupyter or the book to move "
                f"the position and frequency sliders")


def positional_explorer(table: Any, freqs: Any | None = None, max_offset: int = 60,
                        title: str | None = None, decimals: int = 3) -> PositionalExplorer:
    """Move a position and a frequency pair through a positional-encoding table (positions, d).

    Needs no kernel. ``freqs``: the pair frequencies (default: the sinusoid's, base 10000);
    ``max_offset``: the largest k in the PE(p)·PE(p+k) plot.
    """
    return PositionalExplorer(table, freqs=freqs, max_offset=max_offset, title=title, decimals=decimals)


__all__ = ["AttentionStepper", "attention_stepper", "PositionalExplorer", "positional_explorer"]
