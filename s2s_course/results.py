"""Keep the numbers a chapter produced, so later chapters (and the book's tables) can compare them.

Each result is one small JSON file ``book/results/<name>.json``::

    save_result("ch04_bahdanau", {"bleu": 31.2, "epochs": 10})
    load_results()["ch04_bahdanau"]   # {'bleu': 31.2, 'epochs': 10}

Next to the record the file stores where and when it was produced (``env.describe()`` and a UTC
timestamp): a BLEU of 31 from a full GPU run and one from a one-minute quick run are different things.
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from s2s_course.env import describe

_NAME = re.compile(r"[a-z0-9_-]+")


def _root(root: str | os.PathLike | None) -> Path:
    """The book's root folder: ``root`` if given, else the first folder from here upwards with a ``book/``."""
    if root is not None:
        return Path(root)
    here = Path.cwd()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[1]):
        if (folder / "book").is_dir():
            return folder
    return here


RESULTS_ENV = "S2S_RESULTS_DIR"


def results_dir(root: str | os.PathLike | None = None) -> Path:
    """``<root>/book/results``, where every result file lives.

    ``$S2S_RESULTS_DIR`` overrides it when no ``root`` is given: the notebook tests set it, so a
    quick test run never overwrites the results the book reports.
    """
    if root is None and os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    return _root(root) / "book" / "results"


def _to_json(value: Any) -> Any:
    """Turn tensors, NumPy values and paths into plain JSON types (called by ``json.dumps``)."""
    if hasattr(value, "tolist"):  # torch.Tensor, np.ndarray, np.float32, ...
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"record contains a {type(value).__name__} ({value!r:.60}), which JSON cannot store; "
                    f"convert it to a number, string, list or dict")


def save_result(name: str, record: dict[str, Any], root: str | os.PathLike | None = None) -> Path:
    """Write ``record`` to ``<root>/book/results/<name>.json`` (sorted keys) and return the path."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must match [a-z0-9_-]+ (e.g. 'ch04_bahdanau'), got {name!r}")
    if not isinstance(record, dict):
        raise TypeError(f"record must be a dict, got {type(record).__name__}")
    payload = {
        "name": name,
        "record": record,
        "env": describe(),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, default=_to_json) + "\n"
    path = results_dir(root) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return path


def load_results(root: str | os.PathLike | None = None, *, with_meta: bool = False) -> dict[str, Any]:
    """Every saved result, ``{name: record}`` sorted by name (``{}`` when none was saved yet).

    ``with_meta=True`` returns the whole files instead: ``{name: {"record", "env", "saved_at", "name"}}``.
    """
    folder = results_dir(root)
    results: dict[str, Any] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            record = payload["record"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a result file written by save_result ({err!r})") from None
        results[path.stem] = payload if with_meta else record
    return results


__all__ = ["save_result", "load_results", "results_dir"]
