"""flannel: pods on three nodes reach each other over a VXLAN overlay, then over host-gw routes.

Run with `invoke lab.run --page flannel`; the page is docs/pods/flannel.md.

The lab plays flanneld's part (subnet.env, flannel.1 and, per remote node, a route, a
neighbour entry and an FDB entry, as pkg/backend/vxlan programs them) and kubelet's (a
CNI ADD per pod, through this project's runtime, with the configuration flannel's CNI
plugin hands to the bridge plugin). The bridge and host-local plugins are the real ones.
"""
import ipaddress
import json
import re

from deepdive.model import Needs, Page, cmd, write_file
from deepdive.parse import LEARNED_STATES, answered, indexes, inet6, learned, link_local, neighbour, replies

NODES = (1, 2, 3)
NETWORK = "10.244.0.0/16"
UNDERLAY_MTU, VXLAN_OVERHEAD = 1500, 50
MTU = UNDERLAY_MTU - VXLAN_OVERHEAD  # what flanneld's vxlan backend gives flannel.1 and the pods
# Fixed MACs: the underlay bridge, its ports and the nodes' eth0 under 02:00:00:, every
# flannel.1 under 02:f1:00:. All else (cni0, the pods' eth0, the veths' host ends) is the
# kernel's random pick through the bridge plugin, and masked below.
BRIDGE_MAC = "02:00:00:00:00:fe"


def underlay_ip(n: int) -> str:
    return f"192.168.50.{n}"


def eth0_mac(n: int) -> str:
    return f"02:00:00:00:00:0{n}"


def vtep_mac(n: int) -> str:
    return f"02:f1:00:00:00:0{n}"


def subnet(n: int) -> str:
    return f"10.244.{n}.0/24"


def pod_ip(n: int) -> str:
    """host-local's first pick in node n's range: .1 is the gateway, on cni0."""
    return f"10.244.{n}.2"


def others(n: int) -> list[int]:
    return [m for m in NODES if m != n]


page = Page(
    name="flannel",
    title="flannel: pods across nodes over VXLAN",
    # Three nodes, and one pod's network namespace on each, made as a container runtime
    # makes a pod sandbox's.
    nodes=(*(f"node{n}" for n in NODES), *(f"pod-{n}a" for n in NODES)),
    needs=Needs(kinds=("bridge", "veth", "vxlan"), tools=("ping", "bridge", "tcpdump", "ss", "python3")),
    masks=[
        # The bridge plugin names a pod's host-side veth at random...
        (r"\bveth[0-9a-f]{8}\b", "veth<random>"),
        # ...and the kernel picks the MACs of cni0 and of both veth ends. Every MAC this
        # page fixes starts 02:00:00: or 02:f1:00:; a random one is never multicast.
        (r"\b(?!02:00:00:|02:f1:00:|00:00:00:00:00:00|ff:|01:|33:33:)[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b",
         "<random MAC>"),
        # ...and so the IPv6 link-local addresses the kernel makes from them (EUI-64:
        # fe80::XXXX:XXff:feXX:XXXX). Those of the page's own MACs start fe80::ff:fe
        # (02:00:00:) and fe80::f1:ff:fe (02:f1:00:), and are kept.
        (r"\bfe80::(?!ff:fe|f1:ff:fe)(?:[0-9a-f]{1,4}:)?[0-9a-f]{0,2}ff:fe[0-9a-f]{0,2}:[0-9a-f]{1,4}\b",
         "fe80::<random>"),
        # A learned neighbour entry goes REACHABLE -> STALE on the kernel's timers.
        (r"\b(REACHABLE|STALE|DELAY|PROBE)\b", "<learned>"),
        # `ip route get` names the user it looked the route up for: 0 as root, the
        # caller's own uid in a rootless lab.
        (r"\buid \d+\b", "uid <uid>"),
    ],
)


def subnet_env(n: int) -> str:
    """subnet.env as flanneld writes it (pkg/subnet.WriteSubnetFile): the cluster network,
    the node's subnet as its first usable address, the pods' MTU, and --ip-masq as a boolean."""
    return (f"FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET=10.244.{n}.1/24\n"
            f"FLANNEL_MTU={MTU}\nFLANNEL_IPMASQ=true\n")


