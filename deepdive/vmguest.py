"""Inside the vm lab's guest: run pages, leave their captures in OUT.

    python -m deepdive.vmguest OUT PAGE [PAGE...]

Each page runs as on the host, as PID 1 of fresh PID, network and mount namespaces,
but entered differently: this process imports the lab's code (pyroute2 above all)
once, then forks a child per page that calls unshare(2) itself and forks the page's
PID 1. Under
software emulation, importing pyroute2 over the guest's shared file system takes
seconds; paying that once per boot rather than once per page is what keeps a boot
with several pages short. (The guest runs as root, so no user namespace is needed.)

Progress goes to stderr as "progress: ..." lines, which the host relays; each page
leaves OUT/PAGE.json, or OUT/PAGE.error with the one line that explains the failure.
"""
from __future__ import annotations

import ctypes
import io
import json
import os
import sys
import time
from pathlib import Path

import pyroute2  # noqa: F401  imported here, once, for every page's child to inherit

from deepdive import inlab, lab, registry
from deepdive.execute import die_with_parent
from deepdive.model import DeepDiveError
from deepdive.vmlab import GUEST_READY

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


def run_page(name: str, out: Path) -> None:
    """Fork a child that enters fresh namespaces and forks the page's PID 1 there; leave
    OUT/NAME.json or OUT/NAME.error. When PID 1 ends, the kernel ends the rest of the
    page's processes."""
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
    with os.fdopen(read_end) as stream:
        data = stream.read()
    os.waitpid(pid, 0)
    try:
        envelope = json.loads(data)
    except ValueError:
        envelope = {"error": f"page {name} ended without a result"}
    if "capture" not in envelope:
        (out / f"{name}.error").write_text(envelope["error"] + "\n")
        return
    result = envelope["capture"]
    capture = lab.with_meta(result, lab="vm")
    (out / f"{name}.json").write_text(json.dumps({"capture": capture,
                                                  "seconds": time.monotonic() - started}))


def main(argv: list[str]) -> int:
    out, names = Path(argv[0]), argv[1:]
    say(GUEST_READY)
    status = 0
    for name in names:
        try:
            run_page(name, out)
        except lab.MissingFeature as exc:
            (out / f"{name}.error").write_text(
                f"page {name} needs {exc.needed}, which neither this machine's kernel nor "
                f"the vm lab's ({exc.kernel}) provides\n")
        except DeepDiveError as exc:
            (out / f"{name}.error").write_text(f"{exc}\n")
        if not (out / f"{name}.json").exists():
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
