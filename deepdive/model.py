"""The page model: what a snippet declares.

A snippet module builds one `Page`: its nodes (network namespaces), what it needs from
the machine, ordered steps of commands, and checks that test the claims its prose makes.
Everything here is data; the labs in `deepdive.lab` run it.
"""
from __future__ import annotations

import functools
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from deepdive.features import FEATURES

if TYPE_CHECKING:
    from deepdive.checks import CheckContext

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
# Page names name files and run ids, never a namespace or an interface: they may be longer
# ("kube-proxy-iptables").
PAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
DEFAULT_TIMEOUT = 10.0
SHELL_OPERATORS = "();<>|&"


class DeepDiveError(Exception):
    """A problem the user can act on: printed as one line, exit status non-zero."""


class SnippetError(DeepDiveError):
    """A snippet declares something malformed; the message starts with file:line."""


@functools.lru_cache(maxsize=None)
def _resolved(filename: str) -> Path:
    """Path(filename).resolve(), once per file: every declaration looks up its caller's
    file, and each resolve is a file system call per path component, which under the vm
    lab's emulation over a shared file system added up to tens of seconds per page."""
    return Path(filename).resolve()


def _caller_location() -> str:
    """file:line of the snippet statement that is declaring something."""
    frame = sys._getframe(1)
    here = _resolved(__file__)
    # Skip this module and the __init__ that dataclasses generate (filename "<string>").
    while frame is not None and (frame.f_code.co_filename == "<string>"
                                 or _resolved(frame.f_code.co_filename) == here):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{_display_path(frame.f_code.co_filename)}:{frame.f_lineno}"


def _display_path(filename: str) -> str:
    path = _resolved(filename)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Cmd:
    """One command, run as an argument list (never through a shell).

    `rc` is the exit status the prose expects: a ping that must not get through is
    declared with rc=1, and anything else stops the run.

    Standard input is empty unless the command reads a file the page shows (`stdin`,
    an absolute path, shown as `< PATH`) or a here-document (`heredoc`, shown as
    `<<'EOF' ... EOF` lines after the command). Both are shown the way bash takes them,
    so the text a reader copies runs as it ran here. Environment variables are set
    with the real `env` program in the command itself (`env CNI_COMMAND=ADD ...
    /usr/lib/cni/bridge`): shown and run alike, and typeable as it is.
    """

    argv: tuple[str, ...]
    rc: int = 0
    timeout: float = DEFAULT_TIMEOUT
    where: str = ""
    # A background command (a capture, say) starts when the step reaches it, runs while
    # the rest of the step does, and is stopped with SIGINT when the step ends. `ready`
    # is the text it prints once it is listening; the step waits for it. `until` is the
    # text it prints once it has seen all the step makes it see (a capture's last frame,
    # or `tcpdump -c N`'s "N packets captured"): the step's end waits for it, since a
    # capture stopped earlier loses the frames it has not printed yet.
    # On a command that is not in the background, `until` is text its standard output
    # shows once the kernel has reached a state that it reaches a moment after being
    # asked, in the background (`ip link show` "state UP": a link's carrier is acted on
    # by the kernel's link watcher, and until then the link drops what is sent on it).
    # The command is run again until it shows that text, and its last run is recorded.
    # `endless`: a background command that never ends by itself (a capture without -c,
    # `conntrack -E`) is stopped at once at the step's end; any other is first given
    # inlab.EXIT_GRACE to end by itself, as `tcpdump -c N` does, so that how it ended
    # does not depend on which came first, its exit or the SIGINT.
    background: bool = False
    ready: str = ""
    until: str = ""
    endless: bool = False
    stdin: str = ""
    heredoc: str = ""

    @property
    def text(self) -> str:
        """The command as a reader types it into bash, here-document lines included."""
        text = shlex.join(self.argv)
        if self.stdin:
            text += f" < {shlex.quote(self.stdin)}"
        if self.heredoc:
            text += f" <<'{HEREDOC_END}'\n{self.heredoc}{HEREDOC_END}"
        return text + (" &" if self.background else "")

    @property
    def line(self) -> str:
        """`text` on one line, for messages: a here-document is summed up, not spelt out."""
        if not self.heredoc:
            return self.text
        lines = self.heredoc.count("\n")
        return f"{shlex.join(self.argv)} <<'{HEREDOC_END}' ({lines} line{'s' * (lines != 1)})"


