"""The ebpf page without a lab: what it shows of the kernel's ids and the trace buffer's
prefixes is masked (and nothing the program decides), preflight names clang when it is
missing, and its programs build with the page's own clang command."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest

from conftest import ROOT
from deepdive import capture, lab, registry
from deepdive.masking import compile_masks, mask_text
from deepdive.model import DeepDiveError


@pytest.fixture(scope="module")
def page():
    return registry.load("ebpf")


@pytest.mark.parametrize("argv, text, shown", [
    (["grep", "-m", "6", "icmp_echo:", "/sys/kernel/tracing/trace_pipe"],
     "            ping-1050    [001] ..s2. 11584.569410: bpf_trace_printk: icmp_echo: reply from "
     "10.244.1.3 to 10.244.1.2, seq 1",
     "<task>-<pid> [<cpu>] <flags> <time>: bpf_trace_printk: icmp_echo: reply from 10.244.1.3 to "
     "10.244.1.2, seq 1"),
    # A packet handled in a softirq of its own names another task, with a dash in its name.
    (["grep", "-m", "6", "icmp_echo:", "/sys/kernel/tracing/trace_pipe"],
     "     ksoftirqd/1-23      [001] b.s1. 11584.770538: bpf_trace_printk: icmp_echo: reply from "
     "10.96.0.10 to 10.244.1.2, seq 2",
     "<task>-<pid> [<cpu>] <flags> <time>: bpf_trace_printk: icmp_echo: reply from 10.96.0.10 to "
     "10.244.1.2, seq 2"),
    (["tc", "filter", "show", "dev", "if3", "ingress"],
     "filter protocol all pref 49152 bpf chain 0 handle 0x1 icmp_echo.bpf.o:[tc] direct-action "
     "not_in_hw id 468 name icmp_echo tag 121bf596090e2f35 jited ",
     "filter protocol all pref 49152 bpf chain 0 handle 0x1 icmp_echo.bpf.o:[tc] direct-action "
     "not_in_hw id <id> name icmp_echo tag 121bf596090e2f35 jited "),
    (["bpftool", "prog", "show", "name", "icmp_echo"],
     "468: sched_cls  name icmp_echo  tag 121bf596090e2f35  gpl\n"
     "\tloaded_at 2026-11-29T11:50:26+0000  uid 0\n"
     "\txlated 856B  jited 506B  memlock 4096B  map_ids 37\n\tbtf_id 67\n",
     "<id>: sched_cls  name icmp_echo  tag 121bf596090e2f35  gpl\n"
     "\tloaded_at <time>  uid 0\n"
     "\txlated 856B  jited 506B  memlock 4096B  map_ids <ids>\n\tbtf_id <id>\n"),
    (["ip", "link", "show", "master", "cni0"],
     "3: veth063e5afb@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master cni0",
     "3: veth<random>@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master cni0"),
])
def test_what_changes_between_runs_is_masked_and_what_the_program_decides_is_not(page, argv, text, shown):
    assert mask_text(text, argv, compile_masks(page.masks)) == shown


# What a run of the page prints that the kernel picks: program, map and BTF ids, load
# times, and trace_pipe's task, CPU and timestamp.
PICKED = re.compile(r"\bid \d|btf_id \d|map_ids \d|loaded_at \d|^\d+: |\[\d+\] \S+ +\d+\.\d+: ", re.M)


def test_the_committed_capture_shows_nothing_the_kernel_picked_unmasked(page):
    masks = compile_masks(page.masks)
    shown = [(c["cmd"], c["argv"], c["stdout"]) for step in capture.load("ebpf")["steps"]
             for c in step["commands"] if c["argv"][0] in ("tc", "bpftool", "grep")]
    assert any(PICKED.search(out) for _cmd, _argv, out in shown)  # there is something to mask
    for command, argv, out in shown:
        assert not PICKED.search(mask_text(out, argv, masks)), command


def test_preflight_names_clang_and_its_package_when_it_is_missing(page, monkeypatch):
    real = shutil.which
    monkeypatch.setattr(lab.shutil, "which", lambda tool: None if tool == "clang" else real(tool))
    with pytest.raises(DeepDiveError) as err:
        lab.preflight(page)
    assert str(err.value) == ("page ebpf needs clang, not found on PATH "
                              "(Debian/Ubuntu: apt-get install clang)")


@pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")
@pytest.mark.parametrize("program", ["icmp_echo", "unchecked"])
def test_the_programs_build_with_the_page_s_clang_command(page, tmp_path, program):
    """Built as the page builds them (the verifier's verdict needs root: the lab tests)."""
    command = next(c for s in page.steps for c in s.commands
                   if c.argv[0] == "clang" and f"{program}.bpf.c" in c.text)
    argv = [*command.argv[:-1], str(tmp_path / f"{program}.o")]
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == "", shlex.join(argv) + "\n" + res.stderr
    symbols = subprocess.run(["llvm-objdump", "-t", str(tmp_path / f"{program}.o")],
                             capture_output=True, text=True).stdout
    assert re.search(rf"(?m)^0+ g +F tc\t[0-9a-f]+ {program}$", symbols), symbols
