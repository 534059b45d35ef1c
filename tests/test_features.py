"""Kernel features a page can need (deepdive.features): the vocabulary, how answers are
cached, what the reader is told, and, on the real kernel, that the probes tell the truth.

The unit tests replace the scratch namespace with a fake; the tests marked `lab` probe
this machine's kernel."""
from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT, caller_state
from deepdive import cli, features, lab, registry, vmguest
from deepdive.features import ABSENT, DENIED, FEATURES
from deepdive.model import DeepDiveError, Needs

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test starts with an empty cache of its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


class FakeScratch:
    """Stands in for features._in_scratch: answers from `results`, counts the probes."""

    def __init__(self, results: dict[str, tuple[int, str]] | None = None):
        self.results = results or {}
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, options, argv, stdin=""):
        self.calls.append(tuple(argv))
        name = next((n for n, f in FEATURES.items() if f.probe == tuple(argv)), "")
        rc, stderr = self.results.get(name, (0, ""))
        return subprocess.CompletedProcess(argv, rc, "", stderr)


@pytest.fixture
def scratch(monkeypatch) -> FakeScratch:
    fake = FakeScratch()
    monkeypatch.setattr(features, "_in_scratch", fake)
    monkeypatch.setattr(features, "in_vm_guest", lambda: False)
    return fake


def page_needing(tmp_path: Path, *names: str, kinds: tuple[str, ...] = ()):
    """A throwaway page that needs these features, loaded through the registry."""
    folder = tmp_path / "snippets"
    folder.mkdir(exist_ok=True)
    (folder / "needy.py").write_text(
        "from deepdive.model import Needs, Page\n"
        f"page = Page(name='needy', title='Needy', nodes=('ns1',),\n"
        f"            needs=Needs(kinds={kinds!r}, features={names!r}))\n"
        "page.step('look', 'Look', 'ip link show')\n"
        "@page.check('look', 'it ran')\n"
        "def _(lab):\n"
        "    return True\n")
    return registry.load("needy", snippets=folder)


# --- the vocabulary ---------------------------------------------------------------------

def test_the_vocabulary_holds_what_kubernetes_pages_need():
    assert {"ip_vs", "br_netfilter", "nf_tables", "conntrack", "netem", "bpf",
            "bpf_unprivileged"} <= set(FEATURES)


@pytest.mark.parametrize("name", FEATURES)
def test_each_feature_names_itself_in_a_readers_words_and_its_tools_have_a_package(name):
    feature = FEATURES[name]
    # Joined into one line with "and": no commas, no sentence of its own.
    assert feature.words and "," not in feature.words and "\n" not in feature.words
    assert all(tool in lab.PACKAGES for tool in feature.tools)
    # The probe runs either the feature's own tool or this interpreter.
    assert feature.probe[0] in (*feature.tools, sys.executable)


def test_tools_for_lists_each_probe_tool_once():
    assert features.tools_for(("ip_vs", "nat", "bpf")) == ["ipvsadm", "iptables"]
    assert features.tools_for(("nf_tables", "nf_tables")) == ["nft"]
    assert features.tools_for(()) == []


# --- probing and caching ----------------------------------------------------------------

def test_answers_come_from_the_probes(scratch):
    scratch.results = {"ip_vs": (2, "Can't initialize ipvs: Protocol not available"),
                       "netem": (2, "Error: Specified qdisc kind is unknown."),
                       "ipset": (1, "ipset v7.17: Operation not permitted")}
    assert features.missing_features(("ip_vs", "nf_tables", "netem", "ipset"), ["--net"]) == {
        "ip_vs": ABSENT, "netem": ABSENT, "ipset": DENIED}


@pytest.mark.parametrize("rc, answer", [(0, ""), (errno.EPERM, DENIED), (errno.EACCES, DENIED),
                                        (errno.ENOSYS, ABSENT), (errno.EINVAL, ABSENT)])
@pytest.mark.parametrize("name", ["bpf", "nf_large_batch"])
def test_the_python_probes_are_judged_by_their_errno(scratch, name, rc, answer):
    scratch.results = {name: (rc, "")}
    assert features.missing_features((name,), ["--net"]).get(name, "") == answer


def test_a_probe_that_hangs_means_absent(monkeypatch):
    def hang(*_args, **_kw):
        raise subprocess.TimeoutExpired("unshare", features.PROBE_TIMEOUT)
    monkeypatch.setattr(subprocess, "run", hang)
    assert features.missing_features(("nf_tables",), ["--net"]) == {"nf_tables": ABSENT}
    assert features.missing_kinds(("veth",), ["--net"]) == ["veth"]


