"""The troubleshooting page's rules are kube-proxy's for the Service at each targetPort,
its fix removes the stale chains as kube-proxy does, and its reading of `tcpdump -i any`
takes each hop as tcpdump prints it."""
from __future__ import annotations

import base64
import hashlib

import pytest

from conftest import snippet_module


@pytest.fixture(scope="module")
def ts():
    """The snippet as a module, for its helpers."""
    return snippet_module("troubleshooting")


def kube_proxy_sep(endpoint: str) -> str:
    """KUBE-SEP- and 16 base32 characters of SHA-256("default/web:http" "tcp" endpoint)."""
    text = "default/web:httptcp" + endpoint
    return "KUBE-SEP-" + base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def test_at_port_80_the_rules_are_the_iptables_pages_own(ts):
    assert ts.restore_input(80) == ts.kpi.restore_input()


def test_at_8080_every_endpoint_chain_is_named_after_its_new_endpoint_and_dnats_there(ts):
    rules = ts.restore_input(8080)
    for ip in ("10.244.1.2", "10.244.1.3", "10.244.1.4"):
        chain = kube_proxy_sep(f"{ip}:8080")
        assert f":{chain} - [0:0]" in rules
        assert f"-A {chain} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination {ip}:8080" in rules
        assert kube_proxy_sep(f"{ip}:80") not in rules
    assert ":80\n" not in rules and ":80 " not in rules


def test_the_fix_flushes_and_deletes_the_8080_chains_in_the_same_restore(ts):
    lines = ts.fix_input().splitlines()
    stale = [kube_proxy_sep(f"10.244.1.{i}:8080") for i in (2, 3, 4)]
    first_rule = next(i for i, line in enumerate(lines) if line.startswith("-A "))
    assert all(f":{chain} - [0:0]" in lines[:first_rule] for chain in stale)
    # kube-proxy writes the deletions before KUBE-SERVICES' last rule, the NodePorts jump.
    assert lines[-5:-2] == [f"-X {chain}" for chain in stale]
    assert lines[-2].endswith("-j KUBE-NODEPORTS") and lines[-1] == "COMMIT"
    assert lines[:first_rule - 3] + lines[first_rule:-5] + lines[-2:] == ts.restore_input(80).splitlines()


def test_hops_reads_device_direction_addresses_ports_and_flags(ts):
    capture = ("veth20679696 P   IP 10.244.1.5.55174 > 10.96.0.10.80: Flags [S], seq 28844376, win 64240, length 0\n"
               "cni0  Out IP 10.244.1.5.55174 > 10.244.1.4.8080: Flags [S], seq 28844376, win 64240, length 0\n"
               "eth1  In  IP 192.168.1.2.49684 > 192.168.1.1.30080: Flags [R.], seq 0, ack 1, win 0, length 0\n"
               "5 packets captured\n")
    assert ts.hops(capture) == [
        {"dev": "veth20679696", "dir": "P", "src": "10.244.1.5", "sport": "55174", "dst": "10.96.0.10",
         "dport": "80", "flags": "S"},
        {"dev": "cni0", "dir": "Out", "src": "10.244.1.5", "sport": "55174", "dst": "10.244.1.4",
         "dport": "8080", "flags": "S"},
        {"dev": "eth1", "dir": "In", "src": "192.168.1.2", "sport": "49684", "dst": "192.168.1.1",
         "dport": "30080", "flags": "R."},
    ]
