"""Diagrams of a lab's actual state, drawn from a snapshot (see `deepdive.snapshot`).

Each namespace is a cluster, each link a card (the glyph of its kind, name, addresses,
kind and MAC); veth pairs, port -> master, stacked -> parent, tunnels between vxlan ends
and the program behind a tun/tap are edges. A legend under the drawing lists the kinds
and edges it shows, and only those. The graph is written as graphviz dot and laid out
once per scheme with identical geometry, giving three files:

- `<page>-<step>.svg` and `<page>-<step>-dark.svg` for the site, cropped to the drawing
  (legible at page width), glyphs inlined as <symbol>s: no file-system paths;
- `<page>-<step>.png` for slides: exactly 1920x1080, the drawing centred at scale 1.

Text is measured and drawn with the font in deepdive/fonts/ only (see
`deepdive.diagram_fonts`), so a snapshot gives the same bytes on every machine with the
same graphviz. Each SVG records a digest of everything its drawing comes from (the
snapshot, page and step, this module, the glyphs, the font): `render` given the
published directory draws nothing when the published files carry the same digest.

Every diagram is drawn at ONE scale: graphviz never shrinks one to fit (no `size`), so
text is the same height on every slide (22 pt, 31 px at 100 dpi, or more). A topology is
laid out top-to-bottom or left-to-right, whichever fits the frame and fills it best; one
that fits neither is an error, not a smaller drawing.
"""
from __future__ import annotations

import hashlib
import html
import ipaddress
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from deepdive import diagram_fonts
from deepdive.capture import atomic_write
from deepdive.model import DeepDiveError
from deepdive.snapshot import HOST

WIDTH_PX, HEIGHT_PX = 1920, 1080
PNG_DPI = 100
# Frame and the room kept free around the drawing, in points (graphviz's unit, 1/72 in).
FRAME_PT = (WIDTH_PX * 72 / PNG_DPI, HEIGHT_PX * 72 / PNG_DPI)
MARGIN_PT = 12
# Layouts tried in order, the first that fits wins: (rankdir, compact, whole). Compact
# cards leave out the kind's words (the glyph and legend say it), MAC addresses and "no
# IP address", for the largest topologies. `whole`: a namespace cabled down into another
# is drawn wholly above it (see _stacking), else only its cable's end is.
LAYOUTS = tuple((d, c, w) for c in (False, True) for d in ("TB", "LR") for w in (True, False))

# Point sizes; at PNG_DPI 1 pt = 1.39 px, so the smallest text (22 pt) is 31 px (em) high
# on a 1920 px slide, and 22 px in the SVG at its natural size.
FONT_ADDRESS = 24
FONT_NAME = 22
FONT_DETAIL = 18
FONT_CLUSTER = 24
FONT_EDGE = 20
FONT_COMPACT = 20  # name and address on compact cards, still 28 px on a slide
GLYPH_PT = 44
LEGEND_GLYPH_PT = 28

GLYPHS = Path(__file__).parent / "glyphs"

# Colours per scheme. Light for white pages and projectors; dark matches Material's
# slate background, so the diagram is no bright card in dark mode.
LIGHT = {
    "bg": "#FFFFFF", "text": "#1F2933", "detail": "#52606D", "warn": "#B42318",
    "card": "#FFFFFF", "edge": "#1F2933", "soft_edge": "#667085", "good": "#15803D",
    "host": ("#F2F4F7", "#475467"),
    "ns": (("#E3EEFC", "#1D5FBF"), ("#E4F5E9", "#1E7B45"), ("#FFF0DD", "#B8620B"),
           ("#F1E8FB", "#7A3FB5"), ("#E0F4F4", "#137373"), ("#FCE7EF", "#B0285E")),
}
DARK = {
    "bg": "#1E2129", "text": "#E6E8EE", "detail": "#A9B1C1", "warn": "#FF8A80",
    "card": "#2A2E38", "edge": "#D0D5DD", "soft_edge": "#98A2B3", "good": "#4ADE80",
    "host": ("#262A33", "#98A2B3"),
    "ns": (("#1B2940", "#7FAEF5"), ("#1A3024", "#6FD39A"), ("#35281A", "#F2AE5C"),
           ("#2B2140", "#C29BF0"), ("#173232", "#5FD0D0"), ("#3A1F2B", "#F08BB3")),
}



def _same_shape(scheme: Any, colour: Any) -> Any:
    """`scheme` with every colour replaced by colour() (called in a fixed order)."""
    if isinstance(scheme, str):
        return colour()
    if isinstance(scheme, tuple):
        return tuple(_same_shape(v, colour) for v in scheme)
    return {k: _same_shape(v, colour) for k, v in scheme.items()}


