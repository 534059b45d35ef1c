"""The bridge page's readers of `ip link`, `bridge fdb` and `ip maddr` output take what
their checks claim and nothing else: a wrong reading would let a check pass on output
that does not say what the page says."""
from __future__ import annotations

import pytest

from conftest import snippet_module

FDB = """\
33:33:00:00:00:01 dev br0 self permanent
02:00:00:00:00:fe dev br0 master br0 permanent
02:00:00:00:01:01 dev veth1 master br0 
33:33:00:00:00:01 dev veth1 self permanent
01:00:5e:00:00:01 dev veth1 self permanent
33:33:ff:00:01:fe dev veth10 self permanent
33:33:ff:00:01:ff dev veth1 self
"""
MADDR = """\
3:\tveth1
\tlink  33:33:00:00:00:01
\tlink  01:00:5e:00:00:01
\tinet  224.0.0.1
\tinet6 ff02::1
"""


@pytest.fixture(scope="module")
def snippet():
    return snippet_module("bridge")


@pytest.mark.parametrize("shown, name, index", [
    ("3: veth1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500", "veth1", 2),
    ("2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500", "eth0", 3),
    # `bridge link` resolved the index to a name: there is no number to read.
    ("3: veth1@br0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500", "veth1", None),
    # Another link's @ifN is not this one's.
    ("4: veth10@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500", "veth1", None),
])
def test_at_link_reads_the_number_behind_at_if(snippet, shown, name, index):
    assert snippet.at_link(shown, name) == index


def test_fdb_self_takes_one_device_s_self_permanent_entries_only(snippet):
    assert snippet.fdb_self(FDB, "veth1") == ["33:33:00:00:00:01", "01:00:5e:00:00:01"]
    assert snippet.fdb_self(FDB, "br0") == ["33:33:00:00:00:01"]


def test_maddr_links_takes_the_link_layer_groups_only(snippet):
    assert snippet.maddr_links(MADDR) == ["33:33:00:00:00:01", "01:00:5e:00:00:01"]
