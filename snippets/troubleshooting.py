"""troubleshooting: a broken pod-to-Service connection, followed hop by hop with the tools.

Run with `invoke lab.run --page troubleshooting`; the page is docs/troubleshooting/tools.md.
The node is the shared Service of snippets/_service.py (three pods, the laptop) plus a
client pod that is no endpoint, and kube-proxy's iptables rules from the kube-proxy-iptables
page, first as kube-proxy writes them for a Service whose targetPort says 8080 while the
pods listen on 80, then as it rewrites them once the Service says 80.
"""
from __future__ import annotations

import importlib
import re

from deepdive.model import Needs, Page, cmd
from snippets import _service as svc

# The kube-proxy-iptables page's module: its rules are kube-proxy's, chain names included.
kpi = importlib.import_module("snippets.kube-proxy-iptables")

WRONG_PORT = 8080  # the Service's targetPort before the fix
CLIENT = "client"
CLIENT_IP = "10.244.1.5"  # host-local's next address after the three pods
SERVICE_URL = f"http://{svc.CLUSTER_IP}/"
NODE_PORT_URL = f"http://{svc.NODE_IP}:{svc.NODE_PORT}/"
CURL = f"ip netns exec {CLIENT} curl -sS --max-time 2 "
# Every hop on the node, in the order the kernel passes a packet (tcpdump -i any is never
# promiscuous: the promisc step shows why that matters on a bridge); and the client's eth0.
NODE_CAPTURE = "tcpdump -i any -n -t -l --immediate-mode -c {n} '{filter}'"
CLIENT_CAPTURE = f"ip netns exec {CLIENT} tcpdump -i eth0 -n -t -l --immediate-mode -c 2 tcp"
SYNS = "tcp[tcpflags] & tcp-syn != 0"


def sep_chain(pod: str, port: int) -> str:
    """kube-proxy's KUBE-SEP chain for `pod`'s endpoint at `port`: the endpoint's
    "IP:port" is part of what is hashed, so another targetPort means other chains."""
    return "KUBE-SEP-" + kpi.chain_hash(kpi.SERVICE + kpi.PROTOCOL + f"{svc.POD_IPS[pod]}:{port}")


def restore_input(port: int) -> str:
    """kube-proxy's nat table for the Service with its endpoints at `port` (the
    kube-proxy-iptables page's, which has them at 80)."""
    text = kpi.restore_input()
    for pod in svc.PODS:
        text = (text.replace(kpi.SEP_CHAINS[pod], sep_chain(pod, port))
                .replace(kpi.endpoint(pod), f"{svc.POD_IPS[pod]}:{port}"))
    return text


def fix_input() -> str:
    """The sync after the Service's targetPort became 80: the rules at 80, and the chains of
    the 8080 endpoints flushed (a chain line after the live chains' lines) and deleted
    (-X), where kube-proxy's syncProxyRules writes them: before KUBE-SERVICES' last rule,
    the jump to KUBE-NODEPORTS."""
    stale = [sep_chain(pod, WRONG_PORT) for pod in svc.PODS]
    lines = restore_input(svc.PORT).splitlines()
    first_rule = next(i for i, line in enumerate(lines) if line.startswith("-A "))
    lines[first_rule:first_rule] = [f":{chain} - [0:0]" for chain in stale]
    assert lines[-2].endswith("-j KUBE-NODEPORTS") and lines[-1] == "COMMIT"
    lines[-2:-2] = [f"-X {chain}" for chain in stale]
    return "\n".join(lines) + "\n"


