"""deepdive.snapshot.tun_holders: which program holds a tun/tap, read from a fake /proc."""
from __future__ import annotations

import os
from pathlib import Path

from deepdive.snapshot import tun_holders


def _process(proc: Path, pid: int, comm: str, argv: list[str], fds: dict[int, tuple[str, str]]) -> None:
    """A /proc/PID with `fds`: fd -> (what it links to, its fdinfo text)."""
    d = proc / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "fdinfo").mkdir()
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    for fd, (target, info) in fds.items():
        os.symlink(target, d / "fd" / str(fd))
        (d / "fdinfo" / str(fd)).write_text(info)


def test_names_the_program_holding_each_device(tmp_path: Path) -> None:
    _process(tmp_path, 40, "openvpn", ["openvpn", "--config", "x"],
             {3: ("/dev/net/tun", "pos:\t0\nflags:\t02\nmnt_id:\t20\niff:\ttun0\n")})
    _process(tmp_path, 41, "python3", ["python3", "snippets/programs/tuntap_reader.py", "tap0"],
             {4: ("/dev/net/tun", "pos:\t0\niff:\ttap0\n"), 5: ("/dev/null", "pos:\t0\n")})
    _process(tmp_path, 42, "sleep", ["sleep", "9"], {0: ("/dev/null", "pos:\t0\n")})
    (tmp_path / "self").mkdir()  # not a pid
    assert tun_holders(str(tmp_path)) == {"tun0": "openvpn", "tap0": "tuntap_reader.py"}


def test_an_open_tun_not_attached_to_a_device_names_nothing(tmp_path: Path) -> None:
    _process(tmp_path, 7, "qemu", ["qemu"], {3: ("/dev/net/tun", "pos:\t0\nflags:\t02\n")})
    assert tun_holders(str(tmp_path)) == {}


def test_a_process_gone_while_read_is_skipped(tmp_path: Path) -> None:
    _process(tmp_path, 8, "vpn", ["vpn"], {3: ("/dev/net/tun", "iff:\ttun0\n")})
    (tmp_path / "8" / "fdinfo" / "3").unlink()  # exited between listing and reading
    assert tun_holders(str(tmp_path)) == {}
