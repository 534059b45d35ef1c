"""The bash CNI plugin (snippets/programs/bash-cni) against the CNI specification 1.0.0.

Every call runs inside a node of the test's own: fresh network, mount and PID namespaces
with a tmpfs over /run (pods' namespaces and the address store live there), so the tests
touch nothing of the machine and pass while lab runs are in progress beside them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("host_lab")]

PLUGIN = ROOT / "snippets/programs/bash-cni"
STORE = "/run/bash-cni"
CONF = {"cniVersion": "1.0.0", "name": "bashnet", "type": "bash-cni", "bridge": "cni0",
        "subnet": "10.244.1.0/24", "dataDir": STORE}
ERROR_KEYS = ["cniVersion", "code", "msg", "details"]


@dataclass
class Answer:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self, code: int) -> dict[str, Any]:
        """The error object, once it is the specification's, with `code`, after a failure."""
        assert self.rc != 0, self.stdout
        obj = self.json
        assert list(obj) == ERROR_KEYS and obj["code"] == code, obj
        return obj


class Node:
    """A process holding fresh namespaces; commands run inside them with nsenter."""

    def __init__(self) -> None:
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        self.proc = subprocess.Popen(
            ["unshare", *user, "--net", "--mount", "--pid", "--fork", "--kill-child",
             "sh", "-c", "mount -t tmpfs tmpfs /run && mkdir /run/netns && ip link set lo up"
                         " && echo ready && exec sleep infinity"],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "ready\n"
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        self.enter = ["nsenter", "--target", children.split()[0], *(["--user", "--preserve-credentials"] if user else []),
                      "--net", "--mount", "--pid", "--"]

    def sh(self, script: str) -> str:
        """Run a shell script inside; its standard output, or an assertion with stderr."""
        res = subprocess.run([*self.enter, "sh", "-c", script], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"{script}: {res.stderr}"
        return res.stdout

    def start(self, command: str, conf: dict | str, pod: str = "pod-a", ifname: str = "eth0",
              **env: str) -> subprocess.Popen:
        """Start the plugin as a runtime does: CNI_* in a clean environment, config on stdin."""
        cni = {"CNI_COMMAND": command, "CNI_CONTAINERID": pod, "CNI_NETNS": f"/run/netns/{pod}",
               "CNI_IFNAME": ifname, "CNI_PATH": "/opt/cni/bin"}
        cni.update(env)
        with tempfile.TemporaryFile("w+") as stdin:
            stdin.write(conf if isinstance(conf, str) else json.dumps(conf))
            stdin.seek(0)
            return subprocess.Popen([*self.enter, str(PLUGIN)], stdin=stdin, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True,
                                    env={"PATH": os.environ["PATH"], **{k: v for k, v in cni.items() if v}})

    def call(self, command: str, conf: dict | str = CONF, pod: str = "pod-a", **env: str) -> Answer:
        proc = self.start(command, conf, pod, **env)
        stdout, stderr = proc.communicate(timeout=60)
        return Answer(proc.returncode, stdout, stderr)

    def add(self, pod: str, conf: dict = CONF, **env: str) -> dict[str, Any]:
        """ADD a pod whose namespace is created first; its result."""
        self.sh(f"ip netns add {pod}")
        answer = self.call("ADD", conf, pod, **env)
        assert answer.rc == 0, answer.stdout + answer.stderr
        return answer.json

    def store(self, network: str = "bashnet") -> dict[str, str]:
        """The address store: file name -> content, the lock file left out."""
        out = self.sh(f"cd {STORE}/{network} 2>/dev/null || exit 0; for f in *.*.*.*; do [ -f \"$f\" ] && printf '%s=%s\\n' \"$f\" \"$(tr '\\n' ' ' < $f)\"; done; true")
        return dict(line.split("=", 1) for line in out.splitlines())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def node():
    if not shutil.which("jq"):
        pytest.skip("the plugin needs jq (Debian package jq)")
    n = Node()
    yield n
    n.close()


def with_(**changes: Any) -> dict[str, Any]:
    """CONF with fields changed; a value of None removes the field."""
    conf = {**CONF, **changes}
    return {k: v for k, v in conf.items() if v is not None}


def host_hash(pod: str, ifname: str = "eth0", network: str = "bashnet") -> str:
    return hashlib.sha1(f"{network}/{pod}/{ifname}".encode()).hexdigest()


def host_veth(pod: str, ifname: str = "eth0", network: str = "bashnet") -> str:
    return "veth" + host_hash(pod, ifname, network)[:11]


# --- VERSION ----------------------------------------------------------------------------

def test_version_lists_the_versions_it_speaks(node):
    answer = node.call("VERSION", '{"cniVersion": "1.0.0"}')
    assert answer.rc == 0 and answer.json == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}
    # Asked in another version, it still answers, so the runtime can see it does not match.
    assert node.call("VERSION", '{"cniVersion": "0.4.0"}').json["supportedVersions"] == ["1.0.0"]


# --- ADD --------------------------------------------------------------------------------

def test_add_wires_the_pod_to_the_bridge_and_prints_the_result(node):
    result = node.add("pod-a")
    veth = host_veth("pod-a")
    assert result == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0", "mac": "0a:58:0a:f4:01:01"},
                       {"name": veth, "mac": "02:" + ":".join(
                           host_hash("pod-a")[i:i + 2] for i in range(0, 10, 2))},
                       {"name": "eth0", "mac": "0a:58:0a:f4:01:02", "sandbox": "/run/netns/pod-a"}],
        "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
    }
    assert "inet 10.244.1.1/24" in node.sh("ip -4 addr show dev cni0")
    assert f"master cni0 state UP" in node.sh(f"ip link show dev {veth}")
    pod = node.sh("ip -n pod-a addr show dev eth0")
    assert "link/ether 0a:58:0a:f4:01:02" in pod and "inet 10.244.1.2/24" in pod and ",UP," in pod
    assert node.sh("ip -n pod-a route show default") == "default via 10.244.1.1 dev eth0 \n"
    assert node.store() == {"10.244.1.2": "pod-a eth0 "}


