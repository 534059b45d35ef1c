"""The lab's state, read through netlink (pyroute2): what diagrams are drawn from.

A snapshot is plain JSON-able data:

    {"nodes": [{"name": "ns1", "links": [
        {"name": "veth0", "index": 2, "kind": "veth", "mac": "02:00:00:00:01:01",
         "mtu": 1500, "up": true, "carrier": true, "promisc": false,
         "master": null, "peer": {"node": "ns2", "name": "veth1"},
         "parent": null, "details": {}, "addresses": ["10.0.0.1/24"]}]}]}

`parent` is the device a vlan, macvlan, ipvlan or vxlan link is stacked on; `details`
holds the kind's distinguishing settings (vlan id, vxlan vni and port, modes). Some kinds
carry one more key, only where it applies: a vxlan link `"vxlan": {"local": "192.168.0.1"
| None, "remote": "192.168.0.2" | None}` (remote: the unicast peer or multicast group); a
tun or tap link `"program": "tuntap_reader.py" | None` (the process holding it open
through /dev/net/tun: its command name, or its script's for an interpreter); a bond's port `"bond_state": "active" | "backup"`.

`host` is the lab's own root namespace, the one a reader's commands without
`ip netns exec` act on. Loopback devices are left out.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from contextlib import ExitStack
from typing import Any, Callable, TypeVar

T = TypeVar("T")

NETNS_DIR = "/run/netns"
HOST = "host"
IFF_UP = 0x1
IFF_PROMISC = 0x100
TUN_TYPES = {1: "tun", 2: "tap"}


_importing: threading.Thread | None = None


def import_in_background() -> None:
    """Start import_iproute() in a thread, for take() to wait for: the lab's first
    commands run meanwhile, and they mostly wait on the kernel."""
    global _importing
    _importing = threading.Thread(target=import_iproute, daemon=True)
    _importing.start()


def import_iproute() -> None:
    """Import pyroute2's IPRoute, once, for every page's child to inherit; `from pyroute2
    import IPRoute` then finds it.

    pyroute2's own __init__ imports every part of the library (NDB, IPDB, conntrack,
    IPVS, nl80211, ...): 0.14 s on the host against 0.05 s for IPRoute alone, and under
    emulation 34 s of a loaded guest's start against 27 s. So the package is registered
    without running its __init__; that runs only if something asks the package for a name
    that is neither IPRoute nor a module."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def attribute(name: str) -> object:  # PEP 562: asked for a name the package lacks
        try:
            return importlib.import_module(f"pyroute2.{name}")  # `from pyroute2 import config`
        except ModuleNotFoundError as exc:
            if exc.name != f"pyroute2.{name}":
                raise
        del package.__getattr__  # type: ignore[attr-defined]
        loader.exec_module(package)  # the whole library, as `import pyroute2` has it
        return getattr(package, name)

    package.__getattr__ = attribute  # type: ignore[attr-defined]
    sys.modules["pyroute2"] = package
    from pyroute2.iproute.linux import IPRoute
    package.IPRoute = IPRoute  # type: ignore[attr-defined]


def take(nodes: list[str]) -> dict[str, Any]:
    """Read links and addresses of `host` and every namespace in `nodes`."""
    if _importing is not None:
        _importing.join()
    import_iproute()
    from pyroute2 import IPRoute  # imported here: only the lab process needs netlink

    names = [HOST, *nodes]
    with ExitStack() as stack:
        fds = {HOST: os.open("/proc/thread-self/ns/net", os.O_RDONLY)}
        stack.callback(os.close, fds[HOST])
        for n in nodes:
            fds[n] = os.open(os.path.join(NETNS_DIR, n), os.O_RDONLY)
            stack.callback(os.close, fds[n])
        sockets = {HOST: stack.enter_context(IPRoute())}
        for n in nodes:
            sockets[n] = stack.enter_context(opened_in(fds[n], fds[HOST], IPRoute))
        raw = {n: _read(sockets[n]) for n in names}
        nsids = {n: _nsid_map(sockets[n], fds, n) for n in names}

    out = []
    for n in names:
        links = []
        for link in raw[n]["links"]:
            links.append(_link(n, link, raw, nsids))
        if n != HOST or links:
            out.append({"name": n, "links": links})
    return {"nodes": out}


