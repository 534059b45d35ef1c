"""The built site in a real browser: serve it, visit every page, record what a reader meets.

Used by tests/test_browser.py. Debian's Chromium (`/usr/bin/chromium`, or
`$DEEPDIVE_CHROMIUM`) is driven headless through Playwright for Python, which downloads
no browser of its own; axe-core comes from `node_modules/` (`npm ci`, run by
`./setup.sh --test`). The site is served by Python's http.server on 127.0.0.1 in a thread.

A sweep visits every page once per colour scheme at desktop size (1440x900) and once at
phone size (390x844), CONCURRENCY pages at a time in one browser, and returns one
`PageReport` per page: plain data the tests assert on.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
# Material picks its palette from prefers-color-scheme (mkdocs.yml: palette media queries)
# and marks <body> with the scheme it chose.
SCHEMES = {"light": "default", "dark": "slate"}
# Pages visited at once. Measured on a 2-core machine shared with other work, 8 pages
# took 43 s one at a time and 51 s two at a time (load about 2-7), 109 s one at a time
# and 124 s four at a time (load about 22): axe-core keeps a core busy per page.
CONCURRENCY = 1
TIMEOUT_MS = 30_000


class BrowserMissing(Exception):
    """What the browser tests need and this machine lacks, in one line."""


def chromium_path() -> Path:
    """The Chromium executable the tests drive: $DEEPDIVE_CHROMIUM or /usr/bin/chromium."""
    return Path(os.environ.get("DEEPDIVE_CHROMIUM", "/usr/bin/chromium"))


def require_tools() -> None:
    """Raise BrowserMissing naming the first missing piece and how to get it."""
    chromium = chromium_path()
    if not os.access(chromium, os.X_OK):
        raise BrowserMissing(
            f"no Chromium at {chromium}: install Debian's chromium package "
            "(./setup.sh --test), or set DEEPDIVE_CHROMIUM to a Chromium executable")
    if not AXE.is_file():
        raise BrowserMissing(f"no axe-core at {AXE.relative_to(ROOT)}: run `npm ci` "
                             "in the checkout (./setup.sh --test does)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise BrowserMissing("Python package playwright is missing: run ./setup.sh "
                             "(requirements.txt pins it)") from None


def page_paths(docs: Path = DOCS) -> list[str]:
    """URL path of every page MkDocs builds from `docs` (directory URLs: 'interfaces/veth/',
    '' for the home page) and of each lab file's page (labs/NAME/, which the hook
    deepdive/labfiles.py generates), sorted, then '404.html', the page a reader meets on a
    bad link."""
    from deepdive import registry, reproduce

    paths = [reproduce.lab_file_uri(name).removesuffix(".md") + "/" for name in registry.names()]
    for md in sorted(docs.rglob("*.md")):
        rel = md.relative_to(docs).with_suffix("")
        if rel.parts[0] == "captures":  # mkdocs.yml: exclude_docs
            continue
        parts = rel.parts[:-1] if rel.name in ("index", "README") else rel.parts
        paths.append("".join(f"{p}/" for p in parts))
    return sorted(paths) + ["404.html"]


def built_page_paths(site: Path) -> list[str]:
    """URL path of every HTML page in a built site, in page_paths' form."""
    paths = [str(p.parent.relative_to(site)) + "/" for p in site.rglob("index.html")]
    return sorted("" if p == "./" else p for p in paths) + (
        ["404.html"] if (site / "404.html").is_file() else [])


def page_key(url: str, base: str) -> str:
    """A URL's page in page_paths' form, relative to the site's `base` URL: 'interfaces/veth/'
    for BASE/interfaces/veth/index.html; a path outside the site stays absolute."""
    path, root = unquote(urlsplit(url).path), urlsplit(base).path
    if not path.startswith(root):
        return path
    return path[len(root):].removesuffix("index.html")


@functools.cache
def _config() -> dict:
    from mkdocs.config import load_config
    return load_config(str(ROOT / "mkdocs.yml"))


def site_path() -> str:
    """The path the site is published under, from mkdocs.yml's site_url ('/' without one):
    the tests serve it there too, as Material's 404 page links its assets from it."""
    path = urlsplit(_config()["site_url"] or "/").path
    return path if path.endswith("/") else path + "/"


def section_pages() -> list[tuple[str, str]]:
    """('home', '') and, per section of mkdocs.yml's nav, its name as a slug and its first
    page's path ('interfaces', 'interfaces/veth/')."""
    shots = [("home", "")]
    for entry in _config()["nav"]:
        (title, value), = entry.items()
        if isinstance(value, list):
            (_, first), = value[0].items()
            shots.append(("-".join(title.lower().split()), first.removesuffix(".md") + "/"))
    return shots


