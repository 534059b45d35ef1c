"""`until`: a command's step waits until the command printed that text.

In the background (a capture), the step's end waits for it: a capture stopped with
SIGINT right after the step's last command loses the frames it has not printed yet
(tcpdump reports "5 packets captured, 6 packets received by filter"). In the
foreground, the command is run again until it shows the text: a state the kernel
reaches a moment later on its own (`ip link show` "state UP" once its link watcher has
readied a link; what is sent on the link before that is dropped).

Real processes, no privileges: small `python -c` programs stand in for a capture that
prints its last line late, and `cat` of a file for a state reached late.
"""
from __future__ import annotations

import shlex
import sys
import threading
import time

import pytest

from deepdive import inlab
from deepdive.execute import Background
from deepdive.model import Page, SnippetError, cmd

PY = shlex.join((sys.executable, "-S", "-c"))
# Prints its last line only after a while, as a capture under load does, and listens on;
# exits 0 on SIGINT, as tcpdump does.
LATE = PY + " " + shlex.quote(
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
    "print('listening', flush=True); time.sleep(0.4); print('last frame', flush=True)\n"
    "time.sleep(30)\n")
# Exits at once; what it printed reaches the pipe only later, through a child.
EXITS_FIRST = PY + " " + shlex.quote(
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    time.sleep(0.3); print('6 packets captured', flush=True)\n")


def test_a_command_is_run_again_until_it_shows_the_state(tmp_path):
    """As `ip link show` shows "state UP" once the kernel's link watcher got to it."""
    state = tmp_path / "operstate"
    state.write_text("state DOWN\n")
    page = Page(name="until", title="Until")
    step = page.step("run", "A state reached later", cmd(f"cat {state}", until="state UP"))
    threading.Timer(0.3, state.write_text, ("state UP\n",)).start()
    started = time.monotonic()
    (shown,) = inlab.run_step(page, step)
    assert (shown.rc, shown.stdout) == (0, "state UP\n")
    assert time.monotonic() - started >= 0.3


def test_a_state_never_shown_fails_the_step_in_one_line(tmp_path):
    state = tmp_path / "operstate"
    state.write_text("state DOWN\n")
    page = Page(name="until", title="Until")
    step = page.step("run", "Never", cmd(f"cat {state}", until="state UP", timeout=0.3))
    started = time.monotonic()
    with pytest.raises(inlab.StepFailed) as info:
        inlab.run_step(page, step)
    assert time.monotonic() - started < 3
    assert str(info.value).startswith(f"page until, step run: `cat {state}` never printed 'state UP' "
                                      "within 0.3 s: state DOWN (")


def test_the_steps_end_waits_for_the_until_text():
    page = Page(name="until", title="Until")
    step = page.step("run", "A late last line", cmd(LATE, background=True, ready="listening", until="last frame"), "true")
    late, _true = inlab.run_step(page, step)
    assert (late.rc, late.stdout) == (0, "listening\nlast frame\n")


def test_without_until_the_step_ends_at_once():
    """The contrast that makes the test above mean something: SIGINT cuts the line off."""
    page = Page(name="until", title="Until")
    step = page.step("run", "A late last line", cmd(LATE, background=True, ready="listening"), "true")
    late, _true = inlab.run_step(page, step)
    assert (late.rc, late.stdout) == (0, "listening\n")


def test_an_until_text_never_printed_fails_the_step_in_one_line():
    page = Page(name="until", title="Until")
    step = page.step("run", "Never", cmd("sleep 30", background=True, until="done", timeout=0.3), "true")
    started = time.monotonic()
    with pytest.raises(inlab.StepFailed) as info:
        inlab.run_step(page, step)
    assert time.monotonic() - started < 5
    assert str(info.value).startswith("page until, step run: `sleep 30 &` never printed 'done' within 0.3 s (")
    assert "\n" not in str(info.value)


def test_wait_ready_reads_what_was_printed_before_the_exit():
    bg = Background(tuple(shlex.split(EXITS_FIRST)))
    assert bg.wait_ready("6 packets captured", 5) is True
    assert bg.stop(timeout=1).stdout == "6 packets captured\n"


# Prints its summary 2.5 s after SIGINT, as a capture did on a loaded machine.
SLOW_TO_END = PY + " " + shlex.quote(
    "import signal, sys, time\n"
    "def bye(*_):\n"
    "    time.sleep(2.5); print('3 packets captured', flush=True); sys.exit(0)\n"
    "signal.signal(signal.SIGINT, bye)\n"
    "print('listening', flush=True); time.sleep(30)\n")


def test_at_the_steps_end_a_capture_has_its_time_limit_to_end_after_sigint():
    page = Page(name="until", title="Until")
    step = page.step("run", "Slow to end", cmd(SLOW_TO_END, background=True, ready="listening", timeout=5),
                     "true")
    slow, _true = inlab.run_step(page, step)
    assert (slow.rc, slow.stdout) == (0, "listening\n3 packets captured\n")


# Prints its count 0.2 s after it is ready and exits a moment later, as `tcpdump -c 1`.
COUNTED = PY + " " + shlex.quote(
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
    "print('listening', flush=True); time.sleep(0.2); print('1 packet captured', flush=True)\n"
    "time.sleep(0.05)\n")


@pytest.mark.parametrize("command, ended", [
    (cmd(COUNTED, background=True, ready="listening", until="1 packet captured"), "exited"),
    (cmd(LATE, background=True, ready="listening", until="last frame"), "SIGINT"),
])
def test_the_step_records_how_each_background_command_ended(command, ended):
    """One that prints its `until` text as it exits is given a moment to (EXIT_GRACE): the
    page then shows `wait %1`, not a `kill -INT %1` that raced its exit."""
    page = Page(name="until", title="Until")
    step = page.step("run", "Counted", command, "true")
    result, true = inlab.run_step(page, step)
    assert (result.rc, result.ended, true.ended) == (0, ended, "")
    assert inlab._background_json(command) == {"background": True, "ready": "listening"}
    assert inlab._background_json(cmd("true")) == {}


def test_captures_that_never_exit_by_themselves_share_one_grace():
    """Each is given EXIT_GRACE to exit after its last line; not one after another."""
    page = Page(name="grace", title="Grace")
    step = page.step("run", "Eight captures that run until stopped",
                     *(cmd(LATE, background=True, ready="listening", until="last frame") for _ in range(8)))
    stopping: list[float] = []
    results = inlab.run_step(page, step, lambda: stopping.append(time.monotonic()))
    assert [r.ended for r in results] == ["SIGINT"] * 8
    assert time.monotonic() - stopping[0] < 5 * inlab.EXIT_GRACE  # not 8 graces


def test_an_endless_capture_is_stopped_at_once():
    """Declared endless (a capture without -c), it is not given EXIT_GRACE: the step's end
    stops it at once, and it is recorded as stopped, as without the declaration."""
    page = Page(name="endless", title="Endless")
    timings: dict[bool, float] = {}
    for endless in (False, True):
        step = page.step(f"run-{int(endless)}", "A capture that runs until stopped",
                         cmd(LATE, background=True, ready="listening", until="last frame", endless=endless))
        stopping: list[float] = []
        [result] = inlab.run_step(page, step, lambda: stopping.append(time.monotonic()))
        timings[endless] = time.monotonic() - stopping[0]
        assert result.ended == "SIGINT"
    assert timings[False] >= inlab.EXIT_GRACE
    assert timings[True] < inlab.EXIT_GRACE / 2, timings


def test_endless_is_refused_in_the_foreground():
    with pytest.raises(SnippetError, match="endless= only applies to background commands"):
        cmd("true", endless=True)
