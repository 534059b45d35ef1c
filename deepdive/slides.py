"""Slides for speakers: diagrams and per-page decks, for `invoke slides.export`.

    export(pages=None, out=ROOT/"slides", pdf=True) -> Path

writes into one folder, for every diagram of the pages asked for (all pages with a
capture by default):

- `<page>-<step>.png` and `.svg` (and `-dark.svg` where one is drawn): copies of
  docs/diagrams/, the PNG exactly 1920x1080, the SVG self-contained;
- `<page>.html`: a deck, one self-contained HTML file of 16:9 slides, one per diagram and
  one per step the site shows (a step too long for one slide continues on the next,
  "(2/3)" in its title; a single command's output too long for a slide is cut in the
  middle with a line saying how many lines are left out);
- `<page>.pdf` (unless pdf=False): the same deck printed by headless Chromium, one slide
  per 1920x1080 px page.

Text is sized for a room: every font size is at least MIN_TEXT_PX at 1920x1080, whatever
the window (sizes are in container units of a slide, `cqw`), and output is wrapped by
this module at a fixed column count with a mark on each continued line, never shrunk.

Everything is made in a temporary folder beside the destination and moved in only once
complete, so a failure (unknown page, missing diagram, no Chromium) leaves the
destination as it was. The site's hook (hooks/slides.py) publishes the HTML decks with
deck_html().
"""
from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepdive import capture as _capture
from deepdive import console, reproduce
from deepdive.capture import DOCS, ROOT, CannotWrite, rel_path
from deepdive.macros import _inline, _text, png_size
from deepdive.model import PAGE_NAME_RE, DeepDiveError

OUT = ROOT / "slides"
DECKS = "decks"  # where the site publishes the HTML decks, beside its pages
SLIDE_W, SLIDE_H = 1920, 1080
MIN_TEXT_PX = 24
# Captured output's sizes, largest first: a step is shown in the largest that fits it on
# one slide, else in the smallest over as many slides as it needs.
CODE_PX = (36, 30, 24)
TITLE_PX = 44
FOOTER_PX = 24
LINE_HEIGHT = 1.25
PAD_X, PAD_Y = 48, 36
MONO_ADVANCE_EM = 0.61  # DejaVu Sans Mono advances 0.602 em; a little spare for others
# The body of a slide, where output goes: what is left of 1080 px under the title and
# above the footer.
BODY_PX = SLIDE_H - 2 * PAD_Y - (TITLE_PX + FOOTER_PX) * LINE_HEIGHT - 2 * 16
WRAP_MARK = "\u21aa "  # starts a row that continues the line above
MAX_PARTS = 3          # slides a step may take; the commands that do not fit are left out
HEAD_SHARE = 2 / 3     # of a cut output, the share kept from its start; the rest is its end
CHROMIUM_TIMEOUT = 120
# Chromiums printing at once. All 23 decks, back to back on 2 cores at load average ~25:
# 80 and 82 s one at a time, 68 and 91 s two at a time.
PDF_WORKERS = 2


@dataclass(frozen=True)
class Row:
    """One row of a step slide: its CSS class (cmd, out, err, rc, cut) and its text."""
    kind: str
    text: str


@dataclass(frozen=True)
class Slide:
    """The diagram drawn from `step`'s snapshot, or part `part` of `parts` of its output
    in `px` monospace text."""
    step: dict[str, Any]
    diagram: bool = False
    rows: tuple[Row, ...] = ()
    px: int = CODE_PX[-1]
    part: int = 1
    parts: int = 1


# --- what a page shows ---------------------------------------------------------------

def pages(docs: Path = DOCS) -> list[str]:
    """Every page with a capture, by name."""
    return sorted(p.stem for p in (docs / "captures").glob("*.json"))


