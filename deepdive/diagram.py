"""Diagrams of a lab's actual state, drawn from a snapshot (see `deepdive.snapshot`).

Each namespace is a cluster, each link a node (icon, name, addresses, kind and MAC),
veth pairs and port -> master relations are edges. The same graph, laid out by graphviz
twice with identical attributes except dpi, gives two files:

- `<page>-<step>.svg` for the site: icons inlined as `data:` URIs, no file-system paths;
- `<page>-<step>.png` for slides: exactly 1920x1080, labels sized for the back of a room.

The layout is sized for the 16:9 frame (`size` with `!`, `ratio=fill`, `viewport`):
graphviz spreads node positions to fill the frame and keeps the fonts at their size, as
long as the natural layout fits; a larger topology is scaled down as a whole.
"""
from __future__ import annotations

import base64
import html
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdive.capture import atomic_write
from deepdive.snapshot import HOST

WIDTH_PX, HEIGHT_PX = 1920, 1080
PNG_DPI = 100
# SVG is drawn at graphviz's native 72 dpi: graphviz 2.43 scales an SVG's content, but
# not its viewBox, by dpi/72, which crops the picture in a browser.
SVG_DPI = 72
MARGIN_IN = 0.3

# Point sizes; at PNG_DPI (1 pt = 1.39 px) 32 pt addresses are 44 px (em) on a 1920 px slide,
# unless a large topology makes graphviz scale the whole drawing down to fit.
FONT_ADDRESS = 32
FONT_NAME = 30
FONT_DETAIL = 22
FONT_CLUSTER = 34
FONT_EDGE = 24
ICON_PT = 80

TEXT = "#1F2933"
DETAIL = "#52606D"
WARN = "#B42318"

# (fill, border) per namespace: the root namespace neutral, the others distinct hues
# that read on a projector and on a white page alike.
HOST_COLOURS = ("#F2F4F7", "#475467")
NS_COLOURS = (
    ("#E3EEFC", "#1D5FBF"),
    ("#E4F5E9", "#1E7B45"),
    ("#FFF0DD", "#B8620B"),
    ("#F1E8FB", "#7A3FB5"),
    ("#E0F4F4", "#137373"),
    ("#FCE7EF", "#B0285E"),
)

# Edge attributes; diagrams' Edge sets its own small fontsize, so each edge sets its own.
VETH_EDGE = {"color": "#1F2933", "fontcolor": "#1F2933", "penwidth": "4",
             "fontsize": str(FONT_EDGE), "fontname": "Sans-Serif"}
MASTER_EDGE = {"color": "#667085", "fontcolor": "#475467", "penwidth": "3", "arrowsize": "1.4",
               "fontsize": str(FONT_EDGE), "fontname": "Sans-Serif"}


def _node_id(namespace: str, link_name: str) -> str:
    # "/" rather than ":", which graphviz would read as node:port in an edge. Fixed ids
    # (diagrams would pick random ones) keep the output byte-stable.
    return f"{namespace}/{link_name}"


@dataclass(frozen=True)
class _Link:
    node: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return _node_id(self.node, self.data["name"])


def render(page: str, step_id: str, snapshot: dict, out_dir: Path) -> list[Path]:
    """Write out_dir/f"{page}-{step_id}.svg" and out_dir/f"{page}-{step_id}.png"; return the two paths."""
    stem = f"{page}-{step_id}"
    outputs = {
        out_dir / f"{stem}.svg": _self_contained(_draw(snapshot, "svg", dpi=SVG_DPI), page),
        out_dir / f"{stem}.png": _draw(snapshot, "png", dpi=PNG_DPI),
    }
    for path, data in outputs.items():
        _write_if_changed(path, data)
    return list(outputs)


def _draw(snapshot: dict[str, Any], fmt: str, *, dpi: int) -> bytes:
    """Lay the snapshot out with graphviz and return the rendered file's bytes."""
    # Imported here: pages and the site import this module, only rendering needs graphviz.
    from diagrams import Diagram

    with tempfile.TemporaryDirectory(prefix="deepdive-diagram-") as tmp:
        base = Path(tmp) / "diagram"
        # show=False: never open a viewer. __exit__ renders and removes the dot source;
        # the temporary directory takes the rest.
        with Diagram(filename=str(base), outformat=[fmt], show=False, direction="TB",
                     graph_attr=_graph_attr(dpi),
                     node_attr={"fontname": "Sans-Serif", "fontcolor": TEXT}):
            nodes = _add_clusters(snapshot)
            _add_edges(snapshot, nodes)
        return base.with_suffix(f".{fmt}").read_bytes()


