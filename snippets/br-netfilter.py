"""br-netfilter: bridged frames through iptables, a FORWARD policy of DROP, and hairpin mode.

Run with `invoke lab.run --page br-netfilter`; the page is docs/node/br-netfilter.md.
The lab's own namespace is the node. Two pods hang off the bridge cni0 the way the CNI
bridge plugin wires them (here by hand, so that names and MACs are fixed), each with a
server on port 80 that answers with the pod's name. Two iptables DNAT rules stand in for
kube-proxy's Service chains, which the Services pages show in full.
"""
import re

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, received, transmitted

page = Page(
    name="br-netfilter",
    title="br_netfilter and hairpin mode",
    nodes=("pod-a", "pod-b"),
    needs=Needs(kinds=("bridge", "veth"), features=("br_netfilter", "nat", "conntrack"),
                tools=("iptables", "conntrack", "socat", "ping", "bridge", "sysctl", "setsid", "ss", "nstat")),
    masks=[
        # How many resets pod-a sent, and how many packets the node routed, follow the
        # TCP retransmissions of the connections that time out.
        (r"(?m)^(TcpOutRsts|IpForwDatagrams)( +)\d+ +", r"\1\2<n> "),
    ],
)

PODS = {"pod-a": ("a", "10.244.1.2"), "pod-b": ("b", "10.244.1.3")}
TO_B = "ip netns exec pod-a ping -c 1 -W 1 10.244.1.3"
TO_A = "ip netns exec pod-b ping -c 1 -W 1 10.244.1.2"
# A FORWARD rule without a target only counts: it matches a frame bridged from veth-a to
# veth-b, with the bridge itself as the input and output interface.
BRIDGED = "FORWARD -i cni0 -o cni0 -m physdev --physdev-in veth-a --physdev-out veth-b"
RESETS = "ip netns exec pod-a nstat -asz TcpOutRsts"
ROUTED = "nstat -asz IpForwDatagrams"
# A Service whose one endpoint is pod-b, and one whose one endpoint is pod-a itself.
SERVICE_B, SERVICE_A = "10.96.0.10", "10.96.0.11"


def call(service: str) -> str:
    """pod-a connects to a Service's port 80 and prints what the server sent; socat gives
    up after 2 s without an answer to its SYN."""
    return f"ip netns exec pod-a socat -u TCP:{service}:80,connect-timeout=2 -"


def pod(name: str) -> list:
    """A pod's eth0, its host end on cni0 and its server, as the bridge plugin would wire
    it with hairpinMode false (its default)."""
    x, address = PODS[name]
    n = "2" if x == "a" else "3"
    return [
        f"ip link add veth-{x} address 02:00:00:00:01:0{n} type veth"
        f" peer name eth0 netns {name} address 02:00:00:00:02:0{n}",
        f"ip link set veth-{x} master cni0",
        f"ip link set veth-{x} up",
        f"ip -n {name} addr add {address}/24 dev eth0",
        f"ip -n {name} link set eth0 up",
        f"ip -n {name} route add default via 10.244.1.1",
        f"setsid -f ip netns exec {name} socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo {name}'",
    ]


