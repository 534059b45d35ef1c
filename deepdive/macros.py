"""mkdocs-macros module: what a page shows of its capture and diagrams.

mkdocs.yml loads this file (`macros: module_name: deepdive/macros`) and a page calls:

    {{ diagram("veth", "up") }}      the SVG drawn from step "up"'s snapshot, and its PNG
    {{ step("veth", "create") }}     the step's commands and what the kernel printed
    {{ step("veth", "show", highlight=["link-netns ns2"]) }}   ... with those texts marked;
                                     the build fails if one is not in the step's output
    {{ checks("veth") }}             each claim the lab tested, passed or failed
    {{ captured("veth") }}           where and when the capture was recorded
    {{ reproduce("veth") }}          the verified count and the "Reproduce this page" box;
                                     on_pre_page_macros puts it under the title of a
                                     page whose front matter says `lab: veth`
    {{ quote("veth", "show", "link-netns ns2") }}   text the prose quotes from a step's
                                     output, as <code>; the build fails if it is not there

Everything is read from `<docs_dir>/captures/<page>.json` and `<docs_dir>/diagrams/`
at build time. A missing capture, step or diagram raises DeepDiveError naming the page and
`invoke lab.run --page <page>`; with `on_error_fail: true` that stops `mkdocs build`.

The macros emit HTML blocks, which Python-Markdown passes through only at the top level
of a page: write each call at the start of its own line, not indented inside a list, an
admonition or a tab. An indented call is reported as an error rather than mis-rendered.
Each block is a single line of HTML (newlines inside <pre> are written as `&#10;`), so no
Markdown preprocessor (fences, snippets, tab expansion) can see into captured output.
"""
from __future__ import annotations

import posixpath
import re
import struct
import sys
from pathlib import Path
from typing import Any, Sequence

# mkdocs-macros imports this file by path, not as part of the package, so make sure the
# package it belongs to is importable when the project is not installed.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from deepdive import capture as _capture  # noqa: E402
from deepdive import reproduce as _reproduce  # noqa: E402
from deepdive import registry as _registry  # noqa: E402
from deepdive import console  # noqa: E402
from deepdive.console import text as _text  # noqa: E402
from deepdive.model import PAGE_NAME_RE, DeepDiveError  # noqa: E402

MACROS = ("step", "diagram", "checks", "captured")
_INDENTED_CALL = re.compile(r"^([ \t]+)\{\{-?\s*(%s)\s*\(" % "|".join(MACROS), re.MULTILINE)
_CODE_SPAN = re.compile(r"`([^`]+)`")


def regenerate(page: str) -> str:
    return f"invoke lab.run --page {page}"


# --- pure renderers: capture dict in, one line of HTML out -------------------------------

def render_step(capture: dict[str, Any], step_id: str, highlight: Sequence[str] = ()) -> str:
    """The step's commands and what they printed, as deepdive.console lays them out:
    long lines wrapped, long outputs folded, background commands stopped where they
    were, and the texts in `highlight` marked. DeepDiveError naming page and step if a
    highlight is not in the step's output."""
    page = capture["page"]
    s = _capture.step(capture, step_id)
    anchor = _text(_step_anchor(page, step_id))
    try:
        block = console.lines(s, highlight)
    except DeepDiveError as exc:
        raise DeepDiveError(f"page {page}, step {step_id}: {exc}; fix the highlight, or "
                            f"`{regenerate(page)}` if the capture is out of date") from None
    return (f'<figure class="dd-step" id="{anchor}">'
            f'<figcaption>{_inline(s["title"])}'
            f'<a class="dd-anchor" href="#{anchor}" title="Link to this step">&#182;</a></figcaption>'
            f'{console.render(block)}'
            f'</figure>')


def render_checks(capture: dict[str, Any], shown: set[str] | None = None) -> str:
    """Each claim with ✓ or ✗ and the step it was tested after.

    `shown`: ids of the steps the page shows (reproduce.shown_steps); a claim's step
    among them is linked to its anchor, step-PAGE-ID; one not shown is said to be so,
    never linked, so no link points at an anchor the page lacks. None: no links."""
    titles = {s["id"]: s["title"] for s in capture["steps"]}
    if not capture.get("checks"):
        raise DeepDiveError(f"page {capture['page']}: its capture records no checks; "
                            f"`{regenerate(capture['page'])}` runs them")
    items = []
    for c in capture["checks"]:
        passed = bool(c.get("passed"))
        mark = "&#10003;" if passed else "&#10007;"
        word = "passed" if passed else "failed"
        step_id = c.get("after", "")
        after = f'&#8220;{_inline(titles.get(step_id, step_id))}&#8221;'
        if shown is not None and step_id in shown:
            after = f'<a href="#{_text(_step_anchor(capture["page"], step_id))}">{after}</a>'
        elif shown is not None:
            after += " (not shown on this page)"
        items.append(
            f'<li class="dd-check dd-{word}"><span class="dd-mark" title="{word}">{mark}</span> '
            f'<span class="dd-claim">{_inline(c["claim"])}</span> '
            f'<span class="dd-after">tested after the step {after}: {word}</span></li>')
    return f'<ul class="dd-checks" id="{_text("checks-" + capture["page"])}">{"".join(items)}</ul>'


