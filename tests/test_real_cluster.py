"""The "On a real cluster" section that ends every Kubernetes page.

It sends the reader to the kind machine of the Vagrantfile with commands to run there.
Nothing in it was run by a lab, so it may hold prose and command blocks only, never an
output; it names only that machine's cluster and nodes; and the chain names it quotes are
the ones kube-proxy computes for the Service its manifest creates. No privileges needed.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, snippet_module

HEADING = "## On a real cluster"
CLUSTER = "deepdive"
NODES = {"deepdive-control-plane", "deepdive-worker", "deepdive-worker2"}
MACHINE = "kind"
NOT_RUN = "not run by this site's lab"
MANIFEST = "snippets/cluster/web.yaml"
PAGES = sorted([*(ROOT / "docs" / "pods").glob("*.md"), *(ROOT / "docs" / "services").glob("*.md")])

_FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")
_COMMANDS = re.compile(r"bash(?: title=\"[^\"]+\")?")
# What only the site's machinery renders, and so never belongs in this section: a macro
# (recorded output, a quote of it), raw HTML, an admonition, a table, an include.
_NOT_PROSE = re.compile(r"\{\{|\{%|^\s*<[a-z]|^\s*(?:!!!|\?\?\?|\||--8<--)")
# Places where a command names a node, a cluster, a context or a Vagrant machine.
_NAMED = (
    (re.compile(r"\bdocker exec(?: -\w+(?: \w+=\S+)?)* ([\w.-]+)"), NODES),  # -e VAR=value skipped
    (re.compile(r"\b([\w.-]+-(?:control-plane|worker\d*))\b"), NODES),
    (re.compile(r"\bkubectl (?:get|describe|drain|cordon) nodes? (\w[\w.-]*)"), NODES),
    (re.compile(r"--name[ =]([\w.-]+)"), {CLUSTER}),
    (re.compile(r"\b(kind-[\w-]+)"), {f"kind-{CLUSTER}"}),
    (re.compile(r"\bvagrant (?:up|ssh|destroy|halt|provision|reload) ([\w.-]+)"), {MACHINE}),
)


def lab_part(markdown: str) -> str:
    """The page before its "On a real cluster" section: what the lab's capture backs.
    The section names what to look for in the reader's own output, not the capture's."""
    return markdown.split(f"\n{HEADING}\n", 1)[0]


def section(markdown: str) -> str:
    """The text from the section's heading to the end of the page, heading excluded;
    AssertionError if the heading is missing or another `## ` heading follows it."""
    assert markdown.count(f"\n{HEADING}\n") == 1, f"no single {HEADING!r}"
    rest = markdown.split(f"\n{HEADING}\n", 1)[1]
    assert not re.search(r"^#{1,2} ", rest, re.MULTILINE), "the section is not the page's last"
    return rest


def blocks(text: str) -> list[tuple[str, str]]:
    """The section as (kind, text) pairs: ("fence", "info string") for a fenced block,
    ("prose", line) for each line outside one; AssertionError on a fence left open."""
    out: list[tuple[str, str]] = []
    opened: str | None = None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if opened is None and m:
            opened = m.group(1)
            out.append(("fence", m.group(2).strip()))
        elif opened is not None and line.strip() == opened:
            opened = None
        elif opened is None:
            out.append(("prose", line))
    assert opened is None, "a fenced block is never closed"
    return out


def problems(text: str) -> list[str]:
    """What in a section's text is not allowed, one line each; [] if nothing."""
    found = []
    for kind, value in blocks(text):
        if kind == "fence" and not _COMMANDS.fullmatch(value):
            found.append(f"a block that is not a bash command block: ```{value}")
        elif kind == "prose" and (_NOT_PROSE.search(value) or re.match(r" {4}(?![-*\d ])", value)):
            found.append(f"not prose: {value.strip()}")
    if NOT_RUN not in " ".join(text.split()):
        found.append(f"it does not say its commands were {NOT_RUN}")
    for pattern, allowed in _NAMED:
        found += [f"names {name!r}" for name in pattern.findall(text) if name not in allowed]
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_kubernetes_page_ends_with_commands_for_the_kind_cluster(page: Path):
    assert problems(section(page.read_text())) == []


