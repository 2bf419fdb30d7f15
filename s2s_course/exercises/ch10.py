"""Checkers for chapter 10 (the Transformer).

- ``check_label_smoothed_loss(fn)``: ``fn(logits (B, T, V) float, targets (B, T) int64, eps float,
  pad_idx int) -> loss`` (a 0-dim tensor in the logits' dtype): label-smoothed cross-entropy written
  by hand. The target distribution of a real token y is

      q = (1 - eps) * onehot(y) + eps / V          (uniform over *all* V classes, the target included)

  and the loss is the cross-entropy  -sum_k q_k log softmax(logits)_k,  averaged over the positions
  whose target is not ``pad_idx``. Equivalently  (1 - eps) * NLL + eps * mean_k(-log p_k).
  This is PyTorch's definition (``F.cross_entropy(..., label_smoothing=eps)``, Szegedy et al. 2016),
  the one ``s2s_course.train.sequence_loss`` uses.

The reference *is* ``F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1),
label_smoothing=eps, ignore_index=pad_idx)``; tests/test_exercises_ch10.py checks it against a case
computed by hand. Besides comparing values, the checker names the usual mistakes: padding counted in
the mean or taken to be at the end, per-sentence averaging, a division by the batch size, positions
cut at the first sentence's length, eps divided by T instead of V, the eps/(V-1) convention of
fairseq and tensor2tensor (or the Annotated Transformer's, which also leaves out the pad class), the
KL divergence instead of the cross-entropy, a softmax over the wrong axis, probabilities instead of
log-probabilities, a sum instead of a mean, eps ignored or the uniform term missing or mis-weighted,
eps and pad_idx swapped, pad_idx taken to be 0, and log(softmax(x)) that underflows to -inf on large
logits. The cases include unsorted lengths, a left-padded batch, a sentence of padding only, T != V
and float64 logits. Only the logits are differentiable, and their gradient is compared.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from s2s_course.exercises.core import (Case, Check, Trial, check_function, expect_close, expect_dtype,
                                       expect_grad, expect_inputs_unchanged, expect_known_mistakes,
                                       expect_shape, expect_type)

__all__ = ["check_label_smoothed_loss", "reference_label_smoothed_loss"]

LARGE = 50.0  # a case whose logits reach this size is a test of numerical stability


def reference_label_smoothed_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float,
                                  pad_idx: int) -> torch.Tensor:
    """Mean over the non-pad positions of the cross-entropy between (1 - eps) onehot(y) + eps / V
    and softmax(logits): PyTorch's own label smoothing."""
    V = logits.size(-1)
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1),
                           ignore_index=pad_idx, label_smoothing=eps)


# -----------------------------------------------------------------------------
# the usual mistakes, each computed from the case's inputs

def _terms(logits, targets, dim=-1, log=True):
    """(log p, NLL (B, T), sum over classes of -log p (B, T)); ``dim``/``log`` switch in mistakes."""
    logp = torch.log_softmax(logits, dim) if log else torch.softmax(logits, dim)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, nll, -logp.sum(-1)


def _token_mean(loss, real):
    return (loss * real).sum() / real.sum()


def _smoothed(logits, targets, eps, pad_idx, dim=-1, log=True):
    _, nll, total = _terms(logits, targets, dim, log)
    return _token_mean((1 - eps) * nll + eps * total / logits.size(-1), targets != pad_idx)


def _fairseq(logits, targets, eps, pad_idx):
    _, nll, total = _terms(logits, targets)
    V = logits.size(-1)
    return _token_mean((1 - eps) * nll + eps / (V - 1) * (total - nll), targets != pad_idx)


def _annotated(logits, targets, eps, pad_idx):
    logp, nll, total = _terms(logits, targets)
    V = logits.size(-1)
    pad_term = -logp[..., pad_idx]
    return _token_mean((1 - eps) * nll + eps / (V - 2) * (total - nll - pad_term), targets != pad_idx)


def _kl(logits, targets, eps, pad_idx):
    V = logits.size(-1)
    on, off = 1 - eps + eps / V, eps / V
    entropy = -(on * torch.log(torch.tensor(on, dtype=torch.float64))
                + (V - 1) * off * (torch.log(torch.tensor(off, dtype=torch.float64)) if off > 0 else 0.0))
    return _smoothed(logits, targets, eps, pad_idx) - entropy.to(logits.dtype)


