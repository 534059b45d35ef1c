"""Bad input from the command line: one clear line, a non-zero status, no traceback.
None of these needs privileges: each stops before a lab is built."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, private_mounts
from deepdive import capture as captures
from deepdive import lab, registry, runs
from deepdive.model import DeepDiveError

PAGES = registry.names()


def _invoke(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT,
                          capture_output=True, text=True, **kw)


def test_every_task_has_a_help_line():
    res = _invoke("--list")
    assert res.returncode == 0
    lines = [l.strip() for l in res.stdout.splitlines()]
    for name in ("lab.run", "lab.check", "lab.clean", "lab.pages", "site.build", "site.serve"):
        line = next(l for l in lines if l.split(" ")[0] == name)
        assert len(line.split()) > 1, f"{name} has no help line"


def test_a_bad_page_name_lists_the_pages():
    res = _invoke("lab.run", "--page", "nosuch")
    assert res.returncode == 1
    assert res.stderr.strip() == f"error: no page 'nosuch'; pages: {', '.join(PAGES)}"


def test_neither_page_nor_all_is_an_error():
    res = _invoke("lab.run")
    assert res.returncode == 1
    assert res.stderr.strip() == f"error: give --page NAME or --all; pages: {', '.join(PAGES)}"


def test_a_missing_tool_is_named_with_its_package(tmp_path):
    """bridge needs tcpdump: with a PATH that lacks it, the run stops before it starts."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "unshare", "mount", "ping", "bridge"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed (./setup.sh --lab installs it)")
        (bin_dir / tool).symlink_to(found)
    res = _invoke("lab.run", "--page", "bridge", env=dict(os.environ, PATH=str(bin_dir)))
    assert res.returncode == 1
    assert res.stderr.strip() == ("error: page bridge needs tcpdump, not found on PATH "
                                  "(Debian/Ubuntu: apt-get install tcpdump)")


def test_no_root_and_no_user_namespaces_is_one_line(tmp_path, monkeypatch):
    """A normal user whose kernel forbids user namespaces: unshare fails, and says why."""
    fake = tmp_path / "unshare"
    fake.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(DeepDiveError) as err:
        lab.unshare_options()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("the host lab needs root or unprivileged user namespaces")
    assert "Operation not permitted" in message


def _gone(pid: int) -> bool:
    """Dead: absent, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_clean_kills_what_crashed_runs_left_and_nothing_else():
    gone = subprocess.Popen(["true"])
    gone.wait()
    # Left behind: a marked process whose launcher (named in the run id) is gone.
    stale = dict(os.environ, **{lab.MARKER: f"{lab.RUN_PREFIX}test-{uuid.uuid4().hex[:8]}-{gone.pid}-1"})
    orphan = int(subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], env=stale,
                                capture_output=True, text=True).stdout)
    # In progress: its launcher (this process) is alive.
    in_progress = subprocess.Popen(["sleep", "60"], env=dict(os.environ, **{lab.MARKER: runs.new_id("test")}))
    unmarked = subprocess.Popen(["sleep", "60"])
    try:
        res = _invoke("lab.clean")
        assert res.returncode == 0
        assert f"killed process {orphan} (sleep 60)" in res.stderr
        deadline = time.monotonic() + 5
        while not _gone(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(orphan)
        assert in_progress.poll() is None and unmarked.poll() is None
        assert "nothing left behind" in _invoke("lab.clean").stderr
    finally:
        for p in (in_progress, unmarked):
            p.kill()
            p.wait()
        if not _gone(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_vm_lab_with_a_kernel_that_is_not_there():
    res = _invoke("lab.run", "--page", PAGES[0], "--lab", "vm",
                  env=dict(os.environ, DEEPDIVE_VM_KERNEL="/nonexistent/vmlinuz"))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == "error: DEEPDIVE_VM_KERNEL=/nonexistent/vmlinuz is not a file"


def test_vm_lab_without_qemu(tmp_path):
    res = _invoke("lab.run", "--page", PAGES[0], "--lab", "vm", env=dict(os.environ, PATH=str(tmp_path)))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "error: the vm lab needs qemu (Debian/Ubuntu: apt-get install qemu-system-x86)")


def test_an_unknown_lab_is_named():
    res = _invoke("lab.run", "--page", PAGES[0], "--lab", "cloud")
    assert res.returncode == 1
    assert res.stderr.strip() == "error: no lab 'cloud'; labs: auto, host, vm, vagrant"


# --- Ctrl-C at any moment ------------------------------------------------------------

def _interrupted_at(delay: float, *args: str) -> tuple[int, list[str]]:
    """Start `.venv/bin/invoke ARGS` in a session of its own, send SIGINT after `delay`
    seconds (as a terminal's Ctrl-C would, to the whole group); its status and output lines."""
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "invoke"), *args], cwd=ROOT,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, [line for line in (out + err).splitlines() if line.strip()]


