"""vlan: several separate networks on one cable, told apart by an 802.1Q tag.

Run with `invoke lab.run --page vlan`; the page is docs/interfaces/vlan.md.
"""
import re

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, indexes, received, transmitted
from deepdive.snapshot import find_link, holders

page = Page(
    name="vlan",
    title="vlan: several networks on one cable",
    nodes=("ns1", "ns2"),
    needs=Needs(kinds=("veth", "vlan"), tools=("ping", "tcpdump")),
    ipv6=False,
)

# ns2 watches the parent interface, where frames still carry their tag.
TRUNK = "ip netns exec ns2 tcpdump -i eth0 --immediate-mode -n -e -t -l"

# `index 5` numbers ns2's end: in two fresh namespaces both ends would otherwise be
# link 2, and ns1's `eth0@if2` could not show whose index the 2 is.
page.step(
    "trunk", "Connect the two namespaces with one cable",
    "ip link add eth0 netns ns2 index 5 address 02:00:00:00:00:02 type veth"
    " peer name eth0 netns ns1 address 02:00:00:00:00:01",
    "ip -n ns1 link set eth0 up",
    "ip -n ns2 link set eth0 up",
)
page.step(
    "vlans", "Give each end a VLAN 10 and a VLAN 20 interface",
    *[c for n in (1, 2) for c in (
        f"ip -n ns{n} link add link eth0 name eth0.10 type vlan id 10",
        f"ip -n ns{n} link add link eth0 name eth0.20 type vlan id 20",
        f"ip -n ns{n} addr add 10.0.10.{n}/24 dev eth0.10",
        f"ip -n ns{n} addr add 10.0.20.{n}/24 dev eth0.20",
        f"ip -n ns{n} link set eth0.10 up",
        f"ip -n ns{n} link set eth0.20 up",
    )],
    snapshot=True,
)
page.step(
    "show", "Look at the VLAN interfaces",
    "ip -n ns1 link show",
    "ip -n ns1 -details link show eth0.10",
    "ip netns exec ns1 cat /proc/net/vlan/config",
)
page.step(
    "tagged", "Ping in each VLAN while ns2 captures on the parent eth0",
    cmd(TRUNK, background=True, ready="listening on"),
    "ip netns exec ns1 ping -c 1 -W 1 10.0.10.2",
    "ip netns exec ns1 ping -c 1 -W 1 10.0.20.2",
)
page.step(
    "untagged", "The same ping, captured on eth0.10",
    cmd("ip netns exec ns2 tcpdump -i eth0.10 --immediate-mode -n -e -t -l icmp", background=True, ready="listening on"),
    "ip netns exec ns1 ping -c 1 -W 1 10.0.10.2",
)
# Both captures take every frame: an answer in any VLAN would show on the parent, and
# anything the kernel handed to eth0.20 would show there. The neighbour tables are
# emptied first: an entry used to answer a ping is rechecked with an ARP request about
# 5 s later (ns2's for 10.0.20.1 among them), and such a request could cross during the
# captures, at a moment that depends on the machine's speed.
page.step(
    "mismatch", "Same subnet, different VLAN: move ns1's 10.0.20.1 to VLAN 30",
    "ip -n ns1 neigh flush all",
    "ip -n ns2 neigh flush all",
    "ip -n ns1 link del eth0.20",
    "ip -n ns1 link add link eth0 name eth0.30 type vlan id 30",
    "ip -n ns1 addr add 10.0.20.1/24 dev eth0.30",
    "ip -n ns1 link set eth0.30 up",
    cmd(TRUNK, background=True, ready="listening on"),
    cmd("ip netns exec ns2 tcpdump -i eth0.20 --immediate-mode -n -e -t -l", background=True, ready="listening on"),
    cmd("ip netns exec ns1 ping -c 1 -W 0.5 10.0.20.2", rc=1),
    snapshot=True,
)
page.step(
    "limits", "The kernel takes VLAN IDs 0 to 4094",
    cmd("ip -n ns1 link add link eth0 name eth0.4095 type vlan id 4095", rc=2),
    "ip -n ns1 link add link eth0 name eth0.4094 type vlan id 4094",
    "ip -n ns1 link add link eth0 name eth0.0 type vlan id 0",
    "ip -n ns1 -details link show eth0.0",
    cmd("ip -n ns1 link add link eth0 name eth0.ten type vlan id 10", rc=2),
)


def frames(capture: str) -> list[str]:
    return [line for line in capture.splitlines() if line.startswith("02:")]


@page.check("vlans", "Each eth0.N is a vlan link on eth0 with id N, in both namespaces")
def _(lab):
    snap = lab.snapshot
    links = [(n, vid, find_link(snap, f"ns{n}", f"eth0.{vid}")) for n in (1, 2) for vid in (10, 20)]
    return all(link["kind"] == "vlan" and link["parent"] == {"node": f"ns{n}", "name": "eth0"}
               and link["details"].get("id") == vid for n, vid, link in links)


