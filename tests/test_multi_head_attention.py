"""MultiHeadAttention (chapter 9) against torch.nn.MultiheadAttention, its fused path against its
manual path, gradients, argument errors, empty rows, cached keys/values; and the heads experiment."""
import pytest
import torch
from torch import nn

from s2s_course.heads import (LookupModel, attend_with_head_mask, head_ablation, make_lookup_batch,
                              relation_accuracy, relation_positions, relation_weight_share,
                              time_attention_layers, torch_multihead_from, train_lookup)
from s2s_course.self_attention import MultiHeadAttention, causal_mask

D, H = 16, 4


def layer(fused=True, seed=0, **kw):
    torch.manual_seed(seed)
    return MultiHeadAttention(D, H, fused=fused, **kw)


def inputs(seed=1, B=3, T=5, S=7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g)
    memory = torch.randn(B, S, D, generator=g)
    lengths = torch.tensor([S, S - 2, 1])[:B]
    kpm = torch.arange(S)[None, :] < lengths[:, None]          # True = real key
    return x, memory, kpm


SETTINGS = ["self", "cross", "self+padding", "cross+padding", "causal", "causal+padding"]


def run_both(setting, ours, ref, x, memory, kpm):
    """Our layer and torch's on the same setting: (our out, our weights averaged over heads, torch's)."""
    T = x.size(1)
    self_attn = setting.startswith("self") or setting.startswith("causal")
    key = x if self_attn else memory
    S = key.size(1)
    pad = kpm[:, :S] if "padding" in setting else None
    if pad is not None and self_attn:
        pad = pad.clone()
        pad[:, 0] = True                   # keep one key per row (torch gives NaN on empty rows)
    causal = setting.startswith("causal")
    out, w = ours(x, None if self_attn else memory, key_padding_mask=pad, causal=causal, need_weights=True)
    attn_mask = ~causal_mask(T, S) if causal else None        # torch: True = NOT allowed
    ref_out, ref_w = ref(x, key, key, key_padding_mask=None if pad is None else ~pad,
                         attn_mask=attn_mask, need_weights=True, average_attn_weights=True)
    fused_out, _ = ours(x, None if self_attn else memory, key_padding_mask=pad, causal=causal)
    return out, w.mean(dim=1), fused_out, ref_out, ref_w


@pytest.mark.parametrize("setting", SETTINGS)
def test_matches_torch_multihead_attention(setting):
    ours = layer().eval()
    ref = torch_multihead_from(ours).eval()
    out, w, fused_out, ref_out, ref_w = run_both(setting, ours, ref, *inputs())
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-5, rtol=1e-5)


def test_torch_copy_has_the_same_weights_and_no_bias_variant():
    ours = layer()
    ref = torch_multihead_from(ours)
    W = ref.in_proj_weight
    assert torch.equal(W[:D], ours.W_q.weight) and torch.equal(W[D:2 * D], ours.W_k.weight)
    assert torch.equal(W[2 * D:], ours.W_v.weight) and torch.equal(ref.out_proj.weight, ours.W_o.weight)
    nobias = layer(bias=False)
    ref = torch_multihead_from(nobias).eval()
    x, _, _ = inputs()
    torch.testing.assert_close(nobias(x)[0], ref(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("setting", SETTINGS)
def test_gradients_match_torch_for_every_input_and_parameter(setting):
    ours = layer()
    ref = torch_multihead_from(ours)
    x, memory, kpm = inputs()
    x1, m1 = x.clone().requires_grad_(), memory.clone().requires_grad_()
    x2, m2 = x.clone().requires_grad_(), memory.clone().requires_grad_()
    out, _, _, _, _ = run_both(setting, ours, ref, x1, m1, kpm)
    _, _, _, ref_out, _ = run_both(setting, ours, ref, x2, m2, kpm)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * weight).sum().backward()
    (ref_out * weight).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-4)
    if setting.startswith("cross"):
        torch.testing.assert_close(m1.grad, m2.grad, atol=1e-5, rtol=1e-4)
    packed_w = torch.cat([ours.W_q.weight.grad, ours.W_k.weight.grad, ours.W_v.weight.grad])
    packed_b = torch.cat([ours.W_q.bias.grad, ours.W_k.bias.grad, ours.W_v.bias.grad])
    torch.testing.assert_close(packed_w, ref.in_proj_weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed_b, ref.in_proj_bias.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.W_o.weight.grad, ref.out_proj.weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.W_o.bias.grad, ref.out_proj.bias.grad, atol=1e-5, rtol=1e-4)


