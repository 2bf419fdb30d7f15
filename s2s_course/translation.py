"""Machine translation end to end on Multi30k (German -> English): data, training, scoring.

The chapters that train a real translation model (RNN with attention, Transformer) all need the
same plumbing, so it lives here once:

    data = prepare_multi30k(min_freq=2)                       # tokens, vocabularies, datasets
    history = fit_select(model, train_loader, val_loader, epochs=15, select="val_bleu",
                         mode="max", metrics={"val_bleu": bleu_metric(data.raw["val"], ...)})
    result = evaluate_translation(model, data.raw["test"], data.src_vocab, data.tgt_vocab,
                                  data.tokenizer, method="beam", beam_size=5)
    print(result.bleu, result.bleu_signature)

What is scored, and how (see ``evaluate_translation``):

- ``bleu`` / ``chrf``: sacreBLEU on *detokenized* output against the *raw* reference sentences,
  the number to compare with papers (with its signature);
- ``bleu_lc``: the same, case-insensitive;
- ``token_bleu``: BLEU over our own lowercased tokens, the way many tutorials compute it.

Also here: ``sequence_log_probs`` (how much probability the model gives a whole output) and
``search_and_model_errors`` (did decoding miss a better-scoring correct answer, or does the model
itself prefer a wrong one?), and ``find_failures`` (repetitions, dropped words, unknown words).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from s2s_course.data.batching import Seq2SeqDataset, pad_sequences
from s2s_course.data.corpora import load_multi30k
from s2s_course.data.specials import EOS_IDX, PAD_IDX, SOS_IDX, UNK
from s2s_course.data.subword import train_bpe
from s2s_course.data.tokenize import get_tokenizer
from s2s_course.data.vocab import Vocab, build_vocab_from_iterator
from s2s_course.decode import beam_search, evaluating, greedy_decode
from s2s_course.metrics import (bleu_signature, chrf_signature, corpus_bleu, corpus_chrf,
                                lowercase_token_bleu)
from s2s_course.train import History, _model_device, fit

Tokenizer = Callable[[str], list[str]]
Pair = tuple[str, str]

METHODS = ("greedy", "beam")


def _check_count(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None (no limit), got {value!r}")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

@dataclass
class TranslationData:
    """Everything a translation experiment needs, built once.

    ``train``/``val``/``test`` are ``Seq2SeqDataset``s of tokens; ``raw[split]`` holds the
    untokenized (source, reference) sentences in the same order, for sacreBLEU.
    """

    train: Seq2SeqDataset
    val: Seq2SeqDataset
    test: Seq2SeqDataset
    src_vocab: Vocab
    tgt_vocab: Vocab
    tokenizer: Tokenizer
    raw: dict[str, list[Pair]]
    settings: dict[str, Any] = field(default_factory=dict)
    detokenizer: Callable[[Sequence[str]], str] | None = None  # None: recase(detokenize(...))

    def sizes(self) -> dict[str, int]:
        """Number of sentence pairs per split and the two vocabulary sizes."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test),
                "src_vocab": len(self.src_vocab), "tgt_vocab": len(self.tgt_vocab)}


def _tokenize_split(pairs: Iterable[Pair], tokenizer: Tokenizer, max_len: int | None,
                    limit: int | None) -> tuple[list[tuple[list[str], list[str]]], list[Pair]]:
    """Tokenize pairs in file order, skipping those with a side longer than ``max_len``, and stop
    after ``limit`` kept pairs. Returns the token pairs and the raw pairs that were kept."""
    tokens, raw = [], []
    for src, tgt in pairs:
        if limit is not None and len(tokens) >= limit:
            break
        src_tokens, tgt_tokens = tokenizer(src), tokenizer(tgt)
        if max_len is not None and (len(src_tokens) > max_len or len(tgt_tokens) > max_len):
            continue
        tokens.append((src_tokens, tgt_tokens))
        raw.append((src, tgt))
    return tokens, raw


