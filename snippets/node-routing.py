"""node-routing: two nodes, a pod subnet each, and the routes and forwarding between them.

Run with `invoke lab.run --page node-routing`; the page is docs/node/routing.md.
The lab plays kube-controller-manager (it gives node1 10.244.1.0/24 and node2
10.244.2.0/24), the CNI plugin (cni0, each pod's veth pair, address and default route,
typed here with fixed names and MACs) and a route-based network plugin (a route per
remote node's pod subnet via that node's address, as flannel's host-gw backend adds).
A bridge in the lab's root namespace plays the switch between the nodes.
"""
import re

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, received, transmitted

NODES = (1, 2)
SPOOFED = "10.244.2.99"  # an address of node2's pod subnet, claimed by a packet on node1's cni0


def others(n: int) -> list[int]:
    return [m for m in NODES if m != n]


page = Page(
    name="node-routing",
    title="Routing and forwarding on a node",
    nodes=(*(f"node{n}" for n in NODES), *(f"pod-{n}a" for n in NODES)),
    needs=Needs(kinds=("veth", "bridge"), tools=("ping", "nstat", "sysctl")),
)


def route_get(node: int, dst: str, src: str, iif: str) -> str:
    """Ask node `node`'s kernel how it would route a packet from `src` to `dst` that
    arrived on `iif`, as it does for a packet being forwarded."""
    return f"ip -n node{node} route get {dst} from {src} iif {iif}"


FROM_POD = route_get(1, "10.244.2.2", "10.244.1.2", "cni0")
AT_NODE2 = route_get(2, "10.244.2.2", "10.244.1.2", "eth0")
SPOOF = route_get(1, "10.244.2.2", SPOOFED, "cni0")
PING = "ip netns exec pod-1a ping -c 1 -W 1 10.244.2.2"
COUNTERS = "ip netns exec node{} nstat -asz IpInAddrErrors IpForwDatagrams"
# What pod-1a's own IP layer counted: packets handed to it to send, and sends refused
# for want of a route.
POD_SENDS = "ip netns exec pod-1a nstat -asz IpOutRequests IpOutNoRoutes"
SPOOF_PING = f"ip netns exec pod-1a ping -c 1 -W 1 -I {SPOOFED} 10.244.2.2"
RP_DROPS = "ip netns exec node1 nstat -asz TcpExtIPReversePathFilter"

