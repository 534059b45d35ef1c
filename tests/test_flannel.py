"""The flannel page's own masks hide what the bridge plugin and the kernel pick at random,
and nothing the page fixes: a mask too wide would hide a real change of a run."""
from __future__ import annotations

import pytest

from conftest import page_masks
from deepdive.masking import mask_text


@pytest.fixture(scope="module")
def masks():
    return page_masks("flannel")


@pytest.mark.parametrize("text, shown", [
    ("5: veth0d42c72a@eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 master cni0",
     "5: veth<random>@eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 master cni0"),
    ("link/ether d2:1d:bd:e4:be:de brd ff:ff:ff:ff:ff:ff link-netns node1",
     "link/ether <random MAC> brd ff:ff:ff:ff:ff:ff link-netns node1"),
    # A random MAC may start with 02: too; only the page's own prefixes are kept.
    ('"mac": "02:82:02:d6:7a:68"', '"mac": "<random MAC>"'),
    ("10.244.1.1 dev eth0 lladdr 4e:5d:f0:ec:17:17 REACHABLE",
     "10.244.1.1 dev eth0 lladdr <random MAC> <learned>"),
    ("10.244.2.2 via 10.244.1.1 dev eth0 src 10.244.1.2 uid 65534",
     "10.244.2.2 via 10.244.1.1 dev eth0 src 10.244.1.2 uid <uid>"),
    # The link-local addresses made from random MACs (d2:1d:bd:e4:be:de, 02:00:5a:01:02:03).
    ("inet6 fe80::d01d:bdff:fee4:bede/64 scope link", "inet6 fe80::<random>/64 scope link"),
    ("inet6 fe80::5aff:fe01:203/64 scope link", "inet6 fe80::<random>/64 scope link"),
])
def test_random_values_are_masked(masks, text, shown):
    assert mask_text(text, extra=masks) == shown


@pytest.mark.parametrize("text", [
    "10.244.2.0 lladdr 02:f1:00:00:00:02 PERMANENT",
    "02:f1:00:00:00:02 dev flannel.1 dst 192.168.50.2 self permanent",
    "02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 148",
    "02:00:00:00:00:02 dev port-node2 master underlay",
    "link/ether 02:00:00:00:00:fe brd ff:ff:ff:ff:ff:ff",
    "group_address 01:80:c2:00:00:00",
    # The link-local addresses of flannel.1 (02:f1:00:00:00:02) and of a node's eth0 (02:00:00:00:00:01).
    "inet6 fe80::f1:ff:fe00:2/64 scope link",
    "inet6 fe80::ff:fe00:1/64 scope link",
])
def test_what_the_page_fixes_is_compared_as_it_is(masks, text):
    assert mask_text(text, extra=masks) == text
