"""Median wall times of building the site, full and dirty, and of exporting the slides.

    .venv/bin/python benchmarks/build.py [--repeat 5] [--page veth]

Like benchmarks/run.py (whose timing and reporting this uses), each measurement is a
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
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import INVOKE, ROOT, report, summarize  # noqa: E402

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
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement")
    parser.add_argument("--page", default="veth", help="the page touched for the dirty rebuilds")
    args = parser.parse_args()
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