def delegate(n: int) -> str:
    """The bridge configuration flannel's CNI plugin builds from subnet_env(n) and the
    `delegate` of kube-flannel.yml's conflist (flannel_linux.go, doCmdAdd), plus an ipam
    dataDir of the node's own; keys sorted, as Go writes a map, and the ipam lists on
    one line each."""
    conf = {
        "cniVersion": "0.3.1",        # the conflist's
        "hairpinMode": True,          # kube-flannel.yml's delegate
        "ipMasq": False,              # not FLANNEL_IPMASQ: flanneld masquerades already
        "ipam": {
            "dataDir": f"/var/lib/cni/networks/node{n}",  # the lab's nodes share one disk
            "ranges": [[{"subnet": subnet(n)}]],           # FLANNEL_SUBNET's network
            "routes": [{"dst": NETWORK}],                  # FLANNEL_NETWORK
            "type": "host-local",
        },
        "isDefaultGateway": True,     # kube-flannel.yml's delegate
        "isGateway": True,            # the plugin's default for bridge
        "mtu": MTU,                   # FLANNEL_MTU
        "name": "cbr0",               # the conflist's name
        "type": "bridge",
    }

    def block(obj: dict, indent: str) -> str:
        inner = indent + "  "
        return "{\n" + ",\n".join(
            f"{inner}{json.dumps(k)}: " + (block(v, inner) if isinstance(v, dict) else json.dumps(v))
            for k, v in sorted(obj.items())) + f"\n{indent}}}"
    return block(conf, "") + "\n"


def cni_conf(n: int) -> str:
    """Node n's CNI configuration directory, as `ip netns exec noden` shows it at /etc/cni."""
    return f"/etc/netns/node{n}/cni/net.d"


# Both captures watch node1's underlay interface. -T vxlan: tcpdump decodes only port
# 4789 as VXLAN by itself, and flannel.1 uses the kernel's default, 8472.
OVERLAY_CAPTURE = ("ip netns exec node1 tcpdump -i eth0 -n -e -t -l --immediate-mode"
                   " -T vxlan -c 4 udp port 8472")
HOSTGW_CAPTURE = "ip netns exec node1 tcpdump -i eth0 -n -e -t -l --immediate-mode -c 4 icmp"

page.step(
    "underlay", "The underlay: three nodes on one switch",
    f"ip link add underlay address {BRIDGE_MAC} type bridge",
    "ip link set underlay up",
    *[c for n in NODES for c in (
        f"ip link add port-node{n} address 02:00:00:00:fe:0{n} type veth"
        f" peer name eth0 netns node{n} address {eth0_mac(n)}",
        f"ip link set port-node{n} master underlay",
        f"ip link set port-node{n} up",
        f"ip -n node{n} addr add {underlay_ip(n)}/24 dev eth0",
        f"ip -n node{n} link set eth0 up",
    )],
    # A veth end is ready to send a moment after its carrier comes, in the background.
    *[cmd(f"ip -n node{n} link show eth0", until="state UP") for n in NODES],
    *[f"ip netns exec node1 ping -c 1 -W 1 {underlay_ip(m)}" for m in others(1)],
)
page.step(
    "vtep", "flanneld's part: flannel.1 on each node",
    *[c for n in NODES for c in (
        f"ip -n node{n} link add flannel.1 address {vtep_mac(n)} mtu {MTU} type vxlan"
        f" id 1 local {underlay_ip(n)} dev eth0 dstport 8472 nolearning",
        f"ip -n node{n} addr add 10.244.{n}.0/32 dev flannel.1",
        f"ip -n node{n} link set flannel.1 up",
    )],
    "ip -n node1 -details link show flannel.1",
    "bridge -n node1 fdb show dev flannel.1",
)
page.step(
    "subnets", "flanneld's part: each node's subnet, in subnet.env",
    *[c for n in NODES for c in (
        f"mkdir -p /run/flannel/node{n}",
        write_file(f"/run/flannel/node{n}/subnet.env", subnet_env(n)),
    )],
)


def peer_commands(n: int) -> list[str]:
    """What flanneld on node n adds for each other node, in its order: neighbour, FDB,
    and the route last (the kernel would ARP for the gateway without the first two)."""
    return [c for m in others(n) for c in (
        f"ip -n node{n} neigh replace 10.244.{m}.0 lladdr {vtep_mac(m)} dev flannel.1 nud permanent",
        f"bridge -n node{n} fdb replace {vtep_mac(m)} dev flannel.1 dst {underlay_ip(m)} self permanent",
        f"ip -n node{n} route replace {subnet(m)} via 10.244.{m}.0 dev flannel.1 onlink",
    )]


