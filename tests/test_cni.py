"""The CNI runtime (deepdive.cni) against the CNI specification 1.0.0's own examples.

SPEC.md (tag spec-v1.0.0 of containernetworking/cni) gives, in section 1, an example
network configuration (bridge, tuning, portmap) and, in its appendix, the configuration
each plugin receives on ADD, CHECK and DEL, with the results the plugins return. Here
fake plugins (shell scripts) record their environment and standard input and print the
appendix's results, so the runtime's side of each exchange is compared with the
specification's. No privileges, no namespaces: the netns is a plain file.
"""
from __future__ import annotations

import base64
import copy
import functools
import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT
from deepdive import cni
from deepdive.cni import Attachment, CNIError, Runtime

# --- the specification's example -----------------------------------------------------

# Section 1, "Example configuration", without its comments.
EXAMPLE = {
    "cniVersion": "1.0.0",
    "name": "dbnet",
    "plugins": [
        {"type": "bridge", "bridge": "cni0", "keyA": ["some more", "plugin specific", "configuration"],
         "ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1",
                  "routes": [{"dst": "0.0.0.0/0"}]},
         "dns": {"nameservers": ["10.1.0.1"]}},
        {"type": "tuning", "capabilities": {"mac": True}, "sysctl": {"net.core.somaxconn": "500"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
# Appendix: "the runtime produces portmap and mac capability args, along with the
# generic argument "argA=foo"", and CNI_IFNAME=eth0.
CAPABILITY_ARGS = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                   "mac": "00:11:22:33:44:66"}

INTERFACES = [{"name": "cni0", "mac": "00:11:22:33:44:55"},
              {"name": "veth3243", "mac": "55:44:33:22:11:11"},
              {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}]
# Add example, 1): what bridge returns.
BRIDGE_RESULT = {"ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
                 "routes": [{"dst": "0.0.0.0/0"}], "interfaces": INTERFACES,
                 "dns": {"nameservers": ["10.1.0.1"]}}
# 2): what tuning returns, eth0's mac changed; 3): portmap returns it as it is, so it is
# the final result, the one CHECK and DEL get as prevResult.
FINAL_RESULT = copy.deepcopy(BRIDGE_RESULT)
FINAL_RESULT["interfaces"][2]["mac"] = "00:11:22:33:44:66"

# The execution configurations of the appendix, before prevResult. The spec's bridge
# request leaves out ipam.routes, which its section 1 configuration has; section 3 says
# every other field passes through unaltered, so the runtime passes it and so it is here.
BRIDGE_CONF = {"cniVersion": "1.0.0", "name": "dbnet", "type": "bridge", "bridge": "cni0",
               "keyA": ["some more", "plugin specific", "configuration"],
               "ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1",
                        "routes": [{"dst": "0.0.0.0/0"}]},
               "dns": {"nameservers": ["10.1.0.1"]}}
TUNING_CONF = {"cniVersion": "1.0.0", "name": "dbnet", "type": "tuning",
               "sysctl": {"net.core.somaxconn": "500"}, "runtimeConfig": {"mac": "00:11:22:33:44:66"}}
PORTMAP_CONF = {"cniVersion": "1.0.0", "name": "dbnet", "type": "portmap",
                "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}

ADD_EXAMPLE = [("bridge", "ADD", BRIDGE_CONF),
               ("tuning", "ADD", {**TUNING_CONF, "prevResult": BRIDGE_RESULT}),
               ("portmap", "ADD", {**PORTMAP_CONF, "prevResult": FINAL_RESULT})]
CHECK_EXAMPLE = [(name, "CHECK", {**conf, "prevResult": FINAL_RESULT})
                 for name, conf in (("bridge", BRIDGE_CONF), ("tuning", TUNING_CONF), ("portmap", PORTMAP_CONF))]
DELETE_EXAMPLE = [(name, "DEL", {**conf, "prevResult": FINAL_RESULT})
                  for name, conf in (("portmap", PORTMAP_CONF), ("tuning", TUNING_CONF), ("bridge", BRIDGE_CONF))]
# Section 5, "Error": the example error object.
ERROR = {"cniVersion": "1.0.0", "code": 7, "msg": "Invalid Configuration",
         "details": "Network 192.168.0.0/31 too small to allocate from."}

# --- fake plugins ---------------------------------------------------------------------

FAKE = """#!/bin/sh
# A fake CNI plugin: records its call, then does what the test set up for it.
log={log}
n=$(( $(cat "$log/n" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$log/n"
cat > "$log/$n.stdin"
env -0 > "$log/$n.env"
echo "{name} $CNI_COMMAND" >> "$log/calls"
say="$log/{name}.$CNI_COMMAND"
[ -f "$say.hang" ] && exec sleep 10
[ -f "$say.out" ] && cat "$say.out"
[ -f "$say.rc" ] && exit "$(cat "$say.rc")"
exit 0
"""


@dataclass
class Call:
    plugin: str
    command: str
    conf: dict
    env: dict  # the CNI_* variables only


class Plugins:
    """Fake plugins in a directory of their own (a CNI_PATH entry), and their calls."""

    def __init__(self, root: Path):
        self.bin = root / "plugins"
        self.log = root / "calls"
        self.bin.mkdir()
        self.log.mkdir()

    def make(self, name: str, directory: Path | None = None) -> Path:
        path = (directory or self.bin) / name
        path.write_text(FAKE.format(log=shlex.quote(str(self.log)), name=name))
        path.chmod(0o755)
        return path

    def say(self, name: str, command: str, out: dict | str | None = None, rc: int | None = None,
            hang: bool = False) -> None:
        """What plugin `name` prints and its exit status for CNI_COMMAND=command."""
        base = self.log / f"{name}.{command}"
        if out is not None:
            Path(f"{base}.out").write_text(out if isinstance(out, str) else json.dumps(out))
        if rc is not None:
            Path(f"{base}.rc").write_text(str(rc))
        if hang:
            Path(f"{base}.hang").touch()

    def calls(self) -> list[Call]:
        count = int((self.log / "n").read_text()) if (self.log / "n").exists() else 0
        names = (self.log / "calls").read_text().splitlines() if count else []
        out = []
        for n, line in enumerate(names, start=1):
            plugin, command = line.split()
            stdin = (self.log / f"{n}.stdin").read_text()
            env = dict(v.split("=", 1) for v in (self.log / f"{n}.env").read_text().split("\0") if v)
            out.append(Call(plugin, command, json.loads(stdin) if stdin else {},
                            {k: v for k, v in env.items() if k.startswith("CNI_")}))
        return out

    def exchanges(self) -> list[tuple[str, str, dict]]:
        return [(c.plugin, c.command, c.conf) for c in self.calls()]

    def names(self) -> list[str]:
        return [f"{c.plugin} {c.command}" for c in self.calls()]


@pytest.fixture
def plugins(tmp_path: Path) -> Plugins:
    """bridge, tuning and portmap answering ADD as the appendix says."""
    p = Plugins(tmp_path)
    for name in ("bridge", "tuning", "portmap"):
        p.make(name)
    p.say("bridge", "ADD", BRIDGE_RESULT)
    p.say("tuning", "ADD", FINAL_RESULT)
    p.say("portmap", "ADD", FINAL_RESULT)
    return p


@pytest.fixture
def netdir(tmp_path: Path) -> Path:
    """NETCONFPATH with the spec's example as 10-dbnet.conflist."""
    d = tmp_path / "net.d"
    d.mkdir()
    (d / "10-dbnet.conflist").write_text(json.dumps(EXAMPLE, indent=2))
    return d


@pytest.fixture
def netns(tmp_path: Path) -> Path:
    """Stands for /var/run/netns/blue: the runtime only needs it to exist."""
    path = tmp_path / "blue"
    path.touch()
    return path


@pytest.fixture
def runtime(plugins: Plugins, tmp_path: Path) -> Runtime:
    return Runtime(cni_path=str(plugins.bin), cache_dir=str(tmp_path / "cache"), timeout=5)


@pytest.fixture
def example(netdir: Path) -> cni.NetworkConfig:
    return cni.load_network(str(netdir), "dbnet")


def attachment(netns: Path, **kw) -> Attachment:
    return Attachment(**{"container_id": "example", "netns": str(netns), "ifname": "eth0",
                         "args": (("argA", "foo"),), "capability_args": CAPABILITY_ARGS, **kw})


def network(**fields) -> cni.NetworkConfig:
    """The example configuration with some top-level fields changed."""
    raw = json.dumps({**EXAMPLE, **fields}).encode()
    return cni.parse_config(raw, "test.conflist")


def cache_file(tmp_path: Path, name: str = "dbnet-example-eth0") -> Path:
    return tmp_path / "cache" / "results" / name


# --- ADD, CHECK, DEL as the appendix shows them ---------------------------------------

def test_add_runs_the_list_in_order_with_the_spec_s_execution_configurations(runtime, plugins, example, netns):
    assert runtime.add(example, attachment(netns)) == FINAL_RESULT
    assert plugins.exchanges() == ADD_EXAMPLE


def test_check_runs_the_list_in_order_with_the_cached_add_result(runtime, plugins, example, netns):
    runtime.add(example, attachment(netns))
    runtime.check(example, attachment(netns))
    assert plugins.exchanges()[3:] == CHECK_EXAMPLE


def test_del_runs_the_list_in_reverse_with_the_cached_add_result(runtime, plugins, example, netns):
    runtime.add(example, attachment(netns))
    runtime.delete(example, attachment(netns))
    assert plugins.exchanges()[3:] == DELETE_EXAMPLE


def test_each_plugin_gets_the_cni_environment(runtime, plugins, example, netns, monkeypatch):
    # The caller's own CNI_* variables are not the attachment's: they are replaced.
    monkeypatch.setenv("CNI_IFNAME", "wrong0")
    monkeypatch.setenv("CNI_COMMAND", "VERSION")
    two = attachment(netns, args=(("argA", "foo"), ("K2", "V2")))
    runtime.add(example, two)
    runtime.check(example, two)
    runtime.delete(example, two)
    expected = {"CNI_CONTAINERID": "example", "CNI_NETNS": str(netns), "CNI_IFNAME": "eth0",
                "CNI_ARGS": "argA=foo;K2=V2", "CNI_PATH": str(plugins.bin)}
    calls = plugins.calls()
    assert [c.env for c in calls] == [{"CNI_COMMAND": c.command, **expected} for c in calls]
    assert [c.command for c in calls] == ["ADD"] * 3 + ["CHECK"] * 3 + ["DEL"] * 3


def test_check_and_del_given_no_arguments_reuse_those_of_the_add(runtime, plugins, example, netns):
    """As cnitool's user may not repeat CAP_ARGS: a DEL without portMappings would leave
    portmap's rules behind, and CHECK must use the ADD's attachment parameters."""
    runtime.add(example, attachment(netns))
    bare = attachment(netns, args=(), capability_args={})
    runtime.check(example, bare)
    runtime.delete(example, bare)
    assert plugins.exchanges()[3:] == CHECK_EXAMPLE + DELETE_EXAMPLE
    assert {c.env["CNI_ARGS"] for c in plugins.calls()} == {"argA=foo"}
    # Arguments given win over the cached ones.
    runtime.add(example, attachment(netns))
    runtime.delete(example, attachment(netns, args=(("argB", "bar"),), capability_args={"mac": "02:00:00:00:00:09"}))
    dels = plugins.calls()[-3:]
    assert {c.env["CNI_ARGS"] for c in dels} == {"argB=bar"}
    assert [c.conf.get("runtimeConfig") for c in dels] == [None, {"mac": "02:00:00:00:00:09"}, None]


def test_only_capabilities_a_plugin_declares_reach_it_and_capabilities_never_do(runtime, plugins, netns):
    net = network(plugins=[
        {"type": "bridge", "capabilities": {"mac": True, "ips": False, "bandwidth": True}, "keep": 1},
        {"type": "tuning"},
        {"type": "portmap", "capabilities": {}},
    ])
    runtime.add(net, attachment(netns, capability_args={
        "mac": "02:00:00:00:00:01", "ips": ["10.1.0.9/16"], "portMappings": []}))
    confs = [c.conf for c in plugins.calls()]
    # declared and given: mac; declared false: ips; declared, not given: bandwidth
    assert confs[0]["runtimeConfig"] == {"mac": "02:00:00:00:00:01"}
    assert "runtimeConfig" not in confs[1] and "runtimeConfig" not in confs[2]
    assert not any("capabilities" in c for c in confs)
    assert confs[0]["keep"] == 1  # other keys pass through


def test_the_add_result_is_cached_as_libcni_caches_it_and_del_removes_it(runtime, example, netdir, netns, tmp_path):
    runtime.add(example, attachment(netns))
    path = cache_file(tmp_path)  # libcni: CacheDir/results/NETWORK-CONTAINERID-IFNAME
    cached = json.loads(path.read_text())
    assert cached == {
        "kind": "cniCacheV1", "containerId": "example",
        "config": base64.b64encode((netdir / "10-dbnet.conflist").read_bytes()).decode(),
        "ifName": "eth0", "networkName": "dbnet", "netns": str(netns),
        "cniArgs": [["argA", "foo"]], "capabilityArgs": CAPABILITY_ARGS, "result": FINAL_RESULT}
    assert path.stat().st_mode & 0o777 == 0o600
    assert runtime.cached_result(example, attachment(netns)) == FINAL_RESULT
    runtime.delete(example, attachment(netns))
    assert not path.exists()
    assert os.listdir(path.parent) == []


def test_a_second_add_of_one_attachment_is_refused_in_one_line(runtime, plugins, example, netns, tmp_path):
    runtime.add(example, attachment(netns))
    with pytest.raises(CNIError) as e:
        runtime.add(example, attachment(netns))
    assert str(e.value) == (f"container example already has eth0 on network 'dbnet' (its result is cached in "
                            f"{cache_file(tmp_path)}); DEL it before another ADD")
    assert len(plugins.calls()) == 3  # nothing ran
    # Another interface of the same container is another attachment (SPEC.md section 2).
    runtime.add(example, attachment(netns, ifname="eth1"))
    # After a DEL, the same attachment can be added again.
    runtime.delete(example, attachment(netns))
    runtime.add(example, attachment(netns))
    assert plugins.names()[-3:] == ["bridge ADD", "tuning ADD", "portmap ADD"]


def test_a_failed_add_is_undone_by_a_del_of_the_whole_list(runtime, plugins, example, netns, tmp_path):
    plugins.say("tuning", "ADD", ERROR, rc=1)
    with pytest.raises(CNIError) as e:
        runtime.add(example, attachment(netns))
    assert str(e.value) == ('plugin type="tuning" failed (add): error 7 (invalid network config): Invalid '
                            'Configuration; Network 192.168.0.0/31 too small to allocate from.; '
                            'DEL undid the attachment')
    assert plugins.names() == ["bridge ADD", "tuning ADD", "portmap DEL", "tuning DEL", "bridge DEL"]
    # There is no ADD result to give: the DELs get none.
    assert [c.conf for c in plugins.calls()[2:]] == [PORTMAP_CONF, TUNING_CONF, BRIDGE_CONF]
    assert not cache_file(tmp_path).exists()


def test_a_del_that_fails_after_a_failed_add_is_reported_too(runtime, plugins, example, netns, tmp_path):
    plugins.say("tuning", "ADD", ERROR, rc=1)
    plugins.say("bridge", "DEL", {"code": 11, "msg": "busy"}, rc=1)
    with pytest.raises(CNIError) as e:
        runtime.add(example, attachment(netns))
    assert str(e.value) == ('plugin type="tuning" failed (add): error 7 (invalid network config): Invalid '
                            'Configuration; Network 192.168.0.0/31 too small to allocate from.; the DEL that '
                            'followed failed too: plugin type="bridge" failed (del): error 11 (try again later): busy')
    assert not cache_file(tmp_path).exists()


def test_an_interrupt_between_two_plugins_is_undone_by_a_del(runtime, plugins, example, netns, tmp_path,
                                                              monkeypatch):
    real = cni.exec_plugin

    def interrupted(plugin, command, *args, **kwargs):
        if plugin["type"] == "tuning" and command == "ADD":
            raise KeyboardInterrupt
        return real(plugin, command, *args, **kwargs)

    monkeypatch.setattr(cni, "exec_plugin", interrupted)
    with pytest.raises(CNIError) as e:
        runtime.add(example, attachment(netns))
    assert str(e.value) == "interrupted; DEL undid the attachment"
    assert plugins.names() == ["bridge ADD", "portmap DEL", "tuning DEL", "bridge DEL"]
    assert not cache_file(tmp_path).exists()


def test_a_cache_with_malformed_cni_args_still_deletes(runtime, plugins, example, netns, tmp_path):
    runtime.add(example, attachment(netns))
    cached = json.loads(cache_file(tmp_path).read_text())
    cached["cniArgs"] = [7, ["argA"], ["argA", "foo"]]
    cache_file(tmp_path).write_text(json.dumps(cached))
    runtime.delete(example, attachment(netns))
    assert plugins.calls()[-1].env["CNI_ARGS"] == "argA=foo"
    assert not cache_file(tmp_path).exists()


def test_a_result_that_cannot_be_cached_undoes_the_add(plugins, example, netns, tmp_path):
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    runtime = Runtime(cni_path=str(plugins.bin), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(CNIError) as e:
        runtime.add(example, attachment(netns))
    assert str(e.value) == (f"cannot cache the result in {cache_file(tmp_path)}: Not a directory; "
                            "DEL undid the attachment")
    assert plugins.names()[3:] == ["portmap DEL", "tuning DEL", "bridge DEL"]


def test_a_container_id_too_long_for_a_cache_file_name_is_one_line(runtime, plugins, example, netns):
    runtime.add(example, attachment(netns, ifname="eth1"))  # the results directory exists
    with pytest.raises(CNIError, match=r"^cannot look up the cached result .*: File name too long$"):
        runtime.add(example, attachment(netns, container_id="a" * 300))
    with pytest.raises(CNIError, match=r"^cannot remove the cached result .*: File name too long$"):
        runtime.delete(example, attachment(netns, container_id="a" * 300))
    assert plugins.names()[3:] == ["portmap DEL", "tuning DEL", "bridge DEL"]


def test_check_without_an_add_is_refused(runtime, plugins, example, netns):
    with pytest.raises(CNIError, match=r"^no cached result for container example, eth0 on network 'dbnet': "):
        runtime.check(example, attachment(netns))
    assert plugins.calls() == []


def test_disable_check_makes_check_succeed_without_running_a_plugin(runtime, plugins, netns):
    net = network(disableCheck=True)
    runtime.check(net, attachment(netns))  # even before an ADD: "always return success"
    runtime.add(net, attachment(netns))
    runtime.check(net, attachment(netns))
    assert plugins.names() == ["bridge ADD", "tuning ADD", "portmap ADD"]


def test_check_is_refused_before_cni_version_0_4_0_and_del_gets_no_cached_result(runtime, plugins, netns):
    old = network(cniVersion="0.3.1")
    runtime.add(old, attachment(netns))
    with pytest.raises(CNIError) as e:
        runtime.check(old, attachment(netns))
    assert str(e.value) == "network 'dbnet' is cniVersion 0.3.1; CHECK exists since 0.4.0"
    runtime.delete(old, attachment(netns))
    assert plugins.names() == ["bridge ADD", "tuning ADD", "portmap ADD", "portmap DEL", "tuning DEL", "bridge DEL"]
    assert not any("prevResult" in c.conf for c in plugins.calls()[3:])
    # 0.4.0 has CHECK
    new = network(cniVersion="0.4.0")
    runtime.add(new, attachment(netns))
    runtime.check(new, attachment(netns))
    assert plugins.names()[-3:] == ["bridge CHECK", "tuning CHECK", "portmap CHECK"]


def test_a_second_del_succeeds_without_a_cached_result(runtime, plugins, example, netns):
    runtime.add(example, attachment(netns))
    runtime.delete(example, attachment(netns))
    runtime.delete(example, attachment(netns))
    assert [c.conf for c in plugins.calls()[6:]] == [PORTMAP_CONF, TUNING_CONF, BRIDGE_CONF]


# --- plugins that are missing or misbehave --------------------------------------------

def test_a_plugin_missing_from_cni_path_runs_nothing(runtime, plugins, example, netns, tmp_path):
    runtime.add(example, attachment(netns))
    (plugins.bin / "portmap").unlink()
    for op in (runtime.add, runtime.check, runtime.delete):
        with pytest.raises(CNIError) as e:
            op(example, attachment(netns, ifname="eth1") if op == runtime.add else attachment(netns))
        assert str(e.value) == f"plugin 'portmap' is not in CNI_PATH ({plugins.bin})"
    assert len(plugins.calls()) == 3  # the first ADD's
    assert cache_file(tmp_path).exists()  # the failed DEL kept it
    assert not cache_file(tmp_path, "dbnet-example-eth1").exists()


def test_a_configuration_naming_an_unknown_plugin_runs_nothing(runtime, plugins, netns, tmp_path):
    net = network(plugins=[EXAMPLE["plugins"][0], {"type": "flannel"}])
    with pytest.raises(CNIError) as e:
        runtime.add(net, attachment(netns))
    assert str(e.value) == f"plugin 'flannel' is not in CNI_PATH ({plugins.bin})"
    assert plugins.calls() == []
    assert not cache_file(tmp_path).exists()


def test_cni_path_is_searched_in_order_for_an_executable(plugins, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "bridge").write_text("not executable")
    found = plugins.make("bridge", second)
    tuning = plugins.make("tuning", first)
    plugins.make("tuning", second)
    assert cni.find_plugin("bridge", f"/nonexistent::{first}:{second}") == str(found)
    assert cni.find_plugin("tuning", f"{first}:{second}") == str(tuning)


@pytest.mark.parametrize("kind", ["../bridge", "/bin/sh", "", "."])
def test_a_plugin_type_is_a_name_not_a_path(plugins, kind):
    with pytest.raises(CNIError, match=r"^invalid plugin type "):
        cni.find_plugin(kind, str(plugins.bin))


@pytest.mark.parametrize("out, rc, message", [
    ("hello\nworld", 0, "its result is not JSON: hello; world"),
    ("[1, 2]", 0, "its result is not a JSON object"),
    ("", 0, "it printed no result"),
    ("boom\n", 1, "boom"),
    ("", 3, "exit status 3 and no error object"),
    (json.dumps({"code": 150, "msg": "two\nlines"}), 1, "error 150 (the plugin's own code): two; lines"),
    (json.dumps({"code": 42, "msg": "m", "details": "d"}), 2, "error 42: m; d"),
])
def test_a_misbehaving_plugin_is_one_line_and_undone(runtime, plugins, example, netns, tmp_path, out, rc, message):
    plugins.say("bridge", "ADD", out, rc=rc)
    with pytest.raises(CNIError) as e:
        runtime.add(example, attachment(netns))
    assert str(e.value) == f'plugin type="bridge" failed (add): {message}; DEL undid the attachment'
    assert plugins.names() == ["bridge ADD", "portmap DEL", "tuning DEL", "bridge DEL"]
    assert not cache_file(tmp_path).exists()


def test_a_plugin_that_hangs_is_stopped_after_the_time_limit(plugins, example, netns, tmp_path):
    runtime = Runtime(cni_path=str(plugins.bin), cache_dir=str(tmp_path / "cache"), timeout=0.2)
    plugins.say("tuning", "ADD", hang=True)
    started = time.monotonic()
    with pytest.raises(CNIError) as e:
        runtime.add(example, attachment(netns))
    assert time.monotonic() - started < 2
    assert str(e.value) == 'plugin type="tuning" failed (add): no answer within 0.2 s; DEL undid the attachment'
    assert plugins.names() == ["bridge ADD", "tuning ADD", "portmap DEL", "tuning DEL", "bridge DEL"]


@pytest.mark.parametrize("fields, message", [
    ({"container_id": ""}, "invalid container ID ''"),
    ({"container_id": "-a"}, "invalid container ID '-a'"),
    ({"container_id": "a/b"}, "invalid container ID 'a/b'"),
    ({"ifname": ""}, "invalid interface name ''"),
    ({"ifname": "x" * 16}, f"invalid interface name '{'x' * 16}'"),
    ({"ifname": "a b"}, "invalid interface name 'a b'"),
    ({"ifname": "a:b"}, "invalid interface name 'a:b'"),
    ({"ifname": ".."}, "invalid interface name '..'"),
])
def test_an_invalid_container_id_or_interface_name_runs_nothing(runtime, plugins, example, netns, fields, message):
    for op in (runtime.add, runtime.check, runtime.delete):
        with pytest.raises(CNIError, match=f"^{message}: "):
            op(example, attachment(netns, **fields))
    assert plugins.calls() == []


def test_add_into_a_netns_that_does_not_exist_runs_nothing(runtime, plugins, example, tmp_path):
    with pytest.raises(CNIError) as e:
        runtime.add(example, attachment(tmp_path / "gone"))
    assert str(e.value) == f"network namespace {tmp_path / 'gone'} does not exist"
    assert plugins.calls() == []


def test_version_asks_the_plugin(runtime, plugins):
    answer = {"cniVersion": "1.0.0", "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]}
    plugins.say("bridge", "VERSION", answer)
    assert runtime.version("bridge") == answer
    (call,) = plugins.calls()
    assert (call.command, call.conf) == ("VERSION", {"cniVersion": "1.0.0"})


# --- configurations -------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("{", "not JSON: "),
    ("[]", "a network configuration is a JSON object"),
    ('{"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}', '"name" must be a network name'),
    ('{"name": "-x", "cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}', '"name" must be a network name'),
    ('{"name": "n", "plugins": [{"type": "bridge"}]}', '"cniVersion" must be a version'),
    ('{"name": "n", "cniVersion": "1.0", "plugins": [{"type": "bridge"}]}', '"cniVersion" must be a version'),
    ('{"name": "n", "cniVersion": 1, "plugins": [{"type": "bridge"}]}', '"cniVersion" must be a version'),
    ('{"name": "n", "cniVersion": "1.0.0", "plugins": []}', '"plugins" must be a non-empty list'),
    ('{"name": "n", "cniVersion": "1.0.0", "plugins": [{"bridge": "cni0"}]}', 'plugin 1 needs a "type"'),
    ('{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "bridge"}, "x"]}', 'plugin 2 needs a "type"'),
    ('{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "../bridge"}]}', 'plugin 1 needs a "type"'),
    ('{"name": "n", "cniVersion": "1.0.0", "disableCheck": "yes", "plugins": [{"type": "b"}]}',
     '"disableCheck" must be true or false'),
    ('{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "b", "capabilities": ["mac"]}]}',
     'plugin 1: "capabilities" must map capability names to true or false'),
    ('{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "b", "capabilities": {"mac": "yes"}}]}',
     'plugin 1: "capabilities" must map capability names to true or false'),
])
def test_a_malformed_configuration_is_one_line_naming_the_file(text, message):
    with pytest.raises(CNIError) as e:
        cni.parse_config(text.encode(), "/etc/cni/net.d/10-x.conflist")
    assert str(e.value).startswith(f"/etc/cni/net.d/10-x.conflist: {message}")
    assert "\n" not in str(e.value)


def test_a_single_plugin_conf_is_a_list_of_one():
    net = cni.parse_config(b'{"cniVersion": "0.4.0", "name": "n", "type": "bridge", "bridge": "cni0"}', "x.conf")
    assert (net.name, net.cni_version, net.plugins) == ("n", "0.4.0", ({"type": "bridge", "bridge": "cni0"},))


def write_conf(directory: Path, filename: str, name: str, kind: str) -> None:
    if filename.endswith(".conflist"):
        data = {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": kind}]}
    else:
        data = {"cniVersion": "1.0.0", "name": name, "type": kind}
    (directory / filename).write_text(json.dumps(data))


def test_load_network_looks_at_conflists_first_then_conf_and_json_each_in_lexical_order(tmp_path):
    d = tmp_path / "net.d"
    d.mkdir()
    for filename, kind in [("0.conf", "zero-conf"), ("a.json", "a-json"), ("b.conf", "b-conf"),
                           ("c.conflist", "c-conflist"), ("b.conflist", "b-conflist"),
                           ("0.txt", "txt"), ("0.conf.bak", "bak")]:
        write_conf(d, filename, "net", kind)
    write_conf(d, "a.conflist", "other", "other")
    (d / "0.conflist").mkdir()  # a directory is not a configuration, whatever its name
    (d / "z.conflist").write_text("{ broken, and after the one named")

    def found() -> str:
        return cni.load_network(str(d), "net").plugins[0]["type"]

    assert found() == "b-conflist"
    (d / "z.conflist").unlink()
    (d / "b.conflist").unlink()
    assert found() == "c-conflist"
    (d / "c.conflist").unlink()
    assert found() == "zero-conf"
    (d / "0.conf").unlink()
    assert found() == "a-json"
    # A broken file before the one named is an error, as in libcni.
    (d / "0a.conflist").write_text("{")
    with pytest.raises(CNIError, match=rf"^{d / '0a.conflist'}: not JSON: "):
        found()
    with pytest.raises(CNIError) as e:
        cni.load_network(str(tmp_path / "none"), "net")
    assert str(e.value) == f"no network configuration directory {tmp_path / 'none'} (NETCONFPATH)"


def test_load_network_names_what_it_did_not_find(netdir):
    with pytest.raises(CNIError) as e:
        cni.load_network(str(netdir), "nosuch")
    assert str(e.value) == f"no network configuration named 'nosuch' in {netdir}"


def test_the_container_id_is_derived_from_the_netns_path_as_cnitool_derives_it():
    # cnitool/cmd/root.go: sha512.Sum512([]byte(netNS)), "cnitool-%x" of its first 10
    # bytes; here under this command's name. `printf %s /run/netns/pod-a | sha512sum`.
    assert cni.container_id_for("/run/netns/pod-a") == "deepdive-cni-64dcf65fe5bf5464f7e2"


@pytest.mark.parametrize("text, pairs", [
    ("", ()), ("argA=foo", (("argA", "foo"),)), ("K=V;K2=V2", (("K", "V"), ("K2", "V2"))),
])
def test_cni_args_are_pairs(text, pairs):
    assert cni.parse_args_env(text) == pairs


@pytest.mark.parametrize("text", ["K", "K=", "=V", "K=V=W", "K=V;X"])
def test_malformed_cni_args_are_refused(text):
    with pytest.raises(CNIError, match=r"^invalid CNI_ARGS pair '.*': pairs are KEY=VALUE, separated by ';'$"):
        cni.parse_args_env(text)


# --- the command ----------------------------------------------------------------------

@pytest.fixture
def cli(plugins, netdir, netns, tmp_path, monkeypatch, capsys):
    """main() with NETCONFPATH, CNI_PATH and a cache directory of the test's own;
    returns (status, stdout, stderr) of one call."""
    monkeypatch.setattr(cni, "Runtime", functools.partial(Runtime, cache_dir=str(tmp_path / "cache")))
    monkeypatch.setenv("NETCONFPATH", str(netdir))
    monkeypatch.setenv("CNI_PATH", str(plugins.bin))
    for name in ("CNI_IFNAME", "CNI_CONTAINERID", "CNI_ARGS", "CAP_ARGS"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            status = cni.main(list(argv))
        except SystemExit as exc:
            status = exc.code
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_cli_add_check_del_as_cnitool(cli, plugins, netns, tmp_path, monkeypatch):
    monkeypatch.setenv("CNI_ARGS", "argA=foo")
    monkeypatch.setenv("CAP_ARGS", json.dumps(CAPABILITY_ARGS))
    monkeypatch.setenv("CNI_CONTAINERID", "example")
    status, out, err = cli("add", "dbnet", str(netns))
    assert (status, err) == (0, "")
    assert json.loads(out) == FINAL_RESULT
    assert cli("check", "dbnet", str(netns)) == (0, "", "")
    assert cli("del", "dbnet", str(netns)) == (0, "", "")
    assert plugins.exchanges() == ADD_EXAMPLE + CHECK_EXAMPLE + DELETE_EXAMPLE
    assert cache_file(tmp_path).parent.is_dir() and not cache_file(tmp_path).exists()


def test_cli_derives_the_container_id_from_the_absolute_netns_path(cli, plugins, netns, tmp_path, monkeypatch):
    monkeypatch.chdir(netns.parent)
    monkeypatch.setenv("CNI_IFNAME", "net1")
    assert cli("add", "dbnet", netns.name)[0] == 0
    env = plugins.calls()[0].env
    assert env["CNI_NETNS"] == str(netns)
    assert env["CNI_CONTAINERID"] == cni.container_id_for(str(netns))
    assert env["CNI_IFNAME"] == "net1"
    assert cache_file(tmp_path, f"dbnet-{cni.container_id_for(str(netns))}-net1").exists()
    # -i wins over CNI_IFNAME
    assert cli("-i", "net2", "add", "dbnet", netns.name)[0] == 0
    assert plugins.calls()[-1].env["CNI_IFNAME"] == "net2"


def test_cli_version_prints_the_plugin_s_answer(cli, plugins):
    plugins.say("bridge", "VERSION", {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]})
    status, out, err = cli("version", "bridge")
    assert (status, json.loads(out), err) == (0, {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}, "")


def errors(netns: Path, tmp_path: Path) -> list[tuple[dict[str, str], list[str], str]]:
    """(environment, argv, what stderr says after "deepdive-cni: ") for each mistake."""
    ns = str(netns)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "10-dbnet.conflist").write_text('{"name": "dbnet", "cniVersion": "1.0.0", "plugins": [')
    return [
        ({}, ["add", "nosuch", ns], "no network configuration named 'nosuch' in "),
        ({"NETCONFPATH": str(broken)}, ["add", "dbnet", ns], f"{broken / '10-dbnet.conflist'}: not JSON: "),
        ({"NETCONFPATH": str(tmp_path / "none")}, ["add", "dbnet", ns], "no network configuration directory "),
        ({"CAP_ARGS": "{"}, ["add", "dbnet", ns], "CAP_ARGS is not JSON: "),
        ({"CAP_ARGS": "[1]"}, ["add", "dbnet", ns], "CAP_ARGS must be a JSON object"),
        ({"CNI_ARGS": "argA"}, ["add", "dbnet", ns], "invalid CNI_ARGS pair 'argA'"),
        ({"CNI_CONTAINERID": "-x"}, ["add", "dbnet", ns], "invalid container ID '-x'"),
        ({}, ["-i", "x" * 16, "add", "dbnet", ns], "invalid interface name"),
        ({}, ["add", "dbnet", str(tmp_path / "gone")], "network namespace "),
        ({}, ["check", "dbnet", ns], "no cached result for container "),
        ({"CNI_PATH": str(tmp_path)}, ["del", "dbnet", ns], "plugin 'bridge' is not in CNI_PATH"),
        ({}, ["version", "nosuch"], "plugin 'nosuch' is not in CNI_PATH"),
        ({}, ["version", "../plugins/bridge"], "invalid plugin type '../plugins/bridge'"),
    ]


def test_cli_errors_are_one_line_and_status_1(cli, plugins, netns, tmp_path, monkeypatch):
    for env, argv, message in errors(netns, tmp_path):
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            status, out, err = cli(*argv)
        assert (status, out) == (1, ""), (argv, err)
        assert err.startswith(f"deepdive-cni: {message}") and err.count("\n") == 1, (argv, err)
    assert plugins.calls() == []


def test_cli_a_plugin_s_error_is_one_line_and_status_1(cli, plugins, netns):
    plugins.say("bridge", "ADD", {"code": 7, "msg": "bad\nconfig"}, rc=1)
    status, out, err = cli("add", "dbnet", str(netns))
    assert (status, out) == (1, "")
    assert err == ('deepdive-cni: plugin type="bridge" failed (add): error 7 (invalid network config): '
                   'bad; config; DEL undid the attachment\n')


@pytest.mark.parametrize("argv", [[], ["add"], ["add", "dbnet"], ["add", "a", "b", "c"], ["frob"], ["-i"],
                                  ["version"], ["--nosuch", "add", "a", "b"]])
def test_cli_usage_errors_are_one_line_and_status_2(cli, plugins, argv):
    status, out, err = cli(*argv)
    assert (status, out) == (2, "")
    assert err.startswith("deepdive-cni: ") and err.count("\n") == 1, err
    assert "usage: deepdive-cni" in err
    assert plugins.calls() == []


def test_the_launcher_runs_the_command(plugins, tmp_path):
    plugins.say("bridge", "VERSION", {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]})
    env = dict(os.environ, CNI_PATH=str(plugins.bin))
    res = subprocess.run([str(ROOT / "bin" / "deepdive-cni"), "version", "bridge"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert (res.returncode, res.stderr) == (0, "")
    assert json.loads(res.stdout) == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}
