"""vxlan: an Ethernet segment carried in UDP between two servers.

Run with `invoke lab.run --page vxlan`; the page is docs/interfaces/vxlan.md.
"""
import re

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, indexes, learned, neighbour, replies

page = Page(
    name="vxlan",
    title="vxlan: Ethernet over UDP",
    nodes=("server1", "server2"),
    needs=Needs(kinds=("veth", "vxlan"), tools=("ping", "bridge", "tcpdump")),
    ipv6=False,
    # `ip route get` prints the uid of the caller, which a rootless run keeps
    masks=[(r"(?m)^(10\.0\.2\.2 dev vx2 src 10\.0\.2\.1) uid \d+", r"\1 uid <uid>")],
)

# server1 watches its underlay interface: only the tunnel's UDP datagrams. Each capture
# below ends once it has printed what its step makes it see (`until`): stopped earlier,
# tcpdump drops the frames it has not printed yet.
CAPTURE = "ip netns exec server1 tcpdump{count} -i eth0 -n -e -t -l --immediate-mode udp port 4789"
# server2 watches its vx0 for echo requests, with -v for their IP headers' flags.
ARRIVED = ("ip netns exec server2 tcpdump -i vx0 -n -v -t -l --immediate-mode"
           " 'icmp[icmptype] == icmp-echo'")

# `index 5` numbers server2's end: in two fresh namespaces both ends would otherwise be
# link 2, and server1's `eth0@if2` could not show whose index the 2 is.
page.step(
    "underlay", "Connect the two servers with an underlay network",
    "ip link add eth0 netns server2 index 5 address 02:00:00:00:00:02 type veth"
    " peer name eth0 netns server1 address 02:00:00:00:00:01",
    "ip -n server1 addr add 192.168.0.1/24 dev eth0",
    "ip -n server2 addr add 192.168.0.2/24 dev eth0",
    "ip -n server1 link set eth0 up",
    "ip -n server2 link set eth0 up",
    # server1's eth0 came up before its peer, so without a carrier: the kernel readies it
    # for sending a moment after the peer came up, in the background, and drops what is
    # sent before that (the ping's ARP request). `state UP` says it is done.
    cmd("ip -n server1 link show eth0", until="state UP"),
    "ip netns exec server1 ping -c 1 -W 1 192.168.0.2",
)
# `srcport 4789 4790` pins the outer UDP source port, otherwise a hash of the inner
# flow that differs between runs, so that the captures are the same on every run.
page.step(
    "tunnel", "Create vx0 on each server, VNI 100, pointing at the other",
    "ip -n server1 link add vx0 address 02:00:00:00:01:01 type vxlan"
    " id 100 local 192.168.0.1 remote 192.168.0.2 dev eth0 dstport 4789 srcport 4789 4790",
    "ip -n server2 link add vx0 address 02:00:00:00:01:02 type vxlan"
    " id 100 local 192.168.0.2 remote 192.168.0.1 dev eth0 dstport 4789 srcport 4789 4790",
    "ip -n server1 addr add 10.0.0.1/24 dev vx0",
    "ip -n server2 addr add 10.0.0.2/24 dev vx0",
    "ip -n server1 link set vx0 up",
    "ip -n server2 link set vx0 up",
    snapshot=True,
)
page.step(
    "show", "Look at the tunnel device",
    "ip -n server1 link show",
    "ip -n server1 -details link show vx0",
    "bridge -n server1 fdb show dev vx0",
)
page.step(
    "ping", "Ping across the overlay while server1 captures on the underlay",
    # The ARP exchange and two pings make six datagrams; then tcpdump -c 6 ends by itself.
    cmd(CAPTURE.format(count=" -c 6"), background=True, ready="listening on", until="6 packets captured"),
    "ip netns exec server1 ping -c 2 -i 0.2 -W 1 10.0.0.2",
)
page.step(
    "learned", "What vx0 learned",
    "bridge -n server1 fdb show dev vx0",
    "ip -n server1 neigh show dev vx0",
)
page.step(
    "mtu", "The largest packet that fits, and one byte more",
    # No count here: the capture must be able to show a frame that should not be there.
    cmd(CAPTURE.format(count=""), background=True, ready="listening on", until="ICMP echo reply", endless=True),
    cmd(ARRIVED, background=True, ready="listening on", until="ICMP echo request", endless=True),
    "ip netns exec server1 ping -c 1 -W 1 -M do -s 1422 10.0.0.2",
    cmd("ip netns exec server1 ping -c 1 -W 0.5 -M do -s 1423 10.0.0.2", rc=1),
)
page.step(
    "defaults", "A vxlan device created with neither dstport nor dev",
    "ip -n server1 link add vx1 address 02:00:00:00:01:03 type vxlan id 1",
    "ip -n server1 -details link show vx1",
    "bridge -n server1 fdb show dev vx1",
)
# The underlay capture takes every IPv4 frame: a datagram's later fragments carry no UDP
# header, so `udp port 4789` would not see them. It ends with the reply's last fragment.
page.step(
    "toobig", "A tunnel without dev: a 1500-byte packet with DF set, twice",
    *[c for n, peer in ((1, 2), (2, 1)) for c in (
        f"ip -n server{n} link add vx2 address 02:00:00:00:02:0{n} type vxlan"
        f" id 200 local 192.168.0.{n} remote 192.168.0.{peer} dstport 4789 srcport 4789 4790",
        f"ip -n server{n} addr add 10.0.2.{n}/24 dev vx2",
        f"ip -n server{n} link set vx2 up",
    )],
    cmd("ip netns exec server1 tcpdump -i eth0 -n -e -v -t -l --immediate-mode ip",
        background=True, ready="listening on", until="192.168.0.2 > 192.168.0.1: ip-proto-17", endless=True),
    cmd("ip netns exec server2 tcpdump -i vx2 -n -v -t -l --immediate-mode 'icmp[icmptype] == icmp-echo'",
        background=True, ready="listening on", until="ICMP echo request", endless=True),
    "ip netns exec server1 ping -c 1 -W 1 -M do -s 1472 10.0.2.2",
    "ip -n server1 route get 10.0.2.2",
    cmd("ip netns exec server1 ping -c 1 -W 0.5 -M do -s 1472 10.0.2.2", rc=1),
)
# Last, as it turns IPv6 on for server1's eth0, whose autoconfiguration then talks on
# the underlay; no later step captures there.
page.step(
    "underlay6", "The same tunnel over an IPv6 underlay",
    # Refused while IPv6 is off on eth0 (no MAC given: the link is never made).
    cmd("ip -n server1 link add vx6 type vxlan id 600 local fd00::1 remote fd00::2 dev eth0 dstport 4789", rc=2),
    "ip netns exec server1 sysctl -w net.ipv6.conf.eth0.disable_ipv6=0",
    "ip -n server1 link add vx6 address 02:00:00:00:01:06 type vxlan"
    " id 600 local fd00::1 remote fd00::2 dev eth0 dstport 4789",
    "ip -n server1 link show vx6",
)


