"""Volatile fields, and comparing captures with them masked.

Only what legitimately changes between identical runs is masked: round-trip times,
kernel timers, timestamps, the capture date. Names, MACs and addresses are fixed by the
snippets, so they are compared as they are.
"""
from __future__ import annotations

import copy
import difflib
import re
from typing import Any

MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    # ping: per-packet rtt, the summary's total time and its rtt statistics
    (re.compile(r"time[=<]\d+(?:\.\d+)? ms"), "time=<rtt> ms"),
    (re.compile(r"time \d+ms"), "time <elapsed>ms"),
    (re.compile(r"(rtt|round-trip) min/avg/max(?:/mdev)? = [\d./]+ ms"), r"\1 min/avg/max/mdev = <rtt> ms"),
    # ip -d link / bridge -s: kernel timers and "used/updated" ages
    (re.compile(r"(_timer)\s+\d+\.\d+"), r"\1 <timer>"),
    (re.compile(r"\b(used|updated) \d+/\d+"), r"\1 <age>"),
    # ICMP echo identifiers come from the pinging process (its pid, or a socket port)
    (re.compile(r"(ICMP echo (?:request|reply), id )\d+"), r"\1<id>"),
    # tcpdump: a timestamp at the start of each line
    (re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{6}", re.M), "<time>"),
)
VOLATILE_META = ("date",)


def mask_text(text: str) -> str:
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    return text


def masked(capture: dict[str, Any]) -> dict[str, Any]:
    """A copy of the capture with every volatile field replaced by a placeholder."""
    out = copy.deepcopy(capture)
    for key in VOLATILE_META:
        out.get("meta", {}).pop(key, None)
    for step in out.get("steps", []):
        for c in step.get("commands", []):
            c["stdout"] = mask_text(c.get("stdout", ""))
            c["stderr"] = mask_text(c.get("stderr", ""))
    return out


def drift(committed: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Readable differences between two captures of one page, volatile fields masked.

    Each entry names page, step and command, followed by a unified diff.
    """
    page = fresh.get("page", committed.get("page", "?"))
    a, b = masked(committed), masked(fresh)
    problems: list[str] = []
    old_steps = {s["id"]: s for s in a.get("steps", [])}
    new_steps = {s["id"]: s for s in b.get("steps", [])}
    for sid in old_steps.keys() - new_steps.keys():
        problems.append(f"page {page}, step {sid}: in the committed capture, not in this run")
    for sid in new_steps.keys() - old_steps.keys():
        problems.append(f"page {page}, step {sid}: new in this run, not in the committed capture")
    for sid, new in new_steps.items():
        old = old_steps.get(sid)
        if old is None:
            continue
        problems.extend(_step_drift(page, sid, old, new))
    old_checks = [(c["claim"], c["passed"]) for c in a.get("checks", [])]
    new_checks = [(c["claim"], c["passed"]) for c in b.get("checks", [])]
    if old_checks != new_checks:
        problems.append(f"page {page}, checks:\n" + _diff(
            [f"{'pass' if p else 'FAIL'}: {c}" for c, p in old_checks],
            [f"{'pass' if p else 'FAIL'}: {c}" for c, p in new_checks]))
    return problems


def _step_drift(page: str, sid: str, old: dict, new: dict) -> list[str]:
    problems = []
    old_cmds, new_cmds = old.get("commands", []), new.get("commands", [])
    if [c["cmd"] for c in old_cmds] != [c["cmd"] for c in new_cmds]:
        return [f"page {page}, step {sid}: the commands changed:\n" + _diff(
            [c["cmd"] for c in old_cmds], [c["cmd"] for c in new_cmds])]
    for o, n in zip(old_cmds, new_cmds):
        where = f"page {page}, step {sid}, command `{n['cmd']}`"
        if o["rc"] != n["rc"]:
            problems.append(f"{where}: exit status {o['rc']} -> {n['rc']}")
        for stream in ("stdout", "stderr"):
            if o[stream] != n[stream]:
                problems.append(f"{where}, {stream}:\n" + _diff(
                    o[stream].splitlines(), n[stream].splitlines()))
    if old.get("snapshot") != new.get("snapshot"):
        problems.append(f"page {page}, step {sid}: the state snapshot (and so its diagram) changed")
    return problems


def _diff(old: list[str], new: list[str]) -> str:
    lines = difflib.unified_diff(old, new, "committed", "this run", lineterm="", n=2)
    return "\n".join("    " + line for line in lines)
