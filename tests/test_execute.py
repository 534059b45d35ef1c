"""Running commands (deepdive.execute) and what checks see (deepdive.checks.CheckContext).

Real processes, no privileges: sh, sleep and small `python -c` programs.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from deepdive import execute
from deepdive.checks import CheckContext
from deepdive.execute import Background, CommandTimeout, Result

PY = (sys.executable, "-S", "-c")

# Prints "ready", then waits; on SIGINT prints "bye" and exits 0.
POLITE = """
import signal, sys, time
def bye(*_):
    print("bye", flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, bye)
print("ready", flush=True)
while True:
    time.sleep(1)
"""

# Says it is ready on stderr, as tcpdump does ("listening on ..."), and ignores SIGINT.
STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
print("listening on eth0", file=sys.stderr, flush=True)
while True:
    time.sleep(1)
"""


def _state(pid: int) -> str | None:
    """The /proc state letter of pid, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def _pgid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rpartition(")")[2].split()[2])


def _running_in_group(pgid: int) -> list[int]:
    """Processes of process group pgid that still run (zombies have already died)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pgid(int(entry)) == pgid and _state(int(entry)) not in (None, "Z", "X"):
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def _eventually(predicate, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --- run() ---------------------------------------------------------------------------

def test_run_records_argv_rc_stdout_and_stderr():
    argv = ("sh", "-c", "echo to-out; echo to-err >&2; exit 3")
    res = execute.run(argv, 5)
    assert res == Result(argv, 3, "to-out\n", "to-err\n")
    assert res.to_json() == {"argv": list(argv), "rc": 3, "stdout": "to-out\n", "stderr": "to-err\n"}


def test_run_passes_arguments_verbatim_without_a_shell():
    res = execute.run(("printf", "%s|", "a b", "$HOME", "*", ";"), 5)
    assert (res.rc, res.stdout) == (0, "a b|$HOME|*|;|")


def test_run_gives_the_command_no_stdin_and_a_fixed_locale():
    res = execute.run(PY + ("import os, sys; print(repr(sys.stdin.read()), os.environ['LC_ALL'], os.environ['COLUMNS'])",), 5)
    assert res.stdout == "'' C 200\n"


def test_run_starts_the_command_in_its_own_session_and_group():
    res = execute.run(PY + ("import os; print(os.getpgid(0) == os.getpid(), os.getsid(0) == os.getpid())",), 5)
    assert res.stdout == "True True\n"


def test_run_asks_the_kernel_to_kill_the_command_with_its_parent():
    prog = ("import ctypes; v = ctypes.c_int(); "
            "ctypes.CDLL(None).prctl(2, ctypes.byref(v)); print(v.value)")  # PR_GET_PDEATHSIG
    assert execute.run(PY + (prog,), 5).stdout == f"{int(signal.SIGKILL)}\n"


def test_missing_program_gives_127_without_raising(tmp_path):
    missing = "dd-no-such-program-here"
    res = execute.run((missing, "--help"), 5)
    assert res.rc == 127
    assert res.stdout == ""
    assert missing in res.stderr
    res = execute.run((str(tmp_path / "nowhere" / "prog"),), 5)
    assert res.rc == 127


def test_program_that_cannot_be_executed_gives_126_without_raising(tmp_path):
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    res = execute.run((str(script),), 5)
    assert res.rc == 126


def test_timeout_raises_and_leaves_no_process_behind(tmp_path):
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 30 & echo $! >> {pids}; sleep 30"
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        execute.run(("sh", "-c", script), 0.3)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3
    assert "0.3 s" in str(info.value) and "sleep 30" in str(info.value)

    shell, background_sleep = (int(p) for p in pids.read_text().split())
    # the shell was reaped; the background sleep and the foreground one (same group) died
    assert _eventually(lambda: not _alive(shell) and not _alive(background_sleep))
    assert _eventually(lambda: _running_in_group(shell) == []), _running_in_group(shell)


def test_a_quick_command_is_not_affected_by_its_timeout():
    started = time.monotonic()
    assert execute.run(("sleep", "0.05"), 10).rc == 0
    assert time.monotonic() - started < 2


# --- Background ----------------------------------------------------------------------

def test_background_waits_for_ready_and_stops_with_sigint():
    bg = Background(PY + (POLITE,))
    try:
        assert bg.wait_ready("ready", 5) is True
        assert bg.proc.poll() is None  # still running after it said so
        started = time.monotonic()
        res = bg.stop(timeout=5)
        assert time.monotonic() - started < 3  # SIGINT ended it, not the SIGKILL fallback
    finally:
        if bg.proc.poll() is None:
            bg.proc.kill()
    assert res.argv == PY + (POLITE,)
    assert res.rc == 0
    assert res.stdout == "ready\nbye\n"
    assert res.stderr == ""


def test_background_ready_text_may_come_on_stderr_and_sigkill_follows_if_sigint_is_ignored():
    bg = Background(PY + (STUBBORN,))
    try:
        assert bg.wait_ready("listening on", 5)
        res = bg.stop(timeout=0.3)
    finally:
        if bg.proc.poll() is None:
            bg.proc.kill()
    assert res.rc == -signal.SIGKILL
    assert res.stderr == "listening on eth0\n"


def test_background_that_exits_without_ready_text_is_not_ready():
    bg = Background(PY + ("print('no such luck')",))
    started = time.monotonic()
    assert bg.wait_ready("ready", 5) is False
    assert time.monotonic() - started < 3  # it noticed the exit; it did not wait 5 s
    res = bg.stop(timeout=1)
    assert (res.rc, res.stdout) == (0, "no such luck\n")


def test_background_without_the_ready_text_is_not_ready_after_the_timeout():
    bg = Background(PY + (POLITE,))
    try:
        started = time.monotonic()
        assert bg.wait_ready("never printed", 0.2) is False
        assert time.monotonic() - started >= 0.2
        assert bg.proc.poll() is None
    finally:
        res = bg.stop(timeout=2)
    assert (res.rc, res.stdout) == (0, "ready\nbye\n")
    assert not _alive(bg.proc.pid)


# --- CheckContext --------------------------------------------------------------------

def _results() -> list[tuple[str, Result]]:
    return [
        ("show", Result(("ip", "-n", "ns1", "link", "show", "veth0"), 0, "shown early", "")),
        ("ping", Result(("ip", "netns", "exec", "ns1", "ping", "-c", "3", "10.0.0.2"), 0, "3 received", "")),
        ("down", Result(("ip", "-n", "ns1", "link", "show", "veth0"), 0, "shown late", "")),
        ("down", Result(("ip", "netns", "exec", "ns2", "ping", "-c", "1", "10.0.0.1"), 1, "0 received", "err")),
    ]


def _context(probe=None, snapshot=None) -> CheckContext:
    return CheckContext(_results(), probe or (lambda text: Result((text,), 0, "", "")),
                        snapshot or (lambda: {"nodes": []}))


def test_result_is_the_latest_command_containing_the_text():
    ctx = _context()
    assert ctx.output("link show veth0") == "shown late"
    assert ctx.result("ping -c").rc == 1
    assert ctx.result("ping -c").stderr == "err"


def test_result_within_a_step():
    ctx = _context()
    assert ctx.output("link show veth0", step="show") == "shown early"
    assert ctx.output("ping -c", step="ping") == "3 received"
    assert ctx.result("10.0.0.2", step="ping").argv[-1] == "10.0.0.2"


def test_result_matches_across_arguments_as_words_joined_by_spaces():
    ctx = _context()
    assert ctx.output("ns2 ping -c 1 10.0.0.1") == "0 received"


def test_a_whole_command_finds_itself_though_a_later_one_extends_it():
    ctx = CheckContext([("fix", Result(("ping", "10.0.0.1"), 0, "from 10.0.0.1", "")),
                        ("fix", Result(("ping", "10.0.0.100"), 0, "from 10.0.0.100", ""))],
                       lambda text: Result((text,), 0, "", ""), lambda: {"nodes": []})
    assert ctx.output("ping 10.0.0.1") == "from 10.0.0.1"
    assert ctx.output("ping 10.0.0.10") == "from 10.0.0.100"  # no whole match: the latest partial one


@pytest.mark.parametrize("contains, step", [("tcpdump", None), ("ping -c 3", "down"), ("link show", "nope")])
def test_missing_result_raises_lookup_error(contains, step):
    ctx = _context()
    with pytest.raises(LookupError) as info:
        ctx.result(contains, step=step)
    assert repr(contains) in str(info.value)
    if step:
        assert repr(step) in str(info.value)
    with pytest.raises(LookupError):
        ctx.output(contains, step=step)


def test_run_probes_now_and_records_each_probe():
    asked = []

    def probe(text):
        asked.append(text)
        return Result(tuple(text.split()), len(asked) - 1, f"answer {len(asked)}", "")

    ctx = _context(probe=probe)
    first = ctx.run("ip -n ns1 route show")
    second = ctx.run("ip -n ns2 route show")
    assert asked == ["ip -n ns1 route show", "ip -n ns2 route show"]
    assert (first.stdout, second.stdout, second.rc) == ("answer 1", "answer 2", 1)
    assert ctx.probes == [first, second]
    # probes are evidence of the check, not recorded step output
    with pytest.raises(LookupError):
        ctx.result("route show")


def test_snapshot_is_read_once_per_check_and_again_after_a_probe():
    reads = []
    snap = {"nodes": [{"name": "ns2", "links": [{"name": "veth1", "index": 2, "carrier": False}]}]}

    def take():
        reads.append(1)
        return snap

    ctx = _context(snapshot=take)
    assert reads == []  # nothing is read until a check asks
    assert ctx.link("ns2", "veth1") == {"name": "veth1", "index": 2, "carrier": False}
    assert ctx.snapshot is snap
    assert len(reads) == 1  # a read costs tens of ms: one per check
    ctx.run("true")  # a probe may change the kernel's state
    assert ctx.snapshot is snap
    assert len(reads) == 2
    with pytest.raises(KeyError):
        ctx.link("ns1", "veth1")
