"""The page model (deepdive.model): what a snippet can declare, and what it is refused.

Unit tests: no privileges, nothing is run. Mistakes are declared in small snippet files
written to tmp_path and loaded through the registry, so the file:line in each error is
the real location of the mistake.
"""
from __future__ import annotations

import inspect
import shlex
from pathlib import Path

import pytest

from deepdive import registry
from deepdive.model import Cmd, Needs, Page, SnippetError, Step, cmd, masks_of, write_file

MARK = "# <- here"


def write_snippet(folder: Path, name: str, lines: list[str]) -> Path:
    path = folder / f"{name}.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def marked_line(lines: list[str]) -> int:
    """1-based number of the one line carrying MARK."""
    hits = [n for n, line in enumerate(lines, start=1) if MARK in line]
    assert len(hits) == 1, "a snippet under test marks exactly one line"
    return hits[0]


def location(path: Path, line: int) -> str:
    return f"{path.resolve()}:{line}:"


def load_error(tmp_path: Path, name: str, lines: list[str]) -> tuple[str, str]:
    """Load a snippet that must fail; return (error message, expected 'file:line:' prefix)."""
    path = write_snippet(tmp_path, name, lines)
    with pytest.raises(SnippetError) as info:
        registry.load(name, snippets=tmp_path)
    return str(info.value), location(path, marked_line(lines))


def page_with(*body: str, name: str = "bad") -> list[str]:
    """A snippet: imports, a page, then `body` lines (one of them marked)."""
    return [
        '"""A snippet that declares something wrong."""',
        "from deepdive.model import Page, cmd",
        "",
        f'page = Page(name="{name}", title="A page")',
        'page.step("first", "A good step", "ip link show")',
        "",
        *body,
        "",
        '@page.check("first", "a claim")',
        "def _(lab):",
        "    return True",
    ]


# --- the automatic "nodes" step -------------------------------------------------------

def test_nodes_step_creates_each_namespace_and_brings_up_its_loopback():
    nodes = ("ns1", "ns2", "router")
    page = Page(name="demo", title="Demo", nodes=nodes)
    page.step("go", "Go", "ip -n ns1 link show")

    first = page.steps[0]
    assert first.id == "nodes"
    assert first.snapshot is False
    expected = []
    for n in nodes:
        expected.append(("ip", "netns", "add", n))
        expected.append(("ip", "-n", n, "link", "set", "lo", "up"))
    assert [c.argv for c in first.commands] == expected
    assert all(c.rc == 0 and not c.background for c in first.commands)
    # the page's own steps follow it
    assert [s.id for s in page.steps] == ["nodes", "go"]


def test_nodes_step_disables_ipv6_in_each_namespace_when_asked():
    page = Page(name="demo", title="Demo", nodes=("a", "b"), ipv6=False)
    argvs = [c.argv for c in page.steps[0].commands]
    for n in ("a", "b"):
        add = argvs.index(("ip", "netns", "add", n))
        sysctl = argvs.index(("ip", "netns", "exec", n, "sysctl", "-q", "-w",
                              "net.ipv6.conf.all.disable_ipv6=1"))
        assert add < sysctl, "the sysctl runs inside a namespace that already exists"
    assert len(argvs) == 3 * 2


def test_ipv6_on_by_default_means_no_sysctl():
    page = Page(name="demo", title="Demo", nodes=("a",))
    assert not any("sysctl" in c.argv for c in page.steps[0].commands)


def test_page_without_nodes_has_no_nodes_step():
    page = Page(name="demo", title="Demo")
    assert page.steps == []
    page.step("only", "Only", "true")
    assert [s.id for s in page.steps] == ["only"]


def test_needs_and_regenerate_command():
    page = Page(name="vlan", title="VLAN",
                needs=Needs(kinds=("vlan",), features=("nf_tables", "bpf"), tools=("ping",)))
    assert page.needs.kinds == ("vlan",) and page.needs.tools == ("ping",)
    assert page.needs.features == ("nf_tables", "bpf")
    assert page.regenerate == "invoke lab.run --page vlan"


