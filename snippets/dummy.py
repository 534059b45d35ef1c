"""dummy: an interface with no wire, for addresses and routes that stay on the machine.

Run with `invoke lab.run --page dummy`; the page is docs/interfaces/dummy.md.
"""
import re

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, received, transmitted
from deepdive.snapshot import holders

page = Page(
    name="dummy",
    title="dummy: an interface with no wire",
    nodes=("node", "pod"),
    needs=Needs(kinds=("dummy", "veth"), features=("ip_vs",), tools=("ping", "ipvsadm")),
    # No IPv6: its autoconfiguration would send packets into the dummies and change the
    # counters this page reads.
    ipv6=False,
)

page.step(
    "create", "Create a dummy interface and give it an address",
    "ip -n node link add dummy0 address 02:00:00:00:00:01 type dummy",
    "ip -n node link set dummy0 up",
    "ip -n node addr add 10.0.0.1/24 dev dummy0",
)
page.step(
    "show", "Look at it",
    "ip -n node -details link show dummy0",
    "ip -n node addr show dummy0",
    "ip -n node route show dev dummy0",
)
page.step(
    "local", "Ping its address from the same namespace",
    "ip netns exec node ping -c 2 -i 0.2 -W 1 10.0.0.1",
    "ip -n node route get 10.0.0.1",
    "ip -n node -statistics link show dummy0",
)
page.step(
    "down", "Take dummy0 down, ping its address, and bring it back up",
    "ip -n node link set dummy0 down",
    "ip -n node addr show dummy0",
    "ip netns exec node ping -c 1 -W 1 10.0.0.1",
    "ip -n node route show table local dev dummy0",
    "ip -n node route show dev dummy0",
    "ip -n node link set dummy0 up",
)
# A cable pulled is carrier lost, not the link set down: dummy1 is told its carrier is
# gone. The kernel marks the routes through it `linkdown` when it handles the change, a
# moment later and in the background; `until` waits for that. dummy1 is then removed.
page.step(
    "carrier", "Take dummy1's carrier away, as a pulled cable would",
    "ip -n node link add dummy1 address 02:00:00:00:00:03 type dummy",
    "ip -n node addr add 10.0.1.1/24 dev dummy1",
    "ip -n node link set dummy1 up",
    "ip -n node link set dummy1 carrier off",
    cmd("ip -n node route show dev dummy1", until="linkdown"),
    "ip -n node link show dummy1",
    "ip netns exec node ping -c 1 -W 1 10.0.1.1",
    "ip -n node route get 10.0.1.7",
    "ip -n node link del dummy1",
)
page.step(
    "route", "Route a prefix into the dummy",
    "ip -n node route add 198.51.100.0/24 dev dummy0",
    "ip -n node route get 198.51.100.7",
    cmd("ip netns exec node ping -c 3 -i 0.2 -W 1 198.51.100.7", rc=1),
    "ip -n node -statistics link show dummy0",
)
page.step(
    "pod", "Connect a pod, and ping a service IP the node does not have yet",
    "ip link add veth-pod netns node address 02:00:00:00:01:01 type veth"
    " peer name eth0 netns pod address 02:00:00:00:01:02",
    "ip -n node addr add 10.244.1.1/24 dev veth-pod",
    "ip -n node link set veth-pod up",
    "ip -n pod addr add 10.244.1.2/24 dev eth0",
    "ip -n pod link set eth0 up",
    "ip -n pod route add default via 10.244.1.1",
    # Off, as the kernel boots: a new namespace copies the machine's setting, which
    # would make this step's output depend on the machine that runs it.
    "ip netns exec node sysctl -w net.ipv4.ip_forward=0",
    cmd("ip netns exec pod ping -c 1 -W 1 10.96.0.10", rc=1),
    cmd("ip -n node route get 10.96.0.10 from 10.244.1.2 iif veth-pod", rc=2),
)
page.step(
    "forward", "Turn on forwarding in the node, as on every Kubernetes node, and ask again",
    "ip netns exec node sysctl -w net.ipv4.ip_forward=1",
    cmd("ip netns exec pod ping -c 1 -W 1 10.96.0.10", rc=1),
    cmd("ip -n node route get 10.96.0.10 from 10.244.1.2 iif veth-pod", rc=2),
)
page.step(
    "services", "Put two service IPs on kube-ipvs0, as kube-proxy's IPVS mode would",
    "ip -n node link add kube-ipvs0 address 02:00:00:00:00:02 type dummy",
    "ip -n node addr add 10.96.0.1/32 dev kube-ipvs0",
    "ip -n node addr add 10.96.0.10/32 dev kube-ipvs0",
    "ip -n node addr show kube-ipvs0",
    "ip -n node route show table local dev kube-ipvs0",
    snapshot=True,
)
page.step(
    "reach", "The pod reaches the service IPs; the node answers for them itself",
    "ip netns exec pod ping -c 2 -i 0.2 -W 1 10.96.0.10",
    "ip -n node route get 10.96.0.10 from 10.244.1.2 iif veth-pod",
    cmd("ip netns exec pod ping -c 1 -W 1 10.96.0.11", rc=1),
    "ip -n node -statistics link show kube-ipvs0",
)
page.step(
    "ipvs", "Give IPVS a virtual service on 10.96.0.10, and ping it again",
    "ip netns exec node ipvsadm -A -u 10.96.0.10:53 -s rr",
    "ip netns exec node ipvsadm -a -u 10.96.0.10:53 -r 10.244.1.2:53 -m",
    "ip netns exec pod ping -c 2 -i 0.2 -W 1 10.96.0.10",
    "ip netns exec node ipvsadm -Ln --stats",
)


