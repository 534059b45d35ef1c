"""deepdive.parallel without a lab: pages come back as they end, failures as one line."""
from __future__ import annotations

import re
import threading
import time

import pytest

from deepdive import lab, parallel, registry
from deepdive.model import DeepDiveError

PAGES = [registry.load(n) for n in ("veth", "bridge", "tun")]


def _fake(monkeypatch, seconds: dict[str, float], fail: str = "", crash: str = "") -> list[int]:
    """lab.run_host replaced: sleeps, then returns, fails or crashes; returns the most
    runs seen at once (in a list, filled in as they go)."""
    at_once, now, lock = [0], [0], threading.Lock()

    def run_host(page, progress=None):
        with lock:
            now[0] += 1
            at_once[0] = max(at_once[0], now[0])
        time.sleep(seconds[page.name])
        with lock:
            now[0] -= 1
        if page.name == fail:
            raise DeepDiveError(f"page {fail}: step x failed")
        if page.name == crash:
            raise ZeroDivisionError("a bug")
        return lab.Outcome(page=page.name, capture={"meta": {"kernel": "k", "lab": "host"}, "checks": []},
                           seconds=seconds[page.name], lab="host")

    monkeypatch.setattr(lab, "run_host", run_host)
    return at_once


def test_pages_come_back_as_they_end_and_a_failure_is_its_line(monkeypatch):
    _fake(monkeypatch, {"veth": 0.3, "bridge": 0.05, "tun": 0.15}, fail="tun")
    with parallel.Pages(PAGES, [], jobs=3) as each:
        done = list(each)
    assert [d.page for d in done] == ["bridge", "tun", "veth"]
    assert done[1].outcome is None and done[1].error == "page tun: step x failed"
    assert done[0].outcome is not None and done[0].outcome.page == "bridge"


def test_no_more_than_jobs_pages_at_once(monkeypatch):
    at_once = _fake(monkeypatch, {"veth": 0.1, "bridge": 0.1, "tun": 0.1})
    with parallel.Pages(PAGES, [], jobs=2) as each:
        assert sorted(d.page for d in each) == ["bridge", "tun", "veth"]
    assert at_once[0] == 2


def test_a_bug_in_a_job_is_raised_in_the_caller(monkeypatch):
    _fake(monkeypatch, {"veth": 0.01, "bridge": 0.01, "tun": 0.01}, crash="bridge")
    with pytest.raises(ZeroDivisionError):
        with parallel.Pages(PAGES, [], jobs=1) as each:
            list(each)


def test_lab_check_reports_each_page_as_it_ends_then_the_totals(monkeypatch):
    import io

    from rich.console import Console

    from deepdive import capture, cli

    _fake(monkeypatch, {"veth": 0.3, "bridge": 0.05, "tun": 0.15}, fail="tun")
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, force_terminal=False, width=200))
    monkeypatch.setattr(cli, "choose", lambda pages, lab_name: (list(pages), []))
    monkeypatch.setattr(lab, "compare", lambda outcome: [])
    monkeypatch.setattr(capture, "load", lambda page, *a: {"meta": {"kernel": "k", "lab": "host"}})
    with pytest.raises(DeepDiveError) as err:
        cli.check_pages(PAGES, "auto", jobs=3)
    assert str(err.value) == "page tun: step x failed"  # the failed lab's own line, as with one job
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("✓ bridge matches its capture (0.05 s, host")
    assert re.fullmatch(r"✗ tun failed \(\d+\.\d\d s\):", lines[1]) and lines[2] == "page tun: step x failed"
    assert lines[3].startswith("✓ veth matches its capture (0.30 s, host")
    assert lines[4].startswith("lab.check: 2 of 3 page(s) match their captures (0.")
