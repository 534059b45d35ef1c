"""A CNI runtime: what a container runtime does with a network configuration.

On a Kubernetes node, kubelet asks the container runtime (containerd, CRI-O) for a pod
sandbox, and the runtime, through libcni, runs the CNI plugins of the node's network
configuration against the sandbox's network namespace. This module does the runtime's
part as the CNI specification 1.0.0 describes it (SPEC.md, sections 2, 3 and 5), and
is called like the CNI project's `cnitool`:

    deepdive-cni add|check|del NETWORK NETNS     deepdive-cni version PLUGIN

- The configuration is the file in NETCONFPATH (default /etc/cni/net.d) whose `name`
  is NETWORK: `*.conflist` files first, then `*.conf` and `*.json` (one plugin), in
  lexical order, as libcni's LoadConfList looks for it.
- ADD runs the list's plugins in order, each with the previous one's result as
  `prevResult`; DEL runs them in reverse order and CHECK in order, both with the
  cached result of the ADD (spec section 3). Each plugin gets the configuration's
  `name` and `cniVersion`, a `runtimeConfig` of the capability arguments (CAP_ARGS, a
  JSON object) that its `capabilities` ask for, and no `capabilities` key.
- The ADD result is cached where libcni caches it, /var/lib/cni/results/
  NETWORK-CONTAINERID-IFNAME, as a `cniCacheV1` object with the attachment's CNI_ARGS
  and capability arguments, which DEL and CHECK reuse when given none; DEL removes it.
- A second ADD of one attachment (container ID and interface name) is refused: the
  spec says a runtime should not make it. A failed ADD is followed by a DEL through
  the whole list, as the spec requires ("A delete must still be executed even if the
  add fails"), so that a failure leaves nothing behind.
- Parameters as cnitool takes them: CNI_PATH (default /opt/cni/bin:/usr/lib/cni, the
  usual place and Debian's), CNI_IFNAME (default eth0), CNI_ARGS ("K=V;K2=V2"), and
  CNI_CONTAINERID (default derived from the netns path, as cnitool derives it).

Every failure is a CNIError whose message is one line; a plugin's error object
({"code", "msg", "details"}) becomes "plugin type="bridge" failed (add): error 7
(invalid network config): MSG; DETAILS". Only the standard library is used, so the
command runs with any Python 3.11 on the machine.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_NETCONFPATH = "/etc/cni/net.d"
DEFAULT_CNI_PATH = "/opt/cni/bin:/usr/lib/cni"
CACHE_DIR = "/var/lib/cni"  # libcni's CacheDir
CACHE_KIND = "cniCacheV1"
PLUGIN_TIMEOUT = 60.0  # seconds; a plugin that hangs must not hang the caller
CHECK_SINCE = (0, 4, 0)  # CHECK and cached results on DEL exist since spec 0.4.0

# SPEC.md section 5, "Error": codes 0-99 are well known, 100+ are the plugin's own.
ERROR_CODES = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown or does not exist",
    4: "invalid necessary environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network config",
    11: "try again later",
}

# SPEC.md section 1 (network name) and section 2 (CNI_CONTAINERID).
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
IFNAME_MAX = 15  # IFNAMSIZ - 1


class CNIError(Exception):
    """A failure of the runtime or of a plugin, as one line of text."""


@dataclass(frozen=True)
class Attachment:
    """One attachment (SPEC.md section 3): a container's interface on a network.

    container_id: CNI_CONTAINERID; netns: path of the network namespace (CNI_NETNS);
    ifname: CNI_IFNAME; args: CNI_ARGS pairs; capability_args: what runtimeConfig is
    made of, keyed by capability name.
    """

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    capability_args: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise CNIError for an ID or interface name the spec or the kernel refuses."""
        if not NAME_RE.fullmatch(self.container_id):
            raise CNIError(f"invalid container ID {self.container_id!r}: it must start with a letter "
                           "or digit, then letters, digits, '_', '.' or '-'")
        if (not self.ifname or len(self.ifname) > IFNAME_MAX or self.ifname in (".", "..")
                or any(c in self.ifname for c in "/:") or any(c.isspace() for c in self.ifname)):
            raise CNIError(f"invalid interface name {self.ifname!r}: 1 to {IFNAME_MAX} characters, "
                           "no '/', ':' or spaces")

    def env(self, command: str, cni_path: str) -> dict[str, str]:
        """The CNI_* parameters of SPEC.md section 2, for CNI_COMMAND=command."""
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns,
            "CNI_IFNAME": self.ifname,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in self.args),
            "CNI_PATH": cni_path,
        }


