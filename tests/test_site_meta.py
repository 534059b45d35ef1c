"""What the site says about itself: the top of each lab page (verified count, "Reproduce
this page"), claims linked to their steps, the published lab files, descriptions, the
glossary, the home page's cards, and the site's addresses."""
from __future__ import annotations

import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from mkdocs.config import load_config
from mkdocs.utils.meta import get_data

from deepdive import capture as captures
from deepdive import macros, registry, reproduce, site
from deepdive.features import FEATURES, ROOT_ONLY
from test_capture import sample
from test_macros import make_site, mkdocs_build

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def front_matter(path: Path) -> tuple[str, dict]:
    return get_data(path.read_text(encoding="utf-8"))


def nav_pages() -> list[str]:
    """Every Markdown page in mkdocs.yml's nav, as a path under docs/."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = yaml.safe_load(text[text.index("\nnav:"):])["nav"]

    def walk(items):
        for item in items:
            for value in item.values():
                yield from (walk(value) if isinstance(value, list) else [value])
    return list(walk(nav))


def lab_pages() -> dict[str, str]:
    """{lab name: page path} from each page's front matter `lab:`."""
    found: dict[str, str] = {}
    for src in nav_pages():
        name = front_matter(DOCS / src)[1].get("lab")
        if name:
            assert name not in found, f"{src} and {found[name]} both say lab: {name}"
            found[name] = src
    return found


LABS = lab_pages()


# --- the top of a lab page --------------------------------------------------------------

def test_every_capture_has_exactly_one_page_that_names_it():
    assert set(LABS) == {p.stem for p in (DOCS / "captures").glob("*.json")}


@pytest.mark.parametrize("name", sorted(LABS))
def test_the_reproduce_box_says_what_the_page_needs_and_where_it_came_from(name):
    src, capture, page = LABS[name], captures.load(name), registry.load(name)
    box = reproduce.reproduce_box(capture, page, src, reproduce.site_kernels(DOCS / "captures"))
    assert box.startswith('??? info "Reproduce this page"\n')
    assert f"    invoke lab.run --page {name}\n" in box
    m = capture["meta"]
    assert f"The {m['lab']} lab, on Linux {m['kernel']} " in box
    assert "*host lab* is network namespaces on the machine's own running kernel" in box
    for kind in page.needs.kinds:
        assert f"`{kind}`" in box
    for feature in page.needs.features:
        assert FEATURES[feature].words in box
    for tool in page.needs.tools:
        assert f"`{tool}`" in box
    root_only = ROOT_ONLY & set(page.needs.features)
    assert ("Root: the kernel refuses" in box) == bool(root_only)
    assert ("Root, or an ordinary user" in box) == (not root_only)
    assert ("the vm lab needs qemu" in box) == (m["lab"] == "vm")
    if "seconds" in m:
        assert f"The lab ran for {m['seconds']} s when this page was captured" in box
    link = re.search(r"\[`snippets/%s\.py`\]\(([^)]+)\)" % re.escape(name), box).group(1)
    assert posixpath.normpath(posixpath.join(posixpath.dirname(src), link)) == f"labs/{name}.md"


def test_the_box_explains_two_kernels_only_when_the_site_has_two():
    capture, page = captures.load("veth"), registry.load("veth")
    one = [("host", "6.18", 20)]
    two = [("host", "6.18", 18), ("vm", "6.1", 5)]
    assert "more than one kernel" not in reproduce.reproduce_box(capture, page, "x.md", one)
    box = reproduce.reproduce_box(capture, page, "x.md", two)
    assert "18 on Linux 6.18 (host lab); 5 on Linux 6.1 (vm lab)" in box


def test_the_box_links_to_the_repository_when_the_site_names_one():
    capture, page = captures.load("veth"), registry.load("veth")
    box = reproduce.reproduce_box(capture, page, "x.md", [], "https://git.example.org/dd")
    assert "From a checkout of [the project](https://git.example.org/dd), after" in box
    assert "From a checkout of the project, after" in reproduce.reproduce_box(capture, page, "x.md", [])


def test_the_verified_line_counts_passed_claims_of_all_claims():
    capture = sample()
    capture["checks"] = [{"claim": "a", "after": "ping", "passed": True},
                         {"claim": "b", "after": "ping", "passed": False},
                         {"claim": "c", "after": "nodes", "passed": True}]
    line = reproduce.verified_line(capture)
    assert line.startswith("**2 of 3 claims verified** on Linux 6.18.44 in the host lab, 2026-11-26")
    assert "(#checks-demo)" in line


# --- claims linked to their steps ---------------------------------------------------------

def test_shown_steps_are_the_steps_of_that_page_the_markdown_shows():
    md = ('{{ step("veth", "pair") }}\n{{ step(\'veth\', \'up\') }}\n{{ step("bridge", "x") }}\n'
          '{{ quote("veth", "show", "x") }}')
    assert reproduce.shown_steps(md, "veth") == {"pair", "up"}


