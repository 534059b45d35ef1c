"""Slides: the exported folder, the decks' slides and text size, PDF pages, bad input."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepdive import slides
from deepdive.macros import png_size
from deepdive.model import DeepDiveError

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SECTION = re.compile(r'<section class="slide".*?</section>', re.DOTALL)


def make_docs(root: Path, edit=None) -> Path:
    """A docs/ with the real veth page, capture and diagrams; `edit(capture)` may change
    the capture first."""
    docs = root / "docs"
    (docs / "captures").mkdir(parents=True)
    (docs / "interfaces").mkdir()
    shutil.copy(ROOT / "docs/interfaces/veth.md", docs / "interfaces")
    shutil.copytree(ROOT / "docs/diagrams", docs / "diagrams",
                    ignore=lambda d, names: [n for n in names if not n.startswith("veth-")])
    capture = json.loads((ROOT / "docs/captures/veth.json").read_text())
    if edit:
        edit(capture)
    (docs / "captures" / "veth.json").write_text(json.dumps(capture))
    return docs


def shown_calls(md: Path, macro: str) -> set[str]:
    return set(re.findall(macro + r"""\(["']veth["'], ["']([a-z0-9-]+)["']""", md.read_text()))


def deck_slides(deck: str) -> list[str]:
    return SECTION.findall(deck)


def test_export_writes_each_diagram_and_the_deck(tmp_path):
    docs = make_docs(tmp_path)
    out = slides.export(["veth"], tmp_path / "out", pdf=False, docs=docs)
    drawn = sorted(p.name for p in (docs / "diagrams").iterdir())
    assert drawn, "the fixture has no diagrams"
    assert sorted(p.name for p in out.iterdir()) == sorted(drawn + ["veth.html"])
    for png in out.glob("*.png"):
        assert png_size(png) == (1920, 1080), png.name
    for svg in out.glob("*.svg"):
        assert svg.read_bytes() == (docs / "diagrams" / svg.name).read_bytes()
        assert "file:" not in svg.read_text() and 'href="/' not in svg.read_text()


def test_a_diagram_png_not_1920x1080_is_refused(tmp_path):
    docs = make_docs(tmp_path)
    png = next((docs / "diagrams").glob("*.png"))
    png.write_bytes(png.read_bytes()[:16] + (1280).to_bytes(4, "big") + (720).to_bytes(4, "big")
                    + png.read_bytes()[24:])
    with pytest.raises(DeepDiveError, match=r"is not a 1920x1080 PNG"):
        slides.export(["veth"], tmp_path / "out", pdf=False, docs=docs)
    assert not (tmp_path / "out").exists()


def test_a_deck_has_a_slide_per_shown_diagram_and_step(tmp_path):
    docs = make_docs(tmp_path)
    md = docs / "interfaces" / "veth.md"
    deck = slides.deck_html("veth", docs)
    found = deck_slides(deck)
    steps, diagrams = shown_calls(md, "step"), shown_calls(md, "diagram")
    assert "(1/" not in deck, "a veth step takes more than one slide; the count below assumes not"
    assert len(found) == len(steps) + len(diagrams)
    assert sum('<img class="diagram" src="data:image/svg+xml;base64,' in s for s in found) == len(diagrams)
    assert len(found) == deck.count("<section")
    assert re.search(r"<(?:img|link|script)[^>]+(?:src|href)=\"(?!data:)", deck) is None, "not self-contained"


def test_a_step_not_shown_on_the_page_has_no_slide(tmp_path):
    docs = make_docs(tmp_path)
    md = docs / "interfaces" / "veth.md"
    hidden, quoted = sorted(shown_calls(md, "step"))[:2]
    md.write_text(md.read_text().replace(f'step("veth", "{hidden}")', "nothing")
                  .replace(f'step("veth", "{quoted}")', f"step('veth', '{quoted}')"))
    assert len(deck_slides(slides.deck_html("veth", docs))) == len(shown_calls(md, "step")) + len(
        shown_calls(md, "diagram"))


def long_steps(capture: dict) -> None:
    """Step 0: one command printing 200 lines of 300 characters; step 1: 12 commands of
    25 lines each (more than MAX_PARTS slides)."""
    first, second = capture["steps"][0], capture["steps"][1]
    cmd = dict(first["commands"][0], rc=0, stderr="")
    first["commands"] = [dict(cmd, stdout="".join(f"line {i} " + "x" * 290 + "\n" for i in range(200)))]
    second["commands"] = [dict(cmd, cmd=f"echo {n}", stdout="y\n" * 25) for n in range(12)]


