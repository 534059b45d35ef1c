"""The built site in Debian's Chromium, as a reader meets it (tests/browser_site.py drives it).

Every page: no console error, no failed request and none to another site, every image
decoded, nothing wider than a 390 px window unless it is inside a code block that scrolls
sideways and shows its scrollbar (Chromium draws scrollbars as on a desktop there, where
a phone draws them only while scrolling), every same-site link and #anchor resolves, and
axe-core finds no serious or critical violation (contrast included) in the light or the
dark scheme. Material's search finds pages by what they show. Screenshots of the home
page and the first page of each section of the navigation, light and dark, desktop and
phone, go to artifacts/screenshots/, which CI keeps.

Needs Chromium, axe-core (`npm ci`) and Playwright: `./setup.sh --test` installs them all;
without one, every test here fails with one line saying which, rather than skipping.
"""
from __future__ import annotations

import functools
import struct
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import pytest

import browser_site
from browser_site import PageReport
from deepdive import site
from deepdive.model import DeepDiveError

pytestmark = pytest.mark.browser

PAGES = browser_site.page_paths()


class Served(NamedTuple):
    dir: Path   # the built site
    url: str    # its base URL, http://127.0.0.1:PORT/ and site_url's path


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> Served:
    """The site, built once from this checkout, served on 127.0.0.1."""
    try:
        browser_site.require_tools()
    except browser_site.BrowserMissing as exc:
        pytest.fail(f"browser tests: {exc}", pytrace=False)
    built = tmp_path_factory.mktemp("site")
    try:
        site.build(site_dir=built)
    except DeepDiveError as exc:
        pytest.fail(f"browser tests: {exc}", pytrace=False)
    with browser_site.serve(built, browser_site.site_path()) as url:
        yield Served(built, url)


@pytest.fixture(scope="session")
def reports(served: Served) -> dict[str, PageReport]:
    """Every page visited once: its report by path."""
    return browser_site.sweep(served.url, PAGES)


def _report(reports: dict[str, PageReport], path: str) -> PageReport:
    report = reports[path]
    if report.visit_error:
        pytest.fail(f"{path or 'home page'}: could not be visited: {report.visit_error}",
                    pytrace=False)
    return report


def _faults(path: str, what: str, lines: list[str]) -> None:
    """Fail listing `lines` once each (a page is visited three times: light, dark, phone)."""
    assert not lines, f"/{path}: {what}:\n  " + "\n  ".join(dict.fromkeys(lines))


def test_a_missing_chromium_is_one_line(monkeypatch):
    monkeypatch.setenv("DEEPDIVE_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(browser_site.BrowserMissing,
                       match="^no Chromium at /nonexistent/chromium: "):
        browser_site.require_tools()


def test_every_built_page_is_visited(served):
    assert browser_site.built_page_paths(served.dir) == PAGES


# What each report's list holds, by its field: a page passes when the list is empty.
PAGE_CHECKS = {
    "console_errors": "console errors",
    "failed_requests": "failed requests",
    "broken_images": "images with no natural size",
    "overflow": "content wider than a phone screen",
}


@pytest.mark.parametrize("check", PAGE_CHECKS)
@pytest.mark.parametrize("path", PAGES)
def test_page_shows_no_fault(reports, path, check):
    _faults(path, PAGE_CHECKS[check], getattr(_report(reports, path), check))


# Material's way of naming the colour scheme an image is for (a link to a diagram, made by
# glightbox, keeps it): not an anchor, the file itself must answer.
IMAGE_SCHEME_FRAGMENTS = ("only-light", "only-dark")


@functools.lru_cache(maxsize=None)
def _status(url: str) -> int:
    """HTTP status of a GET of `url` (a file of the served site that is not a page)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("path", PAGES)
def test_links_and_anchors_resolve(reports, served, path):
    faults = []
    for link in sorted(set(_report(reports, path).links)):
        target = browser_site.page_key(link, served.url)
        fragment = unquote(urlsplit(link).fragment)
        if target in reports:
            if fragment and fragment not in reports[target].ids:
                faults.append(f"{link}: /{target} has no id {fragment!r}")
        elif fragment and fragment not in IMAGE_SCHEME_FRAGMENTS:
            faults.append(f"{link}: an anchor into /{target}, which is not a page")
        elif (status := _status(served.url + target)) != 200:
            faults.append(f"{link}: HTTP {status}")
    _faults(path, "broken links", faults)


@pytest.mark.parametrize("scheme", browser_site.SCHEMES)
@pytest.mark.parametrize("path", PAGES)
def test_axe_finds_no_serious_violation(reports, path, scheme):
    _faults(path, f"axe-core, {scheme} scheme", _report(reports, path).axe[scheme])


@pytest.mark.parametrize("query, page", [("802.1Q", "interfaces/vlan/"),
                                         ("8472", "pods/flannel/")])
def test_search_finds(served, query, page):
    found = browser_site.search(served.url, query)
    assert page in found, f"searching {query!r} shows {found}, not /{page}"


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_screenshots(served):
    shots = browser_site.section_pages()
    written = browser_site.screenshots(served.url, shots)
    assert len(written) == len(shots) * 4
    sizes = {(v["width"], v["height"]) for v in (browser_site.DESKTOP, browser_site.PHONE)}
    for file in written:
        assert _png_size(file) in sizes, f"{file}: {_png_size(file)}"