def test_stable_answers_are_cached_per_kernel_and_user_volatile_ones_never(scratch, monkeypatch):
    names = ("nf_tables", "br_netfilter", "bpf")
    features.missing_features(names, ["--net"])
    features.missing_features(names, ["--net"])
    probes = [FEATURES[n].probe for n in names]
    assert scratch.calls.count(probes[0]) == 1       # cached
    assert scratch.calls.count(probes[1]) == 2       # a module loaded by hand shows at once
    assert scratch.calls.count(probes[2]) == 2       # the sysctl may change
    assert f"v{features.PROBE_VERSION}-{platform.release()}-" in features.cache_name()
    # A normal user's answers differ (BPF, IPVS): they have a cache of their own.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    features.missing_features(names, ["--user", "--net"])
    assert scratch.calls.count(probes[0]) == 2


def test_a_damaged_cache_is_probed_again(scratch):
    features.missing_features(("nf_tables",), ["--net"])
    path = features.cache_dir() / features.cache_name()
    for damage in ("[]", "{\"feature:nf_tables\": true}", "not json"):
        path.write_text(damage)
        assert features.missing_features(("nf_tables",), ["--net"]) == {}
    assert scratch.calls.count(FEATURES["nf_tables"].probe) == 4


def test_kinds_and_features_share_the_cache_without_clobbering(scratch, monkeypatch):
    monkeypatch.setattr(features, "_create", lambda kind, _opts: ABSENT if kind == "dummy" else "")
    assert features.missing_kinds(("veth", "dummy"), ["--net"]) == ["dummy"]
    features.missing_features(("nf_tables",), ["--net"])
    monkeypatch.setattr(features, "_create", lambda *_a: pytest.fail("kinds were probed again"))
    assert features.missing_kinds(("veth", "dummy"), ["--net"]) == ["dummy"]


def test_unprivileged_features_are_probed_in_a_user_namespace_even_as_root(scratch, monkeypatch):
    seen = []
    monkeypatch.setattr(features, "_in_scratch", lambda options, argv, stdin="": seen.append(
        (tuple(options), tuple(argv))) or subprocess.CompletedProcess(argv, 0, "", ""))
    features.missing_features(("bpf_unprivileged", "bpf"), ["--net", "--mount"])
    assert seen == [(("--user", "--map-root-user", "--net", "--mount"), FEATURES["bpf_unprivileged"].probe),
                    (("--net", "--mount"), FEATURES["bpf"].probe)]


def test_only_the_vm_guest_enables_a_feature(scratch, monkeypatch):
    """br_netfilter missing: the guest loads it and probes again; the host never does."""
    ran = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: ran.append(argv) or real_run(["true"]))
    scratch.results = {"br_netfilter": (1, "cat: /proc/sys/net/bridge/...: No such file or directory")}
    assert features.missing_features(("br_netfilter",), ["--net"]) == {"br_netfilter": ABSENT}
    assert ran == []
    monkeypatch.setattr(features, "in_vm_guest", lambda: True)
    features.missing_features(("br_netfilter",), ["--net"])
    assert ran == [FEATURES["br_netfilter"].enable]
    assert scratch.calls.count(FEATURES["br_netfilter"].probe) == 3  # host once, guest twice


def test_the_vm_guest_is_recognised_by_its_kernel_command_line():
    assert features.in_vm_guest() == ("virtme" in Path("/proc/cmdline").read_text())


# --- what the reader is told ------------------------------------------------------------

def test_a_tool_a_probe_needs_is_a_missing_tool_not_a_missing_feature(tmp_path, monkeypatch, scratch):
    page = page_needing(tmp_path, "ip_vs", "nf_tables")
    monkeypatch.setattr(lab.shutil, "which", lambda t: None if t in ("ipvsadm", "nft") else "/bin/" + t)
    with pytest.raises(DeepDiveError) as err:
        lab.preflight(page)
    assert not isinstance(err.value, lab.MissingFeature)
    assert str(err.value) == ("page needy needs ipvsadm, nft, not found on PATH "
                              "(Debian/Ubuntu: apt-get install ipvsadm nftables)")
    assert scratch.calls == []


def test_a_cni_plugin_named_by_path_is_checked_there_and_its_package_named(tmp_path, monkeypatch):
    page = page_needing(tmp_path)
    page.needs = Needs(tools=("/usr/lib/cni/bridge", "ip"))
    monkeypatch.setattr(lab.shutil, "which", lambda t: None if t == "/usr/lib/cni/bridge" else "/bin/" + t)
    with pytest.raises(DeepDiveError) as err:
        lab.preflight(page)
    assert str(err.value) == ("page needy needs /usr/lib/cni/bridge, not found on PATH "
                              "(Debian/Ubuntu: apt-get install containernetworking-plugins)")


