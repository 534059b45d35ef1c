"""deepdive.diagram: render a snapshot fixture and check the files, not the drawing code."""
from __future__ import annotations

import copy
import json
import shutil
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from deepdive import diagram
from deepdive.snapshot import HOST

FIXTURE = Path(__file__).parent / "fixtures" / "snapshot_bridge.json"
SVG_NS = "{http://www.w3.org/2000/svg}"
PAGE, STEP = "bridge", "ports"

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


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _all_links(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    return [link for node in snapshot["nodes"] for link in node["links"]]


def test_writes_svg_and_png_named_after_page_and_step(rendered: list[Path]) -> None:
    svg, png = rendered
    assert (svg.name, png.name) == (f"{PAGE}-{STEP}.svg", f"{PAGE}-{STEP}.png")
    assert svg.is_file() and png.is_file()


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
        assert any(label.startswith(node["name"]) for label in labels), (node["name"], labels)
    if any(node["name"] == HOST for node in snapshot["nodes"]):
        assert any("root namespace" in label for label in labels)


def test_edges_for_veth_pairs_and_masters(rendered: list[Path], snapshot: dict[str, Any]) -> None:
    links = _all_links(snapshot)
    pairs = {frozenset({(n["name"], l["name"]), (l["peer"]["node"], l["peer"]["name"])})
             for n in snapshot["nodes"] for l in n["links"] if l["peer"]}
    edge_labels = [" ".join(_texts(g)) for g in _groups(_svg_root(rendered[0]), "edge")]
    assert edge_labels.count("veth pair") == len(pairs)
    assert edge_labels.count("master") == sum(1 for l in links if l["master"])


def test_svg_is_self_contained(rendered: list[Path]) -> None:
    text = rendered[0].read_text()
    assert "data:image/png;base64," in text
    assert "site-packages" not in text
    assert "/root" not in text
    for element in _svg_root(rendered[0]).iter():
        for name, value in element.attrib.items():
            if name.endswith("href"):
                assert not value.startswith(("/", "file:")), value


def test_svg_says_how_it_is_regenerated(rendered: list[Path]) -> None:
    text = rendered[0].read_text()
    assert f"invoke lab.run --page {PAGE}" in text
    assert "Do not edit" in text.split("<svg", 1)[0]  # a comment before the drawing


def test_png_is_a_1920x1080_slide(rendered: list[Path]) -> None:
    assert _png_size(rendered[1]) == (1920, 1080)


def test_second_render_leaves_files_untouched(snapshot: dict[str, Any], tmp_path: Path) -> None:
    first = diagram.render(PAGE, STEP, snapshot, tmp_path)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in first}
    second = diagram.render(PAGE, STEP, copy.deepcopy(snapshot), tmp_path)
    assert second == first
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in second} == before


def test_changed_snapshot_rewrites_the_files(snapshot: dict[str, Any], tmp_path: Path) -> None:
    svg, _ = diagram.render(PAGE, STEP, snapshot, tmp_path)
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
    svg, png = diagram.render(PAGE, STEP, with_empty, tmp_path)
    clusters = [" ".join(_texts(g)) for g in _groups(_svg_root(svg), "cluster")]
    assert empty in clusters
    assert "no links" in _texts(_svg_root(svg))
    assert _png_size(png) == (1920, 1080)
