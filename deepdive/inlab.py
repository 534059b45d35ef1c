"""The part of a lab run that happens inside the lab's own namespaces.

`python -m deepdive.inlab PAGE` is started by a launcher (see deepdive.lab) as PID 1 of
fresh PID, network and mount namespaces (plus a user namespace when run by a normal
user). deepdive.machine first makes them look like a machine: own /proc and /sys, `lo`
up, private /etc, /var/lib, /tmp and /run, an empty /run/netns, so node names can be the
short fixed ones the page shows (ns1, ns2) and interface indexes start from 1 on every
run. Then PID 1 forks the process that runs the page's steps and checks, and itself only
reaps the processes the namespace orphans, as an init does (see _as_init).

The capture goes out as JSON on the file descriptor that was standard output when the
process started; standard output itself is pointed at standard error before any step
runs, so nothing a command or a check prints can corrupt the capture. Progress and
errors go to stderr, one line each. When this process ends, the kernel ends every other
process of its PID namespace (daemons and tools that changed user included), and the
namespaces go with them.
"""
from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Callable, NoReturn, TextIO

from deepdive import execute, machine, registry, snapshot
from deepdive.checks import CheckContext
from deepdive.execute import CommandTimeout, Result
from deepdive.model import WHILE_RUNNING, Cmd, DeepDiveError, Page, Step, cmd, masks_of

EXIT_STEP_FAILED = 3
EXIT_CHECK_FAILED = 4
EXIT_INTERRUPTED = 130

