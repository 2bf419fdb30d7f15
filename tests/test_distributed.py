"""s2s_course.distributed and scripts/train_ddp.py: two gloo processes train exactly like one.

The check: ``torchrun --nproc_per_node 2`` runs ``fit`` on a DDP-wrapped Transformer, each
process on every second batch; one process runs ``fit`` on the two halves concatenated. Every
sentence has the same length, so both halves of a global batch hold the same number of target
tokens: then DDP's mean of the two per-process token-mean losses *is* the token-mean loss of the
global batch, and the two runs must agree in losses and parameters up to float rounding.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from s2s_course.data import BucketBatchSampler, TokenBatchSampler
from s2s_course.data.batching import collate_batch
from s2s_course.distributed import (DistInfo, DistributedBatchSampler, cleanup_distributed,
                                    mean_over_ranks, setup_distributed, unwrap, wrap_ddp)
from s2s_course.train import fit
from tests.nbtools import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_ddp.py"
# Small and exact: 64 pairs of length 6 in batches of 8 -> 4 steps per process per epoch.
SMALL = ["--n-train", "64", "--min-len", "6", "--max-len", "6", "--batch-size", "8", "--epochs", "2",
         "--d-model", "32", "--heads", "2", "--layers", "1", "--d-ff", "64", "--dropout", "0"]
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


train_ddp = load_file(SCRIPT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_dist_env(monkeypatch):
    for name in DIST_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("S2S_DEVICE", raising=False)
    yield monkeypatch
    cleanup_distributed()


@pytest.fixture
def one_process_group(no_dist_env):
    """A real gloo process group of one process, in this test process."""
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    for name, value in env.items():
        no_dist_env.setenv(name, value)
    info = setup_distributed("gloo", timeout_s=30)
    yield info
    cleanup_distributed()


class GlobalBatches:
    """What one process sees when it does the work of ``world_size``: each step concatenates the
    next ``world_size`` batches of the (seeded, per-epoch) batch order."""

    def __init__(self, dataset, batch_sampler, world_size: int) -> None:
        self.dataset, self.batch_sampler, self.world_size = dataset, batch_sampler, world_size

    def __len__(self) -> int:
        return len(self.batch_sampler) // self.world_size

    def __iter__(self):
        batches = list(self.batch_sampler)
        for i in range(0, len(batches) - len(batches) % self.world_size, self.world_size):
            indices = [j for b in batches[i:i + self.world_size] for j in b]
            yield collate_batch([self.dataset[j] for j in indices])


# --- the sampler -------------------------------------------------------------------------------

@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sampler_partitions_the_batches_evenly(world_size):
    base = BucketBatchSampler(list(range(3, 50)), batch_size=4, seed=1)  # 12 batches
    shares = [list(DistributedBatchSampler(BucketBatchSampler(list(range(3, 50)), 4, seed=1),
                                           world_size, r)) for r in range(world_size)]
    everything = list(base)
    usable = len(everything) - len(everything) % world_size
    assert [len(s) for s in shares] == [usable // world_size] * world_size
    assert len(DistributedBatchSampler(base, world_size, 0)) == usable // world_size
    for r, share in enumerate(shares):
        assert share == everything[r:usable:world_size]


def test_sampler_drops_the_remainder_and_follows_epochs():
    lengths = [5] * 40
    base = TokenBatchSampler(lengths, lengths, max_tokens=5 * 4, seed=0)  # 10 batches of 4
    shares = [DistributedBatchSampler(TokenBatchSampler(lengths, lengths, 20, seed=0), 3, r) for r in range(3)]
    first = [list(s) for s in shares]
    assert [len(s) for s in first] == [3, 3, 3]  # 10 batches: one dropped
    seen = [i for share in first for batch in share for i in batch]
    assert len(seen) == len(set(seen)) == 36
    assert first[0] == list(base)[0:9:3]
    second = [list(s) for s in shares]  # the next epoch: a new order, alike on every rank
    assert second != first
    assert second[1] == list(base)[1:9:3]  # base's second iter() is epoch 1 as well
    for s in shares:
        s.set_epoch(0)
    assert [list(s) for s in shares] == first


def test_sampler_defaults_and_errors(no_dist_env):
    base = BucketBatchSampler([3, 4, 5], batch_size=2)
    sampler = DistributedBatchSampler(base)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    sampler.set_epoch(0)
    DistributedBatchSampler([[0], [1]], 2, 1).set_epoch(3)  # a plain list has no set_epoch: ignored
    with pytest.raises(ValueError, match="fewer than"):
        list(DistributedBatchSampler(base, 3, 0))
    with pytest.raises(ValueError, match="num_replicas"):
        DistributedBatchSampler(base, 0, 0)
    with pytest.raises(ValueError, match="rank"):
        DistributedBatchSampler(base, 2, 2)
    with pytest.raises(ValueError, match="rank"):
        DistributedBatchSampler(base, 2, True)


# --- the process group -------------------------------------------------------------------------

def test_setup_without_torchrun_is_one_process(no_dist_env):
    no_dist_env.setenv("S2S_DEVICE", "cpu")
    info = setup_distributed()
    assert info == DistInfo(rank=0, local_rank=0, world_size=1, backend=None, device=torch.device("cpu"))
    assert info.is_main and not dist.is_initialized()
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, info) is model and unwrap(model) is model
    assert mean_over_ranks(3.5) == 3.5
    cleanup_distributed()  # nothing to leave: no error


def test_setup_checks_the_environment(no_dist_env):
    no_dist_env.setenv("WORLD_SIZE", "2")
    no_dist_env.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK must be in"):
        setup_distributed("gloo")
    no_dist_env.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        setup_distributed("gloo")
    if not torch.cuda.is_available():
        no_dist_env.setenv("RANK", "0")
        with pytest.raises(RuntimeError, match="nccl"):
            setup_distributed("nccl")


def test_fit_through_ddp_equals_fit_without(one_process_group):
    """With one process DDP changes nothing: same losses, same parameters (``fit`` with
    ``device=info.device`` and ``model(src, src_lengths, tgt_in, teacher_forcing=1.0)`` through
    the wrapper)."""
    info = one_process_group
    assert dist.is_initialized() and info.backend == "gloo" and info.world_size == 1
    args = train_ddp.parse_args(SMALL + ["--epochs", "1"])
    dataset = train_ddp.make_dataset(args)
    start = train_ddp.make_model(dataset, args)
    runs = []
    for wrap in (True, False):
        model = copy.deepcopy(start)  # one start for both (see test_two_gloo_processes_...)
        if wrap:
            model = wrap_ddp(model, info)
            assert isinstance(model, DistributedDataParallel)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=DistributedBatchSampler(train_ddp.make_batch_sampler(dataset, args)),
            collate_fn=collate_batch)
        history = fit(model, loader, epochs=1, device=info.device, progress=False, seed=0)
        runs.append((history["train_loss"], unwrap(model).state_dict()))
    assert runs[0][0] == pytest.approx(runs[1][0], abs=1e-6)
    for name, value in runs[0][1].items():
        torch.testing.assert_close(value, runs[1][1][name], atol=1e-6, rtol=1e-5, msg=name)
    assert mean_over_ranks(2.5) == 2.5


def test_script_runs_as_one_plain_process(no_dist_env, tmp_path, capsys):
    no_dist_env.setenv("S2S_DEVICE", "cpu")
    summary = train_ddp.main(SMALL + ["--epochs", "1", "--max-tokens", "64", "--json", str(tmp_path / "s.json")])
    assert summary["world_size"] == 1 and summary["backend"] is None
    assert summary["steps_per_rank"] == 8  # 64 tokens / 8 per pair (the target side) = batches of 8
    assert json.loads((tmp_path / "s.json").read_text())["train_loss_mean"] == summary["train_loss_mean"]
    assert '"world_size": 1' in capsys.readouterr().out


# --- two processes against one -----------------------------------------------------------------

def test_two_gloo_processes_match_one_process(tmp_path):
    """torchrun, 2 CPU processes on gloo, against one process on the concatenated global batches."""
    args = train_ddp.parse_args(SMALL)
    dataset = train_ddp.make_dataset(args)
    model = train_ddp.make_model(dataset, args)
    # The same start for both runs, saved: a seed alone need not give the same weights in
    # another process (make_transformer initialises its embeddings in set order).
    torch.save(model.state_dict(), tmp_path / "init.pt")
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(OMP_NUM_THREADS="1", S2S_DEVICE="cpu", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPT), *SMALL, "--init", str(tmp_path / "init.pt"), "--json", str(tmp_path / "ddp.json"), "--save", str(tmp_path / "ddp.pt")]
    # A session of its own: on a timeout the launcher *and* its workers are stopped together.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in 180 s:\n{out[-2000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo" and ddp["steps_per_rank"] == 8

    loader = GlobalBatches(dataset, train_ddp.make_batch_sampler(dataset, args), world_size=2)
    single = fit(model, loader, epochs=args.epochs, lr=args.lr, device="cpu", progress=False, seed=args.seed)

    rank0, rank1 = ddp["train_loss_per_rank"]
    assert rank0 != rank1  # the two processes saw different sentences
    assert ddp["train_loss_mean"] == pytest.approx([(a + b) / 2 for a, b in zip(rank0, rank1)])
    assert single["train_loss"] == pytest.approx(ddp["train_loss_mean"], abs=1e-5)
    assert single["steps"][-1] == 8
    trained = torch.load(tmp_path / "ddp.pt")
    worst = max((trained[n] - v).abs().max().item() for n, v in model.state_dict().items()
                if not n.endswith("W_k.bias"))
    print(f"per-epoch train loss: 1 process {single['train_loss']}, 2 processes {ddp['train_loss_mean']} "
          f"(ranks {rank0}, {rank1}); largest parameter difference {worst:.2e}")
    for name, value in model.state_dict().items():
        # A key bias adds the same q.b_k to every score of a query, which the softmax ignores: its
        # true gradient is 0, its computed one rounding noise, and Adam turns noise into steps of
        # size lr. Those parameters agree only to about steps x lr; every other one to rounding.
        atol = args.lr * 8 if name.endswith("W_k.bias") else 1e-5
        torch.testing.assert_close(trained[name], value, atol=atol, rtol=0, msg=name)