# The here-document delimiter; quoted in Cmd.text, so bash expands nothing inside.
HEREDOC_END = "EOF"


# Characters that make shlex split otherwise than at spaces (quotes, escapes, comments,
# other whitespace) or that are shell operators. Most commands have none, and shlex's
# tokenizer costs about 0.1 ms a word: loading every page splits some 1,400 commands.
_NOT_PLAIN = frozenset("'\"\\#\t\n\r\x0b\x0c" + SHELL_OPERATORS)


def split(command: str) -> tuple[tuple[str, ...], list[str]]:
    """(argv as bash would split it, words with shell operators as tokens of their own).
    The second catches `a;b` or `2>err`; quoted text stays one word either way. A command
    of plain words separated by spaces is split at its spaces, which is what shlex gives.
    Raises ValueError for an unterminated quote or escape, as shlex does."""
    if _NOT_PLAIN.isdisjoint(command):
        argv = tuple(w for w in command.split(" ") if w)
        return argv, list(argv)
    argv = tuple(shlex.split(command))
    lexer = shlex.shlex(command, posix=True, punctuation_chars=SHELL_OPERATORS)
    lexer.whitespace_split = True
    return argv, list(lexer)


def cmd(command: str, *, rc: int = 0, timeout: float = DEFAULT_TIMEOUT,
        background: bool = False, ready: str = "", until: str = "", stdin: str = "",
        heredoc: str = "", endless: bool = False) -> Cmd:
    """Declare a command from the text a reader would type; split like a shell would.

    stdin: absolute path of a file to read standard input from (`cmd("nft -f -",
      stdin="/etc/nftables/kube.nft")`); heredoc: text to read instead, shown as a
      here-document (`cmd("iptables-restore", heredoc=rules)`). Not with background.
    ready, until: text to wait for (see Cmd); ready only with background.
    endless: it never ends by itself, so the step's end stops it at once (see Cmd).
    Raises SnippetError at the caller's file:line for shell syntax, a bad timeout, an
    exit status outside 0-255, or a stdin/heredoc that bash would read differently.
    """
    where = _caller_location()
    if ready and not background:
        raise SnippetError(f"{where}: ready= only applies to background commands")
    if endless and not background:
        raise SnippetError(f"{where}: endless= only applies to background commands")
    try:
        argv, words = split(command)
    except ValueError as exc:
        raise SnippetError(f"{where}: cannot split command {command!r}: {exc}") from None
    if not argv:
        raise SnippetError(f"{where}: empty command")
    if any(w and set(w) <= set(SHELL_OPERATORS) for w in words):
        raise SnippetError(f"{where}: {command!r} uses shell syntax; commands run without a shell"
                           " (standard input: stdin= or heredoc=; environment: `env VAR=value ...`)")
    if not timeout > 0:  # also refuses NaN
        raise SnippetError(f"{where}: timeout must be positive, got {timeout}")
    # Negative statuses are how a death by signal is recorded (an output limit's kill
    # among them): no snippet may expect one.
    if isinstance(rc, bool) or not isinstance(rc, int) or not 0 <= rc <= 255:
        raise SnippetError(f"{where}: rc must be an exit status from 0 to 255, got {rc!r}")
    _check_input(where, stdin, heredoc, background)
    return Cmd(argv=argv, rc=rc, timeout=timeout, where=where, background=background, ready=ready,
               until=until, stdin=stdin, heredoc=heredoc, endless=endless)


def write_file(path: str, content: str, *, timeout: float = DEFAULT_TIMEOUT) -> Cmd:
    """A command that writes `content` to the file `path`, as a reader would: with the
    real `tee PATH` reading a here-document, so its recorded output is what the file
    now holds. `content` gets a final newline if it lacks one (bash adds it too).

    Raises SnippetError at the caller's line for a relative path, empty content, or
    content bash could not take as a here-document (a line `EOF`, control characters).
    """
    where = _caller_location()
    if not isinstance(path, str) or not path.startswith("/"):
        raise SnippetError(f"{where}: write_file needs an absolute path, got {path!r}")
    if not timeout > 0:
        raise SnippetError(f"{where}: timeout must be positive, got {timeout}")
    if not isinstance(content, str) or not content:
        raise SnippetError(f"{where}: write_file needs the file's content as non-empty text")
    if not content.endswith("\n"):
        content += "\n"
    _check_input(where, "", content, False)
    return Cmd(argv=("tee", path), timeout=timeout, where=where, heredoc=content)