page = Page(
    name="troubleshooting",
    title="The troubleshooting tools, hop by hop",
    needs=Needs(kinds=("bridge", "veth"), features=("nat", "conntrack", "br_netfilter"),
                tools=(*svc.TOOLS, "iptables", "iptables-restore", "iptables-save", "nft", "conntrack",
                       "tcpdump", "ethtool", "ping")),
    masks=[
        *svc.MASKS,
        # The endpoint a connection gets is picked at random, and so is the page it serves.
        (r"(?m)^pod-\d$", "pod-<n>"),
        (r"\b10\.244\.1\.[234](?=\.80(?:80)?\b)", "10.244.1.<endpoint>"),
        (r"\bsrc=10\.244\.1\.[234](?= dst=10\.244\.1\.[15] )", "src=10.244.1.<endpoint>"),
        # MASQUERADE --random-fully picks the source port anywhere in 1024-65535.
        (r"(?<=\b10\.244\.1\.1\.)\d+(?= > )", "<port>"),
        (r"(?<=dst=10\.244\.1\.1 sport=80 dport=)\d+", "<port>"),
        (r"\bafter \d+ ms\b", "after <n> ms"),
        (r"\buid \d+\b", "uid <uid>"),
        # A neighbour entry stays REACHABLE for 15-45 s after it was confirmed, then STALE.
        (r"(?m)\b(?:REACHABLE|STALE|DELAY)(?= ?$)", "<state>"),
    ],
)

page.step(
    "pods", "The node: three pods, a client pod, the laptop",
    *svc.pods(),
    f"ip netns add {CLIENT}",
    f"env CNI_IFNAME=lo deepdive-cni add cni-loopback /run/netns/{CLIENT}",
    f"deepdive-cni add {svc.NETWORK} /run/netns/{CLIENT}",
    *svc.client(),
    f"ip route add default via {kpi.ROUTER}",
    snapshot=True,
)
page.step(
    "service", "kube-proxy's rules for a Service whose targetPort is 8080",
    "iptables -t nat -N KUBE-SERVICES",
    f"iptables -t nat -I OUTPUT {kpi.PORTALS}",
    f"iptables -t nat -I PREROUTING {kpi.PORTALS}",
    "iptables -t nat -N KUBE-POSTROUTING",
    cmd("iptables-restore --noflush --counters", heredoc=restore_input(WRONG_PORT)),
    kpi.POSTROUTING,
)
page.step(
    "symptom", "The symptom: the client pod cannot reach the Service",
    cmd(CURL + SERVICE_URL, rc=7),
)
page.step(
    "path", "The client's route, its next hop, and its cable",
    f"ip -n {CLIENT} route get {svc.CLUSTER_IP}",
    f"ip -n {CLIENT} neigh show {svc.GATEWAY}",
    f"ip netns exec {CLIENT} ethtool -S eth0",
    "ip link show master cni0",
    f"ip -n {CLIENT} -s link show eth0",
)
page.step(
    "capture", "One connection, on every hop, and in conntrack",
    # conntrack -E prints nothing once it listens: it starts first, and the rest of the
    # step's start-up gives it time.
    cmd("conntrack -E -p tcp", background=True, until="[DESTROY]", endless=True),
    # As for the first connection to a pod in a while: the node must look up its MAC.
    "ip neigh flush dev cni0",
    cmd(CLIENT_CAPTURE, background=True, ready="listening on", until="2 packets captured"),
    cmd(NODE_CAPTURE.format(n=5, filter="tcp and net 10.244.1.0/24"), background=True,
        ready="listening on", until="5 packets captured"),
    cmd(CURL + SERVICE_URL, rc=7),
    # TCP only, as for -E: the node tracks other protocols too (an IGMP report that cni0
    # sent once showed up here as an entry of its own).
    "conntrack -L -p tcp",
)
page.step(
    "rules", "The rules, with their counters",
    "nft list ruleset",
)
page.step(
    "sockets", "What the pod listens on",
    "ip netns exec pod-1 ss -ltnp",
    cmd(CURL + f"http://{svc.POD_IPS['pod-1']}:{WRONG_PORT}/", rc=7),
    CURL + f"http://{svc.POD_IPS['pod-1']}:{svc.PORT}/",
)
page.step(
    "fix", "The fix: targetPort 80, and kube-proxy's next sync",
    cmd("iptables-restore --noflush --counters", heredoc=fix_input()),
    "ip neigh flush dev cni0",
    cmd(NODE_CAPTURE.format(n=5, filter=f"{SYNS} and net 10.244.1.0/24"), background=True,
        ready="listening on", until="5 packets captured"),
    CURL + SERVICE_URL,
    # The entry reaches TIME_WAIT once the last ACK of the close has passed.
    cmd(f"conntrack -L -p tcp --orig-dst {svc.CLUSTER_IP}", until="TIME_WAIT"),
)
page.step(
    "known", "The same, once the node knows the pods' MAC addresses",
    *(f"ping -c 1 -W 1 {ip}" for ip in svc.POD_IPS.values()),
    cmd(NODE_CAPTURE.format(n=4, filter=f"{SYNS} and net 10.244.1.0/24"), background=True,
        ready="listening on", until="4 packets captured"),
    CURL + SERVICE_URL,
)
page.step(
    "promisc", "tcpdump on cni0, in promiscuous mode",
    "ip neigh flush dev cni0",
    cmd(NODE_CAPTURE.format(n=6, filter="tcp[tcpflags] == tcp-syn"), background=True,
        ready="listening on", until="6 packets captured"),
    cmd("tcpdump -i cni0 -n -t -l --immediate-mode -c 1 'tcp[tcpflags] == tcp-syn'", background=True,
        ready="listening on", until="1 packet captured"),
    CURL + SERVICE_URL,
)
page.step(
    "uplink", "From outside: the node's uplink, DNAT and SNAT",
    cmd(NODE_CAPTURE.format(n=3, filter="tcp[tcpflags] == tcp-syn"), background=True,
        ready="listening on", until="3 packets captured"),
    f"ip netns exec laptop curl -sS --max-time 2 {NODE_PORT_URL}",
    cmd(f"conntrack -L -p tcp --orig-port-dst {svc.NODE_PORT}", until="TIME_WAIT"),
)


