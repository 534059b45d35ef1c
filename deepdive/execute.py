"""Run one command as an argument list, with a timeout, and record what happened.

What a command prints is read as bytes and stored as clean text (deepdive.text.decode):
valid UTF-8 with undecodable bytes shown as `\\xNN`, escape sequences (colour included)
stripped rather than rendered, a carriage return resolved as a terminal shows the line,
other control characters dropped. So a capture can be published and printed as it is.

Standard input is empty, a file (`< PATH`), or a here-document's text; the text goes
through an in-memory file, not a pipe, so writing it can never block on the reader.

Each stream keeps at most OUTPUT_LIMIT bytes. A command that prints more is killed
with its process group at once (its pipes are closed, so nothing it runs can block on
a full pipe), and its Result says so: exit status -9, and a last stderr line naming
the stream and the limit. `cmd()` only accepts exit statuses 0-255, so such a result
never matches what a snippet expects and the step fails with that line.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from typing import IO

from deepdive.text import decode

PR_SET_PDEATHSIG = 1
# Bytes kept per stream of one command. Real pages print a few kB per command; 1 MiB
# leaves room for a long packet capture and keeps a capture file reviewable.
OUTPUT_LIMIT = 1 << 20
_CHUNK = 1 << 16
# Seconds to wait for end of file on a command's pipes once it has exited: ample for
# reading what it printed, even on a loaded machine; only reached when something it left
# running holds the pipes (see _Process.finish).
DETACHED_GRACE = 1.0
# Seconds between two looks, after a command's exit, at whether its process group is empty.
GROUP_POLL = 0.01


# How a background command ended (Result.ended): it exited by itself, or the lab stopped
# it with SIGINT, or killed it with SIGKILL (SIGINT ignored, or past the output limit).
ENDINGS = ("exited", "SIGINT", "SIGKILL")


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    ended: str = ""  # one of ENDINGS for a background command, "" for any other

    def to_json(self) -> dict:
        return {"argv": list(self.argv), "rc": self.rc, "stdout": self.stdout, "stderr": self.stderr,
                **({"ended": self.ended} if self.ended else {})}


def die_with_parent() -> None:
    """preexec_fn: the child is killed if the process that started it dies.

    This is what guarantees that a lab killed with SIGKILL leaves no process behind
    holding its namespaces.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# Whether this process runs inside a lab's own PID namespace (deepdive.inlab sets it in the
# run's runner): there the kernel kills every command when the run's PID 1 ends, so commands
# start without a preexec_fn, which forces subprocess to fork the whole interpreter instead
# of using vfork (about 3 ms more a command). Anywhere else each command gets
# die_with_parent.
SEALED = False


class CommandTimeout(Exception):
    def __init__(self, argv: tuple[str, ...], timeout: float):
        super().__init__(f"{' '.join(argv)} did not finish within {timeout:g} s")


def limit_text(limit: int) -> str:
    """A byte count as a reader would say it: "1 MiB", "64 KiB", "100 bytes"."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"


class _Drain:
    """Reads one pipe in a thread until end of file, until `limit` bytes are kept, or
    until the pipe is found empty once the command has exited (exited()).

    Past the limit it calls `overflow` (which kills the command) and closes the pipe,
    so a writer gets EPIPE instead of blocking on a pipe nobody reads.
    """

    def __init__(self, pipe: IO[bytes], limit: int, overflow) -> None:
        self.data = bytearray()
        self.overflowed = False
        self._limit, self._overflow = limit, overflow
        self._done = threading.Event()
        # Closing the write end wakes the thread: the command has exited.
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        fd = pipe.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        exited = False
        try:
            while True:
                ready = dict(poller.poll(0 if exited else None))
                if fd not in ready:
                    if exited:
                        # Empty after the exit: all the command wrote is read. What is
                        # left holding the pipe (a daemon it started) is not the command.
                        self._done.set()
                        _discard(fd)
                        return
                    exited = True
                    continue
                exited = exited or self._wake_r in ready
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    return
                room = self._limit - len(self.data)
                if len(chunk) > room:
                    self.data += chunk[:room]
                    self.overflowed = True
                    self._overflow()
                    return
                self.data += chunk
        finally:
            self._done.set()
            pipe.close()
            os.close(self._wake_r)

    def exited(self) -> None:
        """The command has exited: its output ends once the pipe is empty (at most once)."""
        if self._wake_w >= 0:
            os.close(self._wake_w)
            self._wake_w = -1

    def join(self, deadline: float) -> bool:
        """Wait for the end of its output until `deadline` (time.monotonic()); True once reached."""
        return self._done.wait(max(0.0, deadline - time.monotonic()))


def _discard(fd: int) -> None:
    """Read and drop what a daemon writes to a pipe it holds, until it closes it: as a
    terminal would, it never finds the pipe full or closed."""
    while os.read(fd, _CHUNK):
        pass


class _Stream:
    """One pipe of a command that _Process.finish reads in the calling thread."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe, self.fd = pipe, pipe.fileno()
        self.data = bytearray()
        self.overflowed = False

    def exited(self) -> None:
        """Nothing to wake: finish() sees the exit itself."""


