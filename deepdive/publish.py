"""Publishing a run: its capture and its diagrams go into docs/ together or not at all.

publish(outcome) moves in this order:

1. A run with a failed check publishes nothing (ChecksFailed).
2. Stage, unlocked: the capture and every diagram are written into a directory of the
   run's own, docs/.publish-<page>-XXXXXXXX/new/ (the file system of docs/, so renames
   are atomic; a dot-directory, which mkdocs and git leave alone). When the published
   capture equals the run's up to volatile fields, it stays, and the diagrams are drawn
   from it, so they show the names its outputs show. The run holds a lock
   on its stage for as long as it lives, which is how others tell a live stage from a
   dead one.
3. Under an exclusive lock on docs/ (so concurrent runs of any pages take turns, each
   for milliseconds), with SIGINT, SIGTERM and SIGHUP held back until the end:
   - stages whose run was killed outright are undone and removed (see below);
   - staged files equal to the published ones are dropped, the capture compared with
     volatile fields masked, diagrams byte for byte; the rest is what the run reports
     as written;
   - every target that exists is hard-linked into the stage's old/, and the stage's
     manifest lists the targets;
   - the files are renamed into place, diagrams first and the capture last; then the
     manifest goes, and the stage with it.
   A rename that fails puts back what the renames before it replaced, from old/.

So an interrupt (Ctrl-C, SIGTERM, SIGHUP) at any moment leaves either nothing new in
place or the whole new set, and never a file of the stage behind: it takes effect
before the commit starts or once it is done. Only a run killed outright (SIGKILL)
between two renames, a window of a fraction of a millisecond (0.2 ms for three renames
here), can leave new diagrams beside an old capture; its stage stays, with its manifest
and the old files. The next publish of any page finds that stage unlocked and undoes
it: the old files go back, new targets that had none go away, and the previous set is
whole again (so too for a run killed after its last rename but before its manifest
went). Nothing is fsynced: after a power loss, what is on disk is the file system's
affair.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from deepdive import capture as captures
from deepdive.model import DeepDiveError

if TYPE_CHECKING:
    from deepdive.lab import Outcome

STAGE_PREFIX = ".publish-"
MANIFEST = "manifest.json"
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ChecksFailed(DeepDiveError):
    pass


def publish(outcome: Outcome, docs: Path = captures.DOCS) -> None:
    """Put the run's capture and diagrams in docs/captures and docs/diagrams, each only
    if its content changed, all together; append the paths written to outcome.written.

    Raises ChecksFailed when a check failed, DeepDiveError (one line naming the page)
    when the capture is malformed or a file cannot be written; then nothing changed."""
    if outcome.failed_checks:
        raise ChecksFailed(
            f"page {outcome.page}: {len(outcome.failed_checks)} check(s) failed; captures left as they were:\n"
            + "\n".join(f"  ✗ {c['claim']} (after step {c['after']}; {c.get('where', '?')})"
                        + (f": {c['error']}" if c.get("error") else "")
                        for c in outcome.failed_checks))
    problem = captures.shape_problem(outcome.capture)
    if problem:
        raise DeepDiveError(f"page {outcome.page}: the lab returned a malformed capture "
                            f"({problem}); nothing was published")
    outcome.written.extend(publish_files(outcome.page, outcome.capture, docs))


def publish_files(page: str, capture: dict[str, Any], docs: Path = captures.DOCS,
                  drawn: dict[str, bytes] | None = None) -> list[Path]:
    """Stage and commit `capture` and the diagrams of its snapshots; return the paths
    whose content changed (the capture only when its masked form did). `drawn`: the
    diagrams already drawn elsewhere ({file name: bytes}: the vagrant lab's VM), staged
    as they are instead of drawn here."""
    with _stage(page, docs) as stage:
        new = stage / "new"
        try:
            captures.atomic_write(new / "captures" / f"{page}.json", captures.dumps(capture).encode())
            if drawn is None:
                _draw(page, capture, new / "diagrams", docs)
            for name, data in (drawn or {}).items():
                captures.atomic_write(new / "diagrams" / name, data)
        except (captures.CannotWrite, OSError) as exc:  # OSError: graphviz's own temporary files
            reason = exc.reason if isinstance(exc, captures.CannotWrite) else exc.strerror or str(exc)
            raise _cannot_stage(page, docs, reason) from None
        try:
            with _locked(docs), _signals_held():
                for dead in _dead_stages(docs):
                    _undo(dead, docs)
                moves = _changed(stage, docs, capture)
                _commit(stage, docs, moves)
        except OSError as exc:
            left = ("new files may stand beside old ones until the next publish puts the old ones back"
                    if (stage / MANIFEST).exists() else "the published files are as they were")
            raise DeepDiveError(f"page {page}: cannot publish {_named(exc, stage, docs)}: "
                                f"{exc.strerror or exc}; {left}") from None
    return [docs / rel for rel in moves]


def _draw(page: str, capture: dict[str, Any], out: Path, docs: Path) -> None:
    from deepdive import diagram  # graphviz only when there is something to draw
    for step_id, snap in captures.snapshots(_drawn_from(capture, docs / "captures" / f"{page}.json")):
        # Drawn only when what it is drawn from changed (its digest, in the SVGs).
        diagram.render(page, step_id, snap, out, docs / "diagrams")


def _drawn_from(capture: dict[str, Any], published: Path) -> dict[str, Any]:
    """The capture the diagrams are drawn from: the published one when the run leaves
    it in place (equal up to volatile fields), so that a diagram never names a random
    veth the page's outputs do not show; else the run's own."""
    if captures.unchanged(capture, published):
        with contextlib.suppress(OSError, ValueError):
            return json.loads(published.read_text(encoding="utf-8"))
    return capture


@contextlib.contextmanager
def _stage(page: str, docs: Path) -> Iterator[Path]:
    """A fresh stage directory in `docs`, locked by this process, removed at the end.
    An interrupt while it is made takes effect once it can be removed."""
    stage: Path | None = None
    fd: int | None = None
    try:
        with _signals_held():
            try:
                docs.mkdir(parents=True, exist_ok=True)
                with _locked(docs):  # so that no one sees the stage before its lock is taken
                    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{page}-", dir=docs))
                    fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise _cannot_stage(page, docs, exc.strerror or str(exc)) from None
        yield stage
    finally:
        with _signals_held():
            if stage is not None and not (stage / MANIFEST).exists():  # else its undo failed:
                shutil.rmtree(stage, ignore_errors=True)                # the next run retries
            if fd is not None:
                os.close(fd)


def _changed(stage: Path, docs: Path, capture: dict[str, Any]) -> list[str]:
    """Paths relative to `docs` of the staged files that differ from the published ones,
    diagrams first, the capture last; staged files that do not differ are dropped."""
    new = stage / "new"
    changed = []
    for path in sorted((new / "diagrams").glob("*")):
        rel = f"diagrams/{path.name}"
        if _read(docs / rel) == path.read_bytes():
            path.unlink()
        else:
            changed.append(rel)
    rel = f"captures/{capture['page']}.json"
    if captures.unchanged(capture, docs / rel):
        (new / rel).unlink()
    else:
        changed.append(rel)
    return changed


def _commit(stage: Path, docs: Path, moves: list[str]) -> None:
    """Rename the staged files into place, keeping what they replace until all are in.
    On OSError nothing new is in place, unless putting the old files back failed too."""
    existed = []
    for rel in moves:
        target, old = docs / rel, stage / "old" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
        if os.path.lexists(target):
            old.parent.mkdir(parents=True, exist_ok=True)
            os.link(target, old, follow_symlinks=False)
            existed.append(rel)
    (stage / MANIFEST).write_text(json.dumps({"moves": moves, "existed": existed}))
    try:
        for rel in moves:
            os.rename(stage / "new" / rel, docs / rel)
    except OSError:
        _undo(stage, docs)
        raise
    (stage / MANIFEST).unlink()


def _undo(stage: Path, docs: Path) -> None:
    """Put back what a stage's commit replaced, then remove the stage. A stage without
    a manifest never started its commit, or finished it: it is only removed."""
    try:
        manifest = json.loads((stage / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {"moves": [], "existed": []}
    for rel in reversed(manifest["moves"]):
        if (stage / "new" / rel).exists():
            continue  # not moved yet
        if rel in manifest["existed"]:
            os.rename(stage / "old" / rel, docs / rel)
        else:
            (docs / rel).unlink(missing_ok=True)
    (stage / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(stage, ignore_errors=True)


def clean(docs: Path = captures.DOCS) -> list[Path]:
    """Undo and remove the stages of runs killed outright (for `lab.clean`; every
    publish does the same first). Returns the stages removed."""
    if not docs.is_dir():
        return []
    with _locked(docs), _signals_held():
        dead = _dead_stages(docs)
        for stage in dead:
            _undo(stage, docs)
    return dead


def _dead_stages(docs: Path) -> list[Path]:
    """Stages in `docs` whose run is gone: no process holds their lock."""
    dead = []
    for stage in docs.glob(f"{STAGE_PREFIX}*"):
        try:
            fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            dead.append(stage)
        except BlockingIOError:
            pass  # a run in progress
        finally:
            os.close(fd)
    return dead


def _cannot_stage(page: str, docs: Path, reason: str) -> DeepDiveError:
    return DeepDiveError(f"page {page}: cannot write into {captures.rel_path(docs)}: {reason}; "
                         "nothing was published")


def _named(exc: OSError, stage: Path, docs: Path) -> str:
    """The published file an OSError is about (not its staged copy), or docs/."""
    for name in (exc.filename2, exc.filename):
        if name and not Path(name).is_relative_to(stage):
            return captures.rel_path(Path(name))
    return captures.rel_path(docs)


@contextlib.contextmanager
def _locked(docs: Path) -> Iterator[None]:
    """An exclusive lock on the directory `docs`, for as long as the block runs."""
    fd = os.open(docs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back until the block is done, then deliver them.

    Python runs signal handlers in the main thread whichever thread the kernel picked,
    so replacing the handlers (rather than masking the signal in this thread) is what
    keeps them out. Only the main thread can do that; elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in HELD_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
