"""End to end: the box `invoke vagrant.box` builds boots under vagrant-libvirt (TCG), in
a libvirtd of its own (deepdive.sealedlibvirt); `vagrant ssh` answers, a file the guest
writes in the 9p synced folder lands on the host, the guest has the lab's packages and
none of the tests', and trusts this machine's local CAs, apt in the guest reaches the
mirror through the proxy (deepdive.nsproxy), and nothing is left running or mounted.

Needs root and the packages setup.sh --test installs. Minutes: see the README's
"A Vagrant box built here".
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deepdive import vagrantbox
from deepdive.sealedlibvirt import SealedLibvirt
from tests.conftest import ROOT, caller_state, needs_root

# setup.sh --test installs Vagrant on Debian only; elsewhere these tests say why they skip.
# Where vagrant is installed, any other missing piece fails with one line naming it.
pytestmark = [pytest.mark.vagrant, pytest.mark.lab, needs_root(),
              pytest.mark.skipif(shutil.which("vagrant") is None,
                                 reason="no vagrant (./setup.sh --test installs it on Debian)")]

VAGRANTFILE = """\
Vagrant.configure("2") do |config|
  config.vm.box = "deepdive/debian12"
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
    libvirt.cpu_mode = "custom"
    libvirt.cpu_model = "qemu64"
    libvirt.memory = 1024
    libvirt.cpus = 1
  end
end
"""


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


def test_box_boots_under_vagrant_libvirt(tmp_path: Path) -> None:
    timings = {}
    started = time.monotonic()
    vagrantbox.build(say=lambda _line: None)  # nothing to do when the box is up to date
    timings["box"] = time.monotonic() - started
    (tmp_path / "Vagrantfile").write_text(VAGRANTFILE)
    before = caller_state()
    mounts_before = Path("/proc/self/mounts").read_text()
    with SealedLibvirt(proxy_port=3128) as lv:
        init = lv.init_pid
        timings["libvirtd"] = time.monotonic() - started - timings["box"]
        t = time.monotonic()
        ok(lv.run(["vagrant", "up", "--provider=libvirt"], cwd=tmp_path, timeout=1800))
        timings["vagrant up"] = time.monotonic() - t
        kernel = ok(lv.run(["vagrant", "ssh", "-c", "uname -r"], cwd=tmp_path, timeout=300)).strip()
        assert re.fullmatch(r"\d+\.\d+\.\d+-\d+-amd64", kernel.splitlines()[-1]), kernel
        ok(lv.run(["vagrant", "ssh", "-c", "sudo sh -c 'uname -r > /vagrant/from-guest'"],
                  cwd=tmp_path, timeout=300))
        assert (tmp_path / "from-guest").read_text().strip() == kernel.splitlines()[-1]
        _has_the_lab_packages_and_local_cas(lv, tmp_path)
        # The guest's way out: apt through the proxy (the mirror is the one the box came from).
        t = time.monotonic()
        update = ok(lv.run(["vagrant", "ssh", "-c", f"sudo env http_proxy={lv.proxy_url} apt-get update"],
                           cwd=tmp_path, timeout=900))
        timings["apt-get update"] = time.monotonic() - t
        assert re.search(r"^(Get|Hit):\d+ \S+ bookworm InRelease", update, re.M), update
        # The kind machine's provisioning, in this box without the proxy: it stops at its
        # first step that needs the internet, says so in one line, and changes nothing.
        shutil.copy(ROOT / "vagrant" / "kind.sh", tmp_path / "kind.sh")
        kind = lv.run(["vagrant", "ssh", "-c", "sudo bash /vagrant/kind.sh; echo status=$?; "
                       "command -v docker kind kubectl || true"], cwd=tmp_path, timeout=300)
        assert "kind.sh: needs the internet and cannot reach" in kind.stdout + kind.stderr, kind
        assert re.search(r"^status=1\r?$", kind.stdout, re.M) and "/usr/" not in kind.stdout, kind.stdout
        ok(lv.run(["vagrant", "destroy", "-f"], cwd=tmp_path, timeout=300))
    print(", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    # Everything started inside ended with the namespaces' PID 1; the caller's network
    # and mounts are as they were.
    assert not os.path.exists(f"/proc/{init}")
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).count(str(tmp_path))]
    assert caller_state() == before
    assert Path("/proc/self/mounts").read_text() == mounts_before


def test_killed_caller_leaves_nothing(tmp_path: Path) -> None:
    # The caller dies by SIGKILL while libvirtd runs: libvirtd and its namespaces go too.
    script = ("import sys, time\nfrom deepdive.sealedlibvirt import SealedLibvirt\n"
              "lv = SealedLibvirt().__enter__()\nprint(lv.init_pid, flush=True)\ntime.sleep(600)\n")
    caller = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=subprocess.PIPE, text=True)
    assert caller.stdout is not None
    init = int(caller.stdout.readline())
    daemons = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == init]
    assert daemons  # virtlogd, libvirtd
    caller.kill()
    caller.wait()
    deadline = time.monotonic() + 30
    alive = [init, *daemons]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if os.path.exists(f"/proc/{p}")]
    if init in alive:  # failed: end the namespaces here, so that the test leaves nothing
        os.kill(init, signal.SIGKILL)
    assert not alive


def test_proxy_reaches_out_of_the_sealed_namespace(tmp_path: Path) -> None:
    # A server in this namespace, reached from inside the sealed one only through the proxy.
    (tmp_path / "hello").write_text("from the caller's namespace\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hello"
    try:
        with SealedLibvirt(proxy_port=3128) as lv:
            assert lv.proxy_url == "http://192.168.121.1:3128"
            direct = lv.run(["curl", "-sS", "--max-time", "5", url])
            assert direct.returncode != 0  # no route out of it but the proxy
            for tunnel in ([], ["--proxytunnel"]):  # absolute-form GET, then CONNECT
                got = lv.run(["curl", "-sS", "--max-time", "20", "-x", "http://127.0.0.1:3128", *tunnel, url])
                assert got.returncode == 0 and got.stdout == "from the caller's namespace\n", got.stderr
    finally:
        server.shutdown()
        server.server_close()


def _has_the_lab_packages_and_local_cas(lv: SealedLibvirt, tmp_path: Path) -> None:
    """The box has what `setup.sh --lab-packages` lists in it (so provisioning installs
    nothing), none of what only the tests use, and trusts this machine's local CAs."""
    shutil.copy(ROOT / "setup.sh", tmp_path / "setup.sh")
    # sudo: the synced folder is this test's directory, which only root may read. dpkg-query
    # exits 1 for the packages that are not there, as the last three should not be.
    test_only = {"vagrant", "chromium", "npm"}
    states = ok(lv.run(["vagrant", "ssh", "-c", "packages=$(sudo bash /vagrant/setup.sh --lab-packages); "
                        "echo listed: $packages; dpkg-query -W -f='${Package} ${db:Status-Status}\\n' "
                        f"$packages {' '.join(sorted(test_only))} 2>&1; true"], cwd=tmp_path, timeout=300))
    listed = re.search(r"^listed: (.*)$", states, re.M).group(1).split()  # type: ignore[union-attr]
    installed = set(re.findall(r"^(\S+) installed\r?$", states, re.M))
    assert listed and set(listed) <= installed, states
    assert not installed & test_only, states
    bundle = ok(lv.run(["vagrant", "ssh", "-c", "cat /etc/ssl/certs/ca-certificates.crt /etc/pip.conf"],
                       cwd=tmp_path, timeout=300)).replace("\r", "")
    for ca in vagrantbox.local_cas():
        body = "".join(ca.read_text().split("-----")[2].split())  # the PEM's base64, unwrapped
        assert body in "".join(bundle.split()), f"{ca} is not in the box's CA bundle"
    assert f"cert = {vagrantbox.SYSTEM_CA_BUNDLE}" in bundle


