"""Positional encodings: telling attention *where* each token is (Vaswani et al. 2017, Section 3.5).

Self-attention treats its input as a set: permute the tokens and the outputs are permuted the
same way. Word order has to be added to the input. Two ways:

- ``SinusoidalPositionalEncoding``: a fixed table, for dimension pair i and position p
      PE[p, 2i] = sin(p * w_i),   PE[p, 2i+1] = cos(p * w_i),   w_i = 10000^(-2i / d_model)
  Each pair is a point turning on a circle at its own speed, so moving k positions is the same
  rotation for every p: PE[p + k] = PE[p] @ relative_shift_matrix(k).T (no parameters, any length).
- ``LearnedPositionalEmbedding``: one trained vector per position, up to ``max_len``.

Both add to the (scaled) token embeddings and take an ``offset``: the position of the first
token, which a decoder with a KV cache needs when it feeds one token at a time.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _check_d_model(d_model: int) -> None:
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 2 or d_model % 2:
        raise ValueError(f"d_model must be an even int >= 2, got {d_model!r}")


def frequencies(d_model: int, base: float = 10000.0) -> torch.Tensor:
    """w_i = base^(-2i / d_model) for i = 0 .. d_model/2 - 1: from 1 rad per position down to
    about 1/base (wavelengths 2 pi to 2 pi base)."""
    _check_d_model(d_model)
    return torch.exp(-math.log(base) * torch.arange(0, d_model, 2).float() / d_model)  # (D/2,)


def sinusoidal_encoding(max_len: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The (max_len, d_model) table: sin in the even dimensions, cos in the odd ones."""
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    angles = torch.arange(max_len).float().unsqueeze(1) * frequencies(d_model, base)  # (L, D/2)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe                                                            # (L, D)


def relative_shift_matrix(k: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The (D, D) matrix M_k with PE[p + k] = M_k @ PE[p] for every p: one 2x2 rotation by
    k * w_i per (sin, cos) pair, zeros elsewhere. It depends on k, not on p."""
    w = frequencies(d_model, base) * k                                   # (D/2,)
    M = torch.zeros(d_model, d_model)
    c, s = torch.cos(w), torch.sin(w)
    even = torch.arange(0, d_model, 2)
    # sin(a + b) = sin a cos b + cos a sin b;  cos(a + b) = cos a cos b - sin a sin b
    M[even, even], M[even, even + 1] = c, s
    M[even + 1, even], M[even + 1, even + 1] = -s, c
    return M


def _check_input(x: torch.Tensor, d_model: int, offset: int, max_len: int) -> None:
    if x.dim() != 3 or x.size(-1) != d_model:
        raise ValueError(f"x must be (B, T, {d_model}), got shape {tuple(x.shape)}")
    if offset < 0 or offset + x.size(1) > max_len:
        raise ValueError(f"positions {offset}..{offset + x.size(1) - 1} exceed max_len={max_len}")


class SinusoidalPositionalEncoding(nn.Module):
    """x (B, T, D) -> x + PE[offset : offset + T]. A buffer, not a parameter: nothing to learn."""

    def __init__(self, d_model: int, max_len: int = 1024, base: float = 10000.0) -> None:
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model, base), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        _check_input(x, self.d_model, offset, self.max_len)
        return x + self.pe[offset:offset + x.size(1)].to(x.dtype)        # (B, T, D)


class LearnedPositionalEmbedding(nn.Module):
    """x (B, T, D) -> x + E[offset : offset + T] with a trained table E (max_len, D), as in BERT
    and GPT. It cannot say anything about positions it never saw in training."""

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.embedding = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        _check_input(x, self.d_model, offset, self.max_len)
        positions = torch.arange(offset, offset + x.size(1), device=x.device)  # (T,)
        return x + self.embedding(positions).to(x.dtype)                 # (B, T, D)


POSITIONS = ("sinusoidal", "learned")


def make_positional(kind: str, d_model: int, max_len: int = 1024) -> nn.Module:
    """"sinusoidal" or "learned"."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(d_model, max_len)
    if kind == "learned":
        return LearnedPositionalEmbedding(d_model, max_len)
    raise ValueError(f"kind must be one of {POSITIONS}, got {kind!r}")


__all__ = ["frequencies", "sinusoidal_encoding", "relative_shift_matrix",
           "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding", "make_positional",
           "POSITIONS"]
