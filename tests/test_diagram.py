"""deepdive.diagram: render snapshot fixtures and check the files, and check every
committed diagram for what slides and pages need (scale, text size, frame, use)."""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from deepdive import diagram, diagram_fonts
from deepdive.model import DeepDiveError
from deepdive.snapshot import HOST

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DIAGRAMS = DOCS / "diagrams"
FIXTURE = Path(__file__).parent / "fixtures" / "snapshot_bridge.json"
SVG_NS = "{http://www.w3.org/2000/svg}"
PAGE, STEP = "bridge", "ports"
MIN_SLIDE_TEXT_PX = 24

pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def rendered(snapshot: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return diagram.render(PAGE, STEP, snapshot, tmp_path_factory.mktemp("diagrams"))


def _svg_root(path: Path) -> ET.Element:
    return ET.parse(path).getroot()  # raises if the SVG is not well-formed XML


def _texts(element: ET.Element) -> list[str]:
    return [" ".join("".join(t.itertext()).split()) for t in element.iter(f"{SVG_NS}text")]


def _groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG_NS}g") if g.get("class") == cls]


def _legend(path: Path) -> list[str]:
    """The legend's words: the texts drawn by the graph itself, outside any cluster, node
    or edge (graphviz draws the graph's label as direct children of the graph's group)."""
    graph = _groups(_svg_root(path), "graph")[0]
    return [" ".join("".join(t.itertext()).split()) for t in graph.findall(f"{SVG_NS}text")]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _all_links(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    return [link for node in snapshot["nodes"] for link in node["links"]]


def _link(name: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "mac": None, "mtu": 1500, "up": True, "carrier": True,
            "promisc": False, "master": None, "peer": None, "parent": None, "details": {},
            "addresses": [], **extra}


def _vxlan_pair(remote_of_b: str = "192.168.0.1") -> dict[str, Any]:
    """Two servers cabled by a veth pair, each with vx0 (VNI 100, UDP 4789) on its eth0."""
    def server(i: int, remote: str) -> dict[str, Any]:
        me, other = f"server{i}", f"server{3 - i}"
        return {"name": me, "links": [
            _link("eth0", "veth", addresses=[f"192.168.0.{i}/24"], peer={"node": other, "name": "eth0"}),
            _link("vx0", "vxlan", addresses=[f"10.0.0.{i}/24"], parent={"node": me, "name": "eth0"},
                  details={"vni": 100, "dstport": 4789}, vxlan={"local": None, "remote": remote})]}
    return {"nodes": [server(1, "192.168.0.2"), server(2, remote_of_b)]}


def _bond(tmp_path: Path) -> Path:
    snap = {"nodes": [{"name": "server", "links": [
        _link("eth0", "veth", master="bond1", bond_state="active"),
        _link("eth1", "veth", master="bond1", bond_state="backup"),
        _link("bond1", "bond", addresses=["10.0.0.1/24"], details={"mode": "active-backup"})]}]}
    return diagram.render("bond", "bond", snap, tmp_path)[0]


# --- one diagram, from a fixture -------------------------------------------------------

def test_writes_light_and_dark_svg_and_png_named_after_page_and_step(rendered: list[Path]) -> None:
    assert [p.name for p in rendered] == [f"{PAGE}-{STEP}.svg", f"{PAGE}-{STEP}-dark.svg", f"{PAGE}-{STEP}.png"]
    assert all(p.is_file() for p in rendered)


def test_svg_shows_every_interface_name_and_address(rendered: list[Path], snapshot: dict[str, Any]) -> None:
    texts = set(_texts(_svg_root(rendered[0])))
    for link in _all_links(snapshot):
        assert link["name"] in texts
        for address in link["addresses"]:
            assert address in texts


def test_every_namespace_is_a_labelled_cluster(rendered: list[Path], snapshot: dict[str, Any]) -> None:
    labels = [" ".join(_texts(g)) for g in _groups(_svg_root(rendered[0]), "cluster")]
    assert len(labels) == len(snapshot["nodes"])
    for node in snapshot["nodes"]:
        assert any(node["name"] in label for label in labels), (node["name"], labels)
    if any(node["name"] == HOST for node in snapshot["nodes"]):
        assert any("root namespace" in label for label in labels)


def test_edges_for_veth_pairs_and_masters(rendered: list[Path], snapshot: dict[str, Any]) -> None:
    links = _all_links(snapshot)
    pairs = {frozenset({(n["name"], l["name"]), (l["peer"]["node"], l["peer"]["name"])})
             for n in snapshot["nodes"] for l in n["links"] if l["peer"]}
    masters = sum(1 for l in links if l["master"])
    edges = _groups(_svg_root(rendered[0]), "edge")
    drawn = [g for g in edges if g.find(f"{SVG_NS}path") is not None
             and g.find(f"{SVG_NS}path").get("stroke") != "transparent"]
    assert len(drawn) == len(pairs) + masters


def test_legend_lists_exactly_the_kinds_and_edges_shown(rendered: list[Path]) -> None:
    # The fixture: a bridge with veth ports and a tap, two namespaces that are not pods.
    assert sorted(_legend(rendered[0])) == sorted(["bridge", "veth", "tap", "veth pair", "port of"])


def test_every_link_kind_has_its_own_glyph_in_one_style() -> None:
    glyphs = {kind: diagram.link_glyph(_link("x", kind)) for kind in
              ("veth", "bridge", "vlan", "vxlan", "macvlan", "ipvlan", "bond", "dummy", "tun", "tap")}
    glyphs["Service"] = diagram.link_glyph(_link("kube-ipvs0", "dummy"))
    glyphs["pod"], glyphs["node"] = diagram.namespace_role("pod-a"), diagram.namespace_role("node1")
    glyphs["tunnel"] = "edge-tunnel"
    assert len(set(glyphs.values())) == len(glyphs), glyphs
    sources = {g: (diagram.GLYPHS / f"{g}.svg").read_text() for g in glyphs.values()}
    assert len(set(sources.values())) == len(sources)  # no two drawn alike
    for g, svg in sources.items():
        assert 'viewBox="0 0 48 48"' in svg and 'rx="10"' in svg, g  # one frame, one style
        assert g in diagram.LEGEND
        assert diagram._glyph_pngs()[g].startswith(b"\x89PNG")  # what the PNG slide uses


def test_kubernetes_objects_get_their_glyphs(tmp_path: Path) -> None:
    snap = {"nodes": [
        {"name": "node1", "links": [_link("kube-ipvs0", "dummy", addresses=["10.96.0.10/32"]),
                                    _link("veth-a", "veth", peer={"node": "pod-a", "name": "eth0"})]},
        {"name": "pod-a", "links": [_link("eth0", "veth", peer={"node": "node1", "name": "veth-a"})]}]}
    svg = diagram.render("k", "k", snap, tmp_path)[0]
    assert {"pod (namespace)", "node (namespace)", "Service ClusterIPs"} <= set(_legend(svg))
    assert "dummy" not in _legend(svg)
    uses = {u.get("{http://www.w3.org/1999/xlink}href") for u in _svg_root(svg).iter(f"{SVG_NS}use")}
    assert {"#glyph-pod", "#glyph-node", "#glyph-service"} <= uses


def test_vxlan_ends_that_belong_together_are_a_labelled_tunnel(tmp_path: Path) -> None:
    svg = diagram.render("vxlan", "tunnel", _vxlan_pair(), tmp_path)[0]
    assert "VXLAN VNI 100, UDP 4789" in _texts(_svg_root(svg))
    assert "tunnel" in _legend(svg)
    assert [(a.id, b.id) for a, b in diagram.tunnels(_vxlan_pair())] == [("server1/vx0", "server2/vx0")]


def test_vxlan_ends_aimed_elsewhere_are_no_tunnel(tmp_path: Path) -> None:
    snap = _vxlan_pair(remote_of_b="192.168.0.99")  # server2's vx0 sends to nobody here
    assert diagram.tunnels(snap) == []
    svg = diagram.render("vxlan", "tunnel", snap, tmp_path)[0]
    assert "tunnel" not in _legend(svg)


def test_a_mesh_of_one_overlay_is_named_once_in_the_legend() -> None:
    snap = _vxlan_pair(remote_of_b="")
    snap["nodes"][0]["links"][1]["vxlan"]["remote"] = None
    third = copy.deepcopy(snap["nodes"][1])
    third["name"] = "server3"
    third["links"][1]["parent"] = {"node": "server3", "name": "eth0"}
    snap["nodes"].append(third)
    assert len(diagram.tunnels(snap)) == 3  # flannel: no remote, VNI and port decide
    dot = diagram._source(snap, ("TB", False, True), diagram.LIGHT)
    assert "tunnel, VXLAN VNI 100, UDP 4789" in dot
    assert 'label=" VXLAN' not in dot


def test_the_program_behind_a_tun_is_drawn(tmp_path: Path) -> None:
    snap = {"nodes": [{"name": HOST, "links": [
        _link("tun0", "tun", addresses=["10.0.1.1/24"], program="tuntap_reader.py")]}]}
    svg = diagram.render("tun", "answer", snap, tmp_path)[0]
    assert "tuntap_reader.py" in _texts(_svg_root(svg))
    assert {"tun", "program", "reads, writes"} <= set(_legend(svg))
    assert "veth pair" not in _legend(svg)


def test_the_active_port_of_a_bond_is_drawn_apart_from_the_backup(tmp_path: Path) -> None:
    svg = _bond(tmp_path)
    texts = _texts(_svg_root(svg))
    assert "active" in texts and "backup" in texts
    assert {"active port", "backup port"} <= set(_legend(svg))
    styles = {" ".join(_texts(g)): g.find(f"{SVG_NS}path").get("stroke-dasharray")
              for g in _groups(_svg_root(svg), "edge")}
    assert styles["active"] is None and styles["backup"]  # solid and dashed


def test_dark_svg_has_a_dark_background_and_light_text(rendered: list[Path]) -> None:
    def luminance(colour: str) -> float:
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
    for path, dark in ((rendered[0], False), (rendered[1], True)):
        graph = _groups(_svg_root(path), "graph")[0]
        background = graph.find(f"{SVG_NS}polygon").get("fill")
        names = [t for t in graph.iter(f"{SVG_NS}text") if t.text == "veth1h"]
        assert (luminance(background) < 0.2) == dark, (path.name, background)
        assert (luminance(names[0].get("fill")) > 0.7) == dark, path.name


def test_svg_is_self_contained(rendered: list[Path]) -> None:
    for svg in rendered[:2]:
        text = svg.read_text()
        assert '<symbol id="glyph-bridge"' in text
        assert "deepdive-glyphs" not in text and "/tmp" not in text and "/root" not in text
        for element in _svg_root(svg).iter():
            for name, value in element.attrib.items():
                if name.endswith("href"):
                    assert value.startswith("#"), value


def test_svg_says_how_it_is_regenerated(rendered: list[Path]) -> None:
    text = rendered[0].read_text()
    assert f"invoke lab.run --page {PAGE}" in text
    assert "Do not edit" in text.split("<svg", 1)[0]  # a comment before the drawing


def test_png_is_a_1920x1080_slide(rendered: list[Path]) -> None:
    assert _png_size(rendered[2]) == (1920, 1080)


def test_a_topology_too_large_for_the_slide_is_an_error(tmp_path: Path) -> None:
    snap = {"nodes": [{"name": f"ns{i}", "links": [_link(f"eth{j}", "veth", addresses=["10.0.0.1/24"])
                                                   for j in range(8)]} for i in range(8)]}
    with pytest.raises(DeepDiveError, match="does not fit a 1920x1080 slide"):
        diagram.render("big", "all", snap, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_second_render_leaves_files_untouched(snapshot: dict[str, Any], tmp_path: Path) -> None:
    first = diagram.render(PAGE, STEP, snapshot, tmp_path)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in first}
    second = diagram.render(PAGE, STEP, copy.deepcopy(snapshot), tmp_path)
    assert second == first
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in second} == before


