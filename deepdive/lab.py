"""Running pages: preflight, the host lab launcher, and what happens with the results.

The host lab starts `python -m deepdive.inlab PAGE` under `unshare` as PID 1 of new PID,
network and mount namespaces (plus a user namespace when run by a normal user). unshare
dies with its launcher and takes the run's PID 1 with it (`--kill-child`); when PID 1 of
a PID namespace ends, the kernel kills every other process in it. So a run ends whole,
however its launcher ends, and `lab.clean` (deepdive.runs) is only a backstop.
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
from deepdive import features, registry, runs
from deepdive.execute import die_with_parent
from deepdive.masking import drift
from deepdive.model import DeepDiveError, Page
from deepdive.publish import ChecksFailed, publish  # noqa: F401 (benchmarks call lab.publish)

ALWAYS_NEEDED = ("ip", "unshare", "mount")
PACKAGES = {"ip": "iproute2", "bridge": "iproute2", "tc": "iproute2", "unshare": "util-linux",
            "mount": "mount", "cat": "coreutils", "ping": "iputils-ping", "tcpdump": "tcpdump",
            "tshark": "tshark", "nc": "netcat-openbsd", "socat": "socat", "ipvsadm": "ipvsadm",
            "nft": "nftables", "iptables": "iptables", "ipset": "ipset",
            "conntrack": "conntrack", "bpftool": "bpftool", "clang": "clang",
            "catatonit": "catatonit", "python3": "python3", "jq": "jq", "nsenter": "util-linux",
            "setsid": "util-linux", "flock": "util-linux", "stat": "coreutils", "grep": "grep",
            "nstat": "iproute2", "llvm-objdump": "llvm"}
# A page names the CNI plugins it runs by path (Needs(tools=...) takes absolute paths):
# Debian's reference plugins.
PACKAGES.update({f"/usr/lib/cni/{p}": "containernetworking-plugins"
                 for p in ("bridge", "host-local", "loopback", "portmap", "tuning")})
PAGE_TIMEOUT = 120.0  # seconds a page may take in the host lab; $DEEPDIVE_PAGE_TIMEOUT overrides
MARKER, RUN_PREFIX = runs.MARKER, runs.RUN_PREFIX


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


class MissingFeature(DeepDiveError):
    """What a page needs that the running kernel lacks, or refuses to this user; the vm
    lab may have it.

    kinds: link kinds it cannot create; lacking: {feature: features.ABSENT or
    features.DENIED}. `needed` names all of them in a reader's words, `kernel` is the
    release that was probed. The message is one line that ends with the remedy."""

    def __init__(self, page: str, kinds: list[str], lacking: dict[str, str] | None = None):
        lacking = lacking or {}
        self.page, self.kinds, self.lacking = page, kinds, lacking
        self.kernel = platform.release()
        absent = ([f"{self._and(kinds)} links"] if kinds else []) + [
            features.FEATURES[f].words for f, why in lacking.items() if why == features.ABSENT]
        denied = [f for f, why in lacking.items() if why == features.DENIED]
        self.needed = self._and([*absent, *(features.FEATURES[f].words for f in denied)])
        this = f"this kernel ({self.kernel})"
        clauses = [f"{self._and(absent)}, which {this} lacks"] if absent else []
        remedy = f"in the vm lab: invoke lab.run --page {page} --lab vm"
        if denied:
            # Refused although probed with root's privileges: refused to root as well.
            rootless = os.geteuid() != 0
            unprivileged = rootless or all(features.FEATURES[f].unprivileged for f in denied)
            clauses.append(f"{self._and([features.FEATURES[f].words for f in denied])}, which "
                           f"{'it' if absent else this} refuses"
                           + (" to unprivileged users" if unprivileged else ""))
            if rootless and not absent and not any(features.FEATURES[f].unprivileged for f in denied):
                remedy = f"as root, or {remedy}"
        super().__init__(f"page {page} needs {', and '.join(clauses)}; run it {remedy}")

    @staticmethod
    def _and(words: list[str]) -> str:
        """'a', 'a and b', 'a, b and c'."""
        return " and ".join(filter(None, [", ".join(words[:-1]), *words[-1:]]))


def pages(page: str | None, all_pages: bool) -> list[Page]:
    """Resolve --page/--all into loaded pages (an unknown name lists the known ones)."""
    if all_pages == bool(page):
        raise DeepDiveError(f"give --page NAME or --all; pages: {', '.join(registry.names())}")
    return registry.load_all() if all_pages else [registry.load(page)]  # type: ignore[arg-type]


def preflight(page: Page) -> list[str]:
    """Fail in one line before anything is created; returns the unshare options.

    Tools come first, the page's and those its feature probes run, so that a missing
    ipvsadm is named as a missing tool and not as a kernel without IPVS. Then link kinds
    and features are probed in scratch namespaces (features.missing_kinds,
    features.missing_features). Raises DeepDiveError for a tool, MissingFeature for
    what the kernel lacks or refuses to this user."""
    needed = dict.fromkeys((*ALWAYS_NEEDED, *page.needs.tools,
                            *features.tools_for(page.needs.features)))
    # shutil.which takes a path with a slash as it is: Needs(tools=("/usr/lib/cni/bridge",)).
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        pkgs = sorted({PACKAGES.get(t, t) for t in missing})
        raise DeepDiveError(f"page {page.name} needs {', '.join(missing)}, not found on PATH "
                            f"(Debian/Ubuntu: apt-get install {' '.join(pkgs)})")
    options = unshare_options()
    kinds = features.missing_kinds(page.needs.kinds, options)
    lacking = features.missing_features(page.needs.features, options)
    if kinds or lacking:
        raise MissingFeature(page.name, kinds, lacking)
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
    """Run one page in the host lab and return its capture (nothing is written here).

    Raises DeepDiveError when a step fails or the page exceeds its time limit
    (page_timeout() seconds), KeyboardInterrupt when the run was interrupted."""
    options = preflight(page)
    limit = page_timeout()
    env = dict(os.environ, **{MARKER: runs.new_id(page.name)}, PYTHONPATH=str(captures.ROOT))
    argv = ["unshare", *options, "--pid", "--fork", "--kill-child", "--",
            sys.executable, "-m", "deepdive.inlab", page.name]
    started = time.monotonic()
    # From the moment the lab exists until it is under watch, an interrupt would leave it
    # running: SIGINT, SIGTERM and SIGHUP are held back until then (the lab itself starts
    # with them unblocked) and take effect in the `try` below, which stops it.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        # A session of its own, so that stop() reaches the run's PID 1 (unshare ignores
        # SIGTERM and SIGINT while it waits) and a terminal's Ctrl-C only the launcher.
        proc = subprocess.Popen(argv, cwd=captures.ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, preexec_fn=_lab_preexec)
        errors: list[str] = []
        out: list[str] = []
        last_step = ["none"]
        # stdout is drained in a thread so a large capture can never block the lab.
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        overdue = threading.Event()

        def watchdog() -> None:
            overdue.set()
            stop(proc)

        timer = threading.Timer(limit, watchdog)
        timer.daemon = True
        timer.start()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a held interrupt is raised here
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("progress: "):
                last_step[0] = line[len("progress: "):].rstrip()
                progress(last_step[0])
            elif line.strip():
                errors.append(line.rstrip())
        proc.wait()
        reader.join()
    except BaseException:
        stop(proc)
        raise
    finally:
        timer.cancel()
    seconds = time.monotonic() - started
    if overdue.is_set():
        raise DeepDiveError(f"page {page.name} did not finish within {limit:g} s and was stopped "
                            f"(it was at {last_step[0]})")
    if proc.returncode == 130:
        raise KeyboardInterrupt
    if proc.returncode not in (0, 4):
        message = next((e[len("error: "):] for e in reversed(errors) if e.startswith("error: ")),
                       errors[-1] if errors else f"the lab exited with status {proc.returncode}")
        raise DeepDiveError(message)
    result = json.loads(out[0])
    return Outcome(page=page.name, capture=with_meta(result, lab="host"), seconds=seconds, lab="host")


INTERRUPTS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _lab_preexec() -> None:
    """In the lab's unshare, between fork and exec: die with the launcher, and do not
    inherit the launcher's held-back signals (a blocked mask survives exec)."""
    die_with_parent()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)


