"""Sliding-window and linear attention (s2s_course.efficient_attention) against independent
references written as Python loops over positions, the KV-cache helpers (s2s_course.kv_cache),
and the small long-sequence model of chapter 11."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from s2s_course.benchmark import peak_memory
from s2s_course.efficient_attention import (ATTENTIONS, AttentionBlock, LongSequenceModel, band_mask,
                                            blocked_sliding_window_attention,
                                            chunked_causal_linear_attention, elu_feature_map,
                                            linear_attention, make_long_task,
                                            sliding_window_attention, train_long_task)
from s2s_course.kv_cache import cache_setting, greedy_steps, kv_cache_bytes
from s2s_course.models.transformer import make_transformer


def qkv(B=2, h=3, T=13, d=4, d_v=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, h, T, d, generator=g, dtype=dtype),
            torch.randn(B, h, T, d, generator=g, dtype=dtype),
            torch.randn(B, h, T, d_v, generator=g, dtype=dtype))


def window_loop(q, k, v, window, causal=False, real=None):
    """Eq. (window) one (batch, head, query) at a time; a query with no allowed key gets zeros."""
    B, h, T, _ = q.shape
    out = torch.zeros(B, h, T, v.size(-1), dtype=q.dtype)
    for b in range(B):
        for i in range(h):
            for t in range(T):
                js = [j for j in range(T)
                      if (real is None or bool(real[b, j]))
                      and ((0 <= t - j <= window) if causal else abs(t - j) <= window)]
                if not js:
                    continue
                scores = torch.stack([q[b, i, t] @ k[b, i, j] for j in js]) / math.sqrt(q.size(-1))
                weights = torch.softmax(scores, 0)
                out[b, i, t] = sum(w * v[b, i, j] for w, j in zip(weights, js))
    return out


def linear_loop(q, k, v, causal=False, real=None):
    """Eq. (linear): out_t = sum_j phi(q_t).phi(k_j) v_j / sum_j phi(q_t).phi(k_j), summed explicitly."""
    phi = lambda x: F.elu(x) + 1  # noqa: E731
    B, h, T, _ = q.shape
    out = torch.zeros(B, h, T, v.size(-1), dtype=q.dtype)
    for b in range(B):
        for i in range(h):
            for t in range(T):
                js = [j for j in range(T if not causal else t + 1) if real is None or bool(real[b, j])]
                if not js:
                    continue
                sims = [phi(q[b, i, t]) @ phi(k[b, i, j]) for j in js]
                out[b, i, t] = sum(s * v[b, i, j] for s, j in zip(sims, js)) / sum(sims)
    return out


# --- band mask -----------------------------------------------------------------------------------

def test_band_mask_matches_its_definition():
    for causal in (False, True):
        m = band_mask(7, 2, causal)
        for i in range(7):
            for j in range(7):
                want = (0 <= i - j <= 2) if causal else abs(i - j) <= 2
                assert bool(m[i, j]) == want
    assert band_mask(5, 0).equal(torch.eye(5, dtype=torch.bool))
    assert band_mask(5, 10).all()


# --- sliding window --------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [0, 1, 3, 20])
def test_sliding_window_matches_a_loop_over_positions(causal, window):
    q, k, v = qkv()
    real = torch.ones(2, 13, dtype=torch.bool)
    real[1, 9:] = False
    real[0, 0] = False
    for mask in (None, real):
        expected = window_loop(q, k, v, window, causal, mask)
        torch.testing.assert_close(sliding_window_attention(q, k, v, window, causal, mask), expected)
        for block in (1, 4, 5, 13, 64):
            got = blocked_sliding_window_attention(q, k, v, window, causal, mask, block_size=block)
            torch.testing.assert_close(got, expected)


def test_sliding_window_with_a_window_covering_everything_is_full_attention():
    q, k, v = qkv(T=9)
    full = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1) @ v
    torch.testing.assert_close(sliding_window_attention(q, k, v, 8), full)
    torch.testing.assert_close(blocked_sliding_window_attention(q, k, v, 100, block_size=4), full)
    causal = torch.softmax((q @ k.transpose(-2, -1) / 2.0).masked_fill(
        ~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf")), -1) @ v
    torch.testing.assert_close(blocked_sliding_window_attention(q, k, v, 8, causal=True, block_size=2), causal)


def test_sliding_window_rows_with_no_key_are_zero_and_gradients_agree():
    q, k, v = qkv(T=10)
    real = torch.zeros(2, 10, dtype=torch.bool)
    real[0, :3] = True                           # sequence 0: queries far from key 0..2 see nothing
    inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    banded = sliding_window_attention(*inputs, 2, key_padding_mask=real)
    assert not banded.isnan().any()
    assert (banded[1] == 0).all() and (banded[0, :, 6:] == 0).all()
    inputs2 = [t.clone().requires_grad_(True) for t in (q, k, v)]
    blocked = blocked_sliding_window_attention(*inputs2, 2, key_padding_mask=real, block_size=3)
    torch.testing.assert_close(blocked, banded)
    weight = torch.randn(banded.shape, dtype=banded.dtype)
    (banded * weight).sum().backward()
    (blocked * weight).sum().backward()
    for a, b in zip(inputs, inputs2):
        assert torch.isfinite(a.grad).all()
        torch.testing.assert_close(b.grad, a.grad)


def test_sliding_window_works_on_three_dim_inputs_and_float32():
    q, k, v = (t[:, 0].float() for t in qkv())                  # (B, T, d)
    real = torch.ones(2, 13, dtype=torch.bool)
    real[0, 10:] = False
    expected = window_loop(q.unsqueeze(1).double(), k.unsqueeze(1).double(), v.unsqueeze(1).double(), 2,
                           real=real)[:, 0]
    got = blocked_sliding_window_attention(q, k, v, 2, key_padding_mask=real, block_size=4)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sliding_window_attention(q, k, v, 2, key_padding_mask=real), got)


def test_blocked_window_never_builds_the_n_by_n_scores():
    torch.manual_seed(0)
    n, h, d = 1024, 2, 16
    q, k, v = (torch.randn(1, h, n, d) for _ in range(3))
    with torch.no_grad():
        banded = peak_memory(lambda: sliding_window_attention(q, k, v, 8))
        blocked = peak_memory(lambda: blocked_sliding_window_attention(q, k, v, 8, block_size=32))
    assert banded >= h * n * n * 4                               # at least one (h, n, n) float32 tensor
    assert blocked < h * n * n * 4 / 8


@pytest.mark.parametrize("call, words", [
    (lambda q, k, v: sliding_window_attention(q, k, v, -1), "window"),
    (lambda q, k, v: sliding_window_attention(q, k, v, 1.5), "window"),
    (lambda q, k, v: blocked_sliding_window_attention(q, k, v, 2, block_size=0), "block_size"),
    (lambda q, k, v: sliding_window_attention(q, k[:, :, :5], v, 2), "k must have q's shape"),
    (lambda q, k, v: sliding_window_attention(q, k, v[:, :, :5], 2), "v must be"),
    (lambda q, k, v: sliding_window_attention(q, k, v, 2, key_padding_mask=torch.ones(2, 13)), "bool"),
    (lambda q, k, v: blocked_sliding_window_attention(q, k, v, 2, key_padding_mask=torch.ones(2, 12, dtype=torch.bool)),
     r"key_padding_mask must be \(B, T\)"),
    (lambda q, k, v: linear_attention(q, k, v[..., 0]), "same number of dims"),
    (lambda q, k, v: linear_attention(q, k, v, key_padding_mask=torch.ones(3, 13, dtype=torch.bool)),
     "key_padding_mask"),
    (lambda q, k, v: chunked_causal_linear_attention(q, k, v, chunk_size=0), "chunk_size"),
])
def test_errors_name_the_argument(call, words):
    q, k, v = qkv()
    with pytest.raises(ValueError, match=words):
        call(q, k, v)


# --- linear attention ------------------------------------------------------------------------------

def test_feature_map_is_elu_plus_one_and_positive():
    x = torch.linspace(-30, 5, 50, dtype=torch.float64)
    torch.testing.assert_close(elu_feature_map(x), torch.where(x > 0, x + 1, torch.exp(x)))
    assert (elu_feature_map(x) > 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_matches_explicit_sums(causal):
    q, k, v = qkv(T=9)
    real = torch.ones(2, 9, dtype=torch.bool)
    real[1, 6:] = False
    real[1, 0] = False
    for mask in (None, real):
        torch.testing.assert_close(linear_attention(q, k, v, causal, mask), linear_loop(q, k, v, causal, mask))


def test_chunked_causal_linear_attention_equals_the_cumsum_version():
    q, k, v = qkv(T=23)
    expected = linear_attention(q, k, v, causal=True)
    for chunk in (1, 4, 7, 23, 100):
        torch.testing.assert_close(chunked_causal_linear_attention(q, k, v, chunk), expected)


def test_linear_attention_no_key_gives_zeros_and_finite_gradients():
    q, k, v = (t.requires_grad_(True) for t in qkv(T=6))
    real = torch.ones(2, 6, dtype=torch.bool)
    real[0] = False                                   # no real key at all
    real[1, :2] = False                               # causal: positions 0, 1 have seen none yet
    out = linear_attention(q, k, v, key_padding_mask=real)
    assert (out[0] == 0).all() and not out.isnan().any()
    out_c = linear_attention(q, k, v, causal=True, key_padding_mask=real)
    assert (out_c[1, :, :2] == 0).all() and not out_c[1, :, 2:].eq(0).all()
    (out.sum() + out_c.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_linear_attention_memory_grows_linearly():
    torch.manual_seed(0)
    with torch.no_grad():
        small = peak_memory(lambda: linear_attention(*(torch.randn(1, 2, 512, 16) for _ in range(3))))
        big = peak_memory(lambda: linear_attention(*(torch.randn(1, 2, 2048, 16) for _ in range(3))))
    assert 3 < big / small < 5                        # 4x the positions, about 4x the memory


# --- the small model and the tasks ------------------------------------------------------------------

def test_long_tasks_have_the_promised_targets():
    x, y = make_long_task("shift", 3, 20, generator=torch.Generator().manual_seed(0))
    assert (y[:, :3] == -100).all() and y[:, 3:].equal(x[:, :-3])
    x, y = make_long_task("first", 3, 20, generator=torch.Generator().manual_seed(0))
    assert (y[:, 0] == -100).all() and (y[:, 1:] == x[:, :1]).all()
    with pytest.raises(ValueError, match="task"):
        make_long_task("reverse", 2, 5)


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_model_shapes_and_window_locality(kind):
    torch.manual_seed(0)
    model = LongSequenceModel(16, kind, d_model=16, num_heads=2, window=2).eval()
    x = torch.randint(16, (2, 30))
    logits = model(x)
    assert logits.shape == (2, 30, 16)
    if kind == "window":   # changing token 0 cannot change outputs further than the window (one layer)
        x2 = x.clone()
        x2[:, 0] = (x[:, 0] + 1) % 16
        changed = (model(x2) - logits).abs().amax(dim=(0, 2)) > 1e-6
        assert changed[:3].any() and not changed[3:].any()


def test_attention_block_rejects_an_unknown_kind_and_training_runs():
    with pytest.raises(ValueError, match="kind"):
        AttentionBlock(8, 2, "sparse", 2)
    result = train_long_task("window", "shift", steps=2, length=16, batch_size=4, n_test=4)
    assert set(result) == {"model", "accuracy", "far_accuracy", "seconds"}
    assert 0.0 <= result["accuracy"] <= 1.0


# --- KV cache helpers ---------------------------------------------------------------------------

def test_greedy_steps_cache_on_and_off_agree_and_cache_size_matches_the_formula():
    torch.manual_seed(0)
    model = make_transformer(30, 30, d_model=16, num_heads=2, num_layers=2, d_ff=32)
    src = torch.randint(4, 30, (3, 7))
    lengths = torch.tensor([7, 5, 2])
    tok_c, logits_c, state_c = greedy_steps(model, src, lengths, 9, use_cache=True)
    tok_r, logits_r, state_r = greedy_steps(model, src, lengths, 9, use_cache=False)
    assert tok_c.shape == (3, 9) and logits_c.shape == (3, 9, 30)
    assert tok_c.equal(tok_r)
    assert (logits_c - logits_r).abs().max() < 1e-5
    assert state_c.cache_bytes() == kv_cache_bytes(2, 3, 9, 16) and state_r.cache_bytes() == 0
    assert model.use_cache is True and model.training     # settings restored


def test_cache_setting_restores_after_an_error_and_steps_are_checked():
    model = make_transformer(10, 10, d_model=8, num_heads=2, num_layers=1, d_ff=16)
    with pytest.raises(RuntimeError):
        with cache_setting(model, False):
            assert model.use_cache is False
            raise RuntimeError("boom")
    assert model.use_cache is True
    with pytest.raises(ValueError, match="steps"):
        greedy_steps(model, torch.randint(4, 10, (1, 3)), torch.tensor([3]), 0)
