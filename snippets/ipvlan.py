"""ipvlan: many IP addresses, each in its own namespace, behind one MAC address.

Run with `invoke lab.run --page ipvlan`; the page is docs/interfaces/ipvlan.md.
"""
import re

from deepdive.model import Cmd, Needs, Page, cmd
from deepdive.parse import answered, indexes, neighbour, received, transmitted
from deepdive.snapshot import find_link, holders

page = Page(
    name="ipvlan",
    title="ipvlan: many IPs behind one MAC",
    nodes=("peer", "pod1", "pod2"),
    needs=Needs(kinds=("veth", "ipvlan", "macvlan"), tools=("ping", "tcpdump")),
    ipv6=False,
)

NODE_MAC = "02:00:00:00:00:01"
# Fixed indexes: in fresh namespaces every first link is number 2, and `eth0@if2` could
# not show whose number the 2 is.
HOST_ETH0, PEER_ETH0 = 2, 7
POD_ETH0 = {1: 11, 2: 12}


def capture(*hosts: str, until: str) -> Cmd:
    """peer's capture on its end of the cable of what passes between `hosts` (ARP and IP),
    each frame with its MAC addresses."""
    expression = " and ".join(f"host {h}" for h in hosts)
    return cmd(f"ip netns exec peer tcpdump -i eth0 --immediate-mode -n -e -t -l {expression}",
               background=True, ready="listening on", until=until, endless=True)


