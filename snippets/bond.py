"""bond: two links that act as one, for failover or for more bandwidth.

Run with `invoke lab.run --page bond`; the page is docs/interfaces/bond.md.
"""
import re
import threading
import time

from deepdive.model import Needs, Page, cmd
from deepdive.parse import answered, indexes
from deepdive.snapshot import find_link

page = Page(
    name="bond",
    title="bond: two links, one interface",
    nodes=("server", "switch"),
    needs=Needs(kinds=("bond", "veth", "bridge"), tools=("ping", "bridge", "tcpdump", "sleep")),
    ipv6=False,
)

PROC = "ip netns exec server cat /proc/net/bonding/bond1"
PING = "ip netns exec server ping -c 3 -i 0.2 -W 1 10.0.0.2"
FDB = "bridge -n switch fdb show br br0 dynamic"
# Each capture shows the echo requests that arrive from the server on one switch port.
CAPTURE = "ip netns exec switch tcpdump -i {port} --immediate-mode -n -t -l 'icmp[icmptype] == icmp-echo'"
# The first ARP request from the bond's MAC on sw1 once eth0 fails. Only requests: the
# switch's own ARP entry for 10.0.0.1, made when the server asked for 10.0.0.2 and used
# for its echo replies, is probed 5 s later, and the server's answer may come any time.
GRATUITOUS = ("ip netns exec switch tcpdump -c 1 -i sw1 -e --immediate-mode -n -t -l"
              " 'ether src 02:00:00:00:01:01 and arp[6:2] == 1'")
XOR_TARGETS = ("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5")

page.step(
    "switch", "A bridge in the switch namespace stands in for the switch",
    "ip -n switch link add br0 address 02:00:00:00:00:fe type bridge",
    "ip -n switch addr add 10.0.0.2/24 dev br0",
    "ip -n switch link set br0 up",
)
# The cables come before the bond: then the switch numbers its ends 3 and 4 (br0 is 2)
# and the server 2 and 3, so that `eth0@if3` shows the peer's index, not eth0's own.
page.step(
    "bond", "Cable two links to the switch, then create bond1 and give it both",
    *[c for i in (0, 1) for c in (
        f"ip link add eth{i} netns server address 02:00:00:00:01:0{i + 1} type veth"
        f" peer name sw{i} netns switch address 02:00:00:00:02:0{i + 1}",
        f"ip -n switch link set sw{i} master br0",
        f"ip -n switch link set sw{i} up",
    )],
    "ip -n server link add bond1 type bond mode active-backup miimon 100",
    "ip -n server link set eth0 master bond1",
    "ip -n server link set eth1 master bond1",
    "ip -n server addr add 10.0.0.1/24 dev bond1",
    "ip -n server link set bond1 up",
    snapshot=True,
)
page.step(
    "show", "Look at the bond",
    "ip -n server link show",
    "ip -n server -details link show bond1",
    PROC,
)
page.step(
    "ping", "Ping the switch through the bond",
    PING,
    FDB,
)
page.step(
    "failover", "Pull eth0's cable: the switch takes its end down",
    cmd(GRATUITOUS, background=True, ready="listening on", until="1 packet captured"),
    "ip -n switch link set sw0 down",
    "sleep 0.5",
    PROC,
    FDB,
    PING,
    snapshot=True,
)
page.step(
    "recover", "Plug it back in",
    "ip -n switch link set sw0 up",
    "sleep 0.5",
    PROC,
)
page.step(
    "primary", "Prefer eth0 whenever it is up",
    "ip -n server link set bond1 type bond primary eth0",
    PROC,
)
page.step(
    "release", "Change the mode: the bond has to go, and its slaves come out down",
    cmd("ip -n server link set bond1 type bond mode balance-xor", rc=2),
    "ip -n server link del bond1",
    "ip -n server link show eth1",
)
page.step(
    "enslave", "Create the new bond1, and try to give it eth1 while eth1 is up",
    "ip -n server link add bond1 type bond mode balance-xor xmit_hash_policy layer2+3 miimon 100",
    "ip -n server link set eth1 up",
    cmd("ip -n server link set eth1 master bond1", rc=2),
    "ip -n server link set eth1 down",
)
page.step(
    "xor", "Give bond1 both links, its address, and the switch more addresses",
    "ip -n server link set eth0 master bond1",
    "ip -n server link set eth1 master bond1",
    "ip -n server addr add 10.0.0.1/24 dev bond1",
    "ip -n server link set bond1 up",
    *[f"ip -n switch addr add {ip}/24 dev br0" for ip in XOR_TARGETS[1:]],
    PROC,
    snapshot=True,
)
page.step(
    "flows", "Ping four addresses and watch which link each one's packets take",
    cmd(CAPTURE.format(port="sw0"), background=True, ready="listening on"),
    cmd(CAPTURE.format(port="sw1"), background=True, ready="listening on"),
    *[f"ip netns exec server ping -c 2 -i 0.2 -W 1 {ip}" for ip in XOR_TARGETS],
)


