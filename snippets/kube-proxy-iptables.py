"""kube-proxy-iptables: the shared Service as kube-proxy's iptables mode programs it.

Run with `invoke lab.run --page kube-proxy-iptables`; the page is
docs/services/kube-proxy-iptables.md. kube-proxy cannot run here, so the lab plays its
part with the commands kube-proxy runs on a node: `iptables` for the rules that jump into
its chains, then one `iptables-restore --noflush` of the chains themselves, written line
by line as pkg/proxy/iptables/proxier.go writes them, with the chain names hashed as it
hashes them. kube-proxy is taken as configured by default apart from
--iptables-localhost-nodeports=false (no NodePorts on 127.0.0.1) and with
--cluster-cidr=10.244.0.0/16.
"""
from __future__ import annotations

import base64
import hashlib
import re

from deepdive.model import Needs, Page, cmd, write_file
from snippets import _service as svc

SERVICE = "default/web:http"  # ServicePortName.String(): namespace/name:port-name
PROTOCOL = "tcp"  # the Service port's protocol, lower-cased as kube-proxy hashes it
CLUSTER_CIDR = "10.244.0.0/16"  # --cluster-cidr: sources outside it are masqueraded
# 1 << --iptables-masquerade-bit (14), which kube-proxy formats with Go's "%#08x".
MARK = "0x00004000"
ROUTER = "192.168.1.254"  # the node network's router: only the route to it exists


