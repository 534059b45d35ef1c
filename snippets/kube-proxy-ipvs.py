"""kube-proxy-ipvs: the shared Service through IPVS, as kube-proxy's ipvs mode programs it.

Run with `invoke lab.run --page kube-proxy-ipvs`; the page is docs/services/kube-proxy-ipvs.md.
The lab plays kube-proxy: it creates the objects kube-proxy's ipvs proxier
(pkg/proxy/ipvs/proxier.go) creates for a Service "default/web", port "http", TCP
80 -> 80, ClusterIP 10.96.0.10, NodePort 30080, with three endpoints on this node:
the kube-ipvs0 dummy, the virtual servers and their real servers, the ipsets and the
iptables rules, with kube-proxy's names, set types, comments and rule shapes. IPVS
and dummy links are missing from some kernels (this project's host among them): the
page needs them, so `--lab auto` runs it in the vm lab there.
"""
from deepdive.model import Cmd, Needs, Page, cmd
from deepdive.parse import answered
from snippets import _service as svc

CLUSTER_IP, NODE_IP, NODE_PORT = svc.CLUSTER_IP, svc.NODE_IP, svc.NODE_PORT
VIP = f"{CLUSTER_IP}:{svc.PORT}"
NODE_VIP = f"{NODE_IP}:{NODE_PORT}"
URL = f"http://{CLUSTER_IP}/"
NODE_URL = f"http://{NODE_VIP}/"
REAL = [f"{svc.POD_IPS[p]}:{svc.PORT}" for p in svc.PODS]
CLUSTER_CIDR = "10.244.0.0/16"  # kube-proxy's --cluster-cidr: its "local traffic" test
# kube-proxy's default --iptables-masquerade-bit 14, written as it formats it ("%#08x").
MARK = f"{1 << 14:#08x}"

page = Page(
    name="kube-proxy-ipvs",
    title="kube-proxy in IPVS mode",
    needs=Needs(kinds=("dummy", "bridge", "veth"),
                features=("ip_vs", "br_netfilter", "ipset", "nat", "conntrack"),
                tools=(*svc.TOOLS, "ipvsadm", "ipset", "iptables", "conntrack", "ping")),
    masks=[
        *svc.MASKS,
        # ipset picks a random seed for a hash set's hash function, which also decides
        # how its buckets fill (so the memory it reports).
        (r"\binitval 0x[0-9a-f]+", "initval <random>"),
        (r"\bSize in memory: \d+", "Size in memory: <bytes>"),
        # The node-side port of a masqueraded connection: picked at random from the
        # whole port range with --random-fully, the client's own otherwise. Either
        # way, whether or not conntrack's own mask took it for an ephemeral port.
        (r"(dst=10\.244\.1\.1 sport=80 dport=)(?:\d+|<port>)", r"\1<random>"),
    ],
)