def bonding(text: str) -> dict[str, dict[str, str]]:
    """/proc/net/bonding/<bond> as {"bond": {field: value}, "<slave>": {field: value}}."""
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("bond", {})
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Slave Interface":
            current = sections.setdefault(value, {})
        current[key] = value
    return sections


def ran(lab, text: str, step: str) -> bool:
    """Whether step `step` ran a command whose text contains `text`."""
    try:
        lab.result(text, step=step)
    except LookupError:
        return False
    return True


def proc(lab, step: str) -> dict[str, dict[str, str]]:
    return bonding(lab.output("/proc/net/bonding/bond1", step=step))


def proc_now(lab) -> dict[str, dict[str, str]]:
    """The bond's state right now, read by a probe."""
    return bonding(lab.run(PROC).stdout)


@page.check("bond", "eth0 and eth1 are slaves of bond1, a bond in active-backup mode")
def _(lab):
    snap = lab.snapshot
    bond = find_link(snap, "server", "bond1")
    return bond["kind"] == "bond" and bond["details"].get("mode") == "active-backup" and \
        all(find_link(snap, "server", f"eth{i}")["master"] == "bond1" for i in (0, 1))


@page.check("show", "bond1 took eth0's MAC address and gave it to eth1 too; eth1 keeps its own as `Permanent HW addr`")
def _(lab):
    shown = lab.output("-n server link show", step="show")
    p = proc(lab, "show")
    return shown.count("link/ether 02:00:00:00:01:01 ") == 3 and "02:00:00:00:01:02" not in shown and \
        p["eth1"]["Permanent HW addr"] == "02:00:00:00:01:02"


@page.check("show", "In `eth0@if3`, 3 is the index of eth0's peer sw0 in switch; eth0 itself is link 2 of server")
def _(lab):
    own, peer = lab.link("server", "eth0"), lab.link("switch", "sw0")
    return own["peer"] == {"node": "switch", "name": "sw0"} and own["index"] != peer["index"] and \
        indexes(lab.output("-n server link show", step="show"), "eth0") == (own["index"], peer["index"])


@page.check("show", "eth0 and eth1 are UP though no command of the page set them up: the bond opened them "
                    "when it took them")
def _(lab):
    shown = lab.output("-n server link show", step="show")
    flags = re.findall(r"^\d+: (eth[01])@if\d+: <([^>]*)>", shown, re.M)
    return sorted(flags) == [("eth0", "BROADCAST,MULTICAST,SLAVE,UP,LOWER_UP"),
                             ("eth1", "BROADCAST,MULTICAST,SLAVE,UP,LOWER_UP")] and \
        not any(ran(lab, f"link set {link} up", step) for link in ("eth0", "eth1")
                for step in ("nodes", "switch", "bond", "show"))


@page.check("show", "`ip -details` shows the bond's settings, and that it will send one gratuitous ARP "
                    "on a failover: `num_grat_arp 1`")
def _(lab):
    shown = lab.output("-details link show bond1", step="show")
    return "bond mode active-backup active_slave eth0 miimon 100 " in shown and " num_grat_arp 1 " in shown


@page.check("show", "eth0, the first slave, is the active one; both links are up")
def _(lab):
    p = proc(lab, "show")
    return p["bond"]["Currently Active Slave"] == "eth0" and \
        p["eth0"]["MII Status"] == "up" and p["eth1"]["MII Status"] == "up"


@page.check("ping", "Pings through the bond are answered, and the switch learned the bond's MAC on sw0 only")
def _(lab):
    fdb = lab.output(FDB, step="ping").splitlines()
    return answered(lab.output(PING, step="ping"), "10.0.0.2", 3) and \
        fdb == ["02:00:00:00:01:01 dev sw0 master br0 "]


@page.check("failover", "With sw0 down, miimon marked eth0 down and made eth1 the active slave")
def _(lab):
    p = proc(lab, "failover")
    return p["bond"]["Currently Active Slave"] == "eth1" and p["eth0"]["MII Status"] == "down" and \
        p["eth0"]["Link Failure Count"] == "1" and p["eth1"]["MII Status"] == "up"


@page.check("failover", "On becoming active, eth1 sent a gratuitous ARP: a broadcast from the bond's MAC "
                        "asking for the bond's own address 10.0.0.1")
def _(lab):
    seen = lab.output("tcpdump -c 1 -i sw1", step="failover").splitlines()
    return seen == ["02:00:00:00:01:01 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: "
                    "Request who-has 10.0.0.1 tell 10.0.0.1, length 28"]


@page.check("failover", "Before any ping, the switch already finds the bond's MAC behind sw1, where the "
                        "gratuitous ARP came in; pings then get through")
def _(lab):
    fdb = lab.output(FDB, step="failover").splitlines()
    return answered(lab.output(PING, step="failover"), "10.0.0.2", 3) and \
        fdb == ["02:00:00:00:01:01 dev sw1 master br0 "]


