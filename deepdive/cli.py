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

from deepdive import capture as captures
from deepdive import lab, parallel, registry, shards
from deepdive.capture import ROOT
from deepdive.model import DeepDiveError, Page
from deepdive.publish import ChecksFailed, publish
from deepdive.text import sanitize_for_terminal

console = Console(stderr=True, highlight=False)
LABS = ("auto", "host", "vm", "vagrant")


AS_INTERRUPT = (signal.SIGTERM, signal.SIGHUP)


def _as_interrupt_handler(_signum: int, _frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) take the same path as Ctrl-C: the lab is
    told to tear down first."""
    previous = {s: signal.signal(s, _as_interrupt_handler) for s in AS_INTERRUPT}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def choose(pages: list[Page], lab_name: str) -> tuple[list[Page], list[Page]]:
    """Split pages into (host lab, vm lab). auto: host when this kernel has what a page
    needs (probed, cached), vm otherwise; host: fail in one line when it does not."""
    if lab_name not in LABS:
        raise DeepDiveError(f"no lab {lab_name!r}; labs: {', '.join(LABS)}")
    if lab_name == "vm":
        return [], pages
    host, vm = [], []
    for p in pages:
        try:
            lab.preflight(p)
            host.append(p)
        except lab.MissingFeature:
            if lab_name == "host":
                raise
            vm.append(p)
    return host, vm


def outcomes(pages: list[Page], lab_name: str) -> Iterator[lab.Outcome]:
    """Run pages where they can run: host pages one by one, vm pages in one boot."""
    host, vm = choose(pages, lab_name)
    with _signals_as_interrupt():
        for p in host:
            with console.status(f"[bold]{p.name}[/]: starting the host lab") as status:
                yield lab.run_host(p, progress=lambda line: status.update(f"[bold]{line}"))
        if vm:
            from deepdive import vmlab
            names = ", ".join(p.name for p in vm)
            with console.status(f"[bold]vm lab[/] for {names}: starting") as status:
                def progress(line: str) -> None:
                    status.update(f"[bold]vm lab[/] ({names}): {line}")
                    if line.startswith("booting") or line == "the VM is up":
                        console.print(sanitize_for_terminal(f"vm lab: {line}"), markup=False)
                yield from vmlab.run_pages(vm, progress)


@contextmanager
def finished(pages: list[Page], lab_name: str, jobs: int) -> Iterator[Iterator[parallel.Finished]]:
    """Each page as it ends. One job (or one page): one by one as outcomes() runs them,
    and a page whose lab fails raises its error at once; more: deepdive.parallel, where
    such a page is a Finished with its error, and leaving the block early stops every run."""
    if min(jobs, len(pages)) <= 1:
        yield (parallel.Finished(o.page, o, seconds=o.seconds) for o in outcomes(pages, lab_name))
        return
    host, vm = choose(pages, lab_name)
    host.sort(key=lambda p: -shards.recorded_seconds(p.name))  # the longest start first
    names = [p.name for p in (*vm, *host)]

    def say(line: str) -> None:  # the vm lab's progress: its boot, as outcomes() prints it
        if line.startswith("booting") or line == "the VM is up":
            console.print(sanitize_for_terminal(f"vm lab: {line}"), markup=False)

    with _signals_as_interrupt(), console.status(f"[bold]{len(names)} page(s)[/], "
                                                 f"{min(jobs, len(host) + bool(vm))} jobs at once") as status, \
            parallel.Pages(host, vm, jobs, say) as each:
        def reported() -> Iterator[parallel.Finished]:
            for done, item in enumerate(each, 1):
                left = ", ".join(n for n in names if n in each.running)
                status.update(f"[bold]{done}/{len(names)} done[/]" + (f"; running {left}" if left else ""))
                yield item
        yield reported()


def selected(pages: list[Page], shard: str) -> list[Page]:
    """The pages of --shard I/N (deepdive.shards), or all of them without one."""
    return shards.select(pages, shard, lambda p: p.name) if shard else pages


def _lab_label(outcome: lab.Outcome) -> str:
    if outcome.lab == "vm":
        return f"vm ({outcome.capture['meta']['kernel']})"
    return f"host ({'root' if os.geteuid() == 0 else 'user namespace'})"


def run(page: str | None, all_pages: bool, lab_name: str = "auto", jobs: int = 1, shard: str = "") -> None:
    """Run pages (`jobs` at once; only those of `shard` "I/N" when given), write their
    captures and diagrams, print a summary."""
    pages = selected(lab.pages(page, all_pages), shard)
    lab.writable_output()
    if lab_name == "vagrant":
        return in_vagrant("run", pages, ["--page", page] if page else ["--all"], jobs, shard)
    started = time.monotonic()
    table = Table(title=f"lab.run on Linux {platform.release()}", title_justify="left")
    for col in ("page", "steps", "commands", "checks", "lab", "time", "files written"):
        table.add_column(col)
    failures: list[str] = []
    paths: list[str] = []
    boot = None
    with finished(pages, lab_name, jobs) as each:
        for item in each:
            outcome = item.outcome
            if outcome is None:  # its lab failed (with jobs > 1: with 1 that has raised)
                failures.append(item.error or "")
                table.add_row(item.page, "", "", "[red]lab failed", "", f"{item.seconds:.2f} s", "none")
                continue
            checks = outcome.capture["checks"]
            passed = sum(c["passed"] for c in checks)
            try:
                publish(outcome)
            except ChecksFailed as exc:
                failures.append(str(exc))
            steps = outcome.capture["steps"]
            written = str(len(outcome.written)) if outcome.written else "none (unchanged)"
            paths.extend(str(w.relative_to(ROOT)) for w in outcome.written)
            boot = outcome.boot_seconds or boot
            table.add_row(outcome.page, str(len(steps)), str(sum(len(s["commands"]) for s in steps)),
                          f"{'[green]' if passed == len(checks) else '[red]'}{passed}/{len(checks)} passed",
                          _lab_label(outcome), f"{outcome.seconds:.2f} s", written)
    console.print(table)
    for path in paths:
        console.print(f"wrote {path}", markup=False)
    if boot:
        console.print(f"vm lab: one boot, {boot:.1f} s including its pages")
    console.print(f"total {time.monotonic() - started:.2f} s")
    if failures:
        raise DeepDiveError("\n".join(failures))


def check(page: str | None, lab_name: str = "auto", jobs: int = 1, shard: str = "") -> None:
    """Re-run pages (`jobs` at once; only those of `shard` "I/N" when given) and compare
    with the committed captures, each reported as it ends; raise on drift or failure."""
    pages = selected(lab.pages(page, all_pages=page is None), shard)
    if shard and not pages:  # more shards than pages
        console.print(f"lab.check: shard {shard} has no pages", markup=False)
        return
    if lab_name == "vagrant":
        return in_vagrant("check", pages, ["--page", page] if page else [], jobs, shard)
    check_pages(pages, lab_name, jobs)


def in_vagrant(task: str, pages: list[Page], options: list[str], jobs: int, shard: str) -> None:
    """--lab vagrant: lab.TASK runs in the Vagrantfile's lab VM, with the host lab there
    (deepdive.vagrantlab); lab.run's captures and diagrams are copied out and published."""
    from deepdive import vagrantlab

    def say(line: str) -> None:
        console.print(sanitize_for_terminal(f"vagrant lab: {line}"), markup=False)

    # --jobs only when given: by default the VM runs as many pages as it has vCPUs.
    explicit = jobs != parallel.default_jobs()
    options = [*options, *(["--jobs", str(jobs)] if explicit else []), *(["--shard", shard] if shard else [])]
    with _signals_as_interrupt():
        written = vagrantlab.run([p.name for p in pages], task, options, say)
    for path in written:
        console.print(f"copied out of the VM: {path.relative_to(ROOT)}", markup=False)
    if task == "run":
        console.print(f"vagrant lab: {len(written) or 'no'} file(s) changed here", markup=False)