def _silent_or_one_line(rc: int, lines: list[str]) -> bool:
    """Killed by SIGINT before the interpreter handles signals (a loaded machine can take
    that long to start it): nothing printed, and the shell says 130. Or one line and 130.
    Or the interpreter's own report of a SIGINT while it imports `site`, before any file
    of this project is read (seen under a load of 16 on 2 cores): no code of ours ran."""
    if rc == 1 and lines[:1] == ["Fatal Python error: init_import_site: Failed to import the site module"]:
        return lines[-1] == "KeyboardInterrupt" and not any(str(ROOT / "deepdive") in line or "tasks.py" in line
                                                            for line in lines)
    return (rc, lines) == (-signal.SIGINT, []) or (rc == 130 and len(lines) == 1
                                                    and lines[0].startswith("interrupted: "))


def test_ctrl_c_while_invoke_starts_is_one_line():
    """Before a task's body runs (invoke importing itself and tasks.py, ~0.1 s): one line,
    status 130. A fast machine may finish `lab.pages` first; then it must be whole."""
    listing = _invoke("lab.pages").stderr.splitlines()
    interrupted = 0
    for delay in (0.05, 0.06, 0.07, 0.08, 0.1):
        rc, lines = _interrupted_at(delay, "lab.pages")
        if rc != 0:
            interrupted += 1
            assert _silent_or_one_line(rc, lines), (delay, rc, lines)
            assert rc == 1 or lines in ([], ["interrupted: nothing was started"]), (delay, lines)
        else:
            assert lines == listing, (delay, lines)
    assert interrupted, "every lab.pages finished before its Ctrl-C: nothing was tested"


@pytest.mark.lab
def test_ctrl_c_in_the_first_half_second_of_lab_run_is_one_line(host_lab):
    for delay in (0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5):
        rc, lines = _interrupted_at(delay, "lab.run", "--page", "veth")
        assert _silent_or_one_line(rc, lines), (delay, rc, lines)


# --- a capture of the wrong shape, a full disk: docs/ replaced in a mount namespace ---

def _invoke_on(docs: Path, *args: str, tmpfs: bool = False) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """`invoke ARGS` in a mount namespace of its own where the checkout's docs/ is a copy
    of `docs` (bound, or on a full 8 MiB tmpfs); its result, and the sha256 of every
    file of that docs/ afterwards, dot-files included (the tmpfs's filler left out)."""
    script = r'''
        src=$1 docs=$2 sums=$3; shift 3
        if [ "$TMPFS" = 1 ]; then
            mount -t tmpfs -o size=8m full "$docs" && cp -a "$src"/. "$docs"/ &&
            { dd if=/dev/zero of="$docs/.filler" bs=64k 2>/dev/null; true; }
        else
            mount --bind "$src" "$docs"
        fi || exit 99
        "$@"; rc=$?
        (cd "$docs" && find . -type f ! -name .filler -exec sha256sum {} + | sort -k 2) > "$sums"
        exit $rc
    '''
    sums = docs.parent / "sums"
    res = subprocess.run(["unshare", *private_mounts(), "sh", "-c", script, "sh", str(docs), str(ROOT / "docs"),
                          str(sums), sys.executable, "-m", "invoke", *args],
                         cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, TMPFS=str(int(tmpfs))))
    assert res.returncode != 99, res.stderr
    return res, {line.split()[1]: line.split()[0] for line in sums.read_text().splitlines()}


