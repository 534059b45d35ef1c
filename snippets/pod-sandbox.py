"""pod-sandbox: a pod's network namespace, held by a pause process, wired by CNI.

Run with `invoke lab.run --page pod-sandbox`; the page is docs/pods/pod-sandbox.md.
The lab plays the container runtime's part (containerd's CRI plugin): it creates each
sandbox's namespaces, starts catatonit as the pause process, and runs the CNI plugins
through deepdive-cni, the way containerd runs them through libcni.
"""
import hashlib
import json
import re
import socket

from deepdive.cni import container_id_for
from deepdive.model import Needs, Page, cmd, write_file
from deepdive.parse import LEARNED_STATES, answered, indexes, inet6, learned, link_local, neighbour

PLUGINS = ("bridge", "host-local", "loopback", "portmap", "tuning")  # Debian's, in /usr/lib/cni

page = Page(
    name="pod-sandbox",
    title="The pod sandbox: a pause process and CNI",
    needs=Needs(kinds=("bridge", "veth"), features=("nat", "conntrack"),
                tools=("catatonit", "nsenter", "unshare", "setsid", "stat", "socat", "iptables", "conntrack",
                       "jq", "ping", "bridge", *(f"/usr/lib/cni/{p}" for p in PLUGINS))),
    # The bridge plugin names each pod's host-side veth "veth" + 8 random hex digits,
    # and the kernel gives veths random MACs (locally administered: second hex digit
    # 2, 6, a or e), so also the IPv6 link-local addresses made from them (EUI-64:
    # fe80::XXXX:XXff:feXX:XXXX). The lab's own links have fixed MACs starting 02:00:00,
    # whose link-local addresses start fe80::ff:fe: both are kept.
    masks=[
        (r"\bveth[0-9a-f]{8}\b", "veth<random>"),
        (r"\b(?!02:00:00)[0-9a-f][26ae](?::[0-9a-f]{2}){5}\b", "<random-mac>"),
        (r"\bfe80::(?!ff:fe)(?:[0-9a-f]{1,4}:)?[0-9a-f]{0,2}ff:fe[0-9a-f]{0,2}:[0-9a-f]{1,4}\b", "fe80::<random>"),
    ],
)

