"""Run host lab pages many times in a row under a parallel load and count false failures.

    .venv/bin/python benchmarks/stress.py [--pages veth,vxlan] [--runs 50]
        [--as root|nobody|both] [--busy 1] [--beside PAGE] [--show-output]

Every page passes on a quiet machine, so any failure here is a false one: a step that
raced the kernel or a capture cut short. Each page runs `--runs` times in a row through
deepdive.lab.run_host (nothing is published), while `--busy` processes spin on the CPU
and, with `--beside`, another page loops in the lab next to it. `--as nobody` runs the
same loop rootless, as user nobody (`setpriv --reuid=65534 --regid=65534 --clear-groups
env HOME=/tmp`); `both` does root first, then nobody (both need root to start).

Prints one mark per run (`.` passed, `F` failed, `d` passed but differs from the
committed capture, as `lab.check` would report), then per page and user: runs, false
failures, drifts, and each one's message (a step's one-line error, the claims whose
checks failed, the first line of each drift). `--show-output` adds what the failed
checks' steps printed. Exits 1 if anything failed or drifted.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deepdive import lab, registry  # noqa: E402
from deepdive.execute import die_with_parent  # noqa: E402
from deepdive.model import DeepDiveError  # noqa: E402

HOST_PAGES = ("veth", "bridge", "macvlan", "vxlan", "tun", "tap")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "HOME=/tmp"]
SUMMARY = "stress-summary: "  # prefix of the JSON line a rootless worker hands back


@dataclass
class Tally:
    page: str
    user: str
    runs: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    drifts: list[str] = field(default_factory=list)


def run_once(page: str, show_output: bool) -> tuple[str, list[str]]:
    """One run of `page`: why it failed ("" if it passed) in one line (plus, with
    show_output, what the failed checks' steps printed), and how a run that passed
    differs from the committed capture, volatile fields masked (what lab.check reports)."""
    try:
        outcome = lab.run_host(registry.load(page))
    except DeepDiveError as exc:
        return str(exc), []
    failed = outcome.failed_checks
    if not failed:
        return "", lab.compare(outcome)
    why = "; ".join(f"check failed: {c['claim']} ({c['where']})"
                    + (f": {c['error']}" if c.get("error") else "") for c in failed)
    if show_output:
        steps = {c["after"] for c in failed}
        for step in (s for s in outcome.capture["steps"] if s["id"] in steps):
            for c in step["commands"]:
                why += f"\n    $ {c['cmd']}  [exit {c['rc']}]\n" + "".join(
                    f"      {line}\n" for line in (c["stdout"] + c["stderr"]).splitlines())
    return why, []


def loop(pages: list[str], runs: int, user: str, show_output: bool) -> list[Tally]:
    tallies = []
    for page in pages:
        tally = Tally(page, user)
        print(f"{page:8} {user:6} ", end="", flush=True)
        started = time.monotonic()
        for _ in range(runs):
            why, drift = run_once(page, show_output)
            tally.runs += 1
            if why:
                tally.failures.append(why)
            if drift:
                tally.drifts.append("; ".join(d.splitlines()[0] for d in drift))
            print("F" if why else "d" if drift else ".", end="", flush=True)
        tally.seconds = time.monotonic() - started
        print(f" {tally.seconds / max(runs, 1):.2f} s a run", flush=True)
        tallies.append(tally)
    return tallies


def as_nobody(argv: list[str]) -> list[Tally]:
    """Run this script's loop again as user nobody; its marks pass straight through."""
    proc = subprocess.Popen([*NOBODY, sys.executable, str(Path(__file__).resolve()), *argv,
                             "--as", "root", "--busy", "0", "--summary-line"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=die_with_parent)
    assert proc.stdout is not None
    tallies: list[Tally] = []
    for line in proc.stdout:
        if line.startswith(SUMMARY):
            tallies = [Tally(**t) for t in json.loads(line[len(SUMMARY):])]
        else:
            print(line, end="", flush=True)
    if proc.wait() != 0 and not tallies:
        sys.exit(f"error: the rootless loop exited with status {proc.returncode}")
    return tallies


class Load:
    """`busy` processes spinning on the CPU and, if `beside` names a page, that page
    looping in the host lab on a thread; all stopped on exit."""

    def __init__(self, busy: int, beside: str | None):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                       preexec_fn=die_with_parent) for _ in range(busy)]
        self.beside, self.beside_runs = beside, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beside, daemon=True) if beside else None
        if self.thread:
            self.thread.start()

    def _beside(self) -> None:
        while not self.done.is_set():
            try:
                lab.run_host(registry.load(self.beside))  # type: ignore[arg-type]
            except DeepDiveError:
                pass  # a failure beside the measured pages is not what is measured
            self.beside_runs += 1

    def stop(self) -> None:
        self.done.set()
        for p in self.procs:
            p.kill()
            p.wait()
        if self.thread:
            self.thread.join()

    def __str__(self) -> str:
        words = [f"{len(self.procs)} busy process(es)"]
        if self.beside:
            words.append(f"page {self.beside} looping beside ({self.beside_runs} runs)")
        return " and ".join(words)