# --- what the checks read ---------------------------------------------------------------

HOP = re.compile(r"(?m)^(?P<dev>\S+)\s+(?P<dir>In|Out|P|B|M)\s+IP (?P<src>[\d.]+)\.(?P<sport>\d+) > "
                 r"(?P<dst>[\d.]+)\.(?P<dport>\d+): Flags \[(?P<flags>[^\]]+)\]")


def hops(capture: str) -> list[dict[str, str]]:
    """The packets of a `tcpdump -i any -n -t` capture: device, direction, addresses,
    ports and TCP flags, in the order they were seen."""
    return [m.groupdict() for m in HOP.finditer(capture)]


def host_veth(lab, node: str) -> dict:
    """The node's veth whose peer is `node`'s eth0, from the kernel's state."""
    host = next(n for n in lab.snapshot["nodes"] if n["name"] == "host")
    return next(link for link in host["links"] if link["peer"] == {"node": node, "name": "eth0"})


def path(lab, step: str, pod: str) -> list[tuple[str, ...]]:
    """`step`'s `tcpdump -i any` as (device, direction, source, destination, flags) rows,
    with the client's veth written "client-veth", `pod`'s veth "pod-veth" and its address
    "pod": the names that change from run to run."""
    names = {host_veth(lab, CLIENT)["name"]: "client-veth", host_veth(lab, pod)["name"]: "pod-veth",
             svc.POD_IPS[pod]: "pod"}
    return [tuple(names.get(v, v) for v in (h["dev"], h["dir"], h["src"], h["dst"], h["flags"]))
            for h in hops(lab.output("tcpdump -i any", step=step))]


# A connection's SYN and SYN-ACK from the client to the Service, as `path` writes them,
# when the node must resolve the pod's MAC address.
HANDSHAKE = [("client-veth", "P", CLIENT_IP, svc.CLUSTER_IP, "S"), ("cni0", "Out", CLIENT_IP, "pod", "S"),
             ("pod-veth", "Out", CLIENT_IP, "pod", "S"), ("pod-veth", "P", "pod", CLIENT_IP, "S."),
             ("client-veth", "Out", svc.CLUSTER_IP, CLIENT_IP, "S.")]