def shown(docs: Path = DOCS) -> dict[str, dict[str, Any]]:
    """What the site's Markdown shows of each page's capture, from its macro calls:
    {page: {"steps": {step ids}, "diagrams": {step ids}, "doc": "interfaces/veth.md"}};
    "doc" is the file with the most calls for the page (the first in path order on a tie)."""
    seen: dict[str, dict[str, Any]] = {}
    counts: dict[str, dict[str, int]] = {}
    for md in sorted(docs.rglob("*.md")):
        src = md.relative_to(docs).as_posix()
        for macro, page, step_id in reproduce.shown(md.read_text(encoding="utf-8")):
            entry = seen.setdefault(page, {"steps": set(), "diagrams": set(), "doc": src})
            entry["steps" if macro == "step" else "diagrams"].add(step_id)
            per_doc = counts.setdefault(page, {})
            per_doc[src] = per_doc.get(src, 0) + 1
    for page, per_doc in counts.items():
        seen[page]["doc"] = max(per_doc, key=lambda src: (per_doc[src], src == seen[page]["doc"]))
    return seen


def diagram_files(capture: dict[str, Any], docs: Path = DOCS) -> dict[str, list[Path]]:
    """{step id: [png, svg, dark svg if drawn]} for every step that took a snapshot.
    DeepDiveError when a PNG or SVG is missing."""
    page = capture["page"]
    files: dict[str, list[Path]] = {}
    for step_id, _ in _capture.snapshots(capture):
        stem = docs / "diagrams" / f"{page}-{step_id}"
        png, svg, dark = (stem.with_name(stem.name + suffix) for suffix in (".png", ".svg", "-dark.svg"))
        for f in (png, svg):
            if not f.is_file():
                raise DeepDiveError(f"page {page}: no diagram at {rel_path(f)}; "
                                    f"`invoke lab.draw --page {page}` draws it")
        files[step_id] = [png, svg] + ([dark] if dark.is_file() else [])
    return files


# --- a deck --------------------------------------------------------------------------

def plan(capture: dict[str, Any], show: dict[str, Any] | None, docs: Path = DOCS) -> list[Slide]:
    """The deck's slides in the capture's step order: each shown step's output (one or
    more parts), then its diagram if shown. `show` is shown()'s entry for the page;
    None (a page no Markdown shows) shows every step and every diagram."""
    drawn = diagram_files(capture, docs)
    slides: list[Slide] = []
    for s in capture["steps"]:
        if show is None or s["id"] in show["steps"]:
            px, parts = _layout(s)
            slides += [Slide(s, rows=tuple(p), px=px, part=i, parts=len(parts))
                       for i, p in enumerate(parts, 1)]
        if s["id"] in drawn and (show is None or s["id"] in show["diagrams"]):
            slides.append(Slide(s, diagram=True))
    return slides