NET = "containerd-net"
CONFLIST = "/etc/cni/net.d/10-containerd-net.conflist"
LOOPBACK = "/etc/cni/net.d/99-loopback.conflist"
CONFIG = {
    "cniVersion": "1.0.0",
    "name": NET,
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": True,
            "isDefaultGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]},
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
LOOPBACK_CONFIG = {"cniVersion": "1.0.0", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}
BROKEN = "/etc/cni/net.d/20-broken-net.conflist"
BROKEN_CONFIG = {
    "cniVersion": "1.0.0",
    "name": "broken-net",
    "plugins": [
        {"type": "bridge", "bridge": "cni1", "isGateway": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]]}},
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth1.no_such_setting": "1"}},
    ],
}
TYPO = "/etc/cni/net.d/30-typo-net.conflist"
# The typo is in the second plugin: a runtime that ran plugins before looking them all
# up would have created cni2.
TYPO_CONFIG = {"cniVersion": "1.0.0", "name": "typo-net", "plugins": [
    {"type": "bridge", "bridge": "cni2",
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.98.0.0/24"}]]}},
    {"type": "portmapp"},
]}
# Dual-stack, in the shape of containerd's own file: one range per family, and a default
# route per family from IPAM, each through its family's gateway.
DUAL = "/etc/cni/net.d/40-dual-net.conflist"
DUAL_CONFIG = {
    "cniVersion": "1.0.0",
    "name": "dual-net",
    "plugins": [{
        "type": "bridge",
        "bridge": "dual0",
        "isGateway": True,
        "ipam": {"type": "host-local",
                 "ranges": [[{"subnet": "10.89.0.0/24"}], [{"subnet": "fd00:10:89::/64"}]],
                 "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]},
    }],
}
HOST_PORT = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}


def sandbox(pod: str) -> list:
    """What the runtime does for RunPodSandbox before CNI: a network namespace pinned in
    /run/netns, IPC and UTS namespaces pinned beside it, the pause process in all three
    (and a PID namespace of its own), and the pod's hostname. `setsid -f` returns before
    unshare has pinned the namespaces (bind mounts of nsfs files over the two empty
    files), so the hostname waits until both files are nsfs."""
    ns = f"/run/pods/{pod}"
    return [
        f"ip netns add {pod}",
        f"mkdir -p {ns}",
        f"touch {ns}/ipc {ns}/uts",
        f"setsid -f nsenter --net=/run/netns/{pod} unshare --ipc={ns}/ipc --uts={ns}/uts --pid --fork"
        " --kill-child catatonit -P",
        cmd(f"stat -f -c %T {ns}/ipc {ns}/uts", until="nsfs\nnsfs\n"),
        f"nsenter --uts={ns}/uts hostname {pod}",
    ]


def in_pod(pod: str, command: str) -> str:
    """A container of the pod: it joins the pause process's network, IPC and UTS namespaces."""
    return f"nsenter --net=/run/netns/{pod} --ipc=/run/pods/{pod}/ipc --uts=/run/pods/{pod}/uts {command}"


def portmap_chain(pod: str) -> str:
    """portmap's DNAT chain for the pod: "CNI-DN-" and the SHA-512 of network name and
    container ID, cut to iptables' 28 characters (plugins/pkg/utils FormatChainName)."""
    digest = hashlib.sha512((NET + container_id_for(f"/run/netns/{pod}")).encode()).hexdigest()
    return f"CNI-DN-{digest}"[:28]


def cache_file(pod: str) -> str:
    return f"/var/lib/cni/results/{NET}-{container_id_for(f'/run/netns/{pod}')}-eth0"


ADD_A = cmd(f"env CAP_ARGS='{json.dumps(HOST_PORT, separators=(',', ':'))}' deepdive-cni add {NET} /run/netns/pod-a")

page.step(
    "sandbox", "The runtime creates the sandbox: namespaces and the pause process",
    *sandbox("pod-a"),
    cmd("ps -C catatonit -o args", until="catatonit -P"),
    in_pod("pod-a", "hostname"),
    in_pod("pod-a", "ip link"),
)
page.step(
    "loopback", "CNI ADD for lo: the loopback plugin",
    "mkdir -p /etc/cni/net.d",
    write_file(LOOPBACK, json.dumps(LOOPBACK_CONFIG, indent=2)),
    "env CNI_IFNAME=lo deepdive-cni add cni-loopback /run/netns/pod-a",
    in_pod("pod-a", "ip addr show lo"),
)
page.step(
    "config", "The node's network configuration",
    write_file(CONFLIST, json.dumps(CONFIG, indent=2)),
    "ip link show",
    # Off, as on a freshly booted machine, so that what turns it on shows.
    "sysctl -w net.ipv4.ip_forward=0",
)
page.step(
    "add", "CNI ADD for eth0: bridge, host-local, portmap",
    ADD_A,
    snapshot=True,
)
page.step(
    "pod", "Inside the pod",
    # Shown once the kernel has made eth0's link-local address and it has left the
    # "tentative" state (its line then ends "scope link ", without the flag).
    cmd(in_pod("pod-a", "ip addr show eth0"), until="scope link \n"),
    in_pod("pod-a", "sysctl net.ipv6.conf.eth0.accept_dad net.ipv6.conf.default.accept_dad"),
    in_pod("pod-a", "ip route"),
)
page.step(
    "node", "The node after ADD",
    "ip -4 addr show cni0",
    "ip link show master cni0",
    "bridge -d link show",
    "ip route",
    "sysctl net.ipv4.ip_forward",
    "find /var/lib/cni -type f",
    f"cat /var/lib/cni/networks/{NET}/10.88.0.2",
    f"jq .result.interfaces {cache_file('pod-a')}",
)
page.step(
    "second", "A second pod on the same node",
    *sandbox("pod-b"),
    "env CNI_IFNAME=lo deepdive-cni add cni-loopback /run/netns/pod-b",
    f"deepdive-cni add {NET} /run/netns/pod-b",
    in_pod("pod-b", "ping -c 2 -i 0.2 -W 1 10.88.0.2"),
    in_pod("pod-b", "ip neigh"),
    "bridge fdb show br cni0 dynamic",
    snapshot=True,
)
page.step(
    "container", "A second container joins the sandbox",
    # The pod's "app" container: a server on port 80 that names the host it runs on.
    f"setsid -f {in_pod('pod-a', 'socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:hostname')}",
    cmd(in_pod("pod-a", "ss -Hltn sport = :80"), until="LISTEN"),
    # A sidecar: another process that joins the same namespaces.
    in_pod("pod-a", "ip -br -4 addr show eth0"),
    in_pod("pod-a", "socat -u TCP:127.0.0.1:80 -"),
)
page.step(
    "hostport", "hostPort: portmap's DNAT",
    "iptables -t nat -S CNI-HOSTPORT-DNAT",
    f"iptables -t nat -S {portmap_chain('pod-a')}",
    "iptables -t nat -S PREROUTING",
    "iptables -t nat -S OUTPUT",
    # A client outside the node reaches the pod through the node's address.
    "ip netns add laptop",
    "ip link add eth1 address 02:00:00:00:00:01 type veth peer name eth0 netns laptop address 02:00:00:00:00:02",
    "ip addr add 192.168.1.1/24 dev eth1",
    "ip link set eth1 up",
    "ip -n laptop addr add 192.168.1.2/24 dev eth0",
    "ip -n laptop link set eth0 up",
    "ip -n laptop link set lo up",
    "ip netns exec laptop socat -u TCP:192.168.1.1:8080 -",
    "conntrack -L -p tcp --orig-port-dst 8080",
)
page.step(
    "check", "CNI CHECK",
    cmd(f"deepdive-cni check {NET} /run/netns/pod-a", rc=1),
)
page.step(
    "again", "The same ADD twice",
    cmd(ADD_A.text, rc=1),
    cmd("env CNI_COMMAND=ADD CNI_CONTAINERID=pod-a CNI_NETNS=/run/netns/pod-a CNI_IFNAME=eth0"
        " CNI_PATH=/usr/lib/cni /usr/lib/cni/bridge",
        heredoc=json.dumps({"cniVersion": "1.0.0", "name": NET, **CONFIG["plugins"][0]}, indent=2) + "\n",
        rc=1),
)
page.step(
    "failure", "When ADD fails",
    # A list whose second plugin fails once the first has built the interface: tuning
    # refuses a sysctl that does not exist.
    write_file(BROKEN, json.dumps(BROKEN_CONFIG, indent=2)),
    cmd("env CNI_IFNAME=eth1 deepdive-cni add broken-net /run/netns/pod-b", rc=1),
    in_pod("pod-b", "ip -br link"),
    "ip link show master cni1",
    "find /var/lib/cni/networks/broken-net -type f",
    # A list that names a plugin CNI_PATH does not have: nothing runs at all.
    write_file(TYPO, json.dumps(TYPO_CONFIG, indent=2)),
    cmd("env CNI_IFNAME=eth1 deepdive-cni add typo-net /run/netns/pod-b", rc=1),
)
page.step(
    "del", "CNI DEL",
    f"deepdive-cni del {NET} /run/netns/pod-a",
    in_pod("pod-a", "ip link"),
    "ip link show master cni0",
    "find /var/lib/cni -type f",
    "iptables -t nat -S CNI-HOSTPORT-DNAT",
    "ip -br link show cni0",
    f"deepdive-cni del {NET} /run/netns/pod-a",
    "env CNI_IFNAME=lo deepdive-cni del cni-loopback /run/netns/pod-a",
    snapshot=True,
)
page.step(
    "dual-config", "A dual-stack network",
    write_file(DUAL, json.dumps(DUAL_CONFIG, indent=2)),
    "sysctl net.ipv6.conf.all.forwarding",
)
page.step(
    "dual", "A dual-stack pod",
    "ip netns add pod-c",
    "deepdive-cni add dual-net /run/netns/pod-c",
    # The pod's link-local address is made when eth0 comes up, a moment after ADD.
    cmd("ip -n pod-c addr show eth0", until="scope link \n"),
    "ip -n pod-c route",
    "ip -n pod-c -6 route",
    # The bridge plugin does not wait for the bridge's own address to pass DAD.
    cmd("ip -6 addr show dev dual0 scope global", until="scope global \n"),
    "sysctl net.ipv6.conf.all.forwarding",
    "ip netns exec pod-c ping -c 2 -i 0.2 -W 1 fd00:10:89::1",
    "ip -n pod-c -6 neigh show fd00:10:89::1",
)


def peer_of(lab, node: str) -> dict | None:
    """The host-side link whose veth peer is `node`'s eth0, from the latest snapshot."""
    host = next(n for n in lab.snapshot["nodes"] if n["name"] == "host")
    return next((link for link in host["links"] if link["peer"] == {"node": node, "name": "eth0"}), None)



POD_A = "nsenter --net=/run/netns/pod-a --ipc=/run/pods/pod-a/ipc --uts=/run/pods/pod-a/uts"


@page.check("sandbox", "The pause process runs; in the pod's UTS namespace the hostname is pod-a while the "
                       "node keeps its own; the new network namespace holds only lo, and lo is down")
def _(lab):
    links = lab.output(f"{POD_A} ip link", step="sandbox")
    return ("catatonit -P" in lab.run("ps -C catatonit -o args").stdout
            and lab.output(f"{POD_A} hostname", step="sandbox").strip() == "pod-a"
            and socket.gethostname() not in ("", "pod-a")  # the node's, read by the lab itself
            and links.count(": <") == 1 and "1: lo: <LOOPBACK>" in links and "state DOWN" in links)


@page.check("loopback", "The loopback plugin brought lo up with 127.0.0.1/8 and reported it with the pod's "
                        "namespace as its sandbox")
def _(lab):
    res = lab.json("deepdive-cni add cni-loopback /run/netns/pod-a", "loopback")
    shown = lab.output(f"{POD_A} ip addr show lo", step="loopback")
    return (res["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": "/run/netns/pod-a"}]
            and {"interface": 0, "address": "127.0.0.1/8"} in res["ips"]
            and "LOOPBACK,UP" in shown and "inet 127.0.0.1/8" in shown)


