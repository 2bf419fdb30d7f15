"""Train a small Transformer (chapter 10) with DistributedDataParallel and the course's ``fit``.

    torchrun --standalone --nproc_per_node 2 scripts/train_ddp.py      # 2 processes
    python scripts/train_ddp.py                                         # 1 process, no process group

On CPUs the processes talk over gloo; with CUDA GPUs each process takes GPU ``LOCAL_RANK`` and
they talk over NCCL (``--backend`` overrides). The task is the synthetic reverse task, so nothing
is downloaded. ``--batch-size`` is per process: the global batch is ``nproc x batch-size``.
Rank 0 prints a summary and, with ``--json``/``--save``, writes it and the trained weights.
tests/test_distributed.py runs this script with 2 CPU processes and compares it with one process.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from s2s_course.data import BucketBatchSampler, Seq2SeqDataset, TokenBatchSampler, make_task, task_vocabs
from s2s_course.data.batching import collate_batch
from s2s_course.distributed import (DistributedBatchSampler, cleanup_distributed, mean_over_ranks,
                                    setup_distributed, unwrap, wrap_ddp)
from s2s_course.env import seed_everything
from s2s_course.models.transformer import Transformer, make_transformer
from s2s_course.train import fit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every default is small enough for two CPU processes."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="reverse", choices=["copy", "reverse", "sort"])
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--min-len", type=int, default=5)
    p.add_argument("--max-len", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32, help="sentences per process and step")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="batch by padded tokens per process (TokenBatchSampler) instead")
    p.add_argument("--no-shuffle", action="store_true")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-ff", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="nccl or gloo (default: nccl with CUDA, else gloo)")
    p.add_argument("--json", type=Path, default=None, help="rank 0 writes the summary here")
    p.add_argument("--save", type=Path, default=None, help="rank 0 saves the trained state_dict here")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this state_dict (torch.save) instead of a fresh initialisation")
    return p.parse_args(argv)


def make_dataset(args: argparse.Namespace) -> Seq2SeqDataset:
    """The synthetic training pairs; every process builds the same ones from the same seed."""
    pairs = make_task(args.task, args.n_train, min_len=args.min_len, max_len=args.max_len, seed=args.seed)
    src_vocab, tgt_vocab = task_vocabs(pairs)
    return Seq2SeqDataset(pairs, src_vocab, tgt_vocab)


def make_batch_sampler(dataset: Seq2SeqDataset, args: argparse.Namespace) -> Sampler[list[int]]:
    """The batch order of one process before sharding (the same on every process)."""
    shuffle = not args.no_shuffle
    if args.max_tokens is not None:
        return TokenBatchSampler(dataset.src_lengths, dataset.tgt_lengths, args.max_tokens,
                                 shuffle=shuffle, seed=args.seed)
    return BucketBatchSampler(dataset.src_lengths, args.batch_size, shuffle=shuffle, seed=args.seed)


def make_model(dataset: Seq2SeqDataset, args: argparse.Namespace) -> Transformer:
    """A small pre-LN Transformer, initialised from ``args.seed`` (DDP then gives all processes rank 0's)."""
    seed_everything(args.seed)
    return make_transformer(len(dataset.src_vocab), len(dataset.tgt_vocab), d_model=args.d_model,
                            num_heads=args.heads, num_layers=args.layers, d_ff=args.d_ff,
                            dropout=args.dropout)


def main(argv: list[str] | None = None) -> dict:
    """Train on this process's share of the batches; return (and on rank 0 print/write) a summary."""
    args = parse_args(argv)
    info = setup_distributed(args.backend)
    try:
        dataset = make_dataset(args)
        model = make_model(dataset, args)
        if args.init is not None:
            model.load_state_dict(torch.load(args.init, map_location="cpu"))
        # DDP copies rank 0's weights to every process, so all start alike in any case.
        model = wrap_ddp(model, info)
        sampler = DistributedBatchSampler(make_batch_sampler(dataset, args), info.world_size, info.rank)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch)
        start = time.perf_counter()
        # seed + rank: each process its own dropout masks, as the parts of one big batch would get.
        history = fit(model, loader, epochs=args.epochs, lr=args.lr, device=info.device,
                      progress=False, seed=args.seed + info.rank)
        seconds = time.perf_counter() - start
        train_loss = history["train_loss"]
        per_rank = [train_loss]
        if info.backend is not None:
            per_rank = [None] * info.world_size
            dist.all_gather_object(per_rank, train_loss)
        summary = {
            "world_size": info.world_size, "backend": info.backend, "device": str(info.device),
            "steps_per_rank": history["steps"][-1], "seconds": round(seconds, 3),
            "train_loss_per_rank": per_rank,
            "train_loss_mean": [mean_over_ranks(v) for v in train_loss],
            "global_batch": args.batch_size * info.world_size if args.max_tokens is None else None,
        }
        if info.is_main:
            print(json.dumps(summary))
            if args.json is not None:
                args.json.write_text(json.dumps(summary, indent=1))
            if args.save is not None:
                torch.save(unwrap(model).state_dict(), args.save)
        return summary
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main(sys.argv[1:])