def page_timeout() -> float:
    """PAGE_TIMEOUT, or $DEEPDIVE_PAGE_TIMEOUT when set (a positive number of seconds)."""
    text = os.environ.get("DEEPDIVE_PAGE_TIMEOUT", "")
    if not text:
        return PAGE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise DeepDiveError(f"DEEPDIVE_PAGE_TIMEOUT={text!r} is not a positive number of seconds")
    return value


def stop(proc: subprocess.Popen) -> None:
    """Ask the run's PID 1 to tear down (SIGTERM), then insist: SIGKILL ends the namespace."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def with_meta(result: dict[str, Any], lab: str) -> dict[str, Any]:
    """The capture of a lab's `result`: its page, steps and checks under the meta a page
    shows (kernel, tool versions, lab, date, and "seconds": the lab's run time, rounded,
    at least 1, when the result has its "elapsed")."""
    meta = {
        "kernel": platform.release(),
        "iproute2": iproute2_version(),
        "pyroute2": pyroute2_version(),
        "lab": lab,
        "date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
    }
    if "elapsed" in result:  # a reader is told how long a run takes, not to the millisecond
        meta["seconds"] = max(1, round(result["elapsed"]))
    return {"generated": f"Generated by `invoke lab.run --page {result['page']}`. Do not edit.",
            "page": result["page"], "title": result["title"], "meta": meta,
            **({"masks": result["masks"]} if "masks" in result else {}),
            "steps": result["steps"], "checks": result["checks"]}


def iproute2_version() -> str:
    out = subprocess.run(["ip", "-V"], capture_output=True, text=True).stdout
    m = re.search(r"iproute2-[\w.]+", out)
    return m.group(0) if m else out.strip()


def pyroute2_version() -> str:
    from importlib.metadata import version
    return version("pyroute2")


def compare(outcome: Outcome) -> list[str]:
    """Drift between a fresh run and the committed capture, volatile fields masked."""
    committed = captures.load(outcome.page)
    problems = drift(committed, outcome.capture)
    return problems


def clean() -> list[str]:
    """Kill processes and remove files left behind by runs whose launcher is gone: the vm
    lab's directories, and publishing stages in docs/ (whose undo restores the previous
    capture and diagrams where a run was killed between its renames)."""
    from deepdive import publish
    return runs.clean() + [f"directory {captures.rel_path(d)}" for d in publish.clean()]


def running(only_mine: bool = False) -> list[str]:
    """Every process of any run, in progress or left behind (only_mine: of runs this
    process launched): for tests and for the line printed after Ctrl-C."""
    return runs.processes(only_mine)