@page.check("add", "ADD's result names cni0, a host-side veth and the pod's eth0 (with its sandbox); the "
                   "address 10.88.0.2/16 with gateway 10.88.0.1 belongs to interface 2, eth0")
def _(lab):
    res = lab.json("deepdive-cni add containerd-net /run/netns/pod-a", "add")
    names = [i["name"] for i in res["interfaces"]]
    veth = peer_of(lab, "pod-a")
    return (names[0] == "cni0" and names[2] == "eth0" and veth is not None and names[1] == veth["name"]
            and res["interfaces"][2].get("sandbox") == "/run/netns/pod-a"
            and res["ips"] == [{"interface": 2, "address": "10.88.0.2/16", "gateway": "10.88.0.1"}]
            and res["interfaces"][2]["mac"] == lab.link("pod-a", "eth0")["mac"])


@page.check("add", "The host end of the pod's veth pair is a port of cni0, and cni0 holds the gateway address")
def _(lab):
    veth = peer_of(lab, "pod-a")
    return (veth is not None and veth["master"] == "cni0"
            and "10.88.0.1/16" in lab.link("host", "cni0")["addresses"])


@page.check("pod", "In the pod, eth0 has 10.88.0.2/16 and the default route goes via cni0's 10.88.0.1")
def _(lab):
    return ("inet 10.88.0.2/16" in lab.output(f"{POD_A} ip addr show eth0", step="pod")
            and "default via 10.88.0.1 dev eth0" in lab.output(f"{POD_A} ip route", step="pod"))


