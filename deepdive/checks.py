"""What a snippet's check functions are given: the run so far, and a way to probe."""
from __future__ import annotations

import json
from typing import Any, Callable

from deepdive.execute import Result
from deepdive.snapshot import find_link


class CheckContext:
    """The evidence a check looks at.

    `output(...)` reads what the steps recorded; `run(...)` probes the lab now (the probe
    is recorded with the check); `snapshot` reads the kernel's state at this moment.
    """

    def __init__(self, results: list[tuple[str, Result]], probe: Callable[[str], Result],
                 snapshot: Callable[[], dict[str, Any]]):
        self._results = results
        self._probe = probe
        self._snapshot = snapshot
        self.probes: list[Result] = []
        self._cached: dict[str, Any] | None = None

    def result(self, contains: str, step: str | None = None) -> Result:
        """The latest recorded command whose text is `contains`, else the latest whose text
        contains it (in `step`, if given): a whole command always finds itself, even
        when a later one extends it (`ping 10.0.0.1` and then `ping 10.0.0.100`)."""
        recorded = [res for sid, res in reversed(self._results) if step is None or sid == step]
        found = ([r for r in recorded if " ".join(r.argv) == contains]
                 or [r for r in recorded if contains in " ".join(r.argv)])
        if found:
            return found[0]
        raise LookupError(f"no recorded command contains {contains!r}"
                          + (f" in step {step!r}" if step else ""))

    def output(self, contains: str, step: str | None = None) -> str:
        return self.result(contains, step).stdout

    def json(self, contains: str, step: str | None = None) -> Any:
        """The standard output of a recorded command (found as by `result`) parsed as
        JSON: a CNI result, `ip -j`. Raises ValueError when it is not JSON."""
        return json.loads(self.output(contains, step))

    def run(self, command: str) -> Result:
        res = self._probe(command)
        self.probes.append(res)
        self._cached = None  # a probe may change the state
        return res

    @property
    def snapshot(self) -> dict[str, Any]:
        """The kernel's state now; read once per check (a read costs tens of ms)."""
        if self._cached is None:
            self._cached = self._snapshot()
        return self._cached

    def link(self, node: str, name: str) -> dict[str, Any]:
        return find_link(self.snapshot, node, name)
