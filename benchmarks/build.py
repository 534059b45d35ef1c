"""Median wall times of building the site, full and dirty, and of exporting the slides.

    .venv/bin/python benchmarks/build.py [--repeat 5] [--page veth]

Like the other benchmarks (benchmarks/common.py times and reports), each measurement is a
fresh process, interpreter start and imports included, reported as the median of
--repeat runs with their min-max:

- site.build: `invoke site.build` into a temporary directory (strict, every page);
- decks alone: what the slides hook adds to every build, `slides.deck_html()` of every page;
- mkdocs build --dirty: after a full build into the same directory, the rebuild after
  one page's Markdown (--page, default veth) is touched;
- mkdocs serve --dirty: from touching that page to the served site's reload, as MkDocs
  logs it ("Reloading browsers");
- slides.export, every page, with --no-pdf and with PDF (Chromium once per page).

Touching a page changes its modification time only; its content stays as it is.

    .venv/bin/python benchmarks/build.py --section [--repeat 5]

prints the report's Markdown section instead (see section()): our build against plain
MkDocs Material on the same pages at 1x and 5x, lab.draw against bare `dot`, and the
slide export, each pair measured interleaved.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import INVOKE, ROOT, die_with_parent, report, summarize  # noqa: E402 (first: puts ROOT on sys.path)
import plain_site  # noqa: E402

from deepdive import slides  # noqa: E402

MKDOCS = [sys.executable, "-m", "mkdocs"]
SERVE_TIMEOUT = 300.0


def touched(page: str) -> Path:
    """The Markdown that shows `page`, to touch."""
    return ROOT / "docs" / slides.shown()[page]["doc"]


def dirty_build(page: str, site: str) -> list[str]:
    """argv that touches `page` and rebuilds `site` (already built) with --dirty."""
    argv = ["mkdocs", "build", "--dirty", "-q", "-d", site]
    return [sys.executable, "-c", f"import os, runpy, sys; os.utime({str(touched(page))!r}); "
                                  f"sys.argv = {argv!r}; runpy.run_module('mkdocs', run_name='__main__')"]


def serve_reload(page: str, repeat: int) -> None:
    """Time `mkdocs serve --dirty` from touching `page` to "Reloading browsers"."""
    with socket.socket() as s:  # a free port for this run
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.Popen([*MKDOCS, "serve", "--dirty", "-a", f"127.0.0.1:{port}"], cwd=ROOT,
                            env=env, preexec_fn=die_with_parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    times = []
    try:
        wait_for(proc, re.compile(r"Serving on"))
        for _ in range(repeat):
            started = time.perf_counter()
            os.utime(touched(page))
            wait_for(proc, re.compile(r"Reloading browsers"))
            times.append(time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    summarize("mkdocs serve --dirty, reload", times)


def wait_for(proc: subprocess.Popen, pattern: re.Pattern[str]) -> None:
    """Read mkdocs serve's log until a line matches `pattern`."""
    deadline = time.monotonic() + SERVE_TIMEOUT
    for line in proc.stdout:  # type: ignore[union-attr]
        if pattern.search(line):
            return
        if time.monotonic() > deadline:
            break
    sys.exit(f"error: mkdocs serve printed no line matching {pattern.pattern!r}")


# --- the report's section ----------------------------------------------------------

COPIES = 5  # "5x": every page five times
DIRTY_PAGE = "veth"