def tx_packets(output: str) -> int:
    """The packet count on the line after `TX:` in `ip -statistics link show`."""
    m = re.search(r"TX:\s+bytes\s+packets.*\n\s*(\d+)\s+(\d+)", output)
    if m is None:
        raise ValueError("no TX counters in the output")
    return int(m.group(2))


def rx_packets(output: str) -> int:
    m = re.search(r"RX:\s+bytes\s+packets.*\n\s*(\d+)\s+(\d+)", output)
    if m is None:
        raise ValueError("no RX counters in the output")
    return int(m.group(2))


def ipvs_counters(stats: str, row: str) -> list[int]:
    """Conns, InPkts, OutPkts, InBytes and OutBytes of the row of `ipvsadm -Ln --stats` that
    starts with `row` ("UDP  10.96.0.10:53", "  -> 10.244.1.2:53")."""
    m = re.search(rf"^{re.escape(row)}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", stats, re.M)
    if m is None:
        raise ValueError(f"no row {row!r} in the output")
    return [int(n) for n in m.groups()]


@page.check("show", "The kernel reports dummy0 as a link of kind `dummy`, with ARP switched off (NOARP)")
def _(lab):
    shown = lab.output("-details link show dummy0")
    return lab.link("node", "dummy0")["kind"] == "dummy" and "NOARP" in shown and \
        re.search(r"^\s+dummy ", shown, re.M) is not None


@page.check("local", "Pings to the dummy's own address are answered, both of them, from 10.0.0.1")
def _(lab):
    return answered(lab.output("ping -c 2", step="local"), "10.0.0.1", 2)


@page.check("local", "The kernel delivers traffic for 10.0.0.1 through `lo`: dummy0 counted no packet")
def _(lab):
    route = lab.output("route get 10.0.0.1")
    stats = lab.output("link show dummy0", step="local")
    return route.startswith("local 10.0.0.1 dev lo") and tx_packets(stats) == 0 and rx_packets(stats) == 0


@page.check("down", "With dummy0 down, it still holds 10.0.0.1/24, the address's `local` route stays, "
                    "and a ping to it is answered; the route to 10.0.0.0/24 through dummy0 is gone")
def _(lab):
    shown = lab.output("addr show dummy0", step="down")
    return "state DOWN" in shown and "inet 10.0.0.1/24 " in shown and \
        answered(lab.output("ping -c 1 -W 1 10.0.0.1", step="down"), "10.0.0.1") and \
        "local 10.0.0.1 proto kernel scope host src 10.0.0.1" in lab.output("table local dev dummy0", step="down") and \
        lab.output("ip -n node route show dev dummy0", step="show").startswith(
            "10.0.0.0/24 proto kernel scope link src 10.0.0.1") and \
        lab.output("ip -n node route show dev dummy0", step="down").strip() == ""


@page.check("carrier", "With its carrier off, dummy1 stays up (NO-CARRIER, UP) in state DOWN, its route to "
                       "10.0.1.0/24 stays, marked linkdown, the kernel still picks it, and 10.0.1.1 answers")
def _(lab):
    shown = lab.output("link show dummy1", step="carrier")
    return re.search(r"<NO-CARRIER,[A-Z,]*,UP> .* state DOWN ", shown) is not None and \
        lab.output("route show dev dummy1", step="carrier").startswith(
            "10.0.1.0/24 proto kernel scope link src 10.0.1.1 linkdown") and \
        lab.output("route get 10.0.1.7", step="carrier").startswith("10.0.1.7 dev dummy1 src 10.0.1.1 ") and \
        answered(lab.output("ping -c 1 -W 1 10.0.1.1", step="carrier"), "10.0.1.1")