def _colours(scheme: Any) -> list[str]:
    """Every colour of a scheme, in the order _same_shape visits them."""
    if isinstance(scheme, str):
        return [scheme]
    return [c for v in (scheme if isinstance(scheme, tuple) else scheme.values()) for c in _colours(v)]


# The scheme the graph is laid out with: a distinct colour per role, none of which
# graphviz or the glyphs use, replaced afterwards by the light or the dark one's (graphviz
# writes "#rrggbb" in lower case). Colours do not move anything, so one layout serves both.
_slot_numbers = iter(range(256))
SLOTS = _same_shape(LIGHT, lambda: f"#c0de{next(_slot_numbers):02x}")
_SLOT = re.compile(r"#c0de[0-9a-f]{2}")

# Glyph and legend words per kind of link; other kinds are drawn as a plain device.
KINDS = {
    "veth": "veth", "bridge": "bridge", "vlan": "vlan", "vxlan": "vxlan",
    "macvlan": "macvlan", "macvtap": "macvlan", "ipvlan": "ipvlan", "bond": "bond",
    "dummy": "dummy", "tun": "tun", "tap": "tap",
}
LEGEND = {
    "pod": "pod (namespace)", "node": "node (namespace)", "veth": "veth", "bridge": "bridge",
    "vlan": "vlan", "vxlan": "vxlan", "macvlan": "macvlan", "ipvlan": "ipvlan", "bond": "bond",
    "dummy": "dummy", "service": "Service ClusterIPs", "tun": "tun", "tap": "tap",
    "program": "program", "device": "other device",
    "edge-veth": "veth pair", "edge-master": "port of", "edge-active": "active port",
    "edge-backup": "backup port", "edge-parent": "on top of", "edge-tunnel": "tunnel",
    "edge-program": "reads, writes",
}
# Namespaces the Kubernetes pages name after what they stand for.
POD_NAME = re.compile(r"pod\b|pod[-\d]|cni-")
NODE_NAME = re.compile(r"node\b|node[-\d]")
SERVICE_LINK = "kube-ipvs0"  # the dummy kube-proxy's IPVS mode puts ClusterIPs on
LEGEND_COLUMNS = 6


@dataclass(frozen=True)
class _Link:
    node: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return _node_id(self.node, self.data["name"])


def _node_id(namespace: str, link_name: str) -> str:
    return f"{namespace}/{link_name}"


def render(page: str, step_id: str, snapshot: dict, out_dir: Path,
           published: Path | None = None) -> list[Path]:
    """Write out_dir/<page>-<step>.svg, <page>-<step>-dark.svg and <page>-<step>.png;
    return the three paths. When `published` (a directory) already holds all three and
    its SVGs carry this input's digest, write nothing and return []. Raises
    DeepDiveError when the topology does not fit a 1920x1080 frame at the common scale
    in any direction."""
    stem = f"{page}-{step_id}"
    digest = input_digest(page, step_id, snapshot)
    if published is not None and _drawn_from(published, stem) == digest:
        return []
    laid_out: dict[str, bytes] = {}  # dot source -> its SVG: each layout is run once
    layout = _layout(snapshot, stem, laid_out)
    titles = _title_places(snapshot, layout, laid_out)
    svg = _svg(_source(snapshot, layout, SLOTS, titles), laid_out)
    outputs = {
        out_dir / f"{stem}.svg": _self_contained(_recoloured(svg, LIGHT), page, digest),
        out_dir / f"{stem}-dark.svg": _self_contained(_recoloured(svg, DARK), page, digest),
        out_dir / f"{stem}.png": _dot(_source(snapshot, layout, LIGHT, titles, frame=True), "png"),
    }
    for path, data in outputs.items():
        _write_if_changed(path, data)
    return list(outputs)


def input_digest(page: str, step_id: str, snapshot: dict[str, Any]) -> str:
    """sha256 (hex) of everything a diagram is drawn from: page, step, the snapshot, and
    the files that draw it (this module, the glyphs, the font and its configuration)."""
    h = hashlib.sha256()
    h.update(json.dumps([page, step_id, snapshot], sort_keys=True).encode())
    for path in _drawing_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _drawing_files() -> list[Path]:
    return [Path(__file__), *sorted(GLYPHS.glob("*.svg")), *diagram_fonts.files()]


DIGEST_NOTE = re.compile(rb"<!-- Drawn from input sha256 ([0-9a-f]{64})\. -->")