class _Handler(http.server.SimpleHTTPRequestHandler):
    prefix = "/"  # the URL path the site is served under

    def send_head(self):
        if not self.path.startswith(self.prefix):
            self.send_error(404, "outside the site")
            return None
        return super().send_head()

    def translate_path(self, path: str) -> str:
        return super().translate_path("/" + path[len(self.prefix):])

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # every request would otherwise print a line into the test output


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A tab closed while a file was still being sent: the browser's doing, not a fault.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(site: Path, prefix: str = "/") -> Iterator[str]:
    """Serve directory `site` under URL path `prefix` on 127.0.0.1, a free port, in a
    thread: yields the base URL ('http://127.0.0.1:PORT/PREFIX/'); the server stops when
    the block ends."""
    handler = functools.partial(type("Handler", (_Handler,), {"prefix": prefix}),
                                directory=str(site))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class PageReport:
    """What one page showed; each list holds one line per fault, empty when all is well."""
    path: str
    visit_error: str = ""  # why the page could not be visited at all
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    overflow: list[str] = field(default_factory=list)
    # axe-core's serious and critical violations per scheme ('light', 'dark').
    axe: dict[str, list[str]] = field(default_factory=dict)
    # Every same-site link as the browser resolved it, and every id on the page.
    links: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)


# Every <img> scrolled into view (diagrams may load lazily) and given time to load; then
# those the browser could not decode, by src.
_IMAGES_JS = """async () => {
  for (const img of document.images) {
    img.scrollIntoView();
    if (!img.complete) await new Promise(done => {
      img.addEventListener('load', done); img.addEventListener('error', done);
      setTimeout(done, 10000);
    });
  }
  window.scrollTo(0, 0);
  return [...document.images].filter(i => !(i.naturalWidth > 0))
    .map(i => i.getAttribute('src'));
}"""

_LINKS_JS = """() => ({
  links: [...document.querySelectorAll('a[href]')].map(a => a.href)
           .filter(h => h.startsWith(location.origin)),
  ids: [...document.querySelectorAll('[id], a[name]')].map(e => e.id || e.name),
})"""

# Elements of the page's content and footer that reach past the viewport's edges. One
# inside a code block that scrolls sideways (Material's `pre > code`) is fine when the
# block shows its scrollbar (it takes room under the lines: offsetHeight exceeds
# clientHeight plus the borders); inside any other box that scrolls or clips, it is cut
# off; elsewhere it widens the page.
_OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  const faults = new Set();
  const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
    [...e.classList].map(c => '.' + c).join('');
  const where = e => {
    const h = e.parentElement && e.parentElement.closest('[id]');
    return h ? ' (in #' + h.id + ')' : '';
  };
  for (const root of document.querySelectorAll('.md-content, .md-footer')) {
    for (const el of root.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      if (r.right <= width + 1 && r.left >= -1) continue;
      if (getComputedStyle(el).visibility === 'hidden') continue;
      // The box whose overflow holds el: the nearest ancestor that does not show what
      // overflows it and that is itself overflowed.
      let box = el.parentElement;
      while (box && box !== root.parentElement &&
             (getComputedStyle(box).overflowX === 'visible' ||
              box.scrollWidth <= box.clientWidth + 1)) box = box.parentElement;
      if (!box || box === root.parentElement) {
        faults.add(name(el) + where(el) + ' reaches ' + Math.round(r.left) + '..' +
                   Math.round(r.right) + ' px');
        continue;
      }
      const s = getComputedStyle(box);
      const code = box.matches('pre > code');
      const bar = box.offsetHeight - box.clientHeight -
        parseFloat(s.borderTopWidth) - parseFloat(s.borderBottomWidth);
      if (code && (s.overflowX === 'auto' || s.overflowX === 'scroll') && bar > 0) continue;
      faults.add(name(box) + where(box) + (code ? ' scrolls sideways, showing no scrollbar'
        : ' is ' + box.scrollWidth + ' px wide in ' + box.clientWidth + ' px (' +
          s.overflowX + '): only code blocks may scroll'));
    }
  }
  const lines = [...faults];
  const page = document.documentElement.scrollWidth;
  if (page > width) lines.push('the page is ' + page + ' px wide');
  return lines.map(l => l + ' (content ' + width + ' px wide in a ' + innerWidth + ' px window)');
}"""

_AXE_JS = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => v.impact + ' ' + v.id + ': ' + v.help + ' (' + v.nodes.length + 'x: ' +
      v.nodes.slice(0, 3).map(n => n.target.join(' ') +
        (n.any[0] && n.any[0].message ? ' [' + n.any[0].message + ']' : '')).join('; ') +
      ')');
}"""


def _watch(page, report: PageReport, base: str) -> None:
    """Record the page's console errors, uncaught exceptions and failed requests."""
    page.on("console", lambda m: m.type == "error" and report.console_errors.append(
        f"{m.text} ({m.location.get('url', '')}:{m.location.get('lineNumber', '')})"))
    page.on("pageerror", lambda e: report.console_errors.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: report.failed_requests.append(
        f"{r.url}: {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and report.failed_requests.append(
        f"{r.url}: HTTP {r.status}"))
    # No request leaves this machine's server: the reader's browser asks no third party.
    origin = base[:base.index("/", len("http://"))]
    page.on("request", lambda r: not r.url.startswith((origin + "/", "data:", "blob:")) and
            report.failed_requests.append(f"{r.url}: a request to another site"))


