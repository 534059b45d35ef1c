"""A run is a sealed box: its namespaces look like a machine, and nothing of it outlives
it, however it ends. Lab tests on the real kernel, with throwaway pages in a directory
of their own ($DEEPDIVE_SNIPPETS); each looks only at what its own runs made, so they
pass while other lab runs are in progress on the machine."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, caller_state, eventually, of_launcher
from deepdive import lab, registry, runs

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("host_lab")]

# A page whose run holds, at once, what used to outlive a run: a capture tool that
# switches to its own user (tcpdump drops root and with it its die-with-parent setting),
# a daemon that detaches, and a long command in the foreground.
HOLDER = '''
from deepdive.model import Page, cmd
page = Page(name="holder", title="holder", nodes=("ns1",))
page.step("hold", "hold",
    cmd("ip netns exec ns1 tcpdump -i lo -n -l", background=True, ready="listening on"),
    "start-stop-daemon --start --background --make-pidfile --pidfile /run/sleeper.pid --exec /bin/sleep -- 1000",
    "setsid -f sleep 1001",
    "touch /etc/holder-was-here /var/lib/holder-was-here /tmp/holder-was-here",
    cmd("sleep 30", timeout=60))
@page.check("hold", "fails, so that a run that does finish publishes nothing into docs/")
def _(lab):
    return False
'''

MACHINE = '''
import sys
from deepdive.model import Page
page = Page(name="machine", title="machine", nodes=("ns1",))
page.step("look", "look",
    "ip link add br0 type bridge",
    "ls /sys/class/net",
    "cat /sys/class/net/br0/bridge/stp_state",
    "ip netns exec ns1 ls /sys/class/net",
    "ping -c 1 -W 1 127.0.0.1",
    "ls -A /run/netns /var/lib/cni /etc/netns /etc/cni",
    "touch /etc/machine-was-here /var/lib/machine-was-here /tmp/machine-was-here /run/machine-was-here",
    "start-stop-daemon --start --background --make-pidfile --pidfile /run/sleeper.pid --exec /bin/sleep -- 1000",
    "setsid -f sleep 1001",
    "ps -e -o pid=,comm=",
    "python3 -S -c 'import ctypes; v = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(v)); print(v.value)'")
@page.check("look", "prints")
def _(lab):
    print("a check that prints")
    return True
@page.check("look", "exits")
def _(lab):
    sys.exit(0)
'''

WRITTEN = ("/etc/{}-was-here", "/var/lib/{}-was-here", "/tmp/{}-was-here", "/run/{}-was-here")


@pytest.fixture
def pages(monkeypatch) -> Path:
    """A world-readable directory of throwaway pages (user nobody runs them too)."""
    directory = Path(tempfile.mkdtemp(prefix="deepdive-test-pages-"))
    directory.chmod(0o755)
    (directory / "holder.py").write_text(HOLDER)
    (directory / "machine.py").write_text(MACHINE)
    monkeypatch.setenv("DEEPDIVE_SNIPPETS", str(directory))
    yield directory
    shutil.rmtree(directory)


def nothing_written(name: str) -> bool:
    return not any(os.path.lexists(p.format(name)) for p in WRITTEN)


def test_the_lab_host_namespace_looks_like_a_machine(pages):
    before = caller_state()
    outcome = lab.run_host(registry.load("machine", snippets=pages))
    out = {c["cmd"]: c["stdout"] for c in outcome.capture["steps"][1]["commands"]}
    # Its own sysfs: its own interfaces, and a bridge's attributes are there.
    assert out["ls /sys/class/net"].split() == ["br0", "lo"]
    assert out["cat /sys/class/net/br0/bridge/stp_state"] == "0\n"
    assert out["ip netns exec ns1 ls /sys/class/net"].split() == ["lo"]
    assert " 1 received" in out["ping -c 1 -W 1 127.0.0.1"]  # lo is up
    # Directories that tools keep per-machine state in start empty.
    assert out["ls -A /run/netns /var/lib/cni /etc/netns /etc/cni"].split() == [
        "/etc/cni:", "/etc/netns:", "/run/netns:", "ns1", "/var/lib/cni:"]
    # Its own PID namespace: the page's process is PID 1, and the caller's are not seen.
    ps = [line.split() for line in out["ps -e -o pid=,comm="].splitlines()]
    assert ps[0] == ["1", "python"] and len(ps) < 10
    # So commands need no die-with-parent setting (PR_GET_PDEATHSIG 0): the namespace ends
    # them, and they start without a preexec_fn, on subprocess's fast path.
    assert out[next(c for c in out if c.startswith("python3 -S"))] == "0\n"
    # A check that prints does not corrupt the capture; one that calls sys.exit fails.
    assert [(c["claim"], c["passed"]) for c in outcome.capture["checks"]] == [("prints", True), ("exits", False)]
    assert outcome.capture["checks"][1]["error"] == "the check called sys.exit(0)"
    # Files written in /etc, /var/lib, /tmp and /run stayed inside, and so did the daemon.
    assert nothing_written("machine")
    assert of_launcher(os.getpid()) == []
    assert caller_state() == before


def test_a_normal_user_gets_the_same_machine(pages):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to user nobody")
    code = ("import json, sys; from deepdive import lab, registry; "
            "o = lab.run_host(registry.load('machine')); json.dump(o.capture, sys.stdout)")
    before = caller_state()
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, HOME="/tmp"))
    assert res.returncode == 0, res.stderr
    out = {c["cmd"]: c["stdout"] for c in json.loads(res.stdout)["steps"][1]["commands"]}
    assert out["ls /sys/class/net"].split() == ["br0", "lo"]
    assert " 1 received" in out["ping -c 1 -W 1 127.0.0.1"]
    assert nothing_written("machine")
    assert caller_state() == before


def _start_run(page: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "invoke", "lab.run", "--page", page],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ, **env))


# Fault injection: each way a run can end, at moments from its start-up to its busiest
# (tcpdump, a daemon and a long command all running). Bounded: about 2 s a case.
SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGKILL")
MOMENTS = (0.05, 0.3, "holding")


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
@pytest.mark.parametrize("sig", SIGNALS)
def test_nothing_outlives_a_run_however_it_ends(pages, sig, moment):
    before = caller_state()
    proc = _start_run("holder")
    if moment == "holding":
        assert eventually(lambda: any("sleep 30" in p for p in of_launcher(proc.pid)), 15), \
            "the page never reached its long command"
    else:
        time.sleep(moment)
    os.killpg(proc.pid, getattr(signal, sig))  # as a terminal does: the whole group
    _out, err = proc.communicate(timeout=30)
    assert eventually(lambda: of_launcher(proc.pid) == [], 5), of_launcher(proc.pid)
    assert caller_state() == before
    assert nothing_written("holder")
    if sig != "SIGKILL":
        assert "Traceback" not in err
        if proc.returncode == -getattr(signal, sig):
            # Ended by the signal's default action before the task could handle it,
            # which is before any lab was built: nothing to say.
            assert err == "" and moment != "holding"
        else:
            assert proc.returncode == 130, err
            last = err.strip().splitlines()[-1]
            assert last.startswith("interrupted") and "still running" not in last, err


def test_killing_the_run_s_own_processes_ends_it_whole(pages):
    """SIGKILL to unshare, then to the run's PID 1: the PID namespace ends either way."""
    for victim in ("unshare", "deepdive.inlab"):
        before = caller_state()
        proc = _start_run("holder")
        assert eventually(lambda: any("sleep 30" in p for p in of_launcher(proc.pid)), 15)
        target = next(pid for pid, run_id in runs.marked().items()
                      if run_id.rsplit("-", 2)[1] == str(proc.pid) and victim in runs.describe(pid))
        os.kill(target, signal.SIGKILL)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1, err
        assert eventually(lambda: of_launcher(proc.pid) == [], 5), of_launcher(proc.pid)
        assert caller_state() == before


