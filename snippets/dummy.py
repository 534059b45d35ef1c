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
    needs=Needs(kinds=("dummy", "veth"), tools=("ping",)),
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
)
page.step(
    "local", "Ping its address from the same namespace",
    "ip netns exec node ping -c 2 -i 0.2 -W 1 10.0.0.1",
    "ip -n node route get 10.0.0.1",
    "ip -n node -statistics link show dummy0",
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


@page.check("route", "`ip route get` sends 198.51.100.7 out of dummy0, with dummy0's address as source")
def _(lab):
    return lab.output("route get 198.51.100.7").startswith("198.51.100.7 dev dummy0 src 10.0.0.1 ")


@page.check("route", "None of the three pings is answered, yet dummy0 counted all three as transmitted")
def _(lab):
    ping = lab.output("ping -c 3", step="route")
    stats = lab.output("link show dummy0", step="route")
    return received(ping) == 0 and "3 packets transmitted" in ping and \
        tx_packets(stats) == 3 and rx_packets(stats) == 0


@page.check("pod", "Before kube-ipvs0 exists, the node has no route for the pod's packet to 10.96.0.10, "
                   "and the ping goes unanswered")
def _(lab):
    ping = lab.output("ping -c 1 -W 1 10.96.0.10", step="pod")
    return transmitted(ping) == 1 and received(ping) == 0 and \
        "No route to host" in lab.result("route get 10.96.0.10", step="pod").stderr


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


@page.check("reach", "A service IP that is not on kube-ipvs0 (10.96.0.11) gets no answer")
def _(lab):
    ping = lab.output("10.96.0.11", step="reach")
    return transmitted(ping) == 1 and received(ping) == 0 and holders(lab.snapshot, "10.96.0.11") == []


@page.check("reach", "kube-ipvs0 itself carried no packet: its counters are zero")
def _(lab):
    stats = lab.output("link show kube-ipvs0", step="reach")
    return tx_packets(stats) == 0 and rx_packets(stats) == 0
