"""Reading facts for checks out of tool output (deepdive.parse) and snapshots (holders)."""
from __future__ import annotations

import pytest

from deepdive.parse import (Reply, answered, indexes, inet6, learned, link_local, neighbour, received, replies,
                            transmitted)
from deepdive.snapshot import holders

PING = (
    "PING 10.0.0.2 (10.0.0.2) 1422(1450) bytes of data.\n"
    "1430 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.078 ms\n"
    "64 bytes from 10.0.0.9: icmp_seq=2 ttl=63 time=0.050 ms\n"
    "\n"
    "--- 10.0.0.2 ping statistics ---\n"
    "3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n"
)
UNREACHABLE = "ping: connect: Network is unreachable\n"
NEIGH = (
    "10.0.0.20 lladdr 02:00:00:00:01:20 PERMANENT \n"
    "10.0.0.2 lladdr 02:00:00:00:01:02 REACHABLE \n"
    "10.0.2.2 INCOMPLETE \n"
    "10.0.0.11 dev eth0 lladdr 02:00:00:00:00:01 router STALE \n"
)
FDB = (
    "02:00:00:00:01:01 dev veth1 master br0 \n"
    "02:00:00:00:02:01 dev veth2 master br0 static\n"
    "02:00:00:00:03:01 dev veth3 master br0 permanent\n"
    "02:00:00:00:01:02 dst 192.168.0.2 self \n"
)


def test_replies_read_source_sequence_ttl_and_size_of_each():
    assert replies(PING) == [Reply("10.0.0.2", 1, 64, 1430), Reply("10.0.0.9", 2, 63, 64)]
    assert replies(UNREACHABLE) == []


def test_answered_means_every_request_got_one_reply_from_that_address():
    three = "".join(f"64 bytes from 10.0.0.2: icmp_seq={i} ttl=64 time=0.1 ms\n" for i in (1, 2, 3))
    assert answered(three, "10.0.0.2", 3)
    assert not answered(three, "10.0.0.2", 2)  # one reply more than asked for
    assert not answered(three, "10.0.0.3", 3)
    assert not answered(three.replace("icmp_seq=2", "icmp_seq=3"), "10.0.0.2", 3)  # a gap and a duplicate
    assert not answered(PING, "10.0.0.2", 2)  # the second reply came from 10.0.0.9
    assert not answered(UNREACHABLE, "10.0.0.2")


def test_counts_of_the_summary_line():
    assert (transmitted(PING), received(PING)) == (3, 2)
    assert (transmitted(UNREACHABLE), received(UNREACHABLE)) == (0, 0)


def test_neighbour_gives_mac_and_state_and_tells_learned_from_static():
    assert neighbour(NEIGH, "10.0.0.2") == ("02:00:00:00:01:02", "REACHABLE")  # not 10.0.0.20's
    assert neighbour(NEIGH, "10.0.0.20") == ("02:00:00:00:01:20", "PERMANENT")
    assert neighbour(NEIGH, "10.0.2.2") == (None, "INCOMPLETE")
    assert neighbour(NEIGH, "10.0.0.11") == ("02:00:00:00:00:01", "STALE")
    assert neighbour(NEIGH, "10.0.0.3") is None


def test_learned_fdb_entries_carry_neither_static_nor_permanent():
    assert learned(FDB, "02:00:00:00:01:01 dev veth1")
    assert not learned(FDB, "02:00:00:00:02:01 dev veth2")  # static: `dynamic` still lists it
    assert not learned(FDB, "02:00:00:00:03:01 dev veth3")
    assert not learned(FDB, "02:00:00:00:01:01 dev veth2")  # the MAC, but on another port
    assert learned(FDB, "02:00:00:00:01:02 dst 192.168.0.2 self")
    assert not learned("", "02:00:00:00:01:01")


def test_holders_of_an_address_whatever_its_prefix():
    snap = {"nodes": [
        {"name": "node", "links": [{"name": "eth0", "addresses": ["10.0.0.100/32", "10.0.0.10/24"]}]},
        {"name": "lan", "links": [{"name": "eth0", "addresses": ["10.0.0.100/24"]},
                                  {"name": "eth1", "addresses": []}]},
    ]}
    assert holders(snap, "10.0.0.100") == [("node", "eth0"), ("lan", "eth0")]
    assert holders(snap, "10.0.0.10") == [("node", "eth0")]
    assert holders(snap, "10.0.0.1") == []


@pytest.mark.parametrize("mac, address", [
    ("0a:58:0a:f4:01:02", "fe80::858:aff:fef4:102"),  # the bit flipped off
    ("02:00:00:00:00:01", "fe80::ff:fe00:1"),
    ("00:00:5e:00:53:01", "fe80::200:5eff:fe00:5301"),  # RFC 7042's documentation MAC; flipped on
])
def test_link_local_is_the_modified_eui64_of_the_mac(mac, address):
    assert link_local(mac) == address


def test_link_local_refuses_what_is_not_a_mac():
    with pytest.raises(ValueError):
        link_local("02:00:00:00:01")


ADDR = (
    "2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default qlen 1000\n"
    "    link/ether 0a:58:0a:f4:01:02 brd ff:ff:ff:ff:ff:ff link-netns host\n"
    "    inet 10.244.1.2/24 scope global eth0\n"
    "       valid_lft forever preferred_lft forever\n"
    "    inet6 fe80::858:aff:fef4:102/64 scope link tentative \n"
    "       valid_lft forever preferred_lft forever\n"
)


def test_inet6_lists_ipv6_addresses_with_scope_and_flags():
    assert inet6(ADDR) == ["fe80::858:aff:fef4:102/64 scope link tentative"]
    assert inet6("1: lo: <LOOPBACK> mtu 65536\n") == []


def test_indexes_reads_own_index_and_the_peers():
    assert indexes(ADDR, "eth0") == (2, 3)
    assert indexes(ADDR, "eth") is None
    assert indexes("5: veth1@veth0: <BROADCAST>", "veth1") is None  # a peer in the same namespace


def test_replies_from_an_ipv6_address():
    out = ("PING fd00:10:89::1(fd00:10:89::1) 56 data bytes\n"
           "64 bytes from fd00:10:89::1: icmp_seq=1 ttl=64 time=0.061 ms\n"
           "64 bytes from fd00:10:89::1: icmp_seq=2 ttl=64 time=0.040 ms\n")
    assert replies(out)[1] == Reply("fd00:10:89::1", 2, 64, 64)
    assert answered(out, "fd00:10:89::1", 2)
