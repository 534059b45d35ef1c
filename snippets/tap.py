"""tap: an Ethernet interface whose other end is a program, alone and on a bridge.

Run with `invoke lab.run --page tap`; the page is docs/interfaces/tap.md. The program
that plays the other end is snippets/programs/tuntap_reader.py.
"""
import re

from deepdive.model import WHILE_RUNNING, Needs, Page, cmd
from deepdive.parse import answered, learned, neighbour, received, transmitted

page = Page(
    name="tap",
    title="tap: an Ethernet interface with a program at the other end",
    nodes=("ns1",),
    needs=Needs(kinds=("tap", "bridge", "veth"), tools=("ping", "bridge", "python3")),
    ipv6=False,
)

READER = "python3 snippets/programs/tuntap_reader.py --mode tap"
# The host the program plays: an address and a MAC address of its own, as a VM's NIC has.
GUEST = "--answer 10.0.2.2 --mac 02:00:00:00:0a:02"

page.step(
    "create", "Create a persistent tap device with a fixed MAC address, and address it",
    "ip tuntap add tap0 mode tap",
    "ip link set tap0 address 02:00:00:00:0a:01",
    "sysctl -w net.ipv6.conf.tap0.disable_ipv6=1",
    "ip addr add 10.0.2.1/24 dev tap0",
    "ip link set tap0 up",
    "ip -details link show tap0",
)
page.step(
    "arp", "A program attaches to tap0; the host pings a neighbour behind it",
    # The step ends once the program has printed the ARP request's last line, its first
    # bytes; the program reads until it is stopped (endless), and is stopped then.
    cmd(f"{READER} tap0", background=True, ready="reading tap0", endless=True,
        until="ff ff ff ff ff ff 02 00 00 00 0a 01 08 06 00 01 08 00 ..."),
    cmd("ping -c 1 -W 0.3 10.0.2.2", rc=1),
    "ip neigh show dev tap0",
    "ip neigh flush dev tap0",
)
page.step(
    "answer", "The program answers ARP and pings as 10.0.2.2",
    cmd(f"{READER} {GUEST} tap0", background=True, ready="reading tap0"),
    "ping -c 2 -i 0.2 -W 1 10.0.2.2",
    "ip neigh show dev tap0",
)
page.step(
    "bridge", "Make tap0 a bridge port, and plug ns1 into the same bridge",
    "ip addr flush dev tap0",
    "ip link add br0 address 02:00:00:00:00:fe type bridge mcast_snooping 0",
    "sysctl -w net.ipv6.conf.br0.disable_ipv6=1",
    "ip link set br0 up",
    "ip link add veth1 address 02:00:00:00:01:fe type veth"
    " peer name eth0 netns ns1 address 02:00:00:00:01:01",
    "ip link set veth1 master br0",
    "ip link set veth1 up",
    "ip -n ns1 addr add 10.0.2.3/24 dev eth0",
    "ip -n ns1 link set eth0 up",
    "ip link set tap0 master br0",
    "bridge link show dev tap0",
)
page.step(
    "bridged", "The program attaches again; ns1 pings it across the bridge",
    cmd(f"{READER} {GUEST} tap0", background=True, ready="reading tap0"),
    "bridge link show dev tap0",
    "ip netns exec ns1 ping -c 2 -i 0.2 -W 1 10.0.2.2",
    "bridge fdb show br br0 dynamic",
    snapshot=WHILE_RUNNING,  # the program holding the device is in the diagram
)


def reader(lab, step: str) -> str:
    return lab.output("tuntap_reader.py", step=step)


def frames(lab, step: str) -> list[tuple[str, str]]:
    """What the program read: (Ethernet header, payload) of each frame, in order."""
    lines = reader(lab, step).splitlines()
    return [(line.split(": ", 1)[1], lines[i + 1].strip())
            for i, line in enumerate(lines) if line.startswith("read ")]


@page.check("create", "tap0 is a tap device with an Ethernet MAC address, 02:00:00:00:0a:01, created persistent")
def _(lab):
    shown = lab.output("-details link show tap0")
    link = lab.link("host", "tap0")
    return (link["kind"] == "tap" and link["mac"] == "02:00:00:00:0a:01"
            and "link/ether 02:00:00:00:0a:01" in shown and "tun type tap pi off" in shown
            and "persist on" in shown)


