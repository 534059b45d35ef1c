"""MkDocs hook (mkdocs.yml `hooks:`): every page's HTML deck in the built site, and the
table of decks and diagrams on the slides page.

The decks are made at build time by deepdive.slides, the code behind `invoke
slides.export`, and added as generated files at decks/<page>.html, so no deck is
committed and Markdown links to them are checked like any other. PDF decks need
Chromium, which the site build does not use; the slides page says how to make them.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # mkdocs loads a hook by path; the package must be importable
    sys.path.insert(0, _ROOT)

from mkdocs.exceptions import PluginError  # noqa: E402
from mkdocs.structure.files import File, Files  # noqa: E402

from deepdive import slides  # noqa: E402
from deepdive.model import DeepDiveError  # noqa: E402

PAGE = "slides.md"
MARKER = "<!-- slides: listing -->"


def on_files(files: Files, config: Any) -> Files:
    docs = Path(config["docs_dir"])
    try:
        seen = slides.shown(docs)
        for page in slides.pages(docs):
            files.append(File.generated(config, f"{slides.DECKS}/{page}.html",
                                        content=slides.deck_html(page, docs, seen)))
    except DeepDiveError as exc:
        raise PluginError(str(exc)) from None  # one line, as mkdocs reports a plugin's error
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE}: no {MARKER} line, where the table of slides goes")
    try:
        return markdown.replace(MARKER, slides.listing(Path(config["docs_dir"]), _nav_docs(config["nav"])))
    except DeepDiveError as exc:
        raise PluginError(str(exc)) from None


def _nav_docs(nav: Any) -> list[str]:
    """The Markdown paths of mkdocs.yml's nav, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_docs(v)]
    if isinstance(nav, list):
        return [p for v in nav for p in _nav_docs(v)]
    return []