@page.check("pod", "`eth0@if3`: 3 is the index of eth0's peer, the host-side veth, in the node; eth0's own is 2")
def _(lab):
    own, peer = lab.link("pod-a", "eth0")["index"], peer_of(lab, "pod-a")["index"]
    shown = indexes(lab.output(f"{POD_A} ip addr show eth0", step="pod"), "eth0")
    return own != peer and shown == (own, peer) == (2, 3)


@page.check("pod", "eth0's one IPv6 address is the link-local address the kernel made from its MAC (EUI-64), "
                   "not tentative; ADD's result lists no IPv6 address; the bridge plugin set accept_dad to 0 "
                   "on eth0, where the namespace's default is 1")
def _(lab):
    added = lab.json("deepdive-cni add containerd-net /run/netns/pod-a", "add")
    return (inet6(lab.output(f"{POD_A} ip addr show eth0", step="pod"))
            == [f"{link_local(lab.link('pod-a', 'eth0')['mac'])}/64 scope link"]
            and all(":" not in ip["address"] for ip in added["ips"])
            and lab.output("accept_dad", step="pod").splitlines()
            == ["net.ipv6.conf.eth0.accept_dad = 0", "net.ipv6.conf.default.accept_dad = 1"])


@page.check("node", "The bridge plugin set hairpin mode on the pod's port and turned on IP forwarding")
def _(lab):
    return ("hairpin on" in lab.output("bridge -d link show", step="node")
            and lab.output("sysctl -w net.ipv4.ip_forward=0", step="config").strip() == "net.ipv4.ip_forward = 0"
            and lab.output("sysctl net.ipv4.ip_forward", step="node").strip() == "net.ipv4.ip_forward = 1")


