"""bash-cni: a CNI plugin written in bash, run by a container runtime for three pods.

Run with `invoke lab.run --page bash-cni`; the page is docs/pods/bash-cni.md. The plugin
is snippets/programs/bash-cni. The lab plays the container runtime's part: it creates
each pod's network namespace and runs CNI through deepdive-cni, as containerd does
through libcni when kubelet asks it for a pod sandbox.
"""
import hashlib
import json

from deepdive.cni import container_id_for
from deepdive.model import Needs, Page, cmd, write_file
from deepdive.parse import LEARNED_STATES, answered, indexes, inet6, link_local, neighbour

page = Page(
    name="bash-cni",
    title="A CNI plugin in bash",
    nodes=("pod-a", "pod-b", "pod-c"),
    needs=Needs(kinds=("bridge", "veth"), tools=("jq", "flock", "nsenter", "sha1sum", "ping", "install")),
)

PLUGIN = "/opt/cni/bin/bash-cni"
STORE = "/var/lib/cni/bash-cni"
BASHNET = {
    "cniVersion": "1.0.0",
    "name": "bashnet",
    "plugins": [{"type": "bash-cni", "bridge": "cni0", "subnet": "10.244.1.0/24", "dataDir": STORE}],
}
# A typo: "sbunet" for "subnet". The runtime passes unknown keys on; the plugin objects.
BROKEN = {
    "cniVersion": "1.0.0",
    "name": "broken",
    "plugins": [{"type": "bash-cni", "bridge": "cni0", "sbunet": "10.244.1.0/24", "dataDir": STORE}],
}
# Room for one pod: .0 is the network, .1 the gateway, .2 the pod, .3 the broadcast address.
TINY = {
    "cniVersion": "1.0.0",
    "name": "tiny",
    "plugins": [{"type": "bash-cni", "bridge": "cni1", "subnet": "10.244.9.0/30", "dataDir": STORE}],
}
# A trailing comma: not JSON. Given to the plugin directly, as a runtime would pass it.
MALFORMED = """{
  "cniVersion": "1.0.0",
  "name": "bashnet",
  "type": "bash-cni",
  "subnet": "10.244.1.0/24",
}
"""
DIRECT = ("env CNI_COMMAND=ADD CNI_CONTAINERID=pod-d CNI_NETNS=/run/netns/pod-d CNI_IFNAME=eth0"
          f" CNI_PATH=/opt/cni/bin {PLUGIN}")


def conflist(config: dict) -> str:
    return json.dumps(config, indent=2)


def pod_file(address: str, network: str = "bashnet") -> str:
    return f"{STORE}/{network}/{address}"


