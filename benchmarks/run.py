"""Median wall time of `invoke lab.run --page X` per page and of a full site build.

    .venv/bin/python benchmarks/run.py [--repeat 5]

Each measurement is a fresh `python -m invoke ...` process, so interpreter start and
imports are included, as a user would see them. These machines are noisy: medians and
the ratio to the target are reported, not single runs. lab.run needs root or user
namespaces; it rewrites nothing when the page is unchanged.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deepdive import registry  # noqa: E402
from deepdive.capture import CAPTURES  # noqa: E402

TARGETS = {"lab.run": 2.0, "site.build": 10.0}


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if res.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} failed: {res.stderr.strip().splitlines()[-1:]}")
    return elapsed


def median_of(argv: list[str], repeat: int) -> tuple[float, float, float]:
    times = [timed(argv) for _ in range(repeat)]
    return statistics.median(times), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    invoke = [sys.executable, "-m", "invoke"]
    print(f"Linux {platform.release()}, Python {platform.python_version()}, "
          f"{args.repeat} runs each (median, min-max)")
    print(f"{'what':28} {'median':>8} {'range':>15} {'target':>8} {'ratio':>6}")
    rows = [(f"lab.run --page {name}", "lab.run", [*invoke, "lab.run", "--page", name])
            for name in registry.names()]
    before = {p: p.read_bytes() for p in CAPTURES.glob("*.json")}
    with tempfile.TemporaryDirectory() as out:
        rows.append(("site.build", "site.build", [*invoke, "site.build", "--dir", out]))
        for label, kind, argv in rows:
            med, lo, hi = median_of(argv, args.repeat)
            target = TARGETS[kind]
            print(f"{label:28} {med:7.2f}s {lo:6.2f}-{hi:5.2f} s {target:7.1f}s {med / target:6.2f}")
    # Repeated runs of an unchanged page must not rewrite its capture.
    rewritten = [p.name for p, data in before.items() if p.read_bytes() != data]
    print("captures rewritten by the repeated runs: " + (", ".join(rewritten) or "none"))


if __name__ == "__main__":
    main()