class _Process:
    """A started command whose stdout and stderr are being drained: by a thread each
    (`threaded`, for a command that runs while others do), or by finish() in the calling
    thread, which spares starting two threads a command."""

    def __init__(self, argv: tuple[str, ...], stdin: int, limit: int, threaded: bool = True):
        self.argv = argv
        # Own process group (to kill it whole), dying with us (see SEALED), with a fixed
        # locale and width so that its output is the same on every machine.
        self.proc = subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, LC_ALL="C", COLUMNS="200"),
            start_new_session=True, preexec_fn=None if SEALED else die_with_parent)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.limit = limit
        self.threaded = threaded
        self.out: _Drain | _Stream
        self.err: _Drain | _Stream
        if threaded:
            self.out = _Drain(self.proc.stdout, limit, self.kill)
            self.err = _Drain(self.proc.stderr, limit, self.kill)
        else:
            self.out, self.err = _Stream(self.proc.stdout), _Stream(self.proc.stderr)

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def kill_and_reap(self) -> None:
        self.kill()
        self.proc.wait()
        self._exited()

    def _exited(self) -> None:
        self.out.exited()
        self.err.exited()

    def finish(self, deadline: float) -> bool:
        """Wait for the exit, then for end of file on both streams; False if the command
        is still running at the deadline (time.monotonic()).

        A process the command started and left running (a daemon: `setsid -f ...`) may
        hold the pipes open for as long as it lives, as it would hold a terminal. A shell
        returns to its prompt when the command exits. So once its process group is empty
        (the daemon is in a session of its own), the output ends where the pipes are first
        found empty (everything the command wrote was in them by then); otherwise, at end
        of file or DETACHED_GRACE seconds after the exit."""
        if not self.threaded:
            return self._finish_here(deadline)
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        drained = min(deadline, time.monotonic() + DETACHED_GRACE)
        while True:
            if not self._group_alive():
                self._exited()
            step = min(drained, time.monotonic() + GROUP_POLL)
            if (self.out.join(step) and self.err.join(step)) or time.monotonic() >= drained:
                return True

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _finish_here(self, deadline: float) -> bool:
        """finish() reading both pipes in this thread, and the exit through a pidfd."""
        streams = {s.fd: s for s in (self.out, self.err) if isinstance(s, _Stream)}
        pidfd = os.pidfd_open(self.proc.pid)
        poller = select.poll()
        for fd in (*streams, pidfd):
            poller.register(fd, select.POLLIN)
        # alone: exited, and nothing is left in its group (looked at again every
        # GROUP_POLL seconds: a `setsid -f` child leaves the group a moment after its exit).
        ends, exited, alone = deadline, False, False
        try:
            while streams:
                wait = 0 if alone else max(0.0, ends - time.monotonic())
                events = poller.poll(math.ceil(min(wait, GROUP_POLL) * 1000 if exited else wait * 1000))
                if not events:
                    if alone or time.monotonic() >= ends:
                        break
                    alone = exited and not self._group_alive()
                for fd, _event in events:
                    if fd == pidfd:
                        poller.unregister(pidfd)
                        self.proc.wait()
                        ends = min(deadline, time.monotonic() + DETACHED_GRACE)
                        exited, alone = True, not self._group_alive()
                    else:
                        self._read_one(streams, fd, poller)
        finally:
            os.close(pidfd)
        if streams:  # held by what the command left running: read on, as a terminal would
            for s in streams.values():
                threading.Thread(target=self._discard_and_close, args=(s.pipe,), daemon=True).start()
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True

    def _read_one(self, streams: dict[int, _Stream], fd: int, poller: select.poll) -> None:
        stream = streams[fd]
        chunk = os.read(fd, _CHUNK)
        room = self.limit - len(stream.data)
        if len(chunk) > room:
            stream.data += chunk[:room]
            stream.overflowed = True
            self.kill()
        else:
            stream.data += chunk
        if not chunk or stream.overflowed:  # closed: a writer gets EPIPE, never blocks
            poller.unregister(fd)
            del streams[fd]
            stream.pipe.close()

    @staticmethod
    def _discard_and_close(pipe: IO[bytes]) -> None:
        try:
            _discard(pipe.fileno())
        finally:
            pipe.close()

    def result(self) -> Result:
        stdout, stderr = decode(bytes(self.out.data)), decode(bytes(self.err.data))
        rc = self.proc.returncode
        over = [name for name, d in (("stdout", self.out), ("stderr", self.err)) if d.overflowed]
        if over:
            rc = -signal.SIGKILL  # killed for it, even if it managed to exit first
            if stderr and not stderr.endswith("\n"):
                stderr += "\n"
            stderr += (f"[{over[0]} passed the output limit of {limit_text(self.limit)} "
                       "(deepdive.execute.OUTPUT_LIMIT); the command was killed]\n")
        return Result(self.argv, rc, stdout, stderr)


