import json
import math
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s2s_course.data.specials import EOS_IDX, PAD_IDX, SOS_IDX
from s2s_course.schedules import linear
from s2s_course.train import History, evaluate, fit, sequence_loss

V = 16  # ids 0-3 are specials, 4-15 symbols


@dataclass
class ToyBatch:
    """Same fields as s2s_course.data.Batch (kept local so these tests stand alone)."""
    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt: torch.Tensor
    tgt_lengths: torch.Tensor
    src_mask: torch.Tensor
    tgt_mask: torch.Tensor

    @property
    def tgt_in(self):
        return self.tgt[:, :-1]

    @property
    def tgt_out(self):
        return self.tgt[:, 1:]

    def to(self, device):
        return ToyBatch(self.src.to(device), self.src_lengths, self.tgt.to(device), self.tgt_lengths,
                        self.src_mask.to(device), self.tgt_mask.to(device))


def make_batch(pairs):
    """pairs of (src ids, tgt ids without SOS/EOS) -> padded ToyBatch."""
    srcs = [torch.tensor(s) for s, _ in pairs]
    tgts = [torch.tensor([SOS_IDX, *t, EOS_IDX]) for _, t in pairs]
    src = nn.utils.rnn.pad_sequence(srcs, batch_first=True, padding_value=PAD_IDX)
    tgt = nn.utils.rnn.pad_sequence(tgts, batch_first=True, padding_value=PAD_IDX)
    src_len = torch.tensor([len(s) for s in srcs])
    tgt_len = torch.tensor([len(t) for t in tgts])
    return ToyBatch(src, src_len, tgt, tgt_len, src != PAD_IDX, tgt != PAD_IDX)