def test_the_page_time_limit_is_enforced(pages):
    before = caller_state()
    started = time.monotonic()
    proc = _start_run("holder", DEEPDIVE_PAGE_TIMEOUT="2")
    _out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 15
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1] == (
        "error: page holder did not finish within 2 s and was stopped (it was at holder: hold (5 commands))")
    assert of_launcher(proc.pid) == []
    assert caller_state() == before


def test_after_ctrl_c_only_this_run_s_processes_are_counted(pages):
    other = _start_run("holder")
    try:
        assert eventually(lambda: any("sleep 30" in p for p in of_launcher(other.pid)), 15)
        proc = _start_run("holder")
        assert eventually(lambda: any("sleep 30" in p for p in of_launcher(proc.pid)), 15)
        os.killpg(proc.pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert err.strip().splitlines()[-1] == "interrupted: the lab was torn down, nothing is left behind"
        assert of_launcher(other.pid) != []  # the other run goes on
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()


def test_clean_finds_leftovers_whatever_their_parent(tmp_path):
    """A marked process whose launcher is gone is a leftover even when a child subreaper,
    not PID 1, adopted it; a run whose launcher lives is left alone."""
    dead = _dead_pid()
    stale_id = f"{runs.RUN_PREFIX}page-00000000-{dead}-1"
    live_id = runs.new_id("page")
    code = textwrap.dedent(f"""
        import ctypes, os, subprocess, sys, time
        ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
        for run_id in ({stale_id!r}, {live_id!r}):
            # an intermediate process starts the sleeper and exits: the subreaper adopts it
            subprocess.run(["sh", "-c", "sleep 1000 & exit 0"], env=dict(os.environ, DEEPDIVE_LAB=run_id))
        print("ready", flush=True)
        time.sleep(1000)
    """)
    reaper = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert reaper.stdout.readline() == "ready\n"

        def mine() -> dict[int, str]:
            return {pid: run_id for pid, run_id in runs.marked().items() if run_id in (stale_id, live_id)}

        # A process in the middle of exec shows an empty environment for a moment.
        assert eventually(lambda: sorted(mine().values()) == sorted([stale_id, live_id]), 5), mine()
        stale_pid = next(p for p, r in mine().items() if r == stale_id)
        stale_dir = Path(tempfile.gettempdir(), f"{runs.VM_DIR_PREFIX}{stale_id}.x")
        live_dir = Path(tempfile.gettempdir(), f"{runs.VM_DIR_PREFIX}{live_id}.x")
        stale_dir.mkdir()
        live_dir.mkdir()
        try:
            removed = lab.clean()
            assert f"directory {stale_dir}" in removed
            assert any(line.startswith(f"process {stale_pid} ") for line in removed)
            assert not stale_dir.exists() and live_dir.exists()
            assert eventually(lambda: stale_id not in runs.marked().values(), 5)
            assert live_id in runs.marked().values()
        finally:
            shutil.rmtree(live_dir, ignore_errors=True)
            shutil.rmtree(stale_dir, ignore_errors=True)
    finally:
        os.killpg(reaper.pid, signal.SIGKILL)
        reaper.wait()
        for pid, run_id in runs.marked().items():
            if run_id in (stale_id, live_id):
                os.kill(pid, signal.SIGKILL)


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _host_pages() -> list[str]:
    """The pages `--lab auto` runs in the host lab on this kernel."""
    from deepdive import cli
    from deepdive.model import DeepDiveError
    try:
        return [n for n in registry.names() if cli.choose([registry.load(n)], "auto")[0]]
    except DeepDiveError:  # no lab at all: the host_lab fixture skips with the reason
        return []


HOST_PAGES = _host_pages()


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("page", HOST_PAGES)
def test_a_real_page_ended_by_a_signal_leaves_nothing(page, sig):
    """Each host page, ended by each signal at a moment of its own between start-up and
    its last steps (benchmarks/faults.py tries many more moments)."""
    from benchmarks.faults import case
    moment = 0.1 + 0.25 * ((HOST_PAGES.index(page) * len(SIGNALS) + SIGNALS.index(sig)) % 7)
    assert case(page, sig, moment) == ""