def test_changed_snapshot_rewrites_the_files(snapshot: dict[str, Any], tmp_path: Path) -> None:
    svg = diagram.render(PAGE, STEP, snapshot, tmp_path)[0]
    changed = copy.deepcopy(snapshot)
    link = _all_links(changed)[0]
    link["addresses"] = [*link["addresses"], "192.0.2.99/32"]
    diagram.render(PAGE, STEP, changed, tmp_path)
    assert "192.0.2.99/32" in _texts(_svg_root(svg))


def test_namespace_without_links_still_appears(snapshot: dict[str, Any], tmp_path: Path) -> None:
    names = {node["name"] for node in snapshot["nodes"]}
    empty = next(f"ns{i}" for i in range(100) if f"ns{i}" not in names)
    with_empty = copy.deepcopy(snapshot)
    with_empty["nodes"].append({"name": empty, "links": []})
    svg, _dark, png = diagram.render(PAGE, STEP, with_empty, tmp_path)
    clusters = [" ".join(_texts(g)) for g in _groups(_svg_root(svg), "cluster")]
    assert empty in clusters
    assert "no links" in _texts(_svg_root(svg))
    assert _png_size(png) == (1920, 1080)


# --- every committed diagram -----------------------------------------------------------

COMMITTED = sorted(DIAGRAMS.glob("*.svg"))


