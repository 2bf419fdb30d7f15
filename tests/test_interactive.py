import json
import re

import numpy as np
import pytest
import torch

from s2s_course.interactive import AttentionStepper, attention_stepper
from s2s_course.widgets import AttentionExample


def example(T=3, S=4, seed=0, context=False):
    rng = np.random.default_rng(seed)
    w = rng.random((T, S))
    w /= w.sum(1, keepdims=True)
    src = [f"s{j}" for j in range(S)]
    tgt = [f"t{i}" for i in range(T)]
    if context:
        return (src, tgt, torch.tensor(w), rng.random((T, 5)))
    return (src, tgt, w)


def embedded(fig):
    html = fig._repr_html_()
    payload = re.search(r'<script type="application/json">(.*?)</script>', html, re.S).group(1)
    return html, json.loads(payload.replace("<\\/", "</"))


def test_html_embeds_the_weights_and_controls():
    fig = attention_stepper([example(), example(T=5, S=2, seed=1, context=True)], labels=["a", "b"],
                            title="Where each step looked")
    html, data = embedded(fig)
    assert 'class="s2s-interactive"' in html and f'id="{fig.id}"' in html
    assert "<select" in html and 'type="range"' in html and 'max="2"' in html
    assert "data-s2s-view" in html and "Where each step looked" in html
    assert '<option value="1">b</option>' in html
    assert "http" not in html  # nothing loaded from a CDN
    a, b = data["examples"]
    assert a["src"] == ["s0", "s1", "s2", "s3"] and a["tgt"] == ["t0", "t1", "t2"]
    np.testing.assert_allclose(a["w"], np.round(example()[2], 3))
    assert "cnorm" not in a and len(b["cnorm"]) == 5 and len(b["w"]) == 5
    assert json.dumps(fig.id) in html  # the script finds its own figure


def test_ids_are_unique_and_tokens_are_escaped():
    bad = (["</script><b>x", "&"], ["<i>y"], np.array([[0.5, 0.5]]))
    f1, f2 = AttentionStepper([bad]), AttentionStepper([bad])
    assert f1.id != f2.id
    html, data = embedded(f1)
    assert "</script><b>" not in html.split('<script type="application/json">')[1].split("</script>")[0]
    assert data["examples"][0]["src"][0] == "</script><b>x"
    assert "<option value=\"0\">0: &lt;/script&gt;" in html  # the default drop-down label is escaped


def test_text_fallback_and_defaults():
    ex = AttentionExample(["a", "b"], ["x", "y", "z"], np.full((3, 2), 0.5), label="mine")
    fig = attention_stepper([ex], decimals=2)
    assert fig.labels == ["mine"]
    text = repr(fig)
    assert "1 sentence(s)" in text and "mine: 3 output steps x 2 source tokens" in text


@pytest.mark.parametrize("kwargs, message", [
    ({"labels": ["only one", "two"]}, "one entry per example"),
    ({"decimals": 0}, "decimals"),
])
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        attention_stepper([example()], **kwargs)


def test_bad_examples_are_rejected():
    with pytest.raises(ValueError):
        attention_stepper([(["a"], ["x", "y"], np.ones((3, 3)))])


# --- the positional-encoding explorer ---------------------------------------------------------

def test_positional_explorer_embeds_the_table_and_two_sliders():
    from s2s_course.interactive import positional_explorer
    from s2s_course.positional import frequencies, sinusoidal_encoding

    table = sinusoidal_encoding(20, 8)
    fig = positional_explorer(table, max_offset=10, title="PE")
    html, data = embedded(fig)
    assert 'class="s2s-interactive"' in html and html.count('type="range"') == 2
    assert 'max="19"' in html and 'max="3"' in html and "data-s2s-view" in html and "http" not in html
    np.testing.assert_allclose(data["table"], np.round(table.numpy(), 3))
    np.testing.assert_allclose(data["freqs"], frequencies(8).numpy(), rtol=1e-5)
    # the frequencies are the table's: sin(p * w_i) in dimension 2i
    np.testing.assert_allclose(np.sin(5 * np.array(data["freqs"])), table[5, 0::2].numpy(), atol=1e-5)
    assert data["max_offset"] == 10 and "20 positions x 8 dimensions" in repr(fig)


@pytest.mark.parametrize("table, kwargs, message", [
    (np.zeros((5, 3)), {}, "d even"),
    (np.zeros(5), {}, "positions >= 2"),
    (np.zeros((5, 4)), {"freqs": np.ones(3), "max_offset": 2}, "d/2 = 2"),
    (np.zeros((5, 4)), {"max_offset": 5}, "max_offset"),
    (np.zeros((5, 4)), {"decimals": 9, "max_offset": 2}, "decimals"),
])
def test_positional_explorer_argument_errors(table, kwargs, message):
    from s2s_course.interactive import positional_explorer
    with pytest.raises(ValueError, match=message):
        positional_explorer(table, **kwargs)