def render_captured(capture: dict[str, Any]) -> str:
    """One line: when, on which kernel and tools, in which lab; how to reproduce."""
    page = capture["page"]
    m = capture.get("meta", {})
    try:
        parts = (f'Captured on {m["date"]} with Linux {m["kernel"]}, {m["iproute2"]}, '
                 f'pyroute2 {m["pyroute2"]}, {m["lab"]} lab.')
    except KeyError as exc:
        raise DeepDiveError(f"page {page}: its capture's meta has no {exc.args[0]!r}; "
                            f"`{regenerate(page)}` rewrites it") from None
    return (f'<p class="dd-captured">{_text(parts)} '
            f'Reproduce with <code>{_text(regenerate(page))}</code>.</p>')


def render_quote(capture: dict[str, Any], step_id: str, text: str) -> str:
    """`text` as inline <code>, once it is found in what step `step_id` printed.

    Prose that quotes output does it through this, so a page cannot describe output
    that its capture does not hold. `text` must occur in one command's stdout or stderr;
    " ... " in it stands for anything (several lines included) between parts that occur
    in that order. Raises DeepDiveError naming page, step and text otherwise."""
    page = capture["page"]
    s = _capture.step(capture, step_id)
    parts = text.split(" ... ") if isinstance(text, str) else [""]
    if not all(p.strip() for p in parts):
        raise DeepDiveError(f"page {page}, step {step_id}: quote {text!r} quotes nothing")
    pattern = re.compile(".*?".join(re.escape(p) for p in parts), re.DOTALL)
    outputs = [c.get(k) or "" for c in s["commands"] for k in ("stdout", "stderr")]
    if not any(pattern.search(out) for out in outputs):
        raise DeepDiveError(f"page {page}, step {step_id}: no output of the step contains {text!r}, "
                            f"which the prose quotes; fix the quote, or `{regenerate(page)}` if "
                            f"the capture is out of date")
    return f'<code class="dd-quote">{_text(text)}</code>'


def render_diagram(capture: dict[str, Any], step_id: str, docs_dir: Path, page_url: str,
                   alt: str = "") -> str:
    """<img>s of diagrams/<page>-<step>.svg and its -dark.svg relative to the page's URL
    (Material shows the one of the reader's scheme: #only-light, #only-dark; glightbox
    enlarges it on a click), with a link to the PNG."""
    page = capture["page"]
    s = _capture.step(capture, step_id)
    drawn = [sid for sid, _ in _capture.snapshots(capture)]
    if step_id not in drawn:
        raise DeepDiveError(
            f"page {page}: step {step_id!r} takes no snapshot, so it has no diagram "
            f"(steps with one: {', '.join(drawn) or 'none'})")
    files = {}
    for key, name in (("svg", ".svg"), ("dark", "-dark.svg"), ("png", ".png")):
        rel = f"diagrams/{page}-{step_id}{name}"
        if not (docs_dir / rel).is_file():
            raise DeepDiveError(f"page {page}: no diagram at {docs_dir.name}/{rel}; "
                                f"`{regenerate(page)}` draws it")
        files[key] = _text(relative_url(page_url, rel))
    size = png_size(docs_dir / f"diagrams/{page}-{step_id}.png")
    label = f"PNG for slides ({size[0]}&#215;{size[1]})" if size else "PNG for slides"
    alt = _text(alt or f"Diagram: {s['title']}")
    anchor = _text(f"diagram-{page}-{step_id}")
    return (f'<figure class="dd-diagram" id="{anchor}">'
            f'<img src="{files["svg"]}#only-light" alt="{alt}">'
            f'<img src="{files["dark"]}#only-dark" alt="{alt}">'
            f'<figcaption>Click the diagram to enlarge it. <a href="{files["png"]}">{label}</a></figcaption>'
            f'</figure>')


# --- helpers -------------------------------------------------------------------------

def _step_anchor(page: str, step_id: str) -> str:
    """The id render_step gives a step's figure."""
    return f"step-{page}-{step_id}"


