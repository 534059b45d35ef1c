"""Build a libvirt Vagrant box of Debian 12 from Debian packages, and add it to Vagrant.

`invoke vagrant.box` debootstraps Debian 12 (bookworm) from the Debian mirror this machine's
apt uses onto an ext4 partition of a raw disk image, makes it bootable with EXTLINUX
(syslinux's MBR code, the kernel from linux-image-amd64 and its initramfs), and packs it
the way vagrant-libvirt expects a box (box.img in qcow2, metadata.json, a Vagrantfile).
The guest has what Vagrant needs: openssh-server (host keys made at first boot, so no two
VMs share them), the `vagrant` user with passwordless sudo and Vagrant's insecure public
key (from Debian's vagrant package), DHCP on eth0 (systemd-networkd), and 9p and rsync
for synced folders. It also has the lab's packages, the list `./setup.sh --lab-packages`
prints in the new system, installed at the build machine's speed: the Vagrantfile's lab VM
is provisioned with `./setup.sh --lab`, which then has nothing left to install (under
software emulation, installing them in the VM takes most of an hour). It trusts the CAs
this machine added to its store (/usr/local/share/ca-certificates), and its pip uses the
system's store, so that a network that re-signs HTTPS with its own CA (a TLS-inspecting
proxy) serves the VM as it serves this machine. Then `vagrant box add` adds it as BOX_NAME.

A box is rebuilt only when its recipe changed: the recipe is this file, setup.sh, the
mirror, the key and the local CAs, hashed into metadata.json. A second run with the same
recipe does nothing (or only adds the box, when the file is there but Vagrant lacks it).

The privileged part runs as PID 1 of fresh mount and PID namespaces (`python -m
deepdive.vagrantbox inside ...` under unshare): the image's loop device comes from
`mount -o loop`, which sets it to detach itself when unmounted, and the chroot's mounts
(debootstrap's /proc and /sys) are that namespace's. However the build ends, even by
SIGKILL, the kernel ends the namespaces and with them every mount and the loop device.
The box file appears only complete, by a rename; the build's directory is removed when
the build ends, or by the next build when its builder died.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Callable

from deepdive import runs
from deepdive.capture import ROOT, rel_path
from deepdive.execute import die_with_parent
from deepdive.model import DeepDiveError

BOX_NAME = "deepdive/debian12"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_OUT = ROOT / "build" / "deepdive-debian12.box"
DISK_BYTES = 8 << 30  # the guest's disk; qcow2 and the box hold only what is written
PART_OFFSET = 1 << 20  # the partition starts at 1 MiB, as partitioning tools align it
# debootstrap's minbase plus what boots it under libvirt and what Vagrant needs.
PACKAGES = (
    "systemd-sysv", "udev", "kmod", "dbus",      # boot; dbus for hostnamectl (config.vm.hostname)
    "linux-image-amd64", "initramfs-tools",      # the kernel (virtio and 9p modules) and initramfs
    "systemd-resolved",                          # DNS from DHCP, with systemd-networkd
    "openssh-server", "sudo",                    # vagrant ssh
    "iproute2", "netbase", "ca-certificates", "procps", "rsync",
)
INSECURE_KEY_GLOB = "/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub"
MBR_CODE = "/usr/lib/EXTLINUX/mbr.bin"
SETUP = ROOT / "setup.sh"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")  # update-ca-certificates(8) adds these
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# tool -> Debian package, for the one line a missing tool gets.
TOOLS = {"debootstrap": "debootstrap", "qemu-img": "qemu-utils", "vagrant": "vagrant",
         "sfdisk": "fdisk", "mkfs.ext4": "e2fsprogs", "extlinux": "extlinux",
         "fstrim": "util-linux", "unshare": "util-linux", "mount": "mount"}
BUILD_DIR_PREFIX = ".box-build-"
# The box's Vagrantfile: defaults any project's Vagrantfile can override. The domain type
# is left to the project (kvm by default; `libvirt.driver = "qemu"` where KVM is missing).
BOX_VAGRANTFILE = """\
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
  # 9p is two-way: files the guest writes in /vagrant are on the host at once.
  config.vm.synced_folder ".", "/vagrant", type: "9p", version: "9p2000.L", access: "any"
