"""The Service the kube-proxy and eBPF pages share: three pods behind one ClusterIP.

Not a page (the registry skips names starting with "_"): the pieces each Services page
builds its lab from, so that every mode is shown on the same Service.

- Three pods, pod-1 to pod-3, on one node: network namespaces wired by the real CNI
  plugins (bridge with hairpin mode, host-local in 10.244.1.0/24) through deepdive-cni,
  each running busybox's httpd on port 80 with a page that names the pod.
- The Service: ClusterIP 10.96.0.10 port 80, NodePort 30080 on the node's 192.168.1.1,
  which a client outside the node ("laptop", 192.168.1.2) reaches over a veth pair.
- snippets/programs/hits makes N requests, each on a new connection, and counts which
  pod answered: `hits URL N` prints `uniq -c` lines such as "    101 pod-2".

In a cluster, kubelet and the container runtime create the pods and the EndpointSlice
controller lists their addresses; the pages say so and play those parts with these
commands. What each page adds is what kube-proxy (or an eBPF dataplane) programs.
"""
from __future__ import annotations

import json
import math
import re

from deepdive.model import Cmd, cmd, write_file

CLUSTER_IP = "10.96.0.10"
PORT = 80
NODE_IP = "192.168.1.1"
CLIENT_IP = "192.168.1.2"
NODE_PORT = 30080
POD_CIDR = "10.244.1.0/24"
GATEWAY = "10.244.1.1"
PODS = ("pod-1", "pod-2", "pod-3")
# host-local hands out addresses in order from .2, and the pods are added in order.
POD_IPS = {pod: f"10.244.1.{i + 2}" for i, pod in enumerate(PODS)}
NETWORK = "cbr0"
CONFLIST = "/etc/cni/net.d/10-cbr0.conflist"
HITS = "snippets/programs/hits"
# Every Services page needs these besides its own tools.
TOOLS = ("busybox", "curl", "setsid", "ss", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local",
         "/usr/lib/cni/loopback")

CONFIG = {
    "cniVersion": "1.0.0",
    "name": NETWORK,
    "plugins": [{
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": True,
        "isDefaultGateway": True,
        "hairpinMode": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]]},
    }],
}
LOOPBACK = "/etc/cni/net.d/99-loopback.conflist"
LOOPBACK_CONFIG = {"cniVersion": "1.0.0", "name": "cni-loopback", "plugins": [{"type": "loopback"}]}

# Values random by design on every Services page: the bridge plugin's host-side veth
# names, the kernel's random MACs (locally administered: second hex digit 2, 6, a or e;
# the lab's own start 02:00:00) and the IPv6 link-local addresses made from them, and
# how many of the requests each pod answered.
MASKS = (
    (r"\bveth[0-9a-f]{8}\b", "veth<random>"),
    (r"\b(?!02:00:00)[0-9a-f][26ae](?::[0-9a-f]{2}){5}\b", "<random-mac>"),
    (r"\bfe80::[0-9a-f:]+(?=/64)", "fe80::<random>"),
    (r"(?m)^ *\d+ (pod-\d|\(no answer\))$", r"<n> \1"),
)


def pods() -> list[Cmd | str]:
    """Commands that build the node's pods: CNI configuration, sandboxes, ADDs, servers.
    The servers run on after the step (setsid -f); the last commands wait until each
    listens."""
    out: list[Cmd | str] = [
        "mkdir -p /etc/cni/net.d",
        write_file(CONFLIST, json.dumps(CONFIG, indent=2)),
        write_file(LOOPBACK, json.dumps(LOOPBACK_CONFIG, indent=2)),
    ]
    for pod in PODS:
        out += [
            f"ip netns add {pod}",
            f"env CNI_IFNAME=lo deepdive-cni add cni-loopback /run/netns/{pod}",
            cmd(f"deepdive-cni add {NETWORK} /run/netns/{pod}"),
            f"mkdir -p /tmp/www/{pod}",
            write_file(f"/tmp/www/{pod}/index.html", f"{pod}\n"),
            f"setsid -f ip netns exec {pod} busybox httpd -f -p {PORT} -h /tmp/www/{pod}",
        ]
    # A loaded machine has taken over 10 s to start a server: 30 s each.
    out += [cmd(f"ip netns exec {pod} ss -Hltn sport = :{PORT}", until="LISTEN", timeout=30) for pod in PODS]
    return out


def client() -> list[str]:
    """A machine outside the node, "laptop", on 192.168.1.0/24 with the node's eth1."""
    return [
        "ip netns add laptop",
        "ip link add eth1 address 02:00:00:00:00:01 type veth peer name eth0 netns laptop"
        " address 02:00:00:00:00:02",
        f"ip addr add {NODE_IP}/24 dev eth1",
        "ip link set eth1 up",
        f"ip -n laptop addr add {CLIENT_IP}/24 dev eth0",
        "ip -n laptop link set eth0 up",
        "ip -n laptop link set lo up",
        cmd("ip -n laptop link show eth0", until="state UP"),
    ]


def hits(where: str, url: str, n: int) -> str:
    """The command that makes `n` requests to `url` from namespace `where` ("" for the
    node itself) and counts the answers by pod."""
    prefix = f"ip netns exec {where} " if where else ""
    return f"{prefix}{HITS} {url} {n}"


def counts(hits_output: str) -> dict[str, int]:
    """{"pod-1": 101, ...} from `hits` output; "(no answer)" counts too."""
    return {m[2]: int(m[1]) for m in re.finditer(r"(?m)^ *(\d+) (pod-\d|\(no answer\))$", hits_output)}


def even_within(counts_by_pod: dict[str, int], n: int, sigmas: float = 4.5) -> bool:
    """Whether all n answers came from the three pods, each within `sigmas` standard
    deviations of n/3. Each count is binomial(n, 1/3): for n = 300 the deviation is
    8.2 and 4.5 of them allow 63..137; a correct rule fails this about once in 50 000
    runs (two-sided tail of 4.5 sigma, 3 pods)."""
    if set(counts_by_pod) != set(PODS) or sum(counts_by_pod.values()) != n:
        return False
    mean, sd = n / 3, math.sqrt(n * (1 / 3) * (2 / 3))
    return all(abs(c - mean) <= sigmas * sd for c in counts_by_pod.values())
