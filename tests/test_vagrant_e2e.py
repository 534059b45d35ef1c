"""End to end, for real: `invoke lab.run --page vlan --lab vagrant` boots the
Vagrantfile's lab VM, provisions it (./setup.sh --lab: the Python packages come from
PyPI, the box has the Debian ones), runs the page in it and publishes the capture and
diagrams here; the VM it brought up is halted afterwards. It runs on a copy of this
checkout, so that nothing here changes.

The box is $DEEPDIVE_VAGRANT_BOX, else the one `invoke vagrant.box` builds here (built
first, unless it is up to date). libvirtd runs sealed in namespaces of its own
(deepdive.sealedlibvirt), Vagrant inside them, and the provisioning reaches the internet
through its proxy. Unless DEEPDIVE_VAGRANT_LIBVIRT_DRIVER says otherwise, the domain type
is `qemu` (software emulation) where the vm lab finds KVM unusable (vmlab.accel, whose
verdict is cached per kernel). Marked `vagrant` and `lab`: it needs root, Vagrant and
the box's tools, and about 11 minutes under emulation (the README's "Vagrant").
"""
from __future__ import annotations

import contextlib
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
from deepdive import vagrantbox, vmlab
from deepdive.sealedlibvirt import SealedLibvirt

PAGE = "vlan"
RUN_TIMEOUT = 45 * 60  # seconds; 11 min measured under emulation on 2 cores


def _project_copy(tmp_path: Path) -> Path:
    """This checkout's committed files and working tree, without .git and the environments."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".vagrant", "node_modules", "site", "artifacts", "slides", "__pycache__", ".publish-*"))
    (copy / ".venv").symlink_to(sys.prefix)  # this test's environment runs invoke there
    return copy


@contextlib.contextmanager
def _vagrant(project: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment that runs Vagrant: inside a sealed libvirt, on the chosen box."""
    env = dict(os.environ, VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"))
    if not env.get("DEEPDIVE_VAGRANT_BOX"):
        print(f"{vagrantbox.BOX_NAME}: {vagrantbox.build(say=print)}")
        env["DEEPDIVE_VAGRANT_BOX"] = vagrantbox.BOX_NAME
    if "DEEPDIVE_VAGRANT_LIBVIRT_DRIVER" not in env:
        accel, why = vmlab.accel(vmlab.kernel_image(), say=print)
        if accel == "tcg":
            print(f"libvirt domain type qemu: {why}")
            env["DEEPDIVE_VAGRANT_LIBVIRT_DRIVER"] = "qemu"
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
@pytest.mark.skipif(shutil.which("vagrant") is None, reason="no vagrant (./setup.sh --test installs it on Debian)")
def test_a_page_runs_in_the_vagrant_lab_and_lands_here(tmp_path):
    copy = _project_copy(tmp_path)
    for old in [copy / "docs" / "captures" / f"{PAGE}.json", *(copy / "docs" / "diagrams").glob(f"{PAGE}-*")]:
        old.unlink()  # so that what is there afterwards came out of the VM
    with _vagrant(copy, tmp_path) as env:
        _runs_and_lands(copy, env)


def _runs_and_lands(copy: Path, env: dict[str, str]) -> None:
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "invoke", "lab.run", "--page", PAGE, "--lab", "vagrant"],
                         cwd=copy, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
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
