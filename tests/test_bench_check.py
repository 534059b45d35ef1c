"""benchmarks/check.py: serial and parallel lab.check alternate, and the section says so."""
from __future__ import annotations

import importlib

from conftest import ROOT


def test_serial_and_parallel_alternate_and_the_table_has_medians_and_ratio(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    check = importlib.import_module("check")
    seen: list[str] = []

    def timed(argv):
        serial = argv[-1] == "1"
        seen.append("S" if serial else "P")
        return 10.0 if serial else 4.0

    monkeypatch.setattr(check, "timed", timed)
    monkeypatch.setattr(check.parallel, "default_jobs", lambda: 2)
    text = check.section(3, vm=True)
    assert seen == ["S", "P"] * 3
    assert text.startswith("## lab.check: all ")
    assert "| serial (1 job) | 10.0 s | 10.0-10.0 s | 1.00x |" in text
    assert "| parallel (2 jobs) | 4.0 s | 4.0-4.0 s | 0.40x |" in text
    assert "Speed-up 2.50x with 2 jobs" in text