def needs_snippet(declaration: str) -> list[str]:
    return ["from deepdive.model import Needs, Page", "",
            f'page = Page(name="bad", title="T", needs={declaration})  {MARK}']


def test_an_unknown_feature_is_reported_at_its_line_with_the_known_ones(tmp_path):
    from deepdive.features import FEATURES
    lines = needs_snippet('Needs(kinds=("veth",), features=("nf_tables", "ipvs"))')
    message, where = load_error(tmp_path, "bad", lines)
    assert message == f"{where} unknown feature 'ipvs'; features: {', '.join(FEATURES)}"
    assert "ip_vs" in FEATURES


@pytest.mark.parametrize("declaration, field", [
    ('Needs(features="ip_vs")', "features"),  # would otherwise be five one-letter names
    ('Needs(kinds="veth")', "kinds"),
    ('Needs(tools=["ping", 3])', "tools"),
])
def test_needs_takes_tuples_of_names(tmp_path, declaration, field):
    message, where = load_error(tmp_path, "bad", needs_snippet(declaration))
    assert message.startswith(f"{where} Needs({field}=...) takes a tuple of names"), message


def test_needs_fields_are_named_so_none_is_taken_for_another(tmp_path):
    message, where = load_error(tmp_path, "bad", needs_snippet('Needs(("veth",), ("ping",))'))
    assert message.startswith(f"{where} TypeError"), message


# --- cmd(): split like a shell, but never run through one -----------------------------

@pytest.mark.parametrize("text, argv", [
    ("ip -n ns1 addr add 10.0.0.1/24 dev veth0",
     ("ip", "-n", "ns1", "addr", "add", "10.0.0.1/24", "dev", "veth0")),
    ("tcpdump -i eth0 -n 'arp or icmp'", ("tcpdump", "-i", "eth0", "-n", "arp or icmp")),
    # shell syntax inside quotes is an argument, not shell syntax
    ('sh -c "echo a | cat; exit 0"', ("sh", "-c", "echo a | cat; exit 0")),
    ("  ping   -c 1\t10.0.0.2 ", ("ping", "-c", "1", "10.0.0.2")),
])
def test_cmd_splits_like_a_shell(text, argv):
    c = cmd(text)
    assert c.argv == argv
    assert c.rc == 0 and c.background is False and c.ready == ""


def test_cmd_keeps_rc_and_timeout():
    c = cmd("ping -c 1 -W 0.5 10.0.0.1", rc=1, timeout=2.5)
    assert (c.rc, c.timeout) == (1, 2.5)


def test_cmd_text_is_shell_quoted_and_round_trips():
    c = cmd("tcpdump -n 'arp or icmp'")
    assert c.text == "tcpdump -n 'arp or icmp'"
    assert tuple(shlex.split(c.text)) == c.argv


def test_background_command_text_ends_with_ampersand():
    c = cmd("tcpdump -i eth0 -l", background=True, ready="listening on")
    assert c.text == "tcpdump -i eth0 -l &"
    assert c.argv[-1] == "-l", "the & is only shown, never passed to the program"
    assert cmd("tcpdump -i eth0 -l").text == "tcpdump -i eth0 -l"


def test_cmd_where_is_the_callers_line():
    expected = inspect.currentframe().f_lineno + 1
    c = cmd("true")
    file, _, line = c.where.rpartition(":")
    assert Path(file).resolve() == Path(__file__).resolve()
    assert int(line) == expected


