"""models.lm: the causal LM against torch.nn.TransformerEncoderLayer and against its own future,
the masked LM's bidirectionality, BERT's masking statistics, generation, training, errors."""
import math

import pytest
import torch
from torch import nn

from s2s_course.data.specials import EOS_IDX, PAD_IDX, SOS_IDX
from s2s_course.models.lm import (IGNORE_IDX, CausalLM, MaskedLM, distinct_n, evaluate_lm, generate,
                                  lm_batches, mask_tokens, repeats_within, sample_statistics, train_lm)
from s2s_course.positional import sinusoidal_encoding
from s2s_course.self_attention import causal_mask


def small_causal(**kw):
    torch.manual_seed(0)
    return CausalLM(40, d_model=16, num_heads=2, num_layers=2, d_ff=32, max_len=64, **kw).eval()


# --- causality and bidirectionality ------------------------------------------------------------

@pytest.mark.parametrize("norm_first", [True, False])
def test_changing_a_future_token_changes_no_earlier_logits(norm_first):
    model = small_causal(norm_first=norm_first)
    tokens = torch.randint(4, 40, (3, 10))
    with torch.no_grad():
        base = model(tokens)
        for t in (0, 4, 9):
            changed = tokens.clone()
            changed[:, t] = (changed[:, t] + 7 - 4) % 36 + 4
            out = model(changed)
            assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6)
            assert not torch.allclose(out[:, t:], base[:, t:], atol=1e-4)


def test_masked_lm_sees_both_directions():
    torch.manual_seed(0)
    model = MaskedLM(41, mask_idx=40, d_model=16, num_heads=2, num_layers=2, d_ff=32).eval()
    tokens = torch.randint(4, 40, (2, 8))
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] - 4 + 1) % 36 + 4
    with torch.no_grad():
        assert not torch.allclose(model(tokens)[:, 0], model(changed)[:, 0], atol=1e-4)


def test_padding_changes_no_real_position():
    model = small_causal()
    a, b = torch.randint(4, 40, (1, 9)), torch.randint(4, 40, (1, 5))
    batch = torch.full((2, 9), PAD_IDX)
    batch[0], batch[1, :5] = a[0], b[0]
    for m in (model, MaskedLM(40, mask_idx=39, d_model=16, num_heads=2, num_layers=1, d_ff=32).eval()):
        with torch.no_grad():
            both = m(batch)
            assert torch.allclose(both[0], m(a)[0], atol=1e-5)
            assert torch.allclose(both[1, :5], m(b)[0], atol=1e-5)


# --- one layer == torch.nn.TransformerEncoderLayer with copied weights ---------------------------

def torch_reference(model: CausalLM, tokens: torch.Tensor) -> torch.Tensor:
    """The same computation assembled from torch.nn parts: embedding x sqrt(d) + sinusoidal PE,
    nn.TransformerEncoderLayer(norm_first, relu) with a causal mask, final LayerNorm, tied linear."""
    (ours,) = model.layers
    d = model.d_model
    ref = nn.TransformerEncoderLayer(d, ours.self_attn.num_heads, ours.ffn.linear1.out_features,
                                     dropout=0.0, activation="relu", batch_first=True,
                                     norm_first=ours.norm_first)
    a = ours.self_attn
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.W_q.weight, a.W_k.weight, a.W_v.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.W_q.bias, a.W_k.bias, a.W_v.bias]))
        ref.self_attn.out_proj.load_state_dict(a.W_o.state_dict())
        ref.linear1.load_state_dict(ours.ffn.linear1.state_dict())
        ref.linear2.load_state_dict(ours.ffn.linear2.state_dict())
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        ref.norm2.load_state_dict(ours.norm2.state_dict())
    ref.eval()
    T = tokens.size(1)
    x = model.embedding.weight[tokens] * math.sqrt(d) + sinusoidal_encoding(T, d)
    x = ref(x, src_mask=~causal_mask(T))                   # torch: True = may NOT attend
    if ours.norm_first:
        x = nn.functional.layer_norm(x, (d,), model.norm.weight, model.norm.bias)
    return x @ model.embedding.weight.T + model.generator.bias