page.step("peers", "flanneld's part: node1 learns of node2 and node3", *peer_commands(1))
page.step("peers-rest", "The same on node2 and node3", *peer_commands(2), *peer_commands(3))
page.step(
    "tables", "What node1 now knows",
    "ip -n node1 route",
    # One address at a time: a dump of the neighbour table comes in hash order.
    "ip -n node1 neigh show 10.244.2.0 dev flannel.1",
    "ip -n node1 neigh show 10.244.3.0 dev flannel.1",
    "bridge -n node1 fdb show dev flannel.1",
    # Without onlink the kernel refuses a gateway that no address of flannel.1 covers.
    cmd("ip -n node1 route add 10.244.9.0/24 via 10.244.9.0 dev flannel.1", rc=2),
)


def cni_config(n: int) -> list:
    return [f"mkdir -p {cni_conf(n)}", write_file(f"{cni_conf(n)}/10-flannel.conf", delegate(n))]


def cni_add(n: int) -> str:
    return f"ip netns exec node{n} deepdive-cni add cbr0 /run/netns/pod-{n}a"


page.step("cni-config", "The bridge configuration flannel's CNI plugin would delegate, on node1", *cni_config(1),
          # Off, as on a freshly booted machine, so that the step after ADD shows who turns it on.
          "ip netns exec node1 sysctl -w net.ipv4.ip_forward=0")
page.step("cni-config-rest", "The same on node2 and node3, each with its own subnet", *cni_config(2), *cni_config(3))
page.step("pod", "kubelet's part: a pod on node1, through CNI ADD", cni_add(1))
page.step("pods", "A pod on node2 and one on node3", cni_add(2), cni_add(3), snapshot=True)
# An interface's IPv6 link-local address is shown once it has passed duplicate address
# detection: until then its line ends "scope link tentative ".
LINK_LOCAL_SETTLED = "scope link \n"

page.step(
    "pod-view", "A pod's interface and routes, and its node's",
    cmd("ip -n pod-1a addr show eth0", until=LINK_LOCAL_SETTLED),
    "ip -n pod-1a route",
    "ip -n node1 route",
    "ip -n node1 link show cni0",
    "bridge -n node1 -details link show",
    "ip netns exec node1 sysctl net.ipv4.ip_forward",
)
page.step(
    "ping", "pod-1a pings pod-2a while node1 captures on its underlay interface",
    cmd(OVERLAY_CAPTURE, background=True, ready="listening on", until="4 packets captured"),
    f"ip netns exec pod-1a ping -c 2 -i 0.2 -W 1 {pod_ip(2)}",
)
page.step(
    "mesh", "Every pod reaches every other",
    f"ip netns exec pod-1a ping -c 1 -W 1 {pod_ip(3)}",
    f"ip netns exec pod-2a ping -c 1 -W 1 {pod_ip(3)}",
    f"ip netns exec pod-3a ping -c 1 -W 1 {pod_ip(1)}",
    f"ip -n node1 route get {pod_ip(2)}",
    f"ip netns exec node1 ping -c 1 -W 1 {pod_ip(2)}",
)
page.step(
    "walk-node1", "One packet from pod-1a to pod-2a: the tables on node1's side",
    f"ip -n pod-1a route get {pod_ip(2)}",
    "ip -n pod-1a neigh show 10.244.1.1",
    f"ip -n node1 route get {pod_ip(2)} from {pod_ip(1)} iif cni0",
    "ip -n node1 neigh show 10.244.2.0 dev flannel.1",
    f"bridge -n node1 fdb get {vtep_mac(2)} dev flannel.1 self",
    f"ip -n node1 route get {underlay_ip(2)}",
    f"ip -n node1 neigh show {underlay_ip(2)} dev eth0",
    f"bridge fdb get {eth0_mac(2)} br underlay",
)
page.step(
    "walk-node2", "The same packet on node2",
    "ip netns exec node2 ss -u -l -n -p sport = :8472",
    cmd("ip -n node2 addr show flannel.1", until=LINK_LOCAL_SETTLED),
    f"ip -n node2 route get {pod_ip(2)} from {pod_ip(1)} iif flannel.1",
    f"ip -n node2 neigh show {pod_ip(2)} dev cni0",
    "bridge -n node2 fdb show br cni0 dynamic",
    cmd("ip -n pod-2a addr show eth0", until=LINK_LOCAL_SETTLED),
)
page.step(
    "hostgw-down", "host-gw instead: first, delete flannel.1 on every node",
    *[f"ip -n node{n} link del flannel.1" for n in NODES],
    "ip -n node1 route",
    "ip -n node1 neigh show 10.244.2.0",
)
page.step(
    "hostgw", "Then route each node's subnet via that node's underlay address",
    *[f"ip -n node{n} route replace {subnet(m)} via {underlay_ip(m)} dev eth0"
      for n in NODES for m in others(n)],
    "ip -n node1 route",
    f"ip -n node1 route get {pod_ip(2)} from {pod_ip(1)} iif cni0",
)
page.step(
    "hostgw-ping", "pod-1a pings pod-2a over host-gw routes",
    cmd(HOSTGW_CAPTURE, background=True, ready="listening on", until="4 packets captured"),
    f"ip netns exec pod-1a ping -c 2 -i 0.2 -W 1 {pod_ip(2)}",
    f"ip netns exec pod-3a ping -c 1 -W 1 {pod_ip(2)}",
)