async def _visit(context, url: str, report: PageReport, base: str):
    """Open `url` in a new tab of `context`, watched, loaded: the tab."""
    page = await context.new_page()
    _watch(page, report, base)
    await page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
    return page


async def _sweep_page(browser, base: str, path: str, limit: asyncio.Semaphore) -> PageReport:
    report = PageReport(path)
    async with limit:
        try:
            await _inspect(browser, base, path, report)
        except Exception as exc:  # a page that times out must not stop the others
            report.visit_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return report


async def _inspect(browser, base: str, path: str, report: PageReport) -> None:
    """Fill `report`: desktop light and dark (axe, and the rest once), then phone."""
    url = base + path
    for scheme, material in SCHEMES.items():
        context = await browser.new_context(viewport=DESKTOP, color_scheme=scheme)
        try:
            page = await _visit(context, url, report, base)
            shown = await page.evaluate("document.body.dataset.mdColorScheme")
            if shown != material:
                report.axe[scheme] = [f"Material showed scheme {shown!r}, not {material!r}"]
                continue
            if scheme == "light":
                report.broken_images = await page.evaluate(_IMAGES_JS)
                found = await page.evaluate(_LINKS_JS)
                report.links, report.ids = found["links"], set(found["ids"])
            await page.add_script_tag(path=str(AXE))
            report.axe[scheme] = await page.evaluate(_AXE_JS)
        finally:
            await context.close()
    context = await browser.new_context(viewport=PHONE)
    try:
        page = await _visit(context, url, report, base)
        report.overflow = await page.evaluate(_OVERFLOW_JS)
    finally:
        await context.close()


@contextlib.asynccontextmanager
async def chromium():
    """Debian's Chromium, headless, through Playwright (which downloads no browser)."""
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        # --no-sandbox: Chromium's sandbox refuses to run as root, and CI is root.
        # Playwright hides scrollbars by default; a reader's desktop browser shows them.
        browser = await p.chromium.launch(executable_path=str(chromium_path()),
                                          args=["--no-sandbox"],
                                          ignore_default_args=["--hide-scrollbars"])
        try:
            yield browser
        finally:
            await browser.close()


async def _sweep(base: str, paths: list[str]) -> dict[str, PageReport]:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with chromium() as browser:
        reports = await asyncio.gather(*(_sweep_page(browser, base, p, limit) for p in paths))
    return {r.path: r for r in reports}


def sweep(base: str, paths: list[str]) -> dict[str, PageReport]:
    """Visit every page of `paths` (page_paths' form) under `base`: a report per path."""
    return asyncio.run(_sweep(base, paths))


async def _search(base: str, query: str) -> list[str]:
    async with chromium() as browser:
        page = await browser.new_page(viewport=DESKTOP)
        await page.goto(base, wait_until="load", timeout=TIMEOUT_MS)
        # Material's search box: the header's field, fed by a worker over the index.
        await page.click("label.md-search__icon[for=__search], .md-search__input")
        await page.locator("input.md-search__input").press_sequentially(query, delay=20)
        # The results' count line replaces "Initializing search" once the query ran:
        # "No matching documents", "1 matching document", "N matching documents".
        await page.wait_for_function(
            "document.querySelector('.md-search-result__meta').textContent"
            ".includes('matching document')", timeout=TIMEOUT_MS)
        items = page.locator(".md-search-result__item > .md-search-result__link")
        hrefs = await items.evaluate_all("l => l.map(a => a.href)")
        return [page_key(h, base) for h in hrefs]


def search(base: str, query: str) -> list[str]:
    """Type `query` into Material's search box on the home page: the pages of the results
    shown, in page_paths' form, best first (none when nothing matched)."""
    return asyncio.run(_search(base, query))


async def _screenshots(base: str, shots: list[tuple[str, str]], out: Path) -> list[Path]:
    written = []
    async with chromium() as browser:
        for scheme in SCHEMES:
            # A phone's browser: touch, and scrollbars drawn over the page only while
            # it scrolls.
            for device, options in (("desktop", {"viewport": DESKTOP}),
                                    ("phone", {"viewport": PHONE, "is_mobile": True,
                                               "has_touch": True})):
                context = await browser.new_context(color_scheme=scheme, **options)
                try:
                    page = await context.new_page()
                    for name, path in shots:
                        await page.goto(base + path, wait_until="networkidle",
                                        timeout=TIMEOUT_MS)
                        file = out / f"{name}-{scheme}-{device}.png"
                        await page.screenshot(path=str(file))
                        written.append(file)
                finally:
                    await context.close()
    return written


def screenshots(base: str, shots: list[tuple[str, str]], out: Path = SCREENSHOTS) -> list[Path]:
    """Screenshot each (name, path) of `shots` light and dark, at desktop (1440x900) and
    phone (390x844) size, into `out` as NAME-SCHEME-DEVICE.png: the files written."""
    out.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_screenshots(base, shots, out))