@pytest.mark.parametrize("norm_first", [True, False])
def test_one_layer_equals_torch_transformer_encoder_layer(norm_first):
    torch.manual_seed(1)
    model = CausalLM(30, d_model=16, num_heads=4, num_layers=1, d_ff=24, norm_first=norm_first).eval()
    tokens = torch.randint(4, 30, (3, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), torch_reference(model, tokens), atol=1e-5, rtol=1e-5)


def test_head_is_tied_to_the_embedding():
    model = small_causal()
    assert model.generator.weight is model.embedding.weight
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(p.numel() for p in set(model.parameters()))


# --- BERT's masking -------------------------------------------------------------------------------

def test_mask_tokens_statistics():
    V, mask_idx = 5000, 4999
    tokens = torch.randint(4, mask_idx, (400, 500))
    tokens[:, -50:] = PAD_IDX                                # padding is never chosen
    tokens[:, 0] = SOS_IDX
    before = tokens.clone()
    inputs, labels = mask_tokens(tokens, mask_idx, V, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, before)
    real = tokens >= 4
    selected = labels != IGNORE_IDX
    assert not (selected & ~real).any()
    assert torch.equal(labels[selected], tokens[selected])
    assert torch.equal(inputs[~selected], tokens[~selected])
    share = selected.sum().item() / real.sum().item()
    assert abs(share - 0.15) < 0.003
    n = selected.sum().item()
    masked = (inputs[selected] == mask_idx).sum().item() / n
    same = (inputs[selected] == tokens[selected]).sum().item() / n
    other = 1 - masked - same
    assert abs(masked - 0.8) < 0.005 and abs(same - 0.1) < 0.005 and abs(other - 0.1) < 0.005
    assert int(inputs.max()) < V and not ((inputs < 4) & selected).any()