def pod_of(address: str) -> str:
    return next(pod for pod, ip in svc.POD_IPS.items() if ip == address)


def stat(ethtool_output: str, name: str) -> int:
    return int(re.search(rf"(?m)^\s+{name}: (\d+)$", ethtool_output)[1])


# --- checks -----------------------------------------------------------------------------

@page.check("pods", "The client pod got 10.244.1.5 from host-local, after the three pods")
def _(lab):
    return f"{CLIENT_IP}/24" in lab.link(CLIENT, "eth0")["addresses"]


@page.check("service", "Every KUBE-SEP chain DNATs to its pod at port 8080, and its name hashes that "
                       "endpoint: 10.244.1.2:8080 and so on")
def _(lab):
    save = lab.run("iptables-save -t nat").stdout
    return all(f"-A {sep_chain(p, WRONG_PORT)} -p tcp -m comment --comment \"{kpi.SERVICE}\" -m tcp "
               f"-j DNAT --to-destination {svc.POD_IPS[p]}:{WRONG_PORT}" in save for p in svc.PODS)


@page.check("symptom", "curl fails at once (in less than a second) with exit status 7, \"Couldn't connect to "
                       "server\": refused, not timed out (that would be status 28)")
def _(lab):
    res = lab.result(CURL + SERVICE_URL, step="symptom")
    took = re.search(r"after (\d+) ms: Couldn't connect to server", res.stderr)
    return res.rc == 7 and took is not None and int(took[1]) < 1000


@page.check("path", "The client sends to 10.96.0.10 through its default gateway 10.244.1.1 on eth0, whose "
                    "MAC address it has learned: cni0's")
def _(lab):
    route = lab.output("route get", step="path")
    neigh = lab.output("neigh show", step="path")
    cni0 = lab.link("host", "cni0")["mac"]
    return (route.startswith(f"{svc.CLUSTER_IP} via {svc.GATEWAY} dev eth0 src {CLIENT_IP} ")
            and re.fullmatch(rf"{re.escape(svc.GATEWAY)} dev eth0 lladdr {cni0} (REACHABLE|STALE|DELAY) \n",
                             neigh) is not None)


@page.check("path", "ethtool's peer_ifindex is the index of the client's veth on the node, and that veth "
                    "shows @if2, the index of eth0 in the client: two different numbers")
def _(lab):
    peer = stat(lab.output("ethtool -S eth0", step="path"), "peer_ifindex")
    veth = host_veth(lab, CLIENT)
    eth0 = lab.link(CLIENT, "eth0")["index"]
    shown = lab.output("ip link show master cni0", step="path")
    return (peer == veth["index"] != eth0 == 2
            and re.search(rf"(?m)^{peer}: {veth['name']}@if{eth0}: ", shown) is not None)


@page.check("path", "The client's eth0 counts no errors and no drops, in ip -s link and in ethtool -S")
def _(lab):
    shown = lab.output("-s link show eth0", step="path")
    rows = re.findall(r"(?m)^\s+(?:RX|TX):.*\n\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", shown)
    return (len(rows) == 2 and all(int(r[1]) > 0 and r[2] == r[3] == "0" for r in rows)
            and stat(lab.output("ethtool -S eth0", step="path"), "rx_queue_0_drops") == 0)


@page.check("capture", "In the client, the SYN goes to 10.96.0.10:80 and the RST comes back from "
                       "10.96.0.10:80: the client never sees an endpoint's address")
def _(lab):
    seen = lab.output("tcpdump -i eth0", step="capture")
    return (re.fullmatch(rf"IP {CLIENT_IP}\.\d+ > {svc.CLUSTER_IP}\.80: Flags \[S\], .*\n"
                         rf"IP {svc.CLUSTER_IP}\.80 > {CLIENT_IP}\.\d+: Flags \[R\.\], .*\n", seen) is not None)


