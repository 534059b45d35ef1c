"""The Vagrantfile validates with each provider and setting that matters, sets the vCPUs it
says it sets, refuses bad settings in one line, and the kind machine's provisioning
script stops, before it changes anything, at its first step that needs the internet.
Needs Debian's `vagrant` (and vagrant-libvirt) for the first; no VM is started."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT

KIND_SH = ROOT / "vagrant" / "kind.sh"

needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None,
                                   reason="needs Vagrant (apt-get install vagrant vagrant-libvirt)")


def validate(tmp_path: Path, provider: str, **settings: str) -> subprocess.CompletedProcess:
    """`vagrant validate` of the project's Vagrantfile with `provider` as the default.
    VirtualBox need not be installed: a stand-in VBoxManage reports a version, which is
    all Vagrant asks of it before it checks the configuration."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    vboxmanage = fake_bin / "VBoxManage"
    vboxmanage.write_text("#!/bin/sh\necho 7.0.14r161095\n")
    vboxmanage.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPDIVE_", "VAGRANT_"))}
    env.update(settings, VAGRANT_DEFAULT_PROVIDER=provider, VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
               PATH=f"{fake_bin}:{env['PATH']}")
    return subprocess.run(["vagrant", "validate"], cwd=ROOT, env=env, capture_output=True, text=True)


@needs_vagrant
@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
@pytest.mark.parametrize("settings", [
    {},
    {"DEEPDIVE_VAGRANT_BOX": "deepdive-debian12", "DEEPDIVE_VAGRANT_CPUS": "4",
     "DEEPDIVE_VAGRANT_MEMORY": "8192", "DEEPDIVE_VAGRANT_LIBVIRT_DRIVER": "qemu"},
    {"DEEPDIVE_KUBE_PROXY_MODE": "nftables"},
    {"DEEPDIVE_KUBE_PROXY_MODE": "ipvs", "DEEPDIVE_VAGRANT_PROXY": "http://192.168.121.1:3128"},
], ids=["defaults", "box-cpus-memory-tcg", "nftables", "ipvs-proxy"])
def test_the_vagrantfile_validates(tmp_path, provider, settings):
    res = validate(tmp_path, provider, **settings)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Vagrantfile validated successfully" in res.stdout


@needs_vagrant
@pytest.mark.parametrize("name, value, line", [
    ("DEEPDIVE_VAGRANT_CPUS", "two", "DEEPDIVE_VAGRANT_CPUS=two is not a positive whole number"),
    ("DEEPDIVE_VAGRANT_MEMORY", "0", "DEEPDIVE_VAGRANT_MEMORY=0 is not a positive whole number"),
    ("DEEPDIVE_VAGRANT_LIBVIRT_DRIVER", "tcg", "DEEPDIVE_VAGRANT_LIBVIRT_DRIVER=tcg is not one of kvm, qemu"),
    ("DEEPDIVE_KUBE_PROXY_MODE", "ebpf", "DEEPDIVE_KUBE_PROXY_MODE=ebpf is not one of iptables, nftables, ipvs"),
    ("DEEPDIVE_VAGRANT_PROXY", "proxy:3128", "DEEPDIVE_VAGRANT_PROXY=proxy:3128 is not http://HOST:PORT"),
])
def test_a_bad_setting_is_one_line(tmp_path, name, value, line):
    res = validate(tmp_path, "libvirt", **{name: value})
    assert res.returncode == 1
    assert (res.stdout + res.stderr).strip() == f"Vagrantfile: {line}"


def sandboxed(mode: str) -> subprocess.CompletedProcess:
    """kind.sh in a network namespace with no route out (connections fail at once) and
    a mount namespace whose / is read-only, so that a write anywhere before its
    internet check would fail and show. As root, or as root of a user namespace."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    script = f'mount -o bind,remount,ro / && exec "{KIND_SH}"'
    env = dict(os.environ, DEEPDIVE_KUBE_PROXY_MODE=mode)
    return subprocess.run(["unshare", *user, "--net", "--mount", "sh", "-c", script],
                          env=env, capture_output=True, text=True, timeout=120)


def test_kind_provisioning_stops_at_its_first_internet_step():
    made = [Path("/usr/local/bin/kind"), Path("/opt/deepdive")]
    before = [p.exists() for p in made]
    started = time.monotonic()
    res = sandboxed("nftables")
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.splitlines() == [
        "kind.sh: needs the internet from here on (Debian packages, kind v0.32.0, kubectl v1.36.1, "
        "flannel v0.28.9, the node images); checking that it is reachable"]
    assert res.stderr.splitlines() == [
        "kind.sh: needs the internet and cannot reach deb.debian.org (port 443); nothing was changed"]
    assert time.monotonic() - started < 30  # no route: it fails fast, no timeout
    assert [p.exists() for p in made] == before


def test_kind_provisioning_refuses_an_unknown_mode_in_one_line():
    res = sandboxed("userspace")
    assert (res.returncode, res.stdout, res.stderr) == (
        2, "", "kind.sh: DEEPDIVE_KUBE_PROXY_MODE=userspace is not one of iptables, nftables, ipvs\n")


# Evaluates the Vagrantfile with a stand-in `Vagrant.configure` that records each setting
# as MACHINE.PROVIDER.NAME=VALUE (what `vagrant validate` checks but never shows).
SETTINGS_RB = r"""
class Recorder
  def initialize(path, log) = (@path, @log = path, log)
  def method_missing(name, *args, **_kw, &blk)
    name = name.to_s
    return @log << "#{@path}.#{name.chomp('=')}=#{args.first}" if name.end_with?("=")
    child = { "define" => Recorder.new(args.first.to_s, @log),
              "provider" => Recorder.new("#{@path}.#{args.first}", @log) }.fetch(name, self)
    blk.call(child) if blk && child != self
    child
  end
  def respond_to_missing?(*) = true
end
LOG = []
module Vagrant
  def self.configure(_version) = yield(Recorder.new("config", LOG))
end
load ARGV[0]
puts LOG
"""


def settings(tmp_path: Path, **env: str) -> set[str]:
    script = tmp_path / "settings.rb"
    script.write_text(SETTINGS_RB)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPDIVE_", "VAGRANT_"))}
    res = subprocess.run(["ruby", str(script), str(ROOT / "Vagrantfile")], env=dict(clean, **env),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return set(res.stdout.split())


@pytest.mark.skipif(shutil.which("ruby") is None, reason="needs ruby (Debian's vagrant brings it)")
def test_vcpus_one_for_the_lab_vm_under_emulation(tmp_path):
    """Under the qemu driver the lab VM gets one vCPU (two stalled at boot on a busy 2-core
    host); kind's nodes keep two; DEEPDIVE_VAGRANT_CPUS overrides both."""
    kvm = settings(tmp_path)
    assert {"lab.libvirt.cpus=2", "kind.libvirt.cpus=2", "lab.libvirt.driver=kvm"} <= kvm
    qemu = settings(tmp_path, DEEPDIVE_VAGRANT_LIBVIRT_DRIVER="qemu")
    assert {"lab.libvirt.cpus=1", "kind.libvirt.cpus=2", "lab.libvirt.cpu_model=qemu64"} <= qemu
    forced = settings(tmp_path, DEEPDIVE_VAGRANT_LIBVIRT_DRIVER="qemu", DEEPDIVE_VAGRANT_CPUS="3")
    assert {"lab.libvirt.cpus=3", "kind.libvirt.cpus=3", "lab.virtualbox.cpus=3"} <= forced