CLONE_NEWNET = 0x40000000


def opened_in(netns: int, home: int, opener: Callable[[], T]) -> T:
    """opener() run with this thread in the network namespace `netns` (a file descriptor),
    then back in `home`: a netlink socket stays in the namespace it was made in. pyroute2's
    own IPRoute(netns=...) forks a helper process per namespace for that, ~20 ms each."""
    _setns(netns)
    try:
        return opener()
    finally:
        _setns(home)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def _read(ipr) -> dict[str, Any]:
    links = [l for l in ipr.get_links() if l.get("ifname") != "lo"]
    addrs: dict[int, list[str]] = {}
    for a in ipr.get_addr():
        # Link-local IPv6 addresses are generated by the kernel a moment after a link
        # gets its carrier; recording them would make snapshots depend on timing.
        if a.get("IFA_ADDRESS") is None or a.get("IFA_ADDRESS").lower().startswith("fe80:"):
            continue
        addrs.setdefault(a["index"], []).append(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}")
    return {"links": links, "addrs": addrs, "by_index": {l["index"]: l for l in ipr.get_links()}}


def _nsid_map(ipr, fds: dict[str, int], own: str) -> dict[int, str]:
    """nsid (as this namespace numbers its peers) -> node name; `fds` holds an open file
    descriptor of each node's namespace."""
    result = {}
    for other, fd in fds.items():
        if other == own:
            continue
        nsid = ipr.get_netnsid(fd=fd).get("nsid")
        if nsid is not None and nsid >= 0:
            result[nsid] = other
    return result