page.step(
    "start", "Start both nodes as a freshly booted machine",
    # A new namespace copies its IPv4 settings from the machine's first namespace, so
    # they depend on the machine: the lab sets the ones this page is about, before
    # the nodes have any interface, so that every interface made later starts with them.
    *[c for n in NODES for c in (
        f"ip netns exec node{n} sysctl -w net.ipv4.ip_forward=0",
        f"ip netns exec node{n} sysctl -w net.ipv4.conf.all.rp_filter=0",
        f"ip netns exec node{n} sysctl -w net.ipv4.conf.default.rp_filter=0",
    )],
)
page.step(
    "underlay", "The nodes' network: eth0 on one switch",
    "ip link add underlay address 02:00:00:00:00:fe type bridge",
    "ip link set underlay up",
    *[c for n in NODES for c in (
        f"ip link add port-node{n} address 02:00:00:00:fe:0{n} type veth"
        f" peer name eth0 netns node{n} address 02:00:00:00:00:0{n}",
        f"ip link set port-node{n} master underlay",
        f"ip link set port-node{n} up",
        f"ip -n node{n} addr add 192.168.50.{n}/24 dev eth0",
        f"ip -n node{n} link set eth0 up",
    )],
    *[cmd(f"ip -n node{n} link show eth0", until="state UP") for n in NODES],
    "ip netns exec node1 ping -c 1 -W 1 192.168.50.2",
)
page.step(
    "pods", "A pod on each node, on the node's cni0",
    *[c for n in NODES for c in (
        f"ip -n node{n} link add cni0 address 02:00:00:00:0{n}:01 type bridge",
        f"ip -n node{n} addr add 10.244.{n}.1/24 dev cni0",
        f"ip -n node{n} link set cni0 up",
        f"ip -n node{n} link add veth-{n}a address 02:00:00:00:0{n}:02 type veth"
        f" peer name eth0 netns pod-{n}a address 02:00:00:00:0{n}:03",
        f"ip -n node{n} link set veth-{n}a master cni0",
        f"ip -n node{n} link set veth-{n}a up",
        f"ip -n pod-{n}a addr add 10.244.{n}.2/24 dev eth0",
        f"ip -n pod-{n}a link set eth0 up",
    )],
    *[cmd(f"ip -n pod-{n}a link show eth0", until="state UP") for n in NODES],
    snapshot=True,
)
page.step(
    "no-default", "A pod without a default route",
    "ip -n pod-1a route",
    cmd(PING, rc=2),
    POD_SENDS,
    cmd("ip -n pod-1a route get 10.244.2.2", rc=2),
)
page.step(
    "default", "The pod's default route via its gateway",
    *[f"ip -n pod-{n}a route add default via 10.244.{n}.1" for n in NODES],
    "ip -n pod-1a route",
    "ip -n pod-1a route get 10.244.2.2",
    "ip netns exec pod-1a ping -c 1 -W 1 10.244.1.1",
    "ip netns exec pod-1a ping -c 1 -W 1 192.168.50.1",
)
page.step(
    "forward-off", "Forwarding off: the node drops what is not its own",
    "ip netns exec node1 sysctl net.ipv4.ip_forward",
    cmd(PING, rc=1),
    cmd(FROM_POD, rc=2),
    COUNTERS.format(1),
)
page.step(
    "forward-on", "Forwarding on, but no route to the other node's pods",
    "ip netns exec node1 sysctl -w net.ipv4.ip_forward=1",
    "ip netns exec node1 sysctl net.ipv4.conf.cni0.forwarding",
    "ip -n node1 route",
    cmd(PING, rc=1),
    cmd(FROM_POD, rc=2),
)
page.step(
    "routes", "A route per remote node's pod subnet",
    *[f"ip -n node{n} route add 10.244.{m}.0/24 via 192.168.50.{m} dev eth0"
      for n in NODES for m in others(n)],
    "ip -n node1 route",
    FROM_POD,
    # node2 still has forwarding off, as node1 had.
    cmd(PING, rc=1),
    cmd(AT_NODE2, rc=2),
    COUNTERS.format(2),
)
page.step(
    "both", "Forwarding on in both nodes",
    "ip netns exec node2 sysctl -w net.ipv4.ip_forward=1",
    AT_NODE2,
    PING,
    "ip netns exec pod-2a ping -c 1 -W 1 10.244.1.2",
    COUNTERS.format(1),
)
page.step(
    "rp-strict", "Reverse path filtering, strict",
    "ip netns exec node1 sysctl -w net.ipv4.conf.all.rp_filter=1",
    FROM_POD,
    cmd(SPOOF, rc=2),
    "ip netns exec node1 sysctl net.ipv4.conf.cni0.rp_filter",
    # A real packet from the claimed address: pod-1a takes 10.244.2.99 as a second
    # address, and ping sends from it.
    f"ip -n pod-1a addr add {SPOOFED}/32 dev eth0",
    cmd(SPOOF_PING, rc=1),
    RP_DROPS,
)
page.step(
    "rp-loose", "Reverse path filtering, loose",
    "ip netns exec node1 sysctl -w net.ipv4.conf.all.rp_filter=2",
    SPOOF,
    cmd(route_get(1, "10.244.2.2", "10.99.0.1", "cni0"), rc=2),
)

def counters(lab, node: int | str, step: str) -> dict[str, int]:
    """The counters an `nstat -asz` command printed in `step`: {"IpInAddrErrors": 1, ...};
    `node` is a node's number (its COUNTERS command) or the command itself."""
    command = COUNTERS.format(node) if isinstance(node, int) else node
    shown = lab.output(command, step=step)
    return {m[1]: int(m[2]) for m in re.finditer(r"(?m)^([A-Z]\w+) +(\d+) ", shown)}


def failed(lab, command: str, step: str) -> str:
    """What a command that was meant to fail wrote to standard error, stripped."""
    return lab.result(command, step=step).stderr.strip()


@page.check("no-default", "Without a default route the pod's own kernel refuses to send to another node's pod: "
                          "ping fails at connect with \"Network is unreachable\", the pod counts the refusal in IpOutNoRoutes "
                          "and has sent no IPv4 packet at all (IpOutRequests 0)")
def _(lab):
    ping = lab.result(PING, step="no-default")
    sends = counters(lab, POD_SENDS, "no-default")
    return ("default" not in lab.output("ip -n pod-1a route", step="no-default")
            and ping.stderr.strip() == "ping: connect: Network is unreachable" and transmitted(ping.stdout) == 0
            and sends.get("IpOutNoRoutes", 0) >= 1 and sends.get("IpOutRequests") == 0
            and failed(lab, "ip -n pod-1a route get", "no-default") == "RTNETLINK answers: Network is unreachable")


@page.check("default", "With the default route, the pod sends to 10.244.2.2 via its gateway 10.244.1.1, and "
                       "node1 answers for both of its own addresses, on cni0 and on eth0")
def _(lab):
    return ("10.244.2.2 via 10.244.1.1 dev eth0 src 10.244.1.2"
            in lab.output("ip -n pod-1a route get 10.244.2.2", step="default")
            and answered(lab.output("ping -c 1 -W 1 10.244.1.1", step="default"), "10.244.1.1")
            and answered(lab.output("ping -c 1 -W 1 192.168.50.1", step="default"), "192.168.50.1"))


