"""The box builder's decisions, without building: the mirror it reads from apt's sources,
when a box is up to date, what a failed build leaves, and the one line bad input gets."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from deepdive import runs, sealedlibvirt, vagrantbox
from deepdive.model import DeepDiveError

ROOT = Path(__file__).resolve().parent.parent


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb deb-src\n# a comment\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert vagrantbox.configured_mirror((str(tmp_path / "absent.list"), str(d))) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    f = tmp_path / "sources.list"
    f.write_text("# deb http://old.example/debian bookworm main\n"
                 "deb http://security.example/debian-security bookworm-security main\n"
                 "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n")
    assert vagrantbox.configured_mirror((str(f),)) == "http://one.example/debian"


def test_mirror_defaults_to_debian(tmp_path: Path) -> None:
    f = tmp_path / "sources.list"
    f.write_text("deb http://archive.ubuntu.com/ubuntu noble main\n")
    assert vagrantbox.configured_mirror((str(f),)) == vagrantbox.DEFAULT_MIRROR


def fake_box(path: Path, recipe: str) -> None:
    meta = path.parent / "metadata.json"
    meta.write_text(json.dumps({"provider": "libvirt", "deepdive_recipe": recipe}))
    with tarfile.open(path, "w") as tar:
        tar.add(meta, arcname="metadata.json")


def fake_added(home: Path, recipe: str) -> None:
    d = home / "boxes" / "deepdive-VAGRANTSLASH-debian12" / "0" / "libvirt"
    d.mkdir(parents=True)
    (d / "metadata.json").write_text(json.dumps({"deepdive_recipe": recipe}))


@pytest.fixture
def builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """A builder with its tools, its key and Vagrant's home faked; records what it did."""
    calls: dict[str, list] = {"inside": [], "add": []}
    monkeypatch.setattr(vagrantbox, "preflight", lambda: None)
    monkeypatch.setattr(vagrantbox, "insecure_key", lambda: "ssh-rsa AAAA vagrant")
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant.d"))
    monkeypatch.setattr(vagrantbox, "inside", lambda *a: calls["inside"].append(a))
    monkeypatch.setattr(vagrantbox, "add", lambda box: calls["add"].append(box))
    return calls


def test_unchanged_recipe_does_nothing(tmp_path: Path, builder: dict[str, list]) -> None:
    out = tmp_path / "x.box"
    recipe = vagrantbox.recipe_hash("http://m.example/debian", "ssh-rsa AAAA vagrant")
    fake_box(out, recipe)
    fake_added(tmp_path / "vagrant.d", recipe)
    assert vagrantbox.build(out, "http://m.example/debian", say=lambda _: None) == "up to date"
    assert builder == {"inside": [], "add": []}


def test_box_file_not_yet_added_is_only_added(tmp_path: Path, builder: dict[str, list]) -> None:
    out = tmp_path / "x.box"
    fake_box(out, vagrantbox.recipe_hash("http://m.example/debian", "ssh-rsa AAAA vagrant"))
    fake_added(tmp_path / "vagrant.d", "an older recipe")
    assert vagrantbox.build(out, "http://m.example/debian", say=lambda _: None) == "added"
    assert builder == {"inside": [], "add": [out]}