def chain_hash(text: str) -> str:
    """kube-proxy's 16-character chain-name suffix for `text`: SHA-256, base32, cut
    (portProtoHash, servicePortEndpointChainName)."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def endpoint(pod: str) -> str:
    """The endpoint as kube-proxy writes it: "10.244.1.2:80"."""
    return f"{svc.POD_IPS[pod]}:{svc.PORT}"


SVC_CHAIN = "KUBE-SVC-" + chain_hash(SERVICE + PROTOCOL)
EXT_CHAIN = "KUBE-EXT-" + chain_hash(SERVICE + PROTOCOL)
SEP_CHAINS = {pod: "KUBE-SEP-" + chain_hash(SERVICE + PROTOCOL + endpoint(pod)) for pod in svc.PODS}
# kube-proxy sorts a Service's endpoints by their "IP:port" text.
ENDPOINTS = sorted(svc.PODS, key=endpoint)


def probability(n: int) -> str:
    """The probability kube-proxy writes for the first of n remaining endpoints
    (computeProbability): 1/n with ten decimals, "0.3333333333" for n = 3."""
    return f"{1 / n:0.10f}"


def restore_input() -> str:
    """kube-proxy's nat table for this one Service, in the order its syncProxyRules
    writes it: chain lines, then rules. (It writes a *filter table in the same input;
    this lab leaves the filter table alone.)"""
    cluster_ip = (f'-m comment --comment "{SERVICE} cluster IP" -m {PROTOCOL} -p {PROTOCOL}'
                  f" -d {svc.CLUSTER_IP} --dport {svc.PORT}")
    chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ",
              EXT_CHAIN, SVC_CHAIN, *(SEP_CHAINS[p] for p in ENDPOINTS)]
    rules = [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MARK}/{MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT"'
        " -j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MARK}",
        f"-A KUBE-SERVICES {cluster_ip} -j {SVC_CHAIN}",
        f"-A KUBE-NODEPORTS -m comment --comment {SERVICE} -m {PROTOCOL} -p {PROTOCOL}"
        f" --dport {svc.NODE_PORT} -j {EXT_CHAIN}",
        f"-A {SVC_CHAIN} {cluster_ip} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ",
        f'-A {EXT_CHAIN} -m comment --comment "masquerade traffic for {SERVICE} external destinations"'
        " -j KUBE-MARK-MASQ",
        f"-A {EXT_CHAIN} -j {SVC_CHAIN}",
    ]
    for i, pod in enumerate(ENDPOINTS):
        left = len(ENDPOINTS) - i
        pick = f" -m statistic --mode random --probability {probability(left)}" if left > 1 else ""
        rules.append(f'-A {SVC_CHAIN} -m comment --comment "{SERVICE} -> {endpoint(pod)}"{pick}'
                     f" -j {SEP_CHAINS[pod]}")
    for pod in ENDPOINTS:
        sep = f"-A {SEP_CHAINS[pod]} -m comment --comment {SERVICE}"
        rules += [f"{sep} -s {svc.POD_IPS[pod]} -j KUBE-MARK-MASQ",
                  f"{sep} -m {PROTOCOL} -p {PROTOCOL} -j DNAT --to-destination {endpoint(pod)}"]
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be'
                 ' the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8'
                 " -j KUBE-NODEPORTS")
    return "\n".join(["*nat", *(f":{c} - [0:0]" for c in chains), *rules, "COMMIT"]) + "\n"


# The rules kube-proxy keeps in the built-in chains, which it adds with iptables -I
# (after -C finds them missing) rather than in the restore, so as not to own those chains.
PORTALS = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
POSTROUTING = 'iptables -t nat -I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'

page = Page(
    name="kube-proxy-iptables",
    title="kube-proxy in iptables mode",
    needs=Needs(kinds=("bridge", "veth"), features=("nat", "conntrack", "br_netfilter"),
                tools=(*svc.TOOLS, "iptables", "iptables-restore", "iptables-save", "conntrack",
                       "tcpdump", "python3")),
    masks=[
        *svc.MASKS,
        # One request's answer and the pod in its conntrack entry are picked at random.
        # (The first also hides the pages the pods serve, which a check reads unmasked.)
        (r"(?m)^pod-\d$", "pod-<n>"),
        (r"\bsrc=10\.244\.1\.\d+(?= dst=10\.244\.1\.1 sport=80 )", "src=<pod>"),
        # MASQUERADE --random-fully picks the source port at random, anywhere in 1024-65535
        # (conntrack's reply tuple, tcpdump's source).
        (r"(?<=dst=10\.244\.1\.1 sport=80 dport=)\d+", "<port>"),
        (r"(?<=\b10\.244\.1\.1\.)\d+(?= > )", "<port>"),
        # ip route get names the caller's uid: 0 as root, 65534 in a rootless lab.
        (r"\buid \d+\b", "uid <uid>"),
    ],
)

# In pod-1: the first TCP SYN for its port 80 that comes from `src`.
SYN_CAPTURE = ("ip netns exec pod-1 tcpdump -i eth0 -n -t -l --immediate-mode -c 1"
               " 'tcp[tcpflags] == tcp-syn and src host {src} and dst host "
               + svc.POD_IPS["pod-1"] + " and dst port 80'")
SERVICE_URL = f"http://{svc.CLUSTER_IP}/"
NODE_PORT_URL = f"http://{svc.NODE_IP}:{svc.NODE_PORT}/"
NODE_REQUESTS = 300  # the distribution's sample: 100 expected per pod, sd 8.2
HAIRPIN_REQUESTS = 30  # a third of them time out after 1 s each
REQUESTS = 60  # elsewhere: enough that each pod answers some (all but 1e-10 of runs)


def counters(chain: str) -> str:
    return f"iptables -t nat -L {chain} -n -v -x --line-numbers"


page.step(
    "pods", "The pods and a client: what kubelet and the runtime would make",
    *svc.pods(),
    *svc.client(),
    # Without a route that covers the ClusterIP, the node cannot even start a connection.
    # Any node has a default route; the router it names never sees a packet for it.
    cmd(f"ip route get {svc.CLUSTER_IP}", rc=2),
    f"ip route add default via {ROUTER}",
    snapshot=True,
)
page.step(
    "names", "The chain names, hashed as kube-proxy hashes them",
    "python3 -c 'import base64, hashlib, sys; print(\"\\n\".join(base64.b32encode(hashlib.sha256("
    "s.encode()).digest()).decode()[:16] + \"  \" + s for s in sys.argv[1:]))' "
    + " ".join(SERVICE + PROTOCOL + e for e in ("", *(endpoint(p) for p in ENDPOINTS))),
)
page.step(
    "rules", "kube-proxy's part: the jumps, then one iptables-restore",
    "iptables -t nat -N KUBE-SERVICES",
    f"iptables -t nat -I OUTPUT {PORTALS}",
    f"iptables -t nat -I PREROUTING {PORTALS}",
    "iptables -t nat -N KUBE-POSTROUTING",
    cmd("iptables-restore --noflush --counters", heredoc=restore_input()),
    "iptables-save -t nat",
)
page.step(
    "hairpin", "pod-1 calls its own Service, and nothing is masqueraded yet",
    cmd(SYN_CAPTURE.format(src=svc.POD_IPS["pod-1"]), background=True, ready="listening on",
        until="1 packet captured"),
    cmd(svc.hits("pod-1", SERVICE_URL, HAIRPIN_REQUESTS), timeout=60),
    cmd(f"ip -n pod-1 route get {svc.POD_IPS['pod-1']} from {svc.POD_IPS['pod-1']} iif eth0", rc=2),
)
page.step(
    "masquerade", "The last jump: POSTROUTING to KUBE-POSTROUTING",
    POSTROUTING,
    "iptables -t nat -S POSTROUTING",
    # The failed connections' entries keep their NAT, unmasqueraded, for as long as an
    # unanswered SYN is remembered (120 s): a new connection from a source port one of
    # them used would follow it. Emptied, every connection from here on meets the rules.
    "conntrack -F",
    cmd(SYN_CAPTURE.format(src=svc.GATEWAY), background=True, ready="listening on",
        until="1 packet captured"),
    cmd(svc.hits("pod-1", SERVICE_URL, REQUESTS), timeout=30),
    f"ip -n pod-1 route get {svc.POD_IPS['pod-1']} from {svc.GATEWAY} iif eth0",
)
page.step(
    "share", "The rules that pick an endpoint, as the kernel holds them",
    f"iptables -t nat -S {SVC_CHAIN}",
)
page.step(
    "node", f"{NODE_REQUESTS} requests from the node",
    f"ip route get {svc.CLUSTER_IP}",
    "iptables -t nat -Z",
    cmd(svc.hits("", SERVICE_URL, NODE_REQUESTS), timeout=60),
    counters(SVC_CHAIN),
    counters("KUBE-POSTROUTING"),
    f"ip neigh show {ROUTER}",
)
page.step(
    "pod", "Requests from a pod",
    "iptables -t nat -Z",
    cmd(svc.hits("pod-2", SERVICE_URL, REQUESTS), timeout=30),
    counters(SVC_CHAIN),
    counters(SEP_CHAINS["pod-2"]),
    counters("KUBE-POSTROUTING"),
)
page.step(
    "nodeport", "From outside the node, through the NodePort",
    f"ip netns exec laptop curl -s {NODE_PORT_URL}",
    # The entry's state reaches TIME_WAIT once the last ACK of the close has passed.
    cmd(f"conntrack -L -p tcp --orig-port-dst {svc.NODE_PORT}", until="TIME_WAIT"),
    cmd(svc.hits("laptop", NODE_PORT_URL, REQUESTS), timeout=30),
)
page.step(
    "bound", "A port already bound",
    cmd(f"ip netns exec pod-2 busybox httpd -f -p {svc.PORT} -h /tmp/www/pod-2", rc=1),
    "mkdir -p /tmp/www/node",
    write_file("/tmp/www/node/index.html", "node-process\n"),
    f"setsid -f busybox httpd -f -p {svc.NODE_PORT} -h /tmp/www/node",
    cmd(f"ss -Hltn sport = :{svc.NODE_PORT}", until="LISTEN"),
    cmd(svc.hits("laptop", NODE_PORT_URL, REQUESTS), timeout=30),
    cmd(svc.hits("", NODE_PORT_URL, REQUESTS), timeout=30),
    f"curl -s http://127.0.0.1:{svc.NODE_PORT}/",
)


def answers(lab, where: str, url: str, n: int, step: str) -> dict[str, int]:
    """Counts by pod of the `hits` command of `step` (see _service.counts)."""
    return svc.counts(lab.output(svc.hits(where, url, n), step=step))


def packets(listing: str) -> list[int]:
    """Packet counters of the rules of an `iptables -L -v -x --line-numbers` listing, in order."""
    return [int(m[2]) for m in re.finditer(r"(?m)^(\d+)\s+(\d+)\s+\d+\s", listing)]


def shares(probabilities: list[float]) -> list[float]:
    """Each endpoint's share of the connections when the rules match with these
    probabilities in turn and a last rule takes the rest: [p1, (1 - p1) p2, ...]."""
    out, left = [], 1.0
    for p in probabilities:
        out.append(left * p)
        left *= 1 - p
    return [*out, left]


def kernel_probabilities(lab) -> list[float]:
    """The --probability of each rule of the Service's chain, as iptables reads it back."""
    rules = lab.output(f"iptables -t nat -S {SVC_CHAIN}", step="share")
    return [float(p) for p in re.findall(r"--probability (\S+)", rules)]


