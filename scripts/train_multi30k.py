#!/usr/bin/env python3
"""Train (or load) the course's Multi30k translators and print what they reached.

    python scripts/train_multi30k.py transformer rnn            # train what is not saved yet
    python scripts/train_multi30k.py --retrain transformer       # train again
    python scripts/train_multi30k.py --test transformer          # also score test_2016_flickr
    python scripts/train_multi30k.py --retrain --max-minutes 2 rnn   # cap the training budget

``--max-minutes`` (or ``$S2S_MAX_MINUTES``) overrides the recipe's ``max_minutes``; like any
override it changes the saved run's key, so a capped run never replaces the recipe's own run.
``--json PATH`` also writes the report (minutes, tokens/s, BLEU, chrF) as one JSON file.

The chapters call the same ``s2s_course.multi30k.train_or_load``; a run trained here is the run
they load (it is saved in the download cache, keyed by its recipe).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from s2s_course.multi30k import RECIPES, train_or_load
from s2s_course.translation import evaluate_translation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(RECIPES))
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--test", action="store_true", help="score test_2016_flickr (greedy, beam 5)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--max-minutes", type=float, default=_env_minutes(),
                        help="override the recipe's training budget (default: $S2S_MAX_MINUTES)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="score only the first N test pairs (a smoke test; default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.max_minutes is not None and not args.max_minutes > 0:
        parser.error(f"--max-minutes must be > 0, got {args.max_minutes}")
    if args.n_test is not None and args.n_test < 1:
        parser.error(f"--n-test must be >= 1, got {args.n_test}")
    overrides = {} if args.max_minutes is None else {"max_minutes": args.max_minutes}
    report = {}
    for name in args.names:
        run = train_or_load(name, retrain=args.retrain, device=args.device, progress=False,
                            **overrides)
        entry = {k: v for k, v in run.info.items() if k != "config"}
        entry["max_minutes"] = run.info["config"]["max_minutes"]  # the budget it trained under
        if args.test:
            data = run.data
            test_pairs = data.raw["test"][:args.n_test] if args.n_test else data.raw["test"]
            for method in ("greedy", "beam"):
                result = evaluate_translation(run.model, test_pairs, data.src_vocab,
                                              data.tgt_vocab, data.tokenizer, method=method,
                                              beam_size=5, detokenizer=data.detokenizer)
                entry[method] = result.summary()
        report[name] = entry
        print(json.dumps({name: entry}, indent=2, default=str), flush=True)
        if args.json is not None:  # rewritten after each recipe: a later failure keeps the first
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


def _env_minutes() -> float | None:
    value = os.environ.get("S2S_MAX_MINUTES", "").strip()
    return float(value) if value else None


if __name__ == "__main__":
    sys.exit(main())
