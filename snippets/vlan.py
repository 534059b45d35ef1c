"""vlan: several separate networks on one cable, told apart by an 802.1Q tag.

Run with `invoke lab.run --page vlan`; the page is docs/interfaces/vlan.md.
"""
import re

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, received, transmitted
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

page.step(
    "trunk", "Connect the two namespaces with one cable",
    "ip link add eth0 netns ns1 address 02:00:00:00:00:01 type veth"
    " peer name eth0 netns ns2 address 02:00:00:00:00:02",
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
page.step(
    "mismatch", "Same subnet, different VLAN: move ns1's 10.0.20.1 to VLAN 30",
    "ip -n ns1 link del eth0.20",
    "ip -n ns1 link add link eth0 name eth0.30 type vlan id 30",
    "ip -n ns1 addr add 10.0.20.1/24 dev eth0.30",
    "ip -n ns1 link set eth0.30 up",
    cmd(TRUNK + " vlan 30", background=True, ready="listening on"),
    cmd("ip netns exec ns1 ping -c 1 -W 0.5 10.0.20.2", rc=1),
    snapshot=True,
)
page.step(
    "limits", "VLAN IDs run from 1 to 4094",
    cmd("ip -n ns1 link add link eth0 name eth0.4095 type vlan id 4095", rc=2),
    "ip -n ns1 link add link eth0 name eth0.4094 type vlan id 4094",
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


@page.check("mismatch", "ns1's ARP request reached ns2's eth0 tagged `vlan 30`, and ns2 never answered")
def _(lab):
    seen = frames(lab.output("tcpdump", step="mismatch"))
    return len(seen) == 1 and "vlan 30, p 0, ethertype ARP (0x0806), Request who-has 10.0.20.2 tell 10.0.20.1" in seen[0]


@page.check("mismatch", "ns2 has no interface for VLAN 30, so nothing there takes the frame")
def _(lab):
    snap = lab.snapshot
    ns2 = next(n for n in snap["nodes"] if n["name"] == "ns2")
    return not any(l["kind"] == "vlan" and l["details"].get("id") == 30 for l in ns2["links"])


@page.check("limits", "The kernel refuses VLAN ID 4095 and accepts 4094")
def _(lab):
    return "Invalid VLAN id" in lab.result("id 4095", step="limits").stderr and \
        lab.link("ns1", "eth0.4094")["details"].get("id") == 4094


@page.check("limits", "One parent can have only one interface per VLAN ID")
def _(lab):
    return "VLAN device already exists" in lab.result("eth0.ten", step="limits").stderr
