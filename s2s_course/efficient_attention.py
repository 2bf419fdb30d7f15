"""Cheaper attention for long sequences: a sliding window, and linear attention.

Full attention compares every query with every key: a (T, T) score matrix per head, so time and
memory grow as T^2. Two ways around it (chapter 11):

* **Sliding-window (local) attention** (Longformer, Beltagy et al. 2020): query i may only look at
  keys j with |i - j| <= window (causal: i - window <= j <= i). Written once with a banded mask
  (clear, but it still builds the (T, T) scores) and once **blocked**: the queries in blocks of
  ``block_size``, each block against the keys it can reach, so at most
  (block_size, block_size + 2 window) scores exist at a time: memory O(T * window).
* **Linear attention** (Katharopoulos et al. 2020): replace exp(q . k) by phi(q) . phi(k) with
  phi(x) = elu(x) + 1 > 0. Then sum_j phi(q_i).phi(k_j) v_j = phi(q_i)^T (sum_j phi(k_j) v_j^T), and
  the sum in brackets, a (d, d_v) matrix, is computed once for all queries: O(T d d_v), no (T, T).
  Causal: the sum runs over j <= i only, a cumulative sum over positions.

Shapes follow ``s2s_course.self_attention``: q (..., T, d), k (..., T, d), v (..., T, d_v),
usually (B, h, T, d); ``key_padding_mask`` (B, T) bool, True = a real key. A query with no key it
may attend to gets zeros, never NaN.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from s2s_course.positional import make_positional
from s2s_course.self_attention import scaled_dot_product_attention


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_padding_mask: torch.Tensor | None) -> None:
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(f"q, k, v must be (..., T, d), (..., T, d), (..., T, d_v) with the same "
                         f"number of dims, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[:-1] != q.shape[:-1] or k.size(-1) != q.size(-1):
        raise ValueError(f"k must have q's shape {tuple(q.shape)} (self-attention: the same "
                         f"positions), got {tuple(k.shape)}")
    if v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f"v must be (..., T, d_v) with the leading dims {tuple(k.shape[:-1])} "
                         f"of k, got {tuple(v.shape)}")
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(f"key_padding_mask must be bool (True = real key), got "
                             f"{key_padding_mask.dtype}")
        if key_padding_mask.dim() != 2 or key_padding_mask.size(0) != q.size(0) \
                or key_padding_mask.size(1) != q.size(-2):
            raise ValueError(f"key_padding_mask must be (B, T) = ({q.size(0)}, {q.size(-2)}), "
                             f"got {tuple(key_padding_mask.shape)}")


def _check_window(window: int) -> None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise ValueError(f"window must be an int >= 0 (how far a query looks to each side), "
                         f"got {window!r}")


def _padding_to_scores(key_padding_mask: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B, T) -> (B, 1, ..., 1, T): broadcasts against scores (B, ..., T_q, T)."""
    B, T = key_padding_mask.shape
    return key_padding_mask.view(B, *([1] * (ndim - 2)), T)


# --------------------------------------------------------------------------------------------
# Sliding-window attention
# --------------------------------------------------------------------------------------------

def band_mask(T: int, window: int, causal: bool = False,
              device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) bool, True where key j is within the window of query i:
    |i - j| <= window, or with ``causal`` i - window <= j <= i."""
    _check_window(window)
    i = torch.arange(T, device=device).unsqueeze(1)                        # (T, 1) queries
    j = torch.arange(T, device=device).unsqueeze(0)                        # (1, T) keys
    offset = i - j                                                        # (T, T): how far back
    if causal:
        return (offset >= 0) & (offset <= window)
    return offset.abs() <= window


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                             causal: bool = False,
                             key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Local attention with a banded mask: full attention with every key outside
    |i - j| <= window (causal: 0 <= i - j <= window) hidden. q, k (..., T, d), v (..., T, d_v)
    -> (..., T, d_v). Clear, and as costly as full attention: it still builds (T, T) scores."""
    _check_qkv(q, k, v, key_padding_mask)
    _check_window(window)
    mask = band_mask(q.size(-2), window, causal, q.device)                 # (T, T)
    if key_padding_mask is not None:
        mask = mask & _padding_to_scores(key_padding_mask, q.dim())        # (B, 1.., T, T)
    return scaled_dot_product_attention(q, k, v, mask)[0]