# --- reading the outputs ---------------------------------------------------------------

FRAME = re.compile(r"^(?P<src>[0-9a-f:]{17}) > (?P<dst>[0-9a-f:]{17}), ethertype \S+ \(0x[0-9a-f]{4}\), "
                   r"length (?P<length>\d+): (?P<what>.*)$", re.M)


def frames(lab, step: str) -> list[tuple[str, str, int, str]]:
    """(source MAC, destination MAC, length, the rest) of each frame a step's tcpdump -e
    printed; with -T vxlan each datagram is two of them, the outer frame and the one inside."""
    return [(m["src"], m["dst"], int(m["length"]), m["what"])
            for m in FRAME.finditer(lab.output("tcpdump", step=step))]


def ttls(ping_output: str) -> set[int]:
    return {r.ttl for r in replies(ping_output)}


def host_end(lab, n: int) -> dict:
    """The node end of pod n's veth, whatever name the bridge plugin gave it."""
    peer = lab.link(f"pod-{n}a", "eth0")["peer"]
    return lab.link(peer["node"], peer["name"])


def env_of(lab, n: int) -> dict[str, str]:
    """Node n's subnet.env, as the step that wrote it printed it."""
    text = lab.output(f"tee /run/flannel/node{n}/subnet.env", step="subnets")
    return dict(line.split("=", 1) for line in text.splitlines())


def programmed(lab, n: int) -> bool:
    """Whether node n has, for each other node m, the onlink route to m's subnet through
    m's flannel.1 address, that address's permanent neighbour entry with m's flannel.1
    MAC, and the permanent FDB entry sending that MAC to m's underlay address."""
    routes = lab.run(f"ip -n node{n} route").stdout.splitlines()
    neigh = lab.run(f"ip -n node{n} neigh show dev flannel.1").stdout
    fdb = lab.run(f"bridge -n node{n} fdb show dev flannel.1").stdout.splitlines()
    return all(
        f"{subnet(m)} via 10.244.{m}.0 dev flannel.1 onlink" in [r.strip() for r in routes]
        and neighbour(neigh, f"10.244.{m}.0") == (vtep_mac(m), "PERMANENT")
        and f"{vtep_mac(m)} dst {underlay_ip(m)} self permanent" in fdb
        for m in others(n)) and len(fdb) == len(others(n))


# --- checks ------------------------------------------------------------------------------

@page.check("underlay", "Each node's eth0 is the peer of a port of the `underlay` bridge, and node1 "
                        "reaches node2 and node3 at their underlay addresses")
def _(lab):
    return all(lab.link("host", f"port-node{n}")["master"] == "underlay"
               and lab.link("host", f"port-node{n}")["peer"] == {"node": f"node{n}", "name": "eth0"}
               for n in NODES) and all(
        answered(lab.output(f"ping -c 1 -W 1 {underlay_ip(m)}", step="underlay"), underlay_ip(m))
        for m in others(1))


@page.check("vtep", "flannel.1 on each node is a vxlan device, VNI 1, port 8472, on top of eth0, "
                    "with an MTU of 1450 (eth0's 1500 less 50) and the address 10.244.N.0/32")
def _(lab):
    return all(lab.link(f"node{n}", "flannel.1")["kind"] == "vxlan"
               and lab.link(f"node{n}", "flannel.1")["details"] == {"vni": 1, "dstport": 8472}
               and lab.link(f"node{n}", "flannel.1")["parent"] == {"node": f"node{n}", "name": "eth0"}
               and lab.link(f"node{n}", "flannel.1")["mtu"] == MTU
               == lab.link(f"node{n}", "eth0")["mtu"] - VXLAN_OVERHEAD
               and lab.link(f"node{n}", "flannel.1")["addresses"] == [f"10.244.{n}.0/32"]
               for n in NODES)


@page.check("vtep", "`ip -details` shows the local underlay address, port 8472, no source port "
                    "range pinned, and `nolearning`")
