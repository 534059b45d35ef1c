"""kube-proxy-compare: what one new connection to a Service costs in iptables and in
nftables mode, with 10, 100 and 1000 Services on the node.

Run with `invoke lab.run --page kube-proxy-compare`; the page is
docs/services/kube-proxy-compare.md. The lab plays kube-proxy's part: the rules it
programs for N ClusterIP Services come from snippets/programs/kube_services.py, which
writes them as kube-proxy 1.36 writes them, and are loaded with iptables-restore and
nft -f. The kernel's own trace of one SYN to the last Service shows which rule matched in
each chain it went through; a rule's place in its chain says how many were compared with
the packet before it, and the checks add those up.
"""
from __future__ import annotations

import re
import shlex
from typing import NamedTuple

from deepdive.model import Needs, Page, cmd
from snippets import _service as svc
from snippets.programs import kube_services as ks

COUNTS = (10, 100, 1000)
ROUTER = "192.168.1.254"  # the node network's router: only the route to it exists
GENERATOR = "python3 snippets/programs/kube_services.py"
RULES = "/tmp/kube-proxy"
# Trace the first packet of every connection to a Service address.
TRACE_IPTABLES = "iptables -t raw -A OUTPUT -p tcp -d 10.96.0.0/12 --syn -j TRACE"
TRACE_NFT = """\
table ip trace {
	chain output {
		type filter hook output priority raw; policy accept;
		ip daddr 10.96.0.0/12 tcp flags syn meta nftrace set 1
	}
}
"""
# A monitor prints nothing when it starts. The kernel lists each netlink socket with the
# multicast groups it joined; nftables' trace group is number 9, the bit 0x100.
SUBSCRIBED = cmd("grep -c ' 00000100 ' /proc/net/netlink", until="1")
# The monitors, the text of the traced SYN's last line, and the monitor's process name.
MONITORS = {"iptables": ("xtables-monitor --trace", "MASQUERADE", "xtables-monitor"),
            "nftables": ("nft -a monitor trace", "masquerade fully-random", "nft")}
MONITOR_SECONDS = 3
LOAD_LIMIT = 10.0  # seconds; a load takes well under one here

page = Page(
    name="kube-proxy-compare",
    title="Comparing the modes",
    needs=Needs(kinds=("bridge", "veth"), features=("nf_tables", "nat", "conntrack", "nf_large_batch"),
                tools=(*svc.TOOLS, "python3", "iptables", "iptables-restore", "xtables-monitor",
                       "nft", "conntrack", "grep", "wc", "time")),
    masks=[
        *svc.MASKS,
        # A trace's id, and the IP id and source port of the traced SYN.
        (r"\btrace id [0-9a-f]{8}\b", "trace id <id>"),
        (r"\b(PACKET|TRACE): (\d+) [0-9a-f]{8}\b", r"\1: \2 <id>"),
        (r"\bip id \d+", "ip id <id>"),
        (r"\bID=\d+", "ID=<id>"),
        (r"\btcp sport \d+", "tcp sport <port>"),
        (r"\bSPORT=\d+", "SPORT=<port>"),
        # MASQUERADE --random-fully picks the node's source port anywhere in 1024-65535.
        (r"(?<=dst=10\.244\.1\.1 sport=80 dport=)\d+", "<port>"),
        # GNU time's elapsed seconds.
        (r"(?m)^\d+\.\d+ s$", "<elapsed> s"),
    ],
)


def rules_file(mode: str, n: int) -> str:
    return f"{RULES}/{mode}-{n}.{'rules' if mode == 'iptables' else 'nft'}"


def url(n: int) -> str:
    return f"http://{ks.Service(n).cluster_ip}/"


def request(n: int) -> str:
    return f"curl --silent --max-time 2 {url(n)}"