def test_long_steps_are_wrapped_cut_and_split_never_shrunk(tmp_path):
    docs = make_docs(tmp_path, long_steps)
    capture = slides.load("veth", docs)
    first, second = capture["steps"][0]["id"], capture["steps"][1]["id"]
    deck = slides.deck_html("veth", docs)
    plan = slides.plan(capture, slides.shown(docs)["veth"], docs)
    one = [s for s in plan if s.step["id"] == first and not s.diagram]
    two = [s for s in plan if s.step["id"] == second and not s.diagram]
    assert len(one) == 1 and one[0].px == min(slides.CODE_PX)
    assert any(r.kind == "cut" and "more rows of output" in r.text for r in one[0].rows)
    assert any(r.text.startswith(slides.WRAP_MARK) for r in one[0].rows)
    assert len(two) == slides.MAX_PARTS and [s.part for s in two] == [1, 2, 3]
    assert "more commands of this step" in two[-1].rows[-1].text
    assert f"({slides.MAX_PARTS}/{slides.MAX_PARTS})" in deck
    for s in plan:
        if not s.diagram:
            rows, cols = slides.rows_cols(s.px)
            assert len(s.rows) <= rows and all(len(r.text) <= cols for r in s.rows)


def test_text_is_at_least_24px_at_1920x1080(tmp_path):
    deck = slides.deck_html("veth", make_docs(tmp_path, long_steps))
    style = re.search(r"<style>(.*?)</style>", deck, re.DOTALL).group(1)
    sizes = re.findall(r"font-size:\s*([^;}]+)", style)
    assert sizes
    for size in sizes:
        m = re.fullmatch(r"([\d.]+)cqw", size.strip())
        assert m, f"font-size {size} does not scale with the slide"
        assert float(m.group(1)) * 1920 / 100 >= 24 - 1e-6, f"font-size {size} is under 24 px at 1920 px"
    used = set(re.findall(r'<pre class="(px\d+)"', deck))
    assert used and all(re.search(r"\." + c + r" \{ font-size", style) for c in used)
    assert "@page { size: 1920px 1080px; margin: 0; }" in style


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
def test_the_pdf_has_one_page_per_slide(tmp_path):
    out = slides.export(["veth"], tmp_path / "out", pdf=True, docs=make_docs(tmp_path, long_steps))
    pdf = (out / "veth.pdf").read_bytes()
    pages = re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf)
    assert len(pages) == len(deck_slides((out / "veth.html").read_text()))
    boxes = set(re.findall(rb"/MediaBox\s*\[([^\]]*)\]", pdf))
    assert {tuple(float(x) for x in b.split()) for b in boxes} == {(0, 0, 1440, 810)}  # 1920x1080 px in pt


# --- bad input: one line, a non-zero exit, the folder as it was --------------------------

def export_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "slides.export", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)


def assert_one_line(res: subprocess.CompletedProcess, words: str) -> None:
    assert res.returncode != 0
    assert res.stderr.count("\n") == 1 and words in res.stderr, res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_an_unknown_page_is_one_line_and_writes_nothing(tmp_path):
    res = export_cli("--page", "veth", "--page", "nosuch", "--no-pdf", "--dir", str(tmp_path / "out"))
    assert_one_line(res, "no page 'nosuch' with a capture; pages: ")
    assert list(tmp_path.iterdir()) == []


def test_no_chromium_for_the_pdf_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    env = dict(os.environ, PATH=str(tmp_path / "empty"))
    res = export_cli("--page", "veth", "--dir", str(out), env=env)
    assert_one_line(res, "the PDF decks need chromium, which is not on PATH")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_an_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    res = export_cli("--page", "veth", "--no-pdf", "--dir", str(tmp_path / "file" / "out"))
    assert_one_line(res, "cannot write")
    res = export_cli("--page", "veth", "--no-pdf", "--dir", str(tmp_path / "file"))
    assert_one_line(res, "not a writable directory")
    res = export_cli("--page", "veth", "--no-pdf", "--dir", str(tmp_path / "missing" / "out"))
    assert_one_line(res, "No such file or directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failure_midway_leaves_the_folder_as_it_was(tmp_path):
    docs = make_docs(tmp_path)
    out = tmp_path / "out"
    slides.export(["veth"], out, pdf=False, docs=docs)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    next((docs / "diagrams").glob("*.svg")).unlink()
    (docs / "interfaces" / "veth.md").write_text("changed: no step shown\n")
    with pytest.raises(DeepDiveError, match="no diagram at"):
        slides.export(["veth"], out, pdf=False, docs=docs)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "out"], "a stage was left behind"


