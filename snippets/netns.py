"""netns: what a network namespace holds, how it is named, entered, and kept alive.

Run with `invoke lab.run --page netns`; the page is docs/basics/netns.md.
The lab's own root namespace plays a node; the lab plays the container runtime, which
creates a pod's namespace under a `cni-` name and pins it with a bind mount, and the
CNI plugin, which wires it to the node's cni0.
"""
import re

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered

# containerd names a sandbox's namespace "cni-" and 16 random bytes written like a
# UUID (pkg/netns, newNS); the lab fixes one so that every run prints the same.
POD = "cni-7f3c2a9e-5b1d-4c8e-9a6f-2d4b8e1c0f53"
IN_POD = f"ip netns exec {POD}"
PS = "ps -o pid,netns,args -C socat"
SERVER = "socat TCP-LISTEN:8080,fork,reuseaddr EXEC:'echo {}'"

page = Page(
    name="netns",
    title="Network namespaces",
    needs=Needs(kinds=("veth", "bridge"), features=("nf_tables",),
                tools=("ping", "socat", "ss", "nft", "findmnt", "ps", "nsenter", "setsid",
                       "pkill", "pgrep", "readlink", "ls", "grep", "sysctl")),
    masks=[
        # A namespace's inode number is the kernel's pick from one counter for the
        # whole machine: nsfs[net:[4026532248]], net:[4026532248], and ps's NETNS
        # column, after the process's PID.
        (r"\bnet:\[\d+\]", "net:[<inode>]"),
        (r"(?m)^ *\d+ +\d{10} ", "<pid> <inode> "),
    ],
)

page.step(
    "add", "A new network namespace",
    f"ip netns add {POD}",
    "ip netns list",
    f"ip -n {POD} link",
    f"ip -n {POD} addr",
    f"ip -n {POD} route show table all",
)
page.step(
    "mount", "The name is a bind mount",
    "ls /run/netns",
    # The name's own mount point: the lab's /run hides the machine's, but a plain
    # `findmnt -t nsfs` would still list the machine's named namespaces under it.
    f"findmnt /run/netns/{POD}",
    f"{IN_POD} readlink /proc/self/ns/net",
    "readlink /proc/self/ns/net",
)
page.step(
    "wire", "Plug the pod into the node",
    # The node's bridge comes first, so that the indexes of the pair's two ends differ.
    "ip link add cni0 address 02:00:00:00:00:01 type bridge",
    "ip addr add 10.88.0.1/16 dev cni0",
    "ip link set cni0 up",
    f"ip link add veth-pod address 02:00:00:00:00:02 type veth"
    f" peer name eth0 netns {POD} address 02:00:00:00:00:03",
    "ip link set veth-pod master cni0",
    "ip link set veth-pod up",
    f"ip -n {POD} addr add 10.88.0.2/16 dev eth0",
    f"ip -n {POD} link set lo up",
    f"ip -n {POD} link set eth0 up",
    f"ip -n {POD} route add default via 10.88.0.1",
    cmd(f"ip -n {POD} link show eth0", until="state UP"),
    cmd("ping -c 1 -W 2 10.88.0.2"),
    snapshot=True,
)
page.step(
    "links", "Links, addresses and routes: each namespace its own",
    "ip -br link",
    f"ip -n {POD} -br link",
    "ip -4 -br addr",
    f"ip -n {POD} -4 -br addr",
    "ip route",
    f"ip -n {POD} route",
)
page.step(
    "sockets", "Sockets: the same port twice",
    f"setsid -f {SERVER.format('node')}",
    f"setsid -f {IN_POD} {SERVER.format('pod')}",
    cmd("ss -Hltn sport = :8080", until="LISTEN"),
    cmd(f"{IN_POD} ss -Hltn sport = :8080", until="LISTEN"),
    "socat -u TCP:127.0.0.1:8080 -",
    f"{IN_POD} socat -u TCP:127.0.0.1:8080 -",
    "socat -u TCP:10.88.0.2:8080 -",
)
page.step(
    "settings", "Packet filter rules and sysctls",
    "nft add table ip node-only",
    "nft list tables",
    f"{IN_POD} nft list tables",
    f"{IN_POD} sysctl -w net.ipv4.ip_forward=0",
    "sysctl -w net.ipv4.ip_forward=1",
    f"{IN_POD} sysctl net.ipv4.ip_forward",
)
page.step(
    "enter", "Entering a namespace",
    f"{IN_POD} ip netns identify",
    cmd("ip netns identify"),
    f"nsenter --net=/run/netns/{POD} ip -br link",
    f"nsenter --net=/run/netns/{POD} ls /sys/class/net",
    f"{IN_POD} ls /sys/class/net",
    "readlink /proc/1/ns/net",
    f"{IN_POD} nsenter --net=/proc/1/ns/net ip -br link",
    # A server forks a child per connection and reaps it a moment after the client is
    # done: the lab waits until only the two servers are left.
    cmd("pgrep -c -x socat", until="2"),
    PS,
)
page.step(
    "held", "What keeps a namespace alive",
    f"ip netns del {POD}",
    "ip netns list",
    cmd(f"findmnt /run/netns/{POD}", rc=1),
    PS,
    "ip -br link show veth-pod",
    "socat -u TCP:10.88.0.2:8080 -",
)
page.step(
    "gone", "The last holder goes",
    "pkill -x socat",
    # The kernel dismantles a namespace in the background, a moment after its last
    # holder went: the lab waits until its kernel's list of interfaces drops veth-pod.
    cmd("grep -c veth-pod /proc/net/dev", rc=1, until="0"),
    cmd("ip link show veth-pod", rc=1),
)


