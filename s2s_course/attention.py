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

``Attention`` is global attention (every source position), ``LocalAttention`` is Luong's local
attention: local-p first predicts a source position and only looks at a window around it; local-m
simply looks at the window around the current output step (monotonic alignment).

The keys stay the same for a whole sentence while the query changes at every decoder step, so
the part of a score that depends on the keys alone (``U k_j``, ``W_a k_j``) is computed once per
sentence: ``score.project_keys(keys)``, kept in the decoder state and passed back as
``projected_keys``. Without it, every step would redo an (S x Hk) @ (Hk x A) product.
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

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """U k_j for every key, once per sentence: (B, S, Hk) -> (B, S, A)."""
        return self.U(keys)

    def forward(self, query: torch.Tensor, keys: torch.Tensor,
                projected_keys: torch.Tensor | None = None) -> torch.Tensor:
        _check_query_keys(query, keys, self.query_dim, self.key_dim)
        Uk = self.project_keys(keys) if projected_keys is None else projected_keys  # (B, S, A)
        hidden = torch.tanh(self.W(query).unsqueeze(1) + Uk)            # (B, 1, A) + (B, S, A)
        return self.v(hidden).squeeze(-1)                                # (B, S)


class DotScore(nn.Module):
    """Luong dot score  e_j = q . k_j  (Luong et al. 2015, eq. (8)): no parameters, equal sizes."""

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """Nothing to project: the keys themselves."""
        return keys

    def forward(self, query: torch.Tensor, keys: torch.Tensor,
                projected_keys: torch.Tensor | None = None) -> torch.Tensor:
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

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """W_a k_j for every key, once per sentence: (B, S, Hk) -> (B, S, Hq)."""
        return self.W_a(keys)

    def forward(self, query: torch.Tensor, keys: torch.Tensor,
                projected_keys: torch.Tensor | None = None) -> torch.Tensor:
        _check_query_keys(query, keys, self.query_dim, self.key_dim)
        Wk = self.project_keys(keys) if projected_keys is None else projected_keys  # (B, S, Hq)
        return torch.bmm(Wk, query.unsqueeze(2)).squeeze(2)     # (B, S, Hq) @ (B, Hq, 1) -> (B, S)


