"""Text that is safe to store, publish and print: valid UTF-8, no control sequences.

What a command prints is decoded and cleaned once, when it is captured (`decode`), so a
capture holds only text a browser and a terminal show as text. Anything printed to a
terminal goes through `sanitize_for_terminal`, since error lines and drift diffs also
carry text that did not come through a capture (a hand-edited capture, a snippet's
strings, a process's command line).

Choices, and why:
- Bytes that are not UTF-8 become `\\xNN` (Python's backslashreplace): visible, never
  an error, and the rest of the output survives.
- Escape sequences are removed, colour included (not rendered as HTML): the pages show
  plain console text, and a stored sequence could retitle a window or clear a screen
  when a capture is printed. Removed: CSI (`ESC [ ... final`), OSC/DCS/SOS/PM/APC
  strings up to their terminator (BEL or `ESC \\`), other two- and three-byte ESC
  sequences, a lone ESC, and the 8-bit C1 controls (U+0080-U+009F) that some
  terminals obey like ESC sequences.
- A carriage return inside a line is resolved as a terminal would show it: later text
  overwrites earlier text from the start of the line (`50%\\r100%` shows `100%`, and
  `\\r\\n` is an ordinary line end). So progress meters keep only what a reader saw last.
- Other C0 controls and DEL are removed; newline and tab are kept.
"""
from __future__ import annotations

import re

# A string sequence (OSC, DCS, SOS, PM, APC) with its terminator, a CSI sequence, any
# other ESC sequence, then a stray ESC; C1 controls as the 8-bit forms of the same.
_ESCAPES = re.compile(
    r"\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)"   # OSC/DCS/SOS/PM/APC ... BEL or ST
    r"|\x1b\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"  # CSI params intermediates final
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]"               # ESC ( B, ESC 7, ESC c, ...
    r"|\x1b"
    r"|[\x80-\x9f]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # C0 but \t and \n, and DEL
_NEEDS_WORK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def decode(data: bytes) -> str:
    """Captured bytes as clean text: UTF-8, undecodable bytes shown as `\\xNN`."""
    return sanitize_for_terminal(data.decode("utf-8", errors="backslashreplace"))


def sanitize_for_terminal(text: str) -> str:
    """`text` without escape sequences or control characters other than \\n and \\t.

    Carriage returns are resolved per line as a terminal shows them (see the module
    docstring). Text that needs none of this, the usual case, is returned as it is.
    """
    if not _NEEDS_WORK.search(text):
        return text
    text = _ESCAPES.sub("", text)
    if "\r" in text:
        text = "\n".join(_overprint(line) for line in text.split("\n"))
    return _CONTROLS.sub("", text)


def _overprint(line: str) -> str:
    """What a terminal shows for `line` after each \\r returned the cursor to column 0."""
    if "\r" not in line:
        return line
    shown = ""
    for part in line.split("\r"):
        shown = part + shown[len(part):]
    return shown