def count_services(mode: str, n: int) -> str:
    """grep counting the lines that send one Service's packets on: a rule of
    KUBE-SERVICES, an element of the map service-ips."""
    line = "^-A KUBE-SERVICES" if mode == "iptables" else "element ip kube-proxy service-ips"
    return f"grep -c '{line}' {rules_file(mode, n)}"


def recorded(command: str) -> str:
    """A command as the lab records it, to look it up: its words, quoting gone."""
    return " ".join(shlex.split(command))


def timed(command: str) -> str:
    return f"time -f '%e s' {command}"


def conntrack_entry(n: int):
    # The entry reaches TIME_WAIT once the last ACK of the close has passed.
    return cmd(f"conntrack -L -p tcp --orig-dst {ks.Service(n).cluster_ip}", until="TIME_WAIT")


page.step(
    "node", "The node, its three pods, and a route for Service addresses",
    *svc.pods(),
    *svc.client(),
    # A ClusterIP is in no routing table: without a route that covers it, connect()
    # fails before netfilter sees a packet. Any node has a default route.
    f"ip route add default via {ROUTER} dev eth1",
    snapshot=True,
)
page.step(
    "generate", "Rules for 10, 100 and 1000 Services, as kube-proxy writes them",
    f"mkdir -p {RULES}",
    *(f"{GENERATOR} {mode} {n} {rules_file(mode, n)}" for mode in ("iptables", "nftables") for n in COUNTS),
    "wc -l " + " ".join(rules_file(mode, n) for mode in ("iptables", "nftables") for n in COUNTS),
    *(count_services(mode, n) for mode in ("iptables", "nftables") for n in COUNTS),
    f"grep -F svc-1000: {rules_file('iptables', 1000)}",
    f"grep -F svc-1000/ {rules_file('nftables', 1000)}",
)


def trace_step(mode: str, n: int, *extra) -> None:
    """Load the rules for n Services, trace one connection to the last of them."""
    load = (f"iptables-restore {rules_file(mode, n)}" if mode == "iptables"
            else f"nft -f {rules_file(mode, n)}")
    monitor, last_line, name = MONITORS[mode]
    replace = ["nft delete table ip kube-proxy"] if mode == "nftables" and n != COUNTS[0] else []
    page.step(
        f"{mode[:3]}-{n}", f"{mode}, {n} Services: one connection to the last",
        *replace,
        timed(load),
        *extra,
        # A monitor runs until it is stopped; timeout stops it (status 124).
        cmd(f"timeout {MONITOR_SECONDS} {monitor}", background=True, rc=124, until=last_line),
        SUBSCRIBED,
        request(n),
        cmd(f"pgrep -c -x {name}", rc=1, until="0", timeout=MONITOR_SECONDS + 10),
    )


trace_step("iptables", 10, TRACE_IPTABLES)
page.step(
    "ipt-10-seen", "iptables, 10 Services: the rule that matched, and the connection",
    "iptables -t nat -S KUBE-SERVICES 10",
    conntrack_entry(10),
)
trace_step("iptables", 100)
trace_step("iptables", 1000)
page.step(
    "ipt-1000-seen", "iptables, 1000 Services: where the matching rule is",
    "iptables -t nat -S KUBE-SERVICES 1000",
    "iptables -t nat -S KUBE-SERVICES 1001",
)
page.step(
    "switch", "From iptables to nftables",
    "nft list tables",
    "nft delete table ip nat",
    "nft delete table ip filter",
    "nft delete table ip raw",
    "iptables-save",
    "conntrack -F",
    cmd("nft -f -", heredoc=TRACE_NFT),
)
trace_step("nftables", 10)
page.step(
    "nft-10-seen", "nftables, 10 Services: the dispatch chain, and the connection",
    "nft -a list chain ip kube-proxy services",
    conntrack_entry(10),
)
trace_step("nftables", 100)
trace_step("nftables", 1000)
page.step(
    "nft-1000-seen", "nftables, 1000 Services: the dispatch chain and the map",
    "nft -a list chain ip kube-proxy services",
    f"nft get element ip kube-proxy service-ips '{{ {ks.Service(1000).cluster_ip} . tcp . 80 }}'",
)


