"""The one registry of pages: every `snippets/<name>.py` that defines `page`.

$DEEPDIVE_SNIPPETS names another directory of snippets; a lab run inherits it with the
environment, so a page written elsewhere (a test's throwaway page) runs in the real lab.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import traceback
from pathlib import Path

from deepdive.model import DeepDiveError, Page, SnippetError

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = Path(os.environ.get("DEEPDIVE_SNIPPETS") or ROOT / "snippets")


def names(snippets: Path = SNIPPETS) -> list[str]:
    return sorted(p.stem for p in snippets.glob("*.py") if not p.stem.startswith("_"))


def load(name: str, snippets: Path = SNIPPETS) -> Page:
    """Import snippets/<name>.py and return its validated page."""
    known = names(snippets)
    if name not in known:
        raise DeepDiveError(f"no page {name!r}; pages: {', '.join(known) or '(none)'}")
    path = snippets / f"{name}.py"
    shown = _shown(path)
    spec = importlib.util.spec_from_file_location(f"snippets.{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SnippetError:
        raise
    except SyntaxError as exc:
        raise SnippetError(f"{shown}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # any mistake in a snippet is reported at its line
        raise SnippetError(f"{shown}:{_line_in(exc, path)}: {type(exc).__name__}: {exc}") from None
    page = getattr(module, "page", None)
    if not isinstance(page, Page):
        raise SnippetError(f"{shown}:1: defines no `page = Page(...)`")
    if page.name != name:
        raise SnippetError(f"{page.where}: page is named {page.name!r} but its file is {name}.py")
    page.validate()
    return page


def load_unchanged(name: str, snippets: Path = SNIPPETS) -> Page:
    """load(), done once per process while snippets/<name>.py is unchanged, for readers
    that leave the Page as it is (the site build imports each snippet once, not once per
    macro call and hook)."""
    path = snippets / f"{name}.py"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = None  # load() says what is wrong
    return _load_stamped(name, snippets, stamp)


@functools.lru_cache(maxsize=None)
def _load_stamped(name: str, snippets: Path, stamp: int | None) -> Page:
    return load(name, snippets)


def load_all(snippets: Path = SNIPPETS) -> list[Page]:
    return [load(n, snippets) for n in names(snippets)]


def _line_in(exc: BaseException, path: Path) -> int | str:
    """The deepest traceback line that lies in the snippet file."""
    line: int | str = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno or "?"
    return line


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)

