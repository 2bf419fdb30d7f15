"""The course's two real translators on Multi30k de->en: one recipe each, trained once, kept.

    run = train_or_load("transformer")      # or "rnn" (chapter 7)
    run.model, run.data, run.history, run.info

Both read the same data: a joint 8k BPE vocabulary learned on the training split, batches of at
most ``max_tokens`` padded tokens grouped by length. Both train on the *full* training set (29,000
pairs) under a time budget (``max_minutes`` of training, validation not counted) that a laptop's
CPU can afford, pick the epoch with the best validation BLEU (greedy), and are then scored once on
``test_2016_flickr`` by the chapter.

A finished run is saved under ``<cache>/runs/`` (the download cache, ``$S2S_COURSE_CACHE``), keyed
by its recipe, and loaded instead of retrained when a notebook runs again: ``run.info`` says when,
where and how long it trained. ``retrain=True`` (or deleting the file) trains again. Quick mode
(``S2S_QUICK=1``) trains a tiny version on 1,000 pairs for one epoch and never uses the cache.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2s_course.data.batching import make_loader
from s2s_course.data.download import cache_dir
from s2s_course.env import get_device, is_quick, seed_everything
from s2s_course.models.attention_rnn import make_attention_seq2seq
from s2s_course.models.rnn import count_parameters
from s2s_course.models.transformer import make_transformer
from s2s_course.schedules import warmup_inverse_sqrt
from s2s_course.train import History
from s2s_course.translation import TranslationData, bleu_metric, fit_select, prepare_multi30k

# The recipes. Every number here was chosen on the validation set or taken from the papers.
RECIPES: dict[str, dict[str, Any]] = {
    "rnn": {  # chapter 7: Bahdanau attention, bidirectional GRU encoder
        "model": "rnn", "kind": "bahdanau", "emb_dim": 256, "hidden_dim": 256, "dropout": 0.3,
        "optimizer": "adam", "lr": 1e-3, "warmup": None, "label_smoothing": 0.0, "clip": 1.0,
        "bf16": True, "bpe_vocab_size": 8000, "max_tokens": 3000, "epochs": 30,
        "max_minutes": 27.0, "seed": 0,
    },
    "transformer": {  # chapter 10: pre-LN, 3+3 layers, all embeddings tied
        "model": "transformer", "d_model": 256, "num_heads": 8, "num_layers": 3, "d_ff": 1024,
        "dropout": 0.1, "norm_first": True, "tie": "all",
        "optimizer": "adamw", "lr": 1e-3, "warmup": 300, "label_smoothing": 0.1, "clip": 1.0,
        "bf16": True, "bpe_vocab_size": 8000, "max_tokens": 3000, "epochs": 30,
        "max_minutes": 27.0, "seed": 0,
    },
}
# Quick mode (S2S_QUICK=1, the tests): the same code on a sliver of data, with a smaller model.
QUICK = {"n_train": 1000, "n_val": 100, "epochs": 1, "max_minutes": 1.0, "bpe_vocab_size": 2000}
QUICK_MODEL = {"rnn": {"emb_dim": 64, "hidden_dim": 64},
               "transformer": {"d_model": 64, "num_layers": 1, "d_ff": 128}}


@dataclass
class Run:
    """A trained model with its data, its training history and where/how it was trained."""

    model: nn.Module
    data: TranslationData
    history: History
    info: dict[str, Any]


def recipe(name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of ``RECIPES[name]`` with ``overrides`` applied (unknown keys are an error)."""
    if name not in RECIPES:
        raise ValueError(f"name must be one of {sorted(RECIPES)}, got {name!r}")
    config = dict(RECIPES[name])
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"unknown recipe keys {unknown}; known: {sorted(config)}")
    config.update(overrides)
    return config


