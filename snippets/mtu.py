"""mtu: pods over a VXLAN overlay with the wrong MTU, path MTU discovery, and a black hole.

Run with `invoke lab.run --page mtu`; the page is docs/troubleshooting/mtu.md.
Two nodes joined by an underlay veth pair (MTU 1500), a flannel-style VXLAN device
`flannel.1` on each (MTU 1450), and one pod per node on the node's bridge `cni0`,
created with the bridge plugin's default MTU, 1500: 50 bytes more than the overlay
carries. pod2 serves 100 000 bytes on port 80 and a short line on port 81.
"""
import re

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered

page = Page(
    name="mtu",
    title="MTU end to end and path MTU",
    nodes=("node1", "node2", "pod1", "pod2"),
    needs=Needs(kinds=("veth", "vxlan", "bridge"),
                tools=("ping", "socat", "iptables", "tcpdump", "timeout", "truncate", "wc", "setsid",
                       "ss", "sysctl")),
)

SIZE = 100_000
BIG = "timeout 5 ip netns exec pod1 socat -u TCP:10.244.2.2:80 CREATE:/run/got"
SMALL = "ip netns exec pod1 socat -u TCP:10.244.2.2:81 -"
# The SYN that opens the large transfer, as it crosses node1's bridge: its MSS option.
SYN = ("ip netns exec node1 tcpdump -i cni0 -n -t -l --immediate-mode -c 1"
       " 'tcp[tcpflags] == tcp-syn and dst port 80'")
DROP_ICMP = "iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP"
BIG_PING = "ip netns exec pod1 ping -c 1 -W 1 -M do -s 1472 10.244.2.2"


def node(i: int) -> list[str]:
    """Node i's flannel.1 towards the other node, its bridge and its pod (pod i),
    10.244.i.0/24 on cni0; `mtu` left out, so the pod's veth has the default 1500."""
    j = 3 - i
    n = f"node{i}"
    return [
        f"ip -n {n} link add flannel.1 address 02:00:00:00:01:0{i} type vxlan id 1"
        f" local 192.168.0.{i} remote 192.168.0.{j} dev eth0 dstport 8472",
        f"ip -n {n} addr add 10.244.{i}.0/32 dev flannel.1",
        f"ip -n {n} link set flannel.1 up",
        f"ip -n {n} route add 10.244.{j}.0/24 via 10.244.{j}.0 dev flannel.1 onlink",
        f"ip -n {n} link add cni0 address 02:00:00:00:02:0{i} type bridge",
        f"ip -n {n} addr add 10.244.{i}.1/24 dev cni0",
        f"ip -n {n} link set cni0 up",
        f"ip netns exec {n} sysctl -w net.ipv4.ip_forward=1",
        *pod(i),
    ]


def pod(i: int, mtu: str = "") -> list:
    """Pod i's eth0 and its host end veth1 on node i's cni0 (with `mtu N` on both ends
    when given), its address and default route; then wait until the host end can send."""
    n, p = f"node{i}", f"pod{i}"
    return [
        f"ip -n {n} link add veth1 {mtu + ' ' if mtu else ''}address 02:00:00:00:03:0{i} type veth"
        f" peer name eth0 netns {p} {mtu + ' ' if mtu else ''}address 02:00:00:00:04:0{i}",
        f"ip -n {n} link set veth1 master cni0",
        f"ip -n {n} link set veth1 up",
        f"ip -n {p} addr add 10.244.{i}.2/24 dev eth0",
        f"ip -n {p} link set eth0 up",
        f"ip -n {p} route add default via 10.244.{i}.1",
        # veth1 came up before its peer: the kernel readies it to send a moment after.
        cmd(f"ip -n {n} link show veth1", until="state UP"),
    ]


