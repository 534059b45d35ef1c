"""The vm lab: the host lab, run inside a micro-VM that boots a distro kernel.

virtme-ng (`vng`) boots the kernel from /boot with a copy-on-write view of this machine's
file system as its root, so the guest has this checkout, its Python environment and the
same tools. Inside, `python -m deepdive.vmguest` runs each page's in-lab part in a fresh
network and mount namespace, as on the host, and leaves each capture as a file in a
directory shared read-write with the host. One boot runs any number of pages.

vng runs as PID 1 of a PID namespace of its own (`unshare --pid --fork --kill-child`),
which dies with its launcher, so qemu and every helper of vng end with the run however
the run ends. The shared directory carries the run's id in its name: `lab.clean`
removes one whose run is gone, and so does the next vm lab run.

KVM is used when it works. Where /dev/kvm exists but qemu aborts or the guest hangs (as
in some nested setups), a short probe boot finds out, the verdict is cached per host
kernel, and the VM runs under software emulation (TCG) instead.
"""
from __future__ import annotations

import compileall
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from deepdive import capture as captures
from deepdive import features, registry, runs
from deepdive.capture import ROOT
from deepdive.execute import die_with_parent
from deepdive.lab import Outcome
from deepdive.model import DeepDiveError, Page

KVM_PROBE_TIMEOUT = 20.0   # a KVM boot takes a second or two; a hung one never ends
BOOT_TIMEOUT = {"kvm": 60.0, "tcg": 180.0}  # $DEEPDIVE_VM_BOOT_TIMEOUT overrides both
# Under TCG a page of 80 commands has taken 150 s on a loaded 2-core machine.
PAGE_TIMEOUT = {"kvm": 60.0, "tcg": 360.0}
# Under TCG a program starts tens of times slower (one CNI plugin call: 0.1 s on the
# host, 2-16 s here): each command's own time limit is multiplied by this in the guest.
TCG_SLOWDOWN = 8
GUEST_READY = "guest: up"
PAGE_DONE = "guest: done "  # + the page's name


def kernel_image() -> Path:
    """The distro kernel to boot: $DEEPDIVE_VM_KERNEL, else the newest /boot/vmlinuz-*."""
    chosen = os.environ.get("DEEPDIVE_VM_KERNEL")
    if chosen:
        if not Path(chosen).is_file():
            raise DeepDiveError(f"DEEPDIVE_VM_KERNEL={chosen} is not a file")
        return Path(chosen)
    images = sorted(Path("/boot").glob("vmlinuz-*"), key=lambda p: p.stat().st_mtime)
    if not images:
        raise DeepDiveError("the vm lab needs a kernel image in /boot "
                            "(Debian: apt-get install linux-image-amd64; Ubuntu: linux-image-generic)")
    image = images[-1]
    if not os.access(image, os.R_OK):
        raise DeepDiveError(f"the vm lab cannot read {image}; run it as root, or make it readable")
    return image


def vng() -> list[str]:
    """The vng command, found next to this interpreter (a virtualenv) or on PATH."""
    for candidate in (Path(sys.executable).parent / "vng", shutil.which("vng")):
        if candidate and Path(candidate).exists():
            return [str(candidate)]
    raise DeepDiveError("the vm lab needs virtme-ng (./setup.sh --lab installs it: pip install virtme-ng)")


def _env() -> dict[str, str]:
    # vng starts helpers (virtme-run) by name: they live beside it.
    path = f"{Path(vng()[0]).parent}:{os.environ.get('PATH', '')}"
    return dict(os.environ, PATH=path)


def preflight() -> Path:
    if shutil.which("qemu-system-x86_64") is None:
        raise DeepDiveError("the vm lab needs qemu (Debian/Ubuntu: apt-get install qemu-system-x86)")
    vng()
    return kernel_image()