def relative_url(page_url: str, target: str) -> str:
    """Path from the page at `page_url` (site-relative, e.g. "interfaces/veth/") to `target`.

    With directory URLs a page's URL ends in "/" and is itself the directory its HTML
    lives in; otherwise ("interfaces/veth.html") the directory is its parent.
    """
    base = page_url.rstrip("/") if page_url.endswith("/") else posixpath.dirname(page_url)
    return posixpath.relpath(target, base or ".")


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None if the file is not a PNG."""
    with path.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _inline(s: str) -> str:
    """Text from a snippet (a title, a claim) where `code` spans become <code>."""
    parts = _CODE_SPAN.split(s)
    return "".join(f"<code>{_text(p)}</code>" if i % 2 else _text(p) for i, p in enumerate(parts))


def _block(html_line: str) -> str:
    # Blank lines around the block so Markdown sees an HTML block, not a paragraph.
    return f"\n\n{html_line}\n\n"


# --- mkdocs-macros entry point -----------------------------------------------------------

def define_env(env) -> None:
    _report_in_one_line()
    docs_dir = Path(env.conf["docs_dir"])
    captures = docs_dir / "captures"

    loaded: dict[str, dict[str, Any]] = {}  # page -> its capture, read once per build
    checked: list[str | None] = [None]  # the Markdown last searched for indented calls

    def load(page: str) -> dict[str, Any]:
        if not isinstance(page, str) or not PAGE_NAME_RE.fullmatch(page):
            raise DeepDiveError(f"{env.page.file.src_path}: {page!r} is not a page name")
        if env.markdown is not checked[0]:  # once per page, not once per call
            _refuse_indented_calls(env)
            checked[0] = env.markdown
        if page not in loaded:  # a page calls a page's macros dozens of times
            loaded[page] = _capture.load(page, captures)
        return loaded[page]

    @env.macro
    def step(page: str, step_id: str, highlight: Sequence[str] | None = None) -> str:
        """The commands of step `step_id` of `page` and their captured output, with the
        texts in `highlight` marked (each must occur in that output)."""
        return _block(render_step(load(page), step_id, () if highlight is None else highlight))

    @env.macro
    def diagram(page: str, step_id: str, alt: str = "") -> str:
        """The diagram drawn from step `step_id`'s snapshot, with a link to its PNG."""
        return _block(render_diagram(load(page), step_id, docs_dir, env.page.url, alt))

    @env.macro
    def checks(page: str) -> str:
        """The claims the lab tested on `page`, each passed or failed."""
        return _block(render_checks(load(page), _reproduce.shown_steps(env.markdown or "", page)))

    @env.macro
    def captured(page: str) -> str:
        """When, where and with what `page`'s capture was recorded."""
        return _block(render_captured(load(page)))

    kernels: list[tuple[str, str, int]] = []

    @env.macro
    def reproduce(page: str) -> str:
        """Markdown: the verified count and the "Reproduce this page" box. Put at the top
        of every page whose front matter says `lab: PAGE` by on_pre_page_macros below."""
        capture = load(page)
        if not kernels:  # read every capture once per build, not once per page
            kernels.extend(_reproduce.site_kernels(captures))
        return "\n\n".join(["", _reproduce.verified_line(capture),
                             _reproduce.reproduce_box(capture, _registry.load_unchanged(page),
                                                      env.page.file.src_path, kernels,
                                                      env.conf.get("repo_url")), ""])

    @env.macro
    def quote(page: str, step_id: str, text: str) -> str:
        """`text`, inline, verified to be in the output of step `step_id` of `page`."""
        return render_quote(load(page), step_id, text)


def _report_in_one_line() -> None:
    """mkdocs-macros reports a macro's exception with a traceback; a DeepDiveError is a
    problem the user acts on, so it is reported as its one line, after the page's path."""
    try:
        from mkdocs_macros.errors import format_error
    except ImportError:  # a version without this hook: its own report stands
        return
    format_error.register(DeepDiveError, lambda error, markdown, page: f"{page.file.src_path}: {error}")


def _refuse_indented_calls(env) -> None:
    m = _INDENTED_CALL.search(env.markdown or "")
    if m:
        line = env.markdown.count("\n", 0, m.start()) + 1
        raise DeepDiveError(
            f"{env.page.file.src_path}:{line}: {m.group(2)}(...) is indented; its HTML block "
            f"only renders at the top level of a page, at the start of a line")


# --- the top of a lab page ---------------------------------------------------------------

_H1 = re.compile(r"^# .*\n", re.MULTILINE)


def on_pre_page_macros(env) -> None:
    """Under the title of a page whose front matter names its lab (`lab: veth`), the
    verified count and the "Reproduce this page" box: added here, from the front matter,
    so that no page can forget them or place them elsewhere. The call passes the value
    as it is, and reproduce() rejects one that is not a page name in one line."""
    if "lab" not in env.page.meta:
        return
    m = _H1.search(env.markdown)
    at = m.end() if m else 0
    env.markdown = env.markdown[:at] + "\n{{ reproduce(page.meta.lab) }}\n" + env.markdown[at:]