def _drawn_from(published: Path, stem: str) -> str | None:
    """The input digest the published files of `stem` were drawn from, or None unless
    all three exist and both SVGs name the same one."""
    digests = set()
    for name in (f"{stem}.svg", f"{stem}-dark.svg"):
        try:
            with open(published / name, "rb") as f:
                m = DIGEST_NOTE.search(f.read(1024))
        except OSError:
            return None
        digests.add(m.group(1).decode() if m else None)
    if len(digests) != 1 or not (published / f"{stem}.png").is_file():
        return None
    return digests.pop()


def _recoloured(svg: bytes, scheme: dict[str, Any]) -> bytes:
    """An SVG laid out with SLOTS, in `scheme`'s colours."""
    colours = dict(zip(_colours(SLOTS), (c.lower() for c in _colours(scheme))))
    return _SLOT.sub(lambda m: colours[m.group(0)], svg.decode()).encode()


def _svg(source: str, laid_out: dict[str, bytes]) -> bytes:
    """dot's SVG of `source`, from `laid_out` if that source was laid out before."""
    if source not in laid_out:
        laid_out[source] = _dot(source, "svg")
    return laid_out[source]


def natural_size(svg: bytes | str) -> tuple[float, float]:
    """(width, height) in points of a graphviz SVG, from its root element."""
    text = svg.decode() if isinstance(svg, bytes) else svg
    m = re.search(r'<svg\b[^>]*\bwidth="([\d.]+)pt"[^>]*\bheight="([\d.]+)pt"', text)
    if not m:
        raise ValueError("not a graphviz SVG: no width/height in points")
    return float(m.group(1)), float(m.group(2))


def _layout(snapshot: dict[str, Any], stem: str, laid_out: dict[str, bytes]) -> tuple[str, bool, bool]:
    """The first of LAYOUTS whose natural size fits the frame and whose edges do not
    cross (top-to-bottom full cards where possible, so that most pages read alike); if
    every one that fits has crossings, the one with fewest."""
    room = (FRAME_PT[0] - 2 * MARGIN_PT, FRAME_PT[1] - 2 * MARGIN_PT)
    sizes = {}
    crossings: dict[tuple[str, bool, bool], int] = {}
    for layout in LAYOUTS:
        svg = _svg(_source(snapshot, layout, SLOTS), laid_out)
        w, h = sizes[layout] = natural_size(svg)
        if w <= room[0] and h <= room[1]:
            crossings[layout] = len(edge_crossings(svg))
            if not crossings[layout]:
                break
    if crossings:
        return min(crossings, key=crossings.get)  # the first of the fewest: dicts keep order
    shown = ", ".join(f"{d}{' compact' * c}{' stacked' * s} {w:.0f}x{h:.0f} pt"
                      for (d, c, s), (w, h) in sizes.items())
    raise DeepDiveError(f"diagram {stem} does not fit a {WIDTH_PX}x{HEIGHT_PX} slide at the common "
                        f"scale ({shown}; room {room[0]:.0f}x{room[1]:.0f} pt): split the step's "
                        "snapshot or make the topology smaller")


# Where a namespace's title may go (labelloc, labeljust), tried in this order.
TITLE_PLACES = (("t", "l"), ("b", "l"), ("t", "r"), ("b", "r"))


def _title_places(snapshot: dict[str, Any], layout: tuple[str, bool, bool],
                  laid_out: dict[str, bytes]) -> dict[str, tuple[str, str]]:
    """Namespace -> where its title goes: top left (the root namespace, drawn lowest,
    bottom left), moved to the next of TITLE_PLACES while an edge runs through it."""
    places = {n["name"]: TITLE_PLACES[1] if n["name"] == HOST else TITLE_PLACES[0] for n in snapshot["nodes"]}
    for _ in range(len(TITLE_PLACES)):
        crossed = {name for name, _edge in label_crossings(_svg(_source(snapshot, layout, SLOTS, places), laid_out))}
        if not crossed:
            break
        for name in crossed:
            places[name] = TITLE_PLACES[(TITLE_PLACES.index(places[name]) + 1) % len(TITLE_PLACES)]
    return places


def label_crossings(svg: bytes | str) -> list[tuple[str, str]]:
    """(namespace, edge) for each edge of a graphviz SVG drawn through a namespace's
    title. A title's box is estimated from its font size and length (0.62 em a
    character, generous for bold sans); an edge is sampled along its Bezier curves."""
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(svg)
    boxes = []
    for g in root.iter(f"{ns}g"):
        if g.get("class") == "cluster":
            name = g.findtext(f"{ns}title", "").removeprefix("cluster_")
            for t in g.iter(f"{ns}text"):
                size, x, y = float(t.get("font-size")), float(t.get("x")), float(t.get("y"))
                width = 0.62 * size * len("".join(t.itertext()))
                left = x - width if t.get("text-anchor") == "end" else x
                boxes.append((name, left, y - 0.8 * size, left + width, y + 0.2 * size))
    found = []
    for g in root.iter(f"{ns}g"):
        path = g.find(f"{ns}path")
        if g.get("class") != "edge" or path is None or path.get("stroke") == "transparent":
            continue
        points = _bezier_points(path.get("d", ""))
        for name, x0, y0, x1, y1 in boxes:
            if any(x0 < x < x1 and y0 < y < y1 for x, y in points):
                found.append((name, html.unescape(g.findtext(f"{ns}title", ""))))
    return sorted(set(found))


