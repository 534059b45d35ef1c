"""ipvlan: many IP addresses, each in its own namespace, behind one MAC address.

Run with `invoke lab.run --page ipvlan`; the page is docs/interfaces/ipvlan.md.
"""
from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, neighbour, received, transmitted
from deepdive.snapshot import find_link, holders

page = Page(
    name="ipvlan",
    title="ipvlan: many IPs behind one MAC",
    nodes=("peer", "pod1", "pod2"),
    needs=Needs(kinds=("veth", "ipvlan", "macvlan"), tools=("ping", "tcpdump")),
    ipv6=False,
)

NODE_MAC = "02:00:00:00:00:01"

page.step(
    "uplink", "Give the host an eth0, cabled to a peer on the same LAN",
    f"ip link add eth0 address {NODE_MAC} type veth peer name eth0 netns peer address 02:00:00:00:00:02",
    "ip link set eth0 up",
    "ip -n peer addr add 10.0.0.100/24 dev eth0",
    "ip -n peer link set eth0 up",
)
page.step(
    "children", "Create an ipvlan child of eth0 in each pod",
    *[c for i in (1, 2) for c in (
        f"ip link add link eth0 name ipvl{i} netns pod{i} type ipvlan mode l2",
        f"ip -n pod{i} link set ipvl{i} name eth0",
        f"ip -n pod{i} addr add 10.0.0.1{i}/24 dev eth0",
        f"ip -n pod{i} link set eth0 up",
    )],
    snapshot=True,
)
page.step(
    "show", "Compare the MAC addresses",
    "ip link show eth0",
    "ip -n pod1 link show eth0",
    "ip -n pod2 -details link show eth0",
    cmd("ip -n pod1 link set eth0 address 02:00:00:00:01:01", rc=2),
)
page.step(
    "ping", "The peer pings both pods, and looks at its neighbour table",
    "ip netns exec peer ping -c 1 -W 1 10.0.0.11",
    "ip netns exec peer ping -c 1 -W 1 10.0.0.12",
    "ip -n peer neigh show 10.0.0.11",
    "ip -n peer neigh show 10.0.0.12",
)
page.step(
    "between", "pod1 pings pod2 while peer captures on its end of the cable",
    cmd("ip netns exec peer tcpdump -i eth0 --immediate-mode -n -e -t -l icmp", background=True,
        ready="listening on"),
    "ip netns exec pod1 ping -c 2 -i 0.2 -W 1 10.0.0.12",
)
page.step(
    "host", "An address on the parent eth0: the host and its pods cannot reach each other",
    "ip addr add 10.0.0.1/24 dev eth0",
    cmd("ip netns exec pod1 ping -c 1 -W 1 10.0.0.1", rc=1),
    cmd("ping -c 1 -W 1 10.0.0.11", rc=1),
    "ip netns exec peer ping -c 1 -W 1 10.0.0.1",
)
page.step(
    "host-child", "Move the host's address to an ipvlan child of its own",
    "ip addr del 10.0.0.1/24 dev eth0",
    "ip link add link eth0 name ipvl0 type ipvlan mode l2",
    "ip addr add 10.0.0.1/24 dev ipvl0",
    "ip link set ipvl0 up",
    # pod1 may still be retrying its unanswered ARP request for 10.0.0.1 from the
    # step before; forgetting it makes pod1 ask afresh.
    "ip -n pod1 neigh flush dev eth0",
    "ip netns exec pod1 ping -c 1 -W 1 10.0.0.1",
    "ping -c 1 -W 1 10.0.0.11",
    snapshot=True,
)
page.step(
    "macvlan", "Rebuild the pods' interfaces with macvlan instead",
    cmd("ip link add link eth0 name mv0 type macvlan mode bridge", rc=2),
    "ip link del ipvl0",
    "ip -n pod1 link del eth0",
    "ip -n pod2 link del eth0",
    "ip -n peer neigh flush dev eth0",
    *[c for i in (1, 2) for c in (
        f"ip link add link eth0 name mv{i} netns pod{i} address 02:00:00:00:0{i}:01 type macvlan mode bridge",
        f"ip -n pod{i} link set mv{i} name eth0",
        f"ip -n pod{i} addr add 10.0.0.1{i}/24 dev eth0",
        f"ip -n pod{i} link set eth0 up",
    )],
    "ip netns exec peer ping -c 1 -W 1 10.0.0.11",
    "ip netns exec peer ping -c 1 -W 1 10.0.0.12",
    "ip -n peer neigh show 10.0.0.11",
    "ip -n peer neigh show 10.0.0.12",
    snapshot=True,
)


