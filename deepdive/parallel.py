"""Pages run side by side: every host page in a run of its own, the vm pages in one boot.

Runs do not share anything that matters: each is a sealed box (its own network, mount
and PID namespaces), so N of them can go at once. The vm pages are one job, as they
share one boot (deepdive.vmlab.run_pages). Jobs run in threads of this process, each in
the launcher lab.run_host or vmlab.run_pages already is; results come back in the order
they finish.

An interrupt reaches only the main thread, and the threads' launchers never see it: so
leaving the `with` block any way other than to its end stops every run this process
started (SIGKILL to each run's process group: its unshare, whose `--kill-child` and PID
namespace take everything else along, as for any end of a run) and waits for every
thread, so that nothing is left behind once the block is left.
"""
from __future__ import annotations

import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Callable, Iterator

from deepdive import lab, runs
from deepdive.model import DeepDiveError, Page


def default_jobs() -> int:
    """The cores this process may run on (its affinity mask), else the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_jobs(text: str | int) -> int:
    """A positive number of jobs; DeepDiveError with one line otherwise."""
    try:
        jobs = int(text)
    except (TypeError, ValueError):
        jobs = 0
    if jobs < 1:
        raise DeepDiveError(f"--jobs {text!r} is not a positive number of pages at once")
    return jobs


@dataclass
class Finished:
    """One page done: its outcome, or the one line its lab failed with (error), and the
    seconds since its job started."""
    page: str
    outcome: lab.Outcome | None = None
    error: str | None = None
    seconds: float = 0.0


class _Stopped(BaseException):
    """Raised in a job's own thread once the pages are being stopped."""


class Pages:
    """`with Pages(host, vm, jobs, say) as finished: for f in finished: ...`

    host: pages for the host lab, one run each; vm: pages for one vm boot (one job);
    jobs: how many jobs at once (>= 1); say: progress lines of the vm lab, from any
    thread. Iterating yields a Finished per page as each ends; `running` names the
    pages in progress. An error that is not a DeepDiveError (a bug) is raised again in
    the caller's thread."""

    def __init__(self, host: list[Page], vm: list[Page], jobs: int,
                 say: Callable[[str], None] = lambda _line: None) -> None:
        self.todo: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[Finished | BaseException] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.running: dict[str, None] = {}  # names, in the order they started
        self.say = say
        self.expected = len(host) + len(vm)
        # The vm boot first: it is the longest job by far.
        if vm:
            self.todo.put(lambda: self._vm(vm))
        for page in host:
            self.todo.put(lambda page=page: self._host(page))
        self.threads = [threading.Thread(target=self._worker, daemon=True, name=f"pages-{i}")
                        for i in range(min(jobs, len(host) + bool(vm)))]

    def __enter__(self) -> Pages:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is not None:
            self.stop()

    def __iter__(self) -> Iterator[Finished]:
        for _ in range(self.expected):
            while True:
                try:  # a timeout, so that Ctrl-C is seen within moments in this thread
                    item = self.done.get(timeout=0.2)
                    break
                except queue.Empty:
                    continue
            if isinstance(item, BaseException):
                raise item
            yield item

    def _worker(self) -> None:
        while not self.stopping.is_set():
            try:
                job = self.todo.get_nowait()
            except queue.Empty:
                return
            job()

    def _job(self, names: list[str], run: Callable[[], Iterator[lab.Outcome]]) -> None:
        for name in names:
            self.running[name] = None
        left = list(names)
        started = time.monotonic()
        try:
            for outcome in run():
                left.remove(outcome.page)
                self.running.pop(outcome.page, None)
                self.done.put(Finished(outcome.page, outcome, seconds=time.monotonic() - started))
        except (DeepDiveError, KeyboardInterrupt, _Stopped) as exc:
            # KeyboardInterrupt: a run stopped by stop() reports itself so.
            message = str(exc) if isinstance(exc, DeepDiveError) else "stopped"
            for name in left:
                self.done.put(Finished(name, error=message, seconds=time.monotonic() - started))
        except BaseException as exc:  # a bug: the caller raises it
            self.done.put(exc)
        finally:
            for name in left:
                self.running.pop(name, None)

    def _host(self, page: Page) -> None:
        self._job([page.name], lambda: iter([lab.run_host(page)]))

    def _vm(self, pages: list[Page]) -> None:
        from deepdive import vmlab
        me = threading.current_thread()

        def progress(line: str) -> None:
            # vmlab boots again after a crashed boot: not once the pages are stopped.
            if self.stopping.is_set() and threading.current_thread() is me:
                raise _Stopped
            self.say(line)

        self._job([p.name for p in pages], lambda: iter(vmlab.run_pages(pages, progress)))

    def stop(self) -> None:
        """Start no more pages, end every run of this process, wait for every job."""
        self.stopping.set()
        while any(t.is_alive() for t in self.threads):
            _kill_my_runs()
            for t in self.threads:
                t.join(timeout=0.1)


def _kill_my_runs() -> None:
    """SIGKILL to the process group of each run this process launched. Each launcher
    starts its run's unshare in a session of its own: its pid is its group's."""
    for pid, run_id in runs.marked().items():
        if run_id not in runs.mine:
            continue
        try:
            if os.getsid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
