#!/usr/bin/env bash
# One-shot check of the course on a CUDA machine (`make gpu-check`), meant to finish in <= 8 min:
#   1. the unit tests, with the device tests' tensors on CUDA (S2S_TEST_DEVICE=cuda);
#   2. every notebook under nbval in quick mode on CUDA (S2S_QUICK=1 S2S_DEVICE=cuda);
#   3. the full Multi30k recipes "rnn" (ch. 7) and "transformer" (ch. 10), trained on CUDA
#      under a capped budget and scored on test_2016_flickr: minutes, tokens/s, BLEU, chrF.
# Everything lands in one folder ($OUT, else _build/gpu-check): report.json (pass/fail per
# notebook, timings, BLEU), the executed notebooks, and each step's log.
#
# Without CUDA it stops at once with one line and exit status 3. `--cpu-dry-run` (or
# S2S_GPU_CHECK_ALLOW_CPU=1) runs the same steps on the CPU with tiny budgets instead, to test
# the plumbing: only tests/test_on_device.py, chapter 1 (or --notebooks), and the quick
# (S2S_QUICK=1) Multi30k runs scored on 50 test sentences.
#
#   scripts/gpu_check.sh [--cpu-dry-run] [--notebooks "chapters/01_*.ipynb ..."]
#                        [--tests "tests/..."] [--recipes "rnn transformer"] [--max-minutes M]
# Environment: OUT, PYTHON (default .venv/bin/python), GPU_CHECK_MAX_MINUTES (training budget
# per recipe, default 1.5), NB_WORKERS (parallel notebooks, default 4), UNIT_WORKERS (default 4).
set -euo pipefail

cd "$(dirname "$0")/.."

PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
DRY_RUN=${S2S_GPU_CHECK_ALLOW_CPU:-0}
NOTEBOOKS=${GPU_CHECK_NOTEBOOKS:-}
TESTS=${GPU_CHECK_TESTS:-}
RECIPES=${GPU_CHECK_RECIPES:-rnn transformer}
MAX_MINUTES=${GPU_CHECK_MAX_MINUTES:-1.5}
NB_WORKERS=${NB_WORKERS:-4}
UNIT_WORKERS=${UNIT_WORKERS:-4}

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

