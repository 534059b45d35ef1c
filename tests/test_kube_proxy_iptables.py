"""The kube-proxy-iptables page writes what kube-proxy writes: its chain names, its
probabilities and its mark as kube-proxy formats them, its rules in kube-proxy's order;
and its masks hide what is random by design and nothing the page fixes."""
from __future__ import annotations

import pytest

from conftest import page_masks, snippet_module
from deepdive.masking import mask_text


@pytest.fixture(scope="module")
def kp():
    """The snippet as a module, for its helpers."""
    return snippet_module("kube-proxy-iptables")


def test_chain_names_are_kube_proxys_own(kp):
    # pkg/proxy/iptables/proxier_test.go names Service ns1/svc1, port p80, TCP, with the
    # endpoint 10.180.0.1:80, by these chains.
    assert "KUBE-SVC-" + kp.chain_hash("ns1/svc1:p80" + "tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert "KUBE-SEP-" + kp.chain_hash("ns1/svc1:p80" + "tcp" + "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert kp.SVC_CHAIN == "KUBE-SVC-CDGGSHYLG3RE2FKL"
    assert kp.EXT_CHAIN == "KUBE-EXT-CDGGSHYLG3RE2FKL"


def test_probabilities_have_ten_decimals_and_the_mark_is_formatted_as_go_does(kp):
    assert [kp.probability(n) for n in (3, 2)] == ["0.3333333333", "0.5000000000"]
    # Go's %#08x pads the digits to eight, then adds 0x (Python's would give 0x004000).
    assert kp.MARK == "0x" + format(1 << 14, "08x") == "0x00004000"


def test_rules_come_in_kube_proxys_order(kp):
    lines = kp.restore_input().splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    first_rule = next(i for i, line in enumerate(lines) if line.startswith("-A "))
    assert all(line.startswith(":") for line in lines[1:first_rule])
    assert all(line.startswith("-A ") for line in lines[first_rule:-1])
    assert lines[-2].startswith('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports;')
    svc_rules = [line for line in lines if line.startswith(f"-A {kp.SVC_CHAIN} ")]
    assert svc_rules == [
        f'-A {kp.SVC_CHAIN} -m comment --comment "default/web:http cluster IP" -m tcp -p tcp'
        " -d 10.96.0.10 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
        f'-A {kp.SVC_CHAIN} -m comment --comment "default/web:http -> 10.244.1.2:80"'
        " -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-PBQ62IOVWGYEN623",
        f'-A {kp.SVC_CHAIN} -m comment --comment "default/web:http -> 10.244.1.3:80"'
        " -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-BHMTFEMIGCOTLSJP",
        f'-A {kp.SVC_CHAIN} -m comment --comment "default/web:http -> 10.244.1.4:80"'
        " -j KUBE-SEP-EP6CRHVDHZKRLXXE",
    ]
    assert ("-A KUBE-SEP-PBQ62IOVWGYEN623 -m comment --comment default/web:http -s 10.244.1.2"
            " -j KUBE-MARK-MASQ") in lines


def test_shares(kp):
    assert kp.shares([1 / 3, 1 / 2]) == pytest.approx([1 / 3] * 3)
    assert kp.shares([1 / 3, 1 / 3]) == pytest.approx([1 / 3, 2 / 9, 4 / 9])


def test_packets_reads_the_counter_column(kp):
    listing = ("Chain KUBE-POSTROUTING (1 references)\n"
               "num      pkts      bytes target     prot opt in     out     source               destination\n"
               "1          38     2280 RETURN     0    --  *      *       0.0.0.0/0            0.0.0.0/0\n"
               "2          22     1320 MARK       0    --  *      *       0.0.0.0/0            0.0.0.0/0\n")
    assert kp.packets(listing) == [38, 22]


@pytest.fixture(scope="module")
def masks():
    return page_masks("kube-proxy-iptables")


@pytest.mark.parametrize("text, shown", [
    # MASQUERADE --random-fully: any port from 1024, outside the engine's ephemeral range too
    ("src=10.244.1.4 dst=10.244.1.1 sport=80 dport=5805 [ASSURED]",
     "src=<pod> dst=10.244.1.1 sport=80 dport=<port> [ASSURED]"),
    ("IP 10.244.1.1.2597 > 10.244.1.2.80: Flags [S]", "IP 10.244.1.1.<port> > 10.244.1.2.80: Flags [S]"),
    ("pod-3\n", "pod-<n>\n"),
    ("    101 pod-2", "<n> pod-2"),
    ("10.96.0.10 via 192.168.1.254 dev eth1 src 192.168.1.1 uid 65534",
     "10.96.0.10 via 192.168.1.254 dev eth1 src 192.168.1.1 uid <uid>"),
])
def test_random_values_are_masked(masks, text, shown):
    assert mask_text(text, extra=masks) == shown


@pytest.mark.parametrize("text", [
    "-A KUBE-SEP-PBQ62IOVWGYEN623 -s 10.244.1.2/32 -m comment --comment \"default/web:http\" -j KUBE-MARK-MASQ",
    "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
    "tcp      6 119 TIME_WAIT src=192.168.1.2 dst=192.168.1.1 sport=42606 dport=30080",
    "local 10.244.1.2 from 10.244.1.1 dev lo",
    "node-process",
])
def test_what_the_page_fixes_is_compared_as_it_is(masks, text):
    assert mask_text(text, extra=masks) == text
