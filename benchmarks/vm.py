"""The vm lab: a bare boot against every vm page in one boot, with where the time goes.

    .venv/bin/python benchmarks/vm.py [--repeat N]

The pages are those `--lab auto` sends to the vm lab on this kernel. Each round boots
twice, interleaved: `vng -- true` with the lab's own boot options (the floor: kernel,
virtme-ng's init, shutdown), then every vm page in one boot through vmlab.run_pages,
as lab.run does (captures are compared, not written). KVM or TCG is chosen as the lab
chooses; the section says which and why.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402

from deepdive import capture, cli, registry, runs, vmlab  # noqa: E402
from deepdive.masking import drift  # noqa: E402
from deepdive.model import DeepDiveError, Page  # noqa: E402

TARGET = 60.0  # seconds, every vm page in one boot under TCG


def bare_boot(kernel: Path, mode: str) -> float:
    """Seconds of `vng -- true` with the lab's boot options."""
    with tempfile.TemporaryDirectory() as out:
        argv = vmlab.boot_argv(kernel, mode, out, [])
        argv = argv[:argv.index("--") + 1] + ["true"]
        started = time.perf_counter()
        # As the lab starts it: in a PID namespace that ends with this process (qemu too).
        proc = vmlab._start(argv, runs.new_id("bench-boot"), tmp=out, stdout=subprocess.DEVNULL)
        try:
            _, stderr = proc.communicate()
        finally:
            vmlab._stop(proc)
        elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise DeepDiveError(f"`vng -- true` failed: {stderr.strip().splitlines()[-1:]}")
    return elapsed


def one_boot(pages: list[Page]) -> dict[str, float]:
    """{"total": s, "up": s to the guest's first line, page: s each, "matching": how many
    pages' captures match the committed ones, volatile fields masked} of one boot."""
    started = time.perf_counter()
    times: dict[str, float] = {"matching": 0}

    def progress(line: str) -> None:
        if line == "the VM is up":
            times["up"] = time.perf_counter() - started

    for outcome in vmlab.run_pages(pages, progress):
        times[outcome.page] = outcome.seconds
        times["matching"] += not drift(capture.load(outcome.page), outcome.capture)
    times["total"] = time.perf_counter() - started
    return times


def row(label: str, values: list[float], target: float | None = None) -> str:
    med = statistics.median(values)
    ratio = f"{med / target:.2f}" if target else ""
    return (f"| {label} | {med:.1f} s | {min(values):.1f}-{max(values):.1f} s | "
            f"{f'{target:g} s' if target else ''} | {ratio} |")


def section(repeat: int) -> str:
    """A Markdown section: medians, min-max and ratios of `repeat` interleaved rounds."""
    pages = cli.choose(registry.load_all(), "auto")[1]
    if not pages:
        return "## vm lab\n\nNo page needs the vm lab on this kernel: nothing to measure.\n"
    kernel = vmlab.preflight()
    mode, why = vmlab.accel(kernel, lambda line: None)
    bare: list[float] = []
    rounds: list[dict[str, float]] = []
    for _ in range(repeat):
        bare.append(bare_boot(kernel, mode))
        rounds.append(one_boot(pages))
    total = [r["total"] for r in rounds]
    lines = [
        "## vm lab",
        "",
        f"{len(pages)} pages ({', '.join(p.name for p in pages)}) on {kernel.name}, "
        f"{mode.upper()} ({why}), {vmlab.vcpus()} vCPUs, pages "
        f"{os.environ.get('DEEPDIVE_VM_JOBS') or vmlab.vcpus()} at a time; "
        f"host Linux {platform.release()}.",
        "",
        "| what | median | min-max | target | ratio |",
        "|---|---|---|---|---|",
        row("bare boot, `vng -- true`", bare),
        row("all vm pages, one boot", total, TARGET if mode == "tcg" else None),
        row("- boot to the guest's first line", [r["up"] for r in rounds]),
        *(row(f"- page {p.name} (in parallel)", [r[p.name] for r in rounds]) for p in pages),
        "",
        "Captures matching the committed ones (volatile fields masked), per round: "
        + ", ".join(f"{r['matching']:.0f}/{len(pages)}" for r in rounds) + ".",
        "",
        f"{repeat} rounds, each a bare boot then the pages' boot (interleaved), wall time "
        "from this process; a page's time runs from its fork in the guest to its capture. "
        f"One boot with the pages is {statistics.median(total) / statistics.median(bare):.1f}x a bare boot.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.exit(2, f"{parser.prog}: --repeat must be at least 1\n")
    try:
        print(section(args.repeat))
    except DeepDiveError as exc:
        parser.exit(1, f"{parser.prog}: {exc}\n")


if __name__ == "__main__":
    main()