parse_args() {
    while (($#)); do
        case $1 in
            --cpu-dry-run) DRY_RUN=1 ;;
            --notebooks) NOTEBOOKS=$2; shift ;;
            --tests) TESTS=$2; shift ;;
            --recipes) RECIPES=$2; shift ;;
            --max-minutes) MAX_MINUTES=$2; shift ;;
            -h|--help) usage; exit 0 ;;
            *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
        esac
        shift
    done
    if [[ $DRY_RUN == 1 ]]; then
        DEVICE=cpu
        TESTS=${TESTS:-tests/test_on_device.py}
        NOTEBOOKS=${NOTEBOOKS:-chapters/01_sequences_tokens_batches.ipynb}
        NB_WORKERS=0 UNIT_WORKERS=0
    else
        DEVICE=cuda
        TESTS=${TESTS:-tests}
        NOTEBOOKS=${NOTEBOOKS:-chapters/*.ipynb}
    fi
}

# Stop at once, with one line, when CUDA is absent (unless this is a CPU dry run).
require_cuda() {
    local line
    if line=$("$PY" - 2>&1 <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    why = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
    sys.exit(f"CUDA is not available (torch {torch.__version__}, {why}); this check needs a CUDA GPU"
             " (--cpu-dry-run or S2S_GPU_CHECK_ALLOW_CPU=1 runs its steps on the CPU)")
print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
    ); then
        echo "gpu-check: running on $line"
    else
        echo "gpu-check: ${line##*$'\n'}" >&2
        exit 3
    fi
}

# The corpora: like the Makefile, use ../shared/data (or ./shared/data) when nothing is set.
find_data() {
    local dir
    for dir in ../shared/data shared/data; do
        if [[ -z ${S2S_COURSE_DATA:-} && -d $dir ]]; then S2S_COURSE_DATA=$(cd "$dir" && pwd); fi
    done
    export S2S_COURSE_DATA=${S2S_COURSE_DATA:-}
}

# run_step NAME COMMAND...: run it with its output in NAME.log; record status and seconds.
run_step() {
    local name=$1 start rc=0
    shift
    echo "== $name: $*"
    start=$(date +%s.%N)
    "$@" 2>&1 | tee "$OUT_DIR/$name.log" || rc=$?  # pipefail: the step's own status
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(awk -v a="$start" -v b="$(date +%s.%N)" \
        'BEGIN { printf "%.1f", b - a }')" >> "$STEPS_FILE"
    echo "== $name: exit $rc"
}

unit_tests() {
    # shellcheck disable=SC2086  # TESTS is a list of paths
    S2S_TEST_DEVICE=$DEVICE "$PY" -m pytest $TESTS -n "$UNIT_WORKERS" -p no:cacheprovider -q \
        --junitxml "$OUT_DIR/unit-junit.xml"
}

notebooks() {
    local threads=$(( $(nproc) / (NB_WORKERS > 0 ? NB_WORKERS : 1) ))
    # shellcheck disable=SC2086  # NOTEBOOKS is a list of paths (or globs)
    S2S_QUICK=1 S2S_DEVICE=$DEVICE S2S_RESULTS_DIR="$OUT_DIR/results" MPLBACKEND=Agg \
        OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))} \
        PYTHONPATH="scripts${PYTHONPATH:+:$PYTHONPATH}" \
        "$PY" -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout 600 \
        -p nbval_record --nbval-record "$OUT_DIR/notebooks" \
        -n "$NB_WORKERS" --dist loadfile -p no:cacheprovider -q $NOTEBOOKS
}

multi30k() {
    local budget=(--max-minutes "$MAX_MINUTES")
    if [[ $DRY_RUN == 1 ]]; then  # quick mode: 2,000 pairs, one epoch, 50 test sentences
        export S2S_QUICK=1
        budget=(--n-test 50)
    fi
    # shellcheck disable=SC2086  # RECIPES is a list of names
    "$PY" scripts/train_multi30k.py --retrain --test --device "$DEVICE" "${budget[@]}" \
        --json "$OUT_DIR/multi30k.json" $RECIPES
}

# report.json: the steps, every notebook's record, the unit test counts, the Multi30k numbers.
write_report() {
    "$PY" - "$OUT_DIR" "$DEVICE" "$DRY_RUN" "$MAX_MINUTES" "$NOTEBOOKS" <<'EOF'
import glob, json, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

out, device, dry_run, max_minutes, notebooks = sys.argv[1:]
out = Path(out)
steps = {}
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, seconds = line.split("\t")
    steps[name] = {"passed": rc == "0", "exit": int(rc), "seconds": float(seconds)}
nbs = {}
for pattern in notebooks.split():
    for path in sorted(glob.glob(pattern)):
        record = out / "notebooks" / (Path(path).stem + ".json")
        nbs[Path(path).name] = (json.loads(record.read_text()) if record.is_file() else
                                {"notebook": path, "passed": False, "first_failure": "not run"})
unit = {}
if (out / "unit-junit.xml").is_file():
    suite = ET.parse(out / "unit-junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    unit = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    unit["seconds"] = float(suite.get("time", 0))
multi30k = {}
if (out / "multi30k.json").is_file():
    for name, run in json.loads((out / "multi30k.json").read_text()).items():
        multi30k[name] = {k: run.get(k) for k in (
            "device", "gpu", "epochs", "max_minutes", "train_minutes", "total_minutes",
            "train_tokens_per_second", "best_epoch", "best_val_bleu")}
        for method in ("greedy", "beam"):
            if method in run:
                multi30k[name][method] = {k: run[method].get(k) for k in ("bleu", "chrf", "seconds")}
total = sum(s["seconds"] for s in steps.values())
report = {
    "passed": all(s["passed"] for s in steps.values()) and all(n["passed"] for n in nbs.values()),
    "mode": "cpu-dry-run" if dry_run == "1" else "gpu", "device": device,
    "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
    "torch": torch.__version__, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "seconds": round(total, 1), "within_8_minutes": total <= 480,
    "max_minutes_per_recipe": None if dry_run == "1" else float(max_minutes), "steps": steps, "unit": unit,
    "notebooks": nbs, "multi30k": multi30k,
}
(out / "report.json").write_text(json.dumps(report, indent=2) + "\n")

print(f"\ngpu-check report ({report['mode']}, {device}): {out / 'report.json'}")
for name, step in steps.items():
    print(f"  step {name:<10} {'PASS' if step['passed'] else 'FAIL'}  {step['seconds']:7.1f} s")
for name, nb in nbs.items():
    print(f"  notebook {name:<42} {'PASS' if nb['passed'] else 'FAIL'}  {nb.get('seconds', 0):7.1f} s"
          + ("" if nb["passed"] else f"  {nb['first_failure']}"))
for name, run in multi30k.items():
    scores = "  ".join(f"{m} BLEU {run[m]['bleu']:.2f} chrF {run[m]['chrf']:.2f}"
                       for m in ("greedy", "beam") if m in run)
    print(f"  multi30k {name:<12} {run['epochs']} epochs in {run['train_minutes']:.2f} min "
          f"(budget {run['max_minutes']}), {run['train_tokens_per_second']:.0f} tokens/s  {scores}")
print(f"  total {total:.1f} s{'' if total <= 480 else ' -- over the 8-minute budget'}: "
      f"{'PASS' if report['passed'] else 'FAIL'}")
sys.exit(0 if report["passed"] else 1)
EOF
}

main() {
    parse_args "$@"
    if [[ $DEVICE == cuda ]]; then require_cuda; fi
    OUT_DIR=$(mkdir -p "${OUT:-_build/gpu-check}" && cd "${OUT:-_build/gpu-check}" && pwd)
    STEPS_FILE="$OUT_DIR/steps.tsv"
    find_data
    rm -rf "$OUT_DIR/notebooks" "$OUT_DIR/results" "$OUT_DIR"/*.log "$OUT_DIR"/*.json \
        "$OUT_DIR/unit-junit.xml" "$STEPS_FILE"
    echo "gpu-check: device=$DEVICE out=$OUT_DIR data=${S2S_COURSE_DATA:-<download>}"
    run_step unit unit_tests
    run_step notebooks notebooks
    run_step multi30k multi30k
    write_report
}

main "$@"
