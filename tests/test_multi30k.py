"""s2s_course.multi30k: recipes, the models they build, and train-once-then-load on a tiny slice
of the real Multi30k files (tiny models, a few hundred pairs: seconds, not minutes)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import s2s_course.multi30k as multi30k
from s2s_course.models.attention_rnn import (AttnSeq2Seq, BahdanauDecoder, LuongDecoder,
                                             make_attention_seq2seq)
from s2s_course.models.rnn import count_parameters
from s2s_course.models.transformer import Transformer
from s2s_course.multi30k import QUICK, RECIPES, build_model, recipe, run_path, train_or_load
from s2s_course.translation import prepare_multi30k
from tests.nbtools import load_file

REPO = Path(__file__).resolve().parents[1]
TINY = dict(d_model=16, num_heads=2, num_layers=1, d_ff=32, max_tokens=600, bpe_vocab_size=150,
            warmup=5, bf16=False)


# --- recipes ----------------------------------------------------------------------------------

def test_recipe_is_a_copy_with_overrides():
    config = recipe("transformer", d_model=64, lr=5e-4)
    assert config["d_model"] == 64 and config["lr"] == 5e-4
    assert {k: v for k, v in config.items() if k not in ("d_model", "lr")} == \
        {k: v for k, v in RECIPES["transformer"].items() if k not in ("d_model", "lr")}
    config["num_layers"] = 99
    assert RECIPES["transformer"]["num_layers"] == 3 and recipe("transformer")["d_model"] == 256
    assert recipe("rnn") == RECIPES["rnn"] and recipe("rnn") is not RECIPES["rnn"]


def test_recipe_rejects_unknown_names_and_keys():
    with pytest.raises(ValueError, match="name must be one of"):
        recipe("lstm")
    with pytest.raises(ValueError, match=r"unknown recipe keys \['d_modle', 'layers'\]"):
        recipe("transformer", d_modle=64, layers=2)
    with pytest.raises(ValueError, match="unknown recipe keys"):
        recipe("rnn", d_model=64)          # a Transformer key in the RNN recipe


def test_recipes_say_what_the_chapters_promise():
    t, r = RECIPES["transformer"], RECIPES["rnn"]
    assert t["model"] == "transformer" and t["tie"] == "all" and t["norm_first"] is True
    assert r["model"] == "rnn" and r["kind"] == "bahdanau"
    assert t["bpe_vocab_size"] == r["bpe_vocab_size"] and t["max_tokens"] == r["max_tokens"]
    assert QUICK["epochs"] == 1 and QUICK["n_train"] < 29_000
    # quick mode's settings are recipe keys (or the data slice), so they apply cleanly
    for name in RECIPES:
        recipe(name, **{k: v for k, v in QUICK.items() if k not in ("n_train", "n_val")})
        recipe(name, **getattr(multi30k, "QUICK_MODEL", {}).get(name, {}))


# --- build_model --------------------------------------------------------------------------------

def test_build_model_transformer_family_and_parameter_count():
    V, D, FF, L = 100, 32, 64, 1
    model = build_model(recipe("transformer", d_model=D, num_heads=4, num_layers=L, d_ff=FF), V)
    assert isinstance(model, Transformer)
    assert len(model.encoder_layers) == len(model.decoder_layers) == L
    assert model.decoder_layers[0].self_attn.num_heads == 4
    assert model.src_embedding.weight is model.tgt_embedding.weight is model.generator.weight
    attention, ffn, norm = 4 * (D * D + D), 2 * D * FF + FF + D, 2 * D
    expected = (L * (attention + ffn + 2 * norm) + norm          # encoder + final LN (pre-LN)
                + L * (2 * attention + ffn + 3 * norm) + norm    # decoder + final LN
                + V * D + V)                                     # one tied matrix + generator bias
    assert count_parameters(model) == expected
    untied = build_model(recipe("transformer", d_model=D, num_heads=4, num_layers=L, d_ff=FF,
                                tie="none", norm_first=False), V)
    assert count_parameters(untied) == expected + 2 * V * D - 2 * norm
    assert all(layer.norm_first is False for layer in untied.encoder_layers)


def test_build_model_rnn_family():
    config = recipe("rnn", emb_dim=8, hidden_dim=12, dropout=0.0)
    model = build_model(config, 50)
    assert isinstance(model, AttnSeq2Seq) and isinstance(model.decoder, BahdanauDecoder)
    assert model.decoder.embedding.weight.shape == (50, 8)
    reference = make_attention_seq2seq(50, 50, kind="bahdanau", emb_dim=8, hidden_dim=12)
    assert count_parameters(model) == count_parameters(reference)
    assert count_parameters(build_model(recipe("rnn", emb_dim=8, hidden_dim=16), 50)) > \
        count_parameters(model)
    luong = build_model(recipe("rnn", kind="luong", emb_dim=8, hidden_dim=12), 50)
    assert isinstance(luong.decoder, LuongDecoder)


# --- run_path ------------------------------------------------------------------------------------

def test_run_path_is_keyed_by_the_recipe_under_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("S2S_COURSE_CACHE", str(tmp_path))
    config = recipe("transformer")
    path = run_path("transformer", config)
    assert path.parent == tmp_path / "runs"
    assert path.name.startswith("multi30k-transformer-") and path.suffix == ".pt"
    assert run_path("transformer", dict(config)) == path                      # same recipe
    assert run_path("transformer", dict(reversed(list(config.items())))) == path  # key order
    assert run_path("transformer", recipe("transformer", lr=5e-4)) != path
    assert run_path("rnn", config) != path


# --- train_or_load on a slice of the corpus -----------------------------------------------------

def _data_root() -> Path:
    env = os.environ.get("S2S_COURSE_DATA", "").strip()
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    root = _data_root()
    if not (root / "multi30k" / "train.de.gz").is_file():
        pytest.skip(f"Multi30k not found under {root} (set S2S_COURSE_DATA to the shared data folder)")
    monkeypatch.setenv("S2S_COURSE_DATA", str(root))
    monkeypatch.setenv("S2S_COURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_train_or_load_quick_mode_trains_tiny_and_saves_nothing(corpus, monkeypatch):
    monkeypatch.setenv("S2S_QUICK", "1")
    monkeypatch.setattr(multi30k, "QUICK", {"n_train": 200, "n_val": 6, "epochs": 1,
                                            "max_minutes": 2.0, "bpe_vocab_size": 150})
    monkeypatch.setattr(multi30k, "QUICK_MODEL", {"transformer": {"d_model": 16, "d_ff": 32}},
                        raising=False)
    run = train_or_load("transformer", device="cpu", progress=False, **TINY)
    assert isinstance(run.model, Transformer) and not run.model.training
    assert run.data.sizes()["train"] == 200 and run.data.sizes()["val"] == 6
    assert run.data.src_vocab is run.data.tgt_vocab
    assert len(run.history) == 1 and "val_bleu" in run.history.keys()
    info = run.info
    assert info["recipe"] == "transformer" and info["epochs"] == 1 and info["best_epoch"] == 1
    assert info["config"]["n_train"] == 200 and info["config"]["d_model"] == 16
    assert info["parameters"] == count_parameters(run.model)
    assert info["device"] == "cpu" and info["train_tokens_per_second"] > 0
    assert info["best_val_bleu"] == run.history["val_bleu"][0]
    assert "loaded_from" not in info
    assert not (corpus / "runs").exists()                 # quick runs are never cached
    # the lr schedule was used: warmup 5 -> the last lr is peak * sqrt(5 / steps)
    steps = run.history["steps"][0]
    expected = 1e-3 * min(steps / 5, (5 / steps) ** 0.5)
    assert run.history["lr"][0] == pytest.approx(expected)


def test_train_or_load_full_mode_saves_then_loads_the_same_weights(corpus, monkeypatch):
    monkeypatch.setenv("S2S_QUICK", "0")
    real = prepare_multi30k
    sizes = []

    def small_slice(**kwargs):  # the full mode reads all 29,000 pairs: keep a slice for a test
        sizes.append((kwargs.get("n_train"), kwargs.get("n_val")))
        return real(**{**kwargs, "n_train": 150, "n_val": 5})

    monkeypatch.setattr(multi30k, "prepare_multi30k", small_slice)
    overrides = dict(TINY, epochs=1, max_minutes=0.001)
    first = train_or_load("transformer", device="cpu", progress=False, **overrides)
    assert sizes == [(None, None)]                         # full mode asks for everything
    path = run_path("transformer", recipe("transformer", **overrides))
    assert path.is_file() and path.parent == corpus / "runs"
    assert "loaded_from" not in first.info and len(first.history) == 1

    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert set(saved) == {"state_dict", "history", "info", "vocab"}
    for key, value in first.model.state_dict().items():
        assert torch.equal(saved["state_dict"][key], value), key

    second = train_or_load("transformer", device="cpu", progress=False, **overrides)
    assert second.info["loaded_from"] == str(path)
    assert second.history.records == first.history.records
    assert {k: v for k, v in second.info.items() if k != "loaded_from"} == first.info
    assert not second.model.training
    for (key, a), (_, b) in zip(first.model.state_dict().items(),
                                second.model.state_dict().items()):
        assert torch.equal(a, b), key
    # and the loaded model is really the trained one, not a fresh initialisation
    fresh = build_model(recipe("transformer", **overrides), len(second.data.src_vocab))
    assert not torch.equal(fresh.generator.bias, second.model.generator.bias)

    # retrain=True trains again instead of loading
    again = train_or_load("transformer", device="cpu", progress=False, retrain=True, **overrides)
    assert "loaded_from" not in again.info


def test_train_or_load_rejects_unknown_keys_before_reading_data(monkeypatch):
    monkeypatch.setattr(multi30k, "prepare_multi30k",
                        lambda **kwargs: pytest.fail("data read before checking the recipe"))
    with pytest.raises(ValueError, match="unknown recipe keys"):
        train_or_load("transformer", d_modle=8)


# --- the command line --------------------------------------------------------------------------

def test_train_multi30k_script_prints_each_run(monkeypatch, capsys):
    import json

    script = load_file("scripts/train_multi30k.py")
    calls = []

    class FakeRun:
        info = {"recipe": "transformer", "config": {"d_model": 1, "max_minutes": 27.0},
                "best_val_bleu": 12.5}

    def fake_train_or_load(name, **kwargs):
        calls.append((name, kwargs))
        return FakeRun()

    monkeypatch.setattr(script, "train_or_load", fake_train_or_load)
    monkeypatch.delenv("S2S_MAX_MINUTES", raising=False)
    assert script.main(["transformer", "rnn", "--retrain"]) == 0
    assert [name for name, _ in calls] == ["transformer", "rnn"]
    assert all(kwargs["retrain"] is True and kwargs["progress"] is False for _, kwargs in calls)
    out = capsys.readouterr().out
    assert '"best_val_bleu": 12.5' in out and '"config"' not in out
    with pytest.raises(SystemExit):
        script.main(["lstm"])


def test_recipe_optimizers():
    model = torch.nn.Linear(2, 2)
    adamw = multi30k._optimizer(recipe("transformer", lr=2e-3), model)
    assert isinstance(adamw, torch.optim.AdamW)
    group = adamw.param_groups[0]
    assert group["lr"] == 2e-3 and group["betas"] == (0.9, 0.98) and group["weight_decay"] == 0.01
    adam = multi30k._optimizer(recipe("rnn"), model)
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["lr"] == RECIPES["rnn"]["lr"]
