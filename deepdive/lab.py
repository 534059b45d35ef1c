"""Running pages: preflight, the host lab launcher, and what happens with the results.

The host lab starts `python -m deepdive.inlab PAGE` under `unshare`: a new network and
mount namespace as root, plus a user namespace when run by a normal user. Every process
of the run carries DEEPDIVE_LAB=<run id> in its environment and dies with its parent, so
a crashed run leaves nothing behind, and `lab.clean` can still find a stray one.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from deepdive import capture as captures
from deepdive import features, registry
from deepdive.execute import die_with_parent
from deepdive.masking import drift
from deepdive.model import DeepDiveError, Page

MARKER = "DEEPDIVE_LAB"
RUN_PREFIX = "ddlab-"
ALWAYS_NEEDED = ("ip", "unshare", "mount")
PACKAGES = {"ip": "iproute2", "bridge": "iproute2", "unshare": "util-linux", "mount": "mount",
            "ping": "iputils-ping", "tcpdump": "tcpdump", "ipvsadm": "ipvsadm",
            "tshark": "tshark", "nc": "netcat-openbsd", "socat": "socat"}
PAGE_TIMEOUT = 120.0


@dataclass
class Outcome:
    page: str
    capture: dict[str, Any]
    seconds: float
    lab: str
    written: list[Path] = field(default_factory=list)
    boot_seconds: float | None = None  # vm lab: the whole boot the page ran in

    @property
    def failed_checks(self) -> list[dict[str, Any]]:
        return [c for c in self.capture["checks"] if not c["passed"]]


class ChecksFailed(DeepDiveError):
    pass


class MissingFeature(DeepDiveError):
    """The running kernel lacks link kinds a page needs; the vm lab may have them."""

    def __init__(self, page: str, kinds: list[str]):
        self.page, self.kinds, self.kernel = page, kinds, platform.release()
        super().__init__(
            f"page {page} needs {' and '.join(kinds)} links, which this kernel ({self.kernel}) "
            f"cannot create; run it in the vm lab: invoke lab.run --page {page} --lab vm")


def pages(page: str | None, all_pages: bool) -> list[Page]:
    """Resolve --page/--all into loaded pages (an unknown name lists the known ones)."""
    if all_pages == bool(page):
        raise DeepDiveError(f"give --page NAME or --all; pages: {', '.join(registry.names())}")
    return registry.load_all() if all_pages else [registry.load(page)]  # type: ignore[arg-type]


def preflight(page: Page) -> list[str]:
    """Fail in one line before anything is created; returns the unshare options."""
    missing = [t for t in (*ALWAYS_NEEDED, *page.needs.tools) if shutil.which(t) is None]
    if missing:
        pkgs = sorted({PACKAGES.get(t, t) for t in missing})
        raise DeepDiveError(f"page {page.name} needs {', '.join(missing)}, not found on PATH "
                            f"(Debian/Ubuntu: apt-get install {' '.join(pkgs)})")
    options = unshare_options()
    lacking = features.missing_kinds(page.needs.kinds, options)
    if lacking:
        raise MissingFeature(page.name, lacking)
    return options


# Rootless, the lab keeps the caller's uid and holds its capabilities as ambient ones:
# mapped to uid 0 instead, tools that drop root privileges (tcpdump) fail for lack of a
# second uid to switch to. util-linux before 2.38 lacks these options: map root then.
ROOTLESS_OPTIONS = (["--user", "--map-current-user", "--keep-caps"], ["--user", "--map-root-user"])


def unshare_options() -> list[str]:
    if os.geteuid() == 0:
        return ["--net", "--mount"]
    error = ""
    for user in ROOTLESS_OPTIONS:
        probe = subprocess.run(["unshare", *user, "--net", "--mount", "true"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return [*user, "--net", "--mount"]
        if not error and probe.stderr.strip():
            error = probe.stderr.strip().splitlines()[-1]
    raise DeepDiveError(
        "the host lab needs root or unprivileged user namespaces, and this user has "
        f"neither ({error or 'unshare failed'}); run it as root, or allow user "
        "namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces)")


def writable_output() -> None:
    for d in (captures.CAPTURES, captures.DIAGRAMS):
        try:
            d.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=d, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise DeepDiveError(f"cannot write to {d.relative_to(captures.ROOT)}: "
                                f"{exc.strerror or exc}") from None


def run_host(page: Page, progress: Callable[[str], None] = lambda _line: None) -> Outcome:
    """Run one page in the host lab and return its capture (nothing is written here)."""
    options = preflight(page)
    run_id = f"{RUN_PREFIX}{page.name}-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, **{MARKER: run_id}, PYTHONPATH=str(captures.ROOT))
    argv = ["unshare", *options, "--fork", "--kill-child", "--",
            sys.executable, "-m", "deepdive.inlab", page.name]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=captures.ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=die_with_parent)
    errors: list[str] = []
    out: list[str] = []
    # stdout is drained in a thread so a large capture can never block the lab.
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("progress: "):
                progress(line[len("progress: "):].rstrip())
            elif line.strip():
                errors.append(line.rstrip())
        proc.wait(timeout=PAGE_TIMEOUT)
        reader.join()
    except BaseException:
        stop(proc)
        raise
    seconds = time.monotonic() - started
    if proc.returncode == 130:
        raise KeyboardInterrupt
    if proc.returncode not in (0, 4):
        message = next((e[len("error: "):] for e in reversed(errors) if e.startswith("error: ")),
                       errors[-1] if errors else f"the lab exited with status {proc.returncode}")
        raise DeepDiveError(message)
    result = json.loads(out[0])
    result.pop("elapsed", None)
    return Outcome(page=page.name, capture=with_meta(result, lab="host"), seconds=seconds, lab="host")


def stop(proc: subprocess.Popen) -> None:
    """Ask the lab to tear down (SIGTERM), then insist."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def with_meta(result: dict[str, Any], lab: str) -> dict[str, Any]:
    meta = {
        "kernel": platform.release(),
        "iproute2": iproute2_version(),
        "pyroute2": pyroute2_version(),
        "lab": lab,
        "date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
    }
    return {"generated": f"Generated by `invoke lab.run --page {result['page']}`. Do not edit.",
            "page": result["page"], "title": result["title"], "meta": meta,
            "steps": result["steps"], "checks": result["checks"]}