def check_pages(pages: list[Page], lab_name: str, jobs: int) -> None:
    """check() of these pages (benchmarks/check.py times it on the host pages alone)."""
    drifted, failed = [], []
    started = time.monotonic()
    with finished(pages, lab_name, jobs) as each:
        for item in each:
            name, outcome = item.page, item.outcome
            if outcome is None:  # its lab failed (with jobs > 1: with 1 that has raised)
                failed.append(item.error or "")
                console.print(f"[red]✗ {name}[/] failed ({item.seconds:.2f} s):")
                console.print(sanitize_for_terminal(item.error or ""), markup=False, soft_wrap=True)
                continue
            problems = lab.compare(outcome)
            then, now = captures.load(name)["meta"], outcome.capture["meta"]
            if problems and (then["kernel"], then["lab"]) != (now["kernel"], now["lab"]):
                problems.insert(0, f"page {name}: note that the committed capture comes from Linux "
                                   f"{then['kernel']} ({then['lab']} lab), this run from {now['kernel']} ({now['lab']} lab)")
            problems += [f"page {name}: check failed: {c['claim']}" for c in outcome.failed_checks]
            if problems:
                drifted.append(name)
                console.print(f"[red]✗ {name}[/] differs from docs/captures/{name}.json ({outcome.seconds:.2f} s):")
                for line in problems:
                    console.print(sanitize_for_terminal(line), markup=False, soft_wrap=True)
            else:
                console.print(f"[green]✓ {name}[/] matches its capture ({outcome.seconds:.2f} s, {_lab_label(outcome)})")
    good = len(pages) - len(drifted) - len(failed)
    console.print(f"lab.check: {good} of {len(pages)} page(s) match their captures "
                  f"({time.monotonic() - started:.2f} s, {jobs} job(s) at once)", markup=False)
    if drifted:
        failed.append(f"{len(drifted)} page(s) drifted: {', '.join(drifted)}; "
                      "`invoke lab.run --page NAME` refreshes a page once the change is understood")
    if failed:
        raise DeepDiveError("\n".join(failed))