def count_task(n, batch_size, seed=0):
    """src = [a]; tgt = a, a+1, ..., 10 (variable length, so batches contain padding)."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(4, 11, (n,), generator=g).tolist()
    pairs = [([a], list(range(a, 11))) for a in starts]
    return [make_batch(pairs[i:i + batch_size]) for i in range(0, n, batch_size)]


class TinySeq2Seq(nn.Module):
    """The model interface used by fit: the source sets the initial state, a GRU cell decodes."""

    def __init__(self, vocab_size=V, hidden=32):
        super().__init__()
        self.src_emb = nn.Embedding(vocab_size, hidden, padding_idx=PAD_IDX)
        self.emb = nn.Embedding(vocab_size, hidden)
        self.cell = nn.GRUCell(hidden, hidden)
        self.out = nn.Linear(hidden, vocab_size)
        self.seen_tf = []        # every teacher_forcing value passed in
        self.seen_autocast = []

    def forward(self, src, src_lengths, tgt_in, teacher_forcing=1.0):
        self.seen_tf.append(teacher_forcing)
        self.seen_autocast.append(torch.is_autocast_enabled())
        h = self.src_emb(src).sum(1)                                   # (B, H)
        y, logits = tgt_in[:, 0], []
        for t in range(tgt_in.size(1)):
            if t > 0:
                y = tgt_in[:, t]
                if teacher_forcing < 1.0:  # per example: gold with prob teacher_forcing
                    gold = torch.rand(y.shape) < teacher_forcing
                    y = torch.where(gold, y, logits[-1].argmax(-1))
            h = self.cell(self.emb(y), h)
            logits.append(self.out(h))
        return torch.stack(logits, 1)                                  # (B, T, V)


class RecordingSGD(torch.optim.SGD):
    """SGD that records the total gradient norm it is asked to apply (i.e. after clipping)."""

    def __init__(self, params, lr):
        params = list(params)
        super().__init__(params, lr=lr)
        self.params, self.norms = params, []

    def step(self, closure=None):
        grads = [p.grad.norm() for p in self.params if p.grad is not None]
        self.norms.append(torch.stack(grads).norm().item())
        return super().step(closure)


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return TinySeq2Seq()


# --- loss ----------------------------------------------------------------------------------------

def test_sequence_loss_ignores_pad_like_hand_computed_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, V)
    targets = torch.tensor([[5, 6, EOS_IDX, PAD_IDX], [7, EOS_IDX, PAD_IDX, PAD_IDX]])
    real = targets != PAD_IDX
    hand = F.cross_entropy(logits[real], targets[real])  # only the 5 real tokens
    assert sequence_loss(logits, targets).item() == pytest.approx(hand.item(), rel=1e-6)
    assert sequence_loss(logits, targets, reduction="sum").item() == pytest.approx(5 * hand.item(), rel=1e-6)
    smooth = F.cross_entropy(logits[real], targets[real], label_smoothing=0.1)
    assert sequence_loss(logits, targets, label_smoothing=0.1).item() == pytest.approx(smooth.item(), rel=1e-6)
    # changing the logits at padded positions changes nothing
    other = logits.clone()
    other[~real] = 100.0
    assert sequence_loss(other, targets).item() == pytest.approx(hand.item(), rel=1e-6)


def test_sequence_loss_shape_errors():
    with pytest.raises(ValueError, match=r"logits must be \(B, T, V\), got shape \(4, 16\)"):
        sequence_loss(torch.randn(4, V), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets must be \(B, T\) = \(2, 3\)"):
        sequence_loss(torch.randn(2, 3, V), torch.zeros(3, 2, dtype=torch.long))


# --- evaluate ------------------------------------------------------------------------------------

def test_evaluate_matches_hand_computation_over_batches_of_different_sizes():
    model = fresh_model()
    loader = count_task(10, batch_size=4)  # batches of 4, 4, 2 with different lengths
    model.train()
    scores = evaluate(model, loader)
    assert model.training  # mode restored
    with torch.no_grad():
        logits = [model(b.src, b.src_lengths, b.tgt_in) for b in loader]
    flat_logits = torch.cat([lg[b.tgt_out != PAD_IDX] for lg, b in zip(logits, loader)])
    flat_targets = torch.cat([b.tgt_out[b.tgt_out != PAD_IDX] for b in loader])
    hand_loss = F.cross_entropy(flat_logits, flat_targets).item()
    hand_acc = (flat_logits.argmax(-1) == flat_targets).float().mean().item()
    assert scores["loss"] == pytest.approx(hand_loss, rel=1e-5)
    assert scores["token_acc"] == pytest.approx(hand_acc)
    assert scores["ppl"] == pytest.approx(math.exp(scores["loss"]))
    assert set(model.seen_tf) == {1.0}  # evaluation is teacher-forced


def test_evaluate_empty_loader_and_explicit_device():
    model = fresh_model()
    with pytest.raises(ValueError, match="no target tokens"):
        evaluate(model, [])
    assert evaluate(model, count_task(4, 4), device="cpu")["loss"] > 0


# --- fit -----------------------------------------------------------------------------------------

def test_fit_learns_the_toy_task_and_records_every_key_in_order():
    train, val = count_task(64, 16, seed=0), count_task(16, 16, seed=1)
    seen = []

    def exact(model, loader, device):
        seen.append((loader is val, device.type))
        return 0.5

    history = fit(fresh_model(), train, val, epochs=5, lr=1e-2, progress=False, device="cpu",
                  metrics={"exact": exact})
    assert list(history.records[0]) == ["epoch", "train_loss", "val_loss", "val_ppl", "val_token_acc",
                                        "exact", "tf_ratio", "seconds", "train_seconds", "steps",
                                        "train_tokens", "lr"]
    assert history.epochs == [1, 2, 3, 4, 5]
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert history["val_token_acc"][-1] > 0.8
    assert history["val_ppl"] == pytest.approx([math.exp(v) for v in history["val_loss"]])
    assert history["exact"] == [0.5] * 5 and seen == [(True, "cpu")] * 5
    assert history["tf_ratio"] == [1.0] * 5
    assert all(s > 0 for s in history["seconds"])


def test_train_loss_is_the_per_token_mean_over_the_epoch():
    """With lr=0 nothing changes, so the epoch's training loss must equal evaluate() on the same data."""
    model, train = fresh_model(), count_task(20, 6)  # uneven batches: 6, 6, 6, 2
    history = fit(model, train, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                  progress=False, device="cpu")
    assert history["train_loss"][0] == pytest.approx(evaluate(model, train)["loss"], rel=1e-5)
    assert "val_loss" not in history.keys()
    assert not model.training  # left in eval mode


