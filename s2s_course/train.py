"""One training loop for every model of the course: ``fit``, ``evaluate`` and the ``History`` they fill.

Every seq2seq model (GRU, attention, Transformer) has the same call signature::

    logits = model(src, src_lengths, tgt_in, teacher_forcing=ratio)   # (B, T, V)

so a single loop trains them all. The decoder input ``tgt_in`` is ``<sos> y1 ... yn`` and the
target ``tgt_out`` is ``y1 ... yn <eos>`` (the same sequence shifted by one); padding is ignored by
the loss. Typical use in a chapter::

    history = fit(model, train_loader, val_loader, epochs=10, teacher_forcing=inverse_sigmoid(200))
    history.plot(["train_loss", "val_loss"])
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from s2s_course.data.specials import PAD_IDX
from s2s_course.env import get_device, seed_everything
from s2s_course.metrics import perplexity

TeacherForcing = float | Callable[[int], float]  # a fixed ratio, or a schedule of the global step
Metric = Callable[[nn.Module, Iterable, torch.device], float]  # fn(model, loader, device) -> float

_RESERVED = ("epoch", "train_loss", "val_loss", "val_ppl", "val_token_acc", "tf_ratio", "seconds",
             "train_seconds", "steps", "train_tokens", "lr")


# -----------------------------------------------------------------------------
# History: one dict per epoch

@dataclass(repr=False)
class History:
    """What happened during training: ``records[i]`` is a dict of numbers for epoch ``i + 1``."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))

    @property
    def epochs(self) -> list[int]:
        return [r["epoch"] for r in self.records]

    def keys(self) -> list[str]:
        """Every key recorded in at least one epoch, in the order first seen."""
        return list(dict.fromkeys(k for r in self.records for k in r))

    def __getitem__(self, key: str) -> list[Any]:
        """``history["val_loss"]`` -> one value per epoch (None where an epoch lacks it)."""
        if key not in self.keys():
            raise KeyError(f"{key!r} was not recorded; available keys: {', '.join(self.keys()) or 'none'}")
        return [r.get(key) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def best(self, key: str = "val_loss", mode: str = "min") -> dict[str, Any]:
        """The record (whole epoch dict) with the lowest (``mode="min"``) or highest ``key``."""
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        candidates = [r for r in self.records if r.get(key) is not None]
        if not candidates:
            self[key]  # raises KeyError listing the available keys
            raise ValueError(f"no epoch has a value for {key!r}")
        pick = min if mode == "min" else max
        return dict(pick(candidates, key=lambda r: r[key]))

    def plot(self, keys: str | list[str] | None = None, ax=None):
        """Curves of ``keys`` (default: train and validation loss) against the epoch; returns the Axes."""
        from s2s_course.viz import plot_history  # imported here: training needs no matplotlib

        return plot_history(self, keys=keys, ax=ax)

    def to_dict(self) -> dict[str, Any]:
        return {"records": [dict(r) for r in self.records]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        records = data.get("records") if isinstance(data, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError("data must be a dict like {'records': [{...}, ...]} (see History.to_dict)")
        return cls([dict(r) for r in records])

    def __repr__(self) -> str:
        if not self.records:
            return "History(0 epochs)"
        last = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.records[-1].items())
        return f"History({len(self)} epochs; last: {last})"


# -----------------------------------------------------------------------------
# loss and evaluation

def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, *, pad_idx: int = PAD_IDX,
                  label_smoothing: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits`` (B, T, V) against ``targets`` (B, T), skipping ``pad_idx``.

    ``reduction="mean"`` averages over the real (non-pad) target tokens, ``"sum"`` adds them up.
    Computed in float32 even when the logits come from mixed precision.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"targets must be (B, T) = {tuple(logits.shape[:2])} to match logits, "
                         f"got shape {tuple(targets.shape)}")
    vocab_size = logits.size(-1)
    return F.cross_entropy(logits.reshape(-1, vocab_size).float(),  # (B*T, V)
                           targets.reshape(-1),                      # (B*T,)
                           ignore_index=pad_idx, label_smoothing=label_smoothing,
                           reduction=reduction)


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str | None = None,
             bf16: bool = False) -> dict[str, float]:
    """Teacher-forced loss, perplexity and token accuracy over the non-pad target tokens.

    Averages are per *token* over the whole loader (not per batch), so batch sizes do not matter.
    ``device=None`` uses the device the model is on.
    """
    device = _model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.to(device).eval()  # no dropout while measuring
    total_nll, correct, tokens = 0.0, 0, 0
    for batch in loader:
        batch = batch.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch.src, batch.src_lengths, batch.tgt_in, teacher_forcing=1.0)  # (B, T, V)
        target = batch.tgt_out                                                           # (B, T)
        real = target != PAD_IDX                                                         # (B, T)
        total_nll += sequence_loss(logits, target, reduction="sum").item()
        correct += ((logits.argmax(-1) == target) & real).sum().item()
        tokens += real.sum().item()
    model.train(was_training)
    if tokens == 0:
        raise ValueError("loader has no target tokens to evaluate (is it empty?)")
    loss = total_nll / tokens
    return {"loss": loss, "ppl": perplexity(loss), "token_acc": correct / tokens}


# -----------------------------------------------------------------------------
# training

def _tf_ratio(teacher_forcing: TeacherForcing, step: int) -> float:
    """The teacher-forcing probability for this global step, checked to lie in [0, 1]."""
    ratio = teacher_forcing(step) if callable(teacher_forcing) else teacher_forcing
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        where = f"teacher_forcing({step}) returned" if callable(teacher_forcing) else "teacher_forcing must be"
        raise ValueError(f"{where} a probability in [0, 1]; got {ratio!r}")
    return float(ratio)