@dataclass(frozen=True)
class NetworkConfig:
    """A network configuration (SPEC.md section 1), always as a list of plugins.

    raw: the bytes of the file it came from (cached with each result, as libcni does).
    """

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    disable_check: bool = False
    raw: bytes = b""
    source: str = ""


def parse_config(raw: bytes, source: str = "<config>") -> NetworkConfig:
    """A NetworkConfig from a .conflist's bytes, or from a single plugin's (.conf).

    Raises CNIError naming `source` for JSON that does not parse, a missing or malformed
    name, cniVersion, plugins or type.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(f"{source}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CNIError(f"{source}: a network configuration is a JSON object")
    plugins = data.get("plugins") if "plugins" in data else [
        {k: v for k, v in data.items() if k not in ("name", "cniVersion")}]
    name, version = data.get("name"), data.get("cniVersion")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise CNIError(f"{source}: \"name\" must be a network name (a letter or digit, then letters, "
                       f"digits, '_', '.' or '-'), got {name!r}")
    if not isinstance(version, str) or _version(version) is None:
        raise CNIError(f"{source}: \"cniVersion\" must be a version such as \"1.0.0\", got {version!r}")
    if not isinstance(plugins, list) or not plugins:
        raise CNIError(f"{source}: \"plugins\" must be a non-empty list")
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not _is_plugin_name(plugin.get("type")):
            raise CNIError(f"{source}: plugin {i + 1} needs a \"type\", the name of its executable")
        caps = plugin.get("capabilities")
        if caps is not None and (not isinstance(caps, dict) or not all(isinstance(v, bool) for v in caps.values())):
            raise CNIError(f"{source}: plugin {i + 1}: \"capabilities\" must map capability names to true or false")
    disable = data.get("disableCheck", False)
    if not isinstance(disable, bool):
        raise CNIError(f"{source}: \"disableCheck\" must be true or false")
    return NetworkConfig(name=name, cni_version=version, plugins=tuple(plugins),
                         disable_check=disable, raw=raw, source=source)


def load_network(netdir: str, name: str) -> NetworkConfig:
    """The configuration named `name` in directory `netdir`, searched as libcni does:
    *.conflist files in lexical order, then *.conf and *.json. Raises CNIError when
    none has that name; a file that does not parse is an error only if it is needed,
    i.e. when no file before it had the name."""
    directory = Path(netdir)
    if not directory.is_dir():
        raise CNIError(f"no network configuration directory {netdir} (NETCONFPATH)")
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file())  # libcni skips directories
    except OSError as exc:
        raise CNIError(f"cannot list {netdir}: {exc.strerror}") from None
    lists = [p for p in files if p.suffix == ".conflist"]
    singles = [p for p in files if p.suffix in (".conf", ".json")]
    for path in (*lists, *singles):
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CNIError(f"cannot read {path}: {exc.strerror}") from None
        config = parse_config(raw, str(path))
        if config.name == name:
            return config
    raise CNIError(f"no network configuration named {name!r} in {netdir}")


def derive(network: NetworkConfig, plugin: dict[str, Any], prev_result: dict[str, Any] | None,
           attachment: Attachment) -> dict[str, Any]:
    """The execution configuration for one plugin (SPEC.md section 3, "Deriving execution
    configuration"): the plugin's object with `name` and `cniVersion` of the network,
    `prevResult` when given, `runtimeConfig` from the capabilities the plugin declares and
    the attachment provides, and without `capabilities`. Other keys pass unchanged."""
    conf = {k: copy.deepcopy(v) for k, v in plugin.items() if k != "capabilities"}
    conf["name"] = network.name
    conf["cniVersion"] = network.cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    capabilities = plugin.get("capabilities") or {}
    runtime = {cap: attachment.capability_args[cap] for cap, wanted in capabilities.items()
               if wanted is True and cap in attachment.capability_args}
    if runtime:
        conf["runtimeConfig"] = runtime
    return conf


def _is_plugin_name(kind: Any) -> bool:
    # SPEC.md section 1: a type names an executable in CNI_PATH, never a path.
    return isinstance(kind, str) and kind not in ("", ".", "..") and "/" not in kind


def find_plugin(kind: str, cni_path: str) -> str:
    """The executable for plugin type `kind`, first match in CNI_PATH's directories.
    Raises CNIError when there is none, or when `kind` is a path rather than a name."""
    if not _is_plugin_name(kind):
        raise CNIError(f"invalid plugin type {kind!r}: the name of an executable in CNI_PATH, without '/'")
    for directory in filter(None, cni_path.split(":")):
        candidate = os.path.join(directory, kind)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(f"plugin {kind!r} is not in CNI_PATH ({cni_path})")


def describe(plugin: dict[str, Any]) -> str:
    """type="bridge" (name="x"): how a plugin is named in messages, as libcni names it."""
    text = f"type={json.dumps(plugin.get('type'))}"
    return text + (f" name={json.dumps(plugin['name'])}" if isinstance(plugin.get("name"), str) else "")


def error_line(error: Any) -> str:
    """A plugin's error object on one line: "error 7 (invalid network config): MSG; DETAILS"."""
    if not isinstance(error, dict):
        return _one_line(str(error))
    code = error.get("code")
    meaning = ERROR_CODES.get(code) if isinstance(code, int) else None
    if meaning is None and isinstance(code, int) and code >= 100:
        meaning = "the plugin's own code"
    head = f"error {code}" + (f" ({meaning})" if meaning else "")
    text = "; ".join(str(error[k]) for k in ("msg", "details") if error.get(k))
    return _one_line(f"{head}: {text}" if text else head)


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def exec_plugin(plugin: dict[str, Any], command: str, conf: dict[str, Any], attachment: Attachment,
                cni_path: str, timeout: float = PLUGIN_TIMEOUT) -> dict[str, Any] | None:
    """Run one plugin as SPEC.md section 2 says: CNI_* in its environment, the execution
    configuration on standard input; its standard error passes through. Returns the
    result object it prints (ADD, VERSION), None when it prints nothing (DEL, CHECK).
    Raises CNIError with the plugin's error object on one line."""
    path = find_plugin(plugin["type"], cni_path)
    env = dict(os.environ, **attachment.env(command, cni_path))
    what = f"plugin {describe(plugin)} failed ({command.lower()})"
    try:
        done = subprocess.run([path], input=json.dumps(conf).encode(), env=env, stdout=subprocess.PIPE,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CNIError(f"{what}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise CNIError(f"{what}: cannot run {path}: {exc.strerror}") from None
    out = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        try:
            error = json.loads(out)
        except ValueError:
            error = out or f"exit status {done.returncode} and no error object"
        raise CNIError(f"{what}: {error_line(error)}")
    if not out:
        return None
    try:
        result = json.loads(out)
    except ValueError:
        raise CNIError(f"{what}: its result is not JSON: {_one_line(out)[:200]}") from None
    if not isinstance(result, dict):
        raise CNIError(f"{what}: its result is not a JSON object")
    return result


class Runtime:
    """The runtime's side of SPEC.md section 3, with a libcni-style result cache."""

    def __init__(self, cni_path: str = DEFAULT_CNI_PATH, cache_dir: str = CACHE_DIR,
                 timeout: float = PLUGIN_TIMEOUT) -> None:
        self.cni_path = cni_path
        self.cache_dir = cache_dir
        self.timeout = timeout

    def cache_path(self, network: NetworkConfig, attachment: Attachment) -> Path:
        return Path(self.cache_dir, "results", f"{network.name}-{attachment.container_id}-{attachment.ifname}")

    def add(self, network: NetworkConfig, attachment: Attachment) -> dict[str, Any]:
        """ADD the attachment; return the last plugin's result, cached for DEL and CHECK.
        A failure runs DEL through the list before raising, so nothing stays behind."""
        attachment.validate()
        cache = self.cache_path(network, attachment)
        try:
            cached = cache.exists()
        except OSError as exc:  # a name too long for the file system, a directory we may not search
            raise CNIError(f"cannot look up the cached result {cache}: {exc.strerror}") from None
        if cached:
            raise CNIError(f"container {attachment.container_id} already has {attachment.ifname} on network "
                           f"{network.name!r} (its result is cached in {cache}); DEL it before another ADD")
        if not os.path.exists(attachment.netns):
            raise CNIError(f"network namespace {attachment.netns} does not exist")
        self._plugins_present(network)
        result: dict[str, Any] | None = None
        try:
            for plugin in network.plugins:
                conf = derive(network, plugin, result, attachment)
                result = exec_plugin(plugin, "ADD", conf, attachment, self.cni_path, self.timeout)
                if result is None:
                    raise CNIError(f"plugin {describe(plugin)} failed (add): it printed no result")
            assert result is not None
            # Without its cache the attachment could be neither refused a second ADD nor
            # given its result on DEL: a failure to write it fails the ADD too.
            self._write_cache(cache, network, attachment, result)
        except (CNIError, KeyboardInterrupt) as exc:
            # An interrupt too: half an attachment must not stay because Ctrl-C came
            # between two plugins.
            failure = str(exc) if isinstance(exc, CNIError) else "interrupted"
            try:
                self._delete(network, attachment, None)
            except CNIError as undo:
                raise CNIError(f"{failure}; the DEL that followed failed too: {undo}") from None
            raise CNIError(f"{failure}; DEL undid the attachment") from None
        return result

    def delete(self, network: NetworkConfig, attachment: Attachment) -> None:
        """DEL the attachment, plugins in reverse order with the cached ADD result as
        prevResult (none when there is no cache); then forget the cached result."""
        attachment.validate()
        entry = self._cached(network, attachment) if _at_least(network, CHECK_SINCE) else None
        cached = _result_of(entry)
        self._plugins_present(network)
        self._delete(network, _as_added(attachment, entry), cached)
        path = self.cache_path(network, attachment)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise CNIError(f"cannot remove the cached result {path}: {exc.strerror}") from None

    def check(self, network: NetworkConfig, attachment: Attachment) -> None:
        """CHECK the attachment against the cached ADD result (spec 0.4.0 and later);
        success without running anything when the configuration sets disableCheck."""
        attachment.validate()
        if not _at_least(network, CHECK_SINCE):
            raise CNIError(f"network {network.name!r} is cniVersion {network.cni_version}; CHECK exists since 0.4.0")
        if network.disable_check:
            return
        entry = self._cached(network, attachment)
        cached = _result_of(entry)
        if cached is None:
            raise CNIError(f"no cached result for container {attachment.container_id}, {attachment.ifname} on "
                           f"network {network.name!r}: it was never added, or was deleted")
        attachment = _as_added(attachment, entry)
        self._plugins_present(network)
        for plugin in network.plugins:
            exec_plugin(plugin, "CHECK", derive(network, plugin, cached, attachment), attachment,
                        self.cni_path, self.timeout)

    def version(self, kind: str, cni_version: str = "1.0.0") -> dict[str, Any]:
        """The plugin's answer to VERSION: {"cniVersion", "supportedVersions"}."""
        plugin = {"type": kind}
        answer = exec_plugin(plugin, "VERSION", {"cniVersion": cni_version},
                             Attachment(container_id="", netns=""), self.cni_path, self.timeout)
        if answer is None:
            raise CNIError(f"plugin {describe(plugin)} printed nothing for VERSION")
        return answer

    def cached_result(self, network: NetworkConfig, attachment: Attachment) -> dict[str, Any] | None:
        """The result cached by ADD, or None when there is none or it cannot be read."""
        return _result_of(self._cached(network, attachment))

    def _cached(self, network: NetworkConfig, attachment: Attachment) -> dict[str, Any] | None:
        """The whole cniCacheV1 object ADD wrote, or None."""
        try:
            cached = json.loads(self.cache_path(network, attachment).read_bytes())
        except (OSError, ValueError):
            return None
        return cached if isinstance(cached, dict) and cached.get("kind") == CACHE_KIND else None

    def _delete(self, network: NetworkConfig, attachment: Attachment, cached: dict[str, Any] | None) -> None:
        for plugin in reversed(network.plugins):
            exec_plugin(plugin, "DEL", derive(network, plugin, cached, attachment), attachment,
                        self.cni_path, self.timeout)

    def _plugins_present(self, network: NetworkConfig) -> None:
        # SPEC.md: a plugin that does not exist is an error. Looking all of them up before
        # running any keeps a typo in the list from leaving half an attachment behind.
        for plugin in network.plugins:
            find_plugin(plugin["type"], self.cni_path)

    def _write_cache(self, path: Path, network: NetworkConfig, attachment: Attachment,
                     result: dict[str, Any]) -> None:
        # The fields and their order are libcni's cachedInfo; "config" is base64, as Go
        # encodes a []byte.
        cached: dict[str, Any] = {
            "kind": CACHE_KIND,
            "containerId": attachment.container_id,
            "config": base64.b64encode(network.raw).decode(),
            "ifName": attachment.ifname,
            "networkName": network.name,
            "netns": attachment.netns,
        }
        if attachment.args:
            cached["cniArgs"] = [list(pair) for pair in attachment.args]
        if attachment.capability_args:
            cached["capabilityArgs"] = attachment.capability_args
        cached["result"] = result
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp.write_text(json.dumps(cached, separators=(",", ":")))
            tmp.chmod(0o600)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise CNIError(f"cannot cache the result in {path}: {exc.strerror}") from None


def _result_of(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    result = (entry or {}).get("result")
    return result if isinstance(result, dict) else None


def _as_added(attachment: Attachment, entry: dict[str, Any] | None) -> Attachment:
    """The attachment with the CNI_ARGS and capability arguments of its ADD where the
    caller gives none: SPEC.md section 3 has CHECK use "the same attachment parameters"
    as ADD, and a DEL without portMappings would leave portmap's rules behind (libcni
    caches them for this; containerd passes its sandbox's again)."""
    if entry is None:
        return attachment
    args, caps = attachment.args, attachment.capability_args
    if not args and isinstance(entry.get("cniArgs"), list):
        args = tuple((str(k), str(v)) for k, v in (p for p in entry["cniArgs"] if isinstance(p, list) and len(p) == 2))
    if not caps and isinstance(entry.get("capabilityArgs"), dict):
        caps = entry["capabilityArgs"]
    return dataclasses.replace(attachment, args=args, capability_args=caps)


def _version(text: str) -> tuple[int, int, int] | None:
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def _at_least(network: NetworkConfig, version: tuple[int, int, int]) -> bool:
    return (_version(network.cni_version) or (0, 0, 0)) >= version


def container_id_for(netns: str) -> str:
    """The container ID cnitool derives from a netns path (the first 10 bytes of its
    SHA-512), under this command's name."""
    return f"deepdive-cni-{hashlib.sha512(netns.encode()).hexdigest()[:20]}"


def parse_args_env(text: str) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS "K=V;K2=V2" as pairs; raises CNIError for a pair without both sides."""
    pairs = []
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key or not value or "=" in value:
            raise CNIError(f"invalid CNI_ARGS pair {pair!r}: pairs are KEY=VALUE, separated by ';'")
        pairs.append((key, value))
    return tuple(pairs)


def attachment_from_env(netns: str, ifname: str | None, environ: dict[str, str]) -> Attachment:
    """The attachment cnitool would make: netns made absolute, CNI_IFNAME, CNI_ARGS,
    CAP_ARGS and CNI_CONTAINERID from the environment, with cnitool's defaults."""
    netns = os.path.abspath(netns)
    caps_text = environ.get("CAP_ARGS", "")
    try:
        caps = json.loads(caps_text) if caps_text else {}
    except ValueError as exc:
        raise CNIError(f"CAP_ARGS is not JSON: {exc}") from None
    if not isinstance(caps, dict):
        raise CNIError("CAP_ARGS must be a JSON object of capability arguments")
    return Attachment(container_id=environ.get("CNI_CONTAINERID") or container_id_for(netns), netns=netns,
                      ifname=ifname or environ.get("CNI_IFNAME") or "eth0",
                      args=parse_args_env(environ.get("CNI_ARGS", "")), capability_args=caps)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line like every other error of the command
    (exit status 2, as argparse has it)."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split())
        self.exit(2, f"deepdive-cni: {message}; {usage}\n")


def main(argv: list[str] | None = None) -> int:
    """The command: 0 on success, 1 with one line on stderr when it fails, 2 (from
    argparse, as SystemExit) with one line for a usage error."""
    parser = _Parser(
        prog="deepdive-cni", description="Run a CNI network configuration against a network namespace, "
        "as a container runtime does (CNI specification 1.0.0).",
        epilog="Environment: NETCONFPATH (default /etc/cni/net.d), CNI_PATH (default "
        f"{DEFAULT_CNI_PATH}), CNI_IFNAME, CNI_CONTAINERID, CNI_ARGS, CAP_ARGS.")
    parser.add_argument("-i", "--ifname", help="interface name (default: $CNI_IFNAME or eth0)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("add", "check", "del"):
        p = sub.add_parser(name, help=f"{name.upper()} the namespace's interface on the network")
        p.add_argument("network", help="the configuration's \"name\"")
        p.add_argument("netns", help="path of the network namespace, e.g. /run/netns/pod-a")
    p = sub.add_parser("version", help="ask a plugin which specification versions it supports")
    p.add_argument("plugin", help="the plugin's type, e.g. bridge")
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    runtime = Runtime(cni_path=environ.get("CNI_PATH") or DEFAULT_CNI_PATH)
    try:
        if args.command == "version":
            print(json.dumps(runtime.version(args.plugin), indent=4))
            return 0
        network = load_network(environ.get("NETCONFPATH") or DEFAULT_NETCONFPATH, args.network)
        attachment = attachment_from_env(args.netns, args.ifname, environ)
        if args.command == "add":
            print(json.dumps(runtime.add(network, attachment), indent=4))
        elif args.command == "check":
            runtime.check(network, attachment)
        else:
            runtime.delete(network, attachment)
    except CNIError as exc:
        print(f"deepdive-cni: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deepdive-cni: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
