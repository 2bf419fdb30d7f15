"""Measuring *where* a seq2seq model fails: by source length, by output position, by source position.

A single corpus score hides the interesting part. Chapter 3 asks two questions of a trained model:

- Does it get worse as the source gets longer? ``accuracy_by_source_length`` decodes a loader
  greedily and groups exact match and token accuracy by source length (optionally in buckets);
  ``accuracy_by_position`` says which output positions go wrong.
- How much learning signal reaches each source token? ``source_gradient_norms`` measures
  ``||dL/de_s||``, the gradient of the loss with respect to the source embedding ``e_s`` at every
  position ``s``, averaged over the real (non-padding) tokens of a batch.

Everything works with any model of the course (``encode``/``decode_step``/``forward``) whose
encoder has an ``embedding`` module, or with any module you pass as ``embedding=``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Hashable

import torch
import torch.nn as nn

from s2s_course.data.batching import Batch, lengths_to_mask
from s2s_course.data.specials import EOS_IDX
from s2s_course.decode import evaluating, greedy_decode
from s2s_course.metrics import accuracy_by_length
from s2s_course.train import sequence_loss

Pair = tuple[list[str], list[str]]


# --------------------------------------------------------------------------------------------
# Data helpers
# --------------------------------------------------------------------------------------------

def reverse_source(pairs: Sequence[Pair]) -> list[Pair]:
    """Sutskever et al.'s trick: the same pairs with every *source* reversed, targets untouched.

    ``[(["a", "b", "c"], ["a", "b", "c"])] -> [(["c", "b", "a"], ["a", "b", "c"])]``
    """
    return [(list(src)[::-1], list(tgt)) for src, tgt in pairs]


def source_lengths(batch: Batch, eos_idx: int = EOS_IDX) -> torch.Tensor:
    """Number of real source tokens per example (B,), not counting a final ``<eos>``.

    ``Seq2SeqDataset`` appends ``<eos>`` to every source, so ``batch.src_lengths`` is one more
    than the length of the sentence; this undoes that (and leaves sources without ``<eos>`` alone).
    """
    lengths = batch.src_lengths.cpu()                                     # (B,)
    last = batch.src.cpu().gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # (B,) last real token
    return lengths - (last == eos_idx).long()


def target_references(batch: Batch) -> list[list[int]]:
    """The gold outputs of a batch as id lists without ``<sos>``, ``<eos>`` and padding."""
    tgt = batch.tgt.cpu().tolist()                                        # (B, T)
    return [row[1:int(n) - 1] for row, n in zip(tgt, batch.tgt_lengths.tolist())]


# --------------------------------------------------------------------------------------------
# Accuracy by source length and by output position
# --------------------------------------------------------------------------------------------

@dataclass
class Predictions:
    """Greedy outputs for a whole loader: ``preds[i]`` and ``refs[i]`` are id lists (no
    ``<sos>``/``<eos>``), ``lengths[i]`` the source length of example ``i`` (without ``<eos>``)."""

    preds: list[list[int]]
    refs: list[list[int]]
    lengths: list[int]


def predict(model: nn.Module, loader: Iterable[Batch], *, max_len: int | None = None,
            device: torch.device | str | None = None, teacher_forced: bool = False) -> Predictions:
    """Greedy-decode every batch of ``loader``; keep predictions, references and source lengths.

    ``max_len=None`` lets each batch run to its longest reference + 10 tokens, so a model that
    forgets to stop is cut off (and scored wrong) instead of running forever.

    ``teacher_forced=True`` instead feeds the *gold* prefix and keeps the argmax at each of the
    reference's positions: ``preds[i][t]`` is then the model's guess for token ``t`` given the
    correct tokens before it, so one early slip does not shift every later position.
    """
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    preds: list[list[int]] = []
    refs: list[list[int]] = []
    lengths: list[int] = []
    for batch in loader:
        batch = batch.to(device)
        batch_refs = target_references(batch)
        if teacher_forced:
            with evaluating(model):
                best = model(batch.src, batch.src_lengths, batch.tgt_in).argmax(-1)  # (B, T)
            preds += [row[:len(ref)] for row, ref in zip(best.tolist(), batch_refs)]
        else:
            limit = max_len if max_len is not None else max(len(r) for r in batch_refs) + 10
            preds += greedy_decode(model, batch.src, batch.src_lengths, max_len=limit)
        refs += batch_refs
        lengths += source_lengths(batch).tolist()
    if not refs:
        raise ValueError("loader yielded no batches: nothing to decode")
    return Predictions(preds, refs, lengths)


def length_buckets(lengths: Sequence[int], width: int = 1, start: int = 0) -> list[int]:
    """Each length replaced by the lower edge of its bucket ``[start + k*width, start + (k+1)*width)``.

    ``length_buckets([4, 7, 8, 11], width=4) -> [4, 4, 8, 8]``. ``width=1`` changes nothing.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}")
    return [start + (int(n) - start) // width * width for n in lengths]


def accuracy_by_length_bucket(preds: Sequence[Sequence[Hashable]], refs: Sequence[Sequence[Hashable]],
                              lengths: Sequence[int], width: int = 1,
                              start: int = 0) -> dict[int, tuple[float, float, int]]:
    """``{bucket lower edge: (exact_match, token_accuracy, n_examples)}``, buckets of ``width``
    lengths (see ``length_buckets``). Token accuracy is position-wise over the reference tokens of
    the bucket (micro average), as in ``metrics.token_accuracy``."""
    if len(lengths) != len(refs):
        raise ValueError(f"lengths must have one entry per example ({len(refs)}), got {len(lengths)}")
    return accuracy_by_length(preds, refs, length_buckets(lengths, width, start))


def accuracy_by_source_length(model: nn.Module, loader: Iterable[Batch], *, width: int = 1,
                              start: int = 0, max_len: int | None = None,
                              device: torch.device | str | None = None
                              ) -> dict[int, tuple[float, float, int]]:
    """Greedy-decode ``loader`` and group the scores by source length (in buckets of ``width``):
    ``{length: (exact_match, token_accuracy, n_examples)}``."""
    p = predict(model, loader, max_len=max_len, device=device)
    return accuracy_by_length_bucket(p.preds, p.refs, p.lengths, width, start)


def accuracy_by_position(preds: Sequence[Sequence[Hashable]],
                         refs: Sequence[Sequence[Hashable]]) -> dict[int, tuple[float, int]]:
    """``{t: (accuracy, n)}`` for every output position ``t = 1, 2, ...``: the fraction of the
    ``n`` references at least ``t`` tokens long whose ``t``-th token was predicted correctly.

    Shows *which* outputs go wrong. On chapter 3's copy task the first outputs are the most
    accurate and accuracy falls with ``t``, even though the first source tokens were read longest
    ago: errors pile up along the output (and, scored greedily, one dropped or repeated token
    shifts everything after it).
    """
    if len(preds) != len(refs):
        raise ValueError(f"preds and refs must have the same length, got {len(preds)} and {len(refs)}")
    correct: dict[int, int] = {}
    total: dict[int, int] = {}
    for pred, ref in zip(preds, refs):
        for t, token in enumerate(ref, start=1):
            total[t] = total.get(t, 0) + 1
            hit = t <= len(pred) and pred[t - 1] == token
            correct[t] = correct.get(t, 0) + int(hit)
    return {t: (correct[t] / total[t], total[t]) for t in sorted(total)}


# --------------------------------------------------------------------------------------------
# How much gradient reaches each source position
# --------------------------------------------------------------------------------------------

def position_norms(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-position gradient norm: ``grad`` (B, S, E), ``mask`` (B, S)
    bool (True = real token) -> (S,) with entry ``s`` = mean of ``||grad[b, s]||_2`` over the
    examples ``b`` that have a real token at ``s``. NaN where no example does."""
    if grad.dim() != 3:
        raise ValueError(f"grad must be (B, S, E), got shape {tuple(grad.shape)}")
    if mask.shape != grad.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be (B, S) = {tuple(grad.shape[:2])} bool, "
                         f"got shape {tuple(mask.shape)} {mask.dtype}")
    norms = grad.norm(dim=-1)                                   # (B, S): ||dL/de_s|| per example
    norms = norms.masked_fill(~mask, 0.0)                       # padding contributes nothing
    counts = mask.sum(dim=0)                                    # (S,) real tokens per position
    return norms.sum(dim=0) / counts                            # (S,); 0/0 = NaN where none


def source_gradient_norms(model: nn.Module, batch: Batch, *, embedding: nn.Module | None = None,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """``||dL/de_s||`` for every source position ``s``, averaged over the batch: (S,).

    ``e_s`` is the output of the source embedding (``model.encoder.embedding`` unless
    ``embedding`` is given) and ``L`` the training loss: teacher-forced cross-entropy averaged
    over the target tokens of the batch. A forward hook catches the embedding output and
    ``torch.autograd.grad`` differentiates the loss with respect to it, so the model's own
    ``.grad`` fields are left untouched (``loss.backward()`` with ``retain_grad()`` on the
    embedding output would give the same numbers). Dropout is off while measuring.
    """
    if embedding is None:
        embedding = getattr(getattr(model, "encoder", None), "embedding", None)
        if not isinstance(embedding, nn.Module):
            raise ValueError("model has no encoder.embedding module: pass embedding= explicitly")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    batch = batch.to(device)
    caught: list[torch.Tensor] = []

    def catch(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        # Replace e by a leaf copy that requires grad: dL/de is then defined even when the
        # embedding is frozen, and the rest of the forward pass runs on it unchanged.
        leaf = output.detach().requires_grad_(True)                          # (B, S, E)
        caught.append(leaf)
        return leaf

    handle = embedding.register_forward_hook(catch)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)     # (B, T, V)
            loss = sequence_loss(logits, batch.tgt_out)
            if len(caught) != 1:
                raise ValueError(f"the embedding ran {len(caught)} times in one forward pass, "
                                 "expected once: is it the *source* embedding?")
            (grad,) = torch.autograd.grad(loss, caught[0])                  # (B, S, E)
    finally:
        handle.remove()
        model.train(was_training)
    mask = lengths_to_mask(batch.src_lengths.to(grad.device), grad.size(1))  # (B, S)
    return position_norms(grad.detach(), mask).cpu()


__all__ = ["Predictions", "accuracy_by_length_bucket", "accuracy_by_position",
           "accuracy_by_source_length", "length_buckets", "position_norms", "predict",
           "reverse_source", "source_gradient_norms", "source_lengths", "target_references"]