class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP; a BaseException so that no `except Exception` swallows it."""


def _slowdown() -> float:
    try:
        return max(1.0, float(os.environ.get("DEEPDIVE_SLOWDOWN") or 1))
    except ValueError:
        return 1.0


SLOWDOWN = _slowdown()

def run_page(page: Page) -> dict[str, Any]:
    snapshot.import_in_background()  # for the first snapshot
    recorded: list[tuple[str, Result]] = []
    steps_out: list[dict[str, Any]] = []
    checks_out: list[dict[str, Any]] = []

    def nodes() -> list[str]:
        present = sorted(os.listdir(snapshot.NETNS_DIR))
        return [n for n in page.nodes if n in present] + [n for n in present if n not in page.nodes]

    state = Snapshots(nodes)

    def probe(text: str) -> Result:
        c = cmd(text)
        state.changed()
        return _execute(page, None, c)

    try:
        for step in page.steps:
            _progress(f"{page.name}: {step.id} ({len(step.commands)} commands)")
            taken: list[dict] = []
            state.changed()
            results = run_step(page, step, lambda: taken.append(state.take())
                               if step.snapshot == WHILE_RUNNING else None)
            state.changed()  # by the background programs the step's end stopped, too
            recorded.extend((step.id, r) for r in results)
            snap = taken[0] if taken else state.take() if step.snapshot else None
            steps_out.append({
                "id": step.id,
                "title": step.title,
                "commands": [{"cmd": c.text, **r.to_json(), **_background_json(c)}
                             for c, r in zip(step.commands, results)],
                "snapshot": snap,
            })
            for check in (c for c in page.checks if c.after == step.id):
                ctx = CheckContext(recorded, probe, state.take)
                passed, error = _decide(check, ctx)
                entry = {"claim": check.claim, "after": step.id, "passed": passed}
                if not passed:
                    entry["where"] = check.where
                    if error:
                        entry["error"] = error
                checks_out.append(entry)
    finally:
        teardown(nodes())
    return {"page": page.name, "title": page.title, **masks_of(page), "steps": steps_out, "checks": checks_out}


class Snapshots:
    """snapshot.take() of the run's nodes, read again only once something ran: a step's
    snapshot and the checks after it look at one unchanged state, and each read is a
    netlink dump of every namespace. Each caller gets a copy of its own."""

    def __init__(self, nodes: Callable[[], list[str]]):
        self._nodes = nodes
        self._last: dict[str, Any] | None = None

    def changed(self) -> None:
        """Something is about to run: the next take() reads the kernel again."""
        self._last = None

    def take(self) -> dict[str, Any]:
        if self._last is None:
            self._last = snapshot.take(self._nodes())
        return copy.deepcopy(self._last)


def _decide(check, ctx: CheckContext) -> tuple[bool, str]:
    """(passed, why not): a check that raises, or tries to end the process, has failed."""
    try:
        verdict = check.test(ctx)
    except Exception as exc:  # a check that cannot decide has failed
        return False, f"{type(exc).__name__}: {exc}"
    except SystemExit as exc:
        return False, f"the check called sys.exit({exc.code!r})"
    if not isinstance(verdict, bool):
        return False, f"the check returned {type(verdict).__name__} {verdict!r}, not True or False"
    return verdict, ""


def run_step(page: Page, step: Step, at_end: Callable[[], object] = lambda: None) -> list[Result]:
    """Run a step's commands in order; background ones run until the step ends. `at_end`
    runs while they still do (a WHILE_RUNNING snapshot: the program holding a tun)."""
    results: dict[int, Result] = {}
    running: list[tuple[int, execute.Background, Cmd]] = []
    try:
        for i, c in enumerate(step.commands):
            if not c.background:
                results[i] = _execute(page, step, c)
                continue
            bg = execute.Background(c.argv)
            running.append((i, bg, c))
            if c.ready and not bg.wait_ready(c.ready, limit(c)):
                _never_printed(page, step, c, c.ready, bg.stop(timeout=1))
        # Stopped before it printed `until`, a capture would lose the frames still in
        # its buffers: the step's end waits for that text first.
        for _i, bg, c in running:
            if c.until and not bg.wait_ready(c.until, limit(c)):
                _never_printed(page, step, c, c.until, bg.stop(timeout=1))
        at_end()
        # A capture ends within milliseconds of SIGINT, but on a loaded machine it once took
        # over 2 s: at a step's normal end each gets its command's own time limit. The
        # grace runs for all of them at once: each has had it by the time it is stopped.
        grace_ends = time.monotonic() + EXIT_GRACE * SLOWDOWN
        for i, bg, c in running:
            grace = max(0.0, grace_ends - time.monotonic()) if c.until and not c.endless else 0.0
            results[i] = bg.stop(timeout=limit(c), grace=grace)
    finally:
        for i, bg, _c in running:
            results.setdefault(i, bg.stop(timeout=2))
    for i, _bg, c in running:
        _expect(page, step, c, results[i])
    return [results[i] for i in range(len(step.commands))]


# Seconds a background command that printed its `until` text is given to exit by itself
# before SIGINT (see execute.Background.stop): `tcpdump -c N` exits a few milliseconds after
# printing its count. One declared `endless` (without -c) is not given it.
EXIT_GRACE = 0.5


def _background_json(c: Cmd) -> dict[str, Any]:
    """What a capture records of a background command beyond its Result: that it ran in
    the background, and the text it was waited for before the step went on (the page
    shows its output up to there where it started)."""
    if not c.background:
        return {}
    return {"background": True, **({"ready": c.ready} if c.ready else {})}


def limit(c: Cmd) -> float:
    """A command's time limit here: its own, times $DEEPDIVE_SLOWDOWN where the machine
    is known to be slower (the vm lab sets it under software emulation, where every
    program starts tens of times slower than on the host)."""
    return c.timeout * SLOWDOWN


def _never_printed(page: Page, step: Step, c: Cmd, text: str, res: Result) -> NoReturn:
    detail = (res.stderr or res.stdout).strip().splitlines()
    raise StepFailed(f"page {page.name}, step {step.id}: `{c.text}` never printed {text!r} "
                     f"within {limit(c):g} s" + (f": {detail[-1]}" if detail else "") + f" ({c.where})")


def _expect(page: Page, step: Step, c: Cmd, res: Result) -> None:
    if res.rc != c.rc:
        detail = (res.stderr or res.stdout).strip().splitlines()
        raise StepFailed(f"page {page.name}, step {step.id}: `{c.line}` exited {res.rc}, expected {c.rc}"
                         + (f": {detail[-1]}" if detail else "") + f" ({c.where})")


def _execute(page: Page, step: Step | None, c: Cmd) -> Result:
    where = f"page {page.name}, step {step.id}" if step else f"page {page.name}, check probe"
    deadline = time.monotonic() + limit(c)
    try:
        res = execute.run(c.argv, limit(c), stdin=c.stdin, heredoc=c.heredoc)
        # A state the kernel reaches a moment after it was asked for (a link's carrier,
        # acted on by its link watcher in the background) is shown once it is reached.
        while c.until and c.until not in res.stdout and time.monotonic() < deadline:
            time.sleep(0.01)
            res = execute.run(c.argv, max(0.1, deadline - time.monotonic()),
                              stdin=c.stdin, heredoc=c.heredoc)
    except CommandTimeout as exc:
        raise StepFailed(f"{where}: `{c.line}` timed out: {exc}") from None
    if step is not None:
        if c.until and c.until not in res.stdout:
            _never_printed(page, step, c, c.until, res)
        _expect(page, step, c, res)
    return res


class StepFailed(DeepDiveError):
    pass


def teardown(nodes: list[str]) -> None:
    """Delete what the run made; the namespaces die with this process tree anyway."""
    for n in nodes:
        subprocess.run(["ip", "netns", "del", n], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=5)


def _progress(line: str) -> None:
    sys.stderr.write(f"progress: {line}\n")
    sys.stderr.flush()


MAIN_PID = os.getpid()
INTERRUPTS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _on_signal(signum: int, _frame) -> None:
    # pyroute2 can fork helpers (IPRoute(netns=...), which snapshot.take avoids) and stops
    # them with SIGTERM; a forked copy must die then, not unwind into this run's own code.
    if os.getpid() != MAIN_PID:
        os._exit(128 + signum)
    raise Interrupted(signal.Signals(signum).name)


last_error = ""  # the one line main() last reported, for a caller in the same process


def _fail(message: str) -> None:
    global last_error
    last_error = message
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def main(argv: list[str], out: TextIO = sys.stdout) -> int:
    """Run one page in this process's namespaces; the capture goes to `out` as JSON."""
    global MAIN_PID
    MAIN_PID = os.getpid()  # also when a caller forked this process for the page
    for signum in INTERRUPTS:
        signal.signal(signum, _on_signal)
    if len(argv) != 1:
        _fail("usage: python -m deepdive.inlab PAGE")
        return 2
    started = time.monotonic()
    loaded: list[Page] = []

    def prepare() -> int:
        loaded.append(registry.load(argv[0]))
        machine.prepare()
        return 0

    def run(stream: TextIO) -> int:
        capture = run_page(loaded[0])
        capture["elapsed"] = round(time.monotonic() - started, 3)
        json.dump(capture, stream)
        return EXIT_CHECK_FAILED if not all(c["passed"] for c in capture["checks"]) else 0

    status = _reporting(prepare)
    if status:
        return status
    if os.getpid() == 1:
        return _as_init(lambda stream: _reporting(lambda: run(stream)), out)
    return _reporting(lambda: run(out))


