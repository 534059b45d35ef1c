"""What the running kernel can do, found by trying, and remembered per kernel release.

A link kind is available when `ip link add` of that kind succeeds in a scratch network
namespace. A feature (FEATURES: IPVS, nftables, BPF, ...) is available when its probe, a
real use of it, succeeds in a scratch namespace entered with the lab's own `unshare`
options, so a rootless lab is asked what it may do as a normal user. Probing takes
milliseconds; answers that only change with the kernel are cached in
~/.cache/deepdive/ under the release name and who asks (root or a normal user).

On a kernel with modules, a probe may make the kernel load one on demand (`ip link add
type dummy` loads dummy, ipvsadm loads ip_vs), as any first use would. The lab never
loads a module nor sets a sysctl itself on the running machine; only on a machine that
is the lab's own, the vm lab's guest, does a feature's `enable` command run.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Part of the cache's file name: a change to how kinds or features are probed starts a
# new cache.
PROBE_VERSION = 3
PROBE_TIMEOUT = 10.0
# Extra arguments a kind needs before the kernel will create it.
PROBE_ARGS = {"veth": ["peer", "name", "ddprobe1"], "vxlan": ["id", "1", "dstport", "4789"]}
# Why a feature is unavailable: the kernel lacks it, or refuses it to the user probing.
ABSENT, DENIED = "absent", "denied"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Feature:
    """A kernel feature a page can name in `Needs(features=...)`.

    words: how a reader is told about it ("IPVS load balancing (ip_vs)").
    probe: a real use of it, run in a scratch namespace; exit status 0 means available.
    tools: programs the probe runs, which must be on PATH before it can say anything.
    volatile: the answer can change without a new kernel (a module loaded by hand, a
      sysctl): probed on every run, never cached.
    unprivileged: probed in a user namespace of its own, without privileges, whoever runs.
    enable: run, outside the scratch namespace, on the vm lab's guest only, when the
      probe fails there: that machine is the lab's, so it may load a module.
    """

    words: str
    probe: tuple[str, ...]
    tools: tuple[str, ...] = ()
    volatile: bool = False
    unprivileged: bool = False
    enable: tuple[str, ...] = ()


# BPF_PROG_TYPE_SOCKET_FILTER may be loaded by anyone the sysctl allows;
# BPF_PROG_TYPE_SCHED_CLS (tc) needs CAP_BPF and CAP_NET_ADMIN, so root only.
SOCKET_FILTER, SCHED_CLS = 1, 3
# Probes written in Python, here, exit with the errno of the call that failed.
_SELF = (sys.executable, "-m", "deepdive.features")
_BPF_PROBE = (*_SELF, "bpf")

FEATURES: dict[str, Feature] = {
    "ip_vs": Feature("IPVS load balancing (ip_vs)",
                     ("ipvsadm", "-A", "-t", "10.0.0.1:80"), ("ipvsadm",)),
    # Not loaded on demand by any kernel: kube-proxy and container runtimes modprobe it.
    "br_netfilter": Feature("netfilter on bridged traffic (br_netfilter)",
                            ("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"), ("cat",),
                            volatile=True, enable=("modprobe", "br_netfilter")),
    "nf_tables": Feature("nftables (nf_tables)",
                         ("nft", "add", "table", "ip", "ddprobe"), ("nft",)),
    "nat": Feature("NAT rules in iptables (nf_nat)",
                   ("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "10.0.0.1",
                    "-j", "DNAT", "--to-destination", "10.0.0.2:80"), ("iptables",)),
    # The dump needs ctnetlink, which needs connection tracking itself.
    "conntrack": Feature("connection tracking (nf_conntrack)", ("conntrack", "-L"), ("conntrack",)),
    "ipset": Feature("IP sets (ip_set)", ("ipset", "create", "ddprobe", "hash:ip"), ("ipset",)),
    "netem": Feature("delay and loss emulation (sch_netem)",
                     ("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"), ("tc",)),
    # nft and iptables-nft load a ruleset in one netlink message, and raise the socket's
    # send buffer for one larger than the default with SO_SNDBUFFORCE, which needs
    # CAP_NET_ADMIN in the machine's own user namespace: in a user namespace a large
    # transaction (kube-proxy's for 100 Services) fails with "Message too long".
    "nf_large_batch": Feature("netfilter transactions beyond the default socket buffer (SO_SNDBUFFORCE)",
                              (*_SELF, "sndbuf")),
    "bpf": Feature("BPF programs for tc and XDP (bpf)", (*_BPF_PROBE, str(SCHED_CLS)),
                   volatile=True),
    "bpf_unprivileged": Feature("BPF for unprivileged users (kernel.unprivileged_bpf_disabled=0)",
                                (*_BPF_PROBE, str(SOCKET_FILTER)), volatile=True,
                                unprivileged=True,
                                enable=("sysctl", "-qw", "kernel.unprivileged_bpf_disabled=0")),
}


# Features no user namespace can grant: they need CAP_BPF or CAP_NET_ADMIN in the
# machine's own user namespace, so a page that needs one runs as root only.
ROOT_ONLY = frozenset({"bpf", "nf_large_batch"})


def tools_for(names: tuple[str, ...]) -> list[str]:
    """Programs the probes of these features run, in order, each once."""
    return list(dict.fromkeys(t for n in names for t in FEATURES[n].tools))


def probe_argv(kind: str) -> list[list[str]]:
    """Commands that create a `kind` link named ddprobe0, in a namespace of its own."""
    if kind in ("tun", "tap"):
        return [["ip", "tuntap", "add", "ddprobe0", "mode", kind]]
    if kind in ("vlan", "ipvlan", "macvlan", "macvtap"):
        # Stacked kinds need a parent to sit on.
        extra = ["id", "10"] if kind == "vlan" else []
        return [["ip", "link", "add", "ddparent0", "type", "veth", "peer", "name", "ddparent1"],
                ["ip", "link", "add", "link", "ddparent0", "name", "ddprobe0", "type", kind, *extra]]
    return [["ip", "link", "add", "ddprobe0", "type", kind, *PROBE_ARGS.get(kind, [])]]


def cache_dir() -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "deepdive"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a user without a writable home just probes every time
    return path if os.access(path, os.W_OK) else None


def _read(name: str) -> dict | None:
    directory = cache_dir()
    try:
        return json.loads((directory / name).read_text()) if directory else None
    except (OSError, ValueError):
        return None


def _write(name: str, value: dict) -> None:
    directory = cache_dir()
    if directory:
        (directory / name).write_text(json.dumps(value, indent=1) + "\n")


def cached(name: str, compute: Callable[[], dict]) -> dict:
    """A JSON value kept in the cache directory, computed once."""
    value = _read(name)
    if value is None:
        value = compute()
        _write(name, value)
    return value


def cache_name() -> str:
    """The cache file of probe answers: per probe version, kernel release, and who asks."""
    who = "root" if os.geteuid() == 0 else "user"
    return f"probes-v{PROBE_VERSION}-{platform.release()}-{who}.json"


def _answers(probes: dict[str, Callable[[], str]], volatile: frozenset[str] = frozenset()) -> dict[str, str]:
    """{key: "" when available, else ABSENT or DENIED}: read from the cache, or probed
    and added to it; keys in `volatile` are probed every time and never cached."""
    cache = _read(cache_name())
    if not isinstance(cache, dict):
        cache = {}
    known = {k: v for k, v in cache.items() if v in ("", ABSENT, DENIED) and k not in volatile}
    answers = {key: known[key] if key in known else probe() for key, probe in probes.items()}
    new = {k: v for k, v in answers.items() if k not in known and k not in volatile}
    if new:
        _write(cache_name(), {**known, **new})
    return answers


def missing_kinds(kinds: tuple[str, ...], unshare: list[str]) -> list[str]:
    """The kinds among `kinds` this kernel cannot create (cached per release)."""
    answers = _answers({f"kind:{k}": (lambda k=k: _create(k, unshare)) for k in kinds})
    return [k for k in kinds if answers[f"kind:{k}"]]


def missing_features(names: tuple[str, ...], unshare: list[str]) -> dict[str, str]:
    """{name: ABSENT or DENIED} for the features among `names` this lab cannot use.

    `unshare` is the lab's options (lab.unshare_options()); the features' tools must be
    on PATH (tools_for()). Volatile features are probed every time, the rest cached."""
    answers = _answers({f"feature:{n}": (lambda n=n: _try(n, unshare)) for n in names},
                       volatile=frozenset(f"feature:{n}" for n in names if FEATURES[n].volatile))
    return {n: answers[f"feature:{n}"] for n in names if answers[f"feature:{n}"]}


def _create(kind: str, unshare: list[str]) -> str:
    # `ip -batch -` reads the commands from stdin so that no shell is involved, and
    # stops at the first that fails.
    batch = "".join(" ".join(argv[1:]) + "\n" for argv in probe_argv(kind))  # without "ip"
    res = _in_scratch(unshare, ["ip", "-batch", "-"], batch)
    return "" if res and res.returncode == 0 else ABSENT


def _try(name: str, unshare: list[str]) -> str:
    feature = FEATURES[name]
    options = unshare
    if feature.unprivileged and "--user" not in unshare:
        # Root's capabilities do not reach into a user namespace it creates.
        options = ["--user", "--map-root-user", *unshare]
    answer = _verdict(feature, _in_scratch(options, feature.probe))
    if answer and feature.enable and in_vm_guest():
        try:
            subprocess.run(feature.enable, capture_output=True, timeout=PROBE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            return answer
        answer = _verdict(feature, _in_scratch(options, feature.probe))
    return answer


def _in_scratch(options: list[str], argv: list[str] | tuple[str, ...],
                stdin: str = "") -> subprocess.CompletedProcess | None:
    """Run argv in a namespace of its own that vanishes with it; None if it hung."""
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))  # for the BPF probe
    try:
        return subprocess.run(["unshare", *options, "--", *argv], input=stdin, env=env,
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None


def _verdict(feature: Feature, res: subprocess.CompletedProcess | None) -> str:
    if res is None:
        return ABSENT
    if res.returncode == 0:
        return ""
    if feature.probe[:len(_SELF)] == _SELF:  # exits with an errno
        refused = res.returncode in (errno.EPERM, errno.EACCES)
    else:
        refused = any(s in res.stderr for s in ("Operation not permitted", "Permission denied"))
    return DENIED if refused else ABSENT


def in_vm_guest() -> bool:
    """Whether this is the vm lab's guest, a machine of the lab's own (virtme-ng boots
    it with virtme_* parameters on the kernel's command line)."""
    try:
        return "virtme" in Path("/proc/cmdline").read_text()
    except OSError:
        return False


# Two instructions, `r0 = 0; exit`: the smallest program the verifier accepts.
_BPF_INSNS = bytes([0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
_BPF_PROG_LOAD = 5
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}


class _ProgLoadAttr(ctypes.Structure):
    # The head of union bpf_attr for BPF_PROG_LOAD; the kernel takes the rest as zero.
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32)]