def accel(kernel: Path, say: Callable[[str], None]) -> tuple[str, str]:
    """("kvm" or "tcg", why). $DEEPDIVE_VM_ACCEL forces one."""
    forced = os.environ.get("DEEPDIVE_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, f"DEEPDIVE_VM_ACCEL={forced}"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    key = f"accel-{platform.release()}-{kernel.name}.json"

    def probe() -> dict:
        say("checking whether KVM works here (once per kernel)")
        return dict(zip(("accel", "why"), _probe_kvm(kernel)))

    verdict = features.cached(key, probe)
    return verdict["accel"], verdict["why"]


def _probe_kvm(kernel: Path) -> tuple[str, str]:
    argv = [*vng(), "-r", str(kernel), "--", "true"]
    run_id = runs.new_id("vm")
    with tempfile.TemporaryDirectory(prefix=f"{runs.VM_DIR_PREFIX}{run_id}.") as tmp:
        proc = _start(argv, run_id, tmp=tmp, stdout=subprocess.DEVNULL)
        try:
            _, err = proc.communicate(timeout=KVM_PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            return "tcg", f"a KVM guest did not finish booting within {KVM_PROBE_TIMEOUT:g} s"
        finally:
            _stop(proc)  # also before its directory goes
    if proc.returncode == 0:
        return "kvm", "KVM works"
    lines = [l for l in err.splitlines() if "error" in l.lower()] or err.splitlines() or ["?"]
    return "tcg", f"qemu fails with KVM ({lines[0].strip()})"


def _start(argv: list[str], run_id: str, tmp: str, **kw) -> subprocess.Popen:
    """Start vng as PID 1 of a PID namespace that ends with this process; the temporary
    files vng makes (virtme_ret*, which it leaves behind) go into the run's `tmp`."""
    env = dict(_env(), **{runs.MARKER: run_id}, TMPDIR=tmp)
    return subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--", *argv],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=die_with_parent, **kw)


def _stop(proc: subprocess.Popen) -> None:
    """Stop the VM: SIGKILL to unshare ends vng (`--kill-child`), and with it, its
    PID namespace: qemu and every helper."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class BootCrashed(DeepDiveError):
    """The VM (qemu or vng) exited before the guest reported that it was up."""


def run_pages(pages: list[Page], progress: Callable[[str], None]) -> Iterator[Outcome]:
    """Boot once and run every page inside, several at once; yield each page's outcome
    as it ends. A page that left no capture does not stop the others: once they have
    all been yielded, one DeepDiveError names every page that failed, a line each.
    However the run ends (an error, an interrupt, the caller closing the iterator), the
    VM is stopped."""
    kernel = preflight()
    mode, why = accel(kernel, progress)
    if mode == "tcg":
        progress(f"booting {kernel.name} under software emulation (TCG), slower than KVM: {why}")
    else:
        progress(f"booting {kernel.name} with KVM")
    runs.clean_vm_dirs()
    compile_for_guest()
    run_id = runs.new_id("vm")
    for attempt in (1, 2):
        with tempfile.TemporaryDirectory(prefix=f"{runs.VM_DIR_PREFIX}{run_id}.") as out:
            started = time.monotonic()
            proc = _start(boot_argv(kernel, mode, out, pages), run_id, tmp=out, stdout=subprocess.DEVNULL)
            failures: list[str] = []
            try:
                for name, errors in _follow(proc, mode, [p.name for p in pages], progress):
                    try:
                        yield _outcome(Path(out), name, errors, time.monotonic() - started)
                    except DeepDiveError as exc:
                        failures.append(str(exc))
            except BootCrashed as exc:
                # qemu under TCG has been seen to abort on an assertion of its own while
                # the guest boots (hw/pci/msix.c): a second boot is not the same dice.
                if attempt == 2:
                    raise
                progress(f"{exc}; booting once more")
                continue
            finally:
                _stop(proc)
            if failures:
                raise DeepDiveError("\n".join(failures))
            return


def boot_argv(kernel: Path, mode: str, out: str, pages: list[Page]) -> list[str]:
    """The vng command that boots `kernel` and runs the pages in it, `out` shared.

    One vCPU per host CPU: each is a host thread under TCG too (qemu's multi-threaded
    TCG, its default for an x86 guest on an x86 host), and the guest runs that many
    pages at once. mitigations=off: the throwaway guest runs only the lab, so its
    kernel's speculation defences (retpolines, return stack filling, which it turns on
    for qemu's emulated CPU) only cost time."""
    cpus = vcpus()
    guest_env = [f"DEEPDIVE_VM_JOBS={os.environ.get('DEEPDIVE_VM_JOBS') or cpus}",
                 *([f"DEEPDIVE_SLOWDOWN={TCG_SLOWDOWN:g}"] if mode == "tcg" else [])]
    shared = ["--rwdir", out]
    # The guest's feature probes (a few processes each, seconds apiece under TCG) are
    # kept in this machine's cache directory, under the guest kernel's name, for the
    # next boot.
    cache = features.cache_dir()
    if cache is not None and "=" not in str(cache):
        shared += ["--rwdir", str(cache)]
        guest_env.append(f"XDG_CACHE_HOME={cache.parent}")
    return [*vng(), "-r", str(kernel), *shared, "--cpus", str(cpus), "--memory", "1G",
            "--append", "mitigations=off", *(["--disable-kvm"] if mode == "tcg" else []), "--",
            "env", *guest_env, sys.executable, "-m", "deepdive.vmguest", out,
            *[p.name for p in longest_first(pages)]]


def compile_for_guest() -> None:
    """Write the bytecode of the lab's own modules and pages (__pycache__, beside them).

    The guest sees this checkout read-only, so where nothing wrote them (as under
    $PYTHONDONTWRITEBYTECODE) it compiled every module it imports on every boot, and
    deepdive-cni its CNI runtime on every call: seconds each under emulation, a few
    milliseconds here, and none for a file whose bytecode is up to date."""
    for folder in (ROOT / "deepdive", registry.SNIPPETS):
        compileall.compile_dir(str(folder), maxlevels=0, quiet=2)


def vcpus() -> int:
    """The guest's vCPUs: the host's CPUs this process may use, at least 2."""
    return max(2, len(os.sched_getaffinity(0)))


def longest_first(pages: list[Page]) -> list[Page]:
    """The pages, the longest first by their committed capture's run time: with a few
    running at once, the longest one starts at once rather than last."""
    def seconds(page: Page) -> float:
        try:
            return float(captures.load(page.name)["meta"].get("seconds", 0))
        except (DeepDiveError, OSError, ValueError, KeyError, TypeError):
            return 0.0
    return sorted(pages, key=seconds, reverse=True)


def _follow(proc: subprocess.Popen, mode: str, names: list[str],
            progress: Callable[[str], None]) -> Iterator[tuple[str, list[str]]]:
    """Relay the guest's progress; yield (page, the guest's error lines so far) as each
    page ends, then those the guest never finished; enforce the boot and page limits.
    Returns once every page has ended, without waiting for the guest to power off."""
    assert proc.stderr is not None
    lines: list[str] = []
    done: queue.Queue[str] = queue.Queue()
    boot_timeout = float(os.environ.get("DEEPDIVE_VM_BOOT_TIMEOUT") or BOOT_TIMEOUT[mode])
    state = {"up": False, "deadline": time.monotonic() + boot_timeout}

    def reader() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            line = line.rstrip()
            lines.append(line)
            if line == GUEST_READY:
                state["up"] = True
                state["deadline"] = time.monotonic() + PAGE_TIMEOUT[mode] * len(names)
                progress("the VM is up")
            elif line.startswith(PAGE_DONE):
                done.put(line[len(PAGE_DONE):])
            elif line.startswith("progress: "):
                progress(line[len("progress: "):])

    def errors() -> list[str]:
        return [l[len("error: "):] for l in lines if l.startswith("error: ")]

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    left = list(names)
    while proc.poll() is None or not done.empty():
        if time.monotonic() > state["deadline"]:
            _stop(proc)
            if not state["up"]:
                raise DeepDiveError(f"the VM did not come up within {boot_timeout:g} s ({mode}); "
                                    f"last output: {lines[-1] if lines else 'none'}")
            raise DeepDiveError(f"the pages did not finish within {PAGE_TIMEOUT[mode] * len(names):g} s in the VM")
        try:
            name = done.get(timeout=0.1)
        except queue.Empty:
            continue
        if name in left:
            left.remove(name)
            yield name, errors()
        if not left:  # every capture is in: the guest's own shutdown is not waited for
            return
    thread.join(timeout=5)
    while not done.empty():  # said just before the guest ended
        name = done.get()
        if name in left:
            left.remove(name)
            yield name, errors()
    if not state["up"]:
        tail = "; ".join(lines[-3:]) or f"vng exited with status {proc.returncode}"
        raise BootCrashed(f"the VM did not come up: {tail}")
    for name in left:
        yield name, errors()


def _outcome(out: Path, name: str, errors: list[str], seconds: float) -> Outcome:
    result = out / f"{name}.json"
    if not result.exists():
        failed = out / f"{name}.error"
        message = failed.read_text().strip() if failed.exists() else (
            errors[-1] if errors else f"page {name} left no result in the VM")
        raise DeepDiveError(message)
    data = json.loads(result.read_text())
    return Outcome(page=name, capture=data["capture"], seconds=data["seconds"], lab="vm",
                   boot_seconds=seconds)