def _trailing(targets, pad_idx):
    """(B, T): the first (targets != pad_idx).sum(1) positions, as if padding were always at the end."""
    n = (targets != pad_idx).sum(1, keepdim=True)
    return torch.arange(targets.size(1))[None, :] < n


def _first_length(targets, pad_idx):
    """(B, T): real tokens within the first sentence's length, as if the batch were sorted longest first."""
    n = int((targets[0] != pad_idx).sum())
    return (targets != pad_idx) & (torch.arange(targets.size(1))[None, :] < n)


def _weighted(logits, targets, eps, pad_idx, a, b, reduce="token mean", real=None):
    """a * NLL + b * (sum over classes of -log p), reduced over the tokens in one of several ways;
    ``real`` (B, T) bool replaces targets != pad_idx as the tokens that count."""
    _, nll, total = _terms(logits, targets)
    loss = a * nll + b * total
    real = targets != pad_idx if real is None else real
    if reduce == "token mean":
        return _token_mean(loss, real)
    if reduce == "sum":
        return (loss * real).sum()
    if reduce == "all positions":
        return loss.mean()
    if reduce == "zeroed, B*T":
        return (loss * real).sum() / loss.numel()
    if reduce == "per sentence":
        return ((loss * real).sum(1) / real.sum(1)).mean()
    if reduce == "per sentence count":
        return (loss * real).sum() / real.size(0)
    raise ValueError(reduce)


PAD_MESSAGE = ("padding got weight: average over the real target tokens only (positions where "
               "targets != pad_idx)")