def inode(text: str) -> str:
    """The inode number in `net:[4026532248]` (readlink) or `nsfs[net:[...]]` (findmnt)."""
    found = re.findall(r"net:\[(\d+)\]", text)
    if len(found) != 1:
        raise ValueError(f"expected one net:[inode] in {text!r}")
    return found[0]


@page.check("add", "The new namespace is listed, holds only lo, down and without an address, and no route in "
                   "any table")
def _(lab):
    links = lab.output(f"ip -n {POD} link", step="add")
    return (lab.output("ip netns list", step="add").split() == [POD]
            and links.count(": <") == 1 and "1: lo: <LOOPBACK>" in links and "state DOWN" in links
            and "inet" not in lab.output(f"ip -n {POD} addr", step="add")
            and lab.output(f"ip -n {POD} route show table all", step="add").strip() == "")


@page.check("mount", "/run/netns/NAME is an nsfs mount of the namespace that a process inside it sees as "
                     "its own, and not the node's")
def _(lab):
    mounts = lab.output("findmnt", step="mount")
    pod = inode(lab.output(f"{IN_POD} readlink", step="mount"))
    node = inode(lab.output("readlink /proc/self/ns/net", step="mount"))
    return (f"/run/netns/{POD} nsfs[net:[{pod}]] nsfs" in " ".join(mounts.split())
            and lab.output("ls /run/netns", step="mount").split() == [POD] and pod != node)


@page.check("wire", "The node reaches the pod through cni0 once the pod's eth0 is plugged in")
def _(lab):
    return answered(lab.output("ping -c 1", step="wire"), "10.88.0.2")


@page.check("links", "Each namespace lists only its own links: the node has cni0 and veth-pod, the pod lo and "
                     "eth0; each @ifN is the peer's index in the other namespace, not the link's own")
def _(lab):
    node = {line.split()[0] for line in lab.output("ip -br link", step="links").splitlines()}
    pod = {line.split()[0] for line in lab.output(f"ip -n {POD} -br link", step="links").splitlines()}
    veth, eth0 = lab.link("host", "veth-pod"), lab.link(POD, "eth0")
    return (node == {"lo", "cni0", f"veth-pod@if{eth0['index']}"}
            and pod == {"lo", f"eth0@if{veth['index']}"} and veth["index"] != eth0["index"])


@page.check("links", "The pod's routes are its own: a default route via 10.88.0.1 that the node does not have")
def _(lab):
    node, pod = lab.output("ip route", step="links"), lab.output(f"ip -n {POD} route", step="links")
    return ("default via 10.88.0.1 dev eth0" in pod and "default" not in node
            and "10.88.0.0/16 dev cni0" in node and "10.88.0.0/16 dev eth0" in pod)