def test_clip_bounds_the_gradient_norm():
    train = count_task(16, 4)
    clip = 0.01
    raw_model = fresh_model()
    raw = RecordingSGD(raw_model.parameters(), lr=0.1)
    fit(raw_model, train, epochs=1, optimizer=raw, clip=None, progress=False, device="cpu")
    clipped_model = fresh_model()
    clipped = RecordingSGD(clipped_model.parameters(), lr=0.1)
    fit(clipped_model, train, epochs=1, optimizer=clipped, clip=clip, progress=False, device="cpu")
    assert max(raw.norms) > 10 * clip            # clipping really has something to do
    assert max(clipped.norms) <= clip * (1 + 1e-5)
    # first step: same model, same batch -> the clipped norm is min(raw norm, clip), as clip_grad_norm_ does
    assert clipped.norms[0] == pytest.approx(min(raw.norms[0], clip), rel=1e-4)


def test_teacher_forcing_follows_the_schedule_per_global_step():
    train = count_task(12, 4)  # 3 batches per epoch
    schedule = linear(1.0, 0.0, steps=4)
    model = fresh_model()
    history = fit(model, train, epochs=2, teacher_forcing=schedule, progress=False, device="cpu")
    expected = [schedule(i) for i in range(6)]  # 1, .75, .5, .25, 0, 0
    assert model.seen_tf == expected
    assert history["tf_ratio"] == pytest.approx([sum(expected[:3]) / 3, sum(expected[3:]) / 3])

    model = fresh_model()
    fit(model, train, epochs=1, teacher_forcing=0.5, progress=False, device="cpu")
    assert model.seen_tf == [0.5] * 3


def test_seed_makes_runs_repeatable():
    train = count_task(16, 8)
    runs = [fit(fresh_model(), train, epochs=2, teacher_forcing=0.5, seed=3, progress=False, device="cpu")
            for _ in range(2)]
    assert runs[0]["train_loss"] == runs[1]["train_loss"]


def test_amp_on_cpu_is_silently_full_precision():
    model = fresh_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(model, count_task(8, 4), epochs=1, amp=True, device="cpu", progress=False)
    assert model.seen_autocast == [False, False]


def test_progress_bar_shows_loss(capsys):
    fit(fresh_model(), count_task(8, 4), count_task(4, 4), epochs=1, device="cpu")
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "val_loss=" in err
    fit(fresh_model(), count_task(8, 4), epochs=1, device="cpu", progress=False)
    assert capsys.readouterr().err == ""


def test_non_finite_loss_stops_with_advice():
    class Exploding(TinySeq2Seq):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs) * float("nan")

    with pytest.raises(FloatingPointError, match="loss is nan at step 0.*smaller lr"):
        fit(Exploding(), count_task(4, 4), epochs=1, progress=False, device="cpu")


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=0), "epochs must be a positive int"),
    (dict(epochs=1.5), "epochs must be a positive int"),
    (dict(epochs=1, clip=0), "clip must be a positive"),
    (dict(epochs=1, label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
    (dict(epochs=1, teacher_forcing=1.5), r"teacher_forcing must be a probability in \[0, 1\]"),
    (dict(epochs=1, teacher_forcing=lambda i: 2.0), r"teacher_forcing\(0\) returned a probability"),
    (dict(epochs=1, metrics={"bleu": lambda m, l, d: 0.0}), "val_loader is None"),
])
def test_fit_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(fresh_model(), count_task(4, 4), progress=False, device="cpu", **kwargs)


def test_fit_metric_name_clash_and_empty_loader():
    with pytest.raises(ValueError, match=r"metrics names \['val_loss'\] clash"):
        fit(fresh_model(), count_task(4, 4), count_task(4, 4), epochs=1, device="cpu",
            metrics={"val_loss": lambda m, l, d: 0.0})
    with pytest.raises(ValueError, match="train_loader yielded no batches"):
        fit(fresh_model(), [], epochs=1, progress=False, device="cpu")


def test_fit_with_the_course_batch_and_loader():
    batching = pytest.importorskip("s2s_course.data.batching")
    pairs = [(torch.tensor([a, EOS_IDX]), torch.tensor([SOS_IDX, *range(a, 11), EOS_IDX])) for a in range(4, 11)]
    loader = torch.utils.data.DataLoader(pairs, batch_size=4, collate_fn=batching.collate_batch)
    history = fit(fresh_model(), loader, loader, epochs=1, progress=False, device="cpu")
    assert len(history) == 1 and history["val_loss"][0] > 0


# --- History -------------------------------------------------------------------------------------

