"""What a page says about itself at its top: how many claims held, and how to reproduce it.

Two Markdown renderers for deepdive/macros.py (the page's capture and its snippet's
Page in, Markdown out, so that MkDocs validates the links in it), and the helpers that
link "What was verified" to the steps a page shows:

    verified_line(capture)            "12 of 12 claims verified on Linux 6.18.44 ..."
    reproduce_box(capture, page, ...) a collapsible `??? info "Reproduce this page"`
    shown(markdown)                   the step() and diagram() calls in a page's Markdown
    shown_steps(markdown, name)       ids of the steps of `name` a page's Markdown shows
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from deepdive import capture as _capture
from deepdive.features import FEATURES, ROOT_ONLY
from deepdive.lab import PACKAGES
from deepdive.model import Page

LABS_DIR = "labs"  # where the site publishes each page's lab file (deepdive/labfiles.py)


def lab_file_uri(name: str, ext: str = "md") -> str:
    """Docs-relative path of page `name`'s published lab file: its page ("md") or the
    Python file itself ("py")."""
    return f"{LABS_DIR}/{name}.{ext}"


def verified_line(capture: dict[str, Any]) -> str:
    """One Markdown paragraph: claims passed of claims tested, the kernel, lab and date,
    linked to the page's "What was verified" list (id checks-PAGE, see render_checks)."""
    checks, m = capture["checks"], capture["meta"]
    passed = sum(1 for c in checks if c.get("passed"))
    return (f'**{passed} of {len(checks)} claims verified** on Linux {m["kernel"]} '
            f'in the {m["lab"]} lab, {m["date"]}: [what was verified](#checks-{capture["page"]}).'
            '\n{: .dd-verified }')


def reproduce_box(capture: dict[str, Any], page: Page, src_path: str,
                  kernels: list[tuple[str, str, int]], repo_url: str | None = None) -> str:
    """A collapsed Material admonition (pymdownx.details) in Markdown: the command, what
    it needs, where the capture was made and what the lab's name means, how long it ran,
    and a link to the lab file. `src_path` is the Markdown page's path in docs/ (links are
    relative to it); `kernels` is site_kernels(); `repo_url`, the site's repository if
    it names one, is where a checkout comes from."""
    name, m = capture["page"], capture["meta"]
    lab_page = posixpath.relpath(lab_file_uri(name), posixpath.dirname(src_path) or ".")
    body = [
        f"From a checkout of {f'[the project]({repo_url})' if repo_url else 'the project'}, "
        "after `./setup.sh --lab`:",
        "",
        "```sh",
        f"invoke lab.run --page {name}",
        "```",
        "",
        f"**What it needs.** {_needs(page, m['lab'])}",
        "",
        f"**Where this capture comes from.** The {m['lab']} lab, on Linux {m['kernel']} "
        f"({m['iproute2']}, pyroute2 {m['pyroute2']}), on {m['date']}. {_LABS} "
        f"{_two_kernels(kernels)}",
        "",
        f"**How long it takes.** {_duration(m)}",
        "",
        f"**The lab file.** [`snippets/{name}.py`]({lab_page}): the steps this page shows and "
        "the checks it lists, run by the project's engine (`deepdive/`).",
    ]
    indented = "\n".join(f"    {line}" if line else "" for line in body)
    return f'??? info "Reproduce this page"\n{indented}\n'


_LABS = ("The *host lab* is network namespaces on the machine's own running kernel: the "
         "lab builds them, runs the steps, and removes them, changing nothing else. The "
         "*vm lab* is a micro-VM that virtme-ng boots with the distribution's kernel from "
         "`/boot`, running the same host lab inside; `lab.run` chooses it by itself when "
         "the running kernel cannot create a link kind or use a feature the page needs.")


def _needs(page: Page, lab: str) -> str:
    n = page.needs
    root = sorted(f for f in n.features if f in ROOT_ONLY)
    if root:
        who = ("Root: the kernel refuses " + " and ".join(FEATURES[f].words for f in root)
               + " to unprivileged users.")
    else:
        who = ("Root, or an ordinary user where the kernel allows user namespaces "
               "(the lab then runs in one of its own).")
    parts = [who, "Linux with network namespaces."]
    if n.kinds:
        parts.append("Link kinds: " + ", ".join(f"`{k}`" for k in n.kinds) + ".")
    if n.features:
        parts.append("Kernel features: " + ", ".join(FEATURES[f].words for f in n.features) + ".")
    if n.tools:
        parts.append("Tools: " + ", ".join(_tool(t) for t in n.tools) + ".")
    if lab == "vm":
        parts.append("Where the running kernel lacks one of these, the vm lab needs qemu "
                     "(`qemu-system-x86`), virtme-ng and a distribution kernel in `/boot` "
                     "(`./setup.sh --lab` installs them), and a user who may read that "
                     "kernel image, which some distributions let only root read.")
    return " ".join(parts)


def _tool(tool: str) -> str:
    package = PACKAGES.get(tool)
    return f"`{tool}` ({package})" if package else f"`{tool}`"


def _duration(meta: dict[str, Any]) -> str:
    if "seconds" not in meta:
        return "This capture predates the record of run times."
    text = f"The lab ran for {meta['seconds']} s when this page was captured"
    if meta["lab"] == "vm":
        return (text + ", inside the VM. A VM whose CPU qemu emulates (no KVM) runs many "
                "times slower than one with KVM, and its boot comes on top: a second or two "
                "with KVM, a quarter of a minute or more without.")
    return text + "."


def _two_kernels(kernels: list[tuple[str, str, int]]) -> str:
    if len({k for _, k, _ in kernels}) < 2:
        return ""
    listed = "; ".join(f"{count} on Linux {kernel} ({lab} lab)" for lab, kernel, count in kernels)
    return (f"That is why this site shows more than one kernel: of its pages, {listed}.")


def site_kernels(captures: Path) -> list[tuple[str, str, int]]:
    """(lab, kernel, number of captures) over every capture in `captures`, most first."""
    counts: dict[tuple[str, str], int] = {}
    for path in sorted(captures.glob("*.json")):
        m = _capture.load(path.stem, captures)["meta"]
        counts[(m["lab"], m["kernel"])] = counts.get((m["lab"], m["kernel"]), 0) + 1
    return sorted(((lab, k, c) for (lab, k), c in counts.items()), key=lambda t: (-t[2], t[0]))


# A macro call that shows part of a capture: {{ step("veth", "up") }}, {{ diagram(...) }}.
_SHOWN = re.compile(r"""\{\{-?\s*(step|diagram)\(\s*["']([a-z0-9-]+)["']\s*,\s*["']([a-z0-9-]+)["']""")


def shown(markdown: str) -> list[tuple[str, str, str]]:
    """(macro, page, step id) of each step() and diagram() call in `markdown`, in order."""
    return _SHOWN.findall(markdown)


def shown_steps(markdown: str, name: str) -> set[str]:
    """Ids of page `name`'s steps that `markdown` shows with {{ step("name", "id") }}."""
    return {step_id for macro, page, step_id in shown(markdown) if macro == "step" and page == name}
