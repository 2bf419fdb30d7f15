"""Scaled dot-product attention, masks and positional encodings against independent references:
``torch.nn.functional.scaled_dot_product_attention``, hand-computed tiny cases and trigonometry.
(MultiHeadAttention has its own tests in test_multi_head_attention.py.)"""
import math

import pytest
import torch
import torch.nn.functional as F

from s2s_course.benchmark import MATMULS, count_ops, loglog_slope, peak_memory, time_call
from s2s_course.positional import (LearnedPositionalEmbedding, SinusoidalPositionalEncoding, frequencies,
                                   make_positional, relative_shift_matrix, sinusoidal_encoding)
from s2s_course.self_attention import causal_mask, padding_mask, scaled_dot_product_attention

B, H, T, S, D = 2, 3, 4, 6, 8


def _qkv(T=T, S=S, d=D, dv=5, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, d, generator=g, dtype=dtype), torch.randn(B, H, S, d, generator=g, dtype=dtype),
            torch.randn(B, H, S, dv, generator=g, dtype=dtype))


# --------------------------------------------------------------------------- masks

def test_padding_mask_by_hand():
    expected = torch.tensor([[True, True, True, False], [True, False, False, False], [True] * 4])
    assert torch.equal(padding_mask(torch.tensor([3, 1, 4])), expected)
    assert torch.equal(padding_mask(torch.tensor([1, 0]), max_len=3),
                       torch.tensor([[True, False, False], [False, False, False]]))


def test_padding_mask_rejects_bad_arguments_by_name():
    with pytest.raises(ValueError, match="lengths"):
        padding_mask(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="lengths"):
        padding_mask(torch.tensor([2, -1]))
    with pytest.raises(ValueError, match="lengths"):
        padding_mask(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="max_len"):
        padding_mask(torch.tensor([2, 5]), max_len=3)     # would silently cut a real token


def test_causal_mask_by_hand_and_with_a_cache():
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    # 2 new queries at positions 3 and 4 of a sequence of 5 (3 cached): each sees itself and all before
    assert torch.equal(causal_mask(2, 5), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    # the same as F.scaled_dot_product_attention's is_causal for T == S
    q, k, v = _qkv(T=S)
    ours, _ = scaled_dot_product_attention(q, k, v, causal_mask(S))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6, rtol=0)


def test_causal_mask_rejects_bad_sizes_by_name():
    with pytest.raises(ValueError, match="T"):
        causal_mask(0)
    with pytest.raises(ValueError, match="S"):
        causal_mask(4, 3)


# --------------------------------------------------------------------------- attention itself

def test_sdpa_by_hand_on_a_tiny_case():
    q = torch.tensor([[1.0, 0.0]])                     # (T=1, d=2)
    k = torch.tensor([[2.0, 0.0], [0.0, 2.0]])         # (S=2, d=2)
    v = torch.tensor([[1.0], [3.0]])
    out, w = scaled_dot_product_attention(q, k, v)
    # scores = (2, 0) / sqrt(2); weights = softmax
    e = math.exp(2 / math.sqrt(2))
    torch.testing.assert_close(w, torch.tensor([[e / (e + 1), 1 / (e + 1)]]))
    torch.testing.assert_close(out, torch.tensor([[(e * 1 + 3) / (e + 1)]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal", "padding+causal", "per-head"])
def test_sdpa_equals_torch_with_masks(dtype, mask_kind):
    q, k, v = _qkv(dtype=dtype)
    key_mask = padding_mask(torch.tensor([6, 3]), S)[:, None, None, :]         # (B, 1, 1, S)
    causal = causal_mask(T, S)                                                 # (T, S)
    g = torch.Generator().manual_seed(1)
    per_head = torch.rand(B, H, T, S, generator=g) > 0.3
    per_head[..., 0] = True                                                    # no empty rows here
    mask = {"none": None, "padding": key_mask, "causal": causal, "padding+causal": key_mask & causal,
            "per-head": per_head}[mask_kind]
    ours, weights = scaled_dot_product_attention(q, k, v, mask)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0)
    assert ours.dtype == dtype and weights.shape == (B, H, T, S)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T, dtype=dtype))
    if mask is not None:
        assert (weights.masked_select(~mask.expand(B, H, T, S)) == 0).all()


def test_sdpa_scale_argument_equals_torch():
    q, k, v = _qkv()
    ours, _ = scaled_dot_product_attention(q, k, v, scale=0.5)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, scale=0.5), atol=1e-6, rtol=0)


