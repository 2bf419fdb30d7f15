import io
import math
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import s2s_course.schedules as schedules_module  # noqa: E402
import s2s_course.viz as viz  # noqa: E402
from s2s_course.metrics import accuracy_by_length  # noqa: E402
from s2s_course.schedules import linear  # noqa: E402
from s2s_course.train import History  # noqa: E402
from s2s_course.viz import (HANGUL_FONTS, Source, font_families, plot_attention, plot_by_length,  # noqa: E402
                            plot_history, show_source)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def labels(ticks):
    return [t.get_text() for t in ticks]


# --- show_source ---------------------------------------------------------------------------------

def test_show_source_function_has_html_and_plain_text():
    shown = show_source(linear)
    assert isinstance(shown, Source)
    assert shown.text.startswith("def linear(")
    assert "s2s_course.schedules.linear" in shown.title and "schedules.py, line" in shown.title
    html = shown._repr_html_()
    assert "<span" in html and "linear" in html and "style=" in html  # inline styles: no CSS needed
    plain = repr(shown)
    assert plain.startswith("# s2s_course.schedules.linear") and "def linear(" in plain


def test_show_source_class_method_module_and_instance():
    assert show_source(History).text.startswith("@dataclass")
    assert show_source(History.best).text.lstrip().startswith("def best(")
    assert show_source(History().plot).text.lstrip().startswith("def plot(")  # bound method
    module = show_source(schedules_module)
    assert module.text.startswith('"""Teacher-forcing schedules') and module.title.startswith("s2s_course.schedules ")
    assert "class Schedule" in show_source(linear(steps=2)).text  # an instance shows its class


@pytest.mark.parametrize("obj", [len, int, str.upper, math, torch.softmax, 3, io.StringIO, torch.Generator])
def test_show_source_builtins_raise_a_clear_type_error(obj):
    with pytest.raises(TypeError, match="no Python source"):
        show_source(obj)


def test_show_source_in_ipython_formats_both_mimetypes():
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(show_source(linear))
    assert "text/html" in data and "def linear(" in data["text/plain"]


# --- plot_history --------------------------------------------------------------------------------

def history(losses, val=None):
    return History([{"epoch": i + 1, "train_loss": a, **({"val_loss": val[i]} if val else {})}
                    for i, a in enumerate(losses)])


def test_plot_history_default_keys_and_values():
    ax = plot_history(history([3.0, 2.0, 1.0], [3.5, 2.5, 2.0]))
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss", "val_loss"]
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]
    assert list(ax.get_lines()[1].get_ydata()) == [3.5, 2.5, 2.0]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "value"


def test_plot_history_several_runs_on_given_axes():
    _, given = plt.subplots()
    runs = [history([3.0, 2.0]), history([2.5, 1.5, 1.0])]
    ax = plot_history(runs, keys="train_loss", ax=given, labels=["gru", "lstm"])
    assert ax is given
    assert [line.get_label() for line in ax.get_lines()] == ["gru train_loss", "lstm train_loss"]
    assert ax.get_ylabel() == "train_loss"
    assert [line.get_label() for line in plot_history(runs).get_lines()] == ["run 1 train_loss",
                                                                             "run 2 train_loss"]


def test_plot_history_skips_missing_values():
    h = History([{"epoch": 1, "bleu": None}, {"epoch": 2, "bleu": 10.0}, {"epoch": 3, "bleu": 12.0}])
    line = plot_history(h, keys=["bleu"]).get_lines()[0]
    assert list(line.get_xdata()) == [2, 3]
    empty = History([{"epoch": 1, "bleu": None}])
    assert len(plot_history(empty, keys=["bleu"]).get_lines()[0].get_xdata()) == 0


def test_plot_history_errors():
    with pytest.raises(ValueError, match="history is an empty list"):
        plot_history([])
    with pytest.raises(ValueError, match=r"labels must have one entry per history \(2\), got 1"):
        plot_history([history([1.0]), history([1.0])], labels=["a"])
    with pytest.raises(KeyError, match="'bleu' was not recorded"):
        plot_history(history([1.0]), keys=["bleu"])