def make_history():
    return History([{"epoch": 1, "train_loss": 2.0, "val_loss": 1.5, "bleu": None},
                    {"epoch": 2, "train_loss": 1.0, "val_loss": 1.2, "bleu": 20.0},
                    {"epoch": 3, "train_loss": 0.5, "val_loss": 1.3, "bleu": 25.0}])


def test_history_access_and_best():
    h = make_history()
    assert len(h) == 3 and h.epochs == [1, 2, 3]
    assert h["val_loss"] == [1.5, 1.2, 1.3]
    assert h.best("val_loss")["epoch"] == 2
    assert h.best("train_loss", mode="min")["epoch"] == 3
    assert h.best("bleu", mode="max") == {"epoch": 3, "train_loss": 0.5, "val_loss": 1.3, "bleu": 25.0}
    with pytest.raises(KeyError, match="'bleu2' was not recorded; available keys: epoch, train_loss"):
        h["bleu2"]
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        h.best("val_loss", mode="lowest")
    with pytest.raises(KeyError):
        h.best("nothing")
    with pytest.raises(ValueError, match="no epoch has a value for 'x'"):
        History([{"epoch": 1, "x": None}]).best("x")


def test_history_round_trip_through_json_and_repr():
    h = make_history()
    again = History.from_dict(json.loads(json.dumps(h.to_dict())))
    assert again.records == h.records
    assert repr(History()) == "History(0 epochs)"
    assert repr(h) == "History(3 epochs; last: epoch=3, train_loss=0.5, val_loss=1.3, bleu=25)"
    for bad in ({"recs": []}, {"records": [1]}, [1, 2]):
        with pytest.raises(ValueError, match="data must be a dict like"):
            History.from_dict(bad)


def test_history_plot_returns_axes(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = make_history().plot()
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss", "val_loss"]
    assert list(ax.get_lines()[1].get_ydata()) == [1.5, 1.2, 1.3]
    plt.close("all")


def test_fit_accepts_a_loader_without_length():
    history = fit(fresh_model(), (b for b in count_task(8, 4)), epochs=1, device="cpu", progress=False)
    assert len(history) == 1


# --- learning-rate schedules, time budget, bf16 ---------------------------------------------------

class LrRecordingSGD(torch.optim.SGD):
    """SGD that records the learning rate of its first group at every step, and the update."""

    def __init__(self, params, lr):
        super().__init__(list(params), lr=lr)
        self.lrs = []

    def step(self, closure=None):
        self.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


def test_lr_schedule_sets_the_learning_rate_of_every_step():
    train = count_task(12, 4)                      # 3 batches per epoch
    calls = []

    def schedule(step):
        calls.append(step)
        return 0.01 / (step + 1)

    model = fresh_model()
    optimizer = LrRecordingSGD(model.parameters(), lr=123.0)
    history = fit(model, train, epochs=2, optimizer=optimizer, lr_schedule=schedule,
                  progress=False, device="cpu")
    assert calls == list(range(6))
    assert optimizer.lrs == pytest.approx([0.01 / (s + 1) for s in range(6)])
    assert history["lr"] == pytest.approx([0.01 / 3, 0.01 / 6])   # at each epoch's last step
    assert history["steps"] == [3, 6]


def test_lr_schedule_changes_the_update_like_sgd_by_hand():
    """One SGD step at lr = schedule(0) moves the weights by exactly -lr * grad."""
    train = count_task(4, 4)
    model, reference = fresh_model(), fresh_model()
    fit(model, train, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=5.0),
        lr_schedule=lambda step: 0.05, clip=None, progress=False, device="cpu")
    batch = train[0]
    loss = sequence_loss(reference(batch.src, batch.src_lengths, batch.tgt_in), batch.tgt_out)
    loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_first_step_offsets_the_schedules_and_the_step_count():
    train = count_task(8, 4)                       # 2 batches
    model = fresh_model()
    optimizer = LrRecordingSGD(model.parameters(), lr=1.0)
    history = fit(model, train, epochs=2, optimizer=optimizer, first_step=10,
                  lr_schedule=lambda step: 1e-3 * step, teacher_forcing=linear(1.0, 0.0, steps=20),
                  progress=False, device="cpu")
    assert optimizer.lrs == pytest.approx([1e-3 * s for s in (10, 11, 12, 13)])
    assert model.seen_tf == [linear(1.0, 0.0, steps=20)(s) for s in (10, 11, 12, 13)]
    assert history["steps"] == [12, 14]
    assert history["lr"] == pytest.approx([0.011, 0.013])


