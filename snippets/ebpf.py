"""ebpf: a tc program, in C, that answers pod-1's pings itself at pod-1's veth on the node.

Run with `invoke lab.run --page ebpf`; the page is docs/services/ebpf.md. The programs
are snippets/programs/icmp_echo.bpf.c and snippets/programs/unchecked.bpf.c (which the
verifier refuses). The pods are the Services pages' (snippets/_service.py); what the lab
adds is what an eBPF dataplane's agent (Cilium's) does on a node: it compiles a program,
attaches it at the tc ingress hook of a pod's host-side veth, and reads its trace output.

Loading a tc program needs CAP_BPF and CAP_NET_ADMIN in the machine's own user namespace,
so the page needs root (Needs(features=("bpf",))): a normal user's rootless lab is
refused in one line before anything is built.
"""
import re

from deepdive.model import Cmd, Needs, Page, cmd
from deepdive.parse import answered, replies
from snippets import _service as svc

page = Page(
    name="ebpf",
    title="eBPF in the data path: a tc program that answers pings",
    needs=Needs(kinds=("bridge", "veth"), features=("bpf",),
                tools=(*svc.TOOLS, "clang", "llvm-objdump", "tc", "bpftool", "ping", "nstat", "tcpdump",
                       "stat", "flock", "grep")),
    masks=[*svc.MASKS,
           # A trace_pipe line starts with the task that ran (name and pid), its CPU, the
           # context flags and a timestamp: all of them change from run to run.
           (r"(?m)^ *\S.*?-\d+ +\[\d+\] \S+ +\d+\.\d+: ", "<task>-<pid> [<cpu>] <flags> <time>: ")],
)

OBJ = "/tmp/icmp_echo.bpf.o"
BROKEN = "/tmp/unchecked.bpf.o"
# -fdebug-compilation-dir=.: the debug info (and so the .BTF section) names the directory
# clang ran in; "." keeps the object the same whatever the checkout's path.
CLANG = "clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -fdebug-compilation-dir=. -c"
# pod-1's host-side veth, named by its index: the bridge plugin names it at random
# (veth + 8 hex digits), and iproute2 takes `ifN` for the interface with index N, as it
# prints a peer it cannot name (pod-1's eth0 shows it as eth0@if3).
VETH = "if3"
POD1, POD2 = svc.POD_IPS["pod-1"], svc.POD_IPS["pod-2"]
TRACE = "/sys/kernel/tracing"
PIPE = f"{TRACE}/trace_pipe"
COUNTERS = "ip netns exec pod-2 nstat -asz IcmpInEchos IcmpOutEchoReps"
# The type of the file system each path is on, as statfs(2) sees it: the mount a process
# reaches there (findmnt would also list mounts of the machine's that the lab's /sys hides).
STATFS = f"stat -f -c '%n %T' {TRACE} /sys/fs/bpf"
# pod-1's side of the first pings, Ethernet headers and all; -vv checks ICMP checksums.
CAPTURE = "ip netns exec pod-1 tcpdump -i eth0 --immediate-mode -n -e -t -vv -l -c 6 icmp"
# The program's lines for the six pings it answers.
READ = f"grep -m 6 icmp_echo: {PIPE}"


def ping(address: str, count: int = 3, rc: int = 0) -> Cmd:
    """pod-1 pings `address` `count` times, 0.2 s apart, each reply awaited up to 1 s."""
    return cmd(f"ip netns exec pod-1 ping -c {count} -i 0.2 -W 1 {address}", rc=rc)