def _graph_attr(dpi: int) -> dict[str, str]:
    # The frame is 19.2x10.8 in: 1920x1080 px at PNG_DPI. The layout itself does not
    # depend on dpi, so the SVG and the PNG show the same picture.
    width_in, height_in = WIDTH_PX / PNG_DPI, HEIGHT_PX / PNG_DPI
    return {
        # A large drawing is scaled down into the frame less a margin; a small one keeps
        # its natural size (no "!"): a single interface blown up to fill a slide looks
        # like a poster. (graphviz's pad would count into size and shrink the fonts.)
        "size": f"{width_in - 2 * MARGIN_IN},{height_in - 2 * MARGIN_IN}",
        "ratio": "fill",
        "pad": "0",
        # The output canvas in points: exactly the frame, the drawing centred in it.
        "viewport": f"{width_in * 72},{height_in * 72}",
        "dpi": str(dpi),
        "margin": "0",
        "nodesep": "0.5",
        "ranksep": "1.0",
        "splines": "spline",  # ortho splines misplace edge labels
        "bgcolor": "white",
        "fontname": "Sans-Serif",
    }


def _links(snapshot: dict[str, Any]) -> dict[str, _Link]:
    return {_node_id(n["name"], l["name"]): _Link(n["name"], l)
            for n in snapshot["nodes"] for l in n["links"]}


def _colours(index: int, name: str) -> tuple[str, str]:
    if name == HOST:
        return HOST_COLOURS
    return NS_COLOURS[index % len(NS_COLOURS)]


def _cluster_label(name: str, border: str) -> str:
    text = f"{name} (root namespace)" if name == HOST else name
    return f'<<B><FONT POINT-SIZE="{FONT_CLUSTER}" COLOR="{border}">{html.escape(text)}</FONT></B>>'


def _add_clusters(snapshot: dict[str, Any]) -> dict[str, Any]:
    """One cluster per namespace; return the diagrams Node of each link by its id."""
    from diagrams import Cluster, Node

    nodes: dict[str, Node] = {}
    ns_index = 0
    for n in snapshot["nodes"]:
        fill, border = _colours(ns_index, n["name"])
        ns_index += n["name"] != HOST
        attrs = {"label": _cluster_label(n["name"], border), "bgcolor": fill,
                 "pencolor": border, "penwidth": "3", "margin": "24", "labeljust": "l"}
        with Cluster(n["name"], graph_attr=attrs):
            for link in n["links"]:
                node_id = _node_id(n["name"], link["name"])
                nodes[node_id] = Node(_node_label(link), nodeid=node_id,
                                      shape="plain", fixedsize="false")
            if not n["links"]:
                # A namespace with nothing but loopback is still part of the lab.
                Node("no links", nodeid=_node_id(n["name"], "(no links)"), shape="plaintext",
                     fixedsize="false", fontsize=str(FONT_DETAIL), fontcolor=DETAIL)
    return nodes


def _icon_classes() -> dict[str, type]:
    """The diagrams node class drawn for a kind of link; "" is every other kind."""
    from diagrams.azure.network import NetworkInterfaces
    from diagrams.onprem.network import CiscoSwitchL2

    return {"bridge": CiscoSwitchL2, "": NetworkInterfaces}


def _icon_path(cls: type) -> Path:
    """The same file diagrams' own Node._load_icon() hands graphviz as a node `image`."""
    import diagrams

    return Path(diagrams.__file__).resolve().parent.parent / cls._icon_dir / cls._icon


def _icon(kind: str) -> Path:
    classes = _icon_classes()
    return _icon_path(classes.get(kind, classes[""]))


def _node_label(link: dict[str, Any]) -> str:
    """HTML-like label: the icon on the left, the text rows beside it."""
    rows = _text_rows(link)
    icon = html.escape(str(_icon(link.get("kind") or "")), quote=True)
    cells = [f'<TR><TD ROWSPAN="{len(rows)}" FIXEDSIZE="TRUE" WIDTH="{ICON_PT}" HEIGHT="{ICON_PT}">'
             f'<IMG SRC="{icon}" SCALE="TRUE"/></TD><TD ALIGN="LEFT">{rows[0]}</TD></TR>']
    cells += [f'<TR><TD ALIGN="LEFT">{row}</TD></TR>' for row in rows[1:]]
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3">'
            + "".join(cells) + "</TABLE>>")


def _text_rows(link: dict[str, Any]) -> list[str]:
    """Name with kind (and state unless up), the addresses largest, then the MAC.

    The kind shares the name's row: the widest row sets the node's width, and narrower
    nodes let the whole layout, fonts included, be drawn larger in the frame."""
    e = html.escape
    name = f'<B><FONT POINT-SIZE="{FONT_NAME}">{e(link["name"])}</FONT></B>'
    if link.get("kind"):
        kind = " ".join([link["kind"], *(f"{k} {v}" for k, v in (link.get("details") or {}).items())])
        name += f'  <FONT POINT-SIZE="{FONT_DETAIL}" COLOR="{DETAIL}">{e(kind)}</FONT>'
    state = _state(link)
    if state:
        name += f'  <B><FONT POINT-SIZE="{FONT_DETAIL}" COLOR="{WARN}">{e(state)}</FONT></B>'
    rows = [name]
    addresses = link.get("addresses") or []
    rows += [f'<B><FONT POINT-SIZE="{FONT_ADDRESS}">{e(a)}</FONT></B>' for a in addresses]
    if not addresses:
        rows.append(f'<I><FONT POINT-SIZE="{FONT_DETAIL}" COLOR="{DETAIL}">no IP address</FONT></I>')
    if link.get("mac"):
        rows.append(f'<FONT POINT-SIZE="{FONT_DETAIL}" COLOR="{DETAIL}">{e(link["mac"])}</FONT>')
    return rows