def prepare_multi30k(min_freq: int = 2, max_len: int | None = None, lowercase: bool | None = None,
                     n_train: int | None = None, n_val: int | None = None,
                     n_test: int | None = None, tokenizer: str = "words",
                     bpe_vocab_size: int = 8000) -> TranslationData:
    """Multi30k de->en as datasets and vocabularies built from the training split only.

    - ``tokenizer``/``lowercase``: ``get_tokenizer(tokenizer, lower=lowercase)``, both languages
      (``lowercase`` defaults to True); or ``tokenizer="bpe"``: one joint BPE model of
      ``bpe_vocab_size`` pieces learned on both sides of the training split (``lowercase``
      defaults to False: the model writes cased text), and ONE vocabulary shared by source and
      target (``data.src_vocab is data.tgt_vocab``), so embeddings can be tied;
    - ``min_freq``: rarer training tokens become ``<unk>`` (words only);
    - ``max_len``: keep only *training* pairs with at most this many tokens on each side (val and
      test are never filtered: what we report must be the real test set);
    - ``n_train``/``n_val``/``n_test``: keep the first n pairs (in file order) of each split,
      e.g. for a quick run; None keeps them all (29,000 / 1,014 / 1,000).
    """
    if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
        raise ValueError(f"min_freq must be an int >= 1, got {min_freq!r}")
    for name, value in (("max_len", max_len), ("n_train", n_train), ("n_val", n_val),
                        ("n_test", n_test)):
        _check_count(name, value)
    detokenizer = None
    if tokenizer == "bpe":
        lowercase = False if lowercase is None else lowercase
        train_pairs = list(load_multi30k("train"))[:n_train]
        tok = train_bpe((s for pair in train_pairs for s in pair), bpe_vocab_size,
                        lowercase=lowercase)
        detokenizer = (lambda pieces: recase(tok.decode(pieces))) if lowercase else tok.decode
    else:
        lowercase = True if lowercase is None else lowercase
        tok = get_tokenizer(tokenizer, lower=lowercase)
    train_tokens, train_raw = _tokenize_split(load_multi30k("train"), tok, max_len, n_train)
    if not train_tokens:
        raise ValueError(f"no training pair has at most max_len={max_len} tokens per side")
    val_tokens, val_raw = _tokenize_split(load_multi30k("val"), tok, None, n_val)
    test_tokens, test_raw = _tokenize_split(load_multi30k("test_2016_flickr"), tok, None, n_test)

    if tokenizer == "bpe":  # one joint vocabulary, in the BPE model's own order
        src_vocab = tgt_vocab = Vocab(tok.pieces())
    else:
        src_vocab = build_vocab_from_iterator((s for s, _ in train_tokens), min_freq=min_freq)
        tgt_vocab = build_vocab_from_iterator((t for _, t in train_tokens), min_freq=min_freq)
    settings = {"dataset": "multi30k de-en", "tokenizer": tokenizer, "lowercase": lowercase,
                "min_freq": min_freq, "max_len": max_len, "n_train": n_train, "n_val": n_val,
                "n_test": n_test}
    if tokenizer == "bpe":
        settings["bpe_vocab_size"] = bpe_vocab_size
    return TranslationData(detokenizer=detokenizer,
        train=Seq2SeqDataset(train_tokens, src_vocab, tgt_vocab),
        val=Seq2SeqDataset(val_tokens, src_vocab, tgt_vocab),
        test=Seq2SeqDataset(test_tokens, src_vocab, tgt_vocab),
        src_vocab=src_vocab, tgt_vocab=tgt_vocab, tokenizer=tok,
        raw={"train": train_raw, "val": val_raw, "test": test_raw}, settings=settings)


# --------------------------------------------------------------------------------------------
# From tokens back to text
# --------------------------------------------------------------------------------------------

_NO_SPACE_BEFORE = {".", ",", "!", "?", ";", ":", ")", "%"}
_CLITICS = {"s", "t", "re", "ve", "ll", "d", "m"}  # man ' s -> man's, don ' t -> don't


def detokenize(tokens: Sequence[str]) -> str:
    """Join English tokens of the "words" tokenizer back into text.

    ``['a', 'man', "'", 's', 'dog', '-', 'like', 'hat', '.']`` -> ``"a man's dog-like hat."``:
    no space before closing punctuation, none after "(" or inside "double quotes", and apostrophes
    and hyphens between two words are glued to both. sacreBLEU then tokenizes the text its own (standard) way.
    """
    text, open_quote = "", False
    for i, token in enumerate(tokens):
        prev = tokens[i - 1] if i > 0 else ""
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        after_open_quote = prev == '"' and open_quote        # "street clothes": glue to the right
        if token == '"':
            open_quote = not open_quote
        closing_quote = token == '"' and not open_quote       # ... clothes": glue to the left
        glue = (i == 0 or token in _NO_SPACE_BEFORE or prev == "(" or after_open_quote
                or closing_quote
                or (prev == "'" and token in _CLITICS and i >= 2 and tokens[i - 2][-1:].isalnum())
                or (token == "'" and nxt in _CLITICS and prev[-1:].isalnum())
                or (prev == "-" and token[:1].isalnum() and i >= 2 and tokens[i - 2][-1:].isalnum())
                or (token == "-" and prev[-1:].isalnum() and nxt[:1].isalnum()))
        text += token if glue else " " + token
    return text


