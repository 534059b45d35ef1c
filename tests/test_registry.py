"""The registry (deepdive.registry): finding snippets and loading them, mistakes and all.

Snippet files are written to tmp_path; the real snippets/ are only read.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from deepdive import registry
from deepdive.model import DeepDiveError, Page, SnippetError

MARK = "# <- here"

GOOD = [
    "from deepdive.model import Page",
    'page = Page(name="{name}", title="A page")',
    'page.step("go", "Go", "ip link show")',
    '@page.check("go", "a claim")',
    "def _(lab):",
    "    return True",
]


def write(folder: Path, name: str, lines: list[str]) -> Path:
    path = folder / f"{name}.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def good(folder: Path, name: str) -> Path:
    return write(folder, name, [l.replace("{name}", name) for l in GOOD])


def marked_line(lines: list[str]) -> int:
    hits = [n for n, line in enumerate(lines, start=1) if MARK in line]
    assert len(hits) == 1
    return hits[0]


def failure(tmp_path: Path, name: str, lines: list[str]) -> tuple[str, str]:
    """Load a broken snippet; return its error message and the 'file:line:' it must start with."""
    path = write(tmp_path, name, lines)
    with pytest.raises(SnippetError) as info:
        registry.load(name, snippets=tmp_path)
    return str(info.value), f"{path.resolve()}:{marked_line(lines)}:"


# --- names() -------------------------------------------------------------------------

def test_names_lists_snippets_sorted_and_ignores_private_and_other_files(tmp_path):
    for name in ("vxlan", "bond", "tap"):
        good(tmp_path, name)
    write(tmp_path, "_helpers", ["X = 1"])
    write(tmp_path, "__init__", [])
    (tmp_path / "notes.txt").write_text("not a snippet\n")
    (tmp_path / "sub").mkdir()
    good(tmp_path / "sub", "nested")
    assert registry.names(tmp_path) == ["bond", "tap", "vxlan"]


def test_unknown_page_lists_the_known_pages(tmp_path):
    good(tmp_path, "alpha")
    good(tmp_path, "beta")
    write(tmp_path, "_private", ["X = 1"])
    with pytest.raises(DeepDiveError) as info:
        registry.load("gamma", snippets=tmp_path)
    message = str(info.value)
    assert "'gamma'" in message
    assert "alpha, beta" in message
    assert "_private" not in message


def test_a_private_module_is_not_a_page(tmp_path):
    write(tmp_path, "_private", ["X = 1"])
    with pytest.raises(DeepDiveError, match="no page '_private'"):
        registry.load("_private", snippets=tmp_path)


def test_unknown_page_in_an_empty_folder_says_there_are_none(tmp_path):
    with pytest.raises(DeepDiveError, match=r"\(none\)"):
        registry.load("veth", snippets=tmp_path)


# --- load() --------------------------------------------------------------------------

def test_load_returns_the_validated_page(tmp_path):
    good(tmp_path, "alpha")
    page = registry.load("alpha", snippets=tmp_path)
    assert isinstance(page, Page)
    assert page.name == "alpha"
    assert [s.id for s in page.steps] == ["go"]
    assert [c.claim for c in page.checks] == ["a claim"]


def test_load_all_loads_every_page(tmp_path):
    good(tmp_path, "alpha")
    good(tmp_path, "beta")
    assert [p.name for p in registry.load_all(tmp_path)] == ["alpha", "beta"]


def test_loading_twice_gives_independent_pages(tmp_path):
    good(tmp_path, "alpha")
    first = registry.load("alpha", snippets=tmp_path)
    second = registry.load("alpha", snippets=tmp_path)
    assert first is not second
    assert [s.id for s in second.steps] == ["go"]  # no steps piled up from the first load


def test_syntax_error_is_reported_at_its_line(tmp_path):
    lines = [
        "from deepdive.model import Page",
        'page = Page(name="broken", title="A page")',
        "",
        "",
        f"x = = 1  {MARK}",
    ]
    message, where = failure(tmp_path, "broken", lines)
    assert message.startswith(where), message
    assert "syntax error" in message


def test_name_error_at_import_is_reported_at_its_line(tmp_path):
    lines = [
        "from deepdive.model import Page",
        'page = Page(name="broken", title="A page")',
        'page.step("go", "Go", "ip link show")',
        f"page.step('more', 'More', undefined_command)  {MARK}",
    ]
    message, where = failure(tmp_path, "broken", lines)
    assert message.startswith(where), message
    assert "NameError" in message and "undefined_command" in message


def test_exception_in_a_snippet_function_is_reported_at_the_deepest_snippet_line(tmp_path):
    lines = [
        "from deepdive.model import Page",
        "",
        "def commands(n):",
        f"    return [f'ip link show veth{{i}}' for i in range(n)] + [1 / 0]  {MARK}",
        "",
        'page = Page(name="broken", title="A page")',
        'page.step("go", "Go", *commands(2))',
    ]
    message, where = failure(tmp_path, "broken", lines)
    assert message.startswith(where), message
    assert "ZeroDivisionError" in message


def test_snippet_error_from_the_model_passes_through_unchanged(tmp_path):
    lines = [
        "from deepdive.model import Page, cmd",
        'page = Page(name="broken", title="A page")',
        f'page.step("go", "Go", cmd("ip link show | grep x"))  {MARK}',
    ]
    message, where = failure(tmp_path, "broken", lines)
    assert message.startswith(where), message
    assert "shell syntax" in message
    assert "SnippetError" not in message  # not wrapped a second time as "file:N: SnippetError: ..."


@pytest.mark.parametrize("body", [
    ["X = 1"],
    ["page = 'veth'"],
    ["from deepdive.model import Page", "pages = Page(name='nopage', title='T')"],
], ids=["nothing", "not-a-page", "misnamed-variable"])
def test_module_without_a_page_is_an_error(tmp_path, body):
    path = write(tmp_path, "nopage", body)
    with pytest.raises(SnippetError) as info:
        registry.load("nopage", snippets=tmp_path)
    assert str(info.value).startswith(f"{path.resolve()}:")
    assert "page = Page(...)" in str(info.value)


def test_page_named_differently_from_its_file_is_an_error(tmp_path):
    write(tmp_path, "vlan", [l.replace("{name}", "vxlan") for l in GOOD])
    with pytest.raises(SnippetError) as info:
        registry.load("vlan", snippets=tmp_path)
    assert "'vxlan'" in str(info.value) and "vlan.py" in str(info.value)


def test_page_named_differently_from_its_file_is_reported_at_the_page_line(tmp_path):
    lines = [
        "from deepdive.model import Page",
        "",
        f'page = Page(name="vxlan", title="A page")  {MARK}',
        'page.step("go", "Go", "ip link show")',
        '@page.check("go", "a claim")',
        "def _(lab):",
        "    return True",
    ]
    path = write(tmp_path, "vlan", lines)
    with pytest.raises(SnippetError) as info:
        registry.load("vlan", snippets=tmp_path)
    assert str(info.value).startswith(f"{path.resolve()}:{marked_line(lines)}:")


def test_validation_runs_on_load(tmp_path):
    write(tmp_path, "nochecks", [
        "from deepdive.model import Page",
        'page = Page(name="nochecks", title="A page")',
        'page.step("go", "Go", "ip link show")',
    ])
    with pytest.raises(SnippetError, match="declares no checks"):
        registry.load("nochecks", snippets=tmp_path)


# --- the real snippets ---------------------------------------------------------------

def test_real_snippets_include_the_first_pages():
    assert {"veth", "bridge"} <= set(registry.names())


@pytest.mark.parametrize("name", registry.names())
def test_real_snippet_loads_and_validates(name):
    page = registry.load(name)
    assert page.name == name
    ids = [s.id for s in page.steps]
    assert len(ids) == len(set(ids))
    assert page.checks, "every page tests the claims of its prose"
    assert all(c.after in ids for c in page.checks)
    snippet = (registry.SNIPPETS / f"{name}.py").resolve()
    for s in page.steps:
        if s.id == "nodes":
            assert ids[0] == "nodes" and page.nodes
            continue
        assert Path(s.where.rpartition(":")[0]).resolve() == snippet
        assert all(c.argv for c in s.commands)


def test_load_unchanged_imports_a_snippet_once_until_it_changes(tmp_path):
    import os

    path = good(tmp_path, "alpha")
    first = registry.load_unchanged("alpha", snippets=tmp_path)
    assert registry.load_unchanged("alpha", snippets=tmp_path) is first
    path.write_text(path.read_text().replace('title="A page"', 'title="Another"'))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert registry.load_unchanged("alpha", snippets=tmp_path).title == "Another"