def rows_cols(px: int) -> tuple[int, int]:
    """How many rows, and characters per row, of `px` monospace text a slide's body holds."""
    return int(BODY_PX // (px * LINE_HEIGHT)), int((SLIDE_W - 2 * PAD_X) // (px * MONO_ADVANCE_EM))


def _layout(step: dict[str, Any]) -> tuple[int, list[list[Row]]]:
    """(text size, rows of each slide): the largest CODE_PX that holds the whole step on
    one slide, else the smallest, over at most MAX_PARTS slides."""
    for px in CODE_PX:
        limit, cols = rows_cols(px)
        blocks = _blocks(step, cols)
        if sum(map(len, blocks)) <= limit:
            return px, [[row for block in blocks for row in block]]
    # A command's rows are cut to leave room for a row saying what a cut step leaves out.
    parts = _paginate([_cut(block, limit - 1) for block in blocks], limit)
    return px, [[row for block in part for row in block] for part in parts]


def _blocks(step: dict[str, Any], cols: int) -> list[list[Row]]:
    """Each command of `step` as rows of at most `cols` characters, in the order the
    site's console block shows them (deepdive.console: a background command's output
    after the commands it ran beside, behind the line that stopped it)."""
    kinds = {"cmd": "cmd", "cont": "cmd", "stdout": "out", "stderr": "err", "rc": "rc"}
    blocks: list[list[Row]] = []
    for line in console.lines(step):
        if line.kind == "cmd":
            blocks.append(_wrapped("cmd", "$ " + line.text, cols))
        else:
            blocks[-1] += _wrapped(kinds[line.kind], line.text, cols)
    return blocks


def _wrapped(kind: str, text: str, cols: int) -> list[Row]:
    """`text`'s lines cut into rows of at most `cols` characters, after a space where
    one is in a row's second half; continued rows start with WRAP_MARK."""
    rows = []
    for line in text.split("\n"):
        line, width = line.expandtabs(8), cols
        while len(line) > width:
            cut = line.rfind(" ", width // 2, width) + 1 or width
            rows.append(Row(kind, line[:cut]))
            line, width = WRAP_MARK + line[cut:], cols
        rows.append(Row(kind, line))
    return rows


def _cut(rows: list[Row], limit: int) -> list[Row]:
    """`rows` if there are at most `limit`, else their start and end around a row saying
    how many are left out (the command's own rows come first, so they stay)."""
    if len(rows) <= limit:
        return rows
    head = int((limit - 1) * HEAD_SHARE)
    tail = limit - 1 - head
    mark = Row("cut", f"\u22ee {len(rows) - head - tail} more rows of output, all on the site's page")
    return rows[:head] + [mark] + rows[-tail:]


def _paginate(blocks: list[list[Row]], limit: int) -> list[list[list[Row]]]:
    """Commands packed in order onto slides of at most `limit` rows, a command never
    split; past MAX_PARTS slides the rest is left out, and the last slide says so."""
    parts: list[list[list[Row]]] = [[]]
    for block in blocks:
        if parts[-1] and sum(map(len, parts[-1])) + len(block) > limit:
            parts.append([])
        parts[-1].append(block)
    if len(parts) > MAX_PARTS:
        parts = parts[:MAX_PARTS]
        while sum(map(len, parts[-1])) > limit - 1:
            parts[-1].pop()
        left_out = len(blocks) - sum(map(len, parts))
        parts[-1].append([Row("cut", f"\u22ee {left_out} more commands of this step, all on the site's page")])
    return parts


def deck_html(page: str, docs: Path = DOCS, every_shown: dict[str, dict[str, Any]] | None = None) -> str:
    """The page's deck as one self-contained HTML document (styles inline, diagrams as
    data: URIs). `every_shown`: shown(docs), when the caller has it (it reads every
    page's Markdown). DeepDiveError for an unknown page or a missing diagram."""
    capture = load(page, docs)
    slides = plan(capture, (shown(docs) if every_shown is None else every_shown).get(page), docs)
    drawn = diagram_files(capture, docs)
    meta = capture["meta"]
    source = f'{capture["title"]} \u00b7 Linux {meta["kernel"]}, {meta["lab"]} lab, {meta["date"]}'
    sections = []
    for n, slide in enumerate(slides, 1):
        title = _inline(slide.step["title"])
        if slide.parts > 1:
            title += f" ({slide.part}/{slide.parts})"
        if slide.diagram:
            svg = drawn[slide.step["id"]][1].read_bytes()
            uri = "data:image/svg+xml;base64," + base64.b64encode(svg).decode()
            alt = _text(f"Diagram: {slide.step['title']}")
            body = f'<img class="diagram" src="{uri}" alt="{alt}">'
        else:
            body = f'<pre class="px{slide.px}"><code>' + "&#10;".join(
                f'<span class="{r.kind}">{_text(r.text)}</span>' for r in slide.rows) + "</code></pre>"
        sections.append(f'<section class="slide" id="slide-{n}"><h1>{title}</h1>{body}'
                        f'<footer><span>{_text(source)}</span><span>{n}/{len(slides)}</span></footer></section>')
    return (f"<!doctype html>\n<!-- Generated by `invoke slides.export --page {page}`. Do not edit. -->\n"
            f'<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_text(capture['title'])}: slides</title><style>{css()}</style></head>"
            f"<body>{''.join(sections)}</body></html>\n")


def css() -> str:
    """The decks' style sheet. Sizes are in `cqw` of a slide (1 cqw = 19.2 px on a
    1920 px slide), so a slide scaled to any window keeps its layout."""
    sizes = "".join(f".px{px} {{ font-size: {_cqw(px)}; }}\n" for px in CODE_PX)
    return f"""
@page {{ size: {SLIDE_W}px {SLIDE_H}px; margin: 0; }}
html {{ background: #1f2933; scroll-snap-type: y mandatory; scrollbar-width: none; }}
body {{ margin: 0; }}
.slide {{ container-type: inline-size; box-sizing: border-box; position: relative;
  width: min(100%, {SLIDE_W / SLIDE_H * 100:.4f}vh); aspect-ratio: {SLIDE_W} / {SLIDE_H};
  margin: 0 auto; overflow: hidden; background: #fff; color: #1f2933;
  display: flex; flex-direction: column; scroll-snap-align: start;
  break-after: page; break-inside: avoid;
  font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }}
.slide:last-child {{ break-after: auto; }}
@media screen {{ .slide + .slide {{ margin-top: 1vh; }} }}
.slide > * {{ margin-left: {_cqw(PAD_X)}; margin-right: {_cqw(PAD_X)}; }}
h1 {{ font-size: {_cqw(TITLE_PX)}; line-height: {LINE_HEIGHT}; margin-top: {_cqw(PAD_Y)};
  margin-bottom: {_cqw(16)}; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
h1 code {{ font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; }}
pre {{ flex: 1; margin-top: 0; margin-bottom: 0; overflow: hidden;
  font-family: "DejaVu Sans Mono", "Liberation Mono", monospace;
  line-height: {LINE_HEIGHT}; white-space: pre; }}
{sizes}pre code {{ font: inherit; }}
.cmd {{ font-weight: bold; color: #102a43; }}
.out {{ color: #1f2933; }}
.err {{ color: #8a4b08; }}
.rc {{ color: #b42318; font-weight: bold; }}
.cut {{ color: #52606d; font-style: italic; }}
.diagram {{ flex: 1; min-height: 0; width: auto; object-fit: contain; }}
footer {{ display: flex; justify-content: space-between; gap: {_cqw(32)};
  font-size: {_cqw(FOOTER_PX)}; line-height: {LINE_HEIGHT}; color: #52606d;
  margin-top: {_cqw(16)}; margin-bottom: {_cqw(PAD_Y)}; white-space: nowrap; }}
footer span:first-child {{ overflow: hidden; text-overflow: ellipsis; }}
"""


def _cqw(px: float) -> str:
    """`px` on a SLIDE_W-wide slide, in cqw of the slide."""
    return f"{px * 100 / SLIDE_W:.4f}cqw"


def load(page: str, docs: Path = DOCS) -> dict[str, Any]:
    """The capture of `page`; DeepDiveError naming the pages there are otherwise."""
    known = pages(docs)
    if not isinstance(page, str) or not PAGE_NAME_RE.fullmatch(page) or page not in known:
        raise DeepDiveError(f"no page {page!r} with a capture; pages: {', '.join(known) or '(none)'}")
    return _capture.load(page, docs / "captures")


# --- the site's slides page ----------------------------------------------------------

def listing(docs: Path = DOCS, doc_order: list[str] | None = None) -> str:
    """Markdown for docs/slides.md: a table with a row per page (its title linked to the
    page that shows it, its deck at DECKS/<page>.html, each diagram's PNG and SVG), in
    the order of `doc_order` (Markdown paths, as in the nav), unknown pages last."""
    seen = shown(docs)
    order = {src: i for i, src in enumerate(doc_order or [])}
    rows = []
    for page in sorted(pages(docs), key=lambda p: (order.get(seen.get(p, {}).get("doc"), len(order)), p)):
        capture = load(page, docs)
        title = _markdown_text(capture["title"])
        if page in seen:
            title = f"[{title}]({seen[page]['doc']})"
        drawn = []
        for step_id, files in diagram_files(capture, docs).items():
            links = " · ".join(f"[{_format(f)}](diagrams/{f.name})" for f in files)
            drawn.append(f"`{page}-{step_id}`: {links}")
        rows.append(f"| {title} | [HTML]({DECKS}/{page}.html) | {'<br>'.join(drawn) or 'none'} |")
    return "\n".join(["| Page | Deck | Diagrams (1920×1080) |", "|---|---|---|", *rows]) + "\n"


def _format(path: Path) -> str:
    return "dark SVG" if path.name.endswith("-dark.svg") else path.suffix[1:].upper()


def _markdown_text(s: str) -> str:
    """A title as Markdown link text: its `code` spans kept, brackets and bars escaped."""
    return re.sub(r"([\[\]|\\])", r"\\\1", s)


# --- export --------------------------------------------------------------------------

def export(names: list[str] | None = None, out: Path = OUT, pdf: bool = True,
           docs: Path = DOCS) -> Path:
    """Write the slides of `names` (default: every page) into `out` (see the module
    docstring) and return it. Files already in `out` that this export does not write
    stay. DeepDiveError, with `out` untouched, for an unknown page, a missing or
    mis-sized diagram, no Chromium when `pdf`, or a folder that cannot be written."""
    names = names or pages(docs)
    chromium = find_chromium() if pdf else None
    out = Path(out).absolute()
    if out.exists() and not (out.is_dir() and os.access(out, os.W_OK)):
        raise DeepDiveError(f"cannot write slides into {rel_path(out)}: not a writable directory")
    try:  # in the destination's parent, which must exist, so that no folder is left behind
        stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    except OSError as exc:
        raise CannotWrite(out, exc.strerror or str(exc)) from None
    try:
        seen = shown(docs)
        for page in names:
            _write(stage / f"{page}.html", deck_html(page, docs, seen))
            for f in (f for files in diagram_files(load(page, docs), docs).values() for f in files):
                if f.suffix == ".png" and png_size(f) != (SLIDE_W, SLIDE_H):
                    raise DeepDiveError(f"page {page}: {rel_path(f)} is not a {SLIDE_W}x{SLIDE_H} PNG; "
                                        f"`invoke lab.draw --page {page}` redraws it")
                _copy(f, stage / f.name)
        if chromium:
            with ThreadPoolExecutor(max_workers=PDF_WORKERS) as pool:
                list(pool.map(lambda page: print_pdf(chromium, stage / f"{page}.html", stage / f"{page}.pdf"),
                              names))
        _move_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def find_chromium() -> str:
    """The path of the `chromium` that prints PDFs; DeepDiveError if there is none."""
    found = shutil.which("chromium")
    if not found:
        raise DeepDiveError("the PDF decks need chromium, which is not on PATH: "
                            "`apt-get install chromium`, or export without PDF (--no-pdf)")
    return found


def print_pdf(chromium: str, html: Path, pdf: Path) -> None:
    """Print the deck `html` to `pdf` with headless Chromium, one slide per page."""
    with tempfile.TemporaryDirectory(prefix="deepdive-chromium-") as profile:
        argv = [chromium, "--headless", "--disable-gpu", "--no-pdf-header-footer",
                f"--user-data-dir={profile}", f"--print-to-pdf={pdf}", html.as_uri()]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DeepDiveError(f"chromium did not print {html.name} within {CHROMIUM_TIMEOUT} s") from None
        except OSError as exc:
            raise DeepDiveError(f"cannot run {chromium}: {exc.strerror or exc}") from None
    if res.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
        why = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
        raise DeepDiveError(f"chromium could not print {html.name} to PDF: {why}")


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CannotWrite(path, exc.strerror or str(exc)) from None


def _copy(src: Path, dst: Path) -> None:
    try:
        shutil.copyfile(src, dst)
    except OSError as exc:
        raise CannotWrite(dst, exc.strerror or str(exc)) from None


def _move_in(stage: Path, out: Path) -> None:
    """The staged files into `out`: the whole folder in one rename when `out` is new,
    else file by file, each replaced in one rename."""
    for f in stage.iterdir():
        os.chmod(f, 0o644)
    with contextlib.suppress(FileNotFoundError):
        os.chmod(stage, 0o755)  # mkdtemp makes 0700
    try:
        if not out.exists():
            os.rename(stage, out)
            return
        for f in sorted(stage.iterdir()):
            os.replace(f, out / f.name)
    except OSError as exc:
        raise CannotWrite(out, exc.strerror or str(exc)) from None