def clean(lab_name: str = "") -> None:
    """What dead runs left behind; with lab_name "vagrant", also the lab VM such a run
    brought up (deepdive.vagrantlab.clean)."""
    if lab_name not in ("", *LABS):
        raise DeepDiveError(f"no lab {lab_name!r}; labs: {', '.join(LABS)}")
    removed = [f"{'killed' if line.startswith('process ') else 'removed'} {line}" for line in lab.clean()]
    if lab_name == "vagrant":
        from deepdive import vagrantlab
        removed += vagrantlab.clean(lambda line: console.print(f"vagrant lab: {line}", markup=False))
    for line in removed:
        console.print(sanitize_for_terminal(line), markup=False)
    console.print(f"lab.clean: {len(removed) or 'nothing'} left behind by earlier runs"
                  + (" removed" if removed else ""))


def list_pages() -> None:
    for p in registry.load_all():
        console.print(sanitize_for_terminal(f"{p.name:10} {p.title}"), markup=False)


def interrupted() -> str:
    """The line to print after Ctrl-C, saying truthfully what is left of this process's
    runs. The kernel ends a run's PID namespace within moments of its launcher's end, but a
    process in an uninterruptible call (a BPF verifier, a netns teardown) can take seconds
    on a loaded machine: 2 s were once too few in CI."""
    from deepdive import runs
    if not runs.mine:  # a task that starts no lab (lab.pages), or one stopped before it did
        return "interrupted: nothing was started"
    deadline = time.monotonic() + 10
    while (left := lab.running(only_mine=True)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        return f"interrupted: {len(left)} lab process(es) still running; `invoke lab.clean` removes them"
    return "interrupted: the lab was torn down, nothing is left behind"


def draw(page: str | None) -> None:
    """Redraw diagrams from the committed captures, without running any lab; published
    as lab.run publishes, so only diagrams whose bytes changed are written and named."""
    from deepdive.publish import publish_files
    written = 0
    for p in lab.pages(page, all_pages=page is None):
        for path in publish_files(p.name, captures.load(p.name)):
            console.print(f"drew {path.relative_to(ROOT)}", markup=False)
            written += 1
    console.print(f"lab.draw: {written or 'no'} diagram(s) changed")
