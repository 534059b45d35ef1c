#!/usr/bin/env python3
"""Write the rules kube-proxy programs for COUNT ClusterIP Services, as it writes them.

    python3 kube_services.py iptables 1000 /tmp/iptables-1000.rules   # for iptables-restore
    python3 kube_services.py nftables 1000 /tmp/nftables-1000.nft     # for nft -f

Service i (1..COUNT) is default/svc-i, port "http" 80/TCP, ClusterIP
10.96.1.1, 10.96.1.2, ... (250 to a /24: svc-1000 is 10.96.4.250), with one
endpoint, one of the three pods 10.244.1.2-4 in turn, port 80. The last Service
is the one whose rule comes last.

The rules are what kube-proxy's syncProxyRules writes for such Services in
Kubernetes 1.36 (pkg/proxy/iptables/proxier.go, pkg/proxy/nftables/proxier.go),
with its chain, set and map names hashed as it hashes them, and the settings of
a plain node: cluster CIDR 10.244.0.0/16 (traffic to a ClusterIP from outside it
is marked for masquerading), service CIDR 10.96.0.0/12, masquerade bit 14 (mark
0x00004000), NodePorts on 127.0.0.1 too in iptables mode and only on the node's
primary IP 192.168.1.1 in nftables mode (each mode's default). Two things differ
from a node, and only in where lines are: kube-proxy puts its jumps from the
built-in chains (INPUT, OUTPUT, PREROUTING, ...) in place with separate
`iptables -I` calls, which this file holds at the end of each table; and it
writes Services in the order of a Go map, which is random, where this file
writes them in order, so that the last Service's rule is the last one.

Standard library only. A bad argument is one line on stderr and exit status 2.
"""
from __future__ import annotations

import base64
import hashlib
import sys
from dataclasses import dataclass

NAMESPACE, PORT_NAME, PORT, PROTOCOL = "default", "http", 80, "tcp"
ENDPOINTS = ("10.244.1.2", "10.244.1.3", "10.244.1.4")
CLUSTER_CIDR, SERVICE_CIDR, NODE_IP = "10.244.0.0/16", "10.96.0.0/12", "192.168.1.1"
MARK = "%#010x" % (1 << 14)  # bit 14 of the mark, as Go's "%#08x" prints it: 0x00004000
IP_PROTO_PORT = "ipv4_addr . inet_proto . inet_service"
PER_SUBNET = 250  # ClusterIPs x.1-x.250 of each 10.96.x.0/24
MAX_COUNT = 250 * 250