page.step(
    "trace", "The machine's trace buffer, and a lock on it",
    STATFS,
    f"mount -t tracefs tracefs {TRACE}",
    # One trace buffer serves the whole machine: the lock keeps another run of this page
    # from reading this run's lines (and from loading a second icmp_echo), until this run
    # ends and the sleep that holds the lock with it.
    cmd(f"flock --timeout 100 {TRACE} setsid -f sleep infinity", timeout=110),
    # Lines that other programs left in the pipe would be read before this run's: copy
    # them away. A pipe has no end, so timeout stops cp.
    cmd(f"timeout 0.5 cp {PIPE} /dev/null", rc=124),
)
page.step("pods", "Three pods on the node, wired by the CNI plugins", *svc.pods())
page.step(
    "veth", "pod-1's eth0 and its peer on the node",
    "ip -n pod-1 link show eth0",
    "ip link show master cni0",
    snapshot=True,
)
page.step(
    "build", "Compile the program for the BPF target",
    "clang -dumpversion",
    f"{CLANG} snippets/programs/icmp_echo.bpf.c -o {OBJ}",
    f"llvm-objdump --section-headers -j tc -j .rodata -j license -j .BTF {OBJ}",
)
page.step(
    "stack", "Without a program: pod-2's own stack answers",
    ping(POD2),
    COUNTERS,
    ping(svc.CLUSTER_IP, count=1, rc=1),
)
page.step(
    "ignore", "pod-2 ignores echo requests",
    "ip netns exec pod-2 sysctl -w net.ipv4.icmp_echo_ignore_all=1",
    ping(POD2, rc=1),
    COUNTERS,
)
page.step(
    "bpffs", "A BPF file system for tc, and the clsact hooks",
    "mount -t bpf bpf /sys/fs/bpf",
    STATFS,
    f"tc qdisc add dev {VETH} clsact",
    f"tc qdisc show dev {VETH}",
)
page.step(
    "attach", "Attach the program at the ingress hook of pod-1's veth",
    f"tc filter add dev {VETH} ingress bpf direct-action obj {OBJ} sec tc",
    f"tc filter show dev {VETH} ingress",
    "bpftool prog show name icmp_echo",
    "bpftool map dump name icmp_ech.rodata",
)
page.step(
    "answer", "The program answers pod-1's pings",
    cmd(CAPTURE, background=True, ready="listening on", until="6 packets captured"),
    ping(POD2),
    COUNTERS,
    ping(svc.CLUSTER_IP),
    READ,
)
page.step(
    "detach", "Detach the program",
    f"tc filter del dev {VETH} ingress",
    ping(POD2, rc=1),
    COUNTERS,
)
page.step(
    "verifier", "A program the verifier refuses",
    f"{CLANG} snippets/programs/unchecked.bpf.c -o {BROKEN}",
    cmd(f"tc filter add dev {VETH} ingress bpf direct-action obj {BROKEN} sec tc", rc=1),
    f"tc filter show dev {VETH} ingress",
)


def counters(lab, step: str) -> dict[str, int]:
    """pod-2's ICMP counters as nstat printed them in `step`: {"IcmpInEchos": 3, ...}."""
    return {m[1]: int(m[2]) for m in re.finditer(r"(?m)^(Icmp\w+) +(\d+) ", lab.output(COUNTERS, step=step))}


def trace_lines(lab) -> list[str]:
    """The messages the program printed, without trace_pipe's per-line prefix."""
    out = lab.output(READ, step="answer")
    return [line.split(": bpf_trace_printk: ", 1)[1] for line in out.splitlines() if line.strip()]


def loaded(lab) -> list[str]:
    """Names of the BPF programs the kernel holds now (bpftool lists the whole machine's)."""
    return re.findall(r"(?m)^\d+: \w+ +name (\S+) ", lab.run("bpftool prog show").stdout)


@page.check("trace", "The lab's fresh /sys has both paths as plain sysfs directories, until tracefs is "
                     "mounted on one")
def _(lab):
    return (lab.output("stat -f", step="trace") == f"{TRACE} sysfs\n/sys/fs/bpf sysfs\n"
            and lab.result("mount -t tracefs", step="trace").rc == 0)


@page.check("veth", "pod-1's eth0 is one end of a veth pair whose other end is interface 3 of the node, "
                    "a port of cni0 whose peer is in pod-1")