def edge_crossings(svg: bytes | str) -> list[tuple[str, str]]:
    """Pairs of edges of a graphviz SVG ("tail->head" each) that cross, leaving out
    pairs that share an end (they meet at a card, not across each other)."""
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    edges = []
    for g in ET.fromstring(svg).iter(f"{ns}g"):
        path = g.find(f"{ns}path")
        if g.get("class") == "edge" and path is not None and path.get("stroke") != "transparent":
            title = html.unescape(g.findtext(f"{ns}title", ""))
            edges.append((title, set(title.split("->")), _bezier_points(path.get("d", ""))))
    found = []
    for i, (t1, ends1, p1) in enumerate(edges):
        for t2, ends2, p2 in edges[i + 1:]:
            if not ends1 & ends2 and any(_segments_cross(a, b, c, d) for a, b in zip(p1, p1[1:])
                                          for c, d in zip(p2, p2[1:])):
                found.append((t1, t2))
    return found


def _segments_cross(a: tuple, b: tuple, c: tuple, d: tuple) -> bool:
    def side(p: tuple, q: tuple, r: tuple) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    # Touching counts (a curve through the other's sample point); lying on one line not.
    c_side, d_side = side(a, b, c), side(a, b, d)
    return (c_side * d_side <= 0 and side(c, d, a) * side(c, d, b) <= 0
            and (c_side, d_side) != (0, 0))


