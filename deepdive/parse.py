"""Reading facts out of tool output, for snippets' checks."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# Neighbour states of an entry the kernel resolved itself; one added by hand is PERMANENT
# (or NOARP), and one still being resolved INCOMPLETE.
LEARNED_STATES = ("REACHABLE", "STALE", "DELAY", "PROBE")


def received(ping_output: str) -> int:
    """How many replies ping counted ("3 packets transmitted, 3 received, ..."); 0 if none."""
    m = re.search(r"(\d+) received", ping_output)
    return int(m.group(1)) if m else 0


def transmitted(ping_output: str) -> int:
    """How many echo requests ping sent ("3 packets transmitted, ..."); 0 if it never got
    that far (no route, say)."""
    m = re.search(r"(\d+) packets transmitted", ping_output)
    return int(m.group(1)) if m else 0


@dataclass(frozen=True)
class Reply:
    """One echo reply as ping printed it: "64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 ...".

    `size` is the ICMP message in bytes (payload plus its 8-byte header)."""

    source: str
    seq: int
    ttl: int
    size: int


def replies(ping_output: str) -> list[Reply]:
    """Every echo reply ping printed, in order; duplicates and late replies included.
    An IPv6 reply's hop limit shows as its ttl, as ping prints it."""
    return [Reply(m["source"], int(m["seq"]), int(m["ttl"]), int(m["size"]))
            for m in re.finditer(r"^(?P<size>\d+) bytes from (?P<source>[\d.]+|[0-9a-f:]+): "
                                 r"icmp_seq=(?P<seq>\d+) ttl=(?P<ttl>\d+)", ping_output, re.M)]


def answered(ping_output: str, by: str, count: int = 1) -> bool:
    """Whether ping printed exactly `count` replies, all from `by`: one to each of its
    requests 1..count, and no other (a reply from elsewhere, a duplicate, a gap all fail)."""
    return [(r.source, r.seq) for r in replies(ping_output)] == [(by, i) for i in range(1, count + 1)]


def neighbour(ip_neigh_output: str, address: str) -> tuple[str | None, str] | None:
    """(MAC, state) of `address` in `ip neigh show` output, or None when it has no entry.

    The state is the entry's last word: REACHABLE, STALE, ... (see LEARNED_STATES) for
    an entry that ARP resolved, PERMANENT for one added by hand, INCOMPLETE (and no
    MAC) while a request is unanswered."""
    for line in ip_neigh_output.splitlines():
        words = line.split()
        if words and words[0] == address:
            mac = words[words.index("lladdr") + 1] if "lladdr" in words else None
            return mac, words[-1]
    return None


def learned(bridge_fdb_output: str, entry: str) -> bool:
    """Whether `bridge fdb show` output has a line that starts with `entry` (such as
    "02:00:00:00:01:01 dev veth1") and was learned from traffic: it carries neither the
    `permanent` nor the `static` flag of an entry added by hand. (`bridge fdb show
    dynamic` still lists static entries.)"""
    for line in bridge_fdb_output.splitlines():
        words = line.split()
        if words[:len(entry.split())] == entry.split() and not {"permanent", "static"} & set(words):
            return True
    return False


def link_local(mac: str) -> str:
    """The IPv6 link-local address Linux gives an Ethernet interface with this MAC (its
    default addr_gen_mode 0, modified EUI-64 as in RFC 4291 appendix A: the
    universal/local bit flipped, ff:fe in the middle): "0a:58:0a:f4:01:02" ->
    "fe80::858:aff:fef4:102". Raises ValueError unless `mac` is six bytes in hex."""
    octets = bytes.fromhex(mac.replace(":", ""))
    if len(octets) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    iid = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def inet6(ip_addr_output: str) -> list[str]:
    """Each IPv6 address in `ip addr show` output with the rest of its line, spaces
    trimmed: "fe80::858:aff:fef4:102/64 scope link" (flags such as tentative or
    dadfailed follow the scope)."""
    return [m.group(1).strip() for m in re.finditer(r"^\s+inet6 (.*)$", ip_addr_output, re.M)]


def indexes(ip_link_output: str, name: str) -> tuple[int, int] | None:
    """(the link's own index, N) from the "2: eth0@if3:" that `ip link` and `ip addr`
    print for a link whose peer or parent is in another namespace, where N is that
    device's index in its own namespace; None when no line names `name` that way."""
    m = re.search(rf"^(\d+): {re.escape(name)}@if(\d+):", ip_link_output, re.M)
    return (int(m.group(1)), int(m.group(2))) if m else None
