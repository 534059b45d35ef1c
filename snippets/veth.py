"""veth: a virtual Ethernet cable between two network namespaces.

Run with `invoke lab.run --page veth`; the page is docs/interfaces/veth.md.
"""
import json

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, indexes, inet6, link_local, neighbour, received, transmitted

page = Page(
    name="veth",
    title="veth: a virtual Ethernet cable",
    nodes=("ns1", "ns2"),
    needs=Needs(kinds=("veth",), tools=("ping",)),
)

page.step(
    "pair", "Create a veth pair with one end in each namespace",
    # Fixed indexes, unlike each namespace's first free one (2 at both ends), so that
    # `veth0@ifN` shows whose index N is.
    "ip link add veth0 netns ns1 index 10 address 02:00:00:00:01:01 type veth"
    " peer name veth1 netns ns2 index 20 address 02:00:00:00:01:02",
)
page.step(
    "address", "Give each end an address and bring both up",
    "ip -n ns1 addr add 10.0.0.1/24 dev veth0",
    "ip -n ns2 addr add 10.0.0.2/24 dev veth1",
    "ip -n ns1 link set veth0 up",
    "ip -n ns2 link set veth1 up",
    snapshot=True,
)
page.step(
    "show", "Look at both ends",
    "ip -n ns1 link show veth0",
    "ip -n ns2 link show veth1",
    "ip -n ns1 netns list-id",
    "ip -n ns1 -details link show veth0",
)
page.step(
    "ping", "Ping across the pair",
    "ip netns exec ns1 ping -c 3 -i 0.2 -W 1 10.0.0.2",
    "ip -n ns1 neigh show dev veth0",
)
# A link-local address is "tentative" until Duplicate Address Detection has heard no
# objection, a second or two after the link came up; until then it cannot be used.
page.step(
    "ipv6", "Look at the IPv6 link-local addresses, and ping one",
    cmd("ip -n ns1 addr show dev veth0", until="fe80::ff:fe00:101/64 scope link \n"),
    cmd("ip -n ns2 addr show dev veth1", until="fe80::ff:fe00:102/64 scope link \n"),
    "ip netns exec ns1 ping -c 1 -W 1 fe80::ff:fe00:102%veth0",
    "ip -n ns1 -6 neigh show dev veth0",
)
page.step(
    "down", "Take one end down and look at the other",
    "ip -n ns1 link set veth0 down",
    "ip -n ns2 link show veth1",
    cmd("ip netns exec ns2 ping -c 1 -W 0.5 10.0.0.1", rc=1),
    snapshot=True,
)
page.step(
    "up", "Bring it back",
    "ip -n ns1 link set veth0 up",
    "ip -n ns2 link show veth1",
    "ip netns exec ns1 ping -c 1 -W 2 10.0.0.2",
)


@page.check("address", "The kernel reports veth1 in ns2 as the peer of veth0 in ns1")
def _(lab):
    return lab.link("ns1", "veth0")["peer"] == {"node": "ns2", "name": "veth1"}


@page.check("show", "The N in `veth0@ifN` is veth1's index in ns2 (20), not veth0's own (10); `veth1@if10` points back, and link-netns names ns2")
def _(lab):
    own, peer = lab.link("ns1", "veth0")["index"], lab.link("ns2", "veth1")["index"]
    veth0 = lab.output("ip -n ns1 link show veth0", step="show")
    veth1 = lab.output("ip -n ns2 link show veth1", step="show")
    return ((own, peer) == (10, 20) and indexes(veth0, "veth0") == (own, peer)
            and indexes(veth1, "veth1") == (peer, own) and "link-netns ns2" in veth0)


@page.check("show", "What the kernel gives for veth0's peer namespace is a number, the nsid ns1 has for ns2: "
                    "`ip -j` prints link_netnsid, and `ip netns list-id` maps that number to ns2")
def _(lab):
    nsid = json.loads(lab.run("ip -n ns1 -j link show veth0").stdout)[0].get("link_netnsid")
    return (isinstance(nsid, int)
            and f"nsid {nsid} (iproute2 netns name: ns2)" in lab.output("netns list-id", step="show"))


@page.check("ping", "All three pings from ns1 are answered by 10.0.0.2, one reply to each")
def _(lab):
    return answered(lab.output("ping -c 3"), "10.0.0.2", 3)


@page.check("ping", "ns1 learned veth1's MAC address for 10.0.0.2 by ARP: the entry is REACHABLE, not PERMANENT")
def _(lab):
    return neighbour(lab.output("neigh show", step="ping"), "10.0.0.2") == ("02:00:00:00:01:02", "REACHABLE")


@page.check("ipv6", "Each end has an IPv6 link-local address made from its MAC address (EUI-64), no longer tentative")
def _(lab):
    return all(inet6(lab.output(f"ip -n {ns} addr show dev {name}", step="ipv6"))
               == [f"{link_local(lab.link(ns, name)['mac'])}/64 scope link"]
               for ns, name in (("ns1", "veth0"), ("ns2", "veth1")))


@page.check("ipv6", "ns1's ping to fe80::ff:fe00:102%veth0 is answered by that address, through veth0")
def _(lab):
    ping = lab.output("ping -c 1 -W 1 fe80::ff:fe00:102%veth0", step="ipv6")
    return received(ping) == 1 and "64 bytes from fe80::ff:fe00:102%veth0: icmp_seq=1 " in ping


@page.check("ipv6", "ns1 learned veth1's MAC address for its link-local address by Neighbour Discovery: the entry is REACHABLE")
def _(lab):
    ll = link_local(lab.link("ns2", "veth1")["mac"])
    return neighbour(lab.output("-6 neigh show", step="ipv6"), ll) == ("02:00:00:00:01:02", "REACHABLE")


@page.check("down", "With veth0 down, veth1 loses its carrier though it is still administratively up")
def _(lab):
    link = lab.link("ns2", "veth1")
    shown = lab.output("link show veth1", step="down")
    return not link["carrier"] and "NO-CARRIER" in shown and ",UP" in shown


@page.check("down", "No ping gets through while one end is down, though veth0 still holds 10.0.0.1")
def _(lab):
    ping = lab.output("ping -c 1", step="down")
    veth0 = lab.link("ns1", "veth0")
    return (transmitted(ping) == 1 and received(ping) == 0
            and not veth0["up"] and "10.0.0.1/24" in veth0["addresses"])


@page.check("up", "The carrier comes back and pings flow again")
def _(lab):
    return lab.link("ns2", "veth1")["carrier"] and answered(lab.output("ping -c 1", step="up"), "10.0.0.2")
