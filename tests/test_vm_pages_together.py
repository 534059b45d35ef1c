"""The vm lab runs several pages at once in its one guest and hands each back as it ends.

The guest's side runs here for real (as root, in namespaces of the host: the guest
would do the same in its own kernel); the host's side follows a stand-in for the VM, a
process that talks as the guest does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, needs_root
from deepdive import vmlab
from deepdive.masking import drift
from deepdive.model import DeepDiveError


def write_page(folder: Path, name: str, command: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(f"""\
        from deepdive.model import Page
        page = Page(name={name!r}, title={name!r}, nodes=("ns1",))
        page.step("wait", "Wait", {command!r})
        page.step("look", "Look", "ip -n ns1 link show lo")
        @page.check("look", "lo is there")
        def _(lab):
            return "lo" in lab.output("link show lo")
        """))


def guest(snippets: Path, out: Path, names: list[str], jobs: int) -> tuple[float, list[str]]:
    """Run deepdive.vmguest here; (its wall time, the pages in the order it said they ended)."""
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "deepdive.vmguest", str(out), *names], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, DEEPDIVE_SNIPPETS=str(snippets), DEEPDIVE_VM_JOBS=str(jobs)))
    ended = [l[len(vmlab.PAGE_DONE):] for l in res.stderr.splitlines() if l.startswith(vmlab.PAGE_DONE)]
    return time.monotonic() - started, ended


@pytest.mark.lab
@needs_root()
def test_pages_run_at_once_give_what_they_give_one_by_one_and_a_failure_stays_its_own(tmp_path):
    snippets = tmp_path / "snippets"
    for name in ("a", "b", "c"):
        write_page(snippets, name, "sleep 2")
    write_page(snippets, "broken", "ip link show nosuchlink")
    names = ["a", "broken", "b", "c"]
    serial, together = tmp_path / "serial", tmp_path / "together"
    serial.mkdir()
    together.mkdir()
    one_by_one, _ = guest(snippets, serial, names, jobs=1)
    at_once, ended = guest(snippets, together, names, jobs=4)
    assert sorted(ended) == sorted(names)
    assert at_once < one_by_one - 3, (at_once, one_by_one)  # three 2 s waits overlapped
    for name in ("a", "b", "c"):
        first, second = (json.loads((d / f"{name}.json").read_text())["capture"] for d in (serial, together))
        assert drift(first, second) == []
        assert all(c["passed"] for c in second["checks"])
    for d in (serial, together):
        assert not (d / "broken.json").exists()
        assert "`ip link show nosuchlink` exited 1, expected 0" in (d / "broken.error").read_text()


FAKE_GUEST = """
import sys, time, json, pathlib
out = pathlib.Path(sys.argv[1])
print("guest: up", file=sys.stderr, flush=True)
(out / "quick.json").write_text(json.dumps({"capture": {"page": "quick", "checks": []}, "seconds": 1}))
print("guest: done quick", file=sys.stderr, flush=True)
(out / "broken.error").write_text("page broken, step s: `false` exited 1, expected 0\\n")
print("error: page broken, step s: `false` exited 1, expected 0", file=sys.stderr, flush=True)
print("guest: done broken", file=sys.stderr, flush=True)
time.sleep(float(sys.argv[2]))
(out / "slow.json").write_text(json.dumps({"capture": {"page": "slow", "checks": []}, "seconds": 2}))
print("guest: done slow", file=sys.stderr, flush=True)
"""

PAGES = [type("P", (), {"name": n})() for n in ("slow", "broken", "quick")]


@pytest.fixture
def fake_vm(monkeypatch):
    """vmlab with its VM replaced by FAKE_GUEST; `fake_vm.stopped` counts stops."""
    stopped: list[int] = []
    real_stop = vmlab._stop
    monkeypatch.setattr(vmlab, "preflight", lambda: Path("/boot/vmlinuz-test"))
    monkeypatch.setattr(vmlab, "accel", lambda kernel, progress: ("tcg", "test"))
    monkeypatch.setattr(vmlab.runs, "clean_vm_dirs", lambda: [])
    monkeypatch.setattr(vmlab, "boot_argv", lambda kernel, mode, out, pages:
                        [sys.executable, "-c", FAKE_GUEST, out, str(fake_vm.slow)])
    monkeypatch.setattr(vmlab, "_stop", lambda proc: (stopped.append(proc.pid), real_stop(proc)))

    class Fake:
        slow = 0.5
    fake_vm = Fake()
    fake_vm.stopped = stopped
    return fake_vm


def test_each_page_comes_back_as_it_ends_and_failures_come_last_in_one_error(fake_vm):
    said: list[str] = []
    got: list[str] = []
    with pytest.raises(DeepDiveError) as failed:
        for outcome in vmlab.run_pages(PAGES, said.append):
            got.append(outcome.page)
    assert got == ["quick", "slow"]
    assert str(failed.value) == "page broken, step s: `false` exited 1, expected 0"
    assert "the VM is up" in said and len(fake_vm.stopped) == 1


def test_a_caller_that_stops_early_stops_the_vm(fake_vm):
    fake_vm.slow = 60
    pages = vmlab.run_pages(PAGES, lambda line: None)
    assert next(pages).page == "quick"
    started = time.monotonic()
    pages.close()
    assert time.monotonic() - started < 5 and len(fake_vm.stopped) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(fake_vm.stopped[0], 0)


def test_the_guest_imports_iproute_without_the_rest_of_pyroute2():
    code = ("import sys; from deepdive import snapshot; snapshot.import_iproute(); "
            "from pyroute2 import IPRoute; "
            "print(IPRoute.__name__, 'pyroute2.ndb.main' in sys.modules, 'pyroute2.conntrack' in sys.modules); "
            "from pyroute2 import NetNS, config; print(NetNS.__name__, config.__name__)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.stdout.splitlines() == ["IPRoute False False", "NetNS pyroute2.config"], res.stderr


def test_the_longest_page_goes_first_and_the_boot_fits_the_host(monkeypatch, tmp_path):
    seconds = {"quick": 3, "slow": 90}
    monkeypatch.setattr(vmlab.captures, "load", lambda name: {"meta": {"seconds": seconds[name]}}
                        if name in seconds else (_ for _ in ()).throw(DeepDiveError("no capture")))
    pages = [type("P", (), {"name": n})() for n in ("new", "quick", "slow")]
    assert [p.name for p in vmlab.longest_first(pages)] == ["slow", "quick", "new"]
    monkeypatch.setattr(vmlab, "vng", lambda: ["vng"])
    monkeypatch.setattr(vmlab.features, "cache_dir", lambda: tmp_path / "deepdive")
    argv = vmlab.boot_argv(Path("/boot/vmlinuz-test"), "tcg", "/tmp/out", pages)
    assert argv[argv.index("--cpus") + 1] == str(vmlab.vcpus()) == str(max(2, len(os.sched_getaffinity(0))))
    assert "mitigations=off" in argv and "--disable-kvm" in argv
    assert argv[-4:] == ["/tmp/out", "slow", "quick", "new"]
    assert f"DEEPDIVE_VM_JOBS={vmlab.vcpus()}" in argv
    # the guest's probe answers outlive the boot, in this machine's cache directory
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--rwdir"] == ["/tmp/out", str(tmp_path / "deepdive")]
    assert f"XDG_CACHE_HOME={tmp_path}" in argv


def test_the_guest_finds_the_bytecode_of_the_lab_and_its_pages(monkeypatch, tmp_path):
    """The guest cannot write bytecode into the checkout: it is written here first."""
    import importlib.util
    write_page(tmp_path, "fresh", "true")
    monkeypatch.setattr(vmlab.registry, "SNIPPETS", tmp_path)
    vmlab.compile_for_guest()
    for source in [tmp_path / "fresh.py", *(ROOT / "deepdive").glob("*.py")]:
        cached = Path(importlib.util.cache_from_source(str(source)))
        assert cached.exists() and cached.stat().st_mtime >= source.stat().st_mtime, source


def test_once_every_page_is_in_the_vm_is_stopped_without_waiting_for_it(fake_vm, monkeypatch):
    """The guest's shutdown takes seconds under emulation: nothing is left to wait for."""
    monkeypatch.setattr(vmlab, "boot_argv", lambda kernel, mode, out, pages: [
        sys.executable, "-c", FAKE_GUEST + "time.sleep(60)\n", out, "0"])
    started = time.monotonic()
    with pytest.raises(DeepDiveError):
        list(vmlab.run_pages(PAGES, lambda line: None))
    assert time.monotonic() - started < 10 and len(fake_vm.stopped) == 1