@page.check("pods", "The bridge plugin put every pod's port of cni0 in hairpin mode, and each pod's "
                    "server answers with its own name")
def _(lab):
    ports = lab.run("bridge -d link show master cni0").stdout
    return (ports.count("hairpin on") == len(svc.PODS)
            and all(lab.run(f"curl -s --max-time 1 http://{ip}/").stdout == f"{pod}\n"
                    for pod, ip in svc.POD_IPS.items()))


@page.check("names", "The one-liner prints, for each input, the name suffix this lab gives its chains")
def _(lab):
    lines = lab.output("python3 -c", step="names").splitlines()
    pairs = [line.split("  ") for line in lines]
    return (len(pairs) == 1 + len(ENDPOINTS)
            and all(h == chain_hash(text) for h, text in pairs)
            and pairs[0][0] == SVC_CHAIN.removeprefix("KUBE-SVC-")
            and [p[0] for p in pairs[1:]] == [SEP_CHAINS[p].removeprefix("KUBE-SEP-") for p in ENDPOINTS])


@page.check("rules", "The nat table holds exactly kube-proxy's chains for this Service: KUBE-SERVICES, "
                     "KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ, one KUBE-SVC and one KUBE-EXT "
                     "named after default/web:http, one KUBE-SEP per endpoint")