def blocked_sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                     window: int, causal: bool = False,
                                     key_padding_mask: torch.Tensor | None = None,
                                     block_size: int = 64) -> torch.Tensor:
    """The same result as ``sliding_window_attention`` without ever building (T, T) scores.

    Queries go in blocks [s, e) of ``block_size``; a block can only reach the keys
    [s - window, e + window) (causal: [s - window, e)), so each block is one small attention of
    (e - s) queries against at most block_size + 2 window keys. Peak memory O(T (block + window))."""
    _check_qkv(q, k, v, key_padding_mask)
    _check_window(window)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
    T = q.size(-2)
    outputs = []
    for s in range(0, T, block_size):
        e = min(s + block_size, T)                                        # queries [s, e)
        lo, hi = max(0, s - window), (e if causal else min(T, e + window))  # keys [lo, hi)
        i = torch.arange(s, e, device=q.device).unsqueeze(1)              # (e - s, 1)
        j = torch.arange(lo, hi, device=q.device).unsqueeze(0)            # (1, hi - lo)
        offset = i - j
        mask = ((offset >= 0) & (offset <= window)) if causal else (offset.abs() <= window)
        if key_padding_mask is not None:
            mask = mask & _padding_to_scores(key_padding_mask[:, lo:hi], q.dim())
        out, _ = scaled_dot_product_attention(q[..., s:e, :], k[..., lo:hi, :], v[..., lo:hi, :],
                                              mask)                        # (..., e - s, d_v)
        outputs.append(out)
    return torch.cat(outputs, dim=-2)                                     # (..., T, d_v)


# --------------------------------------------------------------------------------------------
# Linear attention
# --------------------------------------------------------------------------------------------

def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1: positive everywhere, so phi(q) . phi(k) > 0 can stand in for exp."""
    return F.elu(x) + 1.0


def _divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num (..., T, d_v) / den (..., T); 0 where den == 0 (no key seen: nothing to average)."""
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where((den > 0).unsqueeze(-1), num / safe.unsqueeze(-1), torch.zeros_like(num))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                     key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """out_i = phi(q_i)^T S / phi(q_i)^T z with S = sum_j phi(k_j) v_j^T (d, d_v), z = sum_j phi(k_j) (d,);
    with ``causal`` the sums run over j <= i (cumulative sums). q, k (..., T, d), v (..., T, d_v)
    -> (..., T, d_v). Padded keys (key_padding_mask False) add nothing to S and z."""
    _check_qkv(q, k, v, key_padding_mask)
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)                  # (..., T, d)
    if key_padding_mask is not None:
        keep = _padding_to_scores(key_padding_mask, q.dim()).transpose(-2, -1)  # (B, 1.., T, 1)
        phi_k = phi_k * keep.to(phi_k.dtype)                               # padded keys: phi = 0
    if not causal:
        S = phi_k.transpose(-2, -1) @ v                                    # (..., d, d_v): once
        z = phi_k.sum(dim=-2)                                              # (..., d)
        num = phi_q @ S                                                    # (..., T, d_v)
        den = (phi_q * z.unsqueeze(-2)).sum(-1)                            # (..., T)
        return _divide(num, den)
    # causal: S_i = sum_{j <= i} phi(k_j) v_j^T, one (d, d_v) matrix per position
    S = torch.cumsum(phi_k.unsqueeze(-1) * v.unsqueeze(-2), dim=-3)        # (..., T, d, d_v)
    z = torch.cumsum(phi_k, dim=-2)                                       # (..., T, d)
    num = (phi_q.unsqueeze(-2) @ S).squeeze(-2)                            # (..., T, d_v)
    den = (phi_q * z).sum(-1)                                              # (..., T)
    return _divide(num, den)


def chunked_causal_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                    chunk_size: int = 64) -> torch.Tensor:
    """Causal linear attention without the (T, d, d_v) tensor of cumulative sums: within a chunk a
    small masked (c, c) product, across chunks a running state S (d, d_v) and z (d,).
    Same result as ``linear_attention(q, k, v, causal=True)``; memory O(T d + c^2 + d d_v)."""
    _check_qkv(q, k, v, None)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    S = q.new_zeros(*q.shape[:-2], q.size(-1), v.size(-1))                 # (..., d, d_v)
    z = q.new_zeros(*q.shape[:-2], q.size(-1))                             # (..., d)
    outputs = []
    for s in range(0, q.size(-2), chunk_size):
        fq, fk, vc = phi_q[..., s:s + chunk_size, :], phi_k[..., s:s + chunk_size, :], v[..., s:s + chunk_size, :]
        within = (fq @ fk.transpose(-2, -1)).tril()                        # (..., c, c): j <= i
        num = fq @ S + within @ vc                                         # earlier chunks + this one
        den = (fq * z.unsqueeze(-2)).sum(-1) + within.sum(-1)              # (..., c)
        outputs.append(_divide(num, den))
        S = S + fk.transpose(-2, -1) @ vc                                  # carry the state on
        z = z + fk.sum(dim=-2)
    return torch.cat(outputs, dim=-2)