@page.check("sockets", "Both namespaces listen on port 8080 at once; 127.0.0.1:8080 reaches the node's server "
                       "from the node and the pod's from the pod")
def _(lab):
    def said(contains: str) -> str:
        return lab.output(contains, step="sockets").strip()
    return (said("ss -Hltn sport = :8080").count("LISTEN") == 1
            and said(f"{IN_POD} ss -Hltn").count("LISTEN") == 1
            and said("socat -u TCP:127.0.0.1:8080 -") == "node"
            and said(f"{IN_POD} socat -u TCP:127.0.0.1:8080 -") == "pod"
            and said("socat -u TCP:10.88.0.2:8080 -") == "pod")


@page.check("settings", "The node's nftables table is not in the pod, and the node's ip_forward=1 leaves the "
                        "pod's at 0")
def _(lab):
    return ("table ip node-only" in lab.output("nft list tables", step="settings")
            and lab.output(f"{IN_POD} nft list tables", step="settings").strip() == ""
            and lab.output(f"{IN_POD} sysctl net.ipv4.ip_forward", step="settings").strip()
            == "net.ipv4.ip_forward = 0")


@page.check("enter", "ip netns identify names the pod's namespace from inside it and prints nothing in the "
                     "node's, which has no name")
def _(lab):
    return (lab.output(f"{IN_POD} ip netns identify", step="enter").strip() == POD
            and lab.output("ip netns identify", step="enter").strip() == "")


@page.check("enter", "nsenter --net switches the network namespace only: ip sees the pod's links, while "
                     "/sys/class/net still lists the node's; ip netns exec also mounts the pod's /sys")
def _(lab):
    def names(contains: str) -> set[str]:
        return set(lab.output(contains, step="enter").split())
    return (names(f"nsenter --net=/run/netns/{POD} ip -br link") >= {"lo", "eth0@if3"}
            and names(f"nsenter --net=/run/netns/{POD} ls /sys/class/net") == {"lo", "cni0", "veth-pod"}
            and names(f"{IN_POD} ls /sys/class/net") == {"lo", "eth0"})


@page.check("enter", "/proc/1/ns/net, the namespace of the lab's PID 1, is the node's: entered from the pod, "
                     "it shows cni0 and veth-pod")
def _(lab):
    shown = lab.output(f"{IN_POD} nsenter --net=/proc/1/ns/net ip -br link", step="enter")
    return (inode(lab.output("readlink /proc/1/ns/net", step="enter"))
            == inode(lab.output("readlink /proc/self/ns/net", step="mount"))
            and "cni0" in shown and "veth-pod@if2" in shown)


def netns_of(ps_output: str, server: str) -> str:
    """The NETNS column of the `ps -o pid,netns,args` row whose command answers `server`."""
    rows = [line.split() for line in ps_output.splitlines()[1:]]
    found = [row[1] for row in rows if row[-1] == server]
    if len(found) != 1:
        raise ValueError(f"expected one socat answering {server!r} in {ps_output!r}")
    return found[0]


@page.check("enter", "ps shows each server in its own namespace: the node's in PID 1's, the pod's in the one "
                     "mounted at /run/netns")
def _(lab):
    shown = lab.output(PS, step="enter")
    return (netns_of(shown, "node") == inode(lab.output("readlink /proc/1/ns/net", step="enter"))
            and netns_of(shown, "pod") == inode(lab.output("findmnt", step="mount")))


@page.check("held", "After ip netns del the name and its mount are gone, yet the namespace lives on while the "
                    "pod's server runs in it: the server is still in it, veth-pod is still there and the pod "
                    "answers")
def _(lab):
    return (lab.output("ip netns list", step="held").strip() == ""
            and lab.output("findmnt", step="held").strip() == ""
            and netns_of(lab.output(PS, step="held"), "pod") == inode(lab.output("findmnt", step="mount"))
            and lab.output("ip -br link show veth-pod", step="held").startswith("veth-pod@")
            and lab.output("socat -u TCP:10.88.0.2:8080 -", step="held").strip() == "pod")


@page.check("gone", "Once no process is left in it, the namespace is destroyed and takes the pair with it: "
                    "veth-pod no longer exists in the node")
def _(lab):
    return 'Device "veth-pod" does not exist.' in lab.result("ip link show veth-pod", step="gone").stderr
