"""The benchmark report: benchmarks/RESULTS.md, every figure measured in one run here.

    .venv/bin/invoke bench [--repeat 3] [--slow-repeat 1] [--no-vm] [--out benchmarks/RESULTS.md]
    .venv/bin/python benchmarks/run.py [--repeat 3] [--slow-repeat 1] [--no-vm] [--out PATH]

The report is the machine it ran on (CPU, cores, memory, load, kernel, distribution,
tool versions, the commit measured) followed by one section per benchmark module, in
this order, each measured side by side where it compares two things:

- floor.py: `lab.run` of every host page against its floor (the same commands in a bash
  script under unshare), with peak memory;
- check.py: `lab.check` of every page, serial against parallel;
- vm.py: a bare vm boot, and every vm page in one boot;
- build.py: the site build against plain MkDocs Material at 1x and 5x pages, a dirty
  build, lab.draw against bare dot, the slide export.

Each module has `section(repeat) -> str` (a Markdown section) and runs on its own too.
The sections that run every page (check) or boot the vm (vm) take minutes a round, so
they are measured --slow-repeat times, the others --repeat times.
The same command on another machine gives the same tables with that machine's figures.
The file is written whole or not at all: a failed or interrupted run leaves the previous
report as it was.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTIONS = ("floor", "check", "vm", "build")
NEEDS_VM = {"vm"}  # sections that are only the vm lab; others take `vm=` if they measure it
SLOW = {"check", "vm"}  # measured --slow-repeat times


def _first_line(argv: list[str]) -> str:
    """The first line a tool prints about its version, or why it could not be asked."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not available ({type(exc).__name__})"
    text = (res.stdout or res.stderr).strip()
    return text.splitlines()[0] if text else f"not available (exit {res.returncode})"


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _proc_field(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _os_release() -> str:
    try:
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M)
        return m.group(1) if m else "unknown"
    except OSError:
        return "unknown"


def _commit() -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if rev.returncode != 0:
        return "not a git checkout"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return rev.stdout.strip() + (" with uncommitted changes" if dirty else "")


def machine() -> list[tuple[str, str]]:
    """(what, value) rows describing this machine and its tools, as the report prints them."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    mem_kb = _proc_field("/proc/meminfo", "MemTotal").split()[0]
    mem = f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "unknown"
    from deepdive.lab import iproute2_version
    return [
        ("CPU", f"{_proc_field('/proc/cpuinfo', 'model name')}, {len(os.sched_getaffinity(0))} usable of {os.cpu_count()} cores"),
        ("memory", mem),
        ("load average (1, 5, 15 min) at start", load),
        ("kernel", f"Linux {platform.release()}"),
        ("distribution", _os_release()),
        ("/dev/kvm", "present" if os.path.exists("/dev/kvm") else "absent"),
        ("Python", platform.python_version()),
        ("iproute2", iproute2_version()),
        ("pyroute2", _dist_version("pyroute2")),
        ("mkdocs / mkdocs-material", f"{_dist_version('mkdocs')} / {_dist_version('mkdocs-material')}"),
        ("graphviz", _first_line(["dot", "-V"])),
        ("qemu", _first_line(["qemu-system-x86_64", "--version"])),
        ("virtme-ng", _dist_version("virtme-ng")),
        ("commit measured", _commit()),
    ]


def sections(vm: bool) -> dict[str, object]:
    """Each benchmark module's section function, imported before anything is measured, so
    that a missing one fails at once rather than after minutes of measuring."""
    found = {}
    for name in SECTIONS:
        if name in NEEDS_VM and not vm:
            continue
        try:
            found[name] = importlib.import_module(name).section
        except (ImportError, AttributeError) as exc:
            raise SystemExit(f"bench: benchmarks/{name}.py has no section(repeat): {exc}") from None
    return found


def _section(fn, repeat: int, vm: bool) -> str:
    kwargs = {"vm": vm} if "vm" in inspect.signature(fn).parameters else {}
    return fn(repeat, **kwargs).strip()


def render(repeat: int, vm: bool, command: str, say=print, slow_repeat: int = 1) -> str:
    """The whole report as Markdown; `say` is told each section as it starts and ends."""
    found = sections(vm)
    started = time.monotonic()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = ["# Benchmark results", "",
            f"Measured {when} by `{command}`; regenerate with the same command. "
            f"Medians of {repeat} runs ({slow_repeat} for {' and '.join(sorted(SLOW))}), with min-max; "
            "a ratio compares two medians measured side by side in the same run.", "",
            "| machine | |", "|---|---|", *(f"| {k} | {v} |" for k, v in machine()), ""]
    parts = []
    for name in SECTIONS:
        if name not in found:
            parts.append(f"## {name}\n\nNot measured: `--no-vm` was given.")
            continue
        say(f"bench: {name} ...")
        t0 = time.monotonic()
        parts.append(_section(found[name], slow_repeat if name in SLOW else repeat, vm))
        say(f"bench: {name} done in {time.monotonic() - t0:.0f} s")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    tail = [f"Load average at the end: {load}. The whole report took "
            f"{time.monotonic() - started:.0f} s."]
    return "\n".join(head) + "\n" + "\n\n".join(parts) + "\n\n" + "\n".join(tail) + "\n"


def write(text: str, out: Path) -> None:
    """Write `out` whole: a temporary file beside it, renamed over it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--slow-repeat", type=int, default=1,
                        help="runs of lab.check of every page and of the vm boot (default 1)")
    parser.add_argument("--no-vm", action="store_true", help="skip what needs the vm lab")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write (default benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    for option, value in (("--repeat", args.repeat), ("--slow-repeat", args.slow_repeat)):
        if value < 1:
            parser.exit(2, f"{parser.prog}: {option} must be at least 1, not {value}\n")
    command = "invoke bench" + (f" --repeat {args.repeat}" if args.repeat != 3 else "") \
        + (f" --slow-repeat {args.slow_repeat}" if args.slow_repeat != 1 else "") \
        + (" --no-vm" if args.no_vm else "") \
        + (f" --out {shlex.quote(str(args.out))}" if args.out != RESULTS else "")
    from deepdive.model import DeepDiveError
    try:
        text = render(args.repeat, not args.no_vm, command, say=lambda line: print(line, file=sys.stderr, flush=True),
                      slow_repeat=args.slow_repeat)
        write(text, args.out)
    except (DeepDiveError, OSError) as exc:
        parser.exit(1, f"{parser.prog}: {exc}\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
