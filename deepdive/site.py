"""Build and serve the site with MkDocs, for the `site` tasks.

MkDocs runs as `python -m mkdocs` with this interpreter, from the project root, and
prints its own messages; a failure then ends in one DeepDiveError line below them.
Every capture is checked before MkDocs starts, so a corrupt one is one line naming its
file, not an error inside MkDocs' log.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deepdive import capture as captures
from deepdive.model import DeepDiveError

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mkdocs.yml"


def build(strict: bool = True, site_dir: str | Path | None = None, config: Path = CONFIG) -> None:
    """Build the site into `site_dir` (default: site/ beside mkdocs.yml).

    With `strict`, any MkDocs warning fails the build; a malformed capture, or a macro
    that cannot find a capture, step or diagram, fails it in any case.
    """
    check_captures(config.parent / "docs" / "captures")  # mkdocs.yml: docs_dir: docs
    argv = [sys.executable, "-m", "mkdocs", "build", "-f", str(config)]
    if strict:
        argv.append("--strict")
    if site_dir is not None:
        argv += ["-d", str(Path(site_dir).resolve())]
    rc, interrupted = _mkdocs(argv, config.parent)
    if interrupted:
        raise DeepDiveError("mkdocs build was interrupted; the site directory may be incomplete")
    if rc != 0:
        raise DeepDiveError(f"mkdocs build failed (exit status {rc}); its messages are above")


def check_captures(directory: Path) -> None:
    """Load every capture in `directory`: DeepDiveError naming the first malformed one."""
    for path in sorted(directory.glob("*.json")):
        captures.load(path.stem, directory)


def serve(addr: str = "127.0.0.1:8000") -> None:
    """Serve the site on `addr`, rebuilding on change, until interrupted."""
    check_captures(CONFIG.parent / "docs" / "captures")
    argv = [sys.executable, "-m", "mkdocs", "serve", "-f", str(CONFIG), "-a", addr]
    rc, interrupted = _mkdocs(argv)
    # Ctrl-C is how serving ends; any other exit is a failure mkdocs has described.
    if rc != 0 and not interrupted:
        raise DeepDiveError(f"mkdocs serve on {addr} stopped (exit status {rc}); its messages are above")


def _mkdocs(argv: list[str], cwd: Path = ROOT) -> tuple[int, bool]:
    """Run mkdocs in the foreground: (exit status, whether Ctrl-C ended it)."""
    # Material prints a banner about its end of life on every run; it has a switch for it.
    env = dict(os.environ)
    env.setdefault("NO_MKDOCS_2_WARNING", "1")
    proc = subprocess.Popen(argv, cwd=cwd, env=env)
    try:
        return proc.wait(), False
    except KeyboardInterrupt:
        # Ctrl-C reached mkdocs too (same process group); let it finish shutting down.
        return proc.wait(), True