# --- the trace, rule by rule -------------------------------------------------------

class Event(NamedTuple):
    """One line of a trace: a rule that matched (handle, its verdict and the chain that
    verdict names), or the policy a base chain ended with."""

    table: str
    chain: str
    handle: int | None
    verdict: str
    target: str = ""


# xtables-monitor --trace:  TRACE: 2 4bd01333 nat:KUBE-SERVICES:rule:0x1b5c:JUMP:KUBE-SVC-...
XT_EVENT = re.compile(r"^ TRACE: \d+ \S+ (\w+):([^:\s]+):(?:rule:0x([0-9a-f]+):|policy:)(\w+)(?::(\S+))?")
# nft -a monitor trace:  trace id 713d2fc0 ip kube-proxy services rule ... # handle 44 (verdict goto X)
NFT_EVENT = re.compile(r"^trace id \S+ ip (\S+) (\S+) (?:rule .* # handle (\d+) \(verdict (\w+)(?: (\S+))?\)"
                       r"|policy (\w+))")
TERMINAL = {"accept", "drop", "reject", "queue"}
KUBE_TABLES = {"nat", "filter", "kube-proxy"}  # not the trace rule's own raw and trace tables


def traversals(trace: str) -> list[list[Event]]:
    """The trace of one packet as one event list per base chain it went through, each
    begun by a packet line; chains of tables other than kube-proxy's are left out."""
    out: list[list[Event]] = []
    for line in trace.splitlines():
        if line.startswith("PACKET:") or " packet: " in line:
            out.append([])
            continue
        m = XT_EVENT.match(line)
        if m:
            ev = Event(m[1], m[2], int(m[3], 16) if m[3] else None, m[4].lower(), m[5] or "")
        elif (m := NFT_EVENT.match(line)):
            policy = m[6]
            ev = Event(m[1], m[2], None if policy else int(m[3]), (policy or m[4]).lower(), m[5] or "")
        else:
            continue
        if ev.table in KUBE_TABLES and out:
            out[-1].append(ev)
    return [t for t in out if t]


def evaluated(trace: list[Event], handles: dict[tuple[str, str], list[int]]) -> list[tuple[str, int]]:
    """(chain, rules compared with the packet) for each visit of a chain, in order.

    netfilter tries a chain's rules in order until one gives a verdict; the trace names
    that rule, and its place in the chain is how many rules were tried. A chain jumped to
    that ends without a verdict (the trace shows no return) had all its rules tried.
    `handles` lists each chain's rule handles in order: {(table, chain): [...]}.
    Raises ValueError for a trace that ends inside a chain."""
    done: list[tuple[str, int]] = []
    stack: list[list] = []  # [table, chain, rules tried so far] per chain being walked

    def leave() -> None:
        table, chain, tried = stack.pop()
        done.append((chain, len(handles[table, chain])))

    for ev in trace:
        while stack and stack[-1][1] != ev.chain:  # returned from a chain with no verdict
            leave()
        if not stack:
            stack.append([ev.table, ev.chain, 0])
        frame = stack[-1]
        if ev.handle is None:  # the base chain's policy: every rule was tried
            leave()
            continue
        frame[2] = handles[ev.table, ev.chain].index(ev.handle) + 1
        if ev.verdict == "jump":
            stack.append([ev.table, ev.target, 0])
        elif ev.verdict == "goto":
            done.append((ev.chain, stack.pop()[2]))
            stack.append([ev.table, ev.target, 0])
        elif ev.verdict in TERMINAL:
            while stack:
                table, chain, tried = stack.pop()
                done.append((chain, tried))
    if stack:
        raise ValueError(f"the trace ends inside chain {stack[-1][1]}")
    return done