@pytest.mark.parametrize("call, says", [
    ('cmd("ip link show | grep veth")', "shell syntax"),
    ('cmd("ip link add br0 type bridge && ip link show")', "shell syntax"),
    ('cmd("ip link show ; ip addr show")', "shell syntax"),
    ('cmd("ip -s link show > out.txt")', "shell syntax"),
    ('cmd("ip link show || true")', "shell syntax"),
    ('cmd("")', "empty command"),
    ('cmd("   ")', "empty command"),
    ('cmd("echo \'unbalanced")', "cannot split"),
    ('cmd("sleep 1", timeout=0)', "timeout must be positive"),
    ('cmd("sleep 1", timeout=-3)', "timeout must be positive"),
    ('cmd("tcpdump -i eth0", ready="listening on")', "ready= only applies to background"),
])
def test_bad_cmd_is_reported_at_its_file_and_line(tmp_path, call, says):
    lines = page_with("", "", f'page.step("second", "Second", {call})  {MARK}')
    message, where = load_error(tmp_path, "bad", lines)
    assert message.startswith(where), message
    assert says in message


def test_shell_syntax_in_a_plain_string_command_is_reported_at_the_step(tmp_path):
    lines = page_with(f'page.step("second", "Second", "ip link show | grep veth")  {MARK}')
    message, where = load_error(tmp_path, "bad", lines)
    assert message.startswith(where), message
    assert "shell syntax" in message


@pytest.mark.parametrize("text", [
    "ip link show; ip addr show",
    "ip link show|grep veth",
    "ip -s link show >out.txt",
    "ip link add br0 type bridge&&ip link show",
])
def test_shell_operators_glued_to_words_are_rejected(text):
    with pytest.raises(SnippetError, match="shell syntax"):
        cmd(text)


@pytest.mark.parametrize("text", [
    "tcpdump -i eth0 &",      # how Cmd.text itself shows a background command
    "ip -s link show >> out.txt",
    "ip link show 2> errors.txt",
])
def test_other_shell_operators_are_rejected(text):
    with pytest.raises(SnippetError, match="shell syntax"):
        cmd(text)


def test_nan_timeout_is_rejected():
    with pytest.raises(SnippetError, match="timeout"):
        cmd("sleep 1", timeout=float("nan"))


# --- standard input, environment, files a page writes ----------------------------------

def test_environment_goes_through_the_real_env_program():
    c = cmd("env CNI_COMMAND=ADD CNI_NETNS=/run/netns/pod1 'CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=web' "
            "CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni /usr/lib/cni/bridge")
    assert c.argv == ("env", "CNI_COMMAND=ADD", "CNI_NETNS=/run/netns/pod1",
                      "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=web", "CNI_IFNAME=eth0",
                      "CNI_PATH=/usr/lib/cni", "/usr/lib/cni/bridge")
    assert tuple(shlex.split(c.text)) == c.argv


def test_stdin_from_a_file_is_shown_as_a_redirection():
    c = cmd("env CNI_COMMAND=ADD /usr/lib/cni/bridge", stdin="/etc/cni/net.d/10 pod.conf")
    assert (c.stdin, c.heredoc) == ("/etc/cni/net.d/10 pod.conf", "")
    assert c.argv == ("env", "CNI_COMMAND=ADD", "/usr/lib/cni/bridge")
    assert c.text == "env CNI_COMMAND=ADD /usr/lib/cni/bridge < '/etc/cni/net.d/10 pod.conf'"
    assert c.line == c.text


def test_write_file_is_tee_reading_a_quoted_heredoc():
    c = write_file("/etc/cni/net.d/10-pod.conf", '{\n  "name": "$pod"\n}')
    assert c.argv == ("tee", "/etc/cni/net.d/10-pod.conf")
    assert c.heredoc == '{\n  "name": "$pod"\n}\n'  # the final newline bash adds
    assert c.text == "tee /etc/cni/net.d/10-pod.conf <<'EOF'\n{\n  \"name\": \"$pod\"\n}\nEOF"
    assert c.line == "tee /etc/cni/net.d/10-pod.conf <<'EOF' (3 lines)"
    assert (c.rc, c.background, c.stdin) == (0, False, "")
    assert c.where.rpartition(":")[0].endswith("test_model.py")


def test_heredoc_on_any_command():
    c = cmd("nft -f -", heredoc="table ip t {\n}\n")
    assert c.text == "nft -f - <<'EOF'\ntable ip t {\n}\nEOF"


