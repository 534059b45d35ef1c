"""Make the lab's own namespaces look like a machine of their own.

Called first thing by the process that runs a page (deepdive.inlab), once it is PID 1 of
fresh PID, network and mount namespaces. It gives that "host" namespace:

- its own /proc (this PID namespace's processes) and /sys (this network namespace's
  interfaces, as `ip netns exec` gives each node);
- `lo` up, as on any booted machine;
- /etc, /var/lib, /tmp and /opt writable but private: each is an overlay whose lower
  layer is the caller's directory and whose upper layer lives in memory, so files a page
  writes (CNI configuration, host-local's leases, a plugin installed in /opt/cni/bin, a
  compiled BPF object) vanish with the run and the caller's files never change;
- an empty /run, as a machine has at boot (no lock, socket or pid file of the caller's:
  iptables' /run/xtables.lock, for one, is the lab's own);
- empty directories where tools keep per-machine state: /run/netns (so node names can be
  the fixed ones a page shows), /etc/netns, /etc/cni, /var/lib/cni and /opt/cni (so a
  page's CNI plugins and configuration are the only ones, whatever the caller has);
- this project's own commands (bin/: deepdive-cni) on PATH, as if installed.

Mounts that sit below an overlaid directory (say /etc/resolv.conf bind-mounted by a
container runtime, or this project checked out on a file system of its own under /tmp)
are bound again on top of the overlay, so the view stays the caller's.
Every mount lives in this run's mount namespace and disappears with it.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

from deepdive.model import DeepDiveError

OVERLAID = ("/etc", "/var/lib", "/tmp", "/opt")
EMPTY = ("/run/netns", "/etc/netns", "/etc/cni", "/var/lib/cni", "/opt/cni")
BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin")
STAGING = "/sys"  # where the overlays' upper layers are made, before sysfs covers it

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """mount(2); raises DeepDiveError naming the target and the kernel's reason."""
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                     ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise DeepDiveError(f"cannot mount {fstype or source} on {target} for the lab: {os.strerror(err)}")


def prepare(overlaid: tuple[str, ...] = OVERLAID) -> None:
    """Turn this process's fresh namespaces into the lab's machine (see the module doc);
    `overlaid`: the trees made writable but private (default OVERLAID)."""
    # unshare(1) makes mounts private already; the vm guest enters namespaces itself.
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    if os.getpid() == 1:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _private_trees(overlaid)
    mount("deepdive", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    private = [t for t in (*overlaid, "/run") if os.path.isdir(t)]
    for path in EMPTY:
        # Only inside a private tree: a directory made anywhere else would be the caller's.
        if any(path.startswith(t + "/") for t in private):
            os.makedirs(path, exist_ok=True)
            mount("deepdive", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    _loopback_up()
    os.environ["PATH"] = f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"


def _private_trees(overlaid: tuple[str, ...]) -> None:
    # The upper layers are made in a tmpfs on /sys, which sysfs then covers: an overlay
    # keeps its own reference to its layers, so they work on, out of everyone's sight.
    mount("deepdive", STAGING, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700")
    for i, tree in enumerate(overlaid):
        if not os.path.isdir(tree):
            continue
        upper, work = (os.path.join(STAGING, str(i), layer) for layer in ("upper", "work"))
        os.makedirs(upper)
        os.makedirs(work)
        keep = [(path, os.open(path, os.O_PATH)) for path in _submounts(tree)]
        try:
            mount("overlay", tree, "overlay", 0, f"lowerdir={tree},upperdir={upper},workdir={work}")
            for path, fd in keep:
                if os.path.lexists(path):
                    mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        finally:
            for _path, fd in keep:
                os.close(fd)


def _submounts(tree: str) -> list[str]:
    """Mount points strictly below `tree`, outermost only (a recursive bind brings the rest)."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            # Below a directory the lab empties anyway: nothing to keep.
            if point.startswith(tree.rstrip("/") + "/") and not any(
                    point == e or point.startswith(e + "/") for e in EMPTY):
                points.append(point)
    points.sort()
    outer: list[str] = []
    for p in points:
        if not any(p == o or p.startswith(o + "/") for o in outer):
            outer.append(p)
    return outer


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return field.encode().decode("unicode_escape")


SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ = "16sH22x"  # struct ifreq: the name, then ifr_flags in a 24-byte union


def _loopback_up() -> None:
    """`ip link set lo up`, without a command: the machine's loopback is up at boot.
    Two ioctls (netdevice(7)), not netlink: pyroute2 takes ~0.15 s to import."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack(IFREQ, fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack(IFREQ, b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))
