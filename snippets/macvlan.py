"""macvlan: several MAC addresses, each an interface of its own, on one parent device.

Run with `invoke lab.run --page macvlan`; the page is docs/interfaces/macvlan.md.
"""
import re

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, indexes, neighbour, received, transmitted
from deepdive.snapshot import holders

page = Page(
    name="macvlan",
    title="macvlan: many MAC addresses on one interface",
    # node: the machine whose eth0 is the parent; ns1, ns2: two containers on it;
    # lan: the rest of the network, at the other end of node's cable.
    nodes=("node", "ns1", "ns2", "lan"),
    needs=Needs(kinds=("veth", "macvlan"), tools=("ping", "tcpdump")),
    ipv6=False,
)

# What arrives at the other end of node's cable. Each capture below ends once it has
# printed the last frame its step expects (`until`): stopped earlier, tcpdump drops the
# frames it has not printed yet. No count (-c): a frame that should not be there must show.
CAPTURE = "ip netns exec lan tcpdump -i eth0 -n -e -t -l --immediate-mode arp or icmp"

page.step(
    "wire", "Give node an eth0 whose cable leads to the rest of the LAN",
    # index 7: a number of its own, not the 2 that the first link of every fresh
    # namespace gets (lan's eth0, and each child in its container), so that `@ifN`
    # shows whose index N is.
    "ip -n node link add eth0 index 7 address 02:00:00:00:00:01 type veth"
    " peer name eth0 netns lan address 02:00:00:00:00:02",
    "ip -n node addr add 10.0.0.10/24 dev eth0",
    "ip -n lan addr add 10.0.0.100/24 dev eth0",
    "ip -n node link set eth0 up",
    "ip -n lan link set eth0 up",
    cmd("ip -n node -details link show eth0", until="state UP"),
)
page.step(
    "children", "Create two macvlan interfaces on eth0, one in each container namespace",
    "ip -n node link add macvlan1 link eth0 netns ns1 address 02:00:00:00:01:01 type macvlan mode bridge",
    "ip -n node link add macvlan2 link eth0 netns ns2 address 02:00:00:00:02:01 type macvlan mode bridge",
    "ip -n ns1 addr add 10.0.0.1/24 dev macvlan1",
    "ip -n ns2 addr add 10.0.0.2/24 dev macvlan2",
    "ip -n ns1 link set macvlan1 up",
    "ip -n ns2 link set macvlan2 up",
    snapshot=True,
)
# A link's operational state (`state UP`) is set a moment after it comes up, in the
# background; so is eth0's readiness to send, without which the LAN sees nothing.
page.step(
    "show", "Look at a child and at its parent",
    cmd("ip -n ns1 link show macvlan1", until="state UP"),
    "ip -n ns1 -details link show macvlan1",
    cmd("ip -n node link show eth0", until="state UP"),
)
# A parent without a unicast filter (a veth here) is made promiscuous by the kernel once
# its list of unicast addresses is not empty; newer kernels do that in the background.
page.step(
    "cost", "What the children ask of their parent",
    cmd("ip -n node -details link show eth0", until="promiscuity 1"),
    "bridge -n node fdb show dev eth0",
)
page.step(
    "between", "ns1 pings ns2 while the LAN listens",
    cmd(CAPTURE, background=True, ready="listening on", until="Request who-has 10.0.0.2 tell 10.0.0.1", endless=True),
    "ip netns exec ns1 ping -c 1 -W 1 10.0.0.2",
)
page.step(
    "outside", "Each container, and node itself, pings the LAN",
    # The last frame: the LAN's echo reply to node's eth0.
    cmd(CAPTURE, background=True, ready="listening on",
        until="02:00:00:00:00:02 > 02:00:00:00:00:01, ethertype IPv4", endless=True),
    "ip netns exec ns1 ping -c 1 -W 1 10.0.0.100",
    "ip netns exec ns2 ping -c 1 -W 1 10.0.0.100",
    "ip netns exec node ping -c 1 -W 1 10.0.0.100",
)
# An unanswered ARP request is retried every second. Failing pings wait 0.3 s, so the
# capture below ends long before the first retry, and no later step captures on the LAN.
page.step(
    "parent", "node pings its own child",
    cmd(CAPTURE, background=True, ready="listening on", until="Request who-has 10.0.0.1 tell 10.0.0.10",
        endless=True),
    cmd("ip netns exec node ping -c 1 -W 0.3 10.0.0.1", rc=1),
)
page.step(
    "child", "The child pings node",
    cmd("ip netns exec ns1 ping -c 1 -W 0.3 10.0.0.10", rc=1),
)
# ns1's ARP request for 10.0.0.10, unanswered above, is still repeated once a second for
# 3 s; the next repeat, which the shim answers, may be what the ping below waits for, so
# it waits up to 3 s for its reply.
page.step(
    "shim", "Give node a macvlan interface of its own, and route the children's addresses through it",
    "ip -n node link add shim link eth0 address 02:00:00:00:00:03 type macvlan mode bridge",
    "ip -n node addr add 10.0.0.11/32 dev shim",
    "ip -n node link set shim up",
    "ip -n node route add 10.0.0.0/29 dev shim",
    "ip -n node route show",
    "ip -n node route get 10.0.0.1",
    "ip -n node route get 10.0.0.100",
    "ip netns exec node ping -c 1 -W 1 10.0.0.1",
    "ip netns exec ns1 ping -c 1 -W 3 10.0.0.10",
    "ip -n ns1 neigh show 10.0.0.10",
    "ip netns exec node ping -c 1 -W 1 10.0.0.100",
    "ip -n node link show shim",
    snapshot=True,
)
page.step(
    "default", "A macvlan interface created without a mode",
    "ip -n node link add macvlan3 link eth0 address 02:00:00:00:00:04 type macvlan",
    "ip -n node -details link show macvlan3",
)