@pytest.mark.parametrize("call, says", [
    ('cmd("cat", stdin="etc/cni/10-pod.conf")', "absolute path"),
    ('cmd("cat", stdin="./10-pod.conf")', "absolute path"),
    ('cmd("cat", stdin=3)', "as strings"),
    ('cmd("cat", stdin="/a", heredoc="b\\n")', "not both"),
    ('cmd("tcpdump -l", background=True, stdin="/etc/x")', "background"),
    ('cmd("cat", heredoc="no final newline")', "end with a newline"),
    ('cmd("cat", heredoc="a\\nEOF\\nb\\n")', "line 'EOF'"),
    ('cmd("cat", heredoc="a\\x1b[31m\\n")', "control characters"),
    ('cmd("cat < /etc/x")', "stdin="),
    ('cmd("ping -c 1 10.0.0.9", rc=-9)', "rc must be an exit status from 0 to 255"),
    ('cmd("ping -c 1 10.0.0.9", rc=256)', "rc must be an exit status"),
    ('cmd("ping -c 1 10.0.0.9", rc=True)', "rc must be an exit status"),
    ('write_file("etc/cni/10-pod.conf", "{}")', "absolute path"),
    ('write_file("/etc/x", "")', "non-empty"),
    ('write_file("/etc/x", "a\\nEOF\\nb")', "line 'EOF'"),
    ('write_file("/etc/x", "a\\nEOF")', "line 'EOF'"),
    ('write_file("/etc/x", "a\\rb")', "control characters"),
    ('write_file("/etc/x", "a", timeout=0)', "timeout must be positive"),
])
def test_bad_input_is_reported_at_its_file_and_line(tmp_path, call, says):
    lines = page_with("from deepdive.model import write_file",
                      f'page.step("second", "Second", {call})  {MARK}')
    message, where = load_error(tmp_path, "bad", lines)
    assert message.startswith(where), message
    assert says in message, message


def test_a_line_that_merely_contains_eof_is_fine():
    assert write_file("/etc/x", "EOF is not alone here\n  EOF\nEOFX\n").heredoc.count("EOF") == 3


# --- a page's own masks -----------------------------------------------------------------

def test_page_masks_are_kept_and_recorded_for_the_capture():
    page = Page(name="lb", title="LB", masks=[(r"(\d+) requests", r"<n> requests")])
    assert page.masks == ((r"(\d+) requests", r"<n> requests"),)
    assert masks_of(page) == {"masks": [{"pattern": r"(\d+) requests", "replacement": "<n> requests"}]}
    assert masks_of(Page(name="plain", title="Plain")) == {}


@pytest.mark.parametrize("masks, says", [
    ('[("(unclosed", "x")]', "missing )"),
    ('[(r"(\\d+)", r"\\2")]', "invalid group reference"),
    ('[(r"(?P<n>\\d+)", r"\\g<m>")]', "unknown group name"),
    ('[("just one",)]', "pairs"),
    ('[(1, "x")]', "strings"),
    ('"not a list of pairs"', "pairs"),
])
def test_bad_page_masks_are_reported_at_the_page(tmp_path, masks, says):
    lines = ['from deepdive.model import Page',
             f'page = Page(name="bad", title="Bad", masks={masks})  {MARK}',
             'page.step("s", "S", "true")',
             '@page.check("s", "c")',
             'def _(lab):',
             '    return True']
    message, where = load_error(tmp_path, "bad", lines)
    assert message.startswith(where), message
    assert "masks=" in message and says in message, message


# --- steps ---------------------------------------------------------------------------

def test_step_turns_strings_into_commands_that_must_succeed():
    page = Page(name="demo", title="Demo")
    explicit = cmd("ping -c 1 10.0.0.9", rc=1)
    s = page.step("go", "Go", "ip link show", explicit, snapshot=True)
    assert isinstance(s, Step) and page.steps == [s]
    assert s.commands[0] == Cmd(("ip", "link", "show"), where=s.commands[0].where)
    assert s.commands[1] is explicit
    assert (s.id, s.title, s.snapshot) == ("go", "Go", True)