@page.check("node", "`ip link` shows the host-side veth's peer as @if2 in link-netns pod-a; `bridge link` looks "
                    "that index up in the node instead, where 2 is cni0")
def _(lab):
    veth, eth0 = peer_of(lab, "pod-a"), lab.link("pod-a", "eth0")
    ports = lab.output("ip link show master cni0", step="node")
    bridge = lab.output("bridge -d link show", step="node")
    shown = re.search(rf"^{veth['index']}: {veth['name']}@(\S+): ", bridge, re.M)
    host = next(n for n in lab.snapshot["nodes"] if n["name"] == "host")
    local = next(l["name"] for l in host["links"] if l["index"] == eth0["index"])
    return (indexes(ports, veth["name"]) == (veth["index"], eth0["index"]) and "link-netns pod-a" in ports
            and shown is not None and shown.group(1) == local == "cni0")


@page.check("node", "host-local keeps one file per address, named after it and holding the container ID and "
                    "interface; the runtime's cache holds the result ADD returned")
def _(lab):
    from deepdive.cni import container_id_for
    lease = lab.output(f"cat /var/lib/cni/networks/{NET}/10.88.0.2", step="node").split()
    cached = json.loads(lab.output(".result.interfaces", step="node"))
    added = lab.json("deepdive-cni add containerd-net /run/netns/pod-a", "add")
    return lease == [container_id_for("/run/netns/pod-a"), "eth0"] and cached == added["interfaces"]


@page.check("second", "pod-b got the next address, 10.88.0.3, and reached pod-a through cni0")
def _(lab):
    res = lab.json("deepdive-cni add containerd-net /run/netns/pod-b", "second")
    return (res["ips"][0]["address"] == "10.88.0.3/16"
            and answered(lab.output("ping -c 2", step="second"), "10.88.0.2", 2))


@page.check("second", "cni0 learned each pod's MAC on that pod's own port, and pod-b's neighbour entry for "
                      "10.88.0.2 is pod-a's eth0")
def _(lab):
    fdb = lab.output("bridge fdb show br cni0 dynamic", step="second")
    a, b = lab.link("pod-a", "eth0")["mac"], lab.link("pod-b", "eth0")["mac"]
    return (learned(fdb, f"{a} dev {peer_of(lab, 'pod-a')['name']}")
            and learned(fdb, f"{b} dev {peer_of(lab, 'pod-b')['name']}")
            and f"10.88.0.2 dev eth0 lladdr {a}" in lab.output("ip neigh", step="second"))


@page.check("container", "A process that joins the sandbox's namespaces sees the same eth0 and address, and "
                         "reaches the server on 127.0.0.1:80, which answers with the pod's hostname")
def _(lab):
    return ("10.88.0.2/16" in lab.output(f"{POD_A} ip -br -4 addr show eth0", step="container")
            and lab.output("socat -u TCP:127.0.0.1:80 -", step="container").strip() == "pod-a")


@page.check("hostport", "portmap sends TCP to any local address, port 8080, to a chain of pod-a's; from outside, "
                        "192.168.1.1:8080 reached pod-a's port 80, and conntrack shows the translation")
def _(lab):
    ct = lab.output("conntrack -L", step="hostport")
    return ("--dports 8080 -j CNI-DN-" in lab.output("CNI-HOSTPORT-DNAT", step="hostport")
            and "-j DNAT --to-destination 10.88.0.2:80" in lab.output(portmap_chain("pod-a"), step="hostport")
            and "--dst-type LOCAL -j CNI-HOSTPORT-DNAT" in lab.output("-S PREROUTING", step="hostport")
            and lab.output("socat -u TCP:192.168.1.1:8080 -", step="hostport").strip() == "pod-a"
            and "src=192.168.1.2 dst=192.168.1.1" in ct and "src=10.88.0.2 dst=192.168.1.2 sport=80" in ct)


@page.check("again", "The runtime refuses a second ADD of the same attachment; the bridge plugin, asked "
                     "directly, refuses too because eth0 exists")
def _(lab):
    return ("already has eth0" in lab.result("deepdive-cni add", step="again").stderr
            and "already exists" in lab.output("/usr/lib/cni/bridge", step="again")
            and peer_of(lab, "pod-a") is not None)


@page.check("del", "DEL removed pod-a's eth0 and its host-side veth, released 10.88.0.2 and the cached result, "
                   "and removed the hostPort rule; cni0 and pod-b stay")
