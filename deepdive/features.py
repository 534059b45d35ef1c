"""What the running kernel can do, found by trying, and remembered per kernel release.

A link kind is available when `ip link add` of that kind succeeds in a scratch network
namespace. The answer only changes with the kernel, so it is cached in
~/.cache/deepdive/ under the release name.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Callable

# Part of the cache's file name: a change to how kinds are probed starts a new cache.
PROBE_VERSION = 2
# Extra arguments a kind needs before the kernel will create it.
PROBE_ARGS = {"veth": ["peer", "name", "ddprobe1"], "vxlan": ["id", "1", "dstport", "4789"]}


def probe_argv(kind: str) -> list[list[str]]:
    """Commands that create a `kind` link named ddprobe0, in a namespace of its own."""
    if kind in ("tun", "tap"):
        return [["ip", "tuntap", "add", "ddprobe0", "mode", kind]]
    if kind in ("vlan", "ipvlan", "macvlan", "macvtap"):
        # Stacked kinds need a parent to sit on.
        extra = ["id", "10"] if kind == "vlan" else []
        return [["ip", "link", "add", "ddparent0", "type", "veth", "peer", "name", "ddparent1"],
                ["ip", "link", "add", "link", "ddparent0", "name", "ddprobe0", "type", kind, *extra]]
    return [["ip", "link", "add", "ddprobe0", "type", kind, *PROBE_ARGS.get(kind, [])]]


def cache_dir() -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "deepdive"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a user without a writable home just probes every time
    return path if os.access(path, os.W_OK) else None


def _read(name: str) -> dict | None:
    directory = cache_dir()
    try:
        return json.loads((directory / name).read_text()) if directory else None
    except (OSError, ValueError):
        return None


def _write(name: str, value: dict) -> None:
    directory = cache_dir()
    if directory:
        (directory / name).write_text(json.dumps(value, indent=1) + "\n")


def cached(name: str, compute: Callable[[], dict]) -> dict:
    """A JSON value kept in the cache directory, computed once."""
    value = _read(name)
    if value is None:
        value = compute()
        _write(name, value)
    return value


def missing_kinds(kinds: tuple[str, ...], unshare: list[str]) -> list[str]:
    """The kinds among `kinds` this kernel cannot create (cached per release)."""
    name = f"kinds-v{PROBE_VERSION}-{platform.release()}.json"
    known = _read(name) or {}
    todo = [k for k in kinds if k not in known]
    if todo:
        known.update({kind: _can_create(kind, unshare) for kind in todo})
        _write(name, known)
    return [k for k in kinds if not known[k]]


def _can_create(kind: str, unshare: list[str]) -> bool:
    # One scratch namespace per probe; `ip -batch -` reads the commands from stdin so
    # that no shell is involved, and stops at the first that fails.
    batch = "".join(" ".join(argv[1:]) + "\n" for argv in probe_argv(kind))  # without "ip"
    res = subprocess.run(["unshare", *unshare, "--", "ip", "-batch", "-"], input=batch,
                         capture_output=True, text=True, timeout=10)
    return res.returncode == 0