def test_separate_key_and_value_match_torch():
    ours = layer().eval()
    ref = torch_multihead_from(ours).eval()
    x, memory, kpm = inputs()
    value = memory.flip(1) * 2
    out, w = ours(x, memory, value, key_padding_mask=kpm, need_weights=True)
    ref_out, ref_w = ref(x, memory, value, key_padding_mask=~kpm)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w.mean(1), ref_w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("setting", SETTINGS)
def test_fused_path_equals_manual_path_with_gradients(setting):
    fused, manual = layer(fused=True), layer(fused=False)
    x, memory, kpm = inputs()
    outs, grads = [], []
    for module in (fused, manual):
        xi, mi = x.clone().requires_grad_(), memory.clone().requires_grad_()
        self_attn = setting.startswith("self") or setting.startswith("causal")
        S = (xi if self_attn else mi).size(1)
        pad = kpm[:, :S] if "padding" in setting else None
        out, w = module(xi, None if self_attn else mi, key_padding_mask=pad, causal=setting.startswith("causal"))
        assert (w is None) == module.fused       # the manual path returns its weights anyway
        out.pow(2).sum().backward()
        outs.append(out)
        grads.append([xi.grad, mi.grad] + [p.grad for p in module.parameters()])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_need_weights_returns_per_head_rows_that_sum_to_one():
    x, memory, kpm = inputs()
    _, w = layer()(x, memory, key_padding_mask=kpm, need_weights=True)
    assert w.shape == (3, H, 5, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, H, 5))
    assert (w[2, :, :, 1:] == 0).all()                         # batch 2 has one real key


@pytest.mark.parametrize("fused", [True, False])
def test_fully_masked_rows_give_zeros_not_nan(fused):
    module = layer(fused=fused)
    x, memory, kpm = inputs()
    kpm = kpm.clone()
    kpm[1] = False                                             # batch 1: no key at all
    xi, mi = x.clone().requires_grad_(), memory.clone().requires_grad_()
    out, _ = module(xi, mi, key_padding_mask=kpm)
    assert not out.isnan().any()
    # the attention result is 0, so the layer returns W_O's bias on that row
    torch.testing.assert_close(out[1], module.W_o.bias.expand(5, D))
    out.sum().backward()
    for g in [xi.grad, mi.grad] + [p.grad for p in module.parameters()]:
        assert torch.isfinite(g).all()
    _, w = module(x, memory, key_padding_mask=kpm, need_weights=True)
    assert (w[1] == 0).all() and not w.isnan().any()


