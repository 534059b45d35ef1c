"""A libvirtd of its own, sealed in private namespaces, and Vagrant run beside it.

vagrant-libvirt needs libvirt's system instance (qemu:///system): its management network
is a libvirt NAT network (a bridge, dnsmasq for DHCP, iptables rules), and vagrant ssh
connects to the address the guest leased there. With qemu:///session, vagrant-libvirt
0.11 attaches the guest to an existing bridge instead (virbr0 through qemu-bridge-helper),
which would have to exist in this machine's own network namespace. So libvirtd runs
here as PID 1's child in fresh network, mount and PID namespaces (the same sealing the
host lab uses, deepdive.machine): its bridge, dnsmasq and iptables rules live in a
network namespace nobody else sees; /etc/libvirt, /var/lib/libvirt (storage pool and
networks) and /var/log/libvirt are overlays kept in memory, and
/run is empty, so its sockets, configuration and images are its own and another libvirtd
on the machine is neither seen nor disturbed. Vagrant and virsh run inside the same
namespaces (nsenter), so they reach that libvirtd's socket and the guest's address.

The namespaces' PID 1 (`python -m deepdive.sealedlibvirt init`) ends when its stdin, a
pipe from the caller, reaches end of file: when the caller closes it or dies. Should it
be stuck before it reads (libvirtd starting), unshare `--kill-child` kills it, and unshare
dies with its caller (PR_SET_PDEATHSIG). When PID 1 ends the kernel kills every process
of the PID namespace (libvirtd, virtlogd, dnsmasq, qemu, a vagrant in progress), and the
mounts and the network go with the last of them: nothing outlives it but what Vagrant
writes outside those trees (the box it was given, the .vagrant directory beside a
Vagrantfile, its machine index).

The namespace has no route out. With `proxy_port`, guests reach the internet through an
HTTP proxy on that port of every address of the namespace (deepdive.nsproxy: it listens
there and connects out from the caller's namespace); on vagrant-libvirt's default
management network it is `proxy_url`, http://192.168.121.1:PORT, for a guest's
http_proxy and https_proxy.

Guests run under TCG (domain type qemu) where KVM is unusable: set `libvirt.driver =
"qemu"` in the Vagrantfile. qemu runs as root, so a 9p synced folder in passthrough mode
writes files back to the host as the guest's user and group ids.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from deepdive import nsproxy
from deepdive.capture import ROOT
from deepdive.execute import die_with_parent
from deepdive.model import DeepDiveError

# /var/cache/libvirt stays the machine's: libvirtd keeps there what it learnt probing qemu
# (minutes under load), derived from the installed qemu and valid for any libvirtd.
PRIVATE_TREES = ("/etc/libvirt", "/var/lib/libvirt", "/var/log/libvirt")
# qemu as root: 9p passthrough creates files as the guest's ids. No cgroups: /sys is this
# network namespace's sysfs, without the cgroup file system.
QEMU_CONF = 'user = "root"\ngroup = "root"\ncgroup_controllers = []\n'
# The host's address on vagrant-libvirt's default management network (192.168.121.0/24).
MANAGEMENT_GATEWAY = "192.168.121.1"
START_TIMEOUT = 60.0  # seconds for libvirtd to answer, on a loaded 2-core machine
TOOLS = {"libvirtd": "libvirt-daemon-system", "virtlogd": "libvirt-daemon-system",
         "virsh": "libvirt-clients", "dnsmasq": "dnsmasq-base", "qemu-system-x86_64": "qemu-system-x86",
         "unshare": "util-linux", "nsenter": "util-linux"}
READY = "ready"


class SealedLibvirt:
    """`with SealedLibvirt() as lv: lv.run(["vagrant", "up"], cwd=dir)`.

    Entering starts virtlogd and libvirtd in fresh namespaces and waits until libvirtd
    answers (raises DeepDiveError naming a missing tool or why it did not start);
    leaving ends them and everything started inside. `proxy_port`: serve guests an HTTP
    proxy to the outside on that port (0: none)."""

    def __init__(self, proxy_port: int = 0) -> None:
        self._proc: subprocess.Popen | None = None
        self._proxy: socket.socket | None = None
        self.proxy_port = proxy_port
        self.init_pid = 0  # PID 1 of the namespaces, as this machine numbers it

    @property
    def proxy_url(self) -> str:
        """The proxy as guests on vagrant-libvirt's default management network reach it."""
        return f"http://{MANAGEMENT_GATEWAY}:{self.proxy_port}" if self.proxy_port else ""

    def __enter__(self) -> "SealedLibvirt":
        preflight()
        self._proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--",
             sys.executable, "-m", "deepdive.sealedlibvirt", "init"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=die_with_parent)
        try:
            assert self._proc.stdout is not None
            lines = []
            for line in self._proc.stdout:
                if line.strip() == READY:
                    break
                lines.append(line.strip())
            else:
                self._proc.wait()
                errors = [x[len("error: "):] for x in lines if x.startswith("error: ")]
                raise DeepDiveError(errors[-1] if errors else
                                    f"libvirtd did not start: {lines[-1] if lines else 'no output'}")
            children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text().split()
            self.init_pid = int(children[0])
            if self.proxy_port:
                self._proxy = nsproxy.listen_in(f"/proc/{self.init_pid}/ns/net", self.proxy_port)
                nsproxy.serve(self._proxy)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End PID 1 (closing its stdin), and with it the namespaces; SIGKILL after 10 s."""
        if self._proxy is not None:
            try:
                self._proxy.shutdown(socket.SHUT_RDWR)  # wakes its accept()
            except OSError:
                pass
            self._proxy.close()
            self._proxy = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def argv(self, argv: Sequence[str], cwd: Path | str = "/") -> list[str]:
        """`argv` as a command that runs inside the namespaces, in `cwd`."""
        if not self.init_pid:
            raise DeepDiveError("libvirt is not running")
        return ["nsenter", f"--target={self.init_pid}", "--net", "--mount", "--pid",
                f"--wd={cwd}", "--", *argv]

    def run(self, argv: Sequence[str], cwd: Path | str = "/", timeout: float | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run `argv` inside, output captured as text (not checked)."""
        return subprocess.run(self.argv(argv, cwd), env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout,
                              preexec_fn=die_with_parent)