def recase(text: str) -> str:
    """Capitalise the first letter: the model writes lowercase, Multi30k's references start
    with a capital ("A man ..."). Names in mid-sentence stay lowercase (and cost a little BLEU)."""
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------------------------
# Decoding a list of sentences and scoring the result
# --------------------------------------------------------------------------------------------

@dataclass
class TranslationResult:
    """Outputs and scores of one decoding run over a list of (source, reference) sentences."""

    method: str
    beam_size: int
    length_penalty: float
    sources: list[str]
    references: list[str]
    src_tokens: list[list[str]]
    hyp_tokens: list[list[str]]      # the model's tokens (no <sos>/<eos>)
    hypotheses: list[str]            # detokenized and recased: what sacreBLEU scores
    bleu: float                      # sacreBLEU, 13a, case-sensitive
    bleu_lc: float                   # sacreBLEU, 13a, lowercased
    chrf: float                      # sacreBLEU chrF (character 6-grams, beta = 2)
    token_bleu: float                # BLEU over our own lowercased tokens (tutorial-style)
    bleu_signature: str
    chrf_signature: str
    bleu_text: str                   # sacreBLEU's line: n-gram precisions, brevity penalty
    seconds: float
    attention: list[torch.Tensor | None] | None = None  # greedy only: (T_i, S_i) per sentence

    def summary(self) -> dict[str, Any]:
        """The numbers (no sentences), ready for a table or ``results.save_result``."""
        return {"method": self.method, "beam_size": self.beam_size,
                "length_penalty": self.length_penalty, "sentences": len(self.references),
                "bleu": round(self.bleu, 2), "bleu_lc": round(self.bleu_lc, 2),
                "chrf": round(self.chrf, 2), "token_bleu": round(self.token_bleu, 2),
                "bleu_signature": self.bleu_signature, "chrf_signature": self.chrf_signature,
                "seconds": round(self.seconds, 2)}


def _check_pairs(pairs: Sequence[Pair]) -> None:
    if isinstance(pairs, str) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise ValueError("pairs must be a non-empty list of (source, reference) sentence pairs")
    for i, pair in enumerate(pairs):
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(s, str) for s in pair)):
            raise ValueError(f"pairs[{i}] must be a (source, reference) pair of strings, "
                             f"got {pair!r:.60}")


