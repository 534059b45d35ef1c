"""Bad input from the command line: one clear line, a non-zero status, no traceback.
None of these needs privileges: each stops before a lab is built."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT
from deepdive import lab, registry, runs
from deepdive.model import DeepDiveError

PAGES = registry.names()


def _invoke(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT,
                          capture_output=True, text=True, **kw)


def test_every_task_has_a_help_line():
    res = _invoke("--list")
    assert res.returncode == 0
    lines = [l.strip() for l in res.stdout.splitlines()]
    for name in ("lab.run", "lab.check", "lab.clean", "lab.pages", "site.build", "site.serve"):
        line = next(l for l in lines if l.split(" ")[0] == name)
        assert len(line.split()) > 1, f"{name} has no help line"


def test_a_bad_page_name_lists_the_pages():
    res = _invoke("lab.run", "--page", "nosuch")
    assert res.returncode == 1
    assert res.stderr.strip() == f"error: no page 'nosuch'; pages: {', '.join(PAGES)}"


def test_neither_page_nor_all_is_an_error():
    res = _invoke("lab.run")
    assert res.returncode == 1
    assert res.stderr.strip() == f"error: give --page NAME or --all; pages: {', '.join(PAGES)}"


def test_a_missing_tool_is_named_with_its_package(tmp_path):
    """bridge needs tcpdump: with a PATH that lacks it, the run stops before it starts."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "unshare", "mount", "ping", "bridge"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed (./setup.sh --lab installs it)")
        (bin_dir / tool).symlink_to(found)
    res = _invoke("lab.run", "--page", "bridge", env=dict(os.environ, PATH=str(bin_dir)))
    assert res.returncode == 1
    assert res.stderr.strip() == ("error: page bridge needs tcpdump, not found on PATH "
                                  "(Debian/Ubuntu: apt-get install tcpdump)")


def test_no_root_and_no_user_namespaces_is_one_line(tmp_path, monkeypatch):
    """A normal user whose kernel forbids user namespaces: unshare fails, and says why."""
    fake = tmp_path / "unshare"
    fake.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(DeepDiveError) as err:
        lab.unshare_options()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("the host lab needs root or unprivileged user namespaces")
    assert "Operation not permitted" in message


def _gone(pid: int) -> bool:
    """Dead: absent, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_clean_kills_what_crashed_runs_left_and_nothing_else():
    gone = subprocess.Popen(["true"])
    gone.wait()
    # Left behind: a marked process whose launcher (named in the run id) is gone.
    stale = dict(os.environ, **{lab.MARKER: f"{lab.RUN_PREFIX}test-{uuid.uuid4().hex[:8]}-{gone.pid}-1"})
    orphan = int(subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], env=stale,
                                capture_output=True, text=True).stdout)
    # In progress: its launcher (this process) is alive.
    in_progress = subprocess.Popen(["sleep", "60"], env=dict(os.environ, **{lab.MARKER: runs.new_id("test")}))
    unmarked = subprocess.Popen(["sleep", "60"])
    try:
        res = _invoke("lab.clean")
        assert res.returncode == 0
        assert f"killed process {orphan} (sleep 60)" in res.stderr
        deadline = time.monotonic() + 5
        while not _gone(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(orphan)
        assert in_progress.poll() is None and unmarked.poll() is None
        assert "nothing left behind" in _invoke("lab.clean").stderr
    finally:
        for p in (in_progress, unmarked):
            p.kill()
            p.wait()
        if not _gone(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_vm_lab_with_a_kernel_that_is_not_there():
    res = _invoke("lab.run", "--page", PAGES[0], "--lab", "vm",
                  env=dict(os.environ, DEEPDIVE_VM_KERNEL="/nonexistent/vmlinuz"))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == "error: DEEPDIVE_VM_KERNEL=/nonexistent/vmlinuz is not a file"


def test_vm_lab_without_qemu(tmp_path):
    res = _invoke("lab.run", "--page", PAGES[0], "--lab", "vm", env=dict(os.environ, PATH=str(tmp_path)))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "error: the vm lab needs qemu (Debian/Ubuntu: apt-get install qemu-system-x86)")


def test_an_unknown_lab_is_named():
    res = _invoke("lab.run", "--page", PAGES[0], "--lab", "cloud")
    assert res.returncode == 1
    assert res.stderr.strip() == "error: no lab 'cloud'; labs: auto, host, vm"