page.step(
    "underlay", "Two nodes on a 1500-byte underlay",
    "ip link add eth0 netns node1 address 02:00:00:00:00:01 type veth"
    " peer name eth0 netns node2 address 02:00:00:00:00:02",
    "ip -n node1 addr add 192.168.0.1/24 dev eth0",
    "ip -n node2 addr add 192.168.0.2/24 dev eth0",
    "ip -n node1 link set eth0 up",
    "ip -n node2 link set eth0 up",
    cmd("ip -n node1 link show eth0", until="state UP"),
)
page.step(
    "overlay", "The overlay and a pod on each node, all at MTU 1500 but flannel.1",
    *node(1),
    *node(2),
    cmd("ip -n node1 link show cni0", until="state UP"),
    cmd("ip -n node2 link show cni0", until="state UP"),
    snapshot=True,
)
page.step(
    "mtus", "The MTU of every hop",
    "ip -n pod1 link show eth0",
    "ip -n node1 link show",
    "ip -n node2 link show flannel.1",
    "ip -n pod2 link show eth0",
)
page.step(
    "servers", "Two servers in pod2",
    f"truncate -s {SIZE} /run/big",
    "setsid -f ip netns exec pod2 socat -U TCP-LISTEN:80,fork,reuseaddr OPEN:/run/big",
    "setsid -f ip netns exec pod2 socat TCP-LISTEN:81,fork,reuseaddr SYSTEM:'echo small answer from pod2'",
    cmd("ip netns exec pod2 ss -Hltn sport = :80", until="LISTEN"),
    cmd("ip netns exec pod2 ss -Hltn sport = :81", until="LISTEN"),
)
page.step(
    "blackhole", "ICMP filtered: small answers pass, large ones never arrive",
    f"ip netns exec node2 {DROP_ICMP}",
    "ip netns exec pod1 ping -c 1 -W 1 10.244.2.2",
    SMALL,
    cmd(SYN, background=True, ready="listening on", until="1 packet captured"),
    cmd(BIG, rc=124, timeout=15),
    "wc -c /run/got",
    "ip netns exec node2 iptables -L OUTPUT -v -n",
    "ip -n pod2 route get 10.244.1.2",
    "ip netns exec pod2 sysctl net.ipv4.tcp_mtu_probing",
)
page.step(
    "pmtud", "ICMP let through: path MTU discovery",
    f"ip netns exec node2 {DROP_ICMP.replace('-A', '-D', 1)}",
    cmd("ip netns exec node2 tcpdump -i cni0 -n -t -l --immediate-mode -c 1 icmp",
        background=True, ready="listening on", until="1 packet captured"),
    BIG,
    "wc -c /run/got",
    "ip -n pod2 route get 10.244.1.2",
    "ip -n pod2 route show cache",
    "ip netns exec pod2 sysctl net.ipv4.route.mtu_expires",
)
page.step(
    "ping", "The same with ping",
    "ip -n pod1 route show cache",
    cmd(BIG_PING, rc=1),
    "ip -n pod1 route get 10.244.2.2",
    cmd(BIG_PING.replace("-c 1", "-c 2 -i 0.2"), rc=1),
)
page.step(
    "fix", "The fix: pods at 1450, the underlay's 1500 minus 50",
    f"ip netns exec node2 {DROP_ICMP}",
    # A CNI plugin sets the MTU when it creates a pod's interface: the pods are
    # re-created, as their new sandboxes would be.
    "ip -n node1 link del veth1",
    "ip -n node2 link del veth1",
    *pod(1, "mtu 1450"),
    *pod(2, "mtu 1450"),
    "ip -n pod1 link show eth0",
    "ip -n pod2 route get 10.244.1.2",
    cmd(SYN, background=True, ready="listening on", until="1 packet captured"),
    BIG,
    "wc -c /run/got",
    "ip netns exec node2 iptables -L OUTPUT -v -n -x",
)


def mtu_of(lab, node: str, name: str) -> int:
    return lab.link(node, name)["mtu"]


def fetched(lab, step: str) -> int:
    """How many bytes of the large answer pod1 had written to /run/got in `step`."""
    count, path = lab.output("wc -c /run/got", step=step).split()
    return int(count) if path == "/run/got" else -1


def icmp_dropped(lab, step: str) -> int:
    """The packet count of node2's DROP rule for "fragmentation needed" in `step`."""
    rules = [l for l in lab.output("iptables -L OUTPUT", step=step).splitlines() if "icmptype 3 code 4" in l]
    return int(rules[0].split()[0]) if len(rules) == 1 else -1


@page.check("overlay", "flannel.1 got MTU 1450 from the 1500 of eth0 beneath it; the pods' eth0, their "
                       "host ends and cni0 kept 1500")
def _(lab):
    return all(mtu_of(lab, f"node{i}", "flannel.1") == 1450 and mtu_of(lab, f"node{i}", "eth0") == 1500
               and mtu_of(lab, f"node{i}", "cni0") == 1500 and mtu_of(lab, f"node{i}", "veth1") == 1500
               and mtu_of(lab, f"pod{i}", "eth0") == 1500 for i in (1, 2))