def _check_input(where: str, stdin: str, heredoc: str, background: bool) -> None:
    """Refuse standard input that would not run as shown (see Cmd)."""
    if not isinstance(stdin, str) or not isinstance(heredoc, str):
        raise SnippetError(f"{where}: stdin= takes a path and heredoc= text, as strings")
    if stdin and heredoc:
        raise SnippetError(f"{where}: a command reads stdin= or heredoc=, not both")
    if (stdin or heredoc) and background:
        raise SnippetError(f"{where}: background commands read no standard input")
    if stdin and (not stdin.startswith("/") or "\n" in stdin):
        raise SnippetError(f"{where}: stdin= needs an absolute path, got {stdin!r}")
    if heredoc:
        if not heredoc.endswith("\n"):
            raise SnippetError(f"{where}: heredoc= text must end with a newline, as bash reads it")
        if HEREDOC_END in heredoc[:-1].split("\n"):
            raise SnippetError(f"{where}: heredoc text has a line {HEREDOC_END!r}, which would end "
                               "the here-document early")
        bad = sorted({c for c in heredoc if (ord(c) < 32 and c not in "\t\n") or ord(c) == 127})
        if bad:
            raise SnippetError(f"{where}: heredoc text has control characters {bad!r}, "
                               "which a reader cannot type")


def _checked_masks(where: str, masks) -> tuple[tuple[str, str], ...]:
    """A page's masks as a tuple of (regex, replacement), or a SnippetError at `where`."""
    from deepdive.masking import compile_masks
    try:
        pairs = tuple((pattern, repl) for pattern, repl in masks)
        if not all(isinstance(x, str) for pair in pairs for x in pair):
            raise TypeError("patterns and replacements must be strings")
        compile_masks(pairs)
    except (TypeError, ValueError, re.error, IndexError) as exc:
        raise SnippetError(f"{where}: masks= takes (regex, replacement) pairs: {exc}") from None
    return pairs


def masks_of(page: "Page") -> dict[str, list[dict[str, str]]]:
    """What a capture records of the page's own masks: {"masks": [{"pattern": ...,
    "replacement": ...}]}, or {} for a page without any (its capture has no such key)."""
    if not page.masks:
        return {}
    return {"masks": [{"pattern": p, "replacement": r} for p, r in page.masks]}


@dataclass(frozen=True)
class Check:
    """A claim of the prose, tested right after step `after` ran."""

    claim: str
    after: str
    test: Callable[["CheckContext"], bool]
    where: str


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    commands: tuple[Cmd, ...]
    snapshot: bool | str  # False, True or WHILE_RUNNING (see Page.step)
    where: str


# A step's snapshot taken before its background programs are stopped, not after.
WHILE_RUNNING = "while running"