def iproute2_version() -> str:
    out = subprocess.run(["ip", "-V"], capture_output=True, text=True).stdout
    m = re.search(r"iproute2-[\w.]+", out)
    return m.group(0) if m else out.strip()


def pyroute2_version() -> str:
    from importlib.metadata import version
    return version("pyroute2")


def publish(outcome: Outcome) -> None:
    """Write the capture and its diagrams, each only if its content changed."""
    if outcome.failed_checks:
        raise ChecksFailed(
            f"page {outcome.page}: {len(outcome.failed_checks)} check(s) failed; captures left as they were:\n"
            + "\n".join(f"  ✗ {c['claim']} (after step {c['after']}; {c['where']})"
                        + (f": {c['error']}" if c.get("error") else "")
                        for c in outcome.failed_checks))
    from deepdive import diagram  # graphviz only when there is something to draw

    if captures.write_if_changed(outcome.capture):
        outcome.written.append(captures.path_for(outcome.page))
    for step_id, snap in captures.snapshots(outcome.capture):
        before = {p: _stat(p) for p in _diagram_paths(outcome.page, step_id)}
        for path in diagram.render(outcome.page, step_id, snap, captures.DIAGRAMS):
            if _stat(path) != before.get(path):
                outcome.written.append(path)


def _diagram_paths(page: str, step_id: str) -> list[Path]:
    return [captures.DIAGRAMS / f"{page}-{step_id}.{ext}" for ext in ("svg", "png")]


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)


def compare(outcome: Outcome) -> list[str]:
    """Drift between a fresh run and the committed capture, volatile fields masked."""
    committed = captures.load(outcome.page)
    problems = drift(committed, outcome.capture)
    return problems


def clean() -> list[str]:
    """Kill processes left behind by crashed runs; a run in progress is left alone."""
    killed = []
    for pid in _orphaned(_marked_pids()):
        try:
            line = f"process {pid} ({_cmdline(pid)})"
            os.kill(pid, signal.SIGKILL)
            killed.append(line)
        except ProcessLookupError:
            pass
    return killed


def _marked_pids() -> list[int]:
    """Every process that carries a run's marker (DEEPDIVE_LAB=ddlab-...)."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if f"{MARKER}={RUN_PREFIX}".encode() in env:
            pids.append(int(entry))
    return pids


def _orphaned(marked: list[int]) -> list[int]:
    """Marked processes whose run has no launcher any more.

    A run's marked processes hang below the `lab.run` that started them; once that is
    gone, the topmost of them has been handed to init (pid 1)."""
    mine = set(marked)
    orphans = []
    for pid in marked:
        top = pid
        while (parent := _ppid(top)) in mine:
            top = parent
        if _ppid(top) in (None, 0, 1):
            orphans.append(pid)
    return orphans


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces


def running() -> list[str]:
    """Every process of any run, in progress or left behind: for tests and after Ctrl-C."""
    return [f"process {pid} ({_cmdline(pid)})" for pid in _marked_pids()]


def leftovers() -> list[str]:
    """What clean() would remove."""
    return [f"process {pid} ({_cmdline(pid)})" for pid in _orphaned(_marked_pids())]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"
