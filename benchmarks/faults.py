"""Fault injection: end `invoke lab.run --page PAGE` with each signal at many moments and
check that nothing of the run is left: no process carrying its marker, no namespace,
link, address or mount in the caller's namespaces, no file in docs/ but the published
ones (after SIGKILL, once `lab.clean` has removed a publishing stage the kill left), and,
for the signals a run can handle, one line and exit status 130.

    python benchmarks/faults.py [--pages vxlan,bridge] [--delays 0.05,0.2,...] [--signals ...]

Prints one line per case and a total: cases tried, cases passed. Needs root or user
namespaces, like the host lab. (tests/test_sealed.py runs a bounded set of these in CI.)
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import caller_state, of_launcher  # noqa: E402

DELAYS = (0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 1.6, 2.0)
SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGKILL")


def docs_files(page: str) -> set[str]:
    """The page's files in docs/ (other runs may be publishing other pages meanwhile)."""
    return {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob(f"*{page}*")}


def case(page: str, sig: str, delay: float) -> str:
    """'' when the run left nothing and said the right thing, else what went wrong."""
    before, files = caller_state(), docs_files(page)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "lab.run", "--page", page],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, getattr(signal, sig))
    _out, err = proc.communicate(timeout=60)
    deadline = time.monotonic() + 5
    while of_launcher(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    problems = []
    if sig == "SIGKILL":
        # A run killed while publishing leaves its stage in docs/; nothing can remove it
        # at that instant, so `lab.clean` (and the next publish of any page) does.
        from deepdive import publish
        publish.clean()
    if of_launcher(proc.pid):
        problems.append(f"left {of_launcher(proc.pid)}")
    if caller_state() != before:
        problems.append("the caller's namespaces or mounts changed")
    if docs_files(page) - files:
        problems.append(f"new files in docs/: {sorted(docs_files(page) - files)}")
    if "Traceback" in err:
        problems.append("a traceback: " + " | ".join(err.strip().splitlines()[-4:]))
    if sig != "SIGKILL" and proc.returncode == 130:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if not last.startswith("interrupted") or "still running" in last:
            problems.append(f"last line {last!r}")
    elif sig != "SIGKILL" and proc.returncode not in (0, -getattr(signal, sig)):
        problems.append(f"exit status {proc.returncode}")
    return "; ".join(problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default="vxlan,bridge")
    parser.add_argument("--delays", default=",".join(map(str, DELAYS)))
    parser.add_argument("--signals", default=",".join(SIGNALS))
    args = parser.parse_args()
    tried = passed = 0
    for page in args.pages.split(","):
        for sig in args.signals.split(","):
            for delay in map(float, args.delays.split(",")):
                problem = case(page, sig, delay)
                tried += 1
                passed += not problem
                print(f"{page:8} {sig:8} {delay:5.2f} s  {'ok' if not problem else problem}", flush=True)
    print(f"{tried} cases tried, {passed} passed")
    return 0 if tried == passed else 1


if __name__ == "__main__":
    sys.exit(main())