def _diagram_calls() -> set[tuple[str, str]]:
    calls = set()
    for md in DOCS.rglob("*.md"):
        calls |= set(re.findall(r'\{\{\s*diagram\(\s*"([^"]+)"\s*,\s*"([^"]+)"', md.read_text()))
    return calls


def test_every_diagram_file_is_used_by_a_page_and_every_call_has_its_files() -> None:
    stems = {f"{page}-{step}" for page, step in _diagram_calls()}
    files = {p.name for p in DIAGRAMS.iterdir()}
    expected = {f"{s}{suffix}" for s in stems for suffix in (".svg", "-dark.svg", ".png")}
    assert files - expected == set(), "drawn but shown on no page"
    assert expected - files == set(), "shown on a page but not drawn"


@pytest.mark.parametrize("svg", COMMITTED, ids=lambda p: p.name)
def test_committed_diagram_is_drawn_at_scale_1_with_legible_slide_text(svg: Path) -> None:
    text = svg.read_text()
    assert re.search(r'class="graph" transform="scale\(1 1\)', text), "graphviz scaled the drawing"
    sizes = [float(s) for s in re.findall(r'font-size="([\d.]+)"', text)]
    assert min(sizes) * diagram.PNG_DPI / 72 >= MIN_SLIDE_TEXT_PX
    w, h = diagram.natural_size(text)
    assert w <= diagram.FRAME_PT[0] and h <= diagram.FRAME_PT[1]


