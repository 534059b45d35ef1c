"""The vm lab's own failure modes, on a real VM (skipped where qemu or a kernel is missing)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, caller_state
from deepdive import lab, vmlab
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
    res = subprocess.run([sys.executable, "-m", "invoke", "lab.run", "--page", "veth", "--lab", "vm"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, DEEPDIVE_VM_BOOT_TIMEOUT="2", DEEPDIVE_VM_ACCEL="tcg"))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith(
        "error: the VM did not come up within 2 s (tcg)")
    # vng, virtme-run and qemu all carry the lab's marker: none may survive.
    assert lab.running() == []
    assert caller_state() == before