page.step(
    "pods", "Two pods on the bridge cni0",
    "ip link add cni0 address 02:00:00:00:00:01 type bridge",
    "ip addr add 10.244.1.1/24 dev cni0",
    "ip link set cni0 up",
    *pod("pod-a"),
    *pod("pod-b"),
    "sysctl -w net.ipv4.ip_forward=1",
    # A link that came up before its peer, or before its first port, is ready to send
    # a moment later, when the kernel's link watcher has acted on its carrier.
    cmd("ip link show veth-a", until="state UP"),
    cmd("ip link show veth-b", until="state UP"),
    cmd("ip link show cni0", until="state UP"),
    cmd("ip netns exec pod-a ss -Hltn sport = :80", until="LISTEN"),
    cmd("ip netns exec pod-b ss -Hltn sport = :80", until="LISTEN"),
    "ip netns exec pod-a ping -c 2 -i 0.2 -W 1 10.244.1.3",
    snapshot=True,
)
page.step(
    "show", "What the bridge and the node say",
    "ip -d link show cni0",
    "bridge -d link show dev veth-a",
    "sysctl net.bridge.bridge-nf-call-iptables",
    "iptables -S FORWARD",
)
page.step(
    "drop", "A FORWARD policy of DROP",
    "iptables -P FORWARD DROP",
    f"iptables -A {BRIDGED}",
    cmd(TO_B, rc=1),
    "iptables -L FORWARD -v -n",
    f"iptables -D {BRIDGED}",
)
page.step(
    "switches", "The two switches: the sysctl and the bridge's own option",
    "sysctl -w net.bridge.bridge-nf-call-iptables=0",
    TO_B,
    "ip link set cni0 type bridge nf_call_iptables 1",
    "ip -d link show cni0",
    cmd(TO_A, rc=1),
    "ip link set cni0 type bridge nf_call_iptables 0",
    "sysctl -w net.bridge.bridge-nf-call-iptables=1",
)
page.step(
    "kube-forward", "kube-proxy's FORWARD rules",
    "iptables -N KUBE-FORWARD",
    "iptables -A FORWARD -m comment --comment 'kubernetes forwarding rules' -j KUBE-FORWARD",
    "iptables -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    "iptables -A KUBE-FORWARD -m comment --comment 'kubernetes forwarding rules'"
    " -m mark --mark 0x4000/0x4000 -j ACCEPT",
    "iptables -A KUBE-FORWARD -m comment --comment 'kubernetes forwarding conntrack rule'"
    " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    cmd(TO_B, rc=1),
)
page.step(
    "flannel-fwd", "flannel's FORWARD rules",
    "iptables -N FLANNEL-FWD",
    "iptables -A FORWARD -m comment --comment 'flanneld forward' -j FLANNEL-FWD",
    "iptables -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment 'flanneld forward' -j ACCEPT",
    "iptables -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment 'flanneld forward' -j ACCEPT",
    TO_B,
    TO_A,
    "iptables -L FORWARD -v -n",
    "iptables -L KUBE-FORWARD -v -n",
)
page.step(
    "service-off", "A Service between the two pods, with the switch off",
    f"iptables -t nat -A PREROUTING -d {SERVICE_B}/32 -p tcp --dport 80 -j DNAT --to-destination 10.244.1.3:80",
    "sysctl -w net.bridge.bridge-nf-call-iptables=0",
    cmd(call(SERVICE_B), rc=1),
    f"conntrack -L -p tcp --orig-dst {SERVICE_B}",
    RESETS,
)
page.step(
    "service-on", "The same Service with the switch on",
    "sysctl -w net.bridge.bridge-nf-call-iptables=1",
    call(SERVICE_B),
    # The connection has ended; its entry reaches TIME_WAIT once the last ACK has passed.
    cmd(f"conntrack -L -p tcp --orig-dst {SERVICE_B} --state TIME_WAIT", until="TIME_WAIT"),
)
page.step(
    "hairpin-off", "pod-a calls a Service that leads back to pod-a",
    f"iptables -t nat -A PREROUTING -d {SERVICE_A}/32 -p tcp --dport 80 -j DNAT --to-destination 10.244.1.2:80",
    # kube-proxy masquerades a connection from an endpoint to itself (KUBE-MARK-MASQ in
    # the endpoint's chain); without it the pod would drop a packet from its own address.
    "iptables -t nat -A POSTROUTING -s 10.244.1.2/32 -d 10.244.1.2/32 -j MASQUERADE",
    cmd(call(SERVICE_A), rc=1),
    f"conntrack -L -p tcp --orig-dst {SERVICE_A}",
)
page.step(
    "hairpin-on", "Hairpin mode on pod-a's port",
    "bridge link set dev veth-a hairpin on",
    "bridge -d link show dev veth-a",
    call(SERVICE_A),
    cmd(f"conntrack -L -p tcp --orig-dst {SERVICE_A} --state TIME_WAIT", until="TIME_WAIT"),
    # How many packets the node has routed so far; the next step reads it again.
    ROUTED,
)
page.step(
    "routed", "Hairpin mode off again, and br_netfilter's switch off",
    "bridge link set dev veth-a hairpin off",
    "sysctl -w net.bridge.bridge-nf-call-iptables=0",
    "bridge -d link show dev veth-a",
    call(SERVICE_A),
    ROUTED,
)