def test_the_site_lists_every_page_deck_and_diagram(tmp_path):
    docs = make_docs(tmp_path)
    table = slides.listing(docs, ["interfaces/veth.md"])
    assert "[veth: a virtual Ethernet cable](interfaces/veth.md)" in html.unescape(table)
    assert f"[HTML]({slides.DECKS}/veth.html)" in table
    for f in (docs / "diagrams").iterdir():
        assert f"(diagrams/{f.name})" in table


def test_a_long_line_wraps_after_a_space_and_loses_nothing():
    line = "2: tun0: <NO-CARRIER,POINTOPOINT,UP> mtu 1500 qdisc pfifo_fast state DOWN " + "x" * 70
    rows = slides._wrapped("out", line, 40)
    assert [len(r.text) <= 40 for r in rows] == [True] * len(rows)
    assert rows[0].text == "2: tun0: <NO-CARRIER,POINTOPOINT,UP> " and rows[1].text.startswith(slides.WRAP_MARK + "mtu")
    assert "".join(r.text.removeprefix(slides.WRAP_MARK) for r in rows) == line


def load_hook():
    import importlib.util
    spec = importlib.util.spec_from_file_location("slides_hook", ROOT / "hooks" / "slides.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_the_site_publishes_each_deck_and_lists_it(tmp_path):
    from types import SimpleNamespace

    from mkdocs.config import load_config
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import Files

    hook, docs = load_hook(), make_docs(tmp_path)
    config = load_config(str(ROOT / "mkdocs.yml"), docs_dir=str(docs), site_dir=str(tmp_path / "site"))
    files = config.plugins.on_files(Files([]), config=config)  # the hook, as a build runs it
    deck = files.get_file_from_path(f"{slides.DECKS}/veth.html")
    assert deck is not None and deck.content_string == slides.deck_html("veth", docs)
    page = SimpleNamespace(file=SimpleNamespace(src_uri=hook.PAGE))
    text = hook.on_page_markdown(f"# Slides\n\n{hook.MARKER}\n", page, config, None)
    assert hook.MARKER not in text and f"[HTML]({slides.DECKS}/veth.html)" in text
    with pytest.raises(PluginError, match="no <!-- slides: listing --> line"):
        hook.on_page_markdown("# Slides\n", page, config, None)


def test_a_background_command_is_stopped_on_the_slide_as_on_the_page():
    step = {"id": "ping", "title": "Ping", "commands": [
        {"cmd": "tcpdump -i eth0 &", "rc": 0, "background": True, "ended": "SIGINT",
         "ready": "listening on", "stdout": "IP a > b: ICMP echo request\n",
         "stderr": "listening on eth0\n1 packet captured\n"},
        {"cmd": "ping -c 1 b", "rc": 0, "stdout": "1 received\n", "stderr": ""}]}
    rows = [(r.kind, r.text) for block in slides._blocks(step, 80) for r in block]
    assert rows == [("cmd", "$ tcpdump -i eth0 &"), ("err", "listening on eth0"),
                    ("cmd", "$ ping -c 1 b"), ("out", "1 received"),
                    ("cmd", "$ kill -INT %1"), ("out", "IP a > b: ICMP echo request"),
                    ("err", "1 packet captured")]


def test_the_site_reads_every_page_s_markdown_once_for_all_decks(tmp_path, monkeypatch):
    from mkdocs.config import load_config
    from mkdocs.structure.files import Files

    docs = make_docs(tmp_path)
    (docs / "captures" / "veth2.json").write_text(
        (docs / "captures" / "veth.json").read_text().replace('"page": "veth"', '"page": "veth2"'))
    for f in (docs / "diagrams").glob("veth-*"):
        shutil.copy(f, f.with_name(f.name.replace("veth-", "veth2-")))
    calls = []
    shown = slides.shown
    monkeypatch.setattr(slides, "shown", lambda *a: calls.append(a) or shown(*a))
    config = load_config(str(ROOT / "mkdocs.yml"), docs_dir=str(docs), site_dir=str(tmp_path / "site"))
    files = config.plugins.on_files(Files([]), config=config)  # the hook, as a build runs it
    assert {f.src_uri for f in files if f.src_uri.startswith(slides.DECKS)} == {f"{slides.DECKS}/veth.html", f"{slides.DECKS}/veth2.html"}
    assert len(calls) == 1