def preflight() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not _which(tool)})
    if missing:
        raise DeepDiveError(f"libvirt for vagrant needs {', '.join(missing)}: install "
                            f"{' '.join(missing)}")
    if os.geteuid() != 0:
        raise DeepDiveError("libvirt for vagrant runs libvirtd in namespaces of its own, "
                            "which needs root: run it as root")


def _which(tool: str) -> bool:
    from shutil import which
    return which(tool) is not None


# --- PID 1 of the namespaces ---

def init_main() -> int:
    from deepdive import machine
    machine.prepare(PRIVATE_TREES)
    with open("/etc/libvirt/qemu.conf", "a") as f:
        f.write("\n# deepdive.sealedlibvirt\n" + QEMU_CONF)
    for daemon in (["virtlogd", "--daemon"], ["libvirtd", "--daemon"]):
        # Each forks a daemon and returns: it is a child of this PID 1.
        subprocess.run(daemon, check=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        probe = subprocess.run(["virsh", "--connect", "qemu:///system", "version"],
                               capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if probe.returncode == 0:
            break
        if time.monotonic() > deadline:
            tail = probe.stderr.strip().splitlines()
            raise DeepDiveError(f"libvirtd did not answer within {START_TIMEOUT:g} s"
                                f"{': ' + tail[-1] if tail else ''}")
        time.sleep(0.5)
    print(READY, flush=True)
    # Reap the daemons' children until the caller closes stdin (or dies): then this
    # PID 1 returns, and the kernel ends the namespaces' every process.
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    _reap()
    sys.stdin.read()
    return 0


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


if __name__ == "__main__":
    if sys.argv[1:] != ["init"]:
        print("usage: python -m deepdive.sealedlibvirt init", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(init_main())
    except (DeepDiveError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", flush=True)
        sys.exit(1)
