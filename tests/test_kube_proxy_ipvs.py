"""The kube-proxy-ipvs page: a kernel without IPVS (or without dummy links) is refused in
one line before anything is created, and sent to the vm lab by `--lab auto`; its own
masks hide what ipset and MASQUERADE pick at random, and nothing the page fixes.

The unit tests answer the kernel probes with a fake; the test marked `lab` asks this
machine's kernel through the real `invoke lab.run --lab host`."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from conftest import ROOT, caller_state, page_masks
from deepdive import cli, features, lab, registry
from deepdive.features import ABSENT, FEATURES
from deepdive.masking import mask_text
from deepdive.model import DeepDiveError

PAGE = "kube-proxy-ipvs"
# ipvsadm's own words on a kernel without ip_vs.
NO_IPVS = "Can't initialize ipvs: Protocol not available\nAre you sure that IP Virtual Server is built in the kernel or as module?\n"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def kernel(monkeypatch) -> dict[str, object]:
    """A kernel whose answers the test sets: {"kinds": missing kinds, "ip_vs": stderr
    of the probe, or "" when IPVS works}; every tool is on PATH. Records the probes run."""
    state: dict[str, object] = {"kinds": (), "ip_vs": "", "probes": []}

    def scratch(options, argv, stdin=""):
        state["probes"].append(tuple(argv))  # type: ignore[union-attr]
        failed = tuple(argv) == FEATURES["ip_vs"].probe and state["ip_vs"]
        return subprocess.CompletedProcess(argv, 2 if failed else 0, "", state["ip_vs"] if failed else "")

    monkeypatch.setattr(features, "_in_scratch", scratch)
    monkeypatch.setattr(features, "_create", lambda kind, _o: ABSENT if kind in state["kinds"] else "")
    monkeypatch.setattr(features, "in_vm_guest", lambda: False)
    monkeypatch.setattr(lab.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(lab, "run_host", lambda *_a, **_k: pytest.fail("a lab was started"))
    return state


def refusal(needed: str) -> str:
    return (f"page {PAGE} needs {needed}, which this kernel ({platform.release()}) lacks; "
            f"run it in the vm lab: invoke lab.run --page {PAGE} --lab vm")


def test_without_ip_vs_the_host_lab_refuses_in_one_line(kernel):
    kernel["ip_vs"] = NO_IPVS
    page = registry.load(PAGE)
    with pytest.raises(lab.MissingFeature) as err:
        cli.choose([page], "host")
    assert str(err.value) == refusal("IPVS load balancing (ip_vs)")
    assert FEATURES["ip_vs"].probe in kernel["probes"]
    assert cli.choose([page], "auto") == ([], [page])


def test_without_ip_vs_and_dummy_both_are_named(kernel):
    kernel["ip_vs"], kernel["kinds"] = NO_IPVS, ("dummy",)
    with pytest.raises(lab.MissingFeature) as err:
        cli.choose([registry.load(PAGE)], "host")
    assert str(err.value) == refusal("dummy links and IPVS load balancing (ip_vs)")


def test_with_ip_vs_and_dummy_the_host_lab_takes_it(kernel):
    page = registry.load(PAGE)
    assert cli.choose([page], "host") == ([page], [])


def test_without_ipvsadm_the_tool_is_named_not_the_kernel(kernel, monkeypatch):
    kernel["ip_vs"] = NO_IPVS
    monkeypatch.setattr(lab.shutil, "which", lambda tool: None if tool == "ipvsadm" else f"/usr/bin/{tool}")
    with pytest.raises(DeepDiveError) as err:
        cli.choose([registry.load(PAGE)], "host")
    assert not isinstance(err.value, lab.MissingFeature)
    assert str(err.value) == (f"page {PAGE} needs ipvsadm, not found on PATH "
                              "(Debian/Ubuntu: apt-get install ipvsadm)")
    assert kernel["probes"] == []


@pytest.mark.lab
@pytest.mark.usefixtures("host_lab")
def test_this_kernel_refuses_it_before_anything_is_created():
    """`invoke lab.run --lab host` on a kernel without ip_vs: status 1, the one line, no
    namespace, link or capture left."""
    options = lab.unshare_options()
    missing = features.missing_features(("ip_vs",), options)
    kinds = features.missing_kinds(("dummy",), options)
    if not missing and not kinds:
        pytest.skip("this kernel has IPVS and dummy links: the host lab runs the page")
    capture = ROOT / "docs" / "captures" / f"{PAGE}.json"
    published = capture.read_bytes() if capture.exists() else None
    before = caller_state()
    res = subprocess.run([sys.executable, "-m", "invoke", "lab.run", "--page", PAGE, "--lab", "host"],
                         cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))
    assert (res.returncode, res.stderr.count("\n")) == (1, 1)
    assert res.stderr.startswith(f"error: page {PAGE} needs ")
    assert res.stderr.rstrip().endswith(f"run it in the vm lab: invoke lab.run --page {PAGE} --lab vm")
    assert ("IPVS load balancing (ip_vs)" in res.stderr) == bool(missing)
    assert caller_state() == before
    assert (capture.read_bytes() if capture.exists() else None) == published


# --- masks ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def masks():
    return page_masks(PAGE)


@pytest.mark.parametrize("text, shown", [
    ("Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x7d406491",
     "Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval <random>"),
    ("Size in memory: 376", "Size in memory: <bytes>"),
    ("      2 pod-1", "<n> pod-1"),
    ("      1 (no answer)", "<n> (no answer)"),
])
def test_random_values_are_masked(masks, text, shown):
    assert mask_text(text, extra=masks) == shown


@pytest.mark.parametrize("port", ["4711", "17620", "56150", "64000"])
def test_a_masqueraded_port_is_masked_alike_in_or_out_of_the_ephemeral_range(masks, port):
    """conntrack's own mask takes 32768-60999 for an ephemeral port; --random-fully picks
    from the whole range: both must come out the same, or a run drifts half the time."""
    entry = f"src=192.168.1.2 dst=192.168.1.1 sport=45760 dport=30080 src=10.244.1.4 dst=10.244.1.1 sport=80 dport={port} [ASSURED]"
    assert mask_text(entry, argv=("conntrack", "-L"), extra=masks) == (
        "src=192.168.1.2 dst=192.168.1.1 sport=<port> dport=30080 "
        "src=10.244.1.4 dst=10.244.1.1 sport=80 dport=<random> [ASSURED]")


@pytest.mark.parametrize("text", [
    "TCP  10.96.0.10:80                      21",
    "  -> 10.244.1.2:80                Masq    3",
    "10.244.1.2,tcp:80,10.244.1.2",
    "src=192.168.1.2 dst=192.168.1.1 sport=80 dport=30080",
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff",
])
def test_what_the_page_fixes_is_compared_as_it_is(masks, text):
    assert mask_text(text, extra=masks) == text