@page.check("forward-off", "With ip_forward 0, node1 drops the pod's packet for another node without a word: "
                           "ping gets no reply and no error, the kernel's route lookup for it answers \"No route "
                           "to host\", and the drop is counted in IpInAddrErrors")
def _(lab):
    ping = lab.output(PING, step="forward-off")
    return (lab.output("sysctl net.ipv4.ip_forward", step="forward-off").strip() == "net.ipv4.ip_forward = 0"
            and transmitted(ping) == 1 and received(ping) == 0 and "From " not in ping and "errors" not in ping
            and failed(lab, FROM_POD, "forward-off") == "RTNETLINK answers: No route to host"
            and counters(lab, 1, "forward-off").get("IpInAddrErrors") == 1
            and not counters(lab, 1, "forward-off").get("IpForwDatagrams"))


@page.check("forward-on", "With forwarding on and no route, node1 answers the pod with an ICMP \"Destination Net "
                          "Unreachable\" from its gateway address; writing ip_forward turned on cni0's forwarding too")
def _(lab):
    ping = lab.output(PING, step="forward-on")
    return ("From 10.244.1.1 icmp_seq=1 Destination Net Unreachable" in ping and received(ping) == 0
            and failed(lab, FROM_POD, "forward-on") == "RTNETLINK answers: Network is unreachable"
            and lab.output("conf.cni0.forwarding", step="forward-on").strip()
            == "net.ipv4.conf.cni0.forwarding = 1"
            and "10.244.2.0/24" not in lab.output("ip -n node1 route", step="forward-on"))


@page.check("routes", "With the route, node1 sends the pod's packet via 192.168.50.2 on eth0, but node2, still "
                      "not forwarding, drops it silently and counts it")
def _(lab):
    ping = lab.output(PING, step="routes")
    return ("10.244.2.0/24 via 192.168.50.2 dev eth0" in lab.output("ip -n node1 route", step="routes")
            and "10.244.2.2 from 10.244.1.2 via 192.168.50.2 dev eth0" in lab.output(FROM_POD, step="routes")
            and received(ping) == 0 and "From " not in ping
            and failed(lab, AT_NODE2, "routes") == "RTNETLINK answers: No route to host"
            and counters(lab, 2, "routes").get("IpInAddrErrors") == 1)


@page.check("both", "With forwarding on in both nodes the pods reach each other, two hops away (ttl 62), and "
                    "node2 delivers to 10.244.2.2 on cni0; node1 has forwarded 5 packets: the one node2 dropped, "
                    "then two requests and two replies")
def _(lab):
    ping = lab.output(PING, step="both")
    return (answered(ping, "10.244.2.2") and "ttl=62" in ping
            and answered(lab.output("ping -c 1 -W 1 10.244.1.2", step="both"), "10.244.1.2")
            and "10.244.2.2 from 10.244.1.2 dev cni0" in lab.output(AT_NODE2, step="both")
            and counters(lab, 1, "both") == {"IpInAddrErrors": 1, "IpForwDatagrams": 5})


@page.check("rp-strict", "Strict reverse path filtering on node1 refuses a packet on cni0 from 10.244.2.99, an "
                         "address node1 routes out of eth0, and still takes the pod's own; cni0's own setting 0 "
                         "does not lift it, since the kernel uses the larger of all and cni0")
def _(lab):
    return ("10.244.2.2 from 10.244.1.2 via 192.168.50.2 dev eth0" in lab.output(FROM_POD, step="rp-strict")
            and failed(lab, SPOOF, "rp-strict") == "RTNETLINK answers: Invalid argument"
            and lab.output("conf.cni0.rp_filter", step="rp-strict").strip() == "net.ipv4.conf.cni0.rp_filter = 0")


@page.check("rp-strict", "A real packet from 10.244.2.99 on cni0 is dropped without a word: ping gets no reply "
                         "and no error, and node1 counts the drop in TcpExtIPReversePathFilter")
def _(lab):
    ping = lab.output(SPOOF_PING, step="rp-strict")
    return (transmitted(ping) == 1 and received(ping) == 0 and "From " not in ping and "errors" not in ping
            and counters(lab, RP_DROPS, "rp-strict") == {"TcpExtIPReversePathFilter": 1})


@page.check("rp-loose", "Loose mode takes 10.244.2.99 from cni0, since node1 has a route to it on some "
                        "interface, and still refuses a source it has no route to at all")
def _(lab):
    return (f"10.244.2.2 from {SPOOFED} via 192.168.50.2 dev eth0" in lab.output(SPOOF, step="rp-loose")
            and failed(lab, "from 10.99.0.1", "rp-loose") == "RTNETLINK answers: Invalid argument")
