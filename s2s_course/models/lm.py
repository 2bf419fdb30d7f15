"""Encoder-only and decoder-only language models, built from chapter 10's own layers (chapter 12).

Take the Transformer apart and keep one stack:

- ``MaskedLM``: the **encoder** stack alone. Every position sees the whole sentence (no causal
  mask), so it cannot be trained to predict the next token; instead some input tokens are hidden
  (``mask_tokens``: 15% of the tokens, of which 80% become ``<mask>``, 10% a random token, 10% stay)
  and the model predicts the originals. This is the BERT recipe (Devlin et al. 2019), minus the
  next-sentence task and BERT's extra dense + LayerNorm transform before the output layer.
- ``CausalLM``: the same ``EncoderLayer`` with ``causal=True``: position t sees tokens 0..t only,
  so it predicts token t + 1 at every position at once. This is the GPT recipe (Radford et al.
  2018, 2019): a decoder without cross-attention. ``generate`` writes with it, one token at a time.

Both embed exactly like the Transformer (embedding x sqrt(d_model) + positions, dropout), end with
a LayerNorm when pre-LN, and tie the output layer to the embedding. ``train_lm`` trains either.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from s2s_course.data.specials import EOS_IDX, PAD_IDX, SOS_IDX, SPECIALS
from s2s_course.decode import evaluating, sample_next
from s2s_course.env import seed_everything
from s2s_course.models.transformer import EncoderLayer
from s2s_course.positional import make_positional
from s2s_course.schedules import warmup_inverse_sqrt
from s2s_course.train import History, _model_device, sequence_loss

IGNORE_IDX = PAD_IDX  # a label the loss skips (sequence_loss ignores pad_idx)


def _check_tokens(name: str, tokens: torch.Tensor, vocab_size: int) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        dtype = tokens.dtype if isinstance(tokens, torch.Tensor) else ""
        raise ValueError(f"{name} must be a (B, T) long tensor of token ids, got {shape} {dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"{name} holds ids outside [0, {vocab_size}): "
                         f"min {int(tokens.min())}, max {int(tokens.max())}")


class TransformerLM(nn.Module):
    """Embeddings x sqrt(d) + positions -> N EncoderLayers -> LayerNorm -> tied linear layer."""

    causal: bool = False

    def __init__(self, vocab_size: int, d_model: int = 128, num_heads: int = 4,
                 num_layers: int = 2, d_ff: int = 512, dropout: float = 0.1,
                 norm_first: bool = True, positional: str = "sinusoidal", max_len: int = 256,
                 pad_idx: int = PAD_IDX) -> None:
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        self.vocab_size, self.d_model, self.pad_idx, self.max_len = vocab_size, d_model, pad_idx, max_len
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_idx)
        nn.init.normal_(self.embedding.weight, std=d_model ** -0.5)  # x sqrt(d): ~unit size
        self.positional = make_positional(positional, d_model, max_len)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(EncoderLayer(d_model, num_heads, d_ff, dropout, norm_first)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.generator = nn.Linear(d_model, vocab_size)
        self.generator.weight = self.embedding.weight                     # (V, D), tied

    def hidden(self, tokens: torch.Tensor, need_weights: bool = False):
        """tokens (B, T) -> final hidden states (B, T, D) and per-layer weights (B, h, T, T)."""
        _check_tokens("tokens", tokens, self.vocab_size)
        mask = tokens != self.pad_idx                                     # (B, T) True = real
        x = self.dropout(self.positional(self.embedding(tokens) * math.sqrt(self.d_model)))
        weights = []
        for layer in self.layers:
            x, w = layer(x, mask, need_weights, causal=self.causal)
            weights.append(w)
        return self.norm(x), weights

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T), padded with pad_idx at the end -> logits (B, T, V)."""
        return self.generator(self.hidden(tokens)[0])