def frames(capture: str) -> list[str]:
    """The captured frames, one line each (tcpdump's banner lines left out)."""
    return [l for l in capture.splitlines() if re.match(r"[0-9a-f]{2}(:[0-9a-f]{2}){5} > ", l)]


def links(lab) -> dict[tuple[str, str], dict]:
    """Every link of one fresh snapshot, by (namespace, name)."""
    return {(n["name"], l["name"]): l for n in lab.snapshot["nodes"] for l in n["links"]}


@page.check("children", "macvlan1 in ns1 and macvlan2 in ns2 are macvlan devices whose parent is eth0 in node")
def _(lab):
    state = links(lab)
    return all(state[ns, name]["kind"] == "macvlan"
               and state[ns, name]["parent"] == {"node": "node", "name": "eth0"}
               for ns, name in (("ns1", "macvlan1"), ("ns2", "macvlan2")))


@page.check("children", "Each child has its own MAC address, different from its parent's")
def _(lab):
    state = links(lab)
    macs = [state["node", "eth0"]["mac"], state["ns1", "macvlan1"]["mac"], state["ns2", "macvlan2"]["mac"]]
    return macs == ["02:00:00:00:00:01", "02:00:00:00:01:01", "02:00:00:00:02:01"]


@page.check("show", "In `macvlan1@if7`, 7 is eth0's index in node, not macvlan1's own (2), and `link-netns node` names the parent's namespace")
def _(lab):
    shown = lab.output("ip -n ns1 link show macvlan1", step="show")
    own, parent = lab.link("ns1", "macvlan1")["index"], lab.link("node", "eth0")["index"]
    return (own, parent) == (2, 7) and indexes(shown, "macvlan1") == (own, parent) and "link-netns node" in shown


@page.check("show", "In `eth0@if2`, 2 is the index of eth0 in lan, its veth peer, not node's eth0's own (7)")
def _(lab):
    shown = lab.output("ip -n node link show eth0", step="show")
    return indexes(shown, "eth0") == (lab.link("node", "eth0")["index"], lab.link("lan", "eth0")["index"]) == (7, 2)


@page.check("show", "`ip -details` reports the mode: `macvlan mode bridge`")
def _(lab):
    return "macvlan mode bridge" in lab.output("-details link show macvlan1")


@page.check("wire", "Before any child exists, eth0's promiscuity count is 0")
def _(lab):
    return "promiscuity 0 " in lab.output("-details link show eth0", step="wire")


@page.check("cost", "With the children up, eth0's promiscuity count is 1, yet no PROMISC flag shows: nobody asked for it")
def _(lab):
    shown = lab.output("-details link show eth0", step="cost")
    return "promiscuity 1 " in shown and lab.link("node", "eth0")["promisc"] and "PROMISC" not in shown.split(">")[0]


@page.check("cost", "Both children's MAC addresses are in eth0's unicast address list, beside its own multicast groups")
def _(lab):
    fdb = lab.output("fdb show dev eth0", step="cost").splitlines()
    return (sorted(l for l in fdb if not l.startswith(("33:33:", "01:00:5e:")))
            == ["02:00:00:00:01:01 self permanent", "02:00:00:00:02:01 self permanent"]
            and {"33:33:00:00:00:01 self permanent", "01:00:5e:00:00:01 self permanent"} <= set(fdb))


@page.check("between", "The two children reach each other: ns1's ping is answered from macvlan2's 10.0.0.2")
def _(lab):
    return answered(lab.output("ns1 ping -c 1 -W 1 10.0.0.2", step="between"), "10.0.0.2") and holders(lab.snapshot, "10.0.0.2") == [("ns2", "macvlan2")]


@page.check("between", "Only ns1's ARP broadcast reached the LAN; the pings between the children never left node")
def _(lab):
    seen = frames(lab.output("tcpdump", step="between"))
    return (len(seen) == 1 and seen[0].startswith("02:00:00:00:01:01 > ff:ff:ff:ff:ff:ff")
            and "Request who-has 10.0.0.2 tell 10.0.0.1" in seen[0])


