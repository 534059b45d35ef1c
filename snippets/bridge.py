"""bridge: a software Ethernet switch joining three namespaces.

Run with `invoke lab.run --page bridge`; the page is docs/interfaces/bridge.md.
"""
import re

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, learned
from deepdive.snapshot import holders

page = Page(
    name="bridge",
    title="bridge: a switch in the kernel",
    nodes=("ns1", "ns2", "ns3"),
    needs=Needs(kinds=("bridge", "veth", "tap"), tools=("ping", "bridge", "tcpdump")),
    ipv6=False,
)

# ns3 listens on its port; a capture shows which frames the bridge sent its way.
CAPTURE = "ip netns exec ns3 tcpdump -i eth0 -n -e -t -l --immediate-mode arp or icmp"

page.step(
    "bridge", "Create the bridge in the host namespace",
    "ip link add br0 address 02:00:00:00:00:fe type bridge",
    "ip link set br0 up",
)
page.step(
    "ports", "Plug each namespace into the bridge with a veth pair",
    *[c for i in (1, 2, 3) for c in (
        f"ip link add veth{i} address 02:00:00:00:0{i}:fe type veth"
        f" peer name eth0 netns ns{i} address 02:00:00:00:0{i}:01",
        f"ip link set veth{i} master br0",
        f"ip link set veth{i} up",
        f"ip -n ns{i} addr add 10.0.0.{i}/24 dev eth0",
        f"ip -n ns{i} link set eth0 up",
    )],
    snapshot=True,
)
page.step(
    "show", "Look at the ports",
    "bridge link show",
    "ip -details link show veth1",
    "bridge fdb show br br0",
)
page.step(
    "ping", "ns1 pings ns2 while ns3 listens",
    # Each capture ends once it has printed the frame its step expects (`until`): stopped
    # earlier, tcpdump drops the frames it has not printed yet.
    cmd(CAPTURE, background=True, ready="listening on", until="Request who-has 10.0.0.2 tell 10.0.0.1"),
    "ip netns exec ns1 ping -c 3 -i 0.2 -W 1 10.0.0.2",
)
page.step(
    "learned", "What the bridge learned",
    "bridge fdb show br br0 dynamic",
)
page.step(
    "flood", "A frame for a MAC address nobody has",
    "ip -n ns1 neigh add 10.0.0.99 lladdr 02:00:00:00:09:09 dev eth0",
    cmd(CAPTURE, background=True, ready="listening on", until="10.0.0.1 > 10.0.0.99: ICMP echo request"),
    cmd("ip netns exec ns1 ping -c 1 -W 0.2 10.0.0.99", rc=1),
)
page.step(
    "address", "Give the bridge itself an address",
    "ip addr add 10.0.0.254/24 dev br0",
    *[f"ip netns exec ns{i} ping -c 1 -W 1 10.0.0.254" for i in (1, 2, 3)],
    "bridge fdb show br br0 dynamic",
)
page.step(
    "tap", "A tap device joins as a port",
    "ip tuntap add tap0 mode tap",
    "ip link set tap0 address 02:00:00:00:0a:01",
    "ip link set tap0 master br0",
    "ip link set tap0 up",
    "bridge link show",
    snapshot=True,
)
page.step(
    "rules", "One bridge per port, and no bridge inside a bridge",
    "ip link add br1 address 02:00:00:00:01:ff type bridge",
    "ip link set tap0 master br1",
    "bridge link show",
    cmd("ip link set br1 master br0", rc=2),
)


def captured(lab, step: str) -> str:
    return lab.output("tcpdump", step=step)


@page.check("ports", "Each veth1..3 is a port of br0, and its peer eth0 sits in ns1..ns3")
def _(lab):
    return all(lab.link("host", f"veth{i}")["master"] == "br0"
               and lab.link("host", f"veth{i}")["peer"] == {"node": f"ns{i}", "name": "eth0"}
               for i in (1, 2, 3))


@page.check("show", "The bridge puts every port in promiscuous mode, but not itself")
def _(lab):
    ports = all(lab.link("host", f"veth{i}")["promisc"] for i in (1, 2, 3))
    return ports and not lab.link("host", "br0")["promisc"] and "promiscuity 1" in lab.output("-details link show veth1")


@page.check("show", "`bridge` prints veth1@br0 because br0 has the index (2) that veth1's peer has in ns1")
def _(lab):
    return (lab.link("host", "br0")["index"] == lab.link("ns1", "eth0")["index"]
            and "veth1@br0:" in lab.output("bridge link show", step="show")
            and lab.link("host", "veth1")["peer"] == {"node": "ns1", "name": "eth0"})


@page.check("show", "Before any traffic, the bridge knows no namespace's MAC address")
def _(lab):
    table = lab.output("fdb show br br0", step="show")
    return not any(f"02:00:00:00:0{i}:01" in table for i in (1, 2, 3))


@page.check("ping", "Namespaces attached to the bridge reach each other: 10.0.0.2 answered all 3 pings")
def _(lab):
    return answered(lab.output("ping -c 3"), "10.0.0.2", 3)


@page.check("ping", "ns3 saw the ARP broadcast but none of the pings between ns1 and ns2")
def _(lab):
    seen = captured(lab, "ping")
    return "Request who-has 10.0.0.2 tell 10.0.0.1" in seen and "ICMP" not in seen


@page.check("learned", "The bridge learned ns1's and ns2's MACs on their own ports (entries without "
                        "`permanent` or `static`), and nothing of silent ns3")
def _(lab):
    table = lab.output("fdb show br br0 dynamic", step="learned")
    return (learned(table, "02:00:00:00:01:01 dev veth1") and learned(table, "02:00:00:00:02:01 dev veth2")
            and "02:00:00:00:03:01" not in table)


@page.check("flood", "A frame for an unknown MAC is flooded: ns3 received ns1's ping to 02:00:00:00:09:09")
def _(lab):
    seen = captured(lab, "flood")
    return "02:00:00:00:01:01 > 02:00:00:00:09:09" in seen and "ICMP echo request" in seen


@page.check("address", "The bridge's own address 10.0.0.254 answers from every namespace")
def _(lab):
    return holders(lab.snapshot, "10.0.0.254") == [("host", "br0")] and all(
        answered(lab.output(f"ns{i} ping -c 1 -W 1 10.0.0.254"), "10.0.0.254")
        for i in (1, 2, 3))


@page.check("address", "Once ns3 has spoken, the bridge learns its MAC on veth3")
def _(lab):
    return learned(lab.output("fdb show br br0 dynamic", step="address"), "02:00:00:00:03:01 dev veth3")


@page.check("tap", "tap0 is a port of br0, disabled while no program holds it open")
def _(lab):
    tap = lab.link("host", "tap0")
    shown = lab.output("bridge link show", step="tap")
    return tap["master"] == "br0" and not tap["carrier"] and \
        re.search(r"tap0: .* master br0 state disabled", shown) is not None


@page.check("rules", "Setting a new master moves tap0 from br0 to br1: a port has one bridge")
def _(lab):
    shown = lab.output("bridge link show", step="rules")
    return re.search(r"tap0: .* master br1 ", shown) is not None and \
        re.search(r"tap0: .* master br0 ", shown) is None


@page.check("rules", "The kernel refuses to make a bridge a port of another bridge")
def _(lab):
    return "Can not enslave a bridge to a bridge" in lab.result("master br0", step="rules").stderr