def _link(node: str, link, raw: dict, nsids: dict) -> dict[str, Any]:
    index = link["index"]
    kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "device"
    if kind == "tun":  # one driver for both; its type attribute says which
        kind = TUN_TYPES.get(link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_TUN_TYPE"), kind)
    own = raw[node]
    master_idx = link.get("IFLA_MASTER")
    master = own["by_index"][master_idx].get("ifname") if master_idx in own["by_index"] else None
    # IFLA_LINK is a veth's peer, or the device a vlan/macvlan/ipvlan sits on (its
    # parent); a vxlan names its underlay device in its own data instead.
    other = _resolve(node, link.get("IFLA_LINK"), link.get("IFLA_LINK_NETNSID"), raw, nsids)
    if kind == "vxlan":
        other = _resolve(node, _info(link, "IFLA_VXLAN_LINK"), None, raw, nsids)
    if other == {"node": node, "name": link.get("ifname")}:
        other = None
    peer, parent = (other, None) if kind == "veth" else (None, other)
    return {
        "name": link.get("ifname"),
        "index": index,
        "kind": kind,
        "mac": link.get("IFLA_ADDRESS"),
        "mtu": link.get("IFLA_MTU"),
        # Admin state and carrier change at once; the operational state follows them
        # a moment later (linkwatch), so reading it would make snapshots racy.
        "up": bool(link["flags"] & IFF_UP),
        "carrier": bool(link.get("IFLA_CARRIER")),
        # Bridges raise a port's promiscuity counter, not its IFF_PROMISC flag.
        "promisc": bool(link.get("IFLA_PROMISCUITY")) or bool(link["flags"] & IFF_PROMISC),
        "master": master,
        "peer": peer,
        "parent": parent,
        "details": _details(kind, link),
        "addresses": own["addrs"].get(index, []),
        **_extras(kind, link),
    }


def _resolve(node: str, index: int | None, nsid: int | None, raw: dict, nsids: dict) -> dict | None:
    """{"node", "name"} of interface `index` in the namespace `nsid` names (here if None)."""
    if not index:
        return None
    where = node if nsid is None else nsids[node].get(nsid)
    if where is None or index not in raw[where]["by_index"]:
        return None
    return {"node": where, "name": raw[where]["by_index"][index].get("ifname")}


def _info(link, attr: str) -> Any:
    return link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", attr)


# What a reader needs to tell two links of one kind apart, per kind: label -> attribute.
DETAILS = {
    "vlan": {"id": "IFLA_VLAN_ID"},
    "vxlan": {"vni": "IFLA_VXLAN_ID", "dstport": "IFLA_VXLAN_PORT"},
    "macvlan": {"mode": "IFLA_MACVLAN_MODE"},
    "macvtap": {"mode": "IFLA_MACVLAN_MODE"},
    "ipvlan": {"mode": "IFLA_IPVLAN_MODE"},
    "bond": {"mode": "IFLA_BOND_MODE"},
}
# Numbers netlink reports for modes, in the words `ip -d link` uses.
MODE_NAMES = {
    "ipvlan": {0: "l2", 1: "l3", 2: "l3s"},
    "bond": {0: "balance-rr", 1: "active-backup", 2: "balance-xor", 3: "broadcast",
             4: "802.3ad", 5: "balance-tlb", 6: "balance-alb"},
}


def _details(kind: str, link) -> dict[str, Any]:
    out = {}
    for label, attr in DETAILS.get(kind, {}).items():
        value = _info(link, attr)
        if value is not None:
            out[label] = MODE_NAMES.get(kind, {}).get(value, value) if label == "mode" else value
    return out


BOND_SLAVE_STATES = {0: "active", 1: "backup"}  # IFLA_BOND_SLAVE_STATE (BOND_STATE_*)


def _extras(kind: str, link) -> dict[str, Any]:
    """The keys only some kinds carry (see the module docstring): what a diagram needs to
    draw a tunnel's two ends, the program behind a tun/tap, a bond's active port."""
    out: dict[str, Any] = {}
    if kind == "vxlan":
        out["vxlan"] = {"local": _info(link, "IFLA_VXLAN_LOCAL") or _info(link, "IFLA_VXLAN_LOCAL6"),
                        "remote": _info(link, "IFLA_VXLAN_GROUP") or _info(link, "IFLA_VXLAN_GROUP6")}
    if kind in ("tun", "tap"):
        out["program"] = tun_holders().get(link.get("ifname"))
    if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_KIND") == "bond":
        state = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA", "IFLA_BOND_SLAVE_STATE")
        out["bond_state"] = BOND_SLAVE_STATES.get(state)
    return out


INTERPRETERS = ("python", "perl", "ruby", "node", "sh", "bash")


def tun_holders(proc: str = "/proc") -> dict[str, str]:
    """tun/tap device name -> the program holding it: every open /dev/net/tun file's
    fdinfo names its device ("iff:", a tab, "tun0"; Linux 4.12 and later). The program
    is the command name (comm), or for an interpreter the file name of its script. A
    process that exits while being read is skipped; the lowest pid wins a tie."""
    found: dict[str, str] = {}
    pids = sorted((int(p) for p in os.listdir(proc) if p.isdigit()), reverse=True)
    for pid in pids:
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
            for fd in fds:
                if os.readlink(f"{proc}/{pid}/fd/{fd}") != "/dev/net/tun":
                    continue
                with open(f"{proc}/{pid}/fdinfo/{fd}") as f:
                    for line in f:
                        if line.startswith("iff:"):
                            found[line.split(":", 1)[1].strip()] = _program(f"{proc}/{pid}")
        except OSError:  # gone, or not ours to read
            continue
    return found


def _program(pid_dir: str) -> str:
    with open(f"{pid_dir}/comm") as f:
        comm = f.read().strip()
    with open(f"{pid_dir}/cmdline", "rb") as f:
        argv = f.read().decode(errors="replace").split("\0")
    if comm.startswith(INTERPRETERS) and len(argv) > 1 and argv[1] and not argv[1].startswith("-"):
        return os.path.basename(argv[1])
    return comm


def find_link(snapshot: dict[str, Any], node: str, name: str) -> dict[str, Any]:
    for n in snapshot["nodes"]:
        if n["name"] == node:
            for link in n["links"]:
                if link["name"] == name:
                    return link
    raise KeyError(f"no link {name} in {node}")


def holders(snapshot: dict[str, Any], address: str) -> list[tuple[str, str]]:
    """(node, link) of every link that holds the IP `address` ("10.0.0.1"), whatever its
    prefix length, in snapshot order."""
    return [(n["name"], link["name"]) for n in snapshot["nodes"] for link in n["links"]
            if any(a.split("/")[0] == address for a in link["addresses"])]
