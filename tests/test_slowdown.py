"""Command time limits scale with $DEEPDIVE_SLOWDOWN, which the vm lab sets under TCG."""
import os
import socket
import subprocess
import time

import pytest

from conftest import ROOT

from deepdive import inlab
from deepdive.model import cmd


@pytest.mark.parametrize("value, factor", [("3", 3.0), ("", 1.0), ("0.5", 1.0), ("fast", 1.0)])
def test_the_factor_comes_from_the_environment_and_is_never_below_one(monkeypatch, value, factor):
    monkeypatch.setenv("DEEPDIVE_SLOWDOWN", value)
    assert inlab._slowdown() == factor


def test_a_commands_limit_is_its_own_times_the_factor(monkeypatch):
    monkeypatch.setattr(inlab, "SLOWDOWN", 8.0)
    assert inlab.limit(cmd("true", timeout=2)) == 16.0


def test_a_slow_command_passes_under_the_factor_and_fails_without(monkeypatch):
    from deepdive.model import Page
    page = Page(name="slow", title="Slow")
    page.step("wait", "Wait", cmd("sleep 0.3", timeout=0.1))
    step = page.step_by_id("wait")
    monkeypatch.setattr(inlab, "SLOWDOWN", 1.0)
    with pytest.raises(inlab.StepFailed):
        inlab.run_step(page, step)
    monkeypatch.setattr(inlab, "SLOWDOWN", 10.0)
    assert inlab.run_step(page, step)[0].rc == 0



@pytest.mark.parametrize("slowdown, waits", [(None, 1.0), ("2", 2.0)])
def test_hits_waits_for_an_answer_its_second_times_the_slowdown(slowdown, waits):
    """snippets/programs/hits: a server that accepts and never answers costs curl's
    --max-time, a second on the host, longer where the vm lab sets $DEEPDIVE_SLOWDOWN."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        env = {k: v for k, v in os.environ.items() if k != "DEEPDIVE_SLOWDOWN"}
        if slowdown:
            env["DEEPDIVE_SLOWDOWN"] = slowdown
        started = time.monotonic()
        out = subprocess.run([str(ROOT / "snippets/programs/hits"), f"http://127.0.0.1:{server.getsockname()[1]}/", "1"],
                             capture_output=True, text=True, env=env, timeout=30).stdout
        elapsed = time.monotonic() - started
    assert out.split() == ["1", "(no", "answer)"]
    assert waits <= elapsed < waits + 0.9, elapsed
