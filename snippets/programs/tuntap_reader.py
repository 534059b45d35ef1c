"""Attach to a tun or tap device and print what the kernel sends into it.

    python3 tuntap_reader.py --mode tun tun0
    python3 tuntap_reader.py --mode tap --answer 10.0.2.2 \\
        --mac 02:00:00:00:0a:02 tap0

`ip tuntap add tun0 mode tun` makes a persistent device; if no device of the
given name exists, attaching creates one that disappears when the program
exits. Every read returns one whole packet (tun: an IP packet) or frame (tap:
an Ethernet frame). The program prints its size and, on a tap, its Ethernet
header; then what it carries, decoded; then its first bytes in hex.

With --answer the program plays a host with that IPv4 address: it writes back
ICMP echo replies and, on a tap, ARP replies giving --mac as its MAC address.
What it writes, the kernel receives as if it had come off a wire.
Standard library only; stop it with Ctrl-C, or with --count.
"""
from __future__ import annotations

import argparse
import fcntl
import ipaddress
import os
import signal
import socket
import struct
import sys

TUNSETIFF = 0x400454CA  # ioctl: bind a file descriptor to a tun/tap device
IFF_TUN = 0x0001  # layer 3: IP packets
IFF_TAP = 0x0002  # layer 2: Ethernet frames
IFF_NO_PI = 0x1000  # no 4-byte "packet information" prefix on each packet
ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806  # ethertypes
SIOCGIFFLAGS = 0x8913  # ioctl: read an interface's flags
IFF_UP, IFF_RUNNING = 0x1, 0x40  # interface flags: up, and operational
RTMGRP_LINK, RTM_NEWLINK = 1, 16  # netlink: news about network interfaces
# Bytes shown in hex: on a tap the 14-byte Ethernet header, then (both modes)
# the first 4 bytes of the packet. Of an IP header, those are version and
# header length, type of service and total length; the next field, an
# identification number the kernel picks per packet, would differ per run.
HEX_BYTES = {"tun": 4, "tap": 14 + 4}


# --8<-- [start:attach]
def attach(device: str, mode: str) -> int:
    """Open the tun driver and bind the file descriptor to `device`."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    flags = (IFF_TUN if mode == "tun" else IFF_TAP) | IFF_NO_PI
    # struct ifreq: a 16-byte interface name, then a union whose first
    # member is the flags (a short); 40 bytes in all.
    ifreq = struct.pack("16sH22x", device.encode(), flags)
    fcntl.ioctl(fd, TUNSETIFF, ifreq)
    return fd
# --8<-- [end:attach]


def link_news() -> socket.socket:
    """A netlink socket on which the kernel announces interface changes."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                         socket.NETLINK_ROUTE)
    sock.bind((0, RTMGRP_LINK))
    return sock


def wait_running(news: socket.socket, device: str) -> None:
    """Wait until the kernel announces `device` running, if it is up.

    Attaching gives the device its carrier at once, but the kernel acts on it
    a moment later, in the background: it readies the device for sending
    (packets sent before that are dropped), tells a bridge that the port is
    usable, and then announces the change, which this waits for."""
    ifreq = struct.pack("16s24x", device.encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s, SIOCGIFFLAGS, ifreq)
    if not struct.unpack_from("16xH", ifreq)[0] & IFF_UP:
        return  # administratively down: the kernel sends nothing to it
    index = socket.if_nametoindex(device)
    news.settimeout(2)
    try:
        while True:
            data, offset = news.recv(65536), 0
            # Each message: a 16-byte header starting with its length and
            # type; for RTM_NEWLINK, then family, type, index and flags.
            while offset + 28 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == RTM_NEWLINK:
                    ifindex, flags = struct.unpack_from("=iI", data,
                                                        offset + 20)
                    if ifindex == index and flags & IFF_RUNNING:
                        return
                offset += (length + 3) & ~3
    except socket.timeout:
        pass  # carry on; at worst the first packets are lost


def mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def ip(b: bytes) -> str:
    return str(ipaddress.ip_address(b))


def describe_ip(pkt: bytes) -> str:
    """An IP packet: version, source > destination, protocol, ICMP fields."""
    version = pkt[0] >> 4
    if version == 6:
        return f"IPv6 {ip(pkt[8:24])} > {ip(pkt[24:40])}: next header {pkt[6]}"
    ihl = (pkt[0] & 0x0F) * 4  # the header length field counts 32-bit words
    proto, src, dst = pkt[9], ip(pkt[12:16]), ip(pkt[16:20])
    text = f"IPv{version} {src} > {dst}:"
    if proto != 1:
        return f"{text} protocol {proto}"
    icmp = pkt[ihl:]
    icmp_type, code, _sum, ident, seq = struct.unpack("!BBHHH", icmp[:8])
    if icmp_type not in (0, 8):
        return f"{text} ICMP type {icmp_type}, code {code}"
    what = "request" if icmp_type == 8 else "reply"
    return (f"{text} ICMP echo {what}, id {ident}, seq {seq},"
            f" length {len(icmp)}")


def describe_arp(arp: bytes) -> str:
    # Operation, sender MAC and IP, target IP. Skipped: the fixed fields that
    # say "Ethernet and IPv4, 6- and 4-byte addresses", and the target MAC.
    op, sha, spa, tpa = struct.unpack("!6xH6s4s6x4s", arp[:28])
    if op == 1:
        return f"ARP Request who-has {ip(tpa)} tell {ip(spa)}"
    return f"ARP Reply {ip(spa)} is-at {mac(sha)}"


