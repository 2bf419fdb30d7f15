import base64

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from s2s_course.data import EOS, EOS_IDX, Seq2SeqDataset, task_vocabs  # noqa: E402
from s2s_course.models import make_attention_seq2seq, make_rnn_seq2seq  # noqa: E402
from s2s_course.widgets import (AttentionExample, AttentionExplorer, as_example,  # noqa: E402
                                attention_explorer, draw_step, examples_from_model,
                                plot_attention_grid)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def weights(T, S, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.random((T, S))
    return w / w.sum(1, keepdims=True)


@pytest.fixture
def examples():
    return [
        (["나는", "학생", "이다", "."], ["i", "am", "a", "student", "."], weights(5, 4, 1),
         np.arange(5 * 6, dtype=float).reshape(5, 6)),
        (list("abc"), list("xy"), torch.tensor(weights(2, 3, 2))),  # a tensor, no context
        AttentionExample(list("de"), list("zzz"), weights(3, 2, 3), label="third"),
    ]


def png(explorer):
    (bundle,) = explorer.output.outputs
    assert bundle["output_type"] == "display_data" and "text/plain" in bundle["data"]
    raw = base64.b64decode(bundle["data"]["image/png"])
    assert raw.startswith(b"\x89PNG")
    return raw


# --- the explorer ----------------------------------------------------------------------------

def test_explorer_builds_without_a_display(examples):
    explorer = attention_explorer(examples)
    assert isinstance(explorer, AttentionExplorer)
    assert [label for label, _ in explorer.dropdown.options] == ["0: 나는 학생 이다 .", "1: a b c", "third"]
    assert (explorer.slider.min, explorer.slider.max, explorer.slider.value) == (0, 4, 0)
    png(explorer)
    # step 0 of example 0: the caption names the output token and the source token it looks at most
    j = int(np.argmax(examples[0][2][0]))
    assert "output <b>i</b>" in explorer.caption.value
    assert f"on source <b>{examples[0][0][j]}</b> (position {j})" in explorer.caption.value
    assert f"{examples[0][2][0, j]:.2f}" in explorer.caption.value
    assert f"‖c_0‖ = {np.linalg.norm(examples[0][3][0]):.2f}" in explorer.caption.value
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "text/plain" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id


def test_moving_the_slider_updates_caption_and_figure(examples):
    explorer = attention_explorer(examples)
    before, caption = png(explorer), explorer.caption.value
    explorer.slider.value = 3  # what the user does; the widget calls update
    assert explorer.step == 3 and "output <b>student</b>" in explorer.caption.value
    assert explorer.caption.value != caption and png(explorer) != before
    explorer.update(step=1)  # the same thing, called directly
    assert explorer.slider.value == 1 and "output <b>am</b>" in explorer.caption.value


def test_choosing_a_sentence_resets_the_step_and_the_slider_range(examples):
    explorer = attention_explorer(examples)
    explorer.slider.value = 4
    explorer.dropdown.value = 1
    assert (explorer.index, explorer.step) == (1, 0)
    assert (explorer.slider.max, explorer.slider.value) == (1, 0)
    assert "output <b>x</b>" in explorer.caption.value and "‖c" not in explorer.caption.value
    explorer.update(index=2, step=2)
    assert explorer.dropdown.value == 2 and explorer.slider.max == 2 and explorer.slider.value == 2
    explorer.update(index=0)  # keeps step 2, which example 0 has
    assert (explorer.index, explorer.step, explorer.slider.max) == (0, 2, 4)


def test_caption_escapes_html():
    explorer = attention_explorer([(["<b>"], ["&"], [[1.0]])], labels=["only"])
    assert "&lt;b&gt;" in explorer.caption.value and "&amp;" in explorer.caption.value
    assert explorer.dropdown.options == (("only", 0),)


def test_update_rejects_out_of_range_index_and_step(examples):
    explorer = attention_explorer(examples)
    with pytest.raises(ValueError, match=r"index must be an int in \[0, 2\]"):
        explorer.update(index=3)
    with pytest.raises(ValueError, match=r"step must be an int in \[0, 1\] for example 1"):
        explorer.update(index=1, step=2)
    with pytest.raises(ValueError, match="step"):
        explorer.update(step=1.5)
    assert (explorer.index, explorer.step) == (0, 0)  # a failed update changes nothing


def test_long_labels_are_shortened():
    src = [f"token{i}" for i in range(20)]
    explorer = attention_explorer([(src, ["x"], weights(1, 20))])
    label = explorer.dropdown.options[0][0]
    assert label.endswith("…") and len(label) == len("0: ") + 40


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    ([(["a", "b"], ["x"], weights(1, 3))], r"examples\[0\]: weights must be \(T, S\) = .* = \(1, 2\), got shape \(1, 3\)"),
    ([(["a"], ["x"], [[1.0]]), (["a", "b"], ["x", "y"], weights(1, 2))],
     r"examples\[1\]: weights must be \(T, S\).*\(2, 2\), got shape \(1, 2\)"),
    ([(["a"], ["x", "y"], weights(2, 1), np.zeros((3, 4)))],
     r"examples\[0\]: context must be \(T, H\) with T = len\(tgt_tokens\) = 2, got shape \(3, 4\)"),
    ([(["a"], ["x"], [[1.0]], np.zeros(4))], r"examples\[0\]: context must be \(T, H\)"),
    ([(["a"], ["x"], [[-0.5]])], r"examples\[0\]: weights must be finite and >= 0"),
    ([(["a"], ["x"], [[np.nan]])], r"examples\[0\]: weights must be finite"),
    ([(["a"], ["x"], [["high"]])], r"examples\[0\]: weights must be an array of numbers"),
    ([("ab", ["x"], [[1.0, 0.0]])], r"examples\[0\]: src_tokens and tgt_tokens must be lists of tokens"),
    ([([], ["x"], np.zeros((1, 0)))], r"examples\[0\]: src_tokens and tgt_tokens must not be empty"),
    ([(["a"], ["x"])], r"examples\[0\] must be \(src_tokens, tgt_tokens, weights\).*of length 2"),
    ([42], r"examples\[0\] must be \(src_tokens, tgt_tokens, weights\).*got int"),
    ([], "examples is empty"),
    ("abc", "examples must be a list"),
    (AttentionExample(["a"], ["x"], np.ones((1, 1))), "examples must be a list"),
])
def test_bad_examples_raise_value_errors_naming_the_argument(bad, message):
    with pytest.raises(ValueError, match=message):
        attention_explorer(bad)