_MISTAKES: dict[str, Callable] = {
    "eps and pad_idx are swapped (or eps is ignored and padding counted): the checker calls "
    "fn(logits, targets, eps, pad_idx) in this order":
        lambda x, t, e, p: _smoothed(x, t, p, e),
    "padding was taken to be index 0: the pad index is the argument pad_idx (not always 0); "
    "leave out the positions where targets == pad_idx":
        lambda x, t, e, p: _smoothed(x, t, e, 0),
    PAD_MESSAGE + ": the padding positions were included in the mean":
        lambda x, t, e, p: _weighted(x, t, e, p, 1 - e, e / x.size(-1), "all positions"),
    PAD_MESSAGE + ": their losses were zeroed but still counted; divide by the number of real tokens, "
    "(targets != pad_idx).sum(), not by B * T":
        lambda x, t, e, p: _weighted(x, t, e, p, 1 - e, e / x.size(-1), "zeroed, B*T"),
    "averaged per sentence, then over sentences: average over all real target tokens of the batch at "
    "once (sum of the token losses / number of real tokens); per-sentence means give a short sentence's "
    "tokens more weight":
        lambda x, t, e, p: _weighted(x, t, e, p, 1 - e, e / x.size(-1), "per sentence"),
    "summed instead of averaged: divide the sum over the real target tokens by their number":
        lambda x, t, e, p: _weighted(x, t, e, p, 1 - e, e / x.size(-1), "sum"),
    "divided by the number of sentences (the batch size): divide the sum over the real target tokens "
    "by the number of real tokens, (targets != pad_idx).sum()":
        lambda x, t, e, p: _weighted(x, t, e, p, 1 - e, e / x.size(-1), "per sentence count"),
    "the padding was taken to be at the end of each sentence (the first (targets != pad_idx).sum(1) "
    "positions counted): padding can sit anywhere, e.g. at the start of a left-padded sentence; "
    "leave out exactly the positions where targets == pad_idx":
        lambda x, t, e, p: _weighted(x, t, e, p, 1 - e, e / x.size(-1), real=_trailing(t, p)),
    "only the positions within the first sentence's length were counted, as if the batch were sorted "
    "longest first: it is not; leave out exactly the positions where targets == pad_idx":
        lambda x, t, e, p: _weighted(x, t, e, p, 1 - e, e / x.size(-1), real=_first_length(t, p)),
    "eps was divided by logits.size(1), the number of positions T: the uniform term spreads eps over "
    "the V classes, V = logits.size(-1)":
        lambda x, t, e, p: _weighted(x, t, e, p, 1 - e, e / x.size(1)),
    "eps/(V-1) was spread over the V-1 other classes (the target keeping 1 - eps): that is a different "
    "convention, fairseq's and tensor2tensor's. This exercise uses PyTorch's (F.cross_entropy's "
    "label_smoothing, as in Szegedy et al. 2016): eps/V on *every* class, the target included, so "
    "q = (1 - eps) onehot(y) + eps/V":
        _fairseq,
    "the pad class was left out of the smoothing (eps/(V-2) on the classes other than the target and "
    "pad, as in the Annotated Transformer): a different convention. This exercise uses PyTorch's: "
    "eps/V on every one of the V classes, q = (1 - eps) onehot(y) + eps/V":
        _annotated,
    "this is the KL divergence KL(q || p), which is the cross-entropy minus the entropy of q (a "
    "constant): return the cross-entropy -sum_k q_k log p_k itself":
        _kl,
    "softmax over the wrong axis (dim=1, the time axis): the distribution is over the vocabulary, "
    "log_softmax(logits, dim=-1)":
        lambda x, t, e, p: _smoothed(x, t, e, p, dim=1),
    "softmax over the wrong axis (dim=0, the batch axis): the distribution is over the vocabulary, "
    "log_softmax(logits, dim=-1)":
        lambda x, t, e, p: _smoothed(x, t, e, p, dim=0),
    "probabilities instead of log-probabilities (forgot the log): the cross-entropy is "
    "-sum_k q_k log p_k, use torch.log_softmax(logits, dim=-1)":
        lambda x, t, e, p: _smoothed(x, t, e, p, log=False),
    "eps is not used: this is plain cross-entropy; smooth the target: "
    "(1 - eps) * NLL + eps * mean over the V classes of -log p":
        lambda x, t, e, p: _weighted(x, t, e, p, 1.0, 0.0),
    "only (1 - eps) * NLL: the uniform term is missing, add eps * mean over the V classes of -log p "
    "(the eps/V that q puts on every class)":
        lambda x, t, e, p: _weighted(x, t, e, p, 1 - e, 0.0),
    "the NLL term lacks its factor (1 - eps): loss = (1 - eps) * NLL + eps * mean_k(-log p_k)":
        lambda x, t, e, p: _weighted(x, t, e, p, 1.0, e / x.size(-1)),
    "the uniform term was summed over the classes, not averaged: q puts eps/V on each class, so the "
    "term is eps * mean_k(-log p_k) = (eps / V) * sum_k(-log p_k)":
        lambda x, t, e, p: _weighted(x, t, e, p, 1 - e, e),
    "eps and 1 - eps are swapped: the NLL term gets 1 - eps, the uniform term eps":
        lambda x, t, e, p: _weighted(x, t, e, p, e, (1 - e) / x.size(-1)),
}


def _same(got: object, want: torch.Tensor) -> bool:
    return (isinstance(got, torch.Tensor) and got.shape == want.shape
            and bool(torch.allclose(got.detach().double(), want.detach().double(), atol=1e-5, rtol=1e-4,
                                    equal_nan=True)))


def _large(case: Case) -> bool:
    return bool(case.args[0].abs().max() >= LARGE)


UNSTABLE = ("numerically unstable: use log_softmax. With logits this far apart (here ±80) softmax "
            "underflows to exactly 0 for some classes and log(0) = -inf; torch.log_softmax(logits, dim=-1) "
            "(or logits - logits.logsumexp(-1, keepdim=True)) computes log p without forming p")


def _finite() -> Check:
    def fn(t: Trial) -> str | None:
        got = t.got.detach()
        if bool(torch.isfinite(got).all()):
            return None
        if _large(t.case):
            return f"the loss is {got.item()}: " + UNSTABLE
        targets, pad_idx = t.case.args[1], t.case.args[3]
        if bool((targets == pad_idx).all(1).any()):
            return (f"the loss is {got.item()}: a sentence of padding only must contribute nothing; "
                    f"average over all real tokens of the batch at once (their loss sum / their number), "
                    f"not per sentence (0 / 0 = NaN)")
        return f"the loss is {got.item()}, not a number: look for log(0), 0 * -inf or a division by 0"

    return Check("finite", fn)


