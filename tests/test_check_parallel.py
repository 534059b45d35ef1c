"""lab.check with several jobs at once: an interrupt tears every run down."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, caller_state, of_launcher
from deepdive import runs

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("host_lab")]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_interrupting_a_parallel_check_tears_every_run_down(sig):
    """Ctrl-C, SIGTERM or SIGHUP while two host pages (and the vm boot, where this
    kernel sends pages there) run: the one line cli.interrupted() prints, status 130,
    nothing left behind."""
    before, dirs = caller_state(), set(runs.stale_vm_dirs())
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "lab.check", "--jobs", "3"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum("deepdive.inlab" in p for p in of_launcher(proc.pid)) < 2:
        time.sleep(0.05)
    assert sum("deepdive.inlab" in p for p in of_launcher(proc.pid)) >= 2, "two runs never ran at once"
    time.sleep(0.4)
    os.killpg(proc.pid, getattr(signal, sig))
    signalled = time.monotonic()
    _out, err = proc.communicate(timeout=60)
    assert time.monotonic() - signalled < 20, "the runs were left to finish, not stopped"
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "interrupted: the lab was torn down, nothing is left behind"
    assert not of_launcher(proc.pid)
    assert caller_state() == before
    assert set(runs.stale_vm_dirs()) <= dirs