def test_changed_mirror_rebuilds(tmp_path: Path, builder: dict[str, list],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "x.box"
    fake_box(out, vagrantbox.recipe_hash("http://m.example/debian", "ssh-rsa AAAA vagrant"))
    monkeypatch.setattr(vagrantbox, "pack", lambda work, out, recipe: fake_box(out, recipe))
    assert vagrantbox.build(out, "http://other.example/debian", say=lambda _: None) == "built"
    assert len(builder["inside"]) == 1 and builder["add"] == [out]
    assert vagrantbox.box_recipe(out) == vagrantbox.recipe_hash("http://other.example/debian",
                                                                "ssh-rsa AAAA vagrant")


def test_failed_build_leaves_nothing(tmp_path: Path, builder: dict[str, list],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(work: Path, *_a: object) -> None:
        (work / "disk.raw").write_bytes(b"half")
        raise DeepDiveError("debootstrap failed (status 1): E: no such suite")

    monkeypatch.setattr(vagrantbox, "inside", fails)
    out = tmp_path / "out" / "x.box"
    with pytest.raises(DeepDiveError, match="debootstrap failed"):
        vagrantbox.build(out, "http://m.example/debian", say=lambda _: None)
    assert list((tmp_path / "out").iterdir()) == []  # no box, no build directory
    assert builder["add"] == []


def test_sweep_removes_only_dead_builders_directories(tmp_path: Path) -> None:
    dead = tmp_path / f"{vagrantbox.BUILD_DIR_PREFIX}ddlab-box-0123abcd-999999999-1.xyz"
    live = tmp_path / f"{vagrantbox.BUILD_DIR_PREFIX}{runs.new_id('box')}.abc"
    dead.mkdir()
    live.mkdir()
    vagrantbox.sweep(tmp_path)
    assert not dead.exists() and live.exists()


def test_inside_failure_is_its_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The privileged part's `error: ...` line is what the user reads, not its exit status.
    monkeypatch.setattr(vagrantbox, "inside_main",
                        lambda *a: (_ for _ in ()).throw(DeepDiveError("mount failed (status 32): x")))
    assert vagrantbox._inside_cli(["inside", str(tmp_path), "http://m", "key"]) == 1
    if os.geteuid() != 0:
        pytest.skip("the unshare part needs root")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "unshare").write_text("#!/bin/sh\necho 'progress: debootstrap'\n"
                                  "echo 'error: debootstrap failed (status 1): E: x'\nexit 1\n")
    (fake / "unshare").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(DeepDiveError, match=r"^debootstrap failed \(status 1\): E: x$"):
        vagrantbox.inside(tmp_path, "http://m", "key")


def test_missing_tools_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vagrantbox.shutil, "which", lambda t: None if t in ("debootstrap", "vagrant") else "/x")
    with pytest.raises(DeepDiveError) as exc:
        vagrantbox.preflight()
    assert str(exc.value) == ("building the box needs debootstrap (Debian package debootstrap), "
                              "vagrant (Debian package vagrant): install debootstrap vagrant")


def test_libvirt_missing_tools_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sealedlibvirt, "_which", lambda t: t != "dnsmasq")
    with pytest.raises(DeepDiveError, match=r"^libvirt for vagrant needs dnsmasq-base: install dnsmasq-base$"):
        sealedlibvirt.preflight()


def test_task_without_debootstrap_is_one_line(tmp_path: Path) -> None:
    # PATH without debootstrap (nor vagrant): the task says so in one line, status 1.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("qemu-img", "sfdisk", "mkfs.ext4", "extlinux", "fstrim", "unshare", "mount"):
        (bin_dir / tool).symlink_to("/bin/true")
    proc = subprocess.run([sys.executable, "-m", "invoke", "vagrant.box"], cwd=ROOT,
                          env=dict(os.environ, PATH=str(bin_dir)), capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: building the box needs debootstrap (Debian package "
                                        "debootstrap), vagrant (Debian package vagrant): install "
                                        "debootstrap vagrant"]


@pytest.mark.parametrize("mirror, out, message", [
    ("ftp.example/debian", "x.box", "mirror 'ftp.example/debian' is not an http:// or https:// URL"),
    ("", ".", "is a directory: give the path of the .box file to write"),
])
def test_bad_input_is_one_line(tmp_path: Path, builder: dict[str, list], mirror: str, out: str,
                               message: str) -> None:
    with pytest.raises(DeepDiveError) as exc:
        vagrantbox.build(tmp_path / out, mirror, say=lambda _: None)
    assert str(exc.value).endswith(message) and "\n" not in str(exc.value)
    assert builder == {"inside": [], "add": []}


def test_recipe_covers_setup_sh_and_the_local_cas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to the lab's package list or to a local CA makes a new box; so does a CA
    added in a subfolder (update-ca-certificates reads those too). Other files do not."""
    setup, cas = tmp_path / "setup.sh", tmp_path / "cas"
    setup.write_text("LAB_PACKAGES=(iproute2)\n")
    (cas / "corp").mkdir(parents=True)
    (cas / "one.crt").write_text("one")
    monkeypatch.setattr(vagrantbox, "SETUP", setup)

    def recipe() -> str:
        return vagrantbox.recipe_hash("http://m.example/debian", "key", cas)

    seen = {recipe()}
    (cas / "README").write_text("not a certificate")
    assert recipe() in seen
    (cas / "corp" / "two.crt").write_text("two")
    seen.add(recipe())
    (cas / "one.crt").write_text("one, renewed")
    seen.add(recipe())
    setup.write_text("LAB_PACKAGES=(iproute2 tcpdump)\n")
    seen.add(recipe())
    assert len(seen) == 4
    assert vagrantbox.local_cas(cas) == [cas / "corp" / "two.crt", cas / "one.crt"]
    assert vagrantbox.local_cas(tmp_path / "absent") == []
