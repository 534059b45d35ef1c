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