@page.check("mtus", "`ip link` shows mtu 1500 on the pods' eth0 and mtu 1450 on flannel.1")
def _(lab):
    return ("mtu 1500" in lab.output("ip -n pod1 link show eth0", step="mtus")
            and "mtu 1500" in lab.output("ip -n pod2 link show eth0", step="mtus")
            and "flannel.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 "
            in lab.output("ip -n node2 link show flannel.1", step="mtus"))


@page.check("blackhole", "With the node's ICMP \"fragmentation needed\" dropped, a ping and a short answer "
                         "pass, but not one byte of the 100 000-byte answer arrives in 5 s")
def _(lab):
    return (answered(lab.output("ping -c 1 -W 1 10.244.2.2", step="blackhole"), "10.244.2.2")
            and lab.output(SMALL, step="blackhole") == "small answer from pod2\n"
            and lab.result(BIG, step="blackhole").rc == 124
            and fetched(lab, "blackhole") == 0)


@page.check("blackhole", "node2 did try to tell pod2: its DROP rule for ICMP type 3 code 4 counted "
                         "packets, and pod2 has no path MTU for pod1")
def _(lab):
    return icmp_dropped(lab, "blackhole") > 0 and " mtu " not in lab.output("ip -n pod2 route get", step="blackhole")


@page.check("blackhole", "pod1's SYN announced mss 1460, what its 1500-byte MTU allows")
def _(lab):
    syn = lab.output("tcpdump", step="blackhole")
    return "Flags [S]" in syn and "options [mss 1460," in syn


@page.check("blackhole", "TCP's own black-hole detection, tcp_mtu_probing, is off (0), the kernel's default")
def _(lab):
    return lab.output("tcp_mtu_probing", step="blackhole").strip() == "net.ipv4.tcp_mtu_probing = 0"


@page.check("pmtud", "With ICMP let through, node2 sent pod2 \"need to frag (mtu 1450)\", pod2 cached path "
                     "MTU 1450 for pod1 for the default 600 s, and all 100 000 bytes arrived")
def _(lab):
    icmp = lab.output("tcpdump", step="pmtud")
    return ("10.244.2.1 > 10.244.2.2: ICMP 10.244.1.2 unreachable - need to frag (mtu 1450)" in icmp
            and lab.result(BIG, step="pmtud").rc == 0
            and fetched(lab, "pmtud") == SIZE
            and re.search(r"cache expires \d+sec mtu 1450", lab.output("ip -n pod2 route get", step="pmtud")) is not None
            and lab.output("mtu_expires", step="pmtud").strip() == "net.ipv4.route.mtu_expires = 600")


@page.check("ping", "pod1 has no route exception before (`ip route show cache` prints none, where it listed "
                    "pod2's); a 1500-byte ping with DF set gets \"Frag needed and DF set (mtu = 1450)\" from "
                    "10.244.1.1; pod1 then caches mtu 1450 for pod2 and refuses the next one itself")
def _(lab):
    # `ip route show cache` lists route exceptions: pod2's, learned in step pmtud, shows
    # that an empty list in pod1 means none, not a command that prints nothing.
    listed = lab.output("ip -n pod2 route show cache", step="pmtud")
    before = lab.result("ip -n pod1 route show cache", step="ping")
    after = lab.output("ip -n pod1 route get 10.244.2.2", step="ping")
    first = lab.output(BIG_PING, step="ping")
    second = lab.result(BIG_PING.replace("-c 1", "-c 2 -i 0.2"), step="ping")
    return ("From 10.244.1.1 icmp_seq=1 Frag needed and DF set (mtu = 1450)" in first
            and re.search(r"^10\.244\.1\.2 via 10\.244\.2\.1 dev eth0\b[^\n]*\n\s+cache expires \d+sec mtu 1450",
                          listed, re.M) is not None
            and before.rc == 0 and before.stdout == "" and "cache expires" in after and "mtu 1450" in after
            and "local error: message too long, mtu=1450" in second.stdout + second.stderr)


@page.check("fix", "With both pods at 1450 and the ICMP still dropped, pod1's SYN announces mss 1410, all "
                   "100 000 bytes arrive, and the DROP rule counted nothing more")
def _(lab):
    return (mtu_of(lab, "pod1", "eth0") == 1450 and mtu_of(lab, "node1", "veth1") == 1450
            and "options [mss 1410," in lab.output("tcpdump", step="fix")
            and lab.result(BIG, step="fix").rc == 0
            and fetched(lab, "fix") == SIZE
            and " mtu " not in lab.output("ip -n pod2 route get", step="fix")
            and icmp_dropped(lab, "fix") == 0)
