"""Inside the vm lab's guest: run pages, leave their captures in OUT.

    python -m deepdive.vmguest OUT PAGE [PAGE...]

Each page runs as on the host, in a fresh network namespace and a private mount
namespace, but entered differently: this process imports the lab's code (pyroute2
above all) once, then forks a child per page that calls unshare(2) itself. Under
software emulation, importing pyroute2 over the guest's shared file system takes
seconds; paying that once per boot rather than once per page is what keeps a boot
with several pages short. (The guest runs as root, so no user namespace is needed.)

Progress goes to stderr as "progress: ..." lines, which the host relays; each page
leaves OUT/PAGE.json, or OUT/PAGE.error with the one line that explains the failure.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from pathlib import Path

import pyroute2  # noqa: F401  imported here, once, for every page's child to inherit

from deepdive import inlab, lab, registry
from deepdive.model import DeepDiveError
from deepdive.vmlab import GUEST_READY

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _enter_fresh_namespaces() -> None:
    """What `unshare --net --mount` does: new namespaces, mounts no longer shared."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS | CLONE_NEWNET) failed")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "making / private failed")


def run_page(name: str, out: Path) -> None:
    """Fork, enter fresh namespaces in the child, run the page there."""
    lab.preflight(registry.load(name))  # tools and link kinds, as on the host
    started = time.monotonic()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        status = 1
        try:
            _enter_fresh_namespaces()
            with os.fdopen(write_end, "w") as stream:
                status = inlab.main([name], stream)
            if inlab.last_error:
                (out / f"{name}.error").write_text(inlab.last_error + "\n")
        except BaseException as exc:  # the child must reach os._exit whatever happens
            (out / f"{name}.error").write_text(f"page {name}: {exc}\n")
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as stream:
        data = stream.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, inlab.EXIT_CHECK_FAILED):
        return  # the child left NAME.error
    result = json.loads(data)
    result.pop("elapsed", None)
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
                f"page {name} needs {' and '.join(exc.kinds)} links, which neither this machine's "
                f"kernel nor the vm lab's ({exc.kernel}) can create\n")
        except DeepDiveError as exc:
            (out / f"{name}.error").write_text(f"{exc}\n")
        if not (out / f"{name}.json").exists():
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