@pytest.mark.parametrize("text, problem", [
    ("Prose.\n\n```text\n10.244.1.2\n```\n", "not a bash command block"),
    ("Prose.\n\n```\nip link\n```\n", "not a bash command block"),
    ('Prose.\n\n{{ step("veth", "show") }}\n', "not prose"),
    ("Prose.\n\n<figure class=\"dd-step\"></figure>\n", "not prose"),
    ("Prose.\n\n    eth0@if3\n", "not prose"),
    ("Prose.\n\n```bash\ndocker exec kind-worker ip link\n```\n", "names 'kind-worker'"),
    ("Prose.\n\n```bash\ndocker exec -it deepdive-worker3 bash\n```\n", "names 'deepdive-worker3'"),
    ("Prose.\n\n```bash\nkind create cluster --name lab\n```\n", "names 'lab'"),
    ("Prose.\n\n```bash\nkubectl describe node minikube\n```\n", "names 'minikube'"),
    ("Prose.\n\n```bash\nvagrant ssh default\n```\n", "names 'default'"),
])
def test_anything_else_is_refused(text: str, problem: str):
    found = problems(f"These commands were {NOT_RUN}.\n\n{text}")
    assert any(problem in p for p in found), found


def test_a_section_that_does_not_say_so_is_refused():
    assert problems("```bash\nip link\n```\n") == [f"it does not say its commands were {NOT_RUN}"]


def test_the_lab_part_of_a_page_stops_at_the_section():
    page = f"# Page\n\n`state UP`\n\n{HEADING}\n\n`state DOWN` on yours\n"
    assert lab_part(page) == "# Page\n\n`state UP`\n"
    assert lab_part("# Page\n") == "# Page\n"


def test_a_missing_or_misplaced_section_is_refused():
    with pytest.raises(AssertionError):
        section("# Page\n\n## Steps\n")
    with pytest.raises(AssertionError):
        section(f"# Page\n\n{HEADING}\n\nProse.\n\n## What was verified\n")


def test_the_manifest_is_the_service_of_the_services_pages():
    """The same namespace, name, port name and protocol make the same chain names."""
    svc = snippet_module("_service")
    iptables = snippet_module("kube-proxy-iptables")
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / MANIFEST).read_text())}
    service, pods = docs["Service"], docs["Deployment"]["spec"]["template"]
    port, = service["spec"]["ports"]
    assert f"default/{service['metadata']['name']}:{port['name']}" == iptables.SERVICE
    assert (port["protocol"].lower(), port["port"], port["nodePort"]) == (iptables.PROTOCOL, svc.PORT, svc.NODE_PORT)
    # Its pods are the Service's endpoints, each serving its name on the target port.
    assert service["spec"]["selector"].items() <= pods["metadata"]["labels"].items()
    container, = pods["spec"]["containers"]
    assert f"--port={port['targetPort']}" in container["args"]


@pytest.mark.parametrize("page, pattern", [
    ("kube-proxy-iptables", r"KUBE-SVC-[A-Z0-9]+"),
    ("kube-proxy-nftables", r"service-[A-Z0-9]{8}-[\w/]+"),
])
def test_quoted_chain_names_are_the_ones_kube_proxy_computes(page: str, pattern: str):
    text = section(next(p for p in PAGES if p.stem == page).read_text())
    quoted = set(re.findall(pattern, text))
    assert quoted == {snippet_module(page).SVC_CHAIN}


def test_the_names_are_those_the_kind_machine_makes():
    """The cluster, nodes, machine and mode variable the sections use are the ones the
    Vagrantfile and vagrant/kind.sh create. kind names a cluster's nodes
    CLUSTER-control-plane, then CLUSTER-worker, CLUSTER-worker2, ... in config order."""
    kind_sh = (ROOT / "vagrant" / "kind.sh").read_text()
    vagrantfile = (ROOT / "Vagrantfile").read_text()
    assert re.search(rf"^CLUSTER={CLUSTER}$", kind_sh, re.M)
    config = kind_sh.split("kind: Cluster", 1)[1].split("\nEOF", 1)[0]
    roles = re.findall(r"- role: (\S+)", config)
    workers = [f"{CLUSTER}-worker{i + 1 if i else ''}" for i in range(roles.count("worker"))]
    assert roles.count("control-plane") == 1 and {f"{CLUSTER}-control-plane", *workers} == NODES, roles
    assert re.search(rf'config\.vm\.define "{MACHINE}"', vagrantfile)
    assert '"DEEPDIVE_KUBE_PROXY_MODE" =>' in vagrantfile and "${DEEPDIVE_KUBE_PROXY_MODE" in kind_sh
