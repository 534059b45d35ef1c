"""Shared gates and probes for tests that touch the real kernel."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deepdive import lab
from deepdive.model import DeepDiveError

ROOT = Path(__file__).resolve().parent.parent


def lab_unavailable() -> str:
    """Why the host lab cannot run here, or '' when it can."""
    try:
        lab.unshare_options()
    except DeepDiveError as exc:
        return str(exc)
    return ""


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


@pytest.fixture
def host_lab() -> None:
    """Skip, with the reason, where neither root nor user namespaces are available."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(f"host lab unavailable: {reason}")


def eventually(predicate, within: float = 2.0) -> bool:
    """Whether `predicate()` becomes true within `within` seconds (polled every 20 ms)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def of_launcher(pid: int) -> list[str]:
    """Processes of runs launched by process `pid` (a run id names its launcher)."""
    from deepdive import runs
    return [runs.describe(p) for p, run_id in runs.marked().items()
            if run_id.rsplit("-", 2)[1] == str(pid)]


def caller_state() -> dict[str, object]:
    """What a lab must leave exactly as it found it in the caller's namespaces."""
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    netns_dir = Path("/run/netns")
    return {
        "netns": sorted(os.listdir(netns_dir)) if netns_dir.is_dir() else None,
        "links": out("ip", "-o", "link", "show"),
        "addresses": out("ip", "-o", "addr", "show"),
        # Runs this process launched; other runs may be in progress on the machine.
        "lab processes": lab.running(only_mine=True),
        "mounts on /run": [l for l in Path("/proc/self/mounts").read_text().splitlines()
                           if " /run" in l],
    }


def private_mounts() -> list[str]:
    """unshare options for a mount namespace of the test's own (root, or a user
    namespace), where it may mount over the checkout's docs/; skip without either."""
    for options in (["--mount"], ["--user", "--map-root-user", "--mount"]):
        if subprocess.run(["unshare", *options, "true"], capture_output=True).returncode == 0:
            return options
    pytest.skip("neither root nor user namespaces: no mount namespace of our own")


def snippet_module(name: str):
    """snippets/NAME.py loaded as a module, for unit tests of its helpers."""
    import importlib.util

    from deepdive import registry
    spec = importlib.util.spec_from_file_location(f"snippet_{name.replace('-', '_')}",
                                                  registry.SNIPPETS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def page_masks(name: str):
    """The page's own masks (Page(masks=...)), compiled as the lab compares with them."""
    from deepdive import registry
    from deepdive.masking import compile_masks
    return compile_masks(registry.load(name).masks)


@pytest.fixture
def sigint_restored():
    """A test that runs a task's wrapper changes this process's SIGINT handler, as the task
    would (tasks.one_line_errors); later tests get the handler back."""
    before = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, before)