def _(lab):
    return ("vxlan id 1 local 192.168.50.1 dev eth0 srcport 0 0 dstport 8472 nolearning"
            in lab.output("-details link show flannel.1", step="vtep"))


@page.check("vtep", "Without `remote`, flannel.1's forwarding table starts empty: no default entry, "
                    "so nothing is flooded to other nodes")
def _(lab):
    res = lab.result("bridge -n node1 fdb show dev flannel.1", step="vtep")
    return res.rc == 0 and res.stdout.strip() == ""


@page.check("subnets", "Each node's `FLANNEL_SUBNET` is a /24 of its own inside `FLANNEL_NETWORK`, "
                       "written as the subnet's first usable address (10.244.N.1/24), and `FLANNEL_MTU` is "
                       "flannel.1's MTU")
def _(lab):
    envs = {n: env_of(lab, n) for n in NODES}
    nets = {n: ipaddress.ip_interface(e["FLANNEL_SUBNET"]).network for n, e in envs.items()}
    return (all(list(e) == ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"]
                for e in envs.values())
            and all(e["FLANNEL_SUBNET"] == f"10.244.{n}.1/24" for n, e in envs.items())
            and len(set(nets.values())) == len(NODES)
            and all(net.subnet_of(ipaddress.ip_network(envs[n]["FLANNEL_NETWORK"]))
                    for n, net in nets.items())
            and all(int(e["FLANNEL_MTU"]) == lab.link(f"node{n}", "flannel.1")["mtu"] for n, e in envs.items()))


@page.check("peers-rest", "Every node has, for each other node, the onlink route, the PERMANENT "
                          "neighbour entry and the permanent FDB entry, and no other FDB entry")
def _(lab):
    return all(programmed(lab, n) for n in NODES)


@page.check("tables", "node1 has no route to its own pod subnet yet: cni0 does not exist before the first pod")
def _(lab):
    routes = lab.output("ip -n node1 route", step="tables")
    return not any(l.startswith("10.244.1.") for l in routes.splitlines()) and not any(
        l["name"] == "cni0" for n in lab.snapshot["nodes"] for l in n["links"])


@page.check("tables", "Without `onlink` the kernel refuses the same kind of route: "
                      "\"Nexthop has invalid gateway\", exit status 2")
def _(lab):
    res = lab.result("route add 10.244.9.0/24", step="tables")
    return res.rc == 2 and "Nexthop has invalid gateway" in res.stderr


@page.check("cni-config-rest", "Each node's configuration is what flannel's plugin derives from its "
                          "subnet.env: the subnet's network as host-local's range, FLANNEL_NETWORK "
                          "as a route, FLANNEL_MTU, and ipMasq the opposite of FLANNEL_IPMASQ")
def _(lab):
    def follows(n: int) -> bool:
        env = env_of(lab, n)
        conf = lab.json(f"tee {cni_conf(n)}/10-flannel.conf")
        return (conf["ipam"]["ranges"] == [[{"subnet": str(ipaddress.ip_interface(env["FLANNEL_SUBNET"]).network)}]]
                and conf["ipam"]["routes"] == [{"dst": env["FLANNEL_NETWORK"]}]
                and conf["ipam"]["type"] == "host-local"
                and conf["mtu"] == int(env["FLANNEL_MTU"])
                and conf["ipMasq"] is (env["FLANNEL_IPMASQ"] != "true")
                and conf["isGateway"] is True and conf["type"] == "bridge" and conf["name"] == "cbr0")
    return all(follows(n) for n in NODES)


@page.check("pods", "Each ADD gave its pod the first free address of its node's range, 10.244.N.2/24, "
                    "with 10.244.N.1 as gateway, a route to 10.244.0.0/16 and a default route")
def _(lab):
    def result(n: int) -> bool:
        res = lab.json(cni_add(n))
        return (res["ips"] == [{"version": "4", "interface": 2, "address": f"{pod_ip(n)}/24",
                                "gateway": f"10.244.{n}.1"}]
                and res["routes"] == [{"dst": NETWORK}, {"dst": "0.0.0.0/0", "gw": f"10.244.{n}.1"}]
                and [i["name"] for i in res["interfaces"]][::2] == ["cni0", "eth0"])
    return all(result(n) for n in NODES)


@page.check("pods", "In each node the bridge plugin made cni0 (10.244.N.1/24, MTU 1450) and a veth "
                    "whose node end is a port of cni0 and whose other end is the pod's eth0 "
                    "(10.244.N.2/24, MTU 1450)")