end
"""


def build(out: Path = DEFAULT_OUT, mirror: str = "", force: bool = False,
          say: Callable[[str], None] = print) -> str:
    """Build the box into `out` (a .box file) unless its recipe is unchanged, and add it
    to Vagrant as BOX_NAME. Returns what was done: "built", "added" or "up to date".

    Needs root and the tools in TOOLS; raises DeepDiveError for a mirror that is not an
    http(s) URL or an `out` that is a directory, naming what is missing, or the step
    that failed."""
    if mirror and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", mirror):
        raise DeepDiveError(f"mirror {mirror!r} is not an http:// or https:// URL")
    out = out.resolve()
    if out.is_dir():
        raise DeepDiveError(f"{out} is a directory: give the path of the .box file to write")
    preflight()
    key = insecure_key()
    mirror = mirror or configured_mirror()
    recipe = recipe_hash(mirror, key)
    if not force and box_recipe(out) == recipe:
        if added_recipe() == recipe:
            return "up to date"
        add(out)
        return "added"
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep(out.parent)
    work = Path(tempfile.mkdtemp(prefix=f"{BUILD_DIR_PREFIX}{runs.new_id('box')}.", dir=out.parent))
    try:
        say(f"debootstrap {SUITE} from {mirror} (minutes)")
        inside(work, mirror, key)
        say("converting to qcow2")
        pack(work, out, recipe)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"adding {rel_path(out)} as {BOX_NAME}")
    add(out)
    return "built"


def preflight() -> None:
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise DeepDiveError(f"building the box needs {', '.join(missing)}: install "
                            f"{' '.join(sorted({TOOLS[m.split()[0]] for m in missing}))}")
    if not os.path.exists(MBR_CODE):
        raise DeepDiveError(f"building the box needs {MBR_CODE}: install extlinux")
    if os.geteuid() != 0:
        raise DeepDiveError("building the box needs root (debootstrap, a loop mount): run it as root")


def insecure_key() -> str:
    """Vagrant's insecure public key as Debian's vagrant package ships it (one line)."""
    found = sorted(glob.glob(INSECURE_KEY_GLOB))
    if not found:
        raise DeepDiveError(f"Vagrant's insecure public key is not at {INSECURE_KEY_GLOB}: "
                            "install Debian's vagrant package")
    return Path(found[-1]).read_text().strip()


def configured_mirror(sources: tuple[str, ...] = ("/etc/apt/sources.list",
                                                  "/etc/apt/sources.list.d")) -> str:
    """The first Debian mirror apt is configured with for SUITE (one-line or deb822
    sources), else DEFAULT_MIRROR: a Debian mirror is one serving the suite itself, not
    its -security or -updates."""
    files: list[Path] = []
    for source in map(Path, sources):
        files += sorted(source.glob("*.list")) + sorted(source.glob("*.sources")) if source.is_dir() else [source]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and SUITE in fields.get("Suites", "").split():
                    return fields.get("URIs", "").split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2) == SUITE:
                    return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def recipe_hash(mirror: str, key: str, cas: Path = LOCAL_CAS) -> str:
    """sha256 of what makes the box: this file, setup.sh, the mirror, the key and the
    local CAs (names and contents)."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(SETUP.read_bytes())
    h.update(f"\0{mirror}\0{key}".encode())
    for ca in local_cas(cas):
        h.update(f"\0{ca.relative_to(cas)}\0".encode() + ca.read_bytes())
    return h.hexdigest()


def local_cas(cas: Path = LOCAL_CAS) -> list[Path]:
    """The certificates update-ca-certificates adds from `cas` (*.crt, in subfolders too)."""
    return sorted(p for p in cas.rglob("*.crt") if p.is_file()) if cas.is_dir() else []


def box_recipe(box: Path) -> str | None:
    """The recipe hash in a .box file's metadata.json (its first member), or None."""
    try:
        with tarfile.open(box) as tar:
            member = tar.next()
            if member is None or member.name.lstrip("./") != "metadata.json":
                return None
            return json.load(tar.extractfile(member)).get("deepdive_recipe")  # type: ignore[arg-type]
    except (OSError, tarfile.TarError, ValueError):
        return None


def added_recipe() -> str | None:
    """The recipe hash of the box Vagrant has as BOX_NAME (libvirt, version 0), or None."""
    home = Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")
    meta = home / "boxes" / BOX_NAME.replace("/", "-VAGRANTSLASH-") / "0" / "libvirt" / "metadata.json"
    try:
        return json.loads(meta.read_text()).get("deepdive_recipe")
    except (OSError, ValueError):
        return None


def add(box: Path) -> None:
    _run(["vagrant", "box", "add", "--force", "--name", BOX_NAME, str(box)], "vagrant box add")


def sweep(parent: Path) -> None:
    """Remove build directories whose builder is gone (killed before it could)."""
    for d in parent.glob(f"{BUILD_DIR_PREFIX}*"):
        if not runs.in_progress(d.name[len(BUILD_DIR_PREFIX):].rsplit(".", 1)[0]):
            shutil.rmtree(d, ignore_errors=True)