def test_new_record_keys_count_tokens_and_time():
    train = count_task(10, 4)                      # uneven batches: 4, 4, 2
    history = fit(fresh_model(), train, epochs=2, lr=1e-3, progress=False, device="cpu")
    tokens = sum(int((b.tgt_out != PAD_IDX).sum()) for b in train)
    assert history["train_tokens"] == [tokens, tokens]
    assert history["steps"] == [3, 6]
    assert history["lr"] == [1e-3, 1e-3]           # no schedule: the optimizer's own lr
    for record in history.records:
        assert 0 < record["train_seconds"] <= record["seconds"]


class FakeClock:
    """time.perf_counter that advances one 'second' per call."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def test_max_seconds_stops_after_the_epoch_that_reaches_it(monkeypatch):
    import s2s_course.train as train_module

    # per epoch, fit reads the clock at the start, after training, and at the end:
    # train_seconds = 1 fake second per epoch.
    monkeypatch.setattr(train_module, "time", FakeClock())
    history = fit(fresh_model(), count_task(8, 4), epochs=10, max_seconds=2.5, progress=False,
                  device="cpu")
    assert history.epochs == [1, 2, 3]
    assert history["train_seconds"] == [1.0, 1.0, 1.0]
    monkeypatch.setattr(train_module, "time", FakeClock())
    assert len(fit(fresh_model(), count_task(8, 4), epochs=4, max_seconds=100.0, progress=False,
                   device="cpu")) == 4


def test_max_seconds_tiny_stops_after_one_epoch():
    history = fit(fresh_model(), count_task(8, 4), epochs=5, max_seconds=1e-9, progress=False,
                  device="cpu")
    assert len(history) == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_seconds=0), "max_seconds"),
    (dict(max_seconds=-1.0), "max_seconds"),
    (dict(bf16=True, amp=True), "bf16"),
])
def test_fit_new_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(fresh_model(), count_task(4, 4), epochs=1, progress=False, device="cpu", **kwargs)


class DtypeRecording(TinySeq2Seq):
    """Records whether CPU autocast is on and the dtype of the logits of each call."""

    def __init__(self):
        super().__init__()
        self.cpu_autocast, self.dtypes = [], []

    def forward(self, *args, **kwargs):
        self.cpu_autocast.append(torch.is_autocast_enabled("cpu"))
        logits = super().forward(*args, **kwargs)
        self.dtypes.append(logits.dtype)
        return logits


def test_bf16_autocasts_on_cpu_and_gives_finite_losses():
    torch.manual_seed(0)
    model = DtypeRecording()
    train, val = count_task(16, 8), count_task(8, 8, seed=1)
    history = fit(model, train, val, epochs=2, bf16=True, lr=1e-2, progress=False, device="cpu")
    assert model.cpu_autocast[:2] == [True, True]                 # the first epoch's two steps
    assert model.dtypes[:2] == [torch.bfloat16] * 2               # nn.Linear ran in bfloat16
    assert all(math.isfinite(v) for v in history["train_loss"] + history["val_loss"])
    # evaluate(bf16=True) runs under autocast too, and is close to the float32 loss
    model.cpu_autocast.clear(), model.dtypes.clear()
    low = evaluate(model, val, bf16=True)
    full = evaluate(model, val)
    assert model.cpu_autocast == [True, False]
    assert model.dtypes == [torch.bfloat16, torch.float32]
    assert low["loss"] == pytest.approx(full["loss"], rel=0.05)
    assert math.isfinite(low["ppl"]) and 0.0 <= low["token_acc"] <= 1.0
    # without bf16 nothing is autocast
    model.cpu_autocast.clear()
    fit(model, train, epochs=1, progress=False, device="cpu")
    assert model.cpu_autocast == [False, False]


def test_bf16_trains_a_tiny_transformer_on_cpu():
    from s2s_course.models.transformer import make_transformer

    torch.manual_seed(0)
    model = make_transformer(V, V, d_model=16, num_heads=2, num_layers=1, d_ff=32, dropout=0.0)
    train = count_task(16, 8)
    history = fit(model, train, epochs=2, bf16=True, lr=3e-3, progress=False, device="cpu",
                  lr_schedule=lambda step: 3e-3)
    assert all(math.isfinite(v) for v in history["train_loss"])
    assert history["train_loss"][1] < history["train_loss"][0]
