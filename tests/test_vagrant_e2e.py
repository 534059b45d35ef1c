"""End to end, for real: `invoke lab.run --page vlan --lab vagrant` boots the
Vagrantfile's lab VM, provisions it (./setup.sh --lab: it needs the internet), runs the
page in it and publishes the capture and diagrams here; the VM it brought up is halted
afterwards. Marked `vagrant`: it needs Vagrant, a reachable provider and a box, and takes
many minutes (far more under software emulation). It runs on a copy of this checkout,
so that nothing here changes.

The box is $DEEPDIVE_VAGRANT_BOX, else deepdive/debian12 when Vagrant has it (`invoke
vagrant.box` builds it here), else the Vagrantfile's default. Where this checkout has
deepdive.sealedlibvirt, libvirtd runs sealed in namespaces of its own, Vagrant inside
them, and the provisioning reaches the internet through its proxy; elsewhere Vagrant
runs as installed. Unless DEEPDIVE_VAGRANT_LIBVIRT_DRIVER says otherwise, the domain type
is `qemu` (software emulation) where the vm lab finds KVM unusable, as it finds it on
this machine (vmlab.accel, whose verdict is cached per kernel).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT, needs_root

PAGE = "vlan"
E2E = "DEEPDIVE_VAGRANT_E2E"  # set by `invoke vagrant.e2e`, the one way this test runs
LOCAL_BOX = "deepdive/debian12"


def _box() -> str:
    chosen = os.environ.get("DEEPDIVE_VAGRANT_BOX", "")
    if chosen:
        return chosen
    listed = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True).stdout
    return LOCAL_BOX if any(line.split()[:1] == [LOCAL_BOX] for line in listed.splitlines()) else ""


def _project_copy(tmp_path: Path) -> Path:
    """This checkout's committed files and working tree, without .git and the environments."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".vagrant", "node_modules", "site", "artifacts", "slides", "__pycache__", ".publish-*"))
    (copy / ".venv").symlink_to(sys.prefix)  # this test's environment runs invoke there
    return copy


@contextlib.contextmanager
def _vagrant(project: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment that runs Vagrant: inside a sealed libvirt where there is one."""
    env = dict(os.environ, VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"))
    if "DEEPDIVE_VAGRANT_LIBVIRT_DRIVER" not in env:
        from deepdive import vmlab
        accel, why = vmlab.accel(vmlab.kernel_image(), say=print)
        if accel == "tcg":
            print(f"libvirt domain type qemu: {why}")
            env["DEEPDIVE_VAGRANT_LIBVIRT_DRIVER"] = "qemu"
    if importlib.util.find_spec("deepdive.sealedlibvirt") is None:
        yield env
        return
    from deepdive.sealedlibvirt import SealedLibvirt
    with SealedLibvirt(proxy_port=3128) as lv:
        wrapper = tmp_path / "bin" / "vagrant"
        wrapper.parent.mkdir()
        wrapper.write_text(f"#!/bin/sh\nexec {shlex.join(lv.argv([str(shutil.which('vagrant'))], cwd=project))} \"$@\"\n")
        wrapper.chmod(0o755)
        yield dict(env, PATH=f"{wrapper.parent}:{env['PATH']}", DEEPDIVE_VAGRANT_PROXY=lv.proxy_url,
                   VAGRANT_DEFAULT_PROVIDER="libvirt")


# Also marked lab: it runs a page for real, as root (libvirt's system instance), and
# `-m "not lab"` leaves it out with the other tests that do.
@pytest.mark.vagrant
@pytest.mark.lab
@needs_root()
@pytest.mark.skipif(shutil.which("vagrant") is None, reason="needs Vagrant (apt-get install vagrant vagrant-libvirt)")
@pytest.mark.skipif(os.environ.get(E2E) != "1", reason=f"runs through its own task, `invoke vagrant.e2e` "
                    f"(sets {E2E}=1): its first `vagrant up` provisions the VM, most of an hour under emulation")
def test_a_page_runs_in_the_vagrant_lab_and_lands_here(tmp_path):
    copy = _project_copy(tmp_path)
    for old in [copy / "docs" / "captures" / f"{PAGE}.json", *(copy / "docs" / "diagrams").glob(f"{PAGE}-*")]:
        old.unlink()  # so that what is there afterwards came out of the VM
    with _vagrant(copy, tmp_path) as env:
        if _box():
            env["DEEPDIVE_VAGRANT_BOX"] = _box()
        _runs_and_lands(copy, env)


def _runs_and_lands(copy: Path, env: dict[str, str]) -> None:
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "invoke", "lab.run", "--page", PAGE, "--lab", "vagrant"],
                         cwd=copy, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    try:
        assert res.returncode == 0, res.stderr[-3000:]
        capture = json.loads((copy / "docs" / "captures" / f"{PAGE}.json").read_text())
        assert capture["meta"]["lab"] == "host" and all(c["passed"] for c in capture["checks"])
        assert list((copy / "docs" / "diagrams").glob(f"{PAGE}-*.svg"))
        status = subprocess.run(["vagrant", "status", "lab", "--machine-readable"], cwd=copy, env=env,
                                capture_output=True, text=True).stdout
        assert ",lab,state,running" not in status  # the VM it brought up is halted
    finally:
        subprocess.run(["vagrant", "destroy", "--force", "lab"], cwd=copy, env=env, capture_output=True)
    print(f"lab.run --page {PAGE} --lab vagrant: {seconds:.0f} s")