# --------------------------------------------------------------------------------------------
# A small model to compare them: embedding + positions -> attention blocks -> readout
# --------------------------------------------------------------------------------------------

ATTENTIONS = ("full", "window", "linear")


class AttentionBlock(nn.Module):
    """Pre-LN block, x + attn(LN(x)), then x + FFN(LN(x)), with one of the three attentions."""

    def __init__(self, d_model: int, num_heads: int, kind: str, window: int) -> None:
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"kind must be one of {ATTENTIONS}, got {kind!r}")
        self.kind, self.window, self.h, self.d_k = kind, window, num_heads, d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(),
                                 nn.Linear(2 * d_model, d_model))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.kind == "full":
            return F.scaled_dot_product_attention(q, k, v)
        if self.kind == "window":  # the banded mask, fused: at these short lengths the fastest
            mask = band_mask(q.size(-2), self.window, device=q.device)     # (T, T)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return linear_attention(q, k, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.h, self.d_k).permute(2, 0, 3, 1, 4)
        a = self.attend(q, k, v)                                           # (B, h, T, d_k)
        x = x + self.out(a.transpose(1, 2).reshape(B, T, D))
        return x + self.ffn(self.norm2(x))


class LongSequenceModel(nn.Module):
    """Tokens (B, T) -> logits (B, T, V): embedding x sqrt(D) + sinusoidal positions, layers of
    ``AttentionBlock`` with attention ``kind`` ("full", "window", "linear"), LN, linear readout."""

    def __init__(self, vocab_size: int, kind: str, d_model: int = 64, num_heads: int = 2,
                 num_layers: int = 1, window: int = 8, max_len: int = 4096) -> None:
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=d_model ** -0.5)        # x sqrt(D): unit size
        self.positional = make_positional("sinusoidal", d_model, max_len)
        self.blocks = nn.ModuleList(AttentionBlock(d_model, num_heads, kind, window)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.readout = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.positional(self.embedding(x) * math.sqrt(self.d_model), 0)
        for block in self.blocks:
            h = block(h)
        return self.readout(self.norm(h))


def make_long_task(task: str, batch_size: int, length: int, vocab_size: int = 16,
                   offset: int = 3, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens x (B, T) and targets y (B, T); y = -100 where there is nothing to predict.

    "shift": y_t = x_{t - offset} (a nearby token: a window >= offset sees it).
    "first": y_t = x_0 for every t >= 1 (a token up to T - 1 positions away)."""
    if task not in ("shift", "first"):
        raise ValueError(f"task must be 'shift' or 'first', got {task!r}")
    x = torch.randint(vocab_size, (batch_size, length), generator=generator)
    y = torch.full_like(x, -100)
    if task == "shift":
        y[:, offset:] = x[:, :-offset]
    else:
        y[:, 1:] = x[:, :1]
    return x, y


def train_long_task(kind: str, task: str, steps: int, length: int = 256, batch_size: int = 32,
                    vocab_size: int = 16, window: int = 8, num_layers: int = 1, lr: float = 3e-3,
                    seed: int = 0, n_test: int = 256) -> dict:
    """Train a ``LongSequenceModel`` on ``make_long_task`` for ``steps`` Adam steps; return
    {"model", "accuracy" (test, positions with a target), "far_accuracy" (positions t > window +
    offset, which a window of ``window`` cannot connect to their target for "first"), "seconds"}."""
    import time

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = LongSequenceModel(vocab_size, kind, window=window, num_layers=num_layers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        x, y = make_long_task(task, batch_size, length, vocab_size, generator=g)
        loss = F.cross_entropy(model(x).transpose(1, 2), y, ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    x, y = make_long_task(task, n_test, length, vocab_size,
                          generator=torch.Generator().manual_seed(10_000 + seed))
    with torch.no_grad():
        pred = model(x).argmax(-1)
    has = y != -100
    far = has & (torch.arange(length) > window + 3)
    correct = pred == y
    return {"model": model, "accuracy": correct[has].float().mean().item(),
            "far_accuracy": correct[far].float().mean().item(), "seconds": seconds}


__all__ = ["band_mask", "sliding_window_attention", "blocked_sliding_window_attention",
           "elu_feature_map", "linear_attention", "chunked_causal_linear_attention", "ATTENTIONS",
           "AttentionBlock", "LongSequenceModel", "make_long_task", "train_long_task"]