def evaluate_translation(model: nn.Module, pairs: Sequence[Pair], src_vocab: Vocab,
                         tgt_vocab: Vocab, tokenizer: Tokenizer, *, method: str = "greedy",
                         beam_size: int = 5, length_penalty: float = 0.6, max_len: int = 50,
                         batch_size: int = 64, device: torch.device | str | None = None,
                         return_attention: bool = False,
                         detokenizer: Callable[[Sequence[str]], str] | None = None
                         ) -> TranslationResult:
    """Translate every source of ``pairs`` and score the outputs against the references.

    Sources are tokenized like the training data (ids + <eos>) and decoded with ``method``:
    "greedy" or "beam" (``beam_size``, GNMT ``length_penalty``). Sentences are sorted by length
    into batches (less padding) and put back in order. ``return_attention`` (greedy only) keeps
    each sentence's attention weights for ``viz.plot_attention``. ``detokenizer`` turns output
    tokens into text (``data.detokenizer``; default: ``recase(detokenize(tokens))`` for words).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if return_attention and method != "greedy":
        raise ValueError("return_attention=True is only available with method='greedy'")
    _check_pairs(pairs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    device = _model_device(model) if device is None else torch.device(device)
    model.to(device)

    start = time.perf_counter()
    src_tokens = [tokenizer(src) for src, _ in pairs]
    ids = [torch.tensor(src_vocab(tokens) + [EOS_IDX], dtype=torch.long) for tokens in src_tokens]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together
    outputs: list[list[int]] = [[] for _ in ids]
    attention: list[torch.Tensor | None] = [None for _ in ids]
    for first in range(0, len(order), batch_size):
        chunk = order[first:first + batch_size]
        src, src_lengths = pad_sequences([ids[i] for i in chunk])     # (B, S), (B,) on the CPU
        src = src.to(device)
        if method == "greedy":
            decoded, weights = greedy_decode(model, src, src_lengths, max_len=max_len,
                                             return_attention=True)
        else:
            best = beam_search(model, src, src_lengths, beam_size=beam_size, max_len=max_len,
                               length_penalty=length_penalty)
            decoded, weights = [hyps[0].tokens for hyps in best], [None] * len(chunk)
        for i, out, w in zip(chunk, decoded, weights):
            outputs[i], attention[i] = out, w
    seconds = time.perf_counter() - start

    hyp_tokens = [tgt_vocab.lookup_tokens(out) for out in outputs]
    to_text = detokenizer or (lambda tokens: recase(detokenize(tokens)))
    hypotheses = [to_text(tokens) for tokens in hyp_tokens]
    references = [ref for _, ref in pairs]
    bleu = corpus_bleu(hypotheses, references)
    # Tutorial-style BLEU: lowercased *word* tokens of both sides, whatever the model's units.
    words = get_tokenizer("words", lower=True)
    token_bleu = lowercase_token_bleu([words(h) for h in hypotheses],
                                      [words(r) for r in references]).score
    return TranslationResult(
        method=method, beam_size=1 if method == "greedy" else beam_size,
        length_penalty=0.0 if method == "greedy" else float(length_penalty),
        sources=[src for src, _ in pairs], references=references, src_tokens=src_tokens,
        hyp_tokens=hyp_tokens, hypotheses=hypotheses, bleu=bleu.score,
        bleu_lc=corpus_bleu(hypotheses, references, lowercase=True).score,
        chrf=corpus_chrf(hypotheses, references).score,
        token_bleu=token_bleu,
        bleu_signature=bleu_signature(), chrf_signature=chrf_signature(), bleu_text=str(bleu),
        seconds=seconds, attention=attention if return_attention else None)


def bleu_metric(pairs: Sequence[Pair], src_vocab: Vocab, tgt_vocab: Vocab, tokenizer: Tokenizer,
                *, max_len: int = 50, batch_size: int = 128,
                detokenizer: Callable[[Sequence[str]], str] | None = None
                ) -> Callable[[nn.Module, Any, torch.device], float]:
    """A ``fit`` metric: greedy sacreBLEU of the model on ``pairs`` (the loader is not used),
    e.g. ``metrics={"val_bleu": bleu_metric(data.raw["val"], ...)}``."""
    _check_pairs(pairs)

    def val_bleu(model: nn.Module, loader: Any, device: torch.device) -> float:
        return evaluate_translation(model, pairs, src_vocab, tgt_vocab, tokenizer,
                                    max_len=max_len, batch_size=batch_size, device=device,
                                    detokenizer=detokenizer).bleu

    return val_bleu


# --------------------------------------------------------------------------------------------
# Training with model selection on the validation set
# --------------------------------------------------------------------------------------------

def fit_select(model: nn.Module, train_loader: Iterable, val_loader: Iterable, *, epochs: int,
               select: str = "val_loss", mode: str = "min", lr: float = 1e-3,
               optimizer: torch.optim.Optimizer | None = None, seed: int | None = None,
               max_seconds: float | None = None, **fit_kwargs: Any) -> History:
    """Train like ``train.fit``, one epoch at a time, and keep the weights of the best epoch.

    After every epoch the validation score ``select`` (``"val_loss"``, or a name from
    ``metrics``) is compared with the best so far (``mode`` "min" or "max"); at the end the
    model is loaded with the best epoch's weights. ``history.best(select, mode)`` says which
    epoch that was. One optimizer lives across the epochs, so Adam's state is not reset.
    ``teacher_forcing`` must be a fixed ratio here (a schedule would restart every epoch); an
    ``lr_schedule`` continues from epoch to epoch. ``max_seconds`` stops after the epoch in which
    the training time (validation excluded) reaches it: a time budget, whatever the machine.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if callable(fit_kwargs.get("teacher_forcing")):
        raise ValueError("fit_select needs a fixed teacher_forcing ratio; a schedule would "
                         "restart at step 0 every epoch (use train.fit for schedules)")
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = History()
    best_value, best_state = None, None
    step, trained = 0, 0.0
    for epoch in range(1, epochs + 1):
        one = fit(model, train_loader, val_loader, epochs=1, optimizer=optimizer,
                  seed=seed if epoch == 1 else None, first_step=step, **fit_kwargs)
        record = dict(one.records[0], epoch=epoch)
        step, trained = record["steps"], trained + record["train_seconds"]
        if select not in record:
            raise KeyError(f"select={select!r} was not recorded; recorded keys: {sorted(record)}")
        value = record[select]
        improved = best_value is None or (value < best_value if mode == "min" else value > best_value)
        if improved:
            best_value = value
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        history.append(record)
        if max_seconds is not None and trained >= max_seconds:
            break
    model.load_state_dict(best_state)
    model.eval()
    return history


