"""Median wall times of the labs and of a full site build.

    .venv/bin/python benchmarks/run.py [--repeat 5] [--page NAME ...]

Each measurement is a fresh `python -m invoke ...` process, so interpreter start and
imports are included, as a user would see them. These machines are noisy: medians and
the ratio to the target are reported, not single runs.

- host lab: `lab.run --page X` for every page this kernel can run;
- site: `site.build` into a temporary directory.

The vm lab has benchmarks/vm.py.

lab.run rewrites nothing when a page is unchanged; the script says if it did.
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

from deepdive import cli, registry  # noqa: E402
from deepdive.capture import CAPTURES  # noqa: E402
from deepdive.model import DeepDiveError  # noqa: E402

INVOKE = [sys.executable, "-m", "invoke"]
TARGETS = {"host page": 2.0, "site.build": 10.0}


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per host-lab measurement")
    parser.add_argument("--page", action="append", default=[], metavar="NAME",
                        help="only this page (repeat for several); default: every page")
    args = parser.parse_args()
    try:
        pages = [registry.load(n) for n in args.page] if args.page else registry.load_all()
    except DeepDiveError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    host, _vm = cli.choose(pages, "auto")
    print(f"Linux {platform.release()}, Python {platform.python_version()}; "
          f"median of {args.repeat} runs, with min-max")
    print(f"{'what':34} {'median':>8} {'range':>16} {'target':>8} {'ratio':>6}")
    before = {p: p.read_bytes() for p in CAPTURES.glob("*.json")}
    for p in host:
        report(f"host lab: {p.name}", [*INVOKE, "lab.run", "--page", p.name], args.repeat, TARGETS["host page"])
    with tempfile.TemporaryDirectory() as out:
        report("site.build", [*INVOKE, "site.build", "--dir", out], args.repeat, TARGETS["site.build"])
    rewritten = [p.name for p, data in before.items() if p.read_bytes() != data]
    print("captures rewritten by the repeated runs: " + (", ".join(rewritten) or "none"))


if __name__ == "__main__":
    main()