@pytest.mark.parametrize("png", sorted(DIAGRAMS.glob("*.png")), ids=lambda p: p.name)
def test_committed_slide_is_1920x1080(png: Path) -> None:
    assert _png_size(png) == (1920, 1080)


@pytest.mark.parametrize("svg", [p for p in COMMITTED if not p.name.endswith("-dark.svg")], ids=lambda p: p.name)
def test_committed_diagram_has_no_edge_through_a_namespace_title(svg: Path) -> None:
    assert diagram.label_crossings(svg.read_bytes()) == []


@pytest.mark.parametrize("svg", [p for p in COMMITTED if p.name.startswith(("bond-", "ipvlan-", "macvlan-"))
                                 and not p.name.endswith("-dark.svg")], ids=lambda p: p.name)
def test_committed_interface_diagram_has_no_crossing_edges(svg: Path) -> None:
    assert diagram.edge_crossings(svg.read_bytes()) == []


def test_crossings_are_found_where_they_are(tmp_path: Path) -> None:
    # Two cables forced across each other, and one through a namespace's title.
    x = ('<svg xmlns="http://www.w3.org/2000/svg" width="100pt" height="100pt">'
         '<g class="cluster"><title>cluster_ns1</title><text x="10" y="28" font-size="10">ns1</text></g>'
         '<g class="edge"><title>a/x&#45;&gt;b/y</title><path d="M0,0C10,10 20,20 30,30"/></g>'
         '<g class="edge"><title>c/x&#45;&gt;d/y</title><path d="M0,30C10,20 20,10 30,0"/></g>'
         '<g class="edge"><title>a/x&#45;&gt;c/y</title><path d="M0,90C10,90 20,90 30,90"/></g></svg>')
    assert diagram.edge_crossings(x) == [("a/x->b/y", "c/x->d/y")]
    assert diagram.label_crossings(x) == [("ns1", "a/x->b/y")]


