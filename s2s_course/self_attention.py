"""Self-attention and multi-head attention (Vaswani et al. 2017, Section 3.2).

Chapter 5 read Luong's dot score as a query-key-value look-up with one query, the decoder state.
Self-attention makes queries, keys and values from the *same* sequence X (B, T, D)::

    Q = X W_Q,   K = X W_K,   V = X W_V
    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V        eq. (1)

so every position looks at every other position in one matrix product, with no recurrence.
Multi-head attention runs h such look-ups side by side in d_k = D / h dimensional subspaces and
mixes them with an output projection W_O (eq. (4)-(5)).

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a bool mask, True = this
query may attend to this key. ``padding_mask`` hides padded keys, ``causal_mask`` hides the future.
A query row with *no* allowed key gets zeros, never NaN.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------------------------
# Masks: True = may attend
# --------------------------------------------------------------------------------------------

def padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, S) bool, True at the first ``lengths[b]`` positions (the real tokens)."""
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be (B,) integers, got shape {tuple(lengths.shape)} "
                         f"{lengths.dtype}")
    if len(lengths) and int(lengths.min()) < 0:
        raise ValueError(f"lengths must be >= 0, got {lengths.tolist()}")
    longest = int(lengths.max()) if len(lengths) else 0
    if max_len is not None and max_len < longest:
        raise ValueError(f"max_len={max_len} is shorter than the longest of lengths ({longest}): "
                         f"real tokens would be cut off")
    S = longest if max_len is None else max_len
    positions = torch.arange(S, device=lengths.device)                  # (S,)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)                 # (B, S)


def causal_mask(T: int, S: int | None = None, device: torch.device | str | None = None
                ) -> torch.Tensor:
    """(T, S) bool, True where key position s <= query position t (+ S - T): no peeking ahead.

    With S > T the T queries are the *last* T positions of a sequence of S (decoding with a
    KV cache: the new query sees every cached key and itself)."""
    S = T if S is None else S
    if T < 1 or S < T:
        raise ValueError(f"causal_mask needs 1 <= T <= S, got T={T}, S={S}")
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def _check_mask(mask: torch.Tensor, shape: tuple[int, ...]) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool (True = may attend), got {mask.dtype}")
    try:
        fits = torch.broadcast_shapes(mask.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:  # the mask may only be expanded to the scores, never enlarge them
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' "
                         f"shape {shape} (..., T, S)")


# --------------------------------------------------------------------------------------------
# Scaled dot-product attention, eq. (1)
# --------------------------------------------------------------------------------------------