def report(tallies: list[Tally], load: str) -> bool:
    print(f"\nunder {load}, {os.cpu_count()} CPUs:")
    print(f"{'page':8} {'user':6} {'runs':>5} {'false failures':>15} {'drift':>6} {'s/run':>6}")
    for t in tallies:
        print(f"{t.page:8} {t.user:6} {t.runs:5} {len(t.failures):15} {len(t.drifts):6} "
              f"{t.seconds / max(t.runs, 1):6.2f}")
    for t in tallies:
        for why in t.failures:
            print(f"- {t.page} ({t.user}): {why}")
        for what in t.drifts:
            print(f"- {t.page} ({t.user}), drift: {what}")
    return not any(t.failures or t.drifts for t in tallies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default=",".join(HOST_PAGES), help="comma-separated pages")
    parser.add_argument("--runs", type=int, default=50, help="consecutive runs of each page")
    parser.add_argument("--as", dest="users", choices=("root", "nobody", "both"), default="root",
                        help="as the current user (root: as yourself), as nobody, or both in turn")
    parser.add_argument("--busy", type=int, default=1, help="CPU-bound processes running alongside")
    parser.add_argument("--beside", help="a page to loop in the lab alongside")
    parser.add_argument("--show-output", action="store_true", help="print the failed steps' output")
    parser.add_argument("--summary-line", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    pages = [p for p in args.pages.split(",") if p]
    try:
        for p in [*pages, *([args.beside] if args.beside else [])]:
            registry.load(p)
    except DeepDiveError as exc:
        sys.exit(f"error: {exc}")
    if args.users != "root" and os.geteuid() != 0:
        sys.exit("error: --as nobody and --as both switch users, which needs root")
    if args.runs < 1 or args.busy < 0:
        sys.exit("error: --runs must be at least 1 and --busy at least 0")
    load = Load(args.busy, args.beside)
    tallies: list[Tally] = []
    try:
        if args.users in ("root", "both"):
            tallies += loop(pages, args.runs, pwd.getpwuid(os.geteuid()).pw_name, args.show_output)
        if args.users in ("nobody", "both"):
            common = ["--pages", ",".join(pages), "--runs", str(args.runs)]
            tallies += as_nobody(common + (["--show-output"] if args.show_output else []))
    except KeyboardInterrupt:
        print("\ninterrupted; figures so far:")
    finally:
        load.stop()
    if args.summary_line:
        print(SUMMARY + json.dumps([asdict(t) for t in tallies]), flush=True)
        sys.exit(0 if not any(t.failures or t.drifts for t in tallies) else 1)
    sys.exit(0 if report(tallies, str(load)) else 1)


if __name__ == "__main__":
    main()