def inside(work: Path, mirror: str, key: str) -> None:
    """Run the privileged part (inside_main) as PID 1 of its own mount and PID namespaces."""
    argv = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            "--mount-proc", "--", sys.executable, "-m", "deepdive.vagrantbox", "inside",
            str(work), mirror, key]
    proc = subprocess.run(argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, preexec_fn=die_with_parent)
    if proc.returncode != 0:
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        errors = [line[len("error: "):] for line in lines if line.startswith("error: ")]
        raise DeepDiveError(errors[-1] if errors else
                            f"the box build exited with status {proc.returncode}: "
                            f"{lines[-1] if lines else 'no output'}")


def pack(work: Path, out: Path, recipe: str) -> None:
    """disk.raw -> box.img (qcow2), with metadata.json and the Vagrantfile, into `out`
    (written beside it, then renamed: a .box file is whole or absent)."""
    _run(["qemu-img", "convert", "-O", "qcow2", str(work / "disk.raw"), str(work / "box.img")],
         "qemu-img convert")
    (work / "disk.raw").unlink()
    metadata = {"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_BYTES >> 30,
                "deepdive_recipe": recipe}
    (work / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (work / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    part = work / "box.tar"
    with tarfile.open(part, "w") as tar:  # uncompressed: qcow2 holds only written clusters
        for name in ("metadata.json", "Vagrantfile", "box.img"):  # metadata.json first: box_recipe
            tar.add(work / name, arcname=name)
    os.replace(part, out)


def _run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    if "input" not in kwargs:
        kwargs["stdin"] = subprocess.DEVNULL
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        # apt's first error names the cause ("E: Failed to fetch URL ..."); its last is a summary.
        errors = [line for line in lines if line.startswith("E: ")]
        said = errors[0] if errors else lines[-1] if lines else "no output"
        raise DeepDiveError(f"{what} failed (status {proc.returncode}): {said}")
    return proc


# --- the privileged part: PID 1 of the build's own mount and PID namespaces ---

def _chroot(mnt: Path, *argv: str, what: str = "", **kwargs) -> subprocess.CompletedProcess:
    """Run `argv` in the new system; a failure is named `what`, else by argv's first two words."""
    return _run(["chroot", str(mnt), *argv], what or " ".join(argv[:2]), **kwargs)


def inside_main(work: Path, mirror: str, key: str) -> None:
    disk, mnt = work / "disk.raw", work / "mnt"
    root_uuid = str(uuid.uuid4())
    with open(disk, "wb") as f:
        f.truncate(DISK_BYTES)
    _run(["sfdisk", "--quiet", str(disk)], "sfdisk",
         input=f"label: dos\nstart={PART_OFFSET // 512}, type=83, bootable\n")
    # The features EXTLINUX's boot code may not read are left off (64bit, metadata_csum).
    _run(["mkfs.ext4", "-q", "-F", "-U", root_uuid, "-L", "root",
          "-O", "^64bit,^metadata_csum", "-E", f"offset={PART_OFFSET}",
          str(disk), f"{(DISK_BYTES - PART_OFFSET) >> 10}k"], "mkfs.ext4")
    mnt.mkdir()
    # mount's own loop device is set to detach itself once unmounted (LO_FLAGS_AUTOCLEAR).
    _run(["mount", "-o", f"loop,offset={PART_OFFSET}", str(disk), str(mnt)], "mount")
    print("progress: debootstrap", flush=True)
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
          SUITE, str(mnt), mirror], "debootstrap")
    trust_local_cas(mnt)
    print("progress: the lab's packages", flush=True)
    install_lab_packages(mnt)
    configure(mnt, mirror, key, root_uuid)
    _run(["fstrim", str(mnt)], "fstrim")  # freed blocks become holes: a smaller qcow2
    _run(["umount", str(mnt)], "umount")
    with open(MBR_CODE, "rb") as src, open(disk, "r+b") as dst:
        dst.write(src.read(440))  # the boot code only: the partition table follows it


def trust_local_cas(mnt: Path) -> None:
    """This machine's local CAs into the new system's store, and its pip onto that store
    (pip otherwise trusts only the CAs it bundles)."""
    for ca in local_cas():
        target = mnt / LOCAL_CAS.relative_to("/") / ca.relative_to(LOCAL_CAS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca, target)
    _chroot(mnt, "update-ca-certificates")
    (mnt / "etc/pip.conf").write_text(f"[global]\ncert = {SYSTEM_CA_BUNDLE}\n")


