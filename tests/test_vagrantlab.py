"""The vagrant lab's command sequence, its errors and its interruption, against a fake
`vagrant` (tests/fixtures/fake-vagrant) first on PATH; and its copy out of the VM.
No VM, no privileges."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, eventually
from deepdive import capture as captures
from deepdive import vagrantlab
from deepdive.model import DeepDiveError

FAKE = ROOT / "tests" / "fixtures" / "fake-vagrant"
PAGE = "veth"  # a page with diagrams; its committed capture is what the fake VM sends back


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """The fake's directory: its calls, the machine's state, what it is told to do."""
    home = tmp_path / "fake"
    bin_dir = home / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "vagrant").symlink_to(FAKE)
    (home / "calls").touch()
    # What the VM sends back: this checkout's own capture and diagrams, so that nothing
    # changes here.
    (home / "pack").write_text(vagrantlab.pack([PAGE]))
    return home


def env_for(fake: Path) -> dict[str, str]:
    return dict(os.environ, PATH=f"{fake / 'bin'}:{os.environ['PATH']}", FAKE_VAGRANT=str(fake),
                VAGRANT_DOTFILE_PATH=str(fake / "dot"), DEEPDIVE_PAGE_TIMEOUT="300")


def invoke(fake: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env_for(fake),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def calls(fake: Path) -> list[list[str]]:
    return [json.loads(line) for line in (fake / "calls").read_text().splitlines()]


def commands(fake: Path) -> list[str]:
    """Each call as `vagrant SUBCOMMAND`, and the guest's task for ssh."""
    out = []
    for argv in calls(fake):
        if argv[0] == "stopped":
            out.append(" ".join(argv))
        elif argv[0] == "ssh":
            script = argv[argv.index("-c") + 1]
            out.append("ssh pack" if "vagrantlab pack" in script else f"ssh {script.rsplit('.venv/bin/invoke ', 1)[1]}")
        else:
            out.append(" ".join(a for a in argv if a != "--machine-readable"))
    return out


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_a_stopped_vm_is_brought_up_used_and_halted(fake):
    (fake / "state").write_text("poweroff")
    rc, err = finish(invoke(fake, "lab.run", "--page", PAGE, "--lab", "vagrant", "--jobs", "1"))
    assert rc == 0, err
    assert commands(fake) == ["status lab", "up lab",
                              f"ssh lab.run --page {PAGE} --jobs 1 --lab host",
                              "ssh pack", "status lab", "halt lab"]
    assert (fake / "state").read_text() == "poweroff"
    assert not (fake / "dot" / "deepdive-run.json").exists()
    assert "vagrant lab: no file(s) changed here" in err
    # The run in the VM is the project's own invoke, as root, on the synced copy, with
    # the limits set here passed on.
    script = calls(fake)[2][calls(fake)[2].index("-c") + 1]
    # A pseudo-terminal, forced: its end sends the run in the VM SIGHUP.
    assert calls(fake)[2][-4:] == ["--", "-q", "-t", "-t"]
    assert script.startswith("cd /vagrant && ")
    assert "sudo env DEEPDIVE_PAGE_TIMEOUT=300 .venv/bin/invoke lab.run" in script


def test_a_running_vm_is_synced_and_left_running(fake):
    (fake / "state").write_text("running")
    rc, err = finish(invoke(fake, "lab.check", "--page", PAGE, "--lab", "vagrant", "--jobs", "1"))
    assert rc == 0, err
    assert commands(fake) == ["status lab", "rsync lab", f"ssh lab.check --page {PAGE} --jobs 1 --lab host"]
    assert (fake / "state").read_text() == "running"


def test_a_page_failing_in_the_vm_is_one_line_and_the_vm_is_halted(fake):
    (fake / "state").write_text("poweroff")
    (fake / "run-status").write_text("1")
    rc, err = finish(invoke(fake, "lab.run", "--page", PAGE, "--lab", "vagrant"))
    assert rc == 1
    assert err.strip().splitlines()[-1] == ("error: lab.run failed in the vagrant VM (status 1); "
                                            "its output above says why")
    assert commands(fake)[-1] == "halt lab" and "ssh pack" not in commands(fake)


