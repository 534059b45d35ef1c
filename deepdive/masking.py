"""Volatile fields, and comparing captures with them masked.

Only what legitimately changes between identical runs on one kernel is masked: round-trip
times, kernel timers and ages, timestamps, identifiers the kernel or a process picks
(ICMP echo and IP ids, BPF program ids, conntrack ids, pids, socket inodes), ephemeral
ports (32768-60999, which also covers a VXLAN tunnel's outer source port), TCP initial
sequence numbers and timestamps with the checksums that depend on them, and counters of
traffic whose packet count depends on timing (TCP acknowledgements and retransmissions,
IPv6 chatter): `ip -s` bytes/packets/mcast, iptables, nftables and IPVS packet and byte
counters, IPVS connection states and rates. Names, MACs and addresses are fixed by the
snippets, and what the kernel decides (exit status, flags, errors and drops, BPF tags and
sizes, nftables handles, which are numbered from 1 in a fresh namespace) is compared as
it is: on another kernel a tag or size may differ, and `lab.check` notes the kernel.
A check reads the unmasked output, so a claim about a count is still tested.

Masks for one tool apply to that tool's output only, the tool being the program a
command runs after `ip netns exec NS`, `env VAR=...` and `timeout`. A page may add its
own masks for values that are random by design (`Page(masks=[(regex, replacement)])`),
which apply to every output and to every string of the snapshots (link names, MACs);
its capture records them under "masks" and both sides of a comparison use the fresh
run's list.
"""
from __future__ import annotations

import copy
import difflib
import json
import posixpath
import re
from typing import Any, Callable, Iterable

Repl = str | Callable[[re.Match[str]], str]
Mask = tuple[re.Pattern[str], Repl]
EPHEMERAL = range(32768, 61000)  # Linux's default ip_local_port_range, 32768-60999


def _ephemeral(m: re.Match[str]) -> str:
    port = int(m.group("port"))
    return m.group(0) if port not in EPHEMERAL else m.group(0)[:m.start("port") - m.start()] + "<port>"


def _counters(m: re.Match[str]) -> str:
    """An `ip -s link` RX/TX header and its row: bytes, packets (and RX mcast) masked."""
    cells = m.group("row").split()  # right-aligned: the widths change with the values
    volatile = {0, 1, 5} if m.group("dir") == "RX" else {0, 1}
    return m.group("header") + "    " + " ".join("<n>" if i in volatile else c for i, c in enumerate(cells))


def _counter_columns(m: re.Match[str]) -> str:
    """`iptables -L -v` rule rows: pkts and bytes masked, right-alignment dropped."""
    num = m.group("num")
    return (f"{num.strip()} " if num else "") + "<pkts> <bytes> "


def _ipvs_rates(m: re.Match[str]) -> str:
    """Rows of `ipvsadm -Ln --rate`: every figure is a rate, all masked."""
    rows = re.sub(r"(?m)^(\s*(?:TCP|UDP|SCTP|FWM|->)\s+\S+)(?:\s+\d+[KMGT]?){5}[ \t]*$",
                  r"\1 <rate>", m.group("rows"))
    return m.group("header") + rows


def _syn(m: re.Match[str]) -> str:
    """A TCP SYN or SYN-ACK in tcpdump: its sequence numbers are the random initial ones;
    so is the ack of the RST that refuses a SYN (the SYN's ISN + 1)."""
    return re.sub(r"\b(seq|ack) \d+", r"\1 <isn>", m.group(0))