@page.check("create", "Flags of an Ethernet card (BROADCAST, MULTICAST); up, but NO-CARRIER while no program has it open")
def _(lab):
    link = lab.link("host", "tap0")
    return (link["up"] and not link["carrier"]
            and "<NO-CARRIER,BROADCAST,MULTICAST,UP>" in lab.output("-details link show tap0"))


@page.check("arp", "The only frame the program read is a broadcast ARP request from tap0's MAC: who-has 10.0.2.2 tell 10.0.2.1")
def _(lab):
    return frames(lab, "arp") == [("dst ff:ff:ff:ff:ff:ff src 02:00:00:00:0a:01 type 0x0806",
                                   "ARP Request who-has 10.0.2.2 tell 10.0.2.1")]


@page.check("arp", "With the ARP request unanswered, the ping got no reply and the neighbour entry for 10.0.2.2 is INCOMPLETE")
def _(lab):
    ping = lab.output("ping -c 1", step="arp")
    return (transmitted(ping) == 1 and received(ping) == 0
            and neighbour(lab.output("neigh show dev tap0", step="arp"), "10.0.2.2") == (None, "INCOMPLETE"))


@page.check("answer", "The program read the ARP request first, replied with its MAC, then read and answered two echo requests")
def _(lab):
    out = reader(lab, "answer")
    seen = frames(lab, "answer")
    return (len(seen) == 3 and seen[0][1] == "ARP Request who-has 10.0.2.2 tell 10.0.2.1"
            and all(h.endswith("type 0x0800") and p.startswith("IPv4 10.0.2.1 > 10.0.2.2: ICMP echo request")
                    for h, p in seen[1:])
            and "ARP Reply 10.0.2.2 is-at 02:00:00:00:0a:02" in out and out.count("ICMP echo reply") == 2)


@page.check("answer", "Frames on a tap carry the Ethernet header: each echo request is 98 bytes, 14 more than the 84-byte IP packet, which starts after it with 45 00 00 54")
def _(lab):
    out = reader(lab, "answer")
    return (out.count("read 98 bytes: dst 02:00:00:00:0a:02 src 02:00:00:00:0a:01") == 2
            and out.count("  02 00 00 00 0a 02 02 00 00 00 0a 01 08 00 45 00 00 54 ...\n") == 2)


@page.check("answer", "Both pings are answered by 10.0.2.2, and the host learned 10.0.2.2 at the program's MAC "
                     "address: the entry is REACHABLE, not PERMANENT")
def _(lab):
    return (answered(lab.output("ping -c 2", step="answer"), "10.0.2.2", 2)
            and neighbour(lab.output("neigh show dev tap0", step="answer"), "10.0.2.2")
            == ("02:00:00:00:0a:02", "REACHABLE"))


@page.check("bridge", "tap0 is a port of br0, state disabled while no program holds it; veth1's peer is eth0 in ns1")
def _(lab):
    tap = lab.link("host", "tap0")
    shown = lab.output("bridge link show dev tap0", step="bridge")
    return (tap["master"] == "br0" and not tap["carrier"]
            and re.search(r"tap0: .* master br0 state disabled", shown) is not None
            and lab.link("host", "veth1")["peer"] == {"node": "ns1", "name": "eth0"})


@page.check("bridged", "With the program holding tap0 open, the port is forwarding")
def _(lab):
    return re.search(r"tap0: <[^>]*LOWER_UP[^>]*> .* master br0 state forwarding",
                     lab.output("bridge link show dev tap0", step="bridged")) is not None


@page.check("bridged", "The bridge flooded ns1's broadcast ARP request to tap0, where the program read it")
def _(lab):
    seen = frames(lab, "bridged")
    return bool(seen) and seen[0] == ("dst ff:ff:ff:ff:ff:ff src 02:00:00:00:01:01 type 0x0806",
                                      "ARP Request who-has 10.0.2.2 tell 10.0.2.3")


@page.check("bridged", "ns1's pings, addressed to the program's MAC, are answered, and the bridge learned that MAC "
                      "on tap0 (an entry without `permanent` or `static`)")
def _(lab):
    fdb = lab.output("fdb show br br0 dynamic")
    echoes = [h for h, p in frames(lab, "bridged") if "ICMP echo request" in p]
    return (answered(lab.output("ping -c 2", step="bridged"), "10.0.2.2", 2)
            and echoes == ["dst 02:00:00:00:0a:02 src 02:00:00:00:01:01 type 0x0800"] * 2
            and learned(fdb, "02:00:00:00:0a:02 dev tap0") and learned(fdb, "02:00:00:00:01:01 dev veth1"))