def _reporting(work: Callable[[], int]) -> int:
    """work()'s exit status, or that of the error it raised, reported in one line."""
    try:
        return work()
    except Interrupted as exc:
        _fail(f"interrupted by {exc}; the lab was torn down")
        return EXIT_INTERRUPTED
    except StepFailed as exc:
        _fail(str(exc))
        return EXIT_STEP_FAILED
    except DeepDiveError as exc:
        _fail(str(exc))
        return 1


def _as_init(work: Callable[[TextIO], int], out: TextIO) -> int:
    """Be the lab's init while a forked runner does `work`; its exit status.

    PID 1 of a PID namespace adopts every orphaned process in it, and a process that
    ended stays a zombie until its parent waits for it: the children of a page's daemons
    (socat's `SYSTEM:` shells) piled up, and a wait for a count of processes saw them.
    So PID 1 only reaps, as tini and catatonit do, and the page runs in a child whose own
    children Python's subprocess waits for undisturbed. The runner's capture and last
    error come back through a pipe. SIGINT, SIGTERM and SIGHUP are the runner's to
    handle: the launcher signals the run's whole process group, runner included."""
    global MAIN_PID, last_error
    read_end, write_end = os.pipe()
    runner = os.fork()
    if runner == 0:
        os.close(read_end)
        MAIN_PID = os.getpid()
        status = 1
        try:
            execute.die_with_parent()
            execute.SEALED = True  # this PID namespace ends with its PID 1, this process's parent
            text = io.StringIO()
            status = work(text)
            with os.fdopen(write_end, "w") as stream:
                json.dump({"capture": text.getvalue(), "error": last_error}, stream)
        except BaseException:
            traceback.print_exc()  # a bug shows as it would without the fork
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(write_end)
    for signum in INTERRUPTS:
        signal.signal(signum, signal.SIG_IGN)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(os.fdopen(read_end).read()), daemon=True)
    reader.start()
    while True:
        pid, wait_status = os.wait()
        if pid == runner:
            break
    reader.join()
    status = os.waitstatus_to_exitcode(wait_status)
    if status < 0:
        status = 128 - status
    try:
        sent = json.loads(received[0])
    except (IndexError, ValueError):
        _fail(f"the page's runner ended with status {status} before it reported")
        return status or 1
    last_error = sent["error"]
    out.write(sent["capture"])
    return status


def _capture_stream() -> TextIO:
    """The capture's own stream: a copy of standard output, which then becomes stderr."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


if __name__ == "__main__":
    with _capture_stream() as capture_out:
        status = main(sys.argv[1:], capture_out)
    sys.exit(status)
