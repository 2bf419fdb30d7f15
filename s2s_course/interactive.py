"""Interactive figures that need no kernel: precomputed data + a few lines of plain JavaScript.

An ipywidgets explorer calls Python on every move, so on the book's website (no kernel) its
controls cannot change anything. ``attention_stepper(examples)`` draws the same thing (pick a
sentence, move along the decoder steps, see where each step looked) from attention weights
embedded in the page as JSON, with a drop-down and a slider driven by a small self-contained
script: it works in Jupyter, in Colab and on the static website alike, and loads nothing from a
CDN. Show it by putting it last in a cell (or with ``display``).

Examples are the same as for ``s2s_course.widgets.attention_explorer``: ``(src_tokens,
tgt_tokens, weights (T, S)[, context (T, H)])`` or ``AttentionExample``.
"""
from __future__ import annotations

import html
import itertools
import json
from typing import Any, Sequence

import numpy as np

from s2s_course.widgets import _as_examples, _default_label

_COUNTER = itertools.count()

# One copy of the script per figure keeps each output self-contained (a notebook output, a page
# of the book); it only touches the elements inside its own figure.
_SCRIPT = r"""
(function () {
  var root = document.getElementById(%(id)s);
  if (!root || root.dataset.ready) { return; }
  root.dataset.ready = "1";
  var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
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
        if not isinstance(decimals, int) or not 1 <= decimals <= 6:
            raise ValueError(f"decimals must be an int in [1, 6], got {decimals!r}")
        self.labels = [str(n) for n in labels] if labels is not None else [
            ex.label or _default_label(i, ex) for i, ex in enumerate(self.examples)]
        self.title = title
        self.decimals = decimals
        self.id = f"s2s-interactive-{next(_COUNTER)}-{id(self) & 0xFFFFFF:06x}"

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
        # "</" inside the JSON would end the <script> element early; "<\/" is the same JSON string.
        payload = json.dumps(self.data, ensure_ascii=False).replace("</", "<\\/")
        options = "".join(f'<option value="{i}">{html.escape(n)}</option>' for i, n in enumerate(self.labels))
        first = self.examples[0]
        title = (f'<div style="font-weight:bold;margin-bottom:4px">{html.escape(self.title)}</div>'
                 if self.title else "")
        return (
            f'<div class="s2s-interactive" id="{self.id}" style="max-width:100%;overflow-x:auto">'
            f"{title}"
            '<div style="display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center;margin-bottom:6px">'
            f'<label>sentence <select aria-label="sentence">{options}</select></label>'
            f'<label>output step <input type="range" min="0" max="{len(first.tgt_tokens) - 1}" value="0" '
            'step="1" aria-label="output step" style="vertical-align:middle"> '
            '<span data-s2s-step></span></label></div>'
            '<div data-s2s-caption style="margin-bottom:6px"></div>'
            '<div data-s2s-view></div>'
            f'<script type="application/json">{payload}</script>'
            f"<script>{_SCRIPT % {'id': json.dumps(self.id)}}</script>"
            "</div>"
        )

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


__all__ = ["AttentionStepper", "attention_stepper"]