def test_a_bridge_that_exists_is_used_and_reported_as_it_is(node):
    node.sh("ip link add cni0 address 02:00:00:00:00:01 type bridge")
    assert node.add("pod-a")["interfaces"][0] == {"name": "cni0", "mac": "02:00:00:00:00:01"}
    assert "inet 10.244.1.1/24" in node.sh("ip -4 addr show dev cni0")


def test_pods_reach_each_other_and_the_node(node):
    node.add("pod-a")
    assert node.add("pod-b")["ips"][0]["address"] == "10.244.1.3/24"
    node.sh("ip netns exec pod-a ping -c 1 -W 2 10.244.1.3 && ip netns exec pod-b ping -c 1 -W 2 10.244.1.1")


def test_add_of_an_existing_interface_is_refused_and_keeps_the_address(node):
    node.add("pod-a")
    err = node.call("ADD").error(102)
    assert err["details"] == "/run/netns/pod-a already has an interface eth0"
    assert node.store() == {"10.244.1.2": "pod-a eth0 "}
    assert "10.244.1.2/24" in node.sh("ip -n pod-a addr show dev eth0")


def test_an_attachment_is_its_container_id_and_interface_name(node):
    """DEL of another interface of the same pod leaves this one's address and veth."""
    node.add("pod-a")
    assert node.call("DEL", CNI_IFNAME="net1").rc == 0
    assert node.store() == {"10.244.1.2": "pod-a eth0 "}
    assert host_veth("pod-a") in node.sh("ip -o link show")
    assert host_veth("pod-a", "net1") != host_veth("pod-a")


def test_del_on_another_network_leaves_this_one_s_attachment(node):
    """A runtime DELs after a failed ADD: on a network the pod never joined, that DEL
    must not take the veth or address the pod has on another."""
    node.add("pod-a")
    assert node.call("DEL", with_(name="other", subnet="10.244.2.0/24")).rc == 0
    assert host_veth("pod-a") in node.sh("ip -o link show")
    assert node.store() == {"10.244.1.2": "pod-a eth0 "}


def test_add_into_a_missing_namespace_is_code_3(node):
    err = node.call("ADD", pod="ghost").error(3)
    assert err["details"] == "CNI_NETNS=/run/netns/ghost is not a network namespace"
    assert node.store() == {}


def test_a_bridge_name_taken_by_another_kind_is_code_7(node):
    node.sh("ip netns add pod-a && ip link add cni0 type veth peer name other")
    assert node.call("ADD").error(7)["details"] == "cni0 exists and is not a bridge"
    assert node.store() == {}


def test_a_failed_add_undoes_what_it_did(node):
    # The pod has a default route already, so the plugin's own cannot be added; by then
    # the address is reserved and the veth made.
    node.sh("ip netns add pod-a && ip -n pod-a link add eth1 type veth peer name eth2"
            " && ip -n pod-a addr add 192.168.0.2/24 dev eth1 && ip -n pod-a link set eth1 up"
            " && ip -n pod-a route add default via 192.168.0.1")
    err = node.call("ADD").error(103)
    assert err["details"] == ("nsenter --net=/run/netns/pod-a ip route add default via 10.244.1.1"
                              " dev eth0: RTNETLINK answers: File exists")
    assert node.store() == {}
    assert host_veth("pod-a") not in node.sh("ip -o link show")
    assert " eth0" not in node.sh("ip -n pod-a -o link show")