def _state(link: dict[str, Any]) -> str:
    """What is wrong with a link, in `ip link` words; empty when it works."""
    if link.get("up") is False:
        return "DOWN"
    if link.get("carrier") is False:
        return "NO-CARRIER"
    return ""


def _add_edges(snapshot: dict[str, Any], nodes: dict[str, Any]) -> None:
    """veth pairs (once per pair, undirected) and port -> master arrows. An end that is
    not in the snapshot (a peer in an unlisted namespace) gets no edge."""
    from diagrams import Edge

    links = _links(snapshot)
    done: set[frozenset[str]] = set()
    for link in links.values():
        peer = link.data.get("peer")
        peer_id = _node_id(peer["node"], peer["name"]) if peer else None
        if peer_id in links and frozenset((link.id, peer_id)) not in done:
            done.add(frozenset((link.id, peer_id)))
            tail, head = _veth_order(link, links[peer_id])
            nodes[tail] - Edge(label=" veth pair ", **VETH_EDGE) - nodes[head]
        master = link.data.get("master")
        master_id = _node_id(link.node, master) if master else None
        if master_id in links:
            nodes[link.id] >> Edge(label=" master ", **MASTER_EDGE) >> nodes[master_id]
        parent = link.data.get("parent")
        parent_id = _node_id(parent["node"], parent["name"]) if parent else None
        if parent_id in links:
            nodes[link.id] >> Edge(label=" on top of ", **MASTER_EDGE) >> nodes[parent_id]


def _veth_order(a: _Link, b: _Link) -> tuple[str, str]:
    """Tail and head of a veth edge. Graphviz ranks heads below tails, so the end that is
    a bridge port, or else the one in the root namespace, goes down towards its master."""
    def weight(x: _Link) -> tuple[bool, bool]:
        return (bool(x.data.get("master")), x.node == HOST)
    return (b.id, a.id) if weight(a) > weight(b) else (a.id, b.id)


def _self_contained(svg: bytes, page: str) -> bytes:
    """Inline the icons (each once, as a data: URI) and say how the file is regenerated."""
    text = svg.decode()
    icons = {_icon_path(cls) for cls in _icon_classes().values()}  # all the SVG may name
    symbols: dict[Path, str] = {}  # icon file -> symbol id, in order of first use

    def use(match: re.Match[str]) -> str:
        attrs = dict(re.findall(r'([\w:-]+)="([^"]*)"', match.group(1)))
        path = Path(html.unescape(attrs.get("xlink:href", "")))
        if path not in icons:
            raise RuntimeError(f"diagram SVG references an unexpected image: {path}")
        symbol = symbols.setdefault(path, f"icon-{len(symbols)}")
        return (f'<use xlink:href="#{symbol}" x="{attrs["x"]}" y="{attrs["y"]}"'
                f' width="{attrs["width"]}" height="{attrs["height"]}"/>')

    # One <use> per node instead of a copy of the icon per node: the page loads less.
    text = re.sub(r"<image\b([^>]*)/>", use, text)
    defs = "".join(_symbol(path, symbol) for path, symbol in symbols.items())
    text = re.sub(r"(<svg\b[^>]*>\n)", lambda m: f"{m.group(1)}<defs>{defs}</defs>\n", text, count=1)
    return _mark_generated(text, page).encode()


def _symbol(path: Path, symbol: str) -> str:
    """An icon as a <symbol> scaled into each <use> box like graphviz scales images."""
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])  # PNG IHDR
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    return (f'<symbol id="{symbol}" viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet">'
            f'<image width="{width}" height="{height}" xlink:href="{uri}"/></symbol>')


def _mark_generated(svg: str, page: str) -> str:
    """Say which command regenerates the file. XML comments may not contain "--", so the
    comment names the task and a <metadata> element carries the exact command line."""
    safe_page = page.replace("--", "- -")  # page names may contain "-"
    note = (f"<!-- Generated by invoke lab.run for page {safe_page} from the lab's state snapshot."
            " Do not edit. -->\n")
    command = html.escape(f"Generated by `invoke lab.run --page {page}`. Do not edit.")
    # The comment goes after the XML declaration, which must come first.
    head, sep, rest = svg.partition("?>\n")
    svg = head + sep + note + rest if sep else note + svg
    return re.sub(r"(<svg\b[^>]*>\n)", lambda m: f"{m.group(1)}<metadata>{command}</metadata>\n",
                  svg, count=1)


def _write_if_changed(path: Path, data: bytes) -> None:
    """Leave an identical file alone, so a re-run does not touch committed diagrams."""
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    atomic_write(path, data)