def _hash(text: str) -> str:
    """base32(sha256(text)), kube-proxy's hash for chain names."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()


def svc_chain(port_name: str, protocol: str) -> str:
    """iptables: KUBE-SVC- and 16 characters of the hash of "ns/name:port" + protocol."""
    return "KUBE-SVC-" + _hash(port_name + protocol)[:16]


def sep_chain(port_name: str, protocol: str, endpoint: str) -> str:
    """iptables: KUBE-SEP- and 16 characters of the hash of the above + "ip:port"."""
    return "KUBE-SEP-" + _hash(port_name + protocol + endpoint)[:16]


def _nft_base(name: str) -> str:
    # The hash's first 8 characters, then the name itself (kube-proxy truncates names
    # over 240 characters, which none here reaches).
    return _hash(name)[:8] + "-" + name


def nft_service_chain(namespace: str, name: str, protocol: str, port: str) -> str:
    """nftables: "service-" HASH "-ns/name/protocol/port"."""
    return "service-" + _nft_base(f"{namespace}/{name}/{protocol}/{port}")


@dataclass(frozen=True)
class Service:
    """One of the generated Services: its name, ClusterIP and one endpoint address."""

    index: int

    @property
    def name(self) -> str:
        return f"svc-{self.index}"

    @property
    def port_name(self) -> str:  # proxy.ServicePortName.String()
        return f"{NAMESPACE}/{self.name}:{PORT_NAME}"

    @property
    def cluster_ip(self) -> str:
        subnet, host = divmod(self.index - 1, PER_SUBNET)
        return f"10.96.{subnet + 1}.{host + 1}"

    @property
    def endpoint(self) -> str:
        return ENDPOINTS[(self.index - 1) % len(ENDPOINTS)]

    @property
    def svc_chain(self) -> str:
        return svc_chain(self.port_name, PROTOCOL)

    @property
    def sep_chain(self) -> str:
        return sep_chain(self.port_name, PROTOCOL, f"{self.endpoint}:{PORT}")

    @property
    def nft_service_chain(self) -> str:
        return nft_service_chain(NAMESPACE, self.name, PROTOCOL, PORT_NAME)


def iptables_rules(count: int) -> list[str]:
    """iptables-restore input: kube-proxy's filter and nat tables for `count` Services."""
    services = [Service(i) for i in range(1, count + 1)]
    out = ["*filter"]
    out += [f":{c} - [0:0]" for c in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD",
                                      "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL", "KUBE-FIREWALL")]
    out += [
        '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8'
        " ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {MARK}/{MARK}'
        " -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack'
        " --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "# kube-proxy's jumps from the built-in chains (it inserts each with iptables -I)",
        *_jumps("INPUT", "-j KUBE-FIREWALL",
                ("NEW", "kubernetes load balancer firewall", "KUBE-PROXY-FIREWALL"),
                ("", "kubernetes health check service ports", "KUBE-NODEPORTS"),
                ("NEW", "kubernetes externally-visible service portals", "KUBE-EXTERNAL-SERVICES")),
        *_jumps("FORWARD", "",
                ("NEW", "kubernetes load balancer firewall", "KUBE-PROXY-FIREWALL"),
                ("", "kubernetes forwarding rules", "KUBE-FORWARD"),
                ("NEW", "kubernetes service portals", "KUBE-SERVICES"),
                ("NEW", "kubernetes externally-visible service portals", "KUBE-EXTERNAL-SERVICES")),
        *_jumps("OUTPUT", "-j KUBE-FIREWALL",
                ("NEW", "kubernetes load balancer firewall", "KUBE-PROXY-FIREWALL"),
                ("NEW", "kubernetes service portals", "KUBE-SERVICES")),
        "COMMIT",
        "*nat",
    ]
    out += [f":{c} - [0:0]" for c in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")]
    out += [f":{c} - [0:0]" for s in services for c in (s.svc_chain, s.sep_chain)]
    out += [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MARK}/{MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
        " --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MARK}",
    ]
    for s in services:
        match = f'-m comment --comment "{s.port_name} cluster IP" -m tcp -p tcp -d {s.cluster_ip} --dport {PORT}'
        out += [
            f"-A KUBE-SERVICES {match} -j {s.svc_chain}",
            f"-A {s.svc_chain} {match} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ",
            f'-A {s.svc_chain} -m comment --comment "{s.port_name} -> {s.endpoint}:{PORT}" -j {s.sep_chain}',
            f"-A {s.sep_chain} -m comment --comment {s.port_name} -s {s.endpoint} -j KUBE-MARK-MASQ",
            f"-A {s.sep_chain} -m comment --comment {s.port_name} -m tcp -p tcp -j DNAT"
            f" --to-destination {s.endpoint}:{PORT}",
        ]
    out += [
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last'
        ' rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        "# kube-proxy's jumps from the built-in chains (it inserts each with iptables -I)",
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "COMMIT",
    ]
    return out


def _jumps(chain: str, first: str, *jumps: tuple[str, str, str]) -> list[str]:
    """Jump rules of a built-in chain in the order kube-proxy's inserts leave them:
    each goes in at the top, so the last of its list (KUBE-FIREWALL's) ends up first."""
    lines = [f"-A {chain} {first}"] if first else []
    for state, comment, target in jumps:
        ct = f"-m conntrack --ctstate {state} " if state else ""
        lines.append(f'-A {chain} {ct}-m comment --comment "{comment}" -j {target}')
    return lines


NFT_BASE = f"""\
add table ip kube-proxy {{ comment "rules for kube-proxy" ; }}
add chain ip kube-proxy filter-prerouting-pre-dnat {{ type filter hook prerouting priority -110 ; }}
add chain ip kube-proxy filter-output-pre-dnat {{ type filter hook output priority -110 ; }}
add chain ip kube-proxy filter-input {{ type filter hook input priority 0 ; }}
add chain ip kube-proxy filter-forward {{ type filter hook forward priority 0 ; }}
add chain ip kube-proxy filter-output {{ type filter hook output priority 0 ; }}
add chain ip kube-proxy nat-prerouting {{ type nat hook prerouting priority -100 ; }}
add chain ip kube-proxy nat-output {{ type nat hook output priority -100 ; }}
add chain ip kube-proxy nat-postrouting {{ type nat hook postrouting priority 100 ; }}
add chain ip kube-proxy nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add chain ip kube-proxy service-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add chain ip kube-proxy firewall-check
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add chain ip kube-proxy services
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-prerouting jump services
add chain ip kube-proxy masquerading
add rule ip kube-proxy nat-postrouting jump masquerading
add chain ip kube-proxy cluster-ips-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add set ip kube-proxy hairpin-connections {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service ; comment "service hairpin connections" ; }}
add rule ip kube-proxy masquerading mark and {MARK} != 0 mark set mark xor {MARK} masquerade fully-random
add rule ip kube-proxy masquerading ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random
add set ip kube-proxy cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr {{ {SERVICE_CIDR} }} drop comment "Drop traffic to unallocated ClusterIPs"
add set ip kube-proxy nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}
add element ip kube-proxy nodeport-ips {{ {NODE_IP} }}
add map ip kube-proxy no-endpoint-services {{ type {IP_PROTO_PORT} : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }}
add map ip kube-proxy no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }}
add chain ip kube-proxy reject-chain {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add map ip kube-proxy firewall-ips {{ type {IP_PROTO_PORT} : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }}
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add map ip kube-proxy service-ips {{ type {IP_PROTO_PORT} : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}
add map ip kube-proxy service-nodeports {{ type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }}
add rule ip kube-proxy services ip daddr @cluster-ips ip saddr != {CLUSTER_CIDR} mark set mark or {MARK} comment "masquerade clusterIP traffic from outside cluster"
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
"""


def nftables_rules(count: int) -> list[str]:
    """nft -f input: kube-proxy's table ip kube-proxy for `count` Services, as the
    transaction of its first sync adds it (1.36: one DNAT rule per Service, no
    endpoint chains, no mark-for-masquerade chain)."""
    out = NFT_BASE.splitlines()
    hairpins: set[str] = set()
    for s in (Service(i) for i in range(1, count + 1)):
        chain = s.nft_service_chain
        if s.endpoint not in hairpins:  # one element per endpoint address and port
            hairpins.add(s.endpoint)
            out.append(f"add element ip kube-proxy hairpin-connections"
                       f" {{ {s.endpoint} . {s.endpoint} . tcp . {PORT} }}")
        # The chain first (a map element's goto must find it), then the elements.
        out += [
            f"add chain ip kube-proxy {chain}",
            f"add element ip kube-proxy cluster-ips {{ {s.cluster_ip} }}",
            f"add element ip kube-proxy service-ips {{ {s.cluster_ip} . tcp . {PORT} : goto {chain} }}",
            f"add rule ip kube-proxy {chain} meta l4proto tcp dnat ip addr . port to"
            f" numgen random mod 1 map {{ 0 : {s.endpoint} . {PORT} }}",
        ]
    return out


WRITERS = {"iptables": iptables_rules, "nftables": nftables_rules}
USAGE = f"usage: kube_services.py iptables|nftables COUNT FILE (COUNT from 1 to {MAX_COUNT})"


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in WRITERS or not argv[1].isdigit() \
            or not 1 <= int(argv[1]) <= MAX_COUNT:
        print(USAGE, file=sys.stderr)
        return 2
    mode, count, path = argv[0], int(argv[1]), argv[2]
    try:
        with open(path, "w") as f:
            f.write("\n".join(WRITERS[mode](count)) + "\n")
    except OSError as exc:
        print(f"kube_services.py: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