def build_model(config: dict[str, Any], vocab_size: int) -> nn.Module:
    """The model a recipe describes, for a shared source/target vocabulary of ``vocab_size``."""
    if config["model"] == "rnn":
        return make_attention_seq2seq(vocab_size, vocab_size, kind=config["kind"],
                                      emb_dim=config["emb_dim"], hidden_dim=config["hidden_dim"],
                                      dropout=config["dropout"])
    return make_transformer(vocab_size, vocab_size, d_model=config["d_model"],
                            num_heads=config["num_heads"], num_layers=config["num_layers"],
                            d_ff=config["d_ff"], dropout=config["dropout"],
                            norm_first=config["norm_first"], tie=config["tie"])


def _optimizer(config: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    if config["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config["lr"], betas=(0.9, 0.98),
                                 weight_decay=0.01)
    return torch.optim.Adam(model.parameters(), lr=config["lr"])


def _key(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def run_path(name: str, config: dict[str, Any]) -> Path:
    """Where a run of this recipe is saved: ``<cache>/runs/multi30k-<name>-<hash>.pt``."""
    return cache_dir() / "runs" / f"multi30k-{name}-{_key(config)}.pt"


def _machine(device: torch.device) -> dict[str, Any]:
    info = {"device": device.type, "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def train_or_load(name: str, *, retrain: bool = False, device: torch.device | str | None = None,
                  progress: bool = True, **overrides: Any) -> Run:
    """Train recipe ``name`` ("rnn" or "transformer") on Multi30k, or load its saved run."""
    config = recipe(name, **overrides)
    quick = is_quick()
    if quick:
        config.update(QUICK, **QUICK_MODEL[name])
    data = prepare_multi30k(tokenizer="bpe", bpe_vocab_size=config["bpe_vocab_size"],
                            n_train=config.get("n_train"), n_val=config.get("n_val"))
    vocab_size = len(data.src_vocab)
    device = get_device(None if device is None else str(device))
    path = run_path(name, config)

    seed_everything(config["seed"])
    model = build_model(config, vocab_size)
    if not quick and not retrain and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("vocab", data.src_vocab.get_itos()) != data.src_vocab.get_itos():
            raise RuntimeError(f"{path} was trained with another subword vocabulary than the one "
                               f"built now; delete it or pass retrain=True")
        model.load_state_dict(saved["state_dict"])
        model.to(device).eval()
        info = dict(saved["info"], loaded_from=str(path))
        return Run(model, data, History.from_dict(saved["history"]), info)

    train_loader = make_loader(data.train, max_tokens=config["max_tokens"], seed=config["seed"])
    val_loader = make_loader(data.val, max_tokens=config["max_tokens"], shuffle=False)
    schedule = (warmup_inverse_sqrt(config["lr"], config["warmup"]) if config["warmup"] else None)
    val_bleu = bleu_metric(data.raw["val"], data.src_vocab, data.tgt_vocab, data.tokenizer,
                           detokenizer=data.detokenizer)
    started = dt.datetime.now(dt.timezone.utc)
    history = fit_select(model, train_loader, val_loader, epochs=config["epochs"],
                         select="val_bleu", mode="max", optimizer=_optimizer(config, model),
                         seed=config["seed"], max_seconds=60 * config["max_minutes"],
                         clip=config["clip"], label_smoothing=config["label_smoothing"],
                         lr_schedule=schedule, bf16=config["bf16"], device=device,
                         metrics={"val_bleu": val_bleu}, progress=progress)
    train_seconds = sum(history["train_seconds"])
    best = history.best("val_bleu", "max")
    info = {"recipe": name, "config": config, "parameters": count_parameters(model),
            "epochs": len(history), "best_epoch": best["epoch"], "best_val_bleu": best["val_bleu"],
            "train_minutes": train_seconds / 60,
            "total_minutes": sum(history["seconds"]) / 60,
            "train_tokens_per_second": sum(history["train_tokens"]) / train_seconds,
            "trained_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"), **_machine(device)}
    if not quick:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                    "history": history.to_dict(), "info": info, "vocab": data.src_vocab.get_itos()},
                   path)
    return Run(model, data, history, info)


__all__ = ["RECIPES", "QUICK", "QUICK_MODEL", "Run", "recipe", "build_model", "run_path", "train_or_load"]
