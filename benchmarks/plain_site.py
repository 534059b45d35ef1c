"""Two copies of the site for benchmarks/build.py: ours, and the same pages as plain
MkDocs Material would build them, each at 1x or Nx pages.

- ours: mkdocs.yml, docs/ (captures included) and what the configuration names
  (deepdive/, hooks/, overrides/, snippets/) in a directory of its own;
- plain: the Markdown of every page as our build hands it to Markdown (after
  mkdocs-macros and our hooks: front matter kept, the lab file pages and the slides
  table included), the decks and lab files our hooks add as plain files, the same
  static files, nav and Markdown extensions, and a mkdocs.yml with only
  `theme: material` (and its default search plugin): no macros, hooks, glightbox or
  overrides;
- Nx: every Markdown page of docs/ also copied N-1 times, `dir/page.md` to
  `dir-K/page.md` (`page-K.md` at the top), so that its relative links still resolve.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from deepdive.execute import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
LINKED = ("deepdive", "hooks", "overrides", "snippets")
DUMP_HOOK = Path(__file__).resolve().parent / "dump_markdown.py"
DUMP_DIR = "DEEPDIVE_BENCH_DUMP"  # environment variable naming where the hook writes


def ours(where: Path, copies: int) -> Path:
    """Our project in `where` with every page `copies` times; returns its mkdocs.yml."""
    where.mkdir(parents=True)
    for name in LINKED:
        (where / name).symlink_to(ROOT / name)
    shutil.copy(ROOT / "mkdocs.yml", where / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", where / "docs", ignore=shutil.ignore_patterns(".publish-*"))
    _copy_pages(where / "docs", copies)
    return where / "mkdocs.yml"


def plain(project: Path, where: Path) -> Path:
    """Plain Material's project in `where` for the pages of `project` (made by ours());
    builds `project` once to get its Markdown. Returns plain's mkdocs.yml."""
    dump, built = where / "markdown", where / "built"
    config = project / "mkdocs.yml"
    text = config.read_text()
    dumping = project / "mkdocs-dump.yml"
    dumping.write_text(text.replace("\nhooks:\n", f"\nhooks:\n  - {DUMP_HOOK}\n", 1))
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(dumping), "-d", str(built)],
                   check=True, env=dict(os.environ, NO_MKDOCS_2_WARNING="1", **{DUMP_DIR: str(dump)}),
                   preexec_fn=die_with_parent)
    docs = where / "docs"
    shutil.copytree(project / "docs", docs,
                    ignore=shutil.ignore_patterns("*.md", "captures"))
    shutil.copytree(dump, docs, dirs_exist_ok=True)
    for generated in ("decks/*.html", "labs/*.py"):  # files our hooks add that are no page
        for path in built.glob(generated):
            target = docs / path.relative_to(built)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    for name in LINKED:  # what pymdownx.snippets' --8<-- lines include
        (where / name).symlink_to(ROOT / name)
    blocks = "".join(_top_level(text, key) for key in ("not_in_nav", "markdown_extensions", "nav"))
    (where / "mkdocs.yml").write_text(f"site_name: plain\ndocs_dir: docs\ntheme:\n  name: material\n{blocks}")
    shutil.rmtree(built)
    return where / "mkdocs.yml"


def _copy_pages(docs: Path, copies: int) -> None:
    pages = [p for p in docs.rglob("*.md") if "captures" not in p.parts]
    for k in range(2, copies + 1):
        for page in pages:
            rel = page.relative_to(docs)
            if len(rel.parts) == 1:
                target = docs / f"{rel.stem}-{k}.md"
            else:
                target = docs / f"{rel.parts[0]}-{k}" / Path(*rel.parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(page, target)


def _top_level(text: str, key: str) -> str:
    """The block of a top-level YAML key in `text`, its indented lines included."""
    m = re.search(rf"^{key}:.*\n(?:(?: .*)?\n)*", text, re.MULTILINE)
    if not m:
        raise ValueError(f"mkdocs.yml has no top-level {key}")
    return m.group(0)