def frames(capture: str) -> list[str]:
    """The captured frames, one line each (tcpdump's banner lines left out)."""
    return [l for l in capture.splitlines() if re.match(r"[0-9a-f]{2}(:[0-9a-f]{2}){5} > ", l)]


def length(line: str) -> int:
    m = re.search(r"length (\d+):", line)
    return int(m.group(1)) if m else -1


def outer(capture: str) -> list[tuple[int, str, str, int]]:
    """(fragment offset, flags, protocol, IP length) of each underlay frame a `tcpdump
    -e -v` printed: the frames between the servers' own MACs, not the frames inside."""
    return [(int(m["offset"]), m["flags"], m["proto"], int(m["length"])) for m in re.finditer(
        r"(?m)^02:00:00:00:00:0[12] > .*?offset (?P<offset>\d+), flags \[(?P<flags>[^\]]*)\], "
        r"proto (?P<proto>\w+) \(\d+\), length (?P<length>\d+)\)", capture)]


def links(lab) -> dict[tuple[str, str], dict]:
    """Every link of one fresh snapshot, by (namespace, name)."""
    return {(n["name"], l["name"]): l for n in lab.snapshot["nodes"] for l in n["links"]}


@page.check("tunnel", "vx0 in each server is a vxlan device with VNI 100 and port 4789, stacked on that server's eth0")
def _(lab):
    state = links(lab)
    return all(state[s, "vx0"]["kind"] == "vxlan"
               and state[s, "vx0"]["details"] == {"vni": 100, "dstport": 4789}
               and state[s, "vx0"]["parent"] == {"node": s, "name": "eth0"}
               for s in ("server1", "server2"))


