"""Interactive figures for the notebooks (ipywidgets), each with a static twin for the website.

``attention_explorer(examples)`` lets a learner pick a sentence and a decoder step and see where
that step looked (its attention weights over the source) and what it got back (its context
vector). The book's website has no kernel, so every notebook that shows an explorer also shows
``plot_attention_grid(examples)``: the same weights as plain heatmaps.

An *example* is one decoded sentence::

    (src_tokens, tgt_tokens, weights)            weights (T, S): row t = output step t
    (src_tokens, tgt_tokens, weights, context)   context (T, H): c_t for every step

or an ``AttentionExample``. ``examples_from_model`` makes them from a trained attention model.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Any, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from s2s_course.train import _model_device
from s2s_course.viz import font_families, plot_attention


# -----------------------------------------------------------------------------
# examples: what the explorer shows

@dataclass
class AttentionExample:
    """One sentence: tokens on both sides, weights (T, S) and optionally context vectors (T, H)."""

    src_tokens: list[str]
    tgt_tokens: list[str]
    weights: np.ndarray             # (T, S), rows sum to (at most) 1
    context: np.ndarray | None = None  # (T, H) or None
    label: str | None = None        # the name in the explorer's drop-down


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):  # possibly on the GPU or requiring grad
        value = value.detach().float().cpu().numpy()
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be an array of numbers, got {type(value).__name__}") from err


def as_example(item: Any, where: str = "example") -> AttentionExample:
    """Check one example and return it as an ``AttentionExample`` (numpy arrays, token lists).

    ``where`` names the argument in error messages, e.g. ``"examples[2]"``.
    """
    if isinstance(item, AttentionExample):
        src, tgt, weights, context, label = (item.src_tokens, item.tgt_tokens, item.weights,
                                             item.context, item.label)
    elif isinstance(item, (tuple, list)) and len(item) in (3, 4):
        src, tgt, weights = item[:3]
        context = item[3] if len(item) == 4 else None
        label = None
    else:
        raise ValueError(f"{where} must be (src_tokens, tgt_tokens, weights) or (src_tokens, "
                         f"tgt_tokens, weights, context), got {type(item).__name__}"
                         + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""))
    if isinstance(src, str) or isinstance(tgt, str):
        raise ValueError(f"{where}: src_tokens and tgt_tokens must be lists of tokens, not strings")
    src, tgt = [str(t) for t in src], [str(t) for t in tgt]
    if not src or not tgt:
        raise ValueError(f"{where}: src_tokens and tgt_tokens must not be empty "
                         f"(got {len(src)} and {len(tgt)} tokens)")
    weights = _as_array(weights, f"{where}: weights")
    T, S = len(tgt), len(src)
    if weights.shape != (T, S):
        raise ValueError(f"{where}: weights must be (T, S) = (len(tgt_tokens), len(src_tokens)) = "
                         f"({T}, {S}), got shape {weights.shape}")
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{where}: weights must be finite and >= 0 (attention weights), "
                         f"got {weights[first]} at {list(first)}")
    if context is not None:
        context = _as_array(context, f"{where}: context")
        if context.ndim != 2 or context.shape[0] != T or context.shape[1] < 1:
            raise ValueError(f"{where}: context must be (T, H) with T = len(tgt_tokens) = {T}, "
                             f"got shape {context.shape}")
    return AttentionExample(src, tgt, weights, context, label)


def _as_examples(examples: Sequence[Any]) -> list[AttentionExample]:
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence) or isinstance(
            examples, AttentionExample):
        raise ValueError(f"examples must be a list of examples, got {type(examples).__name__}")
    if len(examples) == 0:
        raise ValueError("examples is empty: pass at least one (src_tokens, tgt_tokens, weights)")
    return [as_example(item, f"examples[{i}]") for i, item in enumerate(examples)]


def _default_label(i: int, example: AttentionExample, width: int = 40) -> str:
    text = " ".join(example.src_tokens)
    text = text if len(text) <= width else text[:width - 1] + "…"
    return f"{i}: {text}"


# -----------------------------------------------------------------------------
# building examples from a model

@torch.no_grad()
def examples_from_model(model: torch.nn.Module, dataset: Any, indices: Sequence[int], *,
                        max_len: int = 50, device: torch.device | str | None = None
                        ) -> list[AttentionExample]:
    """Greedy-decode ``dataset[i]`` for each ``i`` in ``indices`` and record, at every output step,
    the attention weights and the context vector c_t = sum_j a_tj h_j.

    ``model`` is an attention model of ``s2s_course.models`` (its state carries ``memory``, the
    encoder outputs h_j); ``dataset`` a ``Seq2SeqDataset`` (it has the vocabularies). Source tokens
    are shown as the model saw them (unknown words as ``<unk>``, with the final ``<eos>``); output
    rows are the predicted tokens, ``<eos>`` included when the model emitted it.
    """
    from s2s_course.data.batching import pad_sequences
    from s2s_course.data.specials import EOS
    from s2s_course.decode import evaluating, greedy_decode

    indices = list(indices)
    if not indices:
        raise ValueError("indices is empty: pick at least one example of the dataset")
    device = _model_device(model) if device is None else device
    src, lengths = pad_sequences([dataset[i][0] for i in indices])    # (B, S), (B,)
    src = src.to(device)
    outputs, attention = greedy_decode(model, src, lengths, max_len=max_len,
                                       return_attention=True)
    if attention[0] is None:
        raise ValueError("model returned no attention weights: use an attention model")
    with evaluating(model):
        memory = model.encode(src, lengths).memory                      # (B, S, Hm)
    examples = []
    for b, (out, weights) in enumerate(zip(outputs, attention)):
        S_i = int(lengths[b])
        src_tokens = dataset.src_vocab.lookup_tokens(src[b, :S_i].tolist())
        tgt_tokens = dataset.tgt_vocab.lookup_tokens(out)
        if weights.size(0) > len(out):                                  # the <eos> step
            tgt_tokens = tgt_tokens + [EOS]
        context = weights.to(memory.device) @ memory[b, :S_i]          # (T, S) @ (S, Hm)
        examples.append(AttentionExample(src_tokens, tgt_tokens, weights.numpy(),
                                         context.cpu().numpy()))
    return examples


# -----------------------------------------------------------------------------
# drawing

def draw_step(example: Any, step: int, fig: Figure | None = None) -> Figure:
    """One figure for output step ``step``: the heatmap with that row boxed, the row's weights
    as bars over the source tokens, and the context vector's components (if given)."""
    ex = as_example(example)
    T, S = ex.weights.shape
    if not isinstance(step, (int, np.integer)) or not 0 <= step < T:
        raise ValueError(f"step must be an int in [0, {T - 1}] (one per output token), got {step!r}")
    fig = plt.figure(figsize=(10, 3.4)) if fig is None else fig
    fig.clear()
    ax_map, ax_bar, ax_ctx = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1.1, 1]})
    fonts = font_families()

    plot_attention(ex.weights, ex.src_tokens, ex.tgt_tokens, ax=ax_map, title="all steps")
    ax_map.add_patch(Rectangle((-0.5, step - 0.5), S, 1, fill=False, edgecolor="red", linewidth=2))

    row = ex.weights[step]                                               # (S,)
    best = int(row.argmax())
    colors = ["tab:red" if j == best else "tab:blue" for j in range(S)]
    ax_bar.bar(range(S), row, color=colors)
    ax_bar.set_xticks(range(S), ex.src_tokens, rotation=90, fontfamily=fonts)
    ax_bar.set_ylim(0, 1)
    ax_bar.set_xlabel("source")
    ax_bar.set_ylabel(f"weight a[{step}, j]")
    ax_bar.set_title(f"step {step}: output {ex.tgt_tokens[step]!r}", fontfamily=fonts)

    if ex.context is None:
        ax_ctx.axis("off")
        ax_ctx.text(0.5, 0.5, "no context vectors given", ha="center", va="center")
    else:
        c = ex.context[step]                                             # (H,)
        ax_ctx.bar(range(len(c)), c, color="tab:green", width=1.0)
        ax_ctx.axhline(0, color="black", linewidth=0.5)
        ax_ctx.set_xlabel("component")
        ax_ctx.set_ylabel("value")
        ax_ctx.set_title(f"context c_{step} (H={len(c)}), norm {np.linalg.norm(c):.2f}")
    fig.tight_layout()
    return fig