page.step(
    "uplink", "Give the host an eth0, cabled to a peer on the same LAN",
    f"ip link add eth0 index {HOST_ETH0} address {NODE_MAC} type veth"
    f" peer name eth0 netns peer index {PEER_ETH0} address 02:00:00:00:00:02",
    "ip link set eth0 up",
    "ip -n peer addr add 10.0.0.100/24 dev eth0",
    "ip -n peer link set eth0 up",
)
page.step(
    "default", "An ipvlan child created without a mode, then removed",
    "ip link add link eth0 name ipvl9 type ipvlan",
    "ip -details link show ipvl9",
    "ip link del ipvl9",
)
page.step(
    "children", "Create an ipvlan child of eth0 in each pod",
    cmd("ip link add link eth0 name eth0 netns pod1 type ipvlan mode l2", rc=2),
    *[c for i in (1, 2) for c in (
        f"ip link add link eth0 name ipvl{i} netns pod{i} index {POD_ETH0[i]} type ipvlan mode l2",
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
    capture("10.0.0.11", "10.0.0.12", until="tell 10.0.0.11, length 28"),
    "ip netns exec pod1 ping -c 2 -i 0.2 -W 1 10.0.0.12",
)
# Each side gives up on ARP after three requests a second apart: the neighbour entry
# turns FAILED, so the capture holds all of them, in this order, on every run.
page.step(
    "host", "An address on the parent eth0: the host and its pods ask for each other's MAC address",
    "ip addr add 10.0.0.1/24 dev eth0",
    capture("10.0.0.1", "10.0.0.11", until="tell 10.0.0.1, length 28"),
    cmd("ip netns exec pod1 ping -c 1 -W 1 10.0.0.1", rc=1),
    cmd("ip -n pod1 neigh show 10.0.0.1", until="FAILED"),
    cmd("ping -c 1 -W 1 10.0.0.11", rc=1),
    cmd("ip neigh show 10.0.0.11", until="FAILED"),
    "ip netns exec peer ping -c 1 -W 1 10.0.0.1",
)
page.step(
    "unicast", "Both sides told the shared MAC address by hand: pod1 pings the host",
    f"ip -n pod1 neigh replace 10.0.0.1 lladdr {NODE_MAC} dev eth0",
    f"ip neigh replace 10.0.0.11 lladdr {NODE_MAC} dev eth0",
    capture("10.0.0.1", "10.0.0.11", until="ICMP echo reply"),
    cmd("ip netns exec pod1 ping -c 1 -W 1 10.0.0.1", rc=1),
)
page.step(
    "host-child", "Move the host's address to an ipvlan child of its own",
    "ip -n pod1 neigh del 10.0.0.1 dev eth0",
    "ip neigh del 10.0.0.11 dev eth0",
    "ip addr del 10.0.0.1/24 dev eth0",
    "ip link add link eth0 name ipvl0 type ipvlan mode l2",
    "ip addr add 10.0.0.1/24 dev ipvl0",
    "ip link set ipvl0 up",
    "ip netns exec pod1 ping -c 1 -W 1 10.0.0.1",
    "ip -n pod1 neigh show 10.0.0.1",
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


def frames(tcpdump_output: str) -> list[str]:
    """The frames `tcpdump -e -t` printed, one line each, MAC addresses first."""
    return [line for line in tcpdump_output.splitlines() if line.strip()]


def arp_request(sender_ip: str, target_ip: str) -> str:
    """How `tcpdump -n -e -t` prints a broadcast ARP request from the shared MAC address."""
    return (f"{NODE_MAC} > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: "
            f"Request who-has {target_ip} tell {sender_ip}, length 28")


@page.check("default", "A child created without `mode` is in mode l3, the kernel's default")
def _(lab):
    return re.search(r"^\s+ipvlan\s+mode l3 ", lab.output("-details link show ipvl9"), re.M) is not None


@page.check("children", "The kernel refuses a child named eth0 for pod1, since the host, where the "
                        "request comes from, has an eth0: File exists")
def _(lab):
    res = lab.result("name eth0 netns pod1", step="children")
    return "File exists" in res.stderr and find_link(lab.snapshot, "pod1", "eth0")["kind"] == "ipvlan"


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


@page.check("show", f"In `eth0@ifN` N is the other end's index: the parent's ({HOST_ETH0}) for a pod's eth0 "
                    f"({POD_ETH0[1]}, {POD_ETH0[2]}), peer's eth0 ({PEER_ETH0}) for the host's")
def _(lab):
    host, peer = lab.link("host", "eth0")["index"], lab.link("peer", "eth0")["index"]
    pods = [lab.link(f"pod{i}", "eth0")["index"] for i in (1, 2)]
    return (host, peer, pods) == (HOST_ETH0, PEER_ETH0, [POD_ETH0[1], POD_ETH0[2]]) and \
        indexes(lab.output("ip link show eth0", step="show"), "eth0") == (host, peer) and \
        all(indexes(lab.output(shown, step="show"), "eth0") == (pods[i], host)
            for i, shown in enumerate(("ip -n pod1 link show eth0", "ip -n pod2 -details link show eth0")))


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


@page.check("between", "pod1 reaches pod2; of all they exchanged, only pod1's broadcast ARP request went out "
                       "on the cable to peer")
def _(lab):
    seen = lab.output("tcpdump", step="between")
    return answered(lab.output("pod1 ping", step="between"), "10.0.0.12", 2) and \
        frames(seen) == [arp_request("10.0.0.11", "10.0.0.12")]


@page.check("host", "With its address on the parent eth0, the host answers the peer, but pod1 and the host "
                    "each sent three ARP requests for the other out on the cable, and neither got an answer")
def _(lab):
    unanswered = [lab.output(c, step="host") for c in ("pod1 ping", "ping -c 1 -W 1 10.0.0.11")]
    snap = lab.snapshot
    requests = [arp_request("10.0.0.11", "10.0.0.1")] * 3 + [arp_request("10.0.0.1", "10.0.0.11")] * 3
    return all(transmitted(p) == 1 and received(p) == 0 for p in unanswered) and \
        frames(lab.output("tcpdump", step="host")) == requests and \
        neighbour(lab.output("ip -n pod1 neigh show 10.0.0.1", step="host"), "10.0.0.1") == (None, "FAILED") and \
        neighbour(lab.output("ip neigh show 10.0.0.11", step="host"), "10.0.0.11") == (None, "FAILED") and \
        answered(lab.output("peer ping", step="host"), "10.0.0.1") and \
        holders(snap, "10.0.0.1") == [("host", "eth0")] and holders(snap, "10.0.0.11") == [("pod1", "eth0")]


@page.check("unicast", "pod1's echo request to the shared MAC address reached the host's stack, "
                       "which answered; the answer went out on the cable and never reached pod1")
def _(lab):
    ping = lab.output("pod1 ping", step="unicast")
    seen = frames(lab.output("tcpdump", step="unicast"))
    return transmitted(ping) == 1 and received(ping) == 0 and len(seen) == 1 and \
        re.fullmatch(rf"{NODE_MAC} > {NODE_MAC}, ethertype IPv4 \(0x0800\), length 98: "
                     r"10\.0\.0\.1 > 10\.0\.0\.11: ICMP echo reply, id \d+, seq 1, length 64", seen[0]) is not None


@page.check("host-child", "Once the host's address sits on an ipvlan child (ipvl0), "
                          "pod1 reaches the host and the host reaches pod1, through ARP")
def _(lab):
    link = lab.link("host", "ipvl0")
    return link["kind"] == "ipvlan" and "10.0.0.1/24" in link["addresses"] and \
        answered(lab.output("pod1 ping", step="host-child"), "10.0.0.1") and \
        answered(lab.output("ping -c 1 -W 1 10.0.0.11", step="host-child"), "10.0.0.11") and \
        neighbour(lab.output("neigh show 10.0.0.1", step="host-child"), "10.0.0.1") == (NODE_MAC, "REACHABLE")


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
