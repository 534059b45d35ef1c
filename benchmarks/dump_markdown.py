"""MkDocs hook for benchmarks/plain_site.py: writes each page's Markdown as our build
hands it to Markdown (after mkdocs-macros and every other hook), front matter included,
under $DEEPDIVE_BENCH_DUMP/<its path in docs/>."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from mkdocs.plugins import event_priority


@event_priority(-100)  # after every plugin and hook: what Markdown then receives
def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    target = Path(os.environ["DEEPDIVE_BENCH_DUMP"]) / page.file.src_uri
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = f"---\n{yaml.safe_dump(page.meta, allow_unicode=True)}---\n" if page.meta else ""
    target.write_text(meta + markdown, encoding="utf-8")
    return markdown
