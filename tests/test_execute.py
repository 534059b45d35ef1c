"""Running commands (deepdive.execute) and what checks see (deepdive.checks.CheckContext).

Real processes, no privileges: sh, sleep and small `python -c` programs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import eventually
from deepdive import execute
from deepdive.checks import CheckContext
from deepdive.execute import Background, CommandTimeout, Result
from deepdive.model import Page, cmd, write_file

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


PDEATHSIG = ("import ctypes; v = ctypes.c_int(); "
             "ctypes.CDLL(None).prctl(2, ctypes.byref(v)); print(v.value)")  # PR_GET_PDEATHSIG


def test_run_asks_the_kernel_to_kill_the_command_with_its_parent():
    assert execute.run(PY + (PDEATHSIG,), 5).stdout == f"{int(signal.SIGKILL)}\n"


def test_inside_a_run_s_pid_namespace_commands_start_without_a_preexec_fn(monkeypatch):
    """There the namespace ends them, and a preexec_fn would force the slow fork path."""
    monkeypatch.setattr(execute, "SEALED", True)
    started = []
    real = execute.subprocess.Popen
    monkeypatch.setattr(execute.subprocess, "Popen",
                        lambda *a, **kw: started.append(kw.get("preexec_fn")) or real(*a, **kw))
    assert execute.run(PY + (PDEATHSIG,), 5).stdout == "0\n"
    assert execute.Background(PY + ("pass",)).stop(5, grace=5).rc == 0
    assert started == [None, None]


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
    assert eventually(lambda: not _alive(shell) and not _alive(background_sleep))
    assert eventually(lambda: _running_in_group(shell) == []), _running_in_group(shell)


def test_a_command_that_leaves_a_daemon_holding_its_pipes_returns_like_a_shell(tmp_path):
    """`setsid -f` leaves a process with the command's stdout and stderr: the command
    returns once it exits (plus the grace), with what it printed by then."""
    pids = tmp_path / "pids"
    script = f"echo started; setsid -f sh -c 'echo $$ > {pids}; exec sleep 30'"
    started = time.monotonic()
    try:
        res = execute.run(("sh", "-c", script), 10)
        elapsed = time.monotonic() - started
        assert res.rc == 0 and res.stdout == "started\n"
        assert elapsed < execute.DETACHED_GRACE + 2
    finally:
        assert eventually(pids.exists)
        os.kill(int(pids.read_text()), signal.SIGKILL)


def test_a_command_run_in_the_foreground_starts_no_thread(monkeypatch):
    """Its pipes are read in the calling thread: two threads a command cost milliseconds."""
    started = []
    monkeypatch.setattr(execute.threading, "Thread", lambda *a, **kw: started.append(kw))
    res = execute.run(("sh", "-c", "echo out; echo err >&2"), 5)
    assert (res.rc, res.stdout, res.stderr, started) == (0, "out\n", "err\n", [])


def test_output_still_in_the_pipes_at_the_exit_is_all_read():
    """The command's group is empty at once, and up to a pipe's worth of its output may
    still be unread then (seen lost about once in 30 runs when the reader stopped at the
    exit rather than at the first empty read)."""
    for _ in range(30):
        res = execute.run(("sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"), 10)
        assert len(res.stdout) == 300000


def test_a_daemon_in_a_session_of_its_own_costs_no_wait(tmp_path):
    """Its group empty once it exited, the command's output is what its pipes held then:
    no DETACHED_GRACE, which the same commands in bash do not pay either. The daemon
    writes on to its pipe as to a terminal (it would die of SIGPIPE on a closed one)."""
    pids = tmp_path / "pids"
    script = f"echo started; setsid -f sh -c 'sleep 0.2; echo late; echo $$ > {pids}; exec sleep 30'"
    try:
        for _ in range(3):
            started = time.monotonic()
            res = execute.run(("sh", "-c", script), 10)
            assert time.monotonic() - started < execute.DETACHED_GRACE / 2
            assert res.rc == 0 and res.stdout == "started\n"
            assert eventually(pids.exists)
            os.kill(int(pids.read_text()), signal.SIGKILL)
            pids.unlink()
    finally:
        if pids.exists():
            os.kill(int(pids.read_text()), signal.SIGKILL)


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
    assert res.ended == "SIGINT"
    assert res.to_json()["ended"] == "SIGINT"


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
    assert res.ended == "SIGKILL"


def test_background_that_exits_without_ready_text_is_not_ready():
    bg = Background(PY + ("print('no such luck')",))
    started = time.monotonic()
    assert bg.wait_ready("ready", 5) is False
    assert time.monotonic() - started < 3  # it noticed the exit; it did not wait 5 s
    res = bg.stop(timeout=1)
    assert (res.rc, res.stdout, res.ended) == (0, "no such luck\n", "exited")


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


def test_background_that_cannot_start_gives_the_shells_status_when_stopped():
    bg = Background(("dd-no-such-program-here", "-i", "eth0"))
    assert bg.wait_ready("listening", 1) is False
    res = bg.stop(timeout=1)
    assert res.rc == 127 and "dd-no-such-program-here: command not found" in res.stderr
    assert res.ended == "exited"  # as a shell's job whose program was not found


def test_background_is_ready_once_the_ready_text_ends_a_line():
    prog = ("import sys, time; sys.stdout.write('listening'); sys.stdout.flush(); time.sleep(0.6); "
            "print(' on eth0', flush=True); time.sleep(30)")
    bg = Background(PY + (prog,))
    try:
        assert bg.wait_ready("listening", 0.3) is False  # said, but not finished saying
        assert bg.wait_ready("listening", 5) is True
    finally:
        res = bg.stop(timeout=0.2)
    assert res.stdout == "listening on eth0\n"

# Prints its count and exits 0.3 s after it started, as `tcpdump -c N` does once it has
# seen its N packets; on SIGINT it also exits 0, so only `ended` tells the two apart.
COUNTED = """
import signal, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
print("listening", flush=True)
time.sleep(0.3)
print("1 packet captured", flush=True)
"""


@pytest.mark.parametrize("grace, ended", [(2.0, "exited"), (0.0, "SIGINT")])
def test_a_grace_before_sigint_lets_a_command_exit_by_itself(grace, ended):
    bg = Background(PY + (COUNTED,))
    assert bg.wait_ready("listening", 5)
    res = bg.stop(timeout=5, grace=grace)
    assert res.rc == 0 and res.ended == ended


def test_a_background_command_stopped_twice_keeps_its_first_result():
    bg = Background(PY + (POLITE,))
    assert bg.wait_ready("ready", 5)
    first = bg.stop(timeout=5)
    assert bg.stop(timeout=5) is first and first.ended == "SIGINT"


def test_a_foreground_result_says_nothing_of_how_it_ended():
    assert "ended" not in execute.run(("true",), 5).to_json()


# --- standard input -------------------------------------------------------------------

def test_stdin_is_read_from_a_file_as_bash_redirects_it(tmp_path):
    conf = tmp_path / "10-pod.conf"
    conf.write_text('{"cniVersion": "0.4.0"}\n')
    prog = "import os, stat, sys; print(stat.S_ISREG(os.fstat(0).st_mode)); print(sys.stdin.read(), end='')"
    res = execute.run(PY + (prog,), 5, stdin=str(conf))
    assert (res.rc, res.stdout) == (0, 'True\n{"cniVersion": "0.4.0"}\n')


def test_a_missing_stdin_file_fails_like_bash_without_running_the_command(tmp_path):
    ran = tmp_path / "ran"
    res = execute.run(("touch", str(ran)), 5, stdin=str(tmp_path / "nowhere.conf"))
    assert res.rc == 1
    assert res.stderr == f"{tmp_path / 'nowhere.conf'}: No such file or directory\n"
    assert not ran.exists()


def test_heredoc_text_is_the_commands_stdin():
    res = execute.run(("cat",), 5, heredoc="line 1\n\tline 2 $HOME `x`\n")
    assert res.stdout == "line 1\n\tline 2 $HOME `x`\n"


def test_a_large_heredoc_never_blocks_a_command_that_does_not_read_it():
    started = time.monotonic()
    res = execute.run(("true",), 5, heredoc="x" * (8 << 20) + "\n")
    assert res.rc == 0 and time.monotonic() - started < 3


@pytest.mark.parametrize("declare", [
    lambda d: write_file(f"{d}/net.d/10-pod.conf", '{\n  "type": "bridge",\n\t"name": "pod"\n}'),
    lambda d: cmd("env CNI_COMMAND=ADD 'CNI_ARGS=K8S_POD_NAME=web;IgnoreUnknown=1' "
                  "sh -c 'echo $CNI_COMMAND $CNI_ARGS; cat'", stdin=f"{d}/net.d/10-pod.conf"),
    lambda d: cmd("sh -c 'read a; echo \"got $a\"'", heredoc="it's $HOME\n"),
], ids=["write_file", "env-and-stdin", "heredoc"])
def test_what_the_page_shows_runs_in_bash_as_it_ran_here(tmp_path, declare):
    """Cmd.text, typed into bash, prints what the lab recorded and leaves the same files."""
    lab, reader = tmp_path / "lab", tmp_path / "reader"
    for d in (lab, reader):
        (d / "net.d").mkdir(parents=True)
        (d / "net.d" / "10-pod.conf").write_text('{"type": "bridge"}\n')
    ran = declare(lab)
    recorded = execute.run(ran.argv, 5, stdin=ran.stdin, heredoc=ran.heredoc)
    typed = subprocess.run(["bash", "-c", declare(reader).text], capture_output=True, text=True)
    assert recorded.rc == typed.returncode == 0, (recorded, typed.stderr)
    assert recorded.stdout == typed.stdout.replace(str(reader), str(lab))
    assert recorded.stdout.strip()
    assert (lab / "net.d" / "10-pod.conf").read_text() == (reader / "net.d" / "10-pod.conf").read_text()


# --- what a command prints --------------------------------------------------------------

def test_output_that_is_not_utf8_is_kept_visibly():
    res = execute.run(("printf", "caf\\303\\251 \\377\\376 end\\n"), 5)
    assert (res.rc, res.stdout) == (0, "caf\u00e9 \\xff\\xfe end\n")


def test_escape_sequences_are_stripped_from_both_streams():
    prog = ("import sys; print('\\x1b[36mveth0\\x1b[0m\\x1b]0;title\\x07 up', flush=True); "
            "print('\\x1b[1;31merror\\x1b[0m\\r', file=sys.stderr)")
    res = execute.run(PY + (prog,), 5)
    assert (res.stdout, res.stderr) == ("veth0 up\n", "error\n")


def test_output_past_the_limit_kills_the_command_and_says_so():
    started = time.monotonic()
    res = execute.run(("yes", "0123456789"), 10, limit=1000)
    assert time.monotonic() - started < 3  # killed at once, not at the timeout
    assert res.rc == -signal.SIGKILL
    assert len(res.stdout) == 1000 and res.stdout.startswith("0123456789\n")
    assert res.stderr.splitlines()[-1] == ("[stdout passed the output limit of 1000 bytes "
                                           "(deepdive.execute.OUTPUT_LIMIT); the command was killed]")


def test_the_limit_applies_per_stream_and_to_stderr():
    assert execute.run(("sh", "-c", "head -c 1000 /dev/zero; head -c 1000 /dev/zero >&2"), 5, limit=1000).rc == 0
    res = execute.run(("sh", "-c", "head -c 1001 /dev/zero >&2"), 5, limit=1000)
    assert res.rc == -signal.SIGKILL
    assert "[stderr passed the output limit of 1000 bytes" in res.stderr


def test_the_status_says_killed_even_when_the_command_itself_exited_0():
    # sh exits at once; what it left in its process group passes the limit later
    res = execute.run(("sh", "-c", "(sleep 0.3; head -c 1001 /dev/zero) >&2 & exit 0"), 5, limit=1000)
    assert res.rc == -signal.SIGKILL
    assert "[stderr passed the output limit" in res.stderr


def test_a_command_that_survives_its_closed_pipe_is_killed_at_the_limit():
    # SIGPIPE ignored and EPIPE swallowed: only a kill stops it before its timeout
    prog = ("import os, signal, time\n"
            "signal.signal(signal.SIGPIPE, signal.SIG_IGN)\n"
            "try:\n    os.write(1, b'x' * 5000)\n    os.write(1, b'x' * 5000)\n"
            "except BrokenPipeError:\n    pass\n"
            "time.sleep(30)\n")
    started = time.monotonic()
    res = execute.run(PY + (prog,), 10, limit=1000)
    assert time.monotonic() - started < 3
    assert res.rc == -signal.SIGKILL and len(res.stdout) == 1000


def test_the_default_limit_is_one_mebibyte():
    assert execute.OUTPUT_LIMIT == 1 << 20 and execute.limit_text(execute.OUTPUT_LIMIT) == "1 MiB"
    res = execute.run(PY + ("import sys; sys.stdout.write('x' * (3 << 20))",), 10)
    assert res.rc == -signal.SIGKILL and len(res.stdout) == 1 << 20
    assert "limit of 1 MiB" in res.stderr


def test_writers_past_the_limit_never_block_and_leave_no_process(tmp_path):
    pids = tmp_path / "pids"
    script = f"(sleep 0.2; yes) & echo $! > {pids}; (sleep 0.2; yes >&2) & echo $! >> {pids}; wait"
    started = time.monotonic()
    res = execute.run(("sh", "-c", script), 10, limit=4096)
    assert time.monotonic() - started < 3
    assert res.rc == -signal.SIGKILL
    for pid in map(int, pids.read_text().split()):
        assert eventually(lambda: not _alive(pid))


def test_a_background_command_past_the_limit_is_killed_and_says_so():
    bg = Background(("yes",), limit=4096)
    assert eventually(lambda: bg.proc.poll() is not None), "still running past the limit"
    res = bg.stop(timeout=1)
    assert res.rc == -signal.SIGKILL and len(res.stdout) == 4096
    assert "[stdout passed the output limit of 4 KiB" in res.stderr
    assert res.ended == "SIGKILL"  # it exited before stop(), killed by the lab


def test_a_step_past_the_limit_fails_in_one_line_naming_page_step_command_and_limit(monkeypatch):
    from deepdive import inlab
    monkeypatch.setattr(execute, "OUTPUT_LIMIT", 1000)
    page = Page(name="big", title="Big")
    for sid, command in (("loud", cmd("yes")), ("quiet", cmd("yes", background=True))):
        step = page.step(sid, "Loud", command, "sleep 0.5")
        with pytest.raises(inlab.StepFailed) as info:
            inlab.run_step(page, step)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"page big, step {sid}: `{command.text}` exited -9, expected 0: "
                                  "[stdout passed the output limit of 1000 bytes")


def test_a_step_passes_stdin_and_heredoc_to_its_commands(tmp_path):
    from deepdive import inlab
    conf = f"{tmp_path}/10-pod.conf"
    page = Page(name="cni", title="CNI")
    step = page.step("add", "Add", write_file(conf, '{"type": "bridge"}'),
                     cmd("env CNI_COMMAND=ADD sh -c 'echo $CNI_COMMAND; cat'", stdin=conf),
                     cmd("cat", heredoc="from a here-document\n"))
    results = inlab.run_step(page, step)
    assert [r.stdout for r in results] == ['{"type": "bridge"}\n', 'ADD\n{"type": "bridge"}\n',
                                           "from a here-document\n"]


def test_a_failing_write_file_step_is_one_line_with_the_heredoc_summed_up(tmp_path):
    from deepdive import inlab
    page = Page(name="files", title="Files")
    step = page.step("write", "Write", write_file(f"{tmp_path}/no/such/dir/10-pod.conf", "{}\n{}\n"))
    with pytest.raises(inlab.StepFailed) as info:
        inlab.run_step(page, step)
    assert str(info.value).startswith(
        f"page files, step write: `tee {tmp_path}/no/such/dir/10-pod.conf <<'EOF' (2 lines)` exited 1, expected 0: "
        f"tee: {tmp_path}/no/such/dir/10-pod.conf: No such file or directory")
    assert "\n" not in str(info.value)

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


def test_at_end_runs_while_the_steps_background_programs_still_run(tmp_path):
    """A WHILE_RUNNING snapshot sees the programs of its step (the one holding a tun)."""
    from deepdive import inlab
    flag = tmp_path / "running"
    page = Page(name="bg", title="Background")
    program = f"sh -c 'trap \"rm {flag}; exit 0\" INT; touch {flag}; echo ready; sleep 30 & wait'"
    step = page.step("run", "Run", cmd(program, background=True, ready="ready"), "true")
    seen = []
    inlab.run_step(page, step, lambda: seen.append(flag.exists()))
    assert seen == [True]
    assert not flag.exists()  # and the program was stopped after it