def _(lab):
    return all(lab.link(f"node{n}", "cni0")["kind"] == "bridge"
               and lab.link(f"node{n}", "cni0")["addresses"] == [f"10.244.{n}.1/24"]
               and lab.link(f"node{n}", "cni0")["mtu"] == MTU
               and host_end(lab, n)["master"] == "cni0" and host_end(lab, n)["kind"] == "veth"
               and lab.link(f"pod-{n}a", "eth0")["peer"]["node"] == f"node{n}"
               and lab.link(f"pod-{n}a", "eth0")["addresses"] == [f"{pod_ip(n)}/24"]
               and lab.link(f"pod-{n}a", "eth0")["mtu"] == MTU
               for n in NODES)


@page.check("pod-view", "pod-1a routes 10.244.0.0/16 and everything else via 10.244.1.1, "
                        "and node1 now routes 10.244.1.0/24 to cni0")
def _(lab):
    pod = [l.strip() for l in lab.output("ip -n pod-1a route", step="pod-view").splitlines()]
    node = [l.strip() for l in lab.output("ip -n node1 route", step="pod-view").splitlines()]
    return (pod == ["default via 10.244.1.1 dev eth0", "10.244.0.0/16 via 10.244.1.1 dev eth0",
                    "10.244.1.0/24 dev eth0 proto kernel scope link src 10.244.1.2"]
            and "10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1" in node)


@page.check("pod-view", "The pod's port has `hairpin on`, and the bridge plugin turned on IPv4 forwarding in node1")
def _(lab):
    ports = lab.output("bridge -n node1 -details link show", step="pod-view")
    return (re.search(rf"{host_end(lab, 1)['name']}@eth0: .* master cni0 .*\n\s+hairpin on ", ports) is not None
            and lab.output("sysctl -w net.ipv4.ip_forward=0", step="cni-config").strip() == "net.ipv4.ip_forward = 0"
            and lab.output("sysctl net.ipv4.ip_forward", step="pod-view").strip() == "net.ipv4.ip_forward = 1")


@page.check("pod-view", "`eth0@if5`: 5 is the index of the veth's node end in node1; the pod's eth0 is 2")
def _(lab):
    own, peer = lab.link("pod-1a", "eth0")["index"], host_end(lab, 1)["index"]
    shown = indexes(lab.output("ip -n pod-1a addr show eth0", step="pod-view"), "eth0")
    return own != peer and shown == (own, peer) == (2, 5)


@page.check("pod-view", "`bridge link` names the node end's peer by looking its index, 2 (the pod's eth0's), up "
                        "in node1, where 2 is node1's own eth0 on the underlay")
def _(lab):
    end = host_end(lab, 1)
    ports = lab.output("bridge -n node1 -details link show", step="pod-view")
    shown = re.search(rf"^{end['index']}: {end['name']}@(\S+): ", ports, re.M)
    pod_index = lab.link("pod-1a", "eth0")["index"]
    local = next(l for n in lab.snapshot["nodes"] if n["name"] == "node1"
                 for l in n["links"] if l["index"] == pod_index)
    return (shown is not None and shown.group(1) == local["name"] == "eth0"
            and local["peer"] == {"node": "host", "name": "port-node1"})


@page.check("pod-view", "The pod's eth0 has one IPv6 address, the link-local address the kernel made from its "
                        "MAC (EUI-64), past duplicate address detection; ADD's result lists IPv4 only")
def _(lab):
    res = lab.json(cni_add(1))
    return (inet6(lab.output("ip -n pod-1a addr show eth0", step="pod-view"))
            == [f"{link_local(lab.link('pod-1a', 'eth0')['mac'])}/64 scope link"]
            and all(":" not in ip["address"] for ip in res["ips"]))


@page.check("ping", "pod-2a answers both pings, with TTL 62: the two nodes each routed the packet once")
def _(lab):
    out = lab.output(f"ping -c 2 -i 0.2 -W 1 {pod_ip(2)}", step="ping")
    return answered(out, pod_ip(2), 2) and ttls(out) == {62}


@page.check("ping", "On the underlay, each ICMP packet travels in a UDP datagram between 192.168.50.1 "
                    "and 192.168.50.2, to port 8472, marked VNI 1; nothing else (no ARP) was sent first")