def _open_stdin(stdin: str, heredoc: str) -> int:
    """The file descriptor the command reads: /dev/null, the file `stdin`, or `heredoc`."""
    if stdin:
        return os.open(stdin, os.O_RDONLY | os.O_CLOEXEC)
    if heredoc:
        fd = os.memfd_create("heredoc", os.MFD_CLOEXEC)
        data = memoryview(heredoc.encode())
        while data:
            data = data[os.write(fd, data):]
        os.lseek(fd, 0, os.SEEK_SET)
        return fd
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def _start(argv: tuple[str, ...], stdin: str, heredoc: str,
           limit: int | None, threaded: bool = True) -> _Process | Result:
    """Start argv, or the Result a shell would give when it cannot be started.
    `limit` None is OUTPUT_LIMIT, read now (so that tests may lower it)."""
    try:
        fd = _open_stdin(stdin, heredoc)
    except OSError as exc:  # as bash reports a failed `< PATH`, before running anything
        return Result(argv, 1, "", f"{stdin}: {exc.strerror}\n")
    try:
        return _Process(argv, fd, OUTPUT_LIMIT if limit is None else limit, threaded)
    except FileNotFoundError:
        return Result(argv, 127, "", f"{argv[0]}: command not found\n")
    except PermissionError:
        return Result(argv, 126, "", f"{argv[0]}: permission denied\n")
    finally:
        os.close(fd)


def run(argv: tuple[str, ...], timeout: float, *, stdin: str = "", heredoc: str = "",
        limit: int | None = None) -> Result:
    """Run argv in its own process group and return what it printed and its status.

    `stdin` is a path to read standard input from, `heredoc` text to read instead
    (at most one). On timeout (seconds) the group is killed and CommandTimeout raised;
    output beyond `limit` bytes per stream (default OUTPUT_LIMIT) kills it too (see
    the module docstring).
    """
    started = _start(argv, stdin, heredoc, limit, threaded=False)
    if isinstance(started, Result):
        return started
    try:
        finished = started.finish(time.monotonic() + timeout)
    except BaseException:
        started.kill_and_reap()
        raise
    if not finished:
        started.kill_and_reap()
        raise CommandTimeout(argv, timeout)
    return started.result()


def _in_lines(needle: bytes, data: bytearray) -> bool:
    """Whether `needle` occurs in `data` before its last newline."""
    return data.find(needle, 0, data.rfind(b"\n") + 1) != -1


class Background:
    """A command that runs while the rest of a step does (a packet capture, say).

    One that cannot be started is not an error here: `stop()` returns the Result a
    shell would give (127, 126), as `run()` does, and the step fails on its status.
    """

    def __init__(self, argv: tuple[str, ...], limit: int | None = None):
        self.argv = argv
        started = _start(argv, "", "", limit)
        self._started = started if isinstance(started, _Process) else None
        self._failed = started if isinstance(started, Result) else None
        self.proc = self._started.proc if self._started else None
        self._stopped: Result | None = None

    def wait_ready(self, text: str, timeout: float) -> bool:
        """Wait until `text` shows in a complete line of its output (as printed, before
        cleaning): a program that said it is ready has finished saying so. False if it
        exits without printing it (all it printed is read first), never started, or time
        runs out."""
        if self._started is None:
            return False
        needle = text.encode()
        deadline = time.monotonic() + timeout
        streams = (self._started.out, self._started.err)
        while time.monotonic() < deadline:
            if any(_in_lines(needle, d.data) for d in streams):
                return True
            if self._started.proc.poll() is not None:
                # What it printed just before exiting (`tcpdump -c N` its count) may still
                # be in the pipes: read them to the end before deciding.
                self._started.finish(deadline)
                return any(needle in d.data for d in streams)
            time.sleep(0.01)
        return False

    def stop(self, timeout: float, grace: float = 0.0) -> Result:
        """SIGINT (a capture prints its summary on it), then SIGKILL if it lingers `timeout`
        seconds; its Result says which in `ended` (see ENDINGS).

        `grace` seconds are first left for it to exit by itself: one that printed its last
        line (`tcpdump -c N` its count) is then recorded as having exited, rather than as
        stopped by a SIGINT that raced its exit. Stopping it again returns the same Result."""
        if self._stopped is None:
            self._stopped = self._stop(timeout, grace)
        return self._stopped

    def _stop(self, timeout: float, grace: float) -> Result:
        if self._started is None:
            assert self._failed is not None
            return replace(self._failed, ended="exited")
        proc = self._started.proc
        ended = "exited"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        if proc.poll() is None:
            self._started.signal(signal.SIGINT)
            ended = "SIGINT"
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._started.kill_and_reap()
                ended = "SIGKILL"
        self._started.finish(time.monotonic() + 2)
        if self._started.out.overflowed or self._started.err.overflowed:
            ended = "SIGKILL"  # killed by the lab for printing too much, whenever it was
        return replace(self._started.result(), ended=ended)
