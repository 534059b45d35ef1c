"""A snapshot is read again only when something ran since the last one, and always then."""
from __future__ import annotations

import sys

import pytest

from deepdive import inlab
from deepdive.model import WHILE_RUNNING, Page, cmd


@pytest.fixture
def reads(tmp_path, monkeypatch) -> list[int]:
    """snapshot.take, counted: the n-th read returns {"read": n}. No namespaces found."""
    (tmp_path / "netns").mkdir()
    monkeypatch.setattr(inlab.snapshot, "NETNS_DIR", str(tmp_path / "netns"))
    done: list[int] = []

    def take(_nodes):
        done.append(len(done) + 1)
        return {"read": done[-1]}

    monkeypatch.setattr(inlab.snapshot, "take", take)
    return done


def test_checks_after_a_step_reuse_its_snapshot_until_something_runs(reads):
    seen: list[tuple[str, int]] = []
    page = Page(name="reuse", title="reuse")
    page.step("one", "one", "true", snapshot=True)
    page.step("two", "two", "true")

    def look(label: str, probe: str = ""):
        def test(lab) -> bool:
            if probe:
                lab.run(probe)
            seen.append((label, lab.snapshot["read"]))
            lab.snapshot["read"] = -1  # a check that alters what it was given alters no other's
            return True
        return test

    page.check("one", "a")(look("a"))
    page.check("one", "b")(look("b"))
    page.check("one", "c, after a probe")(look("c", probe="true"))
    page.check("one", "d")(look("d"))
    page.check("two", "e, after a step")(look("e"))
    result = inlab.run_page(page)
    assert result["steps"][0]["snapshot"] == {"read": 1}
    assert seen == [("a", 1), ("b", 1), ("c", 2), ("d", 2), ("e", 3)]
    assert reads == [1, 2, 3]


def test_a_snapshot_taken_while_running_is_not_what_the_checks_see(reads):
    """Stopping the step's background program changes the state (its tun goes away)."""
    seen: list[int] = []
    page = Page(name="running", title="running")
    page.step("before", "before", "true", snapshot=True)
    holder = "import signal, sys, time; signal.signal(2, lambda *_: sys.exit(0)); print('ready'); time.sleep(30)"
    page.step("hold", "hold", cmd(f"{sys.executable} -S -u -c \"{holder}\"", background=True, ready="ready"),
              snapshot=WHILE_RUNNING)
    page.check("hold", "after")(lambda lab: seen.append(lab.snapshot["read"]) or True)
    result = inlab.run_page(page)
    assert [s["snapshot"] for s in result["steps"]] == [{"read": 1}, {"read": 2}]
    assert seen == [3]


@pytest.mark.skipif(not __import__("shutil").which("unshare"), reason="needs unshare")
def test_a_snapshot_imports_iproute_and_not_the_rest_of_pyroute2():
    """The host lab's snapshots import what the vm guest imports: IPRoute, without
    pyroute2's __init__ (NDB, conntrack, IPVS, ...: 0.14 s against 0.05 s here)."""
    import os
    import subprocess
    from pathlib import Path
    code = ("import sys; from deepdive import snapshot; snapshot.import_in_background(); "
            "print(sorted(snapshot.take([])), "
            "'pyroute2.ndb.main' in sys.modules, 'pyroute2.conntrack' in sys.modules)")
    root = Path(__file__).resolve().parent.parent
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    res = subprocess.run(["unshare", *user, "--net", sys.executable, "-c", code], cwd=root,
                         capture_output=True, text=True, timeout=60)
    if res.returncode and "unshare" in res.stderr:
        pytest.skip(f"no network namespace here: {res.stderr.strip()}")
    assert res.stdout.split() == ["['nodes']", "False", "False"], res.stdout + res.stderr
