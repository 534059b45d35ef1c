"""The kube-proxy-nftables page names its chains as kube-proxy does, and its masks hide
the ports masquerading picks at random and nothing the page fixes."""
from __future__ import annotations

import pytest

from conftest import page_masks, snippet_module
from deepdive.masking import mask_text


@pytest.fixture(scope="module")
def snippet():
    return snippet_module("kube-proxy-nftables")


@pytest.mark.parametrize("name, expected", [
    # kube-proxy's own unit tests (pkg/proxy/nftables/proxier_test.go) expect these.
    ("ns1/svc1/tcp/p80", "ULMVA6XW-ns1/svc1/tcp/p80"),
    ("ns1/svc1/tcp/p80__10.180.0.1/80", "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"),
    ("ns4/svc4/tcp/p80__10.180.0.5/80", "5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80"),
])
def test_chain_names_hash_as_kube_proxy_does(snippet, name, expected):
    assert snippet.chain_suffix(name) == expected


def test_the_service_chains(snippet):
    assert snippet.SVC_CHAIN == "service-SUSTUHLJ-default/web/tcp/http"
    assert snippet.EXT_CHAIN == "external-SUSTUHLJ-default/web/tcp/http"
    assert snippet.EP_CHAINS["pod-1"] == "endpoint-WZUVD3EN-default/web/tcp/http__10.244.1.2/80"


def test_mark_is_written_as_kube_proxy_formats_it(snippet):
    # fmt.Sprintf("%#08x", 1<<14) in Go
    assert snippet.MARK == "0x004000"


def test_the_vmap_lists_endpoints_in_order(snippet):
    assert snippet._vmap(("pod-1", "pod-2")) == (
        f"add rule ip kube-proxy {snippet.SVC_CHAIN} numgen random mod 2 vmap"
        f" {{ 0 : goto {snippet.EP_CHAINS['pod-1']} , 1 : goto {snippet.EP_CHAINS['pod-2']} }}")


@pytest.fixture(scope="module")
def masks():
    return page_masks("kube-proxy-nftables")


@pytest.mark.parametrize("text, shown", [
    ("tcp      6 119 TIME_WAIT src=10.244.1.2 dst=10.96.0.10 sport=50924 dport=80 src=10.244.1.2 "
     "dst=10.244.1.1 sport=80 dport=28649 [ASSURED] mark=0 use=1",
     "tcp      6 119 TIME_WAIT src=10.244.1.2 dst=10.96.0.10 sport=50924 dport=80 src=10.244.1.2 "
     "dst=10.244.1.1 sport=80 dport=<port> [ASSURED] mark=0 use=1"),
    ("IP 10.244.1.1.2301 > 10.244.1.2.80: Flags [S]", "IP 10.244.1.1.<port> > 10.244.1.2.80: Flags [S]"),
    ("    101 pod-2", "<n> pod-2"),
])
def test_random_values_are_masked(masks, text, shown):
    assert mask_text(text, extra=masks) == shown


@pytest.mark.parametrize("text", [
    "src=10.244.1.3 dst=10.96.0.10 sport=80 dport=80 src=10.244.1.2 dst=10.244.1.3 sport=80 dport=80",
    "cni0             UP             10.244.1.1/24",
    "meta l4proto tcp dnat ip to numgen random mod 3 map { 0 : 10.244.1.2 . 80, 1 : 10.244.1.3 . 80 }",
    "elements = { 10.244.1.2 . 10.244.1.2 . tcp . 80,",
    "ip daddr 10.96.0.10 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
])
def test_what_the_page_fixes_is_compared_as_it_is(masks, text):
    assert mask_text(text, extra=masks) == text


class FakeLab:
    """What the page's checks read: the hits output of a step and a conntrack dump."""

    def __init__(self, hits: str, conntrack: str):
        self.hits, self.conntrack = hits, conntrack

    def output(self, contains, step=None):
        return self.hits

    def run(self, command):
        return type("Result", (), {"stdout": self.conntrack})()


def _dump(replies: dict[str, int]) -> str:
    ips = {"pod-1": "10.244.1.2", "pod-2": "10.244.1.3", "pod-3": "10.244.1.4"}
    port = iter(range(40000, 41000))
    return "".join(f"tcp      6 119 TIME_WAIT src=192.168.1.1 dst=10.96.0.10 sport={next(port)} dport=80 "
                   f"src={ips[pod]} dst=10.244.1.1 sport=80 dport=1234 [ASSURED] mark=0 use=1\n"
                   for pod, n in replies.items() for _ in range(n))


HITS = "    100 pod-1\n    101 pod-2\n     99 pod-3\n"


@pytest.mark.parametrize("tracked, ok", [
    ({"pod-1": 100, "pod-2": 101, "pod-3": 99}, True),
    # connections from reused client ports share an entry: a few fewer is fine
    ({"pod-1": 96, "pod-2": 99, "pod-3": 97}, True),
    ({"pod-1": 90, "pod-2": 90, "pod-3": 89}, False),  # 31 missing: more than 10 %
    ({"pod-1": 101, "pod-2": 100, "pod-3": 99}, False),  # pod-1 tracked more than it answered
])
def test_conntrack_must_name_the_pods_that_answered(snippet, tracked, ok):
    assert snippet._even_and_tracked(FakeLab(HITS, _dump(tracked)), "node") is ok