def _length(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:  # a generator has no length: the bar then just counts
        return None


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None = None, *, epochs: int,
        lr: float = 1e-3, optimizer: torch.optim.Optimizer | None = None, clip: float | None = 1.0,
        teacher_forcing: TeacherForcing = 1.0, device: torch.device | str | None = None,
        amp: bool = False, label_smoothing: float = 0.0, metrics: dict[str, Metric] | None = None,
        progress: bool = True, seed: int | None = None, lr_schedule: Callable[[int], float] | None = None,
        bf16: bool = False, first_step: int = 0, max_seconds: float | None = None) -> History:
    """Train ``model`` for ``epochs`` passes over ``train_loader`` and return its ``History``.

    - loss: cross-entropy of the logits against ``batch.tgt_out``, padding ignored;
    - ``teacher_forcing``: a probability, or a schedule ``step -> probability`` (see
      ``s2s_course.schedules``) evaluated at every global step (one step = one batch);
    - ``clip``: largest allowed gradient norm (``None`` disables clipping); RNNs need it;
    - ``amp``: mixed precision, used only on CUDA (elsewhere silently full precision);
    - ``bf16``: autocast to bfloat16 on any device (fast on CPUs with AMX and on recent GPUs;
      no loss scaling needed, the loss itself is computed in float32);
    - ``lr_schedule``: a function ``step -> learning rate`` (``schedules.noam``), set before
      every step; ``first_step`` is the global step to start from (``fit_select`` continues);
    - ``max_seconds``: stop after the epoch during which this much training time has passed;
    - after each epoch, when ``val_loader`` is given: ``val_loss``, ``val_ppl``, ``val_token_acc``
      and every ``metrics[name](model, val_loader, device)``.

    Defaults to Adam with learning rate ``lr``; pass ``optimizer`` to use another one. The model is
    left in eval mode, ready for decoding.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be a positive max gradient norm or None (no clipping), got {clip!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if not callable(teacher_forcing):
        _tf_ratio(teacher_forcing, 0)  # fail now, not after the first batch
    metrics = dict(metrics or {})
    if metrics and val_loader is None:
        raise ValueError(f"metrics {sorted(metrics)} are computed on val_loader, but val_loader is None")
    clash = sorted(set(metrics) & set(_RESERVED))
    if clash:
        raise ValueError(f"metrics names {clash} clash with recorded keys {list(_RESERVED)}")

    if seed is not None:
        seed_everything(seed)
    device = get_device(None if device is None else str(device))
    model.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if bf16 and amp:
        raise ValueError("choose one of amp (float16, CUDA) and bf16 (bfloat16), not both")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds!r}")
    use_amp = amp and device.type == "cuda"
    autocast_dtype = torch.bfloat16 if bf16 else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)  # disabled: every call is a no-op

    history = History()
    step = first_step  # global step: the argument of the teacher-forcing and lr schedules
    trained = 0.0      # seconds spent training (validation excluded), for max_seconds
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        loss_sum, n_tokens, ratios = 0.0, 0, []
        bar = tqdm(total=_length(train_loader), desc=f"epoch {epoch}/{epochs}", disable=not progress)
        for batch in train_loader:
            batch = batch.to(device)
            ratio = _tf_ratio(teacher_forcing, step)
            if lr_schedule is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr_schedule(step)
            with torch.autocast(device_type=device.type, dtype=autocast_dtype,
                                enabled=use_amp or bf16):
                logits = model(batch.src, batch.src_lengths, batch.tgt_in, teacher_forcing=ratio)  # (B, T, V)
            loss = sequence_loss(logits, batch.tgt_out, label_smoothing=label_smoothing)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step} (epoch {epoch}); "
                                         f"try a smaller lr or gradient clipping (clip=1.0)")

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()

            n = int((batch.tgt_out != PAD_IDX).sum())
            loss_sum += loss_value * n  # weight by tokens: the epoch loss is a per-token mean
            n_tokens += n
            ratios.append(ratio)
            step += 1
            bar.set_postfix(loss=f"{loss_value:.3f}", tf=f"{ratio:.2f}", refresh=False)
            bar.update()
        if not ratios:
            raise ValueError("train_loader yielded no batches")

        record: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / n_tokens}
        train_seconds = time.perf_counter() - start
        trained += train_seconds
        if val_loader is not None:
            scores = evaluate(model, val_loader, device, bf16=bf16)
            record.update(val_loss=scores["loss"], val_ppl=scores["ppl"], val_token_acc=scores["token_acc"])
            for name, metric in metrics.items():
                record[name] = float(metric(model, val_loader, device))
            model.train()
        record["tf_ratio"] = sum(ratios) / len(ratios)  # mean over the epoch's steps
        record["seconds"] = time.perf_counter() - start
        record.update(train_seconds=train_seconds, steps=step, train_tokens=n_tokens,
                      lr=optimizer.param_groups[0]["lr"])  # lr: at the epoch's last step
        bar.set_postfix({k: f"{record[k]:.3f}" for k in ("train_loss", "val_loss", "val_ppl") if k in record})
        bar.close()  # the finished bar stays on screen with the epoch's summary
        history.append(record)
        if max_seconds is not None and trained >= max_seconds:
            break
    model.eval()
    return history


__all__ = ["History", "fit", "evaluate", "sequence_loss"]
