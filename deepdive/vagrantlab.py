"""The vagrant lab: the host lab, run inside the Vagrantfile's `lab` machine.

`lab.run --lab vagrant` asks Vagrant for the machine's state, brings it up when it is
not running (`vagrant up lab`: created and provisioned by ./setup.sh --lab the first
time), or else pushes this checkout into it (`vagrant rsync lab`). Then the project's own
invoke runs the pages in the VM with the host lab (`vagrant ssh lab -c ...`), on the
copy in /vagrant. The rsync folder copies one way, into the VM, so the pages' captures
and diagrams are copied out explicitly afterwards (`python -m deepdive.vagrantlab pack`
in the VM prints them as one base64 line) and published here as a run of this machine
publishes, together or not at all (deepdive.publish).

The VM is left as the run found it. One that was running before the run stays up,
however the run ends. One that the run brought up is halted at the end, whatever the
end (success, failure, Ctrl-C, SIGTERM, SIGHUP); one that the run was creating when
it was stopped is destroyed, since Vagrant would not provision it again. Until then
.vagrant/deepdive-run.json names the run; `lab.clean --lab vagrant` halts or destroys
the VM of a run that is gone (killed outright), and leaves a run in progress alone.
"""
from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deepdive import capture as captures
from deepdive import runs
from deepdive.capture import ROOT
from deepdive.execute import die_with_parent
from deepdive.model import DeepDiveError
# Held as publishing holds them, while a VM this run started is halted.
from deepdive.publish import _signals_held, publish_files

MACHINE = "lab"
GUEST_ROOT = "/vagrant"
RUNNING = "running"
NOT_CREATED = "not_created"
NOT_PROVISIONED = 3  # the guest command's status when /vagrant/.venv is missing
# Environment a page run honours, passed on to the run in the VM when set here.
PASSED_ON = ("DEEPDIVE_PAGE_TIMEOUT", "DEEPDIVE_SLOWDOWN")
PROVIDER_ERRORS = ("Vagrant::Errors::NoDefaultProvider", "Vagrant::Errors::ProviderNotUsable")
STOP_WAIT = 30.0  # seconds a stopped vagrant command has to end before it is killed


class VagrantFailed(DeepDiveError):
    """A vagrant command failed; `kind` is Vagrant's error class."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(message)
        self.kind = kind


@dataclass
class Machine:
    state: str      # Vagrant's: running, poweroff, shutoff, not_created, ...
    provider: str   # libvirt, virtualbox, ...


def vagrant() -> str:
    """The vagrant program, or one line saying how to install it."""
    found = shutil.which("vagrant")
    if found is None:
        raise DeepDiveError("the vagrant lab needs Vagrant, not found on PATH (Debian/Ubuntu: "
                            "apt-get install vagrant vagrant-libvirt; or VirtualBox and "
                            "https://developer.hashicorp.com/vagrant/install)")
    return found


def marker() -> Path:
    """Where the run that brought the VM up is named: beside Vagrant's own state."""
    dotfile = os.environ.get("VAGRANT_DOTFILE_PATH")
    return (ROOT / dotfile if dotfile else ROOT / ".vagrant") / "deepdive-run.json"