@page.check("tunnel", "The kernel gave vx0 an MTU of 1450, 50 bytes less than the 1500 of eth0 beneath it")
def _(lab):
    state = links(lab)
    return all(state[s, "vx0"]["mtu"] == 1450 and state[s, "eth0"]["mtu"] == 1500
               for s in ("server1", "server2"))


@page.check("show", "In `eth0@if5`, 5 is the index of eth0's peer in server2; server1's eth0 itself is link 2")
def _(lab):
    own, peer = lab.link("server1", "eth0"), lab.link("server2", "eth0")
    return own["peer"] == {"node": "server2", "name": "eth0"} and own["index"] != peer["index"] and \
        indexes(lab.output("-n server1 link show", step="show"), "eth0") == (own["index"], peer["index"])


@page.check("show", "`ip -details` shows VNI 100, the remote and local endpoints, the underlay device and port 4789")
def _(lab):
    shown = lab.output("-details link show vx0", step="show")
    return ("mtu 1450" in shown and
            "vxlan id 100 remote 192.168.0.2 local 192.168.0.1 dev eth0 srcport 4789 4790 dstport 4789" in shown)


@page.check("show", "Before any traffic, vx0's forwarding table holds one entry: all-zeros MAC to 192.168.0.2")
def _(lab):
    lines = lab.output("fdb show dev vx0", step="show").splitlines()
    return lines == ["00:00:00:00:00:00 dst 192.168.0.2 via eth0 self permanent"]


@page.check("ping", "Both pings across the overlay are answered, by 10.0.0.2")
def _(lab):
    return answered(lab.output("ping -c 2"), "10.0.0.2", 2)


@page.check("ping", "On the underlay every overlay frame travels inside UDP to port 4789, marked VNI 100")
def _(lab):
    lines = frames(lab.output("tcpdump", step="ping"))
    outer = lines[0::2]
    return (len(lines) == 12 and all(
        re.search(r"192\.168\.0\.[12]\.4789 > 192\.168\.0\.[12]\.4789: VXLAN, flags \[I\] \(0x08\), vni 100$", o)
        for o in outer))


@page.check("ping", "Inside the datagrams travel the ARP exchange and the ICMP packets between 10.0.0.1 and 10.0.0.2")
def _(lab):
    inner = frames(lab.output("tcpdump", step="ping"))[1::2]
    return ("Request who-has 10.0.0.2 tell 10.0.0.1" in inner[0]
            and "Reply 10.0.0.2 is-at 02:00:00:00:01:02" in inner[1]
            and sum("ICMP echo request" in i for i in inner) == 2
            and sum("ICMP echo reply" in i for i in inner) == 2)


@page.check("ping", "The broadcast ARP request crossed the underlay in a unicast datagram to 192.168.0.2")
def _(lab):
    outer, inner = frames(lab.output("tcpdump", step="ping"))[:2]
    return (outer.startswith("02:00:00:00:00:01 > 02:00:00:00:00:02,") and "> 192.168.0.2.4789:" in outer
            and inner.startswith("02:00:00:00:01:01 > ff:ff:ff:ff:ff:ff,"))


@page.check("ping", "Each outer frame is exactly 50 bytes longer than the frame it carries")
def _(lab):
    lines = frames(lab.output("tcpdump", step="ping"))
    return all(length(o) - length(i) == 50 for o, i in zip(lines[0::2], lines[1::2]))


@page.check("learned", "vx0 learned server2's overlay MAC behind 192.168.0.2, as an entry that is neither `permanent` nor `static`")
def _(lab):
    return learned(lab.output("fdb show dev vx0", step="learned"), "02:00:00:00:01:02 dst 192.168.0.2 self")


@page.check("learned", "ARP through the tunnel resolved 10.0.0.2 to the MAC of server2's vx0: the entry is REACHABLE, not PERMANENT")
def _(lab):
    return neighbour(lab.output("neigh show dev vx0", step="learned"), "10.0.0.2") == ("02:00:00:00:01:02", "REACHABLE")


@page.check("mtu", "A 1422-byte payload (a 1450-byte IP packet) crosses the tunnel whole: it arrives on server2's vx0 "
                   "with the don't-fragment bit set (`flags [DF]`), and its 1430-byte reply comes back")
def _(lab):
    headers = re.findall(r"flags \[([^\]]*)\], proto ICMP \(1\), length (\d+)\)", lab.output("-i vx0", step="mtu"))
    return (headers == [("DF", "1450")]
            and [(r.source, r.size) for r in replies(lab.output("-s 1422"))] == [("10.0.0.2", 1430)])