class MaskedLM(TransformerLM):
    """Encoder-only (BERT-style): bidirectional self-attention; logits at every position, trained
    only where ``mask_tokens`` hid a token. ``mask_idx`` is the id of ``<mask>``."""

    causal = False

    def __init__(self, vocab_size: int, mask_idx: int, **kwargs: Any) -> None:
        super().__init__(vocab_size, **kwargs)
        if not 0 <= mask_idx < vocab_size:
            raise ValueError(f"mask_idx must be an id in [0, {vocab_size}), got {mask_idx!r}")
        self.mask_idx = mask_idx


class CausalLM(TransformerLM):
    """Decoder-only (GPT-style): causal self-attention, so logits[:, t] predict token t + 1 from
    tokens 0..t. Sentences are ``<sos> w_1 .. w_n <eos>``: input all but the last, target all but
    the first."""

    causal = True


# --------------------------------------------------------------------------------------------
# BERT's masking
# --------------------------------------------------------------------------------------------

def mask_tokens(tokens: torch.Tensor, mask_idx: int, vocab_size: int, *, mask_prob: float = 0.15,
                generator: torch.Generator | None = None, num_specials: int = len(SPECIALS),
                ignore_idx: int = IGNORE_IDX) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption (Devlin et al. 2019, section 3.1).

    Each real token (id >= ``num_specials`` and != ``mask_idx``; padding and the specials are
    never chosen) is selected with probability ``mask_prob``. A selected token becomes
    ``mask_idx`` with probability 0.8, a random ordinary token with probability 0.1, and stays as
    it is with probability 0.1. Returns (inputs, labels), both (B, T): labels hold the original id
    at the selected positions and ``ignore_idx`` elsewhere. ``tokens`` is not modified.
    """
    _check_tokens("tokens", tokens, vocab_size)
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob!r}")
    if not num_specials <= mask_idx < vocab_size:
        raise ValueError(f"mask_idx must be in [{num_specials}, {vocab_size}), got {mask_idx!r}")
    device = tokens.device

    def uniform() -> torch.Tensor:
        return torch.rand(tokens.shape, generator=generator, device=device)

    candidates = (tokens >= num_specials) & (tokens != mask_idx)          # (B, T)
    selected = candidates & (uniform() < mask_prob)
    labels = torch.where(selected, tokens, torch.full_like(tokens, ignore_idx))
    action = uniform()                                                    # one draw decides 80/10/10
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    # a random ordinary token: any id in [num_specials, vocab_size) except <mask>
    ordinary = [i for i in range(num_specials, vocab_size) if i != mask_idx]
    pick = torch.randint(len(ordinary), tokens.shape, generator=generator, device=device)
    random_tokens = torch.tensor(ordinary, device=device)[pick]
    inputs = torch.where(to_mask, torch.full_like(tokens, mask_idx), tokens)
    inputs = torch.where(to_random, random_tokens, inputs)
    return inputs, labels


# --------------------------------------------------------------------------------------------
# Generation (no KV cache: the whole prefix is recomputed at every step)
# --------------------------------------------------------------------------------------------

def generate(model: CausalLM, n: int | None = None, *, prompts: torch.Tensor | None = None,
             max_new_tokens: int = 40, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, generator: torch.Generator | None = None,
             sos_idx: int = SOS_IDX, eos_idx: int = EOS_IDX) -> list[list[int]]:
    """Write ``n`` sentences from ``<sos>`` (or continue ``prompts`` (B, T0), each starting with
    <sos>, no padding) one token at a time with ``decode.sample_next``: temperature=0 is greedy.
    Returns the new tokens of each row, cut before the first <eos>."""
    if (n is None) == (prompts is None):
        raise ValueError("give either n (sentences from <sos>) or prompts (B, T0), not both")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    device = _model_device(model)
    if prompts is None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        prompts = torch.full((n, 1), sos_idx, dtype=torch.long, device=device)
    _check_tokens("prompts", prompts, model.vocab_size)
    tokens = prompts.to(device)
    start = tokens.size(1)
    outputs: list[list[int]] = [[] for _ in range(tokens.size(0))]
    active = torch.arange(tokens.size(0), device=device)                  # rows still writing
    with evaluating(model):
        for _ in range(min(max_new_tokens, model.max_len - start)):
            logits = model(tokens)[:, -1].float()                            # (B_active, V)
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                              generator=generator)                           # (B_active,)
            for row, token in zip(active.tolist(), nxt.tolist()):
                outputs[row].append(token)
            going = nxt != eos_idx                                           # finished rows leave
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)[going]
            active = active[going]
            if len(active) == 0:
                break
    return [row[:row.index(eos_idx)] if eos_idx in row else row for row in outputs]


# --------------------------------------------------------------------------------------------
# What the samples look like
# --------------------------------------------------------------------------------------------

def ngrams(tokens: Sequence, n: int) -> list[tuple]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(samples: Sequence[Sequence], n: int) -> float:
    """Distinct n-grams over all samples / all n-grams (Li et al. 2016): 1 = nothing repeats."""
    grams = [g for s in samples for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeats_within(tokens: Sequence, n: int = 2) -> bool:
    """Does one sample contain the same n-gram twice ("a man a man", "on the on the")?"""
    grams = ngrams(tokens, n)
    return len(set(grams)) < len(grams)


def sample_statistics(samples: Sequence[Sequence], training: set | None = None) -> dict[str, float]:
    """distinct-1/-2/-3, the share of samples with a repeated bigram, the mean length, the share of
    identical samples (duplicates of an earlier sample), and the share copied from ``training``."""
    seen = [tuple(s) for s in samples]
    stats = {"distinct_1": distinct_n(samples, 1), "distinct_2": distinct_n(samples, 2),
             "distinct_3": distinct_n(samples, 3),
             "repeat_2gram": sum(repeats_within(s, 2) for s in samples) / len(samples),
             "mean_length": sum(len(s) for s in samples) / len(samples),
             "duplicates": 1 - len(set(seen)) / len(seen)}
    if training is not None:
        stats["copied"] = sum(s in training for s in seen) / len(seen)
    return stats


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def lm_batches(sequences: Sequence[Sequence[int]], max_tokens: int, *, shuffle: bool = True,
               seed: int = 0, pad_idx: int = PAD_IDX) -> Iterator[torch.Tensor]:
    """Padded (B, T) batches of about ``max_tokens`` tokens (B x longest), sentences of similar
    length together; with ``shuffle`` a different order for every seed."""
    if not sequences:
        raise ValueError("sequences is empty")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(sequences), generator=g).tolist() if shuffle else list(range(len(sequences)))
    order.sort(key=lambda i: len(sequences[i]))                            # stable: ties stay shuffled
    batches, batch, longest = [], [], 0
    for i in order:
        longer = max(longest, len(sequences[i]))
        if batch and (len(batch) + 1) * longer > max_tokens:
            batches.append(batch)
            batch, longer = [], len(sequences[i])
        batch.append(i)
        longest = longer
    batches.append(batch)
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    for b in batches:
        T = max(len(sequences[i]) for i in b)
        out = torch.full((len(b), T), pad_idx, dtype=torch.long)
        for row, i in enumerate(b):
            out[row, :len(sequences[i])] = torch.as_tensor(sequences[i], dtype=torch.long)
        yield out


def _lm_step_tensors(model: nn.Module, batch: torch.Tensor, generator: torch.Generator | None,
                     mask_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) for one batch: shifted by one for a CausalLM, masked for a MaskedLM."""
    if isinstance(model, CausalLM):
        return batch[:, :-1], batch[:, 1:]
    return mask_tokens(batch, model.mask_idx, model.vocab_size, mask_prob=mask_prob,
                       generator=generator)


