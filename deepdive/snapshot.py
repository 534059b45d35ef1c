"""The lab's state, read through netlink (pyroute2): what diagrams are drawn from.

A snapshot is plain JSON-able data:

    {"nodes": [{"name": "ns1", "links": [
        {"name": "veth0", "index": 2, "kind": "veth", "mac": "02:00:00:00:01:01",
         "mtu": 1500, "up": true, "carrier": true, "promisc": false,
         "master": null, "peer": {"node": "ns2", "name": "veth1"},
         "parent": null, "details": {}, "addresses": ["10.0.0.1/24"]}]}]}

`parent` is the device a vlan, macvlan, ipvlan or vxlan link is stacked on; `details`
holds the kind's distinguishing settings (vlan id, vxlan vni and port, modes).

`host` is the lab's own root namespace, the one a reader's commands without
`ip netns exec` act on. Loopback devices are left out.
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any

NETNS_DIR = "/run/netns"
HOST = "host"
IFF_UP = 0x1
IFF_PROMISC = 0x100
TUN_TYPES = {1: "tun", 2: "tap"}


def take(nodes: list[str]) -> dict[str, Any]:
    """Read links and addresses of `host` and every namespace in `nodes`."""
    from pyroute2 import IPRoute  # imported here: only the lab process needs netlink

    names = [HOST, *nodes]
    with ExitStack() as stack:
        sockets = {HOST: stack.enter_context(IPRoute())}
        for n in nodes:
            sockets[n] = stack.enter_context(IPRoute(netns=n))
        raw = {n: _read(sockets[n]) for n in names}
        nsids = {n: _nsid_map(sockets[n], names, n) for n in names}

    out = []
    for n in names:
        links = []
        for link in raw[n]["links"]:
            links.append(_link(n, link, raw, nsids))
        if n != HOST or links:
            out.append({"name": n, "links": links})
    return {"nodes": out}


def _read(ipr) -> dict[str, Any]:
    links = [l for l in ipr.get_links() if l.get("ifname") != "lo"]
    addrs: dict[int, list[str]] = {}
    for a in ipr.get_addr():
        if a.get("IFA_ADDRESS") is None:
            continue
        addrs.setdefault(a["index"], []).append(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}")
    return {"links": links, "addrs": addrs, "by_index": {l["index"]: l for l in ipr.get_links()}}


def _nsid_map(ipr, names: list[str], own: str) -> dict[int, str]:
    """nsid (as this namespace numbers its peers) -> node name."""
    result = {}
    for other in names:
        if other == own:
            continue
        path = f"/proc/{os.getpid()}/ns/net" if other == HOST else os.path.join(NETNS_DIR, other)
        fd = os.open(path, os.O_RDONLY)
        try:
            nsid = ipr.get_netnsid(fd=fd).get("nsid")
        finally:
            os.close(fd)
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


def find_link(snapshot: dict[str, Any], node: str, name: str) -> dict[str, Any]:
    for n in snapshot["nodes"]:
        if n["name"] == node:
            for link in n["links"]:
                if link["name"] == name:
                    return link
    raise KeyError(f"no link {name} in {node}")