def pings(lab, command: str, step: str) -> tuple[int, int]:
    """(sent, answered) of a ping the step ran."""
    out = lab.output(command, step=step)
    return transmitted(out), received(out)


def timed_out(lab, service: str, step: str) -> bool:
    """Whether pod-a's call to the Service in `step` got no answer to its SYN."""
    res = lab.result(call(service), step=step)
    return res.rc == 1 and "Connection timed out" in res.stderr


def answer(lab, service: str, step: str) -> str:
    """What the server behind the Service sent pod-a in `step`: the pod's name."""
    return lab.output(call(service), step=step).strip()


@page.check("pods", "pod-a reaches pod-b across cni0; each pod's host end is a port of cni0")
def _(lab):
    return (answered(lab.output("ping -c 2", step="pods"), "10.244.1.3", 2)
            and lab.link("host", "veth-a")["master"] == "cni0"
            and lab.link("host", "veth-b")["master"] == "cni0")


@page.check("show", "The bridge's own option says nf_call_iptables 0 and the port says hairpin off, "
                    "yet the namespace's sysctl net.bridge.bridge-nf-call-iptables is 1")
def _(lab):
    return ("nf_call_iptables 0 " in lab.output("ip -d link show cni0", step="show")
            and "hairpin off " in lab.output("bridge -d link show dev veth-a", step="show")
            and lab.output("sysctl net.bridge", step="show").strip()
            == "net.bridge.bridge-nf-call-iptables = 1")


@page.check("show", "FORWARD starts empty, with the policy ACCEPT")
def _(lab):
    return lab.output("iptables -S FORWARD", step="show").splitlines() == ["-P FORWARD ACCEPT"]


def rule_packets(chain: str, match: str) -> int:
    """The packet count of the one rule of an `iptables -L -v -n` listing whose row
    contains `match`."""
    rows = [line.split() for line in chain.splitlines() if match in line]
    if len(rows) != 1:
        raise ValueError(f"expected one rule with {match!r} in {chain!r}")
    return int(rows[0][0])


def nstat(lab, command: str, step: str) -> int:
    """The one counter an `nstat -asz NAME` command printed in `step`."""
    return int(lab.output(command, step=step).splitlines()[1].split()[1])


@page.check("drop", "With the policy DROP the ping between two pods on the same bridge gets no answer, "
                    "and FORWARD's policy counted exactly that one 84-byte echo request")
def _(lab):
    chain = lab.output("iptables -L FORWARD", step="drop")
    return (pings(lab, TO_B, "drop") == (1, 0)
            and "(policy DROP 1 packets, 84 bytes)" in chain)


@page.check("drop", "The bridged echo request met FORWARD with cni0 as both its input and output interface, "
                    "and the physdev match saw the ports it came in on and went out of: veth-a and veth-b")
def _(lab):
    return rule_packets(lab.output("iptables -L FORWARD", step="drop"), "PHYSDEV match") == 1


@page.check("switches", "With the sysctl at 0 the bridge no longer asks iptables and the ping passes; "
                        "the bridge's own nf_call_iptables 1 brings the drop back for this bridge")
def _(lab):
    return (answered(lab.output(TO_B, step="switches"), "10.244.1.3")
            and "nf_call_iptables 1 " in lab.output("ip -d link show cni0", step="switches")
            and pings(lab, TO_A, "switches") == (1, 0))


