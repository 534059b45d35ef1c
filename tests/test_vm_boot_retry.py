"""The vm lab boots a second time when the first VM dies before it is up (no VM is run)."""
from pathlib import Path

import pytest

from deepdive import vmlab

CRASH = "the VM did not come up: qemu: Assertion failed"


@pytest.fixture
def boots(monkeypatch):
    """A vm lab whose boots are faked; set `boots.crashes` to how many die first."""
    calls: list[str] = []
    monkeypatch.setattr(vmlab, "preflight", lambda: Path("/boot/vmlinuz-test"))
    monkeypatch.setattr(vmlab, "accel", lambda kernel, progress: ("tcg", "test"))
    monkeypatch.setattr(vmlab.runs, "clean_vm_dirs", lambda: [])
    monkeypatch.setattr(vmlab, "vng", lambda: ["vng"])
    monkeypatch.setattr(vmlab, "_start", lambda argv, run_id, tmp, **kw: object())
    monkeypatch.setattr(vmlab, "_stop", lambda proc: None)
    monkeypatch.setattr(vmlab, "_outcome", lambda out, name, errors, seconds: (name, errors))

    def follow(proc, mode, names, progress):
        calls.append(mode)
        if len(calls) <= follow.crashes:
            raise vmlab.BootCrashed(CRASH)
        yield from ((name, []) for name in names)

    follow.crashes = 0
    follow.calls = calls
    monkeypatch.setattr(vmlab, "_follow", follow)
    return follow


PAGE = type("P", (), {"name": "veth"})()


def test_a_vm_that_dies_while_booting_is_booted_once_more(boots):
    """qemu under TCG once aborted on an assertion of its own during boot: one retry."""
    boots.crashes = 1
    said: list[str] = []
    assert list(vmlab.run_pages([PAGE], said.append)) == [("veth", [])]
    assert len(boots.calls) == 2 and said[-1] == f"{CRASH}; booting once more"


def test_a_vm_that_dies_twice_while_booting_is_an_error(boots):
    boots.crashes = 2
    with pytest.raises(vmlab.BootCrashed):
        list(vmlab.run_pages([PAGE], lambda line: None))
    assert len(boots.calls) == 2