def _(lab):
    host = next(n for n in lab.snapshot["nodes"] if n["name"] == "host")
    peer = next(link for link in host["links"] if link["peer"] == {"node": "pod-1", "name": "eth0"})
    shown = lab.output("ip link show master cni0", step="veth")
    return ("eth0@if3:" in lab.output("ip -n pod-1 link show eth0", step="veth")
            and peer["master"] == "cni0"
            and re.search(rf"(?m)^3: {peer['name']}@if2: .*master cni0", shown) is not None
            and "link-netns pod-1" in shown.split("\n4:")[0])


@page.check("build", "clang wrote an ELF object for the BPF target with the program in section tc, the "
                     "printk format in .rodata, the license, and BTF")
def _(lab):
    shown = lab.output("llvm-objdump", step="build")
    names = re.findall(r"(?m)^ +\d+ (\S+) +[0-9a-f]{8} ", shown)
    return "file format elf64-bpf" in shown and names == ["tc", ".rodata", "license", ".BTF"]


@page.check("stack", "pod-2 answered pod-1's 3 pings itself: 3 echo requests in, 3 replies out")
def _(lab):
    return (answered(lab.output(ping(POD2).text, step="stack"), POD2, 3)
            and counters(lab, "stack") == {"IcmpInEchos": 3, "IcmpOutEchoReps": 3})


@page.check("stack", "Nothing answers for the ClusterIP 10.96.0.10: the node, pod-1's gateway, has no "
                     "route to it")
def _(lab):
    out = lab.output(ping(svc.CLUSTER_IP, count=1, rc=1).text, step="stack")
    return replies(out) == [] and f"From {svc.GATEWAY} icmp_seq=1 Destination Net Unreachable" in out


@page.check("ignore", "Set to ignore echo requests, pod-2 counted 3 more requests in and sent no reply")
def _(lab):
    return (replies(lab.output(ping(POD2, rc=1).text, step="ignore")) == []
            and counters(lab, "ignore") == {"IcmpInEchos": 6, "IcmpOutEchoReps": 3})


@page.check("bpffs", "Once mounted, /sys/fs/bpf is a BPF file system and /sys/kernel/tracing a tracefs; "
                     "if3 has a clsact qdisc, and no program is loaded yet")
def _(lab):
    return (lab.output("stat -f", step="bpffs") == f"{TRACE} tracefs\n/sys/fs/bpf bpf_fs\n"
            and "qdisc clsact ffff: parent ffff:fff1" in lab.output(f"tc qdisc show dev {VETH}", step="bpffs")
            and "icmp_echo" not in loaded(lab))


@page.check("attach", "tc lists the program on if3's ingress hook: from section tc of the object, in "
                      "direct-action mode, named icmp_echo, JIT-compiled (jited)")
def _(lab):
    shown = lab.output(f"tc filter show dev {VETH} ingress", step="attach")
    return re.search(r"bpf chain 0 handle 0x1 icmp_echo\.bpf\.o:\[tc\] direct-action not_in_hw id \d+ "
                     r"name icmp_echo tag [0-9a-f]{16} jited", shown) is not None


@page.check("attach", "bpftool shows the same program (same id and tag) as a sched_cls program with its "
                      "translated and JIT-compiled sizes and one map, icmp_ech.rodata, whose one value "
                      "is the program's format string")
def _(lab):
    tc = lab.output(f"tc filter show dev {VETH} ingress", step="attach")
    shown = lab.output("bpftool prog show name icmp_echo", step="attach")
    prog = re.search(r"(?m)^(\d+): sched_cls +name icmp_echo +tag ([0-9a-f]{16}) +gpl$", shown)
    sizes = re.search(r"(?m)xlated \d+B +jited \d+B +memlock \d+B +map_ids (\d+)$", shown)
    dump = lab.json("bpftool map dump name icmp_ech.rodata", step="attach")
    return (prog is not None and sizes is not None
            and f"id {prog[1]} name icmp_echo tag {prog[2]} jited" in tc
            and re.search(rf"(?m)^{sizes[1]}: array +name icmp_ech\.rodata ", lab.run("bpftool map show").stdout)
            is not None
            and dump == [{"value": {".rodata": [{"icmp_echo.____fmt": "icmp_echo: reply from %pI4 to %pI4, "
                                                                      "seq %u"}]}}])