@page.check("route", "`ip route get` sends 198.51.100.7 out of dummy0, with dummy0's address as source")
def _(lab):
    return lab.output("route get 198.51.100.7").startswith("198.51.100.7 dev dummy0 src 10.0.0.1 ")


@page.check("route", "None of the three pings is answered, yet dummy0 counted all three as transmitted")
def _(lab):
    ping = lab.output("ping -c 3", step="route")
    stats = lab.output("link show dummy0", step="route")
    return received(ping) == 0 and "3 packets transmitted" in ping and \
        tx_packets(stats) == 3 and rx_packets(stats) == 0


@page.check("pod", "With forwarding off, the node's answer for the pod's packet to 10.96.0.10 is "
                   "`No route to host`, and the ping goes unanswered, without an error back")
def _(lab):
    ping = lab.output("ping -c 1 -W 1 10.96.0.10", step="pod")
    return transmitted(ping) == 1 and received(ping) == 0 and "Unreachable" not in ping and \
        lab.output("ip_forward=0", step="pod").strip() == "net.ipv4.ip_forward = 0" and \
        "No route to host" in lab.result("route get 10.96.0.10", step="pod").stderr


@page.check("forward", "With forwarding on, the node's answer is `Network is unreachable` (it has no route "
                       "to 10.96.0.0), and it tells the pod so: Destination Net Unreachable from 10.244.1.1")
def _(lab):
    ping = lab.output("ping -c 1 -W 1 10.96.0.10", step="forward")
    return lab.output("ip_forward=1", step="forward").strip() == "net.ipv4.ip_forward = 1" and \
        transmitted(ping) == 1 and received(ping) == 0 and \
        "From 10.244.1.1 icmp_seq=1 Destination Net Unreachable" in ping and \
        "Network is unreachable" in lab.result("route get 10.96.0.10", step="forward").stderr


@page.check("services", "kube-ipvs0 stays down, as kube-proxy leaves it, and still holds both /32 addresses")
def _(lab):
    link = lab.link("node", "kube-ipvs0")
    return not link["up"] and sorted(link["addresses"]) == ["10.96.0.1/32", "10.96.0.10/32"] and \
        "state DOWN" in lab.output("addr show kube-ipvs0")


@page.check("services", "Each service IP gets a `local` route in the local table")
def _(lab):
    table = lab.output("route show table local dev kube-ipvs0")
    return all(f"local {ip} proto kernel scope host src {ip}" in table for ip in ("10.96.0.1", "10.96.0.10"))


@page.check("reach", "The pod's pings to 10.96.0.10 are answered, from that address on kube-ipvs0")
def _(lab):
    return answered(lab.output("ping -c 2 -i 0.2 -W 1 10.96.0.10", step="reach"), "10.96.0.10", 2) and \
        holders(lab.snapshot, "10.96.0.10") == [("node", "kube-ipvs0")]


@page.check("reach", "For a packet arriving from the pod, the node's routing decision for 10.96.0.10 is `local`")
def _(lab):
    return lab.output("route get 10.96.0.10 from").startswith("local 10.96.0.10 ")


@page.check("reach", "A service IP that is not on kube-ipvs0 (10.96.0.11) gets no answer, only the "
                     "node's Destination Net Unreachable")
def _(lab):
    ping = lab.output("10.96.0.11", step="reach")
    return transmitted(ping) == 1 and received(ping) == 0 and holders(lab.snapshot, "10.96.0.11") == [] and \
        "From 10.244.1.1 icmp_seq=1 Destination Net Unreachable" in ping


@page.check("reach", "kube-ipvs0 itself carried no packet: its counters are zero")
def _(lab):
    stats = lab.output("link show kube-ipvs0", step="reach")
    return tx_packets(stats) == 0 and rx_packets(stats) == 0


@page.check("ipvs", "With an IPVS virtual service on 10.96.0.10, the pings are still answered from 10.96.0.10, "
                    "and IPVS counted none of them: 0 packets for the service and its real server")
def _(lab):
    stats = lab.output("ipvsadm -Ln --stats", step="ipvs")
    return answered(lab.output("ping -c 2 -i 0.2 -W 1 10.96.0.10", step="ipvs"), "10.96.0.10", 2) and \
        ipvs_counters(stats, "UDP  10.96.0.10:53") == [0] * 5 and \
        ipvs_counters(stats, "  -> 10.244.1.2:53") == [0] * 5
