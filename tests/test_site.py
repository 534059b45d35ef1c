"""The real site: built from the committed pages, captures and diagrams, it shows them.

No privileges needed. Skipped only while docs/captures/veth.json does not exist yet.
"""
from __future__ import annotations

import json
import posixpath
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from deepdive import site

ROOT = Path(__file__).resolve().parent.parent
VETH_CAPTURE = ROOT / "docs" / "captures" / "veth.json"

pytestmark = pytest.mark.skipif(
    not VETH_CAPTURE.exists(),
    reason="docs/captures/veth.json does not exist yet; `invoke lab.run --page veth` makes it")


class _Consoles(HTMLParser):
    """Text of each step's console block by step anchor, and every <img src>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: list[str | None] = []       # id of each open element, None if it has none
        self.in_console = 0                    # depth inside a <pre class="dd-console">
        self.consoles: dict[str, str] = {}
        self.images: list[str] = []
        self._current = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
            return
        if tag in ("br", "hr", "meta", "link", "input", "source", "wbr"):
            return
        self.ids.append(a.get("id"))
        if self.in_console:
            self.in_console += 1
        elif tag == "pre" and "dd-console" in (a.get("class") or "").split():
            self.in_console = 1
            self._current = next((i for i in reversed(self.ids) if i), "")

    def handle_endtag(self, tag):
        if self.ids:
            self.ids.pop()
        if self.in_console:
            self.in_console -= 1

    def handle_data(self, data):
        if self.in_console:
            self.consoles[self._current] = self.consoles.get(self._current, "") + data


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("site")
    site.build(strict=True, site_dir=out)
    return out, out / "interfaces" / "veth" / "index.html"


def test_veth_page_shows_its_capture(built):
    _, page = built
    capture = json.loads(VETH_CAPTURE.read_text())
    parser = _Consoles()
    parser.feed(page.read_text())
    shown = parser.consoles
    assert shown, "the veth page shows no step"
    for step in capture["steps"]:
        anchor = f"step-veth-{step['id']}"
        if step["id"] == "nodes" and anchor not in shown:
            continue  # creating the namespaces is the lab's own first step; a page may skip it
        assert anchor in shown, f"the veth page does not show step {step['id']!r}"
        for c in step["commands"]:
            assert f"$ {c['cmd']}" in shown[anchor]
            for stream in ("stdout", "stderr"):
                if c[stream].strip():
                    assert c[stream].rstrip("\n") in shown[anchor], f"{stream} of `{c['cmd']}`"


def test_veth_page_images_exist(built):
    out, page = built
    parser = _Consoles()
    parser.feed(page.read_text())
    assert parser.images, "the veth page has no diagram"
    for src in parser.images:
        if src.startswith("data:") or urlsplit(src).scheme:
            continue
        target = Path(posixpath.normpath(posixpath.join(page.parent.as_posix(), unquote(urlsplit(src).path))))
        assert target.is_file(), f"{src} (from interfaces/veth/index.html) is not in the built site"
        assert out in target.parents
