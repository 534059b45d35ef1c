"""Run one command as an argument list, with a timeout, and record what happened."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    def to_json(self) -> dict:
        return {"argv": list(self.argv), "rc": self.rc, "stdout": self.stdout, "stderr": self.stderr}


def die_with_parent() -> None:
    """preexec_fn: the child is killed if the process that started it dies.

    This is what guarantees that a lab killed with SIGKILL leaves no process behind
    holding its namespaces.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class CommandTimeout(Exception):
    def __init__(self, argv: tuple[str, ...], timeout: float):
        super().__init__(f"{' '.join(argv)} did not finish within {timeout:g} s")


def _spawn(argv: tuple[str, ...]) -> subprocess.Popen:
    """Start a lab command: its own process group (to kill it whole), dying with us,
    with a fixed locale and width so that its output is the same on every machine."""
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, LC_ALL="C", COLUMNS="200"),
        start_new_session=True, preexec_fn=die_with_parent)


def run(argv: tuple[str, ...], timeout: float) -> Result:
    """Run argv in its own process group; on timeout kill the group and raise."""
    try:
        proc = _spawn(argv)
    except FileNotFoundError:
        return Result(argv, 127, "", f"{argv[0]}: command not found\n")
    except PermissionError:
        return Result(argv, 126, "", f"{argv[0]}: permission denied\n")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise CommandTimeout(argv, timeout) from None
    except BaseException:
        _kill_group(proc)
        raise
    return Result(argv, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class Background:
    """A command that runs while the rest of a step does (a packet capture, say)."""

    def __init__(self, argv: tuple[str, ...]):
        self.argv = argv
        self._out: list[str] = []
        self._err: list[str] = []
        self.proc = _spawn(argv)
        self._readers = [threading.Thread(target=self._drain, args=(s, b), daemon=True)
                         for s, b in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _drain(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def wait_ready(self, text: str, timeout: float) -> bool:
        """Wait until `text` shows in its output; False if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in "".join(self._out) + "".join(self._err):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.01)
        return False

    def stop(self, timeout: float) -> Result:
        """SIGINT (a capture prints its summary on it), then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc)
        for t in self._readers:
            t.join(timeout=2)
        return Result(self.argv, self.proc.returncode, "".join(self._out), "".join(self._err))
