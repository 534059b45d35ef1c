"""Clean text (deepdive.text): what a capture stores and what a terminal is shown."""
from __future__ import annotations

import time

import pytest

from deepdive.text import decode, sanitize_for_terminal

ESC = "\x1b"


@pytest.mark.parametrize("raw, shown", [
    # colour (SGR), as `ip -c` and grep --color print it
    (f"{ESC}[36mveth0{ESC}[0m@{ESC}[1;31mveth1{ESC}[m", "veth0@veth1"),
    # cursor movement, screen and line erase (CSI with parameters and a private marker)
    (f"a{ESC}[2J{ESC}[H{ESC}[?25lb{ESC}[K", "ab"),
    # window title: OSC ended by BEL and by ST
    (f"{ESC}]0;owned{chr(7)}x{ESC}]2;also{ESC}\\y", "xy"),
    # hyperlink (OSC 8), device control string, and an APC string
    (f"{ESC}]8;;http://x{ESC}\\link{ESC}]8;;{ESC}\\ {ESC}Pq#0{ESC}\\{ESC}_app{ESC}\\!", "link !"),
    # two- and three-byte ESC sequences: reset, keypad mode, charset selection
    (f"{ESC}c{ESC}={ESC}(Bok{ESC}7", "ok"),
    # 8-bit CSI (U+009B) and other C1 controls
    ("\u009b31mred\u009d0;t\u0007", "31mred0;t"),
    # an unterminated OSC loses its introducer; its text is left visible
    (f"{ESC}]0;no end", "0;no end"),
    # C0 controls and DEL go; newline and tab stay
    ("a\x00b\x07c\x08d\x0be\x0cf\x7fg\th\n", "abcdefg\th\n"),
])
def test_escape_sequences_and_controls_are_removed(raw, shown):
    assert sanitize_for_terminal(raw) == shown


@pytest.mark.parametrize("raw, shown", [
    ("line\r\nnext\r\n", "line\nnext\n"),                        # CRLF is a line end
    ("  0%\r 50%\r100%\ndone\n", "100%\ndone\n"),                # a progress meter: the last state
    ("abcdef\rXY\n", "XYcdef\n"),                                 # overwrites only what it covers
    ("trailing\r", "trailing"),
])
def test_carriage_returns_show_what_a_terminal_shows(raw, shown):
    assert sanitize_for_terminal(raw) == shown


def test_plain_text_is_returned_as_it_is():
    text = "2: veth0@if3: <BROADCAST,MULTICAST,UP> mtu 1500 – ünïcode ✓\n\tindented\n"
    assert sanitize_for_terminal(text) is text


def test_invalid_utf8_is_kept_visibly_and_valid_utf8_decoded():
    data = b"ok \xff\xfe caf\xc3\xa9 \xc3 end\n"
    assert decode(data) == "ok \\xff\\xfe caf\u00e9 \\xc3 end\n"
    decode(data).encode("utf-8")  # valid UTF-8 by construction


def test_decode_also_cleans():
    assert decode(b"\x1b[32mgreen\x1b[0m\r\n") == "green\n"


def test_sanitizing_a_megabyte_is_fast():
    # 1 MiB of coloured output, the worst ordinary case: an escape every few bytes.
    line = f"{ESC}[32m64 bytes{ESC}[0m from 10.0.0.2: icmp_seq=1 ttl=64 time=0.05 ms\r\n"
    data = (line * (2**20 // len(line))).encode()
    started = time.perf_counter()
    out = decode(data)
    elapsed = time.perf_counter() - started
    assert ESC not in out and "\r" not in out
    assert elapsed < 2.0, f"{elapsed * 1000:.0f} ms for 1 MiB"


# --- what the tasks print ---------------------------------------------------------------

def _capture(kernel: str, stdout: str) -> dict:
    return {"page": "veth", "title": "veth",
            "meta": {"kernel": kernel, "iproute2": "iproute2-6.1.0", "pyroute2": "0.9.7", "lab": "host",
                     "date": "2026-11-26"},
            "steps": [{"id": "show", "title": "Show", "snapshot": None,
                       "commands": [{"cmd": "ip link", "argv": ["ip", "link"], "rc": 0,
                                     "stdout": stdout, "stderr": ""}]}],
            "checks": [{"claim": "it shows", "after": "show", "passed": True}]}


def test_lab_check_prints_drift_without_control_sequences_and_notes_the_kernel(monkeypatch):
    import io

    from rich.console import Console

    from deepdive import capture, cli, lab

    # A hand-edited committed capture carries a title-setting sequence and a screen clear.
    committed = _capture("6.1.0-28-amd64", f"veth0 {ESC}]0;owned{chr(7)}{ESC}[2Jup\n")
    fresh = _capture("6.18.44", "veth0 down\n")
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, force_terminal=False, width=200))
    monkeypatch.setattr(lab, "pages", lambda page, all_pages: [])
    monkeypatch.setattr(cli, "outcomes", lambda pages, lab_name: iter(
        [lab.Outcome(page="veth", capture=fresh, seconds=1.0, lab="host")]))
    monkeypatch.setattr(capture, "load", lambda page, *a: committed)
    with pytest.raises(cli.DeepDiveError, match="1 page"):
        cli.check("veth")
    printed = out.getvalue()
    assert ESC not in printed and chr(7) not in printed
    lines = printed.splitlines()
    assert lines[1].startswith("page veth: note that the committed capture comes from Linux 6.1.0-28-amd64")
    assert "page veth, meta: kernel 6.1.0-28-amd64 -> 6.18.44" in lines
    assert "    -veth0 up" in lines and "    +veth0 down" in lines


def test_error_lines_of_the_tasks_carry_no_control_sequences(sigint_restored):
    from invoke import Exit

    import tasks
    from deepdive.model import DeepDiveError

    @tasks.one_line_errors
    def task():
        raise DeepDiveError(f"page x: `cat` exited 1: {ESC}]0;owned{chr(7)}{ESC}[31mno{ESC}[0m")

    with pytest.raises(Exit) as info:
        task()
    assert info.value.message == "error: page x: `cat` exited 1: no"