@page.check("outside", "ns1, ns2 and node all reach the LAN through the one cable: each ping is answered from 10.0.0.100")
def _(lab):
    return holders(lab.snapshot, "10.0.0.100") == [("lan", "eth0")] and all(
        answered(lab.output(f"{n} ping -c 1 -W 1 10.0.0.100", step="outside"), "10.0.0.100")
        for n in ("ns1", "ns2", "node"))


@page.check("outside", "The LAN saw pings from three MACs, macvlan1's, macvlan2's and eth0's, and answered each at its own")
def _(lab):
    seen = frames(lab.output("tcpdump", step="outside"))
    macs = ["02:00:00:00:01:01", "02:00:00:00:02:01", "02:00:00:00:00:01"]
    requests = [l.split(",")[0] for l in seen if "ICMP echo request" in l]
    replies = [l.split(",")[0] for l in seen if "ICMP echo reply" in l]
    return (requests == [f"{m} > 02:00:00:00:00:02" for m in macs]
            and replies == [f"02:00:00:00:00:02 > {m}" for m in macs])


@page.check("parent", "node cannot reach its own child through eth0: no reply, though macvlan1 is up and holds 10.0.0.1")
def _(lab):
    ping = lab.output("node ping -c 1 -W 0.3 10.0.0.1", step="parent")
    return (transmitted(ping) == 1 and received(ping) == 0 and lab.link("ns1", "macvlan1")["up"]
            and holders(lab.snapshot, "10.0.0.1") == [("ns1", "macvlan1")])


@page.check("parent", "node's ARP request for 10.0.0.1 went out on the wire to the LAN, and nothing answered")
def _(lab):
    seen = frames(lab.output("tcpdump", step="parent"))
    return (len(seen) == 1 and seen[0].startswith("02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff")
            and "Request who-has 10.0.0.1 tell 10.0.0.10" in seen[0])


@page.check("child", "Nor can the child reach node's address on eth0: no reply, though eth0 is up and holds 10.0.0.10")
def _(lab):
    ping = lab.output("ns1 ping -c 1 -W 0.3 10.0.0.10", step="child")
    return (transmitted(ping) == 1 and received(ping) == 0 and lab.link("node", "eth0")["up"]
            and holders(lab.snapshot, "10.0.0.10") == [("node", "eth0")])


@page.check("shim", "node keeps 10.0.0.10 on eth0; the shim, a sibling of the children on eth0, holds only 10.0.0.11/32")
def _(lab):
    state = links(lab)
    return (state["node", "eth0"]["addresses"] == ["10.0.0.10/24"]
            and state["node", "shim"]["kind"] == "macvlan"
            and state["node", "shim"]["parent"] == {"node": "node", "name": "eth0"}
            and state["node", "shim"]["addresses"] == ["10.0.0.11/32"])


@page.check("shim", "The route to 10.0.0.0/29 through the shim is more specific than eth0's 10.0.0.0/24, so it wins "
                    "for the children: the kernel picks the shim (and its 10.0.0.11 as source) for 10.0.0.1, and "
                    "eth0 for the LAN's 10.0.0.100")
def _(lab):
    routes = lab.output("route show", step="shim").splitlines()
    return (any(l.split()[:3] == ["10.0.0.0/29", "dev", "shim"] for l in routes)
            and any(l.split()[:3] == ["10.0.0.0/24", "dev", "eth0"] for l in routes)
            and lab.output("ip -n node route get 10.0.0.1", step="shim").startswith("10.0.0.1 dev shim src 10.0.0.11 ")
            and lab.output("route get 10.0.0.100", step="shim").startswith("10.0.0.100 dev eth0 "))


@page.check("shim", "node now reaches its child ns1 (through the shim), and still reaches the LAN")
def _(lab):
    return all(answered(lab.output(f"ip netns exec node ping -c 1 -W 1 {ip}", step="shim"), ip)
               and holders(lab.snapshot, ip) == [where]
               for ip, where in (("10.0.0.1", ("ns1", "macvlan1")), ("10.0.0.100", ("lan", "eth0"))))


@page.check("shim", "ns1 reaches node's own 10.0.0.10: the shim answers ARP for it, so ns1's entry holds the shim's MAC, not eth0's")
def _(lab):
    return (answered(lab.output("ns1 ping -c 1 -W 3 10.0.0.10", step="shim"), "10.0.0.10")
            and neighbour(lab.output("neigh show 10.0.0.10", step="shim"), "10.0.0.10")
            == (lab.link("node", "shim")["mac"], "REACHABLE")
            and lab.link("node", "shim")["mac"] != lab.link("node", "eth0")["mac"])


@page.check("default", "Without `mode`, the kernel makes a macvlan interface in vepa mode, not bridge")
def _(lab):
    return "macvlan mode vepa " in lab.output("-details link show macvlan3", step="default")