def install_lab_packages(mnt: Path) -> None:
    """Install the list `setup.sh --lab-packages` prints in the new system, from the
    mirror debootstrap used, with no service started (policy-rc.d), /proc mounted in
    the build's own mount namespace, and this machine's resolv.conf meanwhile (the new
    system's is systemd-resolved's link to a stub that only runs in the VM)."""
    shutil.copyfile(SETUP, mnt / "tmp/setup.sh")
    listed = _chroot(mnt, "bash", "/tmp/setup.sh", "--lab-packages", what="setup.sh --lab-packages")
    (mnt / "tmp/setup.sh").unlink()
    packages = listed.stdout.split()
    if not packages:
        raise DeepDiveError("setup.sh --lab-packages printed no packages")
    policy = mnt / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")  # invoke-rc.d(8): 101 means "action forbidden"
    policy.chmod(0o755)
    resolv = mnt / "etc/resolv.conf"
    link = os.readlink(resolv) if resolv.is_symlink() else None
    saved = None if link or not resolv.exists() else resolv.read_bytes()
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    _run(["mount", "-t", "proc", "proc", str(mnt / "proc")], "mount /proc")
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _chroot(mnt, "apt-get", "update", "-qq", env=env)
        _chroot(mnt, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages,
                what="apt-get install (the lab's packages)", env=env)
    finally:
        _run(["umount", str(mnt / "proc")], "umount /proc")
        policy.unlink()
        resolv.unlink()
        if link:
            resolv.symlink_to(link)
        elif saved is not None:
            resolv.write_bytes(saved)


def configure(mnt: Path, mirror: str, key: str, root_uuid: str) -> None:
    """Everything Vagrant and a boot under libvirt need, written into the new system."""
    def write(path: str, text: str, mode: int = 0o644) -> None:
        target = mnt / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    write("/etc/fstab", f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n")
    write("/etc/hostname", "debian12\n")
    write("/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 debian12\n::1 localhost ip6-localhost ip6-loopback\n")
    write("/etc/apt/sources.list", f"deb {mirror} {SUITE} main\n")
    # net.ifnames=0 on the kernel's command line: the first NIC is eth0.
    write("/etc/systemd/network/10-eth0.network", "[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n")
    _chroot(mnt, "systemctl", "enable", "systemd-networkd", "systemd-resolved")
    write("/etc/sudoers.d/vagrant", "vagrant ALL=(ALL) NOPASSWD: ALL\n", 0o440)
    _chroot(mnt, "useradd", "--create-home", "--shell", "/bin/bash", "vagrant")
    _chroot(mnt, "chpasswd", input="vagrant:vagrant\n")
    write("/home/vagrant/.ssh/authorized_keys", key + "\n", 0o600)
    _chroot(mnt, "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh")
    (mnt / "home/vagrant/.ssh").chmod(0o700)
    # Each VM makes its own host keys before sshd starts; the box carries none.
    for f in (mnt / "etc/ssh").glob("ssh_host_*"):
        f.unlink()
    write("/etc/systemd/system/ssh-host-keys.service",
          "[Unit]\nDescription=Make SSH host keys\nBefore=ssh.service\n\n"
          "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n"
          "[Install]\nRequiredBy=ssh.service\n")
    _chroot(mnt, "systemctl", "enable", "ssh-host-keys")
    # An empty machine-id: each VM gets its own at first boot.
    write("/etc/machine-id", "")
    (mnt / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    kernel = sorted((mnt / "boot").glob("vmlinuz-*"))[-1].name
    initrd = sorted((mnt / "boot").glob("initrd.img-*"))[-1].name
    write("/boot/extlinux/extlinux.conf",
          f"DEFAULT debian\nTIMEOUT 1\nLABEL debian\n  LINUX /boot/{kernel}\n  INITRD /boot/{initrd}\n"
          f"  APPEND root=UUID={root_uuid} ro net.ifnames=0 console=tty0 console=ttyS0\n")
    _run(["extlinux", "--install", str(mnt / "boot/extlinux")], "extlinux --install")
    _chroot(mnt, "apt-get", "clean")
    shutil.rmtree(mnt / "var/lib/apt/lists", ignore_errors=True)
    (mnt / "var/lib/apt/lists/partial").mkdir(parents=True)


def _inside_cli(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "inside":
        print("usage: python -m deepdive.vagrantbox inside WORK MIRROR KEY", file=sys.stderr)
        return 2
    try:
        inside_main(Path(argv[1]), argv[2], argv[3])
    except DeepDiveError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_inside_cli(sys.argv[1:]))
