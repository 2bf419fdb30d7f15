"""Training on several devices with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node N script.py`` starts N copies of the script and tells each one who it
is through environment variables (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). Each copy then

1. joins the process group (``setup_distributed``): NCCL between CUDA GPUs, gloo between CPU
   processes;
2. wraps the same model in ``DistributedDataParallel`` (``wrap_ddp``): after every
   ``loss.backward()`` the gradients are averaged over all processes, so every copy takes the
   same optimizer step and the copies stay identical;
3. reads its own share of the batches (``DistributedBatchSampler``): process r gets batches
   r, r + N, r + 2N, ... of one shared, seeded batch order, the same number for every process.

The course's ``fit`` needs no change: it only sees a model and a loader.

    info = setup_distributed()
    model = wrap_ddp(make_transformer(...), info)
    loader = DataLoader(dataset, batch_sampler=DistributedBatchSampler(TokenBatchSampler(...)),
                        collate_fn=collate_batch)
    fit(model, loader, epochs=10, device=info.device)
    cleanup_distributed()
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    """Who this process is: its rank among ``world_size`` processes, and its device."""

    rank: int
    local_rank: int
    world_size: int
    backend: str | None  # None: a single process without a process group
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True for rank 0, the process that prints and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def setup_distributed(backend: str | None = None, timeout_s: float = 120.0) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment; return ``DistInfo``.

    Without ``WORLD_SIZE`` in the environment (a plain ``python script.py``) nothing is
    initialised and the result describes one process on the best device. ``backend`` defaults to
    ``"nccl"`` when CUDA is available (each process then uses GPU ``LOCAL_RANK``) and to
    ``"gloo"`` otherwise (CPU processes). ``timeout_s`` bounds how long a collective may wait.
    """
    from s2s_course.env import get_device

    if "WORLD_SIZE" not in os.environ:
        return DistInfo(rank=0, local_rank=0, world_size=1, backend=None, device=get_device())
    rank, world_size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", rank)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world_size}), got {rank}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'nccl' needs CUDA GPUs; use 'gloo' for CPU processes")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, backend=backend,
                    device=device)


def cleanup_distributed() -> None:
    """Leave the process group (a no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """Move ``model`` to ``info.device`` and wrap it in ``DistributedDataParallel`` when a process
    group is running; otherwise return the moved model itself.

    Every process must call the wrapped model alike (``fit`` and ``evaluate`` on every rank);
    to decode or save on rank 0 alone, use ``unwrap(model)``.
    """
    model = model.to(info.device)
    if not (dist.is_available() and dist.is_initialized()):
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or ``model`` itself): save and
    decode with this one."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def mean_over_ranks(value: float, device: torch.device | str = "cpu") -> float:
    """The mean of ``value`` over all processes (``value`` itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)  # sum
    return float(t.item()) / dist.get_world_size()


class DistributedBatchSampler(Sampler[list[int]]):
    """Give each of ``num_replicas`` processes every ``num_replicas``-th batch of ``batch_sampler``.

    Every process builds the same batch order (``BucketBatchSampler`` and ``TokenBatchSampler``
    are seeded, and each ``iter()`` is the next epoch on every process alike); process ``rank``
    keeps batches ``rank, rank + N, ...``. The last ``len % N`` batches of an epoch are dropped,
    so that every process takes the same number of steps: DDP waits at every step for all of them.
    ``num_replicas`` and ``rank`` default to the running process group (1 and 0 without one).
    """

    def __init__(self, batch_sampler: Sampler[list[int]], num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        running = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if running else 1
        if rank is None:
            rank = dist.get_rank() if running else 0
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas must be an int >= 1, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an int in [0, {num_replicas}), got {rank!r}")
        self.batch_sampler, self.num_replicas, self.rank = batch_sampler, num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to the wrapped sampler (its seed is ``seed + epoch``)."""
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        batches = list(self.batch_sampler)
        usable = len(batches) - len(batches) % self.num_replicas
        if usable == 0:
            raise ValueError(f"the batch sampler gave {len(batches)} batches, fewer than the "
                             f"{self.num_replicas} processes; use smaller batches or more data")
        yield from batches[self.rank:usable:self.num_replicas]

    def __len__(self) -> int:
        return len(self.batch_sampler) // self.num_replicas  # type: ignore[arg-type]


__all__ = ["DistInfo", "setup_distributed", "cleanup_distributed", "wrap_ddp", "unwrap",
           "mean_over_ranks", "DistributedBatchSampler"]