# A rule's line in `nft -a list chain`: indented twice, its handle last.
RULE_LINE = re.compile(r"(?m)^\t\t.* # handle (\d+)$")


def chain_handles(lab, table: str, chain: str) -> list[int]:
    """The handles of a chain's rules, in order, as nft lists them."""
    return [int(h) for h in RULE_LINE.findall(lab.run(f"nft -a list chain ip {table} {chain}").stdout)]


def walk(lab, step: str) -> list[tuple[str, int]]:
    """Each chain the traced SYN of `step` went through, with the rules it was compared with."""
    monitor = MONITORS["iptables" if step.startswith("ipt") else "nftables"][0]
    trace = traversals(lab.output(monitor, step=step))
    chains = {(e.table, c) for t in trace for e in t for c in (e.chain, e.target) if c}
    handles = {(table, chain): chain_handles(lab, table, chain) for table, chain in chains}
    return [visit for t in trace for visit in evaluated(t, handles)]


def total(visits: list[tuple[str, int]]) -> int:
    return sum(n for _, n in visits)


def answered_by_pod1(lab, step: str, n: int) -> bool:
    return lab.output(request(n), step=step).strip() == "pod-1"


def load_seconds(lab, step: str) -> float:
    return float(lab.result("time -f", step=step).stderr.split()[0])


# iptables: nat OUTPUT 1, KUBE-SERVICES n, KUBE-SVC 2, KUBE-MARK-MASQ 1, KUBE-SEP 2; filter
# OUTPUT 3, KUBE-FIREWALL 1; nat POSTROUTING 1, KUBE-POSTROUTING 3.
IPTABLES_FIXED = 14
# nftables 1.36: filter-output-pre-dnat 1, firewall-check 1; nat-output 1, services 2, the
# Service's chain 1; filter-output 2, service-endpoints-check 1, cluster-ips-check 2;
# nat-postrouting 1, masquerading 1.
NFTABLES_FIXED = 13


# --- checks --------------------------------------------------------------------------

@page.check("node", "Each pod listens on port 80, and the node's only route off the node is the default "
                    f"route via {ROUTER} on eth1")
def _(lab):
    routes = lab.run("ip route").stdout
    return (all("LISTEN" in lab.output(f"ip netns exec {p} ss -Hltn", step="node") for p in svc.PODS)
            and f"default via {ROUTER} dev eth1" in routes and "10.96." not in routes)


@page.check("generate", "KUBE-SERVICES holds one rule per Service plus the NodePorts rule (11, 101 and "
                        "1001 rules), and service-ips one element per Service (10, 100 and 1000)")
def _(lab):
    def counted(mode: str, n: int) -> str:
        return lab.output(recorded(count_services(mode, n)), step="generate").strip()
    return (all(counted("iptables", n) == str(n + 1) for n in COUNTS)
            and all(counted("nftables", n) == str(n) for n in COUNTS))


@page.check("generate", "svc-1000's chains carry the names kube-proxy computes for default/svc-1000 port "
                        "http TCP: KUBE-SVC-ZIEMVD2O65I5AA4M and KUBE-SEP-DABV2BEFJZAAWYEZ in iptables "
                        "mode, service-FYUG7NZG-default/svc-1000/tcp/http in nftables mode")
def _(lab):
    s = ks.Service(1000)
    ipt = lab.output(f"grep -F svc-1000: {rules_file('iptables', 1000)}", step="generate")
    nft = lab.output(f"grep -F svc-1000/ {rules_file('nftables', 1000)}", step="generate")
    return ((s.svc_chain, s.sep_chain, s.nft_service_chain)
            == ("KUBE-SVC-ZIEMVD2O65I5AA4M", "KUBE-SEP-DABV2BEFJZAAWYEZ",
                "service-FYUG7NZG-default/svc-1000/tcp/http")
            and f"-j {s.svc_chain}" in ipt and f"-j {s.sep_chain}" in ipt
            and f"goto {s.nft_service_chain}" in nft)