@page.check("capture", "On the node: the SYN enters on the client's veth to 10.96.0.10:80, leaves cni0 and the "
                       "endpoint's veth to the endpoint at 8080; the endpoint's RST enters on its veth from "
                       "8080 and leaves the client's veth from 10.96.0.10:80; cni0 shows only the SYN")
def _(lab):
    got = hops(lab.output("tcpdump -i any", step="capture"))
    if len(got) != 5:
        return False
    endpoint = got[1]["dst"]
    client, target = host_veth(lab, CLIENT)["name"], host_veth(lab, pod_of(endpoint))["name"]
    expected = [
        (client, "P", CLIENT_IP, svc.CLUSTER_IP, "80", "S"),
        ("cni0", "Out", CLIENT_IP, endpoint, str(WRONG_PORT), "S"),
        (target, "Out", CLIENT_IP, endpoint, str(WRONG_PORT), "S"),
        (target, "P", endpoint, CLIENT_IP, None, "R."),
        (client, "Out", svc.CLUSTER_IP, CLIENT_IP, None, "R."),
    ]
    return all((h["dev"], h["dir"], h["src"], h["dst"], h["dport"] if port else None, h["flags"])
               == (dev, way, src, dst, port, flags)
               for h, (dev, way, src, dst, port, flags) in zip(got, expected)) and \
        got[3]["sport"] == str(WRONG_PORT) and got[4]["sport"] == "80"


@page.check("capture", "conntrack -E reported the connection NEW, its reply expected from the endpoint at "
                       "8080, then DESTROY at the RST; conntrack -L -p tcp then finds no TCP entry at all")
def _(lab):
    events = lab.output("conntrack -E", step="capture")
    m = re.fullmatch(rf" *\[NEW\] tcp +6 \d+ SYN_SENT src={CLIENT_IP} dst={svc.CLUSTER_IP} sport=(\d+) "
                     rf"dport=80 \[UNREPLIED\] src=(10\.244\.1\.[234]) dst={CLIENT_IP} sport={WRONG_PORT} "
                     rf"dport=(\d+)\n *\[DESTROY\] tcp +6 \d+ CLOSE src={CLIENT_IP} dst={svc.CLUSTER_IP} sport=(\d+) "
                     rf"dport=80 \[UNREPLIED\] src=(10\.244\.1\.[234]) dst={CLIENT_IP} sport={WRONG_PORT} "
                     rf"dport=(\d+)\n", events)
    listed = lab.result("conntrack -L -p tcp", step="capture")
    return (m is not None and m[1] == m[3] == m[4] == m[6] and m[2] == m[5]
            and listed.stdout == "" and "0 flow entries have been shown" in listed.stderr)


@page.check("rules", "nft lists iptables' rules with their counters: the ClusterIP's rule counted both "
                     "connections, and the three DNAT rules to port 8080 counted them between them; it "
                     "leaves out the rules' comments and warns that iptables-nft manages the table")
def _(lab):
    listed = lab.result("nft list ruleset", step="rules")
    ruleset = listed.stdout
    if "comment" in ruleset or "table ip nat is managed by iptables-nft, do not touch!" not in listed.stderr:
        return False
    cluster = re.search(rf"ip daddr {re.escape(svc.CLUSTER_IP)} +tcp dport 80 counter packets (\d+) bytes \d+ "
                        rf"jump {kpi.SVC_CHAIN}\n", ruleset)
    dnats = [int(n) for n in re.findall(rf"counter packets (\d+) bytes \d+ dnat to 10\.244\.1\.[234]:{WRONG_PORT}\n",
                                        ruleset)]
    return cluster is not None and int(cluster[1]) == 2 and len(dnats) == 3 and sum(dnats) == 2


@page.check("sockets", "pod-1's server listens on port 80 and nothing listens on 8080; straight to the pod, "
                       "8080 is refused and 80 answers")