def _(lab):
    files = lab.output("find /var/lib/cni -type f", step="del")
    return (peer_of(lab, "pod-a") is None and peer_of(lab, "pod-b") is not None
            and f"networks/{NET}/10.88.0.2" not in files and cache_file("pod-a") not in files
            and "CNI-DN-" not in lab.output("CNI-HOSTPORT-DNAT", step="del")
            and lab.link("host", "cni0")["up"])


@page.check("check", "CHECK got past bridge (the plugins run in order) and failed in portmap, which looks for "
                     "an IPv6 DNAT chain that its ADD never made")
def _(lab):
    err = lab.result("deepdive-cni check", step="check").stderr
    return 'plugin type="portmap" failed (check)' in err and "could not check ipv6 dnat" in err


@page.check("failure", "tuning failed after bridge had built eth1; the runtime's DEL removed eth1 and its veth "
                       "and released the address, and a list naming a missing plugin ran nothing")
def _(lab):
    failed = lab.result("add broken-net", step="failure").stderr
    typo = lab.result("add typo-net", step="failure").stderr
    return ('plugin type="tuning" failed (add)' in failed and "DEL undid the attachment" in failed
            and failed.count("\n") == 1 and "eth1" not in lab.output("ip -br link", step="failure")
            and lab.output("ip link show master cni1", step="failure").strip() == ""
            and "10.99.0.2" not in lab.output("find /var/lib/cni/networks/broken-net", step="failure")
            and "'portmapp' is not in CNI_PATH" in typo and typo.count("\n") == 1
            and not any(link["name"] == "cni2" for link in lab.snapshot["nodes"][0]["links"]))


@page.check("dual", "With two ranges, host-local gave pod-c one address of each family, each with its "
                    "family's gateway; the result's default routes came from IPAM, without a gateway of their own")
def _(lab):
    res = lab.json("deepdive-cni add dual-net /run/netns/pod-c", "dual")
    return (res["ips"] == [{"interface": 2, "address": "10.89.0.2/24", "gateway": "10.89.0.1"},
                           {"interface": 2, "address": "fd00:10:89::2/64", "gateway": "fd00:10:89::1"}]
            and res["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}])


@page.check("dual", "pod-c's eth0 holds both addresses and its link-local one; a default route per family "
                    "goes through that family's gateway on dual0, which holds both gateway addresses")
def _(lab):
    shown = lab.output("ip -n pod-c addr show eth0", step="dual")
    mac = lab.link("pod-c", "eth0")["mac"]
    return ("inet 10.89.0.2/24 " in shown
            and sorted(inet6(shown)) == sorted(["fd00:10:89::2/64 scope global", f"{link_local(mac)}/64 scope link"])
            and "default via 10.89.0.1 dev eth0" in lab.output("ip -n pod-c route", step="dual")
            and lab.output("ip -n pod-c -6 route", step="dual").startswith("fd00:10:89::/64 dev eth0 ")
            and "default via fd00:10:89::1 dev eth0" in lab.output("ip -n pod-c -6 route", step="dual")
            and "fe80::/64 dev eth0 " in lab.output("ip -n pod-c -6 route", step="dual")
            and sorted(lab.link("host", "dual0")["addresses"]) == ["10.89.0.1/24", "fd00:10:89::1/64"])


@page.check("dual", "IPv6 forwarding was off in the node and the bridge plugin turned it on with the IPv6 "
                    "gateway; pod-c reaches that gateway over IPv6")
def _(lab):
    def forwarding(step: str) -> str:
        return lab.output("sysctl net.ipv6.conf.all.forwarding", step=step).strip()
    return (forwarding("dual-config") == "net.ipv6.conf.all.forwarding = 0"
            and forwarding("dual") == "net.ipv6.conf.all.forwarding = 1"
            and answered(lab.output("ping -c 2 -i 0.2 -W 1 fd00:10:89::1", step="dual"), "fd00:10:89::1", 2))


@page.check("dual", "Neighbour discovery, not ARP, gave pod-c dual0's MAC for fd00:10:89::1, flagged as a router")
def _(lab):
    line = lab.output("ip -n pod-c -6 neigh show fd00:10:89::1", step="dual")
    found = neighbour(line, "fd00:10:89::1")
    return (found is not None and found[0] == lab.link("host", "dual0")["mac"] and found[1] in LEARNED_STATES
            and " router " in line)