def test_bad_labels_and_grid_arguments(examples):
    with pytest.raises(ValueError, match=r"labels must have one entry per example \(3\), got 1"):
        attention_explorer(examples, labels=["one"])
    with pytest.raises(ValueError, match="ncols must be an int >= 1"):
        plot_attention_grid(examples, ncols=0)
    with pytest.raises(ValueError, match=r"titles must have one entry per example \(3\), got 2"):
        plot_attention_grid(examples, titles=["a", "b"])


# --- the static pictures -----------------------------------------------------------------------

def test_draw_step_boxes_the_row_and_draws_weights_and_context(examples):
    fig = draw_step(examples[0], 2)
    ax_map, ax_bar, ax_ctx = fig.axes[:3]
    box = ax_map.patches[-1]
    assert box.get_xy() == (-0.5, 1.5) and box.get_height() == 1 and box.get_width() == 4
    heights = [bar.get_height() for bar in ax_bar.patches]
    np.testing.assert_allclose(heights, examples[0][2][2])
    red = [bar.get_facecolor() for bar in ax_bar.patches]
    assert red.count(red[int(np.argmax(heights))]) == 1  # only the argmax is highlighted
    np.testing.assert_allclose([bar.get_height() for bar in ax_ctx.patches], examples[0][3][2])
    assert f"norm {np.linalg.norm(examples[0][3][2]):.2f}" in ax_ctx.get_title()
    assert "'a'" in ax_bar.get_title()