def _(lab):
    listening = lab.output("ss -ltnp", step="sockets")
    refused = lab.result(f":{WRONG_PORT}/", step="sockets")
    return (re.search(r"(?m)^LISTEN .* \*:80 .*\"busybox\"", listening) is not None
            and f":{WRONG_PORT} " not in listening
            and refused.rc == 7 and "Couldn't connect to server" in refused.stderr
            and lab.output(f"{svc.POD_IPS['pod-1']}:{svc.PORT}/", step="sockets") == "pod-1\n")


@page.check("fix", "After the sync no rule and no chain of port 8080 is left, and the Service answers")
def _(lab):
    save = lab.run("iptables-save -t nat").stdout
    answer = lab.output(CURL + SERVICE_URL, step="fix")
    return (re.search(rf"--to-destination \S+:{WRONG_PORT}\b", save) is None
            and all(sep_chain(p, WRONG_PORT) not in save for p in svc.PODS) and answer.strip() in svc.PODS)


@page.check("fix", "The SYN is DNATed to the pod that answered, at port 80, and the SYN-ACK comes back to "
                   "the client from 10.96.0.10:80; conntrack's entry holds both, with the client's address "
                   "untouched (no SNAT from pod to pod)")
def _(lab):
    pod = lab.output(CURL + SERVICE_URL, step="fix").strip()
    entry = lab.output("conntrack -L", step="fix")
    return (path(lab, "fix", pod) == HANDSHAKE
            and re.search(rf"TIME_WAIT src={CLIENT_IP} dst={svc.CLUSTER_IP} sport=(\d+) dport=80 "
                          rf"src={svc.POD_IPS[pod]} dst={CLIENT_IP} sport=80 dport=\1 ", entry) is not None)


@page.check("known", "With every pod's MAC address known, br_netfilter hands the DNATed SYN from one bridge "
                     "port to the other: cni0 shows neither the SYN nor the SYN-ACK")
def _(lab):
    pod = lab.output(CURL + SERVICE_URL, step="known").strip()
    return path(lab, "known", pod) == [row for row in HANDSHAKE if row[0] != "cni0"]


@page.check("promisc", "While tcpdump holds cni0 in promiscuous mode, the bridge also passes the DNATed SYN "
                       "up to the node, which routes it out of cni0 again: the endpoint's veth sends the "
                       "SYN twice, and the connection still works")
def _(lab):
    pod = lab.output(CURL + SERVICE_URL, step="promisc").strip()
    syn, up = HANDSHAKE[:3], ("cni0", "In", CLIENT_IP, "pod", "S")
    return (path(lab, "promisc", pod) == [*syn, up, *syn[1:]]
            and len({h["sport"] for h in hops(lab.output("tcpdump -i any", step="promisc"))}) == 1)


@page.check("uplink", "The laptop's SYN enters on eth1 for 192.168.1.1:30080 and leaves cni0 and a pod's veth "
                      "from 10.244.1.1 to the pod at port 80: DNAT and SNAT on one packet")
def _(lab):
    got = hops(lab.output("tcpdump -i any", step="uplink"))
    pod = lab.output("laptop curl", step="uplink").strip()
    if len(got) != 3 or pod not in svc.PODS:
        return False
    ip = svc.POD_IPS[pod]
    entry = lab.output("conntrack -L", step="uplink")
    return ([(h["dev"], h["dir"], h["src"], h["dst"], h["dport"]) for h in got]
            == [("eth1", "In", svc.CLIENT_IP, svc.NODE_IP, str(svc.NODE_PORT)),
                ("cni0", "Out", svc.GATEWAY, ip, "80"),
                (host_veth(lab, pod)["name"], "Out", svc.GATEWAY, ip, "80")]
            and re.search(rf"src={svc.CLIENT_IP} dst={svc.NODE_IP} sport=\d+ dport={svc.NODE_PORT} "
                          rf"src={ip} dst={svc.GATEWAY} sport=80 dport=\d+ ", entry) is not None)