def test_an_unprovisioned_vm_says_how_to_provision_it(fake):
    (fake / "state").write_text("running")
    (fake / "run-status").write_text(str(vagrantlab.NOT_PROVISIONED))
    rc, err = finish(invoke(fake, "lab.run", "--page", PAGE, "--lab", "vagrant"))
    assert (rc, err.strip().splitlines()[-1]) == (1, "error: the lab VM has no project environment in "
                                                     "/vagrant/.venv (its provisioning did not finish): "
                                                     "vagrant provision lab")


def test_no_vagrant_is_one_line(fake):
    env = dict(env_for(fake), PATH="/nonexistent")
    res = subprocess.run([sys.executable, "-m", "invoke", "lab.run", "--page", PAGE, "--lab", "vagrant"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.strip().startswith("error: the vagrant lab needs Vagrant, not found on PATH")
    assert len(res.stderr.strip().splitlines()) == 1


def test_no_usable_provider_is_one_line(fake):
    (fake / "status-error").write_text(
        "Vagrant::Errors::ProviderNotUsable|The provider 'virtualbox' that was requested to back the machine\n"
        "'lab' is reporting that it isn't usable on this system. The\nreason is shown below:\n\n"
        "Vagrant could not detect VirtualBox! Make sure VirtualBox is properly installed.")
    rc, err = finish(invoke(fake, "lab.run", "--page", PAGE, "--lab", "vagrant"))
    assert (rc, err.strip().splitlines()) == (1, [
        "error: the vagrant lab has no usable Vagrant provider (Vagrant could not detect VirtualBox! "
        "Make sure VirtualBox is properly installed.); it needs libvirt (the vagrant-libvirt plugin "
        "and a running libvirtd) or VirtualBox"])
    assert commands(fake) == ["status lab"]


def test_a_vm_that_does_not_come_up_is_one_line_and_destroyed(fake):
    (fake / "up-error").write_text("VagrantPlugins::ProviderLibvirt::Errors::FogCreateServerError|"
                                   "Error while creating domain: internal error: qemu unexpectedly closed")
    rc, err = finish(invoke(fake, "lab.run", "--page", PAGE, "--lab", "vagrant"))
    assert rc == 1
    assert err.strip().splitlines()[-1] == ("error: the vagrant lab could not bring the VM up: Error while "
                                            "creating domain: internal error: qemu unexpectedly closed")
    # Never made: nothing to destroy, and Vagrant's reason is what the line says.
    assert commands(fake) == ["status lab", "up lab", "status lab"]
    assert not (fake / "dot" / "deepdive-run.json").exists()


def test_an_exception_vagrant_does_not_catch_is_its_message(fake):
    # What vagrant-libvirt 0.11.2 printed here when qemu could not start a KVM domain.
    (fake / "up-crash").write_text(
        "Bringing machine 'lab' up with 'libvirt' provider...\n"
        "/usr/lib/ruby/vendor_ruby/fog/libvirt/requests/compute/vm_action.rb:7:in `create': Call to "
        "virDomainCreateWithFlags failed: internal error: qemu unexpectedly closed the monitor: "
        "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69 (Libvirt::Error)\n"
        "qemu-system-x86_64: kvm.c:3183: kvm_buf_set_msrs: Assertion failed.\n"
        "\tfrom /usr/lib/ruby/vendor_ruby/fog/libvirt/requests/compute/vm_action.rb:7:in `vm_action'\n"
        "\tfrom /usr/share/rubygems-integration/all/gems/vagrant-2.3.4/lib/vagrant/action/warden.rb:48:in `call'\n")
    rc, err = finish(invoke(fake, "lab.run", "--page", PAGE, "--lab", "vagrant"))
    assert rc == 1
    assert err.strip().splitlines()[-1] == (
        "error: the vagrant lab could not bring the VM up: vagrant up exited with status 1: Call to "
        "virDomainCreateWithFlags failed: internal error: qemu unexpectedly closed the monitor: "
        "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69 (Libvirt::Error) "
        "qemu-system-x86_64: kvm.c:3183: kvm_buf_set_msrs: Assertion failed.")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("moment", ["up", "run"])
def test_an_interrupt_leaves_no_vm_the_run_started(fake, signum, moment):
    """Interrupted while the VM comes up, or while the page runs in it: the VM it
    started is halted (destroyed if it was being created) before the run ends."""
    before = "not_created" if moment == "up" else "poweroff"
    (fake / "state").write_text(before)
    (fake / f"{moment}-seconds").write_text("60")
    proc = invoke(fake, "lab.run", "--page", PAGE, "--lab", "vagrant")
    wanted = "up lab" if moment == "up" else f"ssh lab.run --page {PAGE} --lab host"
    assert eventually(lambda: any(c.startswith(wanted) for c in commands(fake)), within=30)
    time.sleep(0.5)  # the fake is in its sleep
    os.kill(proc.pid, signum)
    rc, err = finish(proc)
    assert rc == 130, err
    # What was in progress was stopped first.
    assert commands(fake)[-3:] == (["stopped up", "status lab", "destroy --force lab"] if moment == "up"
                                   else ["stopped ssh", "status lab", "halt lab"])
    assert (fake / "state").read_text() == ("not_created" if moment == "up" else "poweroff")
    assert not (fake / "dot" / "deepdive-run.json").exists()
    assert not _fakes_running(fake)


def page_running(fake: Path, state: str, **seconds: str) -> subprocess.Popen:
    """lab.run of PAGE with the VM in `state`, once its page runs in the (fake) VM;
    `seconds`: how long the fake's commands take (run="60": the page runs a minute)."""
    (fake / "state").write_text(state)
    for name, value in seconds.items():
        (fake / f"{name}-seconds").write_text(value)
    proc = invoke(fake, "lab.run", "--page", PAGE, "--lab", "vagrant")
    assert eventually(lambda: any(c.startswith("ssh lab.run") for c in commands(fake)), within=30)
    time.sleep(0.5)  # the fake is in its sleep
    return proc


def test_an_interrupt_leaves_a_vm_that_was_running_up(fake):
    proc = page_running(fake, "running", run="60")
    os.kill(proc.pid, signal.SIGINT)
    rc, err = finish(proc)
    assert rc == 130, err
    assert commands(fake)[-2].startswith("ssh lab.run") and commands(fake)[-1] == "stopped ssh"
    assert (fake / "state").read_text() == "running"
    assert not _fakes_running(fake)


def test_a_second_interrupt_does_not_stop_the_halt(fake):
    """Ctrl-C pressed again (or a SIGTERM after it) while the VM is being halted waits
    for the halt, which is what leaves no VM running."""
    proc = page_running(fake, "poweroff", run="60", halt="3")
    os.kill(proc.pid, signal.SIGINT)
    assert eventually(lambda: "halt lab" in commands(fake), within=60)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    rc, err = finish(proc)
    assert rc == 130, err
    assert commands(fake)[-1] == "halt lab" and (fake / "state").read_text() == "poweroff"


def test_a_second_run_does_not_share_a_vm_the_first_will_halt(fake):
    first = page_running(fake, "poweroff", run="60")
    try:
        rc, err = finish(invoke(fake, "lab.run", "--page", PAGE, "--lab", "vagrant"))
        assert rc == 1 and len(err.strip().splitlines()) == 1
        assert err.startswith("error: the lab VM was brought up by a run in progress (ddlab-vagrant-")
    finally:
        os.kill(first.pid, signal.SIGINT)
        finish(first)


def test_clean_halts_the_vm_of_a_run_that_is_gone(fake):
    """A run killed outright (SIGKILL) leaves its VM up and the file naming the run;
    lab.clean --lab vagrant halts it. A run in progress is left alone."""
    proc = page_running(fake, "poweroff", run="60")
    res = subprocess.run([sys.executable, "-m", "invoke", "lab.clean", "--lab", "vagrant"], cwd=ROOT,
                         env=env_for(fake), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "belongs to a run in progress" in res.stderr and (fake / "state").read_text() == "running"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (fake / "state").read_text() == "running"
    res = subprocess.run([sys.executable, "-m", "invoke", "lab.clean", "--lab", "vagrant"], cwd=ROOT,
                         env=env_for(fake), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "halted the vagrant lab VM of run ddlab-vagrant-" in res.stderr
    assert commands(fake)[-1] == "halt lab" and (fake / "state").read_text() == "poweroff"
    assert not (fake / "dot" / "deepdive-run.json").exists()


def _fakes_running(fake: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"FAKE_VAGRANT={fake}".encode() in env.split(b"\0") and (entry / "cmdline").read_bytes():
            found.append(entry.name)
    return found


def test_copy_out_publishes_what_the_vm_sent(tmp_path):
    """The VM's capture and diagrams land in docs/ as a run here would publish them;
    files the capture does not name are never read."""
    vm_docs, docs = tmp_path / "vm", tmp_path / "here"
    for d in (vm_docs, docs):
        shutil.copytree(captures.DOCS / "captures", d / "captures")
        shutil.copytree(captures.DOCS / "diagrams", d / "diagrams")
    capture = json.loads((vm_docs / "captures" / f"{PAGE}.json").read_text())
    capture["steps"][0]["commands"][0]["stdout"] += "a line the VM's kernel printed\n"
    (vm_docs / "captures" / f"{PAGE}.json").write_text(captures.dumps(capture))
    first = vagrantlab.diagrams(PAGE, capture)[0]
    (vm_docs / first).write_bytes(b"<svg>drawn in the VM</svg>")
    written = vagrantlab.unpack([PAGE], vagrantlab.pack([PAGE], vm_docs), docs)
    assert sorted(p.relative_to(docs).as_posix() for p in written) == sorted([f"captures/{PAGE}.json", first])
    assert (docs / first).read_bytes() == b"<svg>drawn in the VM</svg>"
    assert json.loads((docs / "captures" / f"{PAGE}.json").read_text()) == capture


def test_copy_out_of_garbage_is_one_line(tmp_path):
    with pytest.raises(DeepDiveError, match="no readable archive out of the VM"):
        vagrantlab.unpack([PAGE], "not base64!", tmp_path)


def test_clean_of_an_unknown_lab_is_one_line(fake):
    res = subprocess.run([sys.executable, "-m", "invoke", "lab.clean", "--lab", "cloud"], cwd=ROOT,
                         env=env_for(fake), capture_output=True, text=True)
    assert (res.returncode, res.stderr) == (1, "error: no lab 'cloud'; labs: auto, host, vm, vagrant\n")
    assert commands(fake) == []


def test_under_software_emulation_the_vm_gets_the_vm_labs_allowances(monkeypatch):
    monkeypatch.delenv("DEEPDIVE_PAGE_TIMEOUT", raising=False)
    monkeypatch.delenv("DEEPDIVE_SLOWDOWN", raising=False)
    monkeypatch.setenv("DEEPDIVE_VAGRANT_LIBVIRT_DRIVER", "qemu")
    assert vagrantlab.guest_env() == {"DEEPDIVE_SLOWDOWN": "8", "DEEPDIVE_PAGE_TIMEOUT": "360"}
    monkeypatch.setenv("DEEPDIVE_PAGE_TIMEOUT", "900")  # what is set here wins
    assert vagrantlab.guest_env()["DEEPDIVE_PAGE_TIMEOUT"] == "900"
    monkeypatch.setenv("DEEPDIVE_VAGRANT_LIBVIRT_DRIVER", "kvm")
    assert vagrantlab.guest_env() == {"DEEPDIVE_PAGE_TIMEOUT": "900"}


def test_copy_out_writes_nothing_outside_docs(tmp_path):
    vm_docs, docs = tmp_path / "vm", tmp_path / "here"
    shutil.copytree(captures.DOCS / "captures", vm_docs / "captures")
    capture = json.loads((vm_docs / "captures" / f"{PAGE}.json").read_text())
    capture["steps"][0]["id"] = "../../escaped"
    (vm_docs / "captures" / f"{PAGE}.json").write_text(captures.dumps(capture))
    (vm_docs / "diagrams" / f"{PAGE}-..").mkdir(parents=True)
    (vm_docs / "diagrams" / "escaped.svg").write_text("<svg/>")  # where that id points
    # A step id is checked before its diagrams' names are made from it.
    with pytest.raises(DeepDiveError, match="malformed capture .*is not a step id"):
        vagrantlab.unpack([PAGE], vagrantlab.pack([PAGE], vm_docs), docs)
    assert not docs.exists()
