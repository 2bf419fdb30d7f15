#!/usr/bin/env python3
"""Train (or load) the course's Multi30k translators and print what they reached.

    python scripts/train_multi30k.py transformer rnn            # train what is not saved yet
    python scripts/train_multi30k.py --retrain transformer       # train again
    python scripts/train_multi30k.py --test transformer          # also score test_2016_flickr

The chapters call the same ``s2s_course.multi30k.train_or_load``; a run trained here is the run
they load (it is saved in the download cache, keyed by its recipe).
"""
from __future__ import annotations

import argparse
import json
import sys

from s2s_course.multi30k import RECIPES, train_or_load
from s2s_course.translation import evaluate_translation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=sorted(RECIPES))
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--test", action="store_true", help="score test_2016_flickr (greedy, beam 5)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    report = {}
    for name in args.names:
        run = train_or_load(name, retrain=args.retrain, device=args.device, progress=False)
        entry = {k: v for k, v in run.info.items() if k != "config"}
        if args.test:
            data = run.data
            for method in ("greedy", "beam"):
                result = evaluate_translation(run.model, data.raw["test"], data.src_vocab,
                                              data.tgt_vocab, data.tokenizer, method=method,
                                              beam_size=5, detokenizer=data.detokenizer)
                entry[method] = result.summary()
        report[name] = entry
        print(json.dumps({name: entry}, indent=2, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
