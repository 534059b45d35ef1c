"""Run ids, whether a run is still in progress, and what a dead run left behind.

Every process of a lab run carries DEEPDIVE_LAB=<run id> in its environment. The id names
the page and the process that launched the run, by pid and start time:

    ddlab-<page>-<8 hex digits>-<launcher pid>-<launcher start time in clock ticks>

so a run is in progress exactly while that process exists, whatever its parent is (a
terminal, `systemd --user`, a container's init, a child subreaper). Each run lives in a
PID namespace of its own, so the kernel ends it with its launcher; `lab.clean` is the
backstop for what could outlive that (a launcher killed in the instant between starting
unshare and unshare starting the run), and for the vm lab's temporary directories.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

MARKER = "DEEPDIVE_LAB"
RUN_PREFIX = "ddlab-"
VM_DIR_PREFIX = "deepdive-vm-"

# The runs this process launched, so that after Ctrl-C it counts only its own.
mine: set[str] = set()


def new_id(page: str) -> str:
    """A fresh run id for `page`, launched by this process."""
    me = os.getpid()
    run_id = f"{RUN_PREFIX}{page}-{uuid.uuid4().hex[:8]}-{me}-{_start_time(me)}"
    mine.add(run_id)
    return run_id


def in_progress(run_id: str) -> bool:
    """Whether the process that launched `run_id` still exists (same pid, same start)."""
    try:
        pid, started = (int(x) for x in run_id.rsplit("-", 2)[1:])
    except ValueError:
        return False  # not an id of this format: nobody can be running it
    return _start_time(pid) == started


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # the name in (...) may hold spaces


def marked() -> dict[int, str]:
    """pid -> run id, for every process that carries a run's marker."""
    me = os.getpid()
    found = {}
    needle = f"{MARKER}={RUN_PREFIX}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        for var in env.split(b"\0"):
            if var.startswith(needle):
                found[int(entry)] = var.split(b"=", 1)[1].decode(errors="replace")
                break
    return found


def processes(only_mine: bool = False) -> list[str]:
    """Every process of any run (or only of runs this process launched), described."""
    return [describe(pid) for pid, run_id in marked().items() if run_id in mine or not only_mine]


def leftovers() -> list[int]:
    """Processes of runs whose launcher is gone."""
    return [pid for pid, run_id in marked().items() if not in_progress(run_id)]


def stale_vm_dirs() -> list[Path]:
    """The vm lab's temporary directories whose run is gone."""
    base = Path(tempfile.gettempdir())
    dirs = []
    for d in base.glob(f"{VM_DIR_PREFIX}{RUN_PREFIX}*"):
        run_id = d.name[len(VM_DIR_PREFIX):].rsplit(".", 1)[0]
        if d.is_dir() and not in_progress(run_id):
            dirs.append(d)
    return dirs


def clean() -> list[str]:
    """Kill what dead runs left behind and remove their files; returns what was removed."""
    removed = []
    for pid in leftovers():
        line = describe(pid)
        try:
            # Killing a run's PID 1 ends its whole PID namespace; killing each process
            # also covers one that somehow sits outside it.
            os.kill(pid, signal.SIGKILL)
            removed.append(line)
        except ProcessLookupError:
            pass
    return removed + [f"directory {d}" for d in clean_vm_dirs()]


def clean_vm_dirs() -> list[Path]:
    """Remove the vm lab's temporary directories whose run is gone; returns them."""
    dirs = stale_vm_dirs()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return dirs


def describe(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmdline = "?"
    return f"process {pid} ({cmdline})"
