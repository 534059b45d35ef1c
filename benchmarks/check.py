"""lab.check of every page one at a time (--jobs 1) against in parallel (the default jobs).

    .venv/bin/python benchmarks/check.py [--repeat 3] [--no-vm]

Serial and parallel runs alternate (serial, parallel, serial, ...), each a fresh
process, so that a change in the machine's load falls on both alike. With the vm pages
(under emulation, minutes a run) every page is checked as `invoke lab.check` checks it;
--no-vm checks only the pages this kernel runs in the host lab.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import INVOKE, ROOT, timed  # noqa: E402

from deepdive import cli, parallel, registry  # noqa: E402


def _commands(jobs: int, vm: bool) -> tuple[str, list[str]]:
    """(what is checked, the command checking it with `jobs` at once)."""
    if vm:
        return f"all {len(registry.names())} pages", [*INVOKE, "lab.check", "--jobs", str(jobs)]
    host = [p.name for p in cli.choose(registry.load_all(), "auto")[0]]
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from deepdive import cli, registry; "
            f"cli.check_pages([registry.load(n) for n in {host!r}], 'host', {jobs})")
    return f"the {len(host)} host pages", [sys.executable, "-c", code]


def section(repeat: int, vm: bool = True) -> str:
    """A Markdown section: median, min-max and speed-up of lab.check serial and parallel,
    measured `repeat` times each, interleaved."""
    jobs = parallel.default_jobs()
    what, serial = _commands(1, vm)
    _, together = _commands(jobs, vm)
    times: dict[str, list[float]] = {"serial": [], "parallel": []}
    for _ in range(repeat):
        times["serial"].append(timed(serial))
        times["parallel"].append(timed(together))
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [f"| {k} ({n} job{'s' if n > 1 else ''}) | {med[k]:.1f} s | {min(v):.1f}-{max(v):.1f} s | "
            f"{med[k] / med['serial']:.2f}x |" for (k, v), n in zip(times.items(), (1, jobs))]
    return "\n".join([
        f"## lab.check: {what}, serial and parallel", "",
        "| lab.check | median | min-max | of serial |", "|---|---|---|---|", *rows, "",
        f"Speed-up {med['serial'] / med['parallel']:.2f}x with {jobs} jobs on {jobs} usable core(s), "
        f"Linux {platform.release()}. Median of {repeat} run(s) each, serial and parallel "
        "alternating, each a fresh process (interpreter start included): "
        + ("`invoke lab.check --jobs 1` and `invoke lab.check`." if vm else
           "`cli.check_pages` of the host pages, as `lab.check` runs it, with 1 job and with the default."),
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, serial and parallel")
    parser.add_argument("--no-vm", action="store_true", help="only the pages the host lab runs here")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.exit(2, f"{parser.prog}: --repeat must be at least 1\n")
    print(section(args.repeat, vm=not args.no_vm), end="")


if __name__ == "__main__":
    main()