def load_bpf(prog_type: int) -> int:
    """Load, then close, a trivial BPF program of `prog_type`: 0, or the errno of bpf(2)
    (ENOSYS where this machine's syscall number is unknown)."""
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        return errno.ENOSYS
    insns = ctypes.create_string_buffer(_BPF_INSNS, len(_BPF_INSNS))
    license = ctypes.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr(prog_type=prog_type, insn_cnt=len(_BPF_INSNS) // 8,
                         insns=ctypes.addressof(insns), license=ctypes.addressof(license))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(ctypes.c_long(number), ctypes.c_long(_BPF_PROG_LOAD), ctypes.byref(attr),
                      ctypes.c_uint(ctypes.sizeof(attr)))
    if fd < 0:
        return ctypes.get_errno() or errno.EINVAL
    os.close(fd)
    return 0


def force_sndbuf(size: int = 1 << 22) -> int:
    """Set a netfilter netlink socket's send buffer to `size` bytes past the system's
    limit, as nft does before a large transaction: 0, or the errno (EPERM without
    CAP_NET_ADMIN in the machine's own user namespace)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
        except OSError as exc:
            return exc.errno or errno.EPERM
    return 0


NETLINK_NETFILTER, SO_SNDBUFFORCE = 12, 32


if __name__ == "__main__":  # python -m deepdive.features bpf PROG_TYPE | sndbuf: the probes
    if sys.argv[1:2] == ["bpf"]:
        sys.exit(load_bpf(int(sys.argv[2])))
    sys.exit(force_sndbuf() if sys.argv[1:2] == ["sndbuf"] else 2)