def ipset_restore() -> str:
    """What kube-proxy's sync creates and fills, as `ipset restore` reads it: every set
    of ipsetInfo (hash sets with family inet hashsize 1024 maxelem 65536, bitmap:port
    sets with range 0-65535, each created with -exist), then this Service's entries in
    kube-proxy's Entry.String() format."""
    hash_sets = [("KUBE-LOOP-BACK", "hash:ip,port,ip"), ("KUBE-CLUSTER-IP", "hash:ip,port"),
                 ("KUBE-EXTERNAL-IP", "hash:ip,port"), ("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port"),
                 ("KUBE-LOAD-BALANCER", "hash:ip,port"), ("KUBE-LOAD-BALANCER-FW", "hash:ip,port"),
                 ("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port"),
                 ("KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip"),
                 ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net")]
    bitmaps = ["KUBE-NODE-PORT-TCP", "KUBE-NODE-PORT-LOCAL-TCP", "KUBE-NODE-PORT-UDP",
               "KUBE-NODE-PORT-LOCAL-UDP"]
    sctp = ["KUBE-NODE-PORT-SCTP-HASH", "KUBE-NODE-PORT-LOCAL-SCTP-HASH"]
    lines = [f"create {n} {t} family inet hashsize 1024 maxelem 65536 -exist" for n, t in hash_sets]
    lines += [f"create {n} bitmap:port range 0-65535 -exist" for n in bitmaps]
    lines += [f"create {n} hash:ip,port family inet hashsize 1024 maxelem 65536 -exist" for n in sctp]
    lines += ["create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535 -exist",
              "create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536 -exist"]
    # Every endpoint is on this node, so each may reach itself through the Service.
    lines += [f"add KUBE-LOOP-BACK {ip},tcp:{svc.PORT},{ip} -exist" for ip in svc.POD_IPS.values()]
    lines += [f"add KUBE-CLUSTER-IP {CLUSTER_IP},tcp:{svc.PORT} -exist",
              f"add KUBE-NODE-PORT-TCP {NODE_PORT} -exist",
              f"add KUBE-IPVS-IPS {CLUSTER_IP} -exist"]
    return "\n".join(lines) + "\n"


def comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


def iptables_restore() -> str:
    """The rules kube-proxy's sync hands to `iptables-restore --noflush` for this Service
    (writeIptablesRules, in its order), preceded by the jumps from the built-in chains
    that it inserts at their top beforehand (createAndLinkKubeChain, `iptables -I`)."""
    hairpin = "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
    nat = [
        "*nat",
        *(f":{c} - [0:0]" for c in ("KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-NODE-PORT",
                                    "KUBE-LOAD-BALANCER", "KUBE-MARK-MASQ")),
        f"-I OUTPUT {comment('kubernetes service portals')} -j KUBE-SERVICES",
        f"-I PREROUTING {comment('kubernetes service portals')} -j KUBE-SERVICES",
        f"-I POSTROUTING {comment('kubernetes postrouting rules')} -j KUBE-POSTROUTING",
        "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN",
        f"-A KUBE-POSTROUTING {comment(hairpin)} -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE",
        f"-A KUBE-NODE-PORT -p tcp {comment('Kubernetes nodeport TCP port for masquerade purpose')}"
        " -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ",
        f"-A KUBE-SERVICES {comment('Kubernetes service cluster ip + port for masquerade purpose')}"
        f" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
        "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MARK}/{MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MARK}",
        f"-A KUBE-POSTROUTING {comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MARK}",
        "COMMIT",
    ]
    ipvs_filter = [f"-A KUBE-IPVS-FILTER -m set --match-set {s} dst,dst -j RETURN"
                   for s in ("KUBE-LOAD-BALANCER", "KUBE-CLUSTER-IP", "KUBE-EXTERNAL-IP", "KUBE-EXTERNAL-IP-LOCAL")]
    filters = [
        "*filter",
        *(f":{c} - [0:0]" for c in ("KUBE-FORWARD", "KUBE-NODE-PORT", "KUBE-PROXY-FIREWALL",
                                    "KUBE-SOURCE-RANGES-FIREWALL", "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER")),
        f"-I FORWARD {comment('kubernetes forwarding rules')} -j KUBE-FORWARD",
        f"-I INPUT {comment('kubernetes health check rules')} -j KUBE-NODE-PORT",
        f"-I INPUT {comment('kube-proxy firewall rules')} -j KUBE-PROXY-FIREWALL",
        f"-I FORWARD {comment('kube-proxy firewall rules')} -j KUBE-PROXY-FIREWALL",
        f"-I INPUT {comment('kubernetes ipvs access filter')} -j KUBE-IPVS-FILTER",
        f"-I OUTPUT {comment('kubernetes ipvs access filter')} -j KUBE-IPVS-OUT-FILTER",
        "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
        f"-A KUBE-FORWARD {comment('kubernetes forwarding rules')} -m mark --mark {MARK}/{MARK} -j ACCEPT",
        f"-A KUBE-FORWARD {comment('kubernetes forwarding conntrack rule')}"
        " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A KUBE-NODE-PORT {comment('Kubernetes health check node port')}"
        " -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT",
        *ipvs_filter,
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT",
        "COMMIT",
    ]
    return "\n".join(nat + filters) + "\n"


def virtual_server(vip: str) -> list[str]:
    """ipvsadm's arguments for kube-proxy's AddVirtualServer (TCP, rr) and its
    AddRealServer for each endpoint (masquerading, weight 1): as `ipvsadm` takes them
    on its command line, and as `ipvsadm -R` reads them."""
    return [f"-A -t {vip} -s rr", *(f"-a -t {vip} -r {r} -m -w 1" for r in REAL)]


def hits(where: str, url: str, n: int) -> Cmd:
    # A request that is not answered waits a second: give a run of them time.
    return cmd(svc.hits(where, url, n), timeout=30)


def stats_row(prefix: str, conns: int) -> str:
    """A row of `ipvsadm -Ln --stats` up to its Conns column, as ipvsadm 1.31 prints it."""
    return f"{prefix:<33}{conns:>9}"


page.step("pods", "The Service's pods, and a client outside the node", *svc.pods(), *svc.client())
page.step(
    "dummy", "kube-ipvs0: the ClusterIP becomes an address of the node",
    "ip link add kube-ipvs0 type dummy",
    f"ip addr add {CLUSTER_IP}/32 dev kube-ipvs0",
    "ip addr show kube-ipvs0",
    "ip route show table local dev kube-ipvs0",
)
page.step(
    "virtual", "The virtual server and its three real servers",
    *(f"ipvsadm {args}" for args in virtual_server(VIP)),
    "ipvsadm -Ln",
    "ipvsadm -Ln --nosort",
    snapshot=True,
)
page.step("node", "Requests from the node", f"curl -s {URL}", hits("", URL, 3))
page.step(
    "ping", "A ping to the ClusterIP",
    f"ping -c 1 -W 1 {CLUSTER_IP}",
    f"ip netns exec pod-1 ping -c 1 -W 1 {CLUSTER_IP}",
)
page.step(
    "bridge-off", "Requests from a pod, with bridged traffic kept from netfilter",
    "sysctl net.bridge.bridge-nf-call-iptables",
    "sysctl -w net.bridge.bridge-nf-call-iptables=0",
    hits("pod-2", URL, 3),
)
page.step(
    "bridge-on", "Requests from a pod, with br_netfilter's hook on",
    "sysctl -w net.bridge.bridge-nf-call-iptables=1",
    hits("pod-2", URL, 3),
)
page.step(
    "rules", "kube-proxy's ipsets and iptables rules",
    cmd("ipset restore", heredoc=ipset_restore()),
    cmd("iptables-restore --noflush", heredoc=iptables_restore()),
    "ipset list KUBE-LOOP-BACK -sorted",
    "ipset list KUBE-CLUSTER-IP",
    "iptables-save",
)
page.step(
    "filter", "A ping to the ClusterIP, with kube-proxy's filter",
    cmd(f"ping -c 1 -W 1 {CLUSTER_IP}", rc=1),
    cmd(f"ip netns exec pod-1 ping -c 1 -W 1 {CLUSTER_IP}", rc=1),
)
LOOP_BACK = "iptables -t nat -L KUBE-POSTROUTING -n -v -x"
POD2 = svc.POD_IPS["pod-2"]
page.step(
    "hairpin", "Hairpin: a pod reaching itself through its Service",
    "sysctl net.ipv4.vs.conntrack",
    hits("pod-2", URL, 3),
    LOOP_BACK,
)
page.step(
    "conntrack", "Hairpin, with IPVS connections tracked",
    "sysctl -w net.ipv4.vs.conntrack=1",
    hits("pod-2", URL, 3),
    LOOP_BACK,
    # The connection from pod-2 that pod-2 answered: the one that looped back.
    f"conntrack -L -p tcp --orig-src {POD2} --reply-src {POD2}",
)
page.step(
    "nodeport", "The NodePort, from outside the node",
    # The same four commands as for the ClusterIP, read from standard input in one go.
    cmd("ipvsadm -R", heredoc="\n".join(virtual_server(NODE_VIP)) + "\n"),
    f"ip netns exec laptop curl -s {NODE_URL}",
    f"conntrack -L -p tcp --orig-port-dst {NODE_PORT}",
    hits("laptop", NODE_URL, 3),
)
page.step(
    "weights", "Weighted round robin, 3:1:1",
    f"ipvsadm -E -t {VIP} -s wrr",
    f"ipvsadm -e -t {VIP} -r {REAL[0]} -m -w 3",
    f"ipvsadm -Ln -t {VIP}",
    hits("", URL, 5),
)
# Connections each real server got over the page (IPVS counts unanswered ones too).
# ClusterIP: from the node 1 + 3 (rr from pod-3: pod-3 2, the others 1), from pod-2
# 3 + 3 twice (2 each, twice), then 5 by wrr 3:1:1 (pod-1 3, the others 1). NodePort:
# 1 + 3 from the laptop (pod-3 2, the others 1).
CONNS = {"pod-1": 8, "pod-2": 6, "pod-3": 7}
NODE_PORT_CONNS = {"pod-1": 1, "pod-2": 1, "pod-3": 2}
page.step(
    "stats", "Counting connections",
    # IPVS adds up its per-CPU counters on a timer: the listing is repeated until the
    # last requests show.
    cmd("ipvsadm -Ln --stats", until=stats_row(f"TCP  {VIP}", sum(CONNS.values()))),
)


@page.check("dummy", "kube-ipvs0 is a dummy link, left down as kube-proxy leaves it, holding 10.96.0.10/32; "
                     "the kernel made 10.96.0.10 a local address in the local routing table")
def _(lab):
    link = lab.link("host", "kube-ipvs0")
    return (link["kind"] == "dummy" and not link["up"] and link["addresses"] == [f"{CLUSTER_IP}/32"]
            and f"local {CLUSTER_IP} proto kernel scope host src {CLUSTER_IP}"
            in lab.output("ip route show table local dev kube-ipvs0"))


@page.check("virtual", "The virtual server 10.96.0.10:80 schedules round robin over three masqueraded real "
                       "servers of weight 1; ipvsadm sorts them by address, the kernel lists the newest first")
def _(lab):
    listing = lab.output("ipvsadm -Ln", step="virtual")
    rows = [line.split()[1:4] for line in listing.splitlines() if line.strip().startswith("-> 10.")]
    kernel = [line.split()[1] for line in lab.output("ipvsadm -Ln --nosort").splitlines()
              if line.strip().startswith("-> 10.")]
    return (f"TCP  {VIP} rr" in listing and rows == [[r, "Masq", "1"] for r in REAL]
            and kernel == REAL[::-1])


@page.check("node", "From the node, the first request went to pod-3, the real server added last, and the "
                    "next three to each pod once")
def _(lab):
    return (lab.output(f"curl -s {URL}").strip() == "pod-3"
            and svc.counts(lab.output(svc.hits("", URL, 3))) == {p: 1 for p in svc.PODS})


@page.check("ping", "From the node and from pod-1, the ping to 10.96.0.10 was answered by 10.96.0.10")
def _(lab):
    return all(answered(lab.output(f"{prefix}ping -c 1 -W 1 {CLUSTER_IP}", step="ping"), CLUSTER_IP)
               for prefix in ("", "ip netns exec pod-1 "))


@page.check("bridge-off", "br_netfilter's switch was on in the lab's fresh namespace; with it off, none of "
                          "pod-2's three requests was answered")
def _(lab):
    return (lab.output("sysctl net.bridge.bridge-nf-call-iptables").strip()
            == "net.bridge.bridge-nf-call-iptables = 1"
            and svc.counts(lab.output(svc.hits("pod-2", URL, 3), step="bridge-off")) == {"(no answer)": 3})


@page.check("bridge-on", "With it on, pod-1 and pod-3 answered; the request IPVS sent back to pod-2 itself "
                         "went unanswered")
def _(lab):
    counts = svc.counts(lab.output(svc.hits("pod-2", URL, 3), step="bridge-on"))
    return counts == {"(no answer)": 1, "pod-1": 1, "pod-3": 1}


@page.check("rules", "KUBE-LOOP-BACK is a hash:ip,port,ip set holding each endpoint as address,tcp:80,address, "
                     "KUBE-CLUSTER-IP a hash:ip,port set holding 10.96.0.10,tcp:80; one rule uses KUBE-LOOP-BACK")
def _(lab):
    loop, cluster = lab.output("ipset list KUBE-LOOP-BACK"), lab.output("ipset list KUBE-CLUSTER-IP")
    return ("Type: hash:ip,port,ip" in loop and "Type: hash:ip,port\n" in cluster
            and loop.split("Members:\n", 1)[1].split() == [f"{ip},tcp:80,{ip}" for ip in svc.POD_IPS.values()]
            and cluster.split("Members:\n", 1)[1].split() == [f"{CLUSTER_IP},tcp:80"]
            and "References: 1" in loop)


@page.check("rules", "PREROUTING and OUTPUT jump to KUBE-SERVICES, KUBE-POSTROUTING masquerades what matches "
                     "KUBE-LOOP-BACK as dst,dst,src, and INPUT sends new connections through KUBE-IPVS-FILTER, "
                     "which rejects those to kube-ipvs0's addresses that no Service port takes")
def _(lab):
    rules = lab.output("iptables-save")
    return all(rule in rules for rule in (
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE",
        '-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER',
        "-m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT"))


@page.check("filter", "With KUBE-IPVS-FILTER in place, the same pings from the node and from pod-1 got "
                      "Destination Port Unreachable from 10.96.0.10, and no reply")
def _(lab):
    return all(f"From {CLUSTER_IP} icmp_seq=1 Destination Port Unreachable" in out and " 0 received" in out
               for out in (lab.output(f"{prefix}ping -c 1 -W 1 {CLUSTER_IP}", step="filter")
                           for prefix in ("", "ip netns exec pod-1 ")))


def loop_back_packets(listing: str) -> int:
    """Packets counted by the KUBE-LOOP-BACK MASQUERADE rule in `iptables -L -n -v`."""
    row = next(line for line in listing.splitlines() if "match-set KUBE-LOOP-BACK" in line)
    return int(row.split()[0])


@page.check("hairpin", "With net.ipv4.vs.conntrack=0, the request IPVS sent back to pod-2 went unanswered "
                       "although the rules were in place, and the KUBE-LOOP-BACK rule saw no packet")
def _(lab):
    return (lab.output("sysctl net.ipv4.vs.conntrack").strip() == "net.ipv4.vs.conntrack = 0"
            and svc.counts(lab.output(svc.hits("pod-2", URL, 3), step="hairpin"))
            == {"(no answer)": 1, "pod-1": 1, "pod-3": 1}
            and loop_back_packets(lab.output(LOOP_BACK, step="hairpin")) == 0)


@page.check("conntrack", "With net.ipv4.vs.conntrack=1, all three were answered, pod-2 among them; the "
                         "KUBE-LOOP-BACK rule masqueraded the connection that looped back, which pod-2 "
                         "answered to the node's cni0 address 10.244.1.1")
def _(lab):
    ct = lab.output("conntrack -L", step="conntrack")
    return (svc.counts(lab.output(svc.hits("pod-2", URL, 3), step="conntrack")) == {p: 1 for p in svc.PODS}
            and loop_back_packets(lab.output(LOOP_BACK, step="conntrack")) == 1
            and len(ct.strip().splitlines()) == 1
            and f"src={POD2} dst={CLUSTER_IP} " in ct and f"src={POD2} dst={svc.GATEWAY} sport=80 " in ct)


@page.check("nodeport", "The laptop's first request to 192.168.1.1:30080 went to pod-3; conntrack shows it "
                        "masqueraded, pod-3 answering the node's cni0 address 10.244.1.1; the next three went "
                        "to each pod once")
def _(lab):
    ct = lab.output("conntrack -L")
    return (lab.output(f"ip netns exec laptop curl -s {NODE_URL}").strip() == "pod-3"
            and f"src={svc.CLIENT_IP} dst={NODE_IP} " in ct and f" dport={NODE_PORT} " in ct
            and f"src={svc.POD_IPS['pod-3']} dst={svc.GATEWAY} sport=80 " in ct
            and svc.counts(lab.output(svc.hits("laptop", NODE_URL, 3))) == {p: 1 for p in svc.PODS})


@page.check("weights", "With wrr and weights 3:1:1, five requests went to pod-1, pod-2 and pod-3 exactly 3, 1 "
                       "and 1 times")
def _(lab):
    return (f"TCP  {VIP} wrr" in lab.output(f"ipvsadm -Ln -t {VIP}")
            and svc.counts(lab.output(svc.hits("", URL, 5))) == {"pod-1": 3, "pod-2": 1, "pod-3": 1})


@page.check("stats", "ipvsadm counted every connection, answered or not: 8, 6 and 7 on the ClusterIP's real "
                     "servers, 1, 1 and 2 on the NodePort's")
def _(lab):
    out = lab.output("ipvsadm -Ln --stats")
    cluster, node_port = out.split(f"TCP  {VIP}")[1].split("TCP")[0], out.split(f"TCP  {NODE_VIP}")[1]
    return all(stats_row(f"  -> {svc.POD_IPS[p]}:80", n) in section
               for section, expected in ((cluster, CONNS), (node_port, NODE_PORT_CONNS))
               for p, n in expected.items())