def describe_frame(frame: bytes) -> tuple[str, str]:
    """An Ethernet frame's header, in wire order, and what it carries."""
    ethertype = struct.unpack("!H", frame[12:14])[0]
    header = f"dst {mac(frame[0:6])} src {mac(frame[6:12])}"
    header += f" type 0x{ethertype:04x}"
    payload = frame[14:]
    if ethertype == ETH_P_ARP:
        return header, describe_arp(payload)
    if ethertype == ETH_P_IP:
        return header, describe_ip(payload)
    return header, f"{len(payload)} bytes of payload"


def show(verb: str, data: bytes, mode: str) -> None:
    """Print size and link-layer header (a tun has none), then the payload."""
    if mode == "tun":
        print(f"{verb} {len(data)} bytes", flush=True)
        print(f"  {describe_ip(data)}", flush=True)
    else:
        header, payload = describe_frame(data)
        print(f"{verb} {len(data)} bytes: {header}", flush=True)
        print(f"  {payload}", flush=True)


def checksum(data: bytes) -> int:
    """The Internet checksum: ones' complement of the ones' complement sum
    of the data's 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# --8<-- [start:echo]
def echo_reply(pkt: bytes, me: bytes) -> bytes | None:
    """The reply to an IPv4 ICMP echo request for address `me`, else None."""
    if pkt[0] >> 4 != 4 or pkt[9] != 1 or pkt[16:20] != me:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    icmp = bytearray(pkt[ihl:])
    if icmp[0] != 8:
        return None
    icmp[0] = 0  # type 0, echo reply; id, sequence and data stay as they came
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", checksum(bytes(icmp)))
    # Swap source and destination. The header checksum is a sum of 16-bit
    # words, so swapping two of its fields leaves it valid.
    return pkt[:12] + pkt[16:20] + pkt[12:16] + pkt[20:ihl] + bytes(icmp)
# --8<-- [end:echo]


# --8<-- [start:arp]
def arp_reply(arp: bytes, me: bytes, my_mac: bytes) -> bytes | None:
    """The ARP reply to a request for address `me`, else None."""
    op, sha, spa, tpa = struct.unpack("!6xH6s4s6x4s", arp[:28])
    if op != 1 or tpa != me:
        return None
    # Ethernet (1) and IPv4 addresses, 6 and 4 bytes long; operation 2, a
    # reply: "me is at my_mac", addressed to the asker's MAC and IP.
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 2,
                       my_mac, me, sha, spa)
# --8<-- [end:arp]


def answer(data: bytes, mode: str, me: bytes, my_mac: bytes) -> bytes | None:
    """What a host at `me` would send back, or None."""
    if mode == "tun":
        return echo_reply(data, me)
    ethertype = struct.unpack("!H", data[12:14])[0]
    if ethertype == ETH_P_ARP:
        reply = arp_reply(data[14:], me, my_mac)
    elif ethertype == ETH_P_IP and data[0:6] == my_mac:
        reply = echo_reply(data[14:], me)
    else:
        reply = None
    if reply is None:
        return None
    # Back to the sender: its MAC address is the destination, ours the source.
    return data[6:12] + my_mac + data[12:14] + reply


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("device", help="the tun or tap device, e.g. tun0")
    parser.add_argument("--mode", choices=("tun", "tap"), required=True)
    parser.add_argument("--count", type=int, default=0,
                        help="exit after this many reads")
    parser.add_argument("--answer", metavar="IP",
                        help="answer pings (and ARP) for this IPv4 address")
    parser.add_argument("--mac", help="with --answer on a tap: our own MAC")
    args = parser.parse_args()
    if args.mode == "tap" and args.answer and not args.mac:
        parser.error("--answer on a tap needs --mac: on Ethernet, a host "
                     "has a MAC address")
    me = ipaddress.IPv4Address(args.answer).packed if args.answer else b""
    my_mac = bytes.fromhex(args.mac.replace(":", "")) if args.mac else b""

    # Stop on SIGINT even if our parent ignores it (shells do, for `&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    news = link_news()  # listening before attaching, to miss no news
    try:
        fd = attach(args.device, args.mode)
    except OSError as exc:  # e.g. EINVAL: the device is a tap, not a tun
        sys.exit(f"error: cannot attach to {args.device} in {args.mode} "
                 f"mode: {exc.strerror}")
    wait_running(news, args.device)
    news.close()
    ready = f"reading {args.device} (mode {args.mode})"
    if args.answer:
        ready += f", answering for {args.answer}"
        ready += f" at {args.mac}" if args.mode == "tap" else ""
    print(ready, flush=True)
    reads = 0
    try:
        while not args.count or reads < args.count:
            data = os.read(fd, 65536)  # one packet or frame per read
            reads += 1
            show("read", data, args.mode)
            shown = data[:HEX_BYTES[args.mode]]
            print("  " + " ".join(f"{x:02x}" for x in shown) + " ...",
                  flush=True)
            reply = answer(data, args.mode, me, my_mac) if me else None
            if reply:
                # Printed first: once written, the reply may end the ping, and
                # whoever stops us then has seen every line.
                show("write", reply, args.mode)
                os.write(fd, reply)
    except KeyboardInterrupt:  # Ctrl-C, or SIGINT from our parent: the end
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