def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                                 scale: float | None = None
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d_k)) v, written out. Returns (output, weights).

    q (..., T, d_k), k (..., S, d_k), v (..., S, d_v); mask broadcastable to (..., T, S), bool,
    True = may attend. output (..., T, d_v), weights (..., T, S). ``dropout_p`` drops weights
    (training only: pass 0.0 at eval). Same result as ``F.scaled_dot_product_attention``.
    """
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(f"q, k, v must be (..., T, d_k), (..., S, d_k), (..., S, d_v) with the "
                         f"same number of dims, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if k.size(-1) != q.size(-1):
        raise ValueError(f"k's last dim must equal q's d_k={q.size(-1)}, got {tuple(k.shape)}")
    if v.size(-2) != k.size(-2):
        raise ValueError(f"v must have S={k.size(-2)} positions like k, got {tuple(v.shape)}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale                           # (..., T, S)
    if mask is not None:
        _check_mask(mask, tuple(scores.shape))
        scores = scores.masked_fill(~mask, float("-inf"))                # no weight where False
    weights = torch.softmax(scores, dim=-1)                              # (..., T, S)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)   # a fully masked row: zeros, not NaN
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights                                          # (..., T, d_v)


# --------------------------------------------------------------------------------------------
# Multi-head attention, eq. (4)-(5)
# --------------------------------------------------------------------------------------------

class MultiHeadAttention(nn.Module):
    """h heads of scaled dot-product attention in d_k = d_model / h dimensional subspaces.

        head_i = Attention(Q W_Q^i, K W_K^i, V W_V^i),   MultiHead = [head_1; ...; head_h] W_O

    The h projections W_Q^i are one (d_model, d_model) matrix cut into h slices: project once,
    then ``split_heads`` (B, T, D) -> (B, h, T, d_k). ``fused=True`` runs the attention itself
    through ``F.scaled_dot_product_attention`` (a fused kernel where the backend has one);
    ``fused=False``, or ``need_weights=True``, runs the manual path above, which can return the
    weights. Parameters: 4 D^2 + 4 D (with biases).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 fused: bool = True) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model, self.num_heads, self.d_k = d_model, num_heads, d_model // num_heads
        self.dropout, self.fused = dropout, fused
        self.W_q = nn.Linear(d_model, d_model, bias=bias)
        self.W_k = nn.Linear(d_model, d_model, bias=bias)
        self.W_v = nn.Linear(d_model, d_model, bias=bias)
        self.W_o = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, h, T, d_k)."""
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.d_k).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, T, d_k) -> (B, T, D): the heads side by side again."""
        B, _, T, _ = x.shape
        return x.transpose(1, 2).reshape(B, T, self.d_model)

    def project_kv(self, key: torch.Tensor, value: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values split into heads, (B, h, S, d_k) each: what a KV cache stores."""
        return self.split_heads(self.W_k(key)), self.split_heads(self.W_v(value))

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None,
                value: torch.Tensor | None = None, *, key_padding_mask: torch.Tensor | None = None,
                causal: bool = False, need_weights: bool = False,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query (B, T, D); key, value (B, S, D), default: the query (self-attention).

        key_padding_mask (B, S) bool, True = a real key; causal=True hides later keys.
        kv: keys and values already projected and split, (B, h, S, d_k) each (cached);
        then key and value are ignored. Returns (output (B, T, D), weights (B, h, T, S) or None).
        """
        if query.dim() != 3 or query.size(-1) != self.d_model:
            raise ValueError(f"query must be (B, T, {self.d_model}), got {tuple(query.shape)}")
        B, T, _ = query.shape
        if kv is None:
            key = query if key is None else key
            value = key if value is None else value
            for name, x in (("key", key), ("value", value)):
                if x.dim() != 3 or x.size(0) != B or x.size(-1) != self.d_model:
                    raise ValueError(f"{name} must be ({B}, S, {self.d_model}), "
                                     f"got {tuple(x.shape)}")
            if value.size(1) != key.size(1):
                raise ValueError(f"key and value need the same length S, got {tuple(key.shape)} "
                                 f"and {tuple(value.shape)}")
            k, v = self.project_kv(key, value)                           # (B, h, S, d_k)
        else:
            k, v = kv
        S = k.size(2)
        q = self.split_heads(self.W_q(query))                            # (B, h, T, d_k)

        mask = None                                                      # broadcasts to (B, h, T, S)
        if key_padding_mask is not None:
            if key_padding_mask.shape != (B, S) or key_padding_mask.dtype != torch.bool:
                raise ValueError(f"key_padding_mask must be ({B}, {S}) bool (True = real key), "
                                 f"got {tuple(key_padding_mask.shape)} {key_padding_mask.dtype}")
            mask = key_padding_mask[:, None, None, :]                    # (B, 1, 1, S)
        if causal:
            future = causal_mask(T, S, device=query.device)              # (T, S)
            mask = future if mask is None else mask & future             # (B, 1, T, S)

        dropout_p = self.dropout if self.training else 0.0
        if self.fused and not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
            if mask is not None:  # rows with no key at all: zeros, as on the manual path
                out = out.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
            weights = None
        else:
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p)
        return self.W_o(self.merge_heads(out)), weights                 # (B, T, D)


__all__ = ["padding_mask", "causal_mask", "scaled_dot_product_attention", "MultiHeadAttention"]
