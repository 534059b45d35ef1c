"""What the benchmarks share: timing a fresh process, and printing a row of medians.

Each measurement is a fresh process (`python -m invoke ...`), so interpreter start and
imports are included, as a user would see them.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from deepdive.execute import die_with_parent  # noqa: E402 (a run ends with the benchmark)

INVOKE = [sys.executable, "-m", "invoke"]


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, preexec_fn=die_with_parent)
    elapsed = time.perf_counter() - started
    if res.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} failed: {res.stderr.strip().splitlines()[-1:]}")
    return elapsed


def report(label: str, argv: list[str], repeat: int, target: float | None = None) -> float:
    return summarize(label, [timed(argv) for _ in range(repeat)], target)


def summarize(label: str, times: list[float], target: float | None = None) -> float:
    """Print one row: median, min-max, and the target and ratio if there is one."""
    med = statistics.median(times)
    ratio = f"{med / target:6.2f}" if target else ""
    goal = f"{target:7.1f}s" if target else ""
    print(f"{label:34} {med:7.2f}s {min(times):6.2f}-{max(times):6.2f} s {goal:>8} {ratio:>6}", flush=True)
    return med