def test_a_claim_links_to_its_step_only_when_the_page_shows_it():
    capture = sample()
    capture["checks"] = [{"claim": "shown", "after": "ping", "passed": True},
                         {"claim": "hidden", "after": "nodes", "passed": True}]
    html = macros.render_checks(capture, shown={"ping"})
    shown, hidden = html.split("</li>")[:2]
    assert '<a href="#step-demo-ping">' in shown
    assert "<a " not in hidden and "(not shown on this page)" in hidden
    assert "<a " not in macros.render_checks(capture)  # nothing known: no link, no remark


# --- the built site -----------------------------------------------------------------------

class _Page(HTMLParser):
    """Ids, links (with whether they sit in a dd-checks list) and the meta description."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.check_links: list[str] = []
        self.links: list[str] = []
        self.description = ""
        self._in_checks = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "meta" and a.get("name") == "description":
            self.description = a.get("content") or ""
        if tag == "ul" and "dd-checks" in (a.get("class") or ""):
            self._in_checks = 1
        elif self._in_checks and tag not in ("br", "img"):
            self._in_checks += 1
        if tag == "a" and a.get("href"):
            (self.check_links if self._in_checks else self.links).append(a["href"])

    def handle_endtag(self, tag):
        if self._in_checks:
            self._in_checks -= 1


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    site.build(strict=True, site_dir=out)
    return out


def html_of(out: Path, src: str) -> Path:
    return out / ("index.html" if src == "index.md" else src[:-len(".md")] + "/index.html")


@pytest.mark.parametrize("name", sorted(LABS))
def test_claim_links_resolve_to_step_anchors_on_the_page(built, name):
    src = LABS[name]
    page = _Page(html_of(built, src).read_text())
    capture = captures.load(name)
    shown = reproduce.shown_steps((DOCS / src).read_text(), name)
    expected = [f"#step-{name}-{c['after']}" for c in capture["checks"] if c["after"] in shown]
    assert page.check_links == expected
    for href in page.check_links:
        assert href[1:] in page.ids, f"{src}: {href} has no anchor on the page"
    assert f"#checks-{name}" in page.links and f"checks-{name}" in page.ids


@pytest.mark.parametrize("name", sorted(LABS))
def test_the_box_links_to_the_lab_file_published_with_the_site(built, name):
    page_html = html_of(built, LABS[name])
    page = _Page(page_html.read_text())
    labs = [h for h in page.links if re.fullmatch(r"(\.\./)+labs/%s/" % re.escape(name), h)]
    assert labs, f"{LABS[name]} links to no lab page"
    target = (page_html.parent / labs[0] / "index.html").resolve()
    assert target.is_file()
    download = [h for h in _Page(target.read_text()).links if h.endswith(f"{name}.py")]
    assert download, f"the lab page of {name} offers no download"
    published = (target.parent / download[0]).resolve()
    assert published.read_bytes() == (ROOT / "snippets" / f"{name}.py").read_bytes()


def test_every_page_has_a_description_of_its_own(built):
    seen: dict[str, str] = {}
    for src in nav_pages():
        description = front_matter(DOCS / src)[1].get("description", "")
        assert len(description) > 40, f"{src} has no description worth the name"
        assert description not in seen, f"{src} and {seen.get(description)} share a description"
        seen[description] = src
        assert _Page(html_of(built, src).read_text()).description == description


def test_the_sitemap_holds_the_site_url(built):
    sitemap = (built / "sitemap.xml").read_text()
    assert "<loc>http://127.0.0.1:8000/interfaces/veth/</loc>" in sitemap


# --- site_url, repo_url, edit links ---------------------------------------------------------

def test_no_repository_is_named_unless_one_is_given(monkeypatch):
    for var in ("DEEPDIVE_SITE_URL", "DEEPDIVE_REPO_URL", "DEEPDIVE_EDIT_URI"):
        monkeypatch.delenv(var, raising=False)
    config = load_config(str(ROOT / "mkdocs.yml"))
    assert config.site_url == "http://127.0.0.1:8000/"
    assert config.repo_url is None and not config.edit_uri


def test_a_given_repository_gets_edit_links(monkeypatch):
    monkeypatch.setenv("DEEPDIVE_SITE_URL", "https://example.org/deepdive/")
    monkeypatch.setenv("DEEPDIVE_REPO_URL", "https://git.example.org/deepdive")
    monkeypatch.setenv("DEEPDIVE_EDIT_URI", "edit/main/docs/")
    config = load_config(str(ROOT / "mkdocs.yml"))
    assert config.site_url == "https://example.org/deepdive/"
    assert config.repo_url == "https://git.example.org/deepdive"
    assert config.edit_uri == "edit/main/docs/"
    assert "content.action.edit" in config.theme["features"]


# --- the glossary and the home page -------------------------------------------------------

def test_each_glossary_term_links_to_pages_that_use_it():
    text = (DOCS / "glossary.md").read_text()
    entries = re.findall(r"^(\S[^\n]*)\n:   (.*?)(?=\n\n|\Z)", text, re.MULTILINE | re.DOTALL)
    assert len(entries) >= 30
    for term, definition in entries:
        links = re.findall(r"\]\(([^)#]+\.md)\)", definition)
        assert links, f"glossary: {term!r} links to no page"
        names = [n.strip() for n in re.split(r",|\(|\)", term) if n.strip()]
        for link in links:
            page = DOCS / link
            assert page.is_file(), f"glossary: {term!r} links to {link}, which does not exist"
            body = page.read_text().lower()
            assert any(n.lower() in body for n in names), f"glossary: {link} never says {term!r}"


def first_diagram(src: str) -> str:
    m = re.search(r'\{\{ diagram\("([a-z0-9-]+)", "([a-z0-9-]+)"', (DOCS / src).read_text())
    return f"diagrams/{m.group(1)}-{m.group(2)}.svg"


def test_the_home_page_has_a_card_per_page_with_its_diagram():
    home = (DOCS / "index.md").read_text()
    # Each card shows the diagram twice, one image per colour scheme (Material hides the
    # other): diagrams/X.svg#only-light, then diagrams/X-dark.svg#only-dark.
    cards = re.findall(r"^-   !\[[^\]]*\]\(([^)]+)\)!\[[^\]]*\]\(([^)]+)\)\n\n"
                       r"    \*\*\[[^\]]+\]\(([^)]+)\)\*\*: (.+)$", home, re.MULTILINE)
    by_page = {page: (light, dark) for light, dark, page, _line in cards}
    assert len(by_page) == len(cards), "a page has two cards"
    assert set(by_page) == set(LABS.values())
    for page, (light, dark) in by_page.items():
        svg = first_diagram(page)
        assert light == f"{svg}#only-light", f"the card of {page} shows {light}"
        assert dark == svg.replace(".svg", "-dark.svg#only-dark"), f"the card of {page} shows {dark} in the dark"


# --- where the top goes -------------------------------------------------------------------

class _Env:
    def __init__(self, markdown: str, meta: dict):
        self.markdown = markdown
        self.page = type("P", (), {"meta": meta, "file": type("F", (), {"src_path": "x/y.md"})()})()


def test_the_top_goes_right_under_the_title_of_a_page_that_names_its_lab():
    env = _Env("intro\n# veth: a cable\n\nA veth device...\n", {"lab": "veth"})
    macros.on_pre_page_macros(env)
    assert env.markdown == "intro\n# veth: a cable\n\n{{ reproduce(page.meta.lab) }}\n\nA veth device...\n"
    plain = _Env("# Glossary\n", {})
    macros.on_pre_page_macros(plain)
    assert plain.markdown == "# Glossary\n"


def test_a_lab_that_is_not_a_page_name_fails_the_build_in_one_line(tmp_path):
    root = make_site(tmp_path, {"index.md": "---\nlab: [veth]\n---\n# Home\n"})
    result = mkdocs_build(root)
    assert result.returncode != 0
    assert "index.md: ['veth'] is not a page name" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_page_that_names_its_lab_builds_with_its_top(tmp_path):
    root = make_site(tmp_path, {"index.md": "---\nlab: veth\n---\n# Home\n\nText.\n"})
    result = mkdocs_build(root)
    assert result.returncode == 0, result.stderr
    html = (root / "site" / "index.html").read_text()
    assert "claims verified</strong>" in html and "Reproduce this page" in html
    assert html.index("Reproduce this page") < html.index("Text.")


def test_a_named_repository_reaches_the_box_and_the_edit_link(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDIVE_REPO_URL", "https://git.example.org/dd")
    monkeypatch.setenv("DEEPDIVE_EDIT_URI", "edit/main/docs/")
    root = make_site(tmp_path, {"index.md": "---\nlab: veth\n---\n# Home\n"})
    result = mkdocs_build(root)
    assert result.returncode == 0, result.stderr
    html = (root / "site" / "index.html").read_text()
    assert 'From a checkout of <a href="https://git.example.org/dd">the project</a>' in html
    assert 'href="https://git.example.org/dd/edit/main/docs/index.md"' in html


def test_a_lab_file_page_has_no_image_so_glightbox_leaves_it_alone():
    from mkdocs.utils.meta import get_data

    from deepdive import labfiles

    _, meta = get_data(labfiles.lab_page("veth", "interfaces/veth.md"))
    assert meta["glightbox"] is False
    assert "![" not in labfiles.lab_page("veth", "interfaces/veth.md")
