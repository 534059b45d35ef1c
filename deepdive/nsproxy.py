"""An HTTP proxy that listens inside another network namespace and connects out from this one.

Guests in a sealed network namespace (deepdive.sealedlibvirt) have no route out, and
giving them one would take a bridge or NAT rules in this machine's own namespace. This
proxy needs neither: its listening socket is made in the sealed namespace (a socket keeps
the namespace it was made in), and every connection it makes goes out from the caller's.
It speaks what apt, pip and npm send to an `http_proxy`/`https_proxy`: CONNECT host:port
(a tunnel, for HTTPS), and requests in absolute form (`GET http://host/path HTTP/1.1`),
passed on in origin form (`GET /path HTTP/1.1`) one per connection.

It runs in threads of the calling process, so it ends with it.
"""
from __future__ import annotations

import re
import socket
import threading
from urllib.parse import SplitResult, urlsplit

from deepdive.model import DeepDiveError
from deepdive.snapshot import opened_in

HEAD_LIMIT = 64 << 10  # bytes of request head read before giving up on a client
CONNECT_TIMEOUT = 30.0  # seconds to reach the origin server

def listen_in(netns: str, port: int) -> socket.socket:
    """A TCP socket listening on every address of network namespace `netns` (a path such
    as /proc/PID/ns/net), port `port`. Only the calling thread changes namespace, and
    only for the moment the socket is made (snapshot.opened_in)."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        return s

    try:
        with open(netns) as target, open("/proc/thread-self/ns/net") as home:
            return opened_in(target.fileno(), home.fileno(), make)
    except OSError as exc:
        raise DeepDiveError(f"the proxy cannot listen on port {port} in {netns}: "
                            f"{exc.strerror or exc}") from None


def serve(listener: socket.socket) -> threading.Thread:
    """Serve `listener` in a daemon thread until it is closed."""
    def accept_loop() -> None:
        while True:
            try:
                client, _addr = listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=_handle, args=(client,), daemon=True).start()

    t = threading.Thread(target=accept_loop, daemon=True)
    t.start()
    return t


def _handle(client: socket.socket) -> None:
    with client:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk or len(head) > HEAD_LIMIT:
                return
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        m = re.fullmatch(r"(\S+) (\S+) HTTP/1\.[01]", line)
        if not m:
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            return
        method, target = m.groups()
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            first = b""
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                return
            host, port, first = url.hostname, str(url.port or 80), _origin_form(head, url)
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT)
        except (OSError, ValueError):
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
            return
        with upstream:
            upstream.settimeout(None)
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                rest = head.split(b"\r\n\r\n", 1)[1]
                first = rest  # bytes the client sent after the CONNECT head
            if first:
                upstream.sendall(first)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join()


def _origin_form(head: bytes, url: SplitResult) -> bytes:
    """A request in absolute form, as the origin server expects it: `GET /path HTTP/1.1`,
    one request per connection (Connection: close; the client opens the next)."""
    first, _, rest = head.partition(b"\r\n")
    method, _target, version = first.split(b" ")
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    fields, _, body = rest.partition(b"\r\n\r\n")
    kept = [f for f in fields.split(b"\r\n")
            if f and not f.lower().startswith((b"connection:", b"proxy-connection:", b"keep-alive:"))]
    return b"\r\n".join([b" ".join([method, path.encode(), version]), *kept, b"Connection: close"]) + b"\r\n\r\n" + body


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy until end of file, then pass the end of file on."""
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