def _bezier_points(d: str, steps: int = 24) -> list[tuple[float, float]]:
    """Points along graphviz's path "M x,y C x1,y1 x2,y2 x3,y3 ..." (cubic pieces)."""
    nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)]
    pts = list(zip(nums[0::2], nums[1::2]))
    out = []
    for i in range(0, len(pts) - 3, 3):
        p0, p1, p2, p3 = pts[i:i + 4]
        for k in range(steps + 1):
            t = k / steps
            out.append(tuple((1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b + 3 * (1 - t) * t * t * c + t ** 3 * e
                             for a, b, c, e in zip(p0, p1, p2, p3)))
    return out


def _dot(source: str, fmt: str) -> bytes:
    """Run graphviz's dot on `source`, in a directory holding the glyphs it names as PNGs,
    seeing only our font; the directory lasts as long as the call, so no drawing leaves a
    file behind."""
    with tempfile.TemporaryDirectory(prefix="deepdive-glyphs-") as tmp:
        for name, png in _glyph_pngs().items():
            (Path(tmp) / f"{name}.png").write_bytes(png)
        try:
            done = subprocess.run(["dot", f"-T{fmt}"], input=source.encode(), capture_output=True,
                                  check=True, cwd=tmp, env=diagram_fonts.environ())
        except FileNotFoundError:
            raise DeepDiveError("graphviz's `dot` is not installed: `./setup.sh --lab` installs it") from None
        except subprocess.CalledProcessError as e:
            raise DeepDiveError(f"dot failed: {e.stderr.decode(errors='replace').strip()}") from None
    return done.stdout


@lru_cache(maxsize=1)
def _glyph_pngs() -> dict[str, bytes]:
    """Every glyph rasterised (graphviz's PNG output cannot read SVG), by name, 2x the size
    drawn, for a sharp slide. Rasterised once per process (0.3 s), kept in memory."""
    import cairosvg  # imported here: only rendering needs cairo

    size = GLYPH_PT * 2 * PNG_DPI // 72
    return {svg.stem: cairosvg.svg2png(url=str(svg), output_width=size, output_height=size)
            for svg in sorted(GLYPHS.glob("*.svg"))}


# --- the graph -------------------------------------------------------------------------

def _source(snapshot: dict[str, Any], layout: tuple[str, bool, bool], colours: dict[str, Any],
            titles: dict[str, tuple[str, str]] | None = None, *, frame: bool = False) -> str:
    """The graph in dot. `titles`: where each namespace's title goes (default: top left,
    the root namespace's bottom left). `frame`: the slide's canvas, exactly 1920x1080
    at scale 1."""
    direction, compact, whole = layout
    links = _links(snapshot)
    used: dict[str, str] = {}  # legend entry -> its words
    body = _clusters(snapshot, colours, used, compact, titles or {}) + _edges(snapshot, links, colours, used, whole)
    graph = {
        "rankdir": direction, "bgcolor": colours["bg"], "fontname": diagram_fonts.FAMILY,
        "fontcolor": colours["text"], "nodesep": "0.15" if compact else "0.3", "ranksep": "0.4" if compact else "0.6", "pad": "0.1",
        "margin": "0", "splines": "spline", "newrank": "true",
        "labelloc": "b", "labeljust": "c", "label": _legend(used, colours),
    }
    if frame:
        graph.update(dpi=str(PNG_DPI), viewport=f"{FRAME_PT[0]:.1f},{FRAME_PT[1]:.1f},1", pad="0")
    return ("digraph lab {\n"
            f"graph [{_attrs(graph)}];\n"
            f'node [shape=plain, fontname="{diagram_fonts.FAMILY}", fontcolor="{colours["text"]}", fontsize={FONT_DETAIL}];\n'
            f'edge [fontname="{diagram_fonts.FAMILY}", fontsize={FONT_EDGE}];\n'
            + "".join(body) + "}\n")


def _attrs(attrs: dict[str, str]) -> str:
    def value(v: str) -> str:
        return v if v.startswith("<") else '"' + v.replace('"', '\\"') + '"'
    return ", ".join(f"{k}={value(v)}" for k, v in attrs.items())


def _q(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _links(snapshot: dict[str, Any]) -> dict[str, _Link]:
    return {_node_id(n["name"], l["name"]): _Link(n["name"], l)
            for n in snapshot["nodes"] for l in n["links"]}


def namespace_role(name: str) -> str:
    """"pod" or "node" for a namespace the pages name after a Kubernetes object, else ""."""
    if POD_NAME.match(name):
        return "pod"
    if NODE_NAME.match(name):
        return "node"
    return ""


def link_glyph(link: dict[str, Any]) -> str:
    """The glyph a link is drawn with: its kind's, "service" for kube-ipvs0, else "device"."""
    if link.get("kind") == "dummy" and link["name"] == SERVICE_LINK:
        return "service"
    return KINDS.get(link.get("kind") or "", "device")


def _use(used: dict[str, str], entry: str, words: str = "") -> str:
    """Note a legend entry (its words from LEGEND unless given); return it."""
    if words or entry not in used:
        used[entry] = words or LEGEND[entry]
    return entry


def _img(glyph: str, size: int, extra: str = "") -> str:
    return (f'<TD FIXEDSIZE="TRUE" WIDTH="{size}" HEIGHT="{size}"{extra}>'
            f'<IMG SRC="{glyph}.png" SCALE="TRUE"/></TD>')


def _font(text: str, size: int, colour: str, bold: bool = False, italic: bool = False) -> str:
    t = html.escape(text)
    t = f"<B>{t}</B>" if bold else t
    t = f"<I>{t}</I>" if italic else t
    return f'<FONT POINT-SIZE="{size}" COLOR="{colour}">{t}</FONT>'


def _clusters(snapshot: dict[str, Any], colours: dict[str, Any], used: dict[str, str], compact: bool,
              titles: dict[str, tuple[str, str]]) -> list[str]:
    out = []
    ns_index = 0
    for n in snapshot["nodes"]:
        name = n["name"]
        fill, border = colours["host"] if name == HOST else colours["ns"][ns_index % len(colours["ns"])]
        ns_index += name != HOST
        role = namespace_role(name)
        text = f"{name} (root namespace)" if name == HOST else name
        title = _font(text, FONT_CLUSTER, border, bold=True)
        label = (f'<<TABLE BORDER="0" CELLSPACING="4" CELLPADDING="0"><TR>'
                 f'{_img(_use(used, role), 40) if role else ""}<TD>{title}</TD></TR></TABLE>>')
        # The root namespace is drawn last (lowest): its title goes under it, away from
        # the edges that come down into it.
        loc, just = titles.get(name) or (TITLE_PLACES[1] if name == HOST else TITLE_PLACES[0])
        attrs = {"label": label, "style": "filled,rounded", "fillcolor": fill, "color": border,
                 "penwidth": "3", "margin": "8" if compact else "12", "labeljust": just,
                 "labelloc": loc}
        rows = [f"subgraph {_q('cluster_' + name)} {{\ngraph [{_attrs(attrs)}];\n"]
        for link in n["links"]:
            rows.append(f"{_q(_node_id(name, link['name']))} [label={_card(link, colours, used, compact)}];\n")
            if link.get("program"):
                rows.append(f"{_q(_node_id(name, link['name']) + '/program')} "
                            f"[label={_program_card(link['program'], colours, used)}];\n")
        if not n["links"]:
            # A namespace with nothing but loopback is still part of the lab.
            rows.append(f"{_q(_node_id(name, '(no links)'))} [label={_q('no links')}, shape=plaintext, "
                        f'fontsize={FONT_DETAIL}, fontcolor="{colours["detail"]}"];\n')
        out.append("".join(rows) + "}\n")
    return out


def _card(link: dict[str, Any], colours: dict[str, Any], used: dict[str, str], compact: bool) -> str:
    """HTML-like label: a rounded card, the glyph on the left, the text rows beside it."""
    rows = _text_rows(link, colours, compact)
    glyph = _use(used, link_glyph(link))
    span = f' ROWSPAN="{len(rows)}"'
    cells = [f'<TR>{_img(glyph, GLYPH_PT, span)}'
             f'<TD ALIGN="LEFT">{rows[0]}</TD></TR>']
    cells += [f'<TR><TD ALIGN="LEFT">{row}</TD></TR>' for row in rows[1:]]
    return (f'<<TABLE BORDER="2" STYLE="ROUNDED" COLOR="{colours["detail"]}" BGCOLOR="{colours["card"]}" '
            'CELLBORDER="0" CELLSPACING="0" CELLPADDING="3">' + "".join(cells) + "</TABLE>>")


def _program_card(program: str, colours: dict[str, Any], used: dict[str, str]) -> str:
    glyph = _use(used, "program")
    return (f'<<TABLE BORDER="2" STYLE="ROUNDED" COLOR="{colours["detail"]}" BGCOLOR="{colours["card"]}" '
            f'CELLBORDER="0" CELLSPACING="2" CELLPADDING="4"><TR>{_img(glyph, GLYPH_PT)}'
            f'<TD ALIGN="LEFT">{_font(program, FONT_NAME, colours["text"], bold=True)}<BR/>'
            f'{_font("program, /dev/net/tun open", FONT_DETAIL, colours["detail"])}</TD></TR></TABLE>>')


def _text_rows(link: dict[str, Any], colours: dict[str, Any], compact: bool = False) -> list[str]:
    """Name with kind (and state unless up), the addresses largest, then the MAC; only
    name, state and addresses when `compact`."""
    name = _font(link["name"], FONT_COMPACT if compact else FONT_NAME, colours["text"], bold=True)
    if link.get("kind") and not compact:
        kind = " ".join([link["kind"], *(f"{k} {v}" for k, v in (link.get("details") or {}).items())])
        name += "  " + _font(kind, FONT_DETAIL, colours["detail"])
    state = _state(link)
    if state:
        name += "  " + _font(state, FONT_DETAIL, colours["warn"], bold=True)
    rows = [name]
    addresses = link.get("addresses") or []
    rows += [_font(a, FONT_COMPACT if compact else FONT_ADDRESS, colours["text"], bold=True) for a in addresses]
    if compact:
        return rows
    if not addresses:
        rows.append(_font("no IP address", FONT_DETAIL, colours["detail"], italic=True))
    if link.get("mac"):
        rows.append(_font(link["mac"], FONT_DETAIL, colours["detail"]))
    return rows


def _state(link: dict[str, Any]) -> str:
    """What is wrong with a link, in `ip link` words; empty when it works."""
    if link.get("up") is False:
        return "DOWN"
    if link.get("carrier") is False:
        return "NO-CARRIER"
    return ""


def _edges(snapshot: dict[str, Any], links: dict[str, _Link], colours: dict[str, Any],
           used: dict[str, str], whole: bool = True) -> list[str]:
    """veth pairs (once per pair, undirected), port -> master, stacked -> parent, vxlan
    tunnels and program -> tun/tap. An end not in the snapshot gets no edge."""
    out = []
    done: set[frozenset[str]] = set()

    def edge(tail: str, head: str, entry: str, **attrs: str) -> None:
        _use(used, entry)
        out.append(f"{_q(tail)} -> {_q(head)} [{_attrs(attrs)}];\n")

    for link in links.values():
        peer = link.data.get("peer")
        peer_id = _node_id(peer["node"], peer["name"]) if peer else None
        if peer_id in links and frozenset((link.id, peer_id)) not in done:
            done.add(frozenset((link.id, peer_id)))
            tail, head = _veth_order(link, links[peer_id])
            # A cable between two peers (neither a port nor in the root namespace) does
            # not rank one below the other: the two namespaces stand side by side.
            ranked = any(x.data.get("master") or x.node == HOST for x in (link, links[peer_id]))
            edge(tail, head, "edge-veth", dir="none", color=colours["edge"], penwidth="5",
                 constraint=str(ranked).lower())
        master = link.data.get("master")
        master_id = _node_id(link.node, master) if master else None
        if master_id in links:
            state = link.data.get("bond_state")
            # A bond is drawn above its ports, which lead on down to the switch (its
            # cables then pass outside it); a bridge below its ports.
            if links[master_id].data.get("kind") == "bond":
                ends = {"tail": master_id, "head": link.id, "dir": "back"}
            else:
                ends = {"tail": link.id, "head": master_id}
            if state == "backup":
                edge(**ends, entry="edge-backup", color=colours["soft_edge"], penwidth="3",
                     style="dashed", arrowsize="1.4", label=" backup ", fontcolor=colours["detail"])
            elif state == "active" and _has_backup(links, link.node, master):
                edge(**ends, entry="edge-active", color=colours["good"], penwidth="7",
                     arrowsize="1.2", label=" active ", fontcolor=colours["good"])
            else:
                edge(**ends, entry="edge-master", color=colours["soft_edge"], penwidth="3",
                     arrowsize="1.4")
        parent = link.data.get("parent")
        parent_id = _node_id(parent["node"], parent["name"]) if parent else None
        if parent_id in links:
            edge(link.id, parent_id, "edge-parent", color=colours["soft_edge"], penwidth="3",
                 style="dotted", arrowsize="1.4")
        if link.data.get("program"):
            edge(link.id + "/program", link.id, "edge-program", dir="both", color=colours["edge"],
                 penwidth="3", arrowsize="1.2")
    out += _stacking(out, links, whole)
    pairs = tunnels(snapshot)
    keys = [_tunnel_words(a) for a, _ in pairs]
    for (a, b), words in zip(pairs, keys):
        # A mesh of one overlay (flannel's) is named once, in the legend: a label per
        # edge would repeat it and widen the drawing.
        label = f" {words} " if keys.count(words) == 1 else ""
        if not label:
            _use(used, "edge-tunnel", f"tunnel, {words}")
        # Two parallel dashed lines, a pipe; constraint=false: the pipe does not pull the
        # two nodes' ranks apart, the underlay decides the layout.
        edge(a.id, b.id, "edge-tunnel", dir="none", constraint="false", style="dashed", penwidth="3",
             color=f'{colours["edge"]}:invis:{colours["edge"]}',
             label=label, fontcolor=colours["text"])
    return out


def _tunnel_words(link: _Link) -> str:
    d = link.data.get("details") or {}
    return f"VXLAN VNI {d.get('vni')}, UDP {d.get('dstport')}"


def _stacking(edges: list[str], links: dict[str, _Link], whole: bool) -> list[str]:
    """Invisible edges that put a namespace cabled down into another below it (a pod
    above its node, a server above its switch): from the cable's upper end, or if
    `whole` from every link of the upper namespace, to every link of the lower one.
    Side by side, dot would route cables across the upper namespace's own edges (a
    bond's ports to its master) or set a pod level with its node's links."""
    ranked = [(t, h) for t, h, attrs in (_parse_edge(e) for e in edges) if 'constraint="false"' not in attrs]
    heads = {h for _, h in ranked}
    out = set()
    for tail, head in ranked:
        if tail not in links or head not in links or links[tail].node == links[head].node:
            continue
        upper, lower = links[tail].node, links[head].node
        tails = [u.id for u in links.values() if u.node == upper] if whole else [tail]
        # Not whole: only the lower links nothing else ranks, which dot would otherwise
        # set level with the pod.
        lows = [l.id for l in links.values() if l.node == lower and (whole or l.id not in heads)]
        out |= {f'{_q(u)} -> {_q(l)} [style="invis"];\n' for u in tails for l in lows if u != l}
    return sorted(out)


def _parse_edge(line: str) -> tuple[str, str, str]:
    m = re.match(r'"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)" \[(.*)\];', line)
    return m.group(1), m.group(2), m.group(3)


def _has_backup(links: dict[str, _Link], node: str, master: str) -> bool:
    return any(l.node == node and l.data.get("master") == master and l.data.get("bond_state") == "backup"
               for l in links.values())


def tunnels(snapshot: dict[str, Any]) -> list[tuple[_Link, _Link]]:
    """Pairs of vxlan links in different namespaces that carry one overlay: same VNI and
    UDP port, and each one's unicast remote (if it has one) an address the other's
    namespace holds. Without a remote (flannel: the FDB is filled per peer) or with a
    multicast group, VNI and port decide."""
    vx = [l for l in _links(snapshot).values() if l.data.get("kind") == "vxlan"]
    held = {n["name"]: {a.split("/")[0] for l in n["links"] for a in l["addresses"]}
            for n in snapshot["nodes"]}

    def reaches(x: _Link, y: _Link) -> bool:
        remote = (x.data.get("vxlan") or {}).get("remote")
        return not remote or ipaddress.ip_address(remote).is_multicast or remote in held[y.node]

    def key(x: _Link) -> tuple:
        d = x.data.get("details") or {}
        return d.get("vni"), d.get("dstport")

    return [(a, b) for i, a in enumerate(vx) for b in vx[i + 1:]
            if a.node != b.node and key(a) == key(b) and reaches(a, b) and reaches(b, a)]


def _veth_order(a: _Link, b: _Link) -> tuple[str, str]:
    """Tail and head of a veth edge. Graphviz ranks heads below tails, so the end that is
    a bridge port (not a bond's, drawn below its bond), or else the one in the root
    namespace, goes down towards its master."""
    def weight(x: _Link) -> tuple[bool, bool]:
        return (bool(x.data.get("master")) and x.data.get("bond_state") is None, x.node == HOST)
    return (b.id, a.id) if weight(a) > weight(b) else (a.id, b.id)


def _legend(used: dict[str, str], colours: dict[str, Any]) -> str:
    """The graph's label: a table of the glyphs shown and their words, rows of at most
    LEGEND_COLUMNS entries, nodes' kinds first, then edges."""
    entries = sorted(used, key=lambda e: (e.startswith("edge-"), list(LEGEND).index(e)))
    cells = [f'{_img(e, LEGEND_GLYPH_PT)}<TD ALIGN="LEFT">{_font(used[e], FONT_DETAIL, colours["detail"])}'
             f'</TD><TD WIDTH="18"></TD>' for e in entries]
    rows = ["<TR>" + "".join(cells[i:i + LEGEND_COLUMNS]) + "</TR>"
            for i in range(0, len(cells), LEGEND_COLUMNS)]
    return f'<<TABLE BORDER="0" CELLSPACING="2" CELLPADDING="2">{"".join(rows)}</TABLE>>'


# --- files -----------------------------------------------------------------------------

def _self_contained(svg: bytes, page: str, digest: str) -> bytes:
    """Inline the glyphs (each once, as a vector <symbol>), name fallbacks for the font,
    and say how the file is regenerated and what it was drawn from."""
    text = svg.decode().replace(f'font-family="{diagram_fonts.FAMILY}"',
                                f'font-family="{diagram_fonts.CSS_FAMILY}"')
    symbols: dict[str, str] = {}  # glyph name -> symbol id, in order of first use

    def use(match: re.Match[str]) -> str:
        attrs = dict(re.findall(r'([\w:-]+)="([^"]*)"', match.group(1)))
        name = Path(html.unescape(attrs.get("xlink:href", ""))).stem
        if not (GLYPHS / f"{name}.svg").is_file():
            raise RuntimeError(f"diagram SVG references an unexpected image: {attrs.get('xlink:href')}")
        symbol = symbols.setdefault(name, f"glyph-{name}")
        return (f'<use xlink:href="#{symbol}" x="{attrs["x"]}" y="{attrs["y"]}"'
                f' width="{attrs["width"]}" height="{attrs["height"]}"/>')

    # One <use> per card instead of a copy of the glyph per card: the page loads less.
    text = re.sub(r"<image\b([^>]*)/>", use, text)
    defs = "".join(_symbol(name, symbol) for name, symbol in symbols.items())
    text = re.sub(r"(<svg\b[^>]*>\n)", lambda m: f"{m.group(1)}<defs>{defs}</defs>\n", text, count=1)
    return _mark_generated(text, page, digest).encode()


def _symbol(name: str, symbol: str) -> str:
    """A glyph file's drawing as a <symbol> (its viewBox kept, its size set by each <use>)."""
    glyph = (GLYPHS / f"{name}.svg").read_text()
    view_box = re.search(r'viewBox="([^"]+)"', glyph).group(1)
    inner = re.sub(r"^.*?<svg\b[^>]*>|</svg>\s*$", "", glyph, flags=re.S)
    return f'<symbol id="{symbol}" viewBox="{view_box}">{inner}</symbol>'


def _mark_generated(svg: str, page: str, digest: str) -> str:
    """Say which command regenerates the file and the digest of its input (DIGEST_NOTE,
    within the first 1024 bytes). XML comments may not contain "--", so the comment names
    the task and a <metadata> element carries the exact command line."""
    safe_page = page.replace("--", "- -")  # page names may contain "-"
    note = (f"<!-- Generated by invoke lab.run for page {safe_page} from the lab's state snapshot."
            f" Do not edit. -->\n<!-- Drawn from input sha256 {digest}. -->\n")
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