def run_timed(argv: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall s, CPU s: user + system of the process and its children) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, preexec_fn=die_with_parent)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, argv))} failed: {res.stderr.strip().splitlines()[-1:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def interleaved(cases: dict[str, tuple[list[str], Path, dict[str, str] | None]],
                repeat: int) -> dict[str, list[tuple[float, float]]]:
    """Each case run `repeat` times in turn (A, B, C, A, B, C, ...): {label: [(wall, cpu)]}."""
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in cases}
    for _ in range(repeat):
        for label, (argv, cwd, env) in cases.items():
            times[label].append(run_timed(argv, cwd, env))
    return times


def _row(label: str, runs: list[tuple[float, float]], against: list[tuple[float, float]] | None) -> str:
    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    ratio = " | " if against is None else (
        f"{statistics.median(wall) / statistics.median([w for w, _ in against]):.2f}x | "
        f"{statistics.median(cpu) / statistics.median([c for _, c in against]):.2f}x")
    return (f"| {label} | {statistics.median(wall):.2f} s | {min(wall):.2f}-{max(wall):.2f} s | "
            f"{statistics.median(cpu):.2f} s | {ratio} |")


def bare_dot_script(where: Path) -> Path:
    """A bash script that runs the two drawings every diagram needs, one `dot -Tsvg` of
    its graph as laid out and one `dot -Tpng` of its slide, for every committed capture's
    snapshots, with the glyphs beside them: the floor lab.draw is compared with."""
    from deepdive import capture as captures, diagram
    where.mkdir(parents=True)
    for name, png in diagram._glyph_pngs().items():
        (where / f"{name}.png").write_bytes(png)
    lines = ["set -e"]
    for page in slides.pages():
        for step_id, snap in captures.snapshots(captures.load(page)):
            stem = f"{page}-{step_id}"
            layout = diagram._layout(snap, stem, {})
            titles = diagram._title_places(snap, layout, {})
            (where / f"{stem}.gv").write_text(diagram._source(snap, layout, diagram.SLOTS, titles))
            (where / f"{stem}-slide.gv").write_text(diagram._source(snap, layout, diagram.LIGHT, titles, frame=True))
            lines += [f"dot -Tsvg {stem}.gv >/dev/null", f"dot -Tpng {stem}-slide.gv >/dev/null"]
    (where / "draw.sh").write_text("\n".join(lines) + "\n")
    return where / "draw.sh"


DRAW_ALL = ("import sys, tempfile; from pathlib import Path; from deepdive import capture as c, diagram, slides; "
            "out = Path(tempfile.mkdtemp()); "
            "[diagram.render(p, s, snap, out) for p in slides.pages() for s, snap in c.snapshots(c.load(p))]")


def section(repeat: int, pdf: bool = True) -> str:
    """The report's Markdown section on the site build, lab.draw and slide export."""
    from deepdive import diagram_fonts
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        configs = {}
        for copies in (1, COPIES):
            ours = plain_site.ours(work / f"ours-{copies}x", copies)
            configs[f"ours {copies}x"] = ours
            configs[f"plain {copies}x"] = plain_site.plain(ours.parent, work / f"plain-{copies}x")
        cases = {label: ([*MKDOCS, "build", "-q", "-f", str(cfg), "-d", str(work / "out" / label.replace(" ", "-"))],
                         cfg.parent, env) for label, cfg in configs.items()}
        cases["invoke site.build"] = ([*INVOKE, "site.build", "--dir", str(work / "out" / "site")], ROOT, env)
        site = interleaved(cases, repeat)
        dirty = interleaved({"dirty": (dirty_build(DIRTY_PAGE, str(work / "out" / "site")), ROOT, env)}, repeat)
        script = bare_dot_script(work / "dot")
        dot_env = dict(os.environ, FONTCONFIG_FILE=str(diagram_fonts.CONFIG))
        draw = interleaved({
            "draw all": ([sys.executable, "-c", DRAW_ALL], ROOT, None),
            "bare dot": (["bash", str(script)], script.parent, dot_env),
            "lab.draw unchanged": ([*INVOKE, "lab.draw"], ROOT, None)}, repeat)
        export = {"--no-pdf": ([*INVOKE, "slides.export", "--no-pdf", "--dir", str(work / "slides")], ROOT, None)}
        if pdf:
            export["PDF"] = ([*INVOKE, "slides.export", "--dir", str(work / "slides-pdf")], ROOT, None)
        exported = interleaved(export, repeat)
        diagrams = sum(1 for line in script.read_text().splitlines() if line.startswith("dot -Tsvg"))
    n = len(slides.pages())
    rows = [
        _row(f"our build, {n} lab pages (1x)", site["ours 1x"], site["plain 1x"]),
        _row("plain Material, same pages (1x)", site["plain 1x"], None),
        _row(f"our build, every page {COPIES} times ({COPIES}x)", site[f"ours {COPIES}x"], site[f"plain {COPIES}x"]),
        _row(f"plain Material, same pages ({COPIES}x)", site[f"plain {COPIES}x"], None),
        _row("`invoke site.build` (1x, captures checked first)", site["invoke site.build"], site["plain 1x"]),
        _row(f"`mkdocs build --dirty` after touching {DIRTY_PAGE}", dirty["dirty"], None),
        _row(f"drawing all {diagrams} diagrams (every input changed)", draw["draw all"], draw["bare dot"]),
        _row(f"bare `dot`: one SVG and one PNG per diagram", draw["bare dot"], None),
        _row("`invoke lab.draw`, no input changed", draw["lab.draw unchanged"], draw["bare dot"]),
        _row("`invoke slides.export --no-pdf`, all pages", exported["--no-pdf"], None),
    ]
    if pdf:
        rows.append(_row("`invoke slides.export` with PDF (Chromium)", exported["PDF"], exported["--no-pdf"]))
    return "\n".join([
        "## Site build, diagrams and slides", "",
        "| what | median wall | min-max wall | median CPU | ratio, wall | ratio, CPU |",
        "|---|---|---|---|---|---|", *rows, "",
        f"Median of {repeat} runs each, fresh processes, pairs run interleaved (A, B, A, B, ...); CPU is "
        "user + system time of the process and its children. Plain Material builds the same pages: the "
        "Markdown our build hands to Markdown (after mkdocs-macros and our hooks, front matter kept), "
        "the decks and lab files our hooks add, the same static files, nav and Markdown extensions, "
        "with a mkdocs.yml of only `theme: material` (and its default search): no macros, hooks, "
        f"glightbox or overrides. {COPIES}x: every Markdown page copied {COPIES - 1} more times beside it. "
        "A ratio compares with the plain build of the same size, `bare dot` with the two `dot` runs every "
        "diagram needs (its SVG layout and its 1920x1080 PNG), a PDF export with the export without PDF.",
        ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement")
    parser.add_argument("--page", default="veth", help="the page touched for the dirty rebuilds")
    parser.add_argument("--section", action="store_true",
                        help="print the report's Markdown section (interleaved, against plain Material)")
    parser.add_argument("--no-pdf", action="store_true", help="with --section: leave out the PDF export")
    args = parser.parse_args()
    if args.section:
        print(section(args.repeat, pdf=not args.no_pdf))
        return
    if args.page not in slides.shown():
        parser.exit(2, f"{parser.prog}: no page {args.page!r} shown on the site\n")
    pages = slides.pages()
    print(f"{len(pages)} pages; median of {args.repeat} runs, with min-max")
    print(f"{'what':34} {'median':>8} {'range':>16}")
    with tempfile.TemporaryDirectory() as out:
        report("site.build", [*INVOKE, "site.build", "--dir", out], args.repeat)
        report("decks alone (what the hook adds)",
               [sys.executable, "-c", "from deepdive import slides; "
                                      "[slides.deck_html(p) for p in slides.pages()]"], args.repeat)
        report("mkdocs build --dirty, one page", dirty_build(args.page, out), args.repeat)
    serve_reload(args.page, args.repeat)
    with tempfile.TemporaryDirectory() as out:
        report("slides.export --no-pdf, all pages", [*INVOKE, "slides.export", "--no-pdf", "--dir", out],
               args.repeat)
        report("slides.export with PDF, all pages", [*INVOKE, "slides.export", "--dir", out], args.repeat)


if __name__ == "__main__":
    main()
