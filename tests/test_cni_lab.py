"""The CNI runtime (deepdive-cni) with the real plugins: bridge, host-local and portmap
from /usr/lib/cni (Debian's containernetworking-plugins 1.1.1).

Each test gets a machine of its own, made as a lab run makes one (deepdive.machine):
fresh network, mount and PID namespaces, private /etc, /var/lib, /run and /opt, empty
/etc/cni and /var/lib/cni, and deepdive-cni on PATH; so the tests touch nothing of the
caller's and pass while lab runs go on beside them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, caller_state
from deepdive import lab

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("host_lab")]

PLUGINS = "/usr/lib/cni"
POD_A = "/run/netns/pod-a"
# cnitool's container ID for POD_A (sha512 of the path), under deepdive-cni's name
POD_A_ID = "deepdive-cni-64dcf65fe5bf5464f7e2"
PORT_MAPPINGS = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}


def conflist(name: str, subnet: dict[str, str]) -> dict[str, Any]:
    """bridge + portmap as containerd's default configuration has them, host-local
    keeping its leases in the machine's /run."""
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[subnet]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": "/run/cni-ipam"}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}


# The machine's PID 1: makes its namespaces into a lab's machine, then runs the shell
# scripts it is sent, one JSON line each, as the lab runs a page's commands (rootless,
# with the capabilities unshare --keep-caps gave it), and answers one JSON line each.
SERVE = """
import json, os, subprocess, sys
from deepdive import machine
machine.prepare()
print("ready", flush=True)
for line in sys.stdin:
    ask = json.loads(line)
    try:
        res = subprocess.run(["sh", "-c", ask["script"]], input=ask["input"], capture_output=True,
                             text=True, env={**os.environ, **ask["env"]}, timeout=60)
        answer = {"rc": res.returncode, "stdout": res.stdout, "stderr": res.stderr}
    except subprocess.TimeoutExpired:
        answer = {"rc": -9, "stdout": "", "stderr": "no answer within 60 s"}
    print(json.dumps(answer), flush=True)
"""


class Machine:
    """A machine of the test's own, made as a lab run makes one; scripts run inside."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["unshare", *lab.unshare_options(), "--pid", "--fork", "--kill-child", "--", sys.executable, "-c", SERVE],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, start_new_session=True)
        assert self.proc.stdout.readline() == "ready\n", "the machine was not made"

    def run(self, script: str, input: str = "", **env: str) -> subprocess.CompletedProcess:
        self.proc.stdin.write(json.dumps({"script": script, "input": input, "env": {"CNI_PATH": PLUGINS, **env}}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return subprocess.CompletedProcess(script, answer["rc"], answer["stdout"], answer["stderr"])

    def sh(self, script: str, **env: str) -> str:
        res = self.run(script, **env)
        assert res.returncode == 0, f"{script}: {res.stderr}"
        return res.stdout

    def json(self, script: str) -> Any:
        return json.loads(self.sh(script))

    def write(self, path: str, data: dict[str, Any]) -> None:
        assert self.run(f"cat > {path}", input=json.dumps(data, indent=2)).returncode == 0

    def exists(self, path: str) -> bool:
        return self.run(f"test -e {path}").returncode == 0

    def links(self, netns: str = "") -> dict[str, dict[str, Any]]:
        """Interface name -> `ip -j addr` entry, on the host or in a pod."""
        where = f"-n {netns} " if netns else ""
        return {link["ifname"]: link for link in self.json(f"ip {where}-j addr show")}

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def node():
    if not all(os.access(f"{PLUGINS}/{p}", os.X_OK) for p in ("bridge", "host-local", "portmap")):
        pytest.skip(f"needs the CNI plugins in {PLUGINS} (Debian package containernetworking-plugins)")
    before = caller_state()
    n = Machine()
    n.sh("mkdir -p /etc/cni/net.d && ip netns add pod-a && ip netns add pod-b")
    yield n
    n.close()
    assert caller_state() == before


def addresses(link: dict[str, Any]) -> list[str]:
    return [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a["family"] == "inet"]


def test_add_check_del_with_bridge_host_local_and_portmap(node):
    node.write("/etc/cni/net.d/10-cbr0.conflist", conflist("cbr0", {"subnet": "10.85.0.0/24"}))
    res = node.run(f"deepdive-cni add cbr0 {POD_A}", CAP_ARGS=json.dumps(PORT_MAPPINGS))
    assert (res.returncode, res.stderr) == (0, "")
    result = json.loads(res.stdout)
    bridge, veth, eth0 = result["interfaces"]
    assert (bridge["name"], eth0["name"], eth0["sandbox"]) == ("cni0", "eth0", POD_A)
    assert "sandbox" not in bridge and "sandbox" not in veth
    assert result["ips"] == [{"interface": 2, "address": "10.85.0.2/24", "gateway": "10.85.0.1"}]
    assert result["routes"] == [{"dst": "0.0.0.0/0"}]

    # The pod's eth0 has its address, the route to its subnet and the default route.
    pod = node.links("pod-a")
    assert addresses(pod["eth0"]) == ["10.85.0.2/24"] and pod["eth0"]["address"] == eth0["mac"]
    routes = {(r["dst"], r.get("gateway"), r["dev"]) for r in node.json("ip -n pod-a -j route show")}
    assert routes == {("default", "10.85.0.1", "eth0"), ("10.85.0.0/24", None, "eth0")}
    # On the node: cni0 is the gateway and the host-side veth, named in the result, is its port.
    host = node.links()
    assert addresses(host["cni0"]) == ["10.85.0.1/24"]
    assert host[veth["name"]]["master"] == "cni0" and host[veth["name"]]["address"] == veth["mac"]
    # What DEL must remove: host-local's lease, portmap's DNAT, the runtime's cache.
    lease = "/run/cni-ipam/cbr0/10.85.0.2"
    cache = f"/var/lib/cni/results/cbr0-{POD_A_ID}-eth0"
    assert node.sh(f"cat {lease}").split() == [POD_A_ID, "eth0"]
    assert "-j DNAT --to-destination 10.85.0.2:80" in node.sh("iptables-save -t nat")
    cached = node.json(f"cat {cache}")
    assert (cached["kind"], cached["result"], cached["capabilityArgs"]) == ("cniCacheV1", result, PORT_MAPPINGS)

    # CHECK: a pod with no port mapping passes (portmap has nothing to check; see the
    # next test for one that has), and fails once its address is gone.
    assert node.run("deepdive-cni add cbr0 /run/netns/pod-b").returncode == 0
    check = node.run("deepdive-cni check cbr0 /run/netns/pod-b")
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")
    node.sh("ip -n pod-b addr flush dev eth0")
    broken = node.run("deepdive-cni check cbr0 /run/netns/pod-b")
    assert broken.returncode == 1
    assert broken.stderr.startswith('deepdive-cni: plugin type="bridge" failed (check): ')

    # DEL removes the veth, the pod's eth0, the lease, the rules and the cache; cni0 stays.
    res = node.run(f"deepdive-cni del cbr0 {POD_A}")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    host = node.links()
    assert veth["name"] not in host and addresses(host["cni0"]) == ["10.85.0.1/24"]
    assert list(node.links("pod-a")) == ["lo"]
    assert not node.exists(lease) and not node.exists(cache)
    assert "10.85.0.2:80" not in node.sh("iptables-save -t nat")
    # A second DEL finds nothing to remove, and succeeds (SPEC.md: plugins MUST accept it).
    res = node.run(f"deepdive-cni del cbr0 {POD_A}")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_portmap_check_fails_in_1_1_1(node):
    """portmap 1.1.1 CHECKs a pod's DNAT chain in iptables and in ip6tables whatever the
    pod's address family (checkPorts in plugins/meta/portmap/portmap.go), and ADD made it
    in iptables only: every CHECK of a pod with a port mapping fails. The runtime says
    which plugin failed, at which command, and the plugin's error object; error 999 is
    the code the plugins' skel gives any error of their own."""
    node.write("/etc/cni/net.d/10-cbr0.conflist", conflist("cbr0", {"subnet": "10.85.0.0/24"}))
    assert node.run(f"deepdive-cni add cbr0 {POD_A}", CAP_ARGS=json.dumps(PORT_MAPPINGS)).returncode == 0
    res = node.run(f"deepdive-cni check cbr0 {POD_A}")
    chain = "CNI-DN-14e7f6ed300411b23615f"  # portmap's name for network cbr0 and POD_A_ID
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == ('deepdive-cni: plugin type="portmap" failed (check): error 999 (the plugin\'s own '
                          f'code): could not check ipv6 dnat: chain {chain} not found in iptables table nat\n')
    assert f":{chain} " in node.sh("iptables-save -t nat")
    assert chain not in node.sh("ip6tables-save -t nat")


