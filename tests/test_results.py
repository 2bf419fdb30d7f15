import json
from datetime import datetime, timezone

import numpy as np
import pytest
import torch

from s2s_course.env import describe
from s2s_course.results import load_results, results_dir, save_result


def test_save_writes_sorted_json_with_env_and_utc_timestamp(tmp_path):
    path = save_result("ch04_bahdanau", {"bleu": 31.2, "epochs": 10, "note": "한국어"}, root=tmp_path)
    assert path == tmp_path / "book" / "results" / "ch04_bahdanau.json"
    text = path.read_text(encoding="utf-8")
    payload = json.loads(text)
    assert list(payload) == sorted(payload)
    assert list(payload["record"]) == ["bleu", "epochs", "note"]
    assert "한국어" in text  # readable, not \\uXXXX
    assert payload["name"] == "ch04_bahdanau"
    assert payload["env"] == json.loads(json.dumps(describe()))
    saved = datetime.fromisoformat(payload["saved_at"])
    assert saved.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - saved).total_seconds()) < 60
    assert not list(path.parent.glob("*.tmp"))


def test_round_trip_and_overwrite(tmp_path):
    assert load_results(root=tmp_path) == {}
    save_result("b-run", {"x": 1}, root=tmp_path)
    save_result("a_run", {"y": [1, 2]}, root=tmp_path)
    save_result("b-run", {"x": 2}, root=tmp_path)
    results = load_results(root=tmp_path)
    assert results == {"a_run": {"y": [1, 2]}, "b-run": {"x": 2}}
    assert list(results) == ["a_run", "b-run"]
    meta = load_results(root=tmp_path, with_meta=True)
    assert meta["a_run"]["record"] == {"y": [1, 2]} and "env" in meta["a_run"] and "saved_at" in meta["a_run"]


def test_tensors_and_numpy_values_become_plain_json(tmp_path):
    record = {"loss": torch.tensor(0.5), "acc": np.float32(0.25), "curve": torch.tensor([1.0, 2.0]),
              "ids": np.array([1, 2]), "path": tmp_path}
    save_result("converted", record, root=tmp_path)
    assert load_results(tmp_path)["converted"] == {"loss": 0.5, "acc": 0.25, "curve": [1.0, 2.0],
                                                   "ids": [1, 2], "path": str(tmp_path)}
    with pytest.raises(TypeError, match="record contains a object"):
        save_result("bad", {"x": object()}, root=tmp_path)


@pytest.mark.parametrize("name", ["Ch04", "ch 04", "", "../x", "ch04.json", None])
def test_bad_names(tmp_path, name):
    with pytest.raises(ValueError, match=r"name must match \[a-z0-9_-\]\+"):
        save_result(name, {}, root=tmp_path)


def test_bad_record_and_broken_file(tmp_path):
    with pytest.raises(TypeError, match="record must be a dict, got list"):
        save_result("x", [1], root=tmp_path)
    folder = results_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json is not a result file"):
        load_results(tmp_path)
    (folder / "broken.json").write_text('{"no_record": 1}')
    with pytest.raises(ValueError, match="broken.json is not a result file"):
        load_results(tmp_path)


def test_default_root_is_the_nearest_folder_with_a_book(tmp_path, monkeypatch):
    (tmp_path / "book").mkdir()
    (tmp_path / "chapters").mkdir()
    monkeypatch.chdir(tmp_path / "chapters")  # notebooks run from chapters/
    path = save_result("ch01_demo", {"ok": True})
    assert path == tmp_path / "book" / "results" / "ch01_demo.json"
    assert load_results() == {"ch01_demo": {"ok": True}}


def test_results_dir_env_override(tmp_path, monkeypatch):
    from s2s_course import results

    monkeypatch.setenv("S2S_RESULTS_DIR", str(tmp_path / "elsewhere"))
    path = results.save_result("env_override", {"bleu": 1.0})
    assert path.parent == tmp_path / "elsewhere"
    assert results.load_results()["env_override"] == {"bleu": 1.0}
    assert results.results_dir(tmp_path) == tmp_path / "book" / "results"  # an explicit root wins