@dataclass(frozen=True, kw_only=True)
class Needs:
    """What the machine must offer a page, checked before anything is created.

    kinds: link kinds the kernel must create (`ip link add ... type KIND`): ("veth",).
    features: kernel features beyond link kinds, named from deepdive.features.FEATURES
      (ip_vs, br_netfilter, nf_tables, nat, conntrack, ipset, netem, bpf,
      bpf_unprivileged); each is probed by using it in a scratch namespace.
    tools: programs the steps run, looked up on PATH; a program that lives off PATH
      (a CNI plugin in /usr/lib/cni) is named by its absolute path.
    Where this kernel lacks a kind or feature, `--lab auto` runs the page in the vm lab
    and `--lab host` refuses in one line. An unknown feature, or a plain string where a
    tuple belongs, is a SnippetError at the snippet's line.
    """

    kinds: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = _caller_location()
        for name in ("kinds", "features", "tools"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise SnippetError(f"{where}: Needs({name}=...) takes a tuple of names, "
                                   f"got {value!r}")
        bad = [f for f in self.features if f not in FEATURES]
        if bad:
            raise SnippetError(f"{where}: unknown feature {', '.join(map(repr, bad))}; "
                               f"features: {', '.join(FEATURES)}")


@dataclass
class Page:
    name: str
    title: str
    nodes: tuple[str, ...] = ()
    needs: Needs = field(default_factory=Needs)
    # False keeps IPv6 off in the nodes, so autoconfiguration chatter (router
    # solicitations, DAD) cannot leak into captures and bridge tables at random times.
    ipv6: bool = True
    steps: list[Step] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    where: str = ""
    # Values random by design (how many of 300 requests each endpoint of a random load
    # balancer got): (regex, replacement) pairs masked in this page's outputs when a run
    # is compared with its capture, on top of deepdive.masking's own. See masks_of().
    masks: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        self.where = self.where or _caller_location()
        self.masks = _checked_masks(self.where, self.masks)
        if not PAGE_NAME_RE.fullmatch(self.name):
            raise SnippetError(f"{self.where}: page name {self.name!r} must match {PAGE_NAME_RE.pattern}")
        if not self.title.strip():
            raise SnippetError(f"{self.where}: page {self.name!r} needs a title")
        for node in self.nodes:
            if not NAME_RE.fullmatch(node) or node == "host":
                raise SnippetError(f"{self.where}: node name {node!r} must match {NAME_RE.pattern} and not be 'host'")
        if len(set(self.nodes)) != len(self.nodes):
            raise SnippetError(f"{self.where}: node names repeat: {', '.join(self.nodes)}")
        self.nodes = tuple(self.nodes)
        if self.nodes:
            # The lab creates the declared nodes itself, as a recorded first step.
            self.steps.insert(0, Step(
                id="nodes",
                title="Create the namespaces",
                commands=tuple(c for n in self.nodes for c in self._node_commands(n)),
                snapshot=False,
                where=self.where,
            ))

    def _node_commands(self, node: str) -> list[Cmd]:
        argvs = [("ip", "netns", "add", node), ("ip", "-n", node, "link", "set", "lo", "up")]
        if not self.ipv6:
            argvs.append(("ip", "netns", "exec", node,
                          "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"))
        return [Cmd(argv, where=self.where) for argv in argvs]

    def step(self, id: str, title: str, *commands: Cmd | str, snapshot: bool | str = False) -> Step:
        """Append a step; plain strings are commands expected to succeed. `snapshot=True`
        records the kernel's state once the step has ended (its diagram);
        `snapshot=WHILE_RUNNING` records it while its background programs still run,
        for a picture they belong in (the program holding a tun)."""
        where = _caller_location()
        if snapshot not in (False, True, WHILE_RUNNING):
            raise SnippetError(f"{where}: step {id!r}: snapshot must be True, False or WHILE_RUNNING, "
                               f"not {snapshot!r}")
        if not NAME_RE.fullmatch(id):
            raise SnippetError(f"{where}: step id {id!r} must match {NAME_RE.pattern}")
        if any(s.id == id for s in self.steps):
            raise SnippetError(f"{where}: step id {id!r} is used twice in page {self.name!r}")
        if not commands:
            raise SnippetError(f"{where}: step {id!r} has no commands")
        parsed = []
        for c in commands:
            if isinstance(c, str):
                c = cmd(c)
            elif not isinstance(c, Cmd):
                raise SnippetError(f"{where}: step {id!r}: {c!r} is neither a string nor cmd(...)")
            parsed.append(c)
        s = Step(id=id, title=title, commands=tuple(parsed), snapshot=snapshot, where=where)
        self.steps.append(s)
        return s

    def check(self, after: str, claim: str) -> Callable[[Callable[["CheckContext"], bool]], Callable]:
        """Decorator: register a check of `claim`, run after step `after`."""
        where = _caller_location()

        def register(test: Callable[["CheckContext"], bool]) -> Callable:
            if not callable(test):
                raise SnippetError(f"{where}: check {claim!r} is not a function")
            self.checks.append(Check(claim=claim, after=after, test=test, where=where))
            return test

        return register

    def step_by_id(self, id: str) -> Step:
        for s in self.steps:
            if s.id == id:
                return s
        raise KeyError(id)

    def validate(self) -> None:
        """Whole-page rules that only hold once the module has finished declaring."""
        ids = [s.id for s in self.steps]
        if not any(s.id != "nodes" for s in self.steps):
            raise SnippetError(f"{self.where}: page {self.name!r} declares no steps")
        for c in self.checks:
            if c.after not in ids:
                raise SnippetError(
                    f"{c.where}: check {c.claim!r} runs after step {c.after!r}, "
                    f"which page {self.name!r} does not have (steps: {', '.join(ids)})")
        if not self.checks:
            raise SnippetError(f"{self.where}: page {self.name!r} declares no checks")

    @property
    def regenerate(self) -> str:
        return f"invoke lab.run --page {self.name}"