def _start(args: list[str], run_id: str, **kw) -> subprocess.Popen:
    """`vagrant ARGS` in this checkout, in a session of its own (a terminal's Ctrl-C
    reaches this process only, which then stops it), dying with this process."""
    return subprocess.Popen([vagrant(), *args], cwd=ROOT, env=dict(os.environ, **{runs.MARKER: run_id}),
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=die_with_parent, **kw)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a vagrant command: SIGINT, as a terminal would send it, then SIGKILL."""
    for signum, wait in ((signal.SIGINT, STOP_WAIT), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def _machine_readable(args: list[str], run_id: str, say: Callable[[str], None]) -> list[list[str]]:
    """Run `vagrant ARGS --machine-readable`; relay its messages through `say`; return
    its records (target, type, data...). Raises VagrantFailed with its error in one line."""
    proc = _start([*args, "--machine-readable"], run_id, stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT, text=True)
    records, other = [], []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            fields = [_unescape(f) for f in line.rstrip("\n").split(",")[1:]]
            if len(fields) < 3:
                other.append(line.strip())
                continue
            records.append(fields)
            if fields[1] == "ui" and len(fields) > 3 and fields[2] in ("info", "output", "detail", "warn"):
                for text in fields[3].splitlines():
                    if text.strip():
                        say(text.strip())
        proc.wait()
    except BaseException:
        _stop(proc)
        raise
    for fields in records:
        if fields[1] == "error-exit":
            raise VagrantFailed(_one_line(fields[3] if len(fields) > 3 else "", fields[2]), fields[2])
    if proc.returncode != 0:
        crash = _uncaught(other)
        raise VagrantFailed(f"vagrant {args[0]} exited with status {proc.returncode}"
                            + (f": {crash}" if crash else ""))
    return records


def _uncaught(lines: list[str]) -> str:
    """The message of an exception Vagrant did not catch, from Ruby's report of it
    ("FILE:LINE:in `METHOD': MESSAGE (CLASS)", the message's further lines, then "from
    ..." lines), or ""."""
    for i, line in enumerate(lines):
        m = re.match(r"\S+:\d+:in [`'][^']*': (.*)$", line)
        if m:
            rest = itertools.takewhile(lambda l: not l.startswith("from "), lines[i + 1:])
            return " ".join([m.group(1), *(l for l in rest if l)])
    return ""


def _unescape(field: str) -> str:
    return field.replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n").replace("\\r", "")


def _one_line(message: str, kind: str) -> str:
    """Vagrant's error paragraphs in one line: the reason where Vagrant gives one after
    its preamble (a provider that is not usable), else the first paragraph."""
    paragraphs = [" ".join(p.split()) for p in message.split("\n\n") if p.strip()] or [kind]
    return paragraphs[-1] if kind == "Vagrant::Errors::ProviderNotUsable" else paragraphs[0]


def status(run_id: str) -> Machine:
    """The lab machine's state, or one line: no usable provider, or Vagrant's error."""
    try:
        records = _machine_readable(["status", MACHINE], run_id, lambda _line: None)
    except VagrantFailed as exc:
        raise _explained(exc, "cannot ask Vagrant about the lab machine") from None
    found = {f[1]: f[2] for f in records if f[0] == MACHINE and len(f) > 2}
    return Machine(state=found.get("state", "unknown"), provider=found.get("provider-name", "?"))


def _explained(exc: VagrantFailed, what: str) -> DeepDiveError:
    if exc.kind in PROVIDER_ERRORS:
        return DeepDiveError(f"the vagrant lab has no usable Vagrant provider ({exc}); it needs "
                             "libvirt (the vagrant-libvirt plugin and a running libvirtd) or VirtualBox")
    return DeepDiveError(f"the vagrant lab {what}: {exc}")


def run(pages: list[str], task: str, options: list[str], say: Callable[[str], None]) -> list[Path]:
    """Run `invoke lab.TASK OPTIONS --lab host` in the lab VM for `pages`; for lab.run,
    copy their captures and diagrams out and publish them here. Returns the files
    written here. The VM is left as it was found (see the module's docstring).

    Raises DeepDiveError in one line when Vagrant or a provider is missing, the VM does
    not come up, or the run in the VM fails (its own output, printed above, says why);
    KeyboardInterrupt, once the VM is dealt with, when interrupted."""
    owner = _marked()
    if owner and runs.in_progress(owner.get("run", "")):
        raise DeepDiveError(f"the lab VM was brought up by a run in progress ({owner['run']}), which halts "
                            f"it when it ends; wait for it, or start the VM yourself (vagrant up {MACHINE}) "
                            "for runs to share it")
    run_id = runs.new_id("vagrant")
    machine = status(run_id)
    started = machine.state != RUNNING
    stage = "creating" if machine.state == NOT_CREATED else "starting"
    try:
        if started:
            _write_marker(run_id, creating=machine.state == NOT_CREATED)
            say(f"bringing the lab VM up (vagrant up {MACHINE}; it was {machine.state.replace('_', ' ')})")
            try:
                _machine_readable(["up", MACHINE], run_id, say)
            except VagrantFailed as exc:
                raise _explained(exc, "could not bring the VM up") from None
            stage = "up"
            _write_marker(run_id, creating=False)  # provisioned: a halt keeps it for the next run
        else:
            say(f"the lab VM is running already ({machine.provider}): syncing this checkout into it "
                "(vagrant rsync); it stays up after the run")
            try:
                _machine_readable(["rsync", MACHINE], run_id, say)
            except VagrantFailed as exc:
                raise _explained(exc, "could not sync this checkout into the VM") from None
        _in_guest(task, options, run_id)
        return copy_out(pages, run_id) if task == "run" else []
    finally:
        if started:
            with _signals_held():
                _leave(run_id, destroy=stage == "creating", say=say)


def _write_marker(run_id: str, creating: bool) -> None:
    path = marker()
    path.parent.mkdir(parents=True, exist_ok=True)
    captures.atomic_write(path, json.dumps({"run": run_id, "creating": creating}).encode())


def _marked() -> dict | None:
    """What marker() says: the run that brought the VM up and whether it was creating it."""
    try:
        return json.loads(marker().read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DeepDiveError(f"cannot read {captures.rel_path(marker())}: {exc}") from None


def _leave(run_id: str, destroy: bool, say: Callable[[str], None]) -> None:
    """Halt the VM a run brought up (destroy one it was still creating), then forget it.
    A VM that is not there, or not running when it is only to be halted, is left as it
    is: so a provider that never made it (unreachable) cannot hide why."""
    state = status(run_id).state
    if (state == NOT_CREATED) if destroy else (state != RUNNING):
        marker().unlink(missing_ok=True)
        return
    args = ["destroy", "--force", MACHINE] if destroy else ["halt", MACHINE]
    say(f"{'destroying' if destroy else 'halting'} the lab VM this run started (vagrant {' '.join(args)})")
    try:
        _machine_readable(args, run_id, lambda _line: None)
    except VagrantFailed as exc:
        raise DeepDiveError(f"the vagrant lab could not {args[0]} the VM it started: {exc}; "
                            "`invoke lab.clean --lab vagrant` tries again") from None
    marker().unlink(missing_ok=True)


def guest_command(task: str, options: list[str]) -> str:
    """The shell command the VM runs: the project's invoke, as root, with the host lab."""
    passed = [f"{name}={value}" for name, value in guest_env().items()]
    invoke = ["sudo", "env", *passed, ".venv/bin/invoke", f"lab.{task}", *options, "--lab", "host"]
    return (f"cd {GUEST_ROOT} && if [ ! -x .venv/bin/invoke ]; then exit {NOT_PROVISIONED}; fi && "
            + shlex.join(invoke))


def guest_env() -> dict[str, str]:
    """What the run in the VM is given: under software emulation (libvirt's qemu
    driver), the vm lab's allowances for it, then PASSED_ON as set here."""
    env = {}
    if os.environ.get("DEEPDIVE_VAGRANT_LIBVIRT_DRIVER", "").strip() == "qemu":
        from deepdive import vmlab
        env = {"DEEPDIVE_SLOWDOWN": f"{vmlab.TCG_SLOWDOWN:g}", "DEEPDIVE_PAGE_TIMEOUT": f"{vmlab.PAGE_TIMEOUT['tcg']:g}"}
    return env | {name: os.environ[name] for name in PASSED_ON if os.environ.get(name)}


def _in_guest(task: str, options: list[str], run_id: str) -> None:
    """Run the task in the VM, its output on this terminal. A pseudo-terminal, forced
    (ssh -t -t) since this process's stdin is none, ties the run in the VM to this
    connection: closing it sends the run SIGHUP, which ends it as Ctrl-C would. Given
    as two words: Vagrant adds a -t of its own unless it finds one, and a third -t
    would take ssh back from forcing to asking."""
    proc = _start(["ssh", MACHINE, "-c", guest_command(task, options), "--", "-q", "-t", "-t"], run_id)
    try:
        proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if proc.returncode == NOT_PROVISIONED:
        raise DeepDiveError(f"the lab VM has no project environment in {GUEST_ROOT}/.venv (its provisioning "
                            f"did not finish): vagrant provision {MACHINE}")
    if proc.returncode != 0:
        raise DeepDiveError(f"lab.{task} failed in the vagrant VM (status {proc.returncode}); "
                            "its output above says why")


def copy_out(pages: list[str], run_id: str) -> list[Path]:
    """Bring the pages' captures and diagrams out of the VM and publish them here."""
    command = f"cd {GUEST_ROOT} && .venv/bin/python -m deepdive.vagrantlab pack {shlex.join(pages)}"
    proc = _start(["ssh", MACHINE, "--no-tty", "-c", command], run_id,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate()
    except BaseException:
        _stop(proc)
        raise
    lines = out.split()
    if proc.returncode != 0 or not lines:
        why = (err.strip().splitlines() or [f"status {proc.returncode}"])[-1]
        raise DeepDiveError(f"the vagrant lab could not copy the captures out of the VM: {why}")
    return unpack(pages, lines[-1])


def pack(pages: list[str], docs: Path = captures.DOCS) -> str:
    """Each page's capture and the diagrams drawn from it, as one base64 line of a tar
    archive (paths relative to docs/). Runs in the VM."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for page in pages:
            capture = json.loads((docs / "captures" / f"{page}.json").read_text())
            for rel in [f"captures/{page}.json", *diagrams(page, capture)]:
                if (docs / rel).is_file():
                    tar.add(docs / rel, arcname=rel)
    return base64.b64encode(buffer.getvalue()).decode()


def diagrams(page: str, capture: dict) -> list[str]:
    """The diagram files drawn from a capture's snapshots, relative to docs/."""
    return [f"diagrams/{page}-{step_id}{suffix}" for step_id, _snapshot in captures.snapshots(capture)
            for suffix in (".svg", "-dark.svg", ".png")]


def unpack(pages: list[str], line: str, docs: Path = captures.DOCS) -> list[Path]:
    """Publish what pack() sent: only the files each page's capture names are read."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(base64.b64decode(line, validate=True)))
    except (ValueError, tarfile.TarError) as exc:
        raise DeepDiveError(f"the vagrant lab got no readable archive out of the VM ({exc})") from None
    written: list[Path] = []
    with tar:
        names = set(tar.getnames())

        def read(rel: str) -> bytes:
            member = tar.extractfile(rel)
            if member is None:
                raise DeepDiveError(f"the VM sent {rel} as something other than a file")
            return member.read()

        for page in pages:
            if f"captures/{page}.json" not in names:
                raise DeepDiveError(f"page {page}: the VM sent no capture")
            try:
                capture = json.loads(read(f"captures/{page}.json"))
            except ValueError as exc:
                raise DeepDiveError(f"page {page}: the VM sent a capture that is not JSON ({exc})") from None
            problem = captures.shape_problem(capture)
            if problem:
                raise DeepDiveError(f"page {page}: the VM sent a malformed capture ({problem}); nothing was published")
            drawn = {rel.split("/", 1)[1]: read(rel) for rel in diagrams(page, capture) if rel in names}
            written += publish_files(page, capture, docs, drawn=drawn)
    return written


def clean(say: Callable[[str], None]) -> list[str]:
    """Halt (or destroy, if it was being created) the VM of a run that is gone; a run in
    progress is left alone. Returns what was done."""
    left = _marked()
    if left is None:
        return []
    if runs.in_progress(left.get("run", "")):
        say(f"the lab VM belongs to a run in progress ({left['run']}): left alone")
        return []
    vagrant()
    _leave(runs.new_id("vagrant"), destroy=bool(left.get("creating")), say=say)
    return [f"{'destroyed' if left.get('creating') else 'halted'} the vagrant lab VM of run {left.get('run')}, which is gone"]


if __name__ == "__main__":  # in the VM: python -m deepdive.vagrantlab pack PAGE...
    if sys.argv[1:2] != ["pack"] or len(sys.argv) < 3:
        sys.exit("usage: python -m deepdive.vagrantlab pack PAGE [PAGE...]")
    print(pack(sys.argv[2:]))
