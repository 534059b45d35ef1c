"""Lab tests: every page runs for real on this kernel, its checks pass, its output matches
the committed capture, and the caller's namespaces are untouched afterwards."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, caller_state, of_launcher
from deepdive import capture, cli, lab, registry, vmlab
from deepdive.features import FEATURES
from deepdive.masking import drift
from deepdive.model import DeepDiveError

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("host_lab")]
PAGES = registry.names()


def in_vm(name: str) -> bool:
    """Whether --lab auto sends this page to the vm lab on this kernel."""
    try:
        return bool(cli.choose([registry.load(name)], "auto")[1])
    except DeepDiveError:  # no lab at all here: the host_lab fixture skips, with the reason
        return False


VM_PAGES = [n for n in PAGES if in_vm(n)]


class Runs:
    """Each page run once for the whole module: host pages one by one, vm pages all in
    one boot (under TCG that boot is the slow part of the suite)."""

    def __init__(self) -> None:
        self.done: dict[str, lab.Outcome] = {}
        self.vm_state: tuple[dict, dict] | None = None

    def __call__(self, name: str) -> lab.Outcome:
        if name not in self.done:
            if name in VM_PAGES:
                self.done.update(self.boot())
            else:
                self.done[name] = lab.run_host(registry.load(name))
        return self.done[name]

    def boot(self) -> dict[str, lab.Outcome]:
        reason = vm_unavailable()
        if reason:
            pytest.skip(f"vm lab unavailable: {reason}")
        before = caller_state()
        results = vmlab.run_pages([registry.load(n) for n in VM_PAGES], progress=lambda _l: None)
        self.vm_state = (before, caller_state())
        return {o.page: o for o in results}


def vm_unavailable() -> str:
    try:
        vmlab.preflight()
    except DeepDiveError as exc:
        return str(exc)
    return ""


@pytest.fixture(scope="module")
def runs() -> Runs:
    return Runs()


@pytest.mark.parametrize("name", PAGES)
def test_page_runs_every_check_passes_and_nothing_is_left(runs, name):
    before = caller_state()
    outcome = runs(name)
    if name in VM_PAGES:
        before, after = runs.vm_state  # the boot that ran it, maybe for an earlier page
    else:
        after = caller_state()
    assert after == before
    failed = [c["claim"] for c in outcome.capture["checks"] if not c["passed"]]
    assert failed == []
    page = registry.load(name)
    assert len(outcome.capture["checks"]) == len(page.checks)
    assert [s["id"] for s in outcome.capture["steps"]] == [s.id for s in page.steps]
    assert outcome.capture["meta"]["lab"] == ("vm" if name in VM_PAGES else "host")


@pytest.mark.parametrize("name", PAGES)
def test_page_matches_its_committed_capture(runs, name):
    """Everything the page shows matches, apart from the versions of the kernel and tools
    it ran on: a fresh machine installs the distribution's current kernel for the vm lab,
    and `lab.check` reports such a change; here it only has to explain the differences."""
    problems = drift(capture.load(name), runs(name).capture)
    versions = tuple(f"page {name}, meta: {key} " for key in ("kernel", "iproute2", "pyroute2"))
    unexplained = [p for p in problems if not p.startswith(versions)]
    assert unexplained == [], "\n".join(problems)


@pytest.mark.parametrize("name", [n for n in PAGES if n not in VM_PAGES])
def test_a_second_run_leaves_the_capture_file_byte_identical(runs, name, tmp_path):
    """(vm pages get the same guarantee from matching their committed capture above,
    without a second boot.)"""
    first = runs(name).capture
    assert capture.write_if_changed(first, captures=tmp_path)
    written = capture.path_for(name, tmp_path).read_bytes()
    second = lab.run_host(registry.load(name)).capture
    assert not capture.write_if_changed(second, captures=tmp_path)
    assert capture.path_for(name, tmp_path).read_bytes() == written


@pytest.mark.parametrize("name", PAGES)
def test_snapshots_hold_the_declared_nodes(runs, name):
    page = registry.load(name)
    snaps = capture.snapshots(runs(name).capture)
    assert snaps, f"page {name} draws no diagram"
    for _step, snap in snaps:
        assert set(page.nodes) <= {n["name"] for n in snap["nodes"]}


def test_host_lab_refuses_a_page_this_kernel_cannot_run():
    if not VM_PAGES:
        pytest.skip("this kernel has every link kind the pages need")
    name = VM_PAGES[0]
    with pytest.raises(lab.MissingFeature) as err:
        cli.choose([registry.load(name)], "host")
    assert f"invoke lab.run --page {name} --lab vm" in str(err.value)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupting_a_run_tears_the_lab_down(sig):
    """Ctrl-C (or SIGTERM) mid-run: one line, status 130, nothing left behind."""
    before = caller_state()
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "lab.run", "--page", "bridge"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    # Wait until the lab has built something, then interrupt the whole group, as a
    # terminal does with Ctrl-C.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("deepdive.inlab" in p for p in of_launcher(proc.pid)):
        time.sleep(0.05)
    time.sleep(0.4)
    os.killpg(proc.pid, getattr(signal, sig))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted: ")
    assert caller_state() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make docs/ read-only in a private mount namespace")
def test_unwritable_docs_fail_before_any_lab_is_built():
    before = caller_state()
    script = (f"mount --bind -o ro {ROOT / 'docs'} {ROOT / 'docs'} && "
              f"exec {sys.executable} -m invoke lab.run --page veth")
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.strip() == "error: cannot write to docs/captures: Read-only file system"
    assert caller_state() == before


def _nobody_can_run_the_project() -> str:
    if os.geteuid() != 0:
        return "needs root to switch to user nobody"
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            sys.executable, "-c", "import deepdive.lab, pyroute2"],
                           cwd=ROOT, capture_output=True, text=True)
    if probe.returncode != 0:
        return ("user nobody cannot run this checkout's Python (the checkout or its "
                f"interpreter is not readable by others): {probe.stderr.strip()[-200:]}")
    return ""


# What a user namespace can never grant: a tc BPF program needs CAP_BPF and CAP_NET_ADMIN
# in the machine's own user namespace, and so does a socket buffer for a large netfilter
# transaction.
ROOT_ONLY = {"bpf", "nf_large_batch"}
NEED_ROOT = [n for n in PAGES if ROOT_ONLY & set(registry.load(n).needs.features)]


@pytest.mark.parametrize("name", [n for n in PAGES if n not in VM_PAGES and n not in NEED_ROOT])
def test_a_normal_user_runs_the_page_in_user_namespaces(name):
    """Rootless: as user nobody, the same page gives the same output as root."""
    reason = _nobody_can_run_the_project()
    if reason:
        pytest.skip(reason)
    code = ("import json, sys; from deepdive import lab, registry; "
            f"o = lab.run_host(registry.load({name!r})); json.dump(o.capture, sys.stdout)")
    before = caller_state()
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, HOME="/tmp"))
    assert res.returncode == 0, res.stderr
    rootless = json.loads(res.stdout)
    assert [c["claim"] for c in rootless["checks"] if not c["passed"]] == []
    problems = drift(capture.load(name), rootless)
    assert problems == [], "\n".join(problems)
    assert caller_state() == before


@pytest.mark.parametrize("name", NEED_ROOT)
def test_a_normal_user_is_refused_a_page_that_needs_root_in_one_line(name):
    """Rootless, the host lab refuses before building anything, and says why and what to do."""
    reason = _nobody_can_run_the_project()
    if reason:
        pytest.skip(reason)
    code = ("import sys; from deepdive import cli, lab, registry\n"
            f"try: cli.choose([registry.load({name!r})], 'host')\n"
            "except lab.MissingFeature as exc: sys.exit(str(exc))")
    before = caller_state()
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, HOME="/tmp"))
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    words = [FEATURES[f].words for f in registry.load(name).needs.features if f in ROOT_ONLY]
    assert res.stderr.startswith(f"page {name} needs {' and '.join(words)}, which this kernel")
    assert "refuses to unprivileged users; run it as root, or in the vm lab" in res.stderr
    assert caller_state() == before
