"""MkDocs hook (mkdocs.yml `hooks:`): every page's lab file published with the site.

For each snippets/NAME.py, the site gets labs/NAME.py, the file itself, and labs/NAME/,
a page that shows it and links back to the page it records. The "Reproduce this page"
box links there (deepdive/reproduce.py), so a reader of the site alone can read the lab.
"""
from __future__ import annotations

import json
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files
from mkdocs.utils.meta import get_data

# MkDocs imports a hook by path: the package it belongs to may not be importable yet.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deepdive import registry  # noqa: E402
from deepdive.reproduce import lab_file_uri  # noqa: E402


def on_files(files: Files, config) -> Files:
    pages = _pages_by_lab(files)
    for name in registry.names():
        src = registry.SNIPPETS / f"{name}.py"
        files.append(File.generated(config, lab_file_uri(name, "py"), abs_src_path=str(src)))
        files.append(File.generated(config, lab_file_uri(name), content=lab_page(name, pages.get(name))))
    return files


def lab_page(name: str, page_src: str | None) -> str:
    """The Markdown of labs/NAME.md: the snippet's source in a fenced block, and a link to
    the page whose lab it is, if any. The source is embedded rather than included, so
    that the page does not depend on where pymdownx.snippets looks; macros stay off, so
    `{{` in it is shown as written; glightbox stays off, as the page has no image."""
    source = (registry.SNIPPETS / f"{name}.py").read_text(encoding="utf-8")
    title = registry.load_unchanged(name).title
    back = ""
    if page_src:
        rel = posixpath.relpath(page_src, posixpath.dirname(lab_file_uri(name)))
        back = f" It is the lab of the page [{title}]({rel})."
    # A fence longer than any run of backticks in the source.
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", source)), default=0))
    # A JSON string is a YAML string, whatever the title holds.
    description = json.dumps(f"The lab file snippets/{name}.py: the steps and checks "
                             f"behind the page {title}.")
    return (f"---\ndescription: {description}\nrender_macros: false\n"
            f"search:\n  exclude: true\nglightbox: false\n---\n"
            f"# Lab file `snippets/{name}.py`\n\n"
            f"The steps, commands and checks that `invoke lab.run --page {name}` runs.{back} "
            f"Download it as [{name}.py]({name}.py){{: download }}.\n\n"
            f"{fence}python\n{source.rstrip()}\n{fence}\n")


def _pages_by_lab(files: Files) -> dict[str, str]:
    """{lab name: src path of the Markdown page whose front matter says `lab: NAME`}."""
    found: dict[str, str] = {}
    for f in files.documentation_pages():
        _, meta = get_data(f.content_string)
        if isinstance(meta.get("lab"), str):
            found[meta["lab"]] = f.src_uri
    return found
