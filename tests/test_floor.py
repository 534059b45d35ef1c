"""benchmarks/floor.py: the bash script a page's lab.run is measured against."""
from __future__ import annotations

import re
import subprocess

import pytest

from benchmarks import floor
from deepdive import capture
from deepdive.model import DeepDiveError


def commands(script: str) -> list[str]:
    """The page's commands as the script runs them: each line that redirects to $out,
    without the redirections."""
    return [re.sub(r"( </dev/null)? >\$out/\S+ 2>\$out/\S+( &)?$", "", line)
            for line in script.splitlines() if ">$out/" in line]


def test_the_commands_of_the_capture_in_order():
    recorded = [c["cmd"].removesuffix(" &") for s in capture.load("veth")["steps"] for c in s["commands"]]
    assert commands(floor.script("veth")) == recorded
    assert recorded[0] == "ip netns add ns1"  # the namespaces are created too


def test_the_declared_namespaces_when_the_capture_lacks_them(monkeypatch):
    shown = capture.load("veth")
    monkeypatch.setattr(floor.captures, "load",
                        lambda page: {**shown, "steps": [s for s in shown["steps"] if s["id"] != "nodes"]})
    assert commands(floor.script("veth"))[:4] == ["ip netns add ns1", "ip -n ns1 link set lo up",
                                                  "ip netns add ns2", "ip -n ns2 link set lo up"]


def test_background_commands_start_with_and_end_as_recorded():
    script = floor.script("tun")
    read = script[script.index("# step read"):script.index("# step answer")]
    lines = read.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(" &"))
    assert "--count 1 tun0" in lines[start] and lines[start + 1] == "bg_0=$!"
    assert lines[start + 2].startswith("until has $out/read.0.out $'reading tun0'")  # ready
    assert "$'45 00 00 54 ...'" in lines[-2]  # its until text, before the step ends
    assert lines[-1].startswith("wait $bg_0; expect $? 0 ")  # it exited by itself: waited for
    answer = script[script.index("# step answer"):script.index("# step own")]
    assert "kill -INT -$bg_0\nwait $bg_0; expect $? 0 " in answer  # recorded as stopped by SIGINT
    assert script.index("ping -c 2") < script.index("kill -INT -$bg_0")


def test_repeated_until_and_shell_keywords():
    script = floor.script("kube-proxy-compare")
    assert "command time -f '%e s' iptables-restore" in script
    assert re.search(r"for \(\(try = 0; try < \d+; try\+\+\)\); do\ngrep -c ' 00000100 ' /proc/net/netlink "
                     r".*\nrc=\$\?\nhas \$out/\S+ \$'1' && break", script)


def test_the_script_is_valid_bash(tmp_path):
    for page in ("veth", "tun", "kube-proxy-compare", "bash-cni"):
        path = floor.write_script(page, str(tmp_path))
        assert subprocess.run(["bash", "-n", path]).returncode == 0


def test_unknown_page_is_one_line():
    with pytest.raises(DeepDiveError, match="no page 'nope'"):
        floor.script("nope")


@pytest.mark.lab
def test_a_floor_script_ends_with_the_benchmark_that_runs_it(tmp_path):
    """SIGKILL to the measuring process ends the script's unshare (die_with_parent), and
    --kill-child the rest: nothing of the floor outlives the benchmark."""
    import os
    import signal
    import sys
    import time
    from pathlib import Path
    path = floor.write_script("kube-proxy-compare", str(tmp_path))  # ~20 s: still running when killed
    code = f"from benchmarks import floor; floor.measure(['bash', {path!r}])"
    bench = subprocess.Popen([sys.executable, "-c", code], cwd=Path(floor.__file__).parent.parent)

    def floor_pids() -> list[str]:
        return subprocess.run(["pgrep", "-f", path], capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + 30
    while len(floor_pids()) < 2 and time.monotonic() < deadline:  # unshare and its bash
        time.sleep(0.05)
    assert floor_pids(), "the floor script never started"
    os.kill(bench.pid, signal.SIGKILL)
    bench.wait()
    deadline = time.monotonic() + 5
    while floor_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = floor_pids()
    for pid in left:  # should there be any: not beyond this test
        subprocess.run(["kill", "-KILL", pid], capture_output=True)
    assert left == []