page.step(
    "install", "Install the plugin where the runtime looks for plugins",
    "mkdir -p /opt/cni/bin",
    f"install -m 755 snippets/programs/bash-cni {PLUGIN}",
    "deepdive-cni version bash-cni",
)
page.step(
    "config", "The node's network configuration",
    "mkdir -p /etc/cni/net.d",
    write_file("/etc/cni/net.d/10-bashnet.conflist", conflist(BASHNET)),
)
page.step(
    "add", "CNI ADD for pod-a",
    "deepdive-cni add bashnet /run/netns/pod-a",
)
page.step(
    "after-add", "What ADD made: the bridge, the veth pair, the pod's address and route, the store",
    "ip -4 addr show cni0",
    "ip link show master cni0",
    # Shown once the kernel's link-local address has passed duplicate address detection:
    # until then its line ends "scope link tentative ".
    cmd("ip -n pod-a addr show eth0", until="scope link \n"),
    "ip -n pod-a route",
    f"ls {STORE}/bashnet",
    f"cat {pod_file('10.244.1.2')}",
)
page.step(
    "pods", "Two more pods",
    "deepdive-cni add bashnet /run/netns/pod-b",
    "deepdive-cni add bashnet /run/netns/pod-c",
    "ip link show master cni0",
    f"ls {STORE}/bashnet",
    f"head {pod_file('10.244.1.2')} {pod_file('10.244.1.3')} {pod_file('10.244.1.4')}",
    snapshot=True,
)
page.step(
    "ping", "The pods reach each other and the node",
    "ip netns exec pod-a ping -c 2 -i 0.2 -W 1 10.244.1.3",
    "ip netns exec pod-a ping -c 2 -i 0.2 -W 1 10.244.1.4",
    "ip netns exec pod-c ping -c 2 -i 0.2 -W 1 10.244.1.1",
    # One address per command: the kernel lists a neighbour table in no fixed order.
    "ip -n pod-a neigh show 10.244.1.3",
    "ip -n pod-a neigh show 10.244.1.4",
)
page.step(
    "check", "CNI CHECK of pod-a as ADD left it",
    "deepdive-cni check bashnet /run/netns/pod-a",
)
page.step(
    "damage", "Something removes pod-a's default route; CHECK again",
    "ip -n pod-a route del default",
    cmd("deepdive-cni check bashnet /run/netns/pod-a", rc=1),
)
page.step(
    "repair", "The route back; CHECK again",
    "ip -n pod-a route add default via 10.244.1.1 dev eth0",
    "deepdive-cni check bashnet /run/netns/pod-a",
)
page.step(
    "errors", "A configuration with a mistake, and one that is not JSON",
    "ip netns add pod-d",
    write_file("/etc/cni/net.d/20-broken.conflist", conflist(BROKEN)),
    cmd("deepdive-cni add broken /run/netns/pod-d", rc=1),
    "ip -n pod-d link show",
    cmd(DIRECT, heredoc=MALFORMED, rc=1),
)
page.step(
    "exhausted", "A range with room for one pod",
    "ip netns add pod-e",
    write_file("/etc/cni/net.d/30-tiny.conflist", conflist(TINY)),
    "deepdive-cni add tiny /run/netns/pod-d",
    cmd("deepdive-cni add tiny /run/netns/pod-e", rc=1),
    f"ls {STORE}/tiny",
    "ip -n pod-e link show",
)
page.step(
    "del", "CNI DEL for pod-c, twice",
    "deepdive-cni del bashnet /run/netns/pod-c",
    "ip -n pod-c link show",
    "ip link show master cni0",
    f"ls {STORE}/bashnet",
    "deepdive-cni del bashnet /run/netns/pod-c",
    snapshot=True,
)


def result(lab, contains: str, step: str) -> dict:
    return json.loads(lab.output(contains, step=step))


def container(pod: str) -> str:
    """The container ID deepdive-cni gives a pod's attachment (derived from its netns path)."""
    return container_id_for(f"/run/netns/{pod}")


def host_veth(pod: str, network: str = "bashnet") -> str:
    """The host-side name the plugin derives: veth + 11 hex digits of a SHA-1."""
    digest = hashlib.sha1(f"{network}/{container(pod)}/eth0".encode()).hexdigest()
    return "veth" + digest[:11]


def error_line(lab, contains: str, step: str) -> str:
    return lab.result(contains, step=step).stderr


@page.check("install", "The runtime finds the plugin in /opt/cni/bin; asked VERSION, it speaks CNI 1.0.0")
def _(lab):
    return result(lab, "deepdive-cni version", "install") == {"cniVersion": "1.0.0",
                                                              "supportedVersions": ["1.0.0"]}


@page.check("add", "ADD's result lists cni0, the host-side veth and the pod's eth0 with its sandbox; "
                   "10.244.1.2/24 with gateway 10.244.1.1 belongs to interface 2, eth0; one default route")