# Any command's output.
MASKS: tuple[Mask, ...] = (
    # ping: per-packet rtt, the summary's total time and its rtt statistics
    (re.compile(r"time[=<]\d+(?:\.\d+)? ms"), "time=<rtt> ms"),
    (re.compile(r"time \d+ms"), "time <elapsed>ms"),
    (re.compile(r"(rtt|round-trip) min/avg/max(?:/mdev)? = [\d./]+ ms"), r"\1 min/avg/max/mdev = <rtt> ms"),
    # ip -d link / bridge -s fdb / ip -s neigh: kernel timers and "used/updated" ages
    (re.compile(r"(_timer)\s+\d+\.\d+"), r"\1 <timer>"),
    (re.compile(r"\b(used|updated) \d+(?:/\d+)*"), r"\1 <age>"),
    # ICMP echo identifiers come from the pinging process (its pid, or a socket port)
    (re.compile(r"(ICMP echo (?:request|reply), id )\d+"), r"\1<id>"),
    # tcpdump: a timestamp at the start of each line
    (re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{6}", re.M), "<time>"),
    # ephemeral ports: tcpdump's 10.0.0.1.34104, ss/socat's 10.0.0.1:34104, [fe80::1]:34104
    (re.compile(r"(?:\b\d{1,3}(?:\.\d{1,3}){3}|\])[.:](?P<port>\d{5})\b"), _ephemeral),
)

# One tool's output, by program name (see tool()).
TOOL_MASKS: dict[str, tuple[Mask, ...]] = {
    "ip": (
        # ip -s link: RX/TX bytes and packets, RX mcast (errors and drops are kept)
        (re.compile(r"(?m)(?P<header>^\s+(?P<dir>RX|TX):\s+bytes[^\n]*\n)(?P<row>[ \t]+\d[^\n]*)"),
         _counters),
        # ip route get: the seconds a learned path MTU (a route cache entry) has left
        (re.compile(r"\bexpires \d+sec\b"), "expires <time>sec"),
        # ip route get: the uid the route was looked up for, the caller's (nobody's in a
        # rootless lab, which keeps the caller's uid)
        (re.compile(r"\buid \d+\b"), "uid <uid>"),
    ),
    "tcpdump": (
        # -v: the IP id, and checksums, which depend on ids, ports and sequence numbers
        (re.compile(r"(\bttl \d+, id )\d+"), r"\1<id>"),
        (re.compile(r"\b(cksum|sum) 0x[0-9a-f]+"), r"\1 <cksum>"),
        (re.compile(r"(<cksum> (?:\(incorrect )?-> )0x[0-9a-f]+"), r"\1<cksum>"),
        # TCP: initial sequence numbers in a handshake, timestamp option values
        (re.compile(r"(?m)^.*Flags \[S[^\]]*\].*$"), _syn),
        (re.compile(r"(?m)^.*Flags \[R\.\], seq 0, ack \d+.*$"), _syn),
        (re.compile(r"\bTS val \d+ ecr \d+"), "TS val <ts> ecr <ts>"),
        # The summary's "received by filter" is the kernel's count when tcpdump asks for
        # it on exit, so it takes in what arrived after the last packet it printed (an
        # ARP exchange, a retransmission): "captured" is the count of what it showed.
        (re.compile(r"(?m)^\d+ packets? received by filter$"), "<n> packets received by filter"),
    ),
    "conntrack": (
        # the entry's remaining timeout (3rd column; 5th with -o extended), its id and ICMP ids
        (re.compile(r"(?m)^((?:\s*\[\w+\]\s+)?(?:ipv[46]\s+\d+\s+)?[a-z0-9]+\s+\d+\s+)\d+"),
         r"\1<timeout>"),
        (re.compile(r"\bid=\d+"), "id=<id>"),
        (re.compile(r"\b[sd]port=(?P<port>\d{5})\b"), _ephemeral),
    ),
    "bpftool": (
        (re.compile(r"(?m)^\d+: "), "<id>: "),
        (re.compile(r"\b(id|btf_id) \d+"), r"\1 <id>"),
        (re.compile(r"\bmap_ids [\d,]+"), "map_ids <ids>"),
        (re.compile(r"\bloaded_at \S+"), "loaded_at <time>"),
        (re.compile(r'"(id|btf_id|loaded_at)":\d+'), r'"\1":<n>'),
        (re.compile(r'"map_ids":\[[\d,]*\]'), '"map_ids":<ids>'),
    ),
    "tc": (
        # tc filter show: a BPF program's id
        (re.compile(r"(\bbpf\b.*?\bid )\d+"), r"\1<id>"),
    ),
    "iptables": (
        # -L -v: policy counters and the pkts/bytes columns; -S -v: -c PKTS BYTES
        (re.compile(r"\(policy (\w+) \d+[KMGT]? packets, \d+[KMGT]? bytes\)"),
         r"(policy \1 <pkts> packets, <bytes> bytes)"),
        # (with --line-numbers, three numbers lead a row and the first is the rule's)
        (re.compile(r"(?m)^\s*(?P<num>\d+\s+(?=\d+[KMGT]?\s+\d+[KMGT]?\s+\D))?"
                    r"\d+[KMGT]?\s+\d+[KMGT]?\s+(?=\D)"), _counter_columns),
        (re.compile(r"-c \d+ \d+"), "-c <pkts> <bytes>"),
        # iptables-save: [PKTS:BYTES] and the date of its comments
        (re.compile(r"\[\d+:\d+\]"), "[<pkts>:<bytes>]"),
        (re.compile(r"(?m)^(# (?:Generated by .*|Completed) on ).*$"), r"\1<date>"),
    ),
    "nft": (
        (re.compile(r"\bcounter packets \d+ bytes \d+"), "counter packets <pkts> bytes <bytes>"),
        (re.compile(r"\bexpires [\dhms]+"), "expires <time>"),
    ),
    "ipvsadm": (
        # -Ln: ActiveConn and InActConn follow connection states; --stats: packets and
        # bytes (Conns is kept); --rate: every figure; -Lnc: the expire timer
        (re.compile(r"(?m)^(\s*->\s+\S+\s+\w+\s+\d+)\s+\d+\s+\d+[ \t]*$"), r"\1 <conns>"),
        (re.compile(r"(?m)(?P<header>^Prot LocalAddress:Port\s+CPS[^\n]*\n[^\n]*\n)"
                    r"(?P<rows>[\s\S]*)"), _ipvs_rates),
        (re.compile(r"(?m)^(\s*(?:TCP|UDP|SCTP|FWM|->)\s+\S+\s+\d+[KMGT]?)(?:\s+\d+[KMGT]?){4}[ \t]*$"),
         r"\1 <pkts/bytes>"),
        (re.compile(r"(?m)^(TCP|UDP|SCTP)\s+\d\d:\d\d\s"), r"\1 <expire> "),
    ),
    "ss": (
        (re.compile(r"\b(pid=|ino:|sk:)[0-9a-f]+"), r"\1<id>"),
        (re.compile(r"\b(rto|rtt|mrtt|minrtt|rcv_rtt|ato|lastsnd|lastrcv|lastack|busy):[\d./]+(?:ms)?"),
         r"\1:<t>"),
        (re.compile(r"\b(send|pacing_rate|delivery_rate) \d+(?:\.\d+)?[KMG]?bps"), r"\1 <rate>"),
        (re.compile(r"\bbw:\d+(?:\.\d+)?[KMG]?bps"), "bw:<rate>"),
    ),
    "socat": (
        (re.compile(r"(?m)^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} socat\[\d+\]"), "<time> socat[<pid>]"),
        (re.compile(r"\bchild process \d+"), "child process <pid>"),
    ),
}
TOOL_ALIASES = {"ip6tables": "iptables"}
VOLATILE_META = ("date", "seconds")  # differ from run to run by nature


def tool(argv: Iterable[str]) -> str:
    """The program whose output a command prints: ("ip", "netns", "exec", "ns1", "env",
    "A=1", "/usr/sbin/iptables-nft-save") gives "iptables"; "" for an empty argv."""
    args = list(argv)
    while args:
        name = posixpath.basename(args[0])
        if name == "ip" and args[1:3] == ["netns", "exec"] and len(args) > 4:
            args = args[4:]
        elif name == "env":
            args = args[1:]
            while args and (args[0].startswith("-") or "=" in args[0]):
                args = args[1:]
        elif name == "timeout":
            args = args[1:]
            while args and args[0].startswith("-"):
                args = args[2 if args[0] in ("-s", "-k") else 1:]  # these take a value
            args = args[1:]  # the duration
        else:
            base = re.sub(r"-(?:nft|legacy|save)(?=-|$)", "", name)  # iptables-nft-save
            return TOOL_ALIASES.get(base, base)
    return ""


def compile_masks(pairs: Iterable[tuple[str, str]] | None) -> tuple[Mask, ...]:
    """A page's (regex, replacement) pairs, compiled. Raises re.error (IndexError for
    an unknown group name) when a pattern or a replacement's group reference is bad."""
    out = []
    for pattern, repl in pairs or ():
        compiled = re.compile(pattern)
        compiled.sub(repl, "")  # parses the replacement's group references, even unmatched
        out.append((compiled, repl))
    return tuple(out)


def mask_text(text: str, argv: Iterable[str] = (), extra: tuple[Mask, ...] = ()) -> str:
    """`text` with volatile fields replaced by <placeholders>: the masks for every
    output, those of the command's tool (from argv), then `extra` (a page's own)."""
    for pattern, repl in (*MASKS, *TOOL_MASKS.get(tool(argv), ()), *extra):
        text = pattern.sub(repl, text)
    return text


KERNEL_RELEASE = "<kernel release>"


def page_masks(capture: dict[str, Any]) -> list[dict[str, str]]:
    """The masks a capture records ([{"pattern": ..., "replacement": ...}]), or []."""
    masks = capture.get("masks") or []
    return masks if isinstance(masks, list) else []


def masked(capture: dict[str, Any], masks: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A copy of the capture with every volatile field replaced by a placeholder.

    `masks` are the page's own (default: those the capture records).
    """
    extra = compile_masks((m["pattern"], m["replacement"])
                          for m in (page_masks(capture) if masks is None else masks))
    out = copy.deepcopy(capture)
    # The kernel's release, where a tool prints it (the bonding driver's version line,
    # `uname -r`), names the kernel rather than anything the page did; the capture's
    # meta still records it, and drift() reports a change of kernel as such.
    release = out.get("meta", {}).get("kernel")
    for key in VOLATILE_META:
        out.get("meta", {}).pop(key, None)
    for step in out.get("steps", []):
        if extra and step.get("snapshot"):
            # A page's masks are for values random by design (a CNI plugin's veth names),
            # and the snapshot, which the diagrams are drawn from, holds them too.
            step["snapshot"] = _mask_strings(step["snapshot"], extra)
        for c in step.get("commands", []):
            for stream in ("stdout", "stderr"):
                text = mask_text(c.get(stream, ""), c.get("argv", ()), extra)
                c[stream] = text.replace(release, KERNEL_RELEASE) if release else text
    return out


def _mask_strings(value: Any, masks: tuple[Mask, ...]) -> Any:
    """`value` (JSON data) with `masks` applied to every string in it, keys included."""
    if isinstance(value, str):
        for pattern, repl in masks:
            value = pattern.sub(repl, value)
        return value
    if isinstance(value, list):
        return [_mask_strings(v, masks) for v in value]
    if isinstance(value, dict):
        return {_mask_strings(k, masks): _mask_strings(v, masks) for k, v in value.items()}
    return value


def drift(committed: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Readable differences between two captures of one page, volatile fields masked.

    Each entry is one finding naming page and step (and command, or node and link, or
    field): outputs come with a unified diff, snapshot changes as
    "page vxlan, step tunnel, snapshot: server1/vx0: mtu 1450 -> 1500". What the site
    shows from a capture besides outputs is compared too: its title, step titles, the
    meta versions (kernel, iproute2, pyroute2, lab; not the date) and the checks.
    """
    page = fresh.get("page", committed.get("page", "?"))
    masks = page_masks(fresh)
    a, b = masked(committed, masks), masked(fresh, masks)
    problems = _field_changes(f"page {page}", "title", a.get("title"), b.get("title"))
    meta_a, meta_b = a.get("meta", {}), b.get("meta", {})
    for key in sorted(meta_a.keys() | meta_b.keys()):
        problems += _field_changes(f"page {page}, meta", key, meta_a.get(key), meta_b.get(key))
    if page_masks(committed) != masks:
        problems.append(f"page {page}: the page's own masks changed: "
                        f"{_show(page_masks(committed))} -> {_show(masks)}")
    old_steps = {s["id"]: s for s in a.get("steps", [])}
    new_steps = {s["id"]: s for s in b.get("steps", [])}
    for sid in old_steps.keys() - new_steps.keys():
        problems.append(f"page {page}, step {sid}: in the committed capture, not in this run")
    for sid in new_steps.keys() - old_steps.keys():
        problems.append(f"page {page}, step {sid}: new in this run, not in the committed capture")
    for sid, new in new_steps.items():
        old = old_steps.get(sid)
        if old is not None:
            problems.extend(_step_drift(f"page {page}, step {sid}", old, new))
    old_checks, new_checks = _checks(a), _checks(b)
    if old_checks != new_checks:
        problems.append(f"page {page}, checks:\n" + _diff(old_checks, new_checks))
    return problems


def _checks(capture: dict[str, Any]) -> list[str]:
    return [f"{'pass' if c.get('passed') else 'FAIL'}: {c.get('claim')} (after step {c.get('after')})"
            for c in capture.get("checks", [])]


def _step_drift(where: str, old: dict, new: dict) -> list[str]:
    problems = _field_changes(where, "title", old.get("title"), new.get("title"))
    old_cmds, new_cmds = old.get("commands", []), new.get("commands", [])
    if [c["cmd"] for c in old_cmds] != [c["cmd"] for c in new_cmds]:
        problems.append(f"{where}: the commands changed:\n" + _diff(
            [c["cmd"] for c in old_cmds], [c["cmd"] for c in new_cmds]))
    else:
        for o, n in zip(old_cmds, new_cmds):
            command = f"{where}, command `{n['cmd']}`"
            if o["rc"] != n["rc"]:
                problems.append(f"{command}: exit status {o['rc']} -> {n['rc']}")
            for stream in ("stdout", "stderr"):
                if o[stream] != n[stream]:
                    problems.append(f"{command}, {stream}:\n" + _diff(
                        o[stream].splitlines(), n[stream].splitlines()))
    problems += [f"{where}, snapshot: {line}"
                 for line in snapshot_changes(old.get("snapshot"), new.get("snapshot"))]
    return problems


def snapshot_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """What changed between two snapshots (see deepdive.snapshot), one line per node,
    link or field: "server1/vx0: mtu 1450 -> 1500", "ns2: node new in this run"."""
    if old == new:
        return []
    if old is None or new is None:
        return ["taken only " + ("in this run" if old is None else "in the committed capture")]
    lines = []
    old_nodes = {n["name"]: n for n in old.get("nodes", [])}
    new_nodes = {n["name"]: n for n in new.get("nodes", [])}
    lines += [f"{n}: node in the committed capture, not in this run" for n in old_nodes if n not in new_nodes]
    lines += [f"{n}: node new in this run" for n in new_nodes if n not in old_nodes]
    for name, node in new_nodes.items():
        if name not in old_nodes:
            continue
        old_links = {l["name"]: l for l in old_nodes[name].get("links", [])}
        new_links = {l["name"]: l for l in node.get("links", [])}
        lines += [f"{name}/{l}: link in the committed capture, not in this run"
                  for l in old_links if l not in new_links]
        lines += [f"{name}/{l}: link new in this run" for l in new_links if l not in old_links]
        for link, fields in new_links.items():
            if link in old_links:
                lines += [f"{name}/{link}: {change}" for change in _changes("", old_links[link], fields)]
    rest_a = {k: v for k, v in old.items() if k != "nodes"}
    rest_b = {k: v for k, v in new.items() if k != "nodes"}
    lines += _changes("", rest_a, rest_b)
    if not lines and [n["name"] for n in old.get("nodes", [])] != [n["name"] for n in new.get("nodes", [])]:
        lines.append(f"node order {_show(list(old_nodes))} -> {_show(list(new_nodes))}")
    if not lines:  # same content, different order of links within a node
        lines.append("the order of links changed")
    return lines


def _changes(prefix: str, old: Any, new: Any) -> list[str]:
    """"field old -> new" for each differing leaf; dicts are walked as field.subfield."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += _changes(f"{prefix}{key}.", old.get(key), new.get(key))
        return out
    return [f"{prefix.rstrip('.')} {_show(old)} -> {_show(new)}"]


def _field_changes(where: str, field: str, old: Any, new: Any) -> list[str]:
    return [] if old == new else [f"{where}: {field} {_show(old)} -> {_show(new)}"]


def _show(value: Any) -> str:
    return value if isinstance(value, str) and value else json.dumps(value, ensure_ascii=False)


def _diff(old: list[str], new: list[str]) -> str:
    lines = difflib.unified_diff(old, new, "committed", "this run", lineterm="", n=2)
    return "\n".join("    " + line for line in lines)
