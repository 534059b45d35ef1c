"""tun: a layer-3 interface whose other end is a program.

Run with `invoke lab.run --page tun`; the page is docs/interfaces/tun.md. The program
that plays the other end is snippets/programs/tuntap_reader.py.
"""
from deepdive.model import WHILE_RUNNING, Needs, Page, cmd
from deepdive.parse import answered, received, transmitted

page = Page(
    name="tun",
    title="tun: an IP interface with a program at the other end",
    needs=Needs(kinds=("tun",), tools=("ping", "python3")),
)

READER = "python3 snippets/programs/tuntap_reader.py --mode tun"

page.step(
    "create", "Create a persistent tun device",
    "ip tuntap add tun0 mode tun",
    "ip -details link show tun0",
)
page.step(
    "address", "Give it an address and bring it up",
    "sysctl -w net.ipv6.conf.tun0.disable_ipv6=1",
    "ip addr add 10.0.1.1/24 dev tun0",
    "ip link set tun0 up",
    "ip link show tun0",
    "ip route show dev tun0",
)
page.step(
    "read", "A program attaches to tun0 and reads what the kernel routes there",
    # The step ends once the program has printed the packet's last line, its first bytes.
    cmd(f"{READER} --count 1 tun0", background=True, ready="reading tun0", until="45 00 00 54 ..."),
    "ip link show tun0",
    cmd("ping -c 1 -W 0.3 10.0.1.2", rc=1),
)
page.step(
    "answer", "The program answers the pings",
    cmd(f"{READER} --answer 10.0.1.2 tun0", background=True, ready="reading tun0"),
    "ping -c 2 -i 0.2 -W 1 10.0.1.2",
    snapshot=WHILE_RUNNING,  # the program holding the device is in the diagram
)
page.step(
    "own", "A program that creates its device itself",
    cmd(f"{READER} tun1", background=True, ready="reading tun1"),
    "ip -details link show tun1",
)


def reader(lab, step: str) -> str:
    return lab.output("tuntap_reader.py", step=step)


@page.check("create", "tun0 is a tun device with no MAC address (`link/none`), created persistent")
def _(lab):
    shown = lab.output("-details link show tun0")
    link = lab.link("host", "tun0")
    return (link["kind"] == "tun" and link["mac"] is None and "link/none" in shown
            and "tun type tun pi off" in shown and "persist on" in shown)


@page.check("create", "A tun has no ARP: the kernel flags it POINTOPOINT and NOARP")
def _(lab):
    return "<POINTOPOINT,MULTICAST,NOARP>" in lab.output("-details link show tun0")


@page.check("address", "Up, but NO-CARRIER while no program has it open; its route is marked linkdown")
def _(lab):
    link = lab.link("host", "tun0")
    return (link["up"] and not link["carrier"] and "NO-CARRIER" in lab.output("link show tun0", step="address")
            and "10.0.1.0/24 proto kernel scope link src 10.0.1.1 linkdown" in lab.output("route show dev tun0"))


@page.check("read", "With the program attached, tun0 has its carrier: LOWER_UP, state UP")
def _(lab):
    shown = lab.output("link show tun0", step="read")
    return "LOWER_UP" in shown and "state UP" in shown and "NO-CARRIER" not in shown


@page.check("read", "The program read one 84-byte ICMP echo request from 10.0.1.1 to 10.0.1.2")
def _(lab):
    return "read 84 bytes\n  IPv4 10.0.1.1 > 10.0.1.2: ICMP echo request" in reader(lab, "read")


@page.check("read", "The packet starts with the IP header (0x45: version 4, 5 words); no Ethernet header comes first")
def _(lab):
    return "\n  45 00 00 54 ...\n" in reader(lab, "read")


@page.check("read", "Nothing answers the ping while the program only reads: it read the echo request and wrote nothing back")
def _(lab):
    ping = lab.output("ping -c 1", step="read")
    out = reader(lab, "read")
    return (transmitted(ping) == 1 and received(ping) == 0
            and out.count("ICMP echo request") == 1 and "write" not in out)


@page.check("answer", "With the program writing echo replies into tun0, both pings are answered")
def _(lab):
    out = reader(lab, "answer")
    return (answered(lab.output("ping -c 2", step="answer"), "10.0.1.2", 2)
            and out.count("ICMP echo request") == 2 and out.count("write 84 bytes") == 2)


@page.check("answer", "After the program has exited, tun0 still exists, without carrier")
def _(lab):
    link = lab.link("host", "tun0")
    return link["kind"] == "tun" and not link["carrier"]


@page.check("own", "Attaching to a name that did not exist created tun1, not persistent")
def _(lab):
    shown = lab.output("-details link show tun1")
    return "tun type tun pi off" in shown and "persist off" in shown


@page.check("own", "When its program exited, tun1 disappeared; tun0 stayed")
def _(lab):
    names = [l["name"] for n in lab.snapshot["nodes"] if n["name"] == "host" for l in n["links"]]
    return "tun1" not in names and "tun0" in names