# --- the address range ------------------------------------------------------------------

def test_an_exhausted_range_is_code_100_until_an_address_is_released(node):
    tiny = with_(subnet="10.244.9.0/30", bridge="cni1")  # gateway .1, one pod: .2
    assert node.add("pod-a", tiny)["ips"][0]["address"] == "10.244.9.2/30"
    node.sh("ip netns add pod-b")
    err = node.call("ADD", tiny, pod="pod-b").error(100)
    assert err == {"cniVersion": "1.0.0", "code": 100, "msg": "address range exhausted",
                   "details": "every pod address of 10.244.9.0/30 is taken (1 of 1)"}
    # Nothing of pod-b was left: no veth, no address.
    assert host_veth("pod-b") not in node.sh("ip -o link show")
    assert node.sh("ip -n pod-b -o link show").count("\n") == 1  # lo only
    assert node.call("DEL", tiny).rc == 0
    assert node.call("ADD", tiny, pod="pod-b").json["ips"][0]["address"] == "10.244.9.2/30"


def test_the_lowest_free_address_is_taken(node):
    for pod in ("pod-a", "pod-b", "pod-c"):
        node.add(pod)
    assert node.call("DEL", pod="pod-b").rc == 0
    assert node.add("pod-d")["ips"][0]["address"] == "10.244.1.3/24"


def test_concurrent_adds_never_share_an_address(node):
    pods = [f"pod-{i}" for i in range(20)]
    node.sh(" && ".join(f"ip netns add {p}" for p in pods))
    procs = [node.start("ADD", CONF, p) for p in pods]
    answers = [(p.communicate(timeout=120), p.returncode) for p in procs]
    assert all(rc == 0 for _, rc in answers), [out for out, rc in answers if rc]
    addresses = [json.loads(out)["ips"][0]["address"] for (out, _), _ in answers]
    assert len(set(addresses)) == 20, sorted(addresses)
    assert sorted(addresses) == sorted(f"10.244.1.{i}/24" for i in range(2, 22))
    store = node.store()
    assert len(store) == 20 and sorted(store.values()) == sorted(f"{p} eth0 " for p in pods)