@pytest.mark.parametrize("fused", [True, False])
def test_precomputed_kv_equals_passing_key_and_value(fused):
    module = layer(fused=fused)
    x, memory, kpm = inputs()
    value = memory + 1
    kv = module.project_kv(memory, value)
    assert kv[0].shape == (3, H, 7, D // H)
    expected, _ = module(x, memory, value, key_padding_mask=kpm)
    got, _ = module(x, kv=kv, key_padding_mask=kpm)
    torch.testing.assert_close(got, expected)
    # decoding with a cache: the last query of a causal self-attention sees every cached key
    full, _ = module(x, causal=True)
    last, _ = module(x[:, -1:], kv=module.project_kv(x, x), causal=True)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("call, words", [
    (lambda m, x, mem, kpm: m(x[0]), "query"),
    (lambda m, x, mem, kpm: m(x[..., :-1]), "query"),
    (lambda m, x, mem, kpm: m(x, mem[:2]), "key"),
    (lambda m, x, mem, kpm: m(x, mem[..., :-1]), "key"),
    (lambda m, x, mem, kpm: m(x, mem, mem[:, :-1]), "same length"),
    (lambda m, x, mem, kpm: m(x, mem, mem[..., :3]), "value"),
    (lambda m, x, mem, kpm: m(x, mem, key_padding_mask=kpm[:, :-1]), "key_padding_mask"),
    (lambda m, x, mem, kpm: m(x, mem, key_padding_mask=kpm.float()), "key_padding_mask"),
    (lambda m, x, mem, kpm: m(x, mem, key_padding_mask=~kpm[:2]), "key_padding_mask"),
])
def test_bad_shapes_and_masks_name_the_argument(call, words):
    x, memory, kpm = inputs()
    for fused in (True, False):
        with pytest.raises(ValueError, match=words):
            call(layer(fused=fused), x, memory, kpm)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MultiHeadAttention(10, 4)


def test_parameter_count_and_head_layout():
    m = MultiHeadAttention(512, 8)
    assert sum(p.numel() for p in m.parameters()) == 4 * 512 ** 2 + 4 * 512 == 1_050_624
    assert m.d_k == 64
    x = torch.randn(2, 3, 512)
    heads = m.split_heads(x)
    assert heads.shape == (2, 8, 3, 64)
    assert torch.equal(heads[:, 5], x[..., 5 * 64:6 * 64])     # head i = columns i*d_k ... (i+1)*d_k
    assert torch.equal(m.merge_heads(heads), x)


# --- the heads experiment ---------------------------------------------------------------------

def test_lookup_task_targets_follow_the_relations():
    rels = ["previous", "mirror", "first"]
    where = relation_positions(rels, 5)
    assert where.tolist() == [[4, 0, 1, 2, 3], [4, 3, 2, 1, 0], [0, 0, 0, 0, 0]]
    x, y = make_lookup_batch(4, 5, 10, rels, torch.Generator().manual_seed(0))
    assert x.shape == (4, 5) and y.shape == (4, 5, 3)
    for b in range(4):
        for t in range(5):
            assert y[b, t].tolist() == [x[b, (t - 1) % 5], x[b, 4 - t], x[b, 0]]
    with pytest.raises(ValueError, match="relations"):
        relation_positions(["nope"], 5)


def test_head_mask_and_model_agree_with_the_layer():
    torch.manual_seed(0)
    model = LookupModel(10, 6, 16, 4, 2)
    x = torch.randint(10, (3, 6))
    h = model.embed(x) + model.pos
    out, w = attend_with_head_mask(model.attn, h)
    ref_out, ref_w = model.attn(h, need_weights=True)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    none, _ = attend_with_head_mask(model.attn, h, torch.zeros(4))
    torch.testing.assert_close(none, model.attn.W_o.bias.expand_as(none))
    logits, weights = model(x)
    assert logits.shape == (3, 6, 2, 10) and weights.shape == (3, 4, 6, 6)


def test_train_lookup_learns_and_analysis_shapes():
    run = train_lookup(2, relations=("previous", "first"), T=6, vocab_size=5, d_model=16, steps=150,
                       n_test=200, log_every=10)
    assert run["accuracy"].shape == (2,) and run["accuracy"].min() > 1 / 5   # above chance
    assert run["curve"][-1][1] < 0.5 * run["curve"][0][1]
    x, y = run["test"]
    assert head_ablation(run["model"], x, y).shape == (2, 2)
    share = relation_weight_share(run["model"], x, ["previous", "first"])
    assert share.shape == (2, 2) and ((share >= 0) & (share <= 1)).all()
    torch.testing.assert_close(relation_accuracy(run["model"], x, y), run["accuracy"])


def test_time_attention_layers_reports_three_layers():
    times = time_attention_layers(2, 8, 16, 4, repeat=1)
    assert set(times) == {"manual", "fused", "torch.nn"}
    assert all(f > 0 and b > 0 for f, b in times.values())