@torch.no_grad()
def evaluate_lm(model: nn.Module, sequences: Sequence[Sequence[int]], *, max_tokens: int = 4000,
                mask_prob: float = 0.15, seed: int = 1234, bf16: bool = False) -> dict[str, float]:
    """Loss (NLL per predicted token), perplexity and accuracy (top-1) on ``sequences``. For a
    MaskedLM the masks are drawn with a fixed ``seed``, so every call hides the same tokens."""
    device = _model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    nll, correct, count = 0.0, 0, 0
    with evaluating(model):
        for batch in lm_batches(sequences, max_tokens, shuffle=False):
            batch = batch.to(device)
            inputs, labels = _lm_step_tensors(model, batch, generator, mask_prob)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(inputs)
            real = labels != IGNORE_IDX
            nll += sequence_loss(logits, labels, reduction="sum").item()
            correct += ((logits.argmax(-1) == labels) & real).sum().item()
            count += int(real.sum())
    if count == 0:
        raise ValueError("no token to predict in sequences")
    loss = nll / count
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "acc": correct / count}


def train_lm(model: nn.Module, train: Sequence[Sequence[int]], val: Sequence[Sequence[int]] | None = None,
             *, epochs: int = 1, max_tokens: int = 4000, peak_lr: float = 1e-3, warmup: int = 200,
             weight_decay: float = 0.01, clip: float | None = 1.0, mask_prob: float = 0.15,
             bf16: bool = False, max_seconds: float | None = None, seed: int = 0,
             device: torch.device | str | None = None) -> History:
    """Train a ``CausalLM`` (next token) or a ``MaskedLM`` (masked tokens, fresh masks every
    batch) on token-id sequences (``<sos> ... <eos>`` for a CausalLM). AdamW with
    ``warmup_inverse_sqrt(peak_lr, warmup)``, gradient clipping, optional bf16 autocast as ``fit``
    does. ``max_seconds`` stops *within* an epoch once that much training time has passed (the
    epoch is then recorded as it stands). One History record per epoch: train_loss, val_loss,
    val_ppl, val_acc, train_seconds, steps, train_tokens, lr."""
    if not isinstance(model, (CausalLM, MaskedLM)):
        raise ValueError(f"model must be a CausalLM or a MaskedLM, got {type(model).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds!r}")
    seed_everything(seed)
    device = _model_device(model) if device is None else torch.device(device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.98),
                                  weight_decay=weight_decay)
    schedule = warmup_inverse_sqrt(peak_lr, warmup)
    generator = torch.Generator(device=device).manual_seed(seed)
    history, step, trained, stop = History(), 0, 0.0, False
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        loss_sum, n_tokens = 0.0, 0
        for batch in lm_batches(train, max_tokens, seed=seed + epoch):
            batch = batch.to(device)
            inputs, labels = _lm_step_tensors(model, batch, generator, mask_prob)
            for group in optimizer.param_groups:
                group["lr"] = schedule(step)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(inputs)                                      # (B, T, V)
            n = int((labels != IGNORE_IDX).sum())
            if n == 0:
                continue
            loss = sequence_loss(logits, labels)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; try a smaller peak_lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            loss_sum += loss.item() * n
            n_tokens += n
            step += 1
            if max_seconds is not None and trained + time.perf_counter() - start >= max_seconds:
                stop = True
                break
        seconds = time.perf_counter() - start
        trained += seconds
        record: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / max(n_tokens, 1)}
        if val is not None:
            scores = evaluate_lm(model, val, max_tokens=max_tokens, mask_prob=mask_prob, bf16=bf16)
            record.update(val_loss=scores["loss"], val_ppl=scores["ppl"], val_acc=scores["acc"])
        record.update(train_seconds=seconds, steps=step, train_tokens=n_tokens,
                      lr=optimizer.param_groups[0]["lr"])
        history.append(record)
        if stop:
            break
    model.eval()
    return history


__all__ = ["TransformerLM", "CausalLM", "MaskedLM", "mask_tokens", "generate", "distinct_n", "repeats_within",
           "sample_statistics", "lm_batches", "evaluate_lm", "train_lm", "IGNORE_IDX"]