@page.check("children", "Each pod's eth0 is an ipvlan link in l2 mode whose parent is eth0 in the host namespace")
def _(lab):
    snap = lab.snapshot
    links = [find_link(snap, f"pod{i}", "eth0") for i in (1, 2)]
    return all(l["kind"] == "ipvlan" and l["details"].get("mode") == "l2"
               and l["parent"] == {"node": "host", "name": "eth0"} for l in links)


@page.check("show", f"Both pods' eth0 carry the parent's MAC address {NODE_MAC}")
def _(lab):
    snap = lab.snapshot
    macs = {find_link(snap, node, "eth0")["mac"] for node in ("host", "pod1", "pod2")}
    shown = [lab.output(c, step="show") for c in ("ip link show eth0", "-n pod1 link show eth0",
                                                  "-n pod2 -details link show eth0")]
    return macs == {NODE_MAC} and all(f"link/ether {NODE_MAC} " in s for s in shown)


@page.check("show", "An ipvlan child cannot be given a MAC address of its own")
def _(lab):
    return "Operation not supported" in lab.result("address 02:00:00:00:01:01", step="show").stderr


@page.check("show", "The parent eth0 stays out of promiscuous mode")
def _(lab):
    return not lab.link("host", "eth0")["promisc"]


@page.check("ping", "The peer reaches both pods, and its neighbour table maps both IPs to the same MAC, "
                    "learned by ARP (REACHABLE, not PERMANENT)")
def _(lab):
    return all(answered(lab.output(f"ping -c 1 -W 1 10.0.0.1{i}", step="ping"), f"10.0.0.1{i}")
               and neighbour(lab.output(f"neigh show 10.0.0.1{i}", step="ping"), f"10.0.0.1{i}")
               == (NODE_MAC, "REACHABLE") for i in (1, 2))


@page.check("between", "pod1 reaches pod2, and none of their packets went out on the cable to peer")
def _(lab):
    seen = lab.output("tcpdump", step="between")
    return answered(lab.output("pod1 ping", step="between"), "10.0.0.12", 2) and "ICMP" not in seen and \
        "0 packets captured" in lab.result("tcpdump", step="between").stderr


@page.check("host", "With its address on the parent eth0, the host answers the peer, "
                    "but the pods and the host cannot reach each other")
def _(lab):
    unanswered = [lab.output(c, step="host") for c in ("pod1 ping", "ping -c 1 -W 1 10.0.0.11")]
    snap = lab.snapshot
    return all(transmitted(p) == 1 and received(p) == 0 for p in unanswered) and \
        answered(lab.output("peer ping", step="host"), "10.0.0.1") and \
        holders(snap, "10.0.0.1") == [("host", "eth0")] and holders(snap, "10.0.0.11") == [("pod1", "eth0")] and \
        find_link(snap, "pod1", "eth0")["up"]


@page.check("host-child", "Once the host's address sits on an ipvlan child (ipvl0), "
                          "pod1 reaches the host and the host reaches pod1")
def _(lab):
    link = lab.link("host", "ipvl0")
    return link["kind"] == "ipvlan" and "10.0.0.1/24" in link["addresses"] and \
        answered(lab.output("pod1 ping", step="host-child"), "10.0.0.1") and \
        answered(lab.output("ping -c 1 -W 1 10.0.0.11", step="host-child"), "10.0.0.11")


@page.check("macvlan", "A parent that has ipvlan children refuses a macvlan child")
def _(lab):
    return "Device or resource busy" in lab.result("name mv0", step="macvlan").stderr


@page.check("macvlan", "With macvlan each pod has its own MAC, and the peer's neighbour table shows two different ones, "
                      "learned by ARP")
def _(lab):
    snap = lab.snapshot
    pods = [find_link(snap, f"pod{i}", "eth0") for i in (1, 2)]
    return all(p["kind"] == "macvlan" for p in pods) and \
        [p["mac"] for p in pods] == ["02:00:00:00:01:01", "02:00:00:00:02:01"] and \
        all(answered(lab.output(f"ping -c 1 -W 1 10.0.0.1{i}", step="macvlan"), f"10.0.0.1{i}")
            and neighbour(lab.output(f"neigh show 10.0.0.1{i}", step="macvlan"), f"10.0.0.1{i}")
            == (f"02:00:00:00:0{i}:01", "REACHABLE") for i in (1, 2))


@page.check("macvlan", "macvlan put the parent eth0 into promiscuous mode, to receive frames for the pods' MACs")
def _(lab):
    return lab.link("host", "eth0")["promisc"]