def _(lab):
    res = result(lab, "add bashnet /run/netns/pod-a", "add")
    return (res["cniVersion"] == "1.0.0"
            and [i["name"] for i in res["interfaces"]] == ["cni0", host_veth("pod-a"), "eth0"]
            and res["interfaces"][2]["sandbox"] == "/run/netns/pod-a"
            and res["ips"] == [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 2}]
            and res["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}])


@page.check("add", "The result's MACs are the ones the kernel shows: cni0's and eth0's are 0a:58 and their "
                   "address's four bytes; the host-side veth's name and MAC come from one SHA-1 of the "
                   "network, container ID and interface name")
def _(lab):
    res = result(lab, "add bashnet /run/netns/pod-a", "add")
    digest = hashlib.sha1(f"bashnet/{container('pod-a')}/eth0".encode()).hexdigest()
    macs = [i["mac"] for i in res["interfaces"]]
    kernel = [lab.link("host", "cni0")["mac"], lab.link("host", host_veth("pod-a"))["mac"],
              lab.link("pod-a", "eth0")["mac"]]
    return (macs == kernel == ["0a:58:0a:f4:01:01", "02:" + ":".join(digest[i:i + 2] for i in range(0, 10, 2)),
                               "0a:58:0a:f4:01:02"])


@page.check("after-add", "cni0 is up with the gateway address; the host-side veth is its port, its peer in pod-a")
def _(lab):
    veth = lab.link("host", host_veth("pod-a"))
    cni0 = lab.link("host", "cni0")
    return (cni0["kind"] == "bridge" and cni0["up"] and cni0["addresses"] == ["10.244.1.1/24"]
            and veth["master"] == "cni0" and veth["peer"] == {"node": "pod-a", "name": "eth0"})


@page.check("after-add", "In pod-a, eth0 is up with 10.244.1.2/24 and the default route goes via 10.244.1.1")
def _(lab):
    eth0 = lab.link("pod-a", "eth0")
    return (eth0["up"] and eth0["addresses"] == ["10.244.1.2/24"]
            and "default via 10.244.1.1 dev eth0" in lab.output("ip -n pod-a route", step="after-add"))


@page.check("after-add", "`veth0425fffa0bf@if2`: 2 is eth0's index in pod-a; `eth0@if3`: 3 is the host "
                         "end's index in the node")
def _(lab):
    host, pod = lab.link("host", host_veth("pod-a"))["index"], lab.link("pod-a", "eth0")["index"]
    return (host != pod
            and indexes(lab.output("ip link show master cni0", step="after-add"), host_veth("pod-a")) == (host, pod)
            and indexes(lab.output("ip -n pod-a addr show eth0", step="after-add"), "eth0") == (pod, host))


@page.check("after-add", "eth0 also holds an IPv6 address ADD never asked for: the link-local address the "
                         "kernel made from its MAC (EUI-64), fe80::858:aff:fef4:102/64, past duplicate "
                         "address detection; ADD's result lists IPv4 only")
def _(lab):
    mac = lab.link("pod-a", "eth0")["mac"]
    res = result(lab, "add bashnet /run/netns/pod-a", "add")
    return (inet6(lab.output("ip -n pod-a addr show eth0", step="after-add"))
            == [f"{link_local(mac)}/64 scope link"] == ["fe80::858:aff:fef4:102/64 scope link"]
            and all(":" not in ip["address"] for ip in res["ips"]))


@page.check("after-add", "The store holds a file named 10.244.1.2 with the container ID and eth0, and the lock file")
def _(lab):
    return (lab.output(f"ls {STORE}/bashnet", step="after-add").split() == ["10.244.1.2", "lock"]
            and lab.output(f"cat {pod_file('10.244.1.2')}", step="after-add") == f"{container('pod-a')}\neth0\n")


@page.check("pods", "pod-b and pod-c got the next free addresses, 10.244.1.3 and 10.244.1.4, each with "
                    "its own file in the store; cni0 has three ports")
def _(lab):
    b = result(lab, "add bashnet /run/netns/pod-b", "pods")
    c = result(lab, "add bashnet /run/netns/pod-c", "pods")
    ports = [l["name"] for n in lab.snapshot["nodes"] if n["name"] == "host" for l in n["links"]
             if l["master"] == "cni0"]
    files = lab.output("head", step="pods")
    return (b["ips"][0]["address"] == "10.244.1.3/24" and c["ips"][0]["address"] == "10.244.1.4/24"
            and lab.output(f"ls {STORE}/bashnet", step="pods").split()
            == ["10.244.1.2", "10.244.1.3", "10.244.1.4", "lock"]
            and all(container(p) in files for p in ("pod-a", "pod-b", "pod-c"))
            and sorted(ports) == sorted(host_veth(p) for p in ("pod-a", "pod-b", "pod-c")))


@page.check("ping", "pod-a reaches pod-b and pod-c, and pod-c reaches the node's address on cni0")
def _(lab):
    return (answered(lab.output("pod-a ping -c 2 -i 0.2 -W 1 10.244.1.3"), "10.244.1.3", 2)
            and answered(lab.output("pod-a ping -c 2 -i 0.2 -W 1 10.244.1.4"), "10.244.1.4", 2)
            and answered(lab.output("pod-c ping -c 2 -i 0.2 -W 1 10.244.1.1"), "10.244.1.1", 2))


@page.check("ping", "pod-a learned its neighbours' MACs by ARP, and each MAC spells the neighbour's address")
def _(lab):
    return all(neighbour(lab.output(f"neigh show {address}", step="ping"), address) in
               [(mac, state) for state in LEARNED_STATES]
               for address, mac in (("10.244.1.3", "0a:58:0a:f4:01:03"), ("10.244.1.4", "0a:58:0a:f4:01:04")))


def silent_success(lab, step: str) -> bool:
    res = lab.result("deepdive-cni check", step=step)
    return (res.rc, res.stdout, res.stderr) == (0, "", "")


@page.check("check", "CHECK of the pod as added prints nothing and succeeds")
def _(lab):
    return silent_success(lab, "check")


@page.check("damage", "Without the default route, CHECK fails with the plugin's code 101, naming the route")
def _(lab):
    res = lab.result("deepdive-cni check", step="damage")
    return (res.rc == 1 and "error 101 (the plugin's own code): not as added; "
            "no route to default via 10.244.1.1" in res.stderr)


@page.check("repair", "With the route back, CHECK succeeds again")
def _(lab):
    return silent_success(lab, "repair")


@page.check("errors", "A configuration without subnet is refused with code 7, and the runtime's DEL leaves "
                      "pod-d as it was: only lo")
def _(lab):
    line = error_line(lab, "deepdive-cni add broken", "errors")
    links = lab.output("ip -n pod-d link show", step="errors")
    return ("error 7 (invalid network config): invalid network configuration; field subnet is missing" in line
            and "DEL undid the attachment" in line and links.count(": <") == 1 and "1: lo:" in links)


@page.check("errors", "Called directly with input that is not JSON, the plugin prints the error object "
                      "(cniVersion, code 6, msg, details) on standard output and exits with status 1")
def _(lab):
    res = lab.result(PLUGIN, step="errors")
    obj = json.loads(res.stdout)
    return (res.rc == 1 and list(obj) == ["cniVersion", "code", "msg", "details"]
            and obj["code"] == 6 and obj["details"].startswith("parse error:"))


@page.check("exhausted", "On 10.244.9.0/30 the first pod gets 10.244.9.2; the second gets code 100, and "
                         "nothing of it is left: the store has one address, pod-e only lo")
def _(lab):
    first = result(lab, "add tiny /run/netns/pod-d", "exhausted")
    line = error_line(lab, "add tiny /run/netns/pod-e", "exhausted")
    links = lab.output("ip -n pod-e link show", step="exhausted")
    return (first["ips"][0]["address"] == "10.244.9.2/30"
            and "error 100 (the plugin's own code): address range exhausted" in line
            and lab.output(f"ls {STORE}/tiny", step="exhausted").split() == ["10.244.9.2", "lock"]
            and links.count(": <") == 1)


@page.check("del", "DEL removed pod-c's eth0 and its host-side veth and released 10.244.1.4; cni0 and the "
                   "other pods stay; a second DEL succeeds too")
def _(lab):
    second = lab.result("deepdive-cni del", step="del")  # the latest of the two
    ports = sorted(l["name"] for n in lab.snapshot["nodes"] if n["name"] == "host" for l in n["links"]
                   if l["master"] == "cni0")
    return ((second.rc, second.stdout, second.stderr) == (0, "", "")
            and lab.output("ip -n pod-c link show", step="del").count(": <") == 1
            and ports == sorted(host_veth(p) for p in ("pod-a", "pod-b"))
            and lab.output(f"ls {STORE}/bashnet", step="del").split() == ["10.244.1.2", "10.244.1.3", "lock"])