def _(lab):
    save = lab.output("iptables-save -t nat", step="rules")
    chains = set(re.findall(r"(?m)^:(KUBE-\S+) ", save))
    return chains == {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ",
                      SVC_CHAIN, EXT_CHAIN, *SEP_CHAINS.values()}


@page.check("rules", "PREROUTING and OUTPUT jump to KUBE-SERVICES, and the restore left these jumps in "
                     "place; POSTROUTING jumps nowhere yet; the filter table is empty and accepts all")
def _(lab):
    save = lab.output("iptables-save -t nat", step="rules")
    portals = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    return (f"-A PREROUTING {portals}" in save and f"-A OUTPUT {portals}" in save
            and "-A POSTROUTING" not in save
            and lab.run("iptables -S").stdout == "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n")


@page.check("rules", "The kernel reads kube-proxy's 0.3333333333 back as 0.33333333349 and 0.5000000000 "
                     "as 0.50000000000, and the last endpoint's rule has no statistic match")
def _(lab):
    save = lab.output("iptables-save -t nat", step="rules")
    picks = [line for line in save.splitlines() if line.startswith(f"-A {SVC_CHAIN} -m comment --comment \"{SERVICE} ->")]
    return (len(picks) == 3 and "--probability 0.33333333349 " in picks[0]
            and "--probability 0.50000000000 " in picks[1] and "statistic" not in picks[2]
            and [line.rsplit(" ", 1)[1] for line in picks] == [SEP_CHAINS[p] for p in ENDPOINTS])


@page.check("rules", "KUBE-MARK-MASQ sets bit 0x4000; KUBE-POSTROUTING returns packets without it, clears "
                     "it (an XOR: mask 0) and masquerades the rest with --random-fully")
def _(lab):
    save = lab.output("iptables-save -t nat", step="rules")
    return all(rule in save for rule in (
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n"
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n"
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT"'
        " -j MASQUERADE --random-fully"))


@page.check("rules", "Each KUBE-SEP chain marks packets that come from its own endpoint, then DNATs to it")
def _(lab):
    save = lab.output("iptables-save -t nat", step="rules")
    return all(
        f"-A {SEP_CHAINS[p]} -s {svc.POD_IPS[p]}/32 -m comment --comment \"{SERVICE}\" -j KUBE-MARK-MASQ\n"
        f"-A {SEP_CHAINS[p]} -p tcp -m comment --comment \"{SERVICE}\" -m tcp -j DNAT"
        f" --to-destination {endpoint(p)}" in save for p in ENDPOINTS)


@page.check("hairpin", "Without masquerading, the requests the rules sent back to pod-1 got no answer; "
                       "those sent to pod-2 and pod-3 were answered")