class ConcatScore(nn.Module):
    """Luong concat score  e_j = v^T tanh(W_a [q; k_j])  (Luong et al. 2015, eq. (8))."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.query_dim, self.key_dim = query_dim, key_dim
        self.W_a = nn.Linear(query_dim + key_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """The key half of W_a [q; k_j] = W_q q + W_k k_j, once per sentence: (B, S, A)."""
        W_k = self.W_a.weight[:, self.query_dim:]                    # (A, Hk)
        return keys @ W_k.T

    def forward(self, query: torch.Tensor, keys: torch.Tensor,
                projected_keys: torch.Tensor | None = None) -> torch.Tensor:
        _check_query_keys(query, keys, self.query_dim, self.key_dim)
        if projected_keys is None:  # the formula as written: q next to every key, one product
            S = keys.size(1)
            repeated = query.unsqueeze(1).expand(-1, S, -1)          # (B, S, Hq): q by every key
            hidden = torch.tanh(self.W_a(torch.cat([repeated, keys], dim=-1)))  # (B, S, A)
        else:  # the same sum split in two: W_q q once per step, W_k k_j once per sentence
            W_q = self.W_a.weight[:, :self.query_dim]                # (A, Hq)
            hidden = torch.tanh((query @ W_q.T).unsqueeze(1) + projected_keys)  # (B, S, A)
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

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """The score's once-per-sentence part; pass it back as ``projected_keys`` at every step."""
        return self.score.project_keys(keys)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, projected_keys: torch.Tensor | None = None,
                step: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, Hq), keys (B, S, Hk), values (B, S, Hv) (default: the keys), mask (B, S) bool
        True = real token, projected_keys = ``project_keys(keys)`` if already computed. ``step``
        is ignored (global attention looks everywhere; it is there so decoders can call either
        kind alike). Returns context (B, Hv) and weights (B, S)."""
        values = keys if values is None else values
        _check_values_mask(keys, values, mask)
        scores = self.score(query, keys, projected_keys)               # (B, S)
        weights = masked_softmax(scores, mask)                         # (B, S), rows sum to 1
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)   # (B, 1, S) @ (B, S, Hv)
        return context, weights                                        # (B, Hv), (B, S)
# --------------------------------------------------------------------------------------------
# Local attention (Luong et al. 2015, section 3.2: local-p and local-m)
# --------------------------------------------------------------------------------------------

class LocalAttention(nn.Module):
    """Luong local attention: look only at a window of 2D + 1 source positions around p_t.

    local-p (``monotonic=False``), predict where to look:
    1. p_t = S_len * sigmoid(v_p^T tanh(W_p q))           (Luong et al. 2015, eq. (9))
       S_len is each sentence's own length (from the mask); positions count from 0.
    2. align = softmax of the scores over the window |s - p_t| <= D (and real tokens only)
    3. a_t(s) = align(s) * exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2  (eq. (10))
    The Gaussian favours positions near p_t, and it is what lets the gradient reach W_p and v_p.
    As in the paper the weights are not renormalised after step 3: they sum to at most 1.

    local-m (``monotonic=True``), assume the alignment is monotonic: p_t = t, the output step
    (counted from 0), capped at each sentence's last real position so that a long output keeps
    a window with real tokens in it. The weights are ``align`` of step 2, with no Gaussian and no
    parameters of their own. The decoder passes ``step``.

    Positions outside the window get exactly 0.
    """

    def __init__(self, score: nn.Module, query_dim: int, window: int,
                 attn_dim: int | None = None, monotonic: bool = False) -> None:
        super().__init__()
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        attn_dim = query_dim if attn_dim is None else attn_dim
        self.score = score
        self.window = window
        self.monotonic = monotonic
        if not monotonic:
            self.W_p = nn.Linear(query_dim, attn_dim, bias=False)
            self.v_p = nn.Linear(attn_dim, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """The score's once-per-sentence part; pass it back as ``projected_keys`` at every step."""
        return self.score.project_keys(keys)

    def predict_position(self, query: torch.Tensor, src_len: torch.Tensor) -> torch.Tensor:
        """local-p's p_t in [0, S_len] for every sentence: query (B, Hq), src_len (B,) -> (B,)."""
        gate = torch.sigmoid(self.v_p(torch.tanh(self.W_p(query)))).squeeze(-1)  # (B,) in (0, 1)
        return src_len * gate

    def forward(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, projected_keys: torch.Tensor | None = None,
                step: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Same arguments and results as ``Attention.forward``; local-m also needs ``step``."""
        values = keys if values is None else values
        _check_values_mask(keys, values, mask)
        B, S, _ = keys.shape
        if mask is None:
            mask = torch.ones(B, S, dtype=torch.bool, device=keys.device)
        src_len = mask.sum(dim=1).to(query.dtype)                       # (B,)
        if self.monotonic:
            if step is None or step < 0:
                raise ValueError(f"local-m needs the output step (an int >= 0), got step={step!r}")
            p = torch.minimum(torch.full_like(src_len, float(step)), (src_len - 1).clamp(min=0))  # (B,)
        else:
            p = self.predict_position(query, src_len)                   # (B,)
        positions = torch.arange(S, device=keys.device, dtype=query.dtype)  # (S,)
        distance = positions.unsqueeze(0) - p.unsqueeze(1)              # (B, S): s - p_t
        in_window = distance.abs() <= self.window                       # (B, S)
        align = masked_softmax(self.score(query, keys, projected_keys), mask & in_window)  # (B, S)
        if self.monotonic:
            weights = align                                             # (B, S), eq. (7) in the window
        else:
            sigma = self.window / 2
            weights = align * torch.exp(-distance ** 2 / (2 * sigma ** 2))  # (B, S), eq. (10)
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)    # (B, Hv)
        return context, weights