def plot_attention_grid(examples: Sequence[Any], ncols: int = 3, titles: Sequence[str] | None = None,
                        cell_size: float = 0.32) -> Figure:
    """Every example's full heatmap in a grid: the static view of ``attention_explorer``."""
    items = _as_examples(examples)
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be an int >= 1, got {ncols!r}")
    if titles is not None and len(titles) != len(items):
        raise ValueError(f"titles must have one entry per example ({len(items)}), got {len(titles)}")
    ncols = min(ncols, len(items))
    nrows = -(-len(items) // ncols)
    width = max(max(ex.weights.shape[1] for ex in items) * cell_size + 1.8, 3.0)
    height = max(max(ex.weights.shape[0] for ex in items) * cell_size + 1.4, 2.4)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(items):
            ax.axis("off")
            continue
        ex = items[k]
        title = titles[k] if titles is not None else (ex.label or _default_label(k, ex, 30))
        plot_attention(ex.weights, ex.src_tokens, ex.tgt_tokens, ax=ax, title=title)
    fig.tight_layout()
    return fig


def _png_bundle(fig: Figure, dpi: int) -> dict[str, Any]:
    """A Jupyter display_data output holding the figure as a PNG (what the Output widget stores)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": png, "text/plain": "<attention explorer figure>"}}


# -----------------------------------------------------------------------------
# the explorer

class AttentionExplorer:
    """A drop-down (sentence), a slider (decoder step), a caption and the figure of ``draw_step``.

    The figure is written into an ``Output`` widget as a PNG, so it is saved with the widget state
    and shows on a page without a kernel. ``update(index, step)`` is what the widgets call.
    """

    def __init__(self, examples: Sequence[Any], labels: Sequence[str] | None = None,
                 dpi: int = 72) -> None:
        import ipywidgets as widgets

        self.examples = _as_examples(examples)
        if labels is not None and len(labels) != len(self.examples):
            raise ValueError(f"labels must have one entry per example ({len(self.examples)}), "
                             f"got {len(labels)}")
        names = labels if labels is not None else [
            ex.label or _default_label(i, ex) for i, ex in enumerate(self.examples)]
        self.dpi = dpi
        self.index, self.step = 0, 0
        self._updating = False
        self.dropdown = widgets.Dropdown(options=[(str(n), i) for i, n in enumerate(names)], value=0,
                                         description="sentence", layout=widgets.Layout(width="420px"))
        self.slider = widgets.IntSlider(value=0, min=0, max=len(self.examples[0].tgt_tokens) - 1,
                                        description="output step", continuous_update=False)
        self.caption = widgets.HTML()
        self.output = widgets.Output()
        self.dropdown.observe(self._on_sentence, names="value")
        self.slider.observe(self._on_step, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.dropdown, self.slider]), self.caption,
                                    self.output])
        self.update(0, 0)

    # the widgets' callbacks
    def _on_sentence(self, change: dict) -> None:
        if not self._updating:
            self.update(index=change["new"], step=0)

    def _on_step(self, change: dict) -> None:
        if not self._updating:
            self.update(step=change["new"])

    def describe(self) -> str:
        """The caption: which source token this step looked at most, and how much."""
        ex = self.examples[self.index]
        row = ex.weights[self.step]
        j = int(row.argmax())
        text = (f"step {self.step}: output <b>{html.escape(ex.tgt_tokens[self.step])}</b> puts "
                f"{row[j]:.2f} of its weight on source <b>{html.escape(ex.src_tokens[j])}</b> "
                f"(position {j})")
        if ex.context is not None:
            text += f"; context norm ‖c_{self.step}‖ = {np.linalg.norm(ex.context[self.step]):.2f}"
        return text

    def update(self, index: int | None = None, step: int | None = None) -> None:
        """Show sentence ``index`` at output step ``step`` (None keeps the current one) and move
        the widgets there too."""
        index = self.index if index is None else index
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.examples):
            raise ValueError(f"index must be an int in [0, {len(self.examples) - 1}], got {index!r}")
        T = len(self.examples[index].tgt_tokens)
        step = self.step if step is None else step
        if not isinstance(step, (int, np.integer)) or not 0 <= step < T:
            raise ValueError(f"step must be an int in [0, {T - 1}] for example {index}, got {step!r}")
        self.index, self.step = int(index), int(step)
        self._updating = True  # moving the widgets below must not trigger a second drawing
        try:
            self.dropdown.value = self.index
            self.slider.max = T - 1
            self.slider.value = self.step
        finally:
            self._updating = False
        with matplotlib.rc_context({"figure.max_open_warning": 0}):
            fig = draw_step(self.examples[self.index], self.step)
            bundle = _png_bundle(fig, self.dpi)
            plt.close(fig)
        self.caption.value = self.describe()
        self.output.outputs = (bundle,)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def attention_explorer(examples: Sequence[Any], labels: Sequence[str] | None = None,
                       dpi: int = 72) -> AttentionExplorer:
    """Pick a sentence and a decoder step; see the weights and the context vector of that step.

    ``examples``: a list of ``(src_tokens, tgt_tokens, weights (T, S)[, context (T, H)])`` or
    ``AttentionExample``; ``labels``: names for the drop-down. Put it last in a cell to show it.
    """
    return AttentionExplorer(examples, labels=labels, dpi=dpi)


__all__ = ["AttentionExample", "AttentionExplorer", "as_example", "attention_explorer", "draw_step",
           "examples_from_model", "plot_attention_grid"]
