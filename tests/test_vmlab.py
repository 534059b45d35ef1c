"""The vm lab's own failure modes, on a real VM (skipped where qemu or a kernel is missing)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, caller_state, eventually, of_launcher
from deepdive import lab, runs, vmlab
from deepdive.model import DeepDiveError

pytestmark = pytest.mark.lab


@pytest.fixture
def vm_available() -> None:
    try:
        vmlab.preflight()
    except DeepDiveError as exc:
        pytest.skip(f"vm lab unavailable: {exc}")


@pytest.mark.usefixtures("vm_available")
def test_a_vm_that_does_not_come_up_in_time_is_stopped():
    """A bounded wait: one line naming the limit, and no qemu left running."""
    before = caller_state()
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "lab.run", "--page", "veth", "--lab", "vm"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, DEEPDIVE_VM_BOOT_TIMEOUT="2", DEEPDIVE_VM_ACCEL="tcg"))
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith("error: the VM did not come up within 2 s (tcg)")
    # vng, virtme-run and qemu all carry the lab's marker: none may survive.
    assert of_launcher(proc.pid) == []
    assert caller_state() == before


@pytest.mark.usefixtures("vm_available")
def test_killing_the_vm_lab_leaves_no_qemu_and_clean_removes_its_directory():
    """SIGKILL of lab.run while qemu runs: vng, qemu and every helper end with it (their
    PID namespace dies with the launcher); its shared directory stays until lab.clean."""
    before, tmp_before = caller_state(), set(Path(tempfile.gettempdir()).iterdir())
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "lab.run", "--page", "veth", "--lab", "vm"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=dict(os.environ, DEEPDIVE_VM_ACCEL="tcg"))

    def of_run() -> list[str]:
        return of_launcher(proc.pid)

    assert eventually(lambda: any("qemu-system" in p for p in of_run()), 60), "qemu never started"
    directories = [d for d in runs.stale_vm_dirs() + _live_vm_dirs() if f"-{proc.pid}-" in d.name]
    assert len(directories) == 1
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert eventually(lambda: of_run() == [], 10), of_run()
    assert directories[0].exists() and directories[0] in runs.stale_vm_dirs()
    assert f"directory {directories[0]}" in lab.clean()
    assert not directories[0].exists()
    # vng's own temporary files (virtme_ret*) were made in that directory, not in /tmp.
    assert [p for p in set(Path(tempfile.gettempdir()).iterdir()) - tmp_before if "virtme" in p.name] == []
    assert caller_state() == before


def _live_vm_dirs() -> list[Path]:
    return [d for d in Path(tempfile.gettempdir()).glob(f"{runs.VM_DIR_PREFIX}*")
            if d not in runs.stale_vm_dirs()]

