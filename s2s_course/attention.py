"""Attention: a soft, differentiable look-up over the encoder's outputs.

At every decoder step we have a *query* (the decoder state) and a sequence of *keys* (the encoder
outputs, one per source position). Attention does three things:

1. score every key against the query             -> scores  (B, S)
2. turn the scores into weights that sum to one  -> weights (B, S)   (softmax, padding masked out)
3. average the *values* with those weights       -> context (B, Hv)

The score functions are the ones from the papers:

- ``AdditiveScore``  v^T tanh(W q + U k)    Bahdanau et al. 2014, eq. (6) and appendix A.1.2
- ``DotScore``       q . k                  Luong et al. 2015, eq. (8) "dot"
- ``GeneralScore``   q^T W_a k              Luong et al. 2015, eq. (8) "general"
- ``ConcatScore``    v^T tanh(W_a [q; k])   Luong et al. 2015, eq. (8) "concat"

``Attention`` is global attention (every source position), ``LocalAttention`` is Luong's local-p
attention: it first predicts a source position and only looks at a window around it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

SCORES = ("additive", "dot", "general", "concat")


# --------------------------------------------------------------------------------------------
# Input checks: a wrong shape should fail here, with a message, not deep inside a matmul.
# --------------------------------------------------------------------------------------------

def _check_query_keys(query: torch.Tensor, keys: torch.Tensor,
                      query_dim: int | None = None, key_dim: int | None = None) -> None:
    hq = "Hq" if query_dim is None else str(query_dim)
    hk = "Hk" if key_dim is None else str(key_dim)
    if query.dim() != 2 or (query_dim is not None and query.size(1) != query_dim):
        raise ValueError(f"query must be (B, {hq}), got shape {tuple(query.shape)}")
    if (keys.dim() != 3 or keys.size(0) != query.size(0)
            or (key_dim is not None and keys.size(2) != key_dim)):
        raise ValueError(f"keys must be (B, S, {hk}) with B={query.size(0)}, "
                         f"got shape {tuple(keys.shape)}")


def _check_values_mask(keys: torch.Tensor, values: torch.Tensor,
                       mask: torch.Tensor | None) -> None:
    B, S, _ = keys.shape
    if values.dim() != 3 or values.shape[:2] != (B, S):
        raise ValueError(f"values must be (B, S, Hv) with (B, S)=({B}, {S}), "
                         f"got shape {tuple(values.shape)}")
    if mask is not None and (mask.dtype != torch.bool or mask.shape != (B, S)):
        raise ValueError(f"mask must be ({B}, {S}) bool (True = real token), "
                         f"got shape {tuple(mask.shape)} {mask.dtype}")


# --------------------------------------------------------------------------------------------
# Softmax that ignores padding
# --------------------------------------------------------------------------------------------

def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dimension (source positions) that gives padding exactly 0 weight.

    scores: (B, ..., S); mask: (B, S) bool, True = a real token to keep (None = keep all).
    The weights of every row sum to 1 over its kept positions. A row with *no* kept position
    (an empty source) has nothing to attend to: it gets all-zero weights, not NaN.
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)
    if scores.dim() < 2:
        raise ValueError(f"scores must be (B, ..., S), got shape {tuple(scores.shape)}")
    B, S = scores.size(0), scores.size(-1)
    if mask.dtype != torch.bool or mask.shape != (B, S):
        raise ValueError(f"mask must be ({B}, {S}) bool (True = keep), "
                         f"got shape {tuple(mask.shape)} {mask.dtype}")
    mask = mask.view(B, *([1] * (scores.dim() - 2)), S)   # (B, 1, ..., 1, S): broadcasts over ...
    scores = scores.masked_fill(~mask, float("-inf"))     # exp(-inf) = 0: padding gets no weight
    weights = torch.softmax(scores, dim=-1)
    # A fully masked row is all -inf, and softmax returns NaN there; give it zeros instead.
    return weights.masked_fill(~mask, 0.0)


# --------------------------------------------------------------------------------------------
# Score functions: forward(query (B, Hq), keys (B, S, Hk)) -> scores (B, S)
# --------------------------------------------------------------------------------------------

class AdditiveScore(nn.Module):
    """Bahdanau (additive) score  e_j = v^T tanh(W q + U k_j)  (Bahdanau et al. 2014, eq. (6)).

    A one-hidden-layer network that compares the query with each key; q and k may differ in size.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim
        self.W = nn.Linear(query_dim, attn_dim, bias=False)
        self.U = nn.Linear(key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        _check_query_keys(query, keys, self.query_dim, self.key_dim)
        hidden = torch.tanh(self.W(query).unsqueeze(1) + self.U(keys))  # (B, 1, A) + (B, S, A)
        return self.v(hidden).squeeze(-1)                                # (B, S)


class DotScore(nn.Module):
    """Luong dot score  e_j = q . k_j  (Luong et al. 2015, eq. (8)): no parameters, equal sizes."""

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        _check_query_keys(query, keys)
        if query.size(1) != keys.size(2):
            raise ValueError(f"dot score needs query and keys of the same size, got query "
                             f"{tuple(query.shape)} and keys {tuple(keys.shape)}")
        return torch.bmm(keys, query.unsqueeze(2)).squeeze(2)  # (B, S, H) @ (B, H, 1) -> (B, S)


class GeneralScore(nn.Module):
    """Luong general score  e_j = q^T W_a k_j  (Luong et al. 2015, eq. (8)): a learned dot."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim
        self.W_a = nn.Linear(key_dim, query_dim, bias=False)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        _check_query_keys(query, keys, self.query_dim, self.key_dim)
        projected = self.W_a(keys)                                # (B, S, Hq): W_a k_j
        return torch.bmm(projected, query.unsqueeze(2)).squeeze(2)  # (B, S)


class ConcatScore(nn.Module):
    """Luong concat score  e_j = v^T tanh(W_a [q; k_j])  (Luong et al. 2015, eq. (8))."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim
        self.W_a = nn.Linear(query_dim + key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        _check_query_keys(query, keys, self.query_dim, self.key_dim)
        S = keys.size(1)
        repeated = query.unsqueeze(1).expand(-1, S, -1)              # (B, S, Hq): q by every key
        hidden = torch.tanh(self.W_a(torch.cat([repeated, keys], dim=-1)))  # (B, S, A)
        return self.v(hidden).squeeze(-1)                            # (B, S)


def make_score(name: str, query_dim: int, key_dim: int, attn_dim: int | None = None) -> nn.Module:
    """Build a score function by name: "additive", "dot", "general" or "concat".

    ``attn_dim`` (hidden size of additive/concat) defaults to ``query_dim``.
    """
    attn_dim = query_dim if attn_dim is None else attn_dim
    if name == "additive":
        return AdditiveScore(query_dim, key_dim, attn_dim)
    if name == "dot":
        if query_dim != key_dim:
            raise ValueError(f"dot score needs query_dim == key_dim, got {query_dim} and {key_dim}")
        return DotScore()
    if name == "general":
        return GeneralScore(query_dim, key_dim)
    if name == "concat":
        return ConcatScore(query_dim, key_dim, attn_dim)
    raise ValueError(f"name must be one of {SCORES}, got {name!r}")


# --------------------------------------------------------------------------------------------
# Global attention
# --------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Global attention: score every source position, softmax, weighted average of the values.

    context = sum_j a_j v_j with a = softmax(score(q, k))  (Bahdanau eq. (5)-(6); Luong eq. (7)).
    """

    def __init__(self, score: nn.Module) -> None:
        super().__init__()
        self.score = score

    def forward(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, Hq), keys (B, S, Hk), values (B, S, Hv) (default: the keys), mask (B, S) bool
        True = real token. Returns context (B, Hv) and weights (B, S)."""
        values = keys if values is None else values
        _check_values_mask(keys, values, mask)
        scores = self.score(query, keys)                               # (B, S)
        weights = masked_softmax(scores, mask)                         # (B, S), rows sum to 1
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)   # (B, 1, S) @ (B, S, Hv)
        return context, weights                                        # (B, Hv), (B, S)


# --------------------------------------------------------------------------------------------
# Local attention (Luong et al. 2015, local-p)
# --------------------------------------------------------------------------------------------

class LocalAttention(nn.Module):
    """Luong local-p attention: predict where to look, then attend only to a window there.

    1. p_t = S_len * sigmoid(v_p^T tanh(W_p q))           (Luong et al. 2015, eq. (9))
       S_len is each sentence's own length (from the mask); positions count from 0.
    2. align = softmax of the scores over the window |s - p_t| <= D (and real tokens only)
    3. a_t(s) = align(s) * exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2  (eq. (10))

    The Gaussian favours positions near p_t, and it is what lets the gradient reach W_p and v_p.
    As in the paper the weights are not renormalised after step 3: they sum to at most 1.
    Positions outside the window get exactly 0.
    """

    def __init__(self, score: nn.Module, query_dim: int, window: int,
                 attn_dim: int | None = None) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        attn_dim = query_dim if attn_dim is None else attn_dim
        self.score = score
        self.window = window
        self.W_p = nn.Linear(query_dim, attn_dim, bias=False)
        self.v_p = nn.Linear(attn_dim, 1, bias=False)

    def predict_position(self, query: torch.Tensor, src_len: torch.Tensor) -> torch.Tensor:
        """p_t in [0, S_len] for every sentence: query (B, Hq), src_len (B,) -> (B,)."""
        gate = torch.sigmoid(self.v_p(torch.tanh(self.W_p(query)))).squeeze(-1)  # (B,) in (0, 1)
        return src_len * gate

    def forward(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Same arguments and results as ``Attention.forward``."""
        values = keys if values is None else values
        _check_values_mask(keys, values, mask)
        B, S, _ = keys.shape
        if mask is None:
            mask = torch.ones(B, S, dtype=torch.bool, device=keys.device)
        src_len = mask.sum(dim=1).to(query.dtype)                       # (B,)
        p = self.predict_position(query, src_len)                       # (B,)
        positions = torch.arange(S, device=keys.device, dtype=query.dtype)  # (S,)
        distance = positions.unsqueeze(0) - p.unsqueeze(1)              # (B, S): s - p_t
        in_window = distance.abs() <= self.window                       # (B, S)
        align = masked_softmax(self.score(query, keys), mask & in_window)   # (B, S)
        sigma = self.window / 2
        weights = align * torch.exp(-distance ** 2 / (2 * sigma ** 2))  # (B, S), eq. (10)
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)    # (B, Hv)
        return context, weights
