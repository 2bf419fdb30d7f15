"""The Transformer's KV cache, measured (chapter 11).

``Transformer.decode_step`` (chapter 10) keeps, per decoder layer, the self-attention keys and
values of every target token fed so far, so each step only pushes the *new* token through the
decoder. With ``model.use_cache = False`` it recomputes the whole prefix at every step instead:
the same logits, a lot more work. The helpers here generate a fixed number of tokens either way
(no early stop at <eos>, so both paths do the same number of steps) and give the cache's size
as a formula.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from s2s_course.decode import evaluating
from s2s_course.data.specials import SOS_IDX


@contextmanager
def cache_setting(model: nn.Module, use_cache: bool) -> Iterator[nn.Module]:
    """Temporarily set ``model.use_cache`` (restored afterwards)."""
    before = model.use_cache
    model.use_cache = use_cache
    try:
        yield model
    finally:
        model.use_cache = before


def greedy_steps(model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor, steps: int,
                 use_cache: bool = True, sos_idx: int = SOS_IDX):
    """Greedy decoding for exactly ``steps`` tokens (never stopping at <eos>).

    Returns tokens (B, steps), the logits of every step (B, steps, V) and the final state."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    with torch.no_grad(), evaluating(model), cache_setting(model, use_cache):
        state = model.encode(src, src_lengths)
        y = torch.full((src.size(0),), sos_idx, dtype=torch.long, device=src.device)  # (B,)
        tokens, all_logits = [], []
        for _ in range(steps):
            logits, state = model.decode_step(y, state)                   # (B, V)
            y = logits.argmax(-1)                                         # (B,)
            tokens.append(y)
            all_logits.append(logits)
    return torch.stack(tokens, 1), torch.stack(all_logits, 1), state


def kv_cache_bytes(num_layers: int, batch_size: int, length: int, d_model: int,
                   bytes_per_number: int = 4) -> int:
    """2 (keys and values) x N layers x B sequences x t positions x d_model x bytes per number."""
    return 2 * num_layers * batch_size * length * d_model * bytes_per_number


__all__ = ["cache_setting", "greedy_steps", "kv_cache_bytes"]