# --- plot_attention ------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Glyph.*missing from font", "ignore:no Korean font found")
def test_plot_attention_ticks_title_and_image():
    weights = torch.softmax(torch.randn(3, 4), dim=-1)  # (T, S)
    src, tgt = ["나는", "학교에", "간다", "<eos>"], ["i", "go", "<eos>"]
    ax = plot_attention(weights, src, tgt, title="주의 attention")
    assert labels(ax.get_xticklabels()) == src
    assert labels(ax.get_yticklabels()) == tgt
    assert ax.get_title() == "주의 attention"
    np.testing.assert_allclose(ax.images[0].get_array(), weights.numpy(), rtol=1e-6)
    assert ax.get_xticklabels()[0].get_fontfamily() == font_families()
    assert len(ax.figure.axes) == 2  # heatmap + colorbar
    ax.figure.canvas.draw()  # renders even without a Hangul font installed


def test_missing_korean_font_gives_one_actionable_warning(monkeypatch):
    monkeypatch.setattr(viz, "font_families", lambda: ["DejaVu Sans"])
    with pytest.warns(UserWarning, match="no Korean font found.*fonts-nanum"):
        plot_attention(np.eye(2), ["나", "너"], ["a", "b"])
    with pytest.warns(UserWarning, match="no Korean font found"):
        plot_by_length({"한국어": {1: 1.0}})
    monkeypatch.setattr(viz, "font_families", lambda: ["NanumGothic", "DejaVu Sans"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax = plot_attention(np.eye(2), ["나", "너"], ["a", "b"])
        plot_attention(np.eye(2), ["a", "b"], ["c", "d"])
    assert ax.get_xticklabels()[0].get_fontfamily() == ["NanumGothic", "DejaVu Sans"]


def test_plot_attention_accepts_numpy_grad_tensors_and_an_axes():
    _, given = plt.subplots()
    w = torch.full((2, 2), 0.5, requires_grad=True)
    assert plot_attention(w * 1, ["a", "b"], ["x", "y"], ax=given, cmap="Greys") is given
    ax = plot_attention(np.eye(2), ["a", "b"], ["x", "y"])
    assert ax.images[0].get_cmap().name == "viridis"


def test_plot_attention_shape_errors_name_the_argument():
    w = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"weights must be \(T, S\)"):
        plot_attention(np.zeros(3), ["a"], ["b"])
    with pytest.raises(ValueError, match="src_tokens must have S = 3 tokens"):
        plot_attention(w, ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="tgt_tokens must have T = 2 tokens"):
        plot_attention(w, ["a", "b", "c"], ["x"])


def test_font_families_keeps_only_installed_fonts():
    families = font_families()
    assert families[-1] == "DejaVu Sans" and set(families) <= set(HANGUL_FONTS)
    assert HANGUL_FONTS[:2] == ("NanumGothic", "Noto Sans CJK KR")


# --- plot_by_length ------------------------------------------------------------------------------

def test_plot_by_length_lines_sorted_by_length():
    ax = plot_by_length({"greedy": {5: 0.5, 3: 0.9, 4: 0.7}, "beam": {3: 1.0, 5: 0.8}})
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["greedy", "beam"]
    assert list(lines[0].get_xdata()) == [3, 4, 5] and list(lines[0].get_ydata()) == [0.9, 0.7, 0.5]
    assert ax.get_ylabel() == "exact match" and ax.get_xlabel() == "length"


def test_plot_by_length_takes_accuracy_by_length_output():
    by_length = accuracy_by_length([[1, 2], [1], [1, 2, 3]], [[1, 2], [2], [1, 2, 4]])
    _, given = plt.subplots()
    ax = plot_by_length({"model": by_length}, ax=given, ylabel="accuracy")
    assert ax is given and ax.get_ylabel() == "accuracy"
    assert list(ax.get_lines()[0].get_ydata()) == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="series is empty"):
        plot_by_length({})


def test_table_renders_html_markdown_and_text():
    from s2s_course.viz import Table

    t = Table(["model", "BLEU"], [["`beam`", 30.1], ["a<b", 2]])
    assert t._repr_markdown_() == "| model | BLEU |\n|---|---|\n| `beam` | 30.1 |\n| a<b | 2 |"
    assert repr(t) == t._repr_markdown_()
    html_text = t._repr_html_()
    assert "<th>model</th><th>BLEU</th>" in html_text
    assert "<td><code>beam</code></td>" in html_text and "<td>a&lt;b</td>" in html_text


def test_table_rejects_ragged_rows():
    from s2s_course.viz import Table

    with pytest.raises(ValueError, match=r"rows\[1\] has 1 cells, the header has 2"):
        Table(["a", "b"], [[1, 2], [3]])