def test_duplicate_step_id_is_reported_at_the_second_declaration(tmp_path):
    lines = page_with(f'page.step("first", "Again", "ip addr show")  {MARK}')
    message, where = load_error(tmp_path, "bad", lines)
    assert message.startswith(where), message
    assert "'first'" in message and "twice" in message


def test_step_id_nodes_is_taken_when_the_page_declares_nodes():
    page = Page(name="demo", title="Demo", nodes=("ns1",))
    with pytest.raises(SnippetError, match="'nodes' is used twice"):
        page.step("nodes", "Mine", "true")


def test_step_without_commands_is_an_error():
    page = Page(name="demo", title="Demo")
    with pytest.raises(SnippetError, match="no commands"):
        page.step("empty", "Empty")


def test_step_command_of_the_wrong_type_is_an_error():
    page = Page(name="demo", title="Demo")
    with pytest.raises(SnippetError, match="neither a string nor cmd"):
        page.step("go", "Go", ["ip", "link"])


@pytest.mark.parametrize("bad_id", ["Show", "1st", "with space", "under_score", "a" * 16, ""])
def test_bad_step_ids_are_refused(bad_id):
    page = Page(name="demo", title="Demo")
    with pytest.raises(SnippetError, match="step id"):
        page.step(bad_id, "Title", "true")


def test_step_and_check_where_are_the_lines_of_their_declarations(tmp_path):
    lines = [
        "from deepdive.model import Page",
        'page = Page(name="fine", title="A page")',
        "",
        f'page.step("only", "Only", "ip link show")  {MARK}',
        "",
        '@page.check("only", "a claim")',
        "def _(lab):",
        "    return True",
    ]
    path = write_snippet(tmp_path, "fine", lines)
    page = registry.load("fine", snippets=tmp_path)
    step = page.step_by_id("only")
    assert step.where + ":" == location(path, marked_line(lines))
    assert step.commands[0].where == step.where
    assert page.checks[0].where + ":" == location(path, 6)
    with pytest.raises(KeyError):
        page.step_by_id("other")


# --- checks and validate() -----------------------------------------------------------

def test_check_after_an_unknown_step_is_reported_at_the_check(tmp_path):
    lines = [
        "from deepdive.model import Page",
        "",
        'page = Page(name="bad", title="A page")',
        'page.step("first", "First", "ip link show")',
        'page.step("second", "Second", "ip addr show")',
        "",
        "",
        f'@page.check("thrid", "a claim about the third step")  {MARK}',
        "def _(lab):",
        "    return True",
    ]
    message, where = load_error(tmp_path, "bad", lines)
    assert message.startswith(where), message
    assert "'thrid'" in message
    assert "first, second" in message  # the steps it could have named


def test_check_registers_the_function_and_returns_it():
    page = Page(name="demo", title="Demo")
    page.step("go", "Go", "true")

    def claim(lab):
        return True

    assert page.check("go", "it works")(claim) is claim
    assert [(c.claim, c.after, c.test) for c in page.checks] == [("it works", "go", claim)]
    page.validate()  # one step, one check: complete


def test_check_of_something_not_callable_is_an_error():
    page = Page(name="demo", title="Demo")
    with pytest.raises(SnippetError, match="not a function"):
        page.check("go", "claim")("not a function")


def test_page_without_steps_of_its_own_does_not_validate():
    page = Page(name="demo", title="Demo", nodes=("ns1",))  # only the automatic step
    with pytest.raises(SnippetError, match="declares no steps"):
        page.validate()


def test_page_without_checks_does_not_validate():
    page = Page(name="demo", title="Demo")
    page.step("go", "Go", "true")
    with pytest.raises(SnippetError, match="declares no checks"):
        page.validate()


# --- page and node names -------------------------------------------------------------

@pytest.mark.parametrize("name", ["Veth", "1veth", "veth_pair", "a" * 33, "", "vé"])
def test_bad_page_names_are_refused(name):
    with pytest.raises(SnippetError, match="page name"):
        Page(name=name, title="Title")