def _(lab):
    got = answers(lab, "pod-1", SERVICE_URL, HAIRPIN_REQUESTS, "hairpin")
    return set(got) == {"(no answer)", "pod-2", "pod-3"} and sum(got.values()) == HAIRPIN_REQUESTS


@page.check("hairpin", "pod-1 received a SYN from its own address, 10.244.1.2, to 10.244.1.2:80, and its "
                       "kernel, with accept_local off, refuses a packet from one of its own addresses "
                       "arriving on eth0")
def _(lab):
    syn = lab.output("tcpdump", step="hairpin")
    refused = lab.result("route get", step="hairpin")
    accept_local = [lab.run(f"ip netns exec pod-1 sysctl -n net.ipv4.conf.{dev}.accept_local").stdout
                    for dev in ("all", "eth0")]
    return (re.fullmatch(r"IP 10\.244\.1\.2\.\d+ > 10\.244\.1\.2\.80: Flags \[S\], .*\n", syn) is not None
            and refused.rc == 2 and refused.stderr == "RTNETLINK answers: Invalid argument\n"
            and accept_local == ["0\n", "0\n"])


@page.check("masquerade", "With the jump, every request from pod-1 was answered, by pod-1 too; pod-1 saw "
                          "its own connections come from cni0's 10.244.1.1, a source its kernel accepts")
def _(lab):
    got = answers(lab, "pod-1", SERVICE_URL, REQUESTS, "masquerade")
    syn = lab.output("tcpdump", step="masquerade")
    return (set(got) == set(svc.PODS) and sum(got.values()) == REQUESTS
            and re.fullmatch(r"IP 10\.244\.1\.1\.\d+ > 10\.244\.1\.2\.80: Flags \[S\], .*\n", syn) is not None
            and lab.output("route get", step="masquerade").startswith("local 10.244.1.2 from 10.244.1.1 "))


@page.check("masquerade", "conntrack -F emptied the table, whose unanswered SYNs it keeps for 120 s")
def _(lab):
    return (lab.result("conntrack -F", step="masquerade").stderr.endswith(
        "connection tracking table has been emptied.\n")
        and lab.run("sysctl -n net.netfilter.nf_conntrack_tcp_timeout_syn_sent").stdout == "120\n")


@page.check("share", "With the kernel's probabilities, each endpoint's share is 1/3 to within 2e-10: "
                     "p1, (1 - p1) p2 and (1 - p1)(1 - p2); with 1/3 on both rules it would be 1/3, 2/9, 4/9")
def _(lab):
    equal = shares([1 / 3, 1 / 3])
    return (all(abs(s - 1 / 3) < 2e-10 for s in shares(kernel_probabilities(lab)))
            and all(abs(a - b) < 1e-12 for a, b in zip(equal, (1 / 3, 2 / 9, 4 / 9))))


@page.check("share", "0.33333333349 is kube-proxy's 0.3333333333 rounded to a whole number of 2^-31: the "
                     "kernel compares it with 31 random bits")
def _(lab):
    p1, p2 = kernel_probabilities(lab)
    stored = [round(float(probability(n)) * 2**31) / 2**31 for n in (3, 2)]
    return [f"{p:.11f}" for p in stored] == [f"{p1:.11f}", f"{p2:.11f}"] == ["0.33333333349", "0.50000000000"]


@page.check("pods", "No interface of the node or of a pod holds the ClusterIP 10.96.0.10")
def _(lab):
    return all(not any(a.startswith(f"{svc.CLUSTER_IP}/") for a in link["addresses"])
               for node in lab.snapshot["nodes"] for link in node["links"])


@page.check("pods", "Before its default route, the node has no route to 10.96.0.10 at all")
def _(lab):
    res = lab.result(f"ip route get {svc.CLUSTER_IP}", step="pods")
    return res.rc == 2 and res.stderr == "RTNETLINK answers: Network is unreachable\n"


@page.check("node", "The node reaches 10.96.0.10 through its default route, from 192.168.1.1; yet it never "
                    "looked for the router's MAC address, since no packet took that route")
def _(lab):
    return (lab.output(f"ip route get {svc.CLUSTER_IP}", step="node").startswith(
        f"{svc.CLUSTER_IP} via {ROUTER} dev eth1 src {svc.NODE_IP} ")
        and lab.output(f"ip neigh show {ROUTER}", step="node") == "")


