"""The real site: built from the committed pages, captures and diagrams, it shows them.

No privileges needed. Skipped only while docs/captures/veth.json does not exist yet.
"""
from __future__ import annotations

import json
import posixpath
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from deepdive import macros, site

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
        self.in_console = 0                    # depth inside a <div class="dd-console">
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
        elif tag == "div" and "dd-console" in (a.get("class") or "").split():
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


# --- bad input: one line, before or instead of MkDocs' own report -------------------

def _project_copy(tmp_path: Path) -> Path:
    """A copy of the site's sources whose docs/ a test may break."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", project)
    shutil.copytree(ROOT / "docs", project / "docs")
    for shared in ("overrides", "snippets", "deepdive", "hooks"):
        (project / shared).symlink_to(ROOT / shared)
    return project


BAD_CAPTURES = {
    "a list": ("[]", "is not a capture: the file is a list, not an object"),
    "null": ("null", "is not a capture: the file is null, not an object"),
    "steps that are not lists": (None, "is not a capture: steps[0].commands is an object, not a list"),
    "another page's name": (None, "is not a capture: it is the capture of page 'bridge'"),
    "half a file": ('{"page": "veth", "steps": [', "is not valid JSON"),
}


@pytest.mark.parametrize("content,problem", BAD_CAPTURES.values(), ids=BAD_CAPTURES.keys())
def test_a_bad_capture_stops_the_build_in_one_line(tmp_path, capfd, content, problem):
    project = _project_copy(tmp_path)
    path = project / "docs" / "captures" / "veth.json"
    if content is None:
        capture = json.loads(path.read_text())
        if "steps" in problem:
            capture["steps"][0]["commands"] = {}
        else:
            capture["page"] = "bridge"
        content = json.dumps(capture)
    path.write_text(content)
    capfd.readouterr()
    with pytest.raises(site.DeepDiveError) as info:
        site.build(strict=True, site_dir=tmp_path / "out", config=project / "mkdocs.yml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"page veth: {path} ")
    assert problem in message
    out, err = capfd.readouterr()
    assert out + err == "", "MkDocs ran, or something printed more than the one line"


def test_a_macro_error_is_one_line_in_mkdocs_report(tmp_path, capfd):
    project = _project_copy(tmp_path)
    page = project / "docs" / "interfaces" / "veth.md"
    page.write_text(page.read_text().replace('step("veth", "pair")', 'step("veth", "nosuch")'))
    with pytest.raises(site.DeepDiveError, match=r"^mkdocs build failed \(exit status \d+\)"):
        site.build(strict=True, site_dir=tmp_path / "out", config=project / "mkdocs.yml")
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert "interfaces/veth.md: page veth: no step 'nosuch' in its capture" in err


# --- what reaches the HTML is escaped ---------------------------------------------

HOSTILE = '"><script>alert(1)</script>'


def _hostile_capture() -> dict:
    capture = json.loads(VETH_CAPTURE.read_text())
    capture["page"] = capture["steps"][0]["id"] = capture["steps"][0]["title"] = HOSTILE
    capture["checks"][0].update(claim=HOSTILE, after=HOSTILE)
    capture["meta"]["kernel"] = HOSTILE
    capture["steps"][0]["commands"][0].update(cmd=HOSTILE, stdout=HOSTILE, stderr=HOSTILE, rc=1)
    return capture


class _Tags(HTMLParser):
    """Start tags with their attributes, as a browser would read them."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _ids(html: str) -> list[str]:
    tags = _Tags(html).tags
    assert "script" not in [tag for tag, _ in tags]
    return [a["id"] for _, a in tags if "id" in a]


def test_captured_text_never_reaches_the_html_as_markup():
    """A hand-edited capture (load() refuses it; a renderer must not trust it either)."""
    capture = _hostile_capture()
    assert _ids(macros.render_checks(capture)) == [f"checks-{HOSTILE}"]
    assert _ids(macros.render_step(capture, HOSTILE)) == [f"step-{HOSTILE}-{HOSTILE}"]
    assert _ids(macros.render_captured(capture)) == []


def test_a_diagram_id_is_escaped(tmp_path):
    name = HOSTILE.replace("/", "_")  # a name with "/" could not name the diagram's file
    capture = _hostile_capture()
    capture["page"] = capture["steps"][0]["id"] = name
    capture["steps"][0]["snapshot"] = {"nodes": []}
    (tmp_path / "diagrams").mkdir()
    for suffix in (".svg", "-dark.svg", ".png"):
        (tmp_path / "diagrams" / f"{name}-{name}{suffix}").write_bytes(b"")
    assert _ids(macros.render_diagram(capture, name, tmp_path, "interfaces/x/")) == [f"diagram-{name}-{name}"]