def check_walk(step: str, n: int, dispatch: tuple[str, int], rules: int, claim: str) -> None:
    """The check of a trace step: pod-1 answered, the dispatch chain matched at the
    expected rule, and the SYN was compared with `rules` rules in all."""
    @page.check(step, f"With {n} Services pod-1 answered the connection to the last; its SYN {claim}")
    def _(lab):
        visits = walk(lab, step)
        return answered_by_pod1(lab, step, n) and dispatch in visits and total(visits) == rules


for _n in COUNTS:
    check_walk(f"ipt-{_n}", _n, ("KUBE-SERVICES", _n), _n + IPTABLES_FIXED,
               f"matched rule {_n} of KUBE-SERVICES, and was compared with {_n + IPTABLES_FIXED} rules on "
               f"its way through nat and filter ({_n} + {IPTABLES_FIXED})")
    check_walk(f"nft-{_n}", _n, ("services", 2), NFTABLES_FIXED,
               f"matched rule 2 of services, the lookup in service-ips, and was compared with "
               f"{NFTABLES_FIXED} rules in all, as with any number of Services")


@page.check("ipt-1000-seen", "Rule 1000 of KUBE-SERVICES is svc-1000's and rule 1001, the NodePorts rule, "
                             "is the chain's last")
def _(lab):
    s = ks.Service(1000)
    chain = lab.run("iptables -t nat -S KUBE-SERVICES").stdout.splitlines()  # -N, then the rules
    return (f"-d {s.cluster_ip}/32" in lab.output("KUBE-SERVICES 1000", step="ipt-1000-seen")
            and "KUBE-NODEPORTS" in lab.output("KUBE-SERVICES 1001", step="ipt-1000-seen")
            and len(chain) == 1 + 1001 and chain[-1].endswith("-j KUBE-NODEPORTS"))


@page.check("ipt-10-seen", "conntrack recorded the iptables DNAT: the connection to 10.96.1.10:80 is "
                           "answered by 10.244.1.2:80, to the node's cni0 address 10.244.1.1 (masqueraded)")
def _(lab):
    return _translated(lab.output("conntrack -L", step="ipt-10-seen"))


@page.check("nft-10-seen", "conntrack recorded the same translation in nftables mode")
def _(lab):
    return _translated(lab.output("conntrack -L", step="nft-10-seen"))


def _translated(listing: str) -> bool:
    lines = listing.strip().splitlines()
    return (len(lines) == 1 and f"src={svc.NODE_IP} dst=10.96.1.10 sport=" in lines[0]
            and "dport=80 src=10.244.1.2 dst=10.244.1.1 sport=80 dport=" in lines[0])


@page.check("switch", "iptables' tables were the nftables tables ip raw, ip filter and ip nat; once they "
                      "are deleted iptables-save prints nothing")
def _(lab):
    tables = lab.output("nft list tables", step="switch").split("\n")
    return ({"table ip raw", "table ip filter", "table ip nat"} <= {t.strip() for t in tables}
            and lab.output("iptables-save", step="switch").strip() == "")


@page.check("nft-1000-seen", "With 1000 Services the dispatch chain still holds its 3 rules; the map holds "
                             "svc-1000's ClusterIP with a goto to its chain")
def _(lab):
    rules = RULE_LINE.findall(lab.output("nft -a list chain", step="nft-1000-seen"))
    element = lab.output("nft get element", step="nft-1000-seen")
    return len(rules) == 3 and f"goto {ks.Service(1000).nft_service_chain}" in element


@page.check("nft-1000", f"Loading the rules for 1000 Services took under {LOAD_LIMIT:g} s in each mode "
                        "(iptables-restore, nft -f)")
def _(lab):
    return max(load_seconds(lab, "ipt-1000"), load_seconds(lab, "nft-1000")) < LOAD_LIMIT