@page.check("node", f"All {NODE_REQUESTS} requests from the node were answered, each pod's count within "
                    f"4.5 standard deviations of {NODE_REQUESTS // 3} (63 to 137)")
def _(lab):
    return svc.even_within(answers(lab, "", SERVICE_URL, NODE_REQUESTS, "node"), NODE_REQUESTS)


@page.check("node", "KUBE-SVC's counters match: rules 2 to 4 counted the connections each pod answered, and "
                    "rule 1 marked all of them, since 192.168.1.1 is outside 10.244.0.0/16; "
                    "KUBE-POSTROUTING masqueraded all of them")
def _(lab):
    got = answers(lab, "", SERVICE_URL, NODE_REQUESTS, "node")
    counted = packets(lab.output(counters(SVC_CHAIN), step="node"))
    masqueraded = packets(lab.output(counters("KUBE-POSTROUTING"), step="node"))
    return (counted == [NODE_REQUESTS, *(got[p] for p in ENDPOINTS)]
            and masqueraded == [0, NODE_REQUESTS, NODE_REQUESTS])


@page.check("pod", "From pod-2 every request was answered; rule 1 marked none (pod-2 is inside the cluster "
                   "CIDR); pod-2's KUBE-SEP marked exactly the connections that came back to pod-2, and "
                   "those alone were masqueraded")
def _(lab):
    got = answers(lab, "pod-2", SERVICE_URL, REQUESTS, "pod")
    svc_counted = packets(lab.output(counters(SVC_CHAIN), step="pod"))
    sep_counted = packets(lab.output(counters(SEP_CHAINS["pod-2"]), step="pod"))
    masqueraded = packets(lab.output(counters("KUBE-POSTROUTING"), step="pod"))
    return (set(got) == set(svc.PODS) and sum(got.values()) == REQUESTS
            and svc_counted == [0, *(got[p] for p in ENDPOINTS)]
            and sep_counted == [got["pod-2"], got["pod-2"]]
            and masqueraded == [REQUESTS - got["pod-2"], got["pod-2"], got["pod-2"]])


@page.check("nodeport", "One conntrack entry holds both rewrites: the laptop's 192.168.1.2 to 192.168.1.1:30080 "
                        "out, and the reply from the pod that answered, port 80, to cni0's 10.244.1.1 at "
                        "another port than the laptop's")
def _(lab):
    pod = lab.output(f"curl -s {NODE_PORT_URL}", step="nodeport").strip()
    ct = lab.output("conntrack -L", step="nodeport")
    m = re.search(rf"src={svc.CLIENT_IP} dst={svc.NODE_IP} sport=(\d+) dport={svc.NODE_PORT} "
                  rf"src={svc.POD_IPS.get(pod)} dst={svc.GATEWAY} sport=80 dport=(\d+) ", ct)
    return pod in svc.PODS and ct.count("\n") == 1 and m is not None and m[1] != m[2]


@page.check("nodeport", "Every request from the laptop to the NodePort was answered by a pod")
def _(lab):
    got = answers(lab, "laptop", NODE_PORT_URL, REQUESTS, "nodeport")
    return set(got) == set(svc.PODS) and sum(got.values()) == REQUESTS


@page.check("bound", "A second server on port 80 in pod-2 fails: the pod's server holds the port")
def _(lab):
    res = lab.result(f"busybox httpd -f -p {svc.PORT}", step="bound")
    return res.rc == 1 and res.stderr == "httpd: bind: Address already in use\n"


@page.check("bound", "A node process binds 30080 without complaint, yet every request to 192.168.1.1:30080, "
                     "from the laptop and from the node, reached a pod; only 127.0.0.1:30080 reaches the process")
def _(lab):
    outside = lab.output(svc.hits("laptop", NODE_PORT_URL, REQUESTS), step="bound")
    inside = lab.output(svc.hits("", NODE_PORT_URL, REQUESTS), step="bound")
    return (f"*:{svc.NODE_PORT} " in lab.output("ss -Hltn", step="bound")
            and all(sum(svc.counts(out).values()) == REQUESTS and set(svc.counts(out)) <= set(svc.PODS)
                    and "node-process" not in out for out in (outside, inside))
            and lab.output(f"curl -s http://127.0.0.1:{svc.NODE_PORT}/", step="bound") == "node-process\n")