def test_a_failing_add_leaves_no_veth_no_lease_and_no_cache(node):
    """A range of one address: the second pod's ADD fails in host-local, after the bridge
    plugin made its veth; the runtime's DEL takes the veth away again."""
    node.write("/etc/cni/net.d/10-one.conflist",
               conflist("one", {"subnet": "10.85.1.0/24", "rangeStart": "10.85.1.2", "rangeEnd": "10.85.1.2"}))
    first = node.run(f"deepdive-cni add one {POD_A}")
    assert first.returncode == 0, first.stderr
    veth_a = json.loads(first.stdout)["interfaces"][1]["name"]
    res = node.run("deepdive-cni add one /run/netns/pod-b")
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == ('deepdive-cni: plugin type="bridge" failed (add): error 999 (the plugin\'s own code): '
                          'failed to allocate for range 0: no IP addresses available in range set: '
                          '10.85.1.2-10.85.1.2; DEL undid the attachment\n')
    # Only the first pod's veth is on cni0, pod-b has no eth0, the one lease is pod-a's,
    # and only pod-a's result is cached.
    assert [name for name, link in node.links().items() if link.get("master") == "cni0"] == [veth_a]
    assert list(node.links("pod-b")) == ["lo"]
    assert node.sh("ls /run/cni-ipam/one").split() == ["10.85.1.2", "last_reserved_ip.0", "lock"]
    assert node.sh("cat /run/cni-ipam/one/10.85.1.2").split() == [POD_A_ID, "eth0"]
    assert node.sh("ls /var/lib/cni/results").split() == [f"one-{POD_A_ID}-eth0"]


def test_an_invalid_subnet_fails_add_and_del_alike_and_leaves_no_veth(node):
    """bridge validates its ipam section on DEL too: the DEL that follows the failed ADD
    fails the same way, and the runtime says so; the bridge had made only cni0."""
    node.write("/etc/cni/net.d/10-bad.conflist", conflist("bad", {"subnet": "10.85.300.0/24"}))
    res = node.run(f"deepdive-cni add bad {POD_A}")
    error = "error 999 (the plugin's own code): invalid CIDR address: 10.85.300.0/24"
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == (f'deepdive-cni: plugin type="bridge" failed (add): {error}; the DEL that followed '
                          f'failed too: plugin type="bridge" failed (del): {error}\n')
    assert sorted(node.links()) == ["cni0", "lo"]
    assert list(node.links("pod-a")) == ["lo"]
    assert not node.exists("/run/cni-ipam") and node.sh("ls -A /var/lib/cni") == ""
