"""The vm lab boots a second time when the first VM dies before it is up (no VM is run)."""
from pathlib import Path

import pytest

from deepdive import vmlab


def test_a_vm_that_dies_while_booting_is_booted_once_more(monkeypatch):
    """qemu under TCG once aborted on an assertion of its own during boot: one retry."""
    calls, said = [], []
    monkeypatch.setattr(vmlab, "preflight", lambda: Path("/boot/vmlinuz-test"))
    monkeypatch.setattr(vmlab, "accel", lambda kernel, progress: ("tcg", "test"))
    monkeypatch.setattr(vmlab.runs, "clean_vm_dirs", lambda: [])
    monkeypatch.setattr(vmlab, "vng", lambda: ["vng"])
    monkeypatch.setattr(vmlab, "_start", lambda argv, run_id, tmp, **kw: object())
    monkeypatch.setattr(vmlab, "_stop", lambda proc: None)
    monkeypatch.setattr(vmlab, "_outcome", lambda out, name, errors, seconds: (name, errors))

    def follow(proc, mode, n, progress):
        calls.append(mode)
        if len(calls) == 1:
            raise vmlab.BootCrashed("the VM did not come up: qemu: Assertion failed")
        return []

    monkeypatch.setattr(vmlab, "_follow", follow)
    page = type("P", (), {"name": "veth"})()
    assert vmlab.run_pages([page], said.append) == [("veth", [])]
    assert len(calls) == 2 and said[-1] == "the VM did not come up: qemu: Assertion failed; booting once more"


def test_a_vm_that_dies_twice_while_booting_is_an_error(monkeypatch):
    calls = []
    monkeypatch.setattr(vmlab, "preflight", lambda: Path("/boot/vmlinuz-test"))
    monkeypatch.setattr(vmlab, "accel", lambda kernel, progress: ("tcg", "test"))
    monkeypatch.setattr(vmlab.runs, "clean_vm_dirs", lambda: [])
    monkeypatch.setattr(vmlab, "vng", lambda: ["vng"])
    monkeypatch.setattr(vmlab, "_start", lambda argv, run_id, tmp, **kw: object())
    monkeypatch.setattr(vmlab, "_stop", lambda proc: None)

    def follow(proc, mode, n, progress):
        calls.append(mode)
        raise vmlab.BootCrashed("the VM did not come up: qemu: Assertion failed")

    monkeypatch.setattr(vmlab, "_follow", follow)
    with pytest.raises(vmlab.BootCrashed):
        vmlab.run_pages([type("P", (), {"name": "veth"})()], lambda line: None)
    assert len(calls) == 2
