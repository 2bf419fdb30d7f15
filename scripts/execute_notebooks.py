#!/usr/bin/env python3
"""Execute chapters in place, top to bottom, and record how and where they ran.

    python scripts/execute_notebooks.py chapters/*.ipynb          # full mode (what we commit)
    python scripts/execute_notebooks.py --quick chapters/07_*.ipynb

Widget state is saved into the notebook so the website can show widgets without a kernel, and
the notebook metadata gets an ``s2s_course_run`` record: mode, device, versions, seconds.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def run_info(quick: bool) -> dict:
    """Device and versions; this script runs in the same environment as the kernel it starts."""
    import torch

    from s2s_course.env import get_device

    device = get_device()
    info = {
        "mode": "quick" if quick else "full",
        "quick": quick,
        "device": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "executed_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def execute(path: Path, quick: bool, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ["S2S_QUICK"] = "1" if quick else "0"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    info = run_info(quick)
    info["seconds"] = round(seconds, 1)
    nb.metadata["s2s_course_run"] = info
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--quick", action="store_true", help="run with S2S_QUICK=1")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    times = {}
    for path in args.notebooks:
        print(f"executing {path} ({'quick' if args.quick else 'full'}) ...", flush=True)
        times[str(path)] = execute(path, args.quick, args.timeout)
        print(f"  done in {times[str(path)]:.1f} s", flush=True)
    print(json.dumps(times, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