def test_sdpa_gradients_equal_torch():
    q, k, v = (x.double().requires_grad_(True) for x in _qkv())
    mask = padding_mask(torch.tensor([6, 2]), S)[:, None, None, :]
    g = torch.randn(B, H, T, 5, dtype=torch.float64)
    (scaled_dot_product_attention(q, k, v, mask)[0] * g).sum().backward()
    ours = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    (F.scaled_dot_product_attention(q, k, v, attn_mask=mask) * g).sum().backward()
    for a, b in zip(ours, (q.grad, k.grad, v.grad)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_fully_masked_row_gives_zeros_and_finite_gradients():
    q, k, v = (x.requires_grad_(True) for x in _qkv())
    mask = padding_mask(torch.tensor([0, 4]), S)[:, None, None, :]   # sentence 0 has no real key
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert not torch.isnan(out).any() and not torch.isnan(weights).any()
    assert (out[0] == 0).all() and (weights[0] == 0).all()
    out.sum().backward()
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all()
    assert (q.grad[0] == 0).all() and (k.grad[0] == 0).all() and (v.grad[0] == 0).all()
    # the other sentence is untouched by sentence 0's empty mask
    ref = F.scaled_dot_product_attention(q[1:], k[1:], v[1:], attn_mask=mask[1:])
    torch.testing.assert_close(out[1:], ref, atol=1e-6, rtol=0)


def test_causal_output_does_not_depend_on_the_future():
    torch.manual_seed(0)
    x = torch.randn(1, 7, D)
    W_q, W_k, W_v = (torch.randn(D, D) for _ in range(3))

    def self_attend(x):
        return scaled_dot_product_attention(x @ W_q, x @ W_k, x @ W_v, causal_mask(x.size(1)))[0]

    before = self_attend(x)
    for t in range(7):
        changed = x.clone()
        changed[0, t] = torch.randn(D) * 10                  # change token t only
        after = self_attend(changed)
        assert torch.equal(after[0, :t], before[0, :t]), f"changing token {t} changed an earlier output"
        assert not torch.allclose(after[0, t], before[0, t])
    # without the mask, changing the last token changes the first output
    no_mask = lambda x: scaled_dot_product_attention(x @ W_q, x @ W_k, x @ W_v)[0]  # noqa: E731
    changed = x.clone()
    changed[0, -1] += 1.0
    assert not torch.allclose(no_mask(changed)[0, 0], no_mask(x)[0, 0])


def test_self_attention_is_permutation_equivariant_and_positions_break_it():
    torch.manual_seed(0)
    x = torch.randn(1, 9, D)
    W_q, W_k, W_v = (torch.randn(D, D) for _ in range(3))
    attend = lambda x: scaled_dot_product_attention(x @ W_q, x @ W_k, x @ W_v)[0]  # noqa: E731
    perm = torch.randperm(9)
    torch.testing.assert_close(attend(x[:, perm]), attend(x)[:, perm], atol=1e-5, rtol=1e-5)
    pe = SinusoidalPositionalEncoding(D, max_len=16)
    assert not torch.allclose(attend(pe(x[:, perm])), attend(pe(x))[:, perm], atol=1e-3)


def test_dropout_is_off_at_zero_and_keeps_the_expectation():
    q, k, v = _qkv()
    torch.manual_seed(0)
    a, _ = scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    b, _ = scaled_dot_product_attention(q, k, v)
    assert torch.equal(a, b)
    _, w = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert ((w == 0) | (w > 0)).all() and (w == 0).any()


def test_sdpa_errors_name_the_argument():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="q, k, v"):
        scaled_dot_product_attention(q[0, 0, 0], k, v)                 # q is 1-D
    with pytest.raises(ValueError, match="k's last dim"):
        scaled_dot_product_attention(q, k[..., :3], v)
    with pytest.raises(ValueError, match="v must have S"):
        scaled_dot_product_attention(q, k, v[..., :2, :])
    with pytest.raises(ValueError, match="mask must be bool"):
        scaled_dot_product_attention(q, k, v, torch.ones(T, S))
    with pytest.raises(ValueError, match="mask of shape"):
        scaled_dot_product_attention(q, k, v, torch.ones(T, S + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask of shape"):                # would enlarge the output
        scaled_dot_product_attention(q[0], k[0], v[0], torch.ones(B, H, T, S, dtype=torch.bool))
    with pytest.raises(ValueError, match="dropout_p"):
        scaled_dot_product_attention(q, k, v, dropout_p=1.5)


# --------------------------------------------------------------------------- positional encodings

def test_sinusoidal_table_by_hand():
    pe = sinusoidal_encoding(3, 4)
    w = [1.0, 10000 ** (-2 / 4)]
    expected = torch.tensor([[math.sin(p * w[0]), math.cos(p * w[0]), math.sin(p * w[1]), math.cos(p * w[1])]
                             for p in range(3)])
    torch.testing.assert_close(pe, expected)
    torch.testing.assert_close(frequencies(4), torch.tensor(w))


def test_sinusoidal_table_is_bounded_with_unit_pairs():
    pe = sinusoidal_encoding(500, 64)
    assert pe.abs().max() <= 1.0
    pairs = pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2              # sin^2 + cos^2 per frequency
    torch.testing.assert_close(pairs, torch.ones_like(pairs))
    torch.testing.assert_close(pe.norm(dim=1), torch.full((500,), math.sqrt(32)))


@pytest.mark.parametrize("k", [1, 5, 37, -3])
def test_shift_by_k_is_one_fixed_rotation(k):
    d = 32
    pe = sinusoidal_encoding(200, d).double()
    M = relative_shift_matrix(k, d).double()
    p = torch.arange(max(0, -k), 200 - max(0, k))
    # PE[p + k] = M_k PE[p] for every p, with the same M_k
    torch.testing.assert_close(pe[p + k], pe[p] @ M.T, atol=2e-5, rtol=0)
    torch.testing.assert_close(M @ M.T, torch.eye(d, dtype=torch.float64), atol=1e-6, rtol=0)   # a rotation
    assert torch.count_nonzero(M) == 2 * d                     # 2x2 blocks only


def test_dot_product_depends_on_the_offset_only():
    d = 64
    pe = sinusoidal_encoding(300, d).double()
    for k in [0, 1, 4, 30]:
        dots = (pe[:200] * pe[k:200 + k]).sum(1)                # PE(p) . PE(p + k) for p = 0..199
        expected = torch.cos(k * frequencies(d).double()).sum()  # sum_i cos(k w_i): no p in it
        torch.testing.assert_close(dots, expected.expand(200), atol=1e-4, rtol=0)


def test_positional_modules_add_the_right_rows_and_check_inputs():
    x = torch.zeros(2, 5, 8)
    sin = SinusoidalPositionalEncoding(8, max_len=20)
    torch.testing.assert_close(sin(x, offset=3)[1], sinusoidal_encoding(20, 8)[3:8])
    learned = LearnedPositionalEmbedding(8, max_len=10)
    torch.testing.assert_close(learned(x, offset=2)[0], learned.embedding.weight[2:7])
    with pytest.raises(ValueError, match="max_len"):
        learned(torch.zeros(1, 11, 8))                          # cannot extrapolate
    with pytest.raises(ValueError, match="x must be"):
        sin(torch.zeros(5, 8))
    with pytest.raises(ValueError, match="d_model"):
        sinusoidal_encoding(4, 7)
    with pytest.raises(ValueError, match="max_len"):
        sinusoidal_encoding(0, 8)
    with pytest.raises(ValueError, match="kind"):
        make_positional("rotary", 8)
    assert isinstance(make_positional("learned", 8), LearnedPositionalEmbedding)
    assert not list(sin.parameters())                           # nothing to learn


# --------------------------------------------------------------------------- benchmark helpers

def test_peak_memory_counts_live_intermediates_by_hand():
    x = torch.randn(256, 64)

    def two_products():
        s = x @ x.T                                             # 256*256*4 bytes
        a = s.softmax(-1)                                       # another 256*256*4, s still alive
        return a @ x                                            # 256*64*4

    assert peak_memory(two_products) == 2 * 256 * 256 * 4 + 256 * 64 * 4

    def freed_early():
        s = x @ x.T
        del s                                                   # freed before the next product
        return x @ x.T

    assert peak_memory(freed_early) == 256 * 256 * 4
    assert peak_memory(lambda: x.T) == 0                        # a view allocates nothing


def test_count_ops_sees_one_matmul_per_gru_step():
    gru = torch.nn.GRU(4, 4, batch_first=True)
    for n in (3, 10):
        counts = count_ops(lambda: gru(torch.randn(1, n, 4)), MATMULS)
        assert sum(counts.values()) == n + 1                    # input projection + one per step


def test_time_call_and_slope():
    assert time_call(lambda: None, repeat=3, statistic="min") >= 0
    with pytest.raises(ValueError, match="statistic"):
        time_call(lambda: None, statistic="mean")
    assert loglog_slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0)