def _(lab):
    seen = frames(lab, "ping")
    outer, inner = seen[0::2], seen[1::2]
    return (len(seen) == 8
            and all(re.fullmatch(r"192\.168\.50\.(1|2)\.\d+ > 192\.168\.50\.(?!\1)[12]\.8472: "
                                 r"VXLAN, flags \[I\] \(0x08\), vni 1", o[3]) for o in outer)
            and [f"{i[3].split(',')[0]}" for i in inner] == [
                "10.244.1.2 > 10.244.2.2: ICMP echo request", "10.244.2.2 > 10.244.1.2: ICMP echo reply"] * 2)


@page.check("ping", "Outer frames go between the nodes' eth0 MACs, inner frames between the two "
                    "flannel.1 MACs, and each outer frame is 50 bytes longer than the one it carries")
def _(lab):
    seen = frames(lab, "ping")
    pairs = list(zip(seen[0::2], seen[1::2]))
    there = ((eth0_mac(1), eth0_mac(2)), (vtep_mac(1), vtep_mac(2)))
    back = ((eth0_mac(2), eth0_mac(1)), (vtep_mac(2), vtep_mac(1)))
    return (len(pairs) == 4
            and [((o[0], o[1]), (i[0], i[1])) for o, i in pairs] == [there, back] * 2
            and all(o[2] - i[2] == VXLAN_OVERHEAD for o, i in pairs))


@page.check("mesh", "Every pod reaches the pods of the other nodes (TTL 62), and node1 reaches pod-2a "
                    "(TTL 63: one router) from flannel.1's address, 10.244.1.0")
def _(lab):
    pings = {(1, 3): "pod-1a ping -c 1 -W 1 10.244.3.2", (2, 3): "pod-2a ping -c 1 -W 1 10.244.3.2",
             (3, 1): "pod-3a ping -c 1 -W 1 10.244.1.2"}
    node = lab.output(f"node1 ping -c 1 -W 1 {pod_ip(2)}", step="mesh")
    return (all(answered(lab.output(c, step="mesh"), pod_ip(b)) and ttls(lab.output(c, step="mesh")) == {62}
                for (a, b), c in pings.items())
            and answered(node, pod_ip(2)) and ttls(node) == {63}
            and lab.output(f"ip -n node1 route get {pod_ip(2)}", step="mesh").startswith(
                f"{pod_ip(2)} via 10.244.2.0 dev flannel.1 src 10.244.1.0 "))


@page.check("walk-node1", "pod-1a sends to its gateway 10.244.1.1, whose MAC is cni0's: "
                          "the frame goes up into node1")
def _(lab):
    route = lab.output(f"ip -n pod-1a route get {pod_ip(2)}", step="walk-node1")
    neigh = neighbour(lab.output("ip -n pod-1a neigh show 10.244.1.1", step="walk-node1"), "10.244.1.1")
    return (route.startswith(f"{pod_ip(2)} via 10.244.1.1 dev eth0 src {pod_ip(1)} ")
            and neigh is not None and neigh[0] == lab.link("node1", "cni0")["mac"] and neigh[1] in LEARNED_STATES)


@page.check("walk-node1", "node1 routes it via 10.244.2.0 on flannel.1; the neighbour entry gives "
                          "node2's flannel.1 MAC, the FDB entry for that MAC node2's underlay address")
def _(lab):
    out = lambda c: lab.output(c, step="walk-node1")  # noqa: E731
    return (out(f"route get {pod_ip(2)} from {pod_ip(1)} iif cni0").startswith(
                f"{pod_ip(2)} from {pod_ip(1)} via 10.244.2.0 dev flannel.1 ")
            and neighbour(out("neigh show 10.244.2.0 dev flannel.1"), "10.244.2.0") == (vtep_mac(2), "PERMANENT")
            and out(f"fdb get {vtep_mac(2)} dev flannel.1 self").strip()
            == f"{vtep_mac(2)} dev flannel.1 dst {underlay_ip(2)} self permanent")


@page.check("walk-node1", "The datagram to 192.168.50.2 leaves node1's eth0 for node2's eth0 MAC, "
                          "which node1 learned by ARP, and the underlay bridge sends it out of port-node2")
def _(lab):
    out = lambda c: lab.output(c, step="walk-node1")  # noqa: E731
    neigh = neighbour(out(f"neigh show {underlay_ip(2)} dev eth0"), underlay_ip(2))
    return (out(f"ip -n node1 route get {underlay_ip(2)}").startswith(f"{underlay_ip(2)} dev eth0 src {underlay_ip(1)} ")
            and neigh is not None and neigh[0] == eth0_mac(2) and neigh[1] in LEARNED_STATES
            and learned(out(f"fdb get {eth0_mac(2)} br underlay"), f"{eth0_mac(2)} dev port-node2 master underlay"))


