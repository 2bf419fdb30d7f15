"""The package's device parameters, on ``torch_device`` (the CPU, or ``S2S_TEST_DEVICE=cuda``).

On the CPU these are quick smoke tests; under ``make gpu-check`` the same tests put every
tensor on the GPU: batches, both model families, training with bf16 autocast, greedy and beam
decoding, translation scoring, analysis, masks and the benchmark helpers. Results on the device
are compared with the same weights on the CPU where they must agree.
"""
from __future__ import annotations

import copy

import pytest
import torch

from s2s_course.analysis import predict
from s2s_course.benchmark import peak_memory, time_call
from s2s_course.data import Seq2SeqDataset, make_loader, make_task, task_vocabs
from s2s_course.decode import beam_search, greedy_decode
from s2s_course.env import seed_everything
from s2s_course.models import make_attention_seq2seq
from s2s_course.models.transformer import make_transformer
from s2s_course.self_attention import causal_mask
from s2s_course.train import evaluate, fit
from s2s_course.translation import evaluate_translation

PAIRS = make_task("reverse", 96, min_len=3, max_len=8, seed=0)
SRC_VOCAB, TGT_VOCAB = task_vocabs(PAIRS)


def _model(kind: str) -> torch.nn.Module:
    seed_everything(0)
    if kind == "transformer":
        return make_transformer(len(SRC_VOCAB), len(TGT_VOCAB), d_model=32, num_heads=4,
                                num_layers=1, d_ff=64, dropout=0.0)
    return make_attention_seq2seq(len(SRC_VOCAB), len(TGT_VOCAB), kind="bahdanau",
                                  emb_dim=16, hidden_dim=32)


def _loader(shuffle: bool = True):
    return make_loader(Seq2SeqDataset(PAIRS, SRC_VOCAB, TGT_VOCAB), batch_size=32,
                       shuffle=shuffle, seed=0)


def _params_on(model: torch.nn.Module, device: torch.device) -> bool:
    return all(p.device.type == device.type for p in model.parameters())


def test_batch_moves_to_the_device_and_lengths_stay_on_the_cpu(torch_device):
    batch = next(iter(_loader())).to(torch_device)
    assert {batch.src.device.type, batch.tgt.device.type, batch.src_mask.device.type,
            batch.tgt_mask.device.type} == {torch_device.type}
    assert batch.src_lengths.device.type == "cpu" and batch.tgt_lengths.device.type == "cpu"


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_forward_on_the_device_matches_the_cpu(torch_device, kind):
    model = _model(kind).eval()
    batch = next(iter(_loader(shuffle=False)))
    with torch.no_grad():
        expected = model(batch.src, batch.src_lengths, batch.tgt_in)
        moved = copy.deepcopy(model).to(torch_device)
        on_device = batch.to(torch_device)
        got = moved(on_device.src, on_device.src_lengths, on_device.tgt_in)
    assert got.device.type == torch_device.type
    torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_fit_and_evaluate_on_the_device_with_bf16(torch_device, kind):
    model = _model(kind)
    history = fit(model, _loader(), _loader(shuffle=False), epochs=2, lr=3e-3, bf16=True,
                  device=torch_device, progress=False, seed=0)
    assert _params_on(model, torch_device)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(history["train_loss"])))
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert evaluate(model, _loader(shuffle=False), device=torch_device)["loss"] > 0


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_greedy_and_beam_on_the_device_match_the_cpu(torch_device, kind):
    model = _model(kind)
    fit(model, _loader(), epochs=3, lr=3e-3, device="cpu", progress=False, seed=0)
    batch = next(iter(_loader(shuffle=False)))
    src, lengths = batch.src[:8], batch.src_lengths[:8]
    cpu_greedy = greedy_decode(model, src, lengths, max_len=12)
    cpu_beam = [h[0].tokens for h in beam_search(model, src, lengths, beam_size=3, max_len=12)]
    model.to(torch_device)
    assert greedy_decode(model, src.to(torch_device), lengths, max_len=12) == cpu_greedy
    beam = beam_search(model, src.to(torch_device), lengths, beam_size=3, max_len=12)
    assert [h[0].tokens for h in beam] == cpu_beam


def test_evaluate_translation_and_predict_on_the_device(torch_device):
    model = _model("transformer")
    fit(model, _loader(), epochs=2, lr=3e-3, device=torch_device, progress=False, seed=0)
    texts = [(" ".join(src), " ".join(tgt)) for src, tgt in PAIRS[:20]]
    for method in ("greedy", "beam"):
        result = evaluate_translation(model, texts, SRC_VOCAB, TGT_VOCAB, str.split,
                                      method=method, beam_size=3, max_len=12, device=torch_device,
                                      detokenizer=" ".join)
        assert 0 <= result.bleu <= 100 and 0 <= result.chrf <= 100
    assert _params_on(model, torch_device)
    predictions = predict(model, _loader(shuffle=False), device=torch_device)
    assert len(predictions.preds) == len(PAIRS) == len(predictions.refs)


def test_masks_and_benchmark_helpers_on_the_device(torch_device):
    mask = causal_mask(4, 6, device=torch_device)
    assert mask.device.type == torch_device.type and mask.shape == (4, 6)
    assert torch.equal(mask.cpu(), causal_mask(4, 6))
    x = torch.randn(64, 64, device=torch_device)
    assert time_call(lambda: x @ x, repeat=2, warmup=1, device=torch_device) > 0
    assert peak_memory(lambda: x @ x, device=torch_device) >= 64 * 64 * 4