def test_mask_tokens_edges_and_reproducibility():
    tokens = torch.tensor([[1, 5, 6, 7, 2, 0]])
    a = mask_tokens(tokens, 9, 10, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(tokens, 9, 10, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    inputs, labels = mask_tokens(tokens, 9, 10, mask_prob=0.0)
    assert torch.equal(inputs, tokens) and (labels == IGNORE_IDX).all()
    inputs, labels = mask_tokens(tokens, 9, 10, mask_prob=1.0)
    assert labels.tolist() == [[0, 5, 6, 7, 0, 0]]
    random_ones = mask_tokens(torch.full((100, 100), 5), 9, 10, mask_prob=1.0)[0]
    assert set(random_ones.unique().tolist()) <= {4, 5, 6, 7, 8, 9}   # never a special


def test_mask_tokens_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tokens"):
        mask_tokens(torch.ones(3, dtype=torch.long), 9, 10)
    with pytest.raises(ValueError, match="tokens"):
        mask_tokens(torch.ones(2, 3), 9, 10)
    with pytest.raises(ValueError, match="mask_idx"):
        mask_tokens(torch.ones(2, 3, dtype=torch.long), 2, 10)
    with pytest.raises(ValueError, match="mask_prob"):
        mask_tokens(torch.ones(2, 3, dtype=torch.long), 9, 10, mask_prob=1.5)


# --- generation -----------------------------------------------------------------------------------

def test_greedy_generate_equals_a_hand_loop_and_top_k_one():
    model = small_causal()
    out = generate(model, 3, max_new_tokens=8, temperature=0)
    tokens = torch.full((1, 1), SOS_IDX)
    expected = []
    with torch.no_grad():
        for _ in range(8):
            nxt = model(tokens)[0, -1].argmax().item()
            if nxt == EOS_IDX:
                break
            expected.append(nxt)
            tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
    assert out == [expected] * 3
    assert generate(model, 2, max_new_tokens=8, top_k=1, generator=torch.Generator().manual_seed(5)) == [expected] * 2


def test_generate_stops_at_eos_and_continues_prompts():
    model = small_causal()
    with torch.no_grad():
        model.generator.bias.fill_(-100.0)
        model.generator.bias[EOS_IDX] = 100.0                # <eos> at once
    assert generate(model, 2, temperature=0) == [[], []]
    with torch.no_grad():
        model.generator.bias[EOS_IDX] = -100.0
        model.generator.bias[7] = 100.0
    prompt = torch.tensor([[SOS_IDX, 5, 6]])
    assert generate(model, prompts=prompt, max_new_tokens=4, temperature=0) == [[7, 7, 7, 7]]
    with pytest.raises(ValueError, match="n .*prompts|prompts"):
        generate(model, 2, prompts=prompt)
    with pytest.raises(ValueError, match="prompts"):
        generate(model, prompts=torch.tensor([SOS_IDX, 5]))


def test_model_rejects_bad_token_tensors():
    model = small_causal()
    with pytest.raises(ValueError, match="tokens must be a \\(B, T\\) long"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="tokens must be"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens holds ids outside"):
        model(torch.full((1, 2), 40))
    with pytest.raises(ValueError, match="mask_idx"):
        MaskedLM(10, mask_idx=10)
    with pytest.raises(ValueError, match="vocab_size"):
        CausalLM(0)


# --- statistics, batches and training -------------------------------------------------------------

def test_distinct_n_and_repeats_by_hand():
    samples = [[1, 2, 3], [1, 2, 4]]
    assert distinct_n(samples, 1) == 4 / 6
    assert distinct_n(samples, 2) == 3 / 4
    assert repeats_within([5, 6, 5, 6], 2) and not repeats_within([5, 6, 5], 2)
    stats = sample_statistics([[1, 2], [1, 2], [3]], training={(3,)})
    assert stats["duplicates"] == pytest.approx(1 / 3) and stats["copied"] == pytest.approx(1 / 3)
    assert stats["mean_length"] == pytest.approx(5 / 3)


def test_lm_batches_cover_every_sequence_once_within_the_budget():
    seqs = [[4] * n for n in [3, 9, 1, 5, 5, 7, 2, 8, 4, 6]]
    batches = list(lm_batches(seqs, max_tokens=16, seed=3))
    assert sorted(int((b != PAD_IDX).sum(1)[i]) for b in batches for i in range(len(b))) == sorted(map(len, seqs))
    assert all(b.numel() <= 16 or len(b) == 1 for b in batches)


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_train_lm_learns_a_tiny_corpus(kind):
    corpus = [[SOS_IDX, 5, 6, 7, 8, 9, EOS_IDX], [SOS_IDX, 10, 11, 12, 13, EOS_IDX]] * 30
    torch.manual_seed(0)
    if kind == "causal":
        model = CausalLM(16, d_model=32, num_heads=2, num_layers=1, d_ff=64, dropout=0.0)
    else:
        corpus = [s[1:-1] for s in corpus]
        model = MaskedLM(17, mask_idx=16, d_model=32, num_heads=2, num_layers=1, d_ff=64, dropout=0.0)
    history = train_lm(model, corpus, corpus[:10], epochs=40, max_tokens=64, peak_lr=3e-3, warmup=10,
                       mask_prob=0.3)
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert history["val_acc"][-1] > (0.7 if kind == "causal" else 0.5)
    assert not model.training
    again = evaluate_lm(model, corpus[:10], mask_prob=0.3)
    assert again["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-5)


def test_train_lm_rejects_other_models():
    with pytest.raises(ValueError, match="CausalLM or a MaskedLM"):
        train_lm(nn.Linear(2, 2), [[1, 2]])
