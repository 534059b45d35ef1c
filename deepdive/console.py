"""A step's console block as a reader reads it: deepdive.macros.render_step's layout.

    lines(step, highlight)   the block's lines in the order a terminal shows them
    render(lines, copy)      those lines as one line of HTML

Order. A background command (`tcpdump ... &`) is shown where it started, with what it
printed up to the text the lab waited for (its `ready` line, "listening on ..."); then
the commands that ran while it did; then, at the step's end, the line a reader types to
stop it as the lab did (`kill -INT %1`, `wait %1` for one that exited by itself, `kill
-KILL %1`), followed by the rest of its output. Those lines are part of what the copy
button copies, so a reader who pastes the block leaves nothing running.

Folding. One command's output longer than FOLD_OVER lines shows its first HEAD and last
TAIL lines (ping's statistics, a capture's count) and every line holding a highlight;
each run of at least MIN_FOLD other lines is one click away in a <details>. Valid HTML
cannot put <details> inside <pre>, so the block is a sequence of <pre>: the first holds
<code> (MkDocs Material gives it its copy button), the others <samp> (sample output, which
Material leaves alone: one copy button per step, copying the whole step's commands).

Highlights. Text the prose points at, declared by the page (`step(..., highlight=[...])`),
is marked with <mark> wherever it occurs in the step's output; one that occurs nowhere
raises DeepDiveError, so a page cannot point at output its capture does not have.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from deepdive.model import DeepDiveError

FOLD_OVER = 20  # lines of one command's output that are shown whole
HEAD, TAIL = 8, 4  # lines of a longer output that stay in view, at its start and end
MIN_FOLD = 4  # a fold hides at least this many lines; a shorter run stays in view

# HTML escapes, plus newline and tab as character references: the block stays one line,
# so no Markdown preprocessor (fences, snippets, tab expansion) acts on captured output.
_REFS = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
         "\n": "&#10;", "\t": "&#9;"}
_REFS_RE = re.compile("[%s]" % re.escape("".join(_REFS)))

# How a reader's shell stops a job as the lab stopped the command (execute.ENDINGS), and
# what the line's tooltip says happened.
_STOPS = {"exited": ("wait %{n}", "It exited by itself; `wait` collects its status."),
          "SIGINT": ("kill -INT %{n}", "The lab sent it SIGINT (Ctrl-C) at the step's end."),
          "SIGKILL": ("kill -KILL %{n}", "The lab killed it with SIGKILL at the step's end.")}


def text(s: str) -> str:
    """`s` as literal HTML text or attribute value, on one line."""
    return _REFS_RE.sub(lambda m: _REFS[m.group()], s)


@dataclass
class Line:
    """One line of the block. kind: "cmd" (a command's first line, after the prompt),
    "cont" (a command's further lines: a here-document), "stdout", "stderr", "rc".
    `output` numbers the command output a line belongs to (folding is per output), and
    `marks` are [start, end) character ranges to highlight."""
    kind: str
    text: str
    output: int = -1
    failed: bool = False  # stderr of a command whose exit status is not 0
    title: str = ""
    marks: tuple[tuple[int, int], ...] = ()


def lines(step: dict[str, Any], highlight: Sequence[str] = ()) -> list[Line]:
    """The step's lines in the order a terminal shows them (see the module docstring),
    with `highlight` marked. DeepDiveError if a highlight is not a line of text or
    occurs in no output of the step."""
    out: list[Line] = []
    jobs: list[tuple[int, dict[str, Any], list[Line]]] = []
    for i, c in enumerate(step["commands"]):
        out += _command(c["cmd"])
        printed = _output(c, i)
        if not c.get("background"):
            out += printed + _status(c)
            continue
        # Job numbers as a shell gives them: in the order the step started its jobs (each
        # step starts with none: the previous one stopped all of its own).
        n = len(jobs) + 1
        early = _until_ready(printed, c.get("ready", ""))
        out += early
        jobs.append((n, c, [line for line in printed if not any(line is e for e in early)]))
    for n, c, rest in jobs:
        stop, why = _STOPS[c["ended"]]
        out.append(Line("cmd", stop.format(n=n), title=why))
        out += rest + _status(c)
    _mark(out, highlight)
    return out


def commands(block: list[Line]) -> str:
    """What the copy button copies: every command line, one per line, no output."""
    return "\n".join(line.text for line in block if line.kind in ("cmd", "cont"))


def render(block: list[Line]) -> str:
    """The block as one line of HTML: <div class="dd-console" data-copy=...> around its
    <pre> parts and folds."""
    parts = []
    for i, (folded, run) in enumerate(_runs(block)):
        inner = "code" if i == 0 else "samp"
        pre = f'<pre><{inner}>{"&#10;".join(_span(line) for line in run)}</{inner}></pre>'
        if folded:
            pre = (f'<details class="dd-fold"><summary>{len(run)} more lines</summary>'
                   f'{pre}</details>')
        parts.append(pre)
    return f'<div class="dd-console" data-copy="{text(commands(block))}">{"".join(parts)}</div>'


# --- building the lines --------------------------------------------------------------------

def _command(cmd: str) -> list[Line]:
    first, *more = cmd.split("\n")
    return [Line("cmd", first)] + [Line("cont", m) for m in more]


def _output(c: dict[str, Any], index: int) -> list[Line]:
    failed = c.get("rc", 0) != 0
    found = []
    for kind in ("stdout", "stderr"):
        body = c.get(kind, "").rstrip("\n")
        if body:
            found += [Line(kind, t, index, failed and kind == "stderr") for t in body.split("\n")]
    return found


def _status(c: dict[str, Any]) -> list[Line]:
    rc = int(c.get("rc", 0))
    return [Line("rc", f"exit status {rc}")] if rc else []


def _until_ready(printed: list[Line], ready: str) -> list[Line]:
    """The lines a background command printed before the step went on: in each stream,
    those up to the first that holds its `ready` text. They show where it started."""
    early: list[Line] = []
    for kind in ("stdout", "stderr"):
        stream = [line for line in printed if line.kind == kind]
        hit = next((i for i, line in enumerate(stream) if ready and ready in line.text), None)
        if hit is not None:
            early += stream[:hit + 1]
    return early


def _mark(block: list[Line], highlight: Sequence[str]) -> None:
    if isinstance(highlight, str) or not all(isinstance(h, str) and h.strip() and "\n" not in h
                                             for h in highlight):
        raise DeepDiveError(f"highlight={highlight!r}: give a list of texts, each within one line")
    missing = []
    for h in highlight:
        hit = False
        for line in block:
            if line.kind in ("stdout", "stderr"):
                found = [(m.start(), m.end()) for m in re.finditer(re.escape(h), line.text)]
                line.marks += tuple(found)
                hit = hit or bool(found)
        if not hit:
            missing.append(h)
    if missing:
        raise DeepDiveError(f"highlight {missing[0]!r} is in no output line of the step")


# --- folding and HTML ----------------------------------------------------------------------

def _runs(block: list[Line]) -> list[tuple[bool, list[Line]]]:
    """The block cut into (folded, lines) runs, in order. Two folds never touch: a
    kept line (an output's last TAIL) always stands between them."""
    hidden = _hidden(block)
    runs: list[tuple[bool, list[Line]]] = []
    for i, line in enumerate(block):
        if runs and runs[-1][0] == (i in hidden):
            runs[-1][1].append(line)
        else:
            runs.append((i in hidden, [line]))
    return runs


def _hidden(block: list[Line]) -> set[int]:
    """Indexes in `block` of the lines to fold away."""
    outputs: dict[int, list[int]] = {}
    for i, line in enumerate(block):
        if line.kind in ("stdout", "stderr"):
            outputs.setdefault(line.output, []).append(i)
    hidden: set[int] = set()
    for where in outputs.values():
        if len(where) <= FOLD_OVER:
            continue
        run: list[int] = []
        for k, i in enumerate(where + [-1]):
            # A run ends at a kept line, and where the output is cut in two (a background
            # command's lines before its `ready` line and after its stop).
            if run and i != run[-1] + 1:
                if len(run) >= MIN_FOLD:
                    hidden.update(run)
                run = []
            if i != -1 and HEAD <= k < len(where) - TAIL and not block[i].marks:
                run.append(i)
    return hidden


def _span(line: Line) -> str:
    classes = {"cmd": "dd-cmd", "cont": "dd-cmd", "stdout": "dd-stdout",
               "stderr": "dd-stderr dd-error" if line.failed else "dd-stderr", "rc": "dd-rc"}
    title = f' title="{text(line.title)}"' if line.title else ""
    prompt = '<span class="dd-prompt">$ </span>' if line.kind == "cmd" else ""
    return f'<span class="dd-line {classes[line.kind]}"{title}>{prompt}{_marked(line)}</span>'


def _marked(line: Line) -> str:
    """The line's text, escaped, with its highlight ranges (merged where they overlap)
    in <mark>."""
    html, at = [], 0
    for start, end in sorted(line.marks):
        if end <= at:
            continue
        start = max(start, at)
        html += [text(line.text[at:start]), f'<mark class="dd-hl">{text(line.text[start:end])}</mark>']
        at = end
    html.append(text(line.text[at:]))
    return "".join(html)