def _stable() -> Check:
    """On a case with large logits, a difference from the reference is a precision problem."""
    def fn(t: Trial) -> str | None:
        if not _large(t.case) or _same(t.got, t.expected):
            return None
        return (f"expected {t.expected.item():.6g}, got {t.got.item():.6g} on logits of size ±80: "
                + UNSTABLE + " (adding a small constant inside the log is not enough)")

    return Check("numerically stable", fn)


# -----------------------------------------------------------------------------
# the cases

def _targets(g: torch.Generator, T: int, V: int, pad_idx: int, lengths: list[int]) -> torch.Tensor:
    """(B, T) int64: real tokens drawn from the classes other than pad_idx, then padding."""
    B = len(lengths)
    t = torch.randint(0, V - 1, (B, T), generator=g)
    t = t + (t >= pad_idx).long()                                         # skip the pad class
    beyond = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]  # (B, T): padding
    return t.masked_fill(beyond, pad_idx)


def _case(name: str, g: torch.Generator, T: int, V: int, lengths: list[int], eps: float, pad_idx: int,
          scale: float = 2.0, dtype: torch.dtype = torch.float32, large: bool = False,
          left: bool = False) -> Case:
    """``left``: the padding comes first (a left-padded batch), not last."""
    B = len(lengths)
    logits = torch.randn(B, T, V, generator=g, dtype=dtype) * scale
    if large:
        # every row has classes at +80 and at -80: softmax underflows to 0 for the latter in float32
        signs = torch.tensor([1.0, -1.0] * (V // 2) + [1.0] * (V % 2), dtype=dtype)
        perm = torch.argsort(torch.rand(B, T, V, generator=g), dim=-1)
        logits = 80.0 * signs[perm] + logits
    targets = _targets(g, T, V, pad_idx, lengths)
    return Case(name, (logits, targets.flip(1) if left else targets, eps, pad_idx))


def _cases() -> list[Case]:
    g = torch.Generator().manual_seed(10)
    return [
        _case("B=2, T=5, V=7, eps=0.1, pad_idx=0, lengths 5 and 3", g, 5, 7, [5, 3], 0.1, 0),
        _case("pad_idx=3 (not 0), eps=0.2, B=3, lengths 4, 6 and 2", g, 6, 5, [4, 6, 2], 0.2, 3),
        _case("a sentence that is entirely padding (lengths 4 and 0)", g, 4, 6, [4, 0], 0.1, 0),
        _case("eps=0: plain cross-entropy", g, 3, 4, [3, 2], 0.0, 0),
        _case("large logits (±80), float32", g, 4, 8, [4, 3], 0.1, 0, scale=1.0, large=True),
        _case("float64 logits, eps=0.3, pad_idx=2", g, 5, 9, [2, 5], 0.3, 2, dtype=torch.float64),
        _case("B=1, no padding, V=10, eps=0.05", g, 6, 10, [6], 0.05, 0),
        _case("left-padded (the padding first), pad_idx=1, lengths 3, 5 and 2", g, 5, 6, [3, 5, 2], 0.1, 1,
              left=True),
    ]


def check_label_smoothed_loss(fn: Callable) -> bool:
    """Check ``fn(logits (B, T, V), targets (B, T), eps, pad_idx) -> loss`` (0-dim): the mean over
    the non-pad positions of the cross-entropy between (1 - eps) onehot(y) + eps / V and softmax(logits)."""
    return check_function(fn, reference_label_smoothed_loss, _cases(), checks=[
        expect_type(hint="return the loss as a tensor (no .item()), so that it can be backpropagated"),
        expect_shape(hint="return one number, a 0-dim tensor: the mean over the real target tokens "
                          "(no reduction left undone, no keepdim)"),
        expect_dtype(hint="compute in the logits' dtype: float64 logits give a float64 loss (do not "
                          "call .float() or .double(), and build constants with dtype=logits.dtype)"),
        expect_inputs_unchanged(),
        _finite(),
        expect_known_mistakes(_MISTAKES),
        _stable(),
        expect_close(),
        expect_grad(wrt=["logits"]),
    ])