# --------------------------------------------------------------------------------------------
# Search errors versus model errors
# --------------------------------------------------------------------------------------------

def sequence_log_probs(model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor,
                       outputs: Sequence[Sequence[int]], *, sos_idx: int = SOS_IDX,
                       eos_idx: int = EOS_IDX) -> list[float]:
    """log p(y | x) of each whole output y (its tokens, then <eos>), with teacher forcing.

    This is the quantity beam search maximises (before the length penalty): comparing it for
    two candidate outputs says which one the *model* prefers, whatever the decoder found.
    """
    if len(outputs) != src.size(0):
        raise ValueError(f"outputs must have one sequence per source ({src.size(0)}), "
                         f"got {len(outputs)}")
    device = src.device
    tgt_in, _ = pad_sequences([torch.tensor([sos_idx, *out], dtype=torch.long) for out in outputs])
    tgt_out, _ = pad_sequences([torch.tensor([*out, eos_idx], dtype=torch.long) for out in outputs])
    tgt_in, tgt_out = tgt_in.to(device), tgt_out.to(device)                  # (B, T)
    with evaluating(model):
        logits = model(src, src_lengths, tgt_in, teacher_forcing=1.0)        # (B, T, V)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        picked = log_probs.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)      # (B, T)
        picked = picked.masked_fill(tgt_out == PAD_IDX, 0.0)                 # padding adds 0
    return picked.sum(dim=1).tolist()


def search_and_model_errors(model: nn.Module, src: torch.Tensor, src_lengths: torch.Tensor,
                            outputs: Sequence[Sequence[int]],
                            references: Sequence[Sequence[int]]) -> dict[str, int]:
    """Split the wrong outputs into two kinds (Stahlberg and Byrne, 2019), and count the right ones:

    - search error: the model gives the reference a *higher* probability than the output, so a
      better search would have found it;
    - model error: the model itself prefers the wrong output; no search can fix that.
    """
    if len(outputs) != len(references):
        raise ValueError(f"outputs and references must have the same length, "
                         f"got {len(outputs)} and {len(references)}")
    out_scores = sequence_log_probs(model, src, src_lengths, outputs)
    ref_scores = sequence_log_probs(model, src, src_lengths, references)
    counts = {"correct": 0, "search_errors": 0, "model_errors": 0}
    for out, ref, s_out, s_ref in zip(outputs, references, out_scores, ref_scores):
        if list(out) == list(ref):
            counts["correct"] += 1
        elif s_ref > s_out:
            counts["search_errors"] += 1
        else:
            counts["model_errors"] += 1
    return counts


# --------------------------------------------------------------------------------------------
# Typical failures
# --------------------------------------------------------------------------------------------

def repeated_ngram(tokens: Sequence[str], max_n: int = 3,
                   ignore: Iterable[str] = (UNK,)) -> tuple[str, ...] | None:
    """The first n-gram (n <= max_n) that is immediately repeated, e.g. ('a', 'dog') in
    "a dog a dog runs"; None if there is none. Real sentences almost never stutter like that.
    N-grams made only of ``ignore`` tokens do not count: "<unk> <unk>" is two unknown words."""
    skip = set(ignore)
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - 2 * n + 1):
            gram = list(tokens[i:i + n])
            if gram == list(tokens[i + n:i + 2 * n]) and not set(gram) <= skip:
                return tuple(gram)
    return None


def find_failures(result: TranslationResult, short_ratio: float = 0.6,
                  tokenizer: Tokenizer | None = None) -> dict[str, list[int]]:
    """Indices of sentences showing a typical failure of neural MT:

    - "repetition": an n-gram repeated back to back (``repeated_ngram``);
    - "dropped words": the output has fewer than ``short_ratio`` x the reference's tokens;
    - "unknown words": the output contains ``<unk>``.
    A sentence can be in several lists. ``tokenizer`` counts reference tokens (default: split).
    """
    count = tokenizer or str.split
    found: dict[str, list[int]] = {"repetition": [], "dropped words": [], "unknown words": []}
    for i, (hyp, ref) in enumerate(zip(result.hyp_tokens, result.references)):
        if repeated_ngram(hyp) is not None:
            found["repetition"].append(i)
        if len(hyp) < short_ratio * len(count(ref)):
            found["dropped words"].append(i)
        if UNK in hyp:
            found["unknown words"].append(i)
    return found


__all__ = ["METHODS", "TranslationData", "TranslationResult", "prepare_multi30k", "detokenize",
           "recase", "chrf_signature", "evaluate_translation", "bleu_metric", "fit_select",
           "sequence_log_probs", "search_and_model_errors", "repeated_ngram", "find_failures"]