@page.check("recover", "eth0 is up again but stays the backup: eth1 remains active")
def _(lab):
    p = proc(lab, "recover")
    return p["eth0"]["MII Status"] == "up" and p["bond"]["Currently Active Slave"] == "eth1"


@page.check("primary", "With `primary eth0`, the bond switches back to eth0 at once")
def _(lab):
    p = proc(lab, "primary")
    return p["bond"]["Primary Slave"].startswith("eth0") and p["bond"]["Currently Active Slave"] == "eth0"


@page.check("primary", "A ping every 50 ms keeps getting answers while eth0 fails and comes back "
                       "(probe: 60 pings, sw0 down for one second in the middle; at most 5 lost)")
def _(lab):
    # A ping through a failover loses 0, 1 or 2 packets, depending on where in miimon's
    # 100 ms cycle the carrier drops, so its output cannot be a stable step of the page.
    # This probe runs it in a thread while the main thread takes sw0 down and up again;
    # with `primary eth0` the bond ends where it started (eth0 active, both links up).
    before = proc_now(lab)
    result = {}
    pinger = threading.Thread(target=lambda: result.setdefault(
        "ping", lab.run("ip netns exec server ping -D -c 60 -i 0.05 -W 1 10.0.0.2")))
    pinger.start()
    time.sleep(1.0)
    down = time.time()
    lab.run("ip -n switch link set sw0 down")
    time.sleep(1.0)
    up = time.time()
    lab.run("ip -n switch link set sw0 up")
    pinger.join(timeout=15)
    time.sleep(0.5)
    after = proc_now(lab)
    if "ping" not in result:
        return False
    replies = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] 64 bytes from", result["ping"].stdout, re.M)]
    during = [t for t in replies if down + 0.3 < t < up]
    later = [t for t in replies if t > up + 0.3]
    failures = int(after["eth0"]["Link Failure Count"]) - int(before["eth0"]["Link Failure Count"])
    return len(replies) >= 55 and len(during) >= 5 and len(later) >= 5 and failures == 1 and \
        after["bond"]["Currently Active Slave"] == "eth0"


@page.check("release", "The kernel refuses to change the mode of a bond that has slaves")
def _(lab):
    return "because the bond device has slaves" in lab.result("set bond1 type bond mode", step="release").stderr


@page.check("release", "Released from the bond, eth1 is down (no UP flag, `state DOWN`) and has its own MAC "
                       "address 02:00:00:00:01:02 again")
def _(lab):
    shown = lab.output("link show eth1", step="release")
    return re.search(r"^\d+: eth1@if\d+: <BROADCAST,MULTICAST> .* state DOWN ", shown, re.M) is not None and \
        "link/ether 02:00:00:00:01:02 " in shown and not lab.link("server", "eth1")["up"]


@page.check("enslave", "The bond refuses a link that is up: \"Device can not be enslaved while up\"")
def _(lab):
    refused = lab.result("set eth1 master bond1", step="enslave")
    return refused.rc == 2 and "Device can not be enslaved while up" in refused.stderr


@page.check("xor", "Taken down, eth1 joins bond1, and the bond opened it: eth1 is up again with no command "
                   "setting it up since")
def _(lab):
    eth1 = lab.link("server", "eth1")
    return eth1["up"] and eth1["master"] == "bond1" and not ran(lab, "link set eth1 up", "xor")


@page.check("xor", "bond1 is now in balance-xor mode with the layer2+3 hash, both links up and no single active one")
def _(lab):
    p = proc(lab, "xor")
    bond = lab.link("server", "bond1")
    return bond["details"].get("mode") == "balance-xor" and \
        p["bond"]["Transmit Hash Policy"] == "layer2+3 (2)" and \
        "Currently Active Slave" not in p["bond"] and \
        p["eth0"]["MII Status"] == "up" and p["eth1"]["MII Status"] == "up"


@page.check("flows", "Every ping is answered")
def _(lab):
    return all(answered(lab.output(f"ping -c 2 -i 0.2 -W 1 {ip}", step="flows"), ip, 2) for ip in XOR_TARGETS)


@page.check("flows", "Each destination's packets all take one link, and both links carry some destinations")
def _(lab):
    seen = {port: lab.output(f"tcpdump -i {port} ", step="flows") for port in ("sw0", "sw1")}
    where = {}
    for port, text in seen.items():
        for dst in re.findall(r"IP 10\.0\.0\.1 > (10\.0\.0\.\d+): ICMP echo request", text):
            where.setdefault(dst, set()).add(port)
    counts = {port: len(re.findall(r"ICMP echo request", text)) for port, text in seen.items()}
    return sorted(where) == sorted(XOR_TARGETS) and all(len(p) == 1 for p in where.values()) and \
        all(counts[p] > 0 for p in counts) and sum(counts.values()) == 2 * len(XOR_TARGETS)