@page.check("kube-forward", "kube-proxy's KUBE-FORWARD accepts marked and established traffic only: "
                            "a new ping between the pods is still dropped")
def _(lab):
    return pings(lab, TO_B, "kube-forward") == (1, 0)


@page.check("flannel-fwd", "flannel's ACCEPT rules for the pod network let the pods reach each other, both "
                           "ways; FLANNEL-FWD accepted the two echo requests, KUBE-FORWARD's conntrack rule "
                           "the two replies, and the policy has dropped three pings in all")
def _(lab):
    chain = lab.output("iptables -L FORWARD", step="flannel-fwd")
    counted = {m[2]: int(m[1]) for m in re.finditer(r"(?m)^\s*(\d+)\s+\d+\s+(\S+)", chain)}
    return (answered(lab.output(TO_B, step="flannel-fwd"), "10.244.1.3")
            and answered(lab.output(TO_A, step="flannel-fwd"), "10.244.1.2")
            and counted == {"KUBE-FORWARD": 5, "FLANNEL-FWD": 2}
            and "(policy DROP 3 packets, 252 bytes)" in chain
            and rule_packets(lab.output("iptables -L KUBE-FORWARD", step="flannel-fwd"),
                           "ctstate RELATED,ESTABLISHED") == 2)


@page.check("service-off", "With the switch off, pod-a's connection to the Service times out: the node "
                           "DNATed the SYN to pod-b, and conntrack never saw pod-b's answer, which reached pod-a "
                           "from 10.244.1.3 and was refused with a reset")
def _(lab):
    ct = lab.output("conntrack -L", step="service-off")
    return (timed_out(lab, SERVICE_B, "service-off")
            and "SYN_SENT" in ct and "[UNREPLIED] src=10.244.1.3 dst=10.244.1.2 sport=80" in ct
            and nstat(lab, RESETS, "service-off") >= 1)


@page.check("service-on", "With the switch on, pod-b answers through the Service, and conntrack saw the "
                          "reply that crossed only the bridge")
def _(lab):
    ct = lab.output("conntrack -L", step="service-on")
    return (answer(lab, SERVICE_B, "service-on") == "pod-b"
            and "src=10.244.1.3 dst=10.244.1.2 sport=80" in ct and "[ASSURED]" in ct)


@page.check("hairpin-off", "With hairpin off, pod-a's connection to its own Service times out, and "
                           "conntrack holds no entry for it: the SYN never left the bridge")
def _(lab):
    ct = lab.result("conntrack -L", step="hairpin-off")
    return (timed_out(lab, SERVICE_A, "hairpin-off")
            and ct.stdout == "" and "0 flow entries have been shown" in ct.stderr)


@page.check("hairpin-on", "With hairpin on, pod-a reaches itself through the Service, seen by the server "
                          "as coming from cni0's 10.244.1.1")
def _(lab):
    ct = lab.output("conntrack -L", step="hairpin-on")
    return ("hairpin on " in lab.output("bridge -d link show", step="hairpin-on")
            and answer(lab, SERVICE_A, "hairpin-on") == "pod-a"
            and "src=10.244.1.2 dst=10.244.1.1 sport=80" in ct)


@page.check("hairpin-on", "Frames bridged through br_netfilter are not counted as routed: IpForwDatagrams "
                         "holds only the SYNs the node routed with the switch off, one per reset pod-a sent")
def _(lab):
    return nstat(lab, ROUTED, "hairpin-on") == nstat(lab, RESETS, "service-off")


@page.check("routed", "With br_netfilter's switch off, the same hairpin connection works with hairpin off: "
                      "the node routed it (its IpForwDatagrams grew), and cni0 sent it out as a frame of its own")
def _(lab):
    return (answer(lab, SERVICE_A, "routed") == "pod-a"
            and "hairpin off " in lab.output("bridge -d link show dev veth-a", step="routed")
            and nstat(lab, ROUTED, "routed") > nstat(lab, ROUTED, "hairpin-on"))
