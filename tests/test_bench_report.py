"""benchmarks/report.py: the report's frame (machine, sections in order, whole-file write)."""
from __future__ import annotations

import sys
import types

import pytest

from benchmarks import report


def _fake(monkeypatch, calls: list, **bodies: str) -> None:
    monkeypatch.setattr(report, "SECTIONS", tuple(bodies))
    for name, body in bodies.items():
        def section(repeat: int, vm: bool = True, _name=name, _body=body) -> str:
            calls.append((_name, repeat, vm))
            return _body
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(section=section))


def test_sections_in_order_with_the_machine_and_command(monkeypatch):
    calls: list = []
    _fake(monkeypatch, calls, one="## one\n\n| a |\n", check="## check\n", two="## two\n")
    text = report.render(3, True, "invoke bench --repeat 3", say=lambda _l: None, slow_repeat=2)
    assert calls == [("one", 3, True), ("check", 2, True), ("two", 3, True)]
    assert text.index("## one") < text.index("## check") < text.index("## two")
    assert "`invoke bench --repeat 3`" in text
    for what in ("CPU", "kernel", "iproute2", "graphviz", "qemu", "commit measured"):
        assert f"| {what} |" in text


def test_no_vm_skips_the_vm_section_and_tells_the_others(monkeypatch):
    calls: list = []
    _fake(monkeypatch, calls, vm="## vm\n", check="## check\n")
    text = report.render(1, False, "invoke bench --no-vm", say=lambda _l: None)
    assert calls == [("check", 1, False)]
    assert "## vm\n\nNot measured: `--no-vm` was given." in text


def test_a_missing_section_fails_before_anything_is_measured(monkeypatch):
    calls: list = []
    _fake(monkeypatch, calls, one="## one\n")
    monkeypatch.setattr(report, "SECTIONS", ("one", "no_such_benchmark"))
    with pytest.raises(SystemExit, match="no_such_benchmark.py has no section"):
        report.render(1, True, "invoke bench", say=lambda _l: None)
    assert calls == []


def test_write_is_whole_or_nothing(tmp_path, monkeypatch):
    out = tmp_path / "RESULTS.md"
    out.write_text("previous\n")
    monkeypatch.setattr(report.os, "replace", lambda *_a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        report.write("new\n", out)
    assert out.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]


def test_bad_repeat_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        report.main(["--repeat", "0"], prog="invoke bench")
    assert exc.value.code == 2
    assert capsys.readouterr().err == "invoke bench: --repeat must be at least 1, not 0\n"