def test_fixture_is_drawn_at_scale_1_with_legible_slide_text(rendered: list[Path]) -> None:
    for svg in rendered[:2]:
        text = svg.read_text()
        assert re.search(r'class="graph" transform="scale\(1 1\)', text), "graphviz scaled the drawing"
        sizes = [float(s) for s in re.findall(r'font-size="([\d.]+)"', text)]
        assert min(sizes) * diagram.PNG_DPI / 72 >= MIN_SLIDE_TEXT_PX


def test_drawing_leaves_no_temporary_file(snapshot: dict[str, Any], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    diagram._glyph_pngs.cache_clear()  # glyphs rasterised now, under the patched tempdir
    (tmp_path / "out").mkdir()
    diagram.render(PAGE, STEP, snapshot, tmp_path / "out")
    assert list(scratch.iterdir()) == []


# --- the same bytes on every machine, drawn only when the input changed ------------------

HIDE_OUR_FONT = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig>
  <dir>/usr/share/fonts</dir>
  <dir>/usr/local/share/fonts</dir>
  <selectfont><rejectfont><glob>*DejaVu*</glob></rejectfont></selectfont>
  <alias binding="same"><family>DejaVu Sans</family><prefer><family>Liberation Serif</family>
    <family>serif</family><family>monospace</family></prefer></alias>
</fontconfig>
"""


def test_the_fonts_installed_on_the_machine_do_not_change_a_diagram(
        snapshot: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = [p.read_bytes() for p in diagram.render(PAGE, STEP, snapshot, tmp_path / "here")]
    # A machine whose fontconfig has no DejaVu and sends "DejaVu Sans" to another family.
    (tmp_path / "elsewhere.conf").write_text(HIDE_OUR_FONT)
    monkeypatch.setenv("FONTCONFIG_FILE", str(tmp_path / "elsewhere.conf"))
    source = f'digraph {{ a [label="veth0 10.0.0.1/24", fontname="{diagram_fonts.FAMILY}"] }}'
    def dot(**env: str) -> bytes:
        return subprocess.run(["dot", "-Tsvg"], input=source.encode(), capture_output=True, check=True,
                              env={**os.environ, **env}).stdout
    if dot() == dot(FONTCONFIG_FILE=str(diagram_fonts.CONFIG)):
        pytest.skip("no font other than DejaVu on this machine to measure text with")
    elsewhere = [p.read_bytes() for p in diagram.render(PAGE, STEP, snapshot, tmp_path / "elsewhere")]
    assert elsewhere == here


def test_glyphs_hold_no_text_so_cairo_picks_no_font() -> None:
    for svg in diagram.GLYPHS.glob("*.svg"):
        assert "<text" not in svg.read_text(), svg.name


def test_svg_names_the_shipped_font_with_fallbacks(rendered: list[Path]) -> None:
    families = set(re.findall(r'font-family="([^"]*)"', rendered[0].read_text()))
    assert families == {diagram_fonts.CSS_FAMILY}
    assert {p.name for p in diagram_fonts.files()} >= {"fonts.conf", "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"}
    assert (diagram_fonts.DIR / "LICENSE").is_file()


@pytest.fixture
def published(snapshot: dict[str, Any], tmp_path: Path) -> Path:
    """A directory holding the fixture's three files, as docs/diagrams would."""
    diagram.render(PAGE, STEP, snapshot, tmp_path / "published")
    return tmp_path / "published"


def _redrawn(snapshot: dict[str, Any], published: Path, tmp_path: Path) -> list[Path]:
    (tmp_path / "stage").mkdir(exist_ok=True)
    return diagram.render(PAGE, STEP, snapshot, tmp_path / "stage", published)


def test_an_unchanged_input_is_not_drawn_again(snapshot: dict[str, Any], published: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dot(*args: Any) -> bytes:
        raise AssertionError("dot ran for an input already drawn")
    monkeypatch.setattr(diagram, "_dot", no_dot)
    assert _redrawn(copy.deepcopy(snapshot), published, tmp_path) == []
    assert list((tmp_path / "stage").iterdir()) == []


def test_a_changed_snapshot_is_drawn_again(snapshot: dict[str, Any], published: Path, tmp_path: Path) -> None:
    changed = copy.deepcopy(snapshot)
    _all_links(changed)[0]["mtu"] = 9000  # not shown, but part of what the drawing is made from
    assert len(_redrawn(changed, published, tmp_path)) == 3


def test_a_changed_glyph_is_drawn_again(snapshot: dict[str, Any], published: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    glyphs = shutil.copytree(diagram.GLYPHS, tmp_path / "glyphs")
    (glyphs / "veth.svg").write_text((glyphs / "veth.svg").read_text().replace("#2563EB", "#2563EC"))
    monkeypatch.setattr(diagram, "GLYPHS", glyphs)
    assert len(_redrawn(snapshot, published, tmp_path)) == 3


def test_changed_drawing_code_is_drawn_again(snapshot: dict[str, Any], published: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code = tmp_path / "diagram.py"
    code.write_text(Path(diagram.__file__).read_text() + "\nFONT_EDGE = 21\n")
    monkeypatch.setattr(diagram, "__file__", str(code))
    assert len(_redrawn(snapshot, published, tmp_path)) == 3


def test_a_changed_font_is_drawn_again(snapshot: dict[str, Any], published: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fonts = shutil.copytree(diagram_fonts.DIR, tmp_path / "fonts")
    (fonts / "DejaVuSans.ttf").unlink()
    monkeypatch.setattr(diagram_fonts, "DIR", fonts)
    monkeypatch.setattr(diagram_fonts, "CONFIG", fonts / "fonts.conf")
    assert len(_redrawn(snapshot, published, tmp_path)) == 3


@pytest.mark.parametrize("missing", [".png", "-dark.svg"])
def test_a_missing_or_stale_file_is_drawn_again(snapshot: dict[str, Any], published: Path, tmp_path: Path,
                                                missing: str) -> None:
    (published / f"{PAGE}-{STEP}{missing}").unlink()
    assert len(_redrawn(snapshot, published, tmp_path)) == 3


def test_each_layout_runs_once_and_dark_is_light_recoloured(snapshot: dict[str, Any], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[tuple[str, str]] = []
    dot = diagram._dot
    monkeypatch.setattr(diagram, "_dot", lambda source, fmt: runs.append((source, fmt)) or dot(source, fmt))
    light, dark, _png = diagram.render(PAGE, STEP, snapshot, tmp_path)
    assert len(runs) == len(set(runs)), "a graph was laid out twice"
    assert [fmt for _, fmt in runs].count("png") == 1
    colour = re.compile(r'"#[0-9a-fA-F]{6}"')
    assert colour.sub('"#"', light.read_text()) == colour.sub('"#"', dark.read_text())