def test_a_page_name_may_be_longer_than_a_node_name():
    assert Page(name="kube-proxy-iptables", title="Title").name == "kube-proxy-iptables"


def test_blank_title_is_refused():
    with pytest.raises(SnippetError, match="needs a title"):
        Page(name="demo", title="   ")


@pytest.mark.parametrize("nodes", [("host",), ("NS1",), ("ns_1",), ("n" * 16,), ("ns1", "2nd")])
def test_bad_node_names_are_refused(nodes):
    with pytest.raises(SnippetError, match="node name"):
        Page(name="demo", title="Demo", nodes=nodes)


def test_repeated_node_names_are_refused():
    with pytest.raises(SnippetError, match="repeat"):
        Page(name="demo", title="Demo", nodes=("ns1", "ns2", "ns1"))


def test_longest_allowed_names_are_accepted():
    page = Page(name="a" * 15, title="T", nodes=("n" * 15, "x-1"))
    assert page.nodes == ("n" * 15, "x-1")


@pytest.mark.parametrize("declare", [
    lambda: Page(name="demo", title="Demo", nodes=("ns1\n",)),
    lambda: Page(name="demo\n", title="Demo"),
    lambda: Page(name="demo", title="Demo").step("go\n", "Go", "true"),
], ids=["node", "page", "step"])
def test_names_with_a_trailing_newline_are_refused(declare):
    with pytest.raises(SnippetError):
        declare()


@pytest.mark.parametrize("declaration", [
    'Page(name="Bad", title="A page")',
    'Page(name="bad", title="A page", nodes=("host",))',
    'Page(name="bad", title="A page", nodes=("ns1", "ns1"))',
    'Page(name="bad", title=" ")',
], ids=["page-name", "node-host", "node-repeat", "title"])
def test_bad_page_declaration_is_reported_at_its_file_and_line(tmp_path, declaration):
    lines = [
        "from deepdive.model import Page",
        "",
        "",
        f"page = {declaration}  {MARK}",
    ]
    message, where = load_error(tmp_path, "bad", lines)
    assert message.startswith(where), message


def test_bad_page_declaration_in_a_snippet_is_a_snippet_error(tmp_path):
    # What does hold today: the mistake is refused, and the message names it.
    lines = ["from deepdive.model import Page", f'page = Page(name="bad", title="T", nodes=("host",))  {MARK}']
    message, _where = load_error(tmp_path, "bad", lines)
    assert "node name 'host'" in message


def test_a_snapshot_is_taken_after_the_step_or_while_it_runs_and_nothing_else() -> None:
    from deepdive.model import WHILE_RUNNING
    page = Page("p", "P")
    assert page.step("a", "A", "true", snapshot=WHILE_RUNNING).snapshot == WHILE_RUNNING
    assert page.step("b", "B", "true", snapshot=True).snapshot is True
    with pytest.raises(SnippetError, match="snapshot must be True, False or WHILE_RUNNING, not 'running'"):
        page.step("c", "C", "true", snapshot="running")


def test_plain_commands_split_as_shlex_splits_them():
    """model.split's shortcut for plain words gives what shlex gives, for every command of
    every page and for strings made of the characters it must send to shlex."""
    import random
    import shlex

    from deepdive import model, registry

    def slow(command: str) -> tuple[tuple[str, ...], list[str]]:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=model.SHELL_OPERATORS)
        lexer.whitespace_split = True
        return tuple(shlex.split(command)), list(lexer)

    commands = [shlex.join(c.argv) for p in registry.load_all() for s in p.steps for c in s.commands]
    rng = random.Random(0)
    alphabet = "ab -=/.:" + "".join(model._NOT_PLAIN)
    commands += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))) for _ in range(3000)]
    plain = 0
    for command in commands:
        try:
            expected = slow(command)
        except ValueError:
            with pytest.raises(ValueError):
                model.split(command)
            continue
        assert model.split(command) == expected, command
        plain += model._NOT_PLAIN.isdisjoint(command)
    assert plain > 500  # the shortcut was taken, not only shlex