def _docs_copy(tmp_path: Path, veth: str | None = None) -> Path:
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    if veth is not None:
        (docs / "captures" / "veth.json").write_text(veth)
    return docs


def _sha256s(docs: Path) -> dict[str, str]:
    return {f"./{p.relative_to(docs)}": hashlib.sha256(p.read_bytes()).hexdigest()
            for p in docs.rglob("*") if p.is_file()}


WRONG = "[]"
WRONG_LINE = ("error: page veth: docs/captures/veth.json is not a capture: the file is a list, "
              "not an object; `invoke lab.run --page veth` rewrites it")


def test_lab_draw_with_a_capture_of_the_wrong_shape_is_one_line(tmp_path):
    docs = _docs_copy(tmp_path, veth=WRONG)
    res, after = _invoke_on(docs, "lab.draw", "--page", "veth")
    assert (res.returncode, res.stderr.strip()) == (1, WRONG_LINE)
    assert after == _sha256s(docs)


def test_site_build_with_a_capture_of_the_wrong_shape_is_one_line(tmp_path):
    docs = _docs_copy(tmp_path, veth=WRONG)
    res, _ = _invoke_on(docs, "site.build", "--dir", str(tmp_path / "site"))
    assert (res.returncode, res.stdout + res.stderr.strip()) == (1, WRONG_LINE)


@pytest.mark.lab
def test_lab_check_with_a_capture_of_the_wrong_shape_is_one_line(tmp_path, host_lab):
    docs = _docs_copy(tmp_path, veth=WRONG)
    res, _ = _invoke_on(docs, "lab.check", "--page", "veth", "--lab", "host")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == WRONG_LINE
    assert "Traceback" not in res.stderr


@pytest.mark.lab
def test_lab_run_replaces_a_capture_of_the_wrong_shape(tmp_path, host_lab):
    docs = _docs_copy(tmp_path, veth=WRONG)
    res, after = _invoke_on(docs, "lab.run", "--page", "veth", "--lab", "host")
    assert res.returncode == 0, res.stderr
    assert "wrote docs/captures/veth.json" in res.stderr
    assert captures.load("veth", docs / "captures")["steps"]  # a capture again
    assert not [name for name in after if "/." in name]  # no stage, no temporary file


@pytest.mark.lab
def test_lab_run_on_a_full_disk_is_one_line_and_changes_nothing(tmp_path, host_lab):
    docs = _docs_copy(tmp_path)
    res, after = _invoke_on(docs, "lab.run", "--page", "veth", "--lab", "host", tmpfs=True)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "error: page veth: cannot write into docs: No space left on device; nothing was published")
    assert "Traceback" not in res.stderr
    assert after == _sha256s(docs)


def test_a_task_handles_ctrl_c_itself_and_then_lets_its_status_stand(sigint_restored):
    """Until a task runs, Ctrl-C ends the process at once; in it, KeyboardInterrupt
    becomes the task's one line and status 130; after it, Ctrl-C changes nothing."""
    from invoke import Exit

    import tasks  # installs the handler, on a first import
    from deepdive import startup

    startup.install()
    assert signal.getsignal(signal.SIGINT) is startup._exit_at_once
    seen = []

    @tasks.one_line_errors
    def body():
        seen.append(signal.getsignal(signal.SIGINT))
        raise KeyboardInterrupt

    with pytest.raises(Exit) as info:
        body()
    assert seen == [signal.default_int_handler]
    assert info.value.code == 130 and str(info.value.message).startswith("interrupted: ")
    assert signal.getsignal(signal.SIGINT) is startup._after_task
