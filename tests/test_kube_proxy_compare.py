"""The kube-proxy-compare page: its rule generator names chains as kube-proxy does and
refuses bad arguments in one line, its count of the rules a traced packet was compared
with follows netfilter's order, and its masks hide what changes between runs only."""
from __future__ import annotations

import pytest

from conftest import page_masks, snippet_module
from deepdive.masking import mask_text
from snippets.programs import kube_services as ks


@pytest.fixture(scope="module")
def snippet():
    return snippet_module("kube-proxy-compare")


# --- the generator ----------------------------------------------------------------------

def test_chain_names_are_the_ones_kube_proxys_own_tests_expect():
    # pkg/proxy/iptables/proxier_test.go and pkg/proxy/nftables/proxier_test.go
    assert ks.svc_chain("ns1/svc1:p80", "tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert ks.sep_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert ks.nft_service_chain("ns1", "svc1", "tcp", "p80") == "service-ULMVA6XW-ns1/svc1/tcp/p80"


def test_services_get_their_addresses_and_endpoints_in_turn():
    assert [ks.Service(i).cluster_ip for i in (1, 250, 251, 1000)] == [
        "10.96.1.1", "10.96.1.250", "10.96.2.1", "10.96.4.250"]
    assert [ks.Service(i).endpoint for i in (1, 2, 3, 4, 1000)] == [
        "10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.2", "10.244.1.2"]
    assert ks.MARK == "0x00004000"  # Go's "%#08x" pads the digits, as kube-proxy's log shows


def test_one_dispatch_line_per_service_in_each_mode():
    ipt, nft = ks.iptables_rules(7), ks.nftables_rules(7)
    # one rule per Service, then the NodePorts rule, which must stay the chain's last
    services = [line for line in ipt if line.startswith("-A KUBE-SERVICES ")]
    assert len(services) == 8 and "KUBE-NODEPORTS" in services[-1]
    assert sum("element ip kube-proxy service-ips" in line for line in nft) == 7
    # three pods: one hairpin element each, however many Services they serve
    assert sum("hairpin-connections {" in line and "element" in line for line in nft) == 3


@pytest.mark.parametrize("argv", [[], ["ipvs", "10", "/tmp/x"], ["iptables", "0", "/tmp/x"],
                                  ["nftables", "ten", "/tmp/x"], ["iptables", "62501", "/tmp/x"]])
def test_a_bad_argument_is_one_line_and_status_2(capsys, argv):
    assert ks.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("usage: kube_services.py")


def test_a_file_that_cannot_be_written_is_one_line(capsys, tmp_path):
    assert ks.main(["iptables", "1", str(tmp_path / "missing" / "x.rules")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "No such file or directory" in err


# --- counting the rules a traced packet was compared with ---------------------------------

XT_TRACE = """\
PACKET: 2 4bd01333 OUT=eth1 SRC=192.168.1.1 DST=10.96.1.3 SYN
 TRACE: 2 4bd01333 raw:OUTPUT:rule:0x2:CONTINUE  -4 -t raw -A OUTPUT -j TRACE
 TRACE: 2 4bd01333 raw:OUTPUT:policy:ACCEPT
PACKET: 2 4bd01333 OUT=eth1 SRC=192.168.1.1 DST=10.96.1.3 SYN
 TRACE: 2 4bd01333 nat:OUTPUT:rule:0x30:JUMP:KUBE-SERVICES  -4 -t nat -A OUTPUT -j KUBE-SERVICES
 TRACE: 2 4bd01333 nat:KUBE-SERVICES:rule:0x23:JUMP:KUBE-SVC-A  -4 -t nat -A KUBE-SERVICES -j KUBE-SVC-A
 TRACE: 2 4bd01333 nat:KUBE-SVC-A:rule:0x24:JUMP:KUBE-MARK-MASQ  -4 -t nat -A KUBE-SVC-A -j KUBE-MARK-MASQ
 TRACE: 2 4bd01333 nat:KUBE-MARK-MASQ:rule:0x7:CONTINUE  -4 -t nat -A KUBE-MARK-MASQ -j MARK
 TRACE: 2 4bd01333 nat:KUBE-SVC-A:rule:0x25:JUMP:KUBE-SEP-A  -4 -t nat -A KUBE-SVC-A -j KUBE-SEP-A
 TRACE: 2 4bd01333 nat:KUBE-SEP-A:rule:0x27:ACCEPT  -4 -t nat -A KUBE-SEP-A -j DNAT
PACKET: 2 4bd01333 OUT=eth1 SRC=192.168.1.1 DST=10.244.1.2 SYN
 TRACE: 2 4bd01333 filter:OUTPUT:rule:0x16:JUMP:KUBE-FIREWALL  -4 -t filter -A OUTPUT -j KUBE-FIREWALL
 TRACE: 2 4bd01333 filter:OUTPUT:rule:0x17:JUMP:KUBE-SERVICES  -4 -t filter -A OUTPUT -j KUBE-SERVICES
 TRACE: 2 4bd01333 filter:OUTPUT:policy:ACCEPT
"""
XT_HANDLES = {
    ("nat", "OUTPUT"): [0x30], ("nat", "KUBE-SERVICES"): [0x20, 0x21, 0x22, 0x23, 0x40],
    ("nat", "KUBE-SVC-A"): [0x24, 0x25], ("nat", "KUBE-MARK-MASQ"): [0x7],
    ("nat", "KUBE-SEP-A"): [0x26, 0x27],
    ("filter", "OUTPUT"): [0x16, 0x17], ("filter", "KUBE-FIREWALL"): [0x9], ("filter", "KUBE-SERVICES"): [],
}


def test_a_rule_that_matched_means_every_rule_before_it_was_tried(snippet):
    nat, filt = snippet.traversals(XT_TRACE)  # the raw table's trace rule is not kube-proxy's
    assert snippet.evaluated(nat, XT_HANDLES) == [
        ("KUBE-MARK-MASQ", 1), ("KUBE-SEP-A", 2), ("KUBE-SVC-A", 2), ("KUBE-SERVICES", 4), ("OUTPUT", 1)]
    # KUBE-FIREWALL's one rule did not match (no event) and the chain returned; so did
    # the empty KUBE-SERVICES; then OUTPUT's policy: both its rules were tried.
    assert snippet.evaluated(filt, XT_HANDLES) == [
        ("KUBE-FIREWALL", 1), ("KUBE-SERVICES", 0), ("OUTPUT", 2)]


NFT_TRACE = """\
trace id 713d2fc0 ip kube-proxy nat-output packet: oif "eth1" ip daddr 10.96.1.10 tcp sport 35024
trace id 713d2fc0 ip kube-proxy nat-output rule jump services # handle 39 (verdict jump services)
trace id 713d2fc0 ip kube-proxy services rule ip daddr @cluster-ips meta mark set 0x4000 # handle 43 (verdict continue)
trace id 713d2fc0 ip kube-proxy services rule ip daddr . meta l4proto . th dport vmap @service-ips # handle 44 (verdict goto service-X/tcp/http)
trace id 713d2fc0 ip kube-proxy service-X/tcp/http rule meta l4proto tcp dnat to 10.244.1.2:80 # handle 75 (verdict accept)
"""
NFT_HANDLES = {("kube-proxy", "nat-output"): [39], ("kube-proxy", "services"): [43, 44, 45],
               ("kube-proxy", "service-X/tcp/http"): [75]}


def test_a_goto_leaves_the_chain_for_good(snippet):
    (nat,) = snippet.traversals(NFT_TRACE)
    visits = snippet.evaluated(nat, NFT_HANDLES)
    assert visits == [("services", 2), ("service-X/tcp/http", 1), ("nat-output", 1)]
    assert snippet.total(visits) == 4


def test_a_trace_that_ends_inside_a_chain_is_an_error(snippet):
    (nat,) = snippet.traversals(NFT_TRACE.rsplit("\n", 2)[0] + "\n")  # without the DNAT
    with pytest.raises(ValueError, match="ends inside chain service-X/tcp/http"):
        snippet.evaluated(nat, NFT_HANDLES)


# --- masks ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def masks():
    return page_masks("kube-proxy-compare")


@pytest.mark.parametrize("text, shown", [
    ("PACKET: 2 a301c4c3 OUT=eth1 SRC=192.168.1.1 DST=10.96.1.10 LEN=60 TOS=0x0 TTL=64 ID=3901 DF"
     " SPORT=50354 DPORT=80 SYN",
     "PACKET: 2 <id> OUT=eth1 SRC=192.168.1.1 DST=10.96.1.10 LEN=60 TOS=0x0 TTL=64 ID=<id> DF"
     " SPORT=<port> DPORT=80 SYN"),
    (" TRACE: 2 a301c4c3 nat:KUBE-SERVICES:rule:0x4a:JUMP:KUBE-SVC-EZWJTI4H34V2QEEZ",
     " TRACE: 2 <id> nat:KUBE-SERVICES:rule:0x4a:JUMP:KUBE-SVC-EZWJTI4H34V2QEEZ"),
    ('trace id 8988db80 ip kube-proxy nat-output packet: oif "eth1" ip id 65478 ip length 60'
     " tcp sport 60142 tcp dport 80",
     'trace id <id> ip kube-proxy nat-output packet: oif "eth1" ip id <id> ip length 60'
     " tcp sport <port> tcp dport 80"),
    ("src=10.244.1.2 dst=10.244.1.1 sport=80 dport=2345 [ASSURED]",
     "src=10.244.1.2 dst=10.244.1.1 sport=80 dport=<port> [ASSURED]"),
    ("0.26 s", "<elapsed> s"),
])
def test_what_changes_between_runs_is_masked(masks, text, shown):
    assert mask_text(text, extra=masks) == shown


@pytest.mark.parametrize("text", [
    "-A KUBE-SERVICES -d 10.96.4.250/32 -p tcp -m comment --comment \"default/svc-1000:http cluster IP\"",
    "ip daddr . meta l4proto . th dport vmap @service-ips # handle 44",
    "src=192.168.1.1 dst=10.96.1.10 sport=80",
    "pod-1",
    "1001",
])
def test_what_the_page_fixes_is_compared_as_it_is(masks, text):
    assert mask_text(text, extra=masks) == text