def test_missing_kinds_and_features_are_one_line_with_the_remedy(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    exc = lab.MissingFeature("svc", ["dummy", "vlan"], {"ip_vs": ABSENT, "netem": ABSENT})
    kernel = platform.release()
    assert str(exc) == (f"page svc needs dummy and vlan links, IPVS load balancing (ip_vs) and "
                        f"delay and loss emulation (sch_netem), which this kernel ({kernel}) lacks; "
                        "run it in the vm lab: invoke lab.run --page svc --lab vm")
    assert exc.needed == ("dummy and vlan links, IPVS load balancing (ip_vs) and "
                          "delay and loss emulation (sch_netem)")


def test_a_feature_refused_to_a_normal_user_says_run_as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    exc = lab.MissingFeature("ebpf", [], {"bpf": DENIED})
    assert str(exc) == (f"page ebpf needs BPF programs for tc and XDP (bpf), which this kernel "
                        f"({platform.release()}) refuses to unprivileged users; run it as root, "
                        "or in the vm lab: invoke lab.run --page ebpf --lab vm")


def test_unprivileged_bpf_cannot_be_had_as_root_either(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    exc = lab.MissingFeature("ebpf", [], {"bpf_unprivileged": DENIED, "netem": ABSENT})
    message = str(exc)
    assert "\n" not in message
    assert message.endswith(", and BPF for unprivileged users (kernel.unprivileged_bpf_disabled=0), "
                            "which it refuses to unprivileged users; run it in the vm lab: "
                            "invoke lab.run --page ebpf --lab vm")
    assert message.startswith("page ebpf needs delay and loss emulation (sch_netem), which this kernel")


def test_the_vm_guest_says_neither_kernel_has_it(tmp_path, monkeypatch):
    def lacking(name):
        raise lab.MissingFeature(name, ["vlan"], {"ip_vs": ABSENT})
    monkeypatch.setattr(vmguest, "start_page", lacking)
    assert vmguest.main([str(tmp_path), "svc"]) == 1
    assert (tmp_path / "svc.error").read_text() == (
        "page svc needs vlan links and IPVS load balancing (ip_vs), which neither this "
        f"machine's kernel nor the vm lab's ({platform.release()}) provides\n")


def test_auto_sends_a_page_to_the_vm_lab_and_host_refuses_it(tmp_path, monkeypatch):
    page = page_needing(tmp_path, "ip_vs")

    def preflight(p):
        raise lab.MissingFeature(p.name, [], {"ip_vs": ABSENT})
    monkeypatch.setattr(lab, "preflight", preflight)
    assert cli.choose([page], "auto") == ([], [page])
    with pytest.raises(lab.MissingFeature):
        cli.choose([page], "host")


# --- the real kernel --------------------------------------------------------------------

def _probe_all_as_nobody(tmp: Path) -> dict[str, str]:
    code = ("import json; from deepdive import features, lab; "
            "print(json.dumps(features.missing_features(tuple(features.FEATURES), "
            "lab.unshare_options())))")
    res = subprocess.run([*NOBODY, sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, HOME=str(tmp), XDG_CACHE_HOME=str(tmp)))
    if res.returncode != 0:
        pytest.skip(f"user nobody cannot run the lab here: {res.stderr.strip()[-200:]}")
    return json.loads(res.stdout)


@pytest.fixture
def nobody_tmp() -> Iterator[Path]:
    """A directory user nobody can write (pytest's tmp_path is root's alone)."""
    with tempfile.TemporaryDirectory(prefix="deepdive-test-") as tmp:
        Path(tmp).chmod(0o777)
        yield Path(tmp)


def _sysctl(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")
# Measured on these machines (Firecracker guests running 6.18, built without modules):
# see DESIGN.md. Elsewhere only what can be witnessed independently is checked.
THIS_MACHINE = platform.release().startswith("6.18.") and not Path("/proc/modules").exists()
KNOWN_AS_ROOT = {"ip_vs": ABSENT, "netem": ABSENT, "bpf_unprivileged": DENIED}


@pytest.mark.lab
@pytest.mark.usefixtures("host_lab")
class TestThisKernel:
    @pytest.fixture(autouse=True)
    def probe_tools(self) -> None:
        absent = [t for t in features.tools_for(tuple(FEATURES)) if shutil.which(t) is None]
        if absent:
            pytest.skip(f"the probes need {', '.join(absent)} (./setup.sh --lab installs them)")

    def missing(self) -> dict[str, str]:
        return features.missing_features(tuple(FEATURES), lab.unshare_options())

    @needs_root
    @pytest.mark.skipif(not THIS_MACHINE, reason="facts measured on these machines' 6.18 kernel")
    def test_as_root_the_measured_facts_hold(self):
        assert self.missing() == KNOWN_AS_ROOT

    @needs_root
    @pytest.mark.skipif(not THIS_MACHINE, reason="facts measured on these machines' 6.18 kernel")
    def test_as_nobody_bpf_is_refused_too(self, nobody_tmp):
        assert _probe_all_as_nobody(nobody_tmp) == {**KNOWN_AS_ROOT, "bpf": DENIED, "nf_large_batch": DENIED}

    def test_ip_vs_is_there_exactly_when_the_kernel_shows_it_after_a_probe(self):
        answer = self.missing().get("ip_vs", "")
        if answer == DENIED:
            pytest.skip("IPVS is refused to this user")
        # The probe loads ip_vs where it is a module; the kernel lists it in every netns.
        assert (answer == "") == Path("/proc/net/ip_vs").exists()

    def test_br_netfilter_is_there_exactly_when_its_sysctls_are(self):
        present = _sysctl("/proc/sys/net/bridge/bridge-nf-call-iptables") is not None
        assert ("br_netfilter" not in self.missing()) == present

    def test_unprivileged_bpf_follows_the_sysctl(self):
        allowed = _sysctl("/proc/sys/kernel/unprivileged_bpf_disabled") == "0"
        assert ("bpf_unprivileged" not in self.missing()) == allowed

    @needs_root
    def test_bpf_as_root_is_what_this_process_can_load(self):
        can = features.load_bpf(features.SCHED_CLS) == 0
        assert ("bpf" not in self.missing()) == can

    def test_probes_leave_nothing_behind(self):
        before = caller_state()
        nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        self.missing()
        assert caller_state() == before
        assert subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout == nft


def _first_missing() -> str:
    missing = features.missing_features(tuple(FEATURES), lab.unshare_options())
    name = next((n for n, why in missing.items() if why == ABSENT), "")
    if not name:
        pytest.skip("this kernel has every feature")
    return name


@pytest.mark.lab
@pytest.mark.usefixtures("host_lab")
def test_host_lab_refuses_a_page_needing_a_missing_feature_before_anything_is_created(tmp_path):
    name = _first_missing()
    page = page_needing(tmp_path, name, "nf_tables")
    before = caller_state()
    res = subprocess.run([sys.executable, "-m", "invoke", "lab.run", "--page", "needy",
                          "--lab", "host"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, DEEPDIVE_SNIPPETS=str(tmp_path / "snippets")))
    assert (res.returncode, res.stderr) == (1, (
        f"error: page needy needs {FEATURES[name].words}, which this kernel "
        f"({platform.release()}) lacks; run it in the vm lab: "
        "invoke lab.run --page needy --lab vm\n"))
    assert caller_state() == before
    assert not (ROOT / "docs" / "captures" / "needy.json").exists()
    assert cli.choose([page], "auto") == ([], [page])


@pytest.mark.lab
@needs_root
def test_a_normal_user_is_told_in_one_line_that_bpf_needs_root(nobody_tmp):
    """As nobody (who cannot write docs/, which `lab.run` checks first), the lab choice
    that `lab.run --lab host` makes, with its error printed the way the tasks print it."""
    if _sysctl("/proc/sys/kernel/unprivileged_bpf_disabled") in ("0", None):
        pytest.skip("this kernel lets normal users load BPF")
    tmp = nobody_tmp
    page_needing(tmp, "bpf")
    code = ("import sys; from deepdive import cli, registry; from deepdive.model import DeepDiveError, Needs\n"
            "try: cli.choose([registry.load('needy')], 'host')\n"
            "except DeepDiveError as exc: sys.exit(f'error: {exc}')")
    before = caller_state()
    res = subprocess.run([*NOBODY, sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, DEEPDIVE_SNIPPETS=str(tmp / "snippets"),
                                             HOME=str(tmp), XDG_CACHE_HOME=str(tmp)))
    assert (res.returncode, res.stderr) == (1, (
        "error: page needy needs BPF programs for tc and XDP (bpf), which this kernel "
        f"({platform.release()}) refuses to unprivileged users; run it as root, or in the "
        "vm lab: invoke lab.run --page needy --lab vm\n"))
    assert caller_state() == before