@page.check("show", "The VLAN interfaces take their parent's MAC address")
def _(lab):
    snap = lab.snapshot
    mac = find_link(snap, "ns1", "eth0")["mac"]
    same = all(find_link(snap, "ns1", name)["mac"] == mac for name in ("eth0.10", "eth0.20"))
    return same and lab.output("-n ns1 link show", step="show").count(f"link/ether {mac} ") == 3


@page.check("show", "In `eth0@if5`, 5 is the index of eth0's peer in ns2; ns1's eth0 itself is link 2")
def _(lab):
    own, peer = lab.link("ns1", "eth0"), lab.link("ns2", "eth0")
    return own["peer"] == {"node": "ns2", "name": "eth0"} and own["index"] != peer["index"] and \
        indexes(lab.output("-n ns1 link show", step="show"), "eth0") == (own["index"], peer["index"])


@page.check("show", "`ip -details` names the protocol and the ID: `vlan protocol 802.1Q id 10`")
def _(lab):
    return "vlan protocol 802.1Q id 10 " in lab.output("-details link show eth0.10")


@page.check("tagged", "Hosts in the same VLAN reach each other: both pings are answered, "
                      "by ns2's addresses on eth0.10 and eth0.20")
def _(lab):
    snap = lab.snapshot
    return all(answered(lab.output(f"ping -c 1 -W 1 {ip}", step="tagged"), ip)
               and holders(snap, ip) == [("ns2", link)]
               for ip, link in (("10.0.10.2", "eth0.10"), ("10.0.20.2", "eth0.20")))


@page.check("tagged", "On the parent, every frame carries an 802.1Q tag with the right ID: "
                      "4 frames tagged `vlan 10`, then 4 tagged `vlan 20`")
def _(lab):
    seen = frames(lab.output("tcpdump", step="tagged"))
    tags = [re.search(r"ethertype 802\.1Q \(0x8100\), length \d+: vlan (\d+), p 0, ethertype", f) for f in seen]
    if not all(tags):
        return False
    ids = [int(t.group(1)) for t in tags]
    pings = [f for f in seen if "ICMP echo" in f]
    return ids == [10] * 4 + [20] * 4 and len(pings) == 4 and \
        all("10.0.10." in f for f in seen[:4] if "ICMP" in f) and \
        all("10.0.20." in f for f in seen[4:] if "ICMP" in f)


@page.check("untagged", "On eth0.10 the same ping has no tag, and each frame is 4 bytes shorter (98 instead of 102)")
def _(lab):
    child = frames(lab.output("tcpdump", step="untagged"))
    parent = [f for f in frames(lab.output("tcpdump", step="tagged")) if "10.0.10.1 > 10.0.10.2: ICMP" in f]
    return len(child) == 2 and all("802.1Q" not in f and "ethertype IPv4 (0x0800), length 98:" in f
                                   for f in child) and \
        len(parent) == 1 and "length 102: vlan 10" in parent[0]


@page.check("mismatch", "Same subnet, different VLAN: ns1 gets no answer from 10.0.20.2, "
                        "though ns2's eth0.20 is up and holds that address")
def _(lab):
    ping = lab.output("ping -c 1 -W 0.5 10.0.20.2", step="mismatch")
    snap = lab.snapshot
    return transmitted(ping) == 1 and received(ping) == 0 and \
        holders(snap, "10.0.20.2") == [("ns2", "eth0.20")] and find_link(snap, "ns2", "eth0.20")["up"] and \
        holders(snap, "10.0.20.1") == [("ns1", "eth0.30")]


@page.check("mismatch", "ns1's ARP request reached ns2's eth0 tagged `vlan 30`, and nothing came back in any "
                        "VLAN: the unfiltered capture holds ns1's requests and no other frame")
def _(lab):
    seen = frames(lab.output("tcpdump -i eth0 ", step="mismatch"))
    request = ("02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff, ethertype 802.1Q (0x8100), length 46: vlan 30, p 0, "
               "ethertype ARP (0x0806), Request who-has 10.0.20.2 tell 10.0.20.1, length 28")
    return len(seen) >= 1 and all(f == request for f in seen)


@page.check("mismatch", "The frame never reached eth0.20, the interface that holds 10.0.20.2: "
                        "its capture is empty")
def _(lab):
    res = lab.result("tcpdump -i eth0.20", step="mismatch")
    return "listening on eth0.20" in res.stderr and frames(res.stdout) == [] and \
        "0 packets captured" in res.stderr


@page.check("limits", "The kernel refuses VLAN ID 4095 (`8021q: Invalid VLAN id`), and accepts 4094 and 0")
def _(lab):
    return lab.result("id 4095", step="limits").stderr.strip() == "Error: 8021q: Invalid VLAN id." and \
        lab.link("ns1", "eth0.4094")["details"].get("id") == 4094 and \
        lab.link("ns1", "eth0.0")["details"].get("id") == 0 and \
        "vlan protocol 802.1Q id 0 " in lab.output("-details link show eth0.0", step="limits")


@page.check("limits", "One parent can have only one interface per VLAN ID")
def _(lab):
    return "VLAN device already exists" in lab.result("eth0.ten", step="limits").stderr