@page.check("mtu", "On the underlay its frames are 1514 bytes, a full 1500-byte IP packet plus Ethernet header, and nothing else was sent")
def _(lab):
    lines = frames(lab.output("tcpdump -i eth0", step="mtu"))
    return len(lines) == 4 and length(lines[0]) == 1514 and length(lines[1]) == 1464


@page.check("mtu", "One byte more is refused before it leaves server1: exit status 1, \"message too long, mtu=1450\"")
def _(lab):
    res = lab.result("-s 1423")
    return res.rc == 1 and "message too long, mtu=1450" in res.stdout + res.stderr


@page.check("defaults", "Without dstport the kernel uses port 8472, and without dev it leaves the MTU at 1500")
def _(lab):
    res = lab.result("link add vx1")
    shown = lab.output("-details link show vx1")
    return ("destination port not specified" in res.stderr and "dstport 8472" in shown
            and "mtu 1500" in shown and lab.link("server1", "vx1")["mtu"] == 1500)


@page.check("defaults", "vx1, created without `remote`, has no forwarding entry at all")
def _(lab):
    return lab.result("fdb show dev vx1").rc == 0 and lab.output("fdb show dev vx1").strip() == ""


@page.check("toobig", "vx2, created without dev, has an MTU of 1500, so it takes the 1500-byte request with DF set; "
                      "the request is answered")
def _(lab):
    return lab.link("server1", "vx2")["mtu"] == 1500 and \
        [(r.source, r.size) for r in replies(lab.output("-W 1 -M do -s 1472 10.0.2.2", step="toobig"))] == \
        [("10.0.2.2", 1480)]


@page.check("toobig", "On the underlay the request's 1550-byte datagram went out in two IPv4 fragments, of 1500 "
                      "and 70 bytes, the outer header without DF; the reply came back the same way")
def _(lab):
    frags = [(off, flags, size) for off, flags, proto, size in outer(lab.output("-i eth0", step="toobig"))
             if proto == "UDP" and (off or "+" in flags)]
    return frags == [(0, "+", 1500), (1480, "none", 70)] * 2


@page.check("toobig", "Inside, the request kept its DF bit: it left in the first fragment marked `flags [DF]`, "
                      "and came out of server2's vx2 whole, 1500 bytes, still marked DF")
def _(lab):
    underlay = lab.output("-i eth0", step="toobig")
    arrived = re.findall(r"flags \[([^\]]*)\], proto ICMP \(1\), length (\d+)\)", lab.output("-i vx2", step="toobig"))
    return re.search(r"(?m)^02:00:00:00:02:01 > 02:00:00:00:02:02, .*flags \[DF\], proto ICMP \(1\), "
                     r"length 1500\)", underlay) is not None and arrived == [("DF", "1500")]


@page.check("toobig", "The kernel learned a path MTU of 1450 for 10.0.2.2 and refused the second request on "
                      "server1: \"message too long, mtu=1450\", and nothing more crossed the underlay")
def _(lab):
    second = lab.result("-W 0.5 -M do -s 1472 10.0.2.2", step="toobig")
    frames_seen = outer(lab.output("-i eth0", step="toobig"))
    return re.search(r"cache expires \d+sec mtu 1450", lab.output("route get 10.0.2.2", step="toobig")) is not None and \
        second.rc == 1 and "message too long, mtu=1450" in second.stdout + second.stderr and len(frames_seen) == 6


@page.check("underlay6", "With IPv6 off on eth0, the kernel refuses vx6, a vxlan device with IPv6 endpoints on it: "
                         "\"IPv6 support disabled by administrator\"; with IPv6 on, the same device is made")
def _(lab):
    refused = lab.result("link add vx6 type vxlan", step="underlay6")
    return refused.rc == 2 and "IPv6 support disabled by administrator" in refused.stderr and \
        lab.link("server1", "vx6")["mtu"] == 1430


@page.check("underlay6", "Over an IPv6 underlay the kernel takes 70 bytes off: vx6 gets an MTU of 1430 on the same "
                         "1500-byte eth0")
def _(lab):
    return lab.link("server1", "vx6")["mtu"] == 1430 == lab.link("server1", "eth0")["mtu"] - 70 and \
        "vx6: <BROADCAST,MULTICAST> mtu 1430 " in lab.output("link show vx6")
