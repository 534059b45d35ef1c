"""setup.sh's package groups: `--lab` installs what the labs use (the Vagrantfile's lab VM
is provisioned with it, and `invoke vagrant.box` installs `--lab-packages` into the box),
`--test` adds what only the tests use (.ci/run). Run on a copy of setup.sh with apt-get,
npm and the environment's Python faked, so nothing is installed."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

# What only the tests (and box building) use: never in the lab VM.
TEST_ONLY = {"chromium", "fonts-liberation", "vagrant", "vagrant-libvirt", "libvirt-daemon-system",
             "dnsmasq-base", "debootstrap", "extlinux", "nodejs", "npm"}


def _setup(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run a copy of setup.sh with `args`; returns the result and the recorded calls."""
    project, bin_dir, log = tmp_path / "project", tmp_path / "bin", tmp_path / "calls"
    project.mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy(ROOT / "setup.sh", project)
    for tool in ("apt-get", "npm", "sudo"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n')
        (bin_dir / tool).chmod(0o755)
    python = project / ".venv" / "bin" / "python"  # an environment that is already there
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "python $*" >> {log}\n[ "$1" = -c ] && echo {tmp_path}\nexit 0\n')
    python.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    res = subprocess.run(["bash", str(project / "setup.sh"), *args], env=env, capture_output=True, text=True)
    return res, log.read_text().splitlines() if log.exists() else []


def _installed(calls: list[str]) -> set[str]:
    lines = [c for c in calls if " install -y " in c]
    assert len(lines) == 1, calls
    return {w for w in lines[0].split() if not w.startswith("-")} - {"apt-get", "sudo", "install"}


def test_lab_packages_are_the_labs_only(tmp_path: Path) -> None:
    res, calls = _setup(tmp_path, "--lab-packages")
    listed = res.stdout.split()
    assert res.returncode == 0 and calls == [] and res.stderr == ""
    assert {"iproute2", "tcpdump", "graphviz", "qemu-system-x86", "containernetworking-plugins"} <= set(listed)
    assert not set(listed) & TEST_ONLY


def test_lab_installs_the_listed_packages_and_no_npm(tmp_path: Path) -> None:
    listed = set(_setup(tmp_path / "list", "--lab-packages")[0].stdout.split())
    res, calls = _setup(tmp_path / "lab", "--lab")
    assert res.returncode == 0, res.stderr
    assert _installed(calls) == listed
    assert not [c for c in calls if c.startswith("npm")]


@pytest.mark.skipif(not Path("/etc/debian_version").exists() or "ubuntu" in Path("/etc/os-release").read_text(),
                    reason="the test group differs on Ubuntu (no Chromium, no Vagrant)")
def test_test_adds_what_the_tests_use(tmp_path: Path) -> None:
    listed = set(_setup(tmp_path / "list", "--lab-packages")[0].stdout.split())
    res, calls = _setup(tmp_path / "test", "--test")
    assert res.returncode == 0, res.stderr
    installed = _installed(calls)
    assert listed < installed and {"chromium", "vagrant", "vagrant-libvirt", "debootstrap"} <= installed
    assert any(c.startswith("npm ci") for c in calls)


def test_an_unknown_option_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    res, calls = _setup(tmp_path, "--labs")
    assert res.returncode == 2 and calls == []
    assert res.stderr == "usage: ./setup.sh [--lab | --test | --lab-packages]\n"