def test_a_store_locked_too_long_is_code_11(node):
    node.sh(f"ip netns add pod-a && mkdir -p {STORE}/bashnet")
    # Holds the lock until its standard input closes.
    holder = subprocess.Popen([*node.enter, "flock", f"{STORE}/bashnet/lock", "sh", "-c", "echo locked; read x"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        err = node.call("ADD", BASH_CNI_LOCK_WAIT="1").error(11)
        assert err["details"] == f"the address store {STORE}/bashnet stayed locked for 1 s"
        assert host_veth("pod-a") not in node.sh("ip -o link show")
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert node.call("ADD").rc == 0


# --- DEL --------------------------------------------------------------------------------

def test_del_releases_the_address_and_removes_the_veth_and_may_repeat(node):
    node.add("pod-a")
    node.add("pod-b")
    for _ in range(2):
        answer = node.call("DEL")
        assert (answer.rc, answer.stdout) == (0, ""), answer.stdout + answer.stderr
    assert node.store() == {"10.244.1.3": "pod-b eth0 "}
    links = node.sh("ip -o link show")
    assert host_veth("pod-a") not in links and host_veth("pod-b") in links and "cni0" in links
    assert "eth0" not in node.sh("ip -n pod-a -o link show")


def test_del_succeeds_when_the_namespace_is_gone_or_was_never_added(node):
    node.add("pod-a")
    node.sh("ip netns del pod-a")
    assert node.call("DEL").rc == 0
    assert node.store() == {}
    assert node.call("DEL", pod="never", CNI_NETNS="").rc == 0
    # A DEL on a network nothing was ever added to leaves no trace in the store either.
    assert node.call("DEL", with_(name="unused")).rc == 0
    assert node.sh(f"ls {STORE}").split() == ["bashnet"]


# --- CHECK ------------------------------------------------------------------------------

def test_check_passes_on_a_pod_as_added(node):
    result = node.add("pod-a")
    answer = node.call("CHECK", {**CONF, "prevResult": result})
    assert (answer.rc, answer.stdout) == (0, ""), answer.stdout


@pytest.mark.parametrize("damage, found", [
    ("ip -n pod-a route del default", "no route to default via 10.244.1.1"),
    ("ip -n pod-a addr flush dev eth0", "eth0 has no address 10.244.1.2/24"),
    ("ip -n pod-a link set eth0 down", "eth0 is down"),
    ("ip -n pod-a link set eth0 address 0a:58:00:00:00:01", "eth0's MAC is not 0a:58:0a:f4:01:02"),
    (f"rm {STORE}/bashnet/10.244.1.2", "the store does not reserve 10.244.1.2 for pod-a/eth0"),
    ("ip link set dev VETH nomaster", "VETH is not a port of cni0"),
    ("ip -n pod-a link del eth0", "/run/netns/pod-a has no interface eth0"),
])
def test_check_reports_what_differs_from_prev_result(node, damage, found):
    result = node.add("pod-a")
    node.sh(damage.replace("VETH", host_veth("pod-a")))
    err = node.call("CHECK", {**CONF, "prevResult": result}).error(101)
    assert found.replace("VETH", host_veth("pod-a")) in err["details"].split("; "), err


def test_check_needs_prev_result_and_an_interface_of_it(node):
    result = node.add("pod-a")
    node.call("CHECK").error(7)
    other = {**result, "interfaces": result["interfaces"][:2]}
    assert node.call("CHECK", {**CONF, "prevResult": other}).error(101)["details"] == (
        "prevResult has no interface eth0 in /run/netns/pod-a")


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("stdin, details", [
    ('{"cniVersion": "1.0.0", "name": "bashnet",\n}', "parse error: Expected another key-value pair at line 2, column 1"),
    ('["not", "an", "object"]', "standard input is not a JSON object"),
    ("\n", "standard input is empty"),
])
def test_a_malformed_configuration_is_code_6(node, stdin, details):
    node.sh("ip netns add pod-a")
    err = node.call("ADD", stdin).error(6)
    assert err["details"] == details and err["cniVersion"] == "1.0.0"
    assert node.sh("ip -o link show").count("\n") == 1


@pytest.mark.parametrize("conf, details", [
    (with_(subnet=None), "field subnet is missing"),
    (with_(subnet="10.244.1.0"), 'subnet "10.244.1.0" is not an IPv4 network such as 10.244.1.0/24'),
    (with_(subnet="10.244.1.5/24"), 'subnet "10.244.1.5/24" has host bits set'),
    (with_(subnet="10.244.1.0/31"), 'subnet "10.244.1.0/31": the prefix must be /8 to /30'),
    (with_(subnet="10.256.1.0/24"), 'subnet "10.256.1.0/24" is not an IPv4 address'),
    (with_(subnet="10.244.08.0/24"), 'subnet "10.244.08.0/24" is not an IPv4 network such as 10.244.1.0/24'),
    (with_(subnet="10.244.1.0/08"), 'subnet "10.244.1.0/08" is not an IPv4 network such as 10.244.1.0/24'),
    (with_(prevResult="not a result"), "prevResult must be a result object"),
    (with_(subnet=24), "field subnet must be a string, not a number"),
    (with_(name=None), 'name "" is not alphanumeric, _ . -'),
    (with_(name="../etc"), 'name "../etc" is not alphanumeric, _ . -'),
    (with_(bridge="a/b"), 'bridge "a/b" is not an interface name'),
    (with_(dataDir="relative"), 'dataDir "relative" is not an absolute path'),
])
def test_an_invalid_configuration_is_code_7(node, conf, details):
    node.sh("ip netns add pod-a")
    assert node.call("ADD", conf).error(7)["details"] == details
    assert node.sh("ip -o link show").count("\n") == 1  # lo only: nothing was created


@pytest.mark.parametrize("version", ["0.3.1", "2.0.0", None])
def test_an_unknown_cni_version_is_code_1(node, version):
    node.sh("ip netns add pod-a")
    err = node.call("ADD", with_(cniVersion=version)).error(1)
    # The error object carries the configuration's own cniVersion, as the spec asks.
    assert err["cniVersion"] == (version or "1.0.0")
    assert node.sh("ip -o link show").count("\n") == 1


@pytest.mark.parametrize("env, details", [
    ({"CNI_COMMAND": ""}, "CNI_COMMAND is not set"),
    ({"CNI_COMMAND": "GC"}, "CNI_COMMAND=GC is not ADD, DEL, CHECK or VERSION"),
    ({"CNI_NETNS": "", "CNI_IFNAME": ""}, "CNI_NETNS is not set; CNI_IFNAME is not set"),
    ({"CNI_CONTAINERID": "-x"}, "CNI_CONTAINERID=-x is not alphanumeric, _ . -"),
    ({"CNI_IFNAME": "a-name-too-long-for-linux"}, "CNI_IFNAME=a-name-too-long-for-linux is not an interface name"),
    ({"CNI_NETNS": "pod-a"}, "CNI_NETNS=pod-a is not a path"),
])
def test_invalid_environment_is_code_4_naming_the_variables(node, env, details):
    command = env.pop("CNI_COMMAND", "ADD")
    assert node.call(command, **env).error(4)["details"] == details