@page.check("answer", "With the program attached, each of pod-1's 3 pings to pod-2 got a reply from "
                      "10.244.1.3, although pod-2 ignores echo requests")
def _(lab):
    return answered(lab.output(ping(POD2).text, step="answer"), POD2, 3)


@page.check("answer", "Each reply is its request turned around: MAC addresses and IP addresses swapped, "
                      "echo request made echo reply, same IP identifier and sequence number, and a correct "
                      "ICMP checksum")
def _(lab):
    out = lab.output("tcpdump", step="answer")
    frames = re.findall(r"(?m)^(\S+) > (\S+), ethertype IPv4 .*, id (\d+), .*\n +(\S+) > (\S+): ICMP echo "
                        r"(request|reply), id \d+, seq (\d+), length 64$", out)
    pairs = list(zip(frames[::2], frames[1::2]))
    return (len(frames) == 6 and "wrong" not in out
            and all(req == (rep[1], rep[0], rep[2], rep[4], rep[3], "request", rep[6]) and rep[5] == "reply"
                    for req, rep in pairs)
            and [(req[3], req[4], req[6]) for req, _rep in pairs] == [(POD1, POD2, str(n)) for n in (1, 2, 3)])


@page.check("answer", "pod-2's counters did not move: its stack never saw those requests")
def _(lab):
    return counters(lab, "answer") == counters(lab, "ignore") == {"IcmpInEchos": 6, "IcmpOutEchoReps": 3}


@page.check("answer", "The ClusterIP 10.96.0.10, which no interface of the lab holds, answered pod-1's "
                      "3 pings too")
def _(lab):
    addresses = [a for node in lab.snapshot["nodes"] for link in node["links"] for a in link["addresses"]]
    return (answered(lab.output(ping(svc.CLUSTER_IP).text, step="answer"), svc.CLUSTER_IP, 3)
            and not any(a.split("/")[0] == svc.CLUSTER_IP for a in addresses))


@page.check("answer", "The program printed one trace line per reply it made, naming the address it "
                      "answered for, the pod it answered and the sequence number")
def _(lab):
    expected = [f"icmp_echo: reply from {src} to {POD1}, seq {seq}"
                for src in (POD2, svc.CLUSTER_IP) for seq in (1, 2, 3)]
    return trace_lines(lab) == expected


@page.check("detach", "Without the program pod-1's pings get no reply again, and pod-2 counts the 3 "
                      "requests it ignores")
def _(lab):
    out = lab.output(ping(POD2, rc=1).text, step="detach")
    return (replies(out) == [] and "3 packets transmitted, 0 received" in out
            and counters(lab, "detach") == {"IcmpInEchos": 9, "IcmpOutEchoReps": 3})


@page.check("verifier", "The verifier refused the program and tc failed with its log: the read at offset "
                        "12 of the packet is outside the part known to exist")
def _(lab):
    res = lab.result(f"obj {BROKEN}", step="verifier")
    return (res.rc == 1 and "-- BEGIN PROG LOAD LOG --" in res.stderr
            and "invalid access to packet, off=12 size=1" in res.stderr
            and "R1 offset is outside of the packet" in res.stderr
            and res.stderr.rstrip().endswith("Unable to load program"))


@page.check("verifier", "Nothing stayed attached: if3's ingress hook has no filter, and the kernel holds no "
                        "program named unchecked")
def _(lab):
    return (lab.output(f"tc filter show dev {VETH} ingress", step="verifier") == ""
            and "unchecked" not in loaded(lab))