@page.check("walk-node2", "On node2, UDP port 8472 is open with no process behind it (the kernel's "
                          "vxlan socket), and flannel.1's MAC is the inner frames' destination")
def _(lab):
    sockets = lab.output("ss -u -l -n -p", step="walk-node2").splitlines()[1:]
    return ([s.split()[3] for s in sockets] == ["0.0.0.0:8472"]
            and "users:" not in lab.output("ss -u -l -n -p", step="walk-node2")
            and lab.link("node2", "flannel.1")["mac"] == vtep_mac(2)
            and f"link/ether {vtep_mac(2)} " in lab.output("addr show flannel.1", step="walk-node2"))


@page.check("walk-node2", "flannel.1's one IPv6 address is the link-local address made from its fixed MAC, "
                          "fe80::f1:ff:fe00:2/64")
def _(lab):
    return (inet6(lab.output("ip -n node2 addr show flannel.1", step="walk-node2"))
            == [f"{link_local(vtep_mac(2))}/64 scope link"] == ["fe80::f1:ff:fe00:2/64 scope link"])


@page.check("walk-node2", "node2 routes the packet to cni0; ARP gave pod-2a's MAC, which cni0 "
                          "learned on pod-2a's veth; pod-2a's eth0 holds 10.244.2.2")
def _(lab):
    out = lambda c: lab.output(c, step="walk-node2")  # noqa: E731
    pod_mac = lab.link("pod-2a", "eth0")["mac"]
    neigh = neighbour(out(f"neigh show {pod_ip(2)} dev cni0"), pod_ip(2))
    return (out(f"route get {pod_ip(2)} from {pod_ip(1)} iif flannel.1").startswith(
                f"{pod_ip(2)} from {pod_ip(1)} dev cni0 ")
            and neigh is not None and neigh[0] == pod_mac and neigh[1] in LEARNED_STATES
            and [l.strip() for l in out("fdb show br cni0 dynamic").splitlines()] == [f"{pod_mac} dev {host_end(lab, 2)['name']} master cni0"]
            and f"inet {pod_ip(2)}/24 " in out("ip -n pod-2a addr show eth0"))


@page.check("hostgw-down", "Deleting flannel.1 took its routes and its neighbour entries with it")
def _(lab):
    routes = [l.strip() for l in lab.output("ip -n node1 route", step="hostgw-down").splitlines()]
    return (routes == ["10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1",
                       "192.168.50.0/24 dev eth0 proto kernel scope link src 192.168.50.1"]
            and lab.output("ip -n node1 neigh show 10.244.2.0", step="hostgw-down").strip() == ""
            and not any(l["name"] == "flannel.1" for n in lab.snapshot["nodes"] for l in n["links"]))


@page.check("hostgw", "With host-gw, node1 routes pod-2a's packets via node2's underlay address, on eth0")
def _(lab):
    routes = [l.strip() for l in lab.output("ip -n node1 route", step="hostgw").splitlines()]
    return (f"{subnet(2)} via {underlay_ip(2)} dev eth0" in routes
            and f"{subnet(3)} via {underlay_ip(3)} dev eth0" in routes
            and lab.output(f"route get {pod_ip(2)} from {pod_ip(1)} iif cni0", step="hostgw").startswith(
                f"{pod_ip(2)} from {pod_ip(1)} via {underlay_ip(2)} dev eth0 "))


@page.check("hostgw-ping", "Pods still reach each other across nodes (TTL 62)")
def _(lab):
    one = lab.output(f"pod-1a ping -c 2 -i 0.2 -W 1 {pod_ip(2)}", step="hostgw-ping")
    three = lab.output(f"pod-3a ping -c 1 -W 1 {pod_ip(2)}", step="hostgw-ping")
    return answered(one, pod_ip(2), 2) and answered(three, pod_ip(2)) and ttls(one) == ttls(three) == {62}


@page.check("hostgw-ping", "On the underlay the pods' packets travel bare, 98-byte frames between the "
                           "nodes' eth0 MACs with the pods' addresses, and no UDP")
def _(lab):
    seen = frames(lab, "hostgw-ping")
    there = (eth0_mac(1), eth0_mac(2), 98, f"{pod_ip(1)} > {pod_ip(2)}: ICMP echo request")
    back = (eth0_mac(2), eth0_mac(1), 98, f"{pod_ip(2)} > {pod_ip(1)}: ICMP echo reply")
    return ([(f[0], f[1], f[2], f[3].split(",")[0]) for f in seen] == [there, back] * 2
            and "UDP" not in lab.output("tcpdump", step="hostgw-ping"))
