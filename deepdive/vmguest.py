"""Inside the vm lab's guest: run pages, leave their captures in OUT.

    python -m deepdive.vmguest OUT PAGE [PAGE...]

Each page runs as on the host, as PID 1 of fresh PID, network and mount namespaces,
but entered differently: this process imports the lab's code (pyroute2 above all)
once, then forks a child per page that calls unshare(2) itself and forks the page's
PID 1. Under software emulation, importing pyroute2 over the guest's shared file
system takes seconds; paying that once per boot rather than once per page is what
keeps a boot with several pages short. (The guest runs as root, so no user namespace
is needed.) Pages are sealed from each other as on the host, so several run at once,
one per vCPU: much of a page's time is spent waiting (ping intervals, neighbour
timers), and the one boot's wall time approaches that of its longest page.

Progress goes to stderr as "progress: ..." lines, which the host relays, and
PAGE_DONE + name as each page ends; each page leaves OUT/PAGE.json, or OUT/PAGE.error
with the one line that explains the failure.
"""
from __future__ import annotations

import ctypes
import io
import json
import os
import select
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from deepdive import inlab, lab, registry, snapshot
from deepdive.execute import die_with_parent
from deepdive.model import DeepDiveError
from deepdive.vmlab import GUEST_READY, PAGE_DONE

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000


def say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _enter_fresh_namespaces() -> None:
    """What `unshare --net --mount --pid` does; the next child forked is the new PID 1.
    (deepdive.machine makes the mounts private and mounts the new /proc.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID) failed")


def _page_init(name: str, write_end: int) -> None:
    """PID 1 of the page's namespaces: run the page, send the outcome up the pipe as
    {"capture": ...} or {"error": "one line"}. Never returns."""
    die_with_parent()
    status = 1
    try:
        buffer = io.StringIO()
        status = inlab.main([name], buffer)
        envelope = ({"capture": json.loads(buffer.getvalue())} if buffer.getvalue()
                    else {"error": inlab.last_error or f"page {name} failed (status {status})"})
    except BaseException as exc:  # PID 1 must reach os._exit whatever happens
        envelope = {"error": f"page {name}: {exc}"}
    try:
        with os.fdopen(write_end, "w") as stream:
            json.dump(envelope, stream)
    finally:
        os._exit(status)


@dataclass
class Running:
    """A page running in its own namespaces: its first child's pid, and the read end of
    the pipe its outcome comes back through (read as it arrives, so a large capture never
    blocks the page on a full pipe)."""
    name: str
    pid: int
    fd: int
    started: float
    received: bytearray = field(default_factory=bytearray)


def start_page(name: str) -> Running:
    """Fork a child that enters fresh namespaces and forks the page's PID 1 there. When
    PID 1 ends, the kernel ends the rest of the page's processes."""
    lab.preflight(registry.load(name))  # tools and kernel features, as on the host
    started = time.monotonic()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        status = 1
        try:
            _enter_fresh_namespaces()
            init = os.fork()
            if init == 0:
                _page_init(name, write_end)
            os.close(write_end)
            status = os.waitstatus_to_exitcode(os.waitpid(init, 0)[1])
        except BaseException as exc:
            with os.fdopen(write_end, "w") as stream:
                json.dump({"error": f"page {name}: {exc}"}, stream)
        finally:
            os._exit(max(status, 0))
    os.close(write_end)
    return Running(name, pid, read_end, started)


def finish_page(page: Running, out: Path) -> None:
    """Reap a page whose pipe has closed; leave OUT/NAME.json or OUT/NAME.error."""
    os.close(page.fd)
    os.waitpid(page.pid, 0)
    try:
        envelope = json.loads(page.received)
    except ValueError:
        envelope = {"error": f"page {page.name} ended without a result"}
    if "capture" not in envelope:
        (out / f"{page.name}.error").write_text(envelope["error"] + "\n")
        return
    capture = lab.with_meta(envelope["capture"], lab="vm")
    (out / f"{page.name}.json").write_text(json.dumps({"capture": capture,
                                                       "seconds": time.monotonic() - page.started}))


def _refused(name: str, out: Path, exc: DeepDiveError) -> None:
    if isinstance(exc, lab.MissingFeature):
        message = (f"page {name} needs {exc.needed}, which neither this machine's kernel nor "
                   f"the vm lab's ({exc.kernel}) provides")
    else:
        message = str(exc)
    (out / f"{name}.error").write_text(message + "\n")


def jobs() -> int:
    """Pages run at once: one per vCPU (every program a page starts keeps a vCPU busy
    under emulation), or $DEEPDIVE_VM_JOBS."""
    try:
        return max(1, int(os.environ.get("DEEPDIVE_VM_JOBS") or os.cpu_count() or 1))
    except ValueError:
        return 1


def main(argv: list[str]) -> int:
    """Run the pages, up to jobs() at once, each in namespaces of its own; say
    PAGE_DONE + name as each one ends. 0 if every page left a capture, else 1."""
    out, names = Path(argv[0]), argv[1:]
    snapshot.import_iproute()
    say(GUEST_READY)
    pending, running = list(names), {}
    while pending or running:
        while pending and len(running) < jobs():
            name = pending.pop(0)
            try:
                page = start_page(name)
            except DeepDiveError as exc:
                _refused(name, out, exc)
                say(PAGE_DONE + name)
                continue
            running[page.fd] = page
        if not running:
            continue
        readable, _, _ = select.select(list(running), [], [])
        for fd in readable:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                running[fd].received += chunk
                continue
            page = running.pop(fd)
            finish_page(page, out)
            say(PAGE_DONE + page.name)
    return 0 if all((out / f"{n}.json").exists() for n in names) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
