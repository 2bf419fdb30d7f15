"""Decoding: turning a trained model into output sentences.

At test time there is no gold target to feed: the model reads its own previous token.
Three ways to choose that token:

- ``greedy_decode``: always the single most likely token. Fast, but a locally best choice can lead
  to a worse sentence overall.
- ``beam_search``: keep the ``beam_size`` best partial sentences (hypotheses) at every step, and
  rank the finished ones with the GNMT length penalty (Wu et al. 2016, eq. (14)).
- ``sample_decode``: draw the token at random from softmax(logits / temperature).

They work with any model that has ``encode(src, src_lengths) -> state`` and
``decode_step(y_prev, state) -> (logits, state)``, e.g. every model in ``s2s_course.models``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from s2s_course.data.specials import EOS_IDX, SOS_IDX


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Decode with dropout off and without gradients, then restore the model's previous mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _check_positive(name: str, value: int | float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def cut_at_eos(tokens: list[int], eos_idx: int = EOS_IDX) -> list[int]:
    """The tokens before the first <eos> (all of them if there is none)."""
    return tokens[:tokens.index(eos_idx)] if eos_idx in tokens else tokens


def _split_attention(steps: list[torch.Tensor | None], outputs: list[list[int]],
                     src_lengths: torch.Tensor) -> list[torch.Tensor | None]:
    """Per sentence i, the weights (T_i, S_i): one row per emitted token (the <eos> included),
    one column per real source token. None for a model without attention."""
    if steps[0] is None:
        return [None] * len(outputs)
    attn = torch.stack(steps, dim=1)                                   # (B, T, S)
    T = attn.size(1)
    return [attn[i, :min(len(out) + 1, T), :int(src_lengths[i])].cpu()
            for i, out in enumerate(outputs)]


# --------------------------------------------------------------------------------------------
# Greedy decoding and sampling: one token per sentence per step, the whole batch at once
# --------------------------------------------------------------------------------------------

def _decode_loop(model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor,
                 choose: Callable[[torch.Tensor], torch.Tensor], max_len: int, sos_idx: int,
                 eos_idx: int) -> tuple[list[list[int]], list[torch.Tensor | None]]:
    """Feed the model its own choices until every sentence has produced <eos> or max_len tokens."""
    _check_positive("max_len", max_len)
    state = model.encode(src, src_lengths)
    B = src.size(0)
    y = torch.full((B,), sos_idx, dtype=torch.long, device=src.device)   # (B,) start with <sos>
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    tokens, attention = [], []
    for _ in range(max_len):
        logits, state = model.decode_step(y, state)                     # (B, V)
        y = choose(logits)                                              # (B,)
        tokens.append(y)
        attention.append(getattr(state, "attn", None))       # (B, S) or None
        finished = finished | (y == eos_idx)
        if bool(finished.all()):
            break
    rows = torch.stack(tokens, dim=1).tolist()                          # (B, T)
    return [cut_at_eos(row, eos_idx) for row in rows], attention


def greedy_decode(model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor, *,
                  max_len: int = 50, sos_idx: int = SOS_IDX, eos_idx: int = EOS_IDX,
                  return_attention: bool = False
                  ) -> list[list[int]] | tuple[list[list[int]], list[torch.Tensor | None]]:
    """Pick the most likely token at every step: y_t = argmax p(y | y_<t, x).

    Returns one list of token ids per sentence, without <sos>/<eos> (at most max_len tokens).
    With return_attention=True also a list of (T_i, S_i) weights per sentence (None without
    attention), T_i counting the <eos> step.
    """
    with evaluating(model):
        outputs, steps = _decode_loop(model, src, src_lengths, lambda logits: logits.argmax(-1),
                                      max_len, sos_idx, eos_idx)
    if not return_attention:
        return outputs
    return outputs, _split_attention(steps, outputs, src_lengths)


def sample_decode(model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor, *,
                  temperature: float = 1.0, max_len: int = 50,
                  generator: torch.Generator | None = None, sos_idx: int = SOS_IDX,
                  eos_idx: int = EOS_IDX) -> list[list[int]]:
    """Draw every token from softmax(logits / temperature).

    temperature < 1 sharpens the distribution (towards greedy as it goes to 0), > 1 flattens it.
    Pass a seeded ``generator`` (on the model's device) to get the same samples again.
    """
    _check_positive("temperature", temperature)

    def draw(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits / temperature, dim=-1)             # (B, V)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)

    with evaluating(model):
        outputs, _ = _decode_loop(model, src, src_lengths, draw, max_len, sos_idx, eos_idx)
    return outputs


# --------------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------------

@dataclass
class Hypothesis:
    """A (partial or finished) output sentence of beam search.

    tokens: ids without <sos>/<eos>; log_prob: sum of the log-probabilities of every predicted
    token (the <eos> included); score: log_prob / lp(|Y|), what beam search ranks finished
    sentences by; attention: (|Y|, S) weights, one row per predicted token, or None.
    """

    tokens: list[int]
    log_prob: float
    score: float
    attention: torch.Tensor | None = None


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """lp(Y) = ((5 + |Y|) / 6) ** alpha  (Wu et al. 2016, eq. (14)); alpha = 0 gives 1 (none).

    A sum of log-probabilities only gets more negative with every token, so plain beam search
    prefers short outputs; dividing by lp(Y) evens that out."""
    return ((5 + length) / 6) ** alpha


def _finish(hyp: Hypothesis, log_prob: float, length: int, alpha: float,
            attention: torch.Tensor | None) -> Hypothesis:
    score = log_prob / gnmt_length_penalty(length, alpha)
    return Hypothesis(tokens=hyp.tokens, log_prob=log_prob, score=score, attention=attention)


def _add_row(attention: torch.Tensor | None, row: torch.Tensor | None) -> torch.Tensor | None:
    if row is None:
        return None
    row = row.unsqueeze(0).cpu()                                        # (1, S)
    return row if attention is None else torch.cat([attention, row])   # (T, S)


def beam_step(beam_scores: torch.Tensor, log_probs: torch.Tensor,
              k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of beam search: the k best one-token extensions of K hypotheses.

    beam_scores: (K,) log-probability of each hypothesis so far; log_probs: (K, V) of the next
    token. Extension (i, v) scores beam_scores[i] + log_probs[i, v], and all K*V extensions are
    ranked together (one parent may get several children). Returns (scores, parents, tokens), (k,) each.
    """
    V = log_probs.size(1)
    totals = beam_scores.unsqueeze(1) + log_probs                       # (K, V): every extension
    scores, flat_idx = totals.reshape(-1).topk(min(k, totals.numel()))  # (k,)
    return scores, flat_idx // V, flat_idx % V                          # which hypothesis, which token


def _beam_search_one(model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor,
                     beam_size: int, max_len: int, alpha: float, sos_idx: int,
                     eos_idx: int) -> list[Hypothesis]:
    """Beam search for ONE sentence (src (1, S)); the beam plays the role of the batch.

    A hypothesis that produces <eos> leaves the beam for the finished list and the beam shrinks
    by one; the search stops when the beam is empty or after max_len steps. Alive hypotheses
    all have the same length, so ranking them by log_prob is fair; only the finished ones,
    of different lengths, are ranked with the length penalty.
    """
    state = model.encode(src, src_lengths)                              # batch of 1
    beam = [Hypothesis(tokens=[], log_prob=0.0, score=0.0)]
    finished: list[Hypothesis] = []
    y_prev = torch.tensor([sos_idx], device=src.device)                  # (K,) with K = 1
    for step in range(1, max_len + 1):
        logits, state = model.decode_step(y_prev, state)                # (K, V)
        log_probs = torch.log_softmax(logits.float(), dim=-1)           # (K, V)
        prefix = torch.tensor([h.log_prob for h in beam], device=log_probs.device)  # (K,)
        width = beam_size - len(finished)                               # places left in the beam
        best, best_parents, best_tokens = beam_step(prefix, log_probs, width)
        attn = getattr(state, "attn", None)                             # (K, S) or None
        new_beam, parents = [], []
        for total, parent, token in zip(best.tolist(), best_parents.tolist(), best_tokens.tolist()):
            hyp = beam[parent]
            attention = _add_row(hyp.attention, None if attn is None else attn[parent])
            if token == eos_idx:                                        # done: stop growing it
                finished.append(_finish(hyp, total, step, alpha, attention))
            else:
                new_beam.append(Hypothesis(hyp.tokens + [token], total, total, attention))
                parents.append(parent)
        beam = new_beam
        if not beam:
            break
        state = state.index_select(torch.tensor(parents, device=src.device))
        y_prev = torch.tensor([h.tokens[-1] for h in beam], device=src.device)
    # Hypotheses still alive after max_len steps never produced <eos>; keep them as they are.
    finished.extend(_finish(h, h.log_prob, len(h.tokens), alpha, h.attention) for h in beam)
    return sorted(finished, key=lambda h: h.score, reverse=True)


def beam_search(model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor, *,
                beam_size: int = 5, max_len: int = 50, length_penalty: float = 0.6,
                n_best: int = 1, sos_idx: int = SOS_IDX,
                eos_idx: int = EOS_IDX) -> list[list[Hypothesis]]:
    """Beam search over a batch, one sentence at a time.

    Returns, per source sentence, the ``n_best`` hypotheses, best score first. ``length_penalty``
    is GNMT's alpha (0 = rank by the plain sum of log-probabilities). beam_size=1 is greedy.
    """
    _check_positive("beam_size", beam_size)
    _check_positive("max_len", max_len)
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in [1, beam_size={beam_size}], got {n_best!r}")
    results = []
    with evaluating(model):
        for i in range(src.size(0)):
            length = int(src_lengths[i])
            one_src = src[i:i + 1, :length]                              # (1, S_i): no padding
            one_len = src_lengths[i:i + 1]                               # (1,)
            hyps = _beam_search_one(model, one_src, one_len, beam_size, max_len, length_penalty,
                                    sos_idx, eos_idx)
            results.append(hyps[:n_best])
    return results


# --------------------------------------------------------------------------------------------
# One sentence in, one sentence out
# --------------------------------------------------------------------------------------------

def translate(model: nn.Module, sentence: str, src_vocab, tgt_vocab,
              tokenizer: Callable[[str], list[str]], *, method: str = "greedy",
              beam_size: int = 5, max_len: int = 50, device: torch.device | str | None = None,
              add_src_eos: bool = True) -> list[str]:
    """Translate one sentence: tokenize, look up ids (+ <eos> unless add_src_eos=False, as in
    Seq2SeqDataset), decode with ``method`` ("greedy" or "beam"), return the target tokens."""
    if method not in ("greedy", "beam"):
        raise ValueError(f"method must be 'greedy' or 'beam', got {method!r}")
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    ids = src_vocab.lookup_indices(tokenizer(sentence)) + ([EOS_IDX] if add_src_eos else [])
    src = torch.tensor([ids], dtype=torch.long, device=device)          # (1, S)
    src_lengths = torch.tensor([len(ids)])                               # (1,) on the CPU
    if method == "greedy":
        out = greedy_decode(model, src, src_lengths, max_len=max_len)[0]
    else:
        best = beam_search(model, src, src_lengths, beam_size=beam_size, max_len=max_len)[0][0]
        out = best.tokens
    return tgt_vocab.lookup_tokens(out)


# --------------------------------------------------------------------------------------------
# Sampling with filters (chapter 12): top-k, top-p (nucleus), and one step that combines them
# --------------------------------------------------------------------------------------------

def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep, in every row of logits (..., V), the k largest values; set the rest to -inf.

    Tokens tied with the k-th largest value are all kept (so a row can keep more than k). k >= V
    keeps everything; k = 1 leaves only the argmax (and its ties): sampling becomes greedy.
    Returns a new tensor; ``logits`` is not modified."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k >= logits.size(-1):
        return logits.clone()
    kth = logits.topk(k, dim=-1).values[..., -1:]                       # (..., 1) k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep, in every row, the smallest set of most
    likely tokens whose probabilities add up to at least p; set the rest to -inf.

    Sort by probability; a token is kept if the mass of the tokens before it is still < p, so the
    token that crosses p is included and the most likely token is always kept. Tokens tied with
    the least likely kept token are kept too (the order among ties is arbitrary). p = 1 keeps all.
    Returns a new tensor; ``logits`` is not modified."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    if p >= 1.0:
        return logits.clone()
    probs = torch.softmax(logits.float(), dim=-1)                         # (..., V)
    sorted_probs, _ = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs                   # mass of the tokens ahead
    keep_sorted = before < p                                              # (..., V), a prefix
    n_keep = keep_sorted.sum(dim=-1, keepdim=True)                        # (..., 1) >= 1
    smallest_kept = sorted_probs.gather(-1, n_keep - 1)                   # (..., 1)
    return logits.masked_fill(probs < smallest_kept, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of logits (B, V): divide by ``temperature``, apply ``top_k_filter``, then
    ``top_p_filter`` (the order Hugging Face's generate uses), then draw from the softmax.
    temperature=0 means greedy (argmax, filters irrelevant). Returns (B,) token ids."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got shape {tuple(logits.shape)}")
    if isinstance(temperature, bool) or not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    scores = logits.float() / temperature
    if top_k is not None:
        scores = top_k_filter(scores, top_k)
    if top_p is not None:
        scores = top_p_filter(scores, top_p)
    probs = torch.softmax(scores, dim=-1)                                 # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)    # (B,)


# --------------------------------------------------------------------------------------------
# GNMT's coverage penalty (chapter 7's exercises): how much of the source did attention cover?
# --------------------------------------------------------------------------------------------

COVERAGE_EPS = 1e-10  # a real source word's coverage is clamped here before the log (see below)


def coverage_penalty(attn: torch.Tensor, src_mask: torch.Tensor, beta: float,
                     eps: float = COVERAGE_EPS) -> torch.Tensor:
    """GNMT's coverage penalty (Wu et al. 2016, eq. (14)), added to the length-normalised score:
    cp(X; Y) = beta * sum_i log(min(sum_j p_ij, 1)), i over the real source positions, j over
    the target steps, p_ij the attention weight of target step j on source position i.

    attn (..., T, S) (any leading dims: a batch, a beam), src_mask (..., S) bool, True = real
    token; returns (...,), always <= 0. A source word whose attention adds up to less than 1 was
    (partly) left untranslated and costs log of its coverage; attending to a word more than once
    earns nothing (the min). Padding positions count 0. A real word that got no attention at all
    would cost log 0 = -inf and make every such hypothesis tie; its coverage is clamped at
    ``eps`` instead, so the score stays finite and comparable."""
    coverage = attn.sum(dim=-2)                                           # (..., S) over target steps
    per_word = coverage.clamp(min=eps, max=1.0).log()                     # (..., S) <= 0
    return beta * per_word.masked_fill(~src_mask, 0.0).sum(dim=-1)       # (...,) padding counts 0