def test_draw_step_without_context_and_on_a_given_figure(examples):
    fig = plt.figure()
    assert draw_step(examples[1], 1, fig=fig) is fig
    assert any("no context vectors given" in t.get_text() for t in fig.axes[2].texts)
    with pytest.raises(ValueError, match=r"step must be an int in \[0, 1\]"):
        draw_step(examples[1], 2)


def test_plot_attention_grid_draws_every_example_and_hides_spare_axes(examples):
    fig = plot_attention_grid(examples, ncols=2, titles=["first", "second", "third"])
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in heatmaps] == ["first", "second", "third"]
    np.testing.assert_allclose(heatmaps[0].images[0].get_array(), examples[0][2])
    spare = [ax for ax in fig.axes if not ax.axison]
    assert len(spare) == 1  # 2 x 2 grid, 3 examples
    fig = plot_attention_grid(examples[:1], ncols=5)  # fewer examples than columns
    assert fig.axes[0].get_title() == "0: 나는 학생 이다 ."


def test_as_example_converts_tensors_and_keeps_labels():
    ex = as_example(AttentionExample(("a", 1), ["x"], torch.ones(1, 2) / 2, torch.zeros(1, 3), "mine"))
    assert ex.src_tokens == ["a", "1"] and ex.label == "mine"
    assert isinstance(ex.weights, np.ndarray) and isinstance(ex.context, np.ndarray)


# --- examples from a trained model -------------------------------------------------------------

def tiny_data():
    pairs = [(list("abc"), list("cba")), (list("ab"), list("ba")), (list("cab"), list("bac"))]
    src_vocab, tgt_vocab = task_vocabs(pairs)
    return Seq2SeqDataset(pairs, src_vocab, tgt_vocab)


def test_examples_from_model_match_a_manual_decode():
    torch.manual_seed(0)
    data = tiny_data()
    model = make_attention_seq2seq(len(data.src_vocab), len(data.tgt_vocab), hidden_dim=8, emb_dim=4)
    examples = examples_from_model(model, data, [1, 0], max_len=4)
    assert [ex.src_tokens for ex in examples] == [["a", "b", EOS], ["a", "b", "c", EOS]]
    for i, ex in zip([1, 0], examples):
        src, _ = data[i]
        state = model.eval().encode(src.unsqueeze(0), torch.tensor([len(src)]))
        y = torch.tensor([1])  # <sos>
        for t, token in enumerate(ex.tgt_tokens):  # re-run the decoder by hand, step by step
            with torch.no_grad():
                query = state.hidden[-1]
                context, w = model.decoder.attention(query, state.memory, mask=state.src_mask)
                logits, state = model.decode_step(y, state)
            np.testing.assert_allclose(ex.weights[t], w[0].numpy(), atol=1e-6)
            np.testing.assert_allclose(ex.context[t], context[0].numpy(), atol=1e-5)
            y = logits.argmax(-1)
            assert data.tgt_vocab.lookup_token(int(y)) == token
        assert ex.weights.shape == (len(ex.tgt_tokens), len(src))
        np.testing.assert_allclose(ex.weights.sum(1), 1.0, atol=1e-5)
    attention_explorer(examples)  # and they are valid explorer input


def test_examples_from_model_keeps_the_eos_row():
    torch.manual_seed(0)
    data = tiny_data()
    model = make_attention_seq2seq(len(data.src_vocab), len(data.tgt_vocab), hidden_dim=8, emb_dim=4)
    with torch.no_grad():
        model.decoder.out.bias[EOS_IDX] = 100.0  # the model says <eos> at once
    (ex,) = examples_from_model(model, data, [2], max_len=5)
    assert ex.tgt_tokens == [EOS] and ex.weights.shape == (1, 4) and ex.context.shape == (1, 8)


def test_examples_from_model_needs_indices_and_an_attention_model():
    data = tiny_data()
    with pytest.raises(ValueError, match="indices is empty"):
        examples_from_model(make_attention_seq2seq(7, 7, hidden_dim=8), data, [])
    plain = make_rnn_seq2seq(len(data.src_vocab), len(data.tgt_vocab), emb_dim=4, hidden_dim=8)
    with pytest.raises(ValueError, match="no attention weights"):
        examples_from_model(plain, data, [0], device="cpu")
