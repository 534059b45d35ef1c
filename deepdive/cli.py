"""What the `lab` tasks do, with their output for humans. tasks.py stays a thin shell."""
from __future__ import annotations

import os
import platform
import signal
import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.table import Table

from deepdive import lab, registry
from deepdive.capture import ROOT
from deepdive.model import DeepDiveError

console = Console(stderr=True, highlight=False)
LABS = ("host",)


def _check_lab(name: str) -> None:
    if name not in LABS:
        raise DeepDiveError(f"no lab {name!r}; labs: {', '.join(LABS)}")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM takes the same path as Ctrl-C: the lab is told to tear down first."""
    def interrupt(_signum: int, _frame) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(page, lab_name: str) -> lab.Outcome:
    with _sigterm_as_interrupt(), console.status(f"[bold]{page.name}[/]: starting the {lab_name} lab") as status:
        return lab.run_host(page, progress=lambda line: status.update(f"[bold]{line}"))


def run(page: str | None, all_pages: bool, lab_name: str = "host") -> None:
    """Run pages, write their captures and diagrams, print a summary."""
    _check_lab(lab_name)
    pages = lab.pages(page, all_pages)
    lab.writable_output()
    started = time.monotonic()
    table = Table(title=f"lab.run on Linux {platform.release()}", title_justify="left")
    for col in ("page", "steps", "commands", "checks", "lab", "time", "files written"):
        table.add_column(col)
    failures: list[str] = []
    paths: list[str] = []
    for p in pages:
        outcome = _run(p, lab_name)
        checks = outcome.capture["checks"]
        passed = sum(c["passed"] for c in checks)
        try:
            lab.publish(outcome)
        except lab.ChecksFailed as exc:
            failures.append(str(exc))
        steps = outcome.capture["steps"]
        written = str(len(outcome.written)) if outcome.written else "none (unchanged)"
        paths.extend(str(w.relative_to(ROOT)) for w in outcome.written)
        table.add_row(p.name, str(len(steps)), str(sum(len(s["commands"]) for s in steps)),
                      f"{'[green]' if passed == len(checks) else '[red]'}{passed}/{len(checks)} passed",
                      f"{outcome.lab} ({'root' if os.geteuid() == 0 else 'user namespace'})",
                      f"{outcome.seconds:.2f} s", written)
    console.print(table)
    for path in paths:
        console.print(f"wrote {path}", markup=False)
    console.print(f"total {time.monotonic() - started:.2f} s")
    if failures:
        raise DeepDiveError("\n".join(failures))


def check(page: str | None) -> None:
    """Re-run pages and compare with the committed captures; raise on drift."""
    pages = lab.pages(page, all_pages=page is None)
    drifted = []
    for p in pages:
        outcome = _run(p, "host")
        problems = lab.compare(outcome)
        problems += [f"page {p.name}: check failed: {c['claim']}" for c in outcome.failed_checks]
        if problems:
            drifted.append(p.name)
            console.print(f"[red]✗ {p.name}[/] differs from docs/captures/{p.name}.json:")
            for line in problems:
                console.print(line, markup=False, soft_wrap=True)
        else:
            console.print(f"[green]✓ {p.name}[/] matches its capture ({outcome.seconds:.2f} s)")
    if drifted:
        raise DeepDiveError(f"{len(drifted)} page(s) drifted: {', '.join(drifted)}; "
                            "`invoke lab.run --page NAME` refreshes a page once the change is understood")


def clean() -> None:
    removed = lab.clean()
    for line in removed:
        console.print(f"killed {line}", markup=False)
    console.print(f"lab.clean: {len(removed) or 'nothing'} left behind by earlier runs"
                  + (" removed" if removed else ""))


def list_pages() -> None:
    for p in registry.load_all():
        console.print(f"{p.name:10} {p.title}", markup=False)


def interrupted() -> str:
    """The line to print after Ctrl-C, saying truthfully what is left."""
    left = lab.leftovers()
    if left:
        return f"interrupted: {len(left)} lab process(es) still running; `invoke lab.clean` removes them"
    return "interrupted: the lab was torn down, nothing is left behind"
