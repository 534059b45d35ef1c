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
    # bridge mdb lists its entries newest first, and br0's own MLD reports race ns1's:
    # both start when veth1's carrier comes up (1 run in 20 put br0's lines before
    # veth1's). Their place is left out of the comparison; a check tests that they exist.
    masks=[(r"(?m)^dev br0 port br0 grp \S+ temp\n", "")],
)

# ns3 listens on its port; a capture shows which frames the bridge sent its way. `icmp`
# is IPv4's: the IPv6 chatter every namespace sends on its own is left out.
CAPTURE = "ip netns exec ns3 tcpdump -i eth0 -n -e -t -l --immediate-mode arp or icmp"
# The last port's block of `bridge fdb show`, in the kernel's order (entries of one port
# together, the newest first): ns3's MAC, learned from the first frame ns3 sent once its
# link came up, and veth3's own multicast groups, the last of which veth3 joins once
# its IPv6 link-local address exists. The table is read again until it holds all of it.
VETH3_BLOCK = "\n".join((
    "02:00:00:00:03:01 dev veth3 master br0 ",
    "02:00:00:00:03:fe dev veth3 master br0 permanent",
    "33:33:00:00:00:01 dev veth3 self permanent",
    "01:00:5e:00:00:01 dev veth3 self permanent",
    "33:33:ff:00:03:fe dev veth3 self permanent",
))

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
    "ip -n ns1 link show eth0",
)
page.step(
    "promisc", "Promiscuous mode asked for by hand",
    "ip link set veth2 promisc on",
    "ip -details link show veth2",
    "ip link set veth2 promisc off",
)
page.step(
    "fdb", "The forwarding database, and where multicast groups live",
    cmd("bridge fdb show br br0", until=VETH3_BLOCK),
    "ip maddr show dev br0",
    "ip maddr show dev veth1",
    cmd("bridge mdb show", until="port veth3 grp ff02::1:ff00:301"),
)
page.step(
    "ping", "ns1 pings ns2 while ns3 listens",
    # Each capture ends once it has printed the frame its step expects (`until`): stopped
    # earlier, tcpdump drops the frames it has not printed yet.
    cmd(CAPTURE, background=True, ready="listening on", until="Request who-has 10.0.0.2 tell 10.0.0.1",
        endless=True),
    "ip netns exec ns1 ping -c 3 -i 0.2 -W 1 10.0.0.2",
)
page.step(
    "flood", "A frame for a MAC address nobody has",
    "ip -n ns1 neigh add 10.0.0.99 lladdr 02:00:00:00:09:09 dev eth0",
    cmd(CAPTURE, background=True, ready="listening on", until="10.0.0.1 > 10.0.0.99: ICMP echo request",
        endless=True),
    cmd("ip netns exec ns1 ping -c 1 -W 0.2 10.0.0.99", rc=1),
)
page.step(
    "address", "Give the bridge itself an address",
    "ip addr add 10.0.0.254/24 dev br0",
    *[f"ip netns exec ns{i} ping -c 1 -W 1 10.0.0.254" for i in (1, 2, 3)],
    "ip -n ns1 route show",
    # 192.0.2.1 (a documentation address) stands for anything outside the pods' subnet.
    cmd("ip -n ns1 route get 192.0.2.1", rc=2),
)
page.step(
    "gateway", "Make the bridge ns1's default gateway",
    "ip -n ns1 route add default via 10.0.0.254",
    "ip -n ns1 route show",
    "ip -n ns1 route get 192.0.2.1",
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


def fdb_self(table: str, dev: str) -> list[str]:
    """The MACs `bridge fdb show` lists as `dev DEV self permanent`, in its order."""
    return [m[1] for m in re.finditer(rf"(?m)^(\S+) dev {dev} self permanent$", table)]


def maddr_links(shown: str) -> list[str]:
    """The link-layer groups (`link  33:33:00:00:00:01`) of `ip maddr show dev DEV`."""
    return re.findall(r"(?m)^\s+link\s+(\S+)", shown)


def at_link(shown: str, name: str) -> int | None:
    """N of `NAME@ifN:` in `ip link` output, None when the name is not followed by @ifN."""
    m = re.search(rf"^\d+: {name}@if(\d+):", shown, re.M)
    return int(m[1]) if m else None


@page.check("ports", "Each veth1..3 is a port of br0, and its peer eth0 sits in ns1..ns3")
def _(lab):
    return all(lab.link("host", f"veth{i}")["master"] == "br0"
               and lab.link("host", f"veth{i}")["peer"] == {"node": f"ns{i}", "name": "eth0"}
               for i in (1, 2, 3))


@page.check("show", "In veth1@ifN, N is the index of eth0 in ns1 (its peer), not veth1's own index; "
                    "in eth0@ifM, M is veth1's index in the host")
def _(lab):
    veth1, eth0 = lab.link("host", "veth1"), lab.link("ns1", "eth0")
    host_side = at_link(lab.output("-details link show veth1", step="show"), "veth1")
    ns_side = at_link(lab.output("ip -n ns1 link show eth0", step="show"), "eth0")
    return (veth1["index"] != eth0["index"]
            and host_side == eth0["index"] and ns_side == veth1["index"]
            and "link-netns ns1" in lab.output("-details link show veth1", step="show"))


@page.check("show", "`bridge link` names veth1's peer index by looking it up in the host namespace: "
                    "veth1@br0, br0 being the host's link with that index")
def _(lab):
    peer_index = lab.link("ns1", "eth0")["index"]
    host_names = {link["index"]: link["name"] for node in lab.snapshot["nodes"] if node["name"] == "host"
                  for link in node["links"]}
    return (host_names.get(peer_index) == "br0"
            and re.search(r"^\d+: veth1@br0:", lab.output("bridge link show", step="show"), re.M) is not None)


@page.check("show", "With STP off, veth1 forwards while its forward-delay timer still counts down")
def _(lab):
    shown = lab.output("-details link show veth1", step="show")
    timer = re.search(r"forward_delay_timer\s+(\d+\.\d+)", shown)
    stp = lab.run("ip -details link show br0").stdout
    return ("stp_state 0" in stp and "bridge_slave state forwarding" in shown
            and timer is not None and float(timer[1]) > 0)


@page.check("show", "The bridge counts veth1 promiscuous (promiscuity 1) without setting its PROMISC "
                    "flag, and br0 itself is not promiscuous")
def _(lab):
    shown = lab.output("-details link show veth1", step="show")
    flags = re.search(r"^\d+: \S+ <([^>]*)>", shown, re.M)
    return ("promiscuity 1 " in shown and flags is not None and "PROMISC" not in flags[1].split(",")
            and all(lab.link("host", f"veth{i}")["promisc"] for i in (1, 2, 3))
            and not lab.link("host", "br0")["promisc"])


@page.check("show", "allmulti 1 on veth1 is the bridge's doing: ns1's eth0, a veth that is no port, has allmulti 0")
def _(lab):
    return ("allmulti 1 " in lab.output("-details link show veth1", step="show")
            and "allmulti 0 " in lab.run("ip -n ns1 -details link show eth0").stdout)


@page.check("promisc", "`promisc on` sets the PROMISC flag and adds one to the bridge's count: promiscuity 2")
def _(lab):
    shown = lab.output("-details link show veth2", step="promisc")
    flags = re.search(r"^\d+: \S+ <([^>]*)>", shown, re.M)
    return flags is not None and "PROMISC" in flags[1].split(",") and "promiscuity 2 " in shown


@page.check("fdb", "The `self permanent` entries of br0 and veth1 are their own multicast lists, "
                   "exactly the `link` groups of `ip maddr show`")
def _(lab):
    table = lab.output("bridge fdb show br br0", step="fdb")
    return all(fdb_self(table, dev) == maddr_links(lab.output(f"ip maddr show dev {dev}", step="fdb"))
               and fdb_self(table, dev) for dev in ("br0", "veth1"))


@page.check("fdb", "Before any ping, the bridge learned each namespace's MAC on its port (no `permanent`, "
                   "no `static`), and bridge mdb holds each namespace's MLD report for its "
                   "solicited-node group on that port")
def _(lab):
    table = lab.output("bridge fdb show br br0", step="fdb")
    mdb = lab.output("bridge mdb show", step="fdb")
    return all(learned(table, f"02:00:00:00:0{i}:01 dev veth{i}")
               and f"dev br0 port veth{i} grp ff02::1:ff00:{i}01 " in mdb for i in (1, 2, 3))


@page.check("fdb", "bridge mdb's port br0 entries are groups the host joined on br0, as ip maddr lists them")
def _(lab):
    joined = re.findall(r"(?m)^\s*inet6 (\S+)$", lab.output("ip maddr show dev br0", step="fdb"))
    own = re.findall(r"(?m)^dev br0 port br0 grp (\S+) ", lab.output("bridge mdb show", step="fdb"))
    return bool(own) and set(own) <= set(joined)


@page.check("fdb", "No snooped group is in the forwarding database: ns1's ff02::1:ff00:101 "
                   "(33:33:ff:00:01:01) is in bridge mdb only")
def _(lab):
    return ("33:33:ff:00:01:01" not in lab.output("bridge fdb show br br0", step="fdb")
            and "port veth1 grp ff02::1:ff00:101 " in lab.output("bridge mdb show", step="fdb"))


@page.check("fdb", "br0 runs with the defaults the page names: a 15 s forward delay, learned entries aged out "
                   "after 300 s of silence, multicast snooping on (ip prints hundredths of a second)")
def _(lab):
    shown = lab.run("ip -details link show br0").stdout
    return all(f" {field} " in shown
               for field in ("forward_delay 1500", "ageing_time 30000", "mcast_snooping 1"))


@page.check("ping", "Namespaces attached to the bridge reach each other: 10.0.0.2 answered all 3 pings")
def _(lab):
    return answered(lab.output("ping -c 3"), "10.0.0.2", 3)


@page.check("ping", "ns3's capture holds the ARP broadcast only: neither the ARP reply nor any of the pings "
                    "between ns1 and ns2")
def _(lab):
    seen = [l for l in captured(lab, "ping").splitlines() if " > " in l]
    return (len(seen) == 1 and seen[0].startswith("02:00:00:00:01:01 > ff:ff:ff:ff:ff:ff")
            and "Request who-has 10.0.0.2 tell 10.0.0.1" in seen[0])


@page.check("flood", "A frame for an unknown MAC is flooded: ns3 received ns1's ping to 02:00:00:00:09:09")
def _(lab):
    seen = captured(lab, "flood")
    return "02:00:00:00:01:01 > 02:00:00:00:09:09" in seen and "ICMP echo request" in seen


@page.check("address", "The bridge's own address 10.0.0.254 answers from every namespace")
def _(lab):
    return holders(lab.snapshot, "10.0.0.254") == [("host", "br0")] and all(
        answered(lab.output(f"ns{i} ping -c 1 -W 1 10.0.0.254"), "10.0.0.254")
        for i in (1, 2, 3))


@page.check("address", "The address on br0 gives ns1 no route through it: ns1 has only its subnet's route, "
                       "and 192.0.2.1, outside it, is unreachable")
def _(lab):
    routes = lab.output("ip -n ns1 route show", step="address").splitlines()
    return (len(routes) == 1 and routes[0].startswith("10.0.0.0/24 dev eth0 ") and "via" not in routes[0]
            and "Network is unreachable" in lab.result("route get 192.0.2.1", step="address").stderr)


@page.check("gateway", "Once a default route points at 10.0.0.254, ns1 sends what lies outside its subnet "
                       "(192.0.2.1) to br0's address through eth0")
def _(lab):
    got = lab.output("route get 192.0.2.1", step="gateway")
    return (got.startswith("192.0.2.1 via 10.0.0.254 dev eth0 ")
            and holders(lab.snapshot, "10.0.0.254") == [("host", "br0")])


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