def test_killed_build_leaves_no_loop_device_nor_mount(tmp_path: Path) -> None:
    # SIGKILL to `invoke vagrant.box` while debootstrap runs on the loop-mounted image.
    out = tmp_path / "killed.box"
    builder = subprocess.Popen([sys.executable, "-m", "invoke", "vagrant.box", "--out", str(out)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not _loops_under(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _loops_under(tmp_path), "the build never mounted its image"
        while not _processes_under(tmp_path, "debootstrap") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # into debootstrap's work
    finally:
        builder.kill()
        builder.wait()
    deadline = time.monotonic() + 30
    while (_loops_under(tmp_path) or _processes_under(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_under(tmp_path)  # and so no mount namespace holds its mounts
    assert not _loops_under(tmp_path)
    assert not out.exists()
    vagrantbox.sweep(tmp_path)  # what the next build does first
    assert list(tmp_path.iterdir()) == []


def _loops_under(d: Path) -> list[str]:
    """Loop devices whose backing file is below `d`."""
    found = []
    for f in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if f.read_text().startswith(f"{d}/"):
                found.append(f.parent.parent.name)
        except OSError:
            pass
    return found


def _processes_under(d: Path, name: str = "") -> list[str]:
    """Processes whose command line names a path below `d` (and `name`, if given)."""
    return [p for p in os.listdir("/proc") if p.isdigit()
            and f"{d}/" in (line := _cmdline(p)) and name in line]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0
